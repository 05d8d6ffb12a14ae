//! `image.build_push`: builds a context directory with podman, buildah or
//! docker and pushes the image to an ECR repository; outputs the pushed digest,
//! so task definitions that use `image` roll only when the source changed.
//!
//! The pushed tag is `<tag>-<source hash>`: the hash covers every file of the
//! context, the Dockerfile's path, the build arguments and the platform. Before
//! building, the step asks the registry for that tag: a resumed or repeated
//! run whose image is already there adopts it (no build, no push). Then it
//! checks the free disk where the builder keeps images, logs in with ECR
//! GetAuthorizationToken (the password goes to the builder on stdin and is
//! masked everywhere), builds with the output streamed to the event log, and
//! pushes once, reading the digest the builder reports.
//!
//! With `runs_on: builder` the build happens on the EC2 builder through SSM Run
//! Command (`workflows/builder.yaml`). The context is hashed here and the tag
//! looked for first, as above; then it travels through S3, content-addressed
//! (`contexts/<repository>/<source hash>.tar.gz` in `context_bucket`: an object
//! already there is not uploaded again), into a directory of its own on the
//! builder, which checks its disk, builds with docker and pushes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_ecr::types::ImageIdentifier;
use ca_a2a_flow_engine::{
    Deadline, KindDoc, Outputs, ParamProblem, Parameters, Plan, Step, StepContext, StepError, outputs,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::process::Command;

use crate::aws::{AwsResult, ssm_run_command};
use crate::process;

fn default_tag() -> String {
    "src".into()
}
fn default_dockerfile() -> String {
    "Dockerfile".into()
}
fn default_min_free_disk() -> String {
    "10GiB".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Builder {
    Podman,
    Buildah,
    Docker,
}

impl Builder {
    fn program(self) -> &'static str {
        match self {
            Builder::Podman => "podman",
            Builder::Buildah => "buildah",
            Builder::Docker => "docker",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RunsOn {
    #[default]
    Local,
    Builder,
}

#[derive(Debug, Deserialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "image.build_push", step = BuildPush)]
pub struct Params {
    #[param(doc = crate::aws::REGION)]
    pub region: Option<String>,
    /// ECR repository name, like ca-a2a/orchestrator (required; must exist)
    pub repository: String,
    /// build context, relative to the workflow file (or a path on the builder) (required)
    pub context: String,
    /// relative to the context (default Dockerfile)
    #[serde(default = "default_dockerfile")]
    pub dockerfile: String,
    /// tag prefix; the pushed tag is <tag>-<12 hex of the source hash> (default src)
    #[serde(default = "default_tag")]
    pub tag: String,
    /// --build-arg values (part of the source hash)
    #[serde(default)]
    pub build_args: BTreeMap<String, String>,
    /// like linux/amd64 (part of the source hash)
    pub platform: Option<String>,
    /// podman, buildah or docker (default: podman here, docker on the EC2 builder, whose Amazon Linux 2023 has no podman)
    #[param(ty = "string")]
    pub builder: Option<Builder>,
    /// podman/buildah --isolation (default chroot)
    pub isolation: Option<String>,
    /// push there instead of the ECR host: http://host:port or host:port
    pub registry: Option<String>,
    /// free disk needed where images are stored, checked first (default 10GiB)
    #[param(ty = "size")]
    #[serde(default = "default_min_free_disk")]
    pub min_free_disk: String,
    /// where the builder stores images (default: asked from the builder)
    pub storage: Option<String>,
    /// local (default) or builder (the EC2 builder, through SSM)
    #[param(ty = "string")]
    #[serde(default)]
    pub runs_on: RunsOn,
    /// the builder instance, with runs_on: builder
    pub instance_id: Option<String>,
    /// with runs_on: builder, the S3 bucket the context travels through (workflows/builder.yaml's `build-contexts`)
    pub context_bucket: Option<String>,
    /// build output lines shown on failure (default 30)
    #[serde(default = "default_tail")]
    pub tail_lines: usize,
}

fn default_tail() -> usize {
    30
}

impl Params {
    /// The container builder: the step's, else podman here and docker on the
    /// EC2 builder (Amazon Linux 2023's repositories have docker, not podman).
    pub fn builder(&self) -> Builder {
        self.builder.unwrap_or(match self.runs_on {
            RunsOn::Builder => Builder::Docker,
            RunsOn::Local => Builder::Podman,
        })
    }
}

impl Step for BuildPush {
    /// A build of a real service takes tens of minutes, on the builder too.
    const DEADLINE: Option<Deadline> = Some(Deadline::minutes(45, 40));

    const DOC: KindDoc = KindDoc {
        summary: "Builds an image (podman, buildah or docker) and pushes it to ECR once; adopts it when its source's tag is already there.",
        outputs: &[
            ("image", "repository@digest, for task definitions"),
            ("digest", "the pushed manifest's digest (sha256:...)"),
            ("reference", "repository:tag as pushed"),
            ("tag", "the pushed tag"),
            ("source_hash", "the hash of the context, Dockerfile path, build args and platform"),
            ("action", "`built` or `adopted`"),
        ],
        example: "- id: orchestrator-image\n  uses: image.build_push\n  with:\n    repository: \"${{ inputs.stack }}/orchestrator\"\n    context: ../agents/orchestrator\n  timeout: 30m\n",
    };

    fn problems(&self, p: &Params) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        if !p.min_free_disk.contains("${{") && parse_size(&p.min_free_disk).is_err() {
            problems.push(ParamProblem::at(
                &["min_free_disk"],
                format!("`{}` is not a size like 10GiB, 500MiB or 0", p.min_free_disk),
            ));
        }
        if p.runs_on == RunsOn::Builder && p.instance_id.is_none() {
            problems.push(ParamProblem::at(&["instance_id"], "runs_on: builder needs the builder's instance_id"));
        }
        if p.runs_on == RunsOn::Builder && p.context_bucket.is_none() {
            problems.push(ParamProblem::at(
                &["context_bucket"],
                "runs_on: builder needs the bucket the context travels through (context_bucket)",
            ));
        }
        // One from a step the run skips when building here (workflows/builder.yaml) stands in as "".
        let named = p.instance_id.as_deref().is_some_and(|i| !i.trim().is_empty() && !i.contains("${{"));
        if p.runs_on == RunsOn::Local && named {
            problems.push(ParamProblem::at(&["instance_id"], "instance_id is only used with runs_on: builder"));
        }
        let tag_ok = p.tag.contains("${{")
            || (!p.tag.is_empty()
                && p.tag.len() <= 100
                && p.tag.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)));
        if !tag_ok {
            problems.push(ParamProblem::at(&["tag"], format!("`{}`: use up to 100 of A-Za-z0-9-_.", p.tag)));
        }
        problems
    }

    /// The context is here, wherever it is built.
    fn local_paths(&self, p: &Params) -> Vec<(&'static str, String)> {
        vec![("context", p.context.clone())]
    }

    async fn plan(&self, ctx: &StepContext, p: Params) -> Result<Plan, StepError> {
        let hash = off_the_runtime(|| source_hash(&ctx.workflow_dir.join(&p.context), &p))?;
        let Some(target) = Target::found(&p).await? else {
            return Ok(Plan { new_outputs: true, ..Plan::create() }); // its repository is made earlier in the run
        };
        let tag = format!("{}-{}", p.tag, &hash[..12]);
        Ok(match target.existing(&tag).await? {
            Some(_) => Plan::adopt(),
            None => Plan { new_outputs: true, ..Plan::create() },
        })
    }

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let target = Target::find(&p).await?;
        let context = ctx.workflow_dir.join(&p.context);
        let hash = off_the_runtime(|| source_hash(&context, &p))?;
        let tag = format!("{}-{}", p.tag, &hash[..12]);
        let reference = format!("{}:{tag}", target.uri);
        if let Some(digest) = target.existing(&tag).await? {
            ctx.log(format!("adopted {reference}: already in the registry as {digest} (same source), not rebuilt"));
            return Ok(outputs(&target, &reference, &tag, &hash, &digest, "adopted"));
        }
        let source = Source { context, hash, tag, reference };
        match p.runs_on {
            RunsOn::Local => build_here(ctx, &p, &target, source).await,
            RunsOn::Builder => build_on_builder(ctx, &p, &target, source).await,
        }
    }
}

