//! Each behaviour of `aws-sim`, driven with the plain AWS SDK through the real
//! binary in front of moto (scripts/test.sh starts moto and sets
//! CA_A2A_FLOW_MOTO_URL): the layer itself is checked, not only what uses it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// The `aws-sim` binary in front of the test's moto, with `args`.
struct Layer {
    url: String,
    child: Child,
}

impl Layer {
    fn start(args: &[&str]) -> Self {
        // scripts/test.sh names moto itself, and points AWS_ENDPOINT_URL at the suite's own layer.
        let moto = std::env::var("CA_A2A_FLOW_MOTO_URL").or_else(|_| std::env::var("AWS_ENDPOINT_URL")).expect(
            "aws-sim is tested in front of moto: run scripts/test.sh, which starts it and sets CA_A2A_FLOW_MOTO_URL",
        );
        assert!(moto.starts_with("http://127.0.0.1:"), "moto must be on loopback, not {moto}");
        let mut child = Command::new(env!("CARGO_BIN_EXE_aws-sim"))
            .args(["--upstream", &moto])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start aws-sim");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).expect("its first line");
        let url =
            first.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("first line: {first}")).to_string();
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        Self { url, child }
    }

    fn sdk(&self) -> aws_config::SdkConfig {
        block_on(aws_config::defaults(aws_config::BehaviorVersion::latest()).endpoint_url(&self.url).load())
    }

    /// SIGTERM, then the report it wrote.
    fn stop(mut self, report: &std::path::Path) -> serde_json::Value {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().expect("aws-sim ends");
        assert!(status.success(), "aws-sim ended with {status}");
        serde_json::from_str(&std::fs::read_to_string(report).expect("the report was written")).expect("JSON")
    }
}

impl Drop for Layer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{:06x}", fastrand::u32(..0xff_ffff))
}

#[test]
fn a_dry_run_is_answered_as_aws_answers_it_and_creates_nothing() {
    let layer = Layer::start(&[]);
    let ec2 = aws_sdk_ec2::Client::new(&layer.sdk());
    let cidr = format!("10.254.{}.0/24", fastrand::u8(..));
    block_on(async {
        let err = ec2.create_vpc().cidr_block(&cidr).dry_run(true).send().await.expect_err("a dry run never succeeds");
        let code = aws_sdk_ec2::error::ProvideErrorMetadata::code(&err).map(String::from);
        assert_eq!(code.as_deref(), Some("DryRunOperation"), "{err:?}");
        let cidr_filter = aws_sdk_ec2::types::Filter::builder().name("cidr").values(&cidr).build();
        let found = ec2.describe_vpcs().filters(cidr_filter).send().await.unwrap();
        assert!(found.vpcs().is_empty(), "the dry run created a VPC: {:?}", found.vpcs());
    });
}

#[test]
fn a_list_that_aws_pages_comes_in_pages_of_the_chosen_size() {
    let layer = Layer::start(&["--page-size", "3"]);
    let sm = aws_sdk_secretsmanager::Client::new(&layer.sdk());
    let prefix = unique("paged");
    block_on(async {
        for n in 0..7 {
            sm.create_secret().name(format!("{prefix}/s{n}")).secret_string("x").send().await.unwrap();
        }
        let by_name = || {
            aws_sdk_secretsmanager::types::Filter::builder()
                .key(aws_sdk_secretsmanager::types::FilterNameStringType::Name)
                .values(&prefix)
                .build()
        };
        let first = sm.list_secrets().filters(by_name()).send().await.unwrap();
        assert_eq!(first.secret_list().len(), 3, "one page of three");
        assert!(first.next_token().is_some(), "and a token for the next");
        let mut pages = sm.list_secrets().filters(by_name()).into_paginator().send();
        let mut all = 0;
        while let Some(page) = pages.next().await {
            all += page.unwrap().secret_list().len();
        }
        assert_eq!(all, 7, "every page read gives them all");
    });
}

#[test]
fn on_sigterm_the_report_counts_requests_by_service_and_action_and_errors_by_code() {
    let report = std::env::temp_dir().join(format!("{}.json", unique("aws-sim-report")));
    let layer = Layer::start(&["--report", report.to_str().unwrap()]);
    let config = layer.sdk();
    block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&config);
        ec2.describe_vpcs().send().await.unwrap();
        ec2.describe_vpcs().send().await.unwrap();
        let _ = ec2.create_vpc().cidr_block("10.253.0.0/24").dry_run(true).send().await;
    });
    let doc = layer.stop(&report);
    let _ = std::fs::remove_file(&report);
    assert_eq!(doc["requests"]["ec2"]["DescribeVpcs"], 2, "{doc}");
    assert_eq!(doc["requests"]["ec2"]["CreateVpc"], 1, "{doc}");
    assert_eq!(doc["errors_by_code"]["DryRunOperation"], 1, "{doc}");
    assert_eq!(doc["simulated"]["dry_run"], 1, "{doc}");
}

fn code<E: aws_sdk_ec2::error::ProvideErrorMetadata>(err: &E) -> Option<String> {
    err.code().map(String::from)
}

/// A VPC with two subnets in two zones, made through the layer: its id and the subnets'.
async fn network(ec2: &aws_sdk_ec2::Client) -> (String, Vec<String>) {
    let second = 100 + fastrand::u8(..150);
    let vpc = ec2.create_vpc().cidr_block(format!("10.{second}.0.0/16")).send().await.unwrap();
    let vpc = vpc.vpc().unwrap().vpc_id().unwrap().to_string();
    seen(|| ec2.describe_vpcs().vpc_ids(&vpc).send()).await;
    let mut subnets = Vec::new();
    for (n, zone) in [(1, "eu-west-3a"), (2, "eu-west-3b")] {
        let made = ec2
            .create_subnet()
            .vpc_id(&vpc)
            .cidr_block(format!("10.{second}.{n}.0/24"))
            .availability_zone(zone)
            .send()
            .await
            .unwrap();
        subnets.push(made.subnet().unwrap().subnet_id().unwrap().to_string());
    }
    seen(|| ec2.describe_subnets().set_subnet_ids(Some(subnets.clone())).send()).await;
    (vpc, subnets)
}

/// An internet gateway attached to `vpc`, made through the layer: its id.
async fn an_attached_internet_gateway(ec2: &aws_sdk_ec2::Client, vpc: &str) -> String {
    let igw = ec2.create_internet_gateway().send().await.unwrap();
    let igw = igw.internet_gateway().unwrap().internet_gateway_id().unwrap().to_string();
    seen(|| ec2.describe_internet_gateways().internet_gateway_ids(&igw).send()).await;
    ec2.attach_internet_gateway().internet_gateway_id(&igw).vpc_id(vpc).send().await.unwrap();
    igw
}

/// An internet-facing load balancer in a network of its own, made through the
/// layer: its VPC's id and its ARN.
async fn a_load_balancer(config: &aws_config::SdkConfig, prefix: &str) -> (String, String) {
    let ec2 = aws_sdk_ec2::Client::new(config);
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(config);
    let (vpc, subnets) = network(&ec2).await;
    an_attached_internet_gateway(&ec2, &vpc).await;
    let lb = elb.create_load_balancer().name(unique(prefix)).set_subnets(Some(subnets)).send().await.unwrap();
    (vpc, lb.load_balancers()[0].load_balancer_arn().unwrap().to_string())
}

/// A NAT gateway made through the layer in `subnet`, with an Elastic IP of its own: CreateNatGateway's answer.
async fn a_nat_gateway(ec2: &aws_sdk_ec2::Client, subnet: &str) -> aws_sdk_ec2::types::NatGateway {
    let eip = ec2.allocate_address().domain(aws_sdk_ec2::types::DomainType::Vpc).send().await.unwrap();
    let made = ec2.create_nat_gateway().subnet_id(subnet).allocation_id(eip.allocation_id().unwrap()).send().await;
    made.unwrap().nat_gateway().unwrap().clone()
}

