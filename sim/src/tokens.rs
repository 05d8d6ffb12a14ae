//! Client tokens as AWS honours them: a create repeated with the same token
//! gets the first call's answer (the resource it made, whatever became of it
//! since), and the same token with other parameters is refused. moto ignores
//! them and makes another resource each time.
//!
//! Sources: EC2 API reference, "Ensuring idempotency" (a repeated request with
//! the same client token returns the original result; other parameters:
//! `IdempotentParameterMismatch`); ECS CreateService reference (`clientToken`;
//! a repeat with other parameters: "Creation of service was not idempotent.").

use std::collections::HashMap;
use std::sync::Mutex;

use crate::http::{Protocol, Request, error_answer, status_of};

/// The creates that take a client token, and where it is in the request.
fn token_of(req: &Request) -> Option<String> {
    let body = req.body_text();
    match (req.service().as_str(), req.action().as_str()) {
        ("ec2", "CreateNatGateway" | "RunInstances") => {
            body.split('&').find_map(|kv| kv.strip_prefix("ClientToken=")).map(String::from)
        }
        ("ecs", "CreateService") => {
            let json: serde_json::Value = serde_json::from_str(&body).ok()?;
            json.get("clientToken")?.as_str().map(String::from)
        }
        _ => None,
    }
}

/// The request's parameters without its token, in a stable order.
fn fingerprint(req: &Request) -> String {
    let body = req.body_text();
    if req.protocol() == Protocol::Json {
        let mut json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if let Some(map) = json.as_object_mut() {
            map.remove("clientToken");
        }
        return json.to_string();
    }
    let mut pairs: Vec<&str> = body.split('&').filter(|kv| !kv.starts_with("ClientToken=")).collect();
    pairs.sort_unstable();
    pairs.join("&")
}

#[derive(Default)]
pub struct Tokens {
    /// (region, action, token) -> (parameters, the first answer)
    seen: Mutex<HashMap<(String, String, String), (String, Vec<u8>)>>,
}

impl Tokens {
    /// The first answer to a repeated token, or AWS's refusal of other parameters.
    pub fn repeated(&self, req: &Request) -> Option<(&'static str, Vec<u8>)> {
        let token = token_of(req)?;
        let seen = self.seen.lock().unwrap();
        let (params, answer) = seen.get(&(req.region(), req.action(), token))?;
        if *params == fingerprint(req) {
            return Some(("client_token_repeated", answer.clone()));
        }
        let refusal = match req.protocol() {
            Protocol::Json => error_answer(
                Protocol::Json,
                400,
                "InvalidParameterException",
                "Creation of service was not idempotent.",
            ),
            p => error_answer(
                p,
                400,
                "IdempotentParameterMismatch",
                "The client token you have provided is associated with a request that had different parameters.",
            ),
        };
        Some(("client_token_mismatch", refusal))
    }

    /// Notes a create's answer under its token.
    pub fn answered(&self, req: &Request, answer: &[u8]) {
        let Some(token) = token_of(req).filter(|_| status_of(answer) == 200) else { return };
        let key = (req.region(), req.action(), token);
        self.seen.lock().unwrap().entry(key).or_insert_with(|| (fingerprint(req), answer.to_vec()));
    }
}
