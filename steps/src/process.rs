//! Running a child program for a step: its output streamed line by line to the
//! event log (the last lines kept for the error message), in its own process
//! group killed whole when the attempt ends or is cut, and dying with the
//! engine if the engine is killed, so no orphan keeps running after a crash.

use std::collections::VecDeque;
use std::process::Stdio;

use ca_a2a_flow_engine::{StepContext, StepError};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// How a program ended, with its last output lines (already redacted).
pub struct Finished {
    /// The exit code; `None` when a signal killed it.
    pub code: Option<i32>,
    pub tail: VecDeque<String>,
}

impl Finished {
    /// The kept lines, indented for an error message, or "(no output)".
    pub fn shown(&self) -> String {
        shown(self.tail.iter().map(String::as_str))
    }
}

/// Output lines as an error message shows them (`  | line`), or "(no output)".
pub fn shown<'a>(lines: impl IntoIterator<Item = &'a str>) -> String {
    let shown: Vec<String> = lines.into_iter().map(|l| format!("  | {l}")).collect();
    if shown.is_empty() { "(no output)".to_string() } else { shown.join("\n") }
}

/// Runs `cmd` (its program, arguments, directory and environment already set),
/// writing `stdin` to it (a password, for example: never an argument), sending
/// every line it prints to the step's log and keeping the last `tail_lines`.
/// `what` names it in errors ("podman build").
pub async fn run(
    ctx: &StepContext,
    what: &str,
    mut cmd: Command,
    stdin: Option<&[u8]>,
    tail_lines: usize,
) -> Result<Finished, StepError> {
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    // SAFETY: prctl is async-signal-safe; it only sets this child's parent-death signal.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        StepError::fatal(format!("cannot start {what}: {e}"))
            .with_hint("check that the program is installed and on PATH")
    })?;
    let group = GroupKill(child.id().map(|pid| pid as i32));
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().expect("piped");
        pipe.write_all(bytes).await.map_err(|e| StepError::retryable(format!("cannot write to {what}: {e}")))?;
        drop(pipe);
    }

    let mut stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut stderr = BufReader::new(child.stderr.take().expect("piped")).lines();
    let mut tail: VecDeque<String> = VecDeque::new();
    let mut push = |line: String| {
        let line = ctx.redactor.redact(&line);
        ctx.log(&line);
        if tail.len() == tail_lines.max(1) {
            tail.pop_front();
        }
        tail.push_back(line);
    };
    let (mut out_open, mut err_open) = (true, true);
    while out_open || err_open {
        tokio::select! {
            line = stdout.next_line(), if out_open => match line {
                Ok(Some(l)) => push(l),
                _ => out_open = false,
            },
            line = stderr.next_line(), if err_open => match line {
                Ok(Some(l)) => push(l),
                _ => err_open = false,
            },
        }
    }
    let status = child.wait().await.map_err(|e| StepError::retryable(format!("lost track of {what}: {e}")))?;
    drop(group);
    Ok(Finished { code: status.code(), tail })
}

/// Kills the program's whole process group when the attempt ends or is cut.
struct GroupKill(Option<i32>);

impl Drop for GroupKill {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            // SAFETY: kill has no memory-safety preconditions; a group that is
            // already gone makes it return ESRCH, which is fine.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}
