//! Faults on demand, for tests and for trying a deploy under adversity: rules
//! that answer an action with an AWS error (throttling, AccessDenied, a quota),
//! hold an answer (a hang), rewrite the answer (a NAT gateway that ends
//! `failed`) or stand in for what moto does not do (an SSM agent that
//! registers). They apply on top of the profile: an action no rule names gets
//! the layer's usual answer. Errors are written in each service's own protocol.
//!
//! The binary reads them from `--faults FILE`, a JSON list:
//!
//! ```json
//! [{ "action": "CreateNatGateway", "error": { "status": 400, "code": "NatGatewayLimitExceeded", "message": "..." }, "times": 1 },
//!  { "action": "*", "throttle": 0.2 },
//!  { "action": "CreateVpc", "hang_ms": 30000 },
//!  { "action": "DescribeNatGateways", "rewrite": { "when": "NatGatewayId", "from": "<state>available</state>", "to": "<state>failed</state>" } }]
//! ```
//!
//! Every action the layer saw is recorded, with what a rule did to it:
//! `CreateVpc`, `CreateVpc(dry-run)`, `CreateVpc!throttled`, `DescribeNatGateways!rewritten`.

use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

use crate::http::{Request, error_answer, with_answer_body};

/// What to do to the calls of one AWS action (`CreateVpc`, or `*` for all).
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer `ratio` of the calls with the service's throttling error.
    Throttle { ratio: f64 },
    /// Answer with this AWS error.
    Error { status: u16, code: &'static str, message: String },
    /// Answer as usual, then hold the answer this long (the SDK gives up first).
    HangAfterForwarding(Duration),
    /// Replace `from` with `to` in the answer, when the request contains `when`
    /// (a parameter like `NatGatewayId`); counts against `times` only when it
    /// rewrote something.
    Rewrite { when: &'static str, from: &'static str, to: String },
    /// Answer with this JSON body (HTTP 200), without asking moto: a stand-in
    /// for what moto does not do (an SSM agent that registers, a command that
    /// really runs on an instance).
    Answer { body: String },
    /// Replace `from` with `to` in the answer when the answer contains
    /// `contains` (a service while it runs a given revision).
    RewriteAnswer { contains: String, from: &'static str, to: &'static str },
    /// Answer with this AWS error instead of an answer that contains
    /// `contains` (the call reached moto; a service's read while it runs a given
    /// revision); counts against `times` only when it replaced an answer.
    ErrorInstead { contains: String, status: u16, code: &'static str, message: String },
    /// Edit the JSON answer with `edit` when the answer contains `contains`,
    /// whatever its layout (moto's, or the layer's once it changed the answer);
    /// `edit` says whether it changed anything. For tests: a file cannot name a function.
    EditAnswer { contains: String, edit: fn(&mut Value) -> bool },
}

#[derive(Clone, Debug)]
pub struct Rule {
    pub action: &'static str,
    pub fault: Fault,
    /// How many calls the rule applies to; `None` for all of them.
    pub times: Option<usize>,
}

/// The rules, and every action seen.
#[derive(Default)]
pub struct Faults {
    rules: Mutex<Vec<Rule>>,
    seen: Mutex<Vec<String>>,
}

/// What a rule chose for a call, before the layer answers it.
pub enum Before {
    /// The rule's own answer: the layer answers nothing else.
    Answered(Vec<u8>),
    /// The layer answers as usual, then [`Faults::after`] applies the rule.
    Then(Option<(usize, Fault)>, String),
}

impl Faults {
    pub fn new(rules: Vec<Rule>) -> Self {
        Self { rules: Mutex::new(rules), seen: Mutex::default() }
    }

    /// Every action seen so far, in order, with what was done to it.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    fn log(&self, entry: String) {
        self.seen.lock().unwrap().push(entry);
    }

    /// A rule's answer to `req`, when it makes one itself.
    pub fn before(&self, req: &Request) -> Before {
        let action = req.action();
        let protocol = req.protocol();
        // Logged as `CreateVpc(dry-run)`: a permission probe that creates nothing.
        let label = if req.body_text().contains("DryRun=true") { format!("{action}(dry-run)") } else { action };
        let picked = self.pick(&label);
        match picked {
            Some((_, Fault::Throttle { .. })) => {
                self.log(format!("{label}!throttled"));
                Before::Answered(crate::throttle::answer(protocol))
            }
            Some((_, Fault::Error { status, code, message })) => {
                self.log(format!("{label}!{code}"));
                Before::Answered(error_answer(protocol, status, code, &message))
            }
            Some((_, Fault::Answer { body })) => {
                self.log(format!("{label}!answered"));
                Before::Answered(json_body(&body))
            }
            other => Before::Then(other, label),
        }
    }

    /// The layer's `answer` to a call, with the rule [`Faults::before`] chose applied.
    pub fn after(&self, rule: Option<(usize, Fault)>, label: String, req: &Request, answer: Vec<u8>) -> Vec<u8> {
        let text = String::from_utf8_lossy(&answer).into_owned();
        let changed = match &rule {
            Some((_, Fault::Rewrite { when, from, to })) if req.body_text().contains(when) => {
                rewrite(&answer, from, to)
            }
            Some((_, Fault::RewriteAnswer { contains, from, to })) if text.contains(contains.as_str()) => {
                rewrite(&answer, from, to)
            }
            Some((_, Fault::ErrorInstead { contains, status, code, message })) if text.contains(contains.as_str()) => {
                Some(error_answer(req.protocol(), *status, code, message))
            }
            Some((_, Fault::EditAnswer { contains, edit })) if text.contains(contains.as_str()) => {
                let mut doc: Value = serde_json::from_slice(crate::http::body_of(&answer)).unwrap_or_default();
                edit(&mut doc).then(|| with_answer_body(&answer, doc.to_string().as_bytes()))
            }
            Some((_, Fault::HangAfterForwarding(hold))) => {
                self.log(format!("{label}!hung"));
                std::thread::sleep(*hold);
                return answer;
            }
            _ => None,
        };
        match (changed, rule) {
            (Some(changed), Some((i, _))) => {
                used(&mut self.rules.lock().unwrap()[i]);
                self.log(format!("{label}!rewritten"));
                changed
            }
            _ => {
                self.log(label);
                answer
            }
        }
    }

    /// The first rule for `label`'s action with calls left; rules that answer
    /// count the call at once, rewrites only once they rewrote something.
    fn pick(&self, label: &str) -> Option<(usize, Fault)> {
        let action = label.split('(').next().unwrap_or(label);
        let mut rules = self.rules.lock().unwrap();
        let (i, rule) = rules
            .iter_mut()
            .enumerate()
            .find(|(_, r)| (r.action == action || r.action == "*") && r.times != Some(0))?;
        if let Fault::Throttle { ratio } = rule.fault {
            if fastrand::f64() >= ratio {
                return None;
            }
        }
        if !matches!(
            rule.fault,
            Fault::Rewrite { .. } | Fault::RewriteAnswer { .. } | Fault::ErrorInstead { .. } | Fault::EditAnswer { .. }
        ) {
            used(rule);
        }
        Some((i, rule.fault.clone()))
    }
}

