//! HTTP/1.1 on loopback as the AWS SDK speaks it to an endpoint override: one
//! request per connection, read whole, forwarded whole; and AWS's answers in
//! each protocol's own format, so the SDK reads them as it reads AWS's.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

/// One request, as read from the SDK.
#[derive(Debug, Clone)]
pub struct Request {
    /// `POST / HTTP/1.1`
    pub head: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The protocol family of a request: EC2 and the query protocol answer XML in
/// two shapes, the JSON protocol `__type`, S3 its own XML.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Protocol {
    Ec2,
    Query,
    Json,
    S3,
}

impl Request {
    pub fn read(reader: &mut BufReader<TcpStream>) -> Option<Self> {
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
        let len = header(&headers, "content-length").and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
        let mut body = vec![0; len];
        reader.read_exact(&mut body).ok()?;
        Some(Self { head: head.trim_end().to_string(), headers, body })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The service the request is signed for (`ec2`, `secretsmanager`, …).
    pub fn service(&self) -> String {
        let scope = self.header("authorization").and_then(|a| a.split("Credential=").nth(1));
        scope.and_then(|c| c.split('/').nth(3)).unwrap_or("?").to_string()
    }

    /// The access key the request is signed with (moto's account follows from it).
    pub fn access_key(&self) -> String {
        let scope = self.header("authorization").and_then(|a| a.split("Credential=").nth(1));
        scope.and_then(|c| c.split('/').next()).unwrap_or("testing").to_string()
    }

    /// The region the request is signed for.
    pub fn region(&self) -> String {
        let scope = self.header("authorization").and_then(|a| a.split("Credential=").nth(1));
        scope.and_then(|c| c.split('/').nth(2)).unwrap_or("us-east-1").to_string()
    }

    /// The AWS action: `Action=` of a query-protocol body, the operation of
    /// `X-Amz-Target`, or for S3 (REST) the method.
    pub fn action(&self) -> String {
        if let Some(target) = self.header("x-amz-target") {
            return target.rsplit('.').next().unwrap_or(target).to_string();
        }
        let body = self.body_text();
        match body.split('&').find_map(|kv| kv.strip_prefix("Action=")) {
            Some(action) => action.to_string(),
            None => self.head.split(' ').next().unwrap_or("?").to_string(),
        }
    }

    pub fn protocol(&self) -> Protocol {
        if self.header("x-amz-target").is_some() {
            return Protocol::Json;
        }
        match self.service().as_str() {
            "ec2" => Protocol::Ec2,
            "s3" => Protocol::S3,
            _ => Protocol::Query,
        }
    }

    /// The same request with another body (its length set to match).
    pub fn with_body(&self, body: Vec<u8>) -> Self {
        let mut headers = self.headers.clone();
        for (k, v) in headers.iter_mut() {
            if k.eq_ignore_ascii_case("content-length") {
                *v = body.len().to_string();
            }
        }
        Self { head: self.head.clone(), headers, body }
    }

    /// Sends the request to `upstream` (host:port) and reads its whole answer.
    pub fn forward(&self, upstream: &str) -> std::io::Result<Vec<u8>> {
        let mut up = TcpStream::connect(upstream)?;
        let mut out = format!("{}\r\n", self.head);
        for (k, v) in &self.headers {
            if !k.eq_ignore_ascii_case("connection") {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        out.push_str("Connection: close\r\n\r\n");
        up.write_all(out.as_bytes())?;
        up.write_all(&self.body)?;
        let mut answer = Vec::new();
        up.read_to_end(&mut answer)?;
        Ok(answer)
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// An AWS error answer in `protocol`'s format, with a request id.
pub fn error_answer(protocol: Protocol, status: u16, code: &str, message: &str) -> Vec<u8> {
    let id = format!("sim-{:08x}", fastrand::u32(..));
    let (kind, body) = match protocol {
        Protocol::Ec2 => (
            "text/xml",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>{id}</RequestID></Response>"
            ),
        ),
        Protocol::Query => (
            "text/xml",
            format!(
                "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>{id}</RequestId></ErrorResponse>"
            ),
        ),
        Protocol::S3 => (
            "application/xml",
            format!("<Error><Code>{code}</Code><Message>{message}</Message><RequestId>{id}</RequestId></Error>"),
        ),
        Protocol::Json => {
            ("application/x-amz-json-1.1", serde_json::json!({ "__type": code, "message": message }).to_string())
        }
    };
    format!(
        "HTTP/1.1 {status} Simulated\r\nContent-Type: {kind}\r\nx-amzn-RequestId: {id}\r\nx-amz-request-id: {id}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The status code of an HTTP answer.
pub fn status_of(answer: &[u8]) -> u16 {
    let line = answer.split(|b| *b == b'\n').next().unwrap_or_default();
    String::from_utf8_lossy(line).split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// The error code of an AWS error answer (any protocol), if it is one.
pub fn error_code_of(answer: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(answer);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b)?;
    if let Some(start) = body.find("<Code>") {
        let rest = &body[start + 6..];
        return rest.find("</Code>").map(|end| rest[..end].to_string());
    }
    let json: serde_json::Value = serde_json::from_str(body).ok()?;
    let code = json.get("__type")?.as_str()?;
    Some(code.rsplit('#').next().unwrap_or(code).to_string())
}

/// An HTTP answer's body.
pub fn body_of(answer: &[u8]) -> &[u8] {
    match answer.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(at) => &answer[at + 4..],
        None => &[],
    }
}

/// `answer` with another body, its Content-Length set to match.
pub fn with_answer_body(answer: &[u8], body: &[u8]) -> Vec<u8> {
    let at = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(answer.len());
    let head = String::from_utf8_lossy(&answer[..at]);
    let mut out: Vec<String> = head
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            !l.starts_with("content-length:") && !l.starts_with("transfer-encoding:")
        })
        .map(String::from)
        .collect();
    out.push(format!("Content-Length: {}", body.len()));
    let mut bytes = format!("{}\r\n\r\n", out.join("\r\n")).into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// A query-protocol answer (HTTP 200) to `action`: `result` inside its
/// `<ActionResult>`, in the service's `namespace`, with a request id.
pub fn query_answer(action: &str, namespace: &str, result: &str) -> Vec<u8> {
    let id = format!("sim-{:08x}", fastrand::u32(..));
    let body = format!(
        "<{action}Response xmlns=\"{namespace}\"><{action}Result>{result}</{action}Result><ResponseMetadata><RequestId>{id}</RequestId></ResponseMetadata></{action}Response>"
    );
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nx-amzn-RequestId: {id}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A JSON-protocol answer (HTTP 200) with this body.
pub fn json_answer(body: &serde_json::Value) -> Vec<u8> {
    let body = body.to_string();
    let id = format!("sim-{:08x}", fastrand::u32(..));
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nx-amzn-RequestId: {id}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
