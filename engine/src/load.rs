//! Loading and validating a workflow file: every problem at once, each with
//! `file:line:col`, before anything runs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value as Json;

use crate::diag::{Diagnostic, Diagnostics, closest};
use crate::kind::{DocRow, OutputSpec, Registry, StepView};

/// The parameter names of a kind's own wait, held to the step's timeout.
const WAITS: &[&str] = &["wait", "deadline"];
use crate::model::{Defaults, InputSpec, RetryPolicy, StepDef, Workflow};
use crate::template::{self, Ref};
use crate::yaml::{self, Key, Loc, Node, Value};

const TOP_KEYS: &[&str] = &["name", "description", "inputs", "defaults", "include", "steps"];
const STEP_KEYS: &[&str] = &[
    "id",
    "uses",
    "with",
    "needs",
    "timeout",
    "attempt_timeout",
    "retry",
    "secret_outputs",
    "description",
    "approve",
    "when",
    "otherwise",
    "for_each",
];
const DEFAULT_KEYS: &[&str] = &["timeout", "attempt_timeout", "retry", "with"];
const RETRY_KEYS: &[&str] = &["max_attempts", "initial_delay", "max_delay", "multiplier", "jitter"];
const INPUT_KEYS: &[&str] = &["default", "description"];

/// Loads `path` and the files it includes, and validates the whole workflow.
pub fn load(path: &Path, registry: &Registry) -> Result<Workflow, Diagnostics> {
    let mut loader = Loader {
        registry,
        diags: Diagnostics::default(),
        steps: Vec::new(),
        inputs: BTreeMap::new(),
        loaded: BTreeSet::new(),
        groups: BTreeMap::new(),
    };
    let mut stack = Vec::new();
    let name = loader.file(path, FileDefaults::default(), &mut stack, None);
    let workflow = loader.finish(path, name);
    let mut diags = loader.diags;
    if diags.is_empty() {
        Ok(workflow)
    } else {
        diags.sort();
        Err(diags)
    }
}

struct RawStep {
    def: StepDef,
    file: PathBuf,
    id_loc: Loc,
    uses_loc: Loc,
    with_key_loc: Option<Loc>,
    with: Option<Node>,
    needs: Vec<(String, Loc)>,
    when_loc: Option<Loc>,
}

struct Loader<'r> {
    registry: &'r Registry,
    diags: Diagnostics,
    steps: Vec<RawStep>,
    inputs: BTreeMap<String, (InputSpec, PathBuf, Loc)>,
    /// Files already read: a file included twice (a diamond of includes) joins once.
    loaded: BTreeSet<PathBuf>,
    /// Each `for_each` step's id, with the ids it expanded to.
    groups: BTreeMap<String, Vec<String>>,
}

/// A file's defaults: the engine's (timeouts, retry) and `with` parameters
/// given to every step whose kind takes them.
#[derive(Clone, Default)]
struct FileDefaults {
    base: Defaults,
    with: Vec<(Key, Node)>,
}

