//! `submit` and `worker`: runs recorded in a shared store and driven by
//! whichever worker is free, on any machine that reaches the store.

#[allow(unused_imports)]
use super::*;

use std::collections::HashMap;

use ca_a2a_flow_engine::{Observer, stack_of};

/// What `submit` was given.
pub(super) struct Submission {
    pub file: std::path::PathBuf,
    pub inputs: Vec<(String, String)>,
    pub skip_preflight: Vec<String>,
    pub yes: bool,
    pub wait: bool,
}

/// Validates the workflow and its inputs, asks for approval and runs the
/// preflight here (a worker has no terminal to ask on), then records the run
/// as queued and prints its id. `--wait` follows it to its end like `run`.
pub(super) async fn submit(
    submission: Submission,
    state: Option<&str>,
    registry: &Registry,
    ttl: Duration,
) -> Result<(), CliError> {
    let Submission { file, inputs, skip_preflight, yes, wait } = submission;
    let wf = load_file(&file, registry)?;
    let inputs = inputs_of(&wf, &inputs, registry)?;
    if !approved(&wf.steps.iter().collect::<Vec<_>>(), yes)? {
        return Ok(());
    }
    let store = open_store(state).await?;
    preflight_or_stop(&wf, &inputs, registry, &store, skip_preflight).await?;
    let (engine, _renderer) = engine(store.clone(), registry.clone(), 1, ttl);
    let id = engine.create_with(&wf, &inputs, stack_of(&inputs), true).await?;
    out!("{id}");
    eprintln!(
        "queued run {id}; a worker drives it (`ca-a2a-flow worker`); `ca-a2a-flow status {id}` shows where it is"
    );
    if !wait {
        return Ok(());
    }
    logs(&store, &id, None, true).await?;
    let run = store.run(&id).await?;
    match run.status {
        RunStatus::Succeeded => Ok(()),
        RunStatus::Cancelled => Err(CliError::Cancelled { run_id: id }),
        _ => Err(CliError::RunFailed {
            run_id: id.clone(),
            error: run.error.unwrap_or_default(),
            resume: resume_command(&id, state),
        }),
    }
}

/// How long a worker sleeps between looks at the queue when the store cannot
/// tell it that something changed (SQLite), or in case a notice was missed.
const POLL: Duration = Duration::from_millis(250);
const POLL_NOTIFIED: Duration = Duration::from_secs(2);

/// Claims queued runs and drives each as `resume` does, `concurrency` at a
/// time. SIGTERM or SIGINT drains: no new claim; the runs being driven are
/// recorded `interrupted` and their leases given back, for another worker.
pub(super) async fn worker(
    state: Option<&str>,
    registry: Registry,
    concurrency: usize,
    parallelism: usize,
    ttl: Duration,
) -> Result<(), CliError> {
    let store = open_store(state).await?;
    let holder = Holder::this_process();
    let mut notices = store.notices().await?;
    let observer = worker_observer();
    let config = EngineConfig { parallelism, lease_ttl: ttl, holder: holder.clone() };
    let (stop_tx, stop_rx) = watch::channel(None);
    let mut driving: tokio::task::JoinSet<(
        String,
        Result<ca_a2a_flow_engine::Outcome, ca_a2a_flow_engine::EngineError>,
    )> = tokio::task::JoinSet::new();
    let mut signals = Signals::new()?;
    eprintln!(
        "worker {} on {}: up to {concurrency} runs at once; {}",
        holder.owner,
        store.name(),
        if notices.live() { "woken by the store's notices" } else { "looking at the queue every 250ms" }
    );
    let ttl_ms = ttl.as_millis() as i64;
    let mut draining = false;
    let mut last_sweep = std::time::Instant::now() - POLL_NOTIFIED;
    loop {
        if !draining {
            // Not at every wake-up: a claim waits for nothing but the store.
            if last_sweep.elapsed() >= POLL_NOTIFIED {
                free_runs_of_gone_workers(&store).await;
                last_sweep = std::time::Instant::now();
            }
            while driving.len() < concurrency.max(1) {
                let asked = std::time::Instant::now();
                let (run_id, generation) = match store.claim(&holder, ttl_ms, now_ms()).await {
                    Ok(Some(claimed)) => {
                        tracing::debug!(run = %claimed.0, took_ms = asked.elapsed().as_secs_f64() * 1e3, "claimed");
                        claimed
                    }
                    Ok(None) => break,
                    // The store failing for a moment stops no run this worker drives.
                    Err(e) => {
                        eprintln!(
                            "worker: cannot look at the queue ({e}); trying again in {}",
                            fmt_duration(POLL_NOTIFIED)
                        );
                        break;
                    }
                };
                let engine = Engine::new(store.clone(), registry.clone(), config.clone(), observer.clone());
                let stop = stop_rx.clone();
                driving.spawn(async move {
                    let outcome = engine.drive_claimed(&run_id, generation, stop).await;
                    // A drive that could not start (this build lacks a kind the run
                    // uses, say) leaves the lease to expire: another worker may take it.
                    (run_id, outcome)
                });
            }
        }
        if draining && driving.is_empty() {
            eprintln!("worker {}: drained, every run it drove was handed back", holder.owner);
            return Ok(());
        }
        let poll = if notices.live() { POLL_NOTIFIED } else { POLL };
        tokio::select! {
            done = driving.join_next(), if !driving.is_empty() => {
                match done {
                    Some(Ok((run_id, outcome))) => report_end(&run_id, outcome),
                    Some(Err(e)) => eprintln!("worker: a run's driver stopped: {e}; its lease expires and the queue takes it back"),
                    None => {}
                }
            }
            notice = notices.next(), if !draining => {
                tracing::debug!(at = now_ms(), "notice");
                if let Err(e) = notice {
                    eprintln!("worker: the store's notices stopped ({e}); looking at the queue every {}", fmt_duration(POLL));
                }
            }
            _ = tokio::time::sleep(poll), if !draining => {}
            _ = signals.next() => {
                if draining {
                    eprintln!("worker: second signal, quitting at once; the runs it drove are taken over when their leases expire");
                    std::process::exit(exit::INTERRUPTED);
                }
                draining = true;
                eprintln!("worker: draining: no new run; handing back the {} run(s) it drives", driving.len());
                let _ = stop_tx.send(Some(Stop::Interrupt));
            }
        }
    }
}

