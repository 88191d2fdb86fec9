-- The dispatcher's statements (dispatcher/), each reached by name through precall.sql.query().
-- Each block starts with `-- name --`. A dispatcher of the previous release sends its own copy of
-- this file's statements during a rolling upgrade (tests/test_rolling_upgrade.py).

-- claim_due_previews_v3 --
-- Due previews, and those due within precall.settings.claim_ahead (sent at their send_at).
SELECT * FROM precall.claim_due_previews_v3(%(worker)s, %(limit)s, %(gone)s::text[], true)

-- start_attempts --
SELECT id FROM precall.start_attempts(%(worker)s, %(ids)s::uuid[]) AS id

-- next_due --
-- A preview is claimable claim_ahead before its send_at.
SELECT d.preview_in - extract(epoch FROM s.claim_ahead)::float8, d.call_in
FROM precall.next_due() d, precall.settings s

-- next_due_and_gone --
-- next_due, and (about once a second) whether a gone dispatcher left rows: one statement, so an
-- idle dispatcher's query rate does not grow.
SELECT d.preview_in - extract(epoch FROM s.claim_ahead)::float8, d.call_in, g.owners, g.previews, g.calls,
       -- call events to deliver (queued, or a lease that ran out): claimed only when there are
       EXISTS (SELECT 1 FROM precall.call_events e
               WHERE e.status IN ('queued', 'firing') AND (e.status = 'queued' OR e.lease_expires_at < now())) AS events
FROM precall.next_due() d, precall.left_by_gone_dispatchers() g, precall.settings s

-- claim_due_calls --
SELECT * FROM precall.claim_due_calls(%(worker)s, %(limit)s, %(gone)s::text[])

-- arm_overrides --
-- The channel and copy variant of the claimed previews' experiment arms (a fallback SMS: its push's).
SELECT n.id, a.channel, a.variant
FROM notification_logs n
LEFT JOIN notification_logs p ON p.id = n.parent_id
JOIN precall.experiment_arms a ON a.experiment_id = coalesce(n.experiment_id, p.experiment_id)
                               AND a.name = coalesce(n.arm, p.arm)
WHERE n.id = ANY (%(ids)s::uuid[]) AND (a.channel IS NOT NULL OR a.variant IS NOT NULL)

-- claim_call_events --
SELECT * FROM precall.claim_call_events(%(worker)s, %(limit)s, %(gone)s::text[])

-- record_call_event --
SELECT precall.record_call_event(%(id)s, %(worker)s, %(ok)s, %(outcome)s)

-- record_call_fired --
SELECT precall.record_call_fired(%(call_id)s, %(worker)s, %(ok)s, %(outcome)s)

-- notify_call_due --
SELECT pg_notify('precall_call_due', %(payload)s)

-- heartbeat --
SELECT precall.heartbeat(%(name)s, %(hostname)s, %(pid)s, %(stopped)s, %(push_rate)s::numeric, %(sms_rate)s::numeric)

-- schedule_policy --
-- The fleet's policy a sender follows, re-read with every heartbeat (precall.settings).
SELECT extract(epoch FROM fallback_wait)::float8 AS fallback_wait_s, push_enabled, sms_enabled,
       sms_daily_budget IS NOT NULL AS sms_budget_set, snooze_minutes,
       -- a running experiment has an arm with a channel or a copy variant (dispatcher/experiment_arms.py)
       EXISTS (SELECT 1 FROM precall.experiment_arms a JOIN precall.running_experiments(now()) e ON e.id = a.experiment_id
               WHERE a.channel IS NOT NULL OR a.variant IS NOT NULL) AS arm_overrides
FROM precall.settings

-- renew_lease --
-- One row's lease, for a sender without a liveness connection (`precall send`).
SELECT precall.renew_leases(%(worker)s, ARRAY[%(id)s]::uuid[])

-- record_sent_batch --
-- Every send that came back meanwhile, in one call (dispatcher/write_back.py).
SELECT precall.record_sent_batch(%(rows)s::jsonb)

-- record_unsent --
SELECT precall.record_unsent(%(id)s, %(worker)s, %(status)s, %(reason)s, %(type)s, %(channel)s, %(title)s,
                             %(body)s, %(error_msg)s, %(attempted_at)s, %(fallback_reason)s)

-- opt_out_sms --
UPDATE users SET sms_opted_out = true WHERE id = %(user_id)s AND phone_number = %(phone)s

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
       AND reason_code = 'receipt_arrived' AND updated_at > now() - interval '1 hour') AS avoided

-- register_session --
-- The liveness connection's session stands for the process (dispatcher/liveness.py).
SELECT precall.register_session(%(worker)s, %(hostname)s, %(pid)s, %(new_process)s)

-- renew_leases --
SELECT precall.renew_leases(%(worker)s, %(ids)s::uuid[])

-- listen_due --
-- The wake-up channels (dispatcher/listener.py): planning NOTIFYs precall_due; a reschedule or
-- cancel precall_call_changed (its call event is to deliver).
LISTEN precall_due; LISTEN precall_call_changed

-- ping --
SELECT 1

-- push_targets --
-- The devices each claimed preview's push goes to (dispatcher/push_targets.py), one statement per claim.
SELECT notification_id, device_id, fcm_token, platform, sent_provider_id
FROM precall.push_targets(%(ids)s::uuid[])

-- record_push_deliveries --
-- Per-device outcomes of a push no device took; returns the devices the user has left.
SELECT precall.record_push_deliveries(%(id)s, %(worker)s, %(rows)s::jsonb)

-- sms_budget_reached --
SELECT precall.sms_budget_reached(%(currency)s)