/// Where the image goes: the repository's URI and the registry to ask and push to.
struct Target {
    ecr: aws_sdk_ecr::Client,
    repository: String,
    /// host[:port]/name, the reference without tag or digest.
    uri: String,
    /// `Some(base URL)` when `registry` overrides the ECR host.
    override_base: Option<String>,
    /// Whether the registry is plain HTTP (`--tls-verify=false`).
    insecure: bool,
}

impl Target {
    async fn find(p: &Params) -> Result<Self, StepError> {
        Self::found(p).await?.ok_or_else(|| {
            StepError::fatal(format!("the ECR repository `{}` does not exist", p.repository))
                .with_hint("create it first with an aws.ecr.repository step, and list that step in `needs`")
        })
    }

    /// The target, or `None` when its ECR repository does not exist (yet).
    async fn found(p: &Params) -> Result<Option<Self>, StepError> {
        let ecr = aws_sdk_ecr::Client::new(&crate::aws::config(p.region.as_deref()).await);
        let found = ecr
            .describe_repositories()
            .repository_names(&p.repository)
            .send()
            .await
            .or_absent("ecr:DescribeRepositories", &["RepositoryNotFoundException"])?;
        let Some(repo) = found.and_then(|f| f.repositories().first().cloned()) else {
            return Ok(None);
        };
        let ecr_uri = repo.repository_uri().unwrap_or_default().to_string();
        Ok(Some(match p.registry.as_deref().filter(|r| !r.trim().is_empty()) {
            None => Self { ecr, repository: p.repository.clone(), uri: ecr_uri, override_base: None, insecure: false },
            Some(registry) => {
                let (insecure, host) = match registry.strip_prefix("http://") {
                    Some(host) => (true, host),
                    None => (false, registry.strip_prefix("https://").unwrap_or(registry)),
                };
                let host = host.trim_end_matches('/');
                let scheme = if insecure { "http" } else { "https" };
                Self {
                    ecr,
                    repository: p.repository.clone(),
                    uri: format!("{host}/{}", p.repository),
                    override_base: Some(format!("{scheme}://{host}")),
                    insecure,
                }
            }
        }))
    }

    fn host(&self) -> &str {
        self.uri.split('/').next().unwrap_or_default()
    }

    /// The digest of `tag` when the registry has it.
    async fn existing(&self, tag: &str) -> Result<Option<String>, StepError> {
        match &self.override_base {
            None => {
                let found = self
                    .ecr
                    .describe_images()
                    .repository_name(&self.repository)
                    .image_ids(ImageIdentifier::builder().image_tag(tag).build())
                    .send()
                    .await
                    .or_absent("ecr:DescribeImages", &["ImageNotFoundException"])?;
                Ok(found.and_then(|f| f.image_details().first().and_then(|d| d.image_digest().map(String::from))))
            }
            Some(base) => manifest_digest(base, &self.repository, tag).await,
        }
    }

