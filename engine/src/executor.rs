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
use crate::store::{Holder, NewRun, RunStatus, StepStatus, Store, StoreError, Write};
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
}

/// How an attempt ended, with what the scheduler needs to know next.
enum AttemptEnd {
    Succeeded(BTreeMap<String, Json>),
    Retry(StepState),
    Failed(StepError),
    Stopped(StepState),
    LeaseLost,
}

struct Shared<S: Store> {
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

    /// Records a new run (its definition, inputs and per-step hashes); runs nothing.
    pub async fn create(&self, workflow: &Workflow, inputs: &BTreeMap<String, Json>) -> Result<String, EngineError> {
        let id = new_run_id();
        self.store.create_run(NewRun { id: &id, workflow, inputs, now: crate::now_ms() }).await?;
        Ok(id)
    }

    /// Takes the run's lease and drives it until it ends or `stop` fires.
    /// `redefine` is `resume --accept-changes`: the new definition and the steps
    /// to reset (changed ones and their dependents) and to drop.
    pub async fn drive(
        &self,
        run_id: &str,
        redefine: Option<(Workflow, Vec<String>, Vec<String>)>,
        mut stop: watch::Receiver<Option<Stop>>,
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
            other => other?,
        };
        let resumed = before.status != RunStatus::Pending;
        let outage_ms = match (resumed, before.heartbeat_at) {
            (true, Some(h)) => (now - h).max(0),
            _ => 0,
        };
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
        self.store.apply(run_id, generation, writes).await?;

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
        let (lost_tx, mut lost_rx) = watch::channel(false);
        let (cancel_tx, mut cancel_rx) = watch::channel(false);
        let heartbeat = {
            let store = self.store.clone();
            let run = run_id.to_string();
            let period = (self.config.lease_ttl / 3).max(Duration::from_millis(100));
            tokio::spawn(async move {
                let mut last_ok = Instant::now();
                loop {
                    tokio::time::sleep(period).await;
                    match store.renew(&run, generation, ttl_ms, crate::now_ms()).await {
                        Ok(cancel) => {
                            last_ok = Instant::now();
                            if cancel {
                                let _ = cancel_tx.send(true);
                            }
                        }
                        Err(StoreError::Fenced { .. }) => {
                            let _ = lost_tx.send(true);
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "lease renewal failed; retrying");
                            if last_ok.elapsed() > Duration::from_millis(ttl_ms as u64) {
                                let _ = lost_tx.send(true);
                                return;
                            }
                        }
                    }
                }
            })
        };

        // Step logs are written in batches, outside the fenced state writes.
        let (log_tx, log_rx) = mpsc::unbounded_channel::<(String, Report)>();
        let log_writer =
            tokio::spawn(write_logs(self.store.clone(), run_id.to_string(), log_rx, self.observer.clone()));
        let sink: ReportSink = Arc::new(move |step: &str, report: Report| {
            let _ = log_tx.send((step.to_string(), report));
        });

        let workflow_dir = PathBuf::from(&run.workflow_file)
            .parent()
            .map(|p| if p.as_os_str().is_empty() { PathBuf::from(".") } else { p.to_path_buf() })
            .unwrap_or_else(|| PathBuf::from("."));
        let shared = Arc::new(Shared {
            store: self.store.clone(),
            registry: self.registry.clone(),
            observer: self.observer.clone(),
            run_id: run_id.to_string(),
            run_name: run.workflow_name.clone(),
            generation,
            workflow: run.definition.clone(),
            inputs: run.inputs.clone(),
            workflow_dir,
            redactor: Redactor::default(),
            sink,
        });

        let result = self.schedule(&shared, &mut stop, &mut cancel_rx, &mut lost_rx).await;
        heartbeat.abort();
        drop(shared);
        let _ = log_writer.await;
        match &result {
            Ok(outcome) => {
                self.store.release(run_id, generation).await?;
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
        lost_rx: &mut watch::Receiver<bool>,
    ) -> Result<Outcome, EngineError> {
        let run_id = shared.run_id.clone();
        let generation = shared.generation;
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
                };
            }
        }
        let done = |st: &StepState| {
            matches!(
                st.status,
                StepStatus::Succeeded | StepStatus::Failed | StepStatus::Blocked | StepStatus::Cancelled
            )
        };
        // Steps that may still run; scanning only these keeps scheduling linear.
        let mut open: Vec<usize> = (0..steps.len()).filter(|&i| !done(&states[i])).collect();
        let (stop_tx, stop_rx) = watch::channel::<Option<Stop>>(None);
        let mut inflight: JoinSet<(usize, AttemptEnd)> = JoinSet::new();
        let mut running = vec![false; steps.len()];
        let mut stopped: Option<Stop> = None;
        let mut first_failure: Option<(String, StepError)> = None;
        let mut lease_lost = false;
        // A watch channel whose sender is gone answers `changed()` at once,
        // forever: its branch is switched off once it closes.
        let (mut stop_open, mut cancel_open, mut lost_open) = (true, true, true);

        loop {
            // A stop already requested before this point (`cancel` of an idle
            // run) is seen here, not through `changed()`.
            if stopped.is_none() {
                let why = *stop.borrow();
                if let Some(why) = why {
                    stopped = Some(why);
                    let _ = stop_tx.send(Some(why));
                }
            }

            // Dependents of failed or blocked steps will never run.
            let now = crate::now_ms();
            let mut blocked = Vec::new();
            for &i in &open {
                if states[i].status == StepStatus::Pending {
                    let failed = needs[i]
                        .iter()
                        .find(|&&n| matches!(states[n].status, StepStatus::Failed | StepStatus::Blocked));
                    if let Some(&dep) = failed {
                        blocked.push((i, dep));
                    }
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
                self.store.apply(&run_id, generation, writes).await?;
                for (i, dep) in blocked {
                    states[i].status = StepStatus::Blocked;
                    (shared.observer)(Event::StepBlocked { step: steps[i].id.clone(), by: steps[dep].id.clone() });
                }
                open.retain(|&i| !done(&states[i]));
                continue;
            }

            // Start what is ready.
            let mut next_wake: Option<i64> = None;
            let mut in_flight = running.iter().filter(|r| **r).count();
            if stopped.is_none() && first_failure.is_none() && !lease_lost {
                for &i in &open {
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
                    if !runnable || running[i] || !needs[i].iter().all(|&n| states[n].status == StepStatus::Succeeded) {
                        continue;
                    }
                    // An interrupted attempt is re-done under the same number.
                    let attempt = if st.status == StepStatus::Interrupted { st.attempt.max(1) } else { st.attempt + 1 };
                    let deadline_at = st.deadline_at.unwrap_or(now + steps[i].timeout.as_millis() as i64);
                    let deps: BTreeMap<String, BTreeMap<String, Json>> = needs[i]
                        .iter()
                        .filter_map(|&n| outputs[n].as_ref().map(|o| (steps[n].id.clone(), o.clone())))
                        .collect();
                    running[i] = true;
                    in_flight += 1;
                    let (shared, stop_rx) = (shared.clone(), stop_rx.clone());
                    inflight.spawn(async move {
                        let step = &shared.workflow.steps[i];
                        let end = run_attempt(&shared, step, attempt, deadline_at, deps, stop_rx).await;
                        (i, end)
                    });
                }
            }

            if inflight.is_empty() {
                let finished = open.is_empty() && states.iter().all(|s| s.status == StepStatus::Succeeded);
                if finished || stopped.is_some() || first_failure.is_some() || lease_lost || next_wake.is_none() {
                    // Done, stopping, or nothing runnable and nothing to wait for.
                    break;
                }
            }

            let wake = next_wake.map(|t| Instant::now() + Duration::from_millis((t - crate::now_ms()).max(0) as u64));
            tokio::select! {
                joined = inflight.join_next(), if !inflight.is_empty() => {
                    let (i, end) = match joined {
                        Some(Ok(pair)) => pair,
                        Some(Err(e)) => panic!("a step task panicked: {e}"),
                        None => continue,
                    };
                    running[i] = false;
                    match end {
                        AttemptEnd::Succeeded(out) => {
                            states[i].status = StepStatus::Succeeded;
                            outputs[i] = Some(out);
                        }
                        AttemptEnd::Retry(next) | AttemptEnd::Stopped(next) => states[i] = next,
                        AttemptEnd::Failed(error) => {
                            states[i].status = StepStatus::Failed;
                            first_failure.get_or_insert((steps[i].id.clone(), error));
                        }
                        AttemptEnd::LeaseLost => {
                            lease_lost = true;
                            let _ = stop_tx.send(Some(Stop::Interrupt));
                        }
                    }
                    open.retain(|&i| !done(&states[i]));
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
                    if *lost_rx.borrow() {
                        lease_lost = true;
                        let _ = stop_tx.send(Some(Stop::Interrupt));
                    }
                }
                _ = async { tokio::time::sleep_until(wake.expect("guarded")).await }, if wake.is_some() => {}
            }
        }

        if lease_lost {
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
        self.store.apply(&run_id, generation, writes).await?;
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
    let store = &shared.store;
    let (run, generation) = (shared.run_id.as_str(), shared.generation);
    let max = step.retry.max_attempts;
    let started = crate::now_ms();
    let started_at = Instant::now();
    let start = vec![Write::StepStarted { step: step.id.clone(), attempt, at: started, deadline_at }];
    if let Err(e) = store.apply(run, generation, start).await {
        return store_failure(e);
    }
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

    let kind = shared.registry.get(&step.uses).expect("kinds checked when the run started").clone();
    let (resolved, skipped) = {
        let secret =
            |s: &str, key: &str| shared.workflow.step(s).is_some_and(|d| d.secret_outputs.iter().any(|k| k == key));
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
            Ok(Some(why)) => (Ok(Json::Null), Some(why)),
            Ok(None) => (scope.resolve(&step.with), None),
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
    let ctx = StepContext {
        run_id: run.to_string(),
        run_name: shared.run_name.clone(),
        step_id: step.id.clone(),
        attempt,
        max_attempts: max,
        deadline: Instant::now() + budget,
        workflow_dir: shared.workflow_dir.clone(),
        redactor: shared.redactor.clone(),
        sink,
    };

    enum Ran {
        Done(Result<BTreeMap<String, Json>, StepError>),
        TimedOut,
        Stopped(Stop),
    }
    let ran = match resolved {
        Err(e) => Ran::Done(Err(StepError::fatal(format!("cannot resolve parameters: {e}")))),
        Ok(_) if skipped.is_some() => {
            (shared.sink)(&step.id, Report::Log(format!("skipped: {}", skipped.unwrap_or_default())));
            Ran::Done(Ok(BTreeMap::from([(SKIPPED.to_string(), Json::Bool(true))])))
        }
        Ok(_) if budget.is_zero() => Ran::TimedOut,
        Ok(params) => {
            if let Some(why) = *stop.borrow() {
                Ran::Stopped(why)
            } else {
                tokio::select! {
                    r = tokio::time::timeout(budget, kind.execute(&ctx, params)) => match r {
                        Ok(result) => Ran::Done(result),
                        Err(_) => Ran::TimedOut,
                    },
                    why = stop.wait_for(Option::is_some) => Ran::Stopped(why.ok().and_then(|w| *w).unwrap_or(Stop::Interrupt)),
                }
            }
        }
    };

    let now = crate::now_ms();
    let result = match ran {
        Ran::Done(r) => r,
        Ran::TimedOut => {
            let limit = if step_bound { step.timeout } else { step.attempt_timeout };
            let which = if step_bound { "timeout" } else { "attempt_timeout" };
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
            release_held();
            let status = if why == Stop::Cancel { StepStatus::Cancelled } else { StepStatus::Interrupted };
            let writes = vec![Write::StepEnded { step: step.id.clone(), status, at: now, error: None }];
            (shared.observer)(Event::StepInterrupted { step: step.id.clone() });
            let next = StepState { status, attempt, deadline_at: Some(deadline_at), next_attempt_at: None };
            return match store.apply(run, generation, writes).await {
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
            let writes =
                vec![Write::StepSucceeded { step: step.id.clone(), attempt, at: now, outputs: outputs.clone() }];
            if let Err(e) = store.apply(run, generation, writes).await {
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
                if let Err(e) = store.apply(run, generation, writes).await {
                    return store_failure(e);
                }
                failpoint("after_retry_scheduled", &step.id);
                (shared.observer)(Event::StepRetrying { step: step.id.clone(), attempt, delay, error });
                AttemptEnd::Retry(StepState {
                    status: StepStatus::RetryWait,
                    attempt,
                    deadline_at: Some(deadline_at),
                    next_attempt_at: Some(next_at),
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
                if let Err(e) = store.apply(run, generation, writes).await {
                    return store_failure(e);
                }
                (shared.observer)(Event::StepFailed { step: step.id.clone(), attempt, error: error.clone() });
                AttemptEnd::Failed(error)
            }
        }
    }
}

/// The output a skipped step records (and nothing else): its dependents are skipped too.
pub const SKIPPED: &str = "skipped";

/// Whether a step's outputs say it was skipped.
pub fn was_skipped(outputs: &BTreeMap<String, Json>) -> bool {
    outputs.get(SKIPPED) == Some(&Json::Bool(true))
}

/// Why `step` does not run: a step it needs was skipped, or its `when` is false.
fn skip_reason(
    step: &StepDef,
    deps: &BTreeMap<String, BTreeMap<String, Json>>,
    scope: &Scope<'_>,
) -> Result<Option<String>, String> {
    if let Some((dep, _)) = deps.iter().find(|(_, o)| was_skipped(o)) {
        return Ok(Some(format!("it needs `{dep}`, which was skipped")));
    }
    let Some(when) = &step.when else { return Ok(None) };
    let value = scope.resolve(&Json::String(when.clone()))?;
    Ok((!truthy(&value)).then(|| format!("`when: {when}` is {value}")))
}

/// The steps a run with these inputs skips, as far as the inputs tell: a
/// `when` false on inputs alone, and every step that needs a skipped one
/// (`plan`, `cost` and preflight leave them out).
pub fn skipped_by_inputs(wf: &Workflow, inputs: &BTreeMap<String, Json>) -> std::collections::BTreeSet<String> {
    let outputs = BTreeMap::new();
    let (secret, env) = (|_: &str, _: &str| false, |n: &str| std::env::var(n).ok());
    let scope = Scope { run_id: "", run_name: "", inputs, outputs: &outputs, secret: &secret, env: &env };
    let mut skipped = std::collections::BTreeSet::new();
    for wave in wf.waves() {
        for s in wave {
            let off =
                s.when.as_ref().and_then(|w| scope.resolve(&Json::String(w.clone())).ok()).is_some_and(|v| !truthy(&v));
            if off || s.needs.iter().any(|n| skipped.contains(n)) {
                skipped.insert(s.id.clone());
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
    mut rx: mpsc::UnboundedReceiver<(String, Report)>,
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
                    flush(&store, &run, &mut batch).await;
                    continue;
                }
            }
        };
        let Some((step, report)) = item else { break };
        let now = crate::now_ms();
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
            flush(&store, &run, &mut batch).await;
        }
    }
    flush(&store, &run, &mut batch).await;
}

async fn flush<S: Store>(store: &S, run: &str, batch: &mut Vec<(Option<String>, &'static str, String, i64)>) {
    if batch.is_empty() {
        return;
    }
    if let Err(e) = store.append_events(run, std::mem::take(batch)).await {
        tracing::warn!(error = %e, "could not write step logs to the event log");
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
