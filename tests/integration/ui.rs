//! `ca-a2a-flow ui`: the page of runs, in a real headless Chromium and over
//! plain HTTP, against real state stores.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ca_a2a_flow_engine::{RunStatus, StepStatus};

use crate::support::aws::{deploy, secret_values, unique_stack};
use crate::support::web::{Browser, UiServer, http};
use crate::support::{Env, both};

/// A step that waits for the file `go`, then one that needs it.
const GATED: &str = r#"name: gated
steps:
  - id: gate
    uses: shell
    timeout: 5m
    with:
      run: |
        echo "waiting for go"
        while [ ! -f go ]; do sleep 0.05; done
        echo "went"
  - id: after
    uses: shell
    needs: [gate]
    with:
      run: echo after
"#;

/// Starts the gated workflow and waits until its gate runs; returns the run's id.
fn a_run_waiting_at_its_gate(env: &Env) -> (std::process::Child, String) {
    let wf = env.write("gated.yaml", GATED);
    let child = env.spawn(&["run", wf.to_str().unwrap()], &[]);
    let mut id = String::new();
    env.wait_until("the gate to run", Duration::from_secs(60), || {
        let Some(run) = env.runs().into_iter().next() else { return false };
        id = run.id.clone();
        env.steps(&id).iter().any(|s| s.step_id == "gate" && s.status == StepStatus::Running)
    });
    (child, id)
}

/// The state the page's graph shows for `step`.
fn node_state_js(step: &str) -> String {
    format!(
        "const n = [...document.querySelectorAll('#graph .node')].find(n => n.dataset.step === '{step}'); \
         return n ? n.getAttribute('class') + ' ' + n.querySelector('.state').textContent : null;"
    )
}

both!(a_step_that_finishes_is_shown_finished_within_a_second_without_a_reload, |env: &Env| {
    let (mut child, run) = a_run_waiting_at_its_gate(env);
    let ui = UiServer::start(env, &[]);
    let browser = Browser::start();
    browser.open(&ui.url(&format!("/runs/{run}")));
    let shown = browser.wait_for("the gate shown running", Duration::from_secs(10), &node_state_js("gate"));
    assert!(shown.as_str().unwrap().contains("s-running"), "{shown}");
    // What the running step waits for, how long of how long, and its parameters as written.
    let details = browser.script("return document.getElementById('step-gate').textContent;");
    let details = details.as_str().unwrap();
    assert!(details.contains("running") && details.contains(" of 5m"), "{details}");
    assert!(details.contains("while [ ! -f go ]"), "{details}");
    browser.script("window.sameDocument = 'yes'; return true;");

    std::fs::write(env.path("go"), "").unwrap();
    env.wait_until("the gate to succeed in the store", Duration::from_secs(30), || {
        env.step(&run, "gate").status == StepStatus::Succeeded
    });
    let committed = Instant::now();
    browser.wait_for(
        "the gate shown succeeded",
        Duration::from_secs(1),
        &format!(
            "const s = (() => {{ {} }})(); return s && s.includes('s-succeeded') && s.includes('succeeded');",
            node_state_js("gate")
        ),
    );
    let took = committed.elapsed();
    assert_eq!(browser.script("return window.sameDocument;"), "yes", "the page was not reloaded");
    assert!(took < Duration::from_secs(1), "shown {took:?} after the store recorded it");
    // The step's log came through the stream as well.
    browser.wait_for(
        "the gate's log line",
        Duration::from_secs(5),
        "return document.getElementById('log').textContent.includes('went');",
    );
    assert!(child.wait().unwrap().success());
});

both!(the_timeline_shows_a_retried_step_s_two_attempts_and_the_backoff_between, |env: &Env| {
    let wf = env.write(
        "flaky.yaml",
        r#"name: flaky
steps:
  - id: flaky
    uses: shell
    retry: { max_attempts: 3, initial_delay: 300ms }
    with:
      run: |
        if [ ! -f tried ]; then touch tried; echo "first attempt fails" >&2; exit 1; fi
        echo "second attempt succeeds"
"#,
    );
    env.run(&["run", wf.to_str().unwrap()]).expect_success();
    let run = env.only_run().id;
    let ui = UiServer::start(env, &[]);
    let browser = Browser::start();
    browser.open(&ui.url(&format!("/runs/{run}")));
    let bars = browser.wait_for(
        "the timeline",
        Duration::from_secs(10),
        "const bars = [...document.querySelectorAll('#timeline rect.attempt')].filter(b => b.dataset.step === 'flaky'); \
         return bars.length ? bars.map(b => b.dataset.attempt + ':' + b.getAttribute('class')).join(',') : null;",
    );
    assert_eq!(bars, "1:attempt o-retry,2:attempt o-succeeded", "both attempts, the first retried");
    let backoff = browser.script("return document.querySelectorAll('#timeline rect.backoff').length;");
    assert_eq!(backoff, 1, "the wait before the second attempt");
    let details = browser.script("return document.getElementById('step-flaky').textContent;");
    assert!(
        details.as_str().unwrap().contains("exit status 1") || details.as_str().unwrap().contains("exit"),
        "{details}"
    );
});

