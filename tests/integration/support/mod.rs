//! What every integration test needs: a scratch directory, a state store on
//! SQLite or on a fresh Postgres database, and the real binary to run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ca_a2a_flow_engine::store::{AnyStore, AttemptRecord, RunRecord, RunsQuery, StepRecord, Store};

pub mod aws;
pub mod faults;
pub mod web;

/// Runs the same test on SQLite and on Postgres: `both!(name, |env| { ... });`
macro_rules! both {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[test]
            fn sqlite() {
                let env = $crate::support::Env::sqlite();
                ($body)(&env);
            }

            #[test]
            fn postgres() {
                let env = $crate::support::Env::postgres();
                ($body)(&env);
            }
        }
    };
}
pub(crate) use both;

pub struct Env {
    pub dir: tempfile::TempDir,
    pub state: String,
    pg_database: Option<String>,
}

/// The Postgres server tests create their databases in (`DATABASE_URL`, or the
/// local server these machines run).
fn admin_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn with_database(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("DATABASE_URL has a database part");
    format!("{base}/{db}")
}

/// Runs a future to its end on a runtime of its own (the one place tests do this).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f)
}

impl Env {
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = dir.path().join("state.db").display().to_string();
        Self { dir, state, pg_database: None }
    }

    /// A fresh database on the real Postgres server; dropped afterwards.
    pub fn postgres() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let name = format!("flow_test_{}_{:08x}", std::process::id(), fastrand::u32(..));
        let admin = admin_url();
        block_on(async {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&admin)
                .await
                .unwrap_or_else(|e| panic!("tests need Postgres at {admin} (set DATABASE_URL): {e}"));
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await
                .expect("create test database");
        });
        Self { dir, state: with_database(&admin, &name), pg_database: Some(name) }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a workflow (or any file) into the scratch directory.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, text).expect("write file");
        path
    }

    /// The binary, in the scratch directory, on this env's state store.
    pub fn command(&self, args: &[&str]) -> Command {
        self.command_on(&self.state, args)
    }

    /// The binary on another URL of the same store (through a proxy, say).
    pub fn command_on(&self, state: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ca-a2a-flow"));
        cmd.current_dir(self.dir.path())
            .arg("--state")
            .arg(state)
            .args(args)
            .env_remove("CA_A2A_FLOW_STATE")
            .env_remove("CA_A2A_FLOW_FAILPOINT")
            .env_remove("CA_A2A_FLOW_LEASE_TTL")
            .env("CI", "true")
            // One moto serves every test at once, so its region holds far more VPCs and
            // Elastic IPs than AWS's default quotas: those two checks have their own tests.
            .env("CA_A2A_FLOW_SKIP_PREFLIGHT", "vpc-quota,eip-quota")
            // aws-sim runs AWS's clock 300 times faster: waits poll as often.
            .env("CA_A2A_FLOW_POLL_INTERVAL", "200ms")
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Out {
        self.run_with(args, &[])
    }

    /// Runs the binary to its end; one still running after [`HUNG_AFTER`] is
    /// killed and fails the test, saying so (a hang is a bug, not a slow test).
    pub fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut cmd = self.command(args);
        cmd.envs(env.iter().copied());
        Self::finish(cmd, args)
    }

    /// [`Env::run`] without the variables `unset` (the AWS credentials, say).
    pub fn run_without(&self, args: &[&str], unset: &[&str]) -> Out {
        let mut cmd = self.command(args);
        for name in unset {
            cmd.env_remove(name);
        }
        Self::finish(cmd, args)
    }

    fn finish(mut cmd: Command, args: &[&str]) -> Out {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = cmd.spawn().expect("run ca-a2a-flow");
        let pid = child.id() as i32;
        let (ended, watch) = std::sync::mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            let hung = watch.recv_timeout(HUNG_AFTER).is_err();
            if hung {
                // SAFETY: kill has no memory-safety preconditions; the child has not been reaped.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            hung
        });
        let out = Out::from(child.wait_with_output().expect("wait for ca-a2a-flow"));
        let _ = ended.send(());
        if watchdog.join().unwrap_or(false) {
            panic!(
                "`ca-a2a-flow {}` was still running after {HUNG_AFTER:?}: killed\n--- stderr\n{}",
                args.join(" "),
                out.stderr
            );
        }
        out
    }

    pub fn spawn(&self, args: &[&str], env: &[(&str, &str)]) -> Child {
        let mut cmd = self.command(args);
        cmd.envs(env.iter().copied()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.spawn().expect("spawn ca-a2a-flow")
    }

    fn store(&self) -> AnyStore {
        block_on(AnyStore::open(&self.state)).expect("open state store")
    }

    pub fn runs(&self) -> Vec<RunRecord> {
        let store = self.store();
        block_on(store.list_runs(&RunsQuery::newest(1000))).expect("list runs")
    }

    /// Every run, however many.
    pub fn runs_all(&self) -> Vec<RunRecord> {
        let store = self.store();
        block_on(store.list_runs(&RunsQuery::newest(i64::MAX))).expect("list runs")
    }

    /// The ids of every line of a run's event log.
    pub fn event_ids(&self, run: &str) -> Vec<i64> {
        let store = self.store();
        block_on(store.events(run, None, 0, i64::MAX)).expect("events").into_iter().map(|e| e.id).collect()
    }

    /// Copies run `run` (SQLite) until the store holds `total` runs: a copy
    /// every second back in time, three at a time sharing a start, one in seven
    /// failed.
    pub fn copy_run_until(&self, run: &str, total: usize) {
        assert!(self.pg_database.is_none(), "copies are made on SQLite");
        let state = self.state.clone();
        let run = run.to_string();
        block_on(async move {
            use sqlx::{Connection, Row};
            let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{state}")).await.expect("connect");
            let columns: Vec<String> = sqlx::query("SELECT name FROM pragma_table_info('runs')")
                .fetch_all(&mut conn)
                .await
                .expect("columns")
                .iter()
                .map(|r| r.get::<String, _>("name"))
                .collect();
            let values: Vec<String> = columns
                .iter()
                .map(|c| match c.as_str() {
                    "id" => "runs.id || '-' || printf('%05d', n.i)".to_string(),
                    "created_at" => "runs.created_at - (n.i / 3) * 1000".to_string(),
                    "status" => "CASE WHEN n.i % 7 = 0 THEN 'failed' ELSE runs.status END".to_string(),
                    other => format!("runs.{other}"),
                })
                .collect();
            let sql = format!(
                "INSERT INTO runs ({}) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {})
                 SELECT {} FROM runs, n WHERE runs.id = $1",
                columns.join(", "),
                total - 1,
                values.join(", ")
            );
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(&run).execute(&mut conn).await.expect("copy runs");
        });
    }

    /// The run's own log lines (not its steps'), oldest first.
    pub fn events(&self, run: &str) -> Vec<String> {
        let store = self.store();
        let events = block_on(store.events(run, None, 0, i64::MAX)).expect("events");
        events.into_iter().filter(|e| e.step_id.is_none()).map(|e| e.message).collect()
    }

    pub fn only_run(&self) -> RunRecord {
        let runs = self.runs();
        assert_eq!(runs.len(), 1, "expected exactly one run, found {}", runs.len());
        runs.into_iter().next().unwrap()
    }

    pub fn run_record(&self, run: &str) -> RunRecord {
        let store = self.store();
        block_on(store.run(run)).expect("run")
    }

    pub fn steps(&self, run: &str) -> Vec<StepRecord> {
        let store = self.store();
        block_on(store.steps(run)).expect("steps")
    }

    pub fn step(&self, run: &str, id: &str) -> StepRecord {
        self.steps(run).into_iter().find(|s| s.step_id == id).unwrap_or_else(|| panic!("no step {id}"))
    }

    pub fn attempts(&self, run: &str, step: &str) -> Vec<AttemptRecord> {
        let store = self.store();
        block_on(store.attempts(run)).expect("attempts").into_iter().filter(|a| a.step_id == step).collect()
    }

    /// Everything the state store holds, as text: the SQLite files' bytes, or
    /// every row of every Postgres table.
    pub fn everything_stored(&self) -> String {
        if self.pg_database.is_none() {
            let mut all = Vec::new();
            for file in [self.state.clone(), format!("{}-wal", self.state)] {
                all.extend(std::fs::read(&file).unwrap_or_default());
            }
            return String::from_utf8_lossy(&all).into_owned();
        }
        let url = self.state.clone();
        block_on(async move {
            use sqlx::{Connection, Row};
            let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
            let row = sqlx::query(
                "SELECT COALESCE(string_agg(t, ' '), '') AS all_rows FROM (
                   SELECT r::text AS t FROM runs r UNION ALL SELECT s::text FROM steps s
                   UNION ALL SELECT a::text FROM attempts a UNION ALL SELECT e::text FROM events e) x",
            )
            .fetch_one(&mut conn)
            .await
            .expect("dump");
            row.get::<String, _>("all_rows")
        })
    }

    /// How the state store's database would run `sql`: SQLite's `EXPLAIN QUERY
    /// PLAN`, or Postgres's `EXPLAIN` with sequential scans priced out (its
    /// tables are tiny in a test, so it would scan them whatever the indexes).
    pub fn query_plan(&self, sql: &str) -> String {
        let state = self.state.clone();
        let postgres = self.pg_database.is_some();
        let sql = sql.to_string();
        block_on(async move {
            use sqlx::{Connection, Row};
            if postgres {
                let mut conn = sqlx::PgConnection::connect(&state).await.expect("connect");
                sqlx::query("SET enable_seqscan = off").execute(&mut conn).await.expect("set");
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN {sql}")))
                    .fetch_all(&mut conn)
                    .await
                    .expect("explain");
                rows.iter().map(|r| r.get::<String, _>(0)).collect::<Vec<_>>().join("\n")
            } else {
                let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{state}")).await.expect("connect");
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                    .fetch_all(&mut conn)
                    .await
                    .expect("explain");
                rows.iter().map(|r| r.get::<String, _>("detail")).collect::<Vec<_>>().join("\n")
            }
        })
    }

    /// Waits until `done` holds, failing the test after `limit`.
    pub fn wait_until(&self, what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < limit, "gave up waiting for {what} after {limit:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(db) = &self.pg_database {
            let admin = admin_url();
            let db = db.clone();
            let _ = std::thread::spawn(move || {
                block_on(async {
                    use sqlx::Connection;
                    if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")))
                            .execute(&mut conn)
                            .await;
                    }
                })
            })
            .join();
        }
    }
}

