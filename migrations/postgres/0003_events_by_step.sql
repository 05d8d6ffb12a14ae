-- `logs --step`, `status` (each running step's last progress) and `logs -f`
-- read one step's events in id order.
CREATE INDEX events_run_step ON events (run_id, step_id, id);
