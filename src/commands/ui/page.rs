//! The pages, rendered on the server: the runs, and a run with its graph,
//! timeline, steps and log.

#[allow(unused_imports)]
use super::*;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use ca_a2a_flow_engine::store::AttemptRecord;

/// What a run's page shows, read from the store at once.
pub(super) struct View {
    pub run: RunRecord,
    pub steps: Vec<StepRecord>,
    pub attempts: Vec<AttemptRecord>,
    /// The last progress each running step reported.
    pub progress: BTreeMap<String, String>,
    pub waiting: Option<String>,
    pub now: i64,
}

impl View {
    pub async fn load(ui: &Ui, id: &str) -> Result<Self, ca_a2a_flow_engine::StoreError> {
        let run = ui.store.run(id).await?;
        let steps = ui.store.steps(id).await?;
        let attempts = ui.store.attempts(id).await?;
        let mut progress = BTreeMap::new();
        for s in steps.iter().filter(|s| s.status == StepStatus::Running) {
            if let Ok(Some(p)) = latest_progress(&ui.store, id, &s.step_id).await {
                progress.insert(s.step_id.clone(), p);
            }
        }
        let waiting = waiting_for(&ui.store, &run).await.ok().flatten();
        Ok(Self { run, steps, attempts, progress, waiting, now: now_ms() })
    }

    fn step(&self, id: &str) -> Option<&StepRecord> {
        self.steps.iter().find(|s| s.step_id == id)
    }

    /// The region the run works in: its `region` input.
    fn region(&self) -> Option<&str> {
        self.run.inputs.get("region").and_then(|r| r.as_str())
    }
}

/// A step's state as shown: `skipped` for a step whose `when` was false.
pub(super) fn state_of(s: Option<&StepRecord>) -> &'static str {
    match s {
        None => "pending",
        Some(s) if s.outputs.as_ref().is_some_and(ca_a2a_flow_engine::was_skipped) => "skipped",
        Some(s) => s.status.as_str(),
    }
}

/// A mark for each state, so that no state is told by colour alone.
pub(super) fn icon(state: &str) -> &'static str {
    match state {
        "succeeded" => "✓",
        "failed" => "✗",
        "running" => "▶",
        "retry_wait" => "↻",
        "blocked" => "⊘",
        "interrupted" => "⏸",
        "cancelled" => "■",
        "skipped" => "↷",
        "queued" => "…",
        _ => "○",
    }
}

/// A state as words.
pub(super) fn label(state: &str) -> &str {
    match state {
        "retry_wait" => "waiting to retry",
        other => other,
    }
}

pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A part of a URL's query.
use ca_a2a_flow_steps::aws::facts::url_part as q;

fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · ca-a2a-flow</title><link rel=\"stylesheet\" href=\"/assets/app.css\"><script src=\"/assets/app.js\" defer></script></head>\
         <body><header class=\"top\"><a href=\"/\" class=\"brand\">ca-a2a-flow</a></header><main>{body}</main></body></html>\n",
        esc(title)
    )
}

fn badge(state: &str) -> String {
    format!(
        "<span class=\"badge s-{state}\"><span aria-hidden=\"true\">{}</span> {}</span>",
        icon(state),
        esc(label(state))
    )
}

fn driver(run: &RunRecord, now: i64) -> String {
    match &run.lease {
        Some(l) if l.expires_at > now && !run.status.is_terminal() => {
            format!("pid {} on {} (lease for {} more)", l.pid, esc(&l.host), fmt_ms(l.expires_at - now))
        }
        _ => "—".into(),
    }
}

