//! `noop`: does nothing. A join point ("network ready") and the unit of the
//! engine-overhead benchmark.

use ca_a2a_flow_engine::{KindDoc, Outputs, Parameters, Step, StepContext, StepError};
use serde::Deserialize;

#[derive(Debug, Deserialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "noop", step = Noop)]
pub struct Params {}

impl Step for Noop {
    const SIDE_EFFECTS: bool = false;

    const DOC: KindDoc = KindDoc {
        summary: "Does nothing; a join point for other steps' `needs`.",
        outputs: &[],
        example: "- id: network-ready\n  uses: noop\n  needs: [vpc, subnets, nat]\n",
    };

    async fn run(&self, _ctx: &StepContext, _params: Params) -> Result<Outputs, StepError> {
        Ok(Outputs::new())
    }
}
