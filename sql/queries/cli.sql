-- The command line's statements (cli/), reached through the typed functions of cli/store.py.
-- Support's commands stay thin wrappers over what a DBA would run: the scheduled_calls and users
-- triggers re-plan or cancel unsent previews exactly as for a hand-written UPDATE.
-- Each block starts with `-- name --`.

-- user_known --
SELECT 1 FROM users WHERE id = %(user_id)s

-- history --
SELECT * FROM precall.notification_history(%(user_id)s, %(limit)s, 0)

-- kpis --
SELECT * FROM precall.kpis(%(since)s, %(by)s)

-- list_calls --
SELECT c.id, c.user_id, c.scheduled_at,
       to_char(c.scheduled_at AT TIME ZONE u.timezone, 'YYYY-MM-DD HH24:MI') || ' ' || u.timezone AS local_time,
       c.status, c.topic,
       (SELECT n.type || ' ' || n.status FROM notification_logs n WHERE n.call_id = c.id
        ORDER BY n.created_at DESC LIMIT 1) AS preview
FROM scheduled_calls c JOIN users u ON u.id = c.user_id
WHERE (%(id)s::uuid IS NULL OR c.id = %(id)s)
  AND (%(user)s::uuid IS NULL OR c.user_id = %(user)s)
  AND (%(status)s::text IS NULL OR c.status = %(status)s)
  AND (%(since)s::timestamptz IS NULL OR c.scheduled_at >= %(since)s)
  AND (%(until)s::timestamptz IS NULL OR c.scheduled_at < %(until)s)
ORDER BY c.scheduled_at
LIMIT %(limit)s

-- local_call_time --
SELECT precall.local_call_time(%(user_id)s, %(local)s)

-- call_state --
SELECT status, user_id FROM scheduled_calls WHERE id = %(id)s

-- schedule_call --
INSERT INTO scheduled_calls (user_id, scheduled_at, topic) VALUES (%(user_id)s, %(at)s, %(topic)s) RETURNING id

-- reschedule_call --
UPDATE scheduled_calls SET scheduled_at = %(at)s WHERE id = %(id)s AND status = 'pending'

-- cancel_call --
UPDATE scheduled_calls SET status = 'cancelled' WHERE id = %(id)s AND status = 'pending'

-- live_dispatchers --
SELECT count(*) FROM precall.dispatchers
WHERE stopped_at IS NULL AND heartbeat_at > now() - (SELECT heartbeat_max_age FROM precall.settings)

-- queued_on_channel --
SELECT count(*) FROM notification_logs WHERE status = 'queued' AND channel = %(channel)s

-- send_capacity --
-- The fleet's sustained rate on a channel as planning uses it (settings, capped by paced dispatchers).
SELECT precall.send_capacity(%(channel)s)::float8

-- previews_beyond_capacity --
SELECT id, call_id, planned_send_at, send_at, needed_early FROM precall.previews_beyond_capacity(%(channel)s)

-- previews_at_risk --
SELECT * FROM precall.previews_at_risk(%(rate)s::numeric, %(channel)s)

-- dispatcher_heartbeats --
SELECT name, heartbeat_at, stopped_at FROM precall.dispatchers ORDER BY heartbeat_at DESC

-- heartbeat_max_age --
SELECT heartbeat_max_age FROM precall.settings

-- queue_health --
SELECT count(*) FILTER (WHERE status = 'queued'),
       count(*) FILTER (WHERE status = 'queued' AND send_at < now() - %(after)s::interval),
       extract(epoch FROM now() - min(send_at) FILTER (WHERE status = 'queued' AND send_at < now() - %(after)s::interval)),
       count(*) FILTER (WHERE status = 'sending' AND lease_expires_at < now())
FROM notification_logs WHERE status IN ('queued', 'sending')

-- expired_calls --
SELECT count(*), max(due_at) FROM precall.call_jobs
WHERE status = 'expired' AND due_at > now() - interval '24 hours'

-- failed_call_events --
-- Reschedules and cancels the call system was not told of (its webhook refused them or stayed down).
SELECT count(*), max(created_at) FROM precall.call_events
WHERE status = 'failed' AND created_at > now() - interval '24 hours'

-- sms_budget_use --
SELECT currency, budget, spent, share FROM precall.sms_budget_use()

-- preview_inputs --
SELECT * FROM precall.preview_inputs(%(call_id)s)

-- last_sent_preview --
SELECT sent_at, channel, type FROM notification_logs
WHERE call_id = %(call_id)s AND planned_for = %(planned_for)s AND status IN ('sent', 'delivered', 'opened')
ORDER BY sent_at DESC LIMIT 1

-- claim_manual_preview_v2 --
SELECT * FROM precall.claim_manual_preview_v2(%(call_id)s, %(worker)s, %(force)s, %(type)s)

-- notification_and_fallback --
SELECT * FROM notification_logs WHERE id = %(id)s OR parent_id = %(id)s ORDER BY created_at

