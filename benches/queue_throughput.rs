//! Queued runs driven by workers on one Postgres: steps per second across
//! workers, and how long a queued run waits for its first step.
//!
//!   cargo bench --bench queue_throughput [-- --runs 2000 --workers 3 --concurrency 8 --latency-runs 200]
//!
//! - throughput: `--runs` runs of 5 `noop` steps in a chain are queued (as
//!   `submit` records them), then `--workers` processes of the release binary
//!   (`worker --concurrency N`) drive them. Steps per second = 5 × runs over the
//!   time from the first step's start to the last run's end (both as the
//!   workers recorded them).
//! - claim latency: with those workers idle and listening, runs are queued one
//!   at a time, 20 ms apart; for each, the time from its queueing to its first
//!   step's start. p50 and p99.
//! - with `--peer CMD`, the same two figures for another engine on the same
//!   Postgres server, by running `CMD URL RUNS WORKERS CONCURRENCY LATENCY_RUNS`,
//!   which prints one JSON line `{"steps_per_s":…, "p50_ms":…, "p99_ms":…}`.
//!
//! Postgres: `DATABASE_URL` (default postgres://postgres@127.0.0.1:5432/postgres)
//! names the server; a scratch database is created and dropped.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ca_a2a_flow_engine::now_ms;
use ca_a2a_flow_engine::store::{AnyStore, NewRun, Store};

const BIN: &str = env!("CARGO_BIN_EXE_ca-a2a-flow");
const STEPS: usize = 5;

struct Args {
    runs: usize,
    workers: usize,
    concurrency: usize,
    latency_runs: usize,
    peer: Option<String>,
}

fn args() -> Args {
    let mut a = Args { runs: 2000, workers: 3, concurrency: 8, latency_runs: 200, peer: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--runs" => a.runs = value().parse().unwrap(),
            "--workers" => a.workers = value().parse().unwrap(),
            "--concurrency" => a.concurrency = value().parse().unwrap(),
            "--latency-runs" => a.latency_runs = value().parse().unwrap(),
            "--peer" => a.peer = Some(value()),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn admin_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

async fn psql(url: &str, sql: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.expect("postgres");
    sqlx::query(sqlx::AssertSqlSafe(sql.to_string())).execute(&mut conn).await.unwrap();
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn workflow_file(dir: &std::path::Path) -> std::path::PathBuf {
    let mut text = String::from("name: noop5\nsteps:\n");
    for i in 0..STEPS {
        text.push_str(&format!("  - id: s{i}\n    uses: noop\n"));
        if i > 0 {
            text.push_str(&format!("    needs: [s{}]\n", i - 1));
        }
    }
    let path = dir.join("noop5.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn start_workers(url: &str, n: usize, concurrency: usize) -> Vec<Child> {
    (0..n)
        .map(|_| {
            Command::new(BIN)
                .args(["--state", url, "worker", "--concurrency", &concurrency.to_string()])
                .env("CI", "true")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start a worker")
        })
        .collect()
}

async fn count_done(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM runs WHERE status IN ('succeeded', 'failed', 'cancelled')")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a = args();
    let admin = admin_url();
    let scratch = format!("flow_bench_queue_{}", std::process::id());
    psql(&admin, &format!("CREATE DATABASE {scratch}")).await;
    let url = format!("{}/{scratch}", admin.rsplit_once('/').unwrap().0);
    let dir = tempfile::tempdir().unwrap();
    let file = workflow_file(dir.path());
    let store = AnyStore::open(&url).await.expect("store");
    let workflow = ca_a2a_flow_engine::load(&file, &ca_a2a_flow_steps::registry()).unwrap();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let inputs = BTreeMap::new();
    let queue = |id: String| {
        let store = store.clone();
        let workflow = workflow.clone();
        let inputs = inputs.clone();
        async move {
            let run =
                NewRun { id: &id, workflow: &workflow, inputs: &inputs, now: now_ms(), stack: None, queued: true };
            store.create_run(run).await.unwrap();
        }
    };

    // Throughput.
    for i in 0..a.runs {
        queue(format!("r-t-{i:06}")).await;
    }
    let mut workers = start_workers(&url, a.workers, a.concurrency);
    let started = Instant::now();
    while count_done(&pool).await < a.runs as i64 {
        assert!(started.elapsed() < Duration::from_secs(900), "the workers did not finish in 15 minutes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let failed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM runs WHERE status <> 'succeeded'").fetch_one(&pool).await.unwrap();
    assert_eq!(failed, 0, "every run succeeds");
    let (first, last): (i64, i64) =
        sqlx::query_as("SELECT (SELECT min(first_started_at) FROM steps), (SELECT max(finished_at) FROM runs)")
            .fetch_one(&pool)
            .await
            .unwrap();
    let seconds = (last - first) as f64 / 1000.0;
    let steps_per_s = (a.runs * STEPS) as f64 / seconds;

    // Claim latency, the workers idle and listening.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut latency = Vec::new();
    for i in 0..a.latency_runs {
        let id = format!("r-l-{i:06}");
        queue(id.clone()).await;
        let begin = Instant::now();
        loop {
            let started: Option<i64> =
                sqlx::query_scalar("SELECT first_started_at FROM steps WHERE run_id = $1 AND step_id = 's0'")
                    .bind(&id)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            if started.is_some() {
                break;
            }
            assert!(begin.elapsed() < Duration::from_secs(30), "run {id} was not claimed in 30 s");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT r.queued_at, s.first_started_at FROM runs r JOIN steps s ON s.run_id = r.id AND s.step_id = 's0'
         WHERE r.id LIKE 'r-l-%'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    latency.extend(rows.iter().map(|(q, s)| (s - q) as f64));
    latency.sort_by(|x, y| x.partial_cmp(y).unwrap());
    let rss: Vec<u64> = workers.iter().map(|w| vm_hwm_kib(w.id())).collect();
    for w in &mut workers {
        // SAFETY: a signal to a child this process started and has not reaped.
        unsafe { libc::kill(w.id() as i32, libc::SIGTERM) };
    }
    for w in &mut workers {
        let _ = w.wait();
    }
    pool.close().await;
    drop(store);
    psql(&admin, &format!("DROP DATABASE {scratch} WITH (FORCE)")).await;

    println!(
        "ca-a2a-flow: {} runs x {STEPS} noop steps, {} workers x concurrency {}: {:.0} steps/s ({:.2} s); \
         claim latency over {} runs: p50 {:.1} ms, p99 {:.1} ms; worker peak RSS {} MiB",
        a.runs,
        a.workers,
        a.concurrency,
        steps_per_s,
        seconds,
        latency.len(),
        percentile(&latency, 0.5),
        percentile(&latency, 0.99),
        rss.iter().max().copied().unwrap_or(0) / 1024
    );

    if let Some(peer) = &a.peer {
        let scratch = format!("flow_bench_peer_{}", std::process::id());
        psql(&admin, &format!("CREATE DATABASE {scratch}")).await;
        let url = format!("{}/{scratch}", admin.rsplit_once('/').unwrap().0);
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("{peer} '{url}' {} {} {} {}", a.runs, a.workers, a.concurrency, a.latency_runs))
            .output()
            .expect("run the peer");
        psql(&admin, &format!("DROP DATABASE {scratch} WITH (FORCE)")).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "the peer failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
        println!("peer ({peer}): {}", stdout.trim());
    }
}

/// A process's peak resident memory (VmHWM), while it still runs.
fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(String::from))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}
