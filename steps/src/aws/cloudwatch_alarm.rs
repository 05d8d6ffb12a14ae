//! `aws.cloudwatch.alarm`: a CloudWatch metric alarm named `<stack>-<step>`,
//! sending to SNS topics. It watches one metric with a statistic (`Average`,
//! `p95`), or the percentage one metric is of another (`ratio_of`: 5xx answers
//! per request). Found by its name and checked for the stack's tags; a
//! threshold, metric or action that drifted is put back (PutMetricAlarm
//! replaces the whole alarm).

use aws_sdk_cloudwatch::types::{
    ComparisonOperator, Dimension, Metric, MetricAlarm, MetricDataQuery, MetricStat, Statistic,
};
use ca_a2a_flow_engine::{
    DestroyOptions, KindDoc, Outputs, ParamProblem, Parameters, Plan, Step, StepContext, StepError, outputs,
};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;

use super::owner::{Holder, Stack, TAG_STACK};
use super::{AwsResult, Owner};

#[derive(Debug, Deserialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "aws.cloudwatch.alarm", step = Alarm)]
pub struct Params {
    #[param(doc = super::STACK)]
    pub stack: Stack,
    #[param(doc = super::REGION)]
    pub region: Option<String>,
    /// what the alarm means, shown in its notifications
    pub description: Option<String>,
    /// like AWS/ECS, AWS/ApplicationELB, AWS/RDS (required)
    pub namespace: String,
    /// like CPUUtilization, HTTPCode_Target_5XX_Count (required)
    pub metric_name: String,
    /// the metric's dimensions, like {ClusterName: x, ServiceName: y}; a LoadBalancer or TargetGroup given as an ARN is cut to the part CloudWatch names
    #[serde(default)]
    pub dimensions: BTreeMap<String, String>,
    /// Average, Sum, Minimum, Maximum, SampleCount or a percentile like p95 (default Average; `ratio_of` uses Sum)
    #[serde(default = "average")]
    pub statistic: String,
    /// watch 100 x metric_name / this metric (same namespace and dimensions, both summed): a percentage, like 5xx answers of RequestCount
    pub ratio_of: Option<String>,
    /// seconds per datapoint: 10, 30 or a multiple of 60 (default 60)
    #[serde(default = "sixty")]
    pub period: i32,
    /// datapoints looked at (default 5)
    #[serde(default = "five")]
    pub evaluation_periods: i32,
    /// of those, how many must breach (default: all of them)
    pub datapoints_to_alarm: Option<i32>,
    /// (required)
    pub threshold: f64,
    /// GreaterThanThreshold, GreaterThanOrEqualToThreshold, LessThanThreshold or LessThanOrEqualToThreshold (default GreaterThanThreshold)
    #[serde(default = "greater")]
    pub comparison: String,
    /// missing, notBreaching, breaching or ignore (default notBreaching: no traffic is no alarm)
    #[serde(default = "not_breaching")]
    pub treat_missing_data: String,
    /// SNS topic ARNs told when the alarm fires and when it is OK again
    #[serde(default)]
    pub notify: Vec<String>,
    #[param(doc = super::owner::TAKE_OVER)]
    #[serde(default)]
    pub take_over: bool,
}

fn average() -> String {
    "Average".into()
}
fn sixty() -> i32 {
    60
}
fn five() -> i32 {
    5
}
fn greater() -> String {
    "GreaterThanThreshold".into()
}
fn not_breaching() -> String {
    "notBreaching".into()
}

const STATISTICS: &[&str] = &["Average", "Sum", "Minimum", "Maximum", "SampleCount"];
const COMPARISONS: &[&str] =
    &["GreaterThanThreshold", "GreaterThanOrEqualToThreshold", "LessThanThreshold", "LessThanOrEqualToThreshold"];
const MISSING: &[&str] = &["missing", "notBreaching", "breaching", "ignore"];

/// `p95`, `p99.9`: a percentile (an extended statistic).
fn is_percentile(s: &str) -> bool {
    s.strip_prefix('p').and_then(|n| n.parse::<f64>().ok()).is_some_and(|n| n > 0.0 && n < 100.0)
}

