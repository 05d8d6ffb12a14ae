//! What the engine costs per step, at 1,000 and 10,000 steps, and what a user
//! waits for around a run of that size.
//!
//!   cargo bench --bench engine_overhead
//!
//! - run: `noop` steps through the real engine and store, as a chain (each step
//!   needs the previous one) and as a 100-wide fan-out (step i needs step
//!   i−100: a hundred chains side by side), on SQLite and on Postgres; each case
//!   in a fresh child process, so its peak RSS is its own;
//! - `status` of the finished 10,000-step chain, through the release binary;
//! - `validate` and `plan` of the chain's YAML file, through the release binary;
//! - destroy planning of a run whose every step made something (in process).
//!
//! Postgres: `DATABASE_URL` (default postgres://postgres@127.0.0.1:5432/postgres)
//! names the server; scratch databases are created and dropped.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ca_a2a_flow_engine::model::{RetryPolicy, StepDef, Workflow};
use ca_a2a_flow_engine::store::{AnyStore, Holder, RunRecord, StepRecord};
use ca_a2a_flow_engine::{
    DestroyOptions, Engine, EngineConfig, Kind, KindDoc, Outputs, Registry, RunStatus, Step, StepContext, StepError,
};
use tokio::sync::watch;

const SIZES: [usize; 2] = [1_000, 10_000];
const BIN: &str = env!("CARGO_BIN_EXE_ca-a2a-flow");

fn step(i: usize, need: Option<usize>, uses: &str) -> StepDef {
    StepDef {
        id: format!("s{i}"),
        uses: uses.into(),
        description: None,
        with: serde_json::json!({}),
        needs: need.map(|n| vec![format!("s{n}")]).unwrap_or_default(),
        timeout: Duration::from_secs(600),
        attempt_timeout: Duration::from_secs(600),
        retry: RetryPolicy::default(),
        secret_outputs: vec![],
        approve: None,
        when: None,
        otherwise: None,
        source: "bench".into(),
        loc: Default::default(),
    }
}

/// `chain`: step i needs i−1; `fanout`: step i needs i−100.
fn workflow(shape: &str, n: usize, uses: &str) -> Workflow {
    let width = if shape == "chain" { 1 } else { 100 };
    let steps = (0..n).map(|i| step(i, i.checked_sub(width), uses)).collect();
    Workflow {
        name: "bench".into(),
        description: None,
        file: "bench.yaml".into(),
        inputs: BTreeMap::new(),
        steps,
        destroy_of: None,
    }
}

fn yaml(n: usize) -> String {
    let mut text = String::from("name: chain\nsteps:\n");
    for i in 0..n {
        text.push_str(&format!("  - id: s{i}\n    uses: noop\n"));
        if i > 0 {
            text.push_str(&format!("    needs: [s{}]\n", i - 1));
        }
    }
    text
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(|l| l.to_string()))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// Milliseconds one whole process of the binary takes (its output discarded).
fn time_binary(args: &[&str]) -> f64 {
    let start = Instant::now();
    let out = Command::new(BIN).args(args).output().expect("run ca-a2a-flow");
    let took = start.elapsed().as_secs_f64() * 1000.0;
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    took
}

fn median(mut samples: Vec<f64>) -> (f64, f64, f64) {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (samples[samples.len() / 2], samples[0], samples[samples.len() - 1])
}

/// One run case, in this (child) process: ms per step, peak RSS, and for a
/// 10,000-step chain the ms of `status` on it.
async fn case(backend: &str, shape: &str, n: usize) -> (f64, u64, Option<f64>) {
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
    let wf = workflow(shape, n, "noop");
    let run = engine.create(&wf, &BTreeMap::new()).await.unwrap();
    let (_tx, rx) = watch::channel(None);
    let start = Instant::now();
    let outcome = engine.drive(&run, None, rx).await.unwrap();
    let took = start.elapsed();
    assert_eq!(outcome.status, RunStatus::Succeeded);
    drop(engine);
    let status = (shape == "chain" && n == 10_000)
        .then(|| median((0..3).map(|_| time_binary(&["--state", &url, "status", &run])).collect()).0);
    if backend == "sqlite" {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
        let _ =
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {scratch} WITH (FORCE)"))).execute(&mut conn).await;
    }
    (took.as_secs_f64() * 1000.0 / n as f64, peak_rss_kib(), status)
}

