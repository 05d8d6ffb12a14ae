//! Every error the CLI can end with, rendered in one place with its exit code.

use ca_a2a_flow_engine::store::StoreError;
use ca_a2a_flow_engine::{Diagnostics, EngineError};

/// Exit codes (documented in the README).
pub mod exit {
    pub const OK: i32 = 0;
    /// The run failed or was cancelled.
    pub const RUN_FAILED: i32 = 1;
    /// Invalid workflow, inputs or arguments: nothing was run.
    pub const INVALID: i32 = 2;
    /// The state store could not be opened or written.
    pub const STATE: i32 = 3;
    /// Another live process holds the run.
    pub const HELD: i32 = 4;
    /// `resume` refused: the workflow file changed.
    pub const CHANGED: i32 = 5;
    /// Interrupted by SIGINT/SIGTERM; the run can be resumed.
    pub const INTERRUPTED: i32 = 130;
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("the workflow is not valid")]
    Invalid(Diagnostics),
    #[error("{0}")]
    Inputs(String),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("run {run_id} failed: {error}")]
    RunFailed { run_id: String, error: String, resume: String },
    #[error("run {run_id} was cancelled")]
    Cancelled { run_id: String },
    #[error("run {run_id} was interrupted")]
    Interrupted { run_id: String, resume: String },
    /// An operation outside a run (services, stop, start) failed in AWS.
    #[error("{}", .0.message)]
    Cloud(ca_a2a_flow_engine::StepError),
    #[error("the workflow file changed since run {run_id} started")]
    Changed { run_id: String, file: String, changes: Vec<String> },
    /// Parameters that inputs gave and that their step's kind refuses: nothing ran.
    #[error("parameters refused")]
    Params(Vec<String>),
    /// Checks before a run found what would make it fail: nothing was created.
    #[error("preflight failed")]
    PreflightFailed { failed: Vec<(String, String)> },
    /// Something that cannot be undone, without a terminal to ask on and without `--yes`.
    #[error("{what}")]
    NotConfirmed { what: String, listed: Vec<String> },
}

impl CliError {
    /// Prints the error (what, why, what to do) and returns the exit code.
    pub fn report(&self) -> i32 {
        match self {
            CliError::Invalid(diags) => {
                eprint!("{}", diags.render());
                exit::INVALID
            }
            CliError::Inputs(msg) => {
                eprintln!(
                    "error: {msg}\n  = hint: inputs are declared under `inputs:` in the workflow; pass them with --input NAME=VALUE"
                );
                exit::INVALID
            }
            CliError::Usage(msg) => {
                eprintln!("error: {msg}");
                exit::INVALID
            }
            CliError::Cloud(e) => {
                eprintln!("error: {}", e.message);
                if let Some(hint) = &e.hint {
                    eprintln!("  = hint: {hint}");
                }
                exit::RUN_FAILED
            }
            CliError::Store(e) | CliError::Engine(EngineError::Store(e)) => report_store(e),
            CliError::Engine(e @ EngineError::LeaseLost { run }) => {
                eprintln!("error: {e}");
                eprintln!("  = hint: `ca-a2a-flow status {run}` shows which process holds it now");
                exit::HELD
            }
            CliError::Engine(e) => {
                eprintln!("error: {e}");
                exit::STATE
            }
            CliError::RunFailed { run_id, error, resume } => {
                eprintln!("error: run {run_id} failed: {error}");
                eprintln!(
                    "  = hint: `ca-a2a-flow status {run_id}` and `ca-a2a-flow logs {run_id}` show what happened; fix the cause, then `{resume}`"
                );
                exit::RUN_FAILED
            }
            CliError::Cancelled { run_id } => {
                eprintln!("run {run_id} was cancelled");
                exit::RUN_FAILED
            }
            CliError::Interrupted { run_id, resume } => {
                eprintln!("run {run_id} interrupted; nothing is lost. Resume it with:\n  {resume}");
                exit::INTERRUPTED
            }
            CliError::Params(problems) => {
                for p in problems {
                    eprintln!("error: {p}");
                }
                eprintln!(
                    "  = hint: the value comes from an input (--input NAME=VALUE or its default); pass one the step's kind accepts (`ca-a2a-flow steps describe KIND` shows its parameters)"
                );
                exit::INVALID
            }
            CliError::PreflightFailed { failed } => {
                for (name, message) in failed {
                    eprintln!("error: preflight `{name}` failed: {message}");
                }
                eprintln!("  = nothing was created; fix the cause, or pass --skip-preflight NAME to go on anyway");
                exit::INVALID
            }
            CliError::NotConfirmed { what, listed } => {
                eprintln!("error: {what}");
                for line in listed {
                    eprintln!("  - {line}");
                }
                eprintln!("  = hint: nothing was done; pass --yes to go on, or run on a terminal to be asked");
                exit::INVALID
            }
            CliError::Changed { run_id, file, changes } => {
                eprintln!("error: {file} changed since run {run_id} started; these steps differ:");
                for c in changes {
                    eprintln!("  {c}");
                }
                eprintln!(
                    "  = hint: `ca-a2a-flow resume {run_id} --accept-changes` re-runs them and the steps that depend on them; or restore the file"
                );
                exit::CHANGED
            }
        }
    }
}

fn report_store(e: &StoreError) -> i32 {
    match e {
        StoreError::LeaseHeld { run, holder } => {
            eprintln!("error: run {run} is being driven by another process: {holder}");
            eprintln!(
                "  = hint: wait for it (`ca-a2a-flow status {run}`), stop it (`ca-a2a-flow cancel {run}`), or if that process is dead, resume again once its lease expires"
            );
            exit::HELD
        }
        StoreError::StackHeld { run, stack, by, holder } => {
            // An empty `run`: refused before it was recorded.
            let (this, then) = match run.as_str() {
                "" => ("this run".to_string(), "then try again".to_string()),
                run => (format!("run {run}"), format!("then `ca-a2a-flow resume {run}`")),
            };
            eprintln!("error: {this} cannot start: run {by} is changing stack {stack} now ({holder})");
            eprintln!(
                "  = hint: two runs of one stack never run at once; wait for {by} (`ca-a2a-flow logs -f {by}`), {then}; or queue runs with `ca-a2a-flow submit` and a worker takes them in turn"
            );
            exit::HELD
        }
        StoreError::RunNotFound(run) => {
            eprintln!("error: no run `{run}` in this state store");
            eprintln!("  = hint: `ca-a2a-flow list` shows the runs; pass --state if the run was recorded elsewhere");
            exit::INVALID
        }
        StoreError::Unreachable { .. } => {
            eprintln!("error: {e}");
            eprintln!(
                "  = hint: this process stopped before its lease ran out, so no other process can be driving the run twice; when the store answers again, `ca-a2a-flow resume RUN_ID` goes on where the run stopped (`ca-a2a-flow list` shows it)"
            );
            exit::STATE
        }
        StoreError::Fenced { run, .. } => {
            eprintln!("error: {e}");
            eprintln!("  = hint: `ca-a2a-flow status {run}` shows which process holds it now");
            exit::HELD
        }
        other => {
            eprintln!("error: {other}");
            eprintln!(
                "  = hint: check --state / CA_A2A_FLOW_STATE (a SQLite path or a postgres:// URL) and that the database is reachable"
            );
            exit::STATE
        }
    }
}