both!(with_actions_allowed_the_page_cancels_a_run_once_confirmed, |env: &Env| {
    let (mut child, run) = a_run_waiting_at_its_gate(env);
    let ui = UiServer::start(env, &["--allow-actions"]);
    let browser = Browser::start();
    browser.open(&ui.url(&format!("/runs/{run}")));
    browser.wait_for(
        "the cancel button",
        Duration::from_secs(10),
        "return !!document.querySelector('button[data-action=cancel]');",
    );
    browser.script(
        "window.asked = null; window.confirm = (m) => { window.asked = m; return true; }; \
         document.querySelector('button[data-action=cancel]').click(); return true;",
    );
    env.wait_until("the run to be cancelled", Duration::from_secs(60), || {
        env.run_record(&run).status == RunStatus::Cancelled
    });
    let asked = browser.script("return window.asked;");
    assert!(asked.as_str().is_some_and(|a| a.contains(&run)), "the page asked first: {asked}");
    assert!(!child.wait().unwrap().success(), "the run's own process ended it cancelled");
    browser.wait_for(
        "the page shows it cancelled",
        Duration::from_secs(10),
        "return document.getElementById('run-status').textContent.includes('cancelled');",
    );
});

both!(without_actions_the_page_has_no_cancel_button_and_the_endpoint_refuses, |env: &Env| {
    let (mut child, run) = a_run_waiting_at_its_gate(env);
    let ui = UiServer::start(env, &[]);
    let browser = Browser::start();
    browser.open(&ui.url(&format!("/runs/{run}")));
    browser.wait_for("the page", Duration::from_secs(10), &node_state_js("gate"));
    assert_eq!(browser.script("return document.querySelectorAll('button[data-action]').length;"), 0);
    let refused = http("POST", &ui.url(&format!("/runs/{run}/cancel")), &[("X-CA-A2A-Flow-Action", "cancel")], None);
    assert_eq!(refused.status, 403, "{refused:?}");
    assert!(refused.body.contains("--allow-actions"), "{}", refused.body);
    assert_eq!(env.run_record(&run).status, RunStatus::Running, "nothing was cancelled");
    std::fs::write(env.path("go"), "").unwrap();
    assert!(child.wait().unwrap().success());
});

both!(with_actions_allowed_a_failed_run_is_resumed_by_a_process_the_page_shows, |env: &Env| {
    let wf = env.write(
        "needs-fix.yaml",
        "name: needs-fix\nsteps:\n  - id: check\n    uses: shell\n    with:\n      run: test -f fixed\n",
    );
    env.run(&["run", wf.to_str().unwrap()]).expect_code(1);
    let run = env.only_run().id;
    let ui = UiServer::start(env, &["--allow-actions"]);
    assert!(
        ui.get(&format!("/runs/{run}")).body.contains("data-action=\"resume\""),
        "a resume button for a failed run"
    );
    std::fs::write(env.path("fixed"), "").unwrap();
    let started = http("POST", &ui.url(&format!("/runs/{run}/resume")), &[("X-CA-A2A-Flow-Action", "resume")], None);
    assert_eq!(started.status, 202, "{started:?}");
    env.wait_until("the resumed run to succeed", Duration::from_secs(60), || {
        env.run_record(&run).status == RunStatus::Succeeded
    });
    let page = ui.get(&format!("/runs/{run}")).body;
    assert!(page.contains(&format!("ca-a2a-flow resume {run}</code> started from this page")), "{page}");
    assert!(!page.contains("data-action=\"resume\""), "no resume button once it succeeded");
    let again = http("POST", &ui.url(&format!("/runs/{run}/resume")), &[("X-CA-A2A-Flow-Action", "resume")], None);
    assert_eq!(again.status, 409, "a run that succeeded is not resumed: {again:?}");
});

