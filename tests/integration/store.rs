//! The store's lease and fence, through its API: a write from a superseded
//! generation is rejected on both databases.

use ca_a2a_flow_engine::store::{AnyStore, Holder, NewRun, Store, StoreError, Write};
use ca_a2a_flow_engine::{RunStatus, StepStatus, load, now_ms};

use crate::support::{Env, block_on, both};

/// The store of `env`, holding a run `id` of `noop` steps `steps`, created
/// through the store's API.
async fn a_run_of_noops(env: &Env, id: &str, steps: &[&str]) -> AnyStore {
    let yaml: String = steps.iter().map(|s| format!("  - id: {s}\n    uses: noop\n")).collect();
    let wf_path = env.write("noops.yaml", &format!("name: noops\nsteps:\n{yaml}"));
    let workflow = load(&wf_path, &ca_a2a_flow_steps::registry()).expect("valid");
    let store = AnyStore::open(&env.state).await.unwrap();
    let inputs = Default::default();
    store
        .create_run(NewRun { id, workflow: &workflow, inputs: &inputs, now: now_ms(), stack: None, queued: false })
        .await
        .unwrap();
    store
}

both!(a_write_from_a_superseded_generation_is_rejected, |env: &Env| {
    block_on(async {
        let store = a_run_of_noops(env, "r-fence", &["a"]).await;
        let (first, second) = (Holder::this_process(), Holder::this_process());
        let t0 = now_ms();
        let old = store.acquire("r-fence", &first, 1_000, t0).await.unwrap();

        match store.acquire("r-fence", &second, 1_000, t0 + 10).await {
            Err(StoreError::LeaseHeld { holder, .. }) => assert_eq!(holder.owner, first.owner),
            other => panic!("a live lease must be refused, got {other:?}"),
        }
        // On Postgres expiry is compared on the database's clock: let it pass.
        std::thread::sleep(std::time::Duration::from_millis(1_100));
        let new = store.acquire("r-fence", &second, 1_000, t0 + 2_000).await.expect("an expired lease is taken over");
        assert_eq!(new, old + 1, "each takeover bumps the generation");

        let stale = vec![Write::RunStatus { status: RunStatus::Failed, at: now_ms(), error: Some("stale".into()) }];
        assert!(matches!(store.apply("r-fence", old, stale).await, Err(StoreError::Fenced { .. })));
        assert!(matches!(store.renew("r-fence", old, 1_000, now_ms()).await, Err(StoreError::Fenced { .. })));
        store
            .apply("r-fence", new, vec![Write::RunStatus { status: RunStatus::Succeeded, at: now_ms(), error: None }])
            .await
            .unwrap();
        assert_eq!(store.run("r-fence").await.unwrap().status, RunStatus::Succeeded);
    });
});

both!(successes_committed_together_each_end_their_step_and_record_their_attempt, |env: &Env| {
    block_on(async {
        let store = a_run_of_noops(env, "r-group", &["a", "b", "c"]).await;
        let generation = store.acquire("r-group", &Holder::this_process(), 30_000, now_ms()).await.unwrap();
        let t = now_ms();
        let success = |step: &str, attempt: u32| Write::StepSucceeded {
            step: step.into(),
            attempt,
            started_at: t,
            deadline_at: t + 60_000,
            at: t + 5,
            outputs: [("said".to_string(), serde_json::json!(format!("{step} done")))].into(),
        };
        store.apply("r-group", generation, vec![success("a", 1), success("b", 2)]).await.unwrap();
        let steps = store.steps("r-group").await.unwrap();
        let by_id = |id: &str| steps.iter().find(|s| s.step_id == id).unwrap().clone();
        assert_eq!(by_id("a").status, StepStatus::Succeeded);
        assert_eq!(by_id("b").attempt, 2);
        assert_eq!(by_id("b").outputs.unwrap()["said"], "b done");
        assert_eq!(by_id("a").deadline_at, Some(t + 60_000));
        assert_eq!(by_id("c").status, StepStatus::Pending, "only the steps named");
        let attempts = store.attempts("r-group").await.unwrap();
        assert_eq!(attempts.iter().filter(|a| a.step_id == "a" || a.step_id == "b").count(), 2, "{attempts:?}");
        assert!(attempts.iter().all(|a| a.started_at == t && a.finished_at == Some(t + 5)), "{attempts:?}");
    });
});

both!(a_step_starts_only_after_the_success_of_the_steps_it_needs_is_committed, |env: &Env| {
    // `a` and `b` change nothing, so their successes may wait to be committed
    // together; `c` acts, and must never be recorded running before them.
    let wf = env.write(
        "order.yaml",
        r#"name: order
steps:
  - id: a
    uses: noop
  - id: b
    uses: noop
    needs: [a]
  - id: c
    uses: shell
    needs: [b]
    with: { run: "touch c.started; while [ ! -e c.go ]; do sleep 0.05; done" }
"#,
    );
    let mut child = env.spawn(&["run", wf.to_str().unwrap()], &[]);
    env.wait_until("c started", std::time::Duration::from_secs(30), || env.path("c.started").exists());
    let run = env.only_run();
    assert_eq!(env.step(&run.id, "a").status, StepStatus::Succeeded);
    assert_eq!(env.step(&run.id, "b").status, StepStatus::Succeeded);
    assert_eq!(env.step(&run.id, "c").status, StepStatus::Running);
    std::fs::write(env.path("c.go"), "").unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(env.attempts(&run.id, "a").len(), 1);
});

both!(the_lookups_of_logs_step_status_and_progress_are_backed_by_indexes, |env: &Env| {
    // A run, so that the store has made its tables.
    let wf = env.write("one.yaml", "name: one\nsteps:\n  - id: a\n    uses: noop\n");
    env.run(&["run", wf.to_str().unwrap()]).expect_success();

    // `logs --step` and a step's latest progress: the events of one step of one run, in order.
    let by_step =
        env.query_plan("SELECT * FROM events WHERE run_id = 'r' AND id > 0 AND step_id = 'a' ORDER BY id LIMIT 500");
    assert!(by_step.contains("step_id"), "an index with the step finds its events:\n{by_step}");
    assert!(!by_step.contains("SCAN events") && !by_step.contains("Seq Scan"), "{by_step}");
    // `status`: the steps of one run.
    let steps = env.query_plan("SELECT * FROM steps WHERE run_id = 'r' ORDER BY position");
    assert!(!steps.contains("SCAN steps") && !steps.contains("Seq Scan"), "{steps}");
    assert!(steps.contains("run_id"), "found by the run: {steps}");
    // `list`: the newest runs.
    let newest = env.query_plan("SELECT * FROM runs ORDER BY created_at DESC, id DESC LIMIT 20");
    assert!(newest.contains("USING INDEX") || newest.contains("Index Scan"), "{newest}");
    assert!(!newest.contains("Seq Scan"), "{newest}");
});

both!(processes_that_open_a_new_state_store_at_the_same_moment_all_open_it, |env: &Env| {
    // `run` in one terminal, `status` or `ui` in another: each migrates the new store.
    for round in 0..3 {
        let state = if env.state.starts_with("postgres") {
            env.state.clone()
        } else {
            env.path(&format!("new-{round}.db")).display().to_string()
        };
        let children: Vec<_> = (0..6)
            .map(|_| {
                env.command_on(&state, &["list"])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("spawn")
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().expect("wait");
            assert!(out.status.success(), "round {round}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
});
