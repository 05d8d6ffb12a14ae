//! `aws.sts.caller_identity`: who and where the run deploys: the account, the
//! identity's ARN and the region, printed first so a wrong account or region
//! shows at once, not as an AccessDenied 45 minutes in. Optionally refuses an
//! account or region other than the expected one.

use ca_a2a_flow_engine::{KindDoc, Outputs, Parameters, Step, StepContext, StepError, outputs};
use serde::Deserialize;

use super::AwsResult;

#[derive(Debug, Deserialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "aws.sts.caller_identity", step = CallerIdentity)]
pub struct Params {
    #[param(doc = super::REGION)]
    pub region: Option<String>,
    /// fail unless the credentials are of this account
    pub expect_account: Option<String>,
}

impl Step for CallerIdentity {
    const DOC: KindDoc = KindDoc {
        summary: "The account, identity and region the run deploys with; optionally refuses another account.",
        outputs: &[
            ("account_id", "the AWS account"),
            ("arn", "the caller's ARN"),
            ("partition", "`aws`, `aws-cn` or `aws-us-gov`, for ARNs the workflow writes"),
            ("region", "the region"),
        ],
        example: "- id: identity\n  uses: aws.sts.caller_identity\n  with: { region: \"${{ inputs.region }}\" }\n",
    };

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let config = super::config(p.region.as_deref()).await;
        let Some(region) = config.region().map(|r| r.to_string()) else {
            return Err(StepError::fatal("no AWS region is set")
                .with_hint("pass --input region=..., or set AWS_REGION or a region in your AWS profile"));
        };
        let sts = aws_sdk_sts::Client::new(&config);
        let me = sts.get_caller_identity().send().await.or_step_error("sts:GetCallerIdentity")?;
        let account = me.account().unwrap_or_default().to_string();
        let arn = me.arn().unwrap_or_default().to_string();
        if let Some(want) = &p.expect_account {
            if *want != account {
                return Err(StepError::fatal(format!("the credentials are of account {account}, not {want}"))
                    .with_hint("switch AWS profile (AWS_PROFILE) or SSO session, then resume"));
            }
        }
        let Some(partition) = super::partition_of(&arn).map(String::from) else {
            return Err(StepError::fatal(format!(
                "sts:GetCallerIdentity answered an ARN without a partition: `{arn}`"
            )));
        };
        ctx.log(format!("deploying as {arn} in account {account}, region {region}"));
        Ok(outputs! { account_id: account, arn, partition, region })
    }
}

impl super::facts::Facts for CallerIdentity {}

#[cfg(test)]
mod tests {
    use super::super::partition_of;

    #[test]
    fn the_partition_is_the_second_field_of_the_callers_arn() {
        assert_eq!(partition_of("arn:aws:iam::123456789012:user/dev"), Some("aws"));
        assert_eq!(partition_of("arn:aws-cn:sts::123456789012:assumed-role/r/s"), Some("aws-cn"));
        assert_eq!(partition_of("arn:aws-us-gov:iam::1:root"), Some("aws-us-gov"));
        assert_eq!(partition_of("not-an-arn"), None);
    }
}
