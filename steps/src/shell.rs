//! `shell`: runs a command with `sh -c`. Its output goes to the event log (the
//! tail is shown on failure); `key=value` lines it writes to the file named by
//! `$FLOW_OUTPUT` become the step's outputs.
//!
//! A template in `run` is never pasted into the command: its value reaches the
//! shell as an environment variable the command refers to, quoted
//! (`FLOW_VALUE_1`, …), so no input or output can run as code.
//!
//! `$FLOW_OUTPUT` is a file in the attempt's private directory (0700). Nothing
//! the command starts outlives the attempt (see `process`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use ca_a2a_flow_engine::{KindDoc, OutputSpec, Outputs, ParamProblem, Parameters, Step, StepContext, StepError};
use serde::Deserialize;
use serde_json::Value as Json;
use tokio::process::Command;

fn default_shell() -> String {
    "sh".into()
}
fn default_tail() -> usize {
    20
}

#[derive(Debug, Deserialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "shell", step = Shell)]
pub struct Params {
    /// command line, run with `sh -c` (required)
    pub run: String,
    /// extra environment variables
    #[serde(default)]
    pub env: BTreeMap<String, Json>,
    /// working directory, relative to the workflow file
    pub workdir: Option<String>,
    /// shell to run the command with (default sh)
    #[serde(default = "default_shell")]
    pub shell: String,
    /// output keys the command must write to $FLOW_OUTPUT
    #[serde(default)]
    pub outputs: Vec<String>,
    /// exit codes not worth retrying (126 and 127 always are)
    #[serde(default)]
    pub fatal_exit_codes: Vec<i32>,
    /// output lines shown on failure (default 20)
    #[serde(default = "default_tail")]
    pub tail_lines: usize,
}

impl Step for Shell {
    const SCRIPTS: &'static [&'static str] = &["run"];

    fn outputs(&self, params: &Json) -> OutputSpec {
        let declared = params
            .get("outputs")
            .and_then(Json::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
            .unwrap_or_default();
        OutputSpec::Declared(declared)
    }

    const DOC: KindDoc = KindDoc {
        summary: "Runs a shell command; `key=value` lines written to $FLOW_OUTPUT become outputs.",
        outputs: &[("<declared>", "each key listed in `outputs`")],
        example: "- id: tag\n  uses: shell\n  with:\n    run: echo \"tag=$(git rev-parse --short HEAD)\" >> \"$FLOW_OUTPUT\"\n    outputs: [tag]\n",
    };

    fn problems(&self, p: &Params) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        if p.run.trim().is_empty() {
            problems.push(ParamProblem::at(&["run"], "the command is empty"));
        }
        for (i, key) in p.outputs.iter().enumerate() {
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                problems.push(ParamProblem::at(
                    &["outputs", &i.to_string()],
                    format!("`{key}` is not a valid output name"),
                ));
            }
        }
        problems
    }

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let scratch = ctx.scratch_dir().map_err(|e| {
            StepError::fatal(format!("cannot create the attempt's private directory: {e}"))
                .with_hint("check that the temporary directory ($TMPDIR or /tmp) is writable")
        })?;
        let output_file = scratch.join("output");
        create_private_file(&output_file)
            .map_err(|e| StepError::fatal(format!("cannot create {}: {e}", output_file.display())))?;
        let _cleanup = RemoveOnDrop(output_file.clone());

        let workdir = match &p.workdir {
            Some(dir) => ctx.workflow_dir.join(dir),
            None => ctx.workflow_dir.clone(),
        };
        if !workdir.is_dir() {
            return Err(StepError::fatal(format!("the working directory {} does not exist", workdir.display()))
                .with_hint("`workdir` is relative to the workflow file's directory"));
        }
        let mut cmd = Command::new(&p.shell);
        cmd.arg("-c")
            .arg(&p.run)
            .current_dir(&workdir)
            .env("FLOW_OUTPUT", &output_file)
            .env("FLOW_RUN_ID", &ctx.run_id)
            .env("FLOW_STEP_ID", &ctx.step_id)
            .env("FLOW_ATTEMPT", ctx.attempt.to_string())
            .env("FLOW_PID", std::process::id().to_string());
        cmd.envs(ctx.bound.iter().map(|(k, v)| (k, v)));
        for (k, v) in &p.env {
            cmd.env(
                k,
                match v {
                    Json::String(s) => s.clone(),
                    other => other.to_string(),
                },
            );
        }
        let finished = crate::process::run(ctx, &format!("`{}`", p.shell), cmd, None, p.tail_lines).await?;
        if finished.code != Some(0) {
            // Secret values it wrote before failing are masked in its error and logs.
            declare_secrets(ctx, &output_file);
        }
        let shown = finished.shown();
        match finished.code {
            Some(0) => read_outputs(&output_file, &p.outputs),
            Some(code) => {
                let fatal = code == 126 || code == 127 || p.fatal_exit_codes.contains(&code);
                let message = format!("command exited with status {code}; last output:\n{shown}");
                let error = if fatal { StepError::fatal(message) } else { StepError::retryable(message) };
                Err(error.with_hint(match code {
                    127 => "the command was not found: check its spelling and PATH".to_string(),
                    126 => "the command is not executable: check its permissions".to_string(),
                    _ => format!("run `ca-a2a-flow logs {} --step {}` for the whole output", ctx.run_id, ctx.step_id),
                }))
            }
            None => Err(StepError::retryable(format!("command was killed by a signal; last output:\n{shown}"))),
        }
    }
}