    /// The registry password from ECR GetAuthorizationToken (user `AWS`).
    async fn password(&self, ctx: &StepContext) -> Result<String, StepError> {
        let auth = self.ecr.get_authorization_token().send().await.or_step_error("ecr:GetAuthorizationToken")?;
        let token = auth
            .authorization_data()
            .first()
            .and_then(|d| d.authorization_token())
            .ok_or_else(|| StepError::retryable("ecr:GetAuthorizationToken answered without a token"))?;
        let decoded = aws_smithy_types::base64::decode(token)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| StepError::retryable("ecr:GetAuthorizationToken answered a token that is not base64"))?;
        let password = decoded.split_once(':').map(|(_, pw)| pw.to_string()).unwrap_or(decoded);
        ctx.secret(&password);
        Ok(password)
    }
}

/// Asks a registry (Docker Registry HTTP API v2) for a tag's manifest digest.
async fn manifest_digest(base: &str, repository: &str, tag: &str) -> Result<Option<String>, StepError> {
    let url = format!("{base}/v2/{repository}/manifests/{tag}");
    let client = reqwest::Client::builder()
        .timeout(crate::aws::call_timeout())
        .build()
        .map_err(|e| StepError::fatal(format!("cannot make an HTTP client: {e}")))?;
    let response = client
        .head(&url)
        .header(
            "Accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, \
             application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json",
        )
        .send()
        .await
        .map_err(|e| {
            StepError::retryable(format!("cannot ask the registry for {url}: {e}"))
                .with_hint("check that the registry is up and reachable from here")
        })?;
    match response.status().as_u16() {
        200 => Ok(response.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(String::from)),
        404 => Ok(None),
        code => Err(StepError::retryable(format!("the registry answered HTTP {code} for {url}"))),
    }
}

/// What a build is of: the context here, its source hash, the tag and reference it is pushed as.
struct Source {
    context: PathBuf,
    hash: String,
    tag: String,
    reference: String,
}

async fn build_here(ctx: &StepContext, p: &Params, target: &Target, source: Source) -> Result<Outputs, StepError> {
    let Source { context, hash, tag, reference } = source;
    ctx.log(format!("disk: {}", free_disk(p).await?));

    let session = Session::new(ctx, p.builder())?;
    let password = target.password(ctx).await?;
    let login = session.command(p.builder(), &["login", "--username", "AWS", "--password-stdin"]);
    let mut login = with_tls(login, p.builder(), target.insecure);
    login.arg(target.host());
    session.run(ctx, "login", login, Some(password.as_bytes()), p.tail_lines).await?;

    ctx.progress(format!("building {reference} with {}", p.builder().program()));
    let mut build = Command::new(p.builder().program());
    build.arg(match p.builder() {
        Builder::Buildah => "bud",
        _ => "build",
    });
    if p.builder() != Builder::Docker {
        build.arg(format!("--isolation={}", p.isolation.as_deref().unwrap_or("chroot"))).args(["--format", "oci"]);
    }
    build.arg("-f").arg(context.join(&p.dockerfile)).arg("-t").arg(&reference);
    build.arg("--label").arg(format!("ca-a2a-flow.source={hash}"));
    for (k, v) in &p.build_args {
        build.arg("--build-arg").arg(format!("{k}={v}"));
    }
    if let Some(platform) = &p.platform {
        build.arg("--platform").arg(platform);
    }
    build.arg(&context);
    let built = process::run(ctx, &format!("{} build", p.builder().program()), build, None, p.tail_lines).await?;
    if built.code != Some(0) {
        return Err(StepError::retryable(format!(
            "{} build of {reference} failed ({}); last output:\n{}",
            p.builder().program(),
            exit(built.code),
            built.shown()
        ))
        .with_hint(format!(
            "run `ca-a2a-flow logs {} --step {}` for the whole build output",
            ctx.run_id, ctx.step_id
        )));
    }

    ctx.progress(format!("pushing {reference}"));
    let digest_file = session.dir.join("digest");
    let push = match p.builder() {
        Builder::Docker => session.command(p.builder(), &["push"]),
        _ => {
            let mut c = session.command(p.builder(), &["push"]);
            c.arg("--digestfile").arg(&digest_file);
            c
        }
    };
    let mut push = with_tls(push, p.builder(), target.insecure);
    push.arg(&reference);
    let pushed = session.run(ctx, "push", push, None, p.tail_lines).await?;
    let digest = match p.builder() {
        Builder::Docker => pushed.tail.iter().find_map(|l| digest_in(l)),
        _ => std::fs::read_to_string(&digest_file).ok().map(|d| d.trim().to_string()),
    }
    .filter(|d| d.starts_with("sha256:"))
    .ok_or_else(|| {
        StepError::retryable(format!("{} push of {reference} did not report a digest", p.builder().program()))
    })?;
    ctx.log(format!("pushed {reference} as {digest}"));
    Ok(outputs(target, &reference, &tag, &hash, &digest, "built"))
}

fn outputs(target: &Target, reference: &str, tag: &str, hash: &str, digest: &str, action: &str) -> Outputs {
    outputs! { image: format!("{}@{digest}", target.uri), digest, reference, tag, source_hash: hash, action }
}

fn exit(code: Option<i32>) -> String {
    code.map(|c| format!("exit status {c}")).unwrap_or_else(|| "killed by a signal".into())
}

/// `digest: sha256:...` in docker push's output.
fn digest_in(line: &str) -> Option<String> {
    let at = line.find("digest: sha256:")?;
    line[at + "digest: ".len()..].split_whitespace().next().map(String::from)
}

fn with_tls(mut cmd: Command, builder: Builder, insecure: bool) -> Command {
    if insecure && builder != Builder::Docker {
        cmd.arg("--tls-verify=false");
    }
    cmd
}

