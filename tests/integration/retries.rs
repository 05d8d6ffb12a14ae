//! Retries follow the step's persisted policy: retryable failures are retried
//! with growing delays (recorded), fatal ones are not, and a backoff survives a
//! crash at the same attempt number.

use ca_a2a_flow_engine::{RunStatus, StepStatus};

use crate::support::{Env, both};

/// Fails until it has been run `n` times.
fn flaky(env: &Env, succeed_on: u32, retry: &str) -> String {
    env.write(
        "flaky.yaml",
        &format!(
            r#"name: flaky
steps:
  - id: flaky
    uses: shell
    retry: {retry}
    with:
      run: |
        n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count
        echo "try $n"
        [ $n -ge {succeed_on} ]
"#
        ),
    )
    .display()
    .to_string()
}

both!(
    a_step_that_fails_twice_then_succeeds_ends_succeeded_after_three_attempts_with_its_delays_recorded,
    |env: &Env| {
        let wf = flaky(env, 3, "{ max_attempts: 5, initial_delay: 100ms, multiplier: 2, jitter: false }");
        env.run(&["run", &wf]).expect_success();
        let run = env.only_run();
        let step = env.step(&run.id, "flaky");
        assert_eq!(step.status, StepStatus::Succeeded);
        assert_eq!(step.attempt, 3);
        let attempts = env.attempts(&run.id, "flaky");
        let outcomes: Vec<&str> = attempts.iter().map(|a| a.outcome.as_str()).collect();
        assert_eq!(outcomes, ["retry", "retry", "succeeded"]);
        let delays: Vec<Option<i64>> = attempts.iter().map(|a| a.retry_delay_ms).collect();
        assert_eq!(delays, [Some(100), Some(200), None]);
        assert!(attempts[0].error.as_ref().unwrap().message.contains("status 1"));
        assert!(attempts[1].started_at >= attempts[0].finished_at.unwrap() + 100, "the recorded delay was waited");
    }
);

both!(a_fatal_failure_is_attempted_once, |env: &Env| {
    let wf = env.write(
        "fatal.yaml",
        r#"name: fatal
steps:
  - id: bad
    uses: shell
    retry: { max_attempts: 5, initial_delay: 10ms }
    with: { run: "echo no such thing; exit 3", fatal_exit_codes: [3] }
"#,
    );
    let out = env.run(&["run", wf.to_str().unwrap()]);
    out.expect_code(1);
    assert!(out.stderr.contains("command exited with status 3"), "{}", out.stderr);
    assert!(out.stderr.contains("| no such thing"), "the output tail is shown: {}", out.stderr);
    let run = env.only_run();
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(env.attempts(&run.id, "bad").len(), 1);
});

both!(a_retryable_failure_gives_up_after_max_attempts_and_says_so, |env: &Env| {
    let wf = flaky(env, 99, "{ max_attempts: 2, initial_delay: 10ms, jitter: false }");
    let out = env.run(&["run", &wf]);
    out.expect_code(1);
    assert!(out.stderr.contains("gave up after 2 attempts"), "{}", out.stderr);
    assert_eq!(env.attempts(&env.only_run().id, "flaky").len(), 2);
});

both!(a_run_killed_during_a_backoff_resumes_at_the_next_attempt_number_after_the_recorded_delay, |env: &Env| {
    let wf = flaky(env, 2, "{ max_attempts: 3, initial_delay: 1s, jitter: false }");
    let out = env.run_with(&["run", &wf], &[("CA_A2A_FLOW_FAILPOINT", "after_retry_scheduled:flaky")]);
    assert_eq!(out.code, None, "killed during the backoff");
    let run = env.only_run();
    let waiting = env.step(&run.id, "flaky");
    assert_eq!(waiting.status, StepStatus::RetryWait);
    assert_eq!(waiting.attempt, 1);
    let next_at = waiting.next_attempt_at.expect("the next attempt time is stored");

    env.run(&["resume", &run.id]).expect_success();
    let attempts = env.attempts(&run.id, "flaky");
    let numbers: Vec<u32> = attempts.iter().map(|a| a.attempt).collect();
    assert_eq!(numbers, [1, 2], "the resumed run continued at attempt 2");
    assert!(attempts[1].started_at >= next_at, "attempt 2 waited for the backoff stored before the crash");
    assert_eq!(env.step(&run.id, "flaky").status, StepStatus::Succeeded);
});