/// CreateDBInstance of a db.t3.micro PostgreSQL `id` (a fake password: moto's, not AWS's).
fn a_small_postgres(
    rds: &aws_sdk_rds::Client,
    id: &str,
) -> aws_sdk_rds::operation::create_db_instance::builders::CreateDBInstanceFluentBuilder {
    rds.create_db_instance()
        .db_instance_identifier(id)
        .engine("postgres")
        .db_instance_class("db.t3.micro")
        .allocated_storage(20)
        .master_username("keycloak")
        .master_user_password("not-a-real-one-1")
}

/// Waits (up to 4 s) until `look` succeeds: a new EC2 resource is unknown for a
/// moment (eventual consistency), as a client of AWS must allow for.
async fn seen<F, Fut, T, E>(look: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    for _ in 0..200 {
        if look().await.is_ok() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("still not visible after 4 s");
}

#[test]
fn an_internet_facing_load_balancer_needs_the_internet_gateway_that_cannot_leave_while_it_stays() {
    // 600 simulated seconds a second: the deleted load balancer's interfaces go within 0.2 s.
    let layer = Layer::start(&["--time-scale", "600"]);
    let config = layer.sdk();
    block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&config);
        let elb = aws_sdk_elasticloadbalancingv2::Client::new(&config);
        let (vpc, subnets) = network(&ec2).await;
        let name = unique("lb");
        let create = || elb.create_load_balancer().name(&name).set_subnets(Some(subnets.clone()));

        let refused = create().send().await.expect_err("no internet gateway in the VPC yet");
        assert_eq!(code(&refused).as_deref(), Some("InvalidSubnet"), "{refused:?}");
        assert!(format!("{refused:?}").contains(&format!("VPC {vpc} has no internet gateway")), "{refused:?}");

        let igw = an_attached_internet_gateway(&ec2, &vpc).await;
        let lb = create().send().await.expect("made once the gateway is attached");
        let arn = lb.load_balancers()[0].load_balancer_arn().unwrap().to_string();

        let detach = || ec2.detach_internet_gateway().internet_gateway_id(&igw).vpc_id(&vpc).send();
        let held = detach().await.expect_err("the load balancer maps public addresses");
        assert_eq!(code(&held).as_deref(), Some("DependencyViolation"), "{held:?}");
        assert!(format!("{held:?}").contains("has some mapped public address(es)"), "{held:?}");

        elb.delete_load_balancer().load_balancer_arn(&arn).send().await.unwrap();
        released(|| async { detach().await.err().and_then(|e| code(&e)) }).await;
    });
}

/// Waits (up to 10 s) until `attempt` is no longer refused with DependencyViolation,
/// and says it was refused at least once first.
async fn released<F, Fut>(attempt: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<String>>,
{
    let mut refused = 0;
    for _ in 0..200 {
        match attempt().await {
            Some(c) if c == "DependencyViolation" => refused += 1,
            Some(other) => panic!("refused with {other}"),
            None => {
                assert!(refused > 0, "refused while the interfaces remained");
                return;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("still refused after 10 s");
}

#[test]
fn a_deleted_load_balancers_interfaces_hold_its_groups_subnets_vpc_and_gateway_for_two_minutes() {
    // 600 simulated seconds a second: two simulated minutes are 0.2 s.
    let layer = Layer::start(&["--time-scale", "600"]);
    let config = layer.sdk();
    block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&config);
        let elb = aws_sdk_elasticloadbalancingv2::Client::new(&config);
        let (vpc, subnets) = network(&ec2).await;
        let igw = an_attached_internet_gateway(&ec2, &vpc).await;
        let sg = ec2.create_security_group().group_name(unique("alb-sg")).description("alb").vpc_id(&vpc).send();
        let sg = sg.await.unwrap().group_id().unwrap().to_string();
        seen(|| ec2.describe_security_groups().group_ids(&sg).send()).await;
        let lb = elb
            .create_load_balancer()
            .name(unique("lb"))
            .set_subnets(Some(subnets.clone()))
            .security_groups(&sg)
            .send()
            .await
            .unwrap();
        let arn = lb.load_balancers()[0].load_balancer_arn().unwrap().to_string();
        elb.delete_load_balancer().load_balancer_arn(&arn).send().await.unwrap();

        let group = ec2.delete_security_group().group_id(&sg).send().await.expect_err("its interfaces remain");
        assert_eq!(code(&group).as_deref(), Some("DependencyViolation"));
        assert!(format!("{group:?}").contains(&format!("resource {sg} has a dependent object")), "{group:?}");
        let subnet = ec2.delete_subnet().subnet_id(&subnets[0]).send().await.expect_err("its interfaces remain");
        assert!(format!("{subnet:?}").contains("has dependencies and cannot be deleted"), "{subnet:?}");

        released(|| async { ec2.delete_security_group().group_id(&sg).send().await.err().and_then(|e| code(&e)) })
            .await;
        for subnet in &subnets {
            ec2.delete_subnet().subnet_id(subnet).send().await.expect("released with the group");
        }
        ec2.detach_internet_gateway().internet_gateway_id(&igw).vpc_id(&vpc).send().await.unwrap();
        ec2.delete_vpc().vpc_id(&vpc).send().await.expect("nothing holds the VPC any more");
    });
}

#[test]
fn a_list_moto_answers_whole_is_cut_into_pages_by_the_layer() {
    let layer = Layer::start(&["--page-size", "3"]);
    let ecs = aws_sdk_ecs::Client::new(&layer.sdk());
    let family = unique("sliced");
    block_on(async {
        for _ in 0..7 {
            let app = aws_sdk_ecs::types::ContainerDefinition::builder().name("app").image("nginx").memory(512).build();
            ecs.register_task_definition().family(&family).container_definitions(app).send().await.unwrap();
        }
        let first = ecs.list_task_definitions().family_prefix(&family).send().await.unwrap();
        assert_eq!(first.task_definition_arns().len(), 3, "one page of three");
        assert!(first.next_token().is_some(), "and a token for the next");
        let mut pages = ecs.list_task_definitions().family_prefix(&family).into_paginator().send();
        let mut all = Vec::new();
        while let Some(page) = pages.next().await {
            all.extend(page.unwrap().task_definition_arns().to_vec());
        }
        assert_eq!(all.len(), 7, "every page read gives them all, once each: {all:?}");
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 7);
    });
}

#[test]
fn filter_log_events_may_answer_an_empty_page_with_a_token_while_events_exist() {
    let layer = Layer::start(&[]);
    let logs = aws_sdk_cloudwatchlogs::Client::new(&layer.sdk());
    let group = format!("/aws-sim/{}", unique("logs"));
    block_on(async {
        logs.create_log_group().log_group_name(&group).send().await.unwrap();
        logs.create_log_stream().log_group_name(&group).log_stream_name("s").send().await.unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        let event = |n: i64| {
            aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                .timestamp(now + n)
                .message(format!("line {n}"))
                .build()
                .unwrap()
        };
        logs.put_log_events()
            .log_group_name(&group)
            .log_stream_name("s")
            .log_events(event(0))
            .log_events(event(1))
            .send()
            .await
            .unwrap();

        let first = logs.filter_log_events().log_group_name(&group).send().await.unwrap();
        assert!(first.events().is_empty(), "the first page is empty");
        let token = first.next_token().expect("but says more may follow").to_string();
        let next = logs.filter_log_events().log_group_name(&group).next_token(token).send().await.unwrap();
        let messages: Vec<&str> = next.events().iter().filter_map(|e| e.message()).collect();
        assert_eq!(messages, ["line 0", "line 1"]);
    });
}

