-- An attempt's row is written when its step leaves `running`, in the same
-- statement that changes the step, so a checkpoint is a single statement.
ALTER TABLE steps ADD COLUMN attempt_ended_at INTEGER;
ALTER TABLE steps ADD COLUMN retry_delay_ms INTEGER;

CREATE TRIGGER attempt_ended AFTER UPDATE OF status ON steps
WHEN OLD.status = 'running' AND NEW.status <> 'running'
BEGIN
    INSERT INTO attempts (run_id, step_id, attempt, started_at, finished_at, outcome, error, retry_delay_ms)
    VALUES (
        OLD.run_id, OLD.step_id, OLD.attempt, OLD.attempt_started_at, NEW.attempt_ended_at,
        CASE NEW.status WHEN 'retry_wait' THEN 'retry' ELSE NEW.status END,
        NEW.error,
        CASE NEW.status WHEN 'retry_wait' THEN NEW.retry_delay_ms ELSE NULL END
    );
END;
