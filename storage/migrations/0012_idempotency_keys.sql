-- The answers to requests sent with an `Idempotency-Key`, kept 24 hours: the same key again
-- (a retry after a lost answer) gets the same answer instead of a second start or top-up.
-- `owner` is whose keys they are (`client:<id>`, or `admin`), `fingerprint` the SHA-256 of
-- the method, path and body the key was first used with.
CREATE TABLE idempotency_keys (
    owner       text NOT NULL,
    key         text NOT NULL,
    fingerprint bytea NOT NULL,
    status      smallint NOT NULL,
    body        bytea NOT NULL,
    media_type  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner, key)
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
