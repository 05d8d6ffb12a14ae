//! The EC2 builder (`workflows/builder.yaml`) and `aws.ssm.run_command` against
//! moto. Moto keeps SSM commands but runs none (every invocation is `Success`
//! with no output) and has no DescribeInstanceInformation: the fault layer
//! stands in for the SSM agent there (answers at the SDK's HTTP layer), on top
//! of moto, which still receives SendCommand, ListCommands and CancelCommand.

use aws_sdk_ec2::types::Filter;

use crate::support::aws::{moto, sdk, unique_stack};
use crate::support::block_on;
use crate::support::faults::{Fault, FaultProxy, Rule};
use crate::support::{Env, Out};

const BUILDER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/workflows/builder.yaml");

/// The SSM agent of an instance that came up: online.
fn agent_online() -> Rule {
    Rule {
        action: "DescribeInstanceInformation",
        fault: Fault::Answer {
            body: r#"{"InstanceInformationList":[{"InstanceId":"i-any","PingStatus":"Online"}]}"#.into(),
        },
        times: None,
    }
}

/// What the script's invocation ended as, answered for moto (which runs nothing).
fn invocation(status: &str, code: i32, stdout: &str) -> Rule {
    let body = serde_json::json!({
        "CommandId": "c", "InstanceId": "i", "Status": status, "StatusDetails": status,
        "ResponseCode": code, "StandardOutputContent": stdout, "StandardErrorContent": ""
    });
    Rule { action: "GetCommandInvocation", fault: Fault::Answer { body: body.to_string() }, times: None }
}

fn run_builder(env: &Env, proxy: &FaultProxy, stack: &str) -> Out {
    env.run_with(
        &["run", BUILDER, "--input", &format!("stack={stack}")],
        &[("AWS_ENDPOINT_URL", &proxy.url), ("CA_A2A_FLOW_POLL_INTERVAL", "100ms")],
    )
}

/// A builder of a new stack named after `prefix`, run to its end: the proxy
/// it ran through (its agent online in SSM), its state file and its stack.
fn a_builder_run(prefix: &str) -> (FaultProxy, Env, String) {
    let proxy = FaultProxy::start(&moto(), vec![agent_online()]);
    let env = Env::sqlite();
    let stack = unique_stack(prefix);
    run_builder(&env, &proxy, &stack).expect_success();
    (proxy, env, stack)
}

