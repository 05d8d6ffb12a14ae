//! `aws.elbv2.listener`: the load balancer's listener on a port, whose default
//! action forwards to a target group. Found by port; a default action that
//! drifted is put back. Given a certificate, it serves HTTPS: the forwarding
//! listener is on `https_port` (443) with the certificate, and port 80 only
//! redirects there. The `arn` output is always the forwarding listener, so the
//! path rules that name it move with it; rules left on port 80 are removed
//! (they would serve plain HTTP past the redirect).

use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, Certificate, Listener as ElbListener, ProtocolEnum, RedirectActionConfig,
    RedirectActionStatusCodeEnum,
};
use ca_a2a_flow_engine::{
    DestroyOptions, KindDoc, Outputs, ParamProblem, Parameters, Plan, Step, StepContext, StepError, outputs,
};
use serde::Deserialize;

use super::owner::Stack;
use super::{AwsResult, Owner};

#[derive(Debug, Deserialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "aws.elbv2.listener", step = Listener)]
pub struct Params {
    #[param(doc = super::STACK)]
    pub stack: Stack,
    #[param(doc = super::REGION)]
    pub region: Option<String>,
    /// the load balancer (required)
    pub load_balancer_arn: String,
    /// the HTTP port (default 80)
    #[serde(default = "default_port")]
    pub port: u16,
    /// the default action's target group (required)
    pub default_target_group_arn: String,
    /// an ACM certificate: HTTPS on `https_port`, and `port` redirects to it (default none: plain HTTP; empty counts as none)
    pub certificate_arn: Option<String>,
    /// default 443
    #[serde(default = "default_https_port")]
    pub https_port: u16,
    /// the HTTPS listener's TLS policy (default ELBSecurityPolicy-TLS13-1-2-2021-06, AWS's recommended one)
    #[serde(default = "default_policy")]
    pub ssl_policy: String,
    /// the name clients reach HTTPS on, the certificate's (default none: the load balancer's DNS name); only for the output `url`
    pub domain: Option<String>,
}

fn default_port() -> u16 {
    80
}
fn default_https_port() -> u16 {
    443
}
fn default_policy() -> String {
    "ELBSecurityPolicy-TLS13-1-2-2021-06".into()
}

impl Params {
    fn certificate(&self) -> Option<&str> {
        self.certificate_arn.as_deref().filter(|c| !c.trim().is_empty())
    }

    /// Where clients reach the load balancer, given its DNS name: HTTPS on the
    /// certificate's name when there is a certificate, else plain HTTP.
    fn url(&self, dns_name: &str) -> String {
        let port = |p: u16, default: u16| if p == default { String::new() } else { format!(":{p}") };
        match self.certificate() {
            Some(_) => {
                let host = self.domain.as_deref().map(str::trim).filter(|d| !d.is_empty()).unwrap_or(dns_name);
                format!("https://{host}{}", port(self.https_port, 443))
            }
            None => format!("http://{dns_name}{}", port(self.port, 80)),
        }
    }
}

/// What one listener should be.
struct Wanted {
    port: u16,
    protocol: ProtocolEnum,
    action: Action,
    certificate: Option<String>,
    policy: Option<String>,
}

impl Wanted {
    /// Every listener of the step, as its parameters ask.
    fn all(p: &Params) -> Vec<Wanted> {
        let forward =
            Action::builder().r#type(ActionTypeEnum::Forward).target_group_arn(&p.default_target_group_arn).build();
        let Some(cert) = p.certificate() else {
            return vec![Wanted {
                port: p.port,
                protocol: ProtocolEnum::Http,
                action: forward,
                certificate: None,
                policy: None,
            }];
        };
        let redirect = RedirectActionConfig::builder()
            .protocol("HTTPS")
            .port(p.https_port.to_string())
            .status_code(RedirectActionStatusCodeEnum::Http301);
        let redirect = Action::builder().r#type(ActionTypeEnum::Redirect).redirect_config(redirect.build()).build();
        vec![
            Wanted {
                port: p.https_port,
                protocol: ProtocolEnum::Https,
                action: forward,
                certificate: Some(cert.to_string()),
                policy: Some(p.ssl_policy.clone()),
            },
            Wanted { port: p.port, protocol: ProtocolEnum::Http, action: redirect, certificate: None, policy: None },
        ]
    }

