//! `aws.ssm.run_command`: runs a shell script on an instance through SSM Run
//! Command (`AWS-RunShellScript`), polls it with a deadline and progress, and
//! records its exit code and the tail of its output; a failing command fails
//! the step with them, a command past its deadline is cancelled and fails
//! saying so.
//!
//! The command is sent with a comment naming the run, the step and a hash of
//! the script. Before sending, the step looks for a command with that comment
//! on the instance: a resumed attempt follows the command the killed attempt
//! sent instead of running the script a second time.

use std::time::Duration;

use aws_sdk_ssm::types::CommandInvocationStatus as S;
use ca_a2a_flow_engine::duration::{format as fmt, parse as parse_duration};
use ca_a2a_flow_engine::{KindDoc, Outputs, ParamProblem, Parameters, Step, StepContext, StepError, outputs};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::AwsResult;
use super::wait::{self, Poll};

fn default_timeout() -> String {
    "10m".into()
}
fn default_tail() -> usize {
    20
}

#[derive(Debug, Deserialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "aws.ssm.run_command", step = RunCommand)]
pub struct Params {
    #[param(doc = super::REGION)]
    pub region: Option<String>,
    /// the instance, registered with SSM (required)
    pub instance_id: String,
    /// the script, run with sh (required)
    pub run: String,
    /// where it runs on the instance
    pub working_directory: Option<String>,
    /// how long it may run before it is cancelled (default 10m)
    #[param(ty = "duration")]
    #[serde(default = "default_timeout")]
    pub timeout: String,
    /// output lines kept and shown on failure (default 20)
    #[serde(default = "default_tail")]
    pub tail_lines: usize,
}

impl Step for RunCommand {
    const SCRIPTS: &'static [&'static str] = &["run"];

    const DOC: KindDoc = KindDoc {
        summary: "Runs a script on an instance through SSM Run Command; records exit code and output tail, fails with them.",
        outputs: &[
            ("command_id", "the SSM command id"),
            ("exit_code", "the script's exit status"),
            ("output_tail", "the last lines of its standard output and error"),
        ],
        example: "- id: podman-version\n  uses: aws.ssm.run_command\n  needs: [builder-online]\n  with:\n    instance_id: \"${{ steps.builder.outputs.instance_id }}\"\n    run: podman --version\n",
    };

    fn problems(&self, p: &Params) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        if p.run.trim().is_empty() {
            problems.push(ParamProblem::at(&["run"], "the script is empty"));
        }
        if !p.timeout.contains("${{") && parse_duration(&p.timeout).is_err() {
            problems.push(ParamProblem::at(&["timeout"], format!("`{}` is not a duration like 10m", p.timeout)));
        }
        problems
    }

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let script = with_bound_values(&ctx.bound, &p.run);
        let ran = run(
            ctx,
            Request {
                region: p.region.as_deref(),
                instance_id: &p.instance_id,
                commands: &script,
                working_directory: p.working_directory.as_deref(),
                tail_lines: p.tail_lines,
                timeout: parse_duration(&p.timeout).map_err(StepError::fatal)?,
            },
        )
        .await?;
        Ok(outputs! { command_id: ran.command_id, exit_code: ran.exit_code, output_tail: ran.shown })
    }
}

/// The script with the values of its templates set first, each single-quoted
/// (the script refers to them as `"${FLOW_VALUE_n}"`, never as code).
fn with_bound_values(bound: &[(String, String)], script: &str) -> String {
    let mut out: String =
        bound.iter().map(|(name, value)| format!("{name}={}\n", crate::image_build_push::shell_quote(value))).collect();
    out.push_str(script);
    out
}

/// A script to run on an instance.
pub struct Request<'a> {
    pub region: Option<&'a str>,
    pub instance_id: &'a str,
    pub commands: &'a str,
    pub working_directory: Option<&'a str>,
    pub tail_lines: usize,
    pub timeout: Duration,
}

/// A command that succeeded.
pub struct Ran {
    pub command_id: String,
    pub exit_code: i32,
    /// Standard output then standard error, whole (as SSM returns it: up to 24,000 characters).
    pub output: String,
    /// The last lines, for outputs and messages.
    pub shown: String,
}

