//! `validate` reports every problem of a broken workflow at once, each at its
//! exact `file:line:col`, and `run` of a broken workflow creates no run.
//!
//! Each fixture in `tests/fixtures/invalid/` states what it expects in comments:
//! `# expect: LINE:COL text`.

use std::path::{Path, PathBuf};

use crate::support::Env;

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixtures dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// (line, col, text) from the fixture's `# expect:` comments.
fn expectations(path: &Path) -> Vec<(u32, u32, String)> {
    std::fs::read_to_string(path)
        .expect("read fixture")
        .lines()
        .filter_map(|l| l.strip_prefix("# expect: "))
        .map(|e| {
            let (pos, text) = e.split_once(' ').expect("`# expect: L:C text`");
            let (line, col) = pos.split_once(':').expect("L:C");
            (line.parse().expect("line"), col.parse().expect("col"), text.to_string())
        })
        .collect()
}

#[test]
fn there_is_a_broken_fixture_for_each_problem_class() {
    assert!(fixtures().len() >= 20, "only {} fixtures", fixtures().len());
}

#[test]
fn every_broken_workflow_reports_all_its_problems_at_their_exact_positions() {
    let env = Env::sqlite();
    for fixture in fixtures() {
        let expected = expectations(&fixture);
        assert!(!expected.is_empty(), "{} has no `# expect:` line", fixture.display());
        let out = env.run(&["validate", fixture.to_str().unwrap()]);
        assert_eq!(out.code, Some(2), "{}: exit code\n{}", fixture.display(), out.stderr);
        let errors: Vec<&str> = out.stderr.lines().filter(|l| l.contains(": error: ")).collect();
        for (line, col, text) in &expected {
            let prefix = format!("{}:{line}:{col}: error: ", fixture.display());
            assert!(
                errors.iter().any(|e| e.starts_with(&prefix) && e.contains(text.as_str())),
                "{}: expected an error at {line}:{col} containing {text:?}; got:\n{}",
                fixture.display(),
                errors.join("\n")
            );
        }
        assert_eq!(
            errors.len(),
            expected.len(),
            "{}: one report with exactly the expected errors:\n{}",
            fixture.display(),
            errors.join("\n")
        );
        let n = expected.len();
        assert!(out.stderr.contains(&format!("{n} problem{} found; nothing was run.", if n == 1 { "" } else { "s" })));
    }
}

#[test]
fn running_a_broken_workflow_creates_no_run_and_executes_nothing() {
    let env = Env::sqlite();
    let wf = env.write(
        "broken.yaml",
        r#"name: broken
steps:
  - id: side-effect
    uses: shell
    with: { run: "touch touched" }
  - id: b
    uses: nope
"#,
    );
    env.run(&["run", wf.to_str().unwrap()]).expect_code(2);
    assert!(!env.path("touched").exists(), "no step may run");
    assert!(!Path::new(&env.state).exists(), "no state store is even created");
}

#[test]
fn running_a_broken_workflow_on_postgres_creates_no_run_row() {
    let env = Env::postgres();
    let wf = env.write(
        "broken.yaml",
        r#"name: broken
steps:
  - id: a
    uses: shell
    with: { cmd: x }
"#,
    );
    env.run(&["run", wf.to_str().unwrap()]).expect_code(2);
    assert!(env.runs().is_empty());
}

#[test]
fn a_typo_in_a_step_kind_suggests_the_closest_kind() {
    let env = Env::sqlite();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid/04-unknown-kind.yaml");
    let out = env.run(&["validate", fixture.to_str().unwrap()]);
    assert!(out.stderr.contains("did you mean `shell`?"), "{}", out.stderr);
}

#[test]
fn missing_and_unknown_inputs_are_refused_before_anything_runs() {
    let env = Env::sqlite();
    let wf = env.write(
        "inputs.yaml",
        r#"name: inputs
inputs:
  region: {}
  tag: { default: latest }
steps:
  - id: a
    uses: shell
    with: { run: "touch ran" }
"#,
    );
    let out = env.run(&["run", wf.to_str().unwrap(), "--input", "tga=v1"]);
    out.expect_code(2);
    assert!(out.stderr.contains("unknown input `tga` (did you mean `tag`?)"), "{}", out.stderr);
    assert!(out.stderr.contains("input `region` is required"), "{}", out.stderr);
    assert!(!env.path("ran").exists());
}

#[test]
fn the_shipped_workflows_are_valid() {
    let env = Env::sqlite();
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows")];
    let mut checked = 0;
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).expect("workflows dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                env.run(&["validate", path.to_str().unwrap()]).expect_success();
                checked += 1;
            }
        }
    }
    assert!(checked >= 2, "demo.yaml and stack/network.yaml at least");
}

/// A parameter given by an input is checked once the input is known, before
/// anything runs: `Bad--Name` would have gone to AWS, to fail at CreateDBInstance.
#[test]
fn a_value_from_an_input_that_its_kind_refuses_is_refused_before_any_call() {
    let env = Env::sqlite();
    let wf = env.write(
        "logs.yaml",
        r#"name: logs
inputs: { stack: {} }
steps:
  - id: logs
    uses: aws.logs.log_group
    with: { stack: "${{ inputs.stack }}", region: eu-west-3, name: /ca-a2a/logs }
"#,
    );
    // Nothing answers there: a call would fail differently, and slowly.
    let no_aws = [
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
        ("CA_A2A_FLOW_SKIP_PREFLIGHT", "region,vpc-quota,eip-quota,permissions"),
    ];
    let out = env.run_with(&["run", wf.to_str().unwrap(), "--input", "stack=Bad--Name"], &no_aws);
    out.expect_code(2);
    assert!(out.stderr.contains("step `logs`, parameter `stack`"), "{}", out.stderr);
    assert!(out.stderr.contains("stack name `Bad--Name`"), "{}", out.stderr);
    assert!(env.runs().is_empty(), "no run recorded");
}

/// A step that `when:` turns off never runs: an input left empty for it
/// (hardening's `domain` when HTTPS is not asked for) is not held to its rules.
#[test]
fn a_step_that_when_turns_off_is_not_held_to_its_kinds_rules() {
    let env = Env::sqlite();
    let wf = env.write(
        "optional.yaml",
        r#"name: optional
inputs: { domain: { default: "" } }
steps:
  - id: certificate
    uses: aws.acm.certificate
    when: "${{ inputs.domain != '' }}"
    otherwise: { arn: "" }
    with: { stack: demo, region: eu-west-3, domain_name: "${{ inputs.domain }}" }
  - id: after
    uses: noop
    needs: [certificate]
"#,
    );
    let no_aws = [("AWS_ENDPOINT_URL", "http://127.0.0.1:9")];
    env.run_with(&["plan", wf.to_str().unwrap(), "--offline"], &no_aws).expect_success();
    let refused = env.run_with(&["plan", wf.to_str().unwrap(), "--offline", "--input", "domain=not a domain"], &no_aws);
    refused.expect_code(2);
    assert!(refused.stderr.contains("step `certificate`, parameter `domain_name`"), "{}", refused.stderr);
}
