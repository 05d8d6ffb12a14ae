//! SIGINT stops scheduling, records the run as interrupted, prints the exact
//! resume command and exits 130; `resume` finishes the run. `cancel` stops a
//! run driven by another process.

use std::time::Duration;

use ca_a2a_flow_engine::{RunStatus, StepStatus};

use crate::support::{Env, both, count, lines, signal};

fn three(env: &Env) -> String {
    env.write(
        "three.yaml",
        r#"name: three
steps:
  - id: a
    uses: shell
    with: { run: "echo a >> done.log" }
  - id: b
    uses: shell
    needs: [a]
    with: { run: "echo b >> started.log; sleep ${B_SLEEP:-0}; echo b >> done.log" }
  - id: c
    uses: shell
    needs: [b]
    with: { run: "echo c >> done.log" }
"#,
    )
    .display()
    .to_string()
}

/// `three` started with `args` (step b sleeping 30 s), once step b runs.
fn started_at_b(env: &Env, args: &[&str]) -> std::process::Child {
    let wf = three(env);
    let child = env.spawn(&[args, &["run", &wf]].concat(), &[("B_SLEEP", "30")]);
    env.wait_until("step b to start", Duration::from_secs(30), || {
        lines(&env.path("started.log")).contains(&"b".into())
    });
    child
}

both!(sigint_records_the_run_interrupted_prints_the_resume_command_and_resume_finishes_it, |env: &Env| {
    let child = started_at_b(env, &[]);
    signal(&child, libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    let run = env.only_run();
    assert!(stderr.contains(&format!("resume {}", run.id)), "prints the resume command: {stderr}");
    assert_eq!(run.status, RunStatus::Interrupted);
    assert_eq!(env.step(&run.id, "b").status, StepStatus::Interrupted);
    assert_eq!(env.step(&run.id, "c").status, StepStatus::Pending);

    env.run(&["resume", &run.id]).expect_success();
    let done = lines(&env.path("done.log"));
    assert_eq!((count(&done, "a"), count(&done, "b"), count(&done, "c")), (1, 1, 1));
    assert_eq!(env.run_record(&run.id).status, RunStatus::Succeeded);
});

both!(cancel_stops_a_run_driven_by_another_process, |env: &Env| {
    let child = started_at_b(env, &["--lease-ttl", "1s"]);
    let run = env.only_run();
    env.run(&["cancel", &run.id]).expect_success();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let run = env.run_record(&run.id);
    assert_eq!(run.status, RunStatus::Cancelled);
    assert_eq!(env.step(&run.id, "c").status, StepStatus::Cancelled);
});

both!(cancel_of_an_interrupted_run_marks_it_cancelled_and_runs_nothing, |env: &Env| {
    let child = started_at_b(env, &[]);
    signal(&child, libc::SIGINT);
    assert_eq!(child.wait_with_output().unwrap().status.code(), Some(130));
    let run = env.only_run();
    let done_before = lines(&env.path("done.log"));

    env.run(&["cancel", &run.id]).expect_success();
    assert_eq!(env.run_record(&run.id).status, RunStatus::Cancelled);
    assert_eq!(env.step(&run.id, "c").status, StepStatus::Cancelled);
    assert_eq!(lines(&env.path("done.log")), done_before, "cancelling ran nothing");
});
