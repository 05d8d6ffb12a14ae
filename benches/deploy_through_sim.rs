//! The whole CA-A2A stack (`workflows/full.yaml`, without the MCP server)
//! deployed, re-run and destroyed through aws-sim's realistic profile, in front
//! of moto: AWS's timings (NAT gateway, RDS instance, load balancer, Fargate
//! tasks, target health, draining, deletions), its throttling, its eventual
//! consistency and its pages. The deploy builds the four agents' images here
//! (the sample services of examples/agents, with podman, pushed to a registry on
//! loopback) and waits for one healthy target per service, as on AWS.
//!
//!   cargo bench --bench deploy_through_sim [-- --time-scale 20 --runs 3]
//!
//! Twice: with the target groups at AWS's defaults (healthy after 5 checks,
//! 300 s draining), then at the stack's own settings (2 checks, 30 s). For
//! each run it reports:
//! - the deploy's wall time against its critical path: the longest path
//!   through the workflow's DAG where each step weighs the time the layer made
//!   it wait for a resource to become usable (from the layer's own record; of
//!   the steps whose outputs name the resource, the last to finish), and every
//!   other step nothing. So the ratio is what the engine, the kinds' calls and
//!   their polling add to what AWS imposes;
//! - when the database was requested, from the deploy's first step;
//! - the requests per deploy, per no-change re-run and per destroy, and the
//!   answers throttled in each (a throttled answer that surfaced as a failure
//!   would fail the run, and the bench with it);
//! - at the end, the peak RSS of the ca-a2a-flow processes.
//!
//! Each wait polls at its kind's own interval on AWS (1 s for a new resource
//! to be visible, 10 to 20 s for a NAT gateway, a database, a service), in the
//! layer's clock (`CA_A2A_FLOW_TIME_SCALE`). moto is started by `scripts/start-moto.sh`; the layer runs in this
//! process, so its record is read between the phases.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use aws_sim::{Config, Report, Sim};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ca-a2a-flow");

/// A server a script of `scripts/` started: the environment it printed, its pid.
struct Server {
    env: Vec<(String, String)>,
    pid: Option<i32>,
}

impl Server {
    /// Runs `scripts/<script> <args>` and reads the `export K=V` lines it prints.
    fn start(root: &Path, script: &str, args: &[&str], pid_key: &str) -> Self {
        let out = Command::new("bash").arg(root.join("scripts").join(script)).args(args).output().expect(script);
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
        let env: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let pid = env.iter().find(|(k, _)| k == pid_key).and_then(|(_, v)| v.parse().ok());
        Self { env, pid }
    }

    fn var(&self, key: &str) -> &str {
        &self.env.iter().find(|(k, _)| k == key).unwrap_or_else(|| panic!("{key} from its script")).1
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            // SAFETY: a plain kill(2) of the server this bench started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
}

/// moto, and where the deploys push the stack's images: a registry on loopback,
/// the sample services (examples/agents) built here on a base image made of
/// this machine's busybox.
struct Upstreams {
    moto: Server,
    _registry: Server,
    _registry_dir: tempfile::TempDir,
    image_inputs: Vec<String>,
}

impl Upstreams {
    fn start(root: &Path) -> Self {
        let moto = Server::start(root, "start-moto.sh", &[], "MOTO_PID");
        let out = Command::new("bash").arg(root.join("scripts/ensure-image-tools.sh")).output().expect("image tools");
        assert!(out.status.success(), "ensure-image-tools.sh: {}", String::from_utf8_lossy(&out.stderr));
        let registry_dir = tempfile::tempdir().expect("registry dir");
        let registry =
            Server::start(root, "start-registry.sh", &[registry_dir.path().to_str().unwrap()], "REGISTRY_PID");
        let base = Command::new("bash").arg(root.join("scripts/busybox-base-image.sh")).output().expect("base image");
        assert!(base.status.success(), "busybox-base-image.sh: {}", String::from_utf8_lossy(&base.stderr));
        let image_inputs = vec![
            "build_on=local".to_string(),
            format!("registry=http://{}", registry.var("REGISTRY_HOST")),
            format!("base_image={}", String::from_utf8_lossy(&base.stdout).trim()),
            "min_free_disk=1MiB".to_string(),
        ];
        Self { moto, _registry: registry, _registry_dir: registry_dir, image_inputs }
    }

