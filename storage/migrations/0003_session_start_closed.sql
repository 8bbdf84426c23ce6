-- A session ended before its charger started (stopped, timed out) can no longer take a
-- StartTransaction: set in the same statement that checks no transaction is attached yet.
ALTER TABLE charging_sessions
    ADD COLUMN start_closed boolean NOT NULL DEFAULT false;
