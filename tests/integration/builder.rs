//! The EC2 builder (`workflows/builder.yaml`) and `aws.ssm.run_command` against
//! moto. Moto keeps SSM commands but runs none (every invocation is `Success`
//! with no output) and has no DescribeInstanceInformation: the fault layer
//! stands in for the SSM agent there (answers at the SDK's HTTP layer), on top
//! of moto, which still receives SendCommand, ListCommands and CancelCommand.

use aws_sdk_ec2::types::Filter;

use crate::support::aws::{AGENTS, FULL, moto, sdk, task_image, unique_stack};
use crate::support::block_on;
use crate::support::faults::{Fault, FaultProxy, Rule, invocation};
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

const DIGEST: &str = "sha256:4f0c3b1d9e8a7f6e5d4c3b2a1908f7e6d5c4b3a29180f7e6d5c4b3a291807f6e";

/// The commands this run sent to `instance` for `step`.
fn sent_by(run: &str, step: &str, instance: &str) -> Vec<aws_sdk_ssm::types::Command> {
    let ssm = aws_sdk_ssm::Client::new(&sdk());
    let prefix = format!("ca-a2a-flow {run} {step} ");
    let (mut ours, mut token) = (Vec::new(), None);
    loop {
        let page = block_on(ssm.list_commands().instance_id(instance).set_next_token(token).send()).unwrap();
        ours.extend(page.commands().iter().filter(|c| c.comment().is_some_and(|t| t.starts_with(&prefix))).cloned());
        token = page.next_token().map(String::from);
        if token.is_none() {
            return ours;
        }
    }
}

