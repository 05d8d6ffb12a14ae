//! The workflow model after loading and validation. It is what a run stores
//! (as JSON) and what `resume` executes, so it has no source-file dependencies
//! besides the locations kept for messages.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::yaml::Loc;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Workflow {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// The file the workflow was loaded from (for messages and `resume`).
    pub file: String,
    pub inputs: BTreeMap<String, InputSpec>,
    pub steps: Vec<StepDef>,
    /// A destroy run's definition: the run whose resources it deletes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destroy_of: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct InputSpec {
    #[serde(default)]
    pub default: Option<serde_json::Value>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepDef {
    pub id: String,
    pub uses: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Parameters, templates unresolved (resolved at each attempt).
    pub with: serde_json::Value,
    /// Explicit `needs` plus dependencies inferred from `${{ steps.X... }}`.
    pub needs: Vec<String>,
    #[serde(with = "millis")]
    pub timeout: Duration,
    #[serde(with = "millis")]
    pub attempt_timeout: Duration,
    pub retry: RetryPolicy,
    /// Output keys whose values must never be stored or shown.
    #[serde(default)]
    pub secret_outputs: Vec<String>,
    /// The step cannot be undone: `run` and `resume` ask this question on a
    /// terminal before they start (or need `--yes`).
    #[serde(default)]
    pub approve: Option<String>,
    /// A template (`${{ inputs.mcp }}`): the step runs only when it is true;
    /// otherwise it, and every step that needs it, is skipped.
    #[serde(default)]
    pub when: Option<String>,
    /// With `when`: the outputs a skipped step stands in with, so that the
    /// steps that need it run, reading these, instead of being skipped too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otherwise: Option<BTreeMap<String, serde_json::Value>>,
    /// Where the step is defined: `file:line:col`.
    pub source: String,
    #[serde(skip)]
    pub loc: Loc,
}

impl StepDef {
    /// Content hash of everything that changes what the step does. The source
    /// location is left out so that moving a step in its file changes nothing.
    pub fn hash(&self) -> String {
        let mut canonical = serde_json::json!({
            "uses": self.uses,
            "with": self.with,
            "needs": self.needs,
            "timeout_ms": self.timeout.as_millis() as u64,
            "attempt_timeout_ms": self.attempt_timeout.as_millis() as u64,
            "retry": self.retry,
            "secret_outputs": self.secret_outputs,
        });
        // Only when set, so the hashes of steps without it stay what they were.
        if let Some(question) = &self.approve {
            canonical["approve"] = serde_json::json!(question);
        }
        if let Some(when) = &self.when {
            canonical["when"] = serde_json::json!(when);
        }
        // serde_json maps are sorted (BTreeMap), so this is canonical.
        let digest = Sha256::digest(canonical.to_string().as_bytes());
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}

/// How a failed attempt is retried. Persisted with each step, so a resumed run
/// keeps the policy it started with.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    #[serde(with = "millis")]
    pub initial_delay: Duration,
    #[serde(with = "millis")]
    pub max_delay: Duration,
    pub multiplier: f64,
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(60),
            multiplier: 2.0,
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `next_attempt` (2 for the first retry).
    /// With jitter the delay lies in [d/2, d], so retries of many steps spread out.
    pub fn delay_before(&self, next_attempt: u32) -> Duration {
        let exponent = next_attempt.saturating_sub(2).min(63) as i32;
        let base = self.initial_delay.as_secs_f64() * self.multiplier.powi(exponent);
        let capped = base.min(self.max_delay.as_secs_f64());
        let secs = if self.jitter { capped * (0.5 + fastrand::f64() * 0.5) } else { capped };
        Duration::from_secs_f64(secs)
    }
}

/// Engine-wide defaults, overridden by a file's `defaults:` then by each step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Defaults {
    pub timeout: Duration,
    pub attempt_timeout: Duration,
    pub retry: RetryPolicy,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30 * 60),
            attempt_timeout: Duration::from_secs(10 * 60),
            retry: RetryPolicy::default(),
        }
    }
}

/// How a workflow's definition differs from the one a run stored (`resume`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Redefinition {
    /// Steps the stored definition does not have.
    pub added: Vec<String>,
    /// Steps whose definition differs.
    pub changed: Vec<String>,
    /// Steps the new definition no longer has.
    pub removed: Vec<String>,
}

impl Redefinition {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

impl Workflow {
    /// The run this definition destroys, if it is a destroy run's. Runs
    /// recorded before `destroy_of` existed said it only in their description.
    pub fn destroyed_run(&self) -> Option<&str> {
        self.destroy_of.as_deref().or_else(|| self.description.as_deref()?.strip_prefix("destroy of run "))
    }

    /// How this definition differs from `stored`, step by step.
    pub fn redefinition_of(&self, stored: &Workflow) -> Redefinition {
        let mut diff = Redefinition::default();
        for step in &self.steps {
            match stored.step(&step.id) {
                None => diff.added.push(step.id.clone()),
                Some(old) if old.hash() != step.hash() => diff.changed.push(step.id.clone()),
                Some(_) => {}
            }
        }
        diff.removed = stored.steps.iter().filter(|s| self.step(&s.id).is_none()).map(|s| s.id.clone()).collect();
        diff
    }

    pub fn step(&self, id: &str) -> Option<&StepDef> {
        self.steps.iter().find(|s| s.id == id)
    }

    /// Each step's position, by id.
    pub fn index(&self) -> HashMap<&str, usize> {
        self.steps.iter().enumerate().map(|(i, s)| (s.id.as_str(), i)).collect()
    }

