//! The promises that must hold when things go wrong: no process outlives its
//! attempt, secret values stay secret on every path, a templated value never
//! runs as shell code, approval is never skipped, a cancel survives the death
//! of the process that should have honoured it, a crash loop ends, and YAML is
//! read with the 1.2 core schema.

use std::time::Duration;

use ca_a2a_flow_engine::{RunStatus, StepStatus};

use crate::support::web::UiServer;
use crate::support::{Env, both, count, lines, signal};

/// Waits until `file` (in the scratch dir) has a line, then SIGKILLs `child`.
fn kill_once_started(env: &Env, mut child: std::process::Child, file: &str) {
    env.wait_until(&format!("{file} to be written"), Duration::from_secs(30), || !lines(&env.path(file)).is_empty());
    signal(&child, libc::SIGKILL);
    child.wait().expect("reap the killed engine");
}

both!(nothing_a_killed_attempt_started_acts_after_the_engine_dies, |env: &Env| {
    // The first attempt leaves a background subshell, a pipeline and a process
    // in a session of its own, each of which would write `late` two seconds on.
    let wf = env.write(
        "forks.yaml",
        r#"name: forks
steps:
  - id: forks
    uses: shell
    with:
      run: |
        if [ -f started ]; then echo resumed >> ran; exit 0; fi
        (sleep 2; echo subshell >> late) &
        sleep 2 | (cat; echo pipeline >> late) &
        setsid sh -c 'sleep 2; echo setsid >> late' &
        echo first >> started
        sleep 60
"#,
    );
    let child = env.spawn(&["run", wf.to_str().unwrap()], &[]);
    kill_once_started(env, child, "started");
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(lines(&env.path("late")), Vec::<String>::new(), "a process of the killed attempt acted after the crash");

    let run = env.only_run();
    env.run(&["resume", &run.id]).expect_success();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(lines(&env.path("late")), Vec::<String>::new());
    assert_eq!(lines(&env.path("ran")), ["resumed"], "the resumed attempt ran once");
});

both!(a_background_process_is_gone_when_its_attempt_ends, |env: &Env| {
    let wf = env.write(
        "bg.yaml",
        r#"name: bg
steps:
  - id: leaves-a-child
    uses: shell
    with:
      run: |
        (sleep 2; echo late >> late) &
        setsid sh -c 'sleep 2; echo setsid >> late' &
        echo done
"#,
    );
    env.run(&["run", wf.to_str().unwrap()]).expect_success();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(lines(&env.path("late")), Vec::<String>::new(), "a process outlived its attempt");
});

const SECRET: &str = "Zq8-not-for-your-eyes-31337";

/// Fails when any of `texts` holds the secret.
#[track_caller]
fn assert_secret_nowhere<'a>(texts: impl IntoIterator<Item = &'a String>) {
    for (i, text) in texts.into_iter().enumerate() {
        assert!(!text.contains(SECRET), "the secret leaked in view {i}:\n{text}");
    }
}

both!(a_secret_output_of_a_failing_step_is_masked_in_every_view_and_never_stored, |env: &Env| {
    let wf = env.write(
        "secret.yaml",
        r#"name: secret-fails
steps:
  - id: mint
    uses: shell
    secret_outputs: [token]
    retry: { max_attempts: 2, initial_delay: 100ms }
    with:
      outputs: [token]
      run: |
        echo "token=$MINTED" >> "$FLOW_OUTPUT"
        echo "minted $MINTED"
        echo "failing with $MINTED" >&2
        exit 1
"#,
    );
    let out = env.run_with(&["run", wf.to_str().unwrap()], &[("MINTED", SECRET)]);
    out.expect_code(1);
    let run = env.only_run();
    let mut seen = vec![out.stdout.clone(), out.stderr.clone()];
    for args in [
        vec!["logs", run.id.as_str()],
        vec!["status", run.id.as_str()],
        vec!["status", run.id.as_str(), "--output", "json"],
    ] {
        let o = env.run(&args);
        seen.push(o.stdout);
        seen.push(o.stderr);
    }
    seen.push(env.everything_stored());
    // Every page and stream of `ui`.
    let ui = UiServer::start(env, &[]);
    let served = ui.everything_served(&run.id);
    assert!(served[4].contains("minted ***"), "the page's stream shows the masked line:\n{}", served[4]);
    seen.extend(served);
    assert_secret_nowhere(&seen);
    assert!(seen[4].contains("minted ***"), "the masked line is still shown:\n{}", seen[4]);
});

