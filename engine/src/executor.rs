//! Runs a workflow's steps as a DAG, durably.
//!
//! Before a step's first side effect its `started` record is committed; its
//! outputs are committed with its status when it ends. A run is owned through a
//! lease renewed by heartbeat, and every write carries the lease generation, so
//! a process that lost its lease cannot overwrite the one that took over.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value as Json;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::duration;
use crate::kind::{Registry, Report, ReportSink, StepContext, StepError};
use crate::model::{StepDef, Workflow};
use crate::redact::{MASK, Redactor};
use crate::store::{ENGINE_DIED, Holder, NewEvent, NewRun, RunStatus, StepStatus, Store, StoreError, Write};
use crate::template::Scope;

/// Errors that stop the engine itself (as opposed to a step failing).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("run `{run}`: lease lost to another process; this process stopped without further writes")]
    LeaseLost { run: String },
    #[error("run `{run}` was defined with kind `{kind}`, which this build does not know")]
    UnknownKind { run: String, kind: String },
}

/// What the engine reports while it works (for the terminal and tests).
#[derive(Debug, Clone)]
pub enum Event {
    RunStarted {
        run_id: String,
        name: String,
        steps: usize,
        resumed: bool,
    },
    StepStarted {
        step: String,
        kind: String,
        attempt: u32,
        max_attempts: u32,
        attempt_deadline: Duration,
        step_deadline: Duration,
    },
    StepProgress {
        step: String,
        message: String,
    },
    StepLog {
        step: String,
        line: String,
    },
    StepSucceeded {
        step: String,
        attempt: u32,
        elapsed: Duration,
    },
    StepRetrying {
        step: String,
        attempt: u32,
        delay: Duration,
        error: StepError,
    },
    StepFailed {
        step: String,
        attempt: u32,
        error: StepError,
    },
    StepBlocked {
        step: String,
        by: String,
    },
    StepInterrupted {
        step: String,
    },
    RunFinished {
        run_id: String,
        status: RunStatus,
        error: Option<String>,
    },
    /// A line from the program driving the engine (for example "stopping…"),
    /// shown with the others so a live display does not erase it.
    Notice(String),
}

pub type Observer = Arc<dyn Fn(Event) + Send + Sync>;

/// Why the engine stopped before the workflow finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGINT/SIGTERM: the run is `interrupted` and can be resumed.
    Interrupt,
    /// `ca-a2a-flow cancel`: the run is `cancelled`.
    Cancel,
}

#[derive(Clone)]
pub struct EngineConfig {
    pub parallelism: usize,
    pub lease_ttl: Duration,
    pub holder: Holder,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self { parallelism: 8, lease_ttl: Duration::from_secs(30), holder: Holder::this_process() }
    }
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub run_id: String,
    pub status: RunStatus,
    pub error: Option<String>,
}

pub struct Engine<S: Store> {
    store: S,
    registry: Registry,
    config: EngineConfig,
    observer: Observer,
}

/// The stack a run changes: its `stack` input, when it has one.
pub fn stack_of(inputs: &BTreeMap<String, Json>) -> Option<&str> {
    inputs.get("stack").and_then(Json::as_str).filter(|s| !s.is_empty())
}