/// A dimension's value as CloudWatch names it: a load balancer is
/// `app/<name>/<id>` and a target group `targetgroup/<name>/<id>`, the end of
/// their ARNs.
fn dimension_value(key: &str, value: &str) -> String {
    match key {
        "LoadBalancer" => value.split_once(":loadbalancer/").map(|(_, v)| v.to_string()),
        "TargetGroup" => value.rsplit_once(':').map(|(_, v)| v.to_string()).filter(|v| v.starts_with("targetgroup/")),
        _ => None,
    }
    .unwrap_or_else(|| value.to_string())
}

fn dimensions(p: &Params) -> Vec<Dimension> {
    p.dimensions.iter().map(|(k, v)| Dimension::builder().name(k).value(dimension_value(k, v)).build()).collect()
}

/// The alarm's name: `<stack>-<step>`.
fn name(owner: &Owner) -> String {
    owner.name()
}

/// What the alarm is, as parameters and as AWS describes it, in one comparable form.
fn shape_of_params(p: &Params) -> Vec<String> {
    let dims: Vec<String> = dimensions(p)
        .iter()
        .map(|d| format!("{}={}", d.name().unwrap_or_default(), d.value().unwrap_or_default()))
        .collect();
    let metric = match &p.ratio_of {
        Some(of) => format!("100*{}/{of} {} [{}]", p.metric_name, p.namespace, dims.join(",")),
        None => format!("{} {} {} [{}]", p.statistic, p.metric_name, p.namespace, dims.join(",")),
    };
    let mut notify = p.notify.clone();
    notify.sort();
    vec![
        format!("metric: {metric}"),
        format!(
            "condition: {} {} for {} of {} x {}s",
            p.comparison,
            p.threshold,
            p.datapoints_to_alarm.unwrap_or(p.evaluation_periods),
            p.evaluation_periods,
            p.period
        ),
        format!("missing data: {}", p.treat_missing_data),
        format!("notify: {notify:?}"),
    ]
}

fn shape_of_alarm(a: &MetricAlarm) -> Vec<String> {
    let dims_of = |d: &[Dimension]| -> Vec<String> {
        let mut v: Vec<String> =
            d.iter().map(|d| format!("{}={}", d.name().unwrap_or_default(), d.value().unwrap_or_default())).collect();
        v.sort();
        v
    };
    let metric = if a.metrics().is_empty() {
        let stat = a.statistic().map(|s| s.as_str().to_string()).or(a.extended_statistic().map(String::from));
        format!(
            "{} {} {} [{}]",
            stat.unwrap_or_default(),
            a.metric_name().unwrap_or_default(),
            a.namespace().unwrap_or_default(),
            dims_of(a.dimensions()).join(",")
        )
    } else {
        let stat = |id: &str| {
            a.metrics().iter().find(|m| m.id() == Some(id)).and_then(|m| m.metric_stat()).and_then(|s| s.metric())
        };
        match (stat("m"), stat("of")) {
            (Some(m), Some(of)) => format!(
                "100*{}/{} {} [{}]",
                m.metric_name().unwrap_or_default(),
                of.metric_name().unwrap_or_default(),
                m.namespace().unwrap_or_default(),
                dims_of(m.dimensions()).join(",")
            ),
            _ => "metric math this step did not write".to_string(),
        }
    };
    let mut notify: Vec<String> = a.alarm_actions().to_vec();
    notify.sort();
    let period = a
        .period()
        .or_else(|| a.metrics().first().and_then(|m| m.metric_stat()).map(|s| s.period().unwrap_or_default()));
    vec![
        format!("metric: {metric}"),
        format!(
            "condition: {} {} for {} of {} x {}s",
            a.comparison_operator().map(|c| c.as_str()).unwrap_or_default(),
            a.threshold().unwrap_or_default(),
            a.datapoints_to_alarm().or(a.evaluation_periods()).unwrap_or_default(),
            a.evaluation_periods().unwrap_or_default(),
            period.unwrap_or_default()
        ),
        format!("missing data: {}", a.treat_missing_data().unwrap_or("missing")),
        format!("notify: {notify:?}"),
    ]
}

