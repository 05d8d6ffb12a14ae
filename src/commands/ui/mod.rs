//! `ui`: a live web page of the state store's runs, served from this binary.
//!
//! Server-rendered HTML, one CSS file and a little JavaScript, all embedded:
//! nothing is fetched from elsewhere. Safe by default: it binds loopback,
//! refuses any other address without a token, is read-only unless
//! `--allow-actions`, and serves only what the store holds, where secret
//! values are already masked.

#[allow(unused_imports)]
use super::*;

mod live;
mod page;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};

/// How the page is served.
pub(crate) struct UiOptions {
    pub listen: SocketAddr,
    /// Asked of every request when set (a header, a cookie, or `?token=` once).
    pub token: Option<String>,
    pub allow_actions: bool,
    /// The store's URL, handed to the processes actions start (in their
    /// environment, never on their command line).
    pub state_url: String,
}

/// A process an action started (`cancel`, `resume`), shown on its run's page.
pub(super) struct Action {
    pub run: String,
    pub what: &'static str,
    pub pid: u32,
    pub started_at: i64,
    pub output: std::path::PathBuf,
    pub exit: Option<i32>,
}

#[derive(Clone)]
pub(super) struct Ui {
    pub store: AnyStore,
    pub allow_actions: bool,
    token: Option<Arc<str>>,
    state_url: Arc<str>,
    pub actions: Arc<Mutex<Vec<Action>>>,
    outputs: Arc<tempfile_dir::Dir>,
    loopback: bool,
    /// The token's cookie: named after the port, since every server on a
    /// host shares its cookies.
    cookie: Arc<str>,
}

/// The cookie that carries the token once given.
const COOKIE: &str = "ca_a2a_flow_ui";
/// The header an action's request must carry: a page of another site cannot
/// send it without the server's consent (which it never gives).
const ACTION_HEADER: &str = "x-ca-a2a-flow-action";

pub(super) async fn serve(store: AnyStore, options: UiOptions) -> Result<(), CliError> {
    let loopback = options.listen.ip().is_loopback();
    if !loopback && options.token.is_none() {
        return Err(CliError::Usage(format!(
            "ui: {} is not a loopback address: anyone who reaches it would see every run; give --token (or --token-file), or listen on 127.0.0.1 and reach it through an SSH or SSM port forward",
            options.listen
        )));
    }
    if let Some(token) = options.token.as_deref().map(str::trim) {
        let allowed = |c: char| c.is_ascii_alphanumeric() || "-._~+/=".contains(c);
        if token.len() < 16 || !token.chars().all(allowed) {
            return Err(CliError::Usage(
                "ui: the token must have at least 16 characters, each a letter, a digit or one of - . _ ~ + / = (`openssl rand -hex 24` makes one)".into(),
            ));
        }
    }
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|e| CliError::Usage(format!("ui: cannot listen on {}: {e}", options.listen)))?;
    let bound = listener.local_addr().map_err(|e| CliError::Usage(format!("ui: {e}")))?;
    let ui = Ui {
        store: store.clone(),
        allow_actions: options.allow_actions,
        token: options.token.map(|t| Arc::from(t.trim())),
        state_url: Arc::from(options.state_url.as_str()),
        actions: Arc::default(),
        outputs: Arc::new(tempfile_dir::Dir::new().map_err(|e| CliError::Usage(format!("ui: {e}")))?),
        loopback,
        cookie: Arc::from(format!("{COOKIE}_{}", bound.port())),
    };
    let app = Router::new()
        .route("/", get(runs_page))
        .route("/runs/{id}", get(run_page))
        .route("/runs/{id}/parts", get(run_parts))
        .route("/runs/{id}/live", get(live::stream))
        .route("/runs/{id}/cancel", post(cancel_action))
        .route("/runs/{id}/resume", post(resume_action))
        .route("/assets/app.css", get(|| asset("text/css; charset=utf-8", include_str!("app.css"))))
        .route("/assets/app.js", get(|| asset("text/javascript; charset=utf-8", include_str!("app.js"))))
        .layer(axum::middleware::from_fn_with_state(ui.clone(), guard))
        .with_state(ui);
    eprintln!(
        "ca-a2a-flow ui: http://{bound}/ ({}; state {})",
        if options.allow_actions { "actions allowed: cancel and resume" } else { "read-only" },
        store.name()
    );
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| CliError::Usage(format!("ui: the server stopped: {e}")))
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// Every request: the Host a browser asked for (a loopback server answers only
/// to loopback names, which DNS rebinding cannot fake), then the token.
async fn guard(State(ui): State<Ui>, request: Request, next: Next) -> Response {
    let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    if ui.loopback && !is_loopback_host(host) {
        return refuse(StatusCode::MISDIRECTED_REQUEST, "this page answers only to 127.0.0.1, localhost or [::1]");
    }
    let Some(token) = ui.token.as_deref() else { return secured(next.run(request).await) };
    let given = |value: &str| same(value.as_bytes(), token.as_bytes());
    // `?token=` once: kept in a cookie, and taken out of the address bar.
    if let Some(query) = request.uri().query() {
        if let Some(t) = query.split('&').find_map(|kv| kv.strip_prefix("token=")) {
            if !given(&percent_decode(t)) {
                return refuse(StatusCode::UNAUTHORIZED, "wrong token");
            }
            let rest: Vec<&str> = query.split('&').filter(|kv| !kv.starts_with("token=")).collect();
            // Only to a path of this server (`//host` would leave it).
            let path = request.uri().path();
            let path = if path.starts_with("//") || path.starts_with("/\\") { "/" } else { path };
            let to = if rest.is_empty() { path.to_string() } else { format!("{path}?{}", rest.join("&")) };
            let mut response = Redirect::to(&to).into_response();
            let cookie = format!("{}={token}; Path=/; HttpOnly; SameSite=Strict", ui.cookie);
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            return secured(response);
        }
    }
    let headers = request.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .is_some_and(given);
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(';'))
        .filter_map(|c| c.trim().strip_prefix(&format!("{}=", ui.cookie)).map(String::from))
        .any(|c| given(&c));
    if bearer || cookie {
        secured(next.run(request).await)
    } else {
        refuse(
            StatusCode::UNAUTHORIZED,
            "this page needs its token: open it once as /?token=TOKEN (or send `Authorization: Bearer TOKEN`)",
        )
    }
}

