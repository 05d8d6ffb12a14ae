//! `for_each` makes one step per item, and `defaults.with` gives a file's steps
//! the parameters they share; everything downstream sees the expanded steps.

use ca_a2a_flow_engine::{RunStatus, StepStatus};

use crate::support::{Env, lines};

const SERVICES: &str = r#"
name: services
defaults:
  with:
    env: { GREETING: hello }
steps:
  - id: port
    for_each:
      - { name: api, port: 8001 }
      - { name: web, port: 8002 }
    uses: shell
    with:
      run: echo "port=${{ item.port }}" >> "$FLOW_OUTPUT"
      outputs: [port]

  - id: check
    for_each: [api, web]
    uses: shell
    with:
      run: echo "$GREETING ${{ item }} ${{ steps.port[item].outputs.port }}" >> seen.log

  - id: "${{ item }}-named"
    for_each: [solo]
    uses: shell
    with:
      run: touch "named-${{ item }}"

  - id: all-ports
    uses: noop
    needs: [port]
"#;

#[test]
fn each_item_becomes_a_step_named_by_the_item_and_finds_its_siblings() {
    let env = Env::sqlite();
    let wf = env.write("services.yaml", SERVICES);
    env.run(&["run", wf.to_str().unwrap()]).expect_success();
    let run = env.only_run();
    assert_eq!(run.status, RunStatus::Succeeded);
    let mut seen = lines(&env.path("seen.log"));
    seen.sort();
    assert_eq!(
        seen,
        ["hello api 8001", "hello web 8002"],
        "item fields, sibling outputs and defaults.with reach each step"
    );
    assert!(env.path("named-solo").exists(), "an id written with its item names the step by it");
    let ids: Vec<String> = env.steps(&run.id).into_iter().map(|s| s.step_id).collect();
    for id in ["port[api]", "port[web]", "check[api]", "check[web]", "solo-named", "all-ports"] {
        assert!(ids.iter().any(|i| i == id), "step {id} in {ids:?}");
        assert_eq!(env.step(&run.id, id).status, StepStatus::Succeeded);
    }
    let all = run.definition.step("all-ports").unwrap();
    assert_eq!(all.needs, ["port[api]", "port[web]"], "needing the `for_each` step needs each of its steps");
}

#[test]
fn plan_graph_and_status_show_the_expanded_steps() {
    let env = Env::sqlite();
    let wf = env.write("services.yaml", SERVICES);
    let plan = env.run(&["plan", wf.to_str().unwrap(), "--offline", "--output", "json"]);
    plan.expect_success();
    let plan = plan.json();
    let planned: Vec<&str> = plan["steps"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert!(planned.contains(&"check[web]") && !planned.contains(&"check"), "{planned:?}");
    let graph = env.run(&["graph", wf.to_str().unwrap()]);
    graph.expect_success();
    assert!(graph.stdout.contains("port_api_ --> check_api_"), "{}", graph.stdout);
    env.run(&["run", wf.to_str().unwrap()]).expect_success();
    let run = env.only_run();
    let status = env.run(&["status", &run.id]);
    assert!(status.stdout.contains("check[web]"), "{}", status.stdout);
}

#[test]
fn defaults_with_reaches_only_the_kinds_that_take_the_parameter() {
    let env = Env::sqlite();
    let wf = env.write(
        "defaults.yaml",
        r#"
name: defaults
defaults:
  with: { shell: bash, run: "echo from-defaults >> said.log" }
steps:
  - id: own
    uses: shell
    with: { run: "echo own >> said.log" }
  - id: inherited
    uses: shell
    needs: [own]
  - id: join
    uses: noop
    needs: [inherited]
"#,
    );
    env.run(&["run", wf.to_str().unwrap()]).expect_success();
    assert_eq!(lines(&env.path("said.log")), ["own", "from-defaults"], "a step's own parameter wins");
    let run = env.only_run();
    assert_eq!(run.definition.step("own").unwrap().with["shell"], "bash");
    assert_eq!(run.definition.step("join").unwrap().with, serde_json::json!({}), "noop takes no parameter");
}

/// Each step of a plan as the comparison sees it: kind, needs as a set, and
/// parameters, with ECS environment values as text (the task definition takes
/// `PORT: 8000` and `PORT: "8000"` alike).
fn planned_steps(plan: &serde_json::Value) -> std::collections::BTreeMap<String, serde_json::Value> {
    fn text_environment(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, child) in map.iter_mut() {
                    if k == "environment" {
                        if let Some(env) = child.as_object_mut() {
                            for value in env.values_mut() {
                                if !value.is_string() {
                                    *value = serde_json::Value::String(value.to_string());
                                }
                            }
                        }
                    }
                    text_environment(child);
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(text_environment),
            _ => {}
        }
    }
    plan["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            let mut needs: Vec<&str> = s["needs"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
            needs.sort();
            let mut with = s["with"].clone();
            text_environment(&mut with);
            (
                s["id"].as_str().unwrap().to_string(),
                serde_json::json!({ "kind": s["kind"], "needs": needs, "with": with }),
            )
        })
        .collect()
}

