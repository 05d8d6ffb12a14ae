//! A run SIGKILLed at any instant resumes, and no step that had completed
//! before the kill runs again.
//!
//! The workflow is a diamond of 8 `shell` steps; each appends its id to
//! `started.log` when it begins and to `done.log` when it finishes. The process
//! is killed at each step's boundaries (through the engine's failpoints, which
//! SIGKILL the process at an exact point) and in the middle of each step (by the
//! test, with SIGKILL), then resumed.

use std::time::Duration;

use ca_a2a_flow_engine::{RunStatus, StepStatus};

use crate::support::{Env, both, count, lines, signal};

const STEPS: [(&str, &[&str]); 8] = [
    ("a", &[]),
    ("b", &["a"]),
    ("c", &["a"]),
    ("d", &["a"]),
    ("e", &["b", "c"]),
    ("f", &["d"]),
    ("g", &["a"]),
    ("h", &["e", "f", "g"]),
];

fn diamond(env: &Env) -> String {
    let mut yaml = String::from("name: diamond\ndefaults: { retry: { max_attempts: 2 } }\nsteps:\n");
    for (id, needs) in STEPS {
        yaml.push_str(&format!(
            "  - id: {id}\n    uses: shell\n    needs: [{}]\n    with:\n      run: |\n        echo \"$FLOW_STEP_ID\" >> started.log\n        if [ \"$FLOW_STEP_ID\" = \"${{SLOW_STEP:-}}\" ]; then sleep 5; fi\n        echo \"$FLOW_STEP_ID\" >> done.log\n",
            needs.join(", ")
        ));
    }
    env.write("diamond.yaml", &yaml).display().to_string()
}

/// Kills a run at `failpoint` (or mid-step when `None`), resumes it, and checks
/// that it succeeds without re-running any step committed before the kill.
/// Returns how many times `victim` ran in all.
fn kill_and_resume(env: &Env, wf: &str, failpoint: Option<&str>, victim: &str) -> usize {
    let _ = std::fs::remove_file(env.path("started.log"));
    let _ = std::fs::remove_file(env.path("done.log"));
    let before = env.runs().len();
    match failpoint {
        Some(point) => {
            let spec = format!("{point}:{victim}");
            let out = env.run_with(&["run", wf], &[("CA_A2A_FLOW_FAILPOINT", &spec)]);
            assert_eq!(out.code, None, "killed by SIGKILL at {spec}, so no exit code\n{}", out.stderr);
        }
        None => {
            let mut child = env.spawn(&["run", wf], &[("SLOW_STEP", victim)]);
            env.wait_until(&format!("step {victim} to start"), Duration::from_secs(30), || {
                lines(&env.path("started.log")).iter().any(|l| l == victim)
            });
            signal(&child, libc::SIGKILL);
            child.wait().expect("reap the killed process");
        }
    }
    let runs = env.runs();
    assert_eq!(runs.len(), before + 1);
    let run = &runs[0];
    assert_eq!(run.status, RunStatus::Running, "a killed run is left running, to be resumed");
    let committed: Vec<String> =
        env.steps(&run.id).into_iter().filter(|s| s.status == StepStatus::Succeeded).map(|s| s.step_id).collect();
    assert!(!committed.contains(&victim.to_string()) || failpoint == Some("after_commit"));
    let done_before_resume = lines(&env.path("done.log"));

    env.run(&["resume", &run.id]).expect_success();

    assert_eq!(env.run_record(&run.id).status, RunStatus::Succeeded);
    let done = lines(&env.path("done.log"));
    for (id, _) in STEPS {
        let n = count(&done, id);
        assert!(n >= 1, "step {id} never completed");
        if committed.iter().any(|c| c == id) {
            assert_eq!(n, 1, "step {id} had completed before the kill ({failpoint:?} at {victim}) and ran again");
        } else if count(&done_before_resume, id) == 0 {
            assert_eq!(n, 1, "step {id} ran once after the resume");
        }
    }
    count(&done, victim)
}

fn every_kill_point(env: &Env) {
    let wf = diamond(env);
    for (victim, _) in STEPS {
        // Killed after `started` was committed, before the command ran.
        assert_eq!(kill_and_resume(env, &wf, Some("after_start"), victim), 1);
        // Killed in the middle of the command: it never finished, so it runs once.
        assert_eq!(kill_and_resume(env, &wf, None, victim), 1);
        // Killed after the command finished but before its success was
        // committed: the step runs again (at-least-once; AWS steps converge).
        assert_eq!(kill_and_resume(env, &wf, Some("before_commit"), victim), 2);
        // Killed right after the commit: never runs again.
        assert_eq!(kill_and_resume(env, &wf, Some("after_commit"), victim), 1);
    }
}

both!(a_run_killed_at_any_step_boundary_or_mid_step_resumes_without_rerunning_finished_steps, every_kill_point);

both!(a_killed_command_leaves_no_orphan_that_finishes_later, |env: &Env| {
    let wf = diamond(env);
    let mut child = env.spawn(&["run", &wf], &[("SLOW_STEP", "a")]);
    env.wait_until("step a to start", Duration::from_secs(30), || {
        lines(&env.path("started.log")).contains(&"a".into())
    });
    signal(&child, libc::SIGKILL);
    child.wait().unwrap();
    // The step's shell would write done.log after its 5 s sleep if it had survived.
    std::thread::sleep(Duration::from_secs(6));
    assert!(lines(&env.path("done.log")).is_empty(), "the killed engine's command kept running");
});
