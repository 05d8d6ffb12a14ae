//! What a step kind is: typed parameters, a documented set of outputs, and an
//! async `run`. A kind lives in the `steps` crate (one file) and is added to the
//! registry with one line; nothing here changes when a kind is added.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value as Json;
use tokio::time::Instant;

use crate::redact::Redactor;

/// Step outputs: key -> JSON value.
pub type Outputs = BTreeMap<String, Json>;

/// Whether trying again may help. Decided by the kind (its one classifier), and
/// by the engine for its own failures (timeouts are retryable, template errors fatal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorClass {
    Retryable,
    Fatal,
}

/// A step failure: what failed, why, and what to do.
#[derive(Debug, Clone, PartialEq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("{message}")]
pub struct StepError {
    pub class: ErrorClass,
    pub message: String,
    #[serde(default)]
    pub hint: Option<String>,
}

impl StepError {
    pub fn retryable(message: impl Into<String>) -> Self {
        Self { class: ErrorClass::Retryable, message: message.into(), hint: None }
    }
    pub fn fatal(message: impl Into<String>) -> Self {
        Self { class: ErrorClass::Fatal, message: message.into(), hint: None }
    }
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
    pub fn is_retryable(&self) -> bool {
        self.class == ErrorClass::Retryable
    }
}

/// Which outputs a kind produces, for `${{ steps.X.outputs.Y }}` checks.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputSpec {
    /// Always these keys.
    Fixed(Vec<&'static str>),
    /// The keys the step's parameters declare (for example `shell`'s `outputs:`).
    Declared(Vec<String>),
}

/// Documentation of a kind, for `ca-a2a-flow steps describe KIND`; its
/// parameters are documented by their type ([`Parameters`]).
#[derive(Debug, Clone, Copy)]
pub struct KindDoc {
    pub summary: &'static str,
    /// (name, description): also the outputs the kind produces, unless it
    /// says otherwise ([`Step::outputs`]).
    pub outputs: &'static [(&'static str, &'static str)],
    pub example: &'static str,
}

/// One documented parameter: (name, type as a workflow reads it, description).
pub type DocRow = (&'static str, &'static str, &'static str);

/// A kind's parameter type, documented: a row per field, in order. Written by
/// `#[derive(Parameters)]` from the fields themselves, so the documented
/// parameters are the accepted ones, and `defaults.with` can trust them.
pub trait Parameters: DeserializeOwned + Send + 'static {
    const DOC: &'static [DocRow];
}

/// Untyped parameters (kinds in tests and benchmarks): nothing documented.
impl Parameters for Json {
    const DOC: &'static [DocRow] = &[];
}

/// A problem with one parameter, found before anything runs.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamProblem {
    /// Path below `with:` (map keys and list indexes); empty for `with:` itself.
    pub path: Vec<String>,
    pub message: String,
}

impl ParamProblem {
    pub fn at(path: &[&str], message: impl Into<String>) -> Self {
        Self { path: path.iter().map(|s| s.to_string()).collect(), message: message.into() }
    }
}

/// Something a step says while it runs: shown live and kept in the event log.
#[derive(Debug, Clone)]
pub enum Report {
    /// A line for the event log (a command's output, a decision taken).
    Log(String),
    /// The current state of what the step waits for ("status 503, 12 checks").
    Progress(String),
}

/// Where a running step sends its reports (the engine redacts and stores them).
pub type ReportSink = Arc<dyn Fn(&str, Report) + Send + Sync>;

/// The longest log line kept, in bytes; the rest is dropped, and the line says so.
pub const MAX_LINE: usize = 16 * 1024;
/// The most log lines one attempt keeps; later ones are counted, not kept.
pub const MAX_LINES: u64 = 20_000;

/// `line`, cut at [`MAX_LINE`] bytes (on a character boundary).
pub fn capped(mut line: String) -> String {
    if line.len() <= MAX_LINE {
        return line;
    }
    let mut cut = MAX_LINE;
    while !line.is_char_boundary(cut) {
        cut -= 1;
    }
    let dropped = line.len() - cut;
    line.truncate(cut);
    line.push_str(&format!(" … [{dropped} more bytes dropped]"));
    line
}

