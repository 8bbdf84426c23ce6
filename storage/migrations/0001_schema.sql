-- The data model of the whole product. Later migrations extend it; they never rewrite it.
-- Money is NUMERIC(12,2); energy NUMERIC(12,3) kWh; times are timestamptz (UTC).

-- People ------------------------------------------------------------------------------------

CREATE TABLE clients (
    id              uuid PRIMARY KEY,
    phone           text UNIQUE,
    email           text UNIQUE,
    name            text,
    password_hash   text,
    status          text NOT NULL DEFAULT 'active'
                    CHECK (status IN ('active', 'blocked', 'pending_deletion')),
    balance         numeric(12,2) NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE owners (
    id              uuid PRIMARY KEY,
    name            text NOT NULL,
    email           text UNIQUE,
    phone           text UNIQUE,
    password_hash   text,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Network: tariffs, locations, stations, connectors, id tags ---------------------------------

CREATE TABLE tariffs (
    id              text PRIMARY KEY,
    name            text NOT NULL,
    currency        char(3) NOT NULL DEFAULT 'KGS',
    price_per_kwh   numeric(10,2) NOT NULL CHECK (price_per_kwh >= 0),
    session_fee     numeric(10,2) NOT NULL DEFAULT 0 CHECK (session_fee >= 0),
    price_per_minute numeric(10,2) NOT NULL DEFAULT 0 CHECK (price_per_minute >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Time-of-day rates: from starts_at (inclusive) to ends_at (exclusive), local time of the
-- location; ends_at <= starts_at wraps past midnight. NULL weekdays = every day (ISO 1..7).
CREATE TABLE tariff_rates (
    tariff_id       text NOT NULL REFERENCES tariffs(id) ON DELETE CASCADE,
    starts_at       time NOT NULL,
    ends_at         time NOT NULL,
    weekdays        smallint[],
    price_per_kwh   numeric(10,2) NOT NULL CHECK (price_per_kwh >= 0),
    PRIMARY KEY (tariff_id, starts_at)
);

CREATE TABLE locations (
    id              text PRIMARY KEY,
    name            text NOT NULL,
    address         text,
    city            text,
    country         text,
    latitude        numeric(9,6) CHECK (latitude BETWEEN -90 AND 90),
    longitude       numeric(9,6) CHECK (longitude BETWEEN -180 AND 180),
    timezone        text NOT NULL DEFAULT 'Asia/Bishkek',
    owner_id        uuid REFERENCES owners(id),
    tariff_id       text REFERENCES tariffs(id),
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'inactive')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX locations_city ON locations (city);

CREATE TABLE stations (
    id                  text PRIMARY KEY,
    location_id         text REFERENCES locations(id),
    serial_number       text,
    vendor              text,
    model               text,
    firmware_version    text,
    connectors_count    smallint NOT NULL DEFAULT 1 CHECK (connectors_count BETWEEN 1 AND 10),
    power_capacity      numeric(8,2),
    tariff_id           text REFERENCES tariffs(id),
    owner_id            uuid REFERENCES owners(id),
    password_hash       text,
    admin_status        text NOT NULL DEFAULT 'active'
                        CHECK (admin_status IN ('active', 'maintenance', 'inactive')),
    registration_status text NOT NULL DEFAULT 'Accepted'
                        CHECK (registration_status IN ('Accepted', 'Pending', 'Rejected')),
    accept_unknown_tags boolean NOT NULL DEFAULT false,
    is_online           boolean NOT NULL DEFAULT false,
    last_heartbeat_at   timestamptz,
    last_boot_at        timestamptz,
    boot_info           jsonb,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stations_location ON stations (location_id);

-- Configured connectors; connectors_count above is the physical number and may be larger.
CREATE TABLE connectors (
    station_id          text NOT NULL REFERENCES stations(id) ON DELETE CASCADE,
    connector_id        smallint NOT NULL CHECK (connector_id >= 1),
    connector_type      text NOT NULL,
    power_kw            numeric(8,2) NOT NULL CHECK (power_kw > 0),
    status              text NOT NULL DEFAULT 'Unavailable',
    error_code          text NOT NULL DEFAULT 'NoError',
    info                text,
    vendor_error_code   text,
    status_at           timestamptz,
    PRIMARY KEY (station_id, connector_id)
);

CREATE TABLE id_tags (
    id_tag          text PRIMARY KEY CHECK (length(id_tag) BETWEEN 1 AND 20),
    client_id       uuid REFERENCES clients(id),
    parent_id_tag   text REFERENCES id_tags(id_tag),
    status          text NOT NULL DEFAULT 'Accepted'
                    CHECK (status IN ('Accepted', 'Blocked', 'Expired', 'Invalid')),
    expires_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX id_tags_client ON id_tags (client_id);

-- Charging sessions -------------------------------------------------------------------------

-- OCPP transactionId: unique across restarts, never reused.
CREATE SEQUENCE ocpp_transaction_id_seq AS integer START 1000;

CREATE TABLE charging_sessions (
    id                  uuid PRIMARY KEY,
    client_id           uuid REFERENCES clients(id),
    station_id          text NOT NULL REFERENCES stations(id),
    connector_id        smallint NOT NULL,
    id_tag              text,
    origin              text NOT NULL DEFAULT 'app' CHECK (origin IN ('app', 'rfid')),
    status              text NOT NULL
                        CHECK (status IN ('reserved', 'starting', 'charging', 'stopping',
                                          'settled', 'rejected', 'cancelled', 'failed')),
    limit_type          text NOT NULL DEFAULT 'none'
                        CHECK (limit_type IN ('energy', 'amount', 'none')),
    limit_value         numeric(12,3),
    tariff_id           text REFERENCES tariffs(id),
    rate_per_kwh        numeric(10,2),
    session_fee         numeric(10,2) NOT NULL DEFAULT 0,
    hold_id             uuid,
    reserved_amount     numeric(12,2) NOT NULL DEFAULT 0,
    transaction_id      integer UNIQUE,
    meter_start_wh      bigint,
    meter_last_wh       bigint,
    meter_stop_wh       bigint,
    energy_kwh          numeric(12,3) NOT NULL DEFAULT 0,
    power_kw            numeric(10,3),
    soc_percent         smallint,
    current_cost        numeric(12,2) NOT NULL DEFAULT 0,
    final_cost          numeric(12,2),
    refunded_amount     numeric(12,2),
    debt_amount         numeric(12,2),
    stop_reason         text,
    error               text,
    start_deadline      timestamptz,
    max_deadline        timestamptz,
    started_at          timestamptz,
    stopped_at          timestamptz,
    settled_at          timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
-- One live session per connector, enforced by the database as well as by the actors.
CREATE UNIQUE INDEX charging_sessions_one_active
    ON charging_sessions (station_id, connector_id)
    WHERE status IN ('reserved', 'starting', 'charging', 'stopping');
CREATE INDEX charging_sessions_client ON charging_sessions (client_id, created_at DESC);
CREATE INDEX charging_sessions_open ON charging_sessions (status)
    WHERE status IN ('reserved', 'starting', 'charging', 'stopping');

CREATE TABLE meter_samples (
    id              bigserial PRIMARY KEY,
    station_id      text NOT NULL,
    connector_id    smallint NOT NULL,
    transaction_id  integer,
    session_id      uuid,
    sampled_at      timestamptz NOT NULL,
    measurand       text NOT NULL,
    phase           text,
    unit            text,
    context         text,
    location        text,
    value           numeric NOT NULL
);
CREATE INDEX meter_samples_session ON meter_samples (session_id, sampled_at);
CREATE INDEX meter_samples_station ON meter_samples (station_id, sampled_at);

-- Wallet ledger -----------------------------------------------------------------------------

-- Money set aside for a session: taken from the balance when held, then captured or released.
CREATE TABLE holds (
    id              uuid PRIMARY KEY,
    client_id       uuid NOT NULL REFERENCES clients(id),
    amount          numeric(12,2) NOT NULL CHECK (amount > 0),
    status          text NOT NULL DEFAULT 'held' CHECK (status IN ('held', 'captured', 'released')),
    session_id      uuid,
    captured_amount numeric(12,2),
    created_at      timestamptz NOT NULL DEFAULT now(),
    settled_at      timestamptz
);
CREATE INDEX holds_open ON holds (client_id) WHERE status = 'held';

-- One row per balance operation, keyed by its idempotency key: a replay answers from here.
CREATE TABLE ledger_operations (
    idempotency_key text PRIMARY KEY CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    kind            text NOT NULL,
    client_id       uuid NOT NULL REFERENCES clients(id),
    request         jsonb NOT NULL,
    result          jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ledger_entries (
    id              bigserial PRIMARY KEY,
    client_id       uuid NOT NULL REFERENCES clients(id),
    type            text NOT NULL
                    CHECK (type IN ('topup', 'adjustment', 'charge_reserve', 'charge_refund',
                                    'charge_payment', 'charge_debt')),
    amount          numeric(12,2) NOT NULL CHECK (amount <> 0),
    balance_before  numeric(12,2) NOT NULL,
    balance_after   numeric(12,2) NOT NULL,
    hold_id         uuid REFERENCES holds(id),
    session_id      uuid,
    invoice_id      text,
    operation_key   text NOT NULL REFERENCES ledger_operations(idempotency_key),
    idempotency_key text NOT NULL UNIQUE,
    description     text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (balance_after = balance_before + amount)
);
CREATE INDEX ledger_entries_client ON ledger_entries (client_id, id DESC);
CREATE INDEX ledger_entries_session ON ledger_entries (session_id) WHERE session_id IS NOT NULL;

-- Payments ----------------------------------------------------------------------------------

CREATE TABLE invoices (
    id              text PRIMARY KEY,
    client_id       uuid NOT NULL REFERENCES clients(id),
    provider        text NOT NULL,
    method          text NOT NULL CHECK (method IN ('qr', 'card')),
    amount          numeric(12,2) NOT NULL CHECK (amount > 0),
    currency        char(3) NOT NULL DEFAULT 'KGS',
    status          smallint NOT NULL DEFAULT 0 CHECK (status IN (0, 1, 2)),
    provider_ref    text,
    description     text,
    qr_data         text,
    paid_amount     numeric(12,2),
    credited        boolean NOT NULL DEFAULT false,
    expires_at      timestamptz NOT NULL,
    paid_at         timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX invoices_client ON invoices (client_id, created_at DESC);
CREATE INDEX invoices_pending ON invoices (expires_at) WHERE status = 0;

CREATE TABLE payment_audit (
    id              bigserial PRIMARY KEY,
    invoice_id      text,
    client_id       uuid,
    event           text NOT NULL,
    data            jsonb NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payment_audit_invoice ON payment_audit (invoice_id);

-- App features ------------------------------------------------------------------------------

CREATE TABLE favourites (
    client_id       uuid NOT NULL REFERENCES clients(id) ON DELETE CASCADE,
    location_id     text NOT NULL REFERENCES locations(id) ON DELETE CASCADE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (client_id, location_id)
);

CREATE TABLE push_subscriptions (
    id              uuid PRIMARY KEY,
    user_id         uuid NOT NULL,
    user_type       text NOT NULL CHECK (user_type IN ('client', 'owner')),
    endpoint        text NOT NULL,
    p256dh_key      text NOT NULL,
    auth_key        text NOT NULL,
    user_agent      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    last_used_at    timestamptz,
    UNIQUE (user_id, endpoint)
);
CREATE INDEX push_subscriptions_user ON push_subscriptions (user_id, user_type);

-- Auth and API protection -------------------------------------------------------------------

CREATE TABLE otp_codes (
    phone           text PRIMARY KEY,
    code_hash       text NOT NULL,
    attempts        smallint NOT NULL DEFAULT 0,
    expires_at      timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE refresh_tokens (
    jti             uuid PRIMARY KEY,
    subject         uuid NOT NULL,
    expires_at      timestamptz NOT NULL,
    revoked_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refresh_tokens_subject ON refresh_tokens (subject);

-- REST Idempotency-Key: the same key from the same client replays the stored answer.
CREATE TABLE api_idempotency (
    client_id       uuid NOT NULL,
    key             text NOT NULL,
    method          text NOT NULL,
    path            text NOT NULL,
    request_hash    text NOT NULL,
    status_code     smallint,
    response        jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (client_id, key)
);

-- OCPP message log ---------------------------------------------------------------------------

CREATE TABLE ocpp_messages (
    id              bigserial PRIMARY KEY,
    station_id      text NOT NULL,
    direction       text NOT NULL CHECK (direction IN ('in', 'out')),
    message_type    smallint NOT NULL CHECK (message_type IN (2, 3, 4)),
    unique_id       text NOT NULL,
    action          text,
    payload         jsonb,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ocpp_messages_station ON ocpp_messages (station_id, id DESC);
