-- Sign-in by cpms itself: one-time codes sent by SMS, rotating refresh tokens, and the moment
-- a client asked for its account to be deleted (its personal data is purged some days later).
-- The schema's first version held unused drafts of these tables, and of the idempotency table
-- that 0012 made as `idempotency_keys`; they are replaced (they were never written to).
DROP TABLE otp_codes;
DROP TABLE refresh_tokens;
DROP TABLE api_idempotency;

CREATE TABLE otp_codes (
    phone       text PRIMARY KEY,
    code_hash   bytea NOT NULL,              -- HMAC-SHA256 of the code: the code is never stored
    expires_at  timestamptz NOT NULL,
    attempts    integer NOT NULL DEFAULT 0,  -- wrong codes tried; at 5 the code is spent
    sent_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE refresh_tokens (
    token_hash  bytea PRIMARY KEY,           -- SHA-256 of the token: the token is never stored
    family      uuid NOT NULL,               -- every token rotated from one sign-in
    client_id   uuid NOT NULL REFERENCES clients(id) ON DELETE CASCADE,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,                 -- rotated: presenting it again revokes the family
    revoked_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);
CREATE INDEX refresh_tokens_client ON refresh_tokens (client_id);

ALTER TABLE clients ADD COLUMN deletion_requested_at timestamptz;