/// How many lines an attempt logged, and how many it dropped.
#[derive(Debug, Default)]
pub struct LogBudget {
    lines: std::sync::atomic::AtomicU64,
    dropped: std::sync::atomic::AtomicU64,
}

/// What a step attempt knows about its run.
#[derive(Clone)]
pub struct StepContext {
    pub run_id: String,
    pub run_name: String,
    /// In a destroy run: the deploy run whose resources it deletes.
    pub destroy_of: Option<String>,
    pub step_id: String,
    pub attempt: u32,
    pub max_attempts: u32,
    /// When this attempt's deadline expires; the engine cuts the attempt then.
    pub deadline: Instant,
    /// The directory of the workflow file; relative paths resolve from here.
    pub workflow_dir: PathBuf,
    pub redactor: Redactor,
    pub(crate) sink: ReportSink,
    /// The values of the templates in the kind's script parameters
    /// ([`Step::SCRIPTS`]): the script refers to them as these environment
    /// variables, which the kind must set where the script runs.
    pub bound: Vec<(String, String)>,
    pub(crate) budget: Arc<LogBudget>,
    /// The step's `secret_outputs`: a kind that learns their values before it
    /// fails (a command that wrote them, then exited non-zero) declares them
    /// with [`StepContext::secret`], so they are masked in its error and logs.
    pub secret_outputs: Vec<String>,
}