/// What differs between the alarm and the parameters, as `plan` says it.
fn drift(a: &MetricAlarm, p: &Params) -> Vec<String> {
    let wanted = shape_of_params(p);
    shape_of_alarm(a)
        .into_iter()
        .zip(wanted)
        .filter(|(now, want)| now != want)
        .map(|(now, want)| {
            let (field, now) = now.split_once(": ").unwrap_or(("", &now));
            let want = want.split_once(": ").map(|(_, w)| w.to_string()).unwrap_or(want.clone());
            format!("{field}: {now} -> {want}")
        })
        .collect()
}

async fn find(cw: &aws_sdk_cloudwatch::Client, name: &str) -> Result<Option<MetricAlarm>, StepError> {
    let found = cw.describe_alarms().alarm_names(name).send().await.or_step_error("cloudwatch:DescribeAlarms")?;
    Ok(found.metric_alarms().iter().find(|a| a.alarm_name() == Some(name)).cloned())
}

async fn tags(cw: &aws_sdk_cloudwatch::Client, arn: &str) -> Result<Vec<(String, String)>, StepError> {
    let found = cw
        .list_tags_for_resource()
        .resource_arn(arn)
        .send()
        .await
        .or_absent("cloudwatch:ListTagsForResource", &["ResourceNotFound", "ResourceNotFoundException"])?;
    Ok(found
        .map(|t| {
            t.tags()
                .iter()
                .map(|t| (t.key().unwrap_or_default().to_string(), t.value().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default())
}

async fn holder(cw: &aws_sdk_cloudwatch::Client, owner: &Owner, a: &MetricAlarm) -> Result<Holder, StepError> {
    let tags = tags(cw, a.alarm_arn().unwrap_or_default()).await?;
    Ok(owner.holder(tags.iter().map(|(k, v)| (k.as_str(), v.as_str()))))
}

/// Makes or replaces the alarm as the parameters say.
async fn put(cw: &aws_sdk_cloudwatch::Client, owner: &Owner, p: &Params) -> Result<(), StepError> {
    let tags = owner.tags().into_iter().map(|(k, v)| aws_sdk_cloudwatch::types::Tag::builder().key(k).value(v).build());
    let mut put = cw
        .put_metric_alarm()
        .alarm_name(name(owner))
        .set_alarm_description(p.description.clone())
        .evaluation_periods(p.evaluation_periods)
        .set_datapoints_to_alarm(p.datapoints_to_alarm)
        .threshold(p.threshold)
        .comparison_operator(ComparisonOperator::from(p.comparison.as_str()))
        .treat_missing_data(&p.treat_missing_data)
        .set_alarm_actions(Some(p.notify.clone()))
        .set_ok_actions(Some(p.notify.clone()))
        .set_tags(Some(tags.collect()));
    put = match &p.ratio_of {
        Some(of) => {
            let stat = |id: &str, metric: &str| {
                let m =
                    Metric::builder().namespace(&p.namespace).metric_name(metric).set_dimensions(Some(dimensions(p)));
                let s = MetricStat::builder().metric(m.build()).period(p.period).stat("Sum").build();
                MetricDataQuery::builder().id(id).metric_stat(s).return_data(false).build()
            };
            let ratio = MetricDataQuery::builder()
                .id("ratio")
                .expression("IF(of > 0, 100 * m / of, 0)")
                .label(format!("{} per {of}, %", p.metric_name))
                .return_data(true)
                .build();
            put.metrics(stat("m", &p.metric_name)).metrics(stat("of", of)).metrics(ratio)
        }
        None => {
            let put = put
                .namespace(&p.namespace)
                .metric_name(&p.metric_name)
                .period(p.period)
                .set_dimensions(Some(dimensions(p)));
            if is_percentile(&p.statistic) {
                put.extended_statistic(&p.statistic)
            } else {
                put.statistic(Statistic::from(p.statistic.as_str()))
            }
        }
    };
    put.send().await.or_step_error("cloudwatch:PutMetricAlarm")?;
    Ok(())
}

impl Step for Alarm {
    async fn plan(&self, ctx: &StepContext, p: Params) -> Result<Plan, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let cw = aws_sdk_cloudwatch::Client::new(&super::config(p.region.as_deref()).await);
        let Some(a) = find(&cw, &name(&owner)).await? else { return Ok(Plan::create()) };
        let mut changes = match super::owner::planned_claim(
            &owner,
            "alarm",
            &name(&owner),
            &holder(&cw, &owner, &a).await?,
            p.take_over,
        ) {
            Ok(changes) => changes,
            Err(conflict) => return Ok(conflict),
        };
        changes.extend(drift(&a, &p));
        Ok(Plan::changes(changes))
    }

    const DESTROYS: bool = true;

    async fn destroy(&self, ctx: &StepContext, p: Params, _o: &DestroyOptions) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let cw = aws_sdk_cloudwatch::Client::new(&super::config(p.region.as_deref()).await);
        let name = name(&owner);
        let Some(a) = find(&cw, &name).await? else { return Ok(super::removed(ctx, "alarm", &[])) };
        let whose = holder(&cw, &owner, &a).await?;
        if whose != Holder::Ours {
            ctx.log(format!("left alone: {}", owner.not_ours("alarm", &name, &whose)));
            return Ok(super::removed(ctx, "alarm", &[]));
        }
        cw.delete_alarms()
            .alarm_names(&name)
            .send()
            .await
            .or_absent("cloudwatch:DeleteAlarms", &["ResourceNotFound"])?;
        Ok(super::removed(ctx, "alarm", &[name]))
    }

    const DOC: KindDoc = KindDoc {
        summary: "A CloudWatch metric alarm `<stack>-<step>` on one metric (a statistic or percentile) or on a percentage of two (`ratio_of`), sending to SNS topics; drift is put back.",
        outputs: &[
            ("name", "the alarm's name"),
            ("arn", "its ARN"),
            ("action", "`created`, `adopted`, `updated` or `taken-over`"),
        ],
        example: "- id: orchestrator-cpu\n  uses: aws.cloudwatch.alarm\n  with:\n    stack: \"${{ inputs.stack }}\"\n    namespace: AWS/ECS\n    metric_name: CPUUtilization\n    dimensions: { ClusterName: ca-a2a, ServiceName: orchestrator }\n    threshold: 80\n    notify: [\"${{ steps.alerts.outputs.arn }}\"]\n",
    };

    fn problems(&self, p: &Params) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        if !STATISTICS.contains(&p.statistic.as_str()) && !is_percentile(&p.statistic) {
            problems.push(ParamProblem::at(
                &["statistic"],
                format!("`{}`: one of {STATISTICS:?} or a percentile like p95", p.statistic),
            ));
        }
        if !COMPARISONS.contains(&p.comparison.as_str()) {
            problems.push(ParamProblem::at(&["comparison"], format!("`{}`: one of {COMPARISONS:?}", p.comparison)));
        }
        if !MISSING.contains(&p.treat_missing_data.as_str()) {
            problems.push(ParamProblem::at(
                &["treat_missing_data"],
                format!("`{}`: one of {MISSING:?}", p.treat_missing_data),
            ));
        }
        if !(p.period == 10 || p.period == 30 || (p.period >= 60 && p.period % 60 == 0)) {
            problems.push(ParamProblem::at(
                &["period"],
                format!("{}: CloudWatch takes 10, 30 or a multiple of 60", p.period),
            ));
        }
        if p.evaluation_periods < 1 {
            problems.push(ParamProblem::at(&["evaluation_periods"], "at least 1"));
        }
        if p.datapoints_to_alarm.is_some_and(|d| d < 1 || d > p.evaluation_periods) {
            problems.push(ParamProblem::at(&["datapoints_to_alarm"], "1 to evaluation_periods"));
        }
        problems
    }

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let cw = aws_sdk_cloudwatch::Client::new(&super::config(p.region.as_deref()).await);
        let name = name(&owner);
        let action = match find(&cw, &name).await? {
            None => {
                ctx.progress(format!("creating alarm {name}"));
                put(&cw, &owner, &p).await?;
                "created"
            }
            Some(a) => {
                let took = super::owner::claim(&owner, "alarm", &name, &holder(&cw, &owner, &a).await?, p.take_over)?;
                if took == super::owner::Claim::TakeOver {
                    ctx.progress(format!("taking over alarm {name}: tagging it as stack {}'s", p.stack));
                    let tags = owner
                        .tags()
                        .into_iter()
                        .map(|(k, v)| aws_sdk_cloudwatch::types::Tag::builder().key(k).value(v).build());
                    let tag = cw
                        .tag_resource()
                        .resource_arn(a.alarm_arn().unwrap_or_default())
                        .set_tags(Some(tags.collect()));
                    tag.send().await.or_step_error("cloudwatch:TagResource")?;
                }
                let changes = drift(&a, &p);
                if !changes.is_empty() {
                    put(&cw, &owner, &p).await?;
                    ctx.log(format!("alarm {name}: {}", changes.join("; ")));
                }
                match (took, changes.is_empty()) {
                    (super::owner::Claim::TakeOver, _) => "taken-over",
                    (_, true) => "adopted",
                    (_, false) => "updated",
                }
            }
        };
        let arn = find(&cw, &name).await?.and_then(|a| a.alarm_arn().map(String::from)).unwrap_or_default();
        ctx.log(format!("{action} alarm {name}: {}", shape_of_params(&p)[..2].join(", ")));
        Ok(outputs! { name, arn, action })
    }
}

