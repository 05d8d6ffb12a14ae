-- An attempt's row is written when its step leaves `running`, in the same
-- statement that changes the step, so a checkpoint is a single statement.
ALTER TABLE steps ADD COLUMN attempt_ended_at BIGINT;
ALTER TABLE steps ADD COLUMN retry_delay_ms BIGINT;

CREATE FUNCTION ca_a2a_flow_attempt_ended() RETURNS trigger AS $$
BEGIN
    INSERT INTO attempts (run_id, step_id, attempt, started_at, finished_at, outcome, error, retry_delay_ms)
    VALUES (
        OLD.run_id, OLD.step_id, OLD.attempt, OLD.attempt_started_at, NEW.attempt_ended_at,
        CASE NEW.status WHEN 'retry_wait' THEN 'retry' ELSE NEW.status END,
        NEW.error,
        CASE NEW.status WHEN 'retry_wait' THEN NEW.retry_delay_ms ELSE NULL END
    );
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER attempt_ended AFTER UPDATE OF status ON steps
FOR EACH ROW WHEN (OLD.status = 'running' AND NEW.status <> 'running')
EXECUTE FUNCTION ca_a2a_flow_attempt_ended();
