-- Runs that a worker drives (`submit`), and the stack a run changes: two runs
-- of one stack are never driven at the same time.
ALTER TABLE runs ADD COLUMN stack TEXT;
ALTER TABLE runs ADD COLUMN queued_at INTEGER;
-- Only the runs a worker may still take: the ended ones are not scanned.
CREATE INDEX runs_queue ON runs (queued_at, id)
    WHERE queued_at IS NOT NULL AND status NOT IN ('succeeded', 'failed', 'cancelled');
CREATE INDEX runs_stack ON runs (stack) WHERE stack IS NOT NULL;