#[test]
fn the_stack_files_written_with_for_each_plan_what_they_planned_before() {
    // tests/fixtures/full-plan-before-for-each.json is `plan --offline --output json`
    // of workflows/full.yaml as it stood before its files used `for_each` and
    // `defaults.with` (commit f352eae).
    let env = Env::sqlite();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = env.run(&["plan", root.join("workflows/full.yaml").to_str().unwrap(), "--offline", "--output", "json"]);
    out.expect_success();
    let now = planned_steps(&out.json());
    let before: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("tests/fixtures/full-plan-before-for-each.json")).unwrap(),
    )
    .unwrap();
    let mut before = planned_steps(&before);
    // Deliberate changes since then, each with its reason:
    // - `alb` needs `igw`: AWS refuses an internet-facing load balancer before
    //   the VPC's gateway is attached (aws_deploy::the_load_balancer_waits_...).
    before.get_mut("alb").unwrap()["needs"] = serde_json::json!(["alb-sg", "igw", "public-a", "public-b"]);
    // - the execution role's managed policy is in the caller's partition, never
    //   `arn:aws:` as such (aws_partition::in_the_china_partition_...).
    let role = before.get_mut("execution-role").unwrap();
    role["needs"] = serde_json::json!(["identity", "keycloak-admin", "keycloak-db"]);
    role["with"]["managed_policy_arns"] = serde_json::json!([
        "arn:${{ steps.identity.outputs.partition }}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
    ]);
    // - Keycloak's tasks run on a role of their own, the only one that reads its
    //   secrets; the agents' role reads none, so they do not wait for the
    //   database (aws_deploy::the_full_stack_is_deployed_exactly_...).
    let keycloak_role = before["execution-role"].clone();
    before.insert("keycloak-execution-role".into(), keycloak_role);
    let agents_role = before.get_mut("execution-role").unwrap();
    agents_role["needs"] = serde_json::json!(["identity"]);
    agents_role["with"].as_object_mut().unwrap().remove("statements");
    let task = before.get_mut("keycloak-task").unwrap();
    task["needs"] = serde_json::json!(["keycloak-admin", "keycloak-db", "keycloak-execution-role", "keycloak-logs"]);
    task["with"]["execution_role_arn"] = "${{ steps.keycloak-execution-role.outputs.arn }}".into();
    // - each service waits for the listener or rule that routes to its target
    //   group: with no database to wait for, the agents' services could reach
    //   ECS first, which refuses a target group no listener uses.
    for (service, route) in [
        ("orchestrator", "http"),
        ("extractor", "extract-rule"),
        ("validator", "validate-rule"),
        ("archivist", "archive-rule"),
        ("keycloak", "auth-rule"),
    ] {
        let needs = before.get_mut(service).unwrap()["needs"].as_array_mut().unwrap();
        needs.push(route.into());
        needs.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
    }
    // - target groups make a new task serve after 2 passed checks and drain a
    //   leaving one in 30 s (AWS: 5 and 300 s), the stack's inputs
    //   (aws_deploy::the_full_stack_is_deployed_exactly_...).
    for tg in ["orchestrator-tg", "extractor-tg", "validator-tg", "archivist-tg", "keycloak-tg"] {
        let with = &mut before.get_mut(tg).unwrap()["with"];
        with["healthy_threshold"] = "${{ inputs.healthy_threshold }}".into();
        with["deregistration_delay"] = "${{ inputs.deregistration_delay }}".into();
    }
    // - Keycloak's database password is a secret of the stack's own, which only
    //   `rotate-secret` changes (then Keycloak restarts on it): RDS rotates its
    //   own every 7 days, after which Keycloak could open no new connection
    //   (aws_operations::rotating_keycloaks_database_password_...).
    let mut credentials = before["keycloak-admin"].clone();
    credentials["with"]["description"] = "Keycloak database credentials".into();
    credentials["with"]["username"] = "keycloak".into();
    before.insert("keycloak-db-credentials".into(), credentials);
    let own = "${{ steps.keycloak-db-credentials.outputs.arn }}";
    let db = before.get_mut("keycloak-db").unwrap();
    let needs = db["needs"].as_array_mut().unwrap();
    needs.push("keycloak-db-credentials".into());
    needs.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
    db["with"]["master_password_secret_arn"] = own.into();
    let role = before.get_mut("keycloak-execution-role").unwrap();
    role["needs"] = serde_json::json!(["identity", "keycloak-admin", "keycloak-db-credentials"]);
    role["with"]["statements"][0]["resources"][1] = own.into();
    let task = before.get_mut("keycloak-task").unwrap();
    task["needs"] = serde_json::json!([
        "keycloak-admin",
        "keycloak-db",
        "keycloak-db-credentials",
        "keycloak-execution-role",
        "keycloak-logs"
    ]);
    let secrets = &mut task["with"]["containers"][0]["secrets"];
    secrets["KC_DB_USERNAME"] = format!("{own}:username::").into();
    secrets["KC_DB_PASSWORD"] = format!("{own}:password::").into();
    // - the five images are built from `sources` (the sample services of
    //   examples/agents by default), here or on the builder, and every task runs
    //   its image by digest: the agents' tasks pointed at `<repo>:latest`, which
    //   nothing pushed (image::the_full_stack_builds_its_five_images_...).
    //   The builder is made by the same run with build_on=builder (its steps
    //   are skipped otherwise, standing in with empty outputs), and each
    //   context travels to it through its bucket (builder::the_full_stack_makes_...).
    for id in ["build-contexts", "builder", "builder-ready", "builder-role", "builder-sg", "builder-subnet"] {
        before.insert(id.into(), now[id].clone());
    }
    let image = |agent: &str, tag: &str| {
        let mut needs =
            vec!["build-contexts".to_string(), "builder".into(), "builder-ready".into(), format!("{agent}-repo")];
        needs.sort();
        serde_json::json!({
            "kind": "image.build_push",
            "needs": needs,
            "with": {
                "build_args": { "BASE": "${{ inputs.base_image }}" },
                "context": format!("${{{{ inputs.sources }}}}/{agent}"),
                "context_bucket": "${{ steps.build-contexts.outputs.name }}",
                "instance_id": "${{ steps.builder.outputs.instance_id }}",
                "min_free_disk": "${{ inputs.min_free_disk }}",
                "region": "${{ inputs.region }}",
                "registry": "${{ inputs.registry }}",
                "repository": format!("${{{{ inputs.stack }}}}/{agent}"),
                "runs_on": "${{ inputs.build_on }}",
                "tag": tag
            }
        })
    };
    for agent in ["orchestrator", "extractor", "validator", "archivist"] {
        before.insert(format!("{agent}-image"), image(agent, agent));
        let task = before.get_mut(&format!("{agent}-task")).unwrap();
        let needs = task["needs"].as_array_mut().unwrap();
        let repo = needs.iter().position(|n| *n == format!("{agent}-repo").as_str()).unwrap();
        needs[repo] = format!("{agent}-image").into();
        needs.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
        task["with"]["containers"][0]["image"] = format!("${{{{ steps.{agent}-image.outputs.image }}}}").into();
    }
    before.remove("mcp-image");
    before.insert("mcp-server-image".into(), image("mcp-server", "mcp-server"));
    let task = before.get_mut("mcp-task").unwrap();
    task["needs"] = serde_json::json!(["documents", "execution-role", "mcp-logs", "mcp-server-image", "task-role"]);
    task["with"]["containers"][0]["image"] = "${{ steps.mcp-server-image.outputs.image }}".into();
    // - the database has deletion protection, an input of the stack; `destroy`
    //   turns it off with --delete-data (aws_destroy::a_database_with_deletion_protection_...).
    before.get_mut("keycloak-db").unwrap()["with"]["deletion_protection"] =
        "${{ inputs.db_deletion_protection }}".into();
    // - HTTPS when a domain is given: a certificate step (skipped otherwise,
    //   standing in with an empty ARN) whose ARN the listener takes
    //   (aws_hardening::the_hardened_stack_serves_https_...).
    before.insert("certificate".into(), now["certificate"].clone());
    let http = before.get_mut("http").unwrap();
    http["with"]["certificate_arn"] = "${{ steps.certificate.outputs.arn }}".into();
    http["with"]["domain"] = "${{ inputs.domain }}".into();
    let needs = http["needs"].as_array_mut().unwrap();
    needs.push("certificate".into());
    needs.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
    // - the agents reach Keycloak where the listener step says clients reach the
    //   load balancer: https://<domain> once HTTPS is on, since port 80 then only
    //   redirects (aws_hardening::the_hardened_stack_serves_https_...).
    for agent in ["orchestrator", "extractor", "validator", "archivist"] {
        let task = before.get_mut(&format!("{agent}-task")).unwrap();
        let environment = &mut task["with"]["containers"][0]["environment"];
        environment["KEYCLOAK_URL"] = "${{ steps.http.outputs.url }}/auth".into();
        let needs = task["needs"].as_array_mut().unwrap();
        needs.retain(|n| *n != "alb");
        needs.push("http".into());
        needs.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
    }
    // - the database's security group is made empty, and its rule from Keycloak
    //   is a step of its own, so the database is asked for without waiting for
    //   the load balancer's and Keycloak's groups; Keycloak's tasks start once
    //   the rule is there (aws_plan::the_database_is_asked_for_as_soon_as_...).
    let rds_sg = before.get_mut("rds-sg").unwrap();
    let rule = rds_sg["with"].as_object_mut().unwrap().remove("ingress").unwrap();
    rds_sg["needs"] = serde_json::json!(["vpc"]);
    before.insert(
        "rds-ingress".into(),
        serde_json::json!({
            "kind": "aws.ec2.security_group_ingress",
            "needs": ["keycloak-sg", "rds-sg"],
            "with": {
                "group_id": "${{ steps.rds-sg.outputs.group_id }}",
                "ingress": rule,
                "region": "${{ inputs.region }}",
                "stack": "${{ inputs.stack }}"
            }
        }),
    );
    let needs = before.get_mut("keycloak").unwrap()["needs"].as_array_mut().unwrap();
    needs.push("rds-ingress".into());
    needs.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
    assert_eq!(now.keys().collect::<Vec<_>>(), before.keys().collect::<Vec<_>>(), "the same steps");
    for (id, step) in &before {
        assert_eq!(&now[id], step, "step `{id}`: same kind, needs and parameters");
    }
}
