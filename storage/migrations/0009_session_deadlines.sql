-- What a session's state machine must keep across restarts besides its phase: when it first
-- found its charger offline (the grace runs from then, not from each restart), when it looks at
-- the charger next while stopping, how often it has asked it to stop, and what it was settled
-- on (the charger's StopTransaction, or the last reading when the charger went away or ended
-- without telling; a late StopTransaction then settles it again exactly).
ALTER TABLE charging_sessions
    ADD COLUMN offline_since timestamptz,
    ADD COLUMN check_at      timestamptz,
    ADD COLUMN stop_asks     integer NOT NULL DEFAULT 0,
    ADD COLUMN settled_by    text CHECK (settled_by IN ('charger', 'last_reading'));
