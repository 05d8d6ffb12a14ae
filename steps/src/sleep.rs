//! `sleep`: waits for a duration, showing how long is left.

use std::time::Duration;

use ca_a2a_flow_engine::duration::{HumanDuration, format};
use ca_a2a_flow_engine::{KindDoc, Outputs, ParamProblem, Parameters, Step, StepContext, StepError};
use serde::Deserialize;
use tokio::time::Instant;

#[derive(Debug, Deserialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "sleep", step = Sleep)]
pub struct Params {
    /// how long to wait, like 30s or 2m (required)
    pub duration: HumanDuration,
}

impl Step for Sleep {
    const DOC: KindDoc = KindDoc {
        summary: "Waits for `duration`.",
        outputs: &[],
        example: "- id: settle\n  uses: sleep\n  with: { duration: 30s }\n",
    };

    fn problems(&self, params: &Params) -> Vec<ParamProblem> {
        if params.duration.0.is_zero() {
            return vec![ParamProblem::at(&["duration"], "must be longer than zero")];
        }
        Vec::new()
    }

    async fn run(&self, ctx: &StepContext, params: Params) -> Result<Outputs, StepError> {
        let end = Instant::now() + params.duration.0;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Outputs::new());
            }
            ctx.progress(format!("{} left of {}", format(left), format(params.duration.0)));
            tokio::time::sleep(left.min(Duration::from_secs(1))).await;
        }
    }
}