impl StepContext {
    /// A line for the step's log: masked, cut at [`MAX_LINE`] bytes, and
    /// dropped (and counted) past [`MAX_LINES`] lines in one attempt.
    pub fn log(&self, line: impl AsRef<str>) {
        if self.budget.lines.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= MAX_LINES {
            self.budget.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        (self.sink)(&self.step_id, Report::Log(capped(self.redactor.redact(line.as_ref()))));
    }
    pub fn progress(&self, what: impl AsRef<str>) {
        (self.sink)(&self.step_id, Report::Progress(capped(self.redactor.redact(what.as_ref()))));
    }
    /// Lines of this attempt dropped past [`MAX_LINES`].
    pub fn dropped_lines(&self) -> u64 {
        self.budget.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }
    /// Declares a value secret: it is masked in every log, event and error from now on.
    pub fn secret(&self, value: &str) {
        self.redactor.add(value);
    }
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// The token every process of this attempt carries in its environment
    /// (as [`crate::orphans::ATTEMPT_ENV`]), so none outlives the attempt.
    pub fn attempt_token(&self) -> String {
        crate::orphans::attempt_token(&self.run_id, &self.step_id, self.attempt)
    }

    /// This attempt's private directory (0700), created empty on first use and
    /// removed when the attempt ends, or by the next resume after a crash.
    pub fn scratch_dir(&self) -> std::io::Result<PathBuf> {
        crate::orphans::attempt_scratch(&self.run_id, &self.step_id, self.attempt)
    }

    /// A context for exercising a kind outside a run (tests, benchmarks).
    pub fn detached(step_id: &str, deadline: Duration, sink: ReportSink) -> Self {
        Self {
            run_id: "detached".into(),
            run_name: "detached".into(),
            destroy_of: None,
            step_id: step_id.into(),
            attempt: 1,
            max_attempts: 1,
            deadline: Instant::now() + deadline,
            workflow_dir: PathBuf::from("."),
            redactor: Redactor::default(),
            sink,
            bound: Vec::new(),
            budget: Arc::default(),
            secret_outputs: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_line_is_cut_and_says_how_much_was_dropped() {
        let line = capped("é".repeat(MAX_LINE));
        assert!(line.len() < MAX_LINE + 64);
        assert!(line.ends_with(&format!(" … [{} more bytes dropped]", MAX_LINE)), "{}", &line[line.len() - 40..]);
        assert_eq!(capped("short".into()), "short");
    }

    #[test]
    fn an_attempt_keeps_its_first_lines_and_counts_the_rest() {
        let kept = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let k = kept.clone();
        let sink: ReportSink = Arc::new(move |_, _| {
            k.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
        let ctx = StepContext::detached("noisy", Duration::from_secs(5), sink);
        for i in 0..MAX_LINES + 5 {
            ctx.log(format!("line {i}"));
        }
        assert_eq!(kept.load(std::sync::atomic::Ordering::Relaxed), MAX_LINES);
        assert_eq!(ctx.dropped_lines(), 5);
    }
}

/// A kind's name and parameter type: declared with its parameters,
/// `#[derive(Parameters)] #[kind(name = "aws.ec2.vpc", step = Vpc)]`.
pub trait Kind {
    type Params: Parameters;

    /// The name used in `uses:`, like `shell` or `aws.ec2.vpc`.
    const KIND: &'static str;
}

/// A step kind with typed parameters. Implement this in `steps/<kind>.rs`.
pub trait Step: Kind + Send + Sync + 'static {
    const DOC: KindDoc;

    /// Outputs, given the (possibly templated) parameters: by default the
    /// documented ones.
    fn outputs(&self, _params: &Json) -> OutputSpec {
        OutputSpec::Fixed(Self::DOC.outputs.iter().map(|(name, _)| *name).collect())
    }

    /// Whether an attempt may change anything outside the engine. A kind that
    /// cannot (`noop`) needs no `started` checkpoint before it runs: its success
    /// is its only commit. Every other kind keeps the default.
    const SIDE_EFFECTS: bool = true;

    /// Parameters that are POSIX shell scripts: their templates are bound, not
    /// pasted ([`crate::template::Scope::bind_script`]); the values reach the
    /// kind in [`StepContext::bound`], to be set as environment variables where
    /// the script runs. A value from a template never runs as code.
    const SCRIPTS: &'static [&'static str] = &[];

    /// Problems beyond the parameters' types (ranges, combinations).
    fn problems(&self, _params: &Self::Params) -> Vec<ParamProblem> {
        Vec::new()
    }

    /// Files or directories on this machine that a step reads, relative to the
    /// workflow file, as `(parameter, path)`: each must exist before anything
    /// runs, so `run` and `plan` refuse a missing one, naming it.
    fn local_paths(&self, _params: &Self::Params) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    fn run(&self, ctx: &StepContext, params: Self::Params) -> impl Future<Output = Result<Outputs, StepError>> + Send;

    /// What a run would do, found with read-only calls only (`ca-a2a-flow plan`).
    fn plan(&self, _ctx: &StepContext, _params: Self::Params) -> impl Future<Output = Result<Plan, StepError>> + Send {
        async { Ok(Plan::none("makes no cloud resource")) }
    }

    /// How long a step of this kind may take when the step itself does not
    /// say (`timeout`, `attempt_timeout`): a kind that waits long for what it
    /// makes (a database: 40 minutes) declares it here, over a file's `defaults:`.
    const DEADLINE: Option<Deadline> = None;

    /// Whether this kind removes what it made (`ca-a2a-flow destroy`).
    const DESTROYS: bool = false;

    /// What `destroy` keeps with these options, said before it asks
    /// ("buckets are kept with their data (--delete-data deletes them)").
    fn kept_on_destroy(&self, _options: &DestroyOptions) -> Option<&'static str> {
        None
    }

    /// Why `destroy` with these options must not start at all for a step with
    /// these parameters (a database with deletion protection, without
    /// `--delete-data`): said before anything is deleted.
    fn destroy_refused(&self, _params: &Self::Params, _options: &DestroyOptions) -> Option<String> {
        None
    }

    /// Removes what this step owns. It finds it by its identity, as `run` does,
    /// not by recorded outputs: a run killed between a creation and its
    /// checkpoint recorded none. A resource already gone counts as removed.
    fn destroy(
        &self,
        _ctx: &StepContext,
        _params: Self::Params,
        _options: &DestroyOptions,
    ) -> impl Future<Output = Result<Outputs, StepError>> + Send {
        async { Ok(Outputs::new()) }
    }
}

/// A kind's own deadline: for the whole step (retries included) and for one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    pub total: Duration,
    pub attempt: Duration,
}

impl Deadline {
    pub const fn minutes(total: u64, attempt: u64) -> Self {
        Self { total: Duration::from_secs(total * 60), attempt: Duration::from_secs(attempt * 60) }
    }
}

/// What a run would do to a step's resource, as read-only calls found it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    pub action: PlanAction,
    /// What differs (`memory: 512 -> 1024`), or why (`owned by stack x`).
    pub changes: Vec<String>,
    /// The step's outputs will differ from the last run's (a new task
    /// definition revision): steps that use them change too.
    #[serde(default)]
    pub new_outputs: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlanAction {
    /// Nothing found: the run creates it.
    Create,
    /// Found, owned by this stack, as declared.
    Adopt,
    /// Found, owned by this stack, with settings the run changes.
    Update,
    /// Found but not usable: owned by another stack or by nobody, or a setting
    /// that cannot change. The run would fail.
    Conflict,
    /// This kind makes nothing (or cannot be checked before its inputs exist).
    None,
}

impl Plan {
    pub fn create() -> Self {
        Self { action: PlanAction::Create, changes: Vec::new(), new_outputs: false }
    }
    pub fn adopt() -> Self {
        Self { action: PlanAction::Adopt, changes: Vec::new(), new_outputs: false }
    }
    pub fn none(why: impl Into<String>) -> Self {
        Self { action: PlanAction::None, changes: vec![why.into()], new_outputs: false }
    }
    pub fn conflict(why: impl Into<String>) -> Self {
        Self { action: PlanAction::Conflict, changes: vec![why.into()], new_outputs: false }
    }
    /// Update when `changes` is not empty, else adopt.
    pub fn changes(changes: Vec<String>) -> Self {
        let action = if changes.is_empty() { PlanAction::Adopt } else { PlanAction::Update };
        Self { action, changes, new_outputs: false }
    }
}

/// What `destroy` removes beyond the default: data, images and secrets without
/// their recovery window are kept unless asked for.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DestroyOptions {
    /// Empty and delete buckets.
    pub delete_data: bool,
    /// Delete image repositories with their images.
    pub delete_images: bool,
    /// Delete secrets at once instead of after a 7-day recovery window.
    pub force_delete_secrets: bool,
    /// Delete databases without a final snapshot.
    pub skip_final_snapshot: bool,
}