impl Loader<'_> {
    fn err(&mut self, file: &Path, loc: Loc, message: impl Into<String>) {
        self.diags.push(Diagnostic::new(file, loc, message));
    }

    fn err_hint(&mut self, file: &Path, loc: Loc, message: impl Into<String>, hint: impl Into<String>) {
        self.diags.push(Diagnostic::new(file, loc, message).hint(hint));
    }

    /// Reads one file (recursively its includes); returns the workflow name.
    fn file(
        &mut self,
        path: &Path,
        inherited: FileDefaults,
        stack: &mut Vec<PathBuf>,
        included_at: Option<(&Path, Loc)>,
    ) -> Option<String> {
        let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                match included_at {
                    Some((from, loc)) => {
                        self.err(from, loc, format!("cannot read included file `{}`: {e}", path.display()))
                    }
                    None => self.err(path, Loc::default(), format!("cannot read workflow file: {e}")),
                }
                return None;
            }
        };
        if stack.contains(&canonical) {
            let (from, loc) = included_at.expect("only includes can recurse");
            self.err(from, loc, format!("`{}` includes itself (through {} file(s))", path.display(), stack.len()));
            return None;
        }
        if !self.loaded.insert(canonical.clone()) {
            return None;
        }
        let doc = match yaml::parse(&text) {
            Ok(d) => d,
            Err((reason, loc)) => {
                self.err(path, loc, format!("invalid YAML: {reason}"));
                return None;
            }
        };
        if doc.as_map().is_none() {
            self.err(
                path,
                doc.loc,
                format!("a workflow file is a mapping with `name` and `steps`, found {}", doc.type_name()),
            );
            return None;
        }
        let mut dups = Vec::new();
        yaml::duplicate_keys(&doc, &mut dups);
        for (key, loc, first) in dups {
            self.err(path, loc, format!("duplicate key `{key}` (first at line {}, column {})", first.line, first.col));
        }
        self.check_keys(path, &doc, TOP_KEYS, "workflow");

        let name = match doc.get("name") {
            Some(n) => self.string(path, n, "`name`"),
            None if included_at.is_none() => {
                self.err(path, doc.loc, "the workflow has no `name`");
                None
            }
            None => None,
        };

        if let Some(inputs) = doc.get("inputs") {
            self.inputs_section(path, inputs);
        }
        let defaults = match doc.get("defaults") {
            Some(d) => self.defaults(path, d, inherited),
            None => inherited,
        };

        stack.push(canonical);
        if let Some(include) = doc.get("include") {
            for (file, loc) in self.string_list(path, include, "`include`") {
                let target = path.parent().unwrap_or(Path::new(".")).join(&file);
                self.file(&target, defaults.clone(), stack, Some((path, loc)));
            }
        }
        stack.pop();

        match doc.get("steps") {
            Some(Node { value: Value::Seq(items), loc }) => {
                if items.is_empty() && included_at.is_none() && self.steps.is_empty() {
                    self.err(path, *loc, "`steps` is empty: a workflow needs at least one step");
                }
                for item in items {
                    self.step_or_expansion(path, item, &defaults);
                }
            }
            Some(other) => self.err(path, other.loc, format!("`steps` must be a list, found {}", other.type_name())),
            None if included_at.is_none() && self.steps.is_empty() => {
                self.err(path, doc.loc, "the workflow has no `steps`")
            }
            None => {}
        }
        name
    }

    fn check_keys(&mut self, file: &Path, node: &Node, allowed: &[&str], what: &str) {
        let Some(entries) = node.as_map() else { return };
        for (Key { name, loc }, _) in entries {
            if !allowed.contains(&name.as_str()) {
                let hint = match closest(name, allowed.iter().copied()) {
                    Some(c) => format!("did you mean `{c}`?"),
                    None => format!("the keys of a {what} are: {}", allowed.join(", ")),
                };
                self.err_hint(file, *loc, format!("unknown key `{name}` in {what}"), hint);
            }
        }
    }

    fn string(&mut self, file: &Path, node: &Node, what: &str) -> Option<String> {
        match &node.value {
            Value::Str(s) => Some(s.clone()),
            _ => {
                self.err(file, node.loc, format!("{what} must be a string, found {}", node.type_name()));
                None
            }
        }
    }

    fn string_list(&mut self, file: &Path, node: &Node, what: &str) -> Vec<(String, Loc)> {
        match &node.value {
            Value::Seq(items) => items.iter().filter_map(|n| self.string(file, n, what).map(|s| (s, n.loc))).collect(),
            _ => {
                self.err(file, node.loc, format!("{what} must be a list, found {}", node.type_name()));
                Vec::new()
            }
        }
    }

    /// A kind's wait (a `duration` parameter named `wait` or `deadline`) that
    /// the step's own timeout would cut before it ends is an error at its value.
    fn waits_fit(&mut self, file: &Path, with: &Node, params: &[DocRow], step: &str, timeout: Duration) {
        for (name, _, _) in params.iter().filter(|(name, ty, _)| *ty == "duration" && WAITS.contains(name)) {
            let Some(node) = with.get(name) else { continue };
            let Value::Str(text) = &node.value else { continue };
            let Ok(wait) = crate::duration::parse(text) else { continue };
            if wait > timeout {
                let limit = crate::duration::format(timeout);
                self.err_hint(
                    file,
                    node.loc,
                    format!("`{name}: {text}` is longer than step `{step}`'s timeout ({limit})"),
                    format!(
                        "the step would be cut at {limit} while it waits: raise its `timeout`, or shorten the wait"
                    ),
                );
            }
        }
    }

    fn duration(&mut self, file: &Path, node: &Node, what: &str) -> Option<Duration> {
        if let Value::Int(n) = node.value {
            self.err_hint(file, node.loc, format!("{what}: `{n}` has no unit"), format!("write {n}s, {n}m or {n}h"));
            return None;
        }
        let text = self.string(file, node, what)?;
        match crate::duration::parse(&text) {
            Ok(d) if d.is_zero() => {
                self.err(file, node.loc, format!("{what} must be longer than zero"));
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.err_hint(file, node.loc, format!("{what}: {e}"), "durations look like 500ms, 30s, 5m, 1h30m");
                None
            }
        }
    }

    fn inputs_section(&mut self, file: &Path, node: &Node) {
        let Some(entries) = node.as_map() else {
            self.err(file, node.loc, format!("`inputs` must be a mapping of input names, found {}", node.type_name()));
            return;
        };
        for (key, value) in entries {
            let spec = match &value.value {
                Value::Map(_) => {
                    self.check_keys(file, value, INPUT_KEYS, "input");
                    InputSpec {
                        default: value.get("default").map(Node::to_json),
                        description: value.get("description").and_then(|d| self.string(file, d, "`description`")),
                    }
                }
                Value::Null => InputSpec::default(),
                Value::Seq(_) => {
                    self.err(
                        file,
                        value.loc,
                        format!("input `{}` must be a value or a mapping with `default`", key.name),
                    );
                    continue;
                }
                _ => InputSpec { default: Some(value.to_json()), description: None },
            };
            // An includer's input wins over an included file's (it is read first).
            self.inputs.entry(key.name.clone()).or_insert((spec, file.to_path_buf(), key.loc));
        }
    }

    fn retry(&mut self, file: &Path, node: &Node, mut policy: RetryPolicy) -> RetryPolicy {
        if node.as_map().is_none() {
            self.err(file, node.loc, format!("`retry` must be a mapping, found {}", node.type_name()));
            return policy;
        }
        self.check_keys(file, node, RETRY_KEYS, "retry policy");
        if let Some(n) = node.get("max_attempts") {
            match n.value {
                Value::Int(i) if (1..=100).contains(&i) => policy.max_attempts = i as u32,
                _ => self.err(file, n.loc, "`max_attempts` must be an integer from 1 to 100"),
            }
        }
        if let Some(n) = node.get("initial_delay") {
            policy.initial_delay = self.duration(file, n, "`initial_delay`").unwrap_or(policy.initial_delay);
        }
        if let Some(n) = node.get("max_delay") {
            policy.max_delay = self.duration(file, n, "`max_delay`").unwrap_or(policy.max_delay);
        }
        if let Some(n) = node.get("multiplier") {
            match n.value {
                Value::Float(f) if (1.0..=10.0).contains(&f) => policy.multiplier = f,
                Value::Int(i) if (1..=10).contains(&i) => policy.multiplier = i as f64,
                _ => self.err(file, n.loc, "`multiplier` must be a number from 1 to 10"),
            }
        }
        if let Some(n) = node.get("jitter") {
            match n.value {
                Value::Bool(b) => policy.jitter = b,
                _ => self.err(file, n.loc, format!("`jitter` must be true or false, found {}", n.type_name())),
            }
        }
        policy
    }

    fn defaults(&mut self, file: &Path, node: &Node, inherited: FileDefaults) -> FileDefaults {
        let FileDefaults { base: mut d, with: mut common } = inherited;
        if node.as_map().is_none() {
            self.err(file, node.loc, format!("`defaults` must be a mapping, found {}", node.type_name()));
            return FileDefaults { base: d, with: common };
        }
        self.check_keys(file, node, DEFAULT_KEYS, "`defaults` section");
        match node.get("with").map(|w| (&w.value, w)) {
            Some((Value::Map(entries), _)) => {
                for (key, value) in entries {
                    common.retain(|(k, _)| k.name != key.name);
                    common.push((key.clone(), value.clone()));
                }
            }
            Some((Value::Null, _)) | None => {}
            Some((_, w)) => self.err(
                file,
                w.loc,
                format!("`defaults.with` must be a mapping of parameters, found {}", w.type_name()),
            ),
        }
        if let Some(n) = node.get("timeout") {
            d.timeout = self.duration(file, n, "`timeout`").unwrap_or(d.timeout);
        }
        if let Some(n) = node.get("attempt_timeout") {
            d.attempt_timeout = self.duration(file, n, "`attempt_timeout`").unwrap_or(d.attempt_timeout);
        }
        if let Some(n) = node.get("retry") {
            d.retry = self.retry(file, n, d.retry);
        }
        FileDefaults { base: d, with: common }
    }

    /// A step, or with `for_each` the steps it expands to: one per item, with
    /// id `ID[KEY]` and `${{ item }}` / `${{ item.FIELD }}` / `[item]` replaced.
    fn step_or_expansion(&mut self, file: &Path, node: &Node, defaults: &FileDefaults) {
        let Some(list) = node.get("for_each") else {
            return self.step(file, node, defaults, None);
        };
        let items = match &list.value {
            Value::Seq(items) if !items.is_empty() => items,
            Value::Seq(_) => return self.err(file, list.loc, "`for_each` is empty: give it at least one item"),
            _ => {
                return self.err(
                    file,
                    list.loc,
                    format!("`for_each` must be a list of items, found {}", list.type_name()),
                );
            }
        };
        let base = node.get("id").and_then(|n| n.as_str()).unwrap_or("?").to_string();
        let mut seen: BTreeMap<String, Loc> = BTreeMap::new();
        let mut expanded = Vec::new();
        for item in items {
            let key = match &item.value {
                Value::Map(_) => match item.get("name").and_then(scalar_text) {
                    Some(k) => k,
                    None => {
                        self.err_hint(
                            file,
                            item.loc,
                            "a `for_each` item that is a mapping needs a `name`",
                            "the name makes the step's id: `ID[NAME]`",
                        );
                        continue;
                    }
                },
                _ => match scalar_text(item) {
                    Some(k) => k,
                    None => {
                        self.err(
                            file,
                            item.loc,
                            format!("a `for_each` item must be a scalar or a mapping, found {}", item.type_name()),
                        );
                        continue;
                    }
                },
            };
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                self.err_hint(
                    file,
                    item.loc,
                    format!("`for_each` item `{key}` cannot name a step"),
                    "use letters, digits, `-` and `_` (the item names the step `ID[ITEM]`)",
                );
                continue;
            }
            if let Some(first) = seen.insert(key.clone(), item.loc) {
                self.err(
                    file,
                    item.loc,
                    format!("`for_each` item `{key}` is repeated (first at line {}, column {})", first.line, first.col),
                );
                continue;
            }
            let mut problems = Vec::new();
            let step = expand_item(node, item, &key, &mut problems);
            // Named as it will be: `ID[KEY]`, or its id written with the item.
            let shown = match step.get("id").and_then(|n| n.as_str()) {
                Some(id) if templated_id(node) => id.to_string(),
                _ => format!("{base}[{key}]"),
            };
            for (message, loc) in problems {
                self.err(file, loc, format!("step `{shown}`: {message}"));
            }
            if templated_id(node) {
                self.step(file, &step, defaults, None);
            } else {
                expanded.push(format!("{base}[{key}]"));
                self.step(file, &step, defaults, Some(&key));
            }
        }
        if !expanded.is_empty() {
            self.groups.entry(base).or_default().extend(expanded);
        }
    }

    fn step(&mut self, file: &Path, node: &Node, defaults: &FileDefaults, item: Option<&str>) {
        if node.as_map().is_none() {
            self.err(
                file,
                node.loc,
                format!("a step must be a mapping with `id` and `uses`, found {}", node.type_name()),
            );
            return;
        }
        self.check_keys(file, node, STEP_KEYS, "step");
        let id = node.get("id").and_then(|n| self.string(file, n, "`id`"));
        let id_loc = node.get("id").map_or(node.loc, |n| n.loc);
        if node.get("id").is_none() {
            self.err(file, node.loc, "this step has no `id`");
        }
        if let Some(id) = &id {
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                self.err_hint(
                    file,
                    id_loc,
                    format!("step id `{id}` is not valid"),
                    "use letters, digits, `-` and `_` (ids appear in templates like steps.ID.outputs.KEY)",
                );
            }
        }
        let id = match item {
            Some(key) => id.map(|id| format!("{id}[{key}]")),
            None => id,
        };
        let uses = node.get("uses").and_then(|n| self.string(file, n, "`uses`"));
        let uses_loc = node.get("uses").map_or(node.loc, |n| n.loc);
        if node.get("uses").is_none() {
            self.err(
                file,
                node.loc,
                format!("step `{}` has no `uses` (which step kind runs it)", id.as_deref().unwrap_or("?")),
            );
        }
        let needs = match node.get("needs") {
            Some(n) => self.string_list(file, n, "`needs`"),
            None => Vec::new(),
        };
        // The step's own deadline, else its kind's, else the file's defaults.
        let kind_deadline = uses.as_deref().and_then(|u| self.registry.get(u)).and_then(|k| k.deadline());
        let timeout = node
            .get("timeout")
            .and_then(|n| self.duration(file, n, "`timeout`"))
            .unwrap_or(kind_deadline.map_or(defaults.base.timeout, |d| d.total));
        let attempt_timeout = node
            .get("attempt_timeout")
            .and_then(|n| self.duration(file, n, "`attempt_timeout`"))
            .unwrap_or(kind_deadline.map_or(defaults.base.attempt_timeout, |d| d.attempt));
        let retry = match node.get("retry") {
            Some(n) => self.retry(file, n, defaults.base.retry),
            None => defaults.base.retry,
        };
        let secret_outputs = match node.get("secret_outputs") {
            Some(n) => self.string_list(file, n, "`secret_outputs`").into_iter().map(|(s, _)| s).collect(),
            None => Vec::new(),
        };
        let mut with = node.get("with").cloned();
        // `defaults.with`: each parameter the step's kind takes and the step does not set.
        if let Some(kind) = uses.as_deref().filter(|_| !defaults.with.is_empty()).and_then(|u| self.registry.get(u)) {
            let takes = kind.params();
            for (key, value) in &defaults.with {
                if !takes.iter().any(|(name, _, _)| *name == key.name) {
                    continue;
                }
                let w = with.get_or_insert_with(|| Node { value: Value::Map(Vec::new()), loc: node.loc });
                if matches!(w.value, Value::Null) {
                    w.value = Value::Map(Vec::new());
                }
                if let Value::Map(entries) = &mut w.value {
                    if !entries.iter().any(|(k, _)| k.name == key.name) {
                        entries.push((key.clone(), value.clone()));
                    }
                }
            }
        }
        if let Some(w) = &with {
            if !matches!(w.value, Value::Map(_) | Value::Null) {
                self.err(file, w.loc, format!("`with` must be a mapping of parameters, found {}", w.type_name()));
            }
        }
        if let (Some(w), Some(kind)) = (&with, uses.as_deref().and_then(|u| self.registry.get(u))) {
            self.waits_fit(file, w, &kind.params(), id.as_deref().unwrap_or("?"), timeout);
        }
        let description = node.get("description").and_then(|n| self.string(file, n, "`description`"));
        let approve = node.get("approve").and_then(|n| self.string(file, n, "`approve`"));
        let when_node = node.get("when");
        let when_loc = when_node.map(|n| n.loc);
        let when = when_node.and_then(|n| match &n.value {
            Value::Bool(b) => Some(b.to_string()),
            _ => self.string(file, n, "`when`"),
        });
        let otherwise = match node.get("otherwise") {
            None => None,
            Some(n) if when.is_none() => {
                self.err_hint(
                    file,
                    n.loc,
                    "`otherwise` without `when`",
                    "`otherwise` gives the outputs of a step that `when:` skips; add the `when`",
                );
                None
            }
            Some(n) => match n.to_json() {
                Json::Object(map)
                    if map.values().all(|v| !v.as_str().is_some_and(crate::template::contains_template)) =>
                {
                    Some(map.into_iter().collect())
                }
                _ => {
                    self.err(
                        file,
                        n.loc,
                        "`otherwise` must be a mapping of output names to plain values (no templates)",
                    );
                    None
                }
            },
        };
        let (Some(id), Some(uses)) = (id, uses) else {
            return;
        };
        self.steps.push(RawStep {
            def: StepDef {
                id,
                uses,
                description,
                with: with.as_ref().map_or(Json::Object(Default::default()), |w| match w.value {
                    Value::Null => Json::Object(Default::default()),
                    _ => w.to_json(),
                }),
                needs: Vec::new(),
                timeout,
                attempt_timeout,
                retry,
                secret_outputs,
                approve,
                when,
                otherwise,
                source: format!("{}:{}", file.display(), node.loc),
                loc: node.loc,
            },
            file: file.to_path_buf(),
            id_loc,
            uses_loc,
            with_key_loc: node.key_loc("with"),
            with,
            needs,
            when_loc,
        });
    }

    /// Whole-workflow checks: ids, kinds, parameters, needs, templates, cycles.
    fn finish(&mut self, path: &Path, name: Option<String>) -> Workflow {
        let mut first: BTreeMap<String, (PathBuf, Loc)> = BTreeMap::new();
        let mut diags = Vec::new();
        for s in &self.steps {
            if let Some((f, l)) = first.get(&s.def.id) {
                diags.push(
                    Diagnostic::new(
                        &s.file,
                        s.id_loc,
                        format!("duplicate step id `{}` (first defined at {}:{l})", s.def.id, f.display()),
                    )
                    .hint("step ids must be unique across the workflow and the files it includes"),
                );
            } else {
                first.insert(s.def.id.clone(), (s.file.clone(), s.id_loc));
            }
        }
        let ids: Vec<String> = first.keys().cloned().collect();
        // Where each step is, by id (the first of duplicates): lookups stay linear overall.
        let mut position: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for (i, s) in self.steps.iter().enumerate() {
            position.entry(s.def.id.clone()).or_insert(i);
        }
        let known_kinds: Vec<&str> = self.registry.names().collect();
        let input_names: Vec<String> = self.inputs.keys().cloned().collect();

        for i in 0..self.steps.len() {
            let s = &self.steps[i];
            let kind = self.registry.get(&s.def.uses);
            if kind.is_none() {
                let hint = match closest(&s.def.uses, known_kinds.iter().copied()) {
                    Some(c) => format!("did you mean `{c}`? known kinds: {}", known_kinds.join(", ")),
                    None => format!("known kinds: {}", known_kinds.join(", ")),
                };
                diags.push(
                    Diagnostic::new(&s.file, s.uses_loc, format!("unknown step kind `{}`", s.def.uses)).hint(hint),
                );
            }
            if let Some(kind) = kind {
                let with_node = s.with.clone().unwrap_or(Node { value: Value::Map(Vec::new()), loc: s.uses_loc });
                for p in kind.validate(&s.def.with) {
                    let mut loc = with_node.lookup(&p.path).loc;
                    if p.path.is_empty() {
                        // A missing parameter: point at `with:` (or the step's kind).
                        loc = s.with_key_loc.unwrap_or(s.uses_loc);
                    }
                    if let Some(field) = unknown_field(&p.message) {
                        let parent = match p.path.last() {
                            Some(last) if last == field => &p.path[..p.path.len() - 1],
                            _ => &p.path[..],
                        };
                        loc = with_node.lookup(parent).key_loc(field).unwrap_or(loc);
                    }
                    let at = if p.path.is_empty() { String::new() } else { format!(" `{}`", p.path.join(".")) };
                    let hint = match unknown_field(&p.message).and_then(|f| closest(f, expected_fields(&p.message))) {
                        Some(c) => format!("did you mean `{c}`? see `ca-a2a-flow steps describe {}`", s.def.uses),
                        None => format!("see `ca-a2a-flow steps describe {}`", s.def.uses),
                    };
                    diags.push(
                        Diagnostic::new(
                            &s.file,
                            loc,
                            format!("step `{}` ({}): parameter{at}: {}", s.def.id, s.def.uses, p.message),
                        )
                        .hint(hint),
                    );
                }
            }
            let mut needs: Vec<String> = Vec::new();
            for (n, loc) in &s.needs {
                if first.contains_key(n) {
                    if !needs.contains(n) {
                        needs.push(n.clone());
                    }
                } else if let Some(members) = self.groups.get(n) {
                    // A `for_each` step's id: every step it expanded to.
                    for m in members {
                        if !needs.contains(m) {
                            needs.push(m.clone());
                        }
                    }
                } else {
                    let hint = closest(n, ids.iter().map(String::as_str)).map(|c| format!("did you mean `{c}`?"));
                    let mut d =
                        Diagnostic::new(&s.file, *loc, format!("step `{}` needs `{n}`, which is not a step", s.def.id));
                    d.hint = hint;
                    diags.push(d);
                }
            }
            let mut strings = Vec::new();
            if let Some(w) = &s.with {
                w.strings(&mut strings);
            }
            if let (Some(when), Some(loc)) = (&s.def.when, s.when_loc) {
                strings.push((when.clone(), loc));
            }
            for (text, loc) in strings {
                let refs = match template::references(&text) {
                    Ok(r) => r,
                    Err(e) => {
                        diags.push(Diagnostic::new(&s.file, loc, format!("step `{}`: {e}", s.def.id)));
                        continue;
                    }
                };
                for r in refs {
                    match r {
                        Ref::Input(name) if !input_names.contains(&name) => {
                            let hint = match closest(&name, input_names.iter().map(String::as_str)) {
                                Some(c) => format!("did you mean `{c}`?"),
                                None => "declare it under `inputs:`".to_string(),
                            };
                            diags.push(
                                Diagnostic::new(
                                    &s.file,
                                    loc,
                                    format!("step `{}` uses input `{name}`, which is not declared", s.def.id),
                                )
                                .hint(hint),
                            );
                        }
                        Ref::StepOutput { step, output } => {
                            let Some(target) = position.get(&step).map(|&j| &self.steps[j]) else {
                                if let Some(members) = self.groups.get(&step) {
                                    diags.push(
                                        Diagnostic::new(
                                            &s.file,
                                            loc,
                                            format!("step `{}` refers to `{step}`, a `for_each` step: its outputs are those of each item's step", s.def.id),
                                        )
                                        .hint(format!(
                                            "name one, like `steps.{}.outputs.{output}`, or `steps.{step}[item].outputs.{output}` inside a `for_each` over the same items",
                                            members[0]
                                        )),
                                    );
                                    continue;
                                }
                                let mut d = Diagnostic::new(
                                    &s.file,
                                    loc,
                                    format!("step `{}` refers to step `{step}`, which does not exist", s.def.id),
                                );
                                d.hint = closest(&step, ids.iter().map(String::as_str))
                                    .map(|c| format!("did you mean `{c}`?"));
                                diags.push(d);
                                continue;
                            };
                            if target.def.secret_outputs.contains(&output) {
                                diags.push(
                                    Diagnostic::new(
                                        &s.file,
                                        loc,
                                        format!(
                                            "step `{}` uses `steps.{step}.outputs.{output}`, which is a secret output",
                                            s.def.id
                                        ),
                                    )
                                    .hint("a secret output is never stored, so it cannot be passed; pass a reference to it (for example a Secrets Manager ARN) instead"),
                                );
                            }
                            if let Some(tk) = self.registry.get(&target.def.uses) {
                                let declared: Vec<String> = match tk.outputs(&target.def.with) {
                                    OutputSpec::Fixed(v) => v.into_iter().map(String::from).collect(),
                                    OutputSpec::Declared(v) => v,
                                };
                                if !declared.contains(&output) {
                                    let hint = if declared.is_empty() {
                                        format!("step `{step}` ({}) declares no outputs", target.def.uses)
                                    } else {
                                        format!(
                                            "step `{step}` ({}) has outputs: {}",
                                            target.def.uses,
                                            declared.join(", ")
                                        )
                                    };
                                    diags.push(Diagnostic::new(&s.file, loc, format!("step `{}` uses output `{output}` of step `{step}`, which it does not produce", s.def.id)).hint(hint));
                                }
                            }
                            if !needs.contains(&step) {
                                needs.push(step);
                            }
                        }
                        _ => {}
                    }
                }
            }
            self.steps[i].def.needs = needs;
        }
        diags.extend(self.cycles());
        diags.extend(self.workflow_rules());
        for d in diags {
            self.diags.push(d);
        }
        Workflow {
            name: name.unwrap_or_default(),
            description: None,
            // Absolute, so `resume` finds it (and steps their working directory) from anywhere.
            file: path.canonicalize().unwrap_or_else(|_| path.to_path_buf()).display().to_string(),
            inputs: self.inputs.iter().map(|(k, (spec, _, _))| (k.clone(), spec.clone())).collect(),
            steps: self.steps.iter().map(|s| s.def.clone()).collect(),
            destroy_of: None,
        }
    }

    /// The registry's rules across steps, each finding placed at its parameter.
    fn workflow_rules(&self) -> Vec<Diagnostic> {
        let views: Vec<StepView<'_>> =
            self.steps.iter().map(|s| StepView { id: &s.def.id, uses: &s.def.uses, with: &s.def.with }).collect();
        let position: std::collections::HashMap<&str, usize> =
            self.steps.iter().enumerate().rev().map(|(i, s)| (s.def.id.as_str(), i)).collect();
        let mut out = Vec::new();
        for rule in self.registry.rules() {
            for f in rule(&views) {
                let Some(s) = position.get(f.step.as_str()).map(|&j| &self.steps[j]) else { continue };
                let loc = match &s.with {
                    Some(w) if !f.path.is_empty() => w.lookup(&f.path).loc,
                    _ => s.id_loc,
                };
                let mut d =
                    Diagnostic::new(&s.file, loc, format!("step `{}` ({}): {}", s.def.id, s.def.uses, f.message));
                d.hint = f.hint.clone();
                out.push(d);
            }
        }
        out
    }

    /// Every dependency cycle, printed as `a -> b -> a` at the first step in it.
    fn cycles(&self) -> Vec<Diagnostic> {
        let index: BTreeMap<&str, usize> = self.steps.iter().enumerate().map(|(i, s)| (s.def.id.as_str(), i)).collect();
        let mut state = vec![0u8; self.steps.len()]; // 0 new, 1 on stack, 2 done
        let mut found: Vec<Diagnostic> = Vec::new();
        let mut reported: BTreeSet<Vec<usize>> = BTreeSet::new();
        fn visit(
            i: usize,
            steps: &[RawStep],
            index: &BTreeMap<&str, usize>,
            state: &mut [u8],
            path: &mut Vec<usize>,
            out: &mut Vec<(Vec<usize>, usize)>,
        ) {
            state[i] = 1;
            path.push(i);
            for n in &steps[i].def.needs {
                let Some(&j) = index.get(n.as_str()) else {
                    continue;
                };
                if state[j] == 1 {
                    let start = path.iter().position(|&p| p == j).unwrap_or(0);
                    out.push((path[start..].to_vec(), j));
                } else if state[j] == 0 {
                    visit(j, steps, index, state, path, out);
                }
            }
            path.pop();
            state[i] = 2;
        }
        for i in 0..self.steps.len() {
            if state[i] == 0 {
                let mut cycles = Vec::new();
                visit(i, &self.steps, &index, &mut state, &mut Vec::new(), &mut cycles);
                for (cycle, _) in cycles {
                    let mut key = cycle.clone();
                    key.sort();
                    if !reported.insert(key) {
                        continue;
                    }
                    // `cycle` lists steps each needing the next's predecessor; print in dependency order.
                    let mut names: Vec<&str> = cycle.iter().map(|&c| self.steps[c].def.id.as_str()).collect();
                    names.push(names[0]);
                    let first = &self.steps[cycle[0]];
                    found.push(
                        Diagnostic::new(&first.file, first.id_loc, format!("dependency cycle: {}", names.join(" -> ")))
                            .hint("a step cannot depend on itself, directly or through others; remove one `needs` or template reference"),
                    );
                }
            }
        }
        found
    }
}

