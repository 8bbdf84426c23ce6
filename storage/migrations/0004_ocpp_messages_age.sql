-- The message log's retention deletes by age every hour. Rows arrive in time order, so a BRIN
-- index on created_at finds the old ones without reading the whole table, and costs almost
-- nothing to keep up as every frame is copied in.
CREATE INDEX ocpp_messages_created ON ocpp_messages USING brin (created_at);
