//! `resume` runs the stored definition; an edited workflow file is refused
//! with the list of changed steps, and `--accept-changes` re-runs only those
//! steps and the steps that depend on them.

use ca_a2a_flow_engine::RunStatus;

use crate::support::{Env, both, count, lines};

fn workflow(c_command: &str) -> String {
    format!(
        r#"name: edit
steps:
  - id: a
    uses: shell
    with: {{ run: echo a >> ran.log }}
  - id: b
    uses: shell
    needs: [a]
    with: {{ run: echo b >> ran.log }}
  - id: c
    uses: shell
    needs: [a]
    with: {{ run: {c_command} }}
  - id: d
    uses: shell
    needs: [c]
    with: {{ run: echo d >> ran.log }}
"#
    )
}

both!(an_edited_workflow_is_refused_then_accepted_rerunning_only_changed_steps_and_dependents, |env: &Env| {
    let wf = env.write("edit.yaml", &workflow("echo c >> ran.log"));
    env.run(&["run", wf.to_str().unwrap()]).expect_success();
    let run = env.only_run();
    let mut first = lines(&env.path("ran.log"));
    first.sort();
    assert_eq!(first, ["a", "b", "c", "d"], "b and c run in parallel, so only the set is fixed");

    env.write("edit.yaml", &workflow("echo c2 >> ran.log"));
    let refused = env.run(&["resume", &run.id]);
    refused.expect_code(5);
    assert!(refused.stderr.contains("~ c (changed"), "{}", refused.stderr);
    assert!(!refused.stderr.contains("~ a") && !refused.stderr.contains("~ d"), "{}", refused.stderr);

    env.run(&["resume", &run.id, "--accept-changes"]).expect_success();
    let ran = lines(&env.path("ran.log"));
    assert_eq!(count(&ran, "a"), 1, "unchanged steps are not re-run");
    assert_eq!(count(&ran, "b"), 1);
    assert_eq!(count(&ran, "c"), 1, "the old c ran once");
    assert_eq!(count(&ran, "c2"), 1, "the changed c ran");
    assert_eq!(count(&ran, "d"), 2, "d depends on c, so it re-ran");
    assert_eq!(env.run_record(&run.id).status, RunStatus::Succeeded);
    assert!(
        env.run_record(&run.id).definition.step("c").unwrap().with.to_string().contains("c2"),
        "the run now stores the new definition"
    );
});
