//! `logs`, and `logs -f`: a run's event log, followed without missing a late commit.

#[allow(unused_imports)]
use super::*;

/// One line of `logs`: from the event log (step output, run events) or from
/// the attempts table (each attempt's start and end).
pub(super) struct LogLine {
    at: i64,
    step: Option<String>,
    level: &'static str,
    message: String,
}

/// What happened since the last call: new events, attempts that ended, and
/// attempts that started. `seen` remembers what was already returned.
pub(super) async fn new_log_lines(
    store: &AnyStore,
    run: &RunRecord,
    step: Option<&str>,
    after_event: &mut EventCursor,
    seen: &mut std::collections::HashSet<(String, u32, &'static str, i64)>,
) -> Result<Vec<LogLine>, CliError> {
    let max: BTreeMap<&str, u32> = run.definition.steps.iter().map(|s| (s.id.as_str(), s.retry.max_attempts)).collect();
    let wanted = |id: &str| step.is_none_or(|s| s == id);
    let mut out = Vec::new();
    let mut fresh = |key: (String, u32, &'static str, i64)| seen.insert(key);
    for a in store.attempts(&run.id).await?.iter().filter(|a| wanted(&a.step_id)) {
        let m = max.get(a.step_id.as_str()).copied().unwrap_or(1);
        if fresh((a.step_id.clone(), a.attempt, "start", a.started_at)) {
            let message = format!("attempt {}/{m} started", a.attempt);
            out.push(LogLine { at: a.started_at, step: Some(a.step_id.clone()), level: "info", message });
        }
        let Some(end) = a.finished_at else { continue };
        if !fresh((a.step_id.clone(), a.attempt, "end", a.started_at)) {
            continue;
        }
        let why = a.error.as_ref().map(|e| first_line(&e.message).to_string()).unwrap_or_default();
        let (level, message) = match a.outcome.as_str() {
            "succeeded" => ("info", format!("succeeded on attempt {} in {}", a.attempt, fmt_ms(end - a.started_at))),
            "retry" => (
                "warn",
                format!(
                    "attempt {}/{m} failed: {why}; retrying in {}",
                    a.attempt,
                    fmt_ms(a.retry_delay_ms.unwrap_or(0))
                ),
            ),
            "failed" => ("error", format!("failed on attempt {}/{m}: {why}", a.attempt)),
            other => ("warn", format!("attempt {} {other}", a.attempt)),
        };
        out.push(LogLine { at: end, step: Some(a.step_id.clone()), level, message });
    }
    for s in store.steps(&run.id).await?.iter().filter(|s| s.status == StepStatus::Running && wanted(&s.step_id)) {
        let at = s.attempt_started_at.unwrap_or_default();
        if fresh((s.step_id.clone(), s.attempt, "start", at)) {
            let m = max.get(s.step_id.as_str()).copied().unwrap_or(1);
            let message = format!("attempt {}/{m} started", s.attempt);
            out.push(LogLine { at, step: Some(s.step_id.clone()), level: "info", message });
        }
    }
    let mut from = after_event.watermark;
    loop {
        let batch: Vec<EventRecord> = store.events(&run.id, step, from, 1000).await?;
        for e in &batch {
            from = e.id;
            if !after_event.fresh(e.id) {
                continue;
            }
            let level = match e.level.as_str() {
                "log" => "log",
                "progress" => "progress",
                "warn" => "warn",
                "error" => "error",
                _ => "info",
            };
            out.push(LogLine { at: e.at, step: e.step_id.clone(), level, message: e.message.clone() });
        }
        if batch.len() < 1000 {
            break;
        }
    }
    after_event.advance();
    // Same time: the run's own lines, then attempts starting, output, attempts ending.
    out.sort_by_key(|l| l.at);
    Ok(out)
}

pub(super) async fn logs(store: &AnyStore, run_id: &str, step: Option<&str>, follow: bool) -> Result<(), CliError> {
    let run = store.run(run_id).await?;
    let mut after_event = EventCursor::default();
    let mut seen = std::collections::HashSet::new();
    let print = |lines: Vec<LogLine>| {
        for l in lines {
            let who = l.step.as_deref().unwrap_or("run");
            out!("{} {:<8} {:<20} {}", format_timestamp(l.at), l.level, who, l.message);
        }
    };
    loop {
        print(new_log_lines(store, &run, step, &mut after_event, &mut seen).await?);
        if !follow {
            return Ok(());
        }
        let now = store.run(run_id).await?;
        let still_driven = now.lease.as_ref().is_some_and(|l| l.expires_at > now_ms());
        // A queued run that a worker handed back is driven again by another.
        let handed_back = now.status == RunStatus::Interrupted && !still_driven && now.queued_at.is_none();
        if now.status.is_terminal() || handed_back {
            // One last look for lines written while we read.
            print(new_log_lines(store, &run, step, &mut after_event, &mut seen).await?);
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Where `logs -f` (and the web page's stream) reads the event log from. Event
/// ids are handed out when a line is inserted but become visible when its
/// transaction commits, so on Postgres a smaller id can appear after a larger
/// one: the cursor re-reads from the highest id below which it has seen every
/// line. Ids are one sequence for every run, so most holes are other runs'
/// lines; a hole is passed over once the id above it has been seen for a while
/// (an id of another run, or of a transaction that rolled back), every such
/// hole at once.
#[derive(Default)]
pub(super) struct EventCursor {
    /// Every id up to here was printed, or given up on.
    pub(super) watermark: i64,
    /// Ids printed above the watermark, and when each was first seen.
    above: std::collections::BTreeMap<i64, std::time::Instant>,
}

impl EventCursor {
    const HOLE_PATIENCE: Duration = Duration::from_secs(10);

    /// A cursor for a reader that has every id up to `watermark` already.
    pub(super) fn starting_after(watermark: i64) -> Self {
        Self { watermark: watermark.max(0), ..Self::default() }
    }

    /// Whether `id` is new (and records it).
    pub(super) fn fresh(&mut self, id: i64) -> bool {
        if id <= self.watermark || self.above.contains_key(&id) {
            return false;
        }
        self.above.insert(id, std::time::Instant::now());
        true
    }

    pub(super) fn advance(&mut self) {
        self.advance_at(std::time::Instant::now())
    }

    fn advance_at(&mut self, now: std::time::Instant) {
        while let Some((&next, &seen)) = self.above.first_key_value() {
            // The next id, or a hole below it that has stayed empty long enough.
            if next != self.watermark + 1 && now.duration_since(seen) < Self::HOLE_PATIENCE {
                return;
            }
            self.above.remove(&next);
            self.watermark = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_cursor_passes_every_hole_older_than_its_patience_at_once() {
        // Event ids are one sequence for every run: 2 and 4 are another run's lines.
        let start = std::time::Instant::now();
        let mut cursor = EventCursor::default();
        assert!(cursor.fresh(1) && cursor.fresh(3) && cursor.fresh(5));
        cursor.advance_at(start);
        assert_eq!(cursor.watermark, 1);
        cursor.advance_at(start + EventCursor::HOLE_PATIENCE + Duration::from_secs(1));
        assert_eq!(cursor.watermark, 5, "both holes were older than the patience");
    }

    #[test]
    fn the_event_cursor_waits_for_a_smaller_id_committed_late() {
        let mut cursor = EventCursor::default();
        assert!(cursor.fresh(1) && cursor.fresh(3));
        cursor.advance();
        assert_eq!(cursor.watermark, 1, "2 is not committed yet: the next read starts above 1");
        assert!(!cursor.fresh(3), "3 is not printed twice");
        assert!(cursor.fresh(2), "2, committed late, is printed");
        cursor.advance();
        assert_eq!(cursor.watermark, 3);
    }
}
