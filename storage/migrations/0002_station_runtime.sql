-- What a charge point reports about itself beyond its connectors.
ALTER TABLE stations
    ADD COLUMN station_status      text,          -- StatusNotification for connectorId 0
    ADD COLUMN station_error_code  text,
    ADD COLUMN firmware_status     text,          -- FirmwareStatusNotification
    ADD COLUMN diagnostics_status  text,          -- DiagnosticsStatusNotification
    ADD COLUMN last_seen_at        timestamptz;   -- last frame of any kind