    /// What the listener `l` has that this does not ask for.
    fn drift(&self, l: &ElbListener) -> Vec<String> {
        let mut changes = Vec::new();
        let port = self.port;
        let protocol = l.protocol().map(|p| p.as_str()).unwrap_or("none");
        if protocol != self.protocol.as_str() {
            changes.push(format!(":{port} protocol: {protocol} -> {}", self.protocol.as_str()));
        }
        let now = l.default_actions().first().map(describe_action).unwrap_or_else(|| "none".into());
        let wanted = describe_action(&self.action);
        if now != wanted {
            changes.push(format!(":{port} default action: {now} -> {wanted}"));
        }
        let cert = l.certificates().first().and_then(|c| c.certificate_arn());
        if cert != self.certificate.as_deref() {
            changes.push(format!(
                ":{port} certificate: {} -> {}",
                cert.unwrap_or("none"),
                self.certificate.as_deref().unwrap_or("none")
            ));
        }
        if self.policy.is_some() && l.ssl_policy() != self.policy.as_deref() {
            changes.push(format!(
                ":{port} TLS policy: {} -> {}",
                l.ssl_policy().unwrap_or("none"),
                self.policy.as_deref().unwrap_or_default()
            ));
        }
        changes
    }
}

/// An action as `plan` and the drift check read it: `forward to ARN`, `redirect to HTTPS:443`.
fn describe_action(a: &Action) -> String {
    match (a.r#type(), a.redirect_config()) {
        (Some(ActionTypeEnum::Redirect), Some(r)) => {
            format!("redirect to {}:{}", r.protocol().unwrap_or("#{protocol}"), r.port().unwrap_or("#{port}"))
        }
        _ => match a.target_group_arn() {
            Some(tg) => format!("forward to {tg}"),
            None => a.r#type().map(|t| t.as_str().to_string()).unwrap_or_else(|| "none".into()),
        },
    }
}

impl Step for Listener {
    async fn plan(&self, _ctx: &StepContext, p: Params) -> Result<Plan, StepError> {
        let elb = super::elbv2(p.region.as_deref()).await;
        let Some(listeners) = all(&elb, &p, &["LoadBalancerNotFound", "ValidationError"]).await? else {
            return Ok(Plan::create());
        };
        let mut changes = Vec::new();
        for w in Wanted::all(&p) {
            match listeners.iter().find(|l| l.port() == Some(i32::from(w.port))) {
                None => changes.push(format!(
                    ":{} {}: to be created ({})",
                    w.port,
                    w.protocol.as_str(),
                    describe_action(&w.action)
                )),
                Some(l) => changes.extend(w.drift(l)),
            }
        }
        if p.certificate().is_none() && listeners.iter().any(|l| l.port() == Some(i32::from(p.https_port))) {
            changes.push(format!(":{} HTTPS: to be deleted (no certificate given)", p.https_port));
        }
        if p.certificate().is_some() {
            let http = listeners.iter().find(|l| l.port() == Some(i32::from(p.port)));
            let elb_rules: Vec<String> =
                rules_on(&elb, http).await?.into_iter().map(|(priority, _)| priority).collect();
            if !elb_rules.is_empty() {
                changes.push(format!(":{} rules {elb_rules:?}: moved to :{}", p.port, p.https_port));
            }
        }
        let none_yet = !listeners.iter().any(|l| l.port() == Some(i32::from(p.port)));
        Ok(if none_yet { Plan::create() } else { Plan::changes(changes) })
    }

    const DESTROYS: bool = true;

    async fn destroy(&self, ctx: &StepContext, p: Params, _o: &DestroyOptions) -> Result<Outputs, StepError> {
        let elb = super::elbv2(p.region.as_deref()).await;
        let found = all(&elb, &p, &["LoadBalancerNotFound", "ListenerNotFound"]).await?.unwrap_or_default();
        let mut deleted = Vec::new();
        for port in [p.port, p.https_port] {
            let Some(arn) = found.iter().find(|l| l.port() == Some(i32::from(port))).and_then(|l| l.listener_arn())
            else {
                continue;
            };
            elb.delete_listener()
                .listener_arn(arn)
                .send()
                .await
                .or_absent("elasticloadbalancing:DeleteListener", &["ListenerNotFound"])?;
            deleted.push(arn.to_string());
        }
        Ok(super::removed(ctx, "listener", &deleted))
    }