    fn url(&self) -> &str {
        self.moto.var("AWS_ENDPOINT_URL")
    }
}

/// What one phase cost, from the layer's record before and after it.
struct Phase {
    seconds: f64,
    requests: u64,
    throttled: u64,
}

fn total_requests(r: &Report) -> u64 {
    r.requests.values().flat_map(|a| a.values()).sum()
}

struct Sample {
    deploy: Phase,
    critical: f64,
    path: Vec<String>,
    /// Seconds from the deploy's first step to the database's request.
    database_asked: f64,
    rerun: Phase,
    destroy: Phase,
}

struct Runner<'a> {
    moto: &'a Upstreams,
    sim: Sim,
    url: String,
    dir: tempfile::TempDir,
    root: PathBuf,
    time_scale: f64,
}

impl Runner<'_> {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(self.dir.path())
            .args(args)
            .envs(self.moto.moto.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("AWS_ENDPOINT_URL", &self.url)
            .env("CI", "true")
            // Each wait polls at its own interval (10 to 20 s on AWS), in the layer's clock.
            .env("CA_A2A_FLOW_TIME_SCALE", self.time_scale.to_string())
            .env_remove("CA_A2A_FLOW_POLL_INTERVAL")
            .env_remove("CA_A2A_FLOW_STATE")
            // One moto holds every run's stack; the quotas have their own tests.
            .env("CA_A2A_FLOW_SKIP_PREFLIGHT", "vpc-quota,eip-quota");
        cmd
    }

    /// Runs the binary; a failure ends the bench, with its output.
    fn phase(&self, args: &[&str]) -> (Phase, String) {
        let before = self.sim.report();
        let start = Instant::now();
        let out = measured(self.command(args));
        let seconds = start.elapsed().as_secs_f64();
        let after = self.sim.report();
        assert!(
            out.status.success(),
            "{args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let phase = Phase {
            seconds,
            requests: total_requests(&after) - total_requests(&before),
            throttled: after.throttled - before.throttled,
        };
        (phase, String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = measured(self.command(args));
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("json")
    }
}

/// The longest path through the DAG (`needs`) where a step weighs `weight`;
/// its length and its steps, first to last.
fn critical_path(needs: &BTreeMap<String, Vec<String>>, weight: &BTreeMap<String, f64>) -> (f64, Vec<String>) {
    fn longest(
        id: &str,
        needs: &BTreeMap<String, Vec<String>>,
        weight: &BTreeMap<String, f64>,
        memo: &mut BTreeMap<String, (f64, Option<String>)>,
    ) -> f64 {
        if let Some((len, _)) = memo.get(id) {
            return *len;
        }
        let mut best = (0.0, None);
        for need in needs.get(id).into_iter().flatten() {
            let len = longest(need, needs, weight, memo);
            if len > best.0 || best.1.is_none() {
                best = (len, Some(need.clone()));
            }
        }
        let len = best.0 + weight.get(id).copied().unwrap_or(0.0);
        memo.insert(id.to_string(), (len, best.1));
        len
    }
    let mut memo = BTreeMap::new();
    let mut end: (f64, Option<String>) = (0.0, None);
    for id in needs.keys() {
        let len = longest(id, needs, weight, &mut memo);
        if len > end.0 || end.1.is_none() {
            end = (len, Some(id.clone()));
        }
    }
    let mut path = Vec::new();
    let mut at = end.1;
    while let Some(id) = at {
        at = memo.get(&id).and_then(|(_, from)| from.clone());
        path.push(id);
    }
    path.reverse();
    (end.0, path)
}