pub(super) fn runs(runs: &[RunRecord], filter: &RunsFilter) -> String {
    let now = now_ms();
    let more = runs.len() as i64 > PAGE;
    let shown = &runs[..runs.len().min(PAGE as usize)];
    let mut body = String::from(
        "<h1>Runs</h1><form class=\"filter\" method=\"get\" action=\"/\"><label>Status <select name=\"status\"><option value=\"\">any</option>",
    );
    for s in ["pending", "running", "succeeded", "failed", "interrupted", "cancelled"] {
        let selected = if filter.status.as_deref() == Some(s) { " selected" } else { "" };
        let _ = write!(body, "<option{selected}>{s}</option>");
    }
    let _ = write!(
        body,
        "</select></label> <label>Workflow <input name=\"workflow\" value=\"{}\" placeholder=\"any\"></label> <button>Filter</button></form>",
        esc(filter.workflow.as_deref().unwrap_or(""))
    );
    if shown.is_empty() {
        body.push_str(
            "<p class=\"empty\">No runs here. Start one with <code>ca-a2a-flow run workflows/demo.yaml</code>.</p>",
        );
        return layout("Runs", &body);
    }
    body.push_str("<table class=\"runs\"><thead><tr><th>Run</th><th>Status</th><th>Workflow</th><th>Stack</th><th>Started</th><th>Duration</th><th>Driven by</th><th>Error</th></tr></thead><tbody>");
    for r in shown {
        let state = shown_status(r);
        let took = r.finished_at.unwrap_or(now) - r.created_at;
        let _ = write!(
            body,
            "<tr data-run=\"{id}\"><td><a href=\"/runs/{qid}\">{id}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"error\">{}</td></tr>",
            badge(state),
            esc(&r.workflow_name),
            esc(r.stack.as_deref().unwrap_or("—")),
            format_timestamp(r.created_at),
            fmt_ms(took),
            driver(r, now),
            esc(r.error.as_deref().map(first_line).unwrap_or("")),
            id = esc(&r.id),
            qid = q(&r.id),
        );
    }
    body.push_str("</tbody></table><nav class=\"pages\">");
    let keep = |extra: &str| {
        let mut parts = Vec::new();
        if let Some(s) = filter.status.as_deref().filter(|s| !s.is_empty()) {
            parts.push(format!("status={}", q(s)));
        }
        if let Some(w) = filter.workflow.as_deref().filter(|w| !w.is_empty()) {
            parts.push(format!("workflow={}", q(w)));
        }
        if !extra.is_empty() {
            parts.push(extra.to_string());
        }
        if parts.is_empty() { "/".to_string() } else { format!("/?{}", parts.join("&")) }
    };
    if filter.before.is_some() {
        let _ = write!(body, "<a href=\"{}\" rel=\"first\">Newest</a> ", esc(&keep("")));
    }
    if more {
        let last = shown.last().expect("a page of runs");
        let _ = write!(
            body,
            "<a href=\"{}\" rel=\"next\">Older →</a>",
            esc(&keep(&format!("before={}.{}", last.created_at, q(&last.id))))
        );
    }
    body.push_str("</nav>");
    layout("Runs", &body)
}

pub(super) fn run(view: &View, ui: &Ui) -> String {
    let run = &view.run;
    let mut body = format!(
        "<div class=\"run\" data-run=\"{}\" data-actions=\"{}\"><h1>Run <code>{}</code></h1>",
        esc(&run.id),
        ui.allow_actions,
        esc(&run.id)
    );
    body.push_str("<p id=\"action-said\" role=\"status\"></p>");
    body.push_str(&parts(view, ui));
    body.push_str(&format!(
        "<section><h2>Graph</h2><div id=\"graph\" class=\"scroll\">{}</div></section>",
        graph(view)
    ));
    body.push_str("<section class=\"logs\"><h2>Log</h2><label>Step <select id=\"log-step\"><option value=\"\">every step</option>");
    for s in &run.definition.steps {
        let _ = write!(body, "<option value=\"{}\">{}</option>", esc(&s.id), esc(&s.id));
    }
    body.push_str(
        "</select></label><div id=\"log\" class=\"log\" role=\"log\" aria-live=\"polite\"></div></section></div>",
    );
    layout(&format!("Run {}", run.id), &body)
}

