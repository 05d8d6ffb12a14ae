-- Keyed fingerprints of a run's secret values (never the values), so that a
-- resumed process masks them too: JSON {key, fingerprints: [[length, hmac]]}.
ALTER TABLE runs ADD COLUMN masks TEXT;