/// The layer's SDK with the SDK's own retries off, so every throttled answer is seen.
fn without_retries(layer: &Layer) -> aws_config::SdkConfig {
    let retries = aws_config::retry::RetryConfig::disabled();
    block_on(
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&layer.url)
            .retry_config(retries)
            .load(),
    )
}

/// Error codes of `calls` DeleteNatGateway calls in a row (a NAT gateway that does not exist).
fn nat_deletes(config: &aws_config::SdkConfig, calls: usize) -> Vec<Option<String>> {
    let ec2 = aws_sdk_ec2::Client::new(config);
    block_on(async {
        let mut codes = Vec::new();
        for _ in 0..calls {
            let answer = ec2.delete_nat_gateway().nat_gateway_id("nat-0123456789abcdef0").send().await;
            codes.push(answer.err().and_then(|e| e.as_service_error().and_then(code)));
        }
        codes
    })
}

#[test]
fn a_burst_beyond_an_ec2_bucket_is_answered_request_limit_exceeded_and_counted() {
    // CreateNatGateway and DeleteNatGateway share a bucket of 10 that refills 1 per second:
    // the first 10 calls reach moto, the ones after are throttled (at 1 s per simulated second).
    let report = std::env::temp_dir().join(format!("{}.json", unique("aws-sim-throttle")));
    let layer = Layer::start(&["--time-scale", "1", "--report", report.to_str().unwrap()]);
    let codes = nat_deletes(&without_retries(&layer), 15);
    let throttled = |c: &Option<String>| c.as_deref() == Some("RequestLimitExceeded");
    assert!(!codes[..10].iter().any(throttled), "the bucket's 10 tokens let the first calls through: {codes:?}");
    assert!(codes[10..].iter().filter(|c| throttled(c)).count() >= 3, "then it is empty: {codes:?}");
    let doc = layer.stop(&report);
    let _ = std::fs::remove_file(&report);
    assert!(doc["throttled"].as_u64().unwrap() >= 3, "{doc}");
    assert_eq!(doc["throttled"], doc["errors_by_code"]["RequestLimitExceeded"], "{doc}");
}

#[test]
fn with_throttling_off_the_same_burst_all_reaches_moto() {
    let layer = Layer::start(&["--time-scale", "1", "--throttle", "off"]);
    let codes = nat_deletes(&without_retries(&layer), 15);
    assert!(codes.iter().all(|c| c.as_deref() != Some("RequestLimitExceeded")), "{codes:?}");
}

#[test]
fn load_balancing_throttles_in_its_own_protocol_and_the_sdk_reads_throttling() {
    // ELBv2's describes: a bucket of 40 that refills 10 per second; 100 calls at once empty it.
    let layer = Layer::start(&["--time-scale", "1"]);
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&without_retries(&layer));
    let codes = block_on(async {
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..100 {
            let elb = elb.clone();
            calls
                .spawn(async move { elb.describe_load_balancers().send().await.err().map(|e| e.into_service_error()) });
        }
        let mut codes = Vec::new();
        while let Some(answer) = calls.join_next().await {
            codes.push(
                answer.unwrap().and_then(|e| {
                    aws_sdk_elasticloadbalancingv2::error::ProvideErrorMetadata::code(&e).map(String::from)
                }),
            );
        }
        codes
    });
    let throttled = codes.iter().filter(|c| c.as_deref() == Some("Throttling")).count();
    assert!((40..=70).contains(&(100 - throttled)), "about 40 get through, the rest are throttled: {codes:?}");
}

#[test]
fn a_nat_gateway_and_a_database_take_aws_s_time_to_become_usable_the_database_backed_up_last_and_the_report_says_when()
{
    // 60 simulated seconds pass in one real second: a NAT gateway is usable within about two, the
    // database within about six, the last second or so of them `backing-up`.
    let report = std::env::temp_dir().join(format!("{}.json", unique("aws-sim-latency")));
    let layer = Layer::start(&["--time-scale", "60", "--report", report.to_str().unwrap()]);
    let config = layer.sdk();
    let db = unique("latency-db");
    let (nat, first_nat_state, first_db_status) = block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&config);
        let (vpc, subnets) = network(&ec2).await;
        an_attached_internet_gateway(&ec2, &vpc).await;
        let nat = a_nat_gateway(&ec2, &subnets[0]).await;
        let id = nat.nat_gateway_id().unwrap().to_string();
        let rds = aws_sdk_rds::Client::new(&config);
        let created = a_small_postgres(&rds, &db).send().await.unwrap();
        let first_db = created.db_instance().unwrap().db_instance_status().unwrap().to_string();
        (id, nat.state().unwrap().as_str().to_string(), first_db)
    });
    assert_eq!(first_nat_state, "pending", "CreateNatGateway answers a pending gateway");
    assert_eq!(first_db_status, "creating", "CreateDBInstance answers a creating instance");

    let ec2 = aws_sdk_ec2::Client::new(&config);
    let rds = aws_sdk_rds::Client::new(&config);
    let (mut nat_seen, mut db_seen) = (Vec::<String>::new(), Vec::<String>::new());
    block_on(async {
        for _ in 0..400 {
            let n = ec2.describe_nat_gateways().nat_gateway_ids(&nat).send().await.unwrap();
            nat_seen.push(n.nat_gateways()[0].state().unwrap().as_str().to_string());
            let d = rds.describe_db_instances().db_instance_identifier(&db).send().await.unwrap();
            db_seen.push(d.db_instances()[0].db_instance_status().unwrap().to_string());
            if nat_seen.last().unwrap() == "available" && db_seen.last().unwrap() == "available" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let _ = rds.delete_db_instance().db_instance_identifier(&db).skip_final_snapshot(true).send().await;
    });
    assert_eq!(nat_seen.first().map(String::as_str), Some("pending"), "{nat_seen:?}");
    assert_eq!(nat_seen.last().map(String::as_str), Some("available"), "then it becomes usable: {nat_seen:?}");
    assert_eq!(db_seen.first().map(String::as_str), Some("creating"), "{db_seen:?}");
    assert_eq!(db_seen.last().map(String::as_str), Some("available"), "{db_seen:?}");
    db_seen.dedup();
    assert_eq!(db_seen, ["creating", "backing-up", "available"], "its first backup comes last");

    let doc = layer.stop(&report);
    let _ = std::fs::remove_file(&report);
    let took = |kind: &str| {
        let r = doc["resources"].as_array().unwrap().iter().find(|r| r["kind"] == kind).unwrap();
        r["usable_at_s"].as_f64().unwrap() - r["created_at_s"].as_f64().unwrap()
    };
    assert!((90.0..=126.0).contains(&took("nat_gateway")), "1m30s to 2m06s, simulated: {doc}");
    assert!((357.0..=368.0).contains(&took("db_instance")), "5m57s to 6m08s, simulated: {doc}");
}

