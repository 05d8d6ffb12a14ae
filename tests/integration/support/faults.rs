//! Faults on top of moto, through aws-sim's fault rules (sim/src/faults.rs):
//! the layer with its `instant` profile, no throttling of its own and no pages,
//! in this process, in front of the emulator. A rule answers an action with an
//! AWS error (throttling, AccessDenied, a quota), holds the answer (a hang),
//! rewrites it (a NAT gateway that ends `failed`) or stands in for what moto
//! does not do. It covers what moto cannot do, on top of moto, never instead
//! of it, and records each action it saw.

use std::net::TcpListener;

pub use aws_sim::faults::{Fault, Rule};
use aws_sim::{Config, Sim};

pub struct FaultProxy {
    pub url: String,
    sim: Sim,
}

impl FaultProxy {
    /// Starts the layer in front of `upstream` (moto's URL), with these rules.
    pub fn start(upstream: &str, rules: Vec<Rule>) -> Self {
        let upstream = upstream.trim_start_matches("http://").trim_end_matches('/').to_string();
        let config =
            Config { upstream, page_size: None, throttle: false, time_scale: 1.0, timing: false, faults: rules };
        let sim = Sim::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fault layer");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let serving = sim.clone();
        std::thread::spawn(move || serving.serve(listener));
        Self { url, sim }
    }

    /// Every action seen, in order, with what was done: `CreateVpc`, `CreateVpc!throttled`.
    pub fn actions(&self) -> Vec<String> {
        self.sim.seen()
    }
}

/// What an SSM command's invocation ended as, answered for moto (which runs
/// nothing): the stand-in for the instance's SSM agent.
pub fn invocation(status: &str, code: i32, stdout: &str) -> Rule {
    let body = serde_json::json!({
        "CommandId": "c", "InstanceId": "i", "Status": status, "StatusDetails": status,
        "ResponseCode": code, "StandardOutputContent": stdout, "StandardErrorContent": ""
    });
    Rule { action: "GetCommandInvocation", fault: Fault::Answer { body: body.to_string() }, times: None }
}
