//! Who owns a cloud resource: the stack, the step that made it, and the run.
//! Every resource a step creates carries these tags from its creation on
//! (TagSpecifications), so a later attempt finds it instead of creating another.

use ca_a2a_flow_engine::{ParamProblem, Plan, StepContext, StepError};

pub const TAG_STACK: &str = "ca-a2a-flow:stack";
pub const TAG_STEP: &str = "ca-a2a-flow:step";
pub const TAG_RUN: &str = "ca-a2a-flow:run";

/// A step id as a tag value: most AWS services refuse `[` and `]` in tags, so
/// the step `logs[api]` of a `for_each` is tagged `logs.api` (ids have no `.`,
/// so the two read back one to one).
pub fn step_tag(step_id: &str) -> String {
    match step_id.strip_suffix(']').and_then(|s| s.split_once('[')) {
        Some((id, item)) => format!("{id}.{item}"),
        None => step_id.to_string(),
    }
}

/// The step id a [`step_tag`] stands for.
pub fn step_of_tag(tag: &str) -> String {
    match tag.split_once('.') {
        Some((id, item)) => format!("{id}[{item}]"),
        None => tag.to_string(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub stack: String,
    pub step: String,
    pub run: String,
}

impl Owner {
    pub fn new(stack: &str, ctx: &StepContext) -> Self {
        Self { stack: stack.to_string(), step: step_tag(&ctx.step_id), run: ctx.run_id.clone() }
    }

    /// The deterministic name of what this step owns: `<stack>-<step>`
    /// (a `for_each` step `logs[api]` names it `<stack>-logs-api`).
    pub fn name(&self) -> String {
        format!("{}-{}", self.stack, self.step.replace('.', "-"))
    }

    /// [`Owner::name`] cut to `max` characters where a service limits names
    /// (load balancers and target groups: 32), keeping it unique with a hash.
    pub fn short_name(&self, max: usize) -> String {
        let name = self.name();
        if name.len() <= max {
            return name;
        }
        let hash = self.client_token("name");
        format!("{}-{}", name[..max - 9].trim_end_matches('-'), &hash[..8])
    }

    /// Tags set at creation: ownership, plus `Name`.
    pub fn tags(&self) -> Vec<(String, String)> {
        vec![
            ("Name".into(), self.name()),
            (TAG_STACK.into(), self.stack.clone()),
            (TAG_STEP.into(), self.step.clone()),
            (TAG_RUN.into(), self.run.clone()),
        ]
    }

    /// EC2 filters that find what this step owns in this stack, whichever run made it.
    pub fn ec2_filters(&self) -> Vec<aws_sdk_ec2::types::Filter> {
        use aws_sdk_ec2::types::Filter;
        vec![
            Filter::builder().name(format!("tag:{TAG_STACK}")).values(&self.stack).build(),
            Filter::builder().name(format!("tag:{TAG_STEP}")).values(&self.step).build(),
        ]
    }

    /// Whether EC2 tags say this step of this stack owns the resource (for
    /// APIs whose tag filters an emulator ignores: checked on our side too).
    pub fn owns_ec2(&self, tags: &[aws_sdk_ec2::types::Tag]) -> bool {
        let has = |k: &str, v: &str| tags.iter().any(|t| t.key() == Some(k) && t.value() == Some(v));
        has(TAG_STACK, &self.stack) && has(TAG_STEP, &self.step)
    }

    /// A resource this step owns is not what or where the step now asks for:
    /// a fatal error that names it, its owner, and what to do.
    pub fn conflict(&self, what: &str, id: &str, detail: impl std::fmt::Display, hint: &str) -> StepError {
        StepError::fatal(format!("{what} {id} owned by stack `{}` step `{}` {detail}", self.stack, self.step))
            .with_hint(hint)
    }

    /// Whose a resource found by its deterministic name is, from its tags: a
    /// name alone proves nothing (another tool, a hand, an older script may have
    /// made it).
    pub fn holder<'a>(&self, tags: impl IntoIterator<Item = (&'a str, &'a str)>) -> Holder {
        match tags.into_iter().find(|(k, _)| *k == TAG_STACK) {
            Some((_, stack)) if stack == self.stack => Holder::Ours,
            Some((_, stack)) => Holder::Stack(stack.to_string()),
            None => Holder::Nobody,
        }
    }

    /// Why `what` `name`, found by its name, is not this stack's (a `plan` conflict).
    pub fn not_ours(&self, what: &str, name: &str, holder: &Holder) -> String {
        match holder {
            Holder::Stack(other) => format!("{what} {name} belongs to stack `{other}`"),
            _ => format!("{what} {name} exists without ca-a2a-flow's ownership tags"),
        }
    }

    /// `run`'s fatal error for a resource found by its name that is not this stack's.
    pub fn refuse(&self, what: &str, name: &str, holder: &Holder) -> StepError {
        let hint = match holder {
            Holder::Stack(other) => format!("destroy stack `{other}` first, or give this stack another name"),
            _ => format!(
                "another tool or a hand made it (a leftover of an earlier deployment?): delete it, give the stack another name, or set `take_over: true` on step `{}` so this stack adopts it (it is then tagged as this stack's, and `destroy` removes it)",
                step_of_tag(&self.step)
            ),
        };
        StepError::fatal(self.not_ours(what, name, holder)).with_hint(hint)
    }

    /// An idempotency token for a create call, derived from who owns the
    /// resource and `salt` (what makes this creation distinct, like the Elastic
    /// IP it uses): the same after a crash, so a repeated call returns the first
    /// call's resource instead of making another.
    pub fn client_token(&self, salt: &str) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(format!("{}\n{}\n{salt}", self.stack, self.step).as_bytes());
        digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
    }

    pub fn ec2_tag_spec(&self, resource: aws_sdk_ec2::types::ResourceType) -> aws_sdk_ec2::types::TagSpecification {
        use aws_sdk_ec2::types::{Tag, TagSpecification};
        let tags = self.tags().into_iter().map(|(k, v)| Tag::builder().key(k).value(v).build());
        TagSpecification::builder().resource_type(resource).set_tags(Some(tags.collect())).build()
    }
}

