-- What dispatchers call: sessions and leases, the claims of due previews and calls, and the
-- write-backs after a provider answered.
--
-- The current definition of each object below; `precall db migrate` re-applies this file when it
-- changes (after the numbered migrations). Edit here, never in sql/migrations/.

-- Records a fired call: NOTIFY precall_call_due for in-database listeners, and the outcome.
CREATE OR REPLACE FUNCTION precall.record_call_fired(p_call_id uuid, p_worker text, p_ok boolean, p_outcome text)
 RETURNS boolean
 LANGUAGE plpgsql
AS $function$
BEGIN
    UPDATE precall.call_jobs
    SET status = CASE WHEN p_ok THEN 'fired' ELSE 'failed' END, outcome = p_outcome,
        fired_at = clock_timestamp(), lease_owner = NULL, lease_expires_at = NULL, updated_at = clock_timestamp()
    WHERE call_id = p_call_id AND status = 'firing' AND lease_owner = p_worker;
    RETURN FOUND;
END
$function$;

-- Upserts a dispatcher's heartbeat (p_stopped marks a clean exit).
CREATE OR REPLACE FUNCTION precall.heartbeat(p_name text, p_hostname text, p_pid integer, p_stopped boolean DEFAULT false)
 RETURNS void
 LANGUAGE sql
AS $function$
    INSERT INTO precall.dispatchers (name, hostname, pid)
    VALUES (p_name, p_hostname, p_pid)
    ON CONFLICT (name) DO UPDATE
        SET heartbeat_at = clock_timestamp(),
            stopped_at = CASE WHEN p_stopped THEN clock_timestamp() END
$function$;

-- Upserts a dispatcher's heartbeat with its pacing: its configured rate per channel (NULL:
-- unpaced), which caps precall.send_capacity() while every live dispatcher is paced.
CREATE OR REPLACE FUNCTION precall.heartbeat(p_name text, p_hostname text, p_pid integer, p_stopped boolean, p_push_rate_per_s numeric, p_sms_rate_per_s numeric)
 RETURNS void
 LANGUAGE sql
AS $function$
    INSERT INTO precall.dispatchers (name, hostname, pid, push_rate_per_s, sms_rate_per_s)
    VALUES (p_name, p_hostname, p_pid, p_push_rate_per_s, p_sms_rate_per_s)
    ON CONFLICT (name) DO UPDATE
        SET heartbeat_at = clock_timestamp(),
            stopped_at = CASE WHEN p_stopped THEN clock_timestamp() END,
            push_rate_per_s = excluded.push_rate_per_s, sms_rate_per_s = excluded.sms_rate_per_s
$function$;

-- The inputs a preview is built from, shaped like claim_due_previews() (casts as there).
CREATE OR REPLACE FUNCTION precall.preview_inputs(p_call_id uuid)
 RETURNS TABLE(call_id uuid, user_id uuid, call_status text, scheduled_at timestamp with time zone, topic text, phone_number text, locale text, coach_name text, current_streak integer, fcm_token text, platform text, push_enabled boolean, notification_pref text, sms_opted_out boolean)
 LANGUAGE sql
 STABLE
AS $function$
    SELECT c.id, c.user_id, c.status::text, c.scheduled_at, c.topic::text,
           u.phone_number::text, u.locale::text, p.name::text, u.current_streak::integer, u.fcm_token::text,
           u.platform::text, u.push_enabled::boolean, u.notification_pref::text, u.sms_opted_out::boolean
    FROM scheduled_calls c
    JOIN users u ON u.id = c.user_id
    LEFT JOIN coach_personas p ON p.id = u.coach_persona_id
    WHERE c.id = p_call_id
$function$;

-- Called by a dispatcher on its liveness connection (after every reconnect): that session's
-- backend now stands for the process. A process starting under a name used before (a fixed
-- PRECALL_WORKER_NAME) holds nothing yet: the name's old leases end at once. Returns the lease,
-- which the caller renews every third of.
CREATE OR REPLACE FUNCTION precall.register_session(p_name text, p_hostname text, p_pid integer, p_new_process boolean DEFAULT false)
 RETURNS interval
 LANGUAGE sql
