//! The state store misbehaving: a blip is retried within the lease and the run
//! goes on; an outage longer than the lease stops the process (exit 3, "state
//! store unreachable", the store named without its password) and `resume`
//! finishes; a holder whose store stalls stops before anyone may take over; a
//! clock running ahead cannot take a live lease. Postgres, through a TCP proxy.

use std::process::Stdio;
use std::time::{Duration, Instant};

use ca_a2a_flow_engine::{RunStatus, StepStatus};

use crate::support::{Env, Out, TcpProxy, block_on, host_port, lines};

fn chain(env: &Env, steps: usize, each: &str) -> String {
    let mut yaml = String::from("name: chain\nsteps:\n");
    for i in 0..steps {
        let needs = if i == 0 { String::new() } else { format!("\n    needs: [s{}]", i - 1) };
        yaml.push_str(&format!(
            "  - id: s{i}\n    uses: shell{needs}\n    with: {{ run: 'echo s{i} >> ran; sleep {each}' }}\n"
        ));
    }
    env.write("chain.yaml", &yaml).display().to_string()
}

/// The store's URL through `proxy`, with a password the store (trust auth) ignores.
fn through(proxy: &TcpProxy, env: &Env) -> String {
    proxy.url(&env.state).replacen("postgres@", "postgres:hunter2-not-shown@", 1)
}

/// Starts `run FILE` on the store through `proxy`, with a lease of `ttl`.
fn run_through(env: &Env, proxy: &TcpProxy, file: &str, ttl: &str) -> std::process::Child {
    env.command_on(&through(proxy, env), &["run", file])
        .env("CA_A2A_FLOW_LEASE_TTL", ttl)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ca-a2a-flow")
}

#[test]
fn a_two_second_outage_of_the_store_is_not_a_failed_run() {
    let env = Env::postgres();
    let proxy = TcpProxy::start(&host_port(&env.state));
    let wf = chain(&env, 8, "0.3");
    let child = run_through(&env, &proxy, &wf, "30s");
    env.wait_until("two steps to run", Duration::from_secs(30), || lines(&env.path("ran")).len() >= 2);
    proxy.cut();
    std::thread::sleep(Duration::from_secs(2));
    proxy.restore();
    let out = Out::from(child.wait_with_output().unwrap());
    out.expect_success();
    let run = env.only_run();
    assert_eq!(run.status, RunStatus::Succeeded);
    assert!(env.steps(&run.id).iter().all(|s| s.status == StepStatus::Succeeded));
    assert_eq!(lines(&env.path("ran")).len(), 8, "each step ran once");
}

#[test]
fn an_outage_longer_than_the_lease_exits_3_naming_the_store_without_its_password_and_resume_finishes() {
    let env = Env::postgres();
    let proxy = TcpProxy::start(&host_port(&env.state));
    let wf = chain(&env, 4, "0.5");
    let child = run_through(&env, &proxy, &wf, "3s");
    env.wait_until("a step to run", Duration::from_secs(30), || !lines(&env.path("ran")).is_empty());
    proxy.cut();
    let out = Out::from(child.wait_with_output().unwrap());
    out.expect_code(3);
    assert!(out.stderr.contains("state store unreachable"), "{}", out.stderr);
    assert!(out.stderr.contains(&format!("127.0.0.1:{}", proxy.port)), "the store is named:\n{}", out.stderr);
    assert!(!out.stderr.contains("hunter2"), "the password is not shown:\n{}", out.stderr);

    let run = env.only_run();
    env.run(&["resume", &run.id]).expect_success();
    assert_eq!(env.run_record(&run.id).status, RunStatus::Succeeded);
}

