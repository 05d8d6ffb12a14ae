//! Running a child program for a step: its output streamed line by line to the
//! event log (the last lines kept for the error message). Nothing it starts
//! outlives its attempt:
//! - every process of the attempt carries the attempt's token in its
//!   environment (`CA_A2A_FLOW_ATTEMPT`), inherited through forks, subshells,
//!   pipelines and `setsid`; when the program exits, or the attempt is cut,
//!   its process group and every process with the token are killed;
//! - if the engine itself dies (SIGKILL included), its guard, a small process
//!   started with the first program, sees its pipe from the engine close and
//!   kills every process that carries the engine's token (`CA_A2A_FLOW_GUARD`);
//! - the next `resume` kills whatever still carries the interrupted attempt's
//!   token before the step runs again (the engine's `orphans` module).

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use ca_a2a_flow_engine::orphans::{ATTEMPT_ENV, kill_tagged};
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
    let token = ctx.attempt_token();
    cmd.env(ATTEMPT_ENV, &token);
    if let Some(guard) = guard_token() {
        cmd.env(GUARD_ENV, guard);
    }
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
    let group = GroupKill { pgid: child.id().map(|pid| pid as i32), token };
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
    // Output is read until the program exits; then what it left running goes
    // (a background process holding its output open included), and what is
    // left in the pipes is read, for 5 s at most.
    let (mut out_open, mut err_open) = (true, true);
    let mut group = Some(group);
    let mut status = None;
    let mut drain_until: Option<tokio::time::Instant> = None;
    while status.is_none() || out_open || err_open {
        let deadline = drain_until;
        let drained = async move {
            match deadline {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            line = stdout.next_line(), if out_open => match line {
                Ok(Some(l)) => push(l),
                _ => out_open = false,
            },
            line = stderr.next_line(), if err_open => match line {
                Ok(Some(l)) => push(l),
                _ => err_open = false,
            },
            done = child.wait(), if status.is_none() => {
                status = Some(done.map_err(|e| StepError::retryable(format!("lost track of {what}: {e}")))?);
                if let Some(group) = group.take() {
                    tokio::task::spawn_blocking(move || drop(group)).await.ok();
                }
                drain_until = Some(tokio::time::Instant::now() + Duration::from_secs(5));
            }
            _ = drained => break,
        }
    }
    let status = status.expect("the loop ends once the program exited");
    Ok(Finished { code: status.code(), tail })
}

/// Kills the program's process group, and every process carrying the
/// attempt's token, when the program ends or the attempt is cut.
struct GroupKill {
    pgid: Option<i32>,
    token: String,
}

impl Drop for GroupKill {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid {
            // SAFETY: kill has no memory-safety preconditions; a group that is
            // already gone makes it return ESRCH, which is fine.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
        kill_tagged(ATTEMPT_ENV, &self.token);
    }
}

/// The environment variable that marks every process started by this engine.
pub const GUARD_ENV: &str = "CA_A2A_FLOW_GUARD";

/// Waits for the engine's end (its stdin, a pipe only the engine holds, reaches
/// EOF when the engine exits or is killed), then kills every process that
/// carries the engine's token, in rounds, stopping each first so none forks
/// away. `$1` is the token: nothing from a workflow is in this script.
const GUARD_SCRIPT: &str = r#"trap '' INT TERM HUP QUIT
cat >/dev/null
i=0
while [ "$i" -lt 5 ]; do
  pids=$(grep -lzxF -- "CA_A2A_FLOW_GUARD=$1" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3)
  [ -z "$pids" ] && exit 0
  kill -STOP $pids 2>/dev/null
  kill -KILL $pids 2>/dev/null
  i=$((i + 1))
done
"#;

/// This engine's token, its guard started on first use; `None` when no guard
/// could be started (no `sh`): the attempt's own cleanup and the next resume's
/// still run.
fn guard_token() -> Option<&'static str> {
    static GUARD: OnceLock<Option<(String, std::process::ChildStdin)>> = OnceLock::new();
    GUARD
        .get_or_init(|| {
            use std::os::unix::process::CommandExt;
            let token = format!("{}.{:08x}", std::process::id(), fastrand::u32(..));
            let spawned = std::process::Command::new("sh")
                .args(["-c", GUARD_SCRIPT, "ca-a2a-flow-guard", &token])
                .env_remove(ATTEMPT_ENV)
                .env_remove(GUARD_ENV)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                // Its own group: a Ctrl-C at the terminal does not reach it.
                .process_group(0)
                .spawn();
            match spawned {
                // The pipe's write end stays open for the engine's lifetime;
                // the child is never waited for (it outlives us by design).
                Ok(mut child) => child.stdin.take().map(|stdin| (token, stdin)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start the process guard; processes of a killed engine are cleaned up on resume");
                    None
                }
            }
        })
        .as_ref()
        .map(|(token, _)| token.as_str())
}