fn used(rule: &mut Rule) {
    if let Some(n) = rule.times.as_mut() {
        *n -= 1;
    }
}

/// A 200 answer with this body, in the JSON protocol (the only one `Answer` stands in for).
fn json_body(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nx-amzn-RequestId: fault-answer\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// `answer` with `from` replaced by `to` in its body, or `None` when the body
/// does not contain `from`.
fn rewrite(answer: &[u8], from: &str, to: &str) -> Option<Vec<u8>> {
    let body = String::from_utf8_lossy(crate::http::body_of(answer)).into_owned();
    body.contains(from).then(|| with_answer_body(answer, body.replace(from, to).as_bytes()))
}

/// The rules of a `--faults` file (see the module's documentation).
pub fn parse(text: &str) -> Result<Vec<Rule>, String> {
    let list: Vec<Value> = serde_json::from_str(text).map_err(|e| format!("not a JSON list of rules: {e}"))?;
    list.iter().enumerate().map(|(i, v)| rule(v).map_err(|e| format!("rule {}: {e}", i + 1))).collect()
}

/// The file's strings live as long as the process: rules hold `&'static str`.
fn leak(v: &Value, what: &str) -> Result<&'static str, String> {
    let s = v.as_str().ok_or_else(|| format!("`{what}` must be a string"))?;
    Ok(Box::leak(s.to_string().into_boxed_str()))
}

fn rule(v: &Value) -> Result<Rule, String> {
    let action = leak(&v["action"], "action")?;
    let times = match &v["times"] {
        Value::Null => None,
        n => Some(n.as_u64().ok_or("`times` must be a whole number")? as usize),
    };
    let fault = if let Some(ratio) = v["throttle"].as_f64() {
        Fault::Throttle { ratio }
    } else if let Some(e) = v.get("error") {
        let status = e["status"].as_u64().ok_or("`error.status` must be an HTTP status")? as u16;
        let message = e["message"].as_str().unwrap_or_default().to_string();
        Fault::Error { status, code: leak(&e["code"], "error.code")?, message }
    } else if let Some(ms) = v["hang_ms"].as_u64() {
        Fault::HangAfterForwarding(Duration::from_millis(ms))
    } else if let Some(r) = v.get("rewrite") {
        let (from, to) = (leak(&r["from"], "rewrite.from")?, leak(&r["to"], "rewrite.to")?);
        Fault::Rewrite { when: leak(&r["when"], "rewrite.when")?, from, to: to.to_string() }
    } else if let Some(body) = v.get("answer") {
        Fault::Answer { body: body.to_string() }
    } else {
        return Err("needs one of `throttle`, `error`, `hang_ms`, `rewrite`, `answer`".into());
    };
    Ok(Rule { action, fault, times })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_faults_file_names_each_rule_s_action_fault_and_count() {
        let rules = parse(
            r#"[{ "action": "CreateNatGateway", "error": { "status": 400, "code": "NatGatewayLimitExceeded", "message": "too many" }, "times": 1 },
                { "action": "*", "throttle": 0.5 },
                { "action": "CreateVpc", "hang_ms": 1500 }]"#,
        )
        .unwrap();
        assert!(matches!(rules[0].fault, Fault::Error { status: 400, code: "NatGatewayLimitExceeded", .. }));
        assert_eq!((rules[0].action, rules[0].times), ("CreateNatGateway", Some(1)));
        assert!(matches!(rules[1].fault, Fault::Throttle { ratio } if ratio == 0.5));
        assert!(matches!(rules[2].fault, Fault::HangAfterForwarding(d) if d == Duration::from_millis(1500)));
    }

    #[test]
    fn a_rule_without_a_fault_is_refused_with_its_place() {
        let err = parse(r#"[{ "action": "CreateVpc", "times": 1 }]"#).unwrap_err();
        assert!(err.starts_with("rule 1: needs one of"), "{err}");
    }
}
