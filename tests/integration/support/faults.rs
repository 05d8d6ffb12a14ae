//! A fault layer between the SDK and moto: an HTTP proxy on loopback that
//! forwards every request to the emulator, except where a rule says to answer
//! with an AWS error (throttling, AccessDenied, a quota) or to hold the answer
//! (a hang), or to rewrite moto's answer (a NAT gateway that ends `failed`). It
//! covers what moto cannot do, on top of moto, never instead of it. Errors are
//! written in each service's own protocol (EC2, query, JSON, S3) by aws-sim's
//! HTTP module, so the SDK reads them as it would read AWS's. It also records
//! each action it saw.

use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sim::http::{Protocol, Request, error_answer};

/// What to do to the calls of one AWS action (`CreateVpc`, or `*` for all).
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer `ratio` of the calls with RequestLimitExceeded (HTTP 503).
    Throttle { ratio: f64 },
    /// Answer with this AWS error.
    Error { status: u16, code: &'static str, message: String },
    /// Forward the call, then hold its answer this long (the SDK gives up first).
    HangAfterForwarding(Duration),
    /// Forward the call and replace `from` with `to` in moto's answer, when
    /// the request contains `when` (a parameter like `NatGatewayId`); counts
    /// against `times` only when it rewrote something.
    Rewrite { when: &'static str, from: &'static str, to: String },
    /// Answer with this JSON body (HTTP 200) without asking moto: a stand-in,
    /// at the SDK's HTTP layer, for what moto does not do (an SSM agent that
    /// registers, a command that really runs on an instance).
    Answer { body: String },
    /// Forward the call and replace `from` with `to` in moto's answer when the
    /// answer contains `contains` (a service while it runs a given revision).
    RewriteAnswer { contains: String, from: &'static str, to: &'static str },
}

#[derive(Clone, Debug)]
pub struct Rule {
    pub action: &'static str,
    pub fault: Fault,
    /// How many calls the rule applies to; `None` for all of them.
    pub times: Option<usize>,
}

pub struct FaultProxy {
    pub url: String,
    /// Every action seen, in order, with what was done: `CreateVpc`, `CreateVpc!throttled`.
    pub seen: Arc<Mutex<Vec<String>>>,
}

impl FaultProxy {
    /// Starts the proxy in front of `upstream` (moto's URL).
    pub fn start(upstream: &str, rules: Vec<Rule>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let rules = Arc::new(Mutex::new(rules));
        let upstream = upstream.trim_start_matches("http://").to_string();
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (rules, upstream, log) = (rules.clone(), upstream.clone(), log.clone());
                std::thread::spawn(move || serve(conn, &upstream, &rules, &log));
            }
        });
        Self { url, seen }
    }

    pub fn actions(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

fn pick(rules: &Mutex<Vec<Rule>>, action: &str) -> Option<(usize, Fault)> {
    let mut rules = rules.lock().unwrap();
    let (i, rule) =
        rules.iter_mut().enumerate().find(|(_, r)| (r.action == action || r.action == "*") && r.times != Some(0))?;
    if let Fault::Throttle { ratio } = rule.fault {
        if fastrand::f64() >= ratio {
            return None;
        }
    }
    if !matches!(rule.fault, Fault::Rewrite { .. } | Fault::RewriteAnswer { .. }) {
        used(rule);
    }
    Some((i, rule.fault.clone()))
}

fn used(rule: &mut Rule) {
    if let Some(n) = rule.times.as_mut() {
        *n -= 1;
    }
}

fn throttle_code(p: Protocol) -> (u16, &'static str) {
    match p {
        Protocol::Ec2 => (503, "RequestLimitExceeded"),
        Protocol::Query => (400, "Throttling"),
        Protocol::Json => (400, "ThrottlingException"),
        Protocol::S3 => (503, "SlowDown"),
    }
}

/// `answer` with `from` replaced by `to` in its body and Content-Length fixed,
/// or `None` when the body does not contain `from`.
fn rewrite(answer: &[u8], from: &str, to: &str) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !body.contains(from) {
        return None;
    }
    assert!(!head.to_ascii_lowercase().contains("chunked"), "the fault layer rewrites whole bodies only: {head}");
    let body = body.replace(from, to);
    let head: Vec<String> = head
        .lines()
        .map(|l| {
            if l.to_ascii_lowercase().starts_with("content-length:") {
                format!("Content-Length: {}", body.len())
            } else {
                l.to_string()
            }
        })
        .collect();
    Some(format!("{}\r\n\r\n{body}", head.join("\r\n")).into_bytes())
}

