-- Operators' tools: the KPI views and kpis(), manual sends, capacity at risk, retention.
--
-- The current definition of each object below; `precall db migrate` re-applies this file when it
-- changes (after the numbered migrations). Edit here, never in sql/migrations/.

-- One row per notification with the dimensions stats group by (user's locale and platform now,
-- the row's UTC day) and the facts the KPIs count. Manual sends are excluded from lateness.
CREATE OR REPLACE VIEW precall.notification_facts AS
SELECT n.id, n.user_id, n.call_id, n.type, n.channel, n.status, n.created_at,
       (n.created_at AT TIME ZONE 'UTC')::date AS day,
       u.locale, coalesce(u.platform, 'none') AS platform,
       n.sent_at IS NOT NULL AS sent,
       n.delivered_at IS NOT NULL AS delivered,
       n.opened_at IS NOT NULL AS opened,
       n.late_receipt,
       CASE WHEN n.manual_by IS NULL AND n.attempted_at IS NOT NULL AND n.send_at IS NOT NULL
            THEN extract(epoch FROM n.attempted_at - n.send_at) * 1000 END AS lateness_ms,
       CASE WHEN n.channel = 'push' AND n.delivered_at IS NOT NULL AND n.sent_at IS NOT NULL
            THEN extract(epoch FROM n.delivered_at - n.sent_at) * 1000 END AS time_to_receipt_ms,
       CASE WHEN n.sent_at IS NOT NULL THEN n.cost_estimate END AS cost,
       n.cost_currency,
       n.experiment_id, n.arm
FROM notification_logs n
JOIN users u ON u.id = n.user_id;

-- One row per call that reached its time (answered, no_answer, failed), with the channel of the
-- preview that went out for it ('none' when none did). A call the call system reported as
-- answered by a machine (precall.call_outcomes) is not answered; `action` is the person's applied
-- action on the call's preview ('none' when none); `experiment` is 'name/arm' for a call planned
-- under an experiment ('none' otherwise), `held_out` true for its holdout (or a 'none' arm: no
-- preview on purpose). precall.kpis leaves held-out calls out of call_answer_rate, except by
-- experiment.
CREATE OR REPLACE VIEW precall.call_facts AS
SELECT c.id, c.user_id, c.scheduled_at, c.status,
       (c.scheduled_at AT TIME ZONE 'UTC')::date AS day,
       u.locale, coalesce(u.platform, 'none') AS platform,
       coalesce((SELECT n.channel FROM notification_logs n
                 WHERE n.call_id = c.id AND n.type IN ('preview_push', 'preview_sms') AND n.sent_at IS NOT NULL
                 ORDER BY n.sent_at LIMIT 1), 'none') AS channel,
       c.status = 'answered' AND o.answered_by IS DISTINCT FROM 'machine' AS answered,
       o.answered_by,
       coalesce(a.action, 'none') AS action,
       coalesce(x.experiment || '/' || x.arm, 'none') AS experiment,
       coalesce(x.held_out, false) AS held_out
FROM scheduled_calls c
JOIN users u ON u.id = c.user_id
LEFT JOIN precall.call_outcomes o ON o.call_id = c.id
LEFT JOIN precall.call_actions a ON a.call_id = c.id AND a.outcome = 'applied'
LEFT JOIN LATERAL (
    SELECT e.name AS experiment, n.arm, n.reason_code = 'holdout' AS held_out
    FROM notification_logs n JOIN precall.experiments e ON e.id = n.experiment_id
    WHERE n.call_id = c.id AND n.experiment_id IS NOT NULL
    ORDER BY n.created_at DESC LIMIT 1) x ON true
WHERE c.status IN ('answered', 'no_answer', 'failed');

-- Claims a preview for a manual send, leased to p_worker, as a precall.claimed_preview.
-- Without p_force: refuses when a preview already left for this call time (saying when and how)
-- or is being sent right now; takes over the planned row when there is one. With p_force: a new
-- row marked resend. Refusals carry precall's SQLSTATEs (PC001 no such call, PC002 not pending,
-- PC003 too late, PC004 being sent now, PC005 already sent; precall/errors.py maps them).
CREATE OR REPLACE FUNCTION precall.claim_manual_preview_v2(p_call_id uuid, p_worker text, p_force boolean DEFAULT false, p_type text DEFAULT NULL::text)
 RETURNS SETOF precall.claimed_preview
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_call scheduled_calls;
    v_user users;
    v_sent notification_logs;
    v_id uuid;
    v_now timestamptz := clock_timestamp();
    v_lease interval := (SELECT s.lease FROM precall.settings s);
