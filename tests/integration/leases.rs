//! One process drives a run at a time. A second `resume` refuses and names the
//! holder; a dead holder's run is taken over; a frozen holder loses its lease
//! at expiry and its late writes are rejected by the generation fence.

use std::time::Duration;

use ca_a2a_flow_engine::RunStatus;

use crate::support::{Env, both, lines, signal};

fn slow(env: &Env) -> String {
    env.write(
        "slow.yaml",
        r#"name: slow
steps:
  - id: a
    uses: shell
    with: { run: "echo a >> started.log; sleep ${A_SLEEP:-0}; echo a >> done.log" }
  - id: b
    uses: shell
    needs: [a]
    with: { run: "echo b >> done.log" }
"#,
    )
    .display()
    .to_string()
}

fn wait_for_a(env: &Env) {
    env.wait_until("step a to start", Duration::from_secs(30), || {
        lines(&env.path("started.log")).contains(&"a".into())
    });
}

both!(a_second_resume_refuses_naming_the_holder_and_a_dead_holders_run_is_taken_over, |env: &Env| {
    let wf = slow(env);
    let mut holder = env.spawn(&["run", &wf], &[("A_SLEEP", "30")]);
    wait_for_a(env);
    let run = env.only_run();

    let refused = env.run(&["resume", &run.id]);
    refused.expect_code(4);
    assert!(refused.stderr.contains(&format!("pid {}", holder.id())), "names the holder: {}", refused.stderr);
    assert!(refused.stderr.contains("lease expires in"), "{}", refused.stderr);

    signal(&holder, libc::SIGKILL);
    holder.wait().unwrap();
    env.run(&["resume", &run.id]).expect_success();
    assert_eq!(env.run_record(&run.id).status, RunStatus::Succeeded);
});

both!(a_frozen_holder_loses_its_lease_at_expiry_and_its_late_writes_are_rejected, |env: &Env| {
    let wf = slow(env);
    let frozen = env.spawn(&["--lease-ttl", "1s", "run", &wf], &[("A_SLEEP", "3")]);
    wait_for_a(env);
    let run = env.only_run();
    signal(&frozen, libc::SIGSTOP);

    // Alive (only frozen), and its lease has not expired yet.
    env.run(&["--lease-ttl", "1s", "resume", &run.id]).expect_code(4);

    std::thread::sleep(Duration::from_millis(1_500));
    env.run(&["--lease-ttl", "1s", "resume", &run.id]).expect_success();
    let after = env.run_record(&run.id);
    assert_eq!(after.status, RunStatus::Succeeded);

    signal(&frozen, libc::SIGCONT);
    let late = frozen.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&late.stderr);
    assert_eq!(late.status.code(), Some(4), "the stale owner stops: {stderr}");
    assert!(stderr.contains("another process took over") || stderr.contains("lease lost"), "{stderr}");
    let final_state = env.run_record(&run.id);
    assert_eq!(final_state.status, RunStatus::Succeeded, "the stale owner changed nothing");
    assert_eq!(final_state.generation, after.generation);
});