#[test]
fn an_action_asked_without_the_page_s_header_is_refused_even_when_allowed() {
    let env = Env::sqlite();
    let (mut child, run) = a_run_waiting_at_its_gate(&env);
    let ui = UiServer::start(&env, &["--allow-actions"]);
    // What a form of another site could send: no custom header.
    let forged = http("POST", &ui.url(&format!("/runs/{run}/cancel")), &[("Origin", "http://evil.example")], None);
    assert_eq!(forged.status, 403, "{forged:?}");
    assert_eq!(env.run_record(&run).status, RunStatus::Running);
    std::fs::write(env.path("go"), "").unwrap();
    assert!(child.wait().unwrap().success());
}

#[test]
fn beyond_loopback_the_page_needs_a_token_and_answers_only_with_it() {
    let env = Env::sqlite();
    let refused = env.run(&["ui", "--listen", "0.0.0.0:0"]);
    refused.expect_code(2);
    assert!(refused.stderr.contains("--token"), "{}", refused.stderr);

    let token = "a-token-of-enough-length-42";
    let ui = UiServer::start(&env, &["--token", token]);
    assert_eq!(ui.get("/").status, 401, "no token, no page");
    let wrong = http("GET", &ui.url("/"), &[("Authorization", "Bearer not-the-token-at-all")], None);
    assert_eq!(wrong.status, 401);
    let bearer = http("GET", &ui.url("/"), &[("Authorization", &format!("Bearer {token}"))], None);
    assert_eq!(bearer.status, 200);
    let first = ui.get(&format!("/?token={token}"));
    assert_eq!(first.status, 303, "the token leaves the address bar: {first:?}");
    let cookie = first
        .head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .expect("the token is kept in a cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert!(first.head.contains("HttpOnly") && first.head.contains("SameSite=Strict"), "{}", first.head);
    assert_eq!(http("GET", &ui.url("/"), &[("Cookie", &cookie)], None).status, 200);
    // The redirect stays on this server.
    let away = ui.get(&format!("//evil.example/?token={token}"));
    assert!(away.head.lines().any(|l| l == "location: /"), "{}", away.head);
    // A token a cookie cannot carry is refused at start.
    let odd = env.run(&["ui", "--listen", "127.0.0.1:0", "--token", "sixteen chars; and more"]);
    odd.expect_code(2);
}

#[test]
fn a_loopback_page_answers_only_to_loopback_names() {
    let env = Env::sqlite();
    let ui = UiServer::start(&env, &[]);
    assert_eq!(ui.get("/").status, 200);
    // A page of another site whose name was rebound to 127.0.0.1 says its own name.
    let rebound = http("GET", &ui.url("/"), &[("Host", "evil.example")], None);
    assert_eq!(rebound.status, 421, "{rebound:?}");
}

#[test]
fn the_runs_page_goes_through_ten_thousand_runs_newest_first_fifty_at_a_time_from_the_index() {
    let env = Env::sqlite();
    let wf = env.write("one.yaml", "name: one\nsteps:\n  - id: a\n    uses: noop\n");
    env.run(&["run", wf.to_str().unwrap()]).expect_success();
    env.copy_run_until(&env.only_run().id, 10_000);
    let failed = env.runs_all().into_iter().filter(|r| r.status == RunStatus::Failed).count();
    assert!(failed > 0, "some copies are failed runs, to filter on");

    let ui = UiServer::start(&env, &[]);
    let mut seen: Vec<String> = Vec::new();
    let mut next = Some("/".to_string());
    let mut pages = 0;
    while let Some(path) = next {
        let page = ui.get(&path);
        assert_eq!(page.status, 200, "{path}");
        let rows: Vec<String> =
            page.body.split("<tr data-run=\"").skip(1).map(|r| r.split('"').next().unwrap().to_string()).collect();
        assert!(rows.len() <= 50, "a page holds at most 50 runs");
        seen.extend(rows);
        pages += 1;
        next = page.body.find("\" rel=\"next\"").map(|end| {
            let start = page.body[..end].rfind("href=\"").expect("the link's address") + 6;
            page.body[start..end].replace("&amp;", "&")
        });
    }
    assert_eq!(pages, 200);
    let distinct: BTreeSet<&String> = seen.iter().collect();
    assert_eq!((seen.len(), distinct.len()), (10_000, 10_000), "every run once");
    let newest_first: Vec<String> = env.runs_all().into_iter().map(|r| r.id).collect();
    assert_eq!(seen, newest_first, "newest first, as the store orders them");

    let only_failed = ui.get("/?status=failed");
    assert!(only_failed.body.matches("<tr data-run=").count() == failed.min(50));
    assert!(!only_failed.body.contains(">succeeded</span>"), "only failed runs");

    // Each page starts in the index where the last one ended, read in its order: no sort.
    let plan = env.query_plan(
        "SELECT * FROM runs WHERE created_at <= 1 AND (created_at < 1 OR id < 'x') \
         AND (CAST(NULL AS TEXT) IS NULL OR status = NULL) AND (CAST(NULL AS TEXT) IS NULL OR workflow_name = NULL) \
         ORDER BY created_at DESC, id DESC LIMIT 51",
    );
    assert!(plan.contains("runs_newest") && !plan.contains("TEMP B-TREE"), "{plan}");
}

both!(a_stream_picked_up_with_its_last_event_id_misses_no_line, |env: &Env| {
    let wf = env.write(
        "chatty.yaml",
        r#"name: chatty
steps:
  - id: talk
    uses: shell
    with:
      run: |
        i=0
        while [ $i -lt 60 ]; do echo "line $i"; i=$((i+1)); sleep 0.03; done
"#,
    );
    let mut child = env.spawn(&["run", wf.to_str().unwrap()], &[]);
    let mut run = String::new();
    env.wait_until("the run to start", Duration::from_secs(30), || {
        env.runs().first().map(|r| run = r.id.clone()).is_some()
    });
    let ui = UiServer::start(env, &[]);
    let first = ui.stream(&format!("/runs/{run}/live"), &[], Duration::from_millis(800));
    let last_id = first
        .lines()
        .filter_map(|l| l.strip_prefix("id: ").or_else(|| l.strip_prefix("id:")))
        .last()
        .map(str::trim)
        .unwrap_or("0")
        .to_string();
    assert!(child.wait().unwrap().success());
    let second = ui.stream(&format!("/runs/{run}/live"), &[("Last-Event-ID", &last_id)], Duration::from_millis(1500));
    let numbers = |text: &str| -> BTreeSet<i64> {
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str::<serde_json::Value>(d.trim()).ok())
            .filter_map(|v| v.get("n").and_then(|n| n.as_i64()))
            .collect()
    };
    let got: BTreeSet<i64> = numbers(&first).union(&numbers(&second)).copied().collect();
    let stored: BTreeSet<i64> = env.event_ids(&run).into_iter().collect();
    assert!(!numbers(&first).is_empty() && numbers(&first).len() < stored.len(), "the first stream was cut mid-run");
    assert_eq!(got, stored, "every line of the log, across the two streams");
    assert!(second.contains(": keep-alive") || second.contains("event: "), "an event stream");
});

