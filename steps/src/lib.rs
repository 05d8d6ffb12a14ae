//! Step kinds for ca-a2a-flow, one file each. Adding a kind: write
//! `src/<kind>.rs` (AWS kinds: `src/aws/<service>_<resource>.rs`) implementing
//! [`ca_a2a_flow_engine::Step`] (and, for an AWS kind, [`aws::facts::Facts`]:
//! its cost, its leftovers), then add one line to [`kinds`].

pub mod aws;
pub mod image_build_push;
pub mod noop;
pub mod process;
pub mod shell;
pub mod sleep;
pub mod wait_http;

use std::sync::{Arc, LazyLock};

use aws::facts::{Facts, FactsOf, KindFacts};
use ca_a2a_flow_engine::{Registry, Step};

/// Every step kind this build knows, one line each.
fn kinds() -> Kinds {
    Kinds::default()
        .aws(aws::acm_certificate::Certificate)
        .aws(aws::appautoscaling_ecs_service::EcsScaling)
        .aws(aws::cloudwatch_alarm::Alarm)
        .aws(aws::ec2_elastic_ip::ElasticIp)
        .aws(aws::ec2_instance::Ec2Instance)
        .aws(aws::ec2_internet_gateway::InternetGateway)
        .aws(aws::ec2_nat_gateway::NatGateway)
        .aws(aws::ec2_route_table::RouteTable)
        .aws(aws::ec2_security_group::SecurityGroup)
        .aws(aws::ec2_security_group_ingress::SecurityGroupIngress)
        .aws(aws::ec2_subnet::Subnet)
        .aws(aws::ec2_subnet_lookup::SubnetLookup)
        .aws(aws::ec2_vpc::Vpc)
        .aws(aws::ecr_repository::Repository)
        .aws(aws::ecs_cluster::Cluster)
        .aws(aws::ecs_rollout::Rollout)
        .aws(aws::ecs_service::EcsService)
        .aws(aws::ecs_service_network::ServiceNetwork)
        .aws(aws::ecs_task_definition::TaskDefinition)
        .aws(aws::elbv2_listener::Listener)
        .aws(aws::elbv2_listener_rule::ListenerRule)
        .aws(aws::elbv2_load_balancer::LoadBalancer)
        .aws(aws::elbv2_target_group::TargetGroup)
        .aws(aws::elbv2_wait_healthy::WaitHealthy)
        .aws(aws::iam_role::Role)
        .aws(aws::logs_log_group::LogGroup)
        .aws(aws::rds_db_instance::DbInstance)
        .aws(aws::rds_db_snapshot::DbSnapshot)
        .aws(aws::rds_db_subnet_group::DbSubnetGroup)
        .aws(aws::rds_restore_drill::RestoreDrill)
        .aws(aws::s3_bucket::Bucket)
        .aws(aws::s3_object::S3Object)
        .aws(aws::secretsmanager_secret::Secret)
        .aws(aws::sns_topic::Topic)
        .aws(aws::ssm_parameter::SsmParameter)
        .aws(aws::ssm_run_command::RunCommand)
        .aws(aws::sts_caller_identity::CallerIdentity)
        .aws(aws::wafv2_web_acl::WebAclStep)
        .other(image_build_push::BuildPush)
        .other(noop::Noop)
        .other(shell::Shell)
        .other(sleep::Sleep)
        .other(wait_http::WaitHttp)
}

/// The engine's registry of kinds, and the facts of the AWS ones.
struct Kinds {
    registry: Registry,
    facts: Vec<Arc<dyn KindFacts>>,
}

impl Default for Kinds {
    fn default() -> Self {
        Self { registry: Registry::new(), facts: Vec::new() }
    }
}

impl Kinds {
    fn aws<K: Facts>(mut self, kind: K) -> Self {
        self.facts.push(Arc::new(FactsOf::<K>::new()));
        self.other(kind)
    }

    fn other<K: Step>(mut self, kind: K) -> Self {
        self.registry = self.registry.register(kind);
        self
    }
}

/// Every step kind this build knows, with the checks that span steps.
pub fn registry() -> Registry {
    kinds().registry.rule(aws::rules::target_groups_are_reached).rule(aws::rules::one_vpc_per_resource)
}

static FACTS: LazyLock<Vec<Arc<dyn KindFacts>>> = LazyLock::new(|| kinds().facts);

/// The facts of every AWS kind (`cost`, `gc`).
pub fn all_facts() -> &'static [Arc<dyn KindFacts>] {
    &FACTS
}

/// The facts of the AWS kind named `kind`.
pub fn facts(kind: &str) -> Option<&'static Arc<dyn KindFacts>> {
    FACTS.iter().find(|f| f.kind() == kind)
}

#[cfg(test)]
mod tests {
    use ca_a2a_flow_engine::yaml::{self, Value};

