//! Where runs are checkpointed. One small trait, one implementation per
//! database (SQLite by default, Postgres for shared state), no `sqlx::Any`.
//!
//! Every state change goes through [`Store::apply`]: a batch of [`Write`]s
//! committed in one transaction, and only if the caller still holds the run's
//! lease generation (its fencing token). A process that lost its lease cannot
//! overwrite the state of the process that took over.

mod postgres;
mod sql;
mod sqlite;

use std::collections::BTreeMap;
use std::future::Future;

use serde_json::Value as Json;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use crate::kind::StepError;
use crate::model::Workflow;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("run `{0}` does not exist in this state store")]
    RunNotFound(String),
    #[error("run `{run}` is held by {holder}")]
    LeaseHeld { run: String, holder: LeaseInfo },
    /// Another run of the same stack is being driven: two runs of one stack
    /// never run at the same time, whichever machines drive them.
    #[error("stack `{stack}` is being changed by run `{by}`, driven by {holder}")]
    StackHeld { run: String, stack: String, by: String, holder: LeaseInfo },
    #[error(
        "this process no longer owns run `{run}` (generation {generation} was superseded): another process took over"
    )]
    Fenced { run: String, generation: i64 },
    #[error("state store: {0}")]
    Database(#[from] sqlx::Error),
    #[error("state store migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("state store holds data this version cannot read: {0}")]
    Corrupt(String),
    #[error("state store did not answer `{operation}` within {seconds}s")]
    Timeout { operation: &'static str, seconds: u64 },
    /// Transient failures went on for longer than this process may act
    /// without a live lease: it stopped, and a `resume` finishes the run.
    #[error("state store unreachable: {store} failed for {seconds}s (last error: {last})")]
    Unreachable { store: String, seconds: u64, last: String },
}

impl StoreError {
    /// Whether the same statement may pass if tried again: the connection broke
    /// or timed out, the database restarted, SQLite was busy, a serialization
    /// conflict. Anything else (fenced, missing, corrupt) is final.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Timeout { .. } => true,
            StoreError::Database(e) => match e {
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::WorkerCrashed
                | sqlx::Error::BeginFailed => true,
                sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                    // SQLite: BUSY (5), LOCKED (6) and their extended codes;
                    // Postgres: connection exceptions (08…), shutdown (57P0…),
                    // serialization failure, deadlock.
                    matches!(code.as_ref(), "5" | "6" | "261" | "262" | "517" | "40001" | "40P01")
                        || code.starts_with("08")
                        || code.starts_with("57P0")
                }),
                _ => false,
            },
            _ => false,
        }
    }
}

/// A state store URL as it may be shown: without its password.
pub fn shown_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => format!("{}@{host}", user.split_once(':').map_or(user, |(u, _)| u)),
        None => authority.to_string(),
    };
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    format!("{scheme}://{authority}/{path}")
}

/// The error an attempt cut by the death of its process is recorded with
/// (when the next process takes the run over): such an attempt counts toward
/// the step's `max_attempts`, so a step that kills the engine every time ends.
pub const ENGINE_DIED: &str = "the engine died during this attempt";

/// How long one state-store operation may take before it fails with
/// [`StoreError::Timeout`]: no checkpoint can hang a run. (SQLite's own busy
/// timeout is 30 s.)
pub const STORE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $text:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),* }
        impl $name {
            pub fn as_str(self) -> &'static str { match self { $(Self::$variant => $text),* } }
            pub fn parse(s: &str) -> Result<Self, StoreError> {
                match s { $($text => Ok(Self::$variant),)* other => Err(StoreError::Corrupt(format!("unknown {} `{other}`", stringify!($name)))) }
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

string_enum!(
    /// The state of a run.
    RunStatus { Pending = "pending", Running = "running", Succeeded = "succeeded", Failed = "failed", Interrupted = "interrupted", Cancelled = "cancelled" }
);
string_enum!(
    /// The state of a step within a run.
    StepStatus { Pending = "pending", Running = "running", RetryWait = "retry_wait", Succeeded = "succeeded", Failed = "failed", Blocked = "blocked", Interrupted = "interrupted", Cancelled = "cancelled" }
);

impl Default for StepStatus {
    fn default() -> Self {
        Self::Pending
    }
}

impl RunStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// Who holds a run's lease.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LeaseInfo {
    pub owner: String,
    pub host: String,
    pub pid: i64,
    pub expires_at: i64,
}

impl std::fmt::Display for LeaseInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let left = self.expires_at - crate::now_ms();
        write!(f, "pid {} on host {} (owner {}, lease ", self.pid, self.host, self.owner)?;
        if left > 0 { write!(f, "expires in {}s)", (left + 999) / 1000) } else { write!(f, "expired)") }
    }
}