/// A fresh run id: sortable by time, unique enough for one state store.
pub fn new_run_id() -> String {
    let ms = crate::now_ms();
    let secs = ms / 1000;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let tod = secs.rem_euclid(86_400);
    format!("r-{y:04}{mo:02}{d:02}-{:02}{:02}{:02}-{:04x}", tod / 3600, (tod % 3600) / 60, tod % 60, fastrand::u16(..))
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Test hook: `CA_A2A_FLOW_FAILPOINT=after_start:b,before_commit:c` makes the
/// process SIGKILL itself at that point of that step, to prove crash recovery.
fn failpoint(point: &str, step: &str) {
    let Ok(spec) = std::env::var("CA_A2A_FLOW_FAILPOINT") else {
        return;
    };
    if spec.split(',').any(|p| p.trim() == format!("{point}:{step}")) {
        tracing::warn!(point, step, "failpoint reached: killing this process");
        // SAFETY: getpid and kill have no memory-safety preconditions.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

#[derive(Debug, Clone, Default)]
struct StepState {
    status: StepStatus,
    attempt: u32,
    deadline_at: Option<i64>,
    next_attempt_at: Option<i64>,
    /// Interrupted by the death of the process that ran it (not by a signal it
    /// handled): the attempt counts toward `max_attempts`.
    crashed: bool,
}

/// How an attempt ended, with what the scheduler needs to know next.
enum AttemptEnd {
    Succeeded(BTreeMap<String, Json>),
    Retry(StepState),
    Failed(StepError),
    Stopped(StepState),
    LeaseLost,
    StoreUnreachable(StoreError),
}

/// What this process knows of its lease: until when it surely holds it, on
/// this machine's monotonic clock. A successful renewal sent at `t` makes it
/// hold until `t + ttl − ttl/6` (the sixth is the margin for a takeover that
/// reads a clock running a little ahead). Past that instant this process starts
/// nothing, writes nothing, and cuts its running attempts, before anyone may
/// take the run over.
struct Lease {
    base: Instant,
    /// Milliseconds after `base`.
    until: std::sync::atomic::AtomicU64,
    ttl: Duration,
}

impl Lease {
    fn new(taken_at: Instant, ttl: Duration) -> Self {
        let lease = Self { base: taken_at, until: std::sync::atomic::AtomicU64::new(0), ttl };
        lease.renewed(taken_at);
        lease
    }
    fn renewed(&self, sent_at: Instant) {
        let until = sent_at.duration_since(self.base) + self.ttl - self.ttl / 6;
        self.until.fetch_max(until.as_millis() as u64, std::sync::atomic::Ordering::SeqCst);
    }
    /// How long this process may still act.
    fn left(&self) -> Duration {
        let until = self.base + Duration::from_millis(self.until.load(std::sync::atomic::Ordering::SeqCst));
        until.saturating_duration_since(Instant::now())
    }
}

/// Commits `writes`, retrying transient store errors (a dropped connection, a
/// restart, a busy database) for as long as the lease surely holds; past it,
/// the store is reported unreachable and nothing more is written.
async fn checkpoint<S: Store>(
    store: &S,
    lease: &Lease,
    observer: &Observer,
    run: &str,
    generation: i64,
    writes: Vec<Write>,
) -> Result<(), StoreError> {
    let mut delay = Duration::from_millis(100);
    let mut failing_since: Option<Instant> = None;
    let mut last = String::from("no answer");
    loop {
        let left = lease.left();
        if left.is_zero() {
            // Past the lease: because the store kept failing, or because this
            // process could not renew in time (frozen, suspended).
            return Err(match failing_since {
                Some(t) => StoreError::Unreachable { store: store.name(), seconds: t.elapsed().as_secs(), last },
                None => StoreError::Fenced { run: run.to_string(), generation },
            });
        }
        match tokio::time::timeout(left, store.apply(run, generation, writes.clone())).await {
            Ok(Ok(())) => {
                if let Some(t) = failing_since {
                    observer(Event::Notice(format!(
                        "the state store answers again (after {})",
                        duration::format(Duration::from_millis(t.elapsed().as_millis() as u64))
                    )));
                }
                return Ok(());
            }
            Ok(Err(e)) if e.is_transient() => {
                if failing_since.is_none() {
                    failing_since = Some(Instant::now());
                    observer(Event::Notice(format!(
                        "the state store {} failed ({e}); trying again for up to {}, while this process's lease holds",
                        store.name(),
                        duration::format(Duration::from_secs(lease.left().as_secs()))
                    )));
                }
                last = e.to_string();
                tokio::time::sleep(delay.min(lease.left())).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                failing_since.get_or_insert_with(Instant::now);
                last = format!("no answer within {}", duration::format(left));
            }
        }
    }
}

/// Why the heartbeat gave the run up.
#[derive(Debug, Clone)]
enum Lost {
    /// Another process took the run over (its generation is newer).
    Fenced,
    /// The store did not answer before the lease ran out: (store, seconds, last error).
    Unreachable(String, u64, String),
}

struct Shared<S: Store> {
    lease: Arc<Lease>,
    /// Each step's position in `workflow.steps`, by id.
    index: HashMap<String, usize>,
    store: S,
    registry: Registry,
    observer: Observer,
    run_id: String,
    run_name: String,
    generation: i64,
    workflow: Workflow,
    inputs: BTreeMap<String, Json>,
    workflow_dir: PathBuf,
    redactor: Redactor,
    sink: ReportSink,
    /// Successes of steps without side effects, not committed yet: they go
    /// with the next commit (before any later step's start), at most
    /// [`GROUP_MAX`] of them or [`GROUP_WAIT`] old. Lost in a crash, such a
    /// step simply runs again: it changed nothing.
    deferred: std::sync::Mutex<(Vec<Write>, Option<Instant>)>,
}

/// At most this many successes wait to be committed together.
const GROUP_MAX: usize = 256;
/// A deferred success waits at most this long for company.
const GROUP_WAIT: Duration = Duration::from_millis(50);

impl<S: Store> Shared<S> {
    /// Commits `writes`, preceded by every deferred success.
    async fn commit(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        let mut all = {
            // The group leaves whole: the next deferred success starts a new one's clock.
            let mut deferred = self.deferred.lock().unwrap_or_else(|e| e.into_inner());
            deferred.1 = None;
            std::mem::take(&mut deferred.0)
        };
        if all.is_empty() && writes.is_empty() {
            return Ok(());
        }
        all.extend(writes);
        checkpoint(&self.store, &self.lease, &self.observer, &self.run_id, self.generation, all).await
    }

    /// Holds the success of a step without side effects for the next commit;
    /// commits the group when it is full or old enough.
    async fn defer(&self, write: Write) -> Result<(), StoreError> {
        let due = {
            let mut deferred = self.deferred.lock().unwrap_or_else(|e| e.into_inner());
            deferred.0.push(write);
            let since = *deferred.1.get_or_insert_with(Instant::now);
            deferred.0.len() >= GROUP_MAX || since.elapsed() >= GROUP_WAIT
        };
        if due { self.flush().await } else { Ok(()) }
    }

    /// Commits the deferred successes now.
    async fn flush(&self) -> Result<(), StoreError> {
        self.commit(Vec::new()).await
    }

    fn has_deferred(&self) -> bool {
        !self.deferred.lock().unwrap_or_else(|e| e.into_inner()).0.is_empty()
    }
}

impl<S: Store> Engine<S> {
    pub fn new(store: S, registry: Registry, config: EngineConfig, observer: Observer) -> Self {
        Self { store, registry, config, observer }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Where the engine reports; the driving program may add its own notices.
    pub fn observer(&self) -> Observer {
        self.observer.clone()
    }

    /// Records a new run (its definition, inputs and per-step hashes) for this
    /// process to drive; runs nothing. Its stack is its `stack` input.
    pub async fn create(&self, workflow: &Workflow, inputs: &BTreeMap<String, Json>) -> Result<String, EngineError> {
        self.create_with(workflow, inputs, stack_of(inputs), false).await
    }

    /// Records a new run of `stack` (no two runs of one stack are driven at
    /// once); `queued`: for a worker to drive ([`Store::claim`]).
    pub async fn create_with(
        &self,
        workflow: &Workflow,
        inputs: &BTreeMap<String, Json>,
        stack: Option<&str>,
        queued: bool,
    ) -> Result<String, EngineError> {
        let id = new_run_id();
        self.store.create_run(NewRun { id: &id, workflow, inputs, now: crate::now_ms(), stack, queued }).await?;
        Ok(id)
    }

    /// Takes the run's lease and drives it until it ends or `stop` fires.
    /// `redefine` is `resume --accept-changes`: the new definition and the steps
    /// to reset (changed ones and their dependents) and to drop.
    pub async fn drive(
        &self,
        run_id: &str,
        redefine: Option<(Workflow, Vec<String>, Vec<String>)>,
        stop: watch::Receiver<Option<Stop>>,
    ) -> Result<Outcome, EngineError> {
        let before = self.store.run(run_id).await?;
        let ttl_ms = self.config.lease_ttl.as_millis() as i64;
        let now = crate::now_ms();
        let generation = match self.store.acquire(run_id, &self.config.holder, ttl_ms, now).await {
            Err(StoreError::LeaseHeld { holder, .. }) if holder.holder_is_gone() => {
                tracing::info!(owner = %holder.owner, "the previous holder's process is gone; taking the run over");
                self.store.break_lease(run_id, &holder.owner).await?;
                self.store.acquire(run_id, &self.config.holder, ttl_ms, now).await?
            }
            Err(StoreError::StackHeld { by, holder, .. }) if holder.holder_is_gone() => {
                tracing::info!(run = %by, owner = %holder.owner, "the process that drove the stack's other run is gone");
                self.store.break_lease(&by, &holder.owner).await?;
                self.store.acquire(run_id, &self.config.holder, ttl_ms, now).await?
            }
            other => other?,
        };
        self.drive_held(run_id, generation, before, now, redefine, stop).await
    }

    /// Drives a run whose lease [`Store::claim`] took for this engine's holder
    /// (a worker's): as [`Engine::drive`], without taking the lease again.
    pub async fn drive_claimed(
        &self,
        run_id: &str,
        generation: i64,
        stop: watch::Receiver<Option<Stop>>,
    ) -> Result<Outcome, EngineError> {
        let now = crate::now_ms();
        let before = self.store.run(run_id).await?;
        if before.generation != generation {
            return Err(EngineError::LeaseLost { run: run_id.into() });
        }
        self.drive_held(run_id, generation, before, now, None, stop).await
    }

    async fn drive_held(
        &self,
        run_id: &str,
        generation: i64,
        before: crate::store::RunRecord,
        now: i64,
        redefine: Option<(Workflow, Vec<String>, Vec<String>)>,
        mut stop: watch::Receiver<Option<Stop>>,
    ) -> Result<Outcome, EngineError> {
        let ttl_ms = self.config.lease_ttl.as_millis() as i64;
        let lease = Arc::new(Lease::new(Instant::now(), self.config.lease_ttl));
        let resumed = before.status != RunStatus::Pending;
        let outage_ms = match (resumed, before.heartbeat_at) {
            (true, Some(h)) => (now - h).max(0),
            _ => 0,
        };
        // Whatever the attempts cut by a crash started on this machine is
        // killed, and their scratch files removed, before anything runs again.
        if resumed {
            for step in self.store.steps(run_id).await? {
                if step.status == StepStatus::Running {
                    let token = crate::orphans::attempt_token(run_id, &step.step_id, step.attempt);
                    let killed = crate::orphans::kill_tagged(crate::orphans::ATTEMPT_ENV, &token);
                    if killed > 0 {
                        tracing::info!(step = %step.step_id, killed, "killed processes left by the interrupted attempt");
                    }
                }
            }
            crate::orphans::sweep_scratch(run_id);
        }
        // Recover first: attempts cut by a crash are recorded before a new
        // definition resets any step.
        let mut writes = vec![Write::Recover { at: now, outage_ms }];
        if let Some((definition, reset, removed)) = redefine {
            writes.push(Write::Redefine { definition: Box::new(definition), reset, removed });
        }
        writes.push(Write::Event {
            step: None,
            level: "info",
            message: format!(
                "{} by {} (generation {generation})",
                if resumed { "resumed" } else { "started" },
                self.config.holder.owner
            ),
            at: now,
        });
        checkpoint(&self.store, &lease, &self.observer, run_id, generation, writes).await?;

        let run = self.store.run(run_id).await?;
        for step in &run.definition.steps {
            if self.registry.get(&step.uses).is_none() {
                return Err(EngineError::UnknownKind { run: run_id.into(), kind: step.uses.clone() });
            }
        }
        (self.observer)(Event::RunStarted {
            run_id: run_id.into(),
            name: run.workflow_name.clone(),
            steps: run.definition.steps.len(),
            resumed,
        });

        // Heartbeat: renew the lease; notice cancel requests and a lost lease.
        let (lost_tx, mut lost_rx) = watch::channel::<Option<Lost>>(None);
        // A cancel requested while nobody drove the run is honoured now.
        let (cancel_tx, mut cancel_rx) = watch::channel(run.cancel_requested);
        let heartbeat = {
            let store = self.store.clone();
            let run = run_id.to_string();
            let lease = lease.clone();
            let observer = self.observer.clone();
            let period = (self.config.lease_ttl / 3).max(Duration::from_millis(100));
            tokio::spawn(async move {
                let mut wait = period;
                let mut failing_since: Option<Instant> = None;
                loop {
                    tokio::time::sleep(wait.min(lease.left())).await;
                    if lease.left().is_zero() {
                        // Woken too late to renew (this process was frozen), or the
                        // store failed until now: either way the lease is gone.
                        let _ = lost_tx.send(Some(match failing_since {
                            Some(since) => {
                                Lost::Unreachable(store.name(), since.elapsed().as_secs(), "no answer".into())
                            }
                            None => Lost::Fenced,
                        }));
                        return;
                    }
                    let sent = Instant::now();
                    // A renewal never waits past the lease it renews.
                    let renewed = match tokio::time::timeout(
                        lease.left(),
                        store.renew(&run, generation, ttl_ms, crate::now_ms()),
                    )
                    .await
                    {
                        Ok(result) => result,
                        Err(_) => Err(StoreError::Timeout { operation: "renew", seconds: lease.ttl.as_secs() }),
                    };
                    match renewed {
                        Ok(cancel) => {
                            lease.renewed(sent);
                            if failing_since.take().is_some() {
                                observer(Event::Notice("the run's lease is renewed again".into()));
                            }
                            wait = period;
                            if cancel {
                                let _ = cancel_tx.send(true);
                            }
                        }
                        Err(StoreError::Fenced { .. }) => {
                            let _ = lost_tx.send(Some(Lost::Fenced));
                            return;
                        }
                        Err(e) => {
                            if failing_since.is_none() {
                                observer(Event::Notice(format!(
                                    "cannot renew the run's lease ({e}); trying again; this process stops in {} unless the store answers",
                                    duration::format(Duration::from_secs(lease.left().as_secs()))
                                )));
                            }
                            let since = *failing_since.get_or_insert(sent);
                            if lease.left().is_zero() {
                                let _ = lost_tx.send(Some(Lost::Unreachable(
                                    store.name(),
                                    since.elapsed().as_secs(),
                                    e.to_string(),
                                )));
                                return;
                            }
                            wait = Duration::from_millis(250).min(period);
                        }
                    }
                }
            })
        };

        // Step logs are written in batches, outside the fenced state writes.
        // Bounded: when the store cannot keep up, lines are dropped and counted
        // (the log says how many), never queued without end.
        let (log_tx, log_rx) = mpsc::channel::<(String, Report)>(LOG_QUEUE);
        let overflow = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let log_writer = tokio::spawn(write_logs(
            self.store.clone(),
            run_id.to_string(),
            generation,
            lease.clone(),
            log_rx,
            overflow.clone(),
            self.observer.clone(),
        ));
        let sink_overflow = overflow.clone();
        let sink: ReportSink = Arc::new(move |step: &str, report: Report| {
            if log_tx.try_send((step.to_string(), report)).is_err() {
                sink_overflow.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });

        let workflow_dir = PathBuf::from(&run.workflow_file)
            .parent()
            .map(|p| if p.as_os_str().is_empty() { PathBuf::from(".") } else { p.to_path_buf() })
            .unwrap_or_else(|| PathBuf::from("."));
        let shared = Arc::new(Shared {
            lease: lease.clone(),
            index: run.definition.index().into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            store: self.store.clone(),
            registry: self.registry.clone(),
            observer: self.observer.clone(),
            run_id: run_id.to_string(),
            run_name: run.workflow_name.clone(),
            generation,
            workflow: run.definition.clone(),
            inputs: run.inputs.clone(),
            workflow_dir,
            // Secrets masked by an earlier process of this run stay masked.
            redactor: Redactor::with_fingerprints(run.masks.as_deref()),
            sink,
            deferred: Default::default(),
        });

        let result = self.schedule(&shared, &mut stop, &mut cancel_rx, &mut lost_rx).await;
        heartbeat.abort();
        drop(shared);
        let _ = log_writer.await;
        match &result {
            Ok(outcome) => {
                // Released only when the lease still holds: otherwise it expires by itself.
                if !lease.left().is_zero() {
                    self.store.release(run_id, generation).await?;
                }
                (self.observer)(Event::RunFinished {
                    run_id: run_id.into(),
                    status: outcome.status,
                    error: outcome.error.clone(),
                });
            }
            Err(_) => {}
        }
        result
    }

    async fn schedule(
        &self,
        shared: &Arc<Shared<S>>,
        stop: &mut watch::Receiver<Option<Stop>>,
        cancel_rx: &mut watch::Receiver<bool>,
        lost_rx: &mut watch::Receiver<Option<Lost>>,
    ) -> Result<Outcome, EngineError> {
        let run_id = shared.run_id.clone();
        let steps = &shared.workflow.steps;
        let index: HashMap<&str, usize> = steps.iter().enumerate().map(|(i, s)| (s.id.as_str(), i)).collect();
        let needs: Vec<Vec<usize>> =
            steps.iter().map(|s| s.needs.iter().filter_map(|n| index.get(n.as_str()).copied()).collect()).collect();
        let mut states: Vec<StepState> = vec![StepState::default(); steps.len()];
        let mut outputs: Vec<Option<BTreeMap<String, Json>>> = vec![None; steps.len()];
        for rec in self.store.steps(&run_id).await? {
            if let Some(&i) = index.get(rec.step_id.as_str()) {
                outputs[i] = rec.outputs.clone();
                states[i] = StepState {
                    status: rec.status,
                    attempt: rec.attempt,
                    deadline_at: rec.deadline_at,
                    next_attempt_at: rec.next_attempt_at,
                    crashed: rec.status == StepStatus::Interrupted
                        && rec.error.as_ref().is_some_and(|e| e.message == ENGINE_DIED),
                };
            }
        }
        // Scheduling is event-driven, so a run costs time linear in its steps
        // and dependencies: each step counts the needs it still waits for, and
        // enters `ready` when that count reaches zero; a step that fails
        // blocks its pending dependents, found through `dependents`.
        let dependents = shared.workflow.dependents();
        let mut waiting: Vec<usize> =
            needs.iter().map(|n| n.iter().filter(|&&d| states[d].status != StepStatus::Succeeded).count()).collect();
        let runnable_status =
            |st: &StepState| matches!(st.status, StepStatus::Pending | StepStatus::Interrupted | StepStatus::RetryWait);
        let mut ready = Ready::new(ranks(steps, &needs, &dependents));
        for i in (0..steps.len()).filter(|&i| waiting[i] == 0 && runnable_status(&states[i])) {
            ready.insert(i);
        }
        let mut succeeded = states.iter().filter(|s| s.status == StepStatus::Succeeded).count();
        // (step to block, the step it needs that did not succeed)
        let mut to_block: Vec<(usize, usize)> = (0..steps.len())
            .filter(|&i| matches!(states[i].status, StepStatus::Failed | StepStatus::Blocked))
            .flat_map(|i| dependents[i].iter().map(move |&d| (d, i)))
            .collect();
        let (stop_tx, stop_rx) = watch::channel::<Option<Stop>>(None);
        let mut inflight: JoinSet<(usize, AttemptEnd)> = JoinSet::new();
        let mut running = vec![false; steps.len()];
        let mut stopped: Option<Stop> = None;
        let mut first_failure: Option<(String, StepError)> = None;
        let mut lease_lost = false;
        let mut unreachable: Option<StoreError> = None;
        // A watch channel whose sender is gone answers `changed()` at once,
        // forever: its branch is switched off once it closes.
        let (mut stop_open, mut cancel_open, mut lost_open) = (true, true, true);

        // Steps whose every attempt was cut by the engine's death: they fail
        // instead of killing it once more.
        let exhausted: Vec<usize> =
            ready.iter().filter(|&i| states[i].crashed && states[i].attempt >= steps[i].retry.max_attempts).collect();
        if !exhausted.is_empty() {
            let attempts = self.store.attempts(&run_id).await?;
            let now = crate::now_ms();
            let mut writes = Vec::new();
            for &i in &exhausted {
                let died = attempts
                    .iter()
                    .filter(|a| a.step_id == steps[i].id && a.error.as_ref().is_some_and(|e| e.message == ENGINE_DIED))
                    .count();
                let error = StepError::fatal(format!("the engine died during this step {died} times"))
                    .with_hint(format!(
                        "something in step `{}` kills ca-a2a-flow (out of memory? a signal to its process group?); fix it, then `ca-a2a-flow resume {run_id}`",
                        steps[i].id
                    ));
                writes.push(Write::StepEnded {
                    step: steps[i].id.clone(),
                    status: StepStatus::Failed,
                    at: now,
                    error: Some(error.clone()),
                });
                states[i].status = StepStatus::Failed;
                ready.remove(i);
                to_block.extend(dependents[i].iter().map(|&d| (d, i)));
                (shared.observer)(Event::StepFailed {
                    step: steps[i].id.clone(),
                    attempt: states[i].attempt,
                    error: error.clone(),
                });
                first_failure.get_or_insert((steps[i].id.clone(), error));
            }
            shared.commit(writes).await?;
        }
        let mut in_flight = 0usize;
        // Steps with side effects in flight: while one runs, deferred
        // successes are committed rather than held.
        let side_effects: Vec<bool> =
            steps.iter().map(|s| shared.registry.get(&s.uses).is_none_or(|k| k.side_effects())).collect();
        let mut in_flight_effects = 0usize;

        loop {
            // A stop already requested before this point (`cancel` of an idle
            // run, or one recorded while nobody drove it) is seen here, not
            // through `changed()`.
            if stopped.is_none() {
                let why = *stop.borrow();
                if let Some(why) = why {
                    stopped = Some(why);
                    let _ = stop_tx.send(Some(why));
                } else if *cancel_rx.borrow() {
                    stopped = Some(Stop::Cancel);
                    let _ = stop_tx.send(Some(Stop::Cancel));
                }
            }

            // Dependents of failed or blocked steps will never run.
            let now = crate::now_ms();
            let mut blocked = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for (i, dep) in std::mem::take(&mut to_block) {
                if states[i].status == StepStatus::Pending && seen.insert(i) {
                    blocked.push((i, dep));
                }
            }
            if !blocked.is_empty() {
                let writes = blocked
                    .iter()
                    .map(|&(i, dep)| Write::StepEnded {
                        step: steps[i].id.clone(),
                        status: StepStatus::Blocked,
                        at: now,
                        error: Some(StepError::fatal(format!(
                            "not run: it needs step `{}`, which did not succeed",
                            steps[dep].id
                        ))),
                    })
                    .collect();
                shared.commit(writes).await?;
                for (i, dep) in blocked {
                    states[i].status = StepStatus::Blocked;
                    ready.remove(i);
                    to_block.extend(dependents[i].iter().map(|&d| (d, i)));
                    (shared.observer)(Event::StepBlocked { step: steps[i].id.clone(), by: steps[dep].id.clone() });
                }
                continue;
            }

            // Start what is ready.
            let mut next_wake: Option<i64> = None;
            let mut started = Vec::new();
            if stopped.is_none() && first_failure.is_none() && !lease_lost {
                for i in ready.iter() {
                    if in_flight >= self.config.parallelism.max(1) {
                        break;
                    }
                    let st = &states[i];
                    let runnable = match st.status {
                        StepStatus::Pending | StepStatus::Interrupted => true,
                        StepStatus::RetryWait => match st.next_attempt_at {
                            Some(t) if t > now => {
                                next_wake = Some(next_wake.map_or(t, |w: i64| w.min(t)));
                                false
                            }
                            _ => true,
                        },
                        _ => false,
                    };
                    if !runnable || running[i] {
                        continue;
                    }
                    // An attempt interrupted by a signal the engine handled is re-done
                    // under the same number; one cut by the engine's death counted.
                    let attempt = if st.status == StepStatus::Interrupted && !st.crashed {
                        st.attempt.max(1)
                    } else {
                        st.attempt + 1
                    };
                    let deadline_at = st.deadline_at.unwrap_or(now + steps[i].timeout.as_millis() as i64);
                    let deps: BTreeMap<String, BTreeMap<String, Json>> = needs[i]
                        .iter()
                        .filter_map(|&n| outputs[n].as_ref().map(|o| (steps[n].id.clone(), o.clone())))
                        .collect();
                    running[i] = true;
                    in_flight += 1;
                    in_flight_effects += usize::from(side_effects[i]);
                    started.push(i);
                    let (shared, stop_rx) = (shared.clone(), stop_rx.clone());
                    inflight.spawn(async move {
                        let step = &shared.workflow.steps[i];
                        let end = run_attempt(&shared, step, attempt, deadline_at, deps, stop_rx).await;
                        (i, end)
                    });
                }
            }

            for i in started {
                ready.remove(i);
            }

            if inflight.is_empty() {
                let finished = succeeded == steps.len();
                if finished || stopped.is_some() || first_failure.is_some() || lease_lost || next_wake.is_none() {
                    // Done, stopping, or nothing runnable and nothing to wait for.
                    break;
                }
            }

            // Before waiting on anything that may be slow (a step with side
            // effects, a retry's delay), the deferred successes are committed.
            if (in_flight_effects > 0 || inflight.is_empty()) && shared.has_deferred() {
                shared.flush().await?;
            }
            let wake = next_wake.map(|t| Instant::now() + Duration::from_millis((t - crate::now_ms()).max(0) as u64));
            tokio::select! {
                joined = inflight.join_next(), if !inflight.is_empty() => {
                    let (i, end) = match joined {
                        Some(Ok(pair)) => pair,
                        // A step's own panic is caught in its attempt; this is the engine's.
                        Some(Err(e)) => panic!("a step task panicked: {e}"),
                        None => continue,
                    };
                    running[i] = false;
                    in_flight -= 1;
                    in_flight_effects -= usize::from(side_effects[i]);
                    match end {
                        AttemptEnd::Succeeded(out) => {
                            states[i].status = StepStatus::Succeeded;
                            outputs[i] = Some(out);
                            succeeded += 1;
                            for &d in &dependents[i] {
                                waiting[d] -= 1;
                                if waiting[d] == 0 && runnable_status(&states[d]) {
                                    ready.insert(d);
                                }
                            }
                        }
                        AttemptEnd::Retry(next) => {
                            states[i] = next;
                            ready.insert(i);
                        }
                        AttemptEnd::Stopped(next) => states[i] = next,
                        AttemptEnd::Failed(error) => {
                            states[i].status = StepStatus::Failed;
                            to_block.extend(dependents[i].iter().map(|&d| (d, i)));
                            first_failure.get_or_insert((steps[i].id.clone(), error));
                        }
                        AttemptEnd::LeaseLost => {
                            lease_lost = true;
                            let _ = stop_tx.send(Some(Stop::Interrupt));
                        }
                        AttemptEnd::StoreUnreachable(e) => {
                            lease_lost = true;
                            unreachable.get_or_insert(e);
                            let _ = stop_tx.send(Some(Stop::Interrupt));
                        }
                    }
                }
                changed = stop.changed(), if stop_open && stopped.is_none() => {
                    stop_open = changed.is_ok();
                    let why = *stop.borrow();
                    if let Some(why) = why {
                        stopped = Some(why);
                        let _ = stop_tx.send(Some(why));
                    }
                }
                changed = cancel_rx.changed(), if cancel_open && stopped.is_none() => {
                    cancel_open = changed.is_ok();
                    if *cancel_rx.borrow() {
                        stopped = Some(Stop::Cancel);
                        let _ = stop_tx.send(Some(Stop::Cancel));
                    }
                }
                changed = lost_rx.changed(), if lost_open && !lease_lost => {
                    lost_open = changed.is_ok();
                    let why = lost_rx.borrow().clone();
                    if let Some(why) = why {
                        lease_lost = true;
                        if let Lost::Unreachable(store, seconds, last) = why {
                            unreachable.get_or_insert(StoreError::Unreachable { store, seconds, last });
                        }
                        let _ = stop_tx.send(Some(Stop::Interrupt));
                    }
                }
                _ = async { tokio::time::sleep_until(wake.expect("guarded")).await }, if wake.is_some() => {}
            }
        }

        if lease_lost {
            // What was running is cut: its tasks are aborted (their processes
            // killed) before this process reports and exits.
            inflight.shutdown().await;
            if let Some(e) = unreachable {
                return Err(EngineError::Store(e));
            }
            return Err(EngineError::LeaseLost { run: run_id });
        }
        let now = crate::now_ms();
        let all_succeeded = states.iter().all(|s| s.status == StepStatus::Succeeded);
        let (status, error) = match (stopped, &first_failure) {
            (Some(Stop::Cancel), _) => (RunStatus::Cancelled, Some("cancelled by request".to_string())),
            (Some(Stop::Interrupt), _) => (RunStatus::Interrupted, Some("interrupted by a signal".to_string())),
            (None, Some((id, e))) if e.message.starts_with(&format!("step `{id}`")) => {
                (RunStatus::Failed, Some(e.message.clone()))
            }
            (None, Some((id, e))) => (RunStatus::Failed, Some(format!("step `{id}` failed: {}", e.message))),
            (None, None) if all_succeeded => (RunStatus::Succeeded, None),
            (None, None) => (RunStatus::Failed, Some("no step could make progress".to_string())),
        };
        let mut writes = Vec::new();
        if status == RunStatus::Cancelled {
            for (i, s) in steps.iter().enumerate() {
                if matches!(states[i].status, StepStatus::Pending | StepStatus::RetryWait | StepStatus::Interrupted) {
                    writes.push(Write::StepEnded {
                        step: s.id.clone(),
                        status: StepStatus::Cancelled,
                        at: now,
                        error: None,
                    });
                }
            }
        }
        writes.push(Write::RunStatus { status, at: now, error: error.clone() });
        writes.push(Write::Event {
            step: None,
            level: if status == RunStatus::Succeeded { "info" } else { "error" },
            message: match &error {
                Some(e) => format!("run {status}: {e}"),
                None => format!("run {status}"),
            },
            at: now,
        });
        shared.commit(writes).await?;
        Ok(Outcome { run_id, status, error })
    }
}

/// One attempt of one step, from its `started` record to its committed end.
async fn run_attempt<S: Store>(
    shared: &Shared<S>,
    step: &StepDef,
    attempt: u32,
    deadline_at: i64,
    deps: BTreeMap<String, BTreeMap<String, Json>>,
    mut stop: watch::Receiver<Option<Stop>>,
) -> AttemptEnd {
    let run = shared.run_id.as_str();
    let max = step.retry.max_attempts;
    let started = crate::now_ms();
    let started_at = Instant::now();
    let kind = shared.registry.get(&step.uses).expect("kinds checked when the run started").clone();
    // Before the attempt's first side effect, its start is committed. A kind
    // without side effects skips that commit: its end carries its start.
    let start = Write::StepStarted { step: step.id.clone(), attempt, at: started, deadline_at };
    let unrecorded_start = if kind.side_effects() {
        if let Err(e) = shared.commit(vec![start]).await {
            return store_failure(e);
        }
        None
    } else {
        Some(start)
    };
    failpoint("after_start", &step.id);

    let step_left = Duration::from_millis((deadline_at - started).max(0) as u64);
    let budget = step.attempt_timeout.min(step_left);
    let step_bound = step_left <= step.attempt_timeout;
    (shared.observer)(Event::StepStarted {
        step: step.id.clone(),
        kind: step.uses.clone(),
        attempt,
        max_attempts: max,
        attempt_deadline: budget,
        step_deadline: step_left,
    });

    let (resolved, skipped) = {
        let secret = |s: &str, key: &str| {
            shared.index.get(s).is_some_and(|&i| shared.workflow.steps[i].secret_outputs.iter().any(|k| k == key))
        };
        let env = |name: &str| std::env::var(name).ok();
        let scope = Scope {
            run_id: run,
            run_name: &shared.run_name,
            inputs: &shared.inputs,
            outputs: &deps,
            secret: &secret,
            env: &env,
        };
        match skip_reason(step, &deps, &scope) {
            Ok(Some(why)) => (Ok((Json::Null, Vec::new())), Some(why)),
            Ok(None) => (resolve_params(&scope, &step.with, kind.scripts()), None),
            Err(e) => (Err(e), None),
        }
    };
    // A step that produces secret outputs may print them before the engine
    // knows their values: its reports are held until the attempt ends, then
    // masked and written.
    let held: Option<Arc<std::sync::Mutex<Vec<Report>>>> =
        (!step.secret_outputs.is_empty()).then(|| Arc::new(std::sync::Mutex::new(Vec::new())));
    let sink: ReportSink = match &held {
        Some(buffer) => {
            let buffer = buffer.clone();
            Arc::new(move |_: &str, report: Report| buffer.lock().unwrap_or_else(|e| e.into_inner()).push(report))
        }
        None => shared.sink.clone(),
    };
    let release_held = || {
        if let Some(buffer) = &held {
            for report in buffer.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
                let report = match report {
                    Report::Log(l) => Report::Log(shared.redactor.redact(&l)),
                    Report::Progress(p) => Report::Progress(shared.redactor.redact(&p)),
                };
                (shared.sink)(&step.id, report);
            }
        }
    };
    // An attempt cut before its kind could say what its secret values are:
    // what it printed may hold them, so it is not shown at all.
    let withhold_held = || {
        if let Some(buffer) = &held {
            let n = buffer.lock().unwrap_or_else(|e| e.into_inner()).drain(..).count();
            if n > 0 {
                (shared.sink)(
                    &step.id,
                    Report::Log(format!(
                        "{n} line(s) of output withheld: this step declares secret outputs and was cut before their values were known"
                    )),
                );
            }
        }
    };
    let (params, bound) = match resolved {
        Ok((params, bound)) => (Ok(params), bound),
        Err(e) => (Err(e), Vec::new()),
    };
    let ctx = StepContext {
        run_id: run.to_string(),
        run_name: shared.run_name.clone(),
        destroy_of: shared.workflow.destroyed_run().map(String::from),
        step_id: step.id.clone(),
        attempt,
        max_attempts: max,
        deadline: Instant::now() + budget,
        workflow_dir: shared.workflow_dir.clone(),
        redactor: shared.redactor.clone(),
        sink,
        bound,
        budget: Arc::default(),
        secret_outputs: step.secret_outputs.clone(),
    };
    let scratch = crate::orphans::attempt_scratch_path(run, &step.id, attempt);

    enum Ran {
        Done(Result<BTreeMap<String, Json>, StepError>),
        TimedOut,
        Stopped(Stop),
    }
    let ran = match params {
        Err(e) => Ran::Done(Err(StepError::fatal(format!("cannot resolve parameters: {e}")))),
        Ok(_) if skipped.is_some() => {
            (shared.sink)(&step.id, Report::Log(format!("skipped: {}", skipped.unwrap_or_default())));
            Ran::Done(Ok(skipped_outputs(step)))
        }
        Ok(_) if budget.is_zero() => Ran::TimedOut,
        Ok(params) => {
            if let Some(why) = *stop.borrow() {
                Ran::Stopped(why)
            } else {
                // A panic inside the kind fails this step only; a cut drops the
                // kind's future (and so what it holds: processes are killed).
                let task = {
                    use futures_util::FutureExt;
                    std::panic::AssertUnwindSafe(async {
                        failpoint_panic(&step.id);
                        kind.execute(&ctx, params).await
                    })
                    .catch_unwind()
                    .map(|r| r.map_err(|payload| panic_message(payload.as_ref())))
                };
                tokio::select! {
                    r = tokio::time::timeout(budget, task) => match r {
                        Ok(Ok(result)) => Ran::Done(result),
                        Ok(Err(panicked)) => Ran::Done(Err(StepError::fatal(format!(
                            "the step kind `{}` panicked: {panicked}",
                            step.uses
                        ))
                        .with_hint("this is a bug in ca-a2a-flow: report it with the step's parameters; `resume` runs the step again"))),
                        Err(_) => Ran::TimedOut,
                    },
                    why = stop.wait_for(Option::is_some) => Ran::Stopped(why.ok().and_then(|w| *w).unwrap_or(Stop::Interrupt)),
                }
            }
        }
    };
    // The attempt is over: its scratch files go (its processes went with the task).
    let _ = std::fs::remove_dir_all(&scratch);
    if ctx.dropped_lines() > 0 {
        (ctx.sink)(
            &step.id,
            Report::Log(format!(
                "{} more line(s) of output dropped: an attempt keeps its first {} lines",
                ctx.dropped_lines(),
                crate::kind::MAX_LINES
            )),
        );
    }

    let now = crate::now_ms();
    let result = match ran {
        Ran::Done(r) => r,
        Ran::TimedOut => {
            let limit = if step_bound { step.timeout } else { step.attempt_timeout };
            let which = if step_bound { "timeout" } else { "attempt_timeout" };
            withhold_held();
            let mut e = StepError::fatal(format!(
                "step `{}` timed out after {} (attempt {attempt}/{max})",
                step.id,
                duration::format(limit)
            ))
            .with_hint(format!("raise `{which}` on step `{}` if it needs longer, or look at `ca-a2a-flow logs {run} --step {}` for why it is slow", step.id, step.id));
            // An attempt cut by its own deadline may succeed next time; one cut by
            // the whole step's deadline has no time left.
            if !step_bound {
                e.class = crate::kind::ErrorClass::Retryable;
            }
            Err(e)
        }
        Ran::Stopped(why) => {
            withhold_held();
            let status = if why == Stop::Cancel { StepStatus::Cancelled } else { StepStatus::Interrupted };
            let writes = vec![Write::StepEnded { step: step.id.clone(), status, at: now, error: None }];
            (shared.observer)(Event::StepInterrupted { step: step.id.clone() });
            let next =
                StepState { status, attempt, deadline_at: Some(deadline_at), next_attempt_at: None, crashed: false };
            return match commit_end(shared, unrecorded_start.clone(), writes).await {
                Ok(()) => AttemptEnd::Stopped(next),
                Err(e) => store_failure(e),
            };
        }
    };

    match result {
        Ok(mut outputs) => {
            for key in &step.secret_outputs {
                if let Some(v) = outputs.get_mut(key) {
                    match &*v {
                        Json::String(s) => shared.redactor.add(s),
                        other => shared.redactor.add(&other.to_string()),
                    }
                    *v = Json::String(MASK.into());
                }
            }
            release_held();
            failpoint("before_commit", &step.id);
            let writes = vec![Write::StepSucceeded {
                step: step.id.clone(),
                attempt,
                started_at: started,
                deadline_at,
                at: now,
                outputs: outputs.clone(),
            }];
            // A kind without side effects and without secrets waits for company.
            let committed = if unrecorded_start.is_some() && step.secret_outputs.is_empty() {
                shared.defer(writes.into_iter().next().expect("one write")).await
            } else {
                commit_end(shared, None, writes).await
            };
            if let Err(e) = committed {
                return store_failure(e);
            }
            failpoint("after_commit", &step.id);
            (shared.observer)(Event::StepSucceeded { step: step.id.clone(), attempt, elapsed: started_at.elapsed() });
            AttemptEnd::Succeeded(outputs)
        }
        Err(mut error) => {
            release_held();
            error.message = shared.redactor.redact(&error.message);
            let delay = step.retry.delay_before(attempt + 1);
            let next_at = now + delay.as_millis() as i64;
            let retry = error.is_retryable() && attempt < max && next_at < deadline_at;
            if retry {
                let writes = vec![Write::StepRetry {
                    step: step.id.clone(),
                    attempt,
                    at: now,
                    next_attempt_at: next_at,
                    delay_ms: delay.as_millis() as i64,
                    error: error.clone(),
                }];
                if let Err(e) = commit_end(shared, unrecorded_start.clone(), writes).await {
                    return store_failure(e);
                }
                failpoint("after_retry_scheduled", &step.id);
                (shared.observer)(Event::StepRetrying { step: step.id.clone(), attempt, delay, error });
                AttemptEnd::Retry(StepState {
                    status: StepStatus::RetryWait,
                    attempt,
                    deadline_at: Some(deadline_at),
                    next_attempt_at: Some(next_at),
                    crashed: false,
                })
            } else {
                if error.is_retryable() && attempt < max {
                    error.hint.get_or_insert_with(|| {
                        format!(
                            "no time was left for another attempt before the step's {} deadline",
                            duration::format(step.timeout)
                        )
                    });
                } else if error.is_retryable() {
                    error.message = format!("{} (gave up after {attempt} attempts)", error.message);
                }
                let writes = vec![Write::StepEnded {
                    step: step.id.clone(),
                    status: StepStatus::Failed,
                    at: now,
                    error: Some(error.clone()),
                }];
                if let Err(e) = commit_end(shared, unrecorded_start.clone(), writes).await {
                    return store_failure(e);
                }
                (shared.observer)(Event::StepFailed { step: step.id.clone(), attempt, error: error.clone() });
                AttemptEnd::Failed(error)
            }
        }
    }
}

/// Commits how an attempt ended, with the fingerprints of any secret value the
/// attempt made known (so a later process of the run masks it too).
/// An attempt that never recorded its start (a kind without side effects)
/// records it now, in the same transaction, unless it succeeded (its success
/// carries its start).
async fn commit_end<S: Store>(
    shared: &Shared<S>,
    unrecorded_start: Option<Write>,
    writes: Vec<Write>,
) -> Result<(), StoreError> {
    let mut writes: Vec<Write> = unrecorded_start.into_iter().chain(writes).collect();
    writes.extend(shared.redactor.take_new_fingerprints().map(|masks| Write::Masks { masks }));
    shared.commit(writes).await
}

/// Step log lines waiting for the log writer, at most.
const LOG_QUEUE: usize = 8192;

/// What a panic said, as far as it said it with text.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Test hook: `CA_A2A_FLOW_FAILPOINT=panic:STEP` panics inside the step's task,
/// as a bug in a kind would.
fn failpoint_panic(step: &str) {
    if let Ok(spec) = std::env::var("CA_A2A_FLOW_FAILPOINT")
        && spec.split(',').any(|p| p.trim() == format!("panic:{step}"))
    {
        panic!("failpoint panic:{step}");
    }
}

/// A step's parameters with every template resolved; in the kind's script
/// parameters templates are bound instead (their values returned apart).
fn resolve_params(scope: &Scope<'_>, with: &Json, scripts: &[&str]) -> Result<(Json, Vec<(String, String)>), String> {
    let mut bound = Vec::new();
    let Json::Object(map) = with else { return Ok((scope.resolve(with)?, bound)) };
    let mut out = serde_json::Map::new();
    for (key, value) in map {
        let resolved = match value {
            Json::String(text) if scripts.contains(&key.as_str()) => Json::String(scope.bind_script(text, &mut bound)?),
            other => scope.resolve(other)?,
        };
        out.insert(key.clone(), resolved);
    }
    Ok((Json::Object(out), bound))
}

/// The steps ready to start, the most urgent first: when more are ready than
/// `parallelism` lets run, the ones heading the longest chain of deadlines
/// start first (a database's subnets before a log group), whatever their
/// order in the file.
struct Ready {
    order: std::collections::BTreeSet<(std::cmp::Reverse<u128>, usize)>,
    rank: Vec<u128>,
}

impl Ready {
    fn new(rank: Vec<u128>) -> Self {
        Self { order: Default::default(), rank }
    }
    fn insert(&mut self, i: usize) {
        self.order.insert((std::cmp::Reverse(self.rank[i]), i));
    }
    fn remove(&mut self, i: usize) {
        self.order.remove(&(std::cmp::Reverse(self.rank[i]), i));
    }
    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.order.iter().map(|&(_, i)| i)
    }
}

/// Each step's rank: its own timeout plus the largest rank among the steps
/// that need it, i.e. the longest chain of deadlines from it to the end (the
/// deadlines stand for how long each kind may take: a database's 50 minutes,
/// a log group's few).
fn ranks(steps: &[StepDef], needs: &[Vec<usize>], dependents: &[Vec<usize>]) -> Vec<u128> {
    let mut unranked: Vec<usize> = dependents.iter().map(Vec::len).collect();
    let mut below = vec![0u128; steps.len()];
    let mut rank = vec![0u128; steps.len()];
    let mut todo: Vec<usize> = (0..steps.len()).filter(|&i| unranked[i] == 0).collect();
    while let Some(i) = todo.pop() {
        rank[i] = steps[i].timeout.as_millis() + below[i];
        for &n in &needs[i] {
            below[n] = below[n].max(rank[i]);
            unranked[n] -= 1;
            if unranked[n] == 0 {
                todo.push(n);
            }
        }
    }
    rank
}

/// The output a skipped step records (and nothing else): its dependents are skipped too.
pub const SKIPPED: &str = "skipped";

/// The output a skipped step with `otherwise` records beside its `otherwise`
/// values: its dependents run.
pub const STANDS_IN: &str = "stands_in";

/// Whether a step's outputs say it was skipped.
pub fn was_skipped(outputs: &BTreeMap<String, Json>) -> bool {
    outputs.get(SKIPPED) == Some(&Json::Bool(true))
}

/// Whether a skipped step's dependents are skipped too: unless it stood in with `otherwise`.
fn skips_dependents(outputs: &BTreeMap<String, Json>) -> bool {
    was_skipped(outputs) && outputs.get(STANDS_IN) != Some(&Json::Bool(true))
}

/// What a skipped step records: `skipped`, and its `otherwise` values if it has them.
fn skipped_outputs(step: &StepDef) -> BTreeMap<String, Json> {
    let mut out = BTreeMap::from([(SKIPPED.to_string(), Json::Bool(true))]);
    if let Some(values) = &step.otherwise {
        out.extend(values.iter().map(|(k, v)| (k.clone(), v.clone())));
        out.insert(STANDS_IN.to_string(), Json::Bool(true));
    }
    out
}

/// Why `step` does not run: a step it needs was skipped, or its `when` is false.
fn skip_reason(
    step: &StepDef,
    deps: &BTreeMap<String, BTreeMap<String, Json>>,
    scope: &Scope<'_>,
) -> Result<Option<String>, String> {
    if let Some((dep, _)) = deps.iter().find(|(_, o)| skips_dependents(o)) {
        return Ok(Some(format!("it needs `{dep}`, which was skipped")));
    }
    let Some(when) = &step.when else { return Ok(None) };
    let value = scope.resolve(&Json::String(when.clone()))?;
    Ok((!truthy(&value)).then(|| format!("`when: {when}` is {value}")))
}

/// The steps a run with these inputs skips, as far as the inputs tell: a
/// `when` false on inputs alone, and every step that needs a skipped one
/// without `otherwise` (`plan`, `cost` and preflight leave them out).
pub fn skipped_by_inputs(wf: &Workflow, inputs: &BTreeMap<String, Json>) -> std::collections::BTreeSet<String> {
    let outputs = BTreeMap::new();
    let (secret, env) = (|_: &str, _: &str| false, |n: &str| std::env::var(n).ok());
    let scope = Scope { run_id: "", run_name: "", inputs, outputs: &outputs, secret: &secret, env: &env };
    let mut skipped = std::collections::BTreeSet::new();
    // Skipped steps whose dependents are skipped too (those without `otherwise`).
    let mut propagating = std::collections::BTreeSet::new();
    for wave in wf.waves() {
        for s in wave {
            let off =
                s.when.as_ref().and_then(|w| scope.resolve(&Json::String(w.clone())).ok()).is_some_and(|v| !truthy(&v));
            if off || s.needs.iter().any(|n| propagating.contains(n)) {
                skipped.insert(s.id.clone());
                if s.otherwise.is_none() {
                    propagating.insert(s.id.clone());
                }
            }
        }
    }
    skipped
}

/// `when:` values: false, "false", "no", "0", "" and null are false.
pub fn truthy(value: &Json) -> bool {
    match value {
        Json::Bool(b) => *b,
        Json::Null => false,
        Json::Number(n) => n.as_f64() != Some(0.0),
        Json::String(s) => !matches!(s.trim().to_ascii_lowercase().as_str(), "" | "false" | "no" | "0" | "off"),
        _ => true,
    }
}

fn store_failure(e: StoreError) -> AttemptEnd {
    match e {
        StoreError::Fenced { .. } => AttemptEnd::LeaseLost,
        e @ StoreError::Unreachable { .. } => AttemptEnd::StoreUnreachable(e),
        other => AttemptEnd::Failed(
            StepError::fatal(format!("could not record the step's state: {other}"))
                .with_hint("the state store is unreachable or full; fix it and `resume` the run"),
        ),
    }
}

/// Writes step logs and progress (deduplicated) to the event log in batches.
async fn write_logs<S: Store>(
    store: S,
    run: String,
    generation: i64,
    lease: Arc<Lease>,
    mut rx: mpsc::Receiver<(String, Report)>,
    overflow: Arc<std::sync::atomic::AtomicU64>,
    observer: Observer,
) {
    let mut last_progress: BTreeMap<String, String> = BTreeMap::new();
    let mut batch = Vec::new();
    // A batch is written at most 200 ms after its first line, however busy the
    // steps are, so `status` and `logs` from another process stay current.
    let mut first_at = tokio::time::Instant::now();
    loop {
        let item = if batch.is_empty() {
            let item = rx.recv().await;
            first_at = tokio::time::Instant::now();
            item
        } else {
            match tokio::time::timeout_at(first_at + Duration::from_millis(200), rx.recv()).await {
                Ok(item) => item,
                Err(_) => {
                    flush(&store, &run, generation, &lease, &mut batch).await;
                    continue;
                }
            }
        };
        let Some((step, report)) = item else { break };
        let now = crate::now_ms();
        let dropped = overflow.swap(0, std::sync::atomic::Ordering::Relaxed);
        if dropped > 0 {
            batch.push((None, "warn", format!("{dropped} log line(s) dropped: the state store did not keep up"), now));
        }
        match report {
            Report::Log(line) => {
                observer(Event::StepLog { step: step.clone(), line: line.clone() });
                batch.push((Some(step), "log", line, now));
            }
            Report::Progress(message) => {
                observer(Event::StepProgress { step: step.clone(), message: message.clone() });
                if last_progress.get(&step) != Some(&message) {
                    last_progress.insert(step.clone(), message.clone());
                    batch.push((Some(step), "progress", message, now));
                }
            }
        }
        if batch.len() >= 100 {
            flush(&store, &run, generation, &lease, &mut batch).await;
        }
    }
    flush(&store, &run, generation, &lease, &mut batch).await;
}

async fn flush<S: Store>(store: &S, run: &str, generation: i64, lease: &Lease, batch: &mut Vec<NewEvent>) {
    if batch.is_empty() {
        return;
    }
    let lines = std::mem::take(batch);
    for attempt in 1..=3 {
        // Log lines, like checkpoints, are written only while the lease holds.
        let left = lease.left();
        let written = match tokio::time::timeout(left, store.append_events(run, generation, lines.clone())).await {
            _ if left.is_zero() => Err(StoreError::Timeout { operation: "append_events", seconds: 0 }),
            Ok(result) => result,
            Err(_) => Err(StoreError::Timeout { operation: "append_events", seconds: left.as_secs() }),
        };
        match written {
            Ok(()) => return,
            Err(_) if lease.left().is_zero() => {
                tracing::warn!(lines = lines.len(), "step log lines not written: the lease ran out");
                return;
            }
            Err(e) if e.is_transient() && attempt < 3 => {
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, lines = lines.len(), "could not write step logs to the event log");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_carry_the_utc_date() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_416), (2025, 11, 24));
        assert!(new_run_id().starts_with("r-20"));
    }
}
