-- ca-a2a-flow state, SQLite. Times are milliseconds since the Unix epoch.
CREATE TABLE runs (
    id               TEXT PRIMARY KEY,
    workflow_name    TEXT NOT NULL,
    workflow_file    TEXT NOT NULL,
    definition       TEXT NOT NULL,          -- the validated workflow, JSON
    inputs           TEXT NOT NULL,          -- JSON object
    status           TEXT NOT NULL,
    error            TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    finished_at      INTEGER,
    generation       INTEGER NOT NULL DEFAULT 0,   -- fencing token, +1 at every takeover
    lease_owner      TEXT,
    lease_host       TEXT,
    lease_pid        INTEGER,
    lease_expires_at INTEGER,
    heartbeat_at     INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX runs_created ON runs (created_at DESC);

CREATE TABLE steps (
    run_id             TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step_id            TEXT NOT NULL,
    position           INTEGER NOT NULL,
    kind               TEXT NOT NULL,
    hash               TEXT NOT NULL,
    status             TEXT NOT NULL,
    attempt            INTEGER NOT NULL DEFAULT 0,
    first_started_at   INTEGER,
    attempt_started_at INTEGER,
    deadline_at        INTEGER,
    next_attempt_at    INTEGER,
    finished_at        INTEGER,
    outputs            TEXT,                  -- JSON; secret outputs are never here
    error              TEXT,                  -- JSON {class, message, hint}
    PRIMARY KEY (run_id, step_id)
);

CREATE TABLE attempts (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id         TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step_id        TEXT NOT NULL,
    attempt        INTEGER NOT NULL,
    started_at     INTEGER NOT NULL,
    finished_at    INTEGER,
    outcome        TEXT NOT NULL,            -- running, succeeded, failed, retry, interrupted, cancelled
    error          TEXT,
    retry_delay_ms INTEGER
);
CREATE INDEX attempts_run ON attempts (run_id, step_id);

CREATE TABLE events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id  TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step_id TEXT,
    at      INTEGER NOT NULL,
    level   TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX events_run ON events (run_id, id);
