//! `aws.ecs.service_network`: where an existing ECS service runs, read-only:
//! its VPC, subnets and security groups (its `awsvpc` network configuration),
//! and subnets of that VPC for a database beside it (RDS wants a DB subnet
//! group that covers two availability zones: the service's own subnets, and
//! when they are in one zone, the VPC's subnets of other zones). A database
//! put there is reachable from the service, whichever VPC it is in (the bash
//! deployment's, not the stack's). Creates nothing, destroys nothing.

use ca_a2a_flow_engine::{KindDoc, Outputs, Parameters, Plan, Step, StepContext, StepError, outputs};
use serde::Deserialize;

use super::AwsResult;

#[derive(Debug, Deserialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "aws.ecs.service_network", step = ServiceNetwork)]
pub struct Params {
    #[param(doc = super::REGION)]
    pub region: Option<String>,
    /// the cluster (required)
    pub cluster: String,
    /// the service's name (required)
    pub service: String,
}

impl Step for ServiceNetwork {
    async fn plan(&self, _ctx: &StepContext, _p: Params) -> Result<Plan, StepError> {
        Ok(Plan::none("reads a service's network"))
    }

    const DOC: KindDoc = KindDoc {
        summary: "Reads where an existing ECS service runs: its VPC, subnets and security groups, and subnets of that VPC in two zones for a database beside it; read-only.",
        outputs: &[
            ("vpc_id", "the service's VPC"),
            ("subnet_ids", "the service's subnets (a list)"),
            ("security_group_ids", "its security groups (a list)"),
            ("security_group_id", "the first of them"),
            ("db_subnet_ids", "its subnets, with the VPC's subnets of other zones when they are in one (a list)"),
        ],
        example: "- id: keycloak-network\n  uses: aws.ecs.service_network\n  with: { cluster: ca-a2a-cluster, service: ca-a2a-keycloak }\n",
    };

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let ecs = super::ecs(p.region.as_deref()).await;
        let found = ecs
            .describe_services()
            // Always with tags: moto decides per process, not per request, whether
            // answers show tags, so a call without them can hide another's.
            .include(aws_sdk_ecs::types::ServiceField::Tags)
            .cluster(&p.cluster)
            .services(&p.service)
            .send()
            .await
            .or_step_error("ecs:DescribeServices")?;
        let Some(service) = found.services().iter().find(|s| s.status() != Some("INACTIVE")) else {
            return Err(StepError::fatal(format!("cluster {} has no service {}", p.cluster, p.service))
                .with_hint("check the `cluster` and `service` inputs (`aws ecs list-services --cluster ...`)"));
        };
        let network = service.network_configuration().and_then(|n| n.awsvpc_configuration());
        let Some(network) = network.filter(|n| !n.subnets().is_empty()) else {
            return Err(StepError::fatal(format!(
                "service {} has no awsvpc network configuration (no subnets): it does not run on Fargate",
                p.service
            ))
            .with_hint("this workflow moves a Fargate service; give the database's network by hand instead"));
        };
        let (subnets, groups) = (network.subnets().to_vec(), network.security_groups().to_vec());
        let ec2 = super::ec2(p.region.as_deref()).await;
        let mut own = Vec::new();
        let mut pages = ec2.describe_subnets().set_subnet_ids(Some(subnets.clone())).into_paginator().send();
        while let Some(page) = pages.next().await {
            own.extend(page.or_step_error("ec2:DescribeSubnets")?.subnets().to_vec());
        }
        let Some(vpc) = own.iter().find_map(|s| s.vpc_id()).map(String::from) else {
            return Err(StepError::retryable(format!("the subnets of service {} are not visible yet", p.service)));
        };
        let mut zones: Vec<String> = own.iter().filter_map(|s| s.availability_zone().map(String::from)).collect();
        let mut db_subnets = subnets.clone();
        if !covers_two_zones(&zones) {
            let by_vpc = aws_sdk_ec2::types::Filter::builder().name("vpc-id").values(&vpc).build();
            let mut others = Vec::new();
            let mut pages = ec2.describe_subnets().filters(by_vpc).into_paginator().send();
            while let Some(page) = pages.next().await {
                others.extend(page.or_step_error("ec2:DescribeSubnets")?.subnets().to_vec());
            }
            others.sort_by(|a, b| a.subnet_id().cmp(&b.subnet_id()));
            for s in others {
                let (Some(id), Some(zone)) = (s.subnet_id(), s.availability_zone()) else { continue };
                if !zones.iter().any(|z| z == zone) {
                    zones.push(zone.to_string());
                    db_subnets.push(id.to_string());
                }
            }
            if !covers_two_zones(&zones) {
                return Err(StepError::fatal(format!(
                    "VPC {vpc} of service {} has subnets in one availability zone only; RDS needs two",
                    p.service
                ))
                .with_hint("add a subnet in another zone of that VPC, then resume"));
            }
        }
        ctx.log(format!(
            "service {} runs in {vpc}, subnets {}, security groups {}",
            p.service,
            subnets.join(", "),
            groups.join(", ")
        ));
        let first = groups.first().cloned().unwrap_or_default();
        Ok(outputs! {
            vpc_id: vpc,
            subnet_ids: subnets,
            security_group_ids: groups,
            security_group_id: first,
            db_subnet_ids: db_subnets,
        })
    }
}

fn covers_two_zones(zones: &[String]) -> bool {
    zones.iter().collect::<std::collections::BTreeSet<_>>().len() >= 2
}

impl super::facts::Facts for ServiceNetwork {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_distinct_zones_are_needed() {
        let z = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(!covers_two_zones(&z(&["eu-west-3a", "eu-west-3a"])));
        assert!(covers_two_zones(&z(&["eu-west-3a", "eu-west-3b"])));
    }
}
