-- Trust: adopted column types, live dispatchers known to the database, leases renewed while a
-- row waits, the Path C fallback written with the send, one token per user, early Twilio
-- callbacks that always apply, a grace period for call jobs, preview_sent per planned time.

-------------------------------------------------------------------------------------------------
-- Settings
-------------------------------------------------------------------------------------------------

-- A call job not handed off within this long after its time is 'expired', never fired: after an
-- outage the call system must not be told to place an hour of calls at once.
ALTER TABLE precall.settings ADD COLUMN call_grace interval NOT NULL DEFAULT '2 minutes'
    CHECK (call_grace >= '10 seconds');

ALTER TABLE precall.call_jobs DROP CONSTRAINT call_jobs_status_check;
ALTER TABLE precall.call_jobs ADD CONSTRAINT call_jobs_status_check
    CHECK (status IN ('queued', 'firing', 'fired', 'failed', 'cancelled', 'expired'));

-------------------------------------------------------------------------------------------------
-- Live dispatchers: each one holds a session ("liveness connection") whose backend PostgreSQL
-- ends the moment the process dies; its rows are then taken over at once, not after the lease.
-------------------------------------------------------------------------------------------------

ALTER TABLE precall.dispatchers
    ADD COLUMN backend_pid integer,
    ADD COLUMN backend_start timestamptz,
    ADD COLUMN session_at timestamptz;

-- Called by a dispatcher on its liveness connection (after every reconnect): that session's
-- backend now stands for the process. A process starting under a name used before (a fixed
-- PRECALL_WORKER_NAME) holds nothing yet: the name's old leases end at once. Returns the lease,
-- which the caller renews every third of.
CREATE FUNCTION precall.register_session(p_name text, p_hostname text, p_pid integer,
                                         p_new_process boolean DEFAULT false)
RETURNS interval LANGUAGE sql AS $$
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
$$;

-- Is this dispatcher known to be gone? Stopped cleanly, or its registered session has ended.
-- A session registered before the server's last start proves nothing (a restart ends every
-- session, live dispatchers' included): those wait for their lease. A session of another role
-- whose backend_start we may not read counts as alive (the lease is the backstop).
CREATE FUNCTION precall.dispatcher_gone(d precall.dispatchers)
RETURNS boolean LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN d.stopped_at IS NOT NULL
        OR (d.backend_pid IS NOT NULL
            AND d.session_at >= pg_postmaster_start_time()
            AND NOT EXISTS (SELECT 1 FROM pg_stat_get_activity(d.backend_pid) a
                            WHERE a.backend_start = d.backend_start OR a.backend_start IS NULL));
END
$$;

