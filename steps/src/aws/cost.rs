//! `ca-a2a-flow cost`: a monthly estimate of what a workflow deploys, per
//! resource, from the versioned price file `steps/prices/aws.json` (its date and
//! source are printed with every estimate). Usage that AWS bills by volume (NAT
//! data, load balancer capacity units, storage, log ingestion) comes from the
//! file's stated assumptions. Nothing is called: the estimate reads the workflow.

use std::collections::BTreeMap;

use ca_a2a_flow_engine::Workflow;
use ca_a2a_flow_engine::template::Scope;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

const PRICES: &str = include_str!("../../prices/aws.json");

#[derive(Debug, Deserialize)]
struct PriceFile {
    checked: String,
    source: String,
    hours_per_month: f64,
    assumptions: Assumptions,
    regions: BTreeMap<String, Prices>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Assumptions {
    pub nat_data_gb: f64,
    pub alb_lcu: f64,
    pub s3_gb: f64,
    pub log_ingest_gb_per_group: f64,
    pub ecr_gb_per_repository: f64,
}

#[derive(Debug, Deserialize)]
struct Prices {
    nat_gateway_hour: f64,
    nat_gateway_gb: f64,
    public_ipv4_hour: f64,
    alb_hour: f64,
    alb_lcu_hour: f64,
    fargate_vcpu_hour: f64,
    fargate_gb_hour: f64,
    rds_postgres_hour: BTreeMap<String, f64>,
    rds_gp3_gb_month: f64,
    s3_standard_gb_month: f64,
    logs_ingest_gb: f64,
    ecr_gb_month: f64,
    secret_month: f64,
    #[serde(default)]
    ec2_hour: BTreeMap<String, f64>,
    #[serde(default)]
    ebs_gp3_gb_month: f64,
}

/// One resource's monthly cost.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Line {
    pub step: String,
    pub kind: String,
    pub detail: String,
    pub monthly: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Estimate {
    pub region: String,
    pub lines: Vec<Line>,
    pub total: f64,
    /// The total without databases (the deployment report's "$117/month without RDS").
    pub total_without_databases: f64,
    pub assumptions: Assumptions,
    pub prices_checked: String,
    pub prices_source: String,
}

/// An instance's monthly cost (running all month, with its gp3 volume), when the price file knows its type.
pub fn instance_monthly(region: &str, instance_type: &str, volume_gib: f64) -> Option<f64> {
    let file: PriceFile = serde_json::from_str(PRICES).ok()?;
    let p = file.regions.get(region)?;
    let hour = p.ec2_hour.get(instance_type)?;
    Some(round(file.hours_per_month * hour + volume_gib * p.ebs_gp3_gb_month))
}

/// A NAT gateway's monthly cost before any data goes through it.
pub fn nat_gateway_monthly(region: &str) -> Option<f64> {
    let file: PriceFile = serde_json::from_str(PRICES).ok()?;
    Some(round(file.hours_per_month * file.regions.get(region)?.nat_gateway_hour))
}

/// A public IPv4 address's monthly cost (an Elastic IP, used or not).
pub fn public_ipv4_monthly(region: &str) -> Option<f64> {
    let file: PriceFile = serde_json::from_str(PRICES).ok()?;
    Some(round(file.hours_per_month * file.regions.get(region)?.public_ipv4_hour))
}

/// A Secrets Manager secret's monthly cost.
pub fn secret_monthly(region: &str) -> Option<f64> {
    let file: PriceFile = serde_json::from_str(PRICES).ok()?;
    Some(file.regions.get(region)?.secret_month)
}

/// The regions the price file knows.
pub fn regions() -> Vec<String> {
    serde_json::from_str::<PriceFile>(PRICES).map(|f| f.regions.into_keys().collect()).unwrap_or_default()
}

/// Estimates `wf` with `inputs` in `region`.
pub fn estimate(wf: &Workflow, inputs: &BTreeMap<String, Json>, region: &str) -> Result<Estimate, String> {
    let file: PriceFile = serde_json::from_str(PRICES).map_err(|e| format!("the price file is broken: {e}"))?;
    let Some(p) = file.regions.get(region) else {
        return Err(format!(
            "no prices for region `{region}`; the price file ({}) has: {}",
            file.checked,
            file.regions.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
    };
    let h = file.hours_per_month;
    let a = &file.assumptions;
    let outputs = BTreeMap::new();
    let env = |_: &str| None;
    let secret = |_: &str, _: &str| false;
    let scope = Scope { run_id: "", run_name: "", inputs, outputs: &outputs, secret: &secret, env: &env };
    let params: BTreeMap<&str, Json> =
        wf.steps.iter().map(|s| (s.id.as_str(), scope.resolve_partial(&s.with))).collect();
    let num = |v: Option<&Json>, default: f64| v.and_then(Json::as_f64).unwrap_or(default);
    let mut lines = Vec::new();
    let skipped = ca_a2a_flow_engine::skipped_by_inputs(wf, inputs);
    for s in wf.steps.iter().filter(|s| !skipped.contains(&s.id)) {
        let w = &params[s.id.as_str()];
        let mut line = |detail: String, monthly: f64| {
            lines.push(Line { step: s.id.clone(), kind: s.uses.clone(), detail, monthly: round(monthly) })
        };
        match s.uses.as_str() {
            "aws.ec2.nat_gateway" => line(
                format!("{h} h x ${} + {} GB processed x ${}", p.nat_gateway_hour, a.nat_data_gb, p.nat_gateway_gb),
                h * p.nat_gateway_hour + a.nat_data_gb * p.nat_gateway_gb,
            ),
            "aws.ec2.elastic_ip" => {
                line(format!("1 public IPv4 address x {h} h x ${}", p.public_ipv4_hour), h * p.public_ipv4_hour)
            }
            "aws.elbv2.load_balancer" => {
                let ips = w.get("subnet_ids").and_then(Json::as_array).map(Vec::len).unwrap_or(2) as f64;
                line(
                    format!(
                        "{h} h x ${} + {} LCU x ${} + {ips} public IPv4 x ${}",
                        p.alb_hour, a.alb_lcu, p.alb_lcu_hour, p.public_ipv4_hour
                    ),
                    h * (p.alb_hour + a.alb_lcu * p.alb_lcu_hour + ips * p.public_ipv4_hour),
                )
            }
            "aws.ec2.instance" => {
                let kind = w.get("instance_type").and_then(Json::as_str).unwrap_or("t3.large");
                let gib = num(w.get("volume_size_gib"), 60.0);
                match p.ec2_hour.get(kind) {
                    Some(hour) => line(
                        format!("{h} h x ${hour} ({kind}) + {gib} GB gp3 x ${}", p.ebs_gp3_gb_month),
                        h * hour + gib * p.ebs_gp3_gb_month,
                    ),
                    None => line(format!("{kind}: not in the price file; {gib} GB gp3 only"), gib * p.ebs_gp3_gb_month),
                }
            }
            "aws.ecs.service" => {
                let count = num(w.get("desired_count"), 1.0);
                let task = referenced_step(&s.with, "task_definition_arn").and_then(|t| params.get(t.as_str()));
                let cpu = num(task.and_then(|t| t.get("cpu")), 256.0) / 1024.0;
                let gb = num(task.and_then(|t| t.get("memory")), 512.0) / 1024.0;
                line(
                    format!(
                        "{count} task(s) x ({cpu} vCPU x ${} + {gb} GB x ${}) x {h} h",
                        p.fargate_vcpu_hour, p.fargate_gb_hour
                    ),
                    count * h * (cpu * p.fargate_vcpu_hour + gb * p.fargate_gb_hour),
                )
            }
            "aws.rds.db_instance" => {
                let class = w.get("instance_class").and_then(Json::as_str).unwrap_or("db.t3.micro");
                let Some(hourly) = p.rds_postgres_hour.get(class) else {
                    return Err(format!(
                        "step `{}`: no price for RDS class `{class}` in {region}; known: {}",
                        s.id,
                        p.rds_postgres_hour.keys().cloned().collect::<Vec<_>>().join(", ")
                    ));
                };
                let multi = w.get("multi_az").and_then(Json::as_bool).unwrap_or(false);
                let copies = if multi { 2.0 } else { 1.0 };
                let gb = num(w.get("allocated_storage"), 20.0);
                line(
                    format!(
                        "{class}{} {h} h x ${hourly} + {gb} GB gp3 x ${} + managed secret ${}",
                        if multi { " Multi-AZ (x2)" } else { "" },
                        p.rds_gp3_gb_month,
                        p.secret_month
                    ),
                    copies * (h * hourly + gb * p.rds_gp3_gb_month) + p.secret_month,
                )
            }
            "aws.s3.bucket" => {
                line(format!("{} GB x ${}", a.s3_gb, p.s3_standard_gb_month), a.s3_gb * p.s3_standard_gb_month)
            }
            "aws.logs.log_group" => line(
                format!("{} GB ingested x ${}", a.log_ingest_gb_per_group, p.logs_ingest_gb),
                a.log_ingest_gb_per_group * p.logs_ingest_gb,
            ),
            "aws.ecr.repository" => line(
                format!("{} GB stored x ${}", a.ecr_gb_per_repository, p.ecr_gb_month),
                a.ecr_gb_per_repository * p.ecr_gb_month,
            ),
            "aws.secretsmanager.secret" => line("1 secret".into(), p.secret_month),
            _ => {}
        }
    }
    let total = round(lines.iter().map(|l| l.monthly).sum());
    let total_without_databases =
        round(lines.iter().filter(|l| !l.kind.starts_with("aws.rds.")).map(|l| l.monthly).sum());
    Ok(Estimate {
        region: region.to_string(),
        lines,
        total,
        total_without_databases,
        assumptions: a.clone(),
        prices_checked: file.checked,
        prices_source: file.source,
    })
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The step a parameter's template points at (`${{ steps.X.outputs.arn }}` -> X).
fn referenced_step(with: &Json, param: &str) -> Option<String> {
    let text = with.get(param)?.as_str()?;
    ca_a2a_flow_engine::template::references(text).ok()?.into_iter().find_map(|r| match r {
        ca_a2a_flow_engine::template::Ref::StepOutput { step, .. } => Some(step),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prices(region: &str) -> Prices {
        let file: PriceFile = serde_json::from_str(PRICES).unwrap();
        file.regions.into_iter().find(|(r, _)| r == region).unwrap().1
    }

    #[test]
    fn the_price_file_has_a_date_a_source_and_every_price_positive() {
        let file: PriceFile = serde_json::from_str(PRICES).unwrap();
        assert!(!file.checked.is_empty() && !file.source.is_empty());
        for (region, p) in &file.regions {
            for (name, v) in [
                ("nat", p.nat_gateway_hour),
                ("alb", p.alb_hour),
                ("vcpu", p.fargate_vcpu_hour),
                ("gb", p.fargate_gb_hour),
                ("secret", p.secret_month),
            ] {
                assert!(v > 0.0, "{region} {name}");
            }
            assert!(p.rds_postgres_hour.contains_key("db.t3.micro"), "{region}");
        }
    }

    #[test]
    fn each_price_is_multiplied_as_aws_bills_it() {
        let p = prices("eu-west-3");
        // NAT: 730 h at $0.048 plus 10 GB at $0.048 = $35.52.
        assert_eq!(round(730.0 * p.nat_gateway_hour + 10.0 * p.nat_gateway_gb), 35.52);
        // Fargate, 0.25 vCPU and 0.5 GB for 730 h: $8.50 + $1.87.
        assert_eq!(round(730.0 * (0.25 * p.fargate_vcpu_hour + 0.5 * p.fargate_gb_hour)), 10.36);
        // RDS db.t3.micro with 20 GB gp3, Multi-AZ doubles both, plus the managed secret.
        let single = 730.0 * p.rds_postgres_hour["db.t3.micro"] + 20.0 * p.rds_gp3_gb_month;
        assert_eq!(round(single), 18.80);
        assert_eq!(round(2.0 * single + p.secret_month), 38.0);
    }

    #[test]
    fn the_prices_gc_shows_for_leftovers_come_from_the_price_file() {
        assert_eq!(nat_gateway_monthly("eu-west-3"), Some(35.04));
        assert_eq!(public_ipv4_monthly("eu-west-3"), Some(3.65));
        assert_eq!(secret_monthly("eu-west-3"), Some(0.40));
        assert_eq!(nat_gateway_monthly("mars-north-1"), None);
    }

    #[test]
    fn an_unknown_region_is_a_clear_error() {
        let wf = Workflow {
            name: "x".into(),
            description: None,
            file: String::new(),
            inputs: BTreeMap::new(),
            steps: Vec::new(),
            destroy_of: None,
        };
        let e = estimate(&wf, &BTreeMap::new(), "mars-north-1").unwrap_err();
        assert!(e.contains("no prices for region `mars-north-1`") && e.contains("eu-west-3"), "{e}");
    }
}
