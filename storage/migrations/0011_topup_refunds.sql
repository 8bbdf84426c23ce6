-- An operator returns a top-up to the payer (`cpms payments refund`): the wallet is debited by
-- a `topup_refund` entry that names the invoice, the provider returns the money, and the
-- invoice keeps how much of it has been returned and how many refunds were made (the next
-- refund's number is part of its idempotency key, so a refund retried after a crash is one).
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_type_check;
ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_type_check
    CHECK (type IN ('topup', 'adjustment', 'charge_reserve', 'charge_refund', 'charge_payment',
                    'charge_debt', 'topup_refund'));

ALTER TABLE invoices
    ADD COLUMN refunded_amount numeric(12,2) NOT NULL DEFAULT 0 CHECK (refunded_amount >= 0),
    ADD COLUMN refunds         integer NOT NULL DEFAULT 0;
