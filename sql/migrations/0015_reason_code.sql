-- A machine-readable reason beside the human one: `reason_code` is the reason's leading code
-- (`too_late`, `in_past`, `no_channel`, `call_cancelled`, `rescheduled`, `receipt_arrived`,
-- `token_dead`, `fcm_unavailable`, `twilio_error`, …; `other` for a reason without one), kept by
-- the triggers in sql/functions/reasons.sql. Code and queries match on it, never on the text
-- (`reason LIKE 'receipt_arrived%'` broke whenever a reason's wording changed).
--
-- Adding a nullable column is instant; the backfill rewrites only rows that have a reason.
ALTER TABLE notification_logs ADD COLUMN IF NOT EXISTS reason_code text;
ALTER TABLE precall.call_jobs ADD COLUMN IF NOT EXISTS reason_code text;

UPDATE notification_logs
SET reason_code = coalesce(substring(reason from '^([a-z][a-z0-9_]*)(?:[:;]|$)'), 'other')
WHERE reason IS NOT NULL AND reason_code IS NULL;
UPDATE precall.call_jobs
SET reason_code = coalesce(substring(reason from '^([a-z][a-z0-9_]*)(?:[:;]|$)'), 'other')
WHERE reason IS NOT NULL AND reason_code IS NULL;
