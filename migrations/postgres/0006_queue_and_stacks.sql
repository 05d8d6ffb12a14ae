-- Runs that a worker drives (`submit`), and the stack a run changes: two runs
-- of one stack are never driven at the same time.
ALTER TABLE runs ADD COLUMN stack TEXT;
ALTER TABLE runs ADD COLUMN queued_at BIGINT;
-- Only the runs a worker may still take: the ended ones are not scanned.
CREATE INDEX runs_queue ON runs (queued_at, id)
    WHERE queued_at IS NOT NULL AND status NOT IN ('succeeded', 'failed', 'cancelled');
CREATE INDEX runs_stack ON runs (stack) WHERE stack IS NOT NULL;

-- Workers wait on this channel (LISTEN) instead of polling: a run is queued,
-- or a run gives its lease back (its stack may be free for the next one).
CREATE FUNCTION ca_a2a_flow_queue_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ca_a2a_flow_queue', NEW.id);
    RETURN NULL;
END
$$;
CREATE TRIGGER runs_queued AFTER INSERT ON runs FOR EACH ROW
    WHEN (NEW.queued_at IS NOT NULL) EXECUTE FUNCTION ca_a2a_flow_queue_notify();
CREATE TRIGGER runs_released AFTER UPDATE OF lease_owner, lease_expires_at ON runs FOR EACH ROW
    WHEN ((NEW.queued_at IS NOT NULL OR NEW.stack IS NOT NULL)
          AND (NEW.lease_owner IS NULL OR NEW.lease_expires_at = 0)
          AND OLD.lease_owner IS NOT NULL AND OLD.lease_expires_at <> 0)
    EXECUTE FUNCTION ca_a2a_flow_queue_notify();
