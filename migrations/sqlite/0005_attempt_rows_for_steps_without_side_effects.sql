-- A kind with no side effect (noop) commits no `running` state before its
-- attempt ends: its success is its only checkpoint, one statement per step,
-- and the attempt's row is written from that success. The row is made of the
-- step's new values (the attempt and its start time are the same in both).
DROP TRIGGER attempt_ended;

CREATE TRIGGER attempt_ended AFTER UPDATE OF status ON steps
WHEN (OLD.status = 'running' AND NEW.status <> 'running')
  OR (OLD.status NOT IN ('running', 'succeeded') AND NEW.status = 'succeeded')
BEGIN
    INSERT INTO attempts (run_id, step_id, attempt, started_at, finished_at, outcome, error, retry_delay_ms)
    VALUES (
        NEW.run_id, NEW.step_id, NEW.attempt, NEW.attempt_started_at, NEW.attempt_ended_at,
        CASE NEW.status WHEN 'retry_wait' THEN 'retry' ELSE NEW.status END,
        NEW.error,
        CASE NEW.status WHEN 'retry_wait' THEN NEW.retry_delay_ms ELSE NULL END
    );
END;