fn sample(moto: &Upstreams, root: &Path, time_scale: f64, n: usize, inputs: &[&str]) -> Sample {
    let upstream = moto.url().trim_start_matches("http://").to_string();
    let sim =
        Sim::new(Config { upstream, page_size: Some(5), throttle: true, time_scale, timing: true, faults: vec![] });
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the layer");
    let url = format!("http://{}", listener.local_addr().unwrap());
    let serving = sim.clone();
    std::thread::spawn(move || serving.serve(listener));
    let runner = Runner { moto, sim, url, dir: tempfile::tempdir().unwrap(), root: root.to_path_buf(), time_scale };

    let full = runner.root.join("workflows/full.yaml");
    let full = full.to_str().unwrap();
    let stack = format!("bench{n}-{}", fastrand::u32(..) % 100_000);
    let stack_input = format!("stack={stack}");
    let mut given = vec!["--input", &stack_input, "--input", "mcp=false"];
    for input in inputs.iter().copied().chain(moto.image_inputs.iter().map(String::as_str)) {
        given.extend(["--input", input]);
    }
    let deploy_args: Vec<&str> = ["run", full].into_iter().chain(given.iter().copied()).collect();
    let (deploy, _) = runner.phase(&deploy_args);

    // The DAG, from `plan`: every step with what it needs.
    let plan_args: Vec<&str> =
        ["plan", full, "--offline", "--output", "json"].into_iter().chain(given.iter().copied()).collect();
    let plan = runner.json(&plan_args);
    let needs: BTreeMap<String, Vec<String>> = plan["steps"]
        .as_array()
        .expect("plan's steps")
        .iter()
        .map(|s| {
            let needs = s["needs"].as_array().into_iter().flatten().filter_map(|n| n.as_str().map(String::from));
            (s["id"].as_str().unwrap().to_string(), needs.collect())
        })
        .collect();
    // Each wait the layer imposed, to the step that waited for it: of the steps
    // whose outputs name the resource, the last to finish (a target group's
    // health belongs to the wait for it, not to the step that made the group).
    let runs = runner.json(&["list", "--output", "json"]);
    let run = runs[0]["id"].as_str().expect("the deploy's run id").to_string();
    let status = runner.json(&["status", &run, "--output", "json"]);
    let resources = runner.sim.report().resources;
    let steps = status["steps"].as_array().expect("status's steps");
    let mut weight = BTreeMap::new();
    for r in &resources {
        let waited = steps
            .iter()
            .filter(|s| s["outputs"].to_string().contains(&r.id))
            .max_by_key(|s| s["finished_at"].as_i64().unwrap_or(0));
        if let Some(step) = waited {
            let seconds = (r.usable_at - r.created_at) / time_scale;
            *weight.entry(step["id"].as_str().unwrap().to_string()).or_insert(0.0f64) += seconds;
        }
    }
    let (critical, path) = critical_path(&needs, &weight);
    let started = |id: &str| steps.iter().find(|s| s["id"] == id).and_then(|s| s["started_at"].as_i64());
    let first = steps.iter().filter_map(|s| s["started_at"].as_i64()).min().unwrap_or(0);
    let database_asked = started("keycloak-db").map(|at| (at - first) as f64 / 1000.0).unwrap_or(f64::NAN);
    let path = path.into_iter().filter(|id| weight.contains_key(id)).collect();

    let (rerun, _) = runner.phase(&deploy_args);
    // --delete-data: the database has deletion protection (a final snapshot is still taken).
    let (destroy, _) = runner.phase(&["destroy", &run, "--yes", "--delete-data"]);
    Sample { deploy, critical, path, database_asked, rerun, destroy }
}

fn arg(name: &str, default: f64) -> f64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} takes a number, not {v}")))
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// The target groups' settings a deploy is measured with.
const VARIANTS: [(&str, &[&str]); 2] = [
    ("AWS's defaults: healthy after 5 checks, 300 s draining", &["healthy_threshold=5", "deregistration_delay=300"]),
    ("the stack's: healthy after 2 checks, 30 s draining", &[]),
];