/// A kind whose every step made something, for destroy planning.
struct Made;

impl Kind for Made {
    type Params = serde_json::Value;
    const KIND: &'static str = "bench.made";
}

impl Step for Made {
    const DESTROYS: bool = true;
    const DOC: KindDoc = KindDoc { summary: "", outputs: &[], example: "" };
    async fn run(&self, _ctx: &StepContext, _params: serde_json::Value) -> Result<Outputs, StepError> {
        Ok(Outputs::new())
    }
}

/// Milliseconds to plan the destroy of an n-step chain whose steps all ran.
fn destroy_planning(n: usize) -> f64 {
    let definition = workflow("chain", n, "bench.made");
    let steps: Vec<StepRecord> =
        definition.steps.iter().enumerate().map(|(i, s)| StepRecord::succeeded(&s.id, &s.uses, i as i64)).collect();
    let run = RunRecord::ended("r-bench", definition, BTreeMap::new(), RunStatus::Succeeded);
    let registry = Registry::new().register(Made);
    let start = Instant::now();
    let plan = ca_a2a_flow_engine::destroy::plan(&run, &steps, &registry, &DestroyOptions::default()).unwrap();
    let took = start.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(plan.steps.len(), n);
    took
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--case") {
        let (backend, shape, n) = (args[i + 1].clone(), args[i + 2].clone(), args[i + 3].parse().unwrap());
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
        let (per_step, rss, status) = rt.block_on(case(&backend, &shape, n));
        println!("{per_step:.3} {rss} {}", status.unwrap_or(-1.0));
        return;
    }
    let me = std::env::current_exe().unwrap();
    println!("| store | shape | steps | engine overhead per step | peak RSS |");
    println!("|---|---|---|---|---|");
    let mut statuses = Vec::new();
    for backend in ["sqlite", "postgres"] {
        for shape in ["chain", "fanout"] {
            for n in SIZES {
                let (mut samples, mut rss) = (Vec::new(), 0);
                for _ in 0..3 {
                    let out =
                        Command::new(&me).args(["--case", backend, shape, &n.to_string()]).output().expect("run case");
                    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                    let text = String::from_utf8_lossy(&out.stdout);
                    let mut parts = text.split_whitespace();
                    samples.push(parts.next().unwrap().parse::<f64>().unwrap());
                    rss = rss.max(parts.next().unwrap().parse::<u64>().unwrap());
                    let status: f64 = parts.next().unwrap().parse().unwrap();
                    if status >= 0.0 {
                        statuses.push((backend, status));
                    }
                }
                let (mid, min, max) = median(samples);
                println!(
                    "| {backend} | {shape} | {n} | {mid:.3} ms (median of 3; min {min:.3}, max {max:.3}) | {:.1} MiB |",
                    rss as f64 / 1024.0
                );
            }
        }
    }
    println!();
    println!("| command | steps | time (median of 3) |");
    println!("|---|---|---|");
    for backend in ["sqlite", "postgres"] {
        let (mid, min, max) = median(statuses.iter().filter(|(b, _)| *b == backend).map(|(_, t)| *t).collect());
        println!("| `status` of the finished chain ({backend}) | 10000 | {mid:.1} ms (min {min:.1}, max {max:.1}) |");
    }
    let dir = std::env::temp_dir().join(format!("ca-a2a-flow-bench-yaml-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for n in SIZES {
        let file = dir.join(format!("chain-{n}.yaml"));
        std::fs::write(&file, yaml(n)).unwrap();
        let state = dir.join("plan.db").display().to_string();
        let file = file.display().to_string();
        for (what, args) in
            [("validate", vec!["--state", &state, "validate", &file]), ("plan", vec!["--state", &state, "plan", &file])]
        {
            let (mid, min, max) = median((0..3).map(|_| time_binary(&args)).collect());
            println!("| `{what}` of the chain's file | {n} | {mid:.1} ms (min {min:.1}, max {max:.1}) |");
        }
        let (mid, min, max) = median((0..3).map(|_| destroy_planning(n)).collect());
        println!("| destroy planning (in process) | {n} | {mid:.1} ms (min {min:.1}, max {max:.1}) |");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
