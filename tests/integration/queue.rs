//! Runs queued with `submit` and driven by `worker`s: on SQLite (one machine)
//! and on Postgres (any number of machines), two runs of one stack never run at
//! once, and workers killed at random hand their runs to the others without a
//! run ever being driven twice at the same time.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Child;
use std::time::{Duration, Instant};

use ca_a2a_flow_engine::RunStatus;
use ca_a2a_flow_engine::store::{AnyStore, NewRun, Store};

use crate::support::{Env, block_on, both, lines, signal};

fn chain(env: &Env) -> String {
    env.write(
        "chain.yaml",
        r#"name: chain
steps:
  - id: a
    uses: shell
    with: { run: "echo a >> done.log" }
  - id: b
    uses: shell
    needs: [a]
    with: { run: "echo b >> done.log" }
"#,
    )
    .display()
    .to_string()
}

both!(a_submitted_run_is_queued_at_once_and_a_worker_on_the_same_store_drives_it, |env: &Env| {
    let wf = chain(env);
    let submitted = env.run(&["submit", &wf]);
    submitted.expect_success();
    let id = submitted.stdout.trim().to_string();
    assert!(id.starts_with("r-"), "submit prints the run's id: {}", submitted.stdout);
    assert!(lines(&env.path("done.log")).is_empty(), "nothing ran before a worker took it");
    let status = env.run(&["status", &id]);
    assert!(status.stdout.contains("status   queued"), "{}", status.stdout);
    assert!(status.stdout.contains("waiting for a free worker"), "{}", status.stdout);

    let worker = env.spawn(&["worker"], &[]);
    env.wait_until("the worker to drive the run to its end", Duration::from_secs(60), || {
        env.run_record(&id).status == RunStatus::Succeeded
    });
    assert_eq!(lines(&env.path("done.log")), ["a", "b"]);

    // `--wait` follows a queued run to its end, as `run` would.
    let waited = env.run(&["submit", &wf, "--wait"]);
    waited.expect_success();
    assert!(waited.stdout.contains("succeeded on attempt 1"), "its log, as it comes: {}", waited.stdout);
    assert_eq!(lines(&env.path("done.log")), ["a", "b", "a", "b"]);

    signal(&worker, libc::SIGTERM);
    let stopped = worker.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&stopped.stderr);
    assert_eq!(stopped.status.code(), Some(0), "a worker stops cleanly on SIGTERM: {stderr}");
    assert!(stderr.contains("drained"), "{stderr}");
});

/// Step `a` says it started, then waits until the test lets its run go on.
fn held(env: &Env) -> String {
    env.write(
        "held.yaml",
        r#"name: held
inputs:
  stack: {}
steps:
  - id: a
    uses: shell
    with:
      run: "echo start $FLOW_RUN_ID >> order.log; while [ ! -e go-$FLOW_RUN_ID ]; do sleep 0.05; done; echo end $FLOW_RUN_ID >> order.log"
"#,
    )
    .display()
    .to_string()
}

fn submit(env: &Env, wf: &str, stack: &str) -> String {
    let out = env.run(&["submit", wf, "--input", &format!("stack={stack}")]);
    out.expect_success();
    out.stdout.trim().to_string()
}

both!(two_runs_of_one_stack_never_run_at_once_and_the_second_says_what_it_waits_for, |env: &Env| {
    let wf = held(env);
    let first = submit(env, &wf, "blue");
    let second = submit(env, &wf, "blue");
    let other = submit(env, &wf, "green");
    let worker = env.spawn(&["worker", "--concurrency", "4"], &[]);
    let started = |run: &str| lines(&env.path("order.log")).contains(&format!("start {run}"));
    env.wait_until("the first blue run and the green run to start", Duration::from_secs(60), || {
        started(&first) && started(&other)
    });

    let status = env.run(&["status", &second]);
    assert!(
        status.stdout.contains(&format!("waits    run {first} changes stack blue now")),
        "the second run of the stack says what it waits for: {}",
        status.stdout
    );
    let direct = env.run(&["run", &wf, "--input", "stack=blue"]);
    direct.expect_code(4);
    assert!(direct.stderr.contains(&format!("run {first} is changing stack blue")), "{}", direct.stderr);

    std::fs::write(env.path(&format!("go-{first}")), "").unwrap();
    env.wait_until("the second blue run to start", Duration::from_secs(60), || started(&second));
    for run in [&second, &other] {
        std::fs::write(env.path(&format!("go-{run}")), "").unwrap();
    }
    env.wait_until("every queued run to succeed", Duration::from_secs(60), || {
        [&first, &second, &other].iter().all(|r| env.run_record(r).status == RunStatus::Succeeded)
    });
    let order = lines(&env.path("order.log"));
    let at = |line: String| order.iter().position(|l| *l == line).unwrap();
    assert!(
        at(format!("end {first}")) < at(format!("start {second}")),
        "the second run of blue started only after the first ended: {order:?}"
    );
    signal(&worker, libc::SIGTERM);
    worker.wait_with_output().unwrap();
});

