-- Indexes for the lookups the hot paths and the retention job make on notification_logs.
--
-- parent_id: the FK's ON DELETE SET NULL looks up every deleted row's children, and receipts look
-- up a push's fallback. Without it each row deleted by precall.prune_notification_logs scanned the
-- table (500k rows: ~83 ms per deleted row, a 5,000-row batch ~7 minutes in one transaction).
-- provider_id: each Twilio status callback finds its row by the message SID (74 ms at 500k rows).
--
-- A migration runs in one transaction, so these are not built CONCURRENTLY: on a large existing
-- table, create them CONCURRENTLY with these names before `precall db migrate` (IF NOT EXISTS
-- then keeps them), e.g.
--   CREATE INDEX CONCURRENTLY notification_logs_parent_idx ON notification_logs (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS notification_logs_parent_idx
    ON notification_logs (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS notification_logs_provider_id_idx
    ON notification_logs (provider_id) WHERE provider_id IS NOT NULL;