/// Headers on every answer: nothing from elsewhere may run or be loaded, and
/// no other site may frame the page.
fn secured(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

fn refuse(status: StatusCode, why: &str) -> Response {
    secured((status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{why}\n")).into_response())
}

fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(n, _)| n)
    };
    name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Compares in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let escaped = (b[i] == b'%')
            .then(|| b.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (escaped, b[i]) {
            (Some(v), _) => {
                out.push(v);
                i += 3;
            }
            (None, other) => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(serde::Deserialize, Default)]
pub(super) struct RunsFilter {
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub workflow: Option<String>,
    /// `<created_at>.<id>` of the last run of the previous page.
    #[serde(default)]
    pub before: Option<String>,
}

/// Runs per page of the list.
pub(super) const PAGE: i64 = 50;

async fn runs_page(State(ui): State<Ui>, Query(filter): Query<RunsFilter>) -> Response {
    let status = match filter.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => match RunStatus::parse(s) {
            Ok(s) => Some(s),
            Err(_) => return refuse(StatusCode::BAD_REQUEST, &format!("unknown status `{s}`")),
        },
    };
    let before = filter
        .before
        .as_deref()
        .and_then(|b| b.split_once('.'))
        .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, id.to_string())));
    let query =
        RunsQuery { status, workflow: filter.workflow.clone().filter(|w| !w.is_empty()), before, limit: PAGE + 1 };
    match ui.store.list_runs(&query).await {
        Ok(runs) => Html(page::runs(&runs, &filter)).into_response(),
        Err(e) => store_failed(&e),
    }
}

fn store_failed(e: &ca_a2a_flow_engine::StoreError) -> Response {
    match e {
        ca_a2a_flow_engine::StoreError::RunNotFound(id) => {
            refuse(StatusCode::NOT_FOUND, &format!("run `{id}` does not exist in this state store"))
        }
        other => refuse(StatusCode::SERVICE_UNAVAILABLE, &format!("{other}")),
    }
}

async fn run_page(State(ui): State<Ui>, UrlPath(id): UrlPath<String>) -> Response {
    match page::View::load(&ui, &id).await {
        Ok(view) => Html(page::run(&view, &ui)).into_response(),
        Err(e) => store_failed(&e),
    }
}

/// The parts of a run's page that change as it runs, for the page to swap in.
async fn run_parts(State(ui): State<Ui>, UrlPath(id): UrlPath<String>) -> Response {
    match page::View::load(&ui, &id).await {
        Ok(view) => Html(page::parts(&view, &ui)).into_response(),
        Err(e) => store_failed(&e),
    }
}

