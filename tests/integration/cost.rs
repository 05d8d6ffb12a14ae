//! `cost`: a monthly estimate per resource from the versioned price file, with
//! no AWS call. The deployment report's own figures are the sanity check.

use crate::support::Env;
use crate::support::aws::FULL;

fn estimate(env: &Env, extra: &[&str]) -> serde_json::Value {
    // The bash deployment's figures predate the MCP server (it never got deployed): priced without it.
    let mut args = vec!["cost", FULL, "--input", "region=eu-west-3", "--input", "mcp=false", "--output", "json"];
    args.extend_from_slice(extra);
    let out = env.run(&args);
    out.expect_success();
    out.json()
}

fn line(e: &serde_json::Value, step: &str) -> f64 {
    e["lines"].as_array().unwrap().iter().find(|l| l["step"] == step).unwrap()["monthly"].as_f64().unwrap()
}

#[test]
fn the_full_stack_without_its_database_costs_about_what_the_deployment_report_says() {
    let env = Env::sqlite();
    let e = estimate(&env, &[]);
    let without_db = e["total_without_databases"].as_f64().unwrap();
    assert!((117.0 * 0.85..=117.0 * 1.15).contains(&without_db), "report: ~$117/month without RDS; got {without_db}");
    let nat = line(&e, "nat");
    assert!((30.0..=40.0).contains(&nat), "report: NAT ~$35; got {nat}");
    let fargate: f64 =
        ["orchestrator", "extractor", "validator", "archivist", "keycloak"].iter().map(|s| line(&e, s)).sum();
    assert!((54.0 * 0.85..=54.0 * 1.2).contains(&fargate), "report: Fargate ~$54; got {fargate}");
    assert!(e["total"].as_f64().unwrap() > without_db, "the database is priced too");
    assert_eq!(e["prices_checked"], "2026-11-24");
}

#[test]
fn multi_az_doubles_the_database_and_bigger_tasks_cost_more() {
    let env = Env::sqlite();
    let base = estimate(&env, &[]);
    let multi = estimate(&env, &["--input", "multi_az=true"]);
    let secret = 0.40;
    let (one, two) = (line(&base, "keycloak-db") - secret, line(&multi, "keycloak-db") - secret);
    assert!((two - 2.0 * one).abs() < 0.02, "Multi-AZ doubles instance and storage: {one} -> {two}");
    let big = estimate(&env, &["--input", "agent_cpu=512", "--input", "agent_memory=1024"]);
    assert!((line(&big, "orchestrator") - 2.0 * line(&base, "orchestrator")).abs() < 0.02);
}

#[test]
fn the_mcp_server_is_priced_when_on_and_left_out_when_off() {
    let env = Env::sqlite();
    let off = estimate(&env, &[]);
    let on = estimate(&env, &["--input", "mcp=true"]);
    let steps = |e: &serde_json::Value| -> Vec<String> {
        e["lines"].as_array().unwrap().iter().map(|l| l["step"].as_str().unwrap().to_string()).collect()
    };
    assert!(!steps(&off).iter().any(|s| s == "mcp-server" || s == "mcp-logs"), "{:?}", steps(&off));
    let mcp = line(&on, "mcp-server");
    assert!((mcp - line(&off, "orchestrator")).abs() < 0.02, "an agent-sized Fargate task: {mcp}");
    let (a, b) = (off["total"].as_f64().unwrap(), on["total"].as_f64().unwrap());
    assert!(b > a, "{a} -> {b}");
}

#[test]
fn an_unknown_region_is_refused_with_the_regions_that_have_prices() {
    let env = Env::sqlite();
    let out = env.run(&["cost", FULL, "--input", "region=mars-north-1"]);
    out.expect_code(2);
    assert!(out.stderr.contains("no prices for region `mars-north-1`"), "{}", out.stderr);
    assert!(out.stderr.contains("eu-west-3"), "{}", out.stderr);
}

#[test]
fn the_builder_costs_its_instance_hours_and_its_volume() {
    let env = Env::sqlite();
    let builder = concat!(env!("CARGO_MANIFEST_DIR"), "/workflows/builder.yaml");
    let out = env.run(&["cost", builder, "--input", "region=eu-west-3", "--output", "json"]);
    out.expect_success();
    let e = out.json();
    // t3.large at $0.0944 x 730 h, plus 60 GB of gp3 at $0.0928.
    assert!((line(&e, "builder") - (730.0 * 0.0944 + 60.0 * 0.0928)).abs() < 0.02, "{e}");
    let bigger = env.run(&[
        "cost",
        builder,
        "--input",
        "region=eu-west-3",
        "--input",
        "builder_instance_type=t3.xlarge",
        "--output",
        "json",
    ]);
    assert!(line(&bigger.json(), "builder") > line(&e, "builder"));

    // The full stack prices the builder only when its images build there.
    let steps_of = |e: &serde_json::Value| e["lines"].as_array().unwrap().iter().any(|l| l["step"] == "builder");
    assert!(!steps_of(&estimate(&env, &[])), "built here: no builder");
    assert!(steps_of(&estimate(&env, &["--input", "build_on=builder"])), "built on the builder: priced");
}
