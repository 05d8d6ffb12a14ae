//! Steps run as a DAG: independent steps at the same time, dependents after
//! what they need; a failure stops dependents and lets unrelated in-flight
//! steps finish; files compose through `include`.

use ca_a2a_flow_engine::{RunStatus, StepStatus};

use crate::support::{Env, both, lines};

/// Two steps that each wait for the other's marker: they finish only if they
/// run at the same time.
const RENDEZVOUS: &str = r#"name: rendezvous
steps:
  - id: left
    uses: shell
    timeout: 20s
    retry: { max_attempts: 1 }
    with: { run: "touch left.ready; while [ ! -e right.ready ]; do sleep 0.05; done" }
  - id: right
    uses: shell
    timeout: 20s
    retry: { max_attempts: 1 }
    with: { run: "touch right.ready; while [ ! -e left.ready ]; do sleep 0.05; done" }
"#;

both!(independent_steps_run_at_the_same_time, |env: &Env| {
    let wf = env.write("rendezvous.yaml", RENDEZVOUS);
    env.run(&["run", wf.to_str().unwrap()]).expect_success();
});

#[test]
fn with_parallelism_one_independent_steps_run_one_after_the_other() {
    let env = Env::sqlite();
    let wf = env.write("rendezvous.yaml", &RENDEZVOUS.replace("timeout: 20s", "timeout: 1s"));
    let out = env.run(&["run", wf.to_str().unwrap(), "--parallelism", "1"]);
    out.expect_code(1);
    assert!(out.stderr.contains("timed out after 1s"), "{}", out.stderr);
}

both!(a_failed_step_blocks_its_dependents_and_lets_unrelated_running_steps_finish, |env: &Env| {
    let wf = env.write(
        "partial.yaml",
        r#"name: partial
steps:
  - id: slow
    uses: shell
    with: { run: "sleep 1; echo slow >> done.log" }
  - id: bad
    uses: shell
    retry: { max_attempts: 1 }
    with: { run: "exit 1" }
  - id: child
    uses: shell
    needs: [bad]
    with: { run: "echo child >> done.log" }
  - id: grandchild
    uses: noop
    needs: [child]
"#,
    );
    let out = env.run(&["run", wf.to_str().unwrap()]);
    out.expect_code(1);
    assert!(out.stderr.contains("step `bad` failed"), "{}", out.stderr);
    let run = env.only_run();
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(env.step(&run.id, "slow").status, StepStatus::Succeeded, "the in-flight step finished");
    assert_eq!(env.step(&run.id, "child").status, StepStatus::Blocked);
    assert_eq!(env.step(&run.id, "grandchild").status, StepStatus::Blocked);
    assert_eq!(lines(&env.path("done.log")), ["slow"]);
    assert!(env.step(&run.id, "child").error.unwrap().message.contains("needs step `bad`"));
});

both!(outputs_flow_to_later_steps_and_included_files_join_the_workflow, |env: &Env| {
    env.write(
        "stack/network.yaml",
        r#"name: network
inputs:
  cidr: { default: 10.1.0.0/16 }
defaults: { retry: { max_attempts: 2, initial_delay: 10ms } }
steps:
  - id: vpc
    uses: shell
    with: { run: "echo id=vpc-${{ inputs.cidr }} >> $FLOW_OUTPUT", outputs: [id] }
"#,
    );
    let wf = env.write(
        "full.yaml",
        r#"name: full
include: [stack/network.yaml]
inputs:
  cidr: { default: 10.9.0.0/16 }
steps:
  - id: subnet
    uses: shell
    with: { run: "echo ${{ steps.vpc.outputs.id }} run=${{ run.id }} home=${{ env.HOME }} > subnet.txt" }
"#,
    );
    env.run(&["run", wf.to_str().unwrap()]).expect_success();
    let run = env.only_run();
    let text = std::fs::read_to_string(env.path("subnet.txt")).unwrap();
    assert!(text.starts_with("vpc-10.9.0.0/16 "), "the including file's input wins: {text}");
    assert!(text.contains(&format!("run={}", run.id)), "{text}");
    assert!(text.contains(&format!("home={}", std::env::var("HOME").unwrap())), "{text}");
    let vpc = run.definition.step("vpc").unwrap();
    assert_eq!(vpc.retry.max_attempts, 2, "an included file's defaults apply to its steps");
    assert_eq!(run.definition.step("subnet").unwrap().needs, ["vpc"], "the template implied the dependency");
});