/// Runs held by a worker of this machine whose process is gone are freed now,
/// instead of at their lease's expiry.
async fn free_runs_of_gone_workers(store: &AnyStore) {
    let Ok(held) = store.held_runs().await else { return };
    for run in held {
        if let Some(lease) = run.lease.filter(|l| l.expires_at > now_ms() && l.holder_is_gone()) {
            let _ = store.break_lease(&run.id, &lease.owner).await;
        }
    }
}

fn report_end(run_id: &str, outcome: Result<ca_a2a_flow_engine::Outcome, ca_a2a_flow_engine::EngineError>) {
    match outcome {
        Ok(o) => match o.error {
            Some(e) => eprintln!("run {run_id}: {} ({})", o.status, first_line(&e)),
            None => eprintln!("run {run_id}: {}", o.status),
        },
        // Another process holds it or its stack: the queue keeps it.
        Err(e) => eprintln!("run {run_id}: not driven here: {e}"),
    }
}

/// One line per run that starts and per step that fails: a worker drives many
/// runs, whose steps' logs are in the store (`logs RUN`).
fn worker_observer() -> Observer {
    std::sync::Arc::new(|event| match event {
        Event::RunStarted { run_id, name, steps, resumed } => {
            eprintln!("run {run_id}: {} ({name}, {steps} steps)", if resumed { "resuming" } else { "starting" })
        }
        Event::StepFailed { step, attempt, error } => {
            eprintln!("  step {step} failed on attempt {attempt}: {}", first_line(&error.message))
        }
        Event::Notice(line) => eprintln!("  {line}"),
        _ => {}
    })
}

/// SIGINT and SIGTERM, as a stream.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self, CliError> {
        use tokio::signal::unix::{SignalKind, signal};
        let int =
            signal(SignalKind::interrupt()).map_err(|e| CliError::Usage(format!("cannot listen for SIGINT: {e}")))?;
        let term =
            signal(SignalKind::terminate()).map_err(|e| CliError::Usage(format!("cannot listen for SIGTERM: {e}")))?;
        Ok(Self { int, term })
    }

    async fn next(&mut self) {
        tokio::select! { _ = self.int.recv() => {}, _ = self.term.recv() => {} }
    }
}

/// Who a queued run waits for, said by `status`: the run that drives its
/// stack now, an earlier run of its stack, or a free worker.
pub(super) async fn waiting_for(store: &AnyStore, run: &RunRecord) -> Result<Option<String>, CliError> {
    let driven = run.lease.as_ref().is_some_and(|l| l.expires_at > now_ms());
    if run.queued_at.is_none() || driven || run.status.is_terminal() {
        return Ok(None);
    }
    if let Some(stack) = &run.stack {
        let held = store.held_runs().await?;
        if let Some(other) = held.iter().find(|o| {
            o.id != run.id
                && o.stack.as_ref() == Some(stack)
                && o.lease.as_ref().is_some_and(|l| l.expires_at > now_ms())
        }) {
            let by = other.lease.as_ref().map(|l| l.to_string()).unwrap_or_default();
            return Ok(Some(format!("run {} changes stack {stack} now ({by}); this run starts after it", other.id)));
        }
        let earlier: HashMap<String, i64> = store
            .list_runs(&RunsQuery::newest(i64::MAX))
            .await?
            .into_iter()
            .filter(|o| o.id != run.id && o.stack.as_ref() == Some(stack) && !o.status.is_terminal())
            .filter_map(|o| Some((o.id, o.queued_at?)))
            .filter(|(id, at)| (*at, id.as_str()) < (run.queued_at.unwrap_or_default(), run.id.as_str()))
            .collect();
        if let Some((id, _)) = earlier.iter().min_by_key(|(id, at)| (**at, (*id).clone())) {
            return Ok(Some(format!("run {id} of stack {stack} was queued before it and goes first")));
        }
    }
    Ok(Some(format!(
        "queued {} ago; waiting for a free worker (`ca-a2a-flow worker`)",
        ago(run.queued_at.unwrap_or(run.created_at))
    )))
}
