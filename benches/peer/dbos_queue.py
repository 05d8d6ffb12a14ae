#!/usr/bin/env python3
"""The peer of benches/queue_throughput.rs: DBOS Transact's Postgres queues, on
the same Postgres server, measured the same way.

    dbos_queue.py URL RUNS WORKERS CONCURRENCY LATENCY_RUNS

RUNS workflows of 5 no-op steps are enqueued, then WORKERS processes (each an
executor taking up to CONCURRENCY workflows at once) run them; steps per second
is 5 x RUNS over the time from the first workflow's start to the last one's end,
as DBOS recorded them. Then, the workers idle, LATENCY_RUNS workflows are
enqueued one at a time, 20 ms apart: the time from enqueueing to start, p50 and
p99. DBOS's queues poll (polling_interval_sec, 1 s by default; set with
DBOS_BENCH_POLL). Prints one JSON line.
"""
import json
import os
import subprocess
import sys
import time

import sqlalchemy as sa
from dbos import DBOS

QUEUE = "bench"
POLL = float(os.environ.get("DBOS_BENCH_POLL", "1.0"))


@DBOS.step()
def noop(i: int) -> int:
    return i


@DBOS.workflow()
def five(n: int) -> int:
    for i in range(5):
        noop(i)
    return n


def launch(url: str, executor: str, listen: bool, concurrency: int):
    DBOS(config={"name": "queuebench", "system_database_url": url, "application_version": "bench",
                 "executor_id": executor, "log_level": "ERROR"})
    DBOS.listen_queues([QUEUE] if listen else [])
    DBOS.launch()
    return DBOS.register_queue(QUEUE, worker_concurrency=concurrency, polling_interval_sec=POLL,
                               on_conflict="always_update")


def worker(url: str, name: str, concurrency: int) -> None:
    launch(url, name, True, concurrency)
    while True:
        time.sleep(3600)


def percentile(values, p):
    values = sorted(values)
    return values[round((len(values) - 1) * p)]


def main() -> None:
    if sys.argv[1] == "worker":
        worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    url, runs, workers, concurrency, latency_runs = sys.argv[1], *map(int, sys.argv[2:6])
    queue = launch(url, "coordinator", False, concurrency)
    for i in range(runs):
        queue.enqueue(five, i)
    db = sa.create_engine(url.replace("postgres://", "postgresql+psycopg://", 1)
                          if url.startswith("postgres://") else url)
    procs = [subprocess.Popen([sys.executable, __file__, "worker", url, f"w{k}", str(concurrency)])
             for k in range(workers)]
    try:
        deadline = time.time() + 900
        with db.connect() as c:
            while c.execute(sa.text("SELECT count(*) FROM dbos.workflow_status WHERE status = 'SUCCESS'")).scalar() < runs:
                assert time.time() < deadline, "DBOS did not finish in 15 minutes"
                c.commit()
                time.sleep(0.02)
            first, last = c.execute(sa.text(
                "SELECT min(started_at_epoch_ms), max(updated_at) FROM dbos.workflow_status")).one()
        seconds = (last - first) / 1000
        time.sleep(0.5)
        ids = []
        for i in range(latency_runs):
            handle = queue.enqueue(five, i)
            ids.append(handle.get_workflow_id())
            with db.connect() as c:
                while c.execute(sa.text("SELECT started_at_epoch_ms FROM dbos.workflow_status WHERE workflow_uuid = :id"),
                                {"id": ids[-1]}).scalar() is None:
                    c.commit()
                    time.sleep(0.002)
            time.sleep(0.02)
        with db.connect() as c:
            rows = c.execute(sa.text(
                "SELECT started_at_epoch_ms - created_at FROM dbos.workflow_status WHERE workflow_uuid = ANY(:ids)"),
                {"ids": ids}).scalars().all()
    finally:
        for p in procs:
            p.kill()
    print(json.dumps({"engine": "DBOS Transact (Python) queues", "poll_s": POLL,
                      "steps_per_s": round(runs * 5 / seconds), "seconds": round(seconds, 2),
                      "p50_ms": percentile(rows, 0.5), "p99_ms": percentile(rows, 0.99)}))
    DBOS.destroy()


if __name__ == "__main__":
    main()
