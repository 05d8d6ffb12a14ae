//! What an AWS kind says about itself beyond running it, written in the kind's
//! own file: what it costs a month (`cost`), where its leftovers are found and
//! in which order `gc` removes them, where the AWS console shows what it made
//! (the `ui` page's links). `cost.rs` and `gc.rs` ask every kind
//! through [`Facts`]; neither knows a kind by its name.

use std::collections::BTreeMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use aws_config::SdkConfig;
use ca_a2a_flow_engine::{Step, StepError};
use serde_json::Value as Json;

use super::cost::{CostLine, Pricing, RegionPrices};

/// An AWS kind's facts. Every AWS kind implements it, most with defaults
/// (`impl Facts for Cluster {}`): free, and `destroy` finds what it made.
pub trait Facts: Step {
    /// `gc` deletes lower ranks first: what holds an address or sits in a subnet
    /// (0), then what hangs on the VPC (1), subnets (2), the VPC itself (3).
    const GC_RANK: u8 = 3;

    /// What one step of this kind costs a month, from its parameters.
    fn monthly(_p: &Self::Params, _at: &Pricing) -> Result<Vec<CostLine>, String> {
        Ok(Vec::new())
    }

    /// Where the AWS console shows what a step of this kind made, from its
    /// outputs, in `region`.
    fn console(_outputs: &BTreeMap<String, Json>, _region: &str) -> Option<String> {
        None
    }

    /// What carries ca-a2a-flow's ownership tags in the sweep's region, every
    /// page of it; `gc` keeps those whose stack no run owns.
    fn leftovers(_at: &Sweep) -> impl Future<Output = Result<Vec<Leftover>, StepError>> + Send {
        async { Ok(Vec::new()) }
    }
}

/// Where `gc` looks: one region, with its prices when the price file has them.
pub struct Sweep {
    pub region: String,
    pub config: SdkConfig,
    pub ec2: aws_sdk_ec2::Client,
    pub prices: Option<RegionPrices>,
}

impl Sweep {
    /// `hourly` for a month, where the price file knows the region (else 0).
    pub fn monthly(&self, hourly: impl Fn(&RegionPrices) -> f64) -> f64 {
        self.prices.as_ref().map(|p| (p.hours_per_month * hourly(p) * 100.0).round() / 100.0).unwrap_or(0.0)
    }
}

/// One resource found with ownership tags.
pub struct Leftover {
    /// Its tags, as key and value.
    pub tags: Vec<(String, String)>,
    pub id: String,
    /// What it costs a month while it stays.
    pub monthly: f64,
    /// What the kind's `destroy` needs besides `stack` and `region`.
    pub params: Json,
}

impl Leftover {
    pub fn new(tags: Vec<(String, String)>, id: Option<&str>, monthly: f64, params: Json) -> Self {
        Self { tags, id: id.unwrap_or("?").to_string(), monthly, params }
    }
}

/// EC2's tags as key and value.
pub fn ec2_tags(tags: &[aws_sdk_ec2::types::Tag]) -> Vec<(String, String)> {
    tags.iter().filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string()))).collect()
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// [`Facts`] of any kind, as the registry keeps them.
pub trait KindFacts: Send + Sync {
    fn kind(&self) -> &'static str;
    fn gc_rank(&self) -> u8;
    /// The cost lines of a step with these (partly resolved) parameters.
    fn monthly(&self, with: &Json, at: &Pricing) -> Result<Vec<CostLine>, String>;
    fn leftovers<'a>(&'a self, at: &'a Sweep) -> BoxFuture<'a, Result<Vec<Leftover>, StepError>>;
    /// See [`Facts::console`].
    fn console(&self, outputs: &BTreeMap<String, Json>, region: &str) -> Option<String>;
}

/// The facts of kind `K`.
pub struct FactsOf<K>(PhantomData<fn() -> K>);

impl<K> FactsOf<K> {
    pub fn new() -> Self {
        Self(PhantomData)
    }
}

impl<K: Facts> KindFacts for FactsOf<K> {
    fn kind(&self) -> &'static str {
        K::KIND
    }
    fn gc_rank(&self) -> u8 {
        K::GC_RANK
    }
    fn monthly(&self, with: &Json, at: &Pricing) -> Result<Vec<CostLine>, String> {
        match serde_json::from_value::<K::Params>(with.clone()) {
            Ok(p) => K::monthly(&p, at),
            // A parameter known only once earlier steps ran: said, not guessed.
            Err(e) => Ok(vec![CostLine::new(format!("not priced: {e} (known only once earlier steps ran)"), 0.0)]),
        }
    }
    fn leftovers<'a>(&'a self, at: &'a Sweep) -> BoxFuture<'a, Result<Vec<Leftover>, StepError>> {
        Box::pin(K::leftovers(at))
    }
    fn console(&self, outputs: &BTreeMap<String, Json>, region: &str) -> Option<String> {
        K::console(outputs, region)
    }
}

/// A page of the AWS console in `region` (`path` after the host).
pub fn console_in(region: &str, path: &str) -> Option<String> {
    let safe = |c: char| c.is_ascii_alphanumeric() || c == '-';
    (!region.is_empty() && region.chars().all(safe)).then(|| format!("https://{region}.console.aws.amazon.com/{path}"))
}

/// An output of a step as text.
pub fn output<'a>(outputs: &'a BTreeMap<String, Json>, key: &str) -> Option<&'a str> {
    outputs.get(key)?.as_str().filter(|v| !v.is_empty())
}

/// A value as a part of a console URL.
pub fn url_part(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}