use super::cost::{CostLine, Pricing};
use super::facts::{Facts, Leftover, Sweep};

impl Facts for Alarm {
    fn console(o: &std::collections::BTreeMap<String, serde_json::Value>, r: &str) -> Option<String> {
        use super::facts::{console_in, output, url_part};
        console_in(r, &format!("cloudwatch/home?region={r}#alarmsV2:alarm/{}", url_part(output(o, "name")?)))
    }

    /// CloudWatch bills an alarm per metric it reads (standard resolution).
    fn monthly(p: &Params, at: &Pricing) -> Result<Vec<CostLine>, String> {
        let metrics = if p.ratio_of.is_some() { 2.0 } else { 1.0 };
        let price = at.prices.alarm_metric_month;
        Ok(vec![CostLine::new(format!("{metrics} metric(s) x ${price}"), metrics * price)])
    }

    async fn leftovers(at: &Sweep) -> Result<Vec<Leftover>, StepError> {
        let cw = aws_sdk_cloudwatch::Client::new(&at.config);
        let price = at.prices.as_ref().map_or(0.0, |p| p.alarm_metric_month);
        let mut pages = cw.describe_alarms().into_paginator().send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| super::classify(&super::failure("cloudwatch:DescribeAlarms", &e)))?;
            for a in page.metric_alarms() {
                let tags = tags(&cw, a.alarm_arn().unwrap_or_default()).await?;
                if tags.iter().any(|(k, _)| k == TAG_STACK) {
                    found.push(Leftover::new(
                        tags,
                        a.alarm_name(),
                        price,
                        // What destroy needs is the name; the rest is the alarm's own
                        // (empty for a metric-math alarm, which has no single metric).
                        json!({
                            "namespace": a.namespace().unwrap_or_default(),
                            "metric_name": a.metric_name().unwrap_or_default(),
                            "threshold": a.threshold().unwrap_or_default(),
                        }),
                    ));
                }
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::{dimension_value, is_percentile};

    #[test]
    fn a_load_balancer_or_target_group_arn_becomes_the_dimension_cloudwatch_names() {
        let alb = "arn:aws:elasticloadbalancing:eu-west-3:123456789012:loadbalancer/app/ca-a2a-alb/50dc6c495c0c9188";
        assert_eq!(dimension_value("LoadBalancer", alb), "app/ca-a2a-alb/50dc6c495c0c9188");
        let tg = "arn:aws:elasticloadbalancing:eu-west-3:123456789012:targetgroup/ca-a2a-orch/73e2d6bc24d8a067";
        assert_eq!(dimension_value("TargetGroup", tg), "targetgroup/ca-a2a-orch/73e2d6bc24d8a067");
        assert_eq!(dimension_value("ServiceName", "orchestrator"), "orchestrator");
        assert_eq!(dimension_value("LoadBalancer", "app/x/1"), "app/x/1");
    }

    #[test]
    fn a_percentile_is_an_extended_statistic() {
        assert!(is_percentile("p95") && is_percentile("p99.9"));
        assert!(!is_percentile("Average") && !is_percentile("p100") && !is_percentile("p"));
    }
}
