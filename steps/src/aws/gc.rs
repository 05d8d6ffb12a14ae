//! `ca-a2a-flow gc`: resources that carry ca-a2a-flow's ownership tags but whose
//! stack no run in this state store owns any more (the leftovers of killed or
//! forgotten attempts that filled the bash deployment's VPC quota). Each is described with
//! the parameters its kind's `destroy` needs, so `gc --delete` removes them with
//! the same durable destroy runs as `destroy`.
//!
//! Each AWS kind says how its leftovers are found (`Facts::leftovers`, in its
//! own file): the network (VPCs, subnets, internet gateways, Elastic IPs, NAT
//! gateways, route tables, security groups), instances, DB subnet groups and
//! secrets, the bash deployment's leftovers. Other services' resources are
//! named by stack and are removed by `destroy`.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::{Value as Json, json};

use super::facts::Sweep;
use super::owner::{TAG_RUN, TAG_STACK, TAG_STEP};

#[derive(Debug, Clone, Serialize)]
pub struct Orphan {
    pub stack: String,
    pub step: String,
    pub run: Option<String>,
    /// The step kind that made it (its `destroy` removes it).
    pub kind: &'static str,
    /// The order of deletion, lower first (the kind's `GC_RANK`).
    #[serde(skip)]
    pub rank: u8,
    pub id: String,
    /// How long ago the run that made it started (from the run id in its tags).
    pub age: Option<String>,
    pub monthly: f64,
    /// What the kind's `destroy` needs.
    pub params: Json,
}

fn tag<'a>(tags: &'a [(String, String)], key: &str) -> Option<&'a str> {
    tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// A run id is `r-YYYYMMDD-HHMMSS-xxxx` (UTC): the age of what the run made.
fn age_of_run(run: &str) -> Option<String> {
    let mut parts = run.strip_prefix("r-")?.split('-');
    let (date, time) = (parts.next()?, parts.next()?);
    if date.len() != 8 || time.len() != 6 {
        return None;
    }
    let n = |s: &str| s.parse::<i64>().ok();
    let (y, mo, d) = (n(&date[..4])?, n(&date[4..6])?, n(&date[6..])?);
    let (h, mi, se) = (n(&time[..2])?, n(&time[2..4])?, n(&time[4..])?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let (yy, mm) = if mo <= 2 { (y - 1, mo + 9) } else { (y, mo - 3) };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * mm + 2) / 5 + d - 1;
    let days = era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
    let made_ms = ((days * 24 + h) * 60 + mi) * 60_000 + se * 1000;
    let age = ca_a2a_flow_engine::now_ms().checked_sub(made_ms)?.max(0);
    let days = age / 86_400_000;
    if days >= 2 {
        return Some(format!("{days}d"));
    }
    Some(ca_a2a_flow_engine::duration::format(std::time::Duration::from_millis(age as u64)))
}

/// Every resource tagged by ca-a2a-flow in the region whose stack is not in `alive`
/// (and is `only`, when given), as each kind finds its own.
pub async fn find(
    region: Option<&str>,
    alive: &BTreeSet<String>,
    only: Option<&str>,
) -> Result<Vec<Orphan>, ca_a2a_flow_engine::StepError> {
    let config = super::config(region).await;
    let region = config.region().map(|r| r.to_string()).unwrap_or_default();
    let sweep = Sweep {
        ec2: aws_sdk_ec2::Client::new(&config),
        prices: super::cost::region_prices(&region),
        region: region.clone(),
        config,
    };
    let mut out = Vec::new();
    for facts in crate::all_facts() {
        for found in facts.leftovers(&sweep).await? {
            let (Some(stack), Some(step)) = (tag(&found.tags, TAG_STACK), tag(&found.tags, TAG_STEP)) else { continue };
            if alive.contains(stack) || only.is_some_and(|o| o != stack) {
                continue;
            }
            let mut params = json!({ "stack": stack, "region": region });
            if let (Some(p), Json::Object(extra)) = (params.as_object_mut(), found.params) {
                p.extend(extra);
            }
            out.push(Orphan {
                stack: stack.to_string(),
                step: super::owner::step_of_tag(step),
                run: tag(&found.tags, TAG_RUN).map(String::from),
                age: tag(&found.tags, TAG_RUN).and_then(age_of_run),
                kind: facts.kind(),
                rank: facts.gc_rank(),
                id: found.id,
                monthly: found.monthly,
                params,
            });
        }
    }
    out.sort_by(|a, b| (&a.stack, a.rank, &a.step).cmp(&(&b.stack, b.rank, &b.step)));
    Ok(out)
}

/// The destroy run that removes one stack's orphans, in dependency order.
pub fn workflow(
    stack: &str,
    orphans: &[Orphan],
    options: &ca_a2a_flow_engine::DestroyOptions,
) -> ca_a2a_flow_engine::Workflow {
    use std::time::Duration;

    use ca_a2a_flow_engine::{DESTROY_PREFIX, RetryPolicy, StepDef};
    let ours: Vec<&Orphan> = orphans.iter().filter(|o| o.stack == stack).collect();
    let mut steps: Vec<StepDef> = Vec::new();
    for o in &ours {
        if steps.iter().any(|s| s.id == o.step) {
            continue;
        }
        let needs: BTreeSet<String> = ours.iter().filter(|x| x.rank < o.rank).map(|x| x.step.clone()).collect();
        steps.push(StepDef {
            id: o.step.clone(),
            uses: format!("{DESTROY_PREFIX}{}", o.kind),
            description: Some(format!("remove the orphan {} {}", o.kind, o.id)),
            with: json!({ "params": o.params, "options": options }),
            needs: needs.into_iter().collect(),
            timeout: Duration::from_secs(20 * 60),
            attempt_timeout: Duration::from_secs(15 * 60),
            retry: RetryPolicy { max_attempts: 6, ..RetryPolicy::default() },
            secret_outputs: Vec::new(),
            approve: None,
            when: None,
            otherwise: None,
            source: format!("gc of stack {stack}"),
            loc: Default::default(),
        });
    }
    ca_a2a_flow_engine::Workflow {
        name: format!("gc {stack}"),
        description: Some(format!("gc of the orphans of stack {stack}")),
        file: String::new(),
        inputs: Default::default(),
        steps,
        destroy_of: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_id_tells_the_age_of_what_it_made() {
        let age = age_of_run("r-20000101-000000-abcd").expect("an age");
        assert!(age.contains('d') || age.contains('h'), "{age}");
        assert_eq!(age_of_run("not-a-run"), None);
        assert_eq!(age_of_run("r-2000-0000-x"), None);
    }
}
