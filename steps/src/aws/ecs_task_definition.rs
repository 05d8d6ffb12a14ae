//! `aws.ecs.task_definition`: a Fargate task definition for the family
//! `<stack>-<step>`. A new revision is registered only when the definition
//! changed: the latest revision carries a tag with the digest of what this step
//! registered, and an equal digest adopts it. Container secrets are given by
//! ARN (Secrets Manager, `arn:…:secret:name:json-key::`), never by value.

use std::collections::BTreeMap;

use aws_sdk_ecs::types::{
    Compatibility, ContainerDefinition, KeyValuePair, LogConfiguration, LogDriver, NetworkMode, PortMapping, Secret,
    TaskDefinitionField,
};
use ca_a2a_flow_engine::{
    DestroyOptions, KindDoc, Outputs, ParamProblem, Parameters, Plan, Step, StepContext, StepError, outputs,
};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::owner::Stack;
use super::{AwsResult, Owner};

const TAG_DIGEST: &str = "ca-a2a-flow:definition";

#[derive(Debug, Deserialize, Serialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "aws.ecs.task_definition", step = TaskDefinition)]
pub struct Params {
    #[param(doc = super::STACK)]
    pub stack: Stack,
    #[param(doc = super::REGION)]
    pub region: Option<String>,
    /// CPU units, like 256 (required)
    pub cpu: u32,
    /// MiB, like 512 (required)
    pub memory: u32,
    /// role that pulls images, reads secrets, writes logs (required)
    pub execution_role_arn: String,
    /// role of the running containers
    pub task_role_arn: Option<String>,
    /// { name, image, port, environment, secrets (name -> ARN), command, log_group } each (required)
    pub containers: Vec<Container>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Container {
    pub name: String,
    pub image: String,
    pub port: Option<u16>,
    #[serde(default)]
    /// Values may be numbers or booleans (`PORT: 8004`): ECS takes them as text.
    #[serde(deserialize_with = "scalar_strings")]
    pub environment: BTreeMap<String, String>,
    /// Variable name -> Secrets Manager ARN (optionally `:json-key::`).
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    #[serde(default)]
    pub command: Vec<String>,
    /// CloudWatch log group (awslogs driver, stream prefix = container name).
    pub log_group: Option<String>,
}

impl Step for TaskDefinition {
    async fn plan(&self, ctx: &StepContext, p: Params) -> Result<Plan, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let family = owner.name();
        let ecs = super::ecs(p.region.as_deref()).await;
        let digest = owner.client_token(&serde_json::to_string(&p).unwrap_or_default());
        let Some((found, same)) = latest(&ecs, &family, &digest).await? else { return Ok(Plan::create()) };
        if same {
            return Ok(Plan::adopt());
        }
        let mut changes = Vec::new();
        if let Some(td) = found.task_definition() {
            let (cpu, memory) = (p.cpu.to_string(), p.memory.to_string());
            if td.cpu() != Some(cpu.as_str()) {
                changes.push(format!("cpu: {} -> {cpu}", td.cpu().unwrap_or("?")));
            }
            if td.memory() != Some(memory.as_str()) {
                changes.push(format!("memory: {} -> {memory}", td.memory().unwrap_or("?")));
            }
            for c in &p.containers {
                match td.container_definitions().iter().find(|d| d.name() == Some(c.name.as_str())) {
                    None => changes.push(format!("container {}: new", c.name)),
                    Some(d) => {
                        if d.image() != Some(c.image.as_str()) {
                            changes.push(format!("{} image: {} -> {}", c.name, d.image().unwrap_or("?"), c.image));
                        }
                        for (k, v) in &c.environment {
                            let now =
                                d.environment().iter().find(|e| e.name() == Some(k.as_str())).and_then(|e| e.value());
                            if now != Some(v.as_str()) {
                                changes.push(format!("{} {k}: {} -> {v}", c.name, now.unwrap_or("unset")));
                            }
                        }
                    }
                }
            }
        }
        if changes.is_empty() {
            changes.push("the definition differs from the latest revision's".into());
        }
        let mut plan = Plan::changes(changes);
        plan.changes.insert(
            0,
            format!("register revision {} of {family}", found.task_definition().map(|t| t.revision() + 1).unwrap_or(1)),
        );
        plan.new_outputs = true;
        Ok(plan)
    }

