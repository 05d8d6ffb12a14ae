//! The first run of a new user: credentials missing, expired, or of another
//! account than the stack's stop the run at preflight, exit 2, nothing
//! recorded, saying what the SDK tried and the fix; the SDK's own logs stay
//! off the terminal unless asked for.

use crate::support::Env;
use crate::support::aws::{AnotherAccount, FULL, deploy, moto, unique_stack};
use crate::support::faults::{Fault, FaultProxy, Rule};

const KEYS: [&str; 3] = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"];

#[test]
fn with_no_credentials_anywhere_the_run_stops_at_preflight_saying_where_the_sdk_looked_and_records_nothing() {
    let env = Env::sqlite();
    let stack = format!("stack={}", unique_stack("nocreds"));
    // The suite's environment has no profile file and no instance metadata: only the keys are taken away.
    let out = env.run_without(&["run", FULL, "--input", &stack, "--input", "mcp=false"], &KEYS);
    out.expect_code(2);
    assert!(out.stderr.contains("preflight `credentials` failed: no AWS credentials found"), "{}", out.stderr);
    for place in ["AWS_ACCESS_KEY_ID", "~/.aws/config", "web identity", "EC2 instance role"] {
        assert!(out.stderr.contains(place), "it says the SDK looked in {place}: {}", out.stderr);
    }
    assert!(out.stderr.contains("`aws configure`") && out.stderr.contains("`aws sso login"), "{}", out.stderr);
    assert!(!out.stderr.contains("preflight `region`"), "the checks that would ask AWS are not tried: {}", out.stderr);
    assert!(!out.stderr.contains("WARN") && !out.stderr.contains("aws_config"), "no SDK log: {}", out.stderr);
    assert!(env.runs().is_empty(), "no run was recorded");

    // Asked for, the SDK's own logs come: where its credential chain looked.
    let verbose = env.run_without(&["-vv", "run", FULL, "--input", &stack, "--input", "mcp=false"], &KEYS);
    verbose.expect_code(2);
    assert!(verbose.stderr.contains("aws_config"), "{}", verbose.stderr);
    assert!(env.runs().is_empty(), "still no run recorded");
}

#[test]
fn an_expired_session_stops_the_run_at_preflight_with_the_sso_login_fix() {
    let expired = Rule {
        action: "GetCallerIdentity",
        fault: Fault::Error {
            status: 403,
            code: "ExpiredToken",
            message: "The security token included in the request is expired".into(),
        },
        times: None,
    };
    let proxy = FaultProxy::start(&moto(), vec![expired]);
    let env = Env::sqlite();
    let out = deploy(&env, &unique_stack("expired"), Some(&proxy.url), &[]);
    out.expect_code(2);
    assert!(
        out.stderr.contains("preflight `credentials` failed: AWS says the session of access key"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("`aws sso login --profile NAME`"), "{}", out.stderr);
    let asked: Vec<String> = proxy.actions().into_iter().filter(|a| !a.starts_with("GetCallerIdentity")).collect();
    assert!(asked.is_empty(), "nothing else was asked of AWS: {asked:?}");
    assert!(env.runs().is_empty(), "no run was recorded");
}

#[test]
fn credentials_of_another_account_than_the_stacks_last_run_stop_the_run_at_preflight_naming_both() {
    let env = Env::sqlite();
    let stack = unique_stack("otheraccount");
    let wf = env.write(
        "identity.yaml",
        "name: identity\ninputs: { stack: {} }\nsteps:\n  - id: identity\n    uses: aws.sts.caller_identity\n    with: { region: eu-west-3 }\n",
    );
    let input = format!("stack={stack}");
    env.run(&["run", wf.to_str().unwrap(), "--input", &input]).expect_success();
    let first = env.only_run().id;

    let other = AnotherAccount::new(&std::env::var("AWS_ENDPOINT_URL").unwrap());
    let out = env.run_with(&["run", wf.to_str().unwrap(), "--input", &input], &other.vars());
    out.expect_code(2);
    let said = format!(
        "these credentials are of account {} (arn:aws:sts::{}:assumed-role/suite/suite), but run {first} of this stack says 123456789012",
        other.id, other.id
    );
    assert!(out.stderr.contains(&said), "{}", out.stderr);
    assert_eq!(env.runs().len(), 1, "no second run was recorded");

    // Another stack name is another stack: those credentials may deploy it.
    let elsewhere = format!("stack={}", unique_stack("elsewhere"));
    env.run_with(&["run", wf.to_str().unwrap(), "--input", &elsewhere], &other.vars()).expect_success();
}