/// Whose a resource found by its name is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// Tagged as this stack's.
    Ours,
    /// Tagged as another stack's.
    Stack(String),
    /// Without ca-a2a-flow's tags: made by something else.
    Nobody,
}

/// What a step does with a resource found by its name: adopt it (ours), take it
/// over (nobody's, and the step says `take_over`), or refuse it.
pub fn claim(owner: &Owner, what: &str, name: &str, holder: &Holder, take_over: bool) -> Result<Claim, StepError> {
    match holder {
        Holder::Ours => Ok(Claim::Adopt),
        Holder::Nobody if take_over => Ok(Claim::TakeOver),
        _ => Err(owner.refuse(what, name, holder)),
    }
}

/// [`claim`] as `plan` says it: the change a take-over makes (none to adopt),
/// or the conflict that `run` would refuse.
pub fn planned_claim(
    owner: &Owner,
    what: &str,
    name: &str,
    holder: &Holder,
    take_over: bool,
) -> Result<Vec<String>, Plan> {
    match claim(owner, what, name, holder, take_over) {
        Ok(Claim::Adopt) => Ok(Vec::new()),
        Ok(Claim::TakeOver) => Ok(vec![format!("take over {what} {name} (tag it as this stack's)")]),
        Err(refused) => Err(Plan::conflict(refused.message)),
    }
}

/// See [`claim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    Adopt,
    TakeOver,
}

/// The doc of a kind's `take_over` parameter.
pub const TAKE_OVER: &str = "adopt a resource of this name that has no ca-a2a-flow tags (made by hand or another tool): it is tagged as this stack's, and `destroy` then removes it (default false: such a resource is refused)";

/// A stack's name, as a kind's `stack` parameter: refused when it is read
/// unless it fits every AWS naming rule ([`valid_stack_name`]), so no kind
/// repeats the check. A templated name is checked once resolved.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct Stack(String);

impl<'de> serde::Deserialize<'de> for Stack {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        valid_stack_name(&name).map_err(serde::de::Error::custom)?;
        Ok(Self(name))
    }
}

impl std::ops::Deref for Stack {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A name parameter's problems: `min` characters or more, each one that
/// `allowed` accepts (`rule` says which to the user). A templated name is
/// checked once resolved.
pub fn name_problems(
    field: &str,
    name: &str,
    min: usize,
    allowed: impl Fn(char) -> bool,
    rule: &str,
) -> Vec<ParamProblem> {
    if name.contains("${{") || (name.len() >= min && name.chars().all(allowed)) {
        return Vec::new();
    }
    vec![ParamProblem::at(&[field], format!("`{name}`: {rule}"))]
}

/// A CIDR parameter's problems (templated values are checked once resolved).
pub fn cidr_problems(cidr: &str, example: &str) -> Vec<ParamProblem> {
    if cidr.contains("${{") || is_cidr(cidr) {
        return Vec::new();
    }
    vec![ParamProblem::at(&["cidr"], format!("`{cidr}` is not an IPv4 CIDR block like {example}"))]
}

pub fn is_cidr(s: &str) -> bool {
    let Some((ip, bits)) = s.split_once('/') else { return false };
    ip.parse::<std::net::Ipv4Addr>().is_ok() && bits.parse::<u8>().is_ok_and(|b| (8..=28).contains(&b))
}

/// Stack names become parts of AWS names: keep them to what every service accepts.
pub fn valid_stack_name(stack: &str) -> Result<(), String> {
    // The stack starts every name, the RDS instance's identifier among them: RDS wants a
    // letter first, no two hyphens in a row and no hyphen last (CreateDBInstance reference).
    let ok = stack.len() <= 32
        && stack.starts_with(|c: char| c.is_ascii_lowercase())
        && stack.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !stack.ends_with('-')
        && !stack.contains("--");
    if ok || stack.contains("${{") {
        Ok(())
    } else {
        Err(format!(
            "stack name `{stack}`: use 1-32 lowercase letters, digits and `-`, starting with a letter, without `--` or a final `-`"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_names_fit_every_aws_naming_rule() {
        assert!(valid_stack_name("ca-a2a").is_ok());
        assert!(valid_stack_name("${{ inputs.stack }}").is_ok());
        assert!(valid_stack_name("CA_A2A").is_err());
        assert!(valid_stack_name("").is_err());
        assert!(valid_stack_name(&"a".repeat(33)).is_err());
        // It starts the RDS instance's identifier: a letter first, no `--`, no `-` last.
        assert!(valid_stack_name("a--b").is_err());
        assert!(valid_stack_name("ca-a2a-").is_err());
        assert!(valid_stack_name("2ca").is_err());
    }

    #[test]
    fn a_for_each_step_is_tagged_and_named_without_brackets_and_read_back() {
        assert_eq!(step_tag("logs[api]"), "logs.api");
        assert_eq!(step_tag("vpc"), "vpc");
        assert_eq!(step_of_tag("logs.api"), "logs[api]");
        assert_eq!(step_of_tag("vpc"), "vpc");
        let owner = Owner { stack: "demo".into(), step: step_tag("logs[api]"), run: "r".into() };
        assert_eq!(owner.name(), "demo-logs-api");
        assert!(owner.tags().iter().all(|(_, v)| !v.contains('[') && !v.contains(']')));
    }
}
