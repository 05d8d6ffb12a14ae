//! `aws-sim --upstream http://127.0.0.1:MOTO_PORT [--port 0] [--page-size N] [--report FILE] ...`
//! Its first line on stdout is `listening on http://127.0.0.1:PORT`; on SIGTERM
//! (or SIGINT) it writes the report and exits.

use std::io::Write;
use std::net::TcpListener;

use aws_sim::{Config, Sim};
use clap::{Parser, ValueEnum};

#[derive(Parser)]
#[command(name = "aws-sim", about = "A proxy between the AWS SDK and moto that makes moto behave more like AWS")]
struct Args {
    /// moto's URL (http://127.0.0.1:PORT).
    #[arg(long)]
    upstream: String,
    /// The port to listen on, on 127.0.0.1 (0: any free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// How many simulated seconds pass in one real second (for simulated waits).
    #[arg(long, default_value_t = 60.0)]
    time_scale: f64,
    /// Seed of the simulation's randomness.
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long, value_enum, default_value_t = Profile::Realistic)]
    profile: Profile,
    #[arg(long, value_enum, default_value_t = Switch::On)]
    throttle: Switch,
    /// Items per page where AWS pages an answer (default 5 with the realistic profile).
    #[arg(long)]
    page_size: Option<usize>,
    /// Where to write the report (JSON) on SIGTERM.
    #[arg(long)]
    report: Option<std::path::PathBuf>,
    /// Faults to inject (a JSON list of rules: errors, throttling, hangs,
    /// rewritten answers), on top of the profile; see sim/src/faults.rs.
    #[arg(long)]
    faults: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Profile {
    Realistic,
    Instant,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Switch {
    On,
    Off,
}

fn main() {
    let args = Args::parse();
    let Some(upstream) = args.upstream.strip_prefix("http://").map(|u| u.trim_end_matches('/').to_string()) else {
        eprintln!("error: --upstream must be an http:// URL (moto on loopback), not {}", args.upstream);
        std::process::exit(2);
    };
    if let Some(seed) = args.seed {
        fastrand::seed(seed);
    }
    let page_size = match (args.page_size, args.profile) {
        (Some(0), _) => {
            eprintln!("error: --page-size must be at least 1");
            std::process::exit(2);
        }
        (Some(n), _) => Some(n),
        (None, Profile::Realistic) => Some(5),
        (None, Profile::Instant) => None,
    };
    // The signals are taken by one thread, waiting for them; the others never see them.
    let signals = wait_set();
    let listener = match TcpListener::bind(("127.0.0.1", args.port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on 127.0.0.1:{}: {e}", args.port);
            std::process::exit(1);
        }
    };
    if !(args.time_scale > 0.0) {
        eprintln!("error: --time-scale must be above 0, not {}", args.time_scale);
        std::process::exit(2);
    }
    let throttle = args.throttle == Switch::On;
    let latency = args.profile == Profile::Realistic;
    let faults = match &args.faults {
        None => Vec::new(),
        Some(path) => {
            match std::fs::read_to_string(path).map_err(|e| e.to_string()).and_then(|t| aws_sim::faults::parse(&t)) {
                Ok(rules) => rules,
                Err(e) => {
                    eprintln!("error: --faults {}: {e}", path.display());
                    std::process::exit(2);
                }
            }
        }
    };
    let injected = faults.len();
    let sim = Sim::new(Config { upstream, page_size, throttle, time_scale: args.time_scale, timing: latency, faults });
    println!("listening on http://{}", listener.local_addr().expect("bound"));
    let _ = std::io::stdout().flush();
    eprintln!(
        "aws-sim: simulating EC2 DryRun{}{}{}, an internet-facing load balancer's need of an internet gateway, and an internet gateway held by mapped public addresses, NAT gateways and RDS instances that take time to be deleted, ECS tasks that start, pass health checks, roll out and drain, new buckets, instance profiles, roles and ECS's service-linked role not usable at once, a database's first backup, a NAT gateway that fails without an internet gateway, a force-deleted secret's name held for seconds, the interfaces of deleted databases and stopped tasks, a bucket's tags given at its creation; not simulated yet: task definitions not visible at once, a deployment that fails on its own, the other ordering rules and deletion dependencies{}",
        page_size
            .map(|n| format!(", pages of {n} items where AWS pages (FilterLogEvents's first one empty)"))
            .unwrap_or_default(),
        if throttle {
            format!(
                ", API throttling (token buckets refilled per simulated second, {} per real second)",
                args.time_scale
            )
        } else {
            String::new()
        },
        if latency {
            ", the time NAT gateways, RDS instances and load balancers take to become usable, a deleted load balancer's interfaces, new EC2 IDs not visible at once (in simulated time)"
        } else {
            ""
        },
        if injected > 0 { format!("; and {injected} fault rules (--faults)") } else { String::new() },
    );
    let serving = sim.clone();
    std::thread::spawn(move || serving.serve(listener));
    let mut signal = 0;
    // SAFETY: `signals` is an initialised set; sigwait writes the signal taken.
    unsafe { libc::sigwait(&signals, &mut signal) };
    if let Some(path) = &args.report {
        let report = serde_json::to_string_pretty(&sim.report().to_json()).expect("json");
        if let Err(e) = std::fs::write(path, report) {
            eprintln!("error: cannot write the report to {}: {e}", path.display());
            std::process::exit(1);
        }
    }
    std::process::exit(0);
}

/// SIGTERM and SIGINT, blocked in this thread (and every thread it starts) so
/// that `sigwait` takes them.
fn wait_set() -> libc::sigset_t {
    // SAFETY: a zeroed sigset_t is initialised by sigemptyset before any use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}
