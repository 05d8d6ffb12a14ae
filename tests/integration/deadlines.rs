//! Every attempt and every step has a deadline; nothing waits forever, and a
//! command cut at its deadline is killed with its whole process group.

use std::time::{Duration, Instant};

use ca_a2a_flow_engine::StepStatus;

use crate::support::{Env, both};

/// No process on the machine has `needle` in its command line.
fn no_process_mentions(needle: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().all(|entry| {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        !String::from_utf8_lossy(&cmdline).replace('\0', " ").contains(needle)
    })
}

both!(a_step_past_its_deadline_fails_with_the_timeout_message_and_its_command_is_killed, |env: &Env| {
    let seconds = 3_600 + fastrand::u32(1..10_000);
    let wf = env.write(
        "hang.yaml",
        &format!(
            r#"name: hang
steps:
  - id: hang
    uses: shell
    timeout: 2s
    with: {{ run: "sleep {seconds}" }}
"#
        ),
    );
    let started = Instant::now();
    let out = env.run(&["run", wf.to_str().unwrap()]);
    let took = started.elapsed();
    out.expect_code(1);
    assert!(out.stderr.contains("step `hang` timed out after 2s (attempt 1/3)"), "{}", out.stderr);
    assert!(took < Duration::from_secs(20), "the deadline cut the step (took {took:?})");
    let run = env.only_run();
    let step = env.step(&run.id, "hang");
    assert_eq!(step.status, StepStatus::Failed);
    assert!(step.error.unwrap().message.contains("timed out after 2s"));
    assert!(no_process_mentions(&format!("sleep {seconds}")), "the command outlived its deadline");
});

both!(an_attempt_cut_by_its_own_deadline_is_retried_until_the_attempts_run_out, |env: &Env| {
    let wf = env.write(
        "slow.yaml",
        r#"name: slow
steps:
  - id: slow
    uses: shell
    timeout: 1m
    attempt_timeout: 500ms
    retry: { max_attempts: 2, initial_delay: 10ms }
    with: { run: "sleep 30" }
"#,
    );
    let out = env.run(&["run", wf.to_str().unwrap()]);
    out.expect_code(1);
    assert!(out.stderr.contains("step `slow` timed out after 500ms (attempt 2/2)"), "{}", out.stderr);
    let attempts = env.attempts(&env.only_run().id, "slow");
    assert_eq!(attempts.iter().map(|a| a.outcome.as_str()).collect::<Vec<_>>(), ["retry", "failed"]);
});

both!(a_wait_shows_progress_and_is_bounded_by_its_deadline, |env: &Env| {
    let wf = env.write(
        "wait.yaml",
        r#"name: wait
steps:
  - id: health
    uses: wait.http
    timeout: 2s
    with: { url: "http://127.0.0.1:9/never", interval: 200ms }
"#,
    );
    let out = env.run(&["run", wf.to_str().unwrap()]);
    out.expect_code(1);
    assert!(out.stderr.contains("health"), "{}", out.stderr);
    assert!(out.stderr.contains("connection refused or unreachable"), "progress names what it sees: {}", out.stderr);
    assert!(out.stderr.contains("timed out after 2s"), "{}", out.stderr);
});