/// Whether an action may run: allowed by the server, asked by the page.
fn action_refused(ui: &Ui, headers: &HeaderMap) -> Option<Response> {
    if !ui.allow_actions {
        return Some(refuse(
            StatusCode::FORBIDDEN,
            "actions are off: this page is read-only (start `ca-a2a-flow ui --allow-actions` to cancel and resume from it)",
        ));
    }
    if headers.get(ACTION_HEADER).is_none() {
        return Some(refuse(StatusCode::FORBIDDEN, "an action is asked from the page, with its confirmation"));
    }
    None
}

async fn cancel_action(State(ui): State<Ui>, UrlPath(id): UrlPath<String>, headers: HeaderMap) -> Response {
    if let Some(refused) = action_refused(&ui, &headers) {
        return refused;
    }
    match ui.store.run(&id).await {
        Ok(run) if run.status.is_terminal() => {
            refuse(StatusCode::CONFLICT, &format!("run {id} already ended ({})", run.status))
        }
        Ok(_) => start_action(&ui, &id, "cancel", &[]),
        Err(e) => store_failed(&e),
    }
}

async fn resume_action(State(ui): State<Ui>, UrlPath(id): UrlPath<String>, headers: HeaderMap) -> Response {
    if let Some(refused) = action_refused(&ui, &headers) {
        return refused;
    }
    match ui.store.run(&id).await {
        Ok(run) if !matches!(run.status, RunStatus::Failed | RunStatus::Interrupted) => refuse(
            StatusCode::CONFLICT,
            &format!("run {id} is {}: only a failed or interrupted run is resumed", run.status),
        ),
        Ok(run) if run.lease.as_ref().is_some_and(|l| l.expires_at > now_ms()) => {
            refuse(StatusCode::CONFLICT, &format!("run {id} is driven by another process"))
        }
        // The confirmation on the page approves the steps marked `approve:`.
        Ok(_) => start_action(&ui, &id, "resume", &["--yes"]),
        Err(e) => store_failed(&e),
    }
}

/// Starts `ca-a2a-flow <what> RUN` as a process of its own, which outlives a
/// closed page; its output is kept for the run's page.
fn start_action(ui: &Ui, run: &str, what: &'static str, extra: &[&str]) -> Response {
    let program = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, &format!("cannot find this program: {e}")),
    };
    let file_name: String = run.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    let output = ui.outputs.path().join(format!("{what}-{file_name}-{}.log", now_ms()));
    let file = match std::fs::File::create(&output) {
        Ok(f) => f,
        Err(e) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, &format!("cannot keep the output: {e}")),
    };
    let err = match file.try_clone() {
        Ok(f) => f,
        Err(e) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, &format!("cannot keep the output: {e}")),
    };
    let mut command = tokio::process::Command::new(program);
    // The run id after `--`: never read as an option.
    command
        .arg(what)
        .args(extra)
        .arg("--")
        .arg(run)
        .env("CA_A2A_FLOW_STATE", &*ui.state_url)
        .stdin(std::process::Stdio::null())
        .stdout(file)
        .stderr(err)
        .kill_on_drop(false);
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, &format!("cannot start `{what}`: {e}")),
    };
    let pid = child.id().unwrap_or_default();
    let index = {
        let mut actions = ui.actions.lock().unwrap_or_else(|p| p.into_inner());
        actions.push(Action { run: run.to_string(), what, pid, started_at: now_ms(), output, exit: None });
        actions.len() - 1
    };
    let actions = ui.actions.clone();
    tokio::spawn(async move {
        let code = child.wait().await.ok().and_then(|s| s.code()).unwrap_or(-1);
        if let Some(a) = actions.lock().unwrap_or_else(|p| p.into_inner()).get_mut(index) {
            a.exit = Some(code);
        }
    });
    let body = format!("started `ca-a2a-flow {what} {run}` as process {pid}");
    secured((StatusCode::ACCEPTED, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}

/// A directory for the actions' output, removed when the server stops.
mod tempfile_dir {
    pub struct Dir(std::path::PathBuf);

    impl Dir {
        pub fn new() -> std::io::Result<Self> {
            let path =
                std::env::temp_dir().join(format!("ca-a2a-flow-ui-{}-{:08x}", std::process::id(), fastrand::u32(..)));
            // Readable by this user only; made here, not found.
            std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700).create(&path)?;
            Ok(Self(path))
        }
        pub fn path(&self) -> &std::path::Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_names_are_loopback_hosts() {
        for host in ["127.0.0.1:8088", "localhost:8088", "[::1]:8088", "localhost", "127.0.0.5"] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in ["evil.example:8088", "10.0.0.4:8088", "", "localhost.evil.example"] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn a_token_in_the_address_is_percent_decoded() {
        assert_eq!(percent_decode("a%2Bb+c%zz%4"), "a+b+c%zz%4", "a token's `+` stays a `+`");
    }
}