both!(
    a_queued_run_waiting_for_its_stack_is_cancelled_from_another_process_without_disturbing_the_driver,
    |env: &Env| {
        let wf = held(env);
        let first = submit(env, &wf, "blue");
        let second = submit(env, &wf, "blue");
        let worker = env.spawn(&["worker"], &[]);
        let started = |run: &str| lines(&env.path("order.log")).contains(&format!("start {run}"));
        env.wait_until("the first run to start", Duration::from_secs(60), || started(&first));

        let cancelled = env.run(&["cancel", &second]);
        cancelled.expect_success();
        assert_eq!(env.run_record(&second).status, RunStatus::Cancelled, "{}", cancelled.stderr);
        assert_eq!(env.run_record(&first).status, RunStatus::Running, "the stack's driver goes on");

        std::fs::write(env.path(&format!("go-{first}")), "").unwrap();
        env.wait_until("the first run to succeed", Duration::from_secs(60), || {
            env.run_record(&first).status == RunStatus::Succeeded
        });
        assert!(!started(&second), "a cancelled run never starts");
        signal(&worker, libc::SIGTERM);
        worker.wait_with_output().unwrap();
    }
);

both!(runs_waiting_for_a_busy_stack_never_hide_the_runs_of_another_stack_queued_after_them, |env: &Env| {
    let wf = held(env);
    let first = submit(env, &wf, "blue");
    let worker = env.spawn(&["worker", "--concurrency", "4"], &[]);
    let started = |run: &str| lines(&env.path("order.log")).contains(&format!("start {run}"));
    env.wait_until("the first blue run to start", Duration::from_secs(60), || started(&first));
    // More runs of blue than a claim looks at in one go, then one of green.
    queue_runs_of(env, &wf, 40, Some("blue"));
    let green = submit(env, &wf, "green");
    env.wait_until("the green run to start while blue is busy", Duration::from_secs(60), || started(&green));
    assert!(!lines(&env.path("order.log")).iter().any(|l| l.starts_with("start r-blue-")), "blue's queue waits");
    signal(&worker, libc::SIGKILL);
    worker.wait_with_output().unwrap();
});

both!(a_worker_drained_by_sigterm_hands_its_run_back_and_another_worker_finishes_it, |env: &Env| {
    let wf = held(env);
    let run = submit(env, &wf, "blue");
    let first = env.spawn(&["worker"], &[]);
    let started = || lines(&env.path("order.log")).iter().filter(|l| **l == format!("start {run}")).count();
    env.wait_until("the first worker to start the run", Duration::from_secs(60), || started() == 1);

    signal(&first, libc::SIGTERM);
    let drained = first.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&drained.stderr);
    assert_eq!(drained.status.code(), Some(0), "{stderr}");
    let handed_back = env.run_record(&run);
    assert_eq!(handed_back.status, RunStatus::Interrupted, "{stderr}");
    assert!(handed_back.lease.is_none(), "its lease is given back at once, not left to expire");

    std::fs::write(env.path(&format!("go-{run}")), "").unwrap();
    let second = env.spawn(&["worker"], &[]);
    env.wait_until("another worker to finish the run", Duration::from_secs(60), || {
        env.run_record(&run).status == RunStatus::Succeeded
    });
    let outcomes: Vec<String> = env.attempts(&run, "a").into_iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, ["interrupted", "succeeded"], "the cut attempt, then the other worker's");
    signal(&second, libc::SIGTERM);
    second.wait_with_output().unwrap();
});

/// Five steps in a chain. Each adds one to its run's counter, under the run's
/// lock, in one append (a worker killed mid-step leaves the effect whole or
/// absent): `step driver-pid counter time-ms` in `effects/RUN`. Bash's builtins
/// only, so that 2,500 steps start few processes.
fn counting(env: &Env) -> String {
    let step = |id: &str, needs: Option<&str>| {
        let needs = needs.map(|n| format!("\n    needs: [{n}]")).unwrap_or_default();
        format!(
            "  - id: {id}\n    uses: shell{needs}\n    with:\n      run: >-\n        flock effects/$FLOW_RUN_ID.lock bash -c 'f=effects/$FLOW_RUN_ID; n=(); [ -e $f ] && mapfile -t n < $f; t=${{EPOCHREALTIME/./}}; echo \"$FLOW_STEP_ID $FLOW_PID $((${{#n[@]}}+1)) ${{t:0:13}}\" >> $f'\n"
        )
    };
    let mut text = String::from("name: counting\nsteps:\n");
    let ids = ["s1", "s2", "s3", "s4", "s5"];
    for (i, id) in ids.iter().enumerate() {
        text.push_str(&step(id, i.checked_sub(1).map(|p| ids[p])));
    }
    std::fs::create_dir_all(env.path("effects")).unwrap();
    env.write("counting.yaml", &text).display().to_string()
}

/// Queues `n` runs of the workflow at `file` through the store, as `submit` does.
fn queue_runs(env: &Env, file: &str, n: usize) -> Vec<String> {
    queue_runs_of(env, file, n, None)
}