/// The identity a process presents when it takes a lease.
#[derive(Debug, Clone)]
pub struct Holder {
    pub owner: String,
    pub host: String,
    pub pid: i64,
}

impl Holder {
    /// `pid.random@host#boot`: the boot id tells whether a holder ran on this
    /// very boot of this machine, where its pid can be checked.
    pub fn this_process() -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "unknown-host".into());
        let pid = std::process::id() as i64;
        let boot = machine_id().unwrap_or_else(|| "noboot".into());
        Self { owner: format!("{pid}.{:04x}@{host}#{boot}", fastrand::u16(..)), host, pid }
    }
}

/// This boot of this machine and this process's pid namespace
/// (`<boot id>~<namespace inode>`): two processes can compare pids only when
/// both match.
fn machine_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let boot: String = id.trim().chars().filter(|c| *c != '-').take(12).collect();
    let ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
    let ns: String = ns.to_string_lossy().chars().filter(char::is_ascii_digit).collect();
    Some(format!("{boot}~{ns}"))
}

impl LeaseInfo {
    /// True when the holder ran on this boot of this machine, in this pid
    /// namespace, and its process no longer exists: nobody can renew the lease,
    /// so it may be broken now instead of at expiry. Anything else (another
    /// machine or container, a live or frozen process) must wait for expiry.
    pub fn holder_is_gone(&self) -> bool {
        let Some(mine) = machine_id() else { return false };
        if self.host != Holder::this_process().host {
            return false;
        }
        let Some((_, theirs)) = self.owner.rsplit_once('#') else {
            return false;
        };
        if theirs != mine || self.pid <= 0 || self.pid == std::process::id() as i64 {
            return false;
        }
        // SAFETY: kill with signal 0 only checks for existence.
        let alive = unsafe { libc::kill(self.pid as i32, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        !alive
    }
}

#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    pub id: &'a str,
    pub workflow: &'a Workflow,
    pub inputs: &'a BTreeMap<String, Json>,
    pub now: i64,
    /// The stack the run changes: no two runs of one stack are driven at once.
    pub stack: Option<&'a str>,
    /// Recorded for a worker to drive (`submit`), instead of by the process
    /// that made it.
    pub queued: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RunRecord {
    pub id: String,
    pub workflow_name: String,
    pub workflow_file: String,
    #[serde(skip)]
    pub definition: Workflow,
    pub inputs: BTreeMap<String, Json>,
    pub status: RunStatus,
    pub error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
    pub generation: i64,
    pub lease: Option<LeaseInfo>,
    pub heartbeat_at: Option<i64>,
    pub cancel_requested: bool,
    /// The stack the run changes, if it names one.
    pub stack: Option<String>,
    /// When it was queued for a worker (`submit`); `None` for a run its own process drives.
    pub queued_at: Option<i64>,
    /// Keyed fingerprints of the run's secret values ([`crate::redact`]).
    #[serde(skip)]
    pub masks: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StepRecord {
    pub step_id: String,
    pub position: i64,
    pub kind: String,
    pub hash: String,
    pub status: StepStatus,
    pub attempt: u32,
    pub first_started_at: Option<i64>,
    pub attempt_started_at: Option<i64>,
    pub deadline_at: Option<i64>,
    pub next_attempt_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub outputs: Option<BTreeMap<String, Json>>,
    pub error: Option<StepError>,
}

impl RunRecord {
    /// A run of `definition` with `inputs` that ended `status`, held by no one,
    /// as the store would return it: for tests and benchmarks that plan on a
    /// run without making one.
    pub fn ended(id: &str, definition: Workflow, inputs: BTreeMap<String, Json>, status: RunStatus) -> Self {
        Self {
            id: id.into(),
            workflow_name: definition.name.clone(),
            workflow_file: String::new(),
            definition,
            inputs,
            status,
            error: None,
            created_at: 0,
            updated_at: 0,
            finished_at: None,
            generation: 1,
            lease: None,
            heartbeat_at: None,
            cancel_requested: false,
            stack: None,
            queued_at: None,
            masks: None,
        }
    }
}

impl StepRecord {
    /// A step of `kind` at `position` that succeeded at its first attempt with
    /// no outputs, as the store would return it (see [`RunRecord::ended`]).
    pub fn succeeded(step_id: &str, kind: &str, position: i64) -> Self {
        Self {
            step_id: step_id.into(),
            position,
            kind: kind.into(),
            hash: String::new(),
            status: StepStatus::Succeeded,
            attempt: 1,
            first_started_at: Some(1),
            attempt_started_at: Some(1),
            deadline_at: None,
            next_attempt_at: None,
            finished_at: Some(2),
            outputs: Some(BTreeMap::new()),
            error: None,
        }
    }
}

/// Which runs [`Store::list_runs`] returns, newest first.
#[derive(Debug, Clone, Default)]
pub struct RunsQuery {
    pub status: Option<RunStatus>,
    pub workflow: Option<String>,
    /// Only runs older than this one (its `created_at` and id): the next page.
    pub before: Option<(i64, String)>,
    pub limit: i64,
}

impl RunsQuery {
    /// The newest `limit` runs.
    pub fn newest(limit: i64) -> Self {
        Self { limit, ..Self::default() }
    }
}

/// An event to append to a run's log: its step (none for the run's own), what
/// happened, the line, and when (ms since the epoch).
pub type NewEvent = (Option<String>, &'static str, String, i64);

#[derive(Debug, Clone, serde::Serialize)]
pub struct AttemptRecord {
    pub step_id: String,
    pub attempt: u32,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub outcome: String,
    pub error: Option<StepError>,
    pub retry_delay_ms: Option<i64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct EventRecord {
    pub id: i64,
    pub step_id: Option<String>,
    pub at: i64,
    pub level: String,
    pub message: String,
}

/// One change to a run's state, applied with others in one fenced transaction.
#[derive(Debug, Clone)]
pub enum Write {
    /// Committed before a step's first side effect.
    StepStarted {
        step: String,
        attempt: u32,
        at: i64,
        deadline_at: i64,
    },
    /// The attempt's start is written again with its success: a step of a kind
    /// without side effects has no `started` checkpoint before it.
    StepSucceeded {
        step: String,
        attempt: u32,
        started_at: i64,
        deadline_at: i64,
        at: i64,
        outputs: BTreeMap<String, Json>,
    },
    /// A failed attempt that will be retried at `next_attempt_at`.
    StepRetry {
        step: String,
        attempt: u32,
        at: i64,
        next_attempt_at: i64,
        delay_ms: i64,
        error: StepError,
    },
    /// A step that ends without success (`failed`, `blocked`, `cancelled`, `interrupted`).
    StepEnded {
        step: String,
        status: StepStatus,
        at: i64,
        error: Option<StepError>,
    },
    RunStatus {
        status: RunStatus,
        at: i64,
        error: Option<String>,
    },
    /// Taking over a run: in-flight attempts become `interrupted`, failed,
    /// blocked and cancelled steps get a fresh start, running deadlines move by
    /// the time nobody owned the run.
    Recover {
        at: i64,
        outage_ms: i64,
    },
    /// `resume --accept-changes`: the new definition; `reset` steps start over,
    /// `removed` steps are dropped.
    Redefine {
        definition: Box<Workflow>,
        reset: Vec<String>,
        removed: Vec<String>,
    },
    Event {
        step: Option<String>,
        level: &'static str,
        message: String,
        at: i64,
    },
    /// The fingerprints of the run's secret values, replacing the stored ones.
    Masks {
        masks: String,
    },
}

/// A run's checkpoints. Implemented once per database.
pub trait Store: Clone + Send + Sync + 'static {
    fn create_run(&self, run: NewRun<'_>) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Takes the lease if it is free, expired, or already ours; returns the new generation.
    fn acquire(
        &self,
        run: &str,
        holder: &Holder,
        ttl_ms: i64,
        now: i64,
    ) -> impl Future<Output = Result<i64, StoreError>> + Send;
    /// Extends the lease; returns whether a cancel was requested.
    fn renew(
        &self,
        run: &str,
        generation: i64,
        ttl_ms: i64,
        now: i64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    fn release(&self, run: &str, generation: i64) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Expires the lease of `owner` (whose process is known to be gone).
    fn break_lease(&self, run: &str, owner: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn apply(
        &self,
        run: &str,
        generation: i64,
        writes: Vec<Write>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Appends log lines, fenced like [`Store::apply`]: a process that lost the
    /// run's lease cannot add to its log.
    fn append_events(
        &self,
        run: &str,
        generation: i64,
        events: Vec<NewEvent>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The store as messages name it (a path, or a URL without its password).
    fn name(&self) -> String;
    fn request_cancel(&self, run: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn run(&self, run: &str) -> impl Future<Output = Result<RunRecord, StoreError>> + Send;
    fn steps(&self, run: &str) -> impl Future<Output = Result<Vec<StepRecord>, StoreError>> + Send;
    fn attempts(&self, run: &str) -> impl Future<Output = Result<Vec<AttemptRecord>, StoreError>> + Send;
    fn events(
        &self,
        run: &str,
        step: Option<&str>,
        after_id: i64,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<EventRecord>, StoreError>> + Send;
    /// Runs newest first (by creation, then id), those the query keeps.
    fn list_runs(&self, query: &RunsQuery) -> impl Future<Output = Result<Vec<RunRecord>, StoreError>> + Send;
    /// Takes the lease of the first queued run a worker may drive now, oldest
    /// first: not ended, its lease free or expired, and no other run of its
    /// stack driven now or queued before it. Concurrent claims never take the
    /// same run, nor two runs of one stack. Returns the run and its new
    /// generation ([`crate::Engine::drive_claimed`]).
    fn claim(
        &self,
        holder: &Holder,
        ttl_ms: i64,
        now: i64,
    ) -> impl Future<Output = Result<Option<(String, i64)>, StoreError>> + Send;
    /// The runs that have not ended and whose lease someone holds (live or expired).
    fn held_runs(&self) -> impl Future<Output = Result<Vec<RunRecord>, StoreError>> + Send;
}

/// A store chosen at run time from a URL: `sqlite://PATH` or `postgres://...`.
#[derive(Clone)]
pub enum AnyStore {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl AnyStore {
    /// Opens (creating if needed) and migrates the store at `url`.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres(PgStore::open(url).await?))
        } else {
            let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
            Ok(Self::Sqlite(SqliteStore::open(std::path::Path::new(path)).await?))
        }
    }
}

/// Calls the chosen store, within [`STORE_DEADLINE`].
macro_rules! delegate {
    ($self:ident, $op:literal, $s:ident => $e:expr) => {{
        let call = async {
            match $self {
                AnyStore::Sqlite($s) => $e,
                AnyStore::Postgres($s) => $e,
            }
        };
        match tokio::time::timeout(STORE_DEADLINE, call).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Timeout { operation: $op, seconds: STORE_DEADLINE.as_secs() }),
        }
    }};
}

impl Store for AnyStore {
    async fn create_run(&self, run: NewRun<'_>) -> Result<(), StoreError> {
        delegate!(self, "create_run", s => s.create_run(run).await)
    }
    async fn acquire(&self, run: &str, holder: &Holder, ttl_ms: i64, now: i64) -> Result<i64, StoreError> {
        delegate!(self, "acquire", s => s.acquire(run, holder, ttl_ms, now).await)
    }
    async fn renew(&self, run: &str, generation: i64, ttl_ms: i64, now: i64) -> Result<bool, StoreError> {
        delegate!(self, "renew", s => s.renew(run, generation, ttl_ms, now).await)
    }
    async fn release(&self, run: &str, generation: i64) -> Result<(), StoreError> {
        delegate!(self, "release", s => s.release(run, generation).await)
    }
    async fn break_lease(&self, run: &str, owner: &str) -> Result<(), StoreError> {
        delegate!(self, "break_lease", s => s.break_lease(run, owner).await)
    }
    async fn apply(&self, run: &str, generation: i64, writes: Vec<Write>) -> Result<(), StoreError> {
        delegate!(self, "apply", s => s.apply(run, generation, writes).await)
    }
    async fn append_events(&self, run: &str, generation: i64, events: Vec<NewEvent>) -> Result<(), StoreError> {
        delegate!(self, "append_events", s => s.append_events(run, generation, events).await)
    }
    fn name(&self) -> String {
        match self {
            AnyStore::Sqlite(s) => s.name(),
            AnyStore::Postgres(s) => s.name(),
        }
    }
    async fn request_cancel(&self, run: &str) -> Result<(), StoreError> {
        delegate!(self, "request_cancel", s => s.request_cancel(run).await)
    }
    async fn run(&self, run: &str) -> Result<RunRecord, StoreError> {
        delegate!(self, "run", s => s.run(run).await)
    }
    async fn steps(&self, run: &str) -> Result<Vec<StepRecord>, StoreError> {
        delegate!(self, "steps", s => s.steps(run).await)
    }
    async fn attempts(&self, run: &str) -> Result<Vec<AttemptRecord>, StoreError> {
        delegate!(self, "attempts", s => s.attempts(run).await)
    }
    async fn events(
        &self,
        run: &str,
        step: Option<&str>,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<EventRecord>, StoreError> {
        delegate!(self, "events", s => s.events(run, step, after_id, limit).await)
    }
    async fn list_runs(&self, query: &RunsQuery) -> Result<Vec<RunRecord>, StoreError> {
        delegate!(self, "list_runs", s => s.list_runs(query).await)
    }
    async fn claim(&self, holder: &Holder, ttl_ms: i64, now: i64) -> Result<Option<(String, i64)>, StoreError> {
        delegate!(self, "claim", s => s.claim(holder, ttl_ms, now).await)
    }
    async fn held_runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        delegate!(self, "held_runs", s => s.held_runs().await)
    }
}

impl AnyStore {
    /// What tells a worker that a run was queued or gave its lease back:
    /// Postgres's LISTEN on its own connection; nothing on SQLite, where
    /// workers poll.
    pub async fn notices(&self) -> Result<Notices, StoreError> {
        match self {
            AnyStore::Sqlite(_) => Ok(Notices(None)),
            AnyStore::Postgres(s) => {
                let mut listener = sqlx::postgres::PgListener::connect_with(&s.pool).await?;
                listener.listen(QUEUE_CHANNEL).await?;
                Ok(Notices(Some(listener)))
            }
        }
    }
}

/// See [`AnyStore::notices`].
pub struct Notices(Option<sqlx::postgres::PgListener>);

impl Notices {
    /// Whether notices come at all (or the store must be polled).
    pub fn live(&self) -> bool {
        self.0.is_some()
    }

    /// The next notice; never, without any. After an error, none come again.
    pub async fn next(&mut self) -> Result<(), StoreError> {
        let result = match &mut self.0 {
            Some(listener) => listener.recv().await.map(|_| ()),
            None => return std::future::pending().await,
        };
        if result.is_err() {
            self.0 = None;
        }
        Ok(result?)
    }
}

/// The Postgres channel a run's queueing and its lease's release are told on.
pub const QUEUE_CHANNEL: &str = "ca_a2a_flow_queue";

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_url_is_shown_without_its_password() {
        assert_eq!(
            shown_url("postgres://flow:s3cret@db.internal:5432/flow?sslmode=require"),
            "postgres://flow@db.internal:5432/flow"
        );
        assert_eq!(
            shown_url("postgres://postgres@127.0.0.1:5432/postgres"),
            "postgres://postgres@127.0.0.1:5432/postgres"
        );
        assert_eq!(shown_url("/var/lib/flow/state.db"), "/var/lib/flow/state.db");
    }
}
