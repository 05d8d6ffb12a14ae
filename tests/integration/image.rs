//! `image.build_push` for real: podman builds a Dockerfile with a RUN step and
//! pushes to a real OCI registry on loopback (Debian's `docker-registry`, one
//! per test with its own port and storage), after logging in with ECR
//! GetAuthorizationToken answered by moto (the registry host is overridden; moto
//! stores no image). The registry's access log counts the pushes.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ca_a2a_flow_engine::RunStatus;
use sha2::{Digest, Sha256};

use crate::support::aws::{ec2, unique_stack};
use crate::support::faults::FaultProxy;
use crate::support::{Env, registry_get, signal};

/// A `docker-registry serve` of the test's own: its port, its storage, its log.
pub(crate) struct Registry {
    pub host: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("registry dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let host = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{ level: info }}\nstorage: {{ filesystem: {{ rootdirectory: {} }} }}\nhttp: {{ addr: {host} }}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("access.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("image tests need Debian's docker-registry (scripts/test.sh installs it)");
        let registry = Self { host, child, dir };
        for _ in 0..200 {
            if registry.get("/v2/", "").map(|r| r.0) == Some(200) {
                return registry;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("docker-registry did not answer on {}", registry.host);
    }

    /// A GET on the registry: status, Docker-Content-Digest, body.
    pub fn get(&self, path: &str, accept: &str) -> Option<(u16, Option<String>, Vec<u8>)> {
        registry_get(&self.host, path, accept)
    }

    /// The manifest of `repo:tag` pulled back: its digest as the registry says
    /// it, and the sha256 of the bytes themselves.
    pub fn pull_manifest(&self, repo: &str, tag: &str) -> (String, String) {
        let accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
        let (status, said, body) = self.get(&format!("/v2/{repo}/manifests/{tag}"), accept).expect("GET manifest");
        assert_eq!(status, 200, "{repo}:{tag} is in the registry: {}", String::from_utf8_lossy(&body));
        let computed =
            format!("sha256:{}", Sha256::digest(&body).iter().map(|b| format!("{b:02x}")).collect::<String>());
        (said.expect("Docker-Content-Digest"), computed)
    }

    /// The tags of `repo` (none when the registry never saw it).
    pub fn tags(&self, repo: &str) -> Vec<String> {
        let Some((200, _, body)) = self.get(&format!("/v2/{repo}/tags/list"), "application/json") else {
            return Vec::new();
        };
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        json["tags"].as_array().map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect()).unwrap_or_default()
    }

    /// How many manifests were pushed to `repo` (PUTs in the access log).
    pub fn manifest_pushes(&self, repo: &str) -> usize {
        let log = std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default();
        let needle = format!("\"PUT /v2/{repo}/manifests/");
        log.lines().filter(|l| l.contains(&needle)).count()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A workflow: the ECR repository (in moto), then the image built from `app/`.
const IMAGE: &str = r#"name: image
inputs:
  stack: { default: img }
  registry: { default: "" }
  min_free_disk: { default: 1MiB }
defaults: { retry: { max_attempts: 3, initial_delay: 200ms } }
steps:
  - id: repo
    uses: aws.ecr.repository
    with: { stack: "${{ inputs.stack }}", region: eu-west-3, name: "${{ inputs.stack }}/app" }
  - id: app-image
    uses: image.build_push
    needs: [repo]
    timeout: 5m
    with:
      region: eu-west-3
      repository: "${{ inputs.stack }}/app"
      context: app
      tag: v1
      registry: "${{ inputs.registry }}"
      min_free_disk: "${{ inputs.min_free_disk }}"
"#;

/// A build context: a static busybox and a Dockerfile whose RUN step runs it
/// (no base image to download: `FROM scratch`).
fn context(env: &Env, run: &str) -> PathBuf {
    let dir = env.path("app");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy("/bin/busybox", dir.join("busybox"))
        .expect("image tests need busybox-static (scripts/test.sh installs it)");
    env.write(
        "app/Dockerfile",
        &format!(
            "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"{run}\"]\nCMD [\"/bin/busybox\", \"cat\", \"/marker\"]\n"
        ),
    );
    dir
}

fn moto_proxy() -> FaultProxy {
    ec2(); // checks that AWS_ENDPOINT_URL is the emulator on loopback
    FaultProxy::start(&std::env::var("AWS_ENDPOINT_URL").unwrap(), vec![])
}

fn image_outputs(env: &Env) -> serde_json::Value {
    let run = env.runs()[0].id.clone();
    serde_json::json!(env.step(&run, "app-image").outputs.expect("the image step has outputs"))
}

#[test]
fn podman_builds_a_dockerfile_with_a_run_step_and_pushes_it_once_and_a_second_run_adopts_it() {
    let registry = Registry::start();
    let proxy = moto_proxy();
    let env = Env::sqlite();
    let stack = unique_stack("img");
    // The stack's name in the RUN line: no cached layer from another test, the RUN step runs.
    context(&env, &format!("/bin/busybox echo built-by-run-{stack} | /bin/busybox tee /marker"));
    let wf = env.write("image.yaml", IMAGE);
    let inputs = ["--input", &format!("stack={stack}"), "--input", &format!("registry=http://{}", registry.host)];
    let args = [&["run", wf.to_str().unwrap()][..], &inputs[..]].concat();
    let aws = [("AWS_ENDPOINT_URL", proxy.url.as_str())];

    env.run_with(&args, &aws).expect_success();
    let out = image_outputs(&env);
    assert_eq!(out["action"], "built");
    let repo = format!("{stack}/app");
    let tag = out["tag"].as_str().unwrap();
    assert!(tag.starts_with("v1-") && tag.len() == 15, "the tag is the prefix and 12 hex of the source: {tag}");
    let (said, computed) = registry.pull_manifest(&repo, tag);
    assert_eq!(out["digest"], said.as_str(), "the step's digest is the registry's");
    assert_eq!(said, computed, "and it is the manifest's own sha256");
    assert_eq!(out["image"], format!("{}/{repo}@{said}", registry.host).as_str());
    assert_eq!(registry.manifest_pushes(&repo), 1);
    assert!(
        proxy.actions().iter().any(|a| a == "GetAuthorizationToken"),
        "logged in with ECR's token: {:?}",
        proxy.actions()
    );
    let logs = env.run(&["logs", &env.runs()[0].id, "--step", "app-image"]);
    assert!(logs.stdout.contains("STEP 3/5: RUN"), "the build output is in the event log:\n{}", logs.stdout);
    assert!(
        logs.stdout.contains(&format!("log      app-image            built-by-run-{stack}")),
        "the RUN step ran and printed:\n{}",
        logs.stdout
    );
    let token = "123456789012-auth-token";
    assert!(!env.everything_stored().contains(token) && !logs.stdout.contains(token), "no registry password kept");

    env.run_with(&args, &aws).expect_success();
    let again = image_outputs(&env);
    assert_eq!(again["action"], "adopted");
    assert_eq!(again["digest"], out["digest"]);
    assert_eq!(registry.manifest_pushes(&repo), 1, "the same source is not pushed twice");

    env.write(
        "app/Dockerfile",
        &std::fs::read_to_string(env.path("app/Dockerfile")).unwrap().replace("built-by-run", "changed"),
    );
    env.run_with(&args, &aws).expect_success();
    let changed = image_outputs(&env);
    assert_eq!(changed["action"], "built");
    assert_ne!(changed["tag"], out["tag"], "a changed source is a new tag");
    assert_eq!(registry.manifest_pushes(&repo), 2);
}

#[test]
fn a_disk_below_the_minimum_fails_before_building_and_names_path_free_and_required() {
    let registry = Registry::start();
    let env = Env::sqlite();
    let stack = unique_stack("img");
    context(&env, "/bin/busybox echo never > /marker");
    let wf = env.write("image.yaml", IMAGE);
    let stack_input = format!("stack={stack}");
    let registry_input = format!("registry=http://{}", registry.host);
    let args = [
        "run",
        wf.to_str().unwrap(),
        "--input",
        &stack_input,
        "--input",
        &registry_input,
        "--input",
        "min_free_disk=900TiB",
    ];

    // `run` checks it first, before anything is recorded or created.
    let refused = env.run(&args);
    refused.expect_code(2);
    assert!(
        refused.stderr.contains("preflight `disk` failed: `app-image`: not enough free disk to build: /"),
        "{}",
        refused.stderr
    );
    assert!(env.runs().is_empty(), "no run recorded");

    // The step itself checks again (the disk may have filled since): it fails before building.
    let out = env.run(&[&args[..], &["--skip-preflight", "disk"]].concat());
    out.expect_code(1);
    assert!(out.stderr.contains("not enough free disk to build: /"), "{}", out.stderr);
    assert!(out.stderr.contains("GiB free, the build needs at least 921600.0 GiB"), "{}", out.stderr);
    assert!(out.stderr.contains("runs_on: builder"), "the hint names the builder: {}", out.stderr);
    let logs = env.run(&["logs", &env.runs()[0].id, "--step", "app-image"]);
    assert!(!logs.stdout.contains("STEP 1/"), "no build started:\n{}", logs.stdout);
    assert_eq!(registry.tags(&format!("{stack}/app")), Vec::<String>::new(), "nothing was pushed");
    assert_eq!(registry.manifest_pushes(&format!("{stack}/app")), 0);
}

#[test]
fn a_run_killed_in_the_middle_of_a_build_resumes_and_pushes_the_image_once() {
    let registry = Registry::start();
    let env = Env::sqlite();
    let stack = unique_stack("img");
    let run_line =
        format!("/bin/busybox echo building-now-{stack} && /bin/busybox sleep 4 && /bin/busybox echo done > /marker");
    context(&env, &run_line);
    let wf = env.write("image.yaml", IMAGE);
    let inputs = [
        "--input".to_string(),
        format!("stack={stack}"),
        "--input".into(),
        format!("registry=http://{}", registry.host),
    ];
    let mut args = vec!["run".to_string(), wf.display().to_string()];
    args.extend(inputs);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    let mut child = env.spawn(&args, &[]);
    env.wait_until("the RUN step of the build", Duration::from_secs(120), || {
        std::thread::sleep(Duration::from_millis(100));
        env.everything_stored().contains(&format!("building-now-{stack}"))
    });
    signal(&child, libc::SIGKILL);
    let _ = child.wait();
    let repo = format!("{stack}/app");
    assert_eq!(registry.manifest_pushes(&repo), 0, "killed before the push");

    let run = env.only_run();
    env.run(&["resume", &run.id]).expect_success();
    assert_eq!(env.run_record(&run.id).status, RunStatus::Succeeded);
    let out = serde_json::json!(env.step(&run.id, "app-image").outputs.unwrap());
    assert_eq!(out["action"], "built");
    let (said, _) = registry.pull_manifest(&repo, out["tag"].as_str().unwrap());
    assert_eq!(out["digest"], said.as_str());
    assert_eq!(registry.manifest_pushes(&repo), 1, "pushed once");
}

#[test]
fn a_run_killed_after_the_push_but_before_its_checkpoint_adopts_the_image_on_resume() {
    let registry = Registry::start();
    let env = Env::sqlite();
    let stack = unique_stack("img");
    context(&env, "/bin/busybox echo x > /marker");
    let wf = env.write("image.yaml", IMAGE);
    let killed = env.run_with(
        &[
            "run",
            wf.to_str().unwrap(),
            "--input",
            &format!("stack={stack}"),
            "--input",
            &format!("registry=http://{}", registry.host),
        ],
        &[("CA_A2A_FLOW_FAILPOINT", "before_commit:app-image")],
    );
    assert_eq!(killed.code, None, "killed before the checkpoint: {}", killed.stderr);
    let repo = format!("{stack}/app");
    assert_eq!(registry.manifest_pushes(&repo), 1);

    let run = env.only_run();
    env.run(&["resume", &run.id]).expect_success();
    let out = serde_json::json!(env.step(&run.id, "app-image").outputs.unwrap());
    assert_eq!(out["action"], "adopted", "the resumed attempt found the pushed image");
    assert_eq!(registry.manifest_pushes(&repo), 1, "and pushed nothing more");
    let (said, _) = registry.pull_manifest(&repo, out["tag"].as_str().unwrap());
    assert_eq!(out["digest"], said.as_str());
}

#[test]
fn buildah_builds_and_pushes_the_same_way() {
    let registry = Registry::start();
    let env = Env::sqlite();
    let stack = unique_stack("bud");
    context(&env, &format!("/bin/busybox echo built-by-buildah-{stack} | /bin/busybox tee /marker"));
    let wf = env.write("image.yaml", &IMAGE.replace("      tag: v1\n", "      tag: v1\n      builder: buildah\n"));
    env.run(&[
        "run",
        wf.to_str().unwrap(),
        "--input",
        &format!("stack={stack}"),
        "--input",
        &format!("registry=http://{}", registry.host),
    ])
    .expect_success();
    let out = image_outputs(&env);
    assert_eq!(out["action"], "built");
    let logs = env.run(&["logs", &env.runs()[0].id, "--step", "app-image"]).stdout;
    assert!(logs.contains(&format!("built-by-buildah-{stack}")), "the RUN step ran under buildah:\n{logs}");
    let (said, computed) = registry.pull_manifest(&format!("{stack}/app"), out["tag"].as_str().unwrap());
    assert_eq!(out["digest"], said.as_str());
    assert_eq!(said, computed);
}

#[test]
fn a_failing_build_fails_the_step_with_the_tail_of_its_output_and_pushes_nothing() {
    let registry = Registry::start();
    let env = Env::sqlite();
    let stack = unique_stack("img");
    context(
        &env,
        &format!("/bin/busybox echo compiling-{stack} && /bin/busybox echo 'error: no such module' && exit 3"),
    );
    let wf = env.write("image.yaml", &IMAGE.replace("max_attempts: 3", "max_attempts: 1"));
    let out = env.run(&[
        "run",
        wf.to_str().unwrap(),
        "--input",
        &format!("stack={stack}"),
        "--input",
        &format!("registry=http://{}", registry.host),
    ]);
    out.expect_code(1);
    assert!(out.stderr.contains("podman build of 127.0.0.1:"), "{}", out.stderr);
    assert!(out.stderr.contains("failed (exit status"), "{}", out.stderr);
    assert!(out.stderr.contains("  | error: no such module"), "the tail of the build output: {}", out.stderr);
    assert!(out.stderr.contains("--step app-image` for the whole build output"), "{}", out.stderr);
    assert_eq!(registry.manifest_pushes(&format!("{stack}/app")), 0);
}

#[test]
fn a_build_arg_with_shell_syntax_reaches_the_build_as_literal_text_and_runs_nothing() {
    let registry = Registry::start();
    let env = Env::sqlite();
    let stack = unique_stack("img");
    context(&env, r#"/bin/busybox printf 'arg=[%s]' \"$V\" | /bin/busybox tee /marker"#);
    let dockerfile = std::fs::read_to_string(env.path("app/Dockerfile")).unwrap().replace("RUN ", "ARG V\nRUN ");
    env.write("app/Dockerfile", &dockerfile);
    let ran = env.path("ran");
    let value = format!("$(touch {0}) `touch {0}` ; touch {0} 'q\" {stack}", ran.display());
    let wf = env.write(
        "image.yaml",
        &IMAGE
            .replace("  registry: { default: \"\" }\n", "  registry: { default: \"\" }\n  v: {}\n")
            .replace("      tag: v1\n", "      tag: v1\n      build_args: { V: \"${{ inputs.v }}\" }\n"),
    );
    env.run(&[
        "run",
        wf.to_str().unwrap(),
        "--input",
        &format!("stack={stack}"),
        "--input",
        &format!("registry=http://{}", registry.host),
        "--input",
        &format!("v={value}"),
    ])
    .expect_success();

    assert!(!ran.exists(), "the build argument ran as code on this machine");
    let logs = env.run(&["logs", &env.runs()[0].id, "--step", "app-image"]).stdout.clone();
    assert!(logs.contains(&format!("arg=[{value}]")), "the RUN step saw the value as it was given:\n{logs}");
}

#[test]
fn the_full_stack_builds_its_five_images_from_the_sample_agents_runs_them_by_digest_and_a_second_run_builds_none() {
    use crate::support::aws::{AGENTS, FULL, local_images, task_image};
    let env = Env::sqlite();
    let stack = unique_stack("five");
    let stack_input = format!("stack={stack}");
    // Through the suite's realistic layer: the tasks start and pass their health checks.
    let args = [&["run", FULL, "--input", &stack_input, "--input", "healthy_targets=1"][..], &local_images()].concat();
    let vars = [("CA_A2A_FLOW_POLL_INTERVAL", "100ms")];
    env.run_with(&args, &vars).expect_success();
    let first = env.only_run();

    let registry = std::env::var("CA_A2A_FLOW_TEST_REGISTRY").unwrap();
    let manifest = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
    let mut digests = Vec::new();
    for agent in AGENTS {
        let image = env.step(&first.id, &format!("{agent}-image")).outputs.unwrap();
        assert_eq!(image["action"], "built", "{agent}: {image:?}");
        let tag = image["tag"].as_str().unwrap();
        let repo = format!("{stack}/{agent}");
        let (status, said, _) = registry_get(&registry, &format!("/v2/{repo}/manifests/{tag}"), manifest).unwrap();
        assert_eq!(status, 200, "{repo}:{tag} was pushed");
        let by_digest = format!("{registry}/{repo}@{}", said.unwrap());
        assert_eq!(image["image"], by_digest.as_str(), "{agent}");

        assert_eq!(task_image(&env, &first.id, agent), by_digest, "{agent}'s task runs its image by digest");
        digests.push(by_digest);
    }
    let logs = env.run(&["logs", &first.id, "--step", "extractor-image"]);
    assert!(logs.stdout.contains("COPY www /www"), "built from examples/agents/extractor:\n{}", logs.stdout);

    env.run_with(&args, &vars).expect_success();
    let second = env.runs().into_iter().find(|r| r.id != first.id).unwrap();
    for (agent, digest) in AGENTS.iter().zip(&digests) {
        let image = env.step(&second.id, &format!("{agent}-image")).outputs.unwrap();
        assert_eq!(image["action"], "adopted", "{agent} is not built again");
        assert_eq!(image["image"], digest.as_str());
        let logs = env.run(&["logs", &second.id, "--step", &format!("{agent}-image")]);
        assert!(!logs.stdout.contains("STEP 1/"), "nothing built:\n{}", logs.stdout);
    }
}

#[test]
fn a_missing_source_directory_is_refused_before_anything_runs_naming_its_path() {
    use crate::support::aws::{FULL, local_images};
    let env = Env::sqlite();
    let stack_input = format!("stack={}", unique_stack("nosrc"));
    let args =
        [&["run", FULL, "--input", &stack_input][..], &local_images(), &["--input", "sources=../no-such-agents"]]
            .concat();
    let out = env.run(&args);
    out.expect_code(2);
    let path = format!("{}/../no-such-agents/orchestrator", FULL.trim_end_matches("/full.yaml"));
    assert!(
        out.stderr.contains(&format!("step `orchestrator-image`, parameter `context`: `{path}` does not exist")),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("mcp-server"), "every missing folder is named: {}", out.stderr);
    assert!(env.runs().is_empty(), "no run recorded");

    // `validate` says the same with the workflow's defaults; without the MCP server its folder is not asked for.
    let wf = env.write("agents.yaml", &std::fs::read_to_string(FULL).unwrap().replace("../examples/agents", "gone"));
    let include = wf.parent().unwrap().join("stack");
    std::os::unix::fs::symlink(std::path::Path::new(FULL).parent().unwrap().join("stack"), &include).unwrap();
    let validated = env.run(&["validate", wf.to_str().unwrap()]);
    validated.expect_code(2);
    assert!(validated.stderr.contains("gone/archivist` does not exist"), "{}", validated.stderr);
    let without_mcp = env.run(&["plan", wf.to_str().unwrap(), "--offline", "--input", "mcp=false"]);
    assert!(!without_mcp.stderr.contains("mcp-server` does not exist"), "{}", without_mcp.stderr);
}

#[test]
fn the_disk_is_checked_after_asking_podman_once_where_it_keeps_images_however_many_images_are_built() {
    let env = Env::sqlite();
    let asked = env.path("podman.log");
    let bin = env.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let stub = bin.join("podman");
    std::fs::write(&stub, format!("#!/bin/sh\necho \"$*\" >> '{}'\n[ \"$1\" = info ] && echo /tmp\n", asked.display()))
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut steps = String::new();
    for n in 1..=3 {
        std::fs::create_dir_all(env.path(&format!("app{n}"))).unwrap();
        env.write(&format!("app{n}/Dockerfile"), "FROM scratch\n");
        steps.push_str(&format!(
            "  - id: app{n}-image\n    uses: image.build_push\n    with: {{ region: eu-west-3, repository: once/app{n}, context: app{n}, min_free_disk: 1MiB }}\n"
        ));
    }
    let repo =
        "  - id: repo\n    uses: aws.ecr.repository\n    with: { stack: once, region: eu-west-3, name: once/app }\n";
    let wf = env.write("three.yaml", &format!("name: three\nsteps:\n{repo}{steps}"));
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = env.run_with(&["plan", wf.to_str().unwrap(), "--output", "json"], &[("PATH", path.as_str())]);
    out.expect_success();
    let plan = out.json();
    let disk = plan["preflight"].as_array().unwrap().iter().find(|c| c["name"] == "disk").unwrap().clone();
    let message = disk["message"].as_str().unwrap();
    assert!(message.contains("`app3-image`: ") && message.contains("free at /tmp"), "each image's disk: {disk}");
    let calls = std::fs::read_to_string(&asked).unwrap();
    assert_eq!(calls.lines().filter(|l| l.starts_with("info")).count(), 1, "asked once: {calls}");
}
