-- Operators' changes reach a running server however they are made (REST, the CLI, plain SQL):
-- a change to a station's settings or connectors notifies 'cpms_station' with the station's id
-- (its actor reads the station again, its cached tariff is dropped), a change to tariffs or
-- to a location's tariff notifies 'cpms_tariffs' (every cached tariff is dropped).
-- Notifications are sent at commit. Columns the server itself writes as chargers report
-- (status, heartbeats, boot details) fire nothing.
CREATE FUNCTION cpms_notify_station() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(
        'cpms_station',
        to_jsonb(CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END) ->> TG_ARGV[0]
    );
    RETURN NULL;
END $$;

CREATE FUNCTION cpms_notify_tariffs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cpms_tariffs', TG_TABLE_NAME);
    RETURN NULL;
END $$;

CREATE TRIGGER stations_settings_changed
    AFTER UPDATE OF location_id, connectors_count, tariff_id, password_hash, admin_status,
                    registration_status, accept_unknown_tags
    ON stations FOR EACH ROW EXECUTE FUNCTION cpms_notify_station('id');

CREATE TRIGGER connectors_settings_changed
    AFTER INSERT OR DELETE OR UPDATE OF connector_type, power_kw
    ON connectors FOR EACH ROW EXECUTE FUNCTION cpms_notify_station('station_id');

CREATE TRIGGER tariffs_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON tariffs FOR EACH STATEMENT EXECUTE FUNCTION cpms_notify_tariffs();

CREATE TRIGGER tariff_rates_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON tariff_rates FOR EACH STATEMENT EXECUTE FUNCTION cpms_notify_tariffs();

CREATE TRIGGER locations_tariff_changed AFTER UPDATE OF tariff_id OR DELETE
    ON locations FOR EACH STATEMENT EXECUTE FUNCTION cpms_notify_tariffs();