/// The rewritten answer when there is one (the rule then counts as used), else
/// the answer as moto gave it; logged either way.
fn rewritten_or_not(
    changed: Option<Vec<u8>>,
    answer: Vec<u8>,
    label: &str,
    use_rule: impl FnOnce(),
    log: &Mutex<Vec<String>>,
) -> Vec<u8> {
    match changed {
        Some(changed) => {
            use_rule();
            log.lock().unwrap().push(format!("{label}!rewritten"));
            changed
        }
        None => {
            log.lock().unwrap().push(label.to_string());
            answer
        }
    }
}

fn serve(conn: TcpStream, upstream: &str, rules: &Mutex<Vec<Rule>>, log: &Mutex<Vec<String>>) {
    let mut writer = conn.try_clone().expect("clone stream");
    let mut reader = BufReader::new(conn);
    // One request per connection: every answer says `Connection: close`.
    let Some(req) = Request::read(&mut reader) else { return };
    let action = req.action();
    let protocol = req.protocol();
    // Logged as `CreateVpc(dry-run)`: a permission probe that creates nothing.
    let dry = String::from_utf8_lossy(&req.body).contains("DryRun=true");
    let label = if dry { format!("{action}(dry-run)") } else { action.clone() };
    let answer = match pick(rules, &action) {
        Some((_, Fault::Throttle { .. })) => {
            log.lock().unwrap().push(format!("{label}!throttled"));
            let (status, code) = throttle_code(protocol);
            error_answer(protocol, status, code, "Rate exceeded")
        }
        Some((_, Fault::Error { status, code, message })) => {
            log.lock().unwrap().push(format!("{label}!{code}"));
            error_answer(protocol, status, code, &message)
        }
        Some((i, Fault::Rewrite { when, from, to })) => {
            let Ok(answer) = req.forward(upstream) else { return };
            let asked = String::from_utf8_lossy(&req.body).contains(when);
            let changed = rewrite(&answer, from, &to).filter(|_| asked);
            rewritten_or_not(changed, answer, &label, || used(&mut rules.lock().unwrap()[i]), log)
        }
        Some((i, Fault::RewriteAnswer { contains, from, to })) => {
            let Ok(answer) = req.forward(upstream) else { return };
            let holds = String::from_utf8_lossy(&answer).contains(&contains);
            let changed = rewrite(&answer, from, to).filter(|_| holds);
            rewritten_or_not(changed, answer, &label, || used(&mut rules.lock().unwrap()[i]), log)
        }
        Some((_, Fault::Answer { body })) => {
            log.lock().unwrap().push(format!("{label}!answered"));
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nx-amzn-RequestId: fault-answer\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        }
        Some((_, Fault::HangAfterForwarding(hold))) => {
            log.lock().unwrap().push(format!("{label}!hung"));
            let answer = req.forward(upstream);
            std::thread::sleep(hold);
            match answer {
                Ok(a) => a,
                Err(_) => return,
            }
        }
        None => {
            log.lock().unwrap().push(label.clone());
            match req.forward(upstream) {
                Ok(a) => a,
                Err(_) => return,
            }
        }
    };
    let _ = writer.write_all(&answer);
    let _ = writer.flush();
}