/// Creates an empty file only its owner can read (0600).
fn create_private_file(path: &PathBuf) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map(|_| ())
}

/// The values of the step's secret outputs that a failed command wrote.
fn declare_secrets(ctx: &StepContext, path: &PathBuf) {
    let Ok(text) = std::fs::read_to_string(path) else { return };
    for (key, value) in text.lines().filter_map(|l| l.trim().split_once('=')) {
        if ctx.secret_outputs.iter().any(|s| s == key.trim()) {
            ctx.secret(value);
        }
    }
}

/// Reads `key=value` lines; every declared key must be present.
fn read_outputs(path: &PathBuf, declared: &[String]) -> Result<Outputs, StepError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| StepError::fatal(format!("cannot read $FLOW_OUTPUT ({}): {e}", path.display())))?;
    let mut outputs = Outputs::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        match line.split_once('=') {
            Some((k, v)) => {
                outputs.insert(k.trim().to_string(), Json::String(v.to_string()));
            }
            None => {
                return Err(StepError::fatal(format!("$FLOW_OUTPUT line `{line}` is not key=value")));
            }
        }
    }
    let missing: Vec<&str> = declared.iter().filter(|k| !outputs.contains_key(*k)).map(String::as_str).collect();
    if !missing.is_empty() {
        return Err(StepError::fatal(format!(
            "the command succeeded but did not write output(s) {} to $FLOW_OUTPUT",
            missing.join(", ")
        ))
        .with_hint("write lines like `key=value` to the file named by $FLOW_OUTPUT"));
    }
    Ok(outputs)
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outputs_file(name: &str, text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("ca-a2a-flow-shell-test-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn key_value_lines_become_outputs_and_comments_are_skipped() {
        let path = outputs_file("kv", "# a comment\nvpc_id=vpc-123\n\nurl=http://x/?a=b\n");
        let out = read_outputs(&path, &["vpc_id".into()]).unwrap();
        assert_eq!(out["vpc_id"], "vpc-123");
        assert_eq!(out["url"], "http://x/?a=b", "only the first `=` splits");
    }

    #[test]
    fn a_declared_output_that_was_not_written_fails_the_step() {
        let path = outputs_file("missing", "a=1\n");
        let err = read_outputs(&path, &["a".into(), "b".into()]).unwrap_err();
        assert_eq!(err.class, ca_a2a_flow_engine::ErrorClass::Fatal);
        assert!(err.message.contains("did not write output(s) b"), "{}", err.message);
    }

    #[test]
    fn a_line_without_equals_is_refused() {
        let path = outputs_file("noeq", "just text\n");
        assert!(read_outputs(&path, &[]).unwrap_err().message.contains("is not key=value"));
    }

    #[test]
    fn output_names_and_an_empty_command_are_checked_before_running() {
        let params: Params =
            serde_json::from_value(serde_json::json!({"run": " ", "outputs": ["ok", "not ok"]})).unwrap();
        let problems = Shell.problems(&params);
        assert_eq!(problems.len(), 2);
        assert_eq!(problems[1].path, ["outputs", "1"]);
    }
}