#[test]
fn a_new_vpc_is_not_found_by_id_for_a_moment_and_missed_by_tag_filters_a_little_longer() {
    // 2 simulated seconds a second: hidden by ID for 0.25 to 1 s, from filters for 1 to 2.5 s.
    let layer = Layer::start(&["--time-scale", "2"]);
    let ec2 = aws_sdk_ec2::Client::new(&without_retries(&layer));
    let tag = unique("young");
    block_on(async {
        let tags = aws_sdk_ec2::types::TagSpecification::builder()
            .resource_type(aws_sdk_ec2::types::ResourceType::Vpc)
            .tags(aws_sdk_ec2::types::Tag::builder().key("test").value(&tag).build())
            .build();
        let made = ec2.create_vpc().cidr_block("10.252.0.0/16").tag_specifications(tags).send().await.unwrap();
        let vpc = made.vpc().unwrap().vpc_id().unwrap().to_string();
        let by_tag = || {
            ec2.describe_vpcs()
                .filters(aws_sdk_ec2::types::Filter::builder().name("tag:test").values(&tag).build())
                .send()
        };

        let by_id = ec2.describe_vpcs().vpc_ids(&vpc).send().await.expect_err("not visible by its ID yet");
        assert_eq!(code(&by_id).as_deref(), Some("InvalidVpcID.NotFound"), "{by_id:?}");
        let named =
            ec2.create_subnet().vpc_id(&vpc).cidr_block("10.252.1.0/24").send().await.expect_err("nor by calls");
        assert_eq!(code(&named).as_deref(), Some("InvalidVpcID.NotFound"), "{named:?}");
        assert!(by_tag().await.unwrap().vpcs().is_empty(), "tag filters miss it");

        let mut polls = 0;
        while ec2.describe_vpcs().vpc_ids(&vpc).send().await.is_err() {
            polls += 1;
            assert!(polls < 100, "visible by ID within 5 s");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        while by_tag().await.unwrap().vpcs().is_empty() {
            polls += 1;
            assert!(polls < 200, "then to filters, within 10 s");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        ec2.delete_vpc().vpc_id(&vpc).send().await.unwrap();
    });
}

#[test]
fn a_client_token_gets_its_first_answer_again_even_once_the_resource_is_gone_and_refuses_other_parameters() {
    let layer = Layer::start(&["--time-scale", "600"]);
    let config = layer.sdk();
    block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&config);
        let (_, subnets) = network(&ec2).await;
        let eip = ec2.allocate_address().domain(aws_sdk_ec2::types::DomainType::Vpc).send().await.unwrap();
        let allocation = eip.allocation_id().unwrap().to_string();
        let token = unique("token");
        let create = |subnet: &str| {
            ec2.create_nat_gateway().subnet_id(subnet).allocation_id(&allocation).client_token(&token).send()
        };
        let first = create(&subnets[0]).await.unwrap().nat_gateway().unwrap().nat_gateway_id().unwrap().to_string();
        ec2.delete_nat_gateway().nat_gateway_id(&first).send().await.unwrap();
        let again = create(&subnets[0]).await.unwrap().nat_gateway().unwrap().nat_gateway_id().unwrap().to_string();
        assert_eq!(again, first, "the same token answers the first (now deleted) gateway, and makes none");
        let other = create(&subnets[1]).await.expect_err("the same token with another subnet");
        assert_eq!(code(&other).as_deref(), Some("IdempotentParameterMismatch"), "{other:?}");
    });
}

#[test]
fn a_faults_file_answers_its_action_with_its_error_as_often_as_it_says_then_the_layer_answers_as_usual() {
    let faults = std::env::temp_dir().join(format!("{}.json", unique("aws-sim-faults")));
    std::fs::write(
        &faults,
        r#"[{ "action": "CreateVpc", "error": { "status": 400, "code": "VpcLimitExceeded", "message": "The maximum number of VPCs has been reached." }, "times": 2 }]"#,
    )
    .unwrap();
    let report = std::env::temp_dir().join(format!("{}.json", unique("aws-sim-report")));
    let layer = Layer::start(&[
        "--profile",
        "instant",
        "--faults",
        faults.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    let ec2 = aws_sdk_ec2::Client::new(&without_retries(&layer));
    let cidr = format!("10.253.{}.0/24", fastrand::u8(..));
    let codes: Vec<Option<String>> = block_on(async {
        let mut codes = Vec::new();
        for _ in 0..3 {
            let answer = ec2.create_vpc().cidr_block(&cidr).send().await;
            codes.push(answer.err().and_then(|e| e.as_service_error().and_then(code)));
        }
        codes
    });
    assert_eq!(
        codes,
        [Some("VpcLimitExceeded".into()), Some("VpcLimitExceeded".into()), None],
        "two refused, then made"
    );
    let doc = layer.stop(&report);
    let _ = std::fs::remove_file(&report);
    let _ = std::fs::remove_file(&faults);
    assert_eq!(doc["errors_by_code"]["VpcLimitExceeded"], 2, "{doc}");
    assert_eq!(doc["simulated"]["fault"], 2, "{doc}");
}

#[test]
fn a_deleted_nat_gateway_is_deleting_for_a_minute_and_holds_its_subnet_and_the_gateway_meanwhile() {
    // 600 simulated seconds a second: pending about 0.2 s, deleting 0.1 s.
    let layer = Layer::start(&["--time-scale", "600", "--throttle", "off"]);
    let config = layer.sdk();
    block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&config);
        let (vpc, subnets) = network(&ec2).await;
        let igw = an_attached_internet_gateway(&ec2, &vpc).await;
        let nat = a_nat_gateway(&ec2, &subnets[0]).await.nat_gateway_id().unwrap().to_string();
        let state = || async {
            let n = ec2.describe_nat_gateways().nat_gateway_ids(&nat).send().await.unwrap();
            n.nat_gateways()[0].state().unwrap().as_str().to_string()
        };
        while state().await != "available" {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        ec2.delete_nat_gateway().nat_gateway_id(&nat).send().await.unwrap();
        assert_eq!(state().await, "deleting", "moto says deleted at once; AWS takes about a minute");
        let subnet = ec2.delete_subnet().subnet_id(&subnets[0]).send().await.expect_err("the NAT gateway is in it");
        assert_eq!(code(&subnet).as_deref(), Some("DependencyViolation"), "{subnet:?}");
        let detach = || ec2.detach_internet_gateway().internet_gateway_id(&igw).vpc_id(&vpc).send();
        released(|| async { detach().await.err().and_then(|e| code(&e)) }).await;
        assert_eq!(state().await, "deleted", "deleted once it no longer holds its public address");
    });
}

#[test]
fn a_deleted_database_is_deleting_for_minutes_keeps_its_subnet_group_and_identifier_then_its_interfaces_hold_its_group()
{
    // 600 simulated seconds a second: creating about 0.6 s, deleting 0.5 s.
    let layer = Layer::start(&["--time-scale", "600", "--throttle", "off"]);
    let config = layer.sdk();
    let db = unique("deleting-db");
    let group = unique("deleting-group");
    block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&config);
        let rds = aws_sdk_rds::Client::new(&config);
        let (vpc, subnets) = network(&ec2).await;
        let sg = ec2.create_security_group().group_name(&db).description("database").vpc_id(&vpc).send().await;
        let sg = sg.unwrap().group_id().unwrap().to_string();
        rds.create_db_subnet_group()
            .db_subnet_group_name(&group)
            .db_subnet_group_description("deleting")
            .set_subnet_ids(Some(subnets))
            .send()
            .await
            .unwrap();
        let create = || a_small_postgres(&rds, &db).db_subnet_group_name(&group).vpc_security_group_ids(&sg).send();
        create().await.unwrap();
        let status = || async {
            match rds.describe_db_instances().db_instance_identifier(&db).send().await {
                Ok(d) => d.db_instances()[0].db_instance_status().unwrap().to_string(),
                Err(e) => e
                    .as_service_error()
                    .and_then(|e| aws_sdk_rds::error::ProvideErrorMetadata::code(e))
                    .unwrap()
                    .to_string(),
            }
        };
        rds.delete_db_instance().db_instance_identifier(&db).skip_final_snapshot(true).send().await.unwrap();
        assert_eq!(status().await, "deleting", "moto forgets it at once; AWS takes minutes");
        let group_refused = rds.delete_db_subnet_group().db_subnet_group_name(&group).send().await.unwrap_err();
        let group_code =
            group_refused.as_service_error().and_then(|e| aws_sdk_rds::error::ProvideErrorMetadata::code(e));
        assert_eq!(group_code, Some("InvalidDBSubnetGroupStateFault"), "{group_refused:?}");
        let again = create().await.unwrap_err();
        let again_code = again.as_service_error().and_then(|e| aws_sdk_rds::error::ProvideErrorMetadata::code(e));
        assert_eq!(again_code, Some("DBInstanceAlreadyExists"), "{again:?}");
        for _ in 0..100 {
            if status().await != "deleting" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(status().await, "DBInstanceNotFound", "gone after its simulated five minutes");
        rds.delete_db_subnet_group().db_subnet_group_name(&group).send().await.expect("free once the instance is gone");
        // Its network interfaces outlive it a while, and hold its security group.
        released(|| async { ec2.delete_security_group().group_id(&sg).send().await.err().and_then(|e| code(&e)) })
            .await;
    });
}

