-- Meter readings a session did not bill (they went backwards, or further than the connector
-- could deliver): how many, and what the last one was. A session with any is flagged for an
-- operator; it was billed on its last plausible reading.
ALTER TABLE charging_sessions
    ADD COLUMN meter_anomalies integer NOT NULL DEFAULT 0,
    ADD COLUMN meter_flag      text;

CREATE INDEX charging_sessions_flagged ON charging_sessions (created_at)
    WHERE meter_flag IS NOT NULL;
