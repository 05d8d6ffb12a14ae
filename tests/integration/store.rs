//! The store's lease and fence, through its API: a write from a superseded
//! generation is rejected on both databases.

use ca_a2a_flow_engine::store::{AnyStore, Holder, NewRun, Store, StoreError, Write};
use ca_a2a_flow_engine::{RunStatus, load, now_ms};

use crate::support::{Env, both};

both!(a_write_from_a_superseded_generation_is_rejected, |env: &Env| {
    let wf_path = env.write("one.yaml", "name: one\nsteps:\n  - id: a\n    uses: noop\n");
    let workflow = load(&wf_path, &ca_a2a_flow_steps::registry()).expect("valid");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let store = AnyStore::open(&env.state).await.unwrap();
        let inputs = Default::default();
        store.create_run(NewRun { id: "r-fence", workflow: &workflow, inputs: &inputs, now: now_ms() }).await.unwrap();
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