/// The distinct values `look` gave, in order, polled every 20 ms until `done` holds (at most 30 s).
async fn states<F, Fut>(look: F, done: impl Fn(&str) -> bool) -> Vec<String>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = String>,
{
    let mut seen: Vec<String> = Vec::new();
    for _ in 0..1500 {
        let now = look().await;
        if seen.last() != Some(&now) {
            seen.push(now.clone());
        }
        if done(&now) {
            return seen;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("not done after 30 s: {seen:?}");
}

#[test]
fn a_service_needs_a_listener_on_its_group_then_its_tasks_start_register_pass_their_checks_roll_out_and_drain() {
    // 30 simulated seconds a second: tasks start in 2 s, pass 3 checks 10 s apart in 1 s,
    // drain 60 s (2 s) and stop in 30 s (1 s). Each state lasts a second or more: a loaded
    // machine's slow poll does not miss one.
    let layer = Layer::start(&["--time-scale", "30", "--throttle", "off"]);
    let config = layer.sdk();
    let name = unique("tasks");
    block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&config);
        let elb = aws_sdk_elasticloadbalancingv2::Client::new(&config);
        let ecs = aws_sdk_ecs::Client::new(&config);
        let (vpc, subnets) = network(&ec2).await;
        let tg = elb
            .create_target_group()
            .name(&name)
            .protocol(aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Http)
            .port(8000)
            .vpc_id(&vpc)
            .target_type(aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum::Ip)
            .health_check_interval_seconds(10)
            .healthy_threshold_count(3)
            .send()
            .await
            .unwrap();
        let tg = tg.target_groups()[0].target_group_arn().unwrap().to_string();
        let delay = aws_sdk_elasticloadbalancingv2::types::TargetGroupAttribute::builder()
            .key("deregistration_delay.timeout_seconds")
            .value("60")
            .build();
        elb.modify_target_group_attributes().target_group_arn(&tg).attributes(delay).send().await.unwrap();
        ecs.create_cluster().cluster_name(&name).send().await.unwrap();
        let container = aws_sdk_ecs::types::ContainerDefinition::builder()
            .name("app")
            .image("app:1")
            .port_mappings(aws_sdk_ecs::types::PortMapping::builder().container_port(8000).build())
            .build();
        let register = || async {
            let task = ecs
                .register_task_definition()
                .family(&name)
                .network_mode(aws_sdk_ecs::types::NetworkMode::Awsvpc)
                .requires_compatibilities(aws_sdk_ecs::types::Compatibility::Fargate)
                .cpu("256")
                .memory("512")
                .container_definitions(container.clone())
                .send()
                .await
                .unwrap();
            task.task_definition().unwrap().task_definition_arn().unwrap().to_string()
        };
        let task = register().await;
        let group = ec2.create_security_group().group_name(&name).description("tasks").vpc_id(&vpc).send().await;
        let group = group.unwrap().group_id().unwrap().to_string();
        let network = aws_sdk_ecs::types::AwsVpcConfiguration::builder()
            .set_subnets(Some(subnets.clone()))
            .security_groups(&group)
            .build()
            .unwrap();
        let balancer = aws_sdk_ecs::types::LoadBalancer::builder()
            .target_group_arn(&tg)
            .container_name("app")
            .container_port(8000);
        let create = || {
            ecs.create_service()
                .cluster(&name)
                .service_name(&name)
                .task_definition(&task)
                .desired_count(1)
                .launch_type(aws_sdk_ecs::types::LaunchType::Fargate)
                .network_configuration(
                    aws_sdk_ecs::types::NetworkConfiguration::builder().awsvpc_configuration(network.clone()).build(),
                )
                .load_balancers(balancer.clone().build())
                .send()
        };
        let refused = create().await.expect_err("no listener forwards to the group yet");
        let refused_code = refused.as_service_error().and_then(|e| aws_sdk_ecs::error::ProvideErrorMetadata::code(e));
        assert_eq!(refused_code, Some("InvalidParameterException"), "{refused:?}");
        assert!(format!("{refused:?}").contains("does not have an associated load balancer"), "{refused:?}");
        let lb = elb
            .create_load_balancer()
            .name(&name)
            .scheme(aws_sdk_elasticloadbalancingv2::types::LoadBalancerSchemeEnum::Internal)
            .set_subnets(Some(subnets))
            .send()
            .await
            .unwrap();
        let forward = aws_sdk_elasticloadbalancingv2::types::Action::builder()
            .r#type(aws_sdk_elasticloadbalancingv2::types::ActionTypeEnum::Forward)
            .target_group_arn(&tg)
            .build();
        elb.create_listener()
            .load_balancer_arn(lb.load_balancers()[0].load_balancer_arn().unwrap())
            .port(80)
            .protocol(aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Http)
            .default_actions(forward)
            .send()
            .await
            .unwrap();
        create().await.expect("made once a listener forwards to its group");
        let service = || async {
            let d = ecs.describe_services().cluster(&name).services(&name).send().await.unwrap();
            let s = &d.services()[0];
            format!("{} running {}", s.status().unwrap_or("?"), s.running_count())
        };
        let health = || async {
            let d = elb.describe_target_health().target_group_arn(&tg).send().await.unwrap();
            let states: Vec<&str> = d
                .target_health_descriptions()
                .iter()
                .filter_map(|t| t.target_health()?.state())
                .map(|s| s.as_str())
                .collect();
            states.join(",")
        };
        let started = states(service, |s| s == "ACTIVE running 1").await;
        assert_eq!(started, ["ACTIVE running 0", "ACTIVE running 1"], "moto runs it at once; Fargate takes a minute");
        let checked = states(health, |s| s == "healthy").await;
        assert_eq!(checked.last().map(String::as_str), Some("healthy"), "{checked:?}");
        assert!(checked.iter().any(|s| s == "initial"), "registered, then healthy after 3 checks: {checked:?}");

        // A new revision: a second deployment runs beside the first until its targets are healthy,
        // then the old targets drain and the old tasks stop; only then is the rollout complete.
        let second = register().await;
        ecs.update_service().cluster(&name).service(&name).task_definition(&second).send().await.unwrap();
        let rollout = || async {
            let d = ecs.describe_services().cluster(&name).services(&name).send().await.unwrap();
            let s = &d.services()[0];
            let primary = s.deployments().iter().find(|d| d.status() == Some("PRIMARY")).unwrap();
            let revision = primary.task_definition().unwrap_or_default().rsplit(':').next().unwrap_or_default();
            let state = primary.rollout_state().map(|r| r.as_str().to_string()).unwrap_or_default();
            format!("{} deployments, revision {revision} {state} | {}", s.deployments().len(), health().await)
        };
        let rolled = states(rollout, |s| s.starts_with("1 deployments")).await;
        assert_eq!(
            rolled,
            [
                "2 deployments, revision 2 IN_PROGRESS | healthy",
                "2 deployments, revision 2 IN_PROGRESS | healthy,initial",
                "2 deployments, revision 2 IN_PROGRESS | draining,healthy",
                "2 deployments, revision 2 IN_PROGRESS | healthy",
                "1 deployments, revision 2 COMPLETED | healthy",
            ],
            "moto switches at once and keeps one deployment of the first revision"
        );

        ecs.delete_service().cluster(&name).service(&name).force(true).send().await.unwrap();
        let refused = ecs.delete_cluster().cluster(&name).send().await.expect_err("a service is draining");
        let refused_code = refused.as_service_error().and_then(|e| aws_sdk_ecs::error::ProvideErrorMetadata::code(e));
        assert_eq!(refused_code, Some("ClusterContainsServicesException"), "{refused:?}");
        let drained = states(health, str::is_empty).await;
        assert_eq!(drained, ["draining", ""], "its target drains for the group's delay, then leaves");
        let stopped = states(service, |s| s.starts_with("INACTIVE")).await;
        assert!(stopped[0].starts_with("DRAINING"), "DRAINING until its tasks stopped: {stopped:?}");
        // The stopped tasks' network interfaces linger, and hold their security group.
        released(|| async { ec2.delete_security_group().group_id(&group).send().await.err().and_then(|e| code(&e)) })
            .await;
        ecs.delete_cluster().cluster(&name).send().await.expect("deletable once its service is inactive");
    });
}

