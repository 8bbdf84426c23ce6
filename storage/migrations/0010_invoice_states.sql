-- A top-up invoice's life as its PaymentActor keeps it: the machine's state (the app's 0/1/2
-- `status` follows it), when its QR code stops being payable, how often the provider was asked
-- and when it is asked next, the provider's transaction id (an approval is credited once per
-- transaction: the ledger key carries it), the card's mask (never the number), and why an
-- approved payment could not be credited, for an operator.
ALTER TABLE invoices
    ADD COLUMN state          text NOT NULL DEFAULT 'created'
        CHECK (state IN ('created', 'pending', 'approved', 'canceled', 'expired')),
    ADD COLUMN qr_expires_at  timestamptz,
    ADD COLUMN checks         integer NOT NULL DEFAULT 0,
    ADD COLUMN next_check_at  timestamptz,
    ADD COLUMN provider_tx    text,
    ADD COLUMN card_mask      text,
    ADD COLUMN credited_at    timestamptz,
    ADD COLUMN credit_error   text;

CREATE UNIQUE INDEX invoices_provider_tx ON invoices (provider, provider_tx)
    WHERE provider_tx IS NOT NULL;
CREATE INDEX invoices_open ON invoices (next_check_at) WHERE state IN ('created', 'pending');
CREATE SEQUENCE invoice_number_seq;