fn queue_runs_of(env: &Env, file: &str, n: usize, stack: Option<&str>) -> Vec<String> {
    block_on(async {
        let store = AnyStore::open(&env.state).await.unwrap();
        let workflow = ca_a2a_flow_engine::load(std::path::Path::new(file), &ca_a2a_flow_steps::registry()).unwrap();
        let inputs = BTreeMap::new();
        let mut ids = Vec::new();
        for i in 0..n {
            let id = format!("r-{}-{i:04}", stack.unwrap_or("soak"));
            let run = NewRun {
                id: &id,
                workflow: &workflow,
                inputs: &inputs,
                now: ca_a2a_flow_engine::now_ms(),
                stack,
                queued: true,
            };
            store.create_run(run).await.unwrap();
            ids.push(id);
        }
        ids
    })
}

fn soak_runs() -> usize {
    std::env::var("CA_A2A_FLOW_QUEUE_SOAK_RUNS").ok().and_then(|n| n.parse().ok()).unwrap_or(500)
}

#[test]
fn three_workers_killed_at_random_every_two_seconds_finish_every_queued_run_and_never_drive_one_twice_at_once() {
    let env = Env::postgres();
    let file = counting(&env);
    let runs = queue_runs(&env, &file, soak_runs());
    let spawn = || env.spawn(&["worker", "--concurrency", "4"], &[]);
    let mut workers: Vec<Child> = (0..3).map(|_| spawn()).collect();
    let mut kills = 0;
    let started = Instant::now();
    let mut last_kill = Instant::now();
    let all_ended = || {
        let runs = env.runs_all();
        runs.iter().all(|r| r.status.is_terminal())
    };
    while !all_ended() {
        assert!(started.elapsed() < Duration::from_secs(600), "the queue was not done after 10 minutes");
        std::thread::sleep(Duration::from_millis(200));
        if last_kill.elapsed() >= Duration::from_secs(2) {
            let victim = fastrand::usize(..workers.len());
            signal(&workers[victim], libc::SIGKILL);
            workers[victim].wait().unwrap();
            workers[victim] = spawn();
            kills += 1;
            last_kill = Instant::now();
        }
    }
    for w in &workers {
        signal(w, libc::SIGTERM);
    }
    for w in workers {
        w.wait_with_output().unwrap();
    }
    assert!(kills >= 1, "at least one worker was killed while runs were queued");

    let records = env.runs_all();
    let failed: Vec<_> = records.iter().filter(|r| r.status != RunStatus::Succeeded).map(|r| &r.id).collect();
    assert!(failed.is_empty(), "every queued run succeeds; these did not: {failed:?}");

    for run in &runs {
        // Its side effects, in the order they happened: (step, driver pid, counter, time).
        let seen: Vec<(String, i64, u64, i64)> = lines(&env.path(&format!("effects/{run}")))
            .iter()
            .map(|line| {
                let f: Vec<&str> = line.split(' ').collect();
                assert_eq!(f.len(), 4, "run {run}: effect line {line}");
                (f[0].into(), f[1].parse().unwrap(), f[2].parse().unwrap(), f[3].parse().unwrap())
            })
            .collect();
        let counters: Vec<u64> = seen.iter().map(|e| e.2).collect();
        assert_eq!(
            counters,
            (1..=seen.len() as u64).collect::<Vec<_>>(),
            "run {run}: its counter went up by one each time"
        );
        let steps: Vec<&str> = seen.iter().map(|e| e.0.as_str()).collect();
        let mut sorted = steps.clone();
        sorted.sort();
        assert_eq!(steps, sorted, "run {run}: no step's side effect came after a later step's: {steps:?}");
        let distinct: BTreeSet<&str> = steps.iter().copied().collect();
        assert_eq!(distinct.len(), 5, "run {run}: every step's side effect happened at least once: {steps:?}");

        // Drivers, in order: one that was replaced never acts again.
        let mut drivers: Vec<i64> = Vec::new();
        for e in &seen {
            if drivers.last() != Some(&e.1) {
                assert!(
                    !drivers.contains(&e.1),
                    "run {run}: driver {} acted again after another took over: {seen:?}",
                    e.1
                );
                drivers.push(e.1);
            }
        }
        // ...and each took the run through the fence: a new generation, in that order.
        let owners: Vec<i64> =
            env.events(run).iter().filter_map(|m| m.split(" by ").nth(1)?.split('.').next()?.parse().ok()).collect();
        let mut next = owners.iter();
        for d in &drivers {
            assert!(next.any(|o| o == d), "run {run}: driver {d} acted without taking a new generation ({owners:?})");
        }
        // No side effect after its step committed.
        for step in env.steps(run) {
            let committed = step.finished_at.unwrap();
            for e in seen.iter().filter(|e| e.0 == step.step_id) {
                assert!(e.3 <= committed, "run {run}: step {} acted at {} after it committed at {committed}", e.0, e.3);
            }
        }
    }
    eprintln!("{} runs of 5 steps, {kills} workers killed, in {:?}", runs.len(), started.elapsed());
}