/// The kind name under which a destroy run calls a kind's `destroy`.
pub const DESTROY_PREFIX: &str = "destroy:";

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A step kind with its parameter type erased, as the registry holds it.
pub trait ErasedKind: Send + Sync {
    fn name(&self) -> &'static str;
    fn doc(&self) -> KindDoc;
    /// The parameters it takes ([`Parameters::DOC`]).
    fn params(&self) -> &'static [DocRow];
    fn outputs(&self, params: &Json) -> OutputSpec;
    /// Type-checks parameters that may still contain templates.
    fn validate(&self, params: &Json) -> Vec<ParamProblem>;
    /// [`Step::local_paths`] of parameters that fit the kind (none otherwise).
    fn local_paths(&self, params: &Json) -> Vec<(&'static str, String)>;
    fn execute<'a>(&'a self, ctx: &'a StepContext, params: Json) -> BoxFuture<'a, Result<Outputs, StepError>>;
    fn destroys(&self) -> bool;
    fn deadline(&self) -> Option<Deadline>;
    /// [`Step::kept_on_destroy`].
    fn kept_on_destroy(&self, options: &DestroyOptions) -> Option<&'static str>;
    /// [`Step::destroy_refused`], for the parameters a deploy resolved.
    fn destroy_refused(&self, params: &Json, options: &DestroyOptions) -> Option<String>;
    /// [`Step::SCRIPTS`].
    fn scripts(&self) -> &'static [&'static str];
    /// [`Step::SIDE_EFFECTS`].
    fn side_effects(&self) -> bool;
    /// Runs `plan`; parameters that do not fit yet (they need outputs no run made) give `PlanAction::None`.
    fn execute_plan<'a>(&'a self, ctx: &'a StepContext, params: Json) -> BoxFuture<'a, Result<Plan, StepError>>;
    /// Runs `destroy` with `{ "params": …, "options": … }`.
    fn execute_destroy<'a>(&'a self, ctx: &'a StepContext, params: Json) -> BoxFuture<'a, Result<Outputs, StepError>>;
}