#[test]
fn the_builder_is_an_instance_with_its_profile_and_no_ssh_and_destroy_removes_all_of_it() {
    let (proxy, env, stack) = a_builder_run("builder");
    let run = env.only_run();

    let config = sdk();
    let (ec2, iam, ssm) =
        (aws_sdk_ec2::Client::new(&config), aws_sdk_iam::Client::new(&config), aws_sdk_ssm::Client::new(&config));
    let owned = || {
        block_on(
            ec2.describe_instances()
                .filters(Filter::builder().name("tag:ca-a2a-flow:stack").values(&stack).build())
                .filters(Filter::builder().name("instance-state-name").values("pending").values("running").build())
                .send(),
        )
        .unwrap()
        .reservations()
        .iter()
        .flat_map(|r| r.instances().to_vec())
        .collect::<Vec<_>>()
    };
    let instances = owned();
    assert_eq!(instances.len(), 1, "one builder instance");
    let instance = &instances[0];
    assert_eq!(instance.instance_type().unwrap().as_str(), "t3.large");
    let ami = block_on(
        ssm.get_parameter().name("/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64").send(),
    )
    .unwrap();
    assert_eq!(instance.image_id(), ami.parameter().unwrap().value(), "the current Amazon Linux, from SSM");
    let profile_name = format!("{stack}-builder-role");
    assert!(
        instance.iam_instance_profile().and_then(|p| p.arn()).unwrap().ends_with(&format!("/{profile_name}")),
        "launched with the instance profile: {:?}",
        instance.iam_instance_profile()
    );
    let profile = block_on(iam.get_instance_profile().instance_profile_name(&profile_name).send()).unwrap();
    assert_eq!(profile.instance_profile().unwrap().roles()[0].role_name(), profile_name, "the profile holds the role");
    let attached = block_on(iam.list_attached_role_policies().role_name(&profile_name).send()).unwrap();
    let policies: Vec<&str> = attached.attached_policies().iter().filter_map(|p| p.policy_name()).collect();
    for wanted in ["AmazonSSMManagedInstanceCore", "AmazonEC2ContainerRegistryPowerUser", "CloudWatchAgentServerPolicy"]
    {
        assert!(policies.contains(&wanted), "{wanted} attached: {policies:?}");
    }
    let groups: Vec<String> =
        instance.security_groups().iter().filter_map(|g| g.group_id().map(String::from)).collect();
    assert_eq!(groups.len(), 1);
    let sg = block_on(ec2.describe_security_groups().group_ids(&groups[0]).send()).unwrap();
    assert!(sg.security_groups()[0].ip_permissions().is_empty(), "no ingress at all, so no SSH: {sg:?}");
    let volumes = block_on(
        ec2.describe_volumes()
            .filters(Filter::builder().name("attachment.instance-id").values(instance.instance_id().unwrap()).build())
            .send(),
    )
    .unwrap();
    assert_eq!(volumes.volumes()[0].size(), Some(60), "60 GiB root volume");
    assert!(proxy.actions().iter().any(|a| a == "DescribeInstanceInformation!answered"), "waited for SSM");
    let ready = env.step(&run.id, "builder-ready").outputs.unwrap();
    assert_eq!(ready["exit_code"], 0, "the readiness command's exit code is recorded");

    run_builder(&env, &proxy, &stack).expect_success();
    assert_eq!(owned().len(), 1, "a second run adopts the builder");
    let sends = proxy.actions().iter().filter(|a| *a == "RunInstances").count();
    assert_eq!(sends, 1, "launched once");

    env.run_with(&["destroy", &run.id, "--yes"], &[("CA_A2A_FLOW_POLL_INTERVAL", "100ms")]).expect_success();
    assert!(owned().is_empty(), "the instance is terminated");
    assert!(block_on(iam.get_instance_profile().instance_profile_name(&profile_name).send()).is_err(), "profile gone");
    assert!(block_on(iam.get_role().role_name(&profile_name).send()).is_err(), "role gone");
    assert!(block_on(ec2.describe_security_groups().group_ids(&groups[0]).send()).is_err(), "security group gone");
}

/// A workflow running one command on an instance moto knows.
fn command_workflow(env: &Env, timeout: &str) -> std::path::PathBuf {
    let ec2 = aws_sdk_ec2::Client::new(&sdk());
    let image =
        block_on(ec2.describe_images().owners("amazon").send()).unwrap().images()[0].image_id().unwrap().to_string();
    let launched = block_on(ec2.run_instances().image_id(image).min_count(1).max_count(1).send()).unwrap();
    let instance = launched.instances()[0].instance_id().unwrap().to_string();
    env.write(
        "command.yaml",
        &format!(
            r#"name: command
defaults: {{ retry: {{ max_attempts: 1 }} }}
steps:
  - id: build
    uses: aws.ssm.run_command
    with:
      region: eu-west-3
      instance_id: {instance}
      run: make images
      timeout: {timeout}
      tail_lines: 2
"#
        ),
    )
}

#[test]
fn a_command_records_its_exit_code_and_output() {
    let proxy = FaultProxy::start(&moto(), vec![invocation("Success", 0, "built 5 images\nall pushed\n")]);
    let env = Env::sqlite();
    let wf = command_workflow(&env, "1m");
    env.run_with(&["run", wf.to_str().unwrap()], &[("AWS_ENDPOINT_URL", &proxy.url)]).expect_success();
    let out = env.step(&env.only_run().id, "build").outputs.unwrap();
    assert_eq!(out["exit_code"], 0);
    assert_eq!(out["output_tail"], "  | built 5 images\n  | all pushed");
    assert!(out["command_id"].as_str().is_some_and(|c| !c.is_empty()));
    assert_eq!(proxy.actions().iter().filter(|a| *a == "SendCommand").count(), 1, "sent to moto once");
}

#[test]
fn a_failing_command_fails_the_step_with_its_exit_code_and_output_tail() {
    let output = "step 1/5\nstep 2/5\nwriting layer\nerror: no space left on device\n";
    let proxy = FaultProxy::start(&moto(), vec![invocation("Failed", 2, output)]);
    let env = Env::sqlite();
    let wf = command_workflow(&env, "1m");
    let out = env.run_with(&["run", wf.to_str().unwrap()], &[("AWS_ENDPOINT_URL", &proxy.url)]);
    out.expect_code(1);
    assert!(out.stderr.contains("exited with status 2; last output:"), "{}", out.stderr);
    assert!(out.stderr.contains("  | writing layer\n  | error: no space left on device"), "the tail: {}", out.stderr);
    assert!(!out.stderr.contains("step 2/5"), "only the tail (2 lines): {}", out.stderr);
}

