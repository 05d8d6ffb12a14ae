//! `noop`: does nothing. A join point ("network ready") and the unit of the
//! engine-overhead benchmark.

use ca_a2a_flow_engine::{KindDoc, OutputSpec, Outputs, Step, StepContext, StepError};
use serde::Deserialize;
use serde_json::Value as Json;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {}

pub struct Noop;

impl Step for Noop {
    type Params = Params;
    const KIND: &'static str = "noop";
    const SIDE_EFFECTS: bool = false;

    fn doc(&self) -> KindDoc {
        KindDoc {
            summary: "Does nothing; a join point for other steps' `needs`.",
            params: vec![],
            outputs: vec![],
            example: "- id: network-ready\n  uses: noop\n  needs: [vpc, subnets, nat]\n",
        }
    }

    fn outputs(&self, _params: &Json) -> OutputSpec {
        OutputSpec::Fixed(vec![])
    }

    async fn run(&self, _ctx: &StepContext, _params: Params) -> Result<Outputs, StepError> {
        Ok(Outputs::new())
    }
}
