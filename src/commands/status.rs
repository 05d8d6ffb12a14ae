//! `status` and `list`: a run and its steps, the runs of a store.

#[allow(unused_imports)]
use super::*;

pub(super) fn step_duration(s: &StepRecord) -> Option<i64> {
    let start = s.first_started_at?;
    Some(s.finished_at.unwrap_or_else(now_ms) - start)
}

pub(super) async fn status(store: &AnyStore, run_id: &str, output: Output) -> Result<(), CliError> {
    let run = store.run(run_id).await?;
    let steps = store.steps(run_id).await?;
    // Attempts are shown by the JSON view only.
    let attempts = if output == Output::Json { store.attempts(run_id).await? } else { Vec::new() };
    let mut attempts_of: std::collections::HashMap<&str, Vec<&ca_a2a_flow_engine::store::AttemptRecord>> =
        std::collections::HashMap::new();
    for a in &attempts {
        attempts_of.entry(a.step_id.as_str()).or_default().push(a);
    }
    let max_attempts: BTreeMap<&str, u32> =
        run.definition.steps.iter().map(|s| (s.id.as_str(), s.retry.max_attempts)).collect();
    // What each running step reported last: the state of what it waits for.
    let mut progress: BTreeMap<&str, String> = BTreeMap::new();
    for s in steps.iter().filter(|s| s.status == StepStatus::Running) {
        if let Some(p) = latest_progress(store, run_id, &s.step_id).await? {
            progress.insert(s.step_id.as_str(), p);
        }
    }
    let waiting = waiting_for(store, &run).await?;
    if output == Output::Json {
        let doc = json!({
            "run": {
                "id": run.id,
                "workflow": run.workflow_name,
                "file": run.workflow_file,
                "status": shown_status(&run),
                "stack": run.stack,
                "queued_at": run.queued_at,
                "waiting_for": waiting,
                "error": run.error,
                "created_at": run.created_at,
                "finished_at": run.finished_at,
                "inputs": run.inputs,
                "lease": run.lease,
            },
            "steps": steps.iter().map(|s| json!({
                "id": s.step_id,
                "kind": s.kind,
                "status": s.status,
                "attempt": s.attempt,
                "max_attempts": max_attempts.get(s.step_id.as_str()),
                "started_at": s.first_started_at,
                "finished_at": s.finished_at,
                "duration_ms": step_duration(s),
                "deadline_at": s.deadline_at,
                "next_attempt_at": s.next_attempt_at,
                "progress": progress.get(s.step_id.as_str()),
                "outputs": s.outputs,
                "error": s.error,
                "attempts": attempts_of.get(s.step_id.as_str()).into_iter().flatten().map(|a| json!({
                    "attempt": a.attempt,
                    "outcome": a.outcome,
                    "started_at": a.started_at,
                    "finished_at": a.finished_at,
                    "retry_delay_ms": a.retry_delay_ms,
                    "error": a.error.as_ref().map(|e| &e.message),
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        });
        out!("{}", serde_json::to_string_pretty(&doc).expect("json"));
        return Ok(());
    }
    let took = run.finished_at.unwrap_or_else(now_ms) - run.created_at;
    out!("run      {}", run.id);
    out!("workflow {} ({})", run.workflow_name, run.workflow_file);
    out!("status   {}", shown_status(&run));
    out!("started  {} ({} ago, ran {})", format_timestamp(run.created_at), ago(run.created_at), fmt_ms(took));
    if let Some(l) = &run.lease {
        if l.expires_at > now_ms() && !run.status.is_terminal() {
            out!("driver   {l}");
        }
    }
    if let Some(w) = &waiting {
        out!("waits    {w}");
    }
    if let Some(e) = &run.error {
        out!("error    {e}");
    }
    out!();
    let id_w = steps.iter().map(|s| s.step_id.len()).max().unwrap_or(0).max(4);
    let kind_w = steps.iter().map(|s| s.kind.len()).max().unwrap_or(0).max(4);
    // The table is written at once: stdout writes each line by itself.
    let mut table = format!(
        "{:<id_w$} {:<kind_w$} {:<12} {:>8} {:>9}  {}\n",
        "STEP", "KIND", "STATE", "ATTEMPTS", "DURATION", "NOTE"
    );
    for s in &steps {
        let max = max_attempts.get(s.step_id.as_str()).copied().unwrap_or(1);
        let note = match s.status {
            StepStatus::Running => {
                let deadline = s.deadline_at.map(|d| format!("deadline in {}", fmt_ms(d - now_ms())));
                match (progress.get(s.step_id.as_str()), deadline) {
                    (Some(p), Some(d)) => format!("{p} · step {d}"),
                    (Some(p), None) => p.clone(),
                    (None, Some(d)) => d,
                    (None, None) => String::new(),
                }
            }
            StepStatus::RetryWait => {
                let next = s.next_attempt_at.map(|t| fmt_ms(t - now_ms())).unwrap_or_default();
                format!(
                    "next attempt in {next}; last error: {}",
                    s.error.as_ref().map(|e| first_line(&e.message)).unwrap_or("")
                )
            }
            _ if s.outputs.as_ref().is_some_and(ca_a2a_flow_engine::was_skipped) => {
                "skipped (`when` is false, or a step it needs was skipped)".to_string()
            }
            _ => s.error.as_ref().map(|e| first_line(&e.message).to_string()).unwrap_or_default(),
        };
        let state =
            if s.outputs.as_ref().is_some_and(ca_a2a_flow_engine::was_skipped) { "skipped" } else { s.status.as_str() };
        use std::fmt::Write as _;
        let _ = writeln!(
            table,
            "{:<id_w$} {:<kind_w$} {:<12} {:>8} {:>9}  {}",
            s.step_id,
            s.kind,
            state,
            format!("{}/{}", s.attempt, max),
            step_duration(s).map(fmt_ms).unwrap_or_default(),
            note
        );
    }
    out!("{}", table.trim_end_matches('\n'));
    Ok(())
}

/// A run's state as shown: `queued` for a submitted run no worker took yet.
pub(super) fn shown_status(run: &RunRecord) -> &'static str {
    match run.status {
        RunStatus::Pending if run.queued_at.is_some() => "queued",
        other => other.as_str(),
    }
}

/// The last progress a step reported ("NAT gateway nat-0ab…: pending 1m02s / 10m").
pub(super) async fn latest_progress(store: &AnyStore, run_id: &str, step: &str) -> Result<Option<String>, CliError> {
    let mut after = 0;
    let mut last = None;
    loop {
        let page = store.events(run_id, Some(step), after, 500).await?;
        let Some(end) = page.last().map(|e| e.id) else { break };
        if let Some(p) = page.iter().rev().find(|e| e.level == "progress") {
            last = Some(p.message.clone());
        }
        after = end;
        if page.len() < 500 {
            break;
        }
    }
    Ok(last)
}

pub(super) async fn list(store: &AnyStore, output: Output, limit: i64) -> Result<(), CliError> {
    let mut runs = store.list_runs(&RunsQuery::newest(limit.saturating_add(1))).await?;
    // Never cut silently: say that older runs exist.
    let more = runs.len() as i64 > limit;
    runs.truncate(limit.max(0) as usize);
    if more {
        eprintln!("showing the newest {limit} runs; older ones exist (`--limit N` shows more)");
    }
    if output == Output::Json {
        let doc: Vec<_> = runs
            .iter()
            .map(|r| {
                json!({
                    "id": r.id,
                    "workflow": r.workflow_name,
                    "file": r.workflow_file,
                    "status": shown_status(r),
                    "stack": r.stack,
                    "error": r.error,
                    "created_at": r.created_at,
                    "finished_at": r.finished_at,
                })
            })
            .collect();
        out!("{}", serde_json::to_string_pretty(&doc).expect("json"));
        return Ok(());
    }
    if runs.is_empty() {
        eprintln!("no runs yet; start one with `ca-a2a-flow run workflows/demo.yaml`");
        return Ok(());
    }
    out!("{:<26} {:<16} {:<12} {:<21} {:>9}  {}", "RUN", "WORKFLOW", "STATUS", "STARTED", "DURATION", "ERROR");
    for r in runs {
        let took = r.finished_at.unwrap_or_else(now_ms) - r.created_at;
        out!(
            "{:<26} {:<16} {:<12} {:<21} {:>9}  {}",
            r.id,
            r.workflow_name,
            shown_status(&r),
            format_timestamp(r.created_at),
            fmt_ms(took),
            r.error.as_deref().map(first_line).unwrap_or("")
        );
    }
    Ok(())
}