    const DESTROYS: bool = true;

    async fn destroy(&self, ctx: &StepContext, p: Params, _o: &DestroyOptions) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let family = owner.name();
        let ecs = super::ecs(p.region.as_deref()).await;
        let mut pages = ecs
            .list_task_definitions()
            .family_prefix(&family)
            .status(aws_sdk_ecs::types::TaskDefinitionStatus::Active)
            .into_paginator()
            .send();
        let mut listed = Vec::new();
        while let Some(page) = pages.next().await {
            listed.extend(page.or_step_error("ecs:ListTaskDefinitions")?.task_definition_arns().to_vec());
        }
        let mut ids = Vec::new();
        // The prefix also matches `<family>-x`: keep this family's revisions only.
        for arn in listed.iter().filter(|a| a.contains(&format!("/{family}:"))) {
            ecs.deregister_task_definition()
                .task_definition(arn)
                .send()
                .await
                .or_absent("ecs:DeregisterTaskDefinition", &["ClientException"])?;
            ids.push(arn.clone());
        }
        Ok(super::removed(ctx, "task definition revision", &ids))
    }

    const DOC: KindDoc = KindDoc {
        summary: "A Fargate task definition (family `<stack>-<step>`); a new revision only when the definition changed.",
        outputs: &[
            ("arn", "the revision's ARN"),
            ("family", "the family"),
            ("revision", "the revision number"),
            ("action", "`registered` or `adopted` (unchanged)"),
        ],
        example: "- id: orchestrator-task\n  uses: aws.ecs.task_definition\n  with:\n    stack: \"${{ inputs.stack }}\"\n    cpu: 256\n    memory: 512\n    execution_role_arn: \"${{ steps.execution-role.outputs.arn }}\"\n    containers:\n      - { name: orchestrator, image: \"${{ steps.orchestrator-repo.outputs.uri }}:latest\", port: 8000 }\n",
    };

    fn problems(&self, p: &Params) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        let valid =
            [(256, 512..=2048), (512, 1024..=4096), (1024, 2048..=8192), (2048, 4096..=16384), (4096, 8192..=30720)];
        match valid.iter().find(|(c, _)| *c == p.cpu) {
            None => problems
                .push(ParamProblem::at(&["cpu"], format!("{}: Fargate takes 256, 512, 1024, 2048 or 4096", p.cpu))),
            Some((_, range)) if !range.contains(&p.memory) => problems.push(ParamProblem::at(
                &["memory"],
                format!(
                    "{} MiB does not go with cpu {} on Fargate ({}-{} MiB)",
                    p.memory,
                    p.cpu,
                    range.start(),
                    range.end()
                ),
            )),
            _ => {}
        }
        if p.containers.is_empty() {
            problems.push(ParamProblem::at(&["containers"], "give at least one container"));
        }
        for (i, c) in p.containers.iter().enumerate() {
            let i = i.to_string();
            for (k, v) in &c.secrets {
                if !v.contains("${{") && !v.starts_with("arn:") {
                    problems.push(ParamProblem::at(
                        &["containers", &i, "secrets", k],
                        "a secret is given by its ARN (Secrets Manager or SSM), never by value",
                    ));
                }
            }
            for (k, v) in &c.environment {
                let key = k.to_ascii_uppercase();
                if (key.contains("PASSWORD") || key.contains("SECRET")) && !v.is_empty() {
                    problems.push(ParamProblem::at(
                        &["containers", &i, "environment", k],
                        "looks like a password in plain text: move it to `secrets` (by ARN)",
                    ));
                }
            }
        }
        problems
    }

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let family = owner.name();
        let config = super::config(p.region.as_deref()).await;
        let region = config.region().map(|r| r.to_string()).unwrap_or_default();
        let ecs = aws_sdk_ecs::Client::new(&config);
        let digest = owner.client_token(&serde_json::to_string(&p).unwrap_or_default());
        if let Some((found, true)) = latest(&ecs, &family, &digest).await? {
            if let Some(td) = found.task_definition() {
                let arn = td.task_definition_arn().unwrap_or_default().to_string();
                ctx.log(format!("task definition {family}:{} is unchanged", td.revision()));
                return Ok(outputs(&arn, &family, td.revision(), "adopted"));
            }
        }
        let mut containers = Vec::new();
        for c in &p.containers {
            let mut secrets = Vec::new();
            for (name, from) in &c.secrets {
                secrets.push(
                    Secret::builder()
                        .name(name)
                        .value_from(from)
                        .build()
                        .map_err(|e| StepError::fatal(format!("secret `{name}`: {e}")))?,
                );
            }
            let logs = match &c.log_group {
                Some(group) => Some(
                    LogConfiguration::builder()
                        .log_driver(LogDriver::Awslogs)
                        .options("awslogs-group", group)
                        .options("awslogs-region", &region)
                        .options("awslogs-stream-prefix", &c.name)
                        .build()
                        .map_err(|e| StepError::fatal(format!("log configuration: {e}")))?,
                ),
                None => None,
            };
            containers.push(
                ContainerDefinition::builder()
                    .name(&c.name)
                    .image(&c.image)
                    .essential(true)
                    .set_port_mappings(
                        c.port.map(|port| vec![PortMapping::builder().container_port(i32::from(port)).build()]),
                    )
                    .set_environment(Some(
                        c.environment.iter().map(|(k, v)| KeyValuePair::builder().name(k).value(v).build()).collect(),
                    ))
                    .set_secrets(Some(secrets))
                    .set_command((!c.command.is_empty()).then(|| c.command.clone()))
                    .set_log_configuration(logs)
                    .build(),
            );
        }
        let mut tags = super::ecs_tags(&owner);
        tags.push(aws_sdk_ecs::types::Tag::builder().key(TAG_DIGEST).value(&digest).build());
        ctx.progress(format!("registering task definition {family}"));
        let registered = ecs
            .register_task_definition()
            .family(&family)
            .requires_compatibilities(Compatibility::Fargate)
            .network_mode(NetworkMode::Awsvpc)
            .cpu(p.cpu.to_string())
            .memory(p.memory.to_string())
            .execution_role_arn(&p.execution_role_arn)
            .set_task_role_arn(p.task_role_arn.clone())
            .set_container_definitions(Some(containers))
            .set_tags(Some(tags))
            .send()
            .await
            .or_step_error("ecs:RegisterTaskDefinition")?;
        let td = registered
            .task_definition()
            .ok_or_else(|| StepError::retryable("ecs:RegisterTaskDefinition answered without the revision"))?;
        let arn = td.task_definition_arn().unwrap_or_default().to_string();
        ctx.log(format!("registered task definition {family}:{}", td.revision()));
        Ok(outputs(&arn, &family, td.revision(), "registered"))
    }
}

