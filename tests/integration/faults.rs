//! A fault layer between the SDK and moto: an HTTP proxy on loopback that
//! forwards every request to the emulator, except where a rule says to answer
//! with an AWS error (throttling, AccessDenied, a quota) or to hold the answer
//! (a hang). It covers what moto cannot do, on top of moto, never instead of it.
//! It also records each action it saw.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What to do to the calls of one AWS action (`CreateVpc`, or `*` for all).
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer `ratio` of the calls with RequestLimitExceeded (HTTP 503).
    Throttle { ratio: f64 },
    /// Answer with this AWS error.
    Error { status: u16, code: &'static str, message: String },
    /// Forward the call, then hold its answer this long (the SDK gives up first).
    HangAfterForwarding(Duration),
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

struct Request {
    head: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut head = String::new();
    if reader.read_line(&mut head).ok()? == 0 {
        return None;
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let len = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Request { head: head.trim_end().to_string(), headers, body })
}

/// The AWS action of a request: `Action=` in a query-protocol body, or the
/// operation named by `X-Amz-Target` in a JSON-protocol one.
fn action_of(req: &Request) -> String {
    if let Some((_, target)) = req.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("x-amz-target")) {
        return target.rsplit('.').next().unwrap_or(target).to_string();
    }
    let body = String::from_utf8_lossy(&req.body);
    body.split('&').find_map(|kv| kv.strip_prefix("Action=")).unwrap_or("?").to_string()
}

fn pick(rules: &Mutex<Vec<Rule>>, action: &str) -> Option<Fault> {
    let mut rules = rules.lock().unwrap();
    let rule = rules.iter_mut().find(|r| (r.action == action || r.action == "*") && r.times != Some(0))?;
    if let Fault::Throttle { ratio } = rule.fault {
        if fastrand::f64() >= ratio {
            return None;
        }
    }
    if let Some(n) = rule.times.as_mut() {
        *n -= 1;
    }
    Some(rule.fault.clone())
}

fn forward(upstream: &str, req: &Request) -> std::io::Result<Vec<u8>> {
    let mut up = TcpStream::connect(upstream)?;
    let mut out = format!("{}\r\n", req.head);
    for (k, v) in &req.headers {
        if !k.eq_ignore_ascii_case("connection") {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    up.write_all(out.as_bytes())?;
    up.write_all(&req.body)?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer)?;
    Ok(answer)
}

fn error_answer(status: u16, code: &str, message: &str) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>fault-{:08x}</RequestID></Response>",
        fastrand::u32(..)
    );
    format!(
        "HTTP/1.1 {status} Fault\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn serve(conn: TcpStream, upstream: &str, rules: &Mutex<Vec<Rule>>, log: &Mutex<Vec<String>>) {
    let mut writer = conn.try_clone().expect("clone stream");
    let mut reader = BufReader::new(conn);
    // One request per connection: every answer says `Connection: close`.
    let Some(req) = read_request(&mut reader) else { return };
    let action = action_of(&req);
    let answer = match pick(rules, &action) {
        Some(Fault::Throttle { .. }) => {
            log.lock().unwrap().push(format!("{action}!throttled"));
            error_answer(503, "RequestLimitExceeded", "Request limit exceeded.")
        }
        Some(Fault::Error { status, code, message }) => {
            log.lock().unwrap().push(format!("{action}!{code}"));
            error_answer(status, code, &message)
        }
        Some(Fault::HangAfterForwarding(hold)) => {
            log.lock().unwrap().push(format!("{action}!hung"));
            let answer = forward(upstream, &req);
            std::thread::sleep(hold);
            match answer {
                Ok(a) => a,
                Err(_) => return,
            }
        }
        None => {
            log.lock().unwrap().push(action.clone());
            match forward(upstream, &req) {
                Ok(a) => a,
                Err(_) => return,
            }
        }
    };
    let _ = writer.write_all(&answer);
    let _ = writer.flush();
}
