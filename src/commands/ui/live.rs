//! A run's page, live: server-sent events of its steps' states and its log.
//!
//! Each connection polls the store (every quarter second while the run goes
//! on) and sends what changed: `step` (a step's new state), `run` (the run's),
//! `changed` (the page fetches its changing parts again) and `log` (a line of
//! the event log). Log lines carry their event id; the stream's `id:` is the
//! cursor below which every line was sent, so a reconnecting page (its
//! `Last-Event-ID`) misses nothing, and drops the few lines it already has.

#[allow(unused_imports)]
use super::*;

use std::collections::HashMap;
use std::convert::Infallible;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use tokio_stream::StreamExt as _;

use super::page::{icon, label, state_of};

/// How often a connection looks at the store while the run goes on.
const POLL: Duration = Duration::from_millis(250);
/// And once it ended (a resume may start it again).
const POLL_ENDED: Duration = Duration::from_secs(2);
/// A comment line this often, so that proxies keep the stream open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub(super) async fn stream(State(ui): State<Ui>, UrlPath(id): UrlPath<String>, headers: HeaderMap) -> Response {
    if let Err(e) = ui.store.run(&id).await {
        return store_failed(&e);
    }
    let after = headers
        .get("last-event-id")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.trim().parse::<i64>().ok())
        .unwrap_or(0);
    let (tx, rx) = tokio::sync::mpsc::channel::<SseEvent>(256);
    tokio::spawn(feed(ui, id, after, tx));
    let events = tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, Infallible>);
    let mut response =
        Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive")).into_response();
    // A proxy in front (nginx) passes each event on at once instead of buffering the stream.
    response.headers_mut().insert("x-accel-buffering", axum::http::HeaderValue::from_static("no"));
    response
}

/// What tells a step's change: its state, attempt, error and next attempt.
fn signature(s: &StepRecord) -> String {
    format!(
        "{}|{}|{:?}|{:?}|{:?}",
        state_of(Some(s)),
        s.attempt,
        s.next_attempt_at,
        s.finished_at,
        s.error.as_ref().map(|e| &e.message)
    )
}

async fn feed(ui: Ui, id: String, after: i64, tx: tokio::sync::mpsc::Sender<SseEvent>) {
    let mut cursor = EventCursor::starting_after(after);
    let mut sent: HashMap<String, String> = HashMap::new();
    let mut run_sent = String::new();
    loop {
        let (run, steps) = match (ui.store.run(&id).await, ui.store.steps(&id).await) {
            (Ok(run), Ok(steps)) => (run, steps),
            (Err(ca_a2a_flow_engine::StoreError::RunNotFound(_)), _) => return,
            _ => {
                // The store is unreachable for a moment: the page keeps what it has.
                tokio::time::sleep(POLL_ENDED).await;
                if tx.is_closed() {
                    return;
                }
                continue;
            }
        };
        let mut changed = false;
        for s in &steps {
            let sig = signature(s);
            if sent.get(&s.step_id) == Some(&sig) {
                continue;
            }
            let state = state_of(Some(s));
            let data = json!({"id": s.step_id, "state": state, "icon": icon(state), "label": label(state), "attempt": s.attempt});
            if tx.send(SseEvent::default().event("step").data(data.to_string())).await.is_err() {
                return;
            }
            sent.insert(s.step_id.clone(), sig);
            changed = true;
        }
        let state = shown_status(&run);
        // Who drives it, and whether that lease still lives (a driver that died).
        let driver = run.lease.as_ref().map(|l| (&l.owner, l.expires_at > now_ms()));
        let run_sig = format!("{state}|{}|{driver:?}", run.cancel_requested);
        if run_sig != run_sent {
            let data = json!({"state": state, "icon": icon(state), "label": label(state)});
            if tx.send(SseEvent::default().event("run").data(data.to_string())).await.is_err() {
                return;
            }
            run_sent = run_sig;
            changed = true;
        }
        // (An event without data is never dispatched by a browser.)
        if changed && tx.send(SseEvent::default().event("changed").data("1")).await.is_err() {
            return;
        }
        let before = cursor.watermark;
        let mut from = cursor.watermark;
        loop {
            let Ok(batch) = ui.store.events(&id, None, from, 500).await else { break };
            for e in &batch {
                from = e.id;
                if !cursor.fresh(e.id) {
                    continue;
                }
                let line = json!({
                    "n": e.id,
                    "at": format_timestamp(e.at),
                    "step": e.step_id,
                    "level": e.level,
                    "message": e.message,
                });
                if tx.send(SseEvent::default().event("log").data(line.to_string())).await.is_err() {
                    return;
                }
            }
            if batch.len() < 500 {
                break;
            }
        }
        cursor.advance();
        if cursor.watermark != before {
            let mark =
                SseEvent::default().event("cursor").id(cursor.watermark.to_string()).data(cursor.watermark.to_string());
            if tx.send(mark).await.is_err() {
                return;
            }
        }
        let ended = run.status.is_terminal() || (run.status == RunStatus::Interrupted && run.lease.is_none());
        tokio::time::sleep(if ended { POLL_ENDED } else { POLL }).await;
        if tx.is_closed() {
            return;
        }
    }
}