    /// For each step (by position), the positions of the steps that need it.
    pub fn dependents(&self) -> Vec<Vec<usize>> {
        let index = self.index();
        let mut out = vec![Vec::new(); self.steps.len()];
        for (i, s) in self.steps.iter().enumerate() {
            for n in &s.needs {
                if let Some(&d) = index.get(n.as_str()) {
                    out[d].push(i);
                }
            }
        }
        out
    }

    /// Steps grouped in waves: each wave depends only on earlier ones. Linear in
    /// steps and dependencies (steps are validated acyclic; a step on a cycle
    /// or needing an unknown step is left out).
    pub fn waves(&self) -> Vec<Vec<&StepDef>> {
        let index = self.index();
        let dependents = self.dependents();
        let mut waiting: Vec<usize> = self.steps.iter().map(|s| s.needs.len()).collect();
        let mut level = vec![usize::MAX; self.steps.len()];
        let mut queue: std::collections::VecDeque<usize> = (0..self.steps.len()).filter(|&i| waiting[i] == 0).collect();
        for &i in &queue {
            level[i] = 0;
        }
        let known = |n: &String| index.contains_key(n.as_str());
        while let Some(i) = queue.pop_front() {
            for &d in &dependents[i] {
                waiting[d] -= 1;
                if waiting[d] == 0 && self.steps[d].needs.iter().all(known) {
                    level[d] = self.steps[d].needs.iter().map(|n| level[index[n.as_str()]] + 1).max().unwrap_or(0);
                    queue.push_back(d);
                }
            }
        }
        let depth = level.iter().filter(|&&l| l != usize::MAX).max().map_or(0, |m| m + 1);
        let mut waves = vec![Vec::new(); depth];
        for (i, s) in self.steps.iter().enumerate() {
            if level[i] != usize::MAX {
                waves[level[i]].push(s);
            }
        }
        waves
    }

    /// The steps that depend on any of `roots`, directly or not, plus the roots
    /// (the roots first, then in the order found). Linear in steps and dependencies.
    pub fn with_dependents(&self, roots: &[String]) -> Vec<String> {
        let index = self.index();
        let dependents = self.dependents();
        let mut seen = vec![false; self.steps.len()];
        let mut out: Vec<String> = roots.to_vec();
        let mut queue: std::collections::VecDeque<usize> =
            roots.iter().filter_map(|r| index.get(r.as_str()).copied()).collect();
        for &i in &queue {
            seen[i] = true;
        }
        while let Some(i) = queue.pop_front() {
            for &d in &dependents[i] {
                if !seen[d] {
                    seen[d] = true;
                    out.push(self.steps[d].id.clone());
                    queue.push_back(d);
                }
            }
        }
        out
    }
}

pub(crate) mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chain of `n` steps, declared last step first.
    fn reversed_chain(n: usize) -> Workflow {
        let steps = (0..n)
            .rev()
            .map(|i| {
                let mut s: StepDef = serde_json::from_value(serde_json::json!({
                    "id": format!("s{i}"), "uses": "noop", "with": {}, "needs": [], "timeout": 1000,
                    "attempt_timeout": 1000, "retry": RetryPolicy::default(), "source": "test"
                }))
                .unwrap();
                if i > 0 {
                    s.needs = vec![format!("s{}", i - 1)];
                }
                s
            })
            .collect();
        Workflow {
            name: "chain".into(),
            description: None,
            file: String::new(),
            inputs: BTreeMap::new(),
            steps,
            destroy_of: None,
        }
    }

    #[test]
    fn a_redefinition_names_the_steps_added_changed_and_removed() {
        let stored = reversed_chain(3);
        let mut current = reversed_chain(3);
        current.steps.retain(|s| s.id != "s0");
        current.steps.iter_mut().find(|s| s.id == "s1").unwrap().timeout = Duration::from_secs(5);
        let mut added = current.steps[0].clone();
        added.id = "s9".into();
        current.steps.push(added);
        let diff = current.redefinition_of(&stored);
        assert_eq!(diff.added, ["s9"]);
        assert_eq!(diff.changed, ["s1"]);
        assert_eq!(diff.removed, ["s0"]);
        assert!(reversed_chain(3).redefinition_of(&stored).is_empty());
    }

    #[test]
    fn ten_thousand_steps_declared_backwards_fall_into_one_wave_each() {
        let wf = reversed_chain(10_000);
        let waves = wf.waves();
        assert_eq!(waves.len(), 10_000);
        assert_eq!(waves[0][0].id, "s0");
        assert_eq!(waves[9_999][0].id, "s9999");
    }

    #[test]
    fn every_step_below_a_root_of_a_long_chain_is_a_dependent() {
        let wf = reversed_chain(10_000);
        let found = wf.with_dependents(&["s5000".into()]);
        assert_eq!(found.len(), 5_000);
        assert_eq!(found[0], "s5000");
        assert_eq!(found[4_999], "s9999");
    }

    #[test]
    fn retry_delays_grow_by_the_multiplier_and_stop_at_the_cap() {
        let p = RetryPolicy { jitter: false, ..RetryPolicy::default() };
        assert_eq!(p.delay_before(2), Duration::from_secs(2));
        assert_eq!(p.delay_before(3), Duration::from_secs(4));
        assert_eq!(p.delay_before(4), Duration::from_secs(8));
        assert_eq!(p.delay_before(20), Duration::from_secs(60));
    }

    #[test]
    fn jittered_delays_stay_between_half_and_full() {
        let p = RetryPolicy::default();
        for _ in 0..100 {
            let d = p.delay_before(3);
            assert!(d >= Duration::from_secs(2) && d <= Duration::from_secs(4), "{d:?}");
        }
    }
}