BEGIN
    SELECT * INTO v_call FROM scheduled_calls c WHERE c.id = p_call_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no call with id %', p_call_id USING ERRCODE = 'PC001';
    ELSIF v_call.status <> 'pending' THEN
        RAISE EXCEPTION 'call % is %, not pending: nothing to preview', p_call_id, v_call.status
            USING ERRCODE = 'PC002';
    ELSIF v_call.scheduled_at <= v_now THEN
        RAISE EXCEPTION 'call % was due at %: too late for a preview', p_call_id, v_call.scheduled_at
            USING ERRCODE = 'PC003';
    END IF;
    SELECT * INTO v_user FROM users u WHERE u.id = v_call.user_id;
    IF NOT p_force THEN
        SELECT * INTO v_sent FROM notification_logs n
        WHERE n.call_id = p_call_id AND n.planned_for = v_call.scheduled_at
          AND n.status IN ('sent', 'delivered', 'opened', 'sending')
        ORDER BY n.sent_at DESC NULLS FIRST LIMIT 1;
        IF FOUND AND v_sent.status = 'sending' THEN
            RAISE EXCEPTION 'a preview for call % is being sent right now by %', p_call_id, v_sent.lease_owner
                USING ERRCODE = 'PC004';
        ELSIF FOUND THEN
            RAISE EXCEPTION 'a preview for call % was already sent at % by % (%, notification %); use --force to send again',
                p_call_id, v_sent.sent_at, v_sent.channel, v_sent.type, v_sent.id USING ERRCODE = 'PC005';
        END IF;
        UPDATE notification_logs n
        SET status = 'sending', lease_owner = p_worker, lease_expires_at = v_now + v_lease,
            attempts = n.attempts + 1, manual_by = p_worker, type = coalesce(p_type, n.type),
            send_at = least(n.send_at, v_now), updated_at = v_now
        WHERE n.call_id = p_call_id AND n.status = 'queued' AND n.type IN ('preview_push', 'preview_sms')
        RETURNING n.id INTO v_id;
    END IF;
    IF v_id IS NULL THEN
        INSERT INTO notification_logs AS n (user_id, call_id, type, status, reason, send_at, planned_for,
                                            lease_owner, lease_expires_at, attempts, manual_by, resend)
        VALUES (v_call.user_id, p_call_id, coalesce(p_type, precall.guess_preview_type(v_user), 'preview_push'), 'sending',
                CASE WHEN p_force THEN 'manual resend' ELSE 'manual send' END, v_now, v_call.scheduled_at,
                p_worker, v_now + v_lease, 1, p_worker, p_force)
        RETURNING n.id INTO v_id;
    END IF;
    RETURN QUERY SELECT p.* FROM notification_logs n CROSS JOIN LATERAL precall.claimed_preview_of(n) p WHERE n.id = v_id;
END
$function$;

-- The previous release's name and declared result (the same columns), for its `precall send`
-- during a rolling upgrade; a later release drops it.
CREATE OR REPLACE FUNCTION precall.claim_manual_preview(p_call_id uuid, p_worker text, p_force boolean DEFAULT false, p_type text DEFAULT NULL::text)
 RETURNS TABLE(id uuid, call_id uuid, user_id uuid, type text, parent_id uuid, send_at timestamp with time zone, scheduled_at timestamp with time zone, attempts integer, topic text, phone_number text, locale text, coach_name text, current_streak integer, fcm_token text, platform text, push_enabled boolean, notification_pref text, sms_opted_out boolean)
 LANGUAGE sql