/// The text of a scalar node (a `for_each` key, or an item interpolated into text).
fn scalar_text(node: &Node) -> Option<String> {
    match &node.value {
        Value::Str(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Float(f) => Some(f.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// One expansion of a `for_each` step: its node with `${{ item }}` and
/// `${{ item.FIELD }}` replaced by the item's value (a string that is only that
/// expression takes the value's type), and `[item]` in step references and in
/// `needs` replaced by `[KEY]`. `for_each` and `id` are left as written.
fn expand_item(node: &Node, item: &Node, key: &str, problems: &mut Vec<(String, Loc)>) -> Node {
    let Value::Map(entries) = &node.value else { return node.clone() };
    let mut out = Vec::new();
    for (k, v) in entries.iter().filter(|(k, _)| k.name != "for_each") {
        let v = match k.name.as_str() {
            "id" if !templated_id(node) => v.clone(),
            "needs" => replace_in_strings(v, problems, &mut |text, loc| match item_in_text(text, item, key)
                .map_err(|e| (e, loc))?
            {
                Replaced::Text(t) => Ok(Replaced::Text(t.replace("[item]", &format!("[{key}]")))),
                other => Ok(other),
            }),
            _ => replace_in_strings(v, problems, &mut |text, loc| item_in_text(text, item, key).map_err(|e| (e, loc))),
        };
        out.push((k.clone(), v));
    }
    Node { value: Value::Map(out), loc: node.loc }
}

/// Whether a `for_each` step's id is written with its item (`${{ item }}-logs`):
/// its steps are named by it, instead of `ID[KEY]`.
fn templated_id(node: &Node) -> bool {
    node.get("id").and_then(|n| n.as_str()).is_some_and(|id| id.contains("${{"))
}

enum Replaced {
    Text(String),
    Node(Value),
}

/// `node` with each string passed through `f`; what `f` refuses is reported
/// in `problems`, once.
fn replace_in_strings(
    node: &Node,
    problems: &mut Vec<(String, Loc)>,
    f: &mut dyn FnMut(&str, Loc) -> Result<Replaced, (String, Loc)>,
) -> Node {
    let value = match &node.value {
        Value::Str(s) => match f(s, node.loc) {
            Ok(Replaced::Text(t)) => Value::Str(t),
            Ok(Replaced::Node(v)) => v,
            Err(p) => {
                // Kept without its expressions, so nothing reports it again.
                problems.push(p);
                Value::Str(s.replace("${{", "").replace("}}", ""))
            }
        },
        Value::Seq(items) => Value::Seq(items.iter().map(|n| replace_in_strings(n, problems, f)).collect()),
        Value::Map(entries) => {
            Value::Map(entries.iter().map(|(k, n)| (k.clone(), replace_in_strings(n, problems, f))).collect())
        }
        other => other.clone(),
    };
    Node { value, loc: node.loc }
}

/// The value an `item` expression names: `item`, or `item.FIELD.FIELD…`.
fn item_value<'a>(expr: &str, item: &'a Node) -> Option<Result<&'a Node, String>> {
    let path = match expr.strip_prefix("item") {
        Some("") => return Some(Ok(item)),
        Some(rest) => rest.strip_prefix('.')?,
        None => return None,
    };
    let mut at = item;
    for field in path.split('.') {
        at = match at.get(field) {
            Some(n) => n,
            None => {
                return Some(Err(match item.as_map() {
                    Some(entries) => format!(
                        "`item.{path}`: the item has no field `{field}` (its fields: {})",
                        entries.iter().map(|(k, _)| k.name.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                    None => format!("`item.{path}`: this item is a single value; write `${{{{ item }}}}`"),
                }));
            }
        };
    }
    Some(Ok(at))
}

/// A string of a `for_each` step with its item put in: `${{ item }}` and
/// `${{ item.FIELD }}` anywhere (inside another expression too, so
/// `${{ steps.${{ item }}-repo.outputs.uri }}` names that item's step), and
/// `[item]` inside an expression (`${{ steps.repo[item].outputs.uri }}`).
fn item_in_text(text: &str, item: &Node, key: &str) -> Result<Replaced, String> {
    if !text.contains("${{") {
        return Ok(Replaced::Text(text.to_string()));
    }
    // A string that is only `${{ item… }}` takes the value itself, with its type.
    if let Some(inner) = text.trim().strip_prefix("${{").and_then(|t| t.strip_suffix("}}")) {
        if !inner.contains("}}") && !inner.contains("${{") {
            if let Some(found) = item_value(inner.trim(), item) {
                return found.map(|n| Replaced::Node(n.value.clone()));
            }
        }
    }
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        let after = &rest[start + 3..];
        let expr_end = after.find("}}");
        let found = expr_end.and_then(|end| item_value(after[..end].trim(), item).map(|v| (end, v)));
        match found {
            Some((end, value)) => {
                let n = value?;
                out.push_str(&rest[..start]);
                out.push_str(&scalar_text(n).unwrap_or_else(|| n.to_json().to_string()));
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[..start + 3]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    // `[item]` inside the expressions that remain.
    let mut text = String::new();
    let mut rest = out.as_str();
    while let Some(start) = rest.find("${{") {
        let after = &rest[start + 3..];
        let end = after.find("}}").unwrap_or(after.len());
        text.push_str(&rest[..start + 3]);
        text.push_str(&after[..end].replace("[item]", &format!("[{key}]")));
        rest = &after[end..];
    }
    text.push_str(rest);
    Ok(Replaced::Text(text))
}

/// serde's "unknown field `x`, expected ..." names the field to point at.
fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(&rest[..rest.find('`')?])
}

/// The names serde lists after "expected one of".
fn expected_fields(message: &str) -> Vec<&str> {
    let Some((_, list)) = message.split_once("expected one of ") else {
        return Vec::new();
    };
    list.split(", ").map(|f| f.trim_matches('`')).collect()
}

/// Each step's parameters once `inputs` are known, held to its kind's rules:
/// a value an input gives is checked before anything runs, not when its step
/// starts (`step \`db\`, parameter \`stack\`: stack name \`Bad--Name\`: …`).
pub fn problems_with_inputs(workflow: &Workflow, inputs: &BTreeMap<String, Json>, registry: &Registry) -> Vec<String> {
    let outputs = BTreeMap::new();
    let (secret, env) = (|_: &str, _: &str| false, |_: &str| None);
    let scope =
        crate::template::Scope { run_id: "", run_name: "", inputs, outputs: &outputs, secret: &secret, env: &env };
    let mut found = missing_local_paths(workflow, &scope, inputs, registry);
    // A step that `when:` turns off never runs: its parameters may be empty.
    let off = crate::executor::skipped_by_inputs(workflow, inputs);
    for step in workflow.steps.iter().filter(|s| !off.contains(&s.id)) {
        if !crate::template::contains_template(&step.with.to_string()) {
            continue; // held to its kind's rules by `validate` already
        }
        let Some(kind) = registry.get(&step.uses) else { continue };
        for p in kind.validate(&scope.resolve_partial(&step.with)) {
            found.push(format!(
                "step `{}`, parameter `{}`: {} ({})",
                step.id,
                p.path.join("."),
                p.message,
                step.source
            ));
        }
    }
    found
}

/// The local paths steps read ([`crate::Step::local_paths`]) that do not
/// exist, relative to the workflow file; steps that `when:` turns off are not asked.
fn missing_local_paths(
    workflow: &Workflow,
    scope: &crate::template::Scope,
    inputs: &BTreeMap<String, Json>,
    registry: &Registry,
) -> Vec<String> {
    let dir = Path::new(&workflow.file).parent().unwrap_or(Path::new("."));
    let off = crate::executor::skipped_by_inputs(workflow, inputs);
    let mut found = Vec::new();
    for step in workflow.steps.iter().filter(|s| !off.contains(&s.id)) {
        let Some(kind) = registry.get(&step.uses) else { continue };
        for (param, path) in kind.local_paths(&scope.resolve_partial(&step.with)) {
            if crate::template::contains_template(&path) || dir.join(&path).exists() {
                continue;
            }
            found.push(format!(
                "step `{}`, parameter `{param}`: `{}` does not exist (`{path}`, relative to {}) ({})",
                step.id,
                dir.join(&path).display(),
                workflow.file,
                step.source
            ));
        }
    }
    found
}

/// Resolves run inputs: given values (strings from `--input k=v`), then
/// defaults. Values that parse as JSON scalars keep their type when the default
/// has that type. Errors name every missing or unknown input.
pub fn resolve_inputs(workflow: &Workflow, given: &[(String, String)]) -> Result<BTreeMap<String, Json>, Vec<String>> {
    let mut errors = Vec::new();
    let mut out = BTreeMap::new();
    for (k, v) in given {
        let Some(spec) = workflow.inputs.get(k) else {
            let hint = closest(k, workflow.inputs.keys().map(String::as_str))
                .map(|c| format!(" (did you mean `{c}`?)"))
                .unwrap_or_default();
            errors.push(format!(
                "unknown input `{k}`{hint}; this workflow declares: {}",
                workflow.inputs.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
            continue;
        };
        let value = match &spec.default {
            Some(Json::Number(_)) | Some(Json::Bool(_)) => serde_json::from_str(v).unwrap_or(Json::String(v.clone())),
            _ => Json::String(v.clone()),
        };
        out.insert(k.clone(), value);
    }
    for (k, spec) in &workflow.inputs {
        if out.contains_key(k) {
            continue;
        }
        match &spec.default {
            Some(d) => {
                out.insert(k.clone(), d.clone());
            }
            None => errors.push(format!("input `{k}` is required: pass --input {k}=VALUE")),
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}