AS $function$
    UPDATE notification_logs SET lease_expires_at = clock_timestamp()
    WHERE p_new_process AND status = 'sending' AND lease_owner = p_name;
    UPDATE precall.call_jobs SET lease_expires_at = clock_timestamp()
    WHERE p_new_process AND status = 'firing' AND lease_owner = p_name;
    INSERT INTO precall.dispatchers AS d (name, hostname, pid, backend_pid, backend_start, session_at)
    SELECT p_name, p_hostname, p_pid, a.pid, a.backend_start, clock_timestamp()
    FROM pg_stat_activity a WHERE a.pid = pg_backend_pid()
    ON CONFLICT (name) DO UPDATE
        SET hostname = EXCLUDED.hostname, pid = EXCLUDED.pid,
            backend_pid = EXCLUDED.backend_pid, backend_start = EXCLUDED.backend_start,
            session_at = EXCLUDED.session_at, heartbeat_at = clock_timestamp(), stopped_at = NULL;
    SELECT lease FROM precall.settings;
$function$;

-- Is this dispatcher known to be gone? Stopped cleanly, or its registered session has ended.
-- A session registered before the server's last start proves nothing (a restart ends every
-- session, live dispatchers' included): those wait for their lease. A session of another role
-- whose backend_start we may not read counts as alive (the lease is the backstop).
CREATE OR REPLACE FUNCTION precall.dispatcher_gone(d precall.dispatchers)
 RETURNS boolean
 LANGUAGE plpgsql
 STABLE
AS $function$
BEGIN
    RETURN d.stopped_at IS NOT NULL
        OR (d.backend_pid IS NOT NULL
            AND d.session_at >= pg_postmaster_start_time()
            AND NOT EXISTS (SELECT 1 FROM pg_stat_get_activity(d.backend_pid) a
                            WHERE a.backend_start = d.backend_start OR a.backend_start IS NULL));
END
$function$;

