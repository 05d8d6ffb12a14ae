//! `aws-sim`: a proxy between the AWS SDK and moto that makes moto behave the
//! way AWS does where moto is kinder. Each behaviour it simulates, and the
//! public source of its figures, is listed in the README's `aws-sim` table.
//!
//! Simulated today: `DryRun` answered as AWS answers it (moto creates the
//! resource); pages cut to `--page-size` where AWS pages; the ordering and
//! deletion rules of [`rules`]; API throttling as token buckets ([`throttle`]);
//! the time NAT gateways, databases and load balancers take to become usable
//! ([`latency`]); network interfaces that outlive their load balancer and
//! block the deletes of what they are in ([`interfaces`]); new EC2 IDs not
//! visible at once ([`consistency`]); NAT gateways and databases that take
//! time to be deleted, and hold what they used meanwhile ([`deleting`]); ECS
//! tasks that start, register, pass their health checks and drain ([`tasks`]);
//! a new bucket or instance profile not usable at once ([`propagation`]);
//! a certificate pending until its DNS validation records exist ([`validation`]);
//! client tokens honoured as AWS honours
//! them ([`tokens`]); what moto's API leaves out (a bucket's tags given at its
//! creation, [`missing`]); and, on demand, the faults of [`faults`] (errors,
//! hangs, rewritten answers), on top of all of that.
//! Every request is counted for the report written on SIGTERM.

pub mod consistency;
pub mod deleting;
pub mod faults;
pub mod http;
pub mod interfaces;
pub mod latency;
pub mod missing;
pub mod paging;
pub mod propagation;
pub mod rules;
pub mod tasks;
pub mod throttle;
pub mod tokens;
pub mod validation;

use std::collections::BTreeMap;
use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use http::{Protocol, Request, error_answer};

/// How the layer behaves.
#[derive(Debug, Clone)]
pub struct Config {
    /// moto, as host:port.
    pub upstream: String,
    /// Items per page where AWS pages an answer; `None` leaves moto's pages.
    pub page_size: Option<usize>,
    /// Throttle calls as AWS's token buckets do.
    pub throttle: bool,
    /// Simulated seconds per real second.
    pub time_scale: f64,
    /// AWS's timings (the realistic profile): resources take time to become
    /// usable, and a deleted load balancer's interfaces to be released.
    pub timing: bool,
    /// Faults asked for (`--faults`): answers the layer changes on purpose.
    pub faults: Vec<faults::Rule>,
}

/// What the layer saw, for `--report`.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Requests by service, then action.
    pub requests: BTreeMap<String, BTreeMap<String, u64>>,
    /// Error answers by code (moto's and the layer's own).
    pub errors: BTreeMap<String, u64>,
    /// Answers the layer made itself instead of moto, by what it simulated.
    pub simulated: BTreeMap<String, u64>,
    /// Calls answered with a throttling error.
    pub throttled: u64,
    /// Resources whose creation takes time: when each was created and became usable.
    pub resources: Vec<latency::Created>,
}

impl Report {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "requests": self.requests,
            "errors_by_code": self.errors,
            "simulated": self.simulated,
            "throttled": self.throttled,
            "resources": self.resources.iter().map(|c| serde_json::json!({
                "kind": c.kind,
                "id": c.id,
                "created_at_s": c.created_at,
                "usable_at_s": c.usable_at,
            })).collect::<Vec<_>>(),
        })
    }
}

/// The layer: its configuration and what it saw.
#[derive(Clone)]
pub struct Sim {
    config: Arc<Config>,
    report: Arc<Mutex<Report>>,
    buckets: Arc<throttle::Buckets>,
    latency: Arc<latency::Latency>,
    interfaces: Arc<interfaces::Interfaces>,
    consistency: Arc<consistency::Consistency>,
    tokens: Arc<tokens::Tokens>,
    faults: Arc<faults::Faults>,
    deleting: Arc<deleting::Deleting>,
    tasks: Arc<tasks::Tasks>,
    propagation: Arc<propagation::Propagation>,
}

impl Sim {
    pub fn new(config: Config) -> Self {
        let buckets = Arc::new(throttle::Buckets::new(config.time_scale));
        let latency = Arc::new(latency::Latency::new(config.time_scale));
        let interfaces = Arc::default();
        let report = Arc::new(Mutex::new(Report::default()));
        let consistency = Arc::default();
        let tokens = Arc::default();
        let faults = Arc::new(faults::Faults::new(config.faults.clone()));
        let (deleting, tasks, propagation) = (Arc::default(), Arc::default(), Arc::default());
        let config = Arc::new(config);
        Self { config, report, buckets, latency, interfaces, consistency, tokens, faults, deleting, tasks, propagation }
    }

    /// Every action seen, in order, with what a fault rule did to it.
    pub fn seen(&self) -> Vec<String> {
        self.faults.seen()
    }

    pub fn report(&self) -> Report {
        let mut report = self.report.lock().unwrap().clone();
        report.resources = self.latency.created();
        // A service is usable once its tasks run; its targets once healthy in each group.
        for life in self.tasks.lives() {
            let (created_at, running_at) = (life.created_at, life.running_at);
            let service = latency::Created { kind: "ecs_service", id: life.service, created_at, usable_at: running_at };
            report.resources.push(service);
            for (group, healthy_at) in life.healthy_at {
                let health = latency::Created {
                    kind: "target_health",
                    id: group,
                    created_at: running_at,
                    usable_at: healthy_at,
                };
                report.resources.push(health);
            }
        }
        report
    }

    /// Serves every connection of `listener`, one thread each.
    pub fn serve(&self, listener: TcpListener) {
        for conn in listener.incoming().flatten() {
            let sim = self.clone();
            std::thread::spawn(move || sim.connection(conn));
        }
    }

