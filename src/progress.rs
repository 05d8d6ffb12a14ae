//! What a run shows while it works. On a terminal: a live line per running
//! step (state, attempt, elapsed / deadline, latest progress) under the lines
//! of finished steps. Elsewhere (CI, pipes): one plain line per event.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use ca_a2a_flow_engine::duration::format;
use ca_a2a_flow_engine::{Event, Observer};
use tokio::sync::mpsc;
use tokio::time::Instant;

struct Live {
    kind: String,
    attempt: u32,
    max: u32,
    since: Instant,
    deadline: Duration,
    note: String,
}

/// Starts the renderer; returns the observer for the engine and the task to await.
pub fn start() -> (Observer, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel::<Event>();
    let observer: Observer = std::sync::Arc::new(move |e| {
        let _ = tx.send(e);
    });
    let tty = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
    let task = tokio::spawn(render(rx, tty));
    (observer, task)
}

async fn render(mut rx: mpsc::UnboundedReceiver<Event>, tty: bool) {
    let mut live: BTreeMap<String, Live> = BTreeMap::new();
    let mut drawn = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last_plain_progress: BTreeMap<String, (String, Instant)> = BTreeMap::new();
    loop {
        let event = tokio::select! {
            e = rx.recv() => match e { Some(e) => Some(e), None => break },
            _ = tick.tick(), if tty && !live.is_empty() => None,
        };
        let mut lines: Vec<String> = Vec::new();
        if let Some(event) = event {
            match event {
                Event::RunStarted { run_id, name, steps, resumed } => {
                    lines.push(format!(
                        "{} run {run_id} ({name}, {steps} steps)",
                        if resumed { "resuming" } else { "starting" }
                    ));
                }
                Event::StepStarted { step, kind, attempt, max_attempts, attempt_deadline, .. } => {
                    if !tty {
                        lines.push(format!(
                            "  > {step} ({kind}) attempt {attempt}/{max_attempts}, deadline {}",
                            format(attempt_deadline)
                        ));
                    }
                    live.insert(
                        step,
                        Live {
                            kind,
                            attempt,
                            max: max_attempts,
                            since: Instant::now(),
                            deadline: attempt_deadline,
                            note: String::new(),
                        },
                    );
                }
                Event::StepProgress { step, message } | Event::StepLog { step, line: message } => {
                    if let Some(l) = live.get_mut(&step) {
                        l.note = message.clone();
                    }
                    if !tty {
                        // Plain output: a progress line when it changes, at most every 10 s per step.
                        let show = match last_plain_progress.get(&step) {
                            Some((m, at)) => *m != message && at.elapsed() >= Duration::from_secs(10),
                            None => true,
                        };
                        if show {
                            let elapsed = live
                                .get(&step)
                                .map(|l| format!(" [{} / {}]", format(l.since.elapsed()), format(l.deadline)))
                                .unwrap_or_default();
                            lines.push(format!("  . {step}{elapsed}: {message}"));
                            last_plain_progress.insert(step, (message, Instant::now()));
                        }
                    }
                }
                Event::StepSucceeded { step, attempt, elapsed } => {
                    live.remove(&step);
                    let retries = if attempt > 1 { format!(" (attempt {attempt})") } else { String::new() };
                    lines.push(format!("  ✓ {step} {}{retries}", format(elapsed)));
                }
                Event::StepRetrying { step, attempt, delay, error } => {
                    live.remove(&step);
                    lines.push(format!(
                        "  ↻ {step} attempt {attempt} failed, retrying in {}: {}",
                        format(delay),
                        first_line(&error.message)
                    ));
                }
                Event::StepFailed { step, attempt, error } => {
                    live.remove(&step);
                    lines.push(format!("  ✗ {step} failed on attempt {attempt}: {}", error.message));
                    if let Some(h) = error.hint {
                        lines.push(format!("    hint: {h}"));
                    }
                }
                Event::StepBlocked { step, by } => lines.push(format!("  - {step} not run: `{by}` did not succeed")),
                Event::StepInterrupted { step } => {
                    live.remove(&step);
                    lines.push(format!("  ! {step} interrupted"));
                }
                // The command prints the summary (and the resume command) itself.
                Event::RunFinished { .. } => {}
                Event::Notice(line) => lines.push(line),
            }
        }
        let mut err = std::io::stderr().lock();
        if tty && drawn > 0 {
            let _ = write!(err, "\x1b[{drawn}A\x1b[J");
        }
        for l in &lines {
            let _ = writeln!(err, "{l}");
        }
        drawn = 0;
        if tty {
            let width = terminal_width();
            for (step, l) in &live {
                let line = format!(
                    "  {} {step} ({}) attempt {}/{} {} / {}  {}",
                    spinner(l.since),
                    l.kind,
                    l.attempt,
                    l.max,
                    format(l.since.elapsed()),
                    format(l.deadline),
                    first_line(&l.note)
                );
                let _ = writeln!(err, "{}", truncate(&line, width));
                drawn += 1;
            }
        }
        let _ = err.flush();
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

fn spinner(since: Instant) -> char {
    const FRAMES: [char; 4] = ['|', '/', '-', '\\'];
    FRAMES[(since.elapsed().as_millis() / 250) as usize % 4]
}

fn truncate(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        s.chars().take(width.saturating_sub(1)).collect::<String>() + "…"
    }
}

fn terminal_width() -> usize {
    // SAFETY: TIOCGWINSZ fills a winsize struct we own; on failure it is left zeroed.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    if ok && size.ws_col > 0 { size.ws_col as usize } else { 120 }
}