/// A private directory for the registry credentials of one attempt (mode
/// 0700, removed when the attempt ends), so no login lands in a shared file.
struct Session {
    dir: PathBuf,
}

impl Session {
    fn new(ctx: &StepContext, builder: Builder) -> Result<Self, StepError> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = std::env::temp_dir().join(format!(
            "ca-a2a-flow-{}-{}-{}-{}-{}",
            builder.program(),
            ctx.run_id,
            ctx.step_id,
            ctx.attempt,
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&dir)
            .map_err(|e| StepError::fatal(format!("cannot create {}: {e}", dir.display())))?;
        Ok(Self { dir })
    }

    /// `<builder> <verb...>` using this session's credentials.
    fn command(&self, builder: Builder, verb: &[&str]) -> Command {
        let mut cmd = Command::new(builder.program());
        match builder {
            Builder::Docker => {
                cmd.arg("--config").arg(&self.dir).args(verb);
            }
            _ => {
                cmd.args(verb).arg("--authfile").arg(self.dir.join("auth.json"));
            }
        }
        cmd
    }

    async fn run(
        &self,
        ctx: &StepContext,
        what: &str,
        cmd: Command,
        stdin: Option<&[u8]>,
        tail_lines: usize,
    ) -> Result<process::Finished, StepError> {
        let finished = process::run(ctx, what, cmd, stdin, tail_lines).await?;
        if finished.code != Some(0) {
            return Err(StepError::retryable(format!(
                "registry {what} failed ({}); last output:\n{}",
                exit(finished.code),
                finished.shown()
            ))
            .with_hint("check the registry address and that the role may push to ECR (ecr:GetAuthorizationToken, ecr:PutImage, ecr:UploadLayerPart...)"));
        }
        Ok(finished)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether the disk where this build stores images has `min_free_disk` free
/// (checked by the step before it builds, and by the preflight before a run).
pub async fn free_disk(p: &Params) -> Result<String, StepError> {
    let storage = match &p.storage {
        Some(s) => PathBuf::from(s),
        None => storage(p.builder()).await,
    };
    let required = parse_size(&p.min_free_disk).map_err(StepError::fatal)?;
    enough_free_disk(&storage, required)
}

/// Where the builder keeps images, as it says (30 s at most); its usual place
/// if it cannot say. Asked once per process and builder program: `podman info`
/// takes a third of a second, and the preflight and every build step ask.
async fn storage(builder: Builder) -> PathBuf {
    static ASKED: [tokio::sync::OnceCell<PathBuf>; 3] =
        [tokio::sync::OnceCell::const_new(), tokio::sync::OnceCell::const_new(), tokio::sync::OnceCell::const_new()];
    ASKED[builder as usize].get_or_init(|| ask_storage(builder)).await.clone()
}

async fn ask_storage(builder: Builder) -> PathBuf {
    let (args, fallback): (&[&str], &str) = match builder {
        Builder::Buildah => (&["info", "--format", "{{.store.GraphRoot}}"], "/var/lib/containers/storage"),
        Builder::Docker => (&["info", "--format", "{{.DockerRootDir}}"], "/var/lib/docker"),
        Builder::Podman => (&["info", "--format", "{{.Store.GraphRoot}}"], "/var/lib/containers/storage"),
    };
    let program = builder.program();
    let asked =
        tokio::time::timeout(Duration::from_secs(30), Command::new(program).args(args).kill_on_drop(true).output())
            .await;
    match asked {
        Ok(Ok(out)) if out.status.success() && !String::from_utf8_lossy(&out.stdout).trim().is_empty() => {
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        }
        _ => PathBuf::from(fallback),
    }
}

/// Fails before any build when the disk holding `path` has less than
/// `required` bytes free; else says how much is free.
pub fn enough_free_disk(path: &Path, required: u64) -> Result<String, StepError> {
    let free = free_bytes(path)?;
    if free < required {
        return Err(StepError::fatal(format!(
            "not enough free disk to build: {} has {} free, the build needs at least {} (min_free_disk); nothing was built or pushed",
            path.display(),
            size(free),
            size(required)
        ))
        .with_hint("free space (`podman system prune -a`), or build on the EC2 builder (runs_on: builder, workflows/builder.yaml), or lower min_free_disk"));
    }
    Ok(format!("{} free at {}, {} needed", size(free), path.display(), size(required)))
}

/// Free bytes for an unprivileged writer on the file system holding `path`
/// (its nearest existing ancestor, when it does not exist yet).
fn free_bytes(path: &Path) -> Result<u64, StepError> {
    use std::os::unix::ffi::OsStrExt;
    let existing = path.ancestors().find(|a| a.exists()).unwrap_or(Path::new("/"));
    let c_path = std::ffi::CString::new(existing.as_os_str().as_bytes())
        .map_err(|_| StepError::fatal(format!("{} is not a usable path", path.display())))?;
    // SAFETY: statvfs writes into the zeroed struct we own and reads the
    // NUL-terminated path; both outlive the call.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    if rc != 0 {
        return Err(StepError::fatal(format!(
            "cannot read the free space of {}: {}",
            existing.display(),
            std::io::Error::last_os_error()
        )));
    }
    Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// `10GiB`, `500MiB`, `2G`, `0`: bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number.parse().map_err(|_| format!("`{text}` is not a size like 10GiB"))?;
    let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("`{other}` is not a size unit (use KiB, MiB, GiB or TiB)")),
    };
    Ok((n * factor) as u64)
}

fn size(bytes: u64) -> String {
    let gib = bytes as f64 / (1024.0 * 1024.0 * 1024.0);
    if gib >= 1.0 { format!("{gib:.1} GiB") } else { format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0)) }
}

