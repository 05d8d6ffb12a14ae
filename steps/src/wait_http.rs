//! `wait.http`: polls a URL until it answers the expected status (and body),
//! showing the latest answer; the engine's deadline bounds the wait.

use std::time::Duration;

use ca_a2a_flow_engine::duration::HumanDuration;
use ca_a2a_flow_engine::{KindDoc, Outputs, ParamProblem, Parameters, Step, StepContext, StepError, outputs};
use serde::Deserialize;

fn default_status() -> u16 {
    200
}
fn default_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(2))
}
fn default_request_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}
fn default_method() -> String {
    "GET".into()
}

#[derive(Debug, Deserialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "wait.http", step = WaitHttp)]
pub struct Params {
    /// http:// or https:// URL to poll (required)
    pub url: String,
    /// HTTP method (default GET)
    #[serde(default = "default_method")]
    pub method: String,
    /// status that means ready (default 200)
    #[serde(default = "default_status")]
    pub expect_status: u16,
    /// text the body must contain (optional)
    pub body_contains: Option<String>,
    /// time between checks (default 2s)
    #[serde(default = "default_interval")]
    pub interval: HumanDuration,
    /// deadline of one request (default 5s)
    #[serde(default = "default_request_timeout")]
    pub request_timeout: HumanDuration,
}

impl Step for WaitHttp {
    const DOC: KindDoc = KindDoc {
        summary: "Polls `url` until it answers `expect_status` (and contains `body_contains`).",
        outputs: &[("status", "the status of the answer that matched"), ("checks", "how many requests were made")],
        example: "- id: health\n  uses: wait.http\n  with: { url: \"http://127.0.0.1:8080/health\", expect_status: 200, interval: 2s }\n  timeout: 10m\n",
    };

    fn problems(&self, p: &Params) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        if !(p.url.starts_with("http://") || p.url.starts_with("https://") || p.url.contains("${{")) {
            problems.push(ParamProblem::at(&["url"], format!("`{}` is not an http:// or https:// URL", p.url)));
        }
        if !(100..=599).contains(&p.expect_status) {
            problems.push(ParamProblem::at(
                &["expect_status"],
                format!("{} is not an HTTP status (100-599)", p.expect_status),
            ));
        }
        if reqwest::Method::from_bytes(p.method.as_bytes()).is_err() {
            problems.push(ParamProblem::at(&["method"], format!("`{}` is not an HTTP method", p.method)));
        }
        problems
    }

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let client = reqwest::Client::builder()
            .timeout(p.request_timeout.0)
            .build()
            .map_err(|e| StepError::fatal(format!("cannot build an HTTP client: {e}")))?;
        let method = reqwest::Method::from_bytes(p.method.as_bytes())
            .map_err(|_| StepError::fatal(format!("`{}` is not an HTTP method", p.method)))?;
        let mut checks: u64 = 0;
        loop {
            checks += 1;
            let seen = match client.request(method.clone(), &p.url).send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let body = resp.text().await.unwrap_or_default();
                    let body_ok = p.body_contains.as_ref().is_none_or(|needle| body.contains(needle.as_str()));
                    if status == p.expect_status && body_ok {
                        ctx.log(format!("{} {} -> {status} after {checks} check(s)", p.method, p.url));
                        return Ok(outputs! { status, checks });
                    }
                    if status == p.expect_status {
                        format!("{status}, body without the expected text")
                    } else {
                        format!("{status}")
                    }
                }
                Err(e) if e.is_timeout() => {
                    format!("no answer within {}", ca_a2a_flow_engine::duration::format(p.request_timeout.0))
                }
                Err(e) if e.is_connect() => "connection refused or unreachable".to_string(),
                Err(e) => format!("error: {e}"),
            };
            ctx.progress(format!("{} {} -> {seen} (check {checks}, want {})", p.method, p.url, p.expect_status));
            tokio::time::sleep(p.interval.0.min(ctx.remaining())).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(v: serde_json::Value) -> Params {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn defaults_are_get_200_every_2s() {
        let p = params(json!({"url": "http://127.0.0.1/"}));
        assert_eq!((p.method.as_str(), p.expect_status, p.interval.0), ("GET", 200, Duration::from_secs(2)));
        assert!(WaitHttp.problems(&p).is_empty());
    }

    #[test]
    fn a_bad_url_status_or_method_is_refused_before_running() {
        let p = params(json!({"url": "ftp://x", "expect_status": 42, "method": "GE T"}));
        let paths: Vec<Vec<String>> = WaitHttp.problems(&p).into_iter().map(|p| p.path).collect();
        assert_eq!(paths, [vec!["url".to_string()], vec!["expect_status".into()], vec!["method".into()]]);
    }
}
