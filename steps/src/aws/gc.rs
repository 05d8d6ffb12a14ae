//! `ca-a2a-flow gc`: resources that carry ca-a2a-flow's ownership tags but whose
//! stack no run in this state store owns any more (the leftovers of killed or
//! forgotten attempts that filled the bash deployment's VPC quota). Each is described with
//! the parameters its kind's `destroy` needs, so `gc --delete` removes them with
//! the same durable destroy runs as `destroy`.
//!
//! Covered: the network (VPCs, subnets, internet gateways, Elastic IPs, NAT
//! gateways, route tables, security groups), DB subnet groups and secrets: the
//! bash deployment's leftovers. Other services' resources are named by stack and are
//! removed by `destroy`.

use std::collections::BTreeSet;

use aws_sdk_ec2::types::{Filter, Tag};
use serde::Serialize;
use serde_json::{Value as Json, json};

use super::owner::{TAG_RUN, TAG_STACK, TAG_STEP};
use super::{AwsResult, classify, failure};

#[derive(Debug, Clone, Serialize)]
pub struct Orphan {
    pub stack: String,
    pub step: String,
    pub run: Option<String>,
    /// The step kind that made it (its `destroy` removes it).
    pub kind: &'static str,
    pub id: String,
    /// How long ago the run that made it started (from the run id in its tags).
    pub age: Option<String>,
    pub monthly: f64,
    /// What the kind's `destroy` needs.
    pub params: Json,
}

impl Orphan {
    /// The order of deletion: lower first.
    pub fn rank(&self) -> u8 {
        match self.kind {
            "aws.ec2.nat_gateway" | "aws.ec2.instance" | "aws.secretsmanager.secret" | "aws.rds.db_subnet_group" => 0,
            "aws.ec2.elastic_ip" | "aws.ec2.route_table" | "aws.ec2.security_group" | "aws.ec2.internet_gateway" => 1,
            "aws.ec2.subnet" => 2,
            _ => 3,
        }
    }
}

