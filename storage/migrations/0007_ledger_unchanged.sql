-- A ledger batch reads its rows without locking them and writes them in one statement, which
-- checks that nothing it read has changed since (balances, statuses, holds, free connectors).
-- When something has (another process's ledger wrote meanwhile), this aborts the statement as a
-- serialization failure, and the batch is planned again on fresh rows.
CREATE FUNCTION cpms_ledger_unchanged(unchanged boolean) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF NOT unchanged THEN
        RAISE EXCEPTION 'ledger rows changed while the batch was planned'
            USING ERRCODE = 'serialization_failure';
    END IF;
    RETURN true;
END $$;