#[test]
fn a_command_past_its_deadline_is_cancelled_and_fails_saying_so() {
    let proxy = FaultProxy::start(&moto(), vec![invocation("InProgress", -1, "")]);
    let env = Env::sqlite();
    let wf = command_workflow(&env, "2s");
    let out = env.run_with(
        &["run", wf.to_str().unwrap()],
        &[("AWS_ENDPOINT_URL", &proxy.url), ("CA_A2A_FLOW_POLL_INTERVAL", "200ms")],
    );
    out.expect_code(1);
    assert!(out.stderr.contains("exceeded its deadline of 2s and was cancelled"), "{}", out.stderr);
    assert!(proxy.actions().iter().any(|a| a == "CancelCommand"), "{:?}", proxy.actions());
}

#[test]
fn a_run_killed_after_sending_follows_the_same_command_on_resume() {
    let proxy = FaultProxy::start(&moto(), vec![invocation("Success", 0, "ok\n")]);
    let env = Env::sqlite();
    let wf = command_workflow(&env, "1m");
    // The killed attempt counts toward max_attempts: a second one may follow it.
    std::fs::write(&wf, std::fs::read_to_string(&wf).unwrap().replace("max_attempts: 1", "max_attempts: 2")).unwrap();
    let killed = env.run_with(
        &["run", wf.to_str().unwrap()],
        &[("AWS_ENDPOINT_URL", &proxy.url), ("CA_A2A_FLOW_FAILPOINT", "before_commit:build")],
    );
    assert_eq!(killed.code, None, "killed: {}", killed.stderr);
    let run = env.only_run();
    env.run_with(&["resume", &run.id], &[("AWS_ENDPOINT_URL", &proxy.url)]).expect_success();
    assert_eq!(proxy.actions().iter().filter(|a| *a == "SendCommand").count(), 1, "the script ran once");
    let logs = env.run(&["logs", &run.id, "--step", "build"]);
    assert!(logs.stdout.contains("sent by an earlier attempt"), "{}", logs.stdout);
}

/// A moto instance standing in for the builder.
fn builder_instance() -> String {
    let ec2 = aws_sdk_ec2::Client::new(&sdk());
    let image =
        block_on(ec2.describe_images().owners("amazon").send()).unwrap().images()[0].image_id().unwrap().to_string();
    let launched = block_on(ec2.run_instances().image_id(image).min_count(1).max_count(1).send()).unwrap();
    launched.instances()[0].instance_id().unwrap().to_string()
}

const DIGEST: &str = "sha256:4f0c3b1d9e8a7f6e5d4c3b2a1908f7e6d5c4b3a29180f7e6d5c4b3a291807f6e";