#[test]
fn a_new_bucket_and_a_new_instance_profile_are_not_usable_at_once() {
    // 5 simulated seconds a second: a bucket propagates within 0.4 s, an instance profile in 2 s.
    let layer = Layer::start(&["--time-scale", "5", "--throttle", "off"]);
    let config = without_retries(&layer);
    let name = unique("propagation");
    block_on(async {
        let s3 =
            aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&config).force_path_style(true).build());
        s3.create_bucket()
            .bucket(&name)
            .create_bucket_configuration(
                aws_sdk_s3::types::CreateBucketConfiguration::builder()
                    .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::EuWest3)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let versioning = aws_sdk_s3::types::VersioningConfiguration::builder()
            .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
            .build();
        let configure = || s3.put_bucket_versioning().bucket(&name).versioning_configuration(versioning.clone()).send();
        let early = configure().await.expect_err("the bucket has not propagated yet");
        let early_code = early.as_service_error().and_then(|e| aws_sdk_s3::error::ProvideErrorMetadata::code(e));
        assert_eq!(early_code, Some("NoSuchBucket"), "{early:?}");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        configure().await.expect("usable once propagated");

        // The image is looked up first: moto may take seconds to list its images
        // the first time, and the profile's window is 2 s.
        let ec2 = aws_sdk_ec2::Client::new(&config);
        let images = ec2.describe_images().owners("amazon").send().await.unwrap();
        let image = images.images()[0].image_id().unwrap().to_string();
        let iam = aws_sdk_iam::Client::new(&config);
        iam.create_instance_profile().instance_profile_name(&name).send().await.unwrap();
        let profile = aws_sdk_ec2::types::IamInstanceProfileSpecification::builder().name(&name).build();
        let launch = || {
            ec2.run_instances().image_id(&image).min_count(1).max_count(1).iam_instance_profile(profile.clone()).send()
        };
        let refused = launch().await.expect_err("EC2 does not know the new profile yet");
        assert_eq!(refused.as_service_error().and_then(code).as_deref(), Some("InvalidParameterValue"), "{refused:?}");
        assert!(format!("{refused:?}").contains("Invalid IAM Instance Profile name"), "{refused:?}");
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        let launched = launch().await.expect("known once propagated");
        let instance = launched.instances()[0].instance_id().unwrap().to_string();
        ec2.terminate_instances().instance_ids(instance).send().await.unwrap();
    });
}

#[test]
fn a_nat_gateway_in_a_vpc_without_an_internet_gateway_fails_with_aws_s_reason() {
    let layer = Layer::start(&["--time-scale", "600", "--throttle", "off"]);
    let config = layer.sdk();
    block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&config);
        let (vpc, subnets) = network(&ec2).await;
        let made = a_nat_gateway(&ec2, &subnets[0]).await;
        assert_eq!(made.state().map(|s| s.as_str()), Some("pending"), "accepted first, as AWS does");
        let found = ec2.describe_nat_gateways().nat_gateway_ids(made.nat_gateway_id().unwrap()).send().await.unwrap();
        let nat = &found.nat_gateways()[0];
        assert_eq!(nat.state().map(|s| s.as_str()), Some("failed"), "moto makes it available");
        assert_eq!(nat.failure_code(), Some("Gateway.NotAttached"));
        assert_eq!(nat.failure_message(), Some(format!("Network {vpc} has no Internet gateway attached").as_str()));
    });
}

#[test]
fn a_secret_deleted_without_recovery_keeps_its_name_for_a_few_seconds() {
    // 5 simulated seconds a second: the name is free again after 2 s.
    let layer = Layer::start(&["--time-scale", "5", "--throttle", "off"]);
    let config = without_retries(&layer);
    let name = unique("held-secret");
    block_on(async {
        let sm = aws_sdk_secretsmanager::Client::new(&config);
        let create = || sm.create_secret().name(&name).secret_string("not-a-real-one").send();
        create().await.unwrap();
        sm.delete_secret().secret_id(&name).force_delete_without_recovery(true).send().await.unwrap();
        let refused = create().await.expect_err("the name is still held by the deletion");
        let refused_code =
            refused.as_service_error().and_then(|e| aws_sdk_secretsmanager::error::ProvideErrorMetadata::code(e));
        assert_eq!(refused_code, Some("InvalidRequestException"), "{refused:?}");
        assert!(format!("{refused:?}").contains("already scheduled for deletion"), "{refused:?}");
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        create().await.expect("free once the deletion is done");
        sm.delete_secret().secret_id(&name).force_delete_without_recovery(true).send().await.unwrap();
    });
}

#[test]
fn a_bucket_created_with_tags_in_its_configuration_has_them_at_once() {
    let layer = Layer::start(&["--profile", "instant"]);
    let config = layer.sdk();
    let name = unique("tagged");
    block_on(async {
        let s3 =
            aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&config).force_path_style(true).build());
        let tag = aws_sdk_s3::types::Tag::builder().key("ca-a2a-flow:stack").value("tagged").build().unwrap();
        s3.create_bucket()
            .bucket(&name)
            .create_bucket_configuration(
                aws_sdk_s3::types::CreateBucketConfiguration::builder()
                    .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::EuWest3)
                    .tags(tag)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let tags = s3.get_bucket_tagging().bucket(&name).send().await.expect("moto alone has no tag set here");
        let tags: Vec<(&str, &str)> = tags.tag_set().iter().map(|t| (t.key(), t.value())).collect();
        assert_eq!(tags, [("ca-a2a-flow:stack", "tagged")]);
        s3.delete_bucket().bucket(&name).send().await.unwrap();
    });
}

/// The layer's SDK config, as another account of moto's: an assumed role's keys name it.
fn another_account(layer: &Layer) -> aws_config::SdkConfig {
    let account = format!("{:012}", fastrand::u64(100_000_000_000..999_999_999_999));
    let sts = aws_sdk_sts::Client::new(&layer.sdk());
    let role = format!("arn:aws:iam::{account}:role/behaviours");
    let assumed = block_on(sts.assume_role().role_arn(role).role_session_name("behaviours").send()).unwrap();
    let keys = assumed.credentials().unwrap();
    let credentials = aws_sdk_ecs::config::Credentials::new(
        keys.access_key_id(),
        keys.secret_access_key(),
        Some(keys.session_token().to_string()),
        None,
        "another-account",
    );
    let loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).endpoint_url(&layer.url);
    block_on(loader.credentials_provider(credentials).load())
}

