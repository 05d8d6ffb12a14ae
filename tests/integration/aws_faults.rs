//! AWS behaviours moto does not have, injected by the fault layer in front of
//! moto: throttling, a call that hangs after AWS acted, AccessDenied from an
//! organisation policy, the VPC quota.

use std::time::Duration;

use crate::support::Env;
use crate::support::aws::{NETWORK, ec2, expect_exactly_the_network, moto, unique_stack};
use crate::support::faults::{Fault, FaultProxy, Rule};

/// Runs the network workflow for `stack` with the SDK pointed at the proxy.
fn deploy(env: &Env, proxy: &FaultProxy, stack: &str, extra: &[(&str, &str)]) -> crate::support::Out {
    let wf = env.write(
        "network.yaml",
        &NETWORK.replace(
            "retry: { max_attempts: 3, initial_delay: 200ms }",
            "retry: { max_attempts: 8, initial_delay: 100ms }",
        ),
    );
    let input = format!("stack={stack}");
    let mut vars = vec![("AWS_ENDPOINT_URL", proxy.url.as_str())];
    vars.extend_from_slice(extra);
    env.run_with(&["run", wf.to_str().unwrap(), "--input", &input], &vars)
}

#[test]
fn throttling_on_a_third_of_the_calls_still_deploys_exactly_the_network() {
    let proxy =
        FaultProxy::start(&moto(), vec![Rule { action: "*", fault: Fault::Throttle { ratio: 0.3 }, times: None }]);
    let env = Env::sqlite();
    let stack = unique_stack("throttle");
    deploy(&env, &proxy, &stack, &[]).expect_success();
    expect_exactly_the_network(&ec2(), &stack);
    assert!(
        proxy.actions().iter().any(|a| a.ends_with("!throttled")),
        "some calls were throttled: {:?}",
        proxy.actions()
    );
}

#[test]
fn a_call_that_hangs_after_aws_acted_is_cut_at_its_deadline_and_the_retry_adopts_what_it_made() {
    let rule = Rule { action: "CreateVpc", fault: Fault::HangAfterForwarding(Duration::from_secs(30)), times: Some(1) };
    let proxy = FaultProxy::start(&moto(), vec![rule]);
    let env = Env::sqlite();
    let stack = unique_stack("hang");
    // 5 s, far below the 30 s hang; not less, so a cold emulator's first calls are not cut too.
    // The preflight's dry-run CreateVpc would meet the hang instead of the step: skipped here.
    let skip = ("CA_A2A_FLOW_SKIP_PREFLIGHT", "vpc-quota,eip-quota,permissions");
    deploy(&env, &proxy, &stack, &[("CA_A2A_FLOW_AWS_CALL_TIMEOUT", "5s"), skip]).expect_success();
    expect_exactly_the_network(&ec2(), &stack);
    let run = env.only_run();
    let vpc = env.step(&run.id, "vpc");
    let attempts = env.attempts(&run.id, "vpc");
    assert!(vpc.attempt >= 2, "the cut call failed attempt 1: {attempts:?}");
    assert_eq!(vpc.outputs.unwrap()["action"], "adopted", "a later attempt found the VPC the cut call made");
    let first = &attempts[0];
    assert!(first.error.as_ref().unwrap().message.contains("ec2:CreateVpc got no answer within 5s"), "{first:?}");
}

#[test]
fn access_denied_by_an_organisation_policy_is_fatal_and_names_the_action_and_the_region() {
    let rule = Rule {
        action: "CreateVpc",
        fault: Fault::Error {
            status: 403,
            code: "UnauthorizedOperation",
            message: "You are not authorized to perform this operation. User is not authorized to perform ec2:CreateVpc with an explicit deny in a service control policy".into(),
        },
        times: None,
    };
    let proxy = FaultProxy::start(&moto(), vec![rule]);
    let env = Env::sqlite();
    // The permission probe of preflight would refuse the run first (aws_plan tests
    // that): here the step itself meets the denial.
    let skip = ("CA_A2A_FLOW_SKIP_PREFLIGHT", "vpc-quota,eip-quota,permissions");
    let out = deploy(&env, &proxy, &unique_stack("denied"), &[skip]);
    out.expect_code(1);
    assert!(out.stderr.contains("ec2:CreateVpc failed: UnauthorizedOperation"), "{}", out.stderr);
    assert!(
        out.stderr.contains("(request id sim-"),
        "the request id of the answer (written by aws-sim's HTTP module): {}",
        out.stderr
    );
    assert!(out.stderr.contains("an organisation policy (SCP) forbids ec2:CreateVpc here"), "{}", out.stderr);
    assert_eq!(env.attempts(&env.only_run().id, "vpc").len(), 1, "fatal: not retried");
}

#[test]
fn the_vpc_quota_is_fatal_and_lists_the_vpcs_left_by_our_stacks() {
    let env = Env::sqlite();
    let orphan_stack = unique_stack("orphan");
    let wf = env.write("network.yaml", NETWORK);
    env.run(&["run", wf.to_str().unwrap(), "--input", &format!("stack={orphan_stack}")]).expect_success();
    let orphan = expect_exactly_the_network(&ec2(), &orphan_stack);

    let rule = Rule {
        action: "CreateVpc",
        fault: Fault::Error {
            status: 400,
            code: "VpcLimitExceeded",
            message: "The maximum number of VPCs has been reached.".into(),
        },
        times: None,
    };
    let proxy = FaultProxy::start(&moto(), vec![rule]);
    let out = deploy(&Env::sqlite(), &proxy, &unique_stack("quota"), &[]);
    out.expect_code(1);
    assert!(out.stderr.contains("VpcLimitExceeded"), "{}", out.stderr);
    assert!(out.stderr.contains("tagged by ca-a2a-flow"), "{}", out.stderr);
    assert!(out.stderr.contains(&format!("{orphan} (stack {orphan_stack}")), "names the orphan: {}", out.stderr);
    assert!(out.stderr.contains("quota"), "{}", out.stderr);
}

#[test]
fn gc_meeting_an_aws_error_says_it_as_a_cloud_failure_not_as_a_bad_command() {
    let rule = Rule {
        action: "DescribeVpcs",
        fault: Fault::Error {
            status: 403,
            code: "UnauthorizedOperation",
            message:
                "You are not authorized to perform this operation. User is not authorized to perform ec2:DescribeVpcs"
                    .into(),
        },
        times: None,
    };
    let proxy = FaultProxy::start(&moto(), vec![rule]);
    let env = Env::sqlite();
    let out = env.run_with(&["gc", "--region", "eu-west-3"], &[("AWS_ENDPOINT_URL", proxy.url.as_str())]);
    out.expect_code(1);
    assert!(out.stderr.contains("ec2:DescribeVpcs failed: UnauthorizedOperation"), "{}", out.stderr);
    assert!(out.stderr.contains("= hint:"), "the classified error keeps its hint: {}", out.stderr);
}
