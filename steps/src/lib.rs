//! Step kinds for ca-a2a-flow, one file each. Adding a kind: write
//! `src/<kind>.rs` (AWS kinds: `src/aws/<service>_<resource>.rs`) implementing
//! [`ca_a2a_flow_engine::Step`], then add one line to [`registry`].

pub mod aws;
pub mod image_build_push;
pub mod noop;
pub mod process;
pub mod shell;
pub mod sleep;
pub mod wait_http;

use ca_a2a_flow_engine::Registry;

/// Every step kind this build knows.
pub fn registry() -> Registry {
    Registry::new()
        .register(aws::ec2_elastic_ip::ElasticIp)
        .register(aws::ec2_instance::Ec2Instance)
        .register(aws::ec2_internet_gateway::InternetGateway)
        .register(aws::ec2_nat_gateway::NatGatewayKind)
        .register(aws::ec2_route_table::RouteTable)
        .register(aws::ec2_security_group::SecurityGroup)
        .register(aws::ec2_subnet::Subnet)
        .register(aws::ec2_subnet_lookup::SubnetLookup)
        .register(aws::ec2_vpc::Vpc)
        .register(aws::ecr_repository::Repository)
        .register(aws::ecs_cluster::Cluster)
        .register(aws::ecs_rollout::Rollout)
        .register(aws::ecs_service::EcsService)
        .register(aws::ecs_task_definition::TaskDefinition)
        .register(aws::elbv2_listener::Listener)
        .register(aws::elbv2_listener_rule::ListenerRule)
        .register(aws::elbv2_load_balancer::LoadBalancer)
        .register(aws::elbv2_target_group::TargetGroupKind)
        .register(aws::elbv2_wait_healthy::WaitHealthy)
        .register(aws::iam_role::Role)
        .register(aws::logs_log_group::LogGroup)
        .register(aws::rds_db_instance::DbInstance)
        .register(aws::rds_db_subnet_group::DbSubnetGroup)
        .register(aws::s3_bucket::Bucket)
        .register(aws::secretsmanager_secret::SecretKind)
        .register(aws::ssm_run_command::RunCommand)
        .register(aws::sts_caller_identity::CallerIdentity)
        .register(image_build_push::BuildPush)
        .register(noop::Noop)
        .register(shell::Shell)
        .register(sleep::Sleep)
        .register(wait_http::WaitHttp)
        .check(aws::checks::target_groups_are_reached)
        .check(aws::checks::one_vpc_per_resource)
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
                    doc.params.iter().any(|(p, _, _)| p == key),
                    "{name}: example parameter `{key}` is not documented"
                );
            }
            checked += 1;
        }
        assert!(checked >= 30, "only {checked} kinds");
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
            ["aws.ecr.repository", "aws.rds.db_instance", "aws.s3.bucket", "aws.secretsmanager.secret"]
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
