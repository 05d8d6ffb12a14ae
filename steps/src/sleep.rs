//! `sleep`: waits for a duration, showing how long is left.

use std::time::Duration;

use ca_a2a_flow_engine::duration::{HumanDuration, format};
use ca_a2a_flow_engine::{KindDoc, OutputSpec, Outputs, ParamProblem, Step, StepContext, StepError};
use serde::Deserialize;
use serde_json::Value as Json;
use tokio::time::Instant;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub duration: HumanDuration,
}

pub struct Sleep;

impl Step for Sleep {
    type Params = Params;
    const KIND: &'static str = "sleep";

    fn doc(&self) -> KindDoc {
        KindDoc {
            summary: "Waits for `duration`.",
            params: vec![("duration", "duration", "how long to wait, like 30s or 2m (required)")],
            outputs: vec![],
            example: "- id: settle\n  uses: sleep\n  with: { duration: 30s }\n",
        }
    }

    fn outputs(&self, _params: &Json) -> OutputSpec {
        OutputSpec::Fixed(vec![])
    }

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
