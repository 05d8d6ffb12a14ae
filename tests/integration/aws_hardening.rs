//! The deployment report's production checklist, `workflows/hardening.yaml`:
//! HTTPS with an ACM certificate and port 80 redirecting, a WAF web ACL on the
//! load balancer, an SNS topic with the alarms of the report's targets, CPU
//! target-tracking autoscaling; each made, read back, adopted by a re-run, put
//! back when changed by hand, and destroyed to zero.

use aws_sdk_elasticloadbalancingv2::types::{ActionTypeEnum, ProtocolEnum};

use crate::support::aws::{
    EVERYTHING, behind_aws_sim, deploy_file, destroy, expect_nothing_left, local_images, moto, one_aws_step, sdk,
    unique_stack,
};
use crate::support::faults::{Fault, FaultProxy, Rule};
use crate::support::{Env, block_on};

const HARDENING: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/workflows/hardening.yaml");
const AGENTS: [&str; 4] = ["orchestrator", "extractor", "validator", "archivist"];

/// A Route 53 hosted zone for `domain`; its id without `/hostedzone/`.
fn a_hosted_zone(domain: &str) -> String {
    let r53 = aws_sdk_route53::Client::new(&sdk());
    let made = block_on(r53.create_hosted_zone().name(domain).caller_reference(domain).send()).unwrap();
    made.hosted_zone().unwrap().id().trim_start_matches("/hostedzone/").to_string()
}

/// The CNAME records of the hosted zone, as `NAME VALUE`. Read as XML here:
/// moto writes each value as CDATA, which the SDK's XML reader reads as empty.
fn cnames(zone: &str) -> Vec<String> {
    let signed =
        "AWS4-HMAC-SHA256 Credential=testing/20261130/us-east-1/route53/aws4_request, SignedHeaders=host, Signature=0";
    let url = format!("{}/2013-04-01/hostedzone/{zone}/rrset", moto());
    let xml = crate::support::web::http("GET", &url, &[("Authorization", signed)], None).body;
    let between = |text: &str, tag: &str| -> String {
        let open = format!("<{tag}>");
        let start = text.find(&open).map(|i| i + open.len()).unwrap_or(text.len());
        let end = text[start..].find(&format!("</{tag}>")).map(|i| start + i).unwrap_or(text.len());
        text[start..end].trim().trim_start_matches("<![CDATA[").trim_end_matches("]]>").to_string()
    };
    xml.split("<ResourceRecordSet>")
        .skip(1)
        .filter(|set| between(set, "Type") == "CNAME")
        .map(|set| format!("{} {}", between(set, "Name"), between(set, "Value")))
        .collect()
}

/// The hardened stack's inputs for `stack` served as `domain` from `zone`.
fn inputs(domain: &str, zone: &str) -> Vec<String> {
    vec![format!("domain={domain}"), format!("hosted_zone_id={zone}"), "alarm_email=ops@example.com".into()]
}

fn deploy_hardened(env: &Env, stack: &str, inputs: &[String]) {
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    deploy_file(env, HARDENING, stack, None, &[], &inputs).expect_success();
}

/// The alarms whose name starts with `<stack>-`, by name.
fn alarms(stack: &str) -> Vec<aws_sdk_cloudwatch::types::MetricAlarm> {
    let cw = aws_sdk_cloudwatch::Client::new(&sdk());
    let found = block_on(cw.describe_alarms().alarm_name_prefix(format!("{stack}-")).max_records(100).send()).unwrap();
    found.metric_alarms().to_vec()
}

fn alarm(stack: &str, step: &str) -> aws_sdk_cloudwatch::types::MetricAlarm {
    let name = format!("{stack}-{step}");
    alarms(stack).into_iter().find(|a| a.alarm_name() == Some(name.as_str())).unwrap_or_else(|| panic!("alarm {name}"))
}

/// The scalable target of the ECS service `<stack>-<agent>`: (min, max).
fn scaling_of(stack: &str, agent: &str) -> Option<(i32, i32)> {
    use aws_sdk_applicationautoscaling::types::{ScalableDimension, ServiceNamespace};
    let aas = aws_sdk_applicationautoscaling::Client::new(&sdk());
    let id = format!("service/{stack}-cluster/{stack}-{agent}");
    let found = block_on(
        aas.describe_scalable_targets()
            .service_namespace(ServiceNamespace::Ecs)
            .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
            .resource_ids(&id)
            .send(),
    )
    .unwrap();
    found.scalable_targets().first().map(|t| (t.min_capacity(), t.max_capacity()))
}