both!(a_secret_output_cut_by_its_deadline_leaves_no_trace, |env: &Env| {
    let wf = env.write(
        "secret-cut.yaml",
        r#"name: secret-cut
steps:
  - id: mint
    uses: shell
    secret_outputs: [token]
    timeout: 2s
    retry: { max_attempts: 1 }
    with:
      outputs: [token]
      run: |
        echo "token=$MINTED" >> "$FLOW_OUTPUT"
        echo "minted $MINTED"
        sleep 30
"#,
    );
    let out = env.run_with(&["run", wf.to_str().unwrap()], &[("MINTED", SECRET)]);
    out.expect_code(1);
    let run = env.only_run();
    let logs = env.run(&["logs", &run.id]);
    assert_secret_nowhere([&out.stdout, &out.stderr, &logs.stdout, &env.everything_stored()]);
});

both!(a_templated_value_reaches_the_shell_as_text_never_as_code, |env: &Env| {
    let wf = env.write(
        "inject.yaml",
        r#"name: inject
inputs:
  tag: {}
steps:
  - id: echo
    uses: shell
    with:
      run: |
        echo "double: ${{ inputs.tag }}" >> seen
        echo plain: ${{ inputs.tag }} >> seen
        echo 'single: ${{ inputs.tag }}' >> seen
        echo "id=${{ inputs.tag }}" >> "$FLOW_OUTPUT"
      outputs: [id]
  - id: again
    uses: shell
    with:
      run: |
        echo "output: ${{ steps.echo.outputs.id }}" >> seen
"#,
    );
    let evil = "$(touch pwned1) `touch pwned2`; touch pwned3 \"' && touch pwned4";
    let tag = format!("tag={evil}");
    env.run(&["run", wf.to_str().unwrap(), "--input", &tag]).expect_success();
    for n in 1..=4 {
        assert!(!env.path(&format!("pwned{n}")).exists(), "pwned{n}: an input ran as shell code");
    }
    assert_eq!(
        lines(&env.path("seen")),
        [format!("double: {evil}"), format!("plain: {evil}"), format!("single: {evil}"), format!("output: {evil}")]
    );
});

both!(a_value_with_a_newline_stays_one_argument, |env: &Env| {
    let wf = env.write(
        "newline.yaml",
        r#"name: newline
inputs:
  note: {}
steps:
  - id: args
    uses: shell
    with:
      run: printf '%s|' ${{ inputs.note }} > seen
"#,
    );
    env.run(&["run", wf.to_str().unwrap(), "--input", "note=a b\ntouch pwned"]).expect_success();
    assert!(!env.path("pwned").exists());
    assert_eq!(std::fs::read_to_string(env.path("seen")).unwrap(), "a b\ntouch pwned|");
});

fn approval_workflow(with_new_step: bool) -> String {
    let mut yaml = String::from(
        r#"name: approve-later
steps:
  - id: a
    uses: shell
    retry: { max_attempts: 1 }
    with: { run: test -f go }
"#,
    );
    if with_new_step {
        yaml.push_str(
            "  - id: drop-db\n    uses: shell\n    needs: [a]\n    approve: this deletes the database\n    with: { run: echo dropped >> dropped }\n",
        );
    }
    yaml
}

both!(resume_accepting_a_new_approve_step_asks_for_approval_first, |env: &Env| {
    let wf = env.write("approve.yaml", &approval_workflow(false));
    env.run(&["run", wf.to_str().unwrap()]).expect_code(1);
    let run = env.only_run();
    env.write("go", "");
    env.write("approve.yaml", &approval_workflow(true));

    let refused = env.run(&["resume", &run.id, "--accept-changes"]);
    refused.expect_code(2);
    assert!(refused.stderr.contains("drop-db"), "the refusal names the step:\n{}", refused.stderr);
    assert!(!env.path("dropped").exists(), "an approve: step ran without approval");
    assert_eq!(env.run_record(&run.id).status, RunStatus::Failed, "nothing was done");

    env.run(&["resume", &run.id, "--accept-changes", "--yes"]).expect_success();
    assert_eq!(lines(&env.path("dropped")), ["dropped"]);
});

both!(a_cancel_requested_while_the_holder_is_dead_is_honoured_by_the_next_resume, |env: &Env| {
    let wf = env.write(
        "cancel.yaml",
        r#"name: cancel-dead
steps:
  - id: long
    uses: shell
    with: { run: echo start >> starts; sleep 60 }
  - id: after
    uses: shell
    needs: [long]
    with: { run: echo after >> starts }
"#,
    );
    let child = env.spawn(&["run", wf.to_str().unwrap()], &[("CA_A2A_FLOW_LEASE_TTL", "60s")]);
    kill_once_started(env, child, "starts");
    let run = env.only_run();
    // The dead holder's lease has not expired: the cancel is only recorded.
    env.run(&["cancel", &run.id]).expect_success();

    let resumed = env.run(&["resume", &run.id]);
    assert_eq!(env.run_record(&run.id).status, RunStatus::Cancelled, "{}", resumed.stderr);
    assert_eq!(lines(&env.path("starts")), ["start"], "no step ran after the cancel");
    assert_eq!(env.step(&run.id, "after").status, StepStatus::Cancelled);
});

