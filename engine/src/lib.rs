//! The ca-a2a-flow engine: workflow files, validation, durable DAG execution,
//! retries, deadlines, leases and checkpoints. It knows nothing about AWS: step
//! kinds come from the `steps` crate through the [`Registry`].
//!
//! - [`load`]: YAML -> validated [`Workflow`], every problem with `file:line:col`.
//! - [`Engine`]: creates and drives runs against a [`Store`].
//! - [`store`]: SQLite (default) and Postgres checkpoints.

pub mod destroy;
pub mod diag;
pub mod duration;
pub mod executor;
pub mod kind;
pub mod load;
pub mod model;
pub mod orphans;
pub mod plan;
pub mod redact;
pub mod store;
pub mod template;
pub mod yaml;

/// `#[derive(Parameters)]`: see [`Parameters`].
pub use ca_a2a_flow_derive::Parameters;
#[doc(hidden)]
pub use serde_json::json as __json;

/// A step's [`Outputs`] from `name: value` pairs, each value turned into JSON;
/// `name` alone stands for a variable of that name:
/// `outputs! { arn, name: owner.name(), action }`.
#[macro_export]
macro_rules! outputs {
    (@value $key:ident) => { $key };
    (@value $key:ident : $value:expr) => { $value };
    ($($key:ident $(: $value:expr)?),* $(,)?) => {{
        let mut outputs = $crate::Outputs::new();
        $(outputs.insert(stringify!($key).to_string(), $crate::__json!($crate::outputs!(@value $key $(: $value)?)));)*
        outputs
    }};
}
pub use diag::{Diagnostic, Diagnostics};
pub use executor::{
    Engine, EngineConfig, EngineError, Event, Observer, Outcome, SKIPPED, Stop, skipped_by_inputs, stack_of, truthy,
    was_skipped,
};
pub use kind::Deadline;
pub use kind::{
    DESTROY_PREFIX, DestroyOptions, DocRow, ErrorClass, Finding, Kind, KindDoc, OutputSpec, Outputs, ParamProblem,
    Parameters, Plan, PlanAction, Registry, Step, StepContext, StepError, StepView, WorkflowRule,
};
pub use load::{load, problems_with_inputs, resolve_inputs};
pub use model::{Redefinition, RetryPolicy, StepDef, Workflow};
pub use store::{AnyStore, RunStatus, StepStatus, Store, StoreError};

/// Milliseconds since the Unix epoch: the unit of every stored time.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64);
    now.unwrap_or(0) + clock_offset_ms()
}

/// Test hook: `CA_A2A_FLOW_TEST_CLOCK_OFFSET_MS` moves this process's clock,
/// to show that a clock running ahead cannot take a live lease on Postgres.
fn clock_offset_ms() -> i64 {
    static OFFSET: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *OFFSET.get_or_init(|| {
        std::env::var("CA_A2A_FLOW_TEST_CLOCK_OFFSET_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(0)
    })
}

/// `2026-11-24 03:01:12Z` for a time in milliseconds since the epoch.
pub fn format_timestamp(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (y, mo, d) = executor::civil_from_days(secs.div_euclid(86_400));
    let tod = secs.rem_euclid(86_400);
    format!("{y:04}-{mo:02}-{d:02} {:02}:{:02}:{:02}Z", tod / 3600, (tod % 3600) / 60, tod % 60)
}