#[test]
fn on_an_account_new_to_ecs_a_service_waits_for_the_role_its_first_cluster_made() {
    // 5 simulated seconds a second: ECS can use its new role 2 s after the first cluster.
    let layer = Layer::start(&["--time-scale", "5", "--throttle", "off"]);
    let config = another_account(&layer);
    let name = unique("first-cluster");
    block_on(async {
        let iam = aws_sdk_iam::Client::new(&config);
        assert!(iam.get_role().role_name("AWSServiceRoleForECS").send().await.is_err(), "a new account has no role");
        let ecs = aws_sdk_ecs::Client::new(&config);
        ecs.create_cluster().cluster_name(&name).send().await.unwrap();
        let role = iam.get_role().role_name("AWSServiceRoleForECS").send().await.expect("its first cluster made it");
        assert_eq!(role.role().unwrap().path(), "/aws-service-role/ecs.amazonaws.com/");
        let container =
            aws_sdk_ecs::types::ContainerDefinition::builder().name("app").image("app:1").memory(512).build();
        let task = ecs.register_task_definition().family(&name).container_definitions(container).send().await;
        let task = task.unwrap().task_definition().unwrap().task_definition_arn().unwrap().to_string();
        let create =
            || ecs.create_service().cluster(&name).service_name(&name).task_definition(&task).desired_count(0).send();
        let refused = create().await.expect_err("ECS cannot use its new role yet");
        let refused_code = refused.as_service_error().and_then(|e| aws_sdk_ecs::error::ProvideErrorMetadata::code(e));
        assert_eq!(refused_code, Some("InvalidParameterException"), "{refused:?}");
        assert!(format!("{refused:?}").contains("Unable to assume the service linked role"), "{refused:?}");
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        create().await.expect("usable once propagated");
        ecs.delete_service().cluster(&name).service(&name).send().await.unwrap();
    });
}

#[test]
fn tasks_whose_role_was_just_made_start_once_ecs_can_assume_it() {
    // 2 simulated seconds a second: ECS can assume the new role 5 s after it was made. The report
    // says when each service's tasks run, as soon as the service is made.
    let report = std::env::temp_dir().join(format!("{}.json", unique("aws-sim-roles")));
    let layer = Layer::start(&["--time-scale", "2", "--throttle", "off", "--report", report.to_str().unwrap()]);
    let config = layer.sdk();
    let name = unique("new-role");
    block_on(async {
        let iam = aws_sdk_iam::Client::new(&config);
        let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ecs-tasks.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
        let role = iam.create_role().role_name(&name).assume_role_policy_document(trust).send().await.unwrap();
        let role = role.role().unwrap().arn().to_string();
        let ecs = aws_sdk_ecs::Client::new(&config);
        ecs.create_cluster().cluster_name(&name).send().await.unwrap();
        for (service, execution_role) in [("with-new-role", Some(role)), ("without-role", None)] {
            let container =
                aws_sdk_ecs::types::ContainerDefinition::builder().name("app").image("app:1").memory(512).build();
            let task = ecs
                .register_task_definition()
                .family(format!("{name}-{service}"))
                .set_execution_role_arn(execution_role)
                .container_definitions(container)
                .send()
                .await
                .unwrap();
            let task = task.task_definition().unwrap().task_definition_arn().unwrap().to_string();
            ecs.create_service()
                .cluster(&name)
                .service_name(service)
                .task_definition(&task)
                .desired_count(1)
                .send()
                .await
                .unwrap();
        }
    });
    let doc = layer.stop(&report);
    let _ = std::fs::remove_file(&report);
    let took = |service: &str| {
        let r = doc["resources"].as_array().unwrap().iter().find(|r| {
            r["kind"] == "ecs_service" && r["id"].as_str().is_some_and(|id| id.ends_with(&format!("/{service}")))
        });
        let r = r.unwrap_or_else(|| panic!("no {service} in {doc}"));
        r["usable_at_s"].as_f64().unwrap() - r["created_at_s"].as_f64().unwrap()
    };
    assert!(took("with-new-role") > 61.0, "a task start after the role propagated: {doc}");
    assert!((took("without-role") - 60.0).abs() < 1e-6, "a task start after its creation: {doc}");
}

#[test]
fn a_secret_read_without_a_version_answers_the_one_labelled_current_after_a_staged_rotation() {
    let layer = Layer::start(&["--profile", "instant"]);
    let sm = aws_sdk_secretsmanager::Client::new(&layer.sdk());
    let name = unique("staged");
    block_on(async {
        sm.create_secret().name(&name).secret_string("old").send().await.unwrap();
        let pending = sm.put_secret_value().secret_id(&name).secret_string("new").version_stages("AWSPENDING").send();
        let pending = pending.await.unwrap().version_id().unwrap().to_string();
        assert_eq!(sm.get_secret_value().secret_id(&name).send().await.unwrap().secret_string(), Some("old"));
        let described = sm.describe_secret().secret_id(&name).send().await.unwrap();
        let current = described
            .version_ids_to_stages()
            .unwrap()
            .iter()
            .find(|(_, stages)| stages.iter().any(|s| s == "AWSCURRENT"))
            .map(|(v, _)| v.clone())
            .unwrap();
        sm.update_secret_version_stage()
            .secret_id(&name)
            .version_stage("AWSCURRENT")
            .move_to_version_id(&pending)
            .remove_from_version_id(current)
            .send()
            .await
            .unwrap();
        let read = sm.get_secret_value().secret_id(&name).send().await.unwrap();
        assert_eq!(read.secret_string(), Some("new"), "moto alone still answers the old value");
        assert_eq!(read.version_id(), Some(pending.as_str()));
    });
}

#[test]
fn a_web_acl_is_not_deleted_while_a_load_balancer_is_associated_with_it() {
    use aws_sdk_wafv2::types::{AllowAction, DefaultAction, Scope, VisibilityConfig};
    let layer = Layer::start(&["--profile", "instant"]);
    let config = layer.sdk();
    block_on(async {
        let waf = aws_sdk_wafv2::Client::new(&config);
        let (_, lb) = a_load_balancer(&config, "waf").await;
        let name = unique("acl");
        let visibility = VisibilityConfig::builder()
            .sampled_requests_enabled(false)
            .cloud_watch_metrics_enabled(false)
            .metric_name(&name)
            .build()
            .unwrap();
        let made = waf
            .create_web_acl()
            .name(&name)
            .scope(Scope::Regional)
            .default_action(DefaultAction::builder().allow(AllowAction::builder().build()).build())
            .visibility_config(visibility)
            .send()
            .await
            .unwrap();
        let summary = made.summary().unwrap();
        let (id, arn) = (summary.id().unwrap().to_string(), summary.arn().unwrap().to_string());
        waf.associate_web_acl().web_acl_arn(&arn).resource_arn(&lb).send().await.unwrap();
        let delete = || async {
            let got = waf.get_web_acl().name(&name).scope(Scope::Regional).id(&id).send().await.unwrap();
            let token = got.lock_token().unwrap().to_string();
            waf.delete_web_acl().name(&name).scope(Scope::Regional).id(&id).lock_token(token).send().await
        };

        let refused = delete().await.expect_err("the load balancer still uses it");
        assert_eq!(code(&refused).as_deref(), Some("WAFAssociatedItemException"), "{refused:?}");
        assert!(format!("{refused:?}").contains(&lb), "names what holds it: {refused:?}");

        waf.disassociate_web_acl().resource_arn(&lb).send().await.unwrap();
        delete().await.expect("deleted once nothing is associated");
    });
}