/// The largest peak RSS of the processes this one started and waited for, in MiB.
/// The largest peak RSS (VmHWM) of a ca-a2a-flow process so far, in KiB.
static PEAK_RSS_KIB: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Runs a ca-a2a-flow command to its end, sampling its own peak RSS (not its
/// children's: a deploy runs podman to build the images) until it exits.
fn measured(mut cmd: Command) -> std::process::Output {
    let child =
        cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().expect("run ca-a2a-flow");
    let status = format!("/proc/{}/status", child.id());
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampling = done.clone();
    let sampler = std::thread::spawn(move || {
        while !sampling.load(std::sync::atomic::Ordering::Relaxed) {
            let hwm = std::fs::read_to_string(&status).ok().and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            });
            if let Some(kib) = hwm {
                PEAK_RSS_KIB.fetch_max(kib, std::sync::atomic::Ordering::Relaxed);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    });
    let out = child.wait_with_output().expect("wait for ca-a2a-flow");
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    sampler.join().expect("the RSS sampler");
    out
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let time_scale = arg("--time-scale", 20.0);
    let runs = arg("--runs", 3.0) as usize;
    let moto = Upstreams::start(&root);
    println!("time scale {time_scale} (1 real second = {time_scale} simulated seconds); median of {runs} runs");
    for (variant, inputs) in VARIANTS {
        eprintln!(
            "{variant}: deploying the full stack {runs} times through aws-sim (realistic, time scale {time_scale})"
        );
        let mut samples = Vec::new();
        for n in 0..runs {
            let s = sample(&moto, &root, time_scale, n, inputs);
            eprintln!(
                "run {}: deploy {:.1} s (critical path {:.1} s: {}), re-run {:.1} s, destroy {:.1} s",
                n + 1,
                s.deploy.seconds,
                s.critical,
                s.path.join(" -> "),
                s.rerun.seconds,
                s.destroy.seconds
            );
            samples.push(s);
        }
        table(variant, &samples, time_scale);
    }
    // Sampled every 20 ms from /proc: the process's own high-water mark, podman's builds not included.
    println!(
        "\npeak RSS of a ca-a2a-flow process (deploy, re-run, destroy, plan, status): {:.1} MiB",
        PEAK_RSS_KIB.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1024.0
    );
}

fn table(variant: &str, samples: &[Sample], time_scale: f64) {
    let fig = |f: &dyn Fn(&Sample) -> f64| {
        let (med, min, max) = median(samples.iter().map(f).collect());
        format!("{med:.2} (min {min:.2}, max {max:.2})")
    };
    let count = |f: &dyn Fn(&Sample) -> u64| {
        let (med, min, max) = median(samples.iter().map(|s| f(s) as f64).collect());
        format!("{med:.0} (min {min:.0}, max {max:.0})")
    };
    let minutes = |f: &dyn Fn(&Sample) -> f64| {
        let (med, _, _) = median(samples.iter().map(f).collect());
        format!("{:.1} min", med * time_scale / 60.0)
    };
    println!("\n### Target groups with {variant}\n");
    println!("| figure | real seconds | as AWS time |");
    println!("|---|---|---|");
    println!("| deploy, wall time | {} | {} |", fig(&|s| s.deploy.seconds), minutes(&|s| s.deploy.seconds));
    println!("| deploy, critical path | {} | {} |", fig(&|s| s.critical), minutes(&|s| s.critical));
    println!("| wall time / critical path | {} | |", fig(&|s| s.deploy.seconds / s.critical));
    println!("| database requested after | {} | {} |", fig(&|s| s.database_asked), minutes(&|s| s.database_asked));
    println!("| no-change re-run | {} | {} |", fig(&|s| s.rerun.seconds), minutes(&|s| s.rerun.seconds));
    println!("| destroy | {} | {} |", fig(&|s| s.destroy.seconds), minutes(&|s| s.destroy.seconds));
    println!("\n| phase | requests | throttled answers |");
    println!("|---|---|---|");
    println!("| deploy | {} | {} |", count(&|s| s.deploy.requests), count(&|s| s.deploy.throttled));
    println!("| no-change re-run | {} | {} |", count(&|s| s.rerun.requests), count(&|s| s.rerun.throttled));
    println!("| destroy | {} | {} |", count(&|s| s.destroy.requests), count(&|s| s.destroy.throttled));
    println!("\ncritical path: {}", samples[samples.len() / 2].path.join(" -> "));
}
