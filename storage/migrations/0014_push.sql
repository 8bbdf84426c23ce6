-- Web Push: each subscription remembers the language its app asked in (its notifications are
-- written in it), and dead ones are found by endpoint when a push service answers 404/410.
ALTER TABLE push_subscriptions ADD COLUMN language text NOT NULL DEFAULT 'ru'
    CHECK (language IN ('en', 'ru', 'ky'));
CREATE INDEX push_subscriptions_endpoint ON push_subscriptions (endpoint);
