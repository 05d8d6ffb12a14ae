//! ECS runs tasks and load balancers check them; moto does neither (its
//! services run at once, and no target ever registers). The layer gives each
//! service it saw created the life AWS gives it, in simulated seconds:
//! - its tasks start: `runningCount` 0 (pending) for [`TASK_START`] after
//!   CreateService, the deployment `IN_PROGRESS`;
//! - once they run, each registers in the service's target groups, `initial`
//!   until the group's health check has passed `HealthyThresholdCount` times
//!   (interval × threshold), then `healthy`;
//! - an UpdateService to another revision (or `forceNewDeployment`) is a
//!   rollout: a second deployment, PRIMARY and `IN_PROGRESS`, whose tasks
//!   start and register as a new service's do, while the old deployment
//!   (ACTIVE) keeps running; once the new targets are healthy the old ones
//!   drain and its tasks stop, and only then is the deployment `COMPLETED`
//!   with one deployment left (moto switches the revision at once and keeps
//!   its first deployment, revision included);
//! - once the service is deleted, its targets are `draining` for the group's
//!   deregistration delay (`deregistration_delay.timeout_seconds`, 300 by
//!   default), then its tasks stop ([`TASK_STOP`]): until then it is
//!   `DRAINING`, not `INACTIVE`, and its cluster cannot be deleted
//!   (`ClusterContainsServicesException`); the tasks' network interfaces then
//!   hold their security groups and subnets for [`crate::interfaces::LINGER`].
//!
//! Figures (README's `aws-sim` table): a Fargate task takes about a minute from
//! PROVISIONING to RUNNING (AWS-BEHAVIOUR.md, a choice); target health and the
//! deregistration delay are the target group's own settings (ELB user guide,
//! "Health checks for your target groups", "Deregistration delay"); a task's
//! containers get 30 s to stop (ECS task definition `stopTimeout`, default 30 s).

use std::sync::Mutex;

use serde_json::Value;

use crate::http::{Protocol, Request, body_of, error_answer, query_answer, status_of, with_answer_body};
use crate::interfaces::{Held, Interfaces, encode};
use crate::rules::{all_tags, ask, form_values};

/// Simulated seconds from CreateService to its tasks running.
pub const TASK_START: f64 = 60.0;
/// Simulated seconds a task takes to stop once its targets have drained.
pub const TASK_STOP: f64 = 30.0;

/// A target group's health check and deregistration delay, as moto holds them.
#[derive(Debug, Clone)]
struct Group {
    arn: String,
    port: String,
    /// Simulated seconds from registration to `healthy`.
    to_healthy: f64,
    drain: f64,
}

#[derive(Debug, Clone)]
struct Service {
    arn: String,
    cluster: String,
    desired: i64,
    groups: Vec<Group>,
    created_at: f64,
    running_at: f64,
    /// When DeleteService was answered.
    deleted_at: Option<f64>,
    /// The revision it was last moved to.
    task_definition: String,
    rollout: Option<Rollout>,
}

/// A deployment replacing another, from UpdateService.
#[derive(Debug, Clone)]
struct Rollout {
    from: String,
    at: f64,
    id: String,
}