#[test]
fn graph_prints_every_step_and_dependency_as_mermaid_and_dot() {
    let env = Env::sqlite();
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows/demo.yaml");
    let workflow = ca_a2a_flow_engine::load(&demo, &ca_a2a_flow_steps::registry()).unwrap();
    let edges: usize = workflow.steps.iter().map(|s| s.needs.len()).sum();
    let mermaid = env.run(&["graph", demo.to_str().unwrap()]).expect_success().stdout.clone();
    assert!(mermaid.starts_with("flowchart TD\n"));
    assert_eq!(mermaid.lines().filter(|l| l.contains("[\"")).count(), workflow.steps.len());
    assert_eq!(mermaid.lines().filter(|l| l.contains(" --> ")).count(), edges);
    let dot = env.run(&["graph", demo.to_str().unwrap(), "--output", "dot"]).expect_success().stdout.clone();
    // `--format`, the flag's older name, still works.
    assert_eq!(env.run(&["graph", demo.to_str().unwrap(), "--format", "dot"]).expect_success().stdout, dot);
    assert!(dot.starts_with("digraph"));
    assert_eq!(dot.lines().filter(|l| l.contains(" -> ")).count(), edges);
}

/// A switchable part: `build` runs when `on`, `deploy` needs it, `always` does not.
const SWITCH: &str = r#"name: switch
inputs:
  on: { default: true }
steps:
  - id: build
    uses: shell
    when: "${{ inputs.on }}"
    with: { run: "echo build >> ran.log; echo image=img-1 >> $FLOW_OUTPUT", outputs: [image] }
  - id: deploy
    uses: shell
    with: { run: "echo deploy-${{ steps.build.outputs.image }} >> ran.log" }
  - id: always
    uses: shell
    with: { run: "echo always >> ran.log" }
"#;

both!(a_step_whose_when_is_false_is_skipped_with_every_step_that_needs_it, |env: &Env| {
    let wf = env.write("switch.yaml", SWITCH);
    env.run(&["run", wf.to_str().unwrap(), "--input", "on=false"]).expect_success();
    assert_eq!(lines(&env.path("ran.log")), ["always"], "neither build nor deploy ran");
    let run = env.only_run();
    for id in ["build", "deploy"] {
        let step = env.step(&run.id, id);
        assert_eq!(step.status, StepStatus::Succeeded, "a skipped step ends, succeeded, so the run does");
        assert_eq!(step.outputs.unwrap()["skipped"], true, "{id} is recorded as skipped");
    }
    let logs = env.run(&["logs", &run.id]).stdout;
    assert!(logs.contains("skipped: `when: ${{ inputs.on }}` is false"), "{logs}");
    assert!(logs.contains("skipped: it needs `build`, which was skipped"), "{logs}");
    let status = env.run(&["status", &run.id]).stdout;
    let row = status.lines().find(|l| l.starts_with("deploy ")).unwrap();
    assert!(row.contains(" skipped "), "status says skipped, not succeeded: {row}");

    std::fs::remove_file(env.path("ran.log")).unwrap();
    env.run(&["run", wf.to_str().unwrap()]).expect_success();
    let mut ran = lines(&env.path("ran.log"));
    ran.sort();
    assert_eq!(ran, ["always", "build", "deploy-img-1"], "on by default: all of them ran");
});