-- The dispatchers that are gone and may still hold leases: those heard from within the last
-- lease + 30 s (a dead one's leases, renewed at most until it died, have all expired after that).
-- With p_among, only those names are checked again (an empty list: none, at no cost).
CREATE OR REPLACE FUNCTION precall.gone_lease_owners(p_among text[] DEFAULT NULL::text[])
 RETURNS text[]
 LANGUAGE plpgsql
 STABLE
AS $function$
DECLARE
    v_gone text[];
BEGIN
    IF cardinality(p_among) = 0 THEN
        RETURN '{}';  -- the caller knows of none: no backend status to read
    END IF;
    SELECT coalesce(array_agg(d.name), '{}') INTO v_gone
    FROM precall.dispatchers d
    WHERE d.heartbeat_at > clock_timestamp() - (SELECT lease FROM precall.settings) - interval '30 seconds'
      AND (p_among IS NULL OR d.name = ANY (p_among))
      AND precall.dispatcher_gone(d);
    RETURN v_gone;
END
$function$;

-- Renews the leases p_worker still holds among p_ids (previews and call jobs) and returns those
-- ids; an id missing from the answer was taken over and must not be sent by p_worker.
CREATE OR REPLACE FUNCTION precall.renew_leases(p_worker text, p_ids uuid[])
 RETURNS SETOF uuid
 LANGUAGE sql
AS $function$
    WITH s AS (SELECT clock_timestamp() + lease AS until FROM precall.settings),
    previews AS (
        UPDATE notification_logs n SET lease_expires_at = s.until
        FROM s
        WHERE n.id = ANY (p_ids) AND n.status = 'sending' AND n.lease_owner = p_worker
        RETURNING n.id
    ), calls AS (
        UPDATE precall.call_jobs j SET lease_expires_at = s.until
        FROM s
        WHERE j.call_id = ANY (p_ids) AND j.status = 'firing' AND j.lease_owner = p_worker
        RETURNING j.call_id
    )
    SELECT id FROM previews UNION ALL SELECT call_id FROM calls
$function$;

-- The one verdict on a due row at claim time, for previews (p_kind 'preview': 'sending' when it
-- goes out) and call jobs ('call': 'firing'): cancelled when the call is gone, no longer pending,
-- has moved, or (a fallback SMS) the push's receipt arrived; skipped / expired when too close to
-- or too long after the call; failed after max_attempts claims without an outcome. A set-returning
-- SQL function so that the planner inlines it into each claim (no per-row function call).
CREATE OR REPLACE FUNCTION precall.claim_verdict(p_kind text, p_call_status text, p_moved boolean, p_receipt_at timestamp with time zone, p_left interval, p_attempts integer, p_settings precall.settings)
 RETURNS SETOF precall.claim_verdict
 LANGUAGE sql
 STABLE
AS $function$
    SELECT CASE
               WHEN p_call_status IS DISTINCT FROM 'pending' OR p_moved OR p_receipt_at IS NOT NULL THEN 'cancelled'
               WHEN p_kind = 'preview' AND p_left < p_settings.min_notice THEN 'skipped'
               WHEN p_kind = 'call' AND -p_left > p_settings.call_grace THEN 'expired'
               WHEN p_attempts >= p_settings.max_attempts THEN 'failed'
               WHEN p_kind = 'preview' THEN 'sending'
               ELSE 'firing'
           END,
           CASE
               WHEN p_call_status IS NULL THEN 'call_deleted'
               WHEN p_call_status <> 'pending' THEN 'call_' || p_call_status
               WHEN p_moved THEN 'rescheduled'
               WHEN p_receipt_at IS NOT NULL THEN format('receipt_arrived: push delivered at %s', p_receipt_at)
               WHEN p_kind = 'preview' AND p_left < p_settings.min_notice THEN
                   format('too_late: %s left before the call at send time, cut-off is %s',
                          date_trunc('second', p_left), p_settings.min_notice)
               WHEN p_kind = 'call' AND -p_left > p_settings.call_grace THEN
                   format('too_late: %s after the call time, grace is %s (no dispatcher ran then?)',
                          date_trunc('second', -p_left), p_settings.call_grace)
               WHEN p_attempts >= p_settings.max_attempts THEN
                   format('gave_up: %s attempts without an outcome (dispatcher crashed mid-send?)', p_attempts)
           END
$function$;

-- A claimed preview as the dispatcher sends it: the row with its call and its user as they are
-- now. The one place the claimed-preview shape is built; an inlinable set-returning SQL function,
-- so each claim joins it in the same statement (a second statement reading the claimed rows back
-- by id made every claim ~0.9 ms slower, bench/throughput.py lateness).
CREATE OR REPLACE FUNCTION precall.claimed_preview_of(n notification_logs)
 RETURNS SETOF precall.claimed_preview
 LANGUAGE sql
 STABLE
AS $function$
    SELECT n.id, n.call_id, n.user_id, n.type::text, n.parent_id, n.send_at,
           c.scheduled_at, n.attempts, c.topic::text,
           u.phone_number::text, u.locale::text, p.name::text, u.current_streak::integer, u.fcm_token::text,
           u.platform::text, u.push_enabled::boolean, u.notification_pref::text, u.sms_opted_out::boolean
    FROM scheduled_calls c
    JOIN users u ON u.id = n.user_id
    LEFT JOIN coach_personas p ON p.id = u.coach_persona_id
    WHERE c.id = n.call_id
$function$;

-- Claims up to p_limit due previews for p_worker. In the same transaction, rows whose call is no
-- longer pending, has moved, is too close, whose receipt arrived (fallback) or which ran out of
-- attempts get their final status and reason (precall.claim_verdict); only the rows to send are
-- returned. With p_ahead, rows due within precall.settings.claim_ahead are claimed too: the
-- dispatcher builds their requests, waits for send_at, then marks them attempted
-- (precall.start_attempts) - until then a cancel still stops them.
CREATE OR REPLACE FUNCTION precall.claim_due_previews_v3(p_worker text, p_limit integer, p_gone text[], p_ahead boolean)
 RETURNS SETOF precall.claimed_preview
 LANGUAGE plpgsql
 SET jit TO 'off'
AS $function$
DECLARE
    v_now timestamptz := clock_timestamp();
    v_settings precall.settings;
    v_gone text[] := precall.gone_lease_owners(p_gone);
BEGIN
    SELECT * INTO v_settings FROM precall.settings;
    RETURN QUERY
    WITH due AS (
        SELECT n.id
        FROM notification_logs n
        WHERE n.status IN ('queued', 'sending')
          AND n.send_at <= v_now + CASE WHEN p_ahead THEN v_settings.claim_ahead ELSE interval '0' END
          AND (n.status = 'queued' OR n.lease_expires_at < v_now OR n.lease_owner = ANY (v_gone))
        ORDER BY n.send_at
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ), judged AS (
        -- A channel switched off (precall.settings.push_enabled / sms_enabled) skips the row: its
        -- preview is not moved to the other channel.
        SELECT n.id,
               CASE WHEN v.verdict = 'sending' AND off.channel IS NOT NULL THEN 'skipped' ELSE v.verdict END AS verdict,
               CASE WHEN v.verdict = 'sending' AND off.channel IS NOT NULL
                    THEN format('channel_disabled: %s is switched off (precall.settings.%s_enabled)', off.channel, off.channel)
                    ELSE v.reason END AS reason
        FROM due
        JOIN notification_logs n ON n.id = due.id
        LEFT JOIN scheduled_calls c ON c.id = n.call_id
        LEFT JOIN notification_logs parent ON parent.id = n.parent_id
        CROSS JOIN LATERAL precall.claim_verdict(
            'preview', c.status::text, c.scheduled_at IS DISTINCT FROM n.planned_for,
            CASE WHEN n.type = 'fallback_sms' THEN parent.delivered_at END,
            c.scheduled_at - v_now, n.attempts, v_settings) v
        CROSS JOIN LATERAL (
            SELECT CASE WHEN n.type = 'preview_push' AND NOT v_settings.push_enabled THEN 'push'
                        WHEN n.type IN ('preview_sms', 'fallback_sms') AND NOT v_settings.sms_enabled THEN 'sms'
                   END AS channel
        ) off
    ), claimed AS (
        UPDATE notification_logs n
        SET status = j.verdict,
            reason = coalesce(j.reason, n.reason),
            lease_owner = CASE WHEN j.verdict = 'sending' THEN p_worker END,
            lease_expires_at = CASE WHEN j.verdict = 'sending' THEN v_now + v_settings.lease END,
            attempts = n.attempts + CASE WHEN j.verdict = 'sending' THEN 1 ELSE 0 END,
            updated_at = v_now
        FROM judged j
        WHERE n.id = j.id
        RETURNING n
    )
    SELECT p.*
    FROM claimed cl CROSS JOIN LATERAL precall.claimed_preview_of(cl.n) p
    WHERE (cl.n).status = 'sending'
    ORDER BY p.send_at;
END
$function$;

-- The previous release's claim (no claim-ahead): kept for its dispatchers during a rolling upgrade.
CREATE OR REPLACE FUNCTION precall.claim_due_previews_v2(p_worker text, p_limit integer, p_gone text[] DEFAULT NULL::text[])
 RETURNS SETOF precall.claimed_preview
 LANGUAGE sql
AS $function$
    SELECT * FROM precall.claim_due_previews_v3(p_worker, p_limit, p_gone, false)
$function$;

-- Right before the provider call: the rows p_worker still holds are marked attempted and
-- returned. A row missing from the result was cancelled (a claimed row stays cancellable until
-- this mark: precall.cancel_unsent) or taken over since its claim, and must not be sent.
CREATE OR REPLACE FUNCTION precall.start_attempts(p_worker text, p_ids uuid[])
 RETURNS SETOF uuid
 LANGUAGE sql
AS $function$
    UPDATE notification_logs SET attempted_at = coalesce(attempted_at, clock_timestamp())
    WHERE id = ANY (p_ids) AND status = 'sending' AND lease_owner = p_worker
    RETURNING id
$function$;

-- The previous release's name and declared result (the same columns): kept for its dispatchers
-- during a rolling upgrade; a later release drops it.
CREATE OR REPLACE FUNCTION precall.claim_due_previews(p_worker text, p_limit integer, p_gone text[] DEFAULT NULL::text[])
 RETURNS TABLE(id uuid, call_id uuid, user_id uuid, type text, parent_id uuid, send_at timestamp with time zone, scheduled_at timestamp with time zone, attempts integer, topic text, phone_number text, locale text, coach_name text, current_streak integer, fcm_token text, platform text, push_enabled boolean, notification_pref text, sms_opted_out boolean)
 LANGUAGE sql
AS $function$
    SELECT * FROM precall.claim_due_previews_v2(p_worker, p_limit, p_gone)
$function$;

-- Whether a gone dispatcher left previews / call jobs behind (then a claim takes them at once).
-- Asked by each dispatcher about once a second, not inside precall.next_due(): reading the
-- backends' status there made every next_due() 0.2-0.8 ms slower (bench/throughput.py).
CREATE OR REPLACE FUNCTION precall.left_by_gone_dispatchers(OUT owners text[], OUT previews boolean, OUT calls boolean)
 RETURNS record
 LANGUAGE plpgsql
 STABLE
AS $function$
BEGIN
    owners := precall.gone_lease_owners();
    previews := cardinality(owners) > 0 AND EXISTS (
        SELECT 1 FROM notification_logs WHERE status = 'sending' AND lease_owner = ANY (owners));
    calls := cardinality(owners) > 0 AND EXISTS (
        SELECT 1 FROM precall.call_jobs WHERE status = 'firing' AND lease_owner = ANY (owners));
END
$function$;

-- Claims the call jobs due now; a call that is no longer pending (or moved) is never fired, and
-- a call with undelivered call events waits for them, up to 10 s (precall.claim_call_events).
CREATE OR REPLACE FUNCTION precall.claim_due_calls(p_worker text, p_limit integer, p_gone text[] DEFAULT NULL::text[])
 RETURNS TABLE(call_id uuid, user_id uuid, scheduled_at timestamp with time zone, due_at timestamp with time zone, attempts integer)
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_now timestamptz := clock_timestamp();
    v_settings precall.settings;
    v_gone text[] := precall.gone_lease_owners(p_gone);
BEGIN
    SELECT * INTO v_settings FROM precall.settings;
    RETURN QUERY
    WITH due AS (
        SELECT j.call_id
        FROM precall.call_jobs j
        WHERE j.status IN ('queued', 'firing') AND j.due_at <= v_now
          AND (j.status = 'queued' OR j.lease_expires_at < v_now OR j.lease_owner = ANY (v_gone))
          -- A call's events go first: the receiver hears call.rescheduled before call.due. Only
          -- for 10 s: a webhook that keeps refusing (or dispatchers of a release that does not
          -- deliver events) must not hold the call itself back towards its grace.
          AND NOT EXISTS (SELECT 1 FROM precall.call_events e
                          WHERE e.call_id = j.call_id AND e.status IN ('queued', 'firing')
                            AND e.created_at > v_now - interval '10 seconds')
        ORDER BY j.due_at
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ), judged AS (
        SELECT j.call_id, v.verdict, v.reason
        FROM due
        JOIN precall.call_jobs j ON j.call_id = due.call_id
        LEFT JOIN scheduled_calls c ON c.id = j.call_id
        CROSS JOIN LATERAL precall.claim_verdict(
            'call', c.status::text, c.scheduled_at <> j.due_at, NULL, c.scheduled_at - v_now, j.attempts, v_settings) v
    ), claimed AS (
        UPDATE precall.call_jobs j
        SET status = x.verdict, reason = x.reason,
            lease_owner = CASE WHEN x.verdict = 'firing' THEN p_worker END,
            lease_expires_at = CASE WHEN x.verdict = 'firing' THEN v_now + v_settings.lease END,
            attempts = j.attempts + CASE WHEN x.verdict = 'firing' THEN 1 ELSE 0 END,
            updated_at = v_now
        FROM judged x
        WHERE j.call_id = x.call_id
        RETURNING j.*
    )
    SELECT cl.call_id, cl.user_id, c.scheduled_at, cl.due_at, cl.attempts
    FROM claimed cl JOIN scheduled_calls c ON c.id = cl.call_id
    WHERE cl.status = 'firing';
END
$function$;

-- Serialises everything that touches one Twilio SID: a status callback and the write-back of the
-- SID each take this lock first, so whichever commits second sees the other (see
-- precall.record_sms_status and precall.record_sent_batch).
CREATE OR REPLACE FUNCTION precall.lock_sms_sid(p_sid text)
 RETURNS void
 LANGUAGE sql
AS $function$
    SELECT pg_advisory_xact_lock(hashtextextended('precall.sms_sid:' || p_sid, 0))
$function$;

-- Records sends the providers accepted (one JSON object per send, written by
-- dispatcher/write_back.py). A row with fallback_at gets its Path C fallback_sms planned in the
-- same statement, unless a receipt already arrived: a crash cannot leave a sent push without it.
-- A push's "devices" (its per-device outcomes) go to precall.push_deliveries; an SMS's cost to
-- today's precall.sms_spend. Returns the ids written (a row whose lease was taken over is not written).
CREATE OR REPLACE FUNCTION precall.record_sent_batch(p_rows jsonb)
 RETURNS SETOF uuid
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_written uuid[];
BEGIN
    -- SIDs in a fixed order (no deadlock between two batches), before any row lock.
    IF p_rows @? '$[*] ? (@.channel == "sms")' THEN
        PERFORM precall.lock_sms_sid(r.provider_id)
        FROM jsonb_to_recordset(p_rows) AS r(provider_id text, channel text)
        WHERE r.channel = 'sms' AND r.provider_id IS NOT NULL
        ORDER BY r.provider_id;
    END IF;
    WITH r AS (
        SELECT * FROM jsonb_to_recordset(p_rows) AS r(
            id uuid, worker text, type text, channel text, title text, body text, provider_id text,
            reason text, attempted_at timestamptz, sent_at timestamptz, sms_encoding text,
            sms_segments int, cost numeric, currency text, fallback_at timestamptz)
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
        RETURNING n.id, n.user_id, n.call_id, n.sent_at, n.planned_for, n.delivered_at, r.fallback_at,
                  n.channel, n.cost_estimate, n.cost_currency
    ), spend AS (
        -- Today's SMS spend per currency, for the budget (precall.sms_budget_reached).
        INSERT INTO precall.sms_spend AS sp (day, currency, amount, messages)
        SELECT (s.sent_at AT TIME ZONE 'UTC')::date, s.cost_currency, sum(s.cost_estimate), count(*)
        FROM sent s
        WHERE s.channel = 'sms' AND s.cost_estimate IS NOT NULL AND s.cost_currency IS NOT NULL
        GROUP BY 1, 2
        ON CONFLICT (day, currency) DO UPDATE
            SET amount = sp.amount + EXCLUDED.amount, messages = sp.messages + EXCLUDED.messages
    ), fallback AS (
        INSERT INTO notification_logs (user_id, call_id, type, channel, status, send_at, planned_for, parent_id)
        SELECT s.user_id, s.call_id, 'fallback_sms', 'sms', 'queued', s.fallback_at, s.planned_for, s.id
        FROM sent s
        WHERE s.fallback_at IS NOT NULL AND s.delivered_at IS NULL
        ON CONFLICT DO NOTHING
    ), calls AS (
        UPDATE scheduled_calls c
        SET preview_sent = true, preview_sent_at = coalesce(c.preview_sent_at, s.first_sent_at)
        FROM (SELECT call_id, planned_for, min(sent_at) AS first_sent_at FROM sent GROUP BY call_id, planned_for) s
        WHERE c.id = s.call_id AND c.scheduled_at = s.planned_for
    )
    SELECT coalesce(array_agg(s.id), '{}') INTO v_written FROM sent s;
    -- Per-device outcomes of the pushes written (a row taken over meanwhile is not).
    IF p_rows @? '$[*].devices[*]' THEN
        PERFORM precall.store_push_deliveries(coalesce(jsonb_agg(d.device), '[]'))
        FROM jsonb_array_elements(p_rows) AS r(row)
        CROSS JOIN LATERAL jsonb_array_elements(
            CASE WHEN jsonb_typeof(r.row -> 'devices') = 'array' THEN r.row -> 'devices' ELSE '[]' END) AS d(device)
        WHERE (r.row ->> 'id')::uuid = ANY (v_written);
    END IF;
    RETURN QUERY SELECT unnest(v_written);
END
$function$;

-- A preview that will not be sent (failed, skipped), written back by the dispatcher that holds
-- its lease. With p_fallback_reason, the push failed for good: the fallback SMS row is created
-- in the same statement, leased to p_worker, and its id returned (the caller sends it now).
CREATE OR REPLACE FUNCTION precall.record_unsent(p_id uuid, p_worker text, p_status text, p_reason text, p_type text DEFAULT NULL::text, p_channel text DEFAULT NULL::text, p_title text DEFAULT NULL::text, p_body text DEFAULT NULL::text, p_error_msg text DEFAULT NULL::text, p_attempted_at timestamp with time zone DEFAULT NULL::timestamp with time zone, p_fallback_reason text DEFAULT NULL::text)
 RETURNS uuid
 LANGUAGE sql
AS $function$
    WITH done AS (
        UPDATE notification_logs
        SET status = p_status, type = coalesce(p_type, type), channel = p_channel,
            title = p_title, body = p_body, reason = p_reason, error_msg = p_error_msg,
            attempted_at = p_attempted_at,
            lease_owner = NULL, lease_expires_at = NULL, updated_at = clock_timestamp()
        WHERE id = p_id AND status = 'sending' AND lease_owner = p_worker
        RETURNING id, user_id, call_id, planned_for
    )
    INSERT INTO notification_logs (user_id, call_id, type, channel, status, reason, send_at, planned_for,
                                   parent_id, lease_owner, lease_expires_at, attempts)
    SELECT d.user_id, d.call_id, 'fallback_sms', 'sms', 'sending', p_fallback_reason, clock_timestamp(),
           d.planned_for, d.id, p_worker, clock_timestamp() + (SELECT lease FROM precall.settings), 1
    FROM done d
    WHERE p_fallback_reason IS NOT NULL
    ON CONFLICT DO NOTHING
    RETURNING id
$function$;