/// What a finished command did.
/// How long one command of a test may run: the longest (a whole stack's deploy)
/// takes a few minutes here.
pub const HUNG_AFTER: Duration = Duration::from_secs(15 * 60);

pub struct Out {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Out {
    fn from(o: Output) -> Self {
        Self {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Out {
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "exit code\n--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr);
        self
    }
    #[track_caller]
    pub fn expect_success(&self) -> &Self {
        self.expect_code(0)
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// Sends a signal to a child process.
pub fn signal(child: &Child, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

/// Lines of a file as a list (for "ran exactly once" checks).
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(String::from).collect()
}

pub fn count(lines: &[String], what: &str) -> usize {
    lines.iter().filter(|l| *l == what).count()
}

/// A TCP proxy on loopback in front of a server (Postgres, in the store tests)
/// that can drop every connection and refuse new ones (an outage), or stop
/// forwarding while keeping connections open (a stall).
pub struct TcpProxy {
    pub port: u16,
    mode: std::sync::Arc<std::sync::atomic::AtomicU8>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

const FORWARD: u8 = 0;
const REFUSE: u8 = 1;
const STALL: u8 = 2;

impl TcpProxy {
    pub fn start(upstream: &str) -> Self {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let mode = std::sync::Arc::new(std::sync::atomic::AtomicU8::new(FORWARD));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (m, c, up) = (mode.clone(), conns.clone(), upstream.to_string());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if m.load(Ordering::SeqCst) == REFUSE {
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(&up) else { continue };
                c.lock().unwrap().extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)]
                {
                    let m = m.clone();
                    std::thread::spawn(move || {
                        use std::io::{Read, Write};
                        let mut buf = [0u8; 16384];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            while m.load(Ordering::SeqCst) == STALL {
                                std::thread::sleep(Duration::from_millis(10));
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Self { port, mode, conns }
    }

    /// `url` (a postgres:// URL) with its host and port replaced by the proxy's.
    pub fn url(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").expect("a URL");
        let (authority, path) = rest.split_once('/').expect("a database");
        let user = authority.rsplit_once('@').map(|(u, _)| format!("{u}@")).unwrap_or_default();
        format!("{scheme}://{user}127.0.0.1:{}/{path}", self.port)
    }

    /// Drops every connection and refuses new ones until `restore`.
    pub fn cut(&self) {
        self.mode.store(REFUSE, std::sync::atomic::Ordering::SeqCst);
        for conn in self.conns.lock().unwrap().drain(..) {
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Keeps connections open but forwards nothing until `restore`.
    pub fn stall(&self) {
        self.mode.store(STALL, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn restore(&self) {
        self.mode.store(FORWARD, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The host:port of a postgres:// URL.
/// A GET on an OCI registry (`host` is host:port, plain HTTP): status,
/// Docker-Content-Digest, body; `None` when it does not answer.
pub fn registry_get(host: &str, path: &str, accept: &str) -> Option<(u16, Option<String>, Vec<u8>)> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(host).ok()?;
    write!(conn, "GET {path} HTTP/1.0\r\nHost: {host}\r\nAccept: {accept}\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).ok()?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let digest = head.lines().find_map(|l| {
        l.split_once(':')
            .filter(|(k, _)| k.eq_ignore_ascii_case("docker-content-digest"))
            .map(|(_, v)| v.trim().to_string())
    });
    Some((status, digest, raw[split + 4..].to_vec()))
}

pub fn host_port(url: &str) -> String {
    let rest = url.split_once("://").expect("a URL").1;
    let authority = rest.split_once('/').map_or(rest, |(a, _)| a);
    authority.rsplit_once('@').map_or(authority, |(_, h)| h).to_string()
}