/// Runs long CPU and disk work (hashing a build context) where it cannot hold
/// up the runtime's threads, which the lease's heartbeat needs.
fn off_the_runtime<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// The hash that names a build: every file below the context (path, whether
/// executable, content; `.git` skipped), the Dockerfile's path, the build
/// arguments and the platform. Same source, same tag.
pub fn source_hash(context: &Path, p: &Params) -> Result<String, StepError> {
    if !context.is_dir() {
        return Err(StepError::fatal(format!("the build context {} is not a directory", context.display()))
            .with_hint("`context` is relative to the workflow file's directory"));
    }
    if !context.join(&p.dockerfile).is_file() {
        return Err(StepError::fatal(format!("{} has no {}", context.display(), p.dockerfile))
            .with_hint("set `dockerfile` (relative to the context)"));
    }
    let mut files = Vec::new();
    walk(context, context, &mut files)?;
    files.sort();
    let mut h = Sha256::new();
    h.update(b"ca-a2a-flow image source v1\0");
    for rel in &files {
        let path = context.join(rel);
        let meta = std::fs::symlink_metadata(&path)
            .map_err(|e| StepError::fatal(format!("cannot read {}: {e}", path.display())))?;
        h.update(rel.as_bytes());
        h.update([0]);
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).unwrap_or_default();
            h.update(b"link\0");
            h.update(target.to_string_lossy().as_bytes());
        } else if !meta.is_file() {
            // A FIFO, socket or device: named, never read (a FIFO would block for ever).
            h.update(b"special\0");
        } else {
            use std::os::unix::fs::PermissionsExt;
            h.update(if meta.permissions().mode() & 0o111 != 0 { b"exec\0" } else { b"file\0" });
            let bytes =
                std::fs::read(&path).map_err(|e| StepError::fatal(format!("cannot read {}: {e}", path.display())))?;
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(&bytes);
        }
        h.update([0]);
    }
    h.update(b"dockerfile\0");
    h.update(p.dockerfile.as_bytes());
    for (k, v) in &p.build_args {
        h.update(format!("\0arg\0{k}={v}").as_bytes());
    }
    if let Some(platform) = &p.platform {
        h.update(format!("\0platform\0{platform}").as_bytes());
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn walk(root: &Path, dir: &Path, files: &mut Vec<String>) -> Result<(), StepError> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| StepError::fatal(format!("cannot list {}: {e}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(|e| StepError::fatal(format!("cannot list {}: {e}", dir.display())))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| StepError::fatal(format!("cannot read {}: {e}", path.display())))?;
        if kind.is_dir() {
            if entry.file_name() != ".git" {
                walk(root, &path, files)?;
            }
        } else {
            files.push(path.strip_prefix(root).unwrap_or(&path).to_string_lossy().into_owned());
        }
    }
    Ok(())
}

/// Builds on the EC2 builder through SSM Run Command: the same steps as a local
/// build, as one script; its last lines say what it did.
async fn build_on_builder(
    ctx: &StepContext,
    p: &Params,
    target: &Target,
    source: Source,
) -> Result<Outputs, StepError> {
    let instance = p.instance_id.as_deref().unwrap_or_default().trim();
    if instance.is_empty() {
        return Err(StepError::fatal("runs_on: builder, but `instance_id` is empty").with_hint(
            "full.yaml makes the builder with --input build_on=builder; elsewhere pass workflows/builder.yaml's `builder` instance_id, or use runs_on: local",
        ));
    }
    let bucket = p.context_bucket.as_deref().unwrap_or_default().trim();
    if bucket.is_empty() {
        return Err(StepError::fatal("runs_on: builder, but `context_bucket` is empty").with_hint(
            "the context travels to the builder through S3: pass workflows/builder.yaml's `build-contexts` bucket name",
        ));
    }
    let Source { context, hash, tag, .. } = source;
    let upload =
        Upload { bucket: bucket.to_string(), key: format!("contexts/{}/{hash}.tar.gz", p.repository), hash, tag };
    upload_context(ctx, p, &context, &upload).await?;

    let script = builder_script(p, target, &upload);
    let ran = ssm_run_command::run(
        ctx,
        ssm_run_command::Request {
            region: p.region.as_deref(),
            instance_id: instance,
            commands: &script,
            working_directory: None,
            tail_lines: p.tail_lines,
            timeout: ctx.remaining(),
        },
    )
    .await?;
    let field = |key: &str| {
        ran.output
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix(&format!("ca-a2a-flow:{key}=")).map(|v| v.trim().to_string()))
    };
    let (Some(digest), Some(action)) = (field("digest"), field("action")) else {
        return Err(StepError::retryable(format!(
            "the build on {instance} ended without saying what it pushed; last output:\n{}",
            ran.shown
        )));
    };
    let reference = format!("{}:{}", target.uri, upload.tag);
    ctx.log(format!("{action} {reference} as {digest} on {instance}"));
    Ok(outputs(target, &reference, &upload.tag, &upload.hash, &digest, &action))
}

/// Where a context travels to the builder: `s3://bucket/key`, named by its source hash.
struct Upload {
    bucket: String,
    key: String,
    hash: String,
    tag: String,
}