    const DOC: KindDoc = KindDoc {
        summary: "A listener whose default action forwards to a target group; found by port, its default action kept. With a certificate: HTTPS on 443 and port 80 redirecting to it.",
        outputs: &[
            ("arn", "the forwarding listener's ARN (HTTPS's when a certificate is given): path rules go there"),
            ("http_arn", "the listener on `port`"),
            ("https", "whether the load balancer serves HTTPS"),
            ("url", "where clients reach it: `https://<domain>` with a certificate, else `http://<its DNS name>`"),
            ("action", "`created`, `adopted` or `updated`"),
        ],
        example: "- id: http
  uses: aws.elbv2.listener
  with:
    stack: \"${{ inputs.stack }}\"
    load_balancer_arn: \"${{ steps.alb.outputs.arn }}\"
    default_target_group_arn: \"${{ steps.orchestrator-tg.outputs.arn }}\"
    certificate_arn: \"${{ steps.certificate.outputs.arn }}\"
",
    };

    fn problems(&self, p: &Params) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        if p.certificate().is_some() && p.port == p.https_port {
            problems.push(ParamProblem::at(
                &["https_port"],
                format!("{}: must differ from `port`, which redirects to it", p.https_port),
            ));
        }
        problems
    }

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let elb = super::elbv2(p.region.as_deref()).await;
        let found = all(&elb, &p, &[]).await?.unwrap_or_default();
        let (mut arns, mut did) = (Vec::new(), Vec::new());
        for w in Wanted::all(&p) {
            let (arn, done) =
                converge(ctx, &elb, &owner, &p, &w, found.iter().find(|l| l.port() == Some(i32::from(w.port)))).await?;
            arns.push(arn);
            did.push(done);
        }
        let mut action = match did.as_slice() {
            all if all.iter().all(|d| *d == "created") => "created",
            all if all.iter().all(|d| *d == "adopted") => "adopted",
            _ => "updated",
        };
        if p.certificate().is_some() {
            // The path rules now live on the HTTPS listener (they name `arn`);
            // on port 80 they would serve plain HTTP past the redirect.
            let http = found.iter().find(|l| l.port() == Some(i32::from(p.port)));
            for (priority, rule) in rules_on(&elb, http).await? {
                ctx.log(format!("moving rule {priority} from :{} to :{}", p.port, p.https_port));
                elb.delete_rule()
                    .rule_arn(&rule)
                    .send()
                    .await
                    .or_absent("elasticloadbalancing:DeleteRule", &["RuleNotFound"])?;
            }
        } else if let Some(https) = found.iter().find(|l| l.port() == Some(i32::from(p.https_port))) {
            let arn = https.listener_arn().unwrap_or_default();
            ctx.log(format!("no certificate given: deleting the HTTPS listener :{} ({arn})", p.https_port));
            elb.delete_listener()
                .listener_arn(arn)
                .send()
                .await
                .or_absent("elasticloadbalancing:DeleteListener", &["ListenerNotFound"])?;
            action = "updated";
        }
        let arn = arns.first().cloned().unwrap_or_default();
        let http_arn = arns.last().cloned().unwrap_or_default();
        let https = p.certificate().is_some();
        let described = elb.describe_load_balancers().load_balancer_arns(&p.load_balancer_arn).send().await;
        let described = described.or_step_error("elasticloadbalancing:DescribeLoadBalancers")?;
        let dns = described.load_balancers().first().and_then(|lb| lb.dns_name()).unwrap_or_default();
        let url = p.url(dns);
        ctx.log(format!(
            "{action} listener {}:{} ({arn}){}",
            if https { "HTTPS" } else { "HTTP" },
            if https { p.https_port } else { p.port },
            if https { format!("; :{} redirects to it", p.port) } else { String::new() }
        ));
        Ok(outputs! { arn, http_arn, https, url, action })
    }
}

