//! `status`, `list` and `logs` show state, attempts, durations and the last
//! error; `--output json` is parsed as a stable format.

use crate::support::{Env, both};

fn mixed(env: &Env) -> String {
    env.write(
        "mixed.yaml",
        r#"name: mixed
steps:
  - id: ok
    uses: shell
    with: { run: "echo hello from ok" }
  - id: bad
    uses: shell
    needs: [ok]
    with: { run: "echo about to fail; exit 7", fatal_exit_codes: [7] }
  - id: after
    uses: noop
    needs: [bad]
"#,
    )
    .display()
    .to_string()
}

both!(status_shows_each_steps_state_attempts_duration_and_last_error_as_json_and_text, |env: &Env| {
    env.run(&["run", &mixed(env)]).expect_code(1);
    let run = env.only_run();
    let doc = env.run(&["status", &run.id, "--output", "json"]).expect_success().json();
    assert_eq!(doc["run"]["id"], run.id.as_str());
    assert_eq!(doc["run"]["status"], "failed");
    assert!(doc["run"]["error"].as_str().unwrap().contains("step `bad` failed"));
    let step = |id: &str| doc["steps"].as_array().unwrap().iter().find(|s| s["id"] == id).unwrap().clone();
    assert_eq!(step("ok")["status"], "succeeded");
    assert_eq!(step("ok")["attempt"], 1);
    assert!(step("ok")["duration_ms"].as_i64().unwrap() >= 0);
    assert_eq!(step("bad")["status"], "failed");
    assert!(step("bad")["error"]["message"].as_str().unwrap().contains("status 7"));
    assert_eq!(step("bad")["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(step("bad")["attempts"][0]["outcome"], "failed");
    assert_eq!(step("after")["status"], "blocked");

    let text = env.run(&["status", &run.id]).expect_success().stdout.clone();
    assert!(text.contains("status   failed"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("bad ") && l.contains("failed") && l.contains("1/3") && l.contains("status 7")),
        "{text}"
    );
    assert!(text.lines().any(|l| l.starts_with("after ") && l.contains("blocked")), "{text}");
});

/// A workflow `ok` of one `noop` step.
fn one_noop_step(env: &Env) -> std::path::PathBuf {
    env.write("ok.yaml", "name: ok\nsteps:\n  - id: a\n    uses: noop\n")
}

both!(list_shows_runs_newest_first, |env: &Env| {
    let wf = mixed(env);
    env.run(&["run", &wf]).expect_code(1);
    std::thread::sleep(std::time::Duration::from_millis(5));
    let ok = one_noop_step(env);
    env.run(&["run", ok.to_str().unwrap()]).expect_success();
    let doc = env.run(&["list", "--output", "json"]).expect_success().json();
    let runs = doc.as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["workflow"], "ok");
    assert_eq!(runs[0]["status"], "succeeded");
    assert_eq!(runs[1]["workflow"], "mixed");
    assert_eq!(runs[1]["status"], "failed");
    let text = env.run(&["list"]).expect_success().stdout.clone();
    assert!(text.find("ok").unwrap() < text.find("mixed").unwrap());
});

both!(list_says_when_older_runs_exist_beyond_its_limit, |env: &Env| {
    let ok = one_noop_step(env);
    for _ in 0..3 {
        env.run(&["run", ok.to_str().unwrap()]).expect_success();
    }
    let cut = env.run(&["list", "--limit", "2", "--output", "json"]);
    cut.expect_success();
    assert_eq!(cut.json().as_array().unwrap().len(), 2);
    assert!(cut.stderr.contains("showing the newest 2 runs; older ones exist"), "{}", cut.stderr);
    let all = env.run(&["list", "--limit", "3"]);
    all.expect_success();
    assert_eq!(all.stdout.lines().count(), 4, "a heading and three runs:\n{}", all.stdout);
    assert!(!all.stderr.contains("older ones exist"), "nothing was cut: {}", all.stderr);
});

both!(logs_show_the_commands_output_and_each_attempts_outcome, |env: &Env| {
    env.run(&["run", &mixed(env)]).expect_code(1);
    let run = env.only_run();
    let all = env.run(&["logs", &run.id]).expect_success().stdout.clone();
    assert!(all.contains("hello from ok"), "{all}");
    assert!(all.contains("about to fail"), "{all}");
    assert!(all.contains("failed on attempt 1/3"), "{all}");
    let one = env.run(&["logs", &run.id, "--step", "ok"]).expect_success().stdout.clone();
    assert!(one.contains("hello from ok") && !one.contains("about to fail"), "{one}");
    let followed = env.run(&["logs", &run.id, "--follow"]).expect_success().stdout.clone();
    assert_eq!(followed, all, "--follow on an ended run prints the log and returns");
});

both!(a_secret_output_is_masked_in_logs_and_never_stored, |env: &Env| {
    // The secret is made at run time and never appears in the workflow text.
    let wf = env.write(
        "secret.yaml",
        r#"name: secret
steps:
  - id: mint
    uses: shell
    secret_outputs: [token]
    with:
      run: |
        t="s3cr3t-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
        printf %s "$t" > token.txt
        echo "minted $t"
        echo "token=$t" >> "$FLOW_OUTPUT"
      outputs: [token]
  - id: use
    uses: shell
    needs: [mint]
    with: { run: "echo the token is $(cat token.txt)" }
"#,
    );
    let out = env.run(&["run", wf.to_str().unwrap()]);
    out.expect_success();
    let secret = std::fs::read_to_string(env.path("token.txt")).unwrap();
    assert!(secret.starts_with("s3cr3t-") && secret.len() > 10);
    let run = env.only_run();
    let logs = env.run(&["logs", &run.id]).stdout.clone();
    let status = env.run(&["status", &run.id, "--output", "json"]).stdout.clone();
    assert!(logs.contains("minted ***"), "the step's own output is masked: {logs}");
    assert!(logs.contains("the token is ***"), "later steps' output is masked: {logs}");
    assert!(status.contains("\"token\": \"***\""), "{status}");
    for shown in [&out.stderr, &out.stdout, &logs, &status] {
        assert!(!shown.contains(&secret), "the secret leaked: {shown}");
    }
    let stored = env.everything_stored();
    assert!(stored.contains("minted ***"), "the dump does read the event log");
    assert!(!stored.contains(&secret), "the secret is in the state store");
});

both!(a_template_cannot_pass_a_secret_output_by_value, |env: &Env| {
    let wf = env.write(
        "leak.yaml",
        r#"name: leak
steps:
  - id: mint
    uses: shell
    secret_outputs: [token]
    with: { run: "echo token=x >> $FLOW_OUTPUT", outputs: [token] }
  - id: use
    uses: shell
    with: { run: "echo ${{ steps.mint.outputs.token }}" }
"#,
    );
    let out = env.run(&["run", wf.to_str().unwrap()]);
    // Refused by validation, at the template's line, before any step runs.
    out.expect_code(2);
    assert!(out.stderr.contains("is a secret output"), "{}", out.stderr);
    assert!(out.stderr.contains("leak.yaml:9:"), "{}", out.stderr);
    assert!(env.runs().is_empty(), "no run was recorded");
});

#[test]
fn a_reader_that_closes_the_pipe_early_ends_the_command_quietly() {
    let env = Env::sqlite();
    let mut child = env.command(&["steps", "describe", "aws.ec2.security_group"]);
    child.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = child.spawn().unwrap();
    drop(child.stdout.take()); // the reader goes away before the first line
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0));
}