both!(a_skipped_step_with_otherwise_stands_in_with_its_values_and_what_needs_it_runs, |env: &Env| {
    let switch = SWITCH
        .replace(
            "when: \"${{ inputs.on }}\"",
            "when: \"${{ inputs.on == 'yes' }}\"\n    otherwise: { image: prebuilt }",
        )
        .replace("on: { default: true }", "on: { default: \"yes\" }");
    let wf = env.write("switch.yaml", &switch);
    env.run(&["run", wf.to_str().unwrap(), "--input", "on=no"]).expect_success();
    let mut ran = lines(&env.path("ran.log"));
    ran.sort();
    assert_eq!(ran, ["always", "deploy-prebuilt"], "build skipped; deploy ran on its stand-in value");
    let run = env.only_run();
    let build = env.step(&run.id, "build").outputs.unwrap();
    assert_eq!((&build["skipped"], &build["image"]), (&serde_json::json!(true), &serde_json::json!("prebuilt")));
    let status = env.run(&["status", &run.id]).stdout;
    assert!(status.lines().any(|l| l.starts_with("build ") && l.contains(" skipped ")), "{status}");
    assert!(status.lines().any(|l| l.starts_with("deploy ") && !l.contains(" skipped ")), "{status}");

    let alone = env.write("alone.yaml", &switch.replace("    when: \"${{ inputs.on == 'yes' }}\"\n", ""));
    let refused = env.run(&["validate", alone.to_str().unwrap()]);
    refused.expect_code(2);
    assert!(refused.stderr.contains("`otherwise` without `when`"), "{}", refused.stderr);
});

both!(when_fewer_may_run_than_are_ready_the_step_heading_the_longest_chain_of_deadlines_starts_first, |env: &Env| {
    // `log` comes first in the file; `subnets` heads a chain to a 40-minute step.
    let wf = env.write(
        "ranked.yaml",
        r#"name: ranked
steps:
  - id: log
    uses: shell
    timeout: 1m
    with: { run: "echo log >> ran.log" }
  - id: subnets
    uses: shell
    timeout: 1m
    with: { run: "echo subnets >> ran.log" }
  - id: database
    uses: shell
    needs: [subnets]
    timeout: 40m
    with: { run: "echo database >> ran.log" }
"#,
    );
    env.run(&["run", wf.to_str().unwrap(), "--parallelism", "1"]).expect_success();
    assert_eq!(lines(&env.path("ran.log")), ["subnets", "database", "log"], "the longest chain first, one at a time");
});

#[test]
fn a_when_naming_an_undeclared_input_is_refused_at_its_line() {
    let env = Env::sqlite();
    let wf = env.write("switch.yaml", &SWITCH.replace("when: \"${{ inputs.on }}\"", "when: \"${{ inputs.of }}\""));
    let out = env.run(&["validate", wf.to_str().unwrap()]);
    out.expect_code(2);
    assert!(out.stderr.contains("switch.yaml:7:11"), "{}", out.stderr);
    assert!(out.stderr.contains("uses input `of`, which is not declared"), "{}", out.stderr);
}

both!(a_step_without_side_effects_commits_once_and_still_records_its_attempt, |env: &Env| {
    let wf = env.write(
        "join.yaml",
        r#"name: join
steps:
  - id: first
    uses: noop
  - id: joined
    uses: noop
    needs: [first]
"#,
    );
    env.run(&["run", wf.to_str().unwrap()]).expect_success();
    let run = env.only_run();
    for id in ["first", "joined"] {
        let step = env.step(&run.id, id);
        assert_eq!(step.status, StepStatus::Succeeded);
        assert_eq!(step.attempt, 1);
        assert!(step.first_started_at.is_some() && step.attempt_started_at.is_some());
        let attempts = env.attempts(&run.id, id);
        assert_eq!(attempts.len(), 1, "one attempt row for {id}");
        assert_eq!((attempts[0].attempt, attempts[0].outcome.as_str()), (1, "succeeded"));
        assert!(attempts[0].finished_at.unwrap() >= attempts[0].started_at);
    }
});