-- The dispatchers that are gone and may still hold leases: those heard from within the last
-- lease + 30 s (a dead one's leases, renewed at most until it died, have all expired after that).
-- With p_among, only those names are checked again (an empty list: none, at no cost).
CREATE FUNCTION precall.gone_lease_owners(p_among text[] DEFAULT NULL)
RETURNS text[] LANGUAGE plpgsql STABLE AS $$
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
$$;

-- Renews the leases p_worker still holds among p_ids (previews and call jobs) and returns those
-- ids; an id missing from the answer was taken over and must not be sent by p_worker.
CREATE FUNCTION precall.renew_leases(p_worker text, p_ids uuid[])
RETURNS SETOF uuid LANGUAGE sql AS $$
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
$$;

-------------------------------------------------------------------------------------------------
-- Claiming previews: adopted text types cast, gone owners' rows taken at once.
-------------------------------------------------------------------------------------------------

-- Claims up to p_limit due previews for p_worker. In the same transaction, rows whose call is no
-- longer pending, has moved, is too close, whose receipt arrived (fallback) or which ran out of
-- attempts get their final status and reason; only the rows to send are returned. A 'sending'
-- row is taken over when its lease expired or its owner is gone (precall.dispatcher_gone): every
-- owner when p_gone is NULL, else those of p_gone still gone (a dispatcher passes what
-- precall.left_by_gone_dispatchers() last told it, so a claim reads no backend status).
-- Every returned column is cast: an adopted app table may hold varchar(n) or smallint columns.
DROP FUNCTION precall.claim_due_previews(text, integer);
CREATE FUNCTION precall.claim_due_previews(p_worker text, p_limit integer, p_gone text[] DEFAULT NULL)
RETURNS TABLE (
    id uuid, call_id uuid, user_id uuid, type text, parent_id uuid, send_at timestamptz,
    scheduled_at timestamptz, attempts integer, topic text,
    phone_number text, locale text, coach_name text, current_streak integer, fcm_token text,
    platform text, push_enabled boolean, notification_pref text, sms_opted_out boolean
)
LANGUAGE plpgsql AS $$
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
          AND n.send_at <= v_now
          AND (n.status = 'queued' OR n.lease_expires_at < v_now OR n.lease_owner = ANY (v_gone))
        ORDER BY n.send_at
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ), judged AS (
        SELECT n.id,
            CASE
                WHEN c.id IS NULL OR c.status <> 'pending' THEN 'cancelled'
                WHEN c.scheduled_at IS DISTINCT FROM n.planned_for THEN 'cancelled'
                WHEN n.type = 'fallback_sms' AND parent.delivered_at IS NOT NULL THEN 'cancelled'
                WHEN c.scheduled_at - v_now < v_settings.min_notice THEN 'skipped'
                WHEN n.attempts >= v_settings.max_attempts THEN 'failed'
                ELSE 'sending'
            END AS verdict,
            CASE
                WHEN c.id IS NULL THEN 'call_deleted'
                WHEN c.status <> 'pending' THEN 'call_' || c.status
                WHEN c.scheduled_at IS DISTINCT FROM n.planned_for THEN 'rescheduled'
                WHEN n.type = 'fallback_sms' AND parent.delivered_at IS NOT NULL THEN
                    format('receipt_arrived: push delivered at %s', parent.delivered_at)
                WHEN c.scheduled_at - v_now < v_settings.min_notice THEN
                    format('too_late: %s left before the call at send time, cut-off is %s',
                           date_trunc('second', c.scheduled_at - v_now), v_settings.min_notice)
                WHEN n.attempts >= v_settings.max_attempts THEN
                    format('gave_up: %s attempts without an outcome (dispatcher crashed mid-send?)', n.attempts)
            END AS reason
        FROM due
        JOIN notification_logs n ON n.id = due.id
        LEFT JOIN scheduled_calls c ON c.id = n.call_id
        LEFT JOIN notification_logs parent ON parent.id = n.parent_id
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
        RETURNING n.*
    )
    SELECT cl.id, cl.call_id, cl.user_id, cl.type::text, cl.parent_id, cl.send_at,
           c.scheduled_at, cl.attempts, c.topic::text,
           u.phone_number::text, u.locale::text, p.name::text, u.current_streak::integer, u.fcm_token::text,
           u.platform::text, u.push_enabled::boolean, u.notification_pref::text, u.sms_opted_out::boolean
    FROM claimed cl
    JOIN scheduled_calls c ON c.id = cl.call_id
    JOIN users u ON u.id = cl.user_id
    LEFT JOIN coach_personas p ON p.id = u.coach_persona_id
    WHERE cl.status = 'sending'
    ORDER BY cl.send_at;
END
$$;
ALTER FUNCTION precall.claim_due_previews(text, integer, text[]) SET jit = off;

-- The inputs a preview is built from, shaped like claim_due_previews() (casts as there).
CREATE OR REPLACE FUNCTION precall.preview_inputs(p_call_id uuid)
RETURNS TABLE (
    call_id uuid, user_id uuid, call_status text, scheduled_at timestamptz, topic text,
    phone_number text, locale text, coach_name text, current_streak integer, fcm_token text,
    platform text, push_enabled boolean, notification_pref text, sms_opted_out boolean
)
LANGUAGE sql STABLE AS $$
    SELECT c.id, c.user_id, c.status::text, c.scheduled_at, c.topic::text,
           u.phone_number::text, u.locale::text, p.name::text, u.current_streak::integer, u.fcm_token::text,
           u.platform::text, u.push_enabled::boolean, u.notification_pref::text, u.sms_opted_out::boolean
    FROM scheduled_calls c
    JOIN users u ON u.id = c.user_id
    LEFT JOIN coach_personas p ON p.id = u.coach_persona_id
    WHERE c.id = p_call_id