fn tag<'a>(tags: &'a [Tag], key: &str) -> Option<&'a str> {
    tags.iter().find(|t| t.key() == Some(key)).and_then(|t| t.value())
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
/// (and is `only`, when given).
pub async fn find(
    region: Option<&str>,
    alive: &BTreeSet<String>,
    only: Option<&str>,
) -> Result<Vec<Orphan>, ca_a2a_flow_engine::StepError> {
    let config = super::config(region).await;
    let region = config.region().map(|r| r.to_string()).unwrap_or_default();
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let ours = || Filter::builder().name("tag-key").values(TAG_STACK).build();
    // Idle monthly prices, from the price file `cost` reads (0 where it does not know the region).
    let nat_month = super::cost::nat_gateway_monthly(&region).unwrap_or(0.0);
    let eip_month = super::cost::public_ipv4_monthly(&region).unwrap_or(0.0);
    let secret_month = super::cost::secret_monthly(&region).unwrap_or(0.0);
    let mut out = Vec::new();
    let mut push = |tags: &[Tag], kind: &'static str, id: &str, monthly: f64, extra: Json| {
        let (Some(stack), Some(step)) = (tag(tags, TAG_STACK), tag(tags, TAG_STEP)) else { return };
        if alive.contains(stack) || only.is_some_and(|o| o != stack) {
            return;
        }
        let mut params = json!({ "stack": stack, "region": region });
        if let (Some(p), Json::Object(extra)) = (params.as_object_mut(), extra) {
            p.extend(extra);
        }
        out.push(Orphan {
            stack: stack.to_string(),
            step: super::owner::step_of_tag(step),
            run: tag(tags, TAG_RUN).map(String::from),
            age: tag(tags, TAG_RUN).and_then(age_of_run),
            kind,
            id: id.to_string(),
            monthly,
            params,
        });
    };
    let vpcs = ec2.describe_vpcs().filters(ours()).send().await.or_step_error("ec2:DescribeVpcs")?;
    for v in vpcs.vpcs() {
        push(v.tags(), "aws.ec2.vpc", v.vpc_id().unwrap_or("?"), 0.0, json!({ "cidr": v.cidr_block() }));
    }
    let subnets = ec2.describe_subnets().filters(ours()).send().await.or_step_error("ec2:DescribeSubnets")?;
    for s in subnets.subnets() {
        let extra = json!({ "vpc_id": s.vpc_id(), "cidr": s.cidr_block(), "availability_zone": s.availability_zone() });
        push(s.tags(), "aws.ec2.subnet", s.subnet_id().unwrap_or("?"), 0.0, extra);
    }
    let igws =
        ec2.describe_internet_gateways().filters(ours()).send().await.or_step_error("ec2:DescribeInternetGateways")?;
    for g in igws.internet_gateways() {
        let vpc = g.attachments().first().and_then(|a| a.vpc_id()).unwrap_or("none");
        push(
            g.tags(),
            "aws.ec2.internet_gateway",
            g.internet_gateway_id().unwrap_or("?"),
            0.0,
            json!({ "vpc_id": vpc }),
        );
    }
    let eips = ec2.describe_addresses().filters(ours()).send().await.or_step_error("ec2:DescribeAddresses")?;
    for a in eips.addresses() {
        // An address used by a NAT gateway is billed with it.
        push(a.tags(), "aws.ec2.elastic_ip", a.allocation_id().unwrap_or("?"), eip_month, json!({}));
    }
    // moto ignores tag filters on NAT gateways: filter the tags here.
    let live = Filter::builder().name("state").values("pending").values("available").values("failed").build();
    let nats = ec2.describe_nat_gateways().filter(live).send().await.or_step_error("ec2:DescribeNatGateways")?;
    for n in nats.nat_gateways() {
        let allocation = n.nat_gateway_addresses().first().and_then(|a| a.allocation_id()).unwrap_or("?");
        let extra = json!({ "subnet_id": n.subnet_id(), "allocation_id": allocation });
        push(n.tags(), "aws.ec2.nat_gateway", n.nat_gateway_id().unwrap_or("?"), nat_month, extra);
    }
    // A forgotten builder bills by the hour: the costliest leftover there is.
    let live = Filter::builder()
        .name("instance-state-name")
        .values("pending")
        .values("running")
        .values("stopping")
        .values("stopped")
        .build();
    let instances =
        ec2.describe_instances().filters(ours()).filters(live).send().await.or_step_error("ec2:DescribeInstances")?;
    for i in instances.reservations().iter().flat_map(|r| r.instances()) {
        let kind = i.instance_type().map(|t| t.as_str().to_string()).unwrap_or_default();
        let monthly = super::cost::instance_monthly(&region, &kind, 60.0).unwrap_or(0.0);
        let extra = json!({ "subnet_id": i.subnet_id() });
        push(i.tags(), "aws.ec2.instance", i.instance_id().unwrap_or("?"), monthly, extra);
    }
    let tables = ec2.describe_route_tables().filters(ours()).send().await.or_step_error("ec2:DescribeRouteTables")?;
    for t in tables.route_tables() {
        push(t.tags(), "aws.ec2.route_table", t.route_table_id().unwrap_or("?"), 0.0, json!({ "vpc_id": t.vpc_id() }));
    }
    let groups =
        ec2.describe_security_groups().filters(ours()).send().await.or_step_error("ec2:DescribeSecurityGroups")?;
    for g in groups.security_groups() {
        push(g.tags(), "aws.ec2.security_group", g.group_id().unwrap_or("?"), 0.0, json!({ "vpc_id": g.vpc_id() }));
    }

    let rds = aws_sdk_rds::Client::new(&config);
    let subnet_groups = rds
        .describe_db_subnet_groups()
        .send()
        .await
        .map_err(|e| classify(&failure("rds:DescribeDBSubnetGroups", &e)))?;
    for g in subnet_groups.db_subnet_groups() {
        let Some(arn) = g.db_subnet_group_arn() else { continue };
        let Ok(listed) = rds.list_tags_for_resource().resource_name(arn).send().await else { continue };
        let tags: Vec<Tag> = listed
            .tag_list()
            .iter()
            .map(|t| Tag::builder().set_key(t.key().map(String::from)).set_value(t.value().map(String::from)).build())
            .collect();
        let subnets: Vec<&str> = g.subnets().iter().filter_map(|s| s.subnet_identifier()).collect();
        let name = g.db_subnet_group_name().unwrap_or("?");
        push(&tags, "aws.rds.db_subnet_group", name, 0.0, json!({ "subnet_ids": subnets }));
    }

    let sm = aws_sdk_secretsmanager::Client::new(&config);
    let key = aws_sdk_secretsmanager::types::FilterNameStringType::TagKey;
    let filter = aws_sdk_secretsmanager::types::Filter::builder().key(key).values(TAG_STACK).build();
    let secrets = sm
        .list_secrets()
        .filters(filter)
        .send()
        .await
        .map_err(|e| classify(&failure("secretsmanager:ListSecrets", &e)))?;
    for s in secrets.secret_list() {
        if s.deleted_date().is_some() {
            continue;
        }
        let tags: Vec<Tag> = s
            .tags()
            .iter()
            .map(|t| Tag::builder().set_key(t.key().map(String::from)).set_value(t.value().map(String::from)).build())
            .collect();
        push(&tags, "aws.secretsmanager.secret", s.name().unwrap_or("?"), secret_month, json!({}));
    }
    out.sort_by(|a, b| (&a.stack, a.rank(), &a.step).cmp(&(&b.stack, b.rank(), &b.step)));
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
        let needs: BTreeSet<String> = ours.iter().filter(|x| x.rank() < o.rank()).map(|x| x.step.clone()).collect();
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