AS $function$
    SELECT * FROM precall.claim_manual_preview_v2(p_call_id, p_worker, p_force, p_type)
$function$;

-- The KPIs since p_since, grouped by p_by ('all', 'channel', 'locale', 'platform', 'day', 'action' or
-- 'experiment': 'name/arm', the holdout's calls included only there):
-- one row per group and KPI with numerator, denominator, value and target. calls_expired: call
-- jobs not handed off within precall.settings.call_grace / call jobs that reached an outcome.
CREATE OR REPLACE FUNCTION precall.kpis(p_since timestamp with time zone, p_by text DEFAULT 'all'::text)
 RETURNS TABLE(grp text, kpi text, numerator numeric, denominator numeric, value numeric, target numeric, meets_target boolean)
 LANGUAGE plpgsql
 STABLE
AS $function$
BEGIN
    IF p_by NOT IN ('all', 'channel', 'locale', 'platform', 'day', 'action', 'experiment') THEN
        RAISE EXCEPTION 'cannot group by %: use channel, locale, platform, day, action or experiment', p_by USING ERRCODE = '22023';
    END IF;
    RETURN QUERY
    WITH n AS (
        SELECT f.*, CASE p_by WHEN 'all' THEN 'all' WHEN 'channel' THEN coalesce(f.channel, 'none')
                    WHEN 'locale' THEN f.locale::text WHEN 'platform' THEN f.platform::text
                    WHEN 'action' THEN coalesce((SELECT a.action FROM precall.call_actions a
                                                 WHERE a.call_id = f.call_id AND a.outcome = 'applied'), 'none')
                    WHEN 'experiment' THEN coalesce((SELECT e.name || '/' || f.arm FROM precall.experiments e
                                                     WHERE e.id = f.experiment_id), 'none')
                    ELSE f.day::text END AS g,
               EXISTS (SELECT 1 FROM precall.call_actions a WHERE a.notification_id = f.id) AS acted
        FROM precall.notification_facts f WHERE f.created_at >= p_since
    ), c AS (
        SELECT f.*, CASE p_by WHEN 'all' THEN 'all' WHEN 'channel' THEN f.channel
                    WHEN 'locale' THEN f.locale::text WHEN 'platform' THEN f.platform::text
                    WHEN 'action' THEN f.action WHEN 'experiment' THEN f.experiment ELSE f.day::text END AS g
        FROM precall.call_facts f
        WHERE f.scheduled_at >= p_since AND (NOT f.held_out OR p_by = 'experiment')
    ), j AS (
        SELECT CASE p_by WHEN 'all' THEN 'all' WHEN 'channel' THEN 'none' WHEN 'action' THEN 'none' WHEN 'experiment' THEN 'none'
                    WHEN 'locale' THEN u.locale::text WHEN 'platform' THEN coalesce(u.platform::text, 'none')
                    ELSE (cj.due_at AT TIME ZONE 'UTC')::date::text END AS g,
               cj.status
        FROM precall.call_jobs cj JOIN users u ON u.id = cj.user_id
        WHERE cj.due_at >= p_since AND cj.status IN ('fired', 'failed', 'expired')
    ), raw AS (
        SELECT c.g, 'call_answer_rate' AS kpi, count(*) FILTER (WHERE c.answered)::numeric AS num, count(*)::numeric AS den
        FROM c GROUP BY c.g
        UNION ALL
        SELECT c.g, 'snoozed_answer_rate', count(*) FILTER (WHERE c.answered), count(*)
        FROM c WHERE c.action = 'snooze' GROUP BY c.g
        UNION ALL
        -- Previews a person acted on (call now, snooze, skip; applied or refused) / previews sent.
        SELECT n.g, 'action_rate', count(*) FILTER (WHERE n.acted AND n.sent), count(*) FILTER (WHERE n.sent)
        FROM n WHERE n.type IN ('preview_push', 'preview_sms', 'fallback_sms') GROUP BY n.g
        UNION ALL
        SELECT n.g, 'open_rate', count(*) FILTER (WHERE n.opened), count(*) FILTER (WHERE n.delivered)
        FROM n WHERE n.channel = 'push' GROUP BY n.g
        UNION ALL
        SELECT n.g, 'push_delivery_rate', count(*) FILTER (WHERE n.delivered), count(*) FILTER (WHERE n.sent)
        FROM n WHERE n.channel = 'push' GROUP BY n.g
        UNION ALL
        SELECT n.g, 'fallback_sms_rate', count(*) FILTER (WHERE n.type = 'fallback_sms' AND n.sent),
               count(*) FILTER (WHERE n.type IN ('preview_push', 'preview_sms') AND n.sent)
        FROM n GROUP BY n.g
        UNION ALL
        SELECT n.g, 'late_receipts', count(*) FILTER (WHERE n.late_receipt), count(*) FILTER (WHERE n.delivered AND n.channel = 'push')
        FROM n GROUP BY n.g
        UNION ALL
        SELECT j.g, 'calls_expired', count(*) FILTER (WHERE j.status = 'expired'), count(*)
        FROM j GROUP BY j.g
        UNION ALL
        -- By platform, per device (precall.push_deliveries): which devices acknowledge. A preview
        -- counts as delivered in push_delivery_rate when any of its devices did.
        SELECT coalesce(pd.platform, 'none'), 'device_receipt_rate',
               count(*) FILTER (WHERE pd.delivered_at IS NOT NULL), count(*)
        FROM precall.push_deliveries pd JOIN notification_logs nl ON nl.id = pd.notification_id
        WHERE p_by = 'platform' AND pd.status = 'sent' AND nl.created_at >= p_since
        GROUP BY 1
    )
    SELECT raw.g, raw.kpi, raw.num, raw.den,
           CASE WHEN raw.den > 0 THEN round(raw.num / raw.den, 4) END,
           t.target,
           CASE WHEN raw.den = 0 OR t.target IS NULL THEN NULL
                WHEN t.higher_is_better THEN raw.num / raw.den >= t.target
                ELSE raw.num / raw.den <= t.target END
    FROM raw LEFT JOIN precall.kpi_targets t ON t.kpi = raw.kpi
    WHERE raw.den > 0 OR raw.num > 0
    UNION ALL
    SELECT n.g, 'lateness_p' || q.p, NULL, count(n.lateness_ms)::numeric,
           round(percentile_cont(q.p / 100.0) WITHIN GROUP (ORDER BY n.lateness_ms)::numeric, 1),
           t.target,
           CASE WHEN t.target IS NULL THEN NULL
                ELSE percentile_cont(q.p / 100.0) WITHIN GROUP (ORDER BY n.lateness_ms) <= t.target END
    FROM n CROSS JOIN (VALUES (50), (95), (99)) AS q(p)
    LEFT JOIN precall.kpi_targets t ON t.kpi = 'lateness_p' || q.p || '_ms'
    WHERE n.lateness_ms IS NOT NULL
    GROUP BY n.g, q.p, t.target
    UNION ALL
    SELECT n.g, 'time_to_receipt_p' || q.p, NULL, count(n.time_to_receipt_ms)::numeric,
           round(percentile_cont(q.p / 100.0) WITHIN GROUP (ORDER BY n.time_to_receipt_ms)::numeric, 1), NULL, NULL
    FROM n CROSS JOIN (VALUES (50), (90), (99)) AS q(p)
    WHERE n.time_to_receipt_ms IS NOT NULL
    GROUP BY n.g, q.p
    UNION ALL
    SELECT n.g, 'sms_spend_' || n.cost_currency, sum(n.cost), count(n.cost)::numeric, sum(n.cost), NULL, NULL
    FROM n WHERE n.cost IS NOT NULL AND n.cost_currency IS NOT NULL
    GROUP BY n.g, n.cost_currency
    ORDER BY 1, 2;
END
$function$;

-- Deletes finished notification rows (and Twilio status events, inbound texts, SMS spend days,
-- finished call jobs, actions, delivered call events, call outcomes) older than precall.settings.retention, and devices not seen for
-- precall.settings.device_stale_after. Notification rows go p_batch per transaction, so no lock
-- or snapshot is held long.
-- Returns nothing; run it with CALL (pg_cron does, daily).
CREATE OR REPLACE PROCEDURE precall.prune_notification_logs(IN p_batch integer DEFAULT 5000, IN p_max_batches integer DEFAULT 1000)
 LANGUAGE plpgsql
AS $procedure$
DECLARE
    v_cutoff timestamptz := now() - (SELECT retention FROM precall.settings);
    v_deleted integer;
    v_batches integer := 0;
BEGIN
    LOOP
        DELETE FROM notification_logs
        WHERE id IN (SELECT id FROM notification_logs
                     WHERE created_at < v_cutoff AND status NOT IN ('queued', 'sending')
                     LIMIT p_batch FOR UPDATE SKIP LOCKED);
        GET DIAGNOSTICS v_deleted = ROW_COUNT;
        COMMIT;
        v_batches := v_batches + 1;
        EXIT WHEN v_deleted < p_batch OR v_batches >= p_max_batches;
    END LOOP;
    DELETE FROM precall.sms_status_events WHERE received_at < v_cutoff;
    COMMIT;
    DELETE FROM precall.call_jobs WHERE due_at < v_cutoff AND status NOT IN ('queued', 'firing');
    COMMIT;
    DELETE FROM precall.sms_inbound WHERE received_at < v_cutoff;
    DELETE FROM precall.call_actions WHERE at < v_cutoff;
    DELETE FROM precall.call_events WHERE created_at < v_cutoff AND status NOT IN ('queued', 'firing');
    DELETE FROM precall.call_outcomes WHERE received_at < v_cutoff;
    DELETE FROM precall.sms_spend WHERE day < (v_cutoff AT TIME ZONE 'UTC')::date;
    COMMIT;
    -- Devices not seen for device_stale_after get no push already; now they go.
    DELETE FROM precall.devices
    WHERE last_seen_at < now() - (SELECT device_stale_after FROM precall.settings);
    COMMIT;
END
$procedure$;

-- The queued previews on p_channel ('push' or 'sms') that, sent in send_at order at
-- p_per_second in total (all dispatchers together), could not leave before their call's cut-off
-- (scheduled_at - min_notice). projected_at is when each would leave: the k-th row at
-- max over earlier rows j of (send_at_j + (k - j) / rate).
CREATE OR REPLACE FUNCTION precall.previews_at_risk(p_per_second numeric, p_channel text DEFAULT 'push'::text)
 RETURNS TABLE(id uuid, call_id uuid, send_at timestamp with time zone, projected_at timestamp with time zone, scheduled_at timestamp with time zone, late_by interval)
 LANGUAGE sql
 STABLE
AS $function$
    WITH q AS (
        SELECT n.id, n.call_id, n.send_at, c.scheduled_at,
               (row_number() OVER w - 1) / p_per_second AS k_s
        FROM notification_logs n
        JOIN scheduled_calls c ON c.id = n.call_id
        WHERE n.status = 'queued' AND n.channel = p_channel
        WINDOW w AS (ORDER BY n.send_at, n.id)
    ), projected AS (
        SELECT q.*, to_timestamp(q.k_s + max(extract(epoch FROM q.send_at) - q.k_s)
                    OVER (ORDER BY q.send_at, q.id ROWS UNBOUNDED PRECEDING)) AS projected_at
        FROM q
    )
    SELECT p.id, p.call_id, p.send_at, p.projected_at, p.scheduled_at,
           p.projected_at - (p.scheduled_at - s.min_notice)
    FROM projected p CROSS JOIN precall.settings s
    WHERE p.projected_at > p.scheduled_at - s.min_notice
    ORDER BY p.send_at, p.id
$function$;