#[test]
fn the_full_stack_makes_its_builder_and_builds_the_five_images_there_from_contexts_sent_through_s3() {
    // What each build script prints last, as the builder would (moto runs no script).
    let printed = format!("Step 1/4 : ARG BASE\n...\nca-a2a-flow:digest={DIGEST}\nca-a2a-flow:action=built\n");
    let proxy = FaultProxy::start(&moto(), vec![agent_online(), invocation("Success", 0, &printed)]);
    let env = Env::sqlite();
    let stack = unique_stack("onbuilder");
    let stack_input = format!("stack={stack}");
    let args = ["run", FULL, "--input", &stack_input, "--input", "healthy_targets=0", "--input", "build_on=builder"];
    let vars = [("AWS_ENDPOINT_URL", proxy.url.as_str()), ("CA_A2A_FLOW_POLL_INTERVAL", "100ms")];

    // Killed once orchestrator's context is uploaded and its build has run, before its checkpoint.
    let killed =
        env.run_with(&args, &[&vars[..], &[("CA_A2A_FLOW_FAILPOINT", "before_commit:orchestrator-image")]].concat());
    assert_eq!(killed.code, None, "killed: {}", killed.stderr);
    let run = env.only_run();
    env.run_with(&["resume", &run.id], &vars).expect_success();

    // The run made the builder: no instance id was given.
    let builder = env.step(&run.id, "builder").outputs.unwrap();
    let instance = builder["instance_id"].as_str().unwrap().to_string();
    assert!(instance.starts_with("i-"), "{builder:?}");
    let account = env.step(&run.id, "identity").outputs.unwrap()["account_id"].as_str().unwrap().to_string();
    let bucket = format!("{stack}-build-contexts-{account}");
    let s3 = aws_sdk_s3::Client::new(&sdk());
    let objects = block_on(s3.list_objects_v2().bucket(&bucket).send()).unwrap();
    let keys: Vec<&str> = objects.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys.len(), 5, "one context per image, content-addressed: {keys:?}");

    for agent in AGENTS {
        let step = format!("{agent}-image");
        let image = env.step(&run.id, &step).outputs.unwrap();
        let hash = image["source_hash"].as_str().unwrap();
        let key = format!("contexts/{stack}/{agent}/{hash}.tar.gz");
        assert!(keys.contains(&key.as_str()), "{agent}'s context at {key}: {keys:?}");
        let sent = sent_by(&run.id, &step, &instance);
        assert_eq!(sent.len(), 1, "{agent} was built once, the kill notwithstanding");
        assert!(sent[0].instance_ids().contains(&instance), "on the builder the run made");
        let script = &sent[0].parameters().unwrap()["commands"][0];
        assert!(
            script.contains(&format!("aws s3 cp --region 'eu-west-3' 's3://{bucket}/{key}' - | tar -xzf -")),
            "{script}"
        );
        assert!(script.contains("docker build -f"), "the builder's Amazon Linux 2023 has docker, not podman: {script}");
        assert!(script.contains("--build-arg 'BASE=public.ecr.aws/docker/library/busybox:1.36'"), "{script}");
        assert!(!script.contains("/opt/"), "no clone on the builder: {script}");

        let repo = env.step(&run.id, &format!("{agent}-repo")).outputs.unwrap();
        let want = format!("{}@{DIGEST}", repo["uri"].as_str().unwrap());
        assert_eq!(image["image"], want.as_str(), "{agent}");
        assert_eq!(task_image(&env, &run.id, agent), want, "{agent}'s task runs the pushed digest");
    }
    let logs = env.run(&["logs", &run.id, "--step", "orchestrator-image"]).stdout;
    assert!(logs.contains("is there already, not uploaded"), "the resumed attempt found its context:\n{logs}");
    assert!(logs.contains("sent by an earlier attempt"), "and followed the build it had sent:\n{logs}");

    // The same sources again, while ECR still lacks the tags (say the builds failed): nothing is uploaded.
    env.run_with(&args, &vars).expect_success();
    let second = env.runs().into_iter().find(|r| r.id != run.id).unwrap();
    for agent in AGENTS {
        let logs = env.run(&["logs", &second.id, "--step", &format!("{agent}-image")]).stdout;
        assert!(logs.contains("is there already, not uploaded"), "{agent}:\n{logs}");
    }
    assert_eq!(block_on(s3.list_objects_v2().bucket(&bucket).send()).unwrap().contents().len(), 5);

    // Once the images are in ECR, a run neither uploads nor builds: it adopts each.
    let ecr = aws_sdk_ecr::Client::new(&sdk());
    for agent in AGENTS {
        let tag = env.step(&run.id, &format!("{agent}-image")).outputs.unwrap()["tag"].as_str().unwrap().to_string();
        let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 2, "digest": DIGEST}, "layers": []});
        block_on(
            ecr.put_image()
                .repository_name(format!("{stack}/{agent}"))
                .image_tag(tag)
                .image_manifest(manifest.to_string())
                .send(),
        )
        .unwrap();
    }
    let sends = proxy.actions().iter().filter(|a| *a == "SendCommand").count();
    env.run_with(&args, &vars).expect_success();
    let third = env.runs().into_iter().find(|r| r.id != run.id && r.id != second.id).unwrap();
    for agent in AGENTS {
        let image = env.step(&third.id, &format!("{agent}-image")).outputs.unwrap();
        assert_eq!(image["action"], "adopted", "{agent}");
        let logs = env.run(&["logs", &third.id, "--step", &format!("{agent}-image")]).stdout;
        assert!(!logs.contains("upload") && !logs.contains("context"), "{agent} never touched its context:\n{logs}");
    }
    let builds = proxy.actions().iter().filter(|a| *a == "SendCommand").count() - sends;
    assert_eq!(builds, 1, "only builder-ready's command: no build was sent");

    // Destroyed with the stack: the builder goes; its bucket follows the data rule (here: deleted).
    env.run_with(&["destroy", &run.id, "--yes", "--delete-data", "--delete-images"], &vars).expect_success();
    let ec2 = aws_sdk_ec2::Client::new(&sdk());
    let state = block_on(ec2.describe_instances().instance_ids(&instance).send()).unwrap().reservations()[0]
        .instances()[0]
        .state()
        .and_then(|s| s.name())
        .map(|n| n.as_str().to_string());
    assert_eq!(state.as_deref(), Some("terminated"), "the builder is terminated");
    assert!(block_on(s3.head_bucket().bucket(&bucket).send()).is_err(), "its contexts bucket is deleted");
}