#[test]
fn a_certificate_validated_by_dns_is_pending_until_its_record_is_in_a_hosted_zone() {
    use aws_sdk_route53::types::{Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType};
    let layer = Layer::start(&["--time-scale", "600"]);
    let config = layer.sdk();
    block_on(async {
        let acm = aws_sdk_acm::Client::new(&config);
        let r53 = aws_sdk_route53::Client::new(&config);
        let domain = format!("{}.example.com", unique("cert"));
        let asked = acm
            .request_certificate()
            .domain_name(&domain)
            .validation_method(aws_sdk_acm::types::ValidationMethod::Dns)
            .send()
            .await
            .unwrap();
        let arn = asked.certificate_arn().unwrap().to_string();
        let describe = || async {
            let d = acm.describe_certificate().certificate_arn(&arn).send().await.unwrap();
            d.certificate().cloned().unwrap()
        };
        let pending = describe().await;
        assert_eq!(pending.status().map(|s| s.as_str()), Some("PENDING_VALIDATION"), "no record anywhere yet");
        let record = pending.domain_validation_options()[0].resource_record().cloned().expect("ACM names its record");

        let zone = r53.create_hosted_zone().name(&domain).caller_reference(&domain).send().await.unwrap();
        let zone = zone.hosted_zone().unwrap().id().to_string();
        let value = ResourceRecord::builder().value(record.value()).build().unwrap();
        let set = ResourceRecordSet::builder()
            .name(record.name())
            .r#type(RrType::Cname)
            .ttl(300)
            .resource_records(value)
            .build()
            .unwrap();
        let change = Change::builder().action(ChangeAction::Upsert).resource_record_set(set).build().unwrap();
        let batch = ChangeBatch::builder().changes(change).build().unwrap();
        r53.change_resource_record_sets().hosted_zone_id(&zone).change_batch(batch).send().await.unwrap();

        let issued = describe().await;
        assert_eq!(issued.status().map(|s| s.as_str()), Some("ISSUED"), "issued once its record is there");
    });
}

#[test]
fn a_certificate_is_not_deleted_while_a_listener_serves_it_and_says_which_load_balancer_uses_it() {
    use aws_sdk_elasticloadbalancingv2::types::{Action, ActionTypeEnum, Certificate, ProtocolEnum};
    let layer = Layer::start(&["--profile", "instant"]);
    let config = layer.sdk();
    block_on(async {
        let elb = aws_sdk_elasticloadbalancingv2::Client::new(&config);
        let acm = aws_sdk_acm::Client::new(&config);
        let (vpc, lb) = a_load_balancer(&config, "tls").await;
        let tg = elb
            .create_target_group()
            .name(unique("tls"))
            .protocol(ProtocolEnum::Http)
            .port(80)
            .vpc_id(&vpc)
            .send()
            .await
            .unwrap();
        let tg = tg.target_groups()[0].target_group_arn().unwrap().to_string();
        let domain = format!("{}.example.com", unique("used"));
        let asked = acm.request_certificate().domain_name(&domain).send().await.unwrap();
        let cert = asked.certificate_arn().unwrap().to_string();
        let listener = elb
            .create_listener()
            .load_balancer_arn(&lb)
            .protocol(ProtocolEnum::Https)
            .port(443)
            .certificates(Certificate::builder().certificate_arn(&cert).build())
            .default_actions(Action::builder().r#type(ActionTypeEnum::Forward).target_group_arn(&tg).build())
            .send()
            .await
            .unwrap();
        let listener = listener.listeners()[0].listener_arn().unwrap().to_string();

        let described = acm.describe_certificate().certificate_arn(&cert).send().await.unwrap();
        assert_eq!(described.certificate().unwrap().in_use_by(), [lb.clone()], "the load balancer, as AWS names it");
        let refused = acm.delete_certificate().certificate_arn(&cert).send().await.expect_err("a listener serves it");
        assert_eq!(code(&refused).as_deref(), Some("ResourceInUseException"), "{refused:?}");
        assert!(format!("{refused:?}").contains(&lb), "names what uses it: {refused:?}");

        elb.delete_listener().listener_arn(&listener).send().await.unwrap();
        let described = acm.describe_certificate().certificate_arn(&cert).send().await.unwrap();
        assert!(described.certificate().unwrap().in_use_by().is_empty(), "moto alone still names the listener");
        acm.delete_certificate().certificate_arn(&cert).send().await.expect("deleted once no listener serves it");
    });
}

#[test]
fn deleting_an_ecs_service_deregisters_its_scalable_target() {
    use aws_sdk_applicationautoscaling::types::{ScalableDimension, ServiceNamespace};
    let layer = Layer::start(&["--profile", "instant"]);
    let config = layer.sdk();
    let name = unique("scaled");
    block_on(async {
        let ecs = aws_sdk_ecs::Client::new(&config);
        let aas = aws_sdk_applicationautoscaling::Client::new(&config);
        ecs.create_cluster().cluster_name(&name).send().await.unwrap();
        let container =
            aws_sdk_ecs::types::ContainerDefinition::builder().name("app").image("app:1").memory(512).build();
        let task = ecs.register_task_definition().family(&name).container_definitions(container).send().await;
        let task = task.unwrap().task_definition().unwrap().task_definition_arn().unwrap().to_string();
        let service = ecs.create_service().cluster(&name).service_name(&name).task_definition(&task).send().await;
        let service = service.unwrap().service().unwrap().service_arn().unwrap().to_string();
        let resource = format!("service/{name}/{name}");
        aas.register_scalable_target()
            .service_namespace(ServiceNamespace::Ecs)
            .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
            .resource_id(&resource)
            .min_capacity(1)
            .max_capacity(5)
            .send()
            .await
            .unwrap();
        let targets = || async {
            let found = aas
                .describe_scalable_targets()
                .service_namespace(ServiceNamespace::Ecs)
                .resource_ids(&resource)
                .send()
                .await
                .unwrap();
            found.scalable_targets().len()
        };
        assert_eq!(targets().await, 1);

        ecs.delete_service().cluster(&name).service(&service).force(true).send().await.unwrap();
        assert_eq!(targets().await, 0, "the target went with its service (moto alone keeps it)");
    });
}

#[test]
fn a_security_group_another_groups_rule_lets_in_is_not_deleted_until_that_rule_is_gone() {
    use aws_sdk_ec2::types::{IpPermission, UserIdGroupPair};
    let layer = Layer::start(&["--profile", "instant"]);
    let config = layer.sdk();
    block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&config);
        let (vpc, _) = network(&ec2).await;
        let group = |name: &'static str| {
            let ec2 = ec2.clone();
            let vpc = vpc.clone();
            async move {
                let made = ec2.create_security_group().group_name(unique(name)).description(name).vpc_id(&vpc);
                made.send().await.unwrap().group_id().unwrap().to_string()
            }
        };
        let (app, database) = (group("app").await, group("database").await);
        let from_app = IpPermission::builder()
            .ip_protocol("tcp")
            .from_port(5432)
            .to_port(5432)
            .user_id_group_pairs(UserIdGroupPair::builder().group_id(&app).build())
            .build();
        seen(|| ec2.describe_security_groups().group_ids(&app).group_ids(&database).send()).await;
        let allow = ec2.authorize_security_group_ingress().group_id(&database).ip_permissions(from_app.clone());
        allow.send().await.unwrap();

        let refused =
            ec2.delete_security_group().group_id(&app).send().await.expect_err("the database's rule names it");
        assert_eq!(code(&refused).as_deref(), Some("DependencyViolation"), "{refused:?}");
        assert!(format!("{refused:?}").contains(&format!("resource {app} has a dependent object")), "{refused:?}");

        let revoke = ec2.revoke_security_group_ingress().group_id(&database).ip_permissions(from_app);
        revoke.send().await.unwrap();
        ec2.delete_security_group().group_id(&app).send().await.expect("deleted once no rule names it");
        ec2.delete_security_group().group_id(&database).send().await.unwrap();
    });
}
