//! The `ui` page under test: the server as its own process, plain HTTP on
//! loopback, and a real headless Chromium driven through ChromeDriver's
//! WebDriver protocol.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

use super::Env;

/// `ca-a2a-flow ui` on a free loopback port, killed when dropped.
pub struct UiServer {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
}

impl UiServer {
    pub fn start(env: &Env, args: &[&str]) -> Self {
        let mut all = vec!["ui", "--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let mut child = env.command(&all).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("start ui");
        let mut said = BufReader::new(child.stderr.take().expect("stderr"));
        let mut line = String::new();
        said.read_line(&mut line).expect("the server says where it listens");
        let base = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .trim_end_matches('/')
            .to_string();
        // The rest of its output is drained, so that it never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut said, &mut std::io::sink()));
        Self { child, base }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn get(&self, path: &str) -> Answer {
        http("GET", &self.url(path), &[], None)
    }

    /// Everything the page serves about a run: the runs, the run, its
    /// changing parts, the script, and its live stream (read for 1.5 s).
    pub fn everything_served(&self, run: &str) -> Vec<String> {
        vec![
            self.get("/").body,
            self.get(&format!("/runs/{run}")).body,
            self.get(&format!("/runs/{run}/parts")).body,
            self.get("/assets/app.js").body,
            self.stream(&format!("/runs/{run}/live"), &[], Duration::from_millis(1500)),
        ]
    }

    /// A stream of server-sent events, read for `long`.
    pub fn stream(&self, path: &str, headers: &[(&str, &str)], long: Duration) -> String {
        let (host, target) = split_url(&self.url(path));
        let mut conn = TcpStream::connect(&host).expect("connect");
        let mut request = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n");
        for (k, v) in headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str("\r\n");
        conn.write_all(request.as_bytes()).expect("send");
        conn.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
        let until = Instant::now() + long;
        let mut got = Vec::new();
        let mut buf = [0u8; 8192];
        while Instant::now() < until {
            match conn.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => panic!("reading the stream: {e}"),
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    }
}

impl Drop for UiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What an HTTP request got.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

fn split_url(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").expect("plain http on loopback");
    match rest.split_once('/') {
        Some((host, path)) => (host.to_string(), format!("/{path}")),
        None => (rest.to_string(), "/".to_string()),
    }
}

/// One HTTP/1.1 request on its own connection, read to its end.
pub fn http(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&str>) -> Answer {
    let (host, target) = split_url(url);
    let mut conn = TcpStream::connect(&host).unwrap_or_else(|e| panic!("connect {host}: {e}"));
    conn.set_read_timeout(Some(Duration::from_secs(120))).expect("timeout");
    let body = body.unwrap_or("");
    let mut request = format!("{method} {target} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("Host: {host}\r\n"));
    }
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    conn.write_all(request.as_bytes()).expect("send");
    // Read until the answer is whole: some servers (ChromeDriver) keep the
    // connection open whatever `Connection: close` says.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    let (head, mut rest) = loop {
        if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..split]).into_owned();
            let rest = raw[split + 4..].to_vec();
            let header = |name: &str| {
                head.lines().find_map(|l| {
                    l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim().to_string())
                })
            };
            let length = header("content-length").and_then(|l| l.parse::<usize>().ok());
            let chunked = header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked"));
            let whole = match (length, chunked) {
                (Some(n), _) => rest.len() >= n,
                (None, true) => rest.ends_with(b"0\r\n\r\n"),
                (None, false) => false,
            };
            if whole {
                break (head, rest);
            }
        }
        match conn.read(&mut buf) {
            Ok(0) => {
                let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("an HTTP answer");
                break (String::from_utf8_lossy(&raw[..split]).into_owned(), raw[split + 4..].to_vec());
            }
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) => panic!("reading the answer to {method} {url}: {e}"),
        }
    };
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status");
    if head.lines().any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding: chunked")) {
        rest = dechunk(&rest);
    }
    Answer { status, head, body: String::from_utf8_lossy(&rest).into_owned() }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&raw[..end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&raw[end + 2..end + 2 + size]);
        raw = &raw[end + 2 + size + 2..];
    }
    out
}

/// Headless Chromium, through ChromeDriver on a free loopback port.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
}

impl Browser {
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().unwrap().port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (scripts/ensure-browser.sh installs it)");
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = std::env::temp_dir().join(format!("ca-a2a-flow-chromium-{}-{port}", std::process::id()));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                // No connection leaves loopback: no sync, updates, or lookups of Google's hosts.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-quic", "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync", "--window-size=1600,1200",
                         format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let answer = http("POST", &format!("{base}/session"), &[], Some(&capabilities.to_string()));
        let value: Json = serde_json::from_str(&answer.body).expect("a WebDriver answer");
        let session =
            value["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {}", answer.body)).to_string();
        Self { driver, base, session }
    }

    fn call(&self, method: &str, path: &str, body: Option<Json>) -> Json {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let answer = http(method, &url, &[], body.map(|b| b.to_string()).as_deref());
        let value: Json = serde_json::from_str(&answer.body).unwrap_or(Json::Null);
        assert!(answer.status < 300, "WebDriver {method} {path}: {} {}", answer.status, answer.body);
        value["value"].clone()
    }

    pub fn open(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    /// Runs `js` (a function body: `return ...`) in the page.
    pub fn script(&self, js: &str) -> Json {
        self.call("POST", "/execute/sync", Some(json!({ "script": js, "args": [] })))
    }

    /// Waits until `js` returns something truthy, and returns it.
    #[track_caller]
    pub fn wait_for(&self, what: &str, limit: Duration, js: &str) -> Json {
        let started = Instant::now();
        loop {
            let value = self.script(js);
            let truthy = !matches!(&value, Json::Null | Json::Bool(false))
                && value.as_str() != Some("")
                && value.as_f64() != Some(0.0);
            if truthy {
                return value;
            }
            assert!(started.elapsed() < limit, "gave up waiting for {what} after {limit:?}");
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The page's whole document as the browser holds it now.
    pub fn html(&self) -> String {
        self.script("return document.documentElement.outerHTML;").as_str().unwrap_or_default().to_string()
    }

    /// A PNG of the window.
    pub fn screenshot(&self) -> Vec<u8> {
        let encoded = self.call("GET", "/screenshot", None);
        base64_decode(encoded.as_str().expect("base64"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = http("DELETE", &format!("{}/session/{}", self.base, self.session), &[], None);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let digits: Vec<u8> = text.bytes().filter_map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, d)| acc | (u32::from(*d) << (18 - 6 * i)));
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    out
}