/// The load balancer's listeners by port, and the priorities of each one's rules.
fn listeners(alb: &str) -> Vec<(i32, aws_sdk_elasticloadbalancingv2::types::Listener, Vec<String>)> {
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&sdk());
    let found = block_on(elb.describe_listeners().load_balancer_arn(alb).send()).unwrap();
    let mut all = Vec::new();
    for l in found.listeners() {
        let rules = block_on(elb.describe_rules().listener_arn(l.listener_arn().unwrap()).send()).unwrap();
        let mut priorities: Vec<String> = rules
            .rules()
            .iter()
            .filter(|r| r.is_default() != Some(true))
            .filter_map(|r| r.priority().map(String::from))
            .collect();
        priorities.sort();
        all.push((l.port().unwrap(), l.clone(), priorities));
    }
    all.sort_by_key(|(port, _, _)| *port);
    all
}

fn web_acl_of(alb: &str) -> Option<aws_sdk_wafv2::types::WebAcl> {
    let waf = aws_sdk_wafv2::Client::new(&sdk());
    block_on(waf.get_web_acl_for_resource().resource_arn(alb).send()).ok().and_then(|f| f.web_acl().cloned())
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn the_hardened_stack_serves_https_behind_a_waf_with_alarms_and_scaling_puts_back_what_was_changed_and_destroys_to_zero()
 {
    let env = Env::sqlite();
    let stack = unique_stack("hard");
    let domain = format!("{stack}.example.com");
    let zone = a_hosted_zone(&domain);
    let inputs = inputs(&domain, &zone);
    deploy_hardened(&env, &stack, &inputs);
    let run = env.only_run().id;
    let output =
        |step: &str, key: &str| env.step(&run, step).outputs.unwrap()[key].as_str().unwrap_or_default().to_string();
    let alb = output("alb", "arn");

    // HTTPS: the certificate, proven by the records made in the zone.
    let cert = output("certificate", "arn");
    let acm = aws_sdk_acm::Client::new(&sdk());
    let described = block_on(acm.describe_certificate().certificate_arn(&cert).send()).unwrap();
    assert_eq!(described.certificate().unwrap().status().unwrap().as_str(), "ISSUED");
    let records = env.step(&run, "certificate").outputs.unwrap()["validation_records"].clone();
    let record = records[0].as_str().unwrap().to_string();
    let (name, value) = (record.split(' ').next().unwrap(), record.rsplit(' ').next().unwrap());
    assert!(name.ends_with(&format!("{domain}.")), "{record}");
    assert!(cnames(&zone).contains(&format!("{name} {value}")), "made in the zone: {:?}", cnames(&zone));

    // 443 forwards with the certificate and holds the path rules; 80 only redirects.
    let found = listeners(&alb);
    let ports: Vec<i32> = found.iter().map(|(p, _, _)| *p).collect();
    assert_eq!(ports, [80, 443]);
    let (_, http, http_rules) = &found[0];
    let redirect = http.default_actions()[0].redirect_config().expect("port 80 redirects");
    assert_eq!((redirect.protocol(), redirect.port()), (Some("HTTPS"), Some("443")));
    assert_eq!(redirect.status_code().map(|c| c.as_str()), Some("HTTP_301"));
    assert!(http_rules.is_empty(), "no rule left on port 80: {http_rules:?}");
    let (_, https, https_rules) = &found[1];
    assert_eq!(https.protocol(), Some(&ProtocolEnum::Https));
    assert_eq!(https.certificates()[0].certificate_arn(), Some(cert.as_str()));
    assert_eq!(https.default_actions()[0].r#type(), Some(&ActionTypeEnum::Forward));
    assert_eq!(https.default_actions()[0].target_group_arn(), Some(output("orchestrator-tg", "arn").as_str()));
    assert_eq!(*https_rules, strs(&["10", "20", "30", "40"]), "the path rules moved to 443");
    assert_eq!(output("http", "arn"), https.listener_arn().unwrap(), "the step's `arn` is the forwarding listener");
    // The agents reach Keycloak on the certificate's name: port 80 would answer a redirect.
    assert_eq!(output("http", "url"), format!("https://{domain}"));
    assert_eq!(
        crate::support::aws::task_environment(&env, &run, "orchestrator-task", "KEYCLOAK_URL"),
        Some(format!("https://{domain}/auth"))
    );

    // WAF on the load balancer: the rate limit and three managed groups.
    let acl = web_acl_of(&alb).expect("a web ACL protects the load balancer");
    assert_eq!(acl.name(), format!("{stack}-waf"));
    let rules: Vec<&str> = acl.rules().iter().map(|r| r.name()).collect();
    assert_eq!(
        rules,
        [
            "rate-limit",
            "AWSManagedRulesCommonRuleSet",
            "AWSManagedRulesSQLiRuleSet",
            "AWSManagedRulesKnownBadInputsRuleSet"
        ]
    );
    let rate = acl.rules()[0].statement().unwrap().rate_based_statement().unwrap();
    assert_eq!(rate.limit(), 2000);

    // The topic, subscribed by the alarm address; every alarm sends to it.
    let topic = output("alerts", "arn");
    let sns = aws_sdk_sns::Client::new(&sdk());
    let subs = block_on(sns.list_subscriptions_by_topic().topic_arn(&topic).send()).unwrap();
    assert!(
        subs.subscriptions().iter().any(|s| s.endpoint() == Some("ops@example.com") && s.protocol() == Some("email"))
    );
    let all = alarms(&stack);
    assert_eq!(all.len(), 4 * 2 + 2 + 5 + 3, "{:?}", all.iter().map(|a| a.alarm_name()).collect::<Vec<_>>());
    for a in &all {
        assert_eq!(a.alarm_actions(), [topic.clone()], "{:?} sends to the topic", a.alarm_name());
    }
    // The report's targets: error rate < 1%, p95 < 200 ms; 80% CPU and memory.
    let errors = alarm(&stack, "alb-5xx-alarm");
    assert_eq!(errors.threshold(), Some(1.0));
    let ids: Vec<&str> = errors.metrics().iter().filter_map(|m| m.id()).collect();
    assert_eq!(ids, ["m", "of", "ratio"]);
    let stat = |id: &str| {
        let m = errors.metrics().iter().find(|m| m.id() == Some(id)).unwrap();
        m.metric_stat().unwrap().metric().unwrap().metric_name().unwrap().to_string()
    };
    assert_eq!((stat("m"), stat("of")), ("HTTPCode_Target_5XX_Count".into(), "RequestCount".into()));
    let latency = alarm(&stack, "alb-latency-alarm");
    assert_eq!((latency.extended_statistic(), latency.threshold()), (Some("p95"), Some(0.2)));
    let dims: Vec<(&str, &str)> =
        latency.dimensions().iter().map(|d| (d.name().unwrap(), d.value().unwrap())).collect();
    assert_eq!(dims, [("LoadBalancer", alb.split_once(":loadbalancer/").unwrap().1)]);
    let cpu = alarm(&stack, "orchestrator-cpu-alarm");
    assert_eq!(
        (cpu.namespace(), cpu.metric_name(), cpu.threshold()),
        (Some("AWS/ECS"), Some("CPUUtilization"), Some(80.0))
    );
    let storage = alarm(&stack, "db-storage-alarm");
    assert_eq!(storage.comparison_operator().unwrap().as_str(), "LessThanThreshold");

    // Scaling: 1 to 5 tasks per agent, CPU at 70%.
    for agent in AGENTS {
        assert_eq!(scaling_of(&stack, agent), Some((1, 5)), "{agent}");
    }

    // `stop` suspends the scaling before it sets the counts to 0 (the scaling
    // would start the minimum again); `start` resumes it once the counts are back.
    let service = |step: &str| {
        let all = env.run(&["services", &run, "--output", "json"]).json();
        all.as_array().unwrap().iter().find(|s| s["step"] == step).cloned().unwrap()
    };
    env.run(&["stop", &run]).expect_success();
    let stopped = service("orchestrator");
    assert_eq!((stopped["desired"].as_i64(), stopped["scaling"].as_str()), (Some(0), Some("1..5 suspended")));
    env.run(&["start", &run]).expect_success();
    let started = service("orchestrator");
    assert_eq!((started["desired"].as_i64(), started["scaling"].as_str()), (Some(1), Some("1..5")));
    assert!(env.run(&["services", &run]).stdout.contains("SCALING"), "the table has the column");

    // Changed by hand: port 80 forwards again, a threshold, the bounds, the WAF
    // association, the alarm address's subscription.
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&sdk());
    let forward = aws_sdk_elasticloadbalancingv2::types::Action::builder()
        .r#type(ActionTypeEnum::Forward)
        .target_group_arn(output("orchestrator-tg", "arn"))
        .build();
    block_on(elb.modify_listener().listener_arn(http.listener_arn().unwrap()).default_actions(forward).send()).unwrap();
    let cw = aws_sdk_cloudwatch::Client::new(&sdk());
    block_on(
        cw.put_metric_alarm()
            .alarm_name(format!("{stack}-orchestrator-cpu-alarm"))
            .namespace("AWS/ECS")
            .metric_name("CPUUtilization")
            .statistic(aws_sdk_cloudwatch::types::Statistic::Average)
            .period(60)
            .evaluation_periods(5)
            .threshold(99.0)
            .comparison_operator(aws_sdk_cloudwatch::types::ComparisonOperator::GreaterThanThreshold)
            .send(),
    )
    .unwrap();
    {
        use aws_sdk_applicationautoscaling::types::{ScalableDimension, ServiceNamespace};
        let aas = aws_sdk_applicationautoscaling::Client::new(&sdk());
        block_on(
            aas.register_scalable_target()
                .service_namespace(ServiceNamespace::Ecs)
                .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
                .resource_id(format!("service/{stack}-cluster/{stack}-orchestrator"))
                .min_capacity(2)
                .max_capacity(3)
                .send(),
        )
        .unwrap();
    }
    let waf = aws_sdk_wafv2::Client::new(&sdk());
    block_on(waf.disassociate_web_acl().resource_arn(&alb).send()).unwrap();
    let subscribed = |topic: &str| {
        let subs = block_on(sns.list_subscriptions_by_topic().topic_arn(topic).send()).unwrap();
        subs.subscriptions().iter().filter(|s| s.endpoint() == Some("ops@example.com")).count()
    };
    let subs = block_on(sns.list_subscriptions_by_topic().topic_arn(&topic).send()).unwrap();
    let sub = subs.subscriptions()[0].subscription_arn().unwrap().to_string();
    block_on(sns.unsubscribe().subscription_arn(&sub).send()).unwrap();
    assert_eq!(subscribed(&topic), 0, "unsubscribed by hand");

    let mut plan_args = vec!["plan".to_string(), HARDENING.into(), "--input".into(), format!("stack={stack}")];
    for i in ["healthy_targets=1", "mcp=false"].iter().map(|s| s.to_string()).chain(inputs.iter().cloned()) {
        plan_args.extend(["--input".into(), i]);
    }
    plan_args.extend(local_images().iter().map(|s| s.to_string()));
    let plan_args: Vec<&str> = plan_args.iter().map(String::as_str).collect();
    let plan = env.run(&plan_args);
    plan.expect_success();
    for said in [
        ":80 default action: forward to",
        "condition: GreaterThanThreshold 99",
        "scaling: 2..3 -> 1..5",
        "association: none ->",
        "email subscription: none -> ops@example.com",
    ] {
        assert!(plan.stdout.contains(said), "plan says `{said}`:\n{}", plan.stdout);
    }

    deploy_hardened(&env, &stack, &inputs);
    let again = env.runs()[0].id.clone();
    let action =
        |step: &str| env.step(&again, step).outputs.unwrap()["action"].as_str().unwrap_or_default().to_string();
    for step in ["http", "orchestrator-cpu-alarm", "orchestrator-scaling", "waf", "alerts"] {
        assert_eq!(action(step), "updated", "{step} put back");
    }
    for step in ["certificate", "extractor-scaling", "alb-5xx-alarm", "db-storage-alarm"] {
        assert_eq!(action(step), "adopted", "{step} found as it was");
    }
    let found = listeners(&alb);
    assert!(found[0].1.default_actions()[0].redirect_config().is_some(), "port 80 redirects again");
    assert_eq!(alarm(&stack, "orchestrator-cpu-alarm").threshold(), Some(80.0));
    assert_eq!(scaling_of(&stack, "orchestrator"), Some((1, 5)));
    assert_eq!(web_acl_of(&alb).map(|a| a.name().to_string()), Some(format!("{stack}-waf")));
    assert_eq!(subscribed(&topic), 1, "the address is subscribed again, once");

    destroy(&env, &run, &EVERYTHING, &[]).expect_success();
    expect_nothing_left(&stack, false);
    assert!(alarms(&stack).is_empty(), "alarms");
    for agent in AGENTS {
        assert_eq!(scaling_of(&stack, agent), None, "{agent}'s scaling");
    }
    let certs = block_on(acm.list_certificates().send()).unwrap();
    assert!(
        !certs.certificate_summary_list().iter().any(|c| c.certificate_arn() == Some(cert.as_str())),
        "certificate"
    );
    assert!(cnames(&zone).is_empty(), "validation records: {:?}", cnames(&zone));
    let acls = block_on(waf.list_web_acls().scope(aws_sdk_wafv2::types::Scope::Regional).send()).unwrap();
    assert!(!acls.web_acls().iter().any(|a| a.name() == Some(format!("{stack}-waf").as_str())), "web ACL");
    let topics = block_on(sns.list_topics().send()).unwrap();
    assert!(!topics.topics().iter().any(|t| t.topic_arn() == Some(topic.as_str())), "topic");
}

/// Makes (UPSERT) the CNAME `name` -> `value` in the hosted zone `zone`.
fn a_cname(zone: &str, name: &str, value: &str) {
    use aws_sdk_route53::types::{Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType};
    let r53 = aws_sdk_route53::Client::new(&sdk());
    let value = ResourceRecord::builder().value(value).build().unwrap();
    let set =
        ResourceRecordSet::builder().name(name).r#type(RrType::Cname).ttl(300).resource_records(value).build().unwrap();
    let change = Change::builder().action(ChangeAction::Upsert).resource_record_set(set).build().unwrap();
    let batch = ChangeBatch::builder().changes(change).build().unwrap();
    block_on(r53.change_resource_record_sets().hosted_zone_id(zone).change_batch(batch).send()).unwrap();
}

#[test]
fn a_certificate_still_pending_validation_at_its_deadline_fails_naming_the_records_to_make() {
    behind_aws_sim();
    let env = Env::sqlite();
    let stack = unique_stack("pending");
    let domain = format!("{stack}.example.com");
    // No hosted zone: nobody makes the records, and the layer keeps it pending as ACM does.
    let wf = one_aws_step(&env, "certificate", "aws.acm.certificate", &[("domain_name", &domain), ("wait", "2s")]);
    let input = format!("stack={stack}");
    let out =
        env.run_with(&["run", wf.to_str().unwrap(), "--input", &input], &[("CA_A2A_FLOW_POLL_INTERVAL", "200ms")]);
    assert_ne!(out.code, Some(0), "the step fails");
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(said.contains(&format!("certificate for {domain} still PENDING_VALIDATION")), "{said}");
    let record = said
        .split("it needs the DNS records ")
        .nth(1)
        .and_then(|r| r.lines().next())
        .unwrap_or_else(|| panic!("names the records: {said}"))
        .to_string();
    let parts: Vec<&str> = record.split(' ').collect();
    assert_eq!(parts.len(), 3, "NAME CNAME VALUE: {record}");
    assert!(parts[0].ends_with(&format!("{domain}.")) && parts[1] == "CNAME", "{record}");
    assert!(said.contains("create these DNS records"), "says what to do:\n{said}");
    let logs = env.run(&["logs", &env.only_run().id]).stdout;
    assert!(logs.contains("waiting for DNS records"), "the wait showed the records:\n{logs}");

    // Made by hand where the domain is served, as the error says: the resumed
    // run finds the certificate it requested issued, and requests no other.
    a_cname(&a_hosted_zone(&domain), parts[0], parts[2]);
    env.run_with(&["resume", &env.only_run().id], &[("CA_A2A_FLOW_POLL_INTERVAL", "200ms")]).expect_success();
    let outputs = env.step(&env.only_run().id, "certificate").outputs.unwrap();
    assert_eq!(outputs["action"], "adopted", "{outputs:?}");
    let acm = aws_sdk_acm::Client::new(&sdk());
    let certs = block_on(acm.list_certificates().send()).unwrap();
    let mine = certs.certificate_summary_list().iter().filter(|c| c.domain_name() == Some(domain.as_str())).count();
    assert_eq!(mine, 1, "one certificate for the domain");
}

#[test]
fn a_certificate_read_that_gets_no_answer_past_the_waits_deadline_is_retried_not_reported_as_still_pending() {
    // ACM's answer to the wait's first read is lost: the call is cut at its own
    // deadline (3 s), past the wait's (1 s). Nothing was learnt of the
    // certificate: the attempt fails on the call, and the next one reads again.
    let rule = Rule {
        action: "DescribeCertificate",
        fault: Fault::HangAfterForwarding(std::time::Duration::from_secs(30)),
        times: Some(1),
    };
    let proxy = FaultProxy::start(&moto(), vec![rule]);
    let env = Env::sqlite();
    let stack = unique_stack("lost");
    let domain = format!("{stack}.example.com");
    let wf = one_aws_step(&env, "certificate", "aws.acm.certificate", &[("domain_name", &domain), ("wait", "1s")]);
    let vars = [
        ("AWS_ENDPOINT_URL", proxy.url.as_str()),
        ("CA_A2A_FLOW_AWS_CALL_TIMEOUT", "3s"),
        ("CA_A2A_FLOW_POLL_INTERVAL", "200ms"),
    ];
    env.run_with(&["run", wf.to_str().unwrap(), "--input", &format!("stack={stack}")], &vars);
    let attempts = env.attempts(&env.only_run().id, "certificate");
    let first = attempts[0].error.as_ref().expect("the first attempt failed");
    assert!(first.message.contains("acm:DescribeCertificate got no answer within 3s"), "{first:?}");
    assert!(attempts.len() >= 2, "the lost answer was retried: {attempts:?}");
}

#[test]
fn gc_finds_a_topic_an_alarm_a_certificate_and_a_web_acl_no_run_owns_and_deletes_them() {
    let env = Env::sqlite();
    let stack = unique_stack("gchard");
    let domain = format!("{stack}.example.com");
    let input = format!("stack={stack}");
    let zone = a_hosted_zone(&domain);
    let (lb, _) = a_load_balancer_by_hand();
    let yaml = format!(
        "name: leftovers\ninputs: {{ stack: {{}} }}\ndefaults:\n  with: {{ stack: \"${{{{ inputs.stack }}}}\", region: eu-west-3 }}\nsteps:\n  - id: alerts\n    uses: aws.sns.topic\n  - id: cert\n    uses: aws.acm.certificate\n    with: {{ domain_name: {domain}, hosted_zone_id: {zone} }}\n  - id: cpu\n    uses: aws.cloudwatch.alarm\n    with: {{ namespace: AWS/ECS, metric_name: CPUUtilization, threshold: 80, notify: [\"${{{{ steps.alerts.outputs.arn }}}}\"] }}\n  - id: waf\n    uses: aws.wafv2.web_acl\n    with: {{ load_balancer_arn: \"{lb}\" }}\n"
    );
    let wf = env.write("leftovers.yaml", &yaml);
    env.run_with(&["run", wf.to_str().unwrap(), "--input", &input], &[("CA_A2A_FLOW_POLL_INTERVAL", "100ms")])
        .expect_success();
    // Another machine, whose store has no run of the stack.
    let elsewhere = Env::sqlite();
    let listed = elsewhere.run(&["gc", "--stack", &stack, "--region", "eu-west-3", "--output", "json"]);
    listed.expect_success();
    let kinds: Vec<String> =
        listed.json().as_array().unwrap().iter().map(|o| o["kind"].as_str().unwrap_or_default().to_string()).collect();
    for kind in ["aws.sns.topic", "aws.acm.certificate", "aws.cloudwatch.alarm", "aws.wafv2.web_acl"] {
        assert!(kinds.iter().any(|k| k == kind), "gc lists the {kind}: {}", listed.stdout);
    }
    elsewhere
        .run_with(
            &["gc", "--stack", &stack, "--region", "eu-west-3", "--delete", "--yes"],
            &[("CA_A2A_FLOW_POLL_INTERVAL", "100ms")],
        )
        .expect_success();
    let again = elsewhere.run(&["gc", "--stack", &stack, "--region", "eu-west-3", "--output", "json"]);
    assert_eq!(again.json(), serde_json::json!([]), "nothing left: {}", again.stdout);
    assert!(web_acl_of(&lb).is_none(), "the web ACL was taken off the load balancer before it went");
}

#[test]
fn the_cost_of_the_hardened_stack_prices_the_web_acl_and_every_alarm_with_the_price_file_date() {
    let env = Env::sqlite();
    let out = env.run(&["cost", HARDENING, "--input", "region=eu-west-3", "--input", "domain=api.example.com"]);
    out.expect_success();
    assert!(out.stdout.contains("(prices checked 20"), "{}", out.stdout);
    for line in [
        "web ACL $5",
        "4 rules x $1",
        "5M requests x $0.6",
        "alb-5xx-alarm",
        "2 metric(s) x $0.1",
        "public ACM certificate: free",
    ] {
        assert!(out.stdout.contains(line), "`{line}` in:\n{}", out.stdout);
    }
    let alarms = out.stdout.lines().filter(|l| l.contains("aws.cloudwatch.alarm")).count();
    assert_eq!(alarms, 18, "{}", out.stdout);
}

/// The SDK straight on moto, not through the layer: for what a test makes by
/// hand and does not test.
fn on_moto() -> aws_config::SdkConfig {
    let url = std::env::var("CA_A2A_FLOW_MOTO_URL").unwrap();
    block_on(aws_config::defaults(aws_config::BehaviorVersion::latest()).endpoint_url(url).load())
}

/// An internet-facing load balancer made by hand in a VPC of its own, with a
/// target group there: their ARNs.
fn a_load_balancer_by_hand() -> (String, String) {
    let (ec2, elb) = (aws_sdk_ec2::Client::new(&on_moto()), aws_sdk_elasticloadbalancingv2::Client::new(&on_moto()));
    block_on(async {
        let vpc = ec2.create_vpc().cidr_block("10.77.0.0/16").send().await.unwrap();
        let vpc = vpc.vpc().unwrap().vpc_id().unwrap().to_string();
        let mut subnets = Vec::new();
        for (cidr, zone) in [("10.77.1.0/24", "eu-west-3a"), ("10.77.2.0/24", "eu-west-3b")] {
            let made = ec2.create_subnet().vpc_id(&vpc).cidr_block(cidr).availability_zone(zone).send().await.unwrap();
            subnets.push(made.subnet().unwrap().subnet_id().unwrap().to_string());
        }
        let igw = ec2.create_internet_gateway().send().await.unwrap();
        let igw = igw.internet_gateway().unwrap().internet_gateway_id().unwrap().to_string();
        ec2.attach_internet_gateway().internet_gateway_id(&igw).vpc_id(&vpc).send().await.unwrap();
        let lb =
            elb.create_load_balancer().name(unique_stack("byhand")).set_subnets(Some(subnets)).send().await.unwrap();
        let lb = lb.load_balancers()[0].load_balancer_arn().unwrap().to_string();
        let tg = elb
            .create_target_group()
            .name(unique_stack("byhand"))
            .protocol(ProtocolEnum::Http)
            .port(80)
            .vpc_id(&vpc)
            .send()
            .await
            .unwrap();
        (lb, tg.target_groups()[0].target_group_arn().unwrap().to_string())
    })
}

/// A load balancer made by hand with an HTTPS listener serving `cert`: the listener's ARN.
fn an_https_listener(cert: &str) -> String {
    use aws_sdk_elasticloadbalancingv2::types::{Action, Certificate};
    let (lb, tg) = a_load_balancer_by_hand();
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&on_moto());
    let listener = block_on(
        elb.create_listener()
            .load_balancer_arn(&lb)
            .protocol(ProtocolEnum::Https)
            .port(443)
            .certificates(Certificate::builder().certificate_arn(cert).build())
            .default_actions(Action::builder().r#type(ActionTypeEnum::Forward).target_group_arn(tg).build())
            .send(),
    )
    .unwrap();
    listener.listeners()[0].listener_arn().unwrap().to_string()
}

#[test]
fn a_certificate_asked_for_other_names_is_replaced_and_the_old_one_deleted_once_no_listener_uses_it() {
    let env = Env::sqlite();
    let stack = unique_stack("names");
    let domain = format!("{stack}.example.com");
    let zone = a_hosted_zone(&domain);
    let fast = [("CA_A2A_FLOW_POLL_INTERVAL", "100ms")];
    let certificate_for = |names: &str| {
        let with = [("domain_name", domain.as_str()), ("hosted_zone_id", zone.as_str()), ("alternative_names", names)];
        one_aws_step(&env, "certificate", "aws.acm.certificate", &with)
    };
    let run = |wf: &std::path::Path| {
        env.run_with(&["run", wf.to_str().unwrap(), "--input", &format!("stack={stack}")], &fast).expect_success();
        env.step(&env.runs()[0].id, "certificate").outputs.unwrap()
    };
    let plan = |wf: &std::path::Path| {
        let out = env.run(&["plan", wf.to_str().unwrap(), "--input", &format!("stack={stack}")]);
        out.expect_success();
        out.stdout
    };
    let acm = aws_sdk_acm::Client::new(&sdk());
    let exists = |arn: &str| block_on(acm.describe_certificate().certificate_arn(arn).send()).is_ok();

    let first = run(&certificate_for("[]"))["arn"].as_str().unwrap().to_string();
    let listener = an_https_listener(&first);

    // Other names: a certificate's names cannot change, so a new one is asked
    // for; the old one stays while the listener serves it.
    let wider = certificate_for(&format!("[www.{domain}]"));
    let planned = plan(&wider);
    assert!(
        planned
            .contains(&format!("alternative names: [] -> [\"www.{domain}\"]: a new certificate; the old one, {first}")),
        "{planned}"
    );
    let replaced = run(&wider);
    let second = replaced["arn"].as_str().unwrap().to_string();
    assert_ne!(second, first);
    assert_eq!(replaced["action"], "replaced", "{replaced:?}");
    assert_eq!(replaced["superseded"], serde_json::json!([first]), "kept: the listener serves it");
    assert!(exists(&first), "not deleted under the listener");
    let logs = env.run(&["logs", &env.runs()[0].id]).stdout;
    assert!(logs.contains(&format!("kept certificate {first}")), "{logs}");

    // The listener moves to the new certificate: the next run deletes the old one.
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&sdk());
    let serve = aws_sdk_elasticloadbalancingv2::types::Certificate::builder().certificate_arn(&second).build();
    block_on(elb.modify_listener().listener_arn(&listener).certificates(serve).send()).unwrap();
    let planned = plan(&wider);
    assert!(planned.contains(&format!("certificate {first} ({domain}): deleted, no listener uses it")), "{planned}");
    let retired = run(&wider);
    assert_eq!(
        (retired["arn"].as_str(), retired["action"].as_str()),
        (Some(second.as_str()), Some("updated")),
        "{retired:?}"
    );
    assert_eq!(retired["superseded"], serde_json::json!([]));
    assert!(!exists(&first), "the old certificate is deleted");
    let records = retired["validation_records"].as_array().unwrap().clone();
    for record in &records {
        let parts: Vec<&str> = record.as_str().unwrap().split(' ').collect();
        let made = format!("{} {}", parts[0], parts[2]);
        assert!(cnames(&zone).contains(&made), "the new certificate's record {made} stays: {:?}", cnames(&zone));
    }
    let again = env.run(&["plan", wider.to_str().unwrap(), "--input", &format!("stack={stack}"), "--output", "json"]);
    assert_eq!(again.json()["steps"][0]["action"], "adopt", "nothing left to do: {}", again.stdout);

    block_on(elb.delete_listener().listener_arn(&listener).send()).unwrap();
    destroy(&env, &env.runs()[0].id, &EVERYTHING, &[]).expect_success();
    assert!(!exists(&second), "destroy deletes the certificate");
    assert!(cnames(&zone).is_empty(), "and its records: {:?}", cnames(&zone));
}
