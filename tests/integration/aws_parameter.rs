//! `aws.ssm.parameter` against moto, through aws-sim: created with its
//! ownership tags, adopted, updated in place, never written over when it is not
//! the stack's, removed by `destroy`, and found by `gc` once forgotten.

use crate::support::aws::{behind_aws_sim, destroy, one_aws_step, sdk, unique_stack};
use crate::support::{Env, Out, block_on};

/// Runs a one-step workflow that keeps `/<stack>/alb-dns` at `value`.
fn keep(env: &Env, stack: &str, value: &str) -> Out {
    let wf = one_aws_step(env, "address", "aws.ssm.parameter", &[("name", "alb-dns"), ("value", value)]);
    env.run(&["run", wf.to_str().unwrap(), "--input", &format!("stack={stack}")])
}

/// The parameter's value and its `ca-a2a-flow:stack` tag, if it exists.
fn stored(name: &str) -> Option<(String, Option<String>)> {
    let ssm = aws_sdk_ssm::Client::new(&sdk());
    block_on(async {
        let got = ssm.get_parameter().name(name).send().await.ok()?;
        let value = got.parameter()?.value()?.to_string();
        let tags = ssm
            .list_tags_for_resource()
            .resource_type(aws_sdk_ssm::types::ResourceTypeForTagging::Parameter)
            .resource_id(name)
            .send()
            .await
            .unwrap();
        let stack = tags.tag_list().iter().find(|t| t.key() == "ca-a2a-flow:stack").map(|t| t.value().to_string());
        Some((value, stack))
    })
}

fn action(env: &Env) -> serde_json::Value {
    env.step(&env.runs()[0].id, "address").outputs.unwrap()["action"].clone()
}

#[test]
fn a_parameter_is_created_with_its_tags_adopted_updated_and_destroyed() {
    behind_aws_sim();
    let env = Env::sqlite();
    let stack = unique_stack("param");
    let name = format!("/{stack}/alb-dns");
    keep(&env, &stack, "first.example").expect_success();
    assert_eq!(action(&env), "created");
    assert_eq!(stored(&name), Some(("first.example".into(), Some(stack.clone()))));
    let first = env.only_run().id;

    keep(&env, &stack, "first.example").expect_success();
    assert_eq!(action(&env), "adopted");
    keep(&env, &stack, "second.example").expect_success();
    assert_eq!(action(&env), "updated");
    assert_eq!(stored(&name), Some(("second.example".into(), Some(stack.clone()))), "its tags are kept");

    destroy(&env, &first, &[], &[]).expect_success();
    assert_eq!(stored(&name), None);
}

#[test]
fn a_parameter_the_stack_does_not_own_is_refused_and_left_as_it_was() {
    behind_aws_sim();
    let stack = unique_stack("notours");
    let name = format!("/{stack}/alb-dns");
    let ssm = aws_sdk_ssm::Client::new(&sdk());
    block_on(ssm.put_parameter().name(&name).value("theirs").r#type(aws_sdk_ssm::types::ParameterType::String).send())
        .expect("moto stores the parameter");
    let env = Env::sqlite();
    let out = keep(&env, &stack, "ours");
    out.expect_code(1);
    assert!(out.stderr.contains("exists without ca-a2a-flow's ownership tags"), "{}", out.stderr);
    assert_eq!(stored(&name), Some(("theirs".into(), None)), "never written over");
}

#[test]
fn gc_finds_a_forgotten_parameter_and_deletes_it() {
    behind_aws_sim();
    let stack = unique_stack("lostparam");
    keep(&Env::sqlite(), &stack, "lost.example").expect_success(); // a state file then lost
    let env = Env::sqlite();
    let listed = env.run(&["gc", "--stack", &stack, "--region", "eu-west-3", "--output", "json"]);
    listed.expect_success();
    let doc = listed.json();
    let kinds: Vec<&str> = doc.as_array().unwrap().iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["aws.ssm.parameter"], "exactly the forgotten parameter");
    env.run(&["gc", "--stack", &stack, "--region", "eu-west-3", "--delete", "--yes"]).expect_success();
    assert_eq!(stored(&format!("/{stack}/alb-dns")), None);
}
