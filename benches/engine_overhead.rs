//! Engine overhead per step: 1,000 `noop` steps, as a chain (sequential) and
//! with no dependencies (parallel, 8 at a time), on SQLite and on Postgres.
//!
//!   cargo bench --bench engine_overhead
//!
//! Each case runs in a fresh child process so that its peak RSS is its own.
//! Postgres: `DATABASE_URL` (default postgres://postgres@127.0.0.1:5432/postgres)
//! names the server; a scratch database is created and dropped.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ca_a2a_flow_engine::model::{RetryPolicy, StepDef, Workflow};
use ca_a2a_flow_engine::store::{AnyStore, Holder};
use ca_a2a_flow_engine::{Engine, EngineConfig, RunStatus};
use tokio::sync::watch;

const STEPS: usize = 1_000;

fn workflow(sequential: bool) -> Workflow {
    let steps = (0..STEPS)
        .map(|i| StepDef {
            id: format!("s{i}"),
            uses: "noop".into(),
            description: None,
            with: serde_json::json!({}),
            needs: if sequential && i > 0 { vec![format!("s{}", i - 1)] } else { vec![] },
            timeout: Duration::from_secs(60),
            attempt_timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
            secret_outputs: vec![],
            approve: None,
            when: None,
            source: "bench".into(),
            loc: Default::default(),
        })
        .collect();
    Workflow { name: "bench".into(), description: None, file: "bench.yaml".into(), inputs: BTreeMap::new(), steps }
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(|l| l.to_string()))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

async fn case(backend: &str, shape: &str) -> (f64, u64) {
    let admin = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let scratch = format!("flow_bench_{}", std::process::id());
    let dir = std::env::temp_dir().join(format!("ca-a2a-flow-bench-{}", std::process::id()));
    let url = match backend {
        "sqlite" => {
            std::fs::create_dir_all(&dir).unwrap();
            dir.join("state.db").display().to_string()
        }
        _ => {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&admin).await.expect("postgres");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {scratch}"))).execute(&mut conn).await.unwrap();
            format!("{}/{scratch}", admin.rsplit_once('/').unwrap().0)
        }
    };
    let store = AnyStore::open(&url).await.expect("store");
    let config = EngineConfig { parallelism: 8, lease_ttl: Duration::from_secs(30), holder: Holder::this_process() };
    let engine = Engine::new(store, ca_a2a_flow_steps::registry(), config, Arc::new(|_| {}));
    let wf = workflow(shape == "sequential");
    let run = engine.create(&wf, &BTreeMap::new()).await.unwrap();
    let (_tx, rx) = watch::channel(None);
    let start = Instant::now();
    let outcome = engine.drive(&run, None, rx).await.unwrap();
    let took = start.elapsed();
    assert_eq!(outcome.status, RunStatus::Succeeded);
    drop(engine);
    if backend == "sqlite" {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
        let _ =
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {scratch} WITH (FORCE)"))).execute(&mut conn).await;
    }
    (took.as_secs_f64() * 1000.0 / STEPS as f64, peak_rss_kib())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--case") {
        let (backend, shape) = (args[i + 1].clone(), args[i + 2].clone());
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
        let (per_step, rss) = rt.block_on(case(&backend, &shape));
        println!("{per_step:.3} {rss}");
        return;
    }
    let me = std::env::current_exe().unwrap();
    println!("| store | shape | steps | engine overhead per step | peak RSS |");
    println!("|---|---|---|---|---|");
    for backend in ["sqlite", "postgres"] {
        for shape in ["sequential", "parallel"] {
            let mut samples = Vec::new();
            let mut rss = 0;
            for _ in 0..3 {
                let out = Command::new(&me).args(["--case", backend, shape]).output().expect("run case");
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                let text = String::from_utf8_lossy(&out.stdout);
                let mut parts = text.split_whitespace();
                samples.push(parts.next().unwrap().parse::<f64>().unwrap());
                rss = rss.max(parts.next().unwrap().parse::<u64>().unwrap());
            }
            samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
            println!(
                "| {backend} | {shape} | {STEPS} | {:.3} ms (median of 3; min {:.3}, max {:.3}) | {:.1} MiB |",
                samples[1],
                samples[0],
                samples[2],
                rss as f64 / 1024.0
            );
        }
    }
}