/// The family's latest revision with its tags, and whether it is of `digest`
/// (the same definition).
async fn latest(
    ecs: &aws_sdk_ecs::Client,
    family: &str,
    digest: &str,
) -> Result<Option<(aws_sdk_ecs::operation::describe_task_definition::DescribeTaskDefinitionOutput, bool)>, StepError> {
    let found = ecs
        .describe_task_definition()
        .task_definition(family)
        .include(TaskDefinitionField::Tags)
        .send()
        .await
        .or_absent("ecs:DescribeTaskDefinition", &["ClientException"])?;
    Ok(found.map(|f| {
        let same = f.tags().iter().any(|t| t.key() == Some(TAG_DIGEST) && t.value() == Some(digest));
        (f, same)
    }))
}

fn outputs(arn: &str, family: &str, revision: i32, action: &str) -> Outputs {
    outputs! { arn, family, revision, action }
}

/// A map whose values are strings, numbers or booleans, each kept as text.
fn scalar_strings<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let raw: BTreeMap<String, Json> = serde::Deserialize::deserialize(d)?;
    raw.into_iter()
        .map(|(k, v)| match v {
            Json::String(s) => Ok((k, s)),
            Json::Number(n) => Ok((k, n.to_string())),
            Json::Bool(b) => Ok((k, b.to_string())),
            other => {
                Err(serde::de::Error::custom(format!("`{k}`: expected text, a number or a boolean, found {other}")))
            }
        })
        .collect()
}

impl super::facts::Facts for TaskDefinition {}