    fn connection(&self, conn: TcpStream) {
        let Ok(mut writer) = conn.try_clone() else { return };
        let mut reader = BufReader::new(conn);
        // One request per connection: every answer says `Connection: close`.
        let Some(req) = Request::read(&mut reader) else { return };
        let answer = self.answer(&req);
        let _ = writer.write_all(&answer);
        let _ = writer.flush();
    }

    /// The answer AWS would give to `req`.
    pub fn answer(&self, req: &Request) -> Vec<u8> {
        let (service, action) = (req.service(), req.action());
        self.count(|r| *r.requests.entry(service.clone()).or_default().entry(action.clone()).or_default() += 1);
        let answer = match self.faults.before(req) {
            faults::Before::Answered(answer) => {
                self.count(|r| *r.simulated.entry("fault".into()).or_default() += 1);
                answer
            }
            faults::Before::Then(rule, label) => {
                let answer = self.usual(req);
                self.faults.after(rule, label, req, answer)
            }
        };
        if http::status_of(&answer) >= 400 {
            if let Some(code) = http::error_code_of(&answer) {
                self.count(|r| *r.errors.entry(code.clone()).or_default() += 1);
            }
        }
        answer
    }

    /// The profile's answer to `req`: throttled, simulated, or moto's shown as AWS would show it.
    fn usual(&self, req: &Request) -> Vec<u8> {
        let completed = missing::asked(req);
        let req = completed.as_ref().unwrap_or(req);
        let answer = match self.throttled(req).or_else(|| self.simulate(req)) {
            Some((what, answer)) => {
                self.count(|r| *r.simulated.entry(what.to_string()).or_default() += 1);
                answer
            }
            None if self.config.timing => {
                let held = self.interfaces.before_delete(req, &self.config.upstream);
                let answer = self.forwarded(req);
                missing::complete(req, &answer, &self.config.upstream);
                let now = self.latency.now();
                self.interfaces.after_delete(held, &answer, now);
                let answer = self.deleting.shown(req, answer, now, &self.config.upstream, &self.interfaces);
                let upstream = &self.config.upstream;
                let roles = |task_definition: &str| self.propagation.roles_usable_at(req, upstream, task_definition);
                let answer = self.tasks.shown(req, answer, now, upstream, &self.interfaces, &roles);
                self.propagation.made(req, &answer, now, &self.config.upstream);
                let answer = self.consistency.shown(req, answer, self.latency.now());
                let answer = validation::shown(req, answer, &self.config.upstream);
                let answer = rules::shown(req, answer, &self.config.upstream);
                self.latency.shown(req, answer, &self.config.upstream)
            }
            None => {
                let answer = self.forwarded(req);
                missing::complete(req, &answer, &self.config.upstream);
                rules::shown(req, answer, &self.config.upstream)
            }
        };
        self.tokens.answered(req, &answer);
        answer
    }

    /// moto's answer, in pages where AWS pages: moto pages itself when asked
    /// for fewer items, or the layer cuts what moto answers whole.
    fn forwarded(&self, req: &Request) -> Vec<u8> {
        let upstream = &self.config.upstream;
        let Some(size) = self.config.page_size else {
            return self.upstream(req);
        };
        if let Some(answer) = paging::empty_first_page(req) {
            self.count(|r| *r.simulated.entry("empty_page".into()).or_default() += 1);
            return answer;
        }
        let req = paging::after_empty_page(req).unwrap_or_else(|| req.clone());
        if let Some(answer) = paging::sliced(&req, size, upstream) {
            return answer;
        }
        self.upstream(&paging::paged(&req, size).unwrap_or(req))
    }

    /// moto's answer to `req` as it is.
    fn upstream(&self, req: &Request) -> Vec<u8> {
        match req.forward(&self.config.upstream) {
            Ok(answer) => answer,
            Err(e) => error_answer(req.protocol(), 503, "ServiceUnavailable", &format!("moto: {e}")),
        }
    }

    /// The service's throttling error when the call's token bucket is empty.
    fn throttled(&self, req: &Request) -> Option<(&'static str, Vec<u8>)> {
        let category = throttle::category(req).filter(|_| self.config.throttle)?;
        if self.buckets.take(&req.region(), category) {
            return None;
        }
        self.count(|r| r.throttled += 1);
        Some(("throttled", throttle::answer(req.protocol())))
    }

    /// An answer the layer gives itself, with what it simulated.
    fn simulate(&self, req: &Request) -> Option<(&'static str, Vec<u8>)> {
        // EC2 DryRun: "Request would have succeeded, but DryRun flag is set", HTTP 412,
        // and nothing is created (EC2 API reference, "Error codes": DryRunOperation).
        if req.protocol() == Protocol::Ec2 && req.body_text().split('&').any(|kv| kv == "DryRun=true") {
            let message = "Request would have succeeded, but DryRun flag is set.";
            return Some(("dry_run", error_answer(Protocol::Ec2, 412, "DryRunOperation", message)));
        }
        if let Some(repeated) = self.tokens.repeated(req) {
            return Some(repeated);
        }
        if self.config.timing {
            let now = self.latency.now();
            let refused = self.consistency.refuse(req, now).or_else(|| self.interfaces.refuse(req, now));
            let refused = refused
                .or_else(|| self.deleting.refuse(req, now))
                .or_else(|| self.tasks.refuse(req, now))
                .or_else(|| self.propagation.refuse(req, now));
            if let Some(refused) = refused {
                return Some(refused);
            }
        }
        rules::enforce(req, &self.config.upstream)
    }

    fn count(&self, f: impl FnOnce(&mut Report)) {
        f(&mut self.report.lock().unwrap());
    }
}
