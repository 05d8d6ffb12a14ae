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

/// Usage that AWS bills by volume, as the price file assumes it.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Assumptions {
    pub nat_data_gb: f64,
    pub alb_lcu: f64,
    pub s3_gb: f64,
    pub log_ingest_gb_per_group: f64,
    pub ecr_gb_per_repository: f64,
    /// Requests a month a web ACL inspects, in millions.
    pub waf_million_requests: f64,
}

/// One region's prices, in dollars.
#[derive(Debug, Clone, Deserialize)]
pub struct Prices {
    pub nat_gateway_hour: f64,
    pub nat_gateway_gb: f64,
    pub public_ipv4_hour: f64,
    pub alb_hour: f64,
    pub alb_lcu_hour: f64,
    pub fargate_vcpu_hour: f64,
    pub fargate_gb_hour: f64,
    pub rds_postgres_hour: BTreeMap<String, f64>,
    pub rds_gp3_gb_month: f64,
    pub s3_standard_gb_month: f64,
    pub logs_ingest_gb: f64,
    pub ecr_gb_month: f64,
    pub secret_month: f64,
    #[serde(default)]
    pub ec2_hour: BTreeMap<String, f64>,
    #[serde(default)]
    pub ebs_gp3_gb_month: f64,
    /// A standard-resolution alarm, per metric it reads.
    pub alarm_metric_month: f64,
    pub waf_web_acl_month: f64,
    pub waf_rule_month: f64,
    pub waf_million_requests: f64,
}

/// A region's prices with the hours a month is billed for.
#[derive(Debug, Clone)]
pub struct RegionPrices {
    pub hours_per_month: f64,
    pub prices: Prices,
}

impl std::ops::Deref for RegionPrices {
    type Target = Prices;
    fn deref(&self) -> &Prices {
        &self.prices
    }
}

/// The prices of `region`, when the price file has them.
pub fn region_prices(region: &str) -> Option<RegionPrices> {
    let file: PriceFile = serde_json::from_str(PRICES).ok()?;
    let prices = file.regions.get(region)?.clone();
    Some(RegionPrices { hours_per_month: file.hours_per_month, prices })
}

/// One line of what a step costs a month, as its kind computes it.
#[derive(Debug, Clone, PartialEq)]
pub struct CostLine {
    pub detail: String,
    pub monthly: f64,
    /// Part of a database (the report's total "without RDS" leaves it out).
    pub database: bool,
}

impl CostLine {
    pub fn new(detail: impl Into<String>, monthly: f64) -> Self {
        Self { detail: detail.into(), monthly, database: false }
    }
    pub fn database(self) -> Self {
        Self { database: true, ..self }
    }
}

/// What a kind's [`super::facts::Facts::monthly`] prices a step with.
pub struct Pricing<'a> {
    pub region: &'a str,
    /// Hours in a billed month.
    pub hours: f64,
    pub prices: &'a Prices,
    pub assume: &'a Assumptions,
    /// The step's own parameters as written (to follow its references).
    with: &'a Json,
    /// Every step's parameters, resolved as far as they can be before the run.
    steps: &'a BTreeMap<&'a str, Json>,
}

impl Pricing<'_> {
    /// The parameters of the step that `param` refers to
    /// (`${{ steps.X.outputs.arn }}` -> X's parameters).
    pub fn referenced<P: serde::de::DeserializeOwned>(&self, param: &str) -> Option<P> {
        let step = referenced_step(self.with, param)?;
        serde_json::from_value(self.steps.get(step.as_str())?.clone()).ok()
    }
}

/// One resource's monthly cost.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Line {
    pub step: String,
    pub kind: String,
    pub detail: String,
    pub monthly: f64,
    #[serde(skip)]
    pub database: bool,
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

/// The regions the price file knows.
pub fn regions() -> Vec<String> {
    serde_json::from_str::<PriceFile>(PRICES).map(|f| f.regions.into_keys().collect()).unwrap_or_default()
}

/// Estimates `wf` with `inputs` in `region`: each step's kind prices it.
pub fn estimate(wf: &Workflow, inputs: &BTreeMap<String, Json>, region: &str) -> Result<Estimate, String> {
    let file: PriceFile = serde_json::from_str(PRICES).map_err(|e| format!("the price file is broken: {e}"))?;
    let Some(prices) = file.regions.get(region) else {
        return Err(format!(
            "no prices for region `{region}`; the price file ({}) has: {}",
            file.checked,
            file.regions.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
    };
    let outputs = BTreeMap::new();
    let env = |_: &str| None;
    let secret = |_: &str, _: &str| false;
    let scope = Scope { run_id: "", run_name: "", inputs, outputs: &outputs, secret: &secret, env: &env };
    let params: BTreeMap<&str, Json> =
        wf.steps.iter().map(|s| (s.id.as_str(), scope.resolve_partial(&s.with))).collect();
    let mut lines = Vec::new();
    let skipped = ca_a2a_flow_engine::skipped_by_inputs(wf, inputs);
    for s in wf.steps.iter().filter(|s| !skipped.contains(&s.id)) {
        let Some(facts) = crate::facts(&s.uses) else { continue };
        let at = Pricing {
            region,
            hours: file.hours_per_month,
            prices,
            assume: &file.assumptions,
            with: &s.with,
            steps: &params,
        };
        let priced = facts.monthly(&params[s.id.as_str()], &at).map_err(|e| format!("step `{}`: {e}", s.id))?;
        lines.extend(priced.into_iter().map(|l| Line {
            step: s.id.clone(),
            kind: s.uses.clone(),
            detail: l.detail,
            monthly: round(l.monthly),
            database: l.database,
        }));
    }
    let total = round(lines.iter().map(|l| l.monthly).sum());
    let total_without_databases = round(lines.iter().filter(|l| !l.database).map(|l| l.monthly).sum());
    Ok(Estimate {
        region: region.to_string(),
        lines,
        total,
        total_without_databases,
        assumptions: file.assumptions.clone(),
        prices_checked: file.checked,
        prices_source: file.source,
    })
}

pub fn round(x: f64) -> f64 {
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
        let sweep = |region: &str| super::super::facts::Sweep {
            region: region.into(),
            config: aws_config::SdkConfig::builder().build(),
            ec2: aws_sdk_ec2::Client::from_conf(
                aws_sdk_ec2::Config::builder().behavior_version(aws_config::BehaviorVersion::latest()).build(),
            ),
            prices: region_prices(region),
        };
        assert_eq!(sweep("eu-west-3").monthly(|p| p.nat_gateway_hour), 35.04);
        assert_eq!(sweep("eu-west-3").monthly(|p| p.public_ipv4_hour), 3.65);
        assert_eq!(region_prices("eu-west-3").unwrap().secret_month, 0.40);
        assert_eq!(sweep("mars-north-1").monthly(|p| p.nat_gateway_hour), 0.0);
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