#[test]
fn a_run_killed_while_its_images_build_on_the_builder_resumes_following_each_build_it_sent() {
    // The builder answers its readiness check, then every build stays in progress.
    let ready = Rule { times: Some(1), ..invocation("Success", 0, "docker 25.0\n") };
    let building = FaultProxy::start(&moto(), vec![agent_online(), ready, invocation("InProgress", -1, "")]);
    let env = Env::sqlite();
    let stack = unique_stack("killedbuild");
    let stack_input = format!("stack={stack}");
    let args = ["run", FULL, "--input", &stack_input, "--input", "healthy_targets=0", "--input", "build_on=builder"];
    let child = env.spawn(&args, &[("AWS_ENDPOINT_URL", &building.url), ("CA_A2A_FLOW_POLL_INTERVAL", "100ms")]);
    env.wait_until("the five builds to be sent", std::time::Duration::from_secs(120), || {
        building.actions().iter().filter(|a| *a == "SendCommand").count() >= 6
    });
    crate::support::signal(&child, libc::SIGKILL);
    assert_eq!(child.wait_with_output().unwrap().status.code(), None, "killed");
    let run = env.only_run();
    let instance = env.step(&run.id, "builder").outputs.unwrap()["instance_id"].as_str().unwrap().to_string();

    // Now the builds end; the resumed run follows each one it sent and sends none again.
    let printed = format!("ca-a2a-flow:digest={DIGEST}\nca-a2a-flow:action=built\n");
    let done = FaultProxy::start(&moto(), vec![agent_online(), invocation("Success", 0, &printed)]);
    let vars = [("AWS_ENDPOINT_URL", done.url.as_str()), ("CA_A2A_FLOW_POLL_INTERVAL", "100ms")];
    env.run_with(&["resume", &run.id], &vars).expect_success();
    assert_eq!(done.actions().iter().filter(|a| *a == "SendCommand").count(), 0, "no build was sent again");
    for agent in AGENTS {
        let step = format!("{agent}-image");
        assert_eq!(sent_by(&run.id, &step, &instance).len(), 1, "{agent} was built once");
        assert_eq!(env.step(&run.id, &step).outputs.unwrap()["action"], "built");
        let logs = env.run(&["logs", &run.id, "--step", &step]).stdout;
        assert!(logs.contains("sent by an earlier attempt"), "{agent} followed its build:\n{logs}");
    }
}

