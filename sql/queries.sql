-- Named queries used by the dispatcher. Each block starts with `-- name --`.

-- claim_due_previews --
SELECT * FROM precall.claim_due_previews(%(worker)s, %(limit)s)

-- next_due --
SELECT preview_in, call_in FROM precall.next_due()

-- claim_due_calls --
SELECT * FROM precall.claim_due_calls(%(worker)s, %(limit)s)

-- record_call_fired --
SELECT precall.record_call_fired(%(call_id)s, %(worker)s, %(ok)s, %(outcome)s)

-- notify_call_due --
SELECT pg_notify('precall_call_due', %(payload)s)

-- heartbeat --
SELECT precall.heartbeat(%(name)s, %(hostname)s, %(pid)s, %(stopped)s)

-- renew_lease --
UPDATE notification_logs
SET lease_expires_at = clock_timestamp() + (SELECT lease FROM precall.settings)
WHERE id = %(id)s AND status = 'sending' AND lease_owner = %(worker)s

-- record_sent_batch --
-- Every send that came back meanwhile, in one statement (dispatcher/write_back.py).
WITH r AS (
    SELECT * FROM jsonb_to_recordset(%(rows)s::jsonb) AS r(
        id uuid, worker text, type text, channel text, title text, body text, provider_id text,
        reason text, attempted_at timestamptz, sent_at timestamptz, sms_encoding text,
        sms_segments int, cost numeric, currency text)
), sent AS (
    UPDATE notification_logs n
    -- A fast device's receipt can land before this write-back (precall.record_push_receipt).
    SET status = CASE WHEN n.opened_at IS NOT NULL THEN 'opened' WHEN n.delivered_at IS NOT NULL THEN 'delivered' ELSE 'sent' END,
        type = r.type, channel = r.channel, title = r.title, body = r.body,
        provider_id = r.provider_id, reason = coalesce(r.reason, n.reason), error_msg = NULL,
        attempted_at = r.attempted_at, sent_at = r.sent_at,
        sms_encoding = r.sms_encoding, sms_segments = r.sms_segments,
        cost_estimate = r.cost, cost_currency = r.currency,
        lease_owner = NULL, lease_expires_at = NULL, updated_at = clock_timestamp()
    FROM r
    WHERE n.id = r.id AND n.status = 'sending' AND n.lease_owner = r.worker
    RETURNING n.call_id, n.sent_at
)
UPDATE scheduled_calls c
SET preview_sent = true, preview_sent_at = coalesce(c.preview_sent_at, s.first_sent_at)
FROM (SELECT call_id, min(sent_at) AS first_sent_at FROM sent GROUP BY call_id) s
WHERE c.id = s.call_id

-- record_unsent --
UPDATE notification_logs
SET status = %(status)s, type = coalesce(%(type)s, type), channel = %(channel)s,
    title = %(title)s, body = %(body)s, reason = %(reason)s, error_msg = %(error_msg)s,
    attempted_at = %(attempted_at)s,
    lease_owner = NULL, lease_expires_at = NULL, updated_at = clock_timestamp()
WHERE id = %(id)s AND status = 'sending' AND lease_owner = %(worker)s

-- disable_push --
UPDATE users SET push_enabled = false WHERE id = %(user_id)s AND fcm_token = %(token)s

-- opt_out_sms --
UPDATE users SET sms_opted_out = true WHERE id = %(user_id)s AND phone_number = %(phone)s

-- insert_fallback_now --
INSERT INTO notification_logs (user_id, call_id, type, channel, status, reason, send_at, planned_for,
                               parent_id, lease_owner, lease_expires_at, attempts)
SELECT n.user_id, n.call_id, 'fallback_sms', 'sms', 'sending', %(reason)s, clock_timestamp(), n.planned_for,
       n.id, %(worker)s, clock_timestamp() + (SELECT lease FROM precall.settings), 1
FROM notification_logs n
WHERE n.id = %(parent_id)s
ON CONFLICT DO NOTHING
RETURNING id

-- plan_fallback --
INSERT INTO notification_logs (user_id, call_id, type, channel, status, send_at, planned_for, parent_id)
SELECT n.user_id, n.call_id, 'fallback_sms', 'sms', 'queued', %(send_at)s, n.planned_for, n.id
FROM notification_logs n
-- Locks the push row, so a receipt racing this insert either sees the fallback or stops it here.
WHERE n.id = %(parent_id)s AND n.delivered_at IS NULL
FOR UPDATE
ON CONFLICT DO NOTHING
RETURNING id

-- metrics_snapshot --
-- The database's view for the gauges; the created_at bound keeps the fallback counts on an index.
SELECT
    (SELECT count(*) FROM notification_logs WHERE status = 'queued') AS queued,
    coalesce(extract(epoch FROM clock_timestamp() - (
        SELECT min(send_at) FROM notification_logs WHERE status = 'queued' AND send_at < clock_timestamp())), 0)::float8
        AS oldest_overdue_s,
    (SELECT count(*) FROM notification_logs
     WHERE created_at > now() - interval '65 minutes' AND type = 'fallback_sms' AND sent_at > now() - interval '1 hour')
        AS fired,
    (SELECT count(*) FROM notification_logs
     WHERE created_at > now() - interval '65 minutes' AND type = 'fallback_sms' AND status = 'cancelled'
       AND reason LIKE 'receipt_arrived%%' AND updated_at > now() - interval '1 hour') AS avoided