-- message_inputs --
SELECT p.name, u.current_streak, c.topic, u.locale,
       extract(epoch FROM c.scheduled_at - now())::float8, u.notification_lead_min,
       (SELECT s.snooze_minutes FROM precall.settings s)
FROM scheduled_calls c JOIN users u ON u.id = c.user_id
LEFT JOIN coach_personas p ON p.id = u.coach_persona_id
WHERE c.id = %(call_id)s AND u.id = %(user_id)s

-- demo_coach --
INSERT INTO coach_personas (name) VALUES (%(name)s) RETURNING id

-- demo_user --
INSERT INTO users (phone_number, locale, timezone, current_streak, fcm_token, platform, push_enabled,
                   notification_pref, notification_lead_min, coach_persona_id)
VALUES (%(phone)s, %(locale)s, %(tz)s, %(streak)s, %(token)s, %(platform)s, %(push)s, %(pref)s, %(lead)s,
        %(coach_id)s)
RETURNING id

-- demo_call --
INSERT INTO scheduled_calls (user_id, scheduled_at, topic)
VALUES (%(user_id)s, date_trunc('second', now()) + make_interval(secs => %(seconds)s), %(topic)s)

-- demo_previews --
SELECT to_char(n.send_at, 'HH24:MI:SS'), to_char(c.scheduled_at, 'HH24:MI:SS'), n.type, n.status,
       coalesce(round(extract(epoch FROM n.attempted_at - n.send_at) * 1000, 1)::text, '-'),
       coalesce(n.reason, '')
FROM notification_logs n JOIN scheduled_calls c ON c.id = n.call_id
ORDER BY n.send_at

-- demo_calls_not_planned --
SELECT count(*) FROM scheduled_calls c
WHERE c.status = 'pending' AND NOT EXISTS (SELECT 1 FROM notification_logs n WHERE n.call_id = c.id)

-- demo_work_left --
SELECT count(*) FROM notification_logs WHERE status IN ('queued', 'sending')
    OR (SELECT count(*) FROM scheduled_calls c WHERE c.status = 'pending' AND c.scheduled_at > now()
        AND NOT EXISTS (SELECT 1 FROM notification_logs n WHERE n.call_id = c.id)) > 0

-- create_experiment --
SELECT precall.create_experiment(%(name)s::text, %(arms)s::jsonb, %(holdout)s::numeric, %(population)s::jsonb,
                                 coalesce(%(starts_at)s::timestamptz, now()), %(ends_at)s::timestamptz, %(allocation)s::text)

-- stop_experiment --
SELECT precall.stop_experiment(%(name)s)

-- experiments --
SELECT e.name, CASE WHEN e.stopped_at IS NOT NULL THEN 'stopped' WHEN e.starts_at > now() THEN 'scheduled'
                    WHEN e.ends_at <= now() THEN 'ended' ELSE 'running' END AS status,
       e.population, e.holdout, e.allocation, e.starts_at, e.ends_at, e.stopped_at,
       (SELECT string_agg(a.name || ' ' || round(a.share * 100, 1) || '%%'
                          || coalesce(' lead ' || a.lead_min || ' min', '') || coalesce(' by ' || a.channel, '')
                          || coalesce(' variant ' || a.variant, '') || CASE WHEN a.no_preview AND a.position > 0
                                                                                     THEN ' no preview' ELSE '' END,
                          ', ' ORDER BY a.position)
        FROM precall.experiment_arms a WHERE a.experiment_id = e.id) AS arms,
       (SELECT count(*) FROM precall.experiment_assignments s WHERE s.experiment_id = e.id) AS users
FROM precall.experiments e ORDER BY e.created_at DESC

-- experiment_report --
SELECT r.*, a.share, a.lead_min, a.channel, a.variant, a.no_preview, e.allocation, e.created_at, e.starts_at,
       e.ends_at, e.stopped_at
FROM precall.experiment_report r
JOIN precall.experiments e ON e.name = r.experiment
JOIN precall.experiment_arms a ON a.experiment_id = e.id AND a.name = r.arm
WHERE r.experiment = %(name)s
ORDER BY r.position

-- experiment_guardrail --
-- Arms of running experiments answered significantly less than their control (p < 0.01) once
-- both have 200 calls (precall doctor warns).
SELECT r.experiment, r.arm, r.calls, r.answer_rate, c.answer_rate AS control_rate, r.vs_control_diff, r.vs_control_p
FROM precall.experiment_report r
JOIN precall.experiment_report c ON c.experiment = r.experiment AND c.position = 1
JOIN precall.experiments e ON e.name = r.experiment AND e.stopped_at IS NULL AND (e.ends_at IS NULL OR e.ends_at > now())
WHERE r.position > 1 AND r.calls >= 200 AND c.calls >= 200 AND r.vs_control_diff < 0 AND r.vs_control_p < 0.01

-- experiment_allocations --
SELECT al.at, al.shares, al.p_best FROM precall.experiment_allocations al
JOIN precall.experiments e ON e.id = al.experiment_id
WHERE e.name = %(name)s ORDER BY al.at, al.id