#[test]
fn a_build_on_the_builder_that_names_no_instance_is_refused_before_anything_is_made() {
    let proxy = FaultProxy::start(&moto(), vec![]);
    let env = Env::sqlite();
    std::fs::create_dir_all(env.path("app")).unwrap();
    env.write("app/Dockerfile", "FROM scratch\n");
    let wf = env.write(
        "image.yaml",
        r#"name: image
inputs:
  instance: { default: "" }
steps:
  - id: repo
    uses: aws.ecr.repository
    with: { stack: nobuilder, region: eu-west-3, name: nobuilder/app }
  - id: app-image
    uses: image.build_push
    needs: [repo]
    with:
      region: eu-west-3
      repository: nobuilder/app
      context: app
      runs_on: builder
      instance_id: "${{ inputs.instance }}"
      context_bucket: contexts
"#,
    );
    let out = env.run_with(&["run", wf.to_str().unwrap()], &[("AWS_ENDPOINT_URL", &proxy.url)]);
    out.expect_code(2);
    assert!(
        out.stderr
            .contains("preflight `builder` failed: step `app-image` builds on the EC2 builder but names no instance"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("workflows/builder.yaml"), "{}", out.stderr);
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
    let stack_files = std::path::Path::new(BUILDER).parent().unwrap().join("stack");
    std::os::unix::fs::symlink(stack_files, wf.parent().unwrap().join("stack")).unwrap();
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

const WORKER_ON_BUILDER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/workflows/worker-on-builder.yaml");

#[test]
fn a_worker_is_installed_on_the_builder_from_this_machines_binary_sent_through_s3_with_no_secret_in_any_command() {
    use sha2::Digest;
    let proxy = FaultProxy::start(&moto(), vec![agent_online()]);
    let env = Env::sqlite();
    let stack = unique_stack("worker");
    // A stand-in for the release binary (the debug one is 150 MB): the same path through S3.
    let binary = env.write("bin/ca-a2a-flow", &format!("#!/bin/sh\necho ca-a2a-flow {stack}\n"));
    let hex = |bytes: &[u8]| sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect::<String>();
    let sha = hex(&std::fs::read(&binary).unwrap());
    let (stack_input, binary_input) = (format!("stack={stack}"), format!("worker_binary={}", binary.display()));
    let args = ["run", WORKER_ON_BUILDER, "--input", &stack_input, "--input", &binary_input];
    let vars = [("AWS_ENDPOINT_URL", proxy.url.as_str()), ("CA_A2A_FLOW_POLL_INTERVAL", "100ms")];

    env.run_with(&args, &vars).expect_success();
    let run = env.only_run();
    let object = env.step(&run.id, "worker-binary").outputs.unwrap();
    let account = env.step(&run.id, "identity").outputs.unwrap()["account_id"].as_str().unwrap().to_string();
    let bucket = format!("{stack}-build-contexts-{account}");
    let key = format!("bin/{}/ca-a2a-flow", &sha[..16]);
    assert_eq!((object["key"].as_str(), object["action"].as_str()), (Some(key.as_str()), Some("uploaded")));
    let s3 = aws_sdk_s3::Client::new(&sdk());
    let got = block_on(s3.get_object().bucket(&bucket).key(&key).send()).unwrap();
    let bytes = block_on(got.body.collect()).unwrap().into_bytes();
    assert_eq!(hex(&bytes), sha, "the builder fetches exactly this machine's file");

    let instance = env.step(&run.id, "builder").outputs.unwrap()["instance_id"].as_str().unwrap().to_string();
    let sent = sent_by(&run.id, "worker-service", &instance);
    assert_eq!(sent.len(), 1, "the service is installed by one command");
    let script = &sent[0].parameters().unwrap()["commands"][0];
    assert!(script.contains(&format!("s3://{bucket}/{key}")), "{script}");
    assert!(script.contains("systemctl restart ca-a2a-flow-worker"), "{script}");
    assert!(script.contains("exec /usr/local/bin/ca-a2a-flow worker --concurrency"), "{script}");
    assert!(script.contains(&format!("='{stack}'")) && script.contains("/worker-state"), "{script}");
    assert!(
        script.contains(r#"aws ssm get-parameter --name "$FLOW_STATE_PARAMETER" --with-decryption"#),
        "the URL is read from SSM at each start: {script}"
    );
    assert!(!script.contains("postgres://"), "no state store URL (with its password) in the command: {script}");

    let role = format!("{stack}-builder-role");
    let iam = aws_sdk_iam::Client::new(&sdk());
    let policies = block_on(iam.list_role_policies().role_name(&role).send()).unwrap();
    let mut granted = String::new();
    for name in policies.policy_names() {
        let doc = block_on(iam.get_role_policy().role_name(&role).policy_name(name).send()).unwrap();
        granted.push_str(&urlencoding_decode(doc.policy_document()));
    }
    assert!(granted.contains(&format!("parameter/{stack}/worker-state")), "the role may read the URL: {granted}");
    assert!(granted.contains("/bin/*"), "and the binary: {granted}");

    // Again: the same file is adopted, not sent twice.
    env.run_with(&args, &vars).expect_success();
    let second = env.runs().into_iter().find(|r| r.id != run.id).unwrap();
    assert_eq!(env.step(&second.id, "worker-binary").outputs.unwrap()["action"], "adopted");
    let logs = env.run(&["logs", &second.id, "--step", "worker-binary"]).stdout;
    assert!(!logs.contains("uploading"), "not uploaded again:\n{logs}");

    env.run_with(&["destroy", &run.id, "--yes"], &vars).expect_success();
    let left = block_on(s3.list_objects_v2().bucket(&bucket).prefix("bin/").send()).unwrap();
    assert!(left.contents().is_empty(), "destroy deletes the binary it sent: {:?}", left.contents());
}

/// IAM returns policy documents URL-encoded.
fn urlencoding_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