#[test]
fn the_full_stack_builds_its_mcp_server_on_the_builder_and_serves_it_behind_the_alb() {
    let instance = builder_instance();
    // What the build script prints last, as the builder would (moto runs no script).
    let printed = format!(
        "STEP 1/6: FROM python:3.12-slim\n...\nca-a2a-flow:source_hash={}\nca-a2a-flow:tag=mcp-0a1b2c3d4e5f\nca-a2a-flow:digest={DIGEST}\nca-a2a-flow:action=built\n",
        "ab".repeat(32)
    );
    let proxy = FaultProxy::start(&moto(), vec![agent_online(), invocation("Success", 0, &printed)]);
    let env = Env::sqlite();
    let stack = unique_stack("mcp");
    env.run_with(
        &[
            "run",
            crate::support::aws::FULL,
            "--input",
            &format!("stack={stack}"),
            "--input",
            "healthy_targets=0",
            "--input",
            &format!("mcp_builder_instance={instance}"),
        ],
        &[("AWS_ENDPOINT_URL", &proxy.url), ("CA_A2A_FLOW_POLL_INTERVAL", "100ms")],
    )
    .expect_success();
    let run = env.only_run();

    let config = sdk();
    let ssm = aws_sdk_ssm::Client::new(&config);
    let sent = block_on(ssm.list_commands().instance_id(&instance).send()).unwrap();
    let ours: Vec<_> = sent
        .commands()
        .iter()
        .filter(|c| c.comment().is_some_and(|t| t.starts_with(&format!("ca-a2a-flow {} mcp-image ", run.id))))
        .collect();
    assert_eq!(ours.len(), 1, "one build sent to the builder");
    assert_eq!(proxy.actions().iter().filter(|a| *a == "SendCommand").count(), 1);
    let script = &ours[0].parameters().unwrap()["commands"][0];
    assert!(script.contains("cd '/opt/ca-a2a/mcp-server'"), "{script}");
    assert!(script.contains(&format!("--repository-name '{stack}/mcp-server'")), "adopts a pushed tag first: {script}");
    assert!(script.contains("docker build -f"), "the builder's Amazon Linux 2023 has docker, not podman: {script}");

    let image = env.step(&run.id, "mcp-image").outputs.unwrap();
    assert_eq!(image["action"], "built");
    let repo = env.step(&run.id, "mcp-server-repo").outputs.unwrap();
    let want = format!("{}@{DIGEST}", repo["uri"].as_str().unwrap());
    assert_eq!(image["image"], want.as_str());

    let ecs = aws_sdk_ecs::Client::new(&config);
    let task = env.step(&run.id, "mcp-task").outputs.unwrap();
    let td = block_on(ecs.describe_task_definition().task_definition(task["arn"].as_str().unwrap()).send()).unwrap();
    let container = &td.task_definition().unwrap().container_definitions()[0];
    assert_eq!(container.image(), Some(want.as_str()), "the task runs the pushed digest");
    assert_eq!(container.port_mappings()[0].container_port(), Some(8004));
    let cluster = env.step(&run.id, "cluster").outputs.unwrap();
    let service = env.step(&run.id, "mcp-server").outputs.unwrap();
    let found = block_on(
        ecs.describe_services()
            .cluster(cluster["name"].as_str().unwrap())
            .services(service["name"].as_str().unwrap())
            .send(),
    )
    .unwrap();
    let tg = env.step(&run.id, "mcp-tg").outputs.unwrap();
    assert_eq!(found.services()[0].load_balancers()[0].target_group_arn(), tg["arn"].as_str());

    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&config);
    let listener = env.step(&run.id, "http").outputs.unwrap();
    let rules = block_on(elb.describe_rules().listener_arn(listener["arn"].as_str().unwrap()).send()).unwrap();
    let rule = rules.rules().iter().find(|r| r.priority() == Some("50")).expect("the /mcp* rule");
    assert_eq!(rule.actions()[0].target_group_arn(), tg["arn"].as_str());
}