/// Makes the listener `w` asks for, or puts the found one back as asked.
async fn converge(
    ctx: &StepContext,
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    owner: &Owner,
    p: &Params,
    w: &Wanted,
    found: Option<&ElbListener>,
) -> Result<(String, &'static str), StepError> {
    let certs = w.certificate.as_ref().map(|c| vec![Certificate::builder().certificate_arn(c).build()]);
    match found {
        Some(l) => {
            let arn = l.listener_arn().unwrap_or_default().to_string();
            let drift = w.drift(l);
            if drift.is_empty() {
                return Ok((arn, "adopted"));
            }
            elb.modify_listener()
                .listener_arn(&arn)
                .protocol(w.protocol.clone())
                .default_actions(w.action.clone())
                .set_certificates(certs)
                .set_ssl_policy(w.policy.clone())
                .send()
                .await
                .or_step_error("elasticloadbalancing:ModifyListener")?;
            ctx.log(format!("listener {}", drift.join(", ")));
            Ok((arn, "updated"))
        }
        None => {
            ctx.progress(format!("creating listener {}:{}", w.protocol.as_str(), w.port));
            let created = elb
                .create_listener()
                .load_balancer_arn(&p.load_balancer_arn)
                .protocol(w.protocol.clone())
                .port(i32::from(w.port))
                .default_actions(w.action.clone())
                .set_certificates(certs)
                .set_ssl_policy(w.policy.clone())
                .set_tags(Some(super::elbv2_tags(owner)))
                .send()
                .await
                .or_step_error("elasticloadbalancing:CreateListener")?;
            let arn = created.listeners().first().and_then(|l| l.listener_arn()).unwrap_or_default();
            Ok((arn.to_string(), "created"))
        }
    }
}

/// The non-default rules on a listener: priority and ARN, every page.
async fn rules_on(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    listener: Option<&ElbListener>,
) -> Result<Vec<(String, String)>, StepError> {
    let Some(arn) = listener.and_then(|l| l.listener_arn()) else { return Ok(Vec::new()) };
    let mut found = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let page = elb
            .describe_rules()
            .listener_arn(arn)
            .set_marker(marker.take())
            .send()
            .await
            .or_absent("elasticloadbalancing:DescribeRules", &["ListenerNotFound"])?;
        let Some(page) = page else { break };
        for r in page.rules().iter().filter(|r| r.is_default() != Some(true)) {
            found.push((r.priority().unwrap_or_default().to_string(), r.rule_arn().unwrap_or_default().to_string()));
        }
        match page.next_marker() {
            Some(m) if !m.is_empty() => marker = Some(m.to_string()),
            _ => break,
        }
    }
    Ok(found)
}

/// The load balancer's listeners (`None` when an error whose code is in
/// `absent` says there is no such load balancer), every page.
async fn all(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    p: &Params,
    absent: &[&str],
) -> Result<Option<Vec<ElbListener>>, StepError> {
    let mut found = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let page = elb
            .describe_listeners()
            .load_balancer_arn(&p.load_balancer_arn)
            .set_marker(marker.take())
            .send()
            .await
            .or_absent("elasticloadbalancing:DescribeListeners", absent)?;
        let Some(page) = page else { return Ok(None) };
        found.extend(page.listeners().iter().cloned());
        match page.next_marker() {
            Some(m) if !m.is_empty() => marker = Some(m.to_string()),
            _ => return Ok(Some(found)),
        }
    }
}

impl super::facts::Facts for Listener {}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(certificate: Option<&str>, domain: Option<&str>, https_port: u16) -> Params {
        Params {
            stack: serde_json::from_value(serde_json::json!("ca")).unwrap(),
            region: None,
            load_balancer_arn: "arn".into(),
            port: 80,
            default_target_group_arn: "tg".into(),
            certificate_arn: certificate.map(String::from),
            https_port,
            ssl_policy: default_policy(),
            domain: domain.map(String::from),
        }
    }

    #[test]
    fn clients_reach_https_on_the_certificates_name_and_plain_http_on_the_load_balancers() {
        let dns = "ca-alb-1.eu-west-3.elb.amazonaws.com";
        assert_eq!(params(None, None, 443).url(dns), format!("http://{dns}"));
        assert_eq!(params(None, Some("api.example.com"), 443).url(dns), format!("http://{dns}"), "no certificate");
        assert_eq!(params(Some(""), Some("api.example.com"), 443).url(dns), format!("http://{dns}"), "empty is none");
        assert_eq!(params(Some("arn:cert"), Some("api.example.com"), 443).url(dns), "https://api.example.com");
        assert_eq!(params(Some("arn:cert"), Some(""), 443).url(dns), format!("https://{dns}"));
        assert_eq!(params(Some("arn:cert"), Some("api.example.com"), 8443).url(dns), "https://api.example.com:8443");
    }
}