impl<S: Step> ErasedKind for S {
    fn name(&self) -> &'static str {
        S::KIND
    }
    fn doc(&self) -> KindDoc {
        S::DOC
    }
    fn params(&self) -> &'static [DocRow] {
        S::Params::DOC
    }
    fn outputs(&self, params: &Json) -> OutputSpec {
        Step::outputs(self, params)
    }
    fn validate(&self, params: &Json) -> Vec<ParamProblem> {
        match serde_path_to_error::deserialize::<_, S::Params>(params.clone()) {
            Ok(typed) => self.problems(&typed),
            Err(err) => {
                let path = path_segments(err.path());
                let message = err.inner().to_string();
                // A templated value is checked when it is resolved, not now.
                if value_at(params, &path).is_some_and(|v| v.as_str().is_some_and(crate::template::contains_template)) {
                    return Vec::new();
                }
                vec![ParamProblem { path, message }]
            }
        }
    }
    fn local_paths(&self, params: &Json) -> Vec<(&'static str, String)> {
        serde_json::from_value::<S::Params>(params.clone()).map(|p| Step::local_paths(self, &p)).unwrap_or_default()
    }
    fn execute<'a>(&'a self, ctx: &'a StepContext, params: Json) -> BoxFuture<'a, Result<Outputs, StepError>> {
        Box::pin(async move {
            let typed: S::Params = serde_path_to_error::deserialize(params).map_err(|e| {
                StepError::fatal(format!("parameter `{}`: {}", e.path(), e.inner()))
                    .with_hint("a template resolved to a value of the wrong type; check the referenced input or output")
            })?;
            // What a template resolved to is held to the kind's rules before anything runs.
            if let Some(p) = self.problems(&typed).into_iter().next() {
                return Err(StepError::fatal(format!("parameter `{}`: {}", p.path.join("."), p.message)).with_hint(
                    "a template resolved to a value this kind refuses; check the referenced input or output",
                ));
            }
            self.run(ctx, typed).await
        })
    }
    fn destroys(&self) -> bool {
        S::DESTROYS
    }
    fn deadline(&self) -> Option<Deadline> {
        S::DEADLINE
    }
    fn kept_on_destroy(&self, options: &DestroyOptions) -> Option<&'static str> {
        Step::kept_on_destroy(self, options)
    }
    fn destroy_refused(&self, params: &Json, options: &DestroyOptions) -> Option<String> {
        serde_json::from_value::<S::Params>(params.clone()).ok().and_then(|p| Step::destroy_refused(self, &p, options))
    }
    fn scripts(&self) -> &'static [&'static str] {
        S::SCRIPTS
    }
    fn side_effects(&self) -> bool {
        S::SIDE_EFFECTS
    }
    fn execute_plan<'a>(&'a self, ctx: &'a StepContext, params: Json) -> BoxFuture<'a, Result<Plan, StepError>> {
        Box::pin(async move {
            match serde_path_to_error::deserialize::<_, S::Params>(params) {
                Ok(typed) => self.plan(ctx, typed).await,
                Err(e) => Ok(Plan::none(format!("`{}` is known only once earlier steps ran", e.path()))),
            }
        })
    }
    fn execute_destroy<'a>(&'a self, ctx: &'a StepContext, params: Json) -> BoxFuture<'a, Result<Outputs, StepError>> {
        Box::pin(async move {
            #[derive(serde::Deserialize)]
            struct Call<P> {
                params: P,
                #[serde(default)]
                options: DestroyOptions,
            }
            let call: Call<S::Params> = serde_path_to_error::deserialize(params).map_err(|e| {
                StepError::fatal(format!("parameter `{}`: {}", e.path(), e.inner()))
                    .with_hint("the destroy run's parameters do not fit this kind any more; destroy by hand or with an older build")
            })?;
            self.destroy(ctx, call.params, &call.options).await
        })
    }
}

/// A kind's `destroy`, registered as `destroy:<kind>` for destroy runs.
struct Undo {
    name: &'static str,
    inner: Arc<dyn ErasedKind>,
}