/// Puts the context's files, as hashed, in a gzipped tar at the upload's key,
/// unless an object is there already (the same source, uploaded before).
async fn upload_context(ctx: &StepContext, p: &Params, context: &Path, upload: &Upload) -> Result<(), StepError> {
    let s3 = aws_sdk_s3::Client::new(&crate::aws::config(p.region.as_deref()).await);
    let url = format!("s3://{}/{}", upload.bucket, upload.key);
    let there = s3
        .head_object()
        .bucket(&upload.bucket)
        .key(&upload.key)
        .send()
        .await
        .or_absent("s3:HeadObject", &["NotFound", "NoSuchKey"])?;
    if there.is_some() {
        ctx.log(format!("context unchanged: {url} is there already, not uploaded"));
        return Ok(());
    }
    let files = off_the_runtime(|| {
        let mut files = Vec::new();
        walk(context, context, &mut files).map(|()| files)
    })?;
    ctx.progress(format!("packing {} ({} files)", context.display(), files.len()));
    let archive = pack(context, &files).await?;
    ctx.progress(format!("uploading the context to {url} ({:.1} MiB)", archive.len() as f64 / 1_048_576.0));
    // A call's usual deadline is for answers, not for carrying hundreds of MiB.
    let limit = upload_deadline(archive.len()).min(ctx.remaining());
    let timeouts =
        aws_config::timeout::TimeoutConfig::builder().operation_attempt_timeout(limit).operation_timeout(limit);
    s3.put_object()
        .bucket(&upload.bucket)
        .key(&upload.key)
        .body(aws_sdk_s3::primitives::ByteStream::from(archive))
        .customize()
        .config_override(aws_sdk_s3::config::Builder::default().timeout_config(timeouts.build()))
        .send()
        .await
        .or_step_error("s3:PutObject")?;
    ctx.log(format!("uploaded the context to {url}"));
    Ok(())
}

/// How long an upload of `bytes` may take: a call's deadline, plus a second
/// per MiB (an uplink of 8 Mbit/s at least).
fn upload_deadline(bytes: usize) -> Duration {
    crate::aws::call_timeout() + Duration::from_secs(bytes.div_ceil(1_048_576) as u64)
}