/// Runs `req` on its instance and waits for it; any end but success is an error
/// carrying the exit code and the output's tail.
pub async fn run(ctx: &StepContext, req: Request<'_>) -> Result<Ran, StepError> {
    let ssm = aws_sdk_ssm::Client::new(&super::config(req.region).await);
    let comment = comment(ctx, &req);
    let command_id = match sent_before(&ssm, req.instance_id, &comment).await? {
        Some(id) => {
            ctx.log(format!("following command {id} on {}, sent by an earlier attempt", req.instance_id));
            id
        }
        None => {
            let mut send = ssm
                .send_command()
                .document_name("AWS-RunShellScript")
                .instance_ids(req.instance_id)
                .comment(&comment)
                .parameters("commands", vec![req.commands.to_string()])
                .parameters("executionTimeout", vec![req.timeout.as_secs().max(1).to_string()]);
            if let Some(dir) = req.working_directory {
                send = send.parameters("workingDirectory", vec![dir.to_string()]);
            }
            // No retry inside the SDK: SendCommand is not idempotent, and a retry after an answer
            // lost on the way would run the script twice. The step's next attempt looks first.
            let no_retry = aws_sdk_ssm::config::Builder::default()
                .retry_config(aws_sdk_ssm::config::retry::RetryConfig::disabled());
            let sent = send.customize().config_override(no_retry).send().await.or_step_error("ssm:SendCommand")?;
            let id = sent.command().and_then(|c| c.command_id()).unwrap_or_default().to_string();
            ctx.log(format!("sent command {id} to {}", req.instance_id));
            id
        }
    };

    let what = format!("command {command_id} on {}", req.instance_id);
    let limit = req.timeout.min(ctx.remaining());
    let waited = wait::until(ctx, &what, limit, wait::interval(Duration::from_secs(5)), || async {
        let got = ssm
            .get_command_invocation()
            .command_id(&command_id)
            .instance_id(req.instance_id)
            .send()
            .await
            .or_absent("ssm:GetCommandInvocation", &["InvocationDoesNotExist"])?;
        let Some(inv) = got else { return Ok(Poll::Pending("not delivered yet".into())) };
        let status = inv.status().cloned().unwrap_or(S::Pending);
        Ok(match status {
            S::Pending | S::InProgress | S::Delayed | S::Cancelling => Poll::Pending(status.as_str().to_lowercase()),
            _ => Poll::Ready(inv),
        })
    })
    .await;
    let inv = match waited {
        Ok(inv) => inv,
        Err(e) => {
            let _ = ssm.cancel_command().command_id(&command_id).instance_ids(req.instance_id).send().await;
            return Err(StepError::fatal(format!(
                "{what} exceeded its deadline of {} and was cancelled ({})",
                fmt(limit),
                e.message
            ))
            .with_hint("raise the step's `timeout` if the script is just slow; `ca-a2a-flow logs RUN --step STEP` shows what it printed"));
        }
    };

    let mut output = inv.standard_output_content().unwrap_or_default().to_string();
    let stderr = inv.standard_error_content().unwrap_or_default();
    if !stderr.is_empty() {
        if !output.is_empty() && !output.ends_with('\n') {
            output.push('\n');
        }
        output.push_str(stderr);
    }
    for line in output.lines() {
        ctx.log(line);
    }
    let lines: Vec<&str> = output.lines().collect();
    let tail = &lines[lines.len().saturating_sub(req.tail_lines.max(1))..];
    let shown = crate::process::shown(tail.iter().copied());
    let exit_code = inv.response_code();
    let status = inv.status().cloned().unwrap_or(S::Failed);
    match status {
        S::Success => {
            ctx.log(format!("{what} exited with status {exit_code}"));
            Ok(Ran { command_id, exit_code, output, shown })
        }
        S::TimedOut => Err(StepError::fatal(format!(
            "{what} exceeded its deadline of {} on the instance (SSM: TimedOut); last output:\n{shown}",
            fmt(req.timeout)
        ))
        .with_hint("raise the step's `timeout` if the script is just slow")),
        S::Failed => Err(StepError::retryable(format!(
            "{what} exited with status {exit_code}; last output:\n{shown}"
        ))
        .with_hint(format!("run `ca-a2a-flow logs {} --step {}` for the whole output", ctx.run_id, ctx.step_id))),
        other => Err(StepError::fatal(format!(
            "{what} ended {} ({}); last output:\n{shown}",
            other.as_str(),
            inv.status_details().unwrap_or_default()
        ))
        .with_hint("check that the instance is online in SSM (Fleet Manager) and that its role has AmazonSSMManagedInstanceCore")),
    }
}

/// `ca-a2a-flow <run> <step> <script hash>`: how a resumed attempt finds the
/// command the killed one sent (an SSM comment holds 100 characters).
fn comment(ctx: &StepContext, req: &Request<'_>) -> String {
    let digest = Sha256::digest(req.commands.as_bytes());
    let hash: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let text = format!("ca-a2a-flow {} {} {hash}", ctx.run_id, ctx.step_id);
    text.chars().take(100).collect()
}

/// A command with `comment` already sent to the instance and not cancelled.
async fn sent_before(ssm: &aws_sdk_ssm::Client, instance: &str, comment: &str) -> Result<Option<String>, StepError> {
    let mut pages = ssm.list_commands().instance_id(instance).into_paginator().send();
    let mut listed = Vec::new();
    while let Some(page) = pages.next().await {
        listed.extend(page.or_step_error("ssm:ListCommands")?.commands().to_vec());
    }
    Ok(listed
        .iter()
        .filter(|c| c.comment() == Some(comment))
        .filter(|c| {
            use aws_sdk_ssm::types::CommandStatus as C;
            // A failed or cancelled one is not followed: a retry sends afresh.
            matches!(c.status(), Some(C::Pending | C::InProgress | C::Success))
        })
        .filter_map(|c| c.command_id().map(String::from))
        .next_back())
}

impl super::facts::Facts for RunCommand {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_value_reaches_the_remote_shell_as_text() {
        let evil = "$(touch pwned) `id`; echo 'x' \"y\"\nsecond line";
        let script = with_bound_values(&[("FLOW_VALUE_1".into(), evil.into())], "printf '%s' \"${FLOW_VALUE_1}\"");
        let out = std::process::Command::new("sh").arg("-c").arg(&script).output().expect("sh runs");
        assert_eq!(String::from_utf8_lossy(&out.stdout), evil);
        assert!(!std::path::Path::new("pwned").exists());
    }
}