/// Where a target set stands in a group, with ELB's reason code and description.
type TargetState = (&'static str, &'static str, &'static str);
const INITIAL: TargetState = ("initial", "Elb.RegistrationInProgress", "Target registration is in progress");
const HEALTHY: TargetState = ("healthy", "", "");
const DRAINING: TargetState = ("draining", "Target.DeregistrationInProgress", "Target deregistration is in progress");

impl Service {
    fn to_healthy(&self) -> f64 {
        self.groups.iter().map(|g| g.to_healthy).fold(0.0, f64::max)
    }

    fn drain(&self) -> f64 {
        self.groups.iter().map(|g| g.drain).fold(0.0, f64::max)
    }

    /// When the rollout's new tasks run, pass their checks, the old targets
    /// have drained, and the old tasks have stopped (the rollout completed).
    fn rollout_times(&self, r: &Rollout) -> (f64, f64, f64, f64) {
        let running = r.at + TASK_START;
        let healthy = running + self.to_healthy();
        let drained = healthy + self.drain();
        (running, healthy, drained, drained + TASK_STOP)
    }

    /// The rollout under way at `now`, if one is.
    fn rolling(&self, now: f64) -> Option<&Rollout> {
        self.rollout.as_ref().filter(|r| now < self.rollout_times(r).3)
    }

    /// Each set of its targets in `group` at `now`, by the octet that tells the sets apart.
    fn targets(&self, group: &Group, now: f64) -> Vec<(u32, TargetState)> {
        if let Some(drained) = self.drained_at() {
            return if now < drained { vec![(10, DRAINING)] } else { Vec::new() };
        }
        if now < self.running_at {
            return Vec::new();
        }
        let mut sets = Vec::new();
        let first = if now < self.running_at + group.to_healthy { INITIAL } else { HEALTHY };
        match &self.rollout {
            None => sets.push((10, first)),
            Some(r) => {
                let (running, healthy, drained, _) = self.rollout_times(r);
                if now < healthy {
                    sets.push((10, first));
                } else if now < drained {
                    sets.push((10, DRAINING));
                }
                if now >= running {
                    sets.push((100, if now < running + group.to_healthy { INITIAL } else { HEALTHY }));
                }
            }
        }
        sets
    }

    fn drained_at(&self) -> Option<f64> {
        let drain = self.groups.iter().map(|g| g.drain).fold(0.0, f64::max);
        self.deleted_at.map(|at| at + drain)
    }

    fn gone_at(&self) -> Option<f64> {
        self.drained_at().map(|at| at + TASK_STOP)
    }
}

/// A service's life as the layer shows it, with when each part of it passes.
#[derive(Debug, Clone)]
pub struct Life {
    pub service: String,
    pub created_at: f64,
    pub running_at: f64,
    /// Each target group with when the service's targets become healthy in it.
    pub healthy_at: Vec<(String, f64)>,
}

#[derive(Default)]
pub struct Tasks {
    services: Mutex<Vec<Service>>,
}

impl Tasks {
    /// Each service the layer saw created, with when it ran and its targets became healthy.
    pub fn lives(&self) -> Vec<Life> {
        let services = self.services.lock().unwrap();
        services
            .iter()
            .map(|s| Life {
                service: s.arn.clone(),
                created_at: s.created_at,
                running_at: s.running_at,
                healthy_at: s.groups.iter().map(|g| (g.arn.clone(), s.running_at + g.to_healthy)).collect(),
            })
            .collect()
    }

    /// AWS's answer where tasks change it: the targets' health, a cluster
    /// that still has draining services.
    pub fn refuse(&self, req: &Request, now: f64) -> Option<(&'static str, Vec<u8>)> {
        let action = req.action();
        match (req.service().as_str(), action.as_str()) {
            ("elasticloadbalancing", "DescribeTargetHealth") => {
                let arn = form_values(&req.body_text(), "TargetGroupArn").into_iter().next()?;
                let services = self.services.lock().unwrap();
                let using: Vec<&Service> = services.iter().filter(|s| s.groups.iter().any(|g| g.arn == arn)).collect();
                if using.is_empty() {
                    return None;
                }
                let mut members = String::new();
                for (n, s) in using.iter().enumerate() {
                    let group = s.groups.iter().find(|g| g.arn == arn)?;
                    for (set, state) in s.targets(group, now) {
                        for t in 0..s.desired {
                            let reason = if state.1.is_empty() {
                                String::new()
                            } else {
                                format!("<Reason>{}</Reason><Description>{}</Description>", state.1, state.2)
                            };
                            members.push_str(&format!(
                            "<member><Target><Id>10.1.{}.{}</Id><Port>{}</Port></Target><HealthCheckPort>{}</HealthCheckPort><TargetHealth><State>{}</State>{reason}</TargetHealth></member>",
                            set as usize + n,
                            10 + t,
                            group.port,
                            group.port,
                            state.0
                        ));
                        }
                    }
                }
                Some(("target_health", target_health(&members)))
            }
            ("ecs", "DeleteCluster") => {
                let cluster = json_field(&req.body_text(), "cluster")?;
                let services = self.services.lock().unwrap();
                let draining = services.iter().any(|s| {
                    (s.cluster == cluster || s.cluster.ends_with(&format!("/{cluster}")))
                        && s.gone_at().is_some_and(|gone| now < gone)
                });
                let message = "The Cluster cannot be deleted while Services are active.";
                draining.then(|| {
                    ("draining", error_answer(Protocol::Json, 400, "ClusterContainsServicesException", message))
                })
            }
            _ => None,
        }
    }

    /// moto's `answer` to `req`, with each service's tasks shown as they are at
    /// `now`; a create or delete is noted first.
    /// `roles` says when ECS can assume the roles of a task definition (0 if at once).
    pub fn shown(
        &self,
        req: &Request,
        answer: Vec<u8>,
        now: f64,
        upstream: &str,
        interfaces: &Interfaces,
        roles: &dyn Fn(&str) -> f64,
    ) -> Vec<u8> {
        if status_of(&answer) != 200 || req.service() != "ecs" {
            return answer;
        }
        let Ok(mut doc) = serde_json::from_slice::<Value>(body_of(&answer)) else { return answer };
        let before = doc.clone();
        match req.action().as_str() {
            "CreateService" => {
                let s = &doc["service"];
                let groups = s["loadBalancers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|lb| lb["targetGroupArn"].as_str())
                    .filter_map(|arn| group(upstream, &req.region(), arn))
                    .collect();
                let (Some(arn), Some(cluster)) = (s["serviceArn"].as_str(), s["clusterArn"].as_str()) else {
                    return answer;
                };
                let mut services = self.services.lock().unwrap();
                if services.iter().all(|known| known.arn != arn || known.deleted_at.is_some()) {
                    services.retain(|known| known.arn != arn);
                    services.push(Service {
                        arn: arn.into(),
                        cluster: cluster.into(),
                        desired: s["desiredCount"].as_i64().unwrap_or(1),
                        groups,
                        created_at: now,
                        // Its tasks launch once ECS can assume their roles.
                        running_at: now.max(roles(s["taskDefinition"].as_str().unwrap_or_default())) + TASK_START,
                        deleted_at: None,
                        task_definition: s["taskDefinition"].as_str().unwrap_or_default().into(),
                        rollout: None,
                    });
                }
                drop(services);
                self.show(&mut doc["service"], now);
            }
            "DeleteService" => {
                if let Some(arn) = doc["service"]["serviceArn"].as_str() {
                    let mut services = self.services.lock().unwrap();
                    if let Some(s) = services.iter_mut().find(|s| s.arn == arn && s.deleted_at.is_none()) {
                        s.deleted_at = Some(now);
                        // Its tasks' interfaces outlive them.
                        let network = &doc["service"]["networkConfiguration"]["awsvpcConfiguration"];
                        let ids = |key: &str| -> Vec<String> {
                            network[key]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|v| v.as_str().map(String::from))
                                .collect()
                        };
                        interfaces.hold(Held {
                            owner: format!("the tasks of service {arn}"),
                            vpc: String::new(),
                            subnets: ids("subnets"),
                            groups: ids("securityGroups"),
                            public: false,
                            until: s.gone_at().unwrap_or(now) + crate::interfaces::LINGER,
                        });
                    }
                }
                self.show(&mut doc["service"], now);
            }
            "UpdateService" => {
                let asked = serde_json::from_str::<Value>(&req.body_text()).unwrap_or_default();
                let forced = asked["forceNewDeployment"].as_bool() == Some(true);
                let now_on = doc["service"]["taskDefinition"].as_str().unwrap_or_default().to_string();
                let mut services = self.services.lock().unwrap();
                let arn = doc["service"]["serviceArn"].as_str().unwrap_or_default();
                if let Some(known) = services.iter_mut().find(|k| k.arn == arn && k.deleted_at.is_none()) {
                    if forced || known.task_definition != now_on {
                        let at = now.max(roles(&now_on));
                        let from = std::mem::replace(&mut known.task_definition, now_on);
                        let id = format!("ecs-svc/{:016}", fastrand::u64(..10_000_000_000_000_000));
                        known.rollout = Some(Rollout { from, at, id });
                    }
                }
                drop(services);
                self.show(&mut doc["service"], now);
            }
            "DescribeServices" => {
                for s in doc["services"].as_array_mut().into_iter().flatten() {
                    self.show(s, now);
                }
            }
            _ => return answer,
        }
        // moto's own bytes unless something changed (a fault rule may match its text).
        if doc == before { answer } else { with_answer_body(&answer, doc.to_string().as_bytes()) }
    }

    /// One service of an answer, as it is at `now`.
    fn show(&self, s: &mut Value, now: f64) {
        let services = self.services.lock().unwrap();
        let Some(known) = services.iter().find(|k| Some(k.arn.as_str()) == s["serviceArn"].as_str()) else { return };
        if let Some(gone) = known.gone_at() {
            if now < gone {
                s["status"] = "DRAINING".into();
            }
            return;
        }
        if now < known.running_at {
            s["runningCount"] = 0.into();
            s["pendingCount"] = known.desired.into();
            for d in s["deployments"].as_array_mut().into_iter().flatten() {
                d["runningCount"] = 0.into();
                d["pendingCount"] = known.desired.into();
                d["rolloutState"] = "IN_PROGRESS".into();
            }
        }
        let Some(first) = s["deployments"].as_array().and_then(|d| d.first()).cloned() else { return };
        let Some(r) = known.rolling(now) else {
            if let Some(r) = &known.rollout {
                // Completed: one deployment, of the revision the service runs.
                let mut only = first;
                only["taskDefinition"] = s["taskDefinition"].clone();
                only["id"] = r.id.clone().into();
                only["rolloutState"] = "COMPLETED".into();
                only["rolloutStateReason"] = format!("ECS deployment {} completed.", r.id).into();
                s["deployments"] = Value::Array(vec![only]);
            }
            return;
        };
        let (running_at, ..) = known.rollout_times(r);
        let new_running = if now >= running_at { known.desired } else { 0 };
        let mut primary = first.clone();
        primary["id"] = r.id.clone().into();
        primary["status"] = "PRIMARY".into();
        primary["taskDefinition"] = s["taskDefinition"].clone();
        primary["runningCount"] = new_running.into();
        primary["pendingCount"] = (known.desired - new_running).into();
        primary["rolloutState"] = "IN_PROGRESS".into();
        primary["rolloutStateReason"] = format!("ECS deployment {} in progress.", r.id).into();
        let mut active = first;
        active["status"] = "ACTIVE".into();
        active["taskDefinition"] = r.from.clone().into();
        active["runningCount"] = known.desired.into();
        active["pendingCount"] = 0.into();
        active["rolloutState"] = "COMPLETED".into();
        s["deployments"] = Value::Array(vec![primary, active]);
        // The old deployment's tasks run until the rollout completes.
        let old_running = if now < known.running_at { 0 } else { known.desired };
        s["runningCount"] = (old_running + new_running).into();
        s["pendingCount"] = (known.desired - new_running).into();
    }
}

/// A target group's settings, asked of moto.
fn group(upstream: &str, region: &str, arn: &str) -> Option<Group> {
    let asked = format!("Action=DescribeTargetGroups&Version=2015-12-01&TargetGroupArns.member.1={}", encode(arn));
    let xml = ask(upstream, region, "elasticloadbalancing", &asked)?;
    let number = |tag: &str, default: f64| all_tags(&xml, tag).first().and_then(|v| v.parse().ok()).unwrap_or(default);
    let to_healthy = number("HealthCheckIntervalSeconds", 30.0) * number("HealthyThresholdCount", 5.0);
    let asked = format!("Action=DescribeTargetGroupAttributes&Version=2015-12-01&TargetGroupArn={}", encode(arn));
    let attributes = ask(upstream, region, "elasticloadbalancing", &asked).unwrap_or_default();
    let drain = attributes
        .split("<member>")
        .find(|m| m.contains("<Key>deregistration_delay.timeout_seconds</Key>"))
        .and_then(|m| all_tags(m, "Value").first().and_then(|v| v.parse().ok()))
        .unwrap_or(300.0);
    let port = all_tags(&xml, "Port").first().cloned().unwrap_or_else(|| "80".into());
    Some(Group { arn: arn.into(), port, to_healthy, drain })
}

fn json_field(body: &str, key: &str) -> Option<String> {
    serde_json::from_str::<Value>(body).ok()?[key].as_str().map(String::from)
}

/// DescribeTargetHealth's answer with these members.
fn target_health(members: &str) -> Vec<u8> {
    let namespace = "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/";
    let result = format!("<TargetHealthDescriptions>{members}</TargetHealthDescriptions>");
    query_answer("DescribeTargetHealth", namespace, &result)
}