#[test]
fn a_full_stack_deploy_shows_every_step_on_the_page_with_console_links_and_no_secret_in_any_byte() {
    let env = Env::sqlite();
    let stack = unique_stack("ui");
    deploy(&env, &stack, None, &[]).expect_success();
    let run = env.only_run();
    let ui = UiServer::start(&env, &[]);

    let served = ui.everything_served(&run.id);
    for value in secret_values(&stack) {
        for (i, text) in served.iter().enumerate() {
            assert!(!text.contains(&value), "a secret value is in what the page served ({i})");
        }
    }

    let browser = Browser::start();
    browser.open(&ui.url(&format!("/runs/{}", run.id)));
    let nodes = browser.wait_for(
        "the graph",
        Duration::from_secs(10),
        "const n = [...document.querySelectorAll('#graph .node')]; return n.length ? n.map(x => x.dataset.step + '=' + x.querySelector('.state').textContent).join('\\n') : null;",
    );
    let nodes: Vec<&str> = nodes.as_str().unwrap().lines().collect();
    assert_eq!(nodes.len(), run.definition.steps.len(), "a node for every step");
    for step in &run.definition.steps {
        let shown = nodes
            .iter()
            .find(|n| n.split('=').next() == Some(&step.id))
            .unwrap_or_else(|| panic!("{} on the graph", step.id));
        let state = env.step(&run.id, &step.id);
        let expected =
            if state.outputs.as_ref().is_some_and(ca_a2a_flow_engine::was_skipped) { "skipped" } else { "succeeded" };
        assert!(shown.ends_with(expected), "{shown}");
    }
    let vpc_link = browser.script(
        "const a = [...document.querySelectorAll('a.console')].map(a => a.href).find(h => h.includes('VpcDetails')); return a || null;",
    );
    assert!(
        vpc_link
            .as_str()
            .is_some_and(|l| l.contains(".console.aws.amazon.com/vpcconsole/") && l.contains("VpcId=vpc-")),
        "{vpc_link}"
    );
    for value in secret_values(&stack) {
        assert!(!browser.html().contains(&value), "a secret value is on the page");
    }
    if let Ok(path) = std::env::var("CA_A2A_FLOW_UI_SCREENSHOT") {
        browser.script("document.getElementById('graph').scrollIntoView(); return true;");
        std::fs::write(&path, browser.screenshot()).expect("write the screenshot");
    }
}