$$;

-- Whether a gone dispatcher left previews / call jobs behind (then a claim takes them at once).
-- Asked by each dispatcher about once a second, not inside precall.next_due(): reading the
-- backends' status there made every next_due() 0.2-0.8 ms slower (bench/throughput.py).
CREATE FUNCTION precall.left_by_gone_dispatchers(OUT owners text[], OUT previews boolean, OUT calls boolean)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    owners := precall.gone_lease_owners();
    previews := cardinality(owners) > 0 AND EXISTS (
        SELECT 1 FROM notification_logs WHERE status = 'sending' AND lease_owner = ANY (owners));
    calls := cardinality(owners) > 0 AND EXISTS (
        SELECT 1 FROM precall.call_jobs WHERE status = 'firing' AND lease_owner = ANY (owners));
END
$$;

-------------------------------------------------------------------------------------------------
-- Call jobs: a grace period, and gone owners' jobs taken at once.
-------------------------------------------------------------------------------------------------

-- Claims the call jobs due now; a call that is no longer pending (or moved) is never fired, and
-- one more than precall.settings.call_grace past its time becomes 'expired' instead.
DROP FUNCTION precall.claim_due_calls(text, integer);
CREATE FUNCTION precall.claim_due_calls(p_worker text, p_limit integer, p_gone text[] DEFAULT NULL)
RETURNS TABLE (call_id uuid, user_id uuid, scheduled_at timestamptz, due_at timestamptz, attempts integer)
LANGUAGE plpgsql AS $$
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
        ORDER BY j.due_at
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ), judged AS (
        SELECT j.call_id,
            CASE
                WHEN c.status IS DISTINCT FROM 'pending' THEN 'cancelled'
                WHEN c.scheduled_at <> j.due_at THEN 'cancelled'
                WHEN v_now - j.due_at > v_settings.call_grace THEN 'expired'
                WHEN j.attempts >= v_settings.max_attempts THEN 'failed'
                ELSE 'firing'
            END AS verdict,
            CASE
                WHEN c.status IS DISTINCT FROM 'pending' THEN 'call_' || coalesce(c.status::text, 'deleted')
                WHEN c.scheduled_at <> j.due_at THEN 'rescheduled'
                WHEN v_now - j.due_at > v_settings.call_grace THEN
                    format('too_late: %s after the call time, grace is %s (no dispatcher ran then?)',
                           date_trunc('second', v_now - j.due_at), v_settings.call_grace)
                WHEN j.attempts >= v_settings.max_attempts THEN format('gave_up: %s attempts', j.attempts)
            END AS reason
        FROM due
        JOIN precall.call_jobs j ON j.call_id = due.call_id
        LEFT JOIN scheduled_calls c ON c.id = j.call_id
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
$$;

-- The KPIs since p_since, grouped by p_by ('all', 'channel', 'locale', 'platform' or 'day'):
-- one row per group and KPI with numerator, denominator, value and target. calls_expired: call
-- jobs not handed off within precall.settings.call_grace / call jobs that reached an outcome.
CREATE OR REPLACE FUNCTION precall.kpis(p_since timestamptz, p_by text DEFAULT 'all')
RETURNS TABLE (grp text, kpi text, numerator numeric, denominator numeric, value numeric,
               target numeric, meets_target boolean)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF p_by NOT IN ('all', 'channel', 'locale', 'platform', 'day') THEN
        RAISE EXCEPTION 'cannot group by %: use channel, locale, platform or day', p_by;
    END IF;
    RETURN QUERY
    WITH n AS (
        SELECT f.*, CASE p_by WHEN 'all' THEN 'all' WHEN 'channel' THEN coalesce(f.channel, 'none')
                    WHEN 'locale' THEN f.locale::text WHEN 'platform' THEN f.platform::text ELSE f.day::text END AS g
        FROM precall.notification_facts f WHERE f.created_at >= p_since
    ), c AS (
        SELECT f.*, CASE p_by WHEN 'all' THEN 'all' WHEN 'channel' THEN f.channel
                    WHEN 'locale' THEN f.locale::text WHEN 'platform' THEN f.platform::text ELSE f.day::text END AS g
        FROM precall.call_facts f WHERE f.scheduled_at >= p_since
    ), j AS (
        SELECT CASE p_by WHEN 'all' THEN 'all' WHEN 'channel' THEN 'none'
                    WHEN 'locale' THEN u.locale::text WHEN 'platform' THEN coalesce(u.platform::text, 'none')
                    ELSE (cj.due_at AT TIME ZONE 'UTC')::date::text END AS g,
               cj.status
        FROM precall.call_jobs cj JOIN users u ON u.id = cj.user_id
        WHERE cj.due_at >= p_since AND cj.status IN ('fired', 'failed', 'expired')
    ), raw AS (
        SELECT c.g, 'call_answer_rate' AS kpi, count(*) FILTER (WHERE c.answered)::numeric AS num, count(*)::numeric AS den
        FROM c GROUP BY c.g
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
$$;

-------------------------------------------------------------------------------------------------
-- Writing a send back: the fallback in the same transaction, SIDs serialised with callbacks,
-- scheduled_calls.preview_sent(_at) for the call's current time.
-------------------------------------------------------------------------------------------------

-- Serialises everything that touches one Twilio SID: a status callback and the write-back of the
-- SID each take this lock first, so whichever commits second sees the other (see
-- precall.record_sms_status and precall.record_sent_batch).
CREATE FUNCTION precall.lock_sms_sid(p_sid text)
RETURNS void LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock(hashtextextended('precall.sms_sid:' || p_sid, 0))
$$;

-- Records sends the providers accepted (one JSON object per send, written by
-- dispatcher/write_back.py). A row with fallback_at gets its Path C fallback_sms planned in the
-- same statement, unless a receipt already arrived: a crash cannot leave a sent push without it.
-- Returns the ids written (a row whose lease was taken over is not written).
CREATE FUNCTION precall.record_sent_batch(p_rows jsonb)
RETURNS SETOF uuid LANGUAGE plpgsql AS $$
BEGIN
    -- SIDs in a fixed order (no deadlock between two batches), before any row lock.
    IF p_rows @? '$[*] ? (@.channel == "sms")' THEN
        PERFORM precall.lock_sms_sid(r.provider_id)
        FROM jsonb_to_recordset(p_rows) AS r(provider_id text, channel text)
        WHERE r.channel = 'sms' AND r.provider_id IS NOT NULL
        ORDER BY r.provider_id;
    END IF;
    RETURN QUERY
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
        RETURNING n.id, n.user_id, n.call_id, n.sent_at, n.planned_for, n.delivered_at, r.fallback_at
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
    SELECT s.id FROM sent s;
END
$$;

-- A preview that will not be sent (failed, skipped), written back by the dispatcher that holds
-- its lease. With p_fallback_reason, the push failed for good: the fallback SMS row is created
-- in the same statement, leased to p_worker, and its id returned (the caller sends it now).
CREATE FUNCTION precall.record_unsent(
    p_id uuid, p_worker text, p_status text, p_reason text, p_type text DEFAULT NULL, p_channel text DEFAULT NULL,
    p_title text DEFAULT NULL, p_body text DEFAULT NULL, p_error_msg text DEFAULT NULL,
    p_attempted_at timestamptz DEFAULT NULL, p_fallback_reason text DEFAULT NULL)
RETURNS uuid LANGUAGE sql AS $$
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
$$;

-- preview_sent(_at) describe the preview for the call's current time: a moved call starts
-- unsent (or sent, when it moves back to a time a preview already went out for).
CREATE FUNCTION precall.tg_scheduled_calls__before_update()
RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT count(*) > 0, min(n.sent_at) INTO NEW.preview_sent, NEW.preview_sent_at
    FROM notification_logs n
    WHERE n.call_id = NEW.id AND n.planned_for = NEW.scheduled_at
      AND n.type IN ('preview_push', 'preview_sms') AND n.sent_at IS NOT NULL;
    RETURN NEW;
END
$$;
CREATE TRIGGER _400_preview_sent_follows_time
    BEFORE UPDATE OF scheduled_at ON scheduled_calls
    FOR EACH ROW
    WHEN (OLD.scheduled_at IS DISTINCT FROM NEW.scheduled_at)
    EXECUTE FUNCTION precall.tg_scheduled_calls__before_update();

-------------------------------------------------------------------------------------------------
-- Twilio status callbacks: serialised with the SID's write-back, so an early one always applies.
-------------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION precall.record_sms_status(p_sid text, p_status text, p_error_code integer DEFAULT NULL,
                                                     p_done_at timestamptz DEFAULT NULL)
RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    -- Taken before the event is stored: a write-back of this SID either committed already (the
    -- row is found below) or waits for this transaction and applies the event in its trigger.
    PERFORM precall.lock_sms_sid(p_sid);
    INSERT INTO precall.sms_status_events (message_sid, status, error_code, done_at)
    VALUES (p_sid, p_status, p_error_code, p_done_at)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN 'duplicate';
    END IF;
    IF precall.apply_sms_status(p_sid, p_status, p_error_code, coalesce(p_done_at, clock_timestamp())) THEN
        RETURN 'applied';
    END IF;
    RETURN 'pending';
END
$$;

-------------------------------------------------------------------------------------------------
-- One push token, one user.
-------------------------------------------------------------------------------------------------

-- An adopted table whose tokens are already shared cannot get the unique index: say so.
DO $$
DECLARE
    v_shared bigint;
BEGIN
    SELECT count(*) INTO v_shared FROM (
        SELECT fcm_token FROM users WHERE fcm_token IS NOT NULL GROUP BY fcm_token HAVING count(*) > 1) t;
    IF v_shared > 0 THEN
        RAISE EXCEPTION 'precall cannot adopt the existing tables: users.fcm_token: % token(s) are held by more than one user (each would get the others'' previews)', v_shared
            USING HINT = 'Keep each token on the user who registered it last (set the others to NULL), then run precall db migrate again.';
    END IF;
END
$$;
CREATE UNIQUE INDEX users_fcm_token_key ON users (fcm_token) WHERE fcm_token IS NOT NULL;

-- Whoever writes a token (the API, the app's own code, a DBA) moves it: the previous holder
-- loses it. Two writers racing for one token: the unique index makes the second wait for the
-- first and fail; precall.register_device retries, so the last to commit holds it.
CREATE FUNCTION precall.tg_users__token_moves()
RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE users SET fcm_token = NULL, push_enabled = false
    WHERE fcm_token = NEW.fcm_token AND id <> NEW.id;
    RETURN NEW;
END
$$;
CREATE TRIGGER _400_token_moves
    BEFORE INSERT OR UPDATE OF fcm_token ON users
    FOR EACH ROW
    WHEN (NEW.fcm_token IS NOT NULL)
    EXECUTE FUNCTION precall.tg_users__token_moves();

-- Registers the caller's device token (moving it from any other user). Returns false for an
-- unknown user.
CREATE OR REPLACE FUNCTION precall.register_device(p_user uuid, p_token text, p_platform text, p_push_enabled boolean)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    LOOP
        BEGIN
            UPDATE users SET fcm_token = p_token, platform = p_platform, push_enabled = p_push_enabled
            WHERE id = p_user;
            RETURN FOUND;
        EXCEPTION WHEN unique_violation THEN
            -- Another registration of this token committed meanwhile: move it again.
            NULL;
        END;
    END LOOP;
END
$$;

-- Calls that did not happen on time because nobody handed them off: none is the target.
INSERT INTO precall.kpi_targets VALUES ('calls_expired', 0, false, NULL);