    /// What `ca-a2a-flow steps describe KIND` shows as the example must be a
    /// step a user can paste: of that kind, with parameters the kind accepts,
    /// each of them documented.
    #[test]
    fn every_kind_documents_an_example_it_accepts() {
        let registry = super::registry();
        let mut checked = 0;
        for name in registry.names() {
            let kind = registry.get(name).unwrap();
            let doc = kind.doc();
            let parsed = yaml::parse(doc.example).unwrap_or_else(|e| panic!("{name}: example is not YAML: {e:?}"));
            let Value::Seq(steps) = &parsed.value else { panic!("{name}: the example is a list of steps") };
            let step = steps.iter().find(|s| s.get("uses").and_then(|u| u.as_str()) == Some(name));
            let step = step.unwrap_or_else(|| panic!("{name}: the example has no step of this kind"));
            let with = step.get("with").map(|w| w.to_json()).unwrap_or_else(|| serde_json::json!({}));
            let problems = kind.validate(&with);
            assert!(problems.is_empty(), "{name}: its example is refused: {problems:?}");
            for key in with.as_object().map(|m| m.keys().collect::<Vec<_>>()).unwrap_or_default() {
                assert!(
                    kind.params().iter().any(|(p, _, _)| p == key),
                    "{name}: example parameter `{key}` is not documented"
                );
            }
            checked += 1;
        }
        assert!(checked >= 30, "only {checked} kinds");
    }

    /// `steps describe` lists a kind's parameters, and `defaults.with` gives a
    /// step only those: the list must be exactly the fields the kind accepts.
    #[test]
    fn every_kind_documents_exactly_the_parameters_it_accepts() {
        let registry = super::registry();
        for name in registry.names() {
            let kind = registry.get(name).unwrap();
            let problems = kind.validate(&serde_json::json!({ "not_a_parameter": 0 }));
            let said = problems.iter().map(|p| p.message.as_str()).find(|m| m.contains("unknown field"));
            let said = said.unwrap_or_else(|| panic!("{name}: an unknown parameter is not refused: {problems:?}"));
            let mut accepted: Vec<&str> = said.split('`').skip(3).step_by(2).collect();
            let mut documented: Vec<&str> = kind.params().iter().map(|(p, _, _)| *p).collect();
            accepted.sort();
            documented.sort();
            assert_eq!(documented, accepted, "{name}: documented parameters (left) differ from accepted ones");
        }
    }

    /// `cost` and `gc` ask an AWS kind through its facts: one registered
    /// without them would be priced at nothing and its leftovers never found.
    #[test]
    fn every_aws_kind_is_registered_with_its_facts() {
        let registry = super::registry();
        let aws: Vec<&str> = registry.names().filter(|n| n.starts_with("aws.")).collect();
        let without: Vec<&&str> = aws.iter().filter(|n| super::facts(n).is_none()).collect();
        assert!(without.is_empty(), "registered without facts: {without:?}");
        assert_eq!(super::all_facts().len(), aws.len());
    }

    /// A slow kind's deadline comes with it: the stack files need not repeat it.
    #[test]
    fn a_kind_that_waits_long_brings_its_deadline_unless_the_step_sets_one() {
        use std::time::Duration;
        let minutes = |m: u64| Duration::from_secs(m * 60);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("db.yaml");
        std::fs::write(
            &file,
            r#"name: db
defaults: { timeout: 10m, attempt_timeout: 2m }
steps:
  - id: db
    uses: aws.rds.db_instance
    with: { stack: s, db_subnet_group: g, security_group_ids: [sg-1], db_name: d, master_username: u }
  - id: quick-db
    uses: aws.rds.db_instance
    timeout: 5m
    with: { stack: s, db_subnet_group: g, security_group_ids: [sg-1], db_name: d, master_username: u }
  - id: other
    uses: noop
"#,
        )
        .unwrap();
        let wf = ca_a2a_flow_engine::load(&file, &super::registry()).expect("valid");
        let step = |id: &str| wf.step(id).unwrap();
        assert_eq!((step("db").timeout, step("db").attempt_timeout), (minutes(50), minutes(45)));
        assert_eq!(step("quick-db").timeout, minutes(5), "the step's own deadline wins");
        assert_eq!((step("other").timeout, step("other").attempt_timeout), (minutes(10), minutes(2)));

        let full = ca_a2a_flow_engine::load(
            std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../workflows/full.yaml")),
            &super::registry(),
        )
        .expect("full.yaml is valid");
        for (id, total, attempt) in
            [("keycloak-db", 50, 45), ("nat", 15, 12), ("mcp-server-image", 45, 40), ("orchestrator-image", 45, 40)]
        {
            let s = full.step(id).unwrap();
            assert_eq!((s.timeout, s.attempt_timeout), (minutes(total), minutes(attempt)), "{id}");
        }
    }

    #[test]
    fn destroy_keeps_data_images_secrets_and_snapshots_unless_told_and_each_kind_says_so() {
        use ca_a2a_flow_engine::DestroyOptions;
        let registry = super::registry();
        let keeping = |options: &DestroyOptions| -> Vec<&str> {
            registry.names().filter(|n| registry.get(n).unwrap().kept_on_destroy(options).is_some()).collect()
        };
        assert_eq!(
            keeping(&DestroyOptions::default()),
            [
                "aws.ecr.repository",
                "aws.rds.db_instance",
                "aws.rds.db_snapshot",
                "aws.s3.bucket",
                "aws.secretsmanager.secret"
            ]
        );
        let all = DestroyOptions {
            delete_data: true,
            delete_images: true,
            force_delete_secrets: true,
            skip_final_snapshot: true,
        };
        assert!(keeping(&all).is_empty());
        let undo = registry.get("destroy:aws.s3.bucket").expect("a destroy run's kind");
        assert!(undo.kept_on_destroy(&DestroyOptions::default()).unwrap().contains("--delete-data"));
    }
}