#[test]
fn the_full_stack_with_its_mcp_server_but_no_builder_is_refused_before_anything_is_made() {
    let proxy = FaultProxy::start(&moto(), vec![]);
    let env = Env::sqlite();
    let out = env.run_with(
        &["run", crate::support::aws::FULL, "--input", &format!("stack={}", unique_stack("nobuilder"))],
        &[("AWS_ENDPOINT_URL", &proxy.url)],
    );
    out.expect_code(2);
    assert!(
        out.stderr
            .contains("preflight `builder` failed: step `mcp-image` builds on the EC2 builder but names no instance"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("run workflows/builder.yaml"), "{}", out.stderr);
    let writes: Vec<String> = proxy
        .actions()
        .into_iter()
        .filter(|a| {
            !a.starts_with("Describe") && !a.starts_with("Get") && !a.starts_with("List") && !a.ends_with("(dry-run)")
        })
        .collect();
    assert!(writes.is_empty(), "nothing was created: {writes:?}");
    assert!(env.runs().is_empty());
}

#[test]
fn gc_lists_a_forgotten_builder_with_what_it_costs_and_terminates_it() {
    let (_proxy, forgotten, stack) = a_builder_run("oldbuilder");
    let instance = forgotten.step(&forgotten.only_run().id, "builder").outputs.unwrap()["instance_id"].clone();

    // Another state store: that stack is nobody's here.
    let env = Env::sqlite();
    let listed = env.run(&["gc", "--stack", &stack, "--region", "eu-west-3", "--output", "json"]);
    listed.expect_success();
    let orphans = listed.json();
    let found = orphans.as_array().unwrap().iter().find(|o| o["kind"] == "aws.ec2.instance").expect("the instance");
    assert_eq!(found["id"], instance);
    assert!((found["monthly"].as_f64().unwrap() - (730.0 * 0.0944 + 60.0 * 0.0928)).abs() < 0.02, "{found}");
    assert!(orphans.as_array().unwrap().iter().any(|o| o["kind"] == "aws.ec2.security_group"), "{orphans}");

    env.run_with(
        &["gc", "--stack", &stack, "--region", "eu-west-3", "--delete", "--yes"],
        &[("CA_A2A_FLOW_POLL_INTERVAL", "100ms")],
    )
    .expect_success();
    let ec2 = aws_sdk_ec2::Client::new(&sdk());
    let state = block_on(ec2.describe_instances().instance_ids(instance.as_str().unwrap()).send()).unwrap();
    let state = state.reservations()[0].instances()[0].state().unwrap().name().unwrap().as_str().to_string();
    assert_eq!(state, "terminated");
    let again = env.run(&["gc", "--stack", &stack, "--region", "eu-west-3", "--output", "json"]);
    assert_eq!(again.json().as_array().unwrap().len(), 0, "nothing left that gc covers");
}

#[test]
fn a_builder_that_never_comes_online_in_ssm_fails_at_its_deadline_saying_what_it_waited_for() {
    // The agent never registers: SSM knows no such instance.
    let never = Rule {
        action: "DescribeInstanceInformation",
        fault: Fault::Answer { body: r#"{"InstanceInformationList":[]}"#.into() },
        times: None,
    };
    let proxy = FaultProxy::start(&moto(), vec![never]);
    let env = Env::sqlite();
    let stack = unique_stack("offline");
    let wf = env.write(
        "builder.yaml",
        &std::fs::read_to_string(BUILDER).unwrap().replace("retry: { max_attempts: 5,", "retry: { max_attempts: 1,"),
    );
    let out = env.run_with(
        &["run", wf.to_str().unwrap(), "--input", &format!("stack={stack}"), "--input", "ssm_online_within=1s"],
        &[("AWS_ENDPOINT_URL", &proxy.url), ("CA_A2A_FLOW_POLL_INTERVAL", "100ms")],
    );
    out.expect_code(1);
    assert!(out.stderr.contains("in SSM still not registered yet (the agent starts at boot; the role needs AmazonSSMManagedInstanceCore) after 1"), "{}", out.stderr);
    let logs = env.run(&["logs", &env.only_run().id, "--step", "builder"]).stdout;
    assert!(logs.contains("progress builder"), "the wait showed its progress:\n{logs}");
}

/// Packages of Amazon Linux 2023's own repositories that a builder may install
/// (AL2023 package list, docs.aws.amazon.com/linux/al2023/release-notes/all-packages-AL2023.html;
/// podman and buildah are not there: amazonlinux/amazon-linux-2023#67).
const AL2023_PACKAGES: &[&str] = &["docker", "git", "postgresql15", "tar", "gzip", "awscli-2", "amazon-ssm-agent"];

#[test]
fn the_builder_installs_only_what_amazon_linux_2023_has_and_proves_each_tool_answers() {
    let (_proxy, env, _stack) = a_builder_run("bootstrap");
    let run = env.only_run();
    let workflow = std::fs::read_to_string(BUILDER).unwrap();
    let installs: Vec<&str> = workflow
        .lines()
        .filter_map(|l| l.trim().strip_prefix("dnf install -y "))
        .flat_map(|packages| packages.split_whitespace())
        .collect();
    assert!(!installs.is_empty(), "the bootstrap installs with dnf");
    for package in &installs {
        assert!(AL2023_PACKAGES.contains(package), "{package} is not in Amazon Linux 2023's repositories");
    }
    assert!(workflow.contains("systemctl enable --now docker"), "the docker daemon is started");

    let instance = env.step(&run.id, "builder").outputs.unwrap()["instance_id"].as_str().unwrap().to_string();
    let ssm = aws_sdk_ssm::Client::new(&sdk());
    let sent = block_on(ssm.list_commands().instance_id(&instance).send()).unwrap();
    let ready = sent
        .commands()
        .iter()
        .find(|c| c.comment().is_some_and(|t| t.starts_with(&format!("ca-a2a-flow {} builder-ready ", run.id))))
        .expect("builder-ready sent its command");
    let script = &ready.parameters().unwrap()["commands"][0];
    for tool in ["docker info", "git --version", "psql --version", "aws --version"] {
        assert!(script.contains(tool), "builder-ready asks `{tool}`: {script}");
    }
    assert!(!script.contains("podman"), "{script}");
}
