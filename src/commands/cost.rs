//! `cost`: how an estimate is shown.

#[allow(unused_imports)]
use super::*;

pub(super) fn print_cost(e: &ca_a2a_flow_steps::aws::cost::Estimate, output: Output) {
    if output == Output::Json {
        out!("{}", serde_json::to_string_pretty(e).unwrap_or_default());
        return;
    }
    out!("monthly estimate, {} (prices checked {}), USD", e.region, e.prices_checked);
    out!("");
    out!("{:<22} {:<26} {:>9}  {}", "STEP", "KIND", "MONTHLY", "HOW");
    for l in &e.lines {
        out!("{:<22} {:<26} {:>9.2}  {}", l.step, l.kind, l.monthly, l.detail);
    }
    out!("");
    out!("{:<49} {:>9.2}", "total", e.total);
    out!("{:<49} {:>9.2}", "total without the database", e.total_without_databases);
    let a = &e.assumptions;
    out!("");
    out!(
        "assumed usage: NAT {} GB/month processed, {} ALB LCU on average, S3 {} GB, {} GB logs per group, {} GB per image repository",
        a.nat_data_gb,
        a.alb_lcu,
        a.s3_gb,
        a.log_ingest_gb_per_group,
        a.ecr_gb_per_repository
    );
    out!("prices: {}", e.prices_source);
}
