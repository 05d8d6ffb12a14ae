//! Every wait on AWS has a deadline and shows progress: the resource's current
//! state, the time waited and the deadline ("rds ca-a2a-db: backing-up 6m12s / 40m").

use std::future::Future;
use std::time::{Duration, Instant};

use ca_a2a_flow_engine::duration::format as fmt;
use ca_a2a_flow_engine::{StepContext, StepError};

use super::classify::Deleted;

/// What one look at the resource found.
pub enum Poll<T> {
    /// Ready: the wait is over.
    Ready(T),
    /// Not yet; the state to show ("pending", "2/3 targets healthy").
    Pending(String),
}

/// Polls `look` every `every` until it is ready, fails, or `limit` passes (or
/// the step's own deadline, whichever comes first). `what` names the resource.
pub async fn until<T, F, Fut>(
    ctx: &StepContext,
    what: &str,
    limit: Duration,
    every: Duration,
    look: F,
) -> Result<T, StepError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Poll<T>, StepError>>,
{
    match until_deadline(ctx, what, limit, every, look).await? {
        Waited::Ready(v) => Ok(v),
        Waited::Deadline { last, waited } => Err(deadline(what, &last, waited)),
    }
}

/// A wait that reached its deadline: what it waited for, and what it last saw.
pub fn deadline(what: &str, last: &str, waited: Duration) -> StepError {
    StepError::retryable(format!("{what} still {last} after {}", fmt(waited))).with_hint(
        "the wait reached its deadline; the next attempt looks again (raise `wait` or the step's `timeout` if AWS is just slow)",
    )
}

/// How a wait ended, when its deadline means something of its own to the step
/// (a certificate still pending names the DNS records it needs): what it waited
/// for, or the deadline with the last state it saw. A look that failed is
/// never the deadline, even when it ended past it: it is the look's error.
pub enum Waited<T> {
    Ready(T),
    Deadline { last: String, waited: Duration },
}

/// [`until`], with the deadline as an outcome rather than an error.
pub async fn until_deadline<T, F, Fut>(
    ctx: &StepContext,
    what: &str,
    limit: Duration,
    every: Duration,
    mut look: F,
) -> Result<Waited<T>, StepError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Poll<T>, StepError>>,
{
    let start = Instant::now();
    let limit = limit.min(ctx.remaining());
    let mut last = String::from("not seen yet");
    loop {
        match look().await? {
            Poll::Ready(v) => return Ok(Waited::Ready(v)),
            Poll::Pending(state) => {
                if state != last {
                    ctx.log(format!("{what}: {state}"));
                }
                last = state;
            }
        }
        let waited = start.elapsed();
        ctx.progress(format!("{what}: {last} {} / {}", fmt(waited), fmt(limit)));
        if waited >= limit {
            return Ok(Waited::Deadline { last, waited });
        }
        tokio::time::sleep(every.min(limit.saturating_sub(waited)).max(Duration::from_millis(50))).await;
    }
}

/// The poll interval for a wait: `CA_A2A_FLOW_POLL_INTERVAL` (tests use a short
/// one), else `default` divided by `CA_A2A_FLOW_TIME_SCALE` (an emulated AWS
/// whose clock runs that many times faster, as aws-sim's `--time-scale`: the
/// waits then poll as often, in its time, as they would on AWS).
pub fn interval(default: Duration) -> Duration {
    let poll = std::env::var("CA_A2A_FLOW_POLL_INTERVAL").ok();
    let scale = std::env::var("CA_A2A_FLOW_TIME_SCALE").ok();
    interval_from(default, poll.as_deref(), scale.as_deref())
}

fn interval_from(default: Duration, poll: Option<&str>, scale: Option<&str>) -> Duration {
    if let Some(every) = poll.and_then(|v| ca_a2a_flow_engine::duration::parse(v).ok()) {
        return every;
    }
    match scale.and_then(|s| s.parse::<f64>().ok()).filter(|s| s.is_finite() && *s >= 1.0) {
        Some(scale) => default.div_f64(scale),
        None => default,
    }
}

/// Deletes with `delete` until nothing holds the resource any more: while AWS
/// answers that something still depends on it (network interfaces AWS releases
/// minutes after the load balancer, task or database they served; a dependent
/// not gone yet), it tries again, saying what holds it, until the step's deadline.
pub async fn until_released<F, Fut>(ctx: &StepContext, what: &str, mut delete: F) -> Result<(), StepError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Deleted, StepError>>,
{
    let every = interval(Duration::from_secs(10));
    until(ctx, what, ctx.remaining(), every, || {
        let attempt = delete();
        async move {
            Ok(match attempt.await? {
                Deleted::Done => Poll::Ready(()),
                Deleted::Held(why) => Poll::Pending(format!("held by what AWS has not released yet ({why})")),
            })
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_polls_at_its_own_interval_at_the_given_one_or_as_often_in_a_faster_clock() {
        let ten = Duration::from_secs(10);
        assert_eq!(interval_from(ten, None, None), ten);
        assert_eq!(interval_from(ten, Some("200ms"), Some("20")), Duration::from_millis(200), "the interval wins");
        assert_eq!(interval_from(ten, None, Some("20")), Duration::from_millis(500), "AWS's 10 s at 20x");
        assert_eq!(interval_from(ten, None, Some("0.5")), ten, "a clock slower than AWS's is ignored");
        assert_eq!(interval_from(ten, None, Some("fast")), ten);
    }
}
