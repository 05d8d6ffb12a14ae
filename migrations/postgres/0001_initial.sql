-- ca-a2a-flow state, PostgreSQL. Times are milliseconds since the Unix epoch.
CREATE TABLE runs (
    id               TEXT PRIMARY KEY,
    workflow_name    TEXT NOT NULL,
    workflow_file    TEXT NOT NULL,
    definition       TEXT NOT NULL,          -- the validated workflow, JSON
    inputs           TEXT NOT NULL,          -- JSON object
    status           TEXT NOT NULL,
    error            TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    finished_at      BIGINT,
    generation       BIGINT NOT NULL DEFAULT 0,   -- fencing token, +1 at every takeover
    lease_owner      TEXT,
    lease_host       TEXT,
    lease_pid        BIGINT,
    lease_expires_at BIGINT,
    heartbeat_at     BIGINT,
    cancel_requested BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX runs_created ON runs (created_at DESC);

CREATE TABLE steps (
    run_id             TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step_id            TEXT NOT NULL,
    position           BIGINT NOT NULL,
    kind               TEXT NOT NULL,
    hash               TEXT NOT NULL,
    status             TEXT NOT NULL,
    attempt            BIGINT NOT NULL DEFAULT 0,
    first_started_at   BIGINT,
    attempt_started_at BIGINT,
    deadline_at        BIGINT,
    next_attempt_at    BIGINT,
    finished_at        BIGINT,
    outputs            TEXT,                  -- JSON; secret outputs are never here
    error              TEXT,                  -- JSON {class, message, hint}
    PRIMARY KEY (run_id, step_id)
);

CREATE TABLE attempts (
    id             BIGSERIAL PRIMARY KEY,
    run_id         TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step_id        TEXT NOT NULL,
    attempt        BIGINT NOT NULL,
    started_at     BIGINT NOT NULL,
    finished_at    BIGINT,
    outcome        TEXT NOT NULL,            -- running, succeeded, failed, retry, interrupted, cancelled
    error          TEXT,
    retry_delay_ms BIGINT
);
CREATE INDEX attempts_run ON attempts (run_id, step_id);

CREATE TABLE events (
    id      BIGSERIAL PRIMARY KEY,
    run_id  TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step_id TEXT,
    at      BIGINT NOT NULL,
    level   TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX events_run ON events (run_id, id);