/// A gzipped tar of `files` (relative to `context`), made by `tar`.
async fn pack(context: &Path, files: &[String]) -> Result<Vec<u8>, StepError> {
    use tokio::io::AsyncWriteExt;
    let mut tar = Command::new("tar")
        .arg("-czf")
        .arg("-")
        .arg("-C")
        .arg(context)
        .args(["--null", "--no-recursion", "-T", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| StepError::fatal(format!("cannot run tar to pack the build context: {e}")))?;
    let mut list = Vec::new();
    for f in files {
        list.extend_from_slice(f.as_bytes());
        list.push(0);
    }
    let mut stdin = tar.stdin.take().expect("piped stdin");
    let writing = tokio::spawn(async move { stdin.write_all(&list).await });
    let out = tar.wait_with_output().await.map_err(|e| StepError::fatal(format!("tar: {e}")))?;
    writing.await.ok();
    if !out.status.success() {
        return Err(StepError::fatal(format!(
            "tar could not pack {}: {}",
            context.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout)
}

/// The shell script the builder runs: adopt the tag if the repository has it
/// by now, else check the disk, fetch the context into a directory of its own,
/// log in, build and push.
fn builder_script(p: &Params, target: &Target, upload: &Upload) -> String {
    let program = p.builder().program();
    let q = shell_quote;
    let mut args = String::new();
    for (k, v) in &p.build_args {
        args.push_str(&format!(" --build-arg {}", q(&format!("{k}={v}"))));
    }
    if let Some(platform) = &p.platform {
        args.push_str(&format!(" --platform {}", q(platform)));
    }
    let isolation = match p.builder() {
        Builder::Docker => String::new(),
        _ => format!(" --isolation={} --format oci", q(p.isolation.as_deref().unwrap_or("chroot"))),
    };
    let required = parse_size(&p.min_free_disk).unwrap_or(0) / 1024;
    let region = p.region.as_deref().map(|r| format!(" --region {}", q(r))).unwrap_or_default();
    format!(
        r#"set -eu
tag={tag}
ref={uri}:$tag
echo "ca-a2a-flow:source_hash="{hash}
echo "ca-a2a-flow:tag=$tag"
digest=$(aws ecr describe-images{region} --repository-name {repo} --image-ids imageTag="$tag" --query 'imageDetails[0].imageDigest' --output text 2>/dev/null || true)
if [ -n "$digest" ] && [ "$digest" != None ]; then
  echo "ca-a2a-flow:digest=$digest"; echo "ca-a2a-flow:action=adopted"; exit 0
fi
store=$({program} info --format '{store_fmt}' 2>/dev/null || echo /var/lib/containers/storage)
free=$(df -Pk "$store" 2>/dev/null | awk 'NR==2 {{print $4}}')
if [ "${{free:-0}}" -lt {required} ]; then
  echo "not enough free disk to build: $store has $((free / 1024)) MiB free, the build needs {required_mib} MiB (min_free_disk)" >&2; exit 3
fi
work=$(mktemp -d "${{TMPDIR:-/var/tmp}}/ca-a2a-flow-build.XXXXXXXX")
trap 'rm -rf "$work"' EXIT
aws s3 cp{region} {object} - | tar -xzf - -C "$work"
cd "$work"
aws ecr get-login-password{region} | {program} login --username AWS --password-stdin {host}
{program} {build_verb}{isolation} -f {dockerfile} -t "$ref" --label "ca-a2a-flow.source="{hash}{args} .
{push}
echo "ca-a2a-flow:digest=$digest"
echo "ca-a2a-flow:action=built"
"#,
        tag = q(&upload.tag),
        hash = q(&upload.hash),
        object = q(&format!("s3://{}/{}", upload.bucket, upload.key)),
        dockerfile = q(&p.dockerfile),
        uri = q(&target.uri),
        repo = q(&target.repository),
        host = q(target.host()),
        store_fmt = match p.builder() {
            Builder::Docker => "{{.DockerRootDir}}",
            Builder::Buildah => "{{.store.GraphRoot}}",
            Builder::Podman => "{{.Store.GraphRoot}}",
        },
        build_verb = if p.builder() == Builder::Buildah { "bud" } else { "build" },
        required_mib = required / 1024,
        push = match p.builder() {
            Builder::Docker => format!(
                "digest=$({program} push \"$ref\" | sed -n 's/.*digest: \\(sha256:[0-9a-f]*\\).*/\\1/p' | tail -n1)"
            ),
            _ => format!(
                "digestfile=$(mktemp)\n{program} push --digestfile \"$digestfile\" \"$ref\"\ndigest=$(cat \"$digestfile\")\nrm -f \"$digestfile\""
            ),
        },
    )
}

pub(crate) fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(extra: serde_json::Value) -> Params {
        let mut base = json!({"repository": "s/orchestrator", "context": "."});
        base.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value(base).unwrap()
    }

    fn context(name: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ca-a2a-flow-ctx-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (path, text) in files {
            let full = dir.join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, text).unwrap();
        }
        dir
    }

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(parse_size("10GiB").unwrap(), 10 << 30);
        assert_eq!(parse_size("500MiB").unwrap(), 500 << 20);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("0").unwrap(), 0);
        assert!(parse_size("ten").is_err());
        assert!(parse_size("3 parsecs").is_err());
    }

    #[test]
    fn the_same_source_hashes_the_same_and_any_change_changes_it() {
        let a = context("a", &[("Dockerfile", "FROM scratch\n"), ("src/app.txt", "v1")]);
        let b = context("b", &[("src/app.txt", "v1"), ("Dockerfile", "FROM scratch\n")]);
        let c = context("c", &[("Dockerfile", "FROM scratch\n"), ("src/app.txt", "v2")]);
        let p = params(json!({}));
        assert_eq!(source_hash(&a, &p).unwrap(), source_hash(&b, &p).unwrap());
        assert_ne!(source_hash(&a, &p).unwrap(), source_hash(&c, &p).unwrap());
        let with_arg = params(json!({"build_args": {"VERSION": "2"}}));
        assert_ne!(source_hash(&a, &p).unwrap(), source_hash(&a, &with_arg).unwrap());
    }

    #[test]
    fn an_upload_may_take_a_second_per_mib_beyond_a_calls_deadline() {
        let call = crate::aws::call_timeout();
        assert_eq!(upload_deadline(2_000), call + Duration::from_secs(1));
        assert_eq!(upload_deadline(300 * 1_048_576), call + Duration::from_secs(300), "300 MiB: five more minutes");
    }

    #[test]
    fn a_context_without_its_dockerfile_is_a_fatal_error_naming_it() {
        let dir = context("nodf", &[("app.txt", "x")]);
        let err = source_hash(&dir, &params(json!({}))).unwrap_err();
        assert!(!err.is_retryable());
        assert!(err.message.contains("has no Dockerfile"), "{}", err.message);
    }

    #[test]
    fn a_disk_with_less_than_the_minimum_fails_naming_the_path_and_both_sizes() {
        let err = enough_free_disk(Path::new("/tmp/not/yet/there"), u64::MAX / 2).unwrap_err();
        assert!(!err.is_retryable());
        assert!(err.message.contains("/tmp/not/yet/there has "), "{}", err.message);
        assert!(err.message.contains("GiB free, the build needs at least"), "{}", err.message);
        assert!(enough_free_disk(Path::new("/tmp"), 0).is_ok());
    }

    #[test]
    fn a_builder_build_needs_an_instance_and_a_bucket_and_a_local_one_refuses_an_instance() {
        let p = params(json!({"runs_on": "builder"}));
        let paths: Vec<_> = BuildPush.problems(&p).into_iter().map(|p| p.path).collect();
        assert_eq!(paths, [vec!["instance_id".to_string()], vec!["context_bucket".to_string()]]);
        let p = params(json!({"instance_id": "i-1"}));
        assert_eq!(BuildPush.problems(&p)[0].path, ["instance_id"]);
        assert!(BuildPush.problems(&params(json!({"instance_id": ""}))).is_empty(), "an empty one is none");
    }

    fn upload(bucket: &str, repository: &str) -> Upload {
        Upload {
            bucket: bucket.into(),
            key: format!("contexts/{repository}/{}.tar.gz", "ab".repeat(32)),
            hash: "ab".repeat(32),
            tag: "v1-abababababab".into(),
        }
    }

    fn ecr_target(repository: &str, uri: &str) -> Target {
        Target {
            ecr: aws_sdk_ecr::Client::from_conf(
                aws_sdk_ecr::Config::builder().behavior_version(aws_config::BehaviorVersion::latest()).build(),
            ),
            repository: repository.into(),
            uri: uri.into(),
            override_base: None,
            insecure: false,
        }
    }

    #[test]
    fn the_builder_script_adopts_before_it_builds_with_docker_and_never_holds_the_password() {
        let p = params(json!({"runs_on": "builder", "instance_id": "i-1", "context": "orch", "context_bucket": "b"}));
        let target = ecr_target("s/orchestrator", "1.dkr.ecr.eu-west-3.amazonaws.com/s/orchestrator");
        let script = builder_script(&p, &target, &upload("b", "s/orchestrator"));
        let describe = script.find("aws ecr describe-images").unwrap();
        // Amazon Linux 2023, the builder's image, has docker in its repositories, not podman.
        let build = script.find("docker build -f").unwrap();
        assert!(describe < build, "{script}");
        let fetch = script.find("aws s3 cp 's3://b/contexts/s/orchestrator/abab").unwrap();
        assert!(describe < fetch && fetch < build, "the context is fetched once it is needed: {script}");
        assert!(script.contains("work=$(mktemp -d"), "each build in a directory of its own: {script}");
        assert!(script.contains("get-login-password | docker login --username AWS --password-stdin"));
        assert!(script.contains("docker push \"$ref\""));
        assert!(!script.contains("podman"), "{script}");
    }

    #[test]
    fn podman_builds_here_by_default_and_a_step_may_name_its_builder() {
        assert_eq!(params(json!({"context": "."})).builder(), Builder::Podman);
        assert_eq!(
            params(json!({"runs_on": "builder", "instance_id": "i-1", "context": "/s"})).builder(),
            Builder::Docker
        );
        let named = params(json!({"runs_on": "builder", "instance_id": "i-1", "context": "/s", "builder": "podman"}));
        assert_eq!(named.builder(), Builder::Podman);
    }

    /// Runs the builder script with `sh` as the builder would, with stand-ins
    /// for `aws` and `podman` that record what they were given.
    #[test]
    fn values_in_the_builder_script_arrive_as_literal_text_and_never_run() {
        let root = tempfile::tempdir().unwrap();
        let marker = |n: u32| root.path().join(format!("ran-{n}"));
        let hostile = |n: u32| format!("$(touch {0})`touch {0}`;touch {0}\n'\"", marker(n).display());
        let context = root.path().join("ctx $(touch ran-0) ; `touch ran-0`");
        std::fs::create_dir_all(&context).unwrap();
        std::fs::write(context.join("Dockerfile"), "FROM scratch\n").unwrap();
        let bin = root.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let record = root.path().join("podman-build.args");
        let stub = |name: &str, body: String| {
            use std::os::unix::fs::PermissionsExt;
            let path = bin.join(name);
            std::fs::write(&path, format!("#!/bin/bash\n{body}")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        // What `aws s3 cp` hands over: the context, packed as the step packs it.
        let archive = root.path().join("context.tar.gz");
        let packed = tokio::runtime::Runtime::new().unwrap().block_on(pack(&context, &["Dockerfile".to_string()]));
        std::fs::write(&archive, packed.unwrap()).unwrap();
        stub(
            "aws",
            format!(
                "case \"$*\" in *describe-images*) echo None ;; *s3\\ cp*) cat {} ;; *) echo password ;; esac\n",
                shell_quote(&archive.display().to_string())
            ),
        );
        stub(
            "podman",
            format!(
                "case \"$1\" in\n info) echo {store} ;;\n login) cat >/dev/null ;;\n build) printf '%s\\0' \"$@\" > {record} ;;\n push) echo sha256:0123 > \"$3\" ;;\nesac\n",
                store = shell_quote(&root.path().display().to_string()),
                record = shell_quote(&record.display().to_string()),
            ),
        );
        let p = params(json!({
            "runs_on": "builder", "instance_id": "i-1", "min_free_disk": "0", "builder": "podman",
            "context": context.display().to_string(), "context_bucket": hostile(8),
            "tag": format!("v1{}", hostile(1)),
            "dockerfile": format!("Dockerfile{}", hostile(2)),
            "build_args": {"V": hostile(3)},
            "platform": hostile(4),
            "region": hostile(5),
        }));
        let target = ecr_target(&format!("s/app{}", hostile(6)), &format!("1.dkr.ecr/s/app{}", hostile(7)));

        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(builder_script(
                &p,
                &target,
                &Upload { tag: format!("v1{}-abab", hostile(1)), ..upload(&hostile(8), "s") },
            ))
            .current_dir(root.path())
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .output()
            .expect("sh runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));

        for n in 0..9 {
            assert!(!marker(n).exists(), "value {n} ran as code:\n{stdout}");
        }
        assert!(stdout.contains("ca-a2a-flow:action=built"), "{stdout}");
        let args = std::fs::read_to_string(&record).expect("podman build ran");
        let args: Vec<&str> = args.trim_end_matches('\0').split('\0').collect();
        let after = |flag: &str| args[args.iter().position(|a| *a == flag).unwrap() + 1].to_string();
        assert_eq!(after("--build-arg"), format!("V={}", hostile(3)));
        assert_eq!(after("--platform"), hostile(4));
        assert_eq!(after("-f"), format!("Dockerfile{}", hostile(2)));
        let reference = after("-t");
        assert_eq!(reference, format!("1.dkr.ecr/s/app{}:v1{}-abab", hostile(7), hostile(1)));
    }

    #[test]
    fn a_fifo_in_the_context_is_hashed_by_its_name_and_never_read() {
        let dir = context("fifo", &[("Dockerfile", "FROM scratch\n")]);
        let fifo = std::ffi::CString::new(dir.join("pipe").display().to_string()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0, "mkfifo");
        let (tx, rx) = std::sync::mpsc::channel();
        let hashing = dir.clone();
        std::thread::spawn(move || tx.send(source_hash(&hashing, &params(json!({})))));
        let hash = rx.recv_timeout(Duration::from_secs(20)).expect("hashing a context with a FIFO never ends");
        assert_eq!(hash.unwrap().len(), 64);
    }

    /// The lease's heartbeat is a task on the same runtime as the steps: with a
    /// single worker thread, work that held it would stop every other task.
    #[test]
    fn work_off_the_runtime_lets_the_runtimes_other_tasks_run_meanwhile() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let answered = rt.block_on(async {
            tokio::spawn(async {
                let (tx, rx) = std::sync::mpsc::channel();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    let _ = tx.send(());
                });
                off_the_runtime(move || rx.recv_timeout(Duration::from_secs(10)).is_ok())
            })
            .await
            .unwrap()
        });
        assert!(answered, "the work held the only runtime thread: no other task ran while it lasted");
    }
}
