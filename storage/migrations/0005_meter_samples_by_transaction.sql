-- Meter samples are copied in as text, as the message log is, with no per-row lookup: the
-- transaction id (unique across the system and across restarts) names the session, so the
-- copied session id goes and samples are found by transaction.
DROP INDEX meter_samples_session;
ALTER TABLE meter_samples DROP COLUMN session_id;
CREATE INDEX meter_samples_transaction ON meter_samples (transaction_id, sampled_at)
    WHERE transaction_id IS NOT NULL;