/// What changes while the run goes on: the summary, actions, timeline and steps.
pub(super) fn parts(view: &View, ui: &Ui) -> String {
    format!(
        "<section id=\"summary\">{}</section><section id=\"actions\">{}</section><section id=\"timeline\"><h2>Timeline</h2><div class=\"scroll\">{}</div></section><section id=\"steps\"><h2>Steps</h2>{}</section>",
        summary(view),
        actions(view, ui),
        timeline(view),
        steps(view)
    )
}

fn summary(view: &View) -> String {
    let run = &view.run;
    let took = run.finished_at.unwrap_or(view.now) - run.created_at;
    let done = view.steps.iter().filter(|s| s.status == StepStatus::Succeeded).count();
    let mut out = format!(
        "<dl class=\"facts\"><dt>Status</dt><dd id=\"run-status\">{}</dd><dt>Workflow</dt><dd>{} <small>{}</small></dd><dt>Stack</dt><dd>{}</dd><dt>Started</dt><dd>{} ({} ago)</dd><dt>Duration</dt><dd>{}</dd><dt>Steps</dt><dd>{done} of {} succeeded</dd><dt>Driven by</dt><dd>{}</dd>",
        badge(shown_status(run)),
        esc(&run.workflow_name),
        esc(&run.workflow_file),
        esc(run.stack.as_deref().unwrap_or("—")),
        format_timestamp(run.created_at),
        fmt_ms(view.now - run.created_at),
        fmt_ms(took),
        run.definition.steps.len(),
        driver(run, view.now),
    );
    if let Some(w) = &view.waiting {
        let _ = write!(out, "<dt>Waits</dt><dd>{}</dd>", esc(w));
    }
    if let Some(e) = &run.error {
        let _ = write!(out, "<dt>Error</dt><dd class=\"error\">{}</dd>", esc(e));
    }
    out.push_str("</dl>");
    out
}

fn actions(view: &View, ui: &Ui) -> String {
    let run = &view.run;
    let mut out = String::new();
    if ui.allow_actions {
        let driven = run.lease.as_ref().is_some_and(|l| l.expires_at > view.now);
        if !run.status.is_terminal() && !run.cancel_requested {
            let _ = write!(
                out,
                "<button class=\"action danger\" data-action=\"cancel\" data-confirm=\"Cancel run {id}? Steps in progress stop; what they created stays, for `destroy`.\">Cancel run</button> ",
                id = esc(&run.id)
            );
        }
        if matches!(run.status, RunStatus::Failed | RunStatus::Interrupted) && !driven {
            let approve: Vec<&str> =
                run.definition.steps.iter().filter(|s| s.approve.is_some()).map(|s| s.id.as_str()).collect();
            let approval = if approve.is_empty() {
                String::new()
            } else {
                format!(" This approves the irreversible steps: {}.", approve.join(", "))
            };
            let _ = write!(
                out,
                "<button class=\"action\" data-action=\"resume\" data-confirm=\"Resume run {id} from its last checkpoint?{}\">Resume run</button>",
                esc(&approval),
                id = esc(&run.id)
            );
        }
    }
    if run.cancel_requested && !run.status.is_terminal() {
        out.push_str("<p class=\"note\">Cancel requested: the process driving the run stops it.</p>");
    }
    let actions = ui.actions.lock().unwrap_or_else(|p| p.into_inner());
    for a in actions.iter().filter(|a| a.run == run.id) {
        let text = std::fs::read_to_string(&a.output).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(12).collect::<Vec<_>>().into_iter().rev().collect();
        let state = a.exit.map_or_else(|| "running".to_string(), |code| format!("ended (exit {code})"));
        let _ = write!(
            out,
            "<div class=\"started\"><p><code>ca-a2a-flow {} {}</code> started from this page at {}: process {}, {}</p><pre>{}</pre></div>",
            a.what,
            esc(&a.run),
            format_timestamp(a.started_at),
            a.pid,
            state,
            esc(&tail.join("\n"))
        );
    }
    out
}