both!(a_step_that_kills_the_engine_every_time_stops_after_its_attempts, |env: &Env| {
    let wf = env.write(
        "loop.yaml",
        r#"name: crash-loop
steps:
  - id: boom
    uses: shell
    retry: { max_attempts: 2, initial_delay: 100ms }
    with: { run: echo try >> tries }
"#,
    );
    let kill = [("CA_A2A_FLOW_FAILPOINT", "before_commit:boom")];
    let out = env.run_with(&["run", wf.to_str().unwrap()], &kill);
    assert_eq!(out.code, None, "killed at the failpoint");
    let run = env.only_run();
    let out = env.run_with(&["resume", &run.id], &kill);
    assert_eq!(out.code, None, "killed again: that is the second attempt");
    let out = env.run_with(&["resume", &run.id], &kill);
    out.expect_code(1);
    assert!(out.stderr.contains("the engine died during this step 2 times"), "{}", out.stderr);
    assert_eq!(count(&lines(&env.path("tries")), "try"), 2, "no third attempt ran");
    assert_eq!(env.step(&run.id, "boom").status, StepStatus::Failed);
});

both!(a_panic_inside_a_step_fails_that_step_and_not_the_others, |env: &Env| {
    let wf = env.write(
        "panic.yaml",
        r#"name: panics
steps:
  - id: bad
    uses: shell
    retry: { max_attempts: 1 }
    with: { run: 'true' }
  - id: good
    uses: shell
    with: { run: sleep 1; echo good >> ran }
"#,
    );
    let out = env.run_with(&["run", wf.to_str().unwrap()], &[("CA_A2A_FLOW_FAILPOINT", "panic:bad")]);
    out.expect_code(1);
    let run = env.only_run();
    let bad = env.step(&run.id, "bad");
    assert_eq!(bad.status, StepStatus::Failed);
    assert!(bad.error.unwrap().message.contains("panicked"), "the error says the step panicked");
    assert_eq!(env.step(&run.id, "good").status, StepStatus::Succeeded, "the other step finished");
    assert_eq!(lines(&env.path("ran")), ["good"]);
});

both!(yaml_is_read_with_the_1_2_core_schema, |env: &Env| {
    let wf = env.write(
        "yaml12.yaml",
        r#"name: yaml12
inputs:
  flag: on
steps:
  - id: y
    uses: shell
    with:
      run: echo "${{ inputs.flag }}" >> seen
  - id: n
    uses: shell
    when: no
    with: { run: echo skipped >> seen }
"#,
    );
    env.run(&["run", wf.to_str().unwrap()]).expect_success();
    let run = env.only_run();
    assert_eq!(env.step(&run.id, "y").status, StepStatus::Succeeded, "`y` is a string id");
    assert_eq!(lines(&env.path("seen")), ["on"], "`on` is the string `on`, and `when: no` still skips");
});

both!(a_secret_stays_masked_in_a_process_that_resumes_the_run, |env: &Env| {
    let wf = env.write(
        "resume-secret.yaml",
        r#"name: resume-secret
steps:
  - id: mint
    uses: shell
    secret_outputs: [token]
    with:
      outputs: [token]
      run: echo "token=$MINTED" >> "$FLOW_OUTPUT"
  - id: later
    uses: shell
    needs: [mint]
    with:
      run: echo "the token is $MINTED"
"#,
    );
    let secret = [("MINTED", SECRET)];
    let out = env.run_with(
        &["run", wf.to_str().unwrap()],
        &[("MINTED", SECRET), ("CA_A2A_FLOW_FAILPOINT", "after_start:later")],
    );
    assert_eq!(out.code, None, "killed once `mint` committed");
    let run = env.only_run();
    let resumed = env.run_with(&["resume", &run.id], &secret);
    resumed.expect_success();
    let logs = env.run(&["logs", &run.id]);
    assert!(logs.stdout.contains("the token is ***"), "{}", logs.stdout);
    assert_secret_nowhere([&resumed.stdout, &resumed.stderr, &logs.stdout, &env.everything_stored()]);
});