impl ErasedKind for Undo {
    fn name(&self) -> &'static str {
        self.name
    }
    fn doc(&self) -> KindDoc {
        self.inner.doc()
    }
    fn params(&self) -> &'static [DocRow] {
        self.inner.params()
    }
    fn outputs(&self, _params: &Json) -> OutputSpec {
        OutputSpec::Fixed(Vec::new())
    }
    fn validate(&self, _params: &Json) -> Vec<ParamProblem> {
        Vec::new()
    }
    fn local_paths(&self, _params: &Json) -> Vec<(&'static str, String)> {
        Vec::new()
    }
    fn execute<'a>(&'a self, ctx: &'a StepContext, params: Json) -> BoxFuture<'a, Result<Outputs, StepError>> {
        self.inner.execute_destroy(ctx, params)
    }
    fn destroys(&self) -> bool {
        false
    }
    fn deadline(&self) -> Option<Deadline> {
        None
    }
    fn kept_on_destroy(&self, options: &DestroyOptions) -> Option<&'static str> {
        self.inner.kept_on_destroy(options)
    }
    fn destroy_refused(&self, params: &Json, options: &DestroyOptions) -> Option<String> {
        self.inner.destroy_refused(params, options)
    }
    fn scripts(&self) -> &'static [&'static str] {
        &[]
    }
    fn side_effects(&self) -> bool {
        true
    }
    fn execute_plan<'a>(&'a self, _ctx: &'a StepContext, _params: Json) -> BoxFuture<'a, Result<Plan, StepError>> {
        Box::pin(async { Ok(Plan::none("a destroy step")) })
    }
    fn execute_destroy<'a>(
        &'a self,
        _ctx: &'a StepContext,
        _params: Json,
    ) -> BoxFuture<'a, Result<Outputs, StepError>> {
        Box::pin(async { Ok(Outputs::new()) })
    }
}

fn path_segments(path: &serde_path_to_error::Path) -> Vec<String> {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|s| match s {
            Segment::Map { key } => Some(key.clone()),
            Segment::Seq { index } => Some(index.to_string()),
            Segment::Enum { variant } => Some(variant.clone()),
            Segment::Unknown => None,
        })
        .collect()
}

fn value_at<'a>(value: &'a Json, path: &[String]) -> Option<&'a Json> {
    path.iter().try_fold(value, |v, seg| match v {
        Json::Object(m) => m.get(seg),
        Json::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// One step as a workflow check sees it: its id, kind and (unresolved) `with`.
pub struct StepView<'a> {
    pub id: &'a str,
    pub uses: &'a str,
    pub with: &'a Json,
}

/// What a workflow check found wrong: at which step and parameter, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub step: String,
    pub path: Vec<String>,
    pub message: String,
    pub hint: Option<String>,
}

/// A rule across the steps of a workflow, applied by `validate` (and before
/// every run) after each step's own parameter problems: for what spans steps,
/// like "every service's target group is reached by a listener".
pub type WorkflowRule = fn(&[StepView<'_>]) -> Vec<Finding>;

/// The step kinds a workflow may use, and the rules across steps.
#[derive(Default, Clone)]
pub struct Registry {
    kinds: BTreeMap<&'static str, Arc<dyn ErasedKind>>,
    /// `destroy:<kind>` for every kind that destroys.
    undo: BTreeMap<String, Arc<dyn ErasedKind>>,
    rules: Vec<WorkflowRule>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn register<S: Step>(mut self, kind: S) -> Self {
        let kind: Arc<dyn ErasedKind> = Arc::new(kind);
        if S::DESTROYS {
            let name = format!("{DESTROY_PREFIX}{}", S::KIND);
            // One small name per kind for the process's lifetime.
            let leaked: &'static str = Box::leak(name.clone().into_boxed_str());
            self.undo.insert(name, Arc::new(Undo { name: leaked, inner: kind.clone() }));
        }
        self.kinds.insert(S::KIND, kind);
        self
    }
    pub fn rule(mut self, rule: WorkflowRule) -> Self {
        self.rules.push(rule);
        self
    }
    pub fn rules(&self) -> &[WorkflowRule] {
        &self.rules
    }
    /// A kind by name; `destroy:<kind>` is that kind's `destroy`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn ErasedKind>> {
        self.kinds.get(name).or_else(|| self.undo.get(name))
    }
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.kinds.keys().copied()
    }
}