/// Each step's depth: the longest chain of needs above it.
fn depths(wf: &Workflow) -> HashMap<&str, usize> {
    let mut depth: HashMap<&str, usize> = HashMap::new();
    // Steps are in dependency order after load; a pass per step at most.
    for _ in 0..=wf.steps.len() {
        let mut changed = false;
        for s in &wf.steps {
            let d = s.needs.iter().filter_map(|n| depth.get(n.as_str())).map(|d| d + 1).max().unwrap_or(0);
            if depth.get(s.id.as_str()) != Some(&d) {
                depth.insert(s.id.as_str(), d);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    depth
}

const NODE_W: f64 = 200.0;
const NODE_H: f64 = 44.0;
const GAP_X: f64 = 56.0;
const GAP_Y: f64 = 14.0;

fn short(s: &str, max: usize) -> String {
    if s.chars().count() <= max { s.to_string() } else { format!("{}…", s.chars().take(max - 1).collect::<String>()) }
}

/// The dependency graph as SVG: a column per depth, each step's state as a
/// class, a mark and a word.
pub(super) fn graph(view: &View) -> String {
    let wf = &view.run.definition;
    let depth = depths(wf);
    let columns = depth.values().copied().max().map_or(0, |d| d + 1);
    let mut column: Vec<Vec<&StepDef>> = vec![Vec::new(); columns];
    for s in &wf.steps {
        column[depth[s.id.as_str()]].push(s);
    }
    // Each column ordered by where the steps it needs sit: fewer crossings.
    let mut row: HashMap<&str, f64> = HashMap::new();
    for steps in &mut column {
        let key = |s: &StepDef| {
            let ys: Vec<f64> = s.needs.iter().filter_map(|n| row.get(n.as_str()).copied()).collect();
            if ys.is_empty() { f64::MAX } else { ys.iter().sum::<f64>() / ys.len() as f64 }
        };
        steps.sort_by(|a, b| key(a).total_cmp(&key(b)));
        for (i, s) in steps.iter().enumerate() {
            row.insert(s.id.as_str(), i as f64);
        }
    }
    let rows = column.iter().map(Vec::len).max().unwrap_or(0);
    let width = columns as f64 * (NODE_W + GAP_X) + 8.0;
    let height = rows as f64 * (NODE_H + GAP_Y) + 8.0;
    let at = |id: &str| (depth[id] as f64 * (NODE_W + GAP_X) + 4.0, row[id] * (NODE_H + GAP_Y) + 4.0);
    let mut svg = format!(
        "<svg class=\"graph\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"dependency graph of {} steps\">",
        wf.steps.len()
    );
    for s in &wf.steps {
        let (x2, y2) = at(&s.id);
        for n in &s.needs {
            if !row.contains_key(n.as_str()) {
                continue;
            }
            let (x1, y1) = at(n);
            let (sx, sy, ex, ey) = (x1 + NODE_W, y1 + NODE_H / 2.0, x2, y2 + NODE_H / 2.0);
            let mid = (sx + ex) / 2.0;
            let _ = write!(
                svg,
                "<path class=\"edge\" d=\"M{sx:.0},{sy:.0} C{mid:.0},{sy:.0} {mid:.0},{ey:.0} {ex:.0},{ey:.0}\"/>"
            );
        }
    }
    for s in &wf.steps {
        let (x, y) = at(&s.id);
        let state = state_of(view.step(&s.id));
        let _ = write!(
            svg,
            "<a href=\"#step-{anchor}\"><g class=\"node s-{state}\" data-step=\"{id}\" transform=\"translate({x:.0},{y:.0})\"><title>{id} ({kind}): {label}</title>\
             <rect width=\"{NODE_W}\" height=\"{NODE_H}\" rx=\"6\"/><text class=\"icon\" x=\"10\" y=\"27\">{icon}</text>\
             <text class=\"name\" x=\"30\" y=\"19\">{short}</text><text class=\"state\" x=\"30\" y=\"35\">{label}</text></g></a>",
            anchor = esc(&super::page::anchor(&s.id)),
            id = esc(&s.id),
            kind = esc(&s.uses),
            label = esc(label(state)),
            icon = icon(state),
            short = esc(&short(&s.id, 24)),
        );
    }
    svg.push_str("</svg>");
    svg
}

/// An element id for a step (its id may hold brackets and quotes).
pub(super) fn anchor(step: &str) -> String {
    step.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

const TIME_W: f64 = 900.0;
const LABEL_W: f64 = 220.0;
const ROW_H: f64 = 22.0;

/// Every attempt on one time axis: a bar per attempt, its backoff after a
/// retried one, the attempt running now.
pub(super) fn timeline(view: &View) -> String {
    struct Bar {
        attempt: u32,
        start: i64,
        end: i64,
        outcome: String,
        note: String,
        backoff: Option<i64>,
    }
    let mut bars: BTreeMap<&str, Vec<Bar>> = BTreeMap::new();
    for a in &view.attempts {
        let end = a.finished_at.unwrap_or(view.now);
        let outcome = if a.finished_at.is_none() { "running".to_string() } else { a.outcome.clone() };
        let note = a.error.as_ref().map(|e| first_line(&e.message).to_string()).unwrap_or_default();
        bars.entry(a.step_id.as_str()).or_default().push(Bar {
            attempt: a.attempt,
            start: a.started_at,
            end,
            outcome,
            note,
            backoff: a.retry_delay_ms.filter(|_| a.outcome == "retry"),
        });
    }
    for s in view.steps.iter().filter(|s| s.status == StepStatus::Running) {
        let Some(start) = s.attempt_started_at else { continue };
        let list = bars.entry(s.step_id.as_str()).or_default();
        if !list.iter().any(|b| b.attempt == s.attempt) {
            list.push(Bar {
                attempt: s.attempt,
                start,
                end: view.now,
                outcome: "running".into(),
                note: view.progress.get(&s.step_id).cloned().unwrap_or_default(),
                backoff: None,
            });
        }
    }
    if bars.is_empty() {
        return "<p class=\"empty\">No step has started yet.</p>".into();
    }
    let t0 = view.run.created_at.min(bars.values().flatten().map(|b| b.start).min().unwrap_or(view.run.created_at));
    let t1 = bars
        .values()
        .flatten()
        .map(|b| b.end.max(b.end + b.backoff.unwrap_or(0).min(view.now - b.end).max(0)))
        .max()
        .unwrap_or(view.now)
        .max(view.run.finished_at.unwrap_or(0))
        .max(t0 + 1);
    let span = (t1 - t0) as f64;
    let x = |t: i64| LABEL_W + (t - t0) as f64 / span * TIME_W;
    // Rows in the order the steps first started.
    let mut order: Vec<(&str, i64)> =
        bars.iter().map(|(id, b)| (*id, b.iter().map(|b| b.start).min().unwrap_or(0))).collect();
    order.sort_by_key(|(id, start)| (*start, id.to_string()));
    let height = (order.len() as f64 + 1.0) * ROW_H + 6.0;
    let width = LABEL_W + TIME_W + 10.0;
    let mut svg = format!(
        "<svg class=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"timeline of every attempt\">"
    );
    for i in 0..=4 {
        let t = t0 + (span * i as f64 / 4.0) as i64;
        let tx = x(t);
        let _ = write!(
            svg,
            "<line class=\"tick\" x1=\"{tx:.1}\" y1=\"0\" x2=\"{tx:.1}\" y2=\"{height}\"/><text class=\"axis\" x=\"{:.1}\" y=\"{height:.0}\" dy=\"-3\">+{}</text>",
            (tx - if i == 4 { 34.0 } else { 0.0 }).max(LABEL_W),
            fmt_ms(t - t0)
        );
    }
    for (row, (id, _)) in order.iter().enumerate() {
        let y = row as f64 * ROW_H + 3.0;
        let _ = write!(svg, "<text class=\"row\" x=\"4\" y=\"{:.0}\">{}</text>", y + 14.0, esc(&short(id, 30)));
        for b in &bars[id] {
            let (bx, bw) = (x(b.start), (x(b.end) - x(b.start)).max(2.0));
            let _ = write!(
                svg,
                "<rect class=\"attempt o-{outcome}\" data-step=\"{sid}\" data-attempt=\"{n}\" x=\"{bx:.1}\" y=\"{y:.0}\" width=\"{bw:.1}\" height=\"{h:.0}\" rx=\"2\"><title>{sid} attempt {n}: {outcome}, {took}{note}</title></rect>",
                outcome = esc(&b.outcome),
                sid = esc(id),
                n = b.attempt,
                h = ROW_H - 6.0,
                took = fmt_ms(b.end - b.start),
                note = if b.note.is_empty() { String::new() } else { format!(" — {}", esc(&b.note)) },
            );
            if let Some(delay) = b.backoff {
                let until = (b.end + delay).min(t1);
                let (wx, ww) = (x(b.end), (x(until) - x(b.end)).max(1.0));
                let _ = write!(
                    svg,
                    "<rect class=\"backoff\" data-step=\"{sid}\" x=\"{wx:.1}\" y=\"{:.0}\" width=\"{ww:.1}\" height=\"{:.0}\"><title>{sid}: backoff {} before attempt {}</title></rect>",
                    y + 5.0,
                    ROW_H - 16.0,
                    fmt_ms(delay),
                    b.attempt + 1,
                    sid = esc(id),
                );
            }
        }
    }
    svg.push_str("</svg>");
    svg
}

/// The region of an ARN, if the value is one.
fn arn_region(outputs: &BTreeMap<String, serde_json::Value>) -> Option<&str> {
    let arn = outputs.get("arn")?.as_str()?;
    arn.split(':').nth(3).filter(|r| !r.is_empty())
}

fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

fn steps(view: &View) -> String {
    let run = &view.run;
    let mut out = String::new();
    for def in &run.definition.steps {
        let record = view.step(&def.id);
        let state = state_of(record);
        let attempt = record.map(|r| r.attempt).unwrap_or(0);
        let took = record.and_then(step_duration).map(fmt_ms).unwrap_or_default();
        let note = record.map(|r| note(view, def, r)).unwrap_or_default();
        let _ = write!(
            out,
            "<details class=\"step s-{state}\" id=\"step-{anchor}\" data-step=\"{id}\"><summary>{} <code>{id}</code> <span class=\"kind\">{kind}</span> <span class=\"attempts\">attempt {attempt}/{max}</span> <span class=\"took\">{took}</span> <span class=\"note\">{}</span></summary><div class=\"body\">",
            badge(state),
            esc(&note),
            anchor = esc(&anchor(&def.id)),
            id = esc(&def.id),
            kind = esc(&def.uses),
            max = def.retry.max_attempts,
        );
        if let Some(d) = &def.description {
            let _ = write!(out, "<p>{}</p>", esc(d));
        }
        if let Some(r) = record {
            if let Some(e) = &r.error {
                let _ = write!(out, "<p class=\"error\"><strong>Error:</strong> {}</p>", esc(&e.message));
                if let Some(h) = &e.hint {
                    let _ = write!(out, "<p class=\"hint\"><strong>Hint:</strong> {}</p>", esc(h));
                }
            }
        }
        let link = record.and_then(|r| r.outputs.as_ref()).and_then(|o| {
            let region = arn_region(o).or(view.region())?;
            ca_a2a_flow_steps::facts(&def.uses)?.console(o, region)
        });
        if let Some(url) = link {
            let _ = write!(
                out,
                "<p><a class=\"console\" href=\"{}\" target=\"_blank\" rel=\"noopener noreferrer\">Open in the AWS console ↗</a></p>",
                esc(&url)
            );
        }
        let _ = write!(
            out,
            "<h3>Parameters</h3><pre>{}</pre><p class=\"meta\">timeout {}, attempts up to {}{}; defined at {}</p>",
            esc(&pretty(&def.with)),
            fmt_ms(def.timeout.as_millis() as i64),
            def.retry.max_attempts,
            def.needs.is_empty().then(String::new).unwrap_or_else(|| format!("; needs {}", esc(&def.needs.join(", ")))),
            esc(&def.source)
        );
        if let Some(outputs) = record.and_then(|r| r.outputs.as_ref()).filter(|o| !o.is_empty()) {
            // Secret outputs are never stored; masked here too, whatever a store holds.
            let shown: BTreeMap<&String, serde_json::Value> = outputs
                .iter()
                .map(|(k, v)| {
                    let v = if def.secret_outputs.contains(k) {
                        serde_json::json!(ca_a2a_flow_engine::redact::MASK)
                    } else {
                        v.clone()
                    };
                    (k, v)
                })
                .collect();
            let _ = write!(
                out,
                "<h3>Outputs</h3><pre>{}</pre>",
                esc(&serde_json::to_string_pretty(&shown).unwrap_or_default())
            );
        }
        let attempts: Vec<&AttemptRecord> = view.attempts.iter().filter(|a| a.step_id == def.id).collect();
        if !attempts.is_empty() {
            out.push_str("<h3>Attempts</h3><table class=\"attempts\"><thead><tr><th>#</th><th>Outcome</th><th>Started</th><th>Took</th><th>Error</th><th>Hint</th><th>AWS request id</th></tr></thead><tbody>");
            for a in attempts {
                let error = a.error.as_ref();
                let message = error.map(|e| e.message.as_str()).unwrap_or("");
                let request = request_id(message);
                let _ = write!(
                    out,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"error\">{}</td><td>{}</td><td><code>{}</code></td></tr>",
                    a.attempt,
                    esc(&a.outcome),
                    format_timestamp(a.started_at),
                    a.finished_at.map(|f| fmt_ms(f - a.started_at)).unwrap_or_else(|| "running".into()),
                    esc(message),
                    esc(error.and_then(|e| e.hint.as_deref()).unwrap_or("")),
                    esc(request)
                );
            }
            out.push_str("</tbody></table>");
        }
        out.push_str("</div></details>");
    }
    out
}

/// The AWS request id an error message carries (the AWS kinds' classifier
/// ends each message with `(request id …)`), or "".
fn request_id(message: &str) -> &str {
    message.rsplit_once("(request id ").map(|(_, rest)| rest.split(')').next().unwrap_or("")).unwrap_or("")
}

/// What a step does now, in a line: what a running step waits for and how
/// long of how long, when a retry comes, why it failed.
fn note(view: &View, def: &StepDef, s: &StepRecord) -> String {
    match s.status {
        StepStatus::Running => {
            let since = s.first_started_at.map(|t| fmt_ms(view.now - t)).unwrap_or_default();
            let of = fmt_ms(def.timeout.as_millis() as i64);
            match view.progress.get(&s.step_id) {
                Some(p) => format!("{p} · {since} of {of}"),
                None => format!("running {since} of {of}"),
            }
        }
        StepStatus::RetryWait => {
            let next = s.next_attempt_at.map(|t| fmt_ms(t - view.now)).unwrap_or_default();
            let why = s.error.as_ref().map(|e| first_line(&e.message)).unwrap_or("");
            format!("next attempt in {next}; last error: {why}")
        }
        _ if state_of(Some(s)) == "skipped" => "skipped: `when` is false, or a step it needs was skipped".into(),
        _ => s.error.as_ref().map(|e| first_line(&e.message).to_string()).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_s_aws_request_id_is_read_from_its_error() {
        let message = "ec2:CreateNatGateway failed: NatGatewayLimitExceeded: too many (request id 8f1c-22ab)";
        assert_eq!(request_id(message), "8f1c-22ab");
        assert_eq!(request_id("exit status 1"), "");
    }

    #[test]
    fn markup_in_a_stored_value_is_shown_as_text() {
        assert_eq!(esc("<img src=x onerror=\"a('b')\">&"), "&lt;img src=x onerror=&quot;a(&#39;b&#39;)&quot;&gt;&amp;");
    }
}