#[test]
fn a_holder_whose_store_stalls_stops_before_another_process_takes_the_run_over() {
    let env = Env::postgres();
    let proxy = TcpProxy::start(&host_port(&env.state));
    let wf = env.write(
        "long.yaml",
        r#"name: long
steps:
  - id: long
    uses: shell
    with: { run: 'echo start >> ran; sleep 60; echo late >> ran' }
"#,
    );
    let mut holder = run_through(&env, &proxy, wf.to_str().unwrap(), "3s");
    env.wait_until("the step to start", Duration::from_secs(30), || !lines(&env.path("ran")).is_empty());
    let run = env.only_run();
    let generation = env.run_record(&run.id).generation;
    proxy.stall();

    // Another process tries to take over, directly, until the lease lets it.
    let start = Instant::now();
    let mut taker = env.command(&["resume", &run.id]);
    taker.env("CA_A2A_FLOW_LEASE_TTL", "3s").stdout(Stdio::null()).stderr(Stdio::null());
    let mut second = taker.spawn().unwrap();
    loop {
        assert!(start.elapsed() < Duration::from_secs(60), "nobody took the run over");
        if env.run_record(&run.id).generation > generation {
            assert!(
                holder.try_wait().unwrap().is_some(),
                "the stalled holder was still running when the run was taken over"
            );
            break;
        }
        if let Some(status) = second.try_wait().unwrap() {
            assert_eq!(status.code(), Some(4), "refused while the lease is live");
            second = taker.spawn().unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = holder.wait().unwrap();
    assert_eq!(status.code(), Some(3), "the stalled holder stopped on its own");
    proxy.restore();
    second.kill().ok();
    second.wait().ok();
    assert!(!lines(&env.path("ran")).contains(&"late".to_string()), "the stalled holder's command was cut");
}

#[test]
fn a_process_whose_clock_runs_ahead_cannot_take_a_live_lease() {
    let env = Env::postgres();
    let wf = env.write(
        "long.yaml",
        r#"name: long
steps:
  - id: long
    uses: shell
    with: { run: 'echo start >> ran; sleep 30' }
"#,
    );
    let mut holder = env.spawn(&["run", wf.to_str().unwrap()], &[]);
    env.wait_until("the step to start", Duration::from_secs(30), || !lines(&env.path("ran")).is_empty());
    let run = env.only_run();
    // A second process whose clock is an hour ahead.
    let out = env.run_with(&["resume", &run.id], &[("CA_A2A_FLOW_TEST_CLOCK_OFFSET_MS", "3600000")]);
    let _ = holder.kill();
    let _ = holder.wait();
    out.expect_code(4);
    assert_eq!(lines(&env.path("ran")), ["start"], "the step did not run twice");
}

#[test]
fn logs_follow_misses_no_line_whose_id_commits_after_a_larger_one() {
    let env = Env::postgres();
    let wf = env.write(
        "slow.yaml",
        r#"name: slow
steps:
  - id: slow
    uses: shell
    with: { run: 'echo start >> ran; sleep 4' }
"#,
    );
    let runner = env.spawn(&["run", wf.to_str().unwrap()], &[]);
    env.wait_until("the step to start", Duration::from_secs(30), || !lines(&env.path("ran")).is_empty());
    let run = env.only_run();
    let follower = env.command(&["logs", &run.id, "-f"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();

    block_on(async {
        use sqlx::Connection;
        let insert = "INSERT INTO events (run_id, step_id, at, level, message) VALUES ($1, NULL, $2, 'info', $3)";
        let mut early = sqlx::PgConnection::connect(&env.state).await.unwrap();
        let mut late = sqlx::PgConnection::connect(&env.state).await.unwrap();
        let mut first = early.begin().await.unwrap();
        sqlx::query(insert)
            .bind(&run.id)
            .bind(ca_a2a_flow_engine::now_ms())
            .bind("smaller id, committed last")
            .execute(&mut *first)
            .await
            .unwrap();
        sqlx::query(insert)
            .bind(&run.id)
            .bind(ca_a2a_flow_engine::now_ms())
            .bind("larger id, committed first")
            .execute(&mut late)
            .await
            .unwrap();
        // The follower reads the larger id before the smaller one is visible.
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        first.commit().await.unwrap();
    });
    let ran = Out::from(runner.wait_with_output().unwrap());
    ran.expect_success();
    let followed = Out::from(follower.wait_with_output().unwrap());
    assert!(followed.stdout.contains("larger id, committed first"), "{}", followed.stdout);
    assert!(followed.stdout.contains("smaller id, committed last"), "{}", followed.stdout);
}
