--
-- PostgreSQL database dump
--

\restrict precall

-- Dumped from database version 15.20 (Debian 15.20-0+deb12u1)
-- Dumped by pg_dump version 15.20 (Debian 15.20-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: precall; Type: SCHEMA; Schema: -; Owner: -
--

CREATE SCHEMA precall;


--
-- Name: claim_verdict; Type: TYPE; Schema: precall; Owner: -
--

CREATE TYPE precall.claim_verdict AS (
	verdict text,
	reason text
);


--
-- Name: claimed_preview; Type: TYPE; Schema: precall; Owner: -
--

CREATE TYPE precall.claimed_preview AS (
	id uuid,
	call_id uuid,
	user_id uuid,
	type text,
	parent_id uuid,
	send_at timestamp with time zone,
	scheduled_at timestamp with time zone,
	attempts integer,
	topic text,
	phone_number text,
	locale text,
	coach_name text,
	current_streak integer,
	fcm_token text,
	platform text,
	push_enabled boolean,
	notification_pref text,
	sms_opted_out boolean
);


--
-- Name: _add_constraint(regclass, text, text); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall._add_constraint(p_table regclass, p_name text, p_definition text) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = p_table AND conname = p_name) THEN
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s', p_table, p_name, p_definition);
    END IF;
END
$$;


--
-- Name: _apply_early_sms_status(); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall._apply_early_sms_status() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_event precall.sms_status_events;
BEGIN
    FOR v_event IN
        SELECT * FROM precall.sms_status_events
        WHERE message_sid = NEW.provider_id AND NOT applied
        ORDER BY (status IN ('delivered', 'undelivered', 'failed')), received_at
    LOOP
        PERFORM precall.apply_sms_status(v_event.message_sid, v_event.status, v_event.error_code,
                                         coalesce(v_event.done_at, v_event.received_at));
    END LOOP;
    RETURN NULL;
END
$$;


--
-- Name: apply_call_action(uuid, text, uuid, bigint); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.apply_call_action(p_notification_id uuid, p_action text, p_user uuid, p_device bigint DEFAULT NULL::bigint) RETURNS TABLE(outcome text, call_id uuid, user_id uuid, channel text, call_status text, scheduled_at timestamp with time zone, previous_scheduled_at timestamp with time zone, found_action text, found_at timestamp with time zone)
    LANGUAGE plpgsql
    AS $$
#variable_conflict use_column
DECLARE
    v_now timestamptz := clock_timestamp();
    v_n notification_logs;
    v_call scheduled_calls;
    v_found precall.call_actions;
    v_outcome text;
    v_cause text;
    v_previous timestamptz;
BEGIN
    IF p_action IS NULL OR p_action NOT IN ('call_now', 'snooze', 'skip') THEN
        RAISE EXCEPTION 'unknown action %: use call_now, snooze or skip', quote_nullable(p_action) USING ERRCODE = '22023';
    END IF;
    SELECT * INTO v_n FROM notification_logs n
    WHERE n.id = p_notification_id AND (p_user IS NULL OR n.user_id = p_user)
      AND n.call_id IS NOT NULL AND n.type IN ('preview_push', 'preview_sms', 'fallback_sms');
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'unknown', NULL::uuid, NULL::uuid, NULL::text, NULL::text, NULL::timestamptz,
                            NULL::timestamptz, NULL::text, NULL::timestamptz;
        RETURN;
    END IF;
    IF v_n.sent_at IS NULL THEN
        RETURN QUERY SELECT 'not_sent', v_n.call_id, v_n.user_id, v_n.channel::text, NULL::text, NULL::timestamptz,
                            NULL::timestamptz, NULL::text, NULL::timestamptz;
        RETURN;
    END IF;
    IF v_n.channel = 'push' THEN
        -- Whatever comes of the action, the push reached a person: its receipt stops a fallback SMS.
        PERFORM precall.record_device_receipt(v_n.id, p_device, 'opened', v_now, p_user);
    END IF;
    SELECT * INTO v_call FROM scheduled_calls c WHERE c.id = v_n.call_id FOR UPDATE;
    SELECT * INTO v_found FROM precall.call_actions a WHERE a.call_id = v_n.call_id AND a.outcome = 'applied';
    v_outcome := CASE
        WHEN v_found.id IS NOT NULL THEN 'already_acted'
        WHEN v_call.id IS NULL OR v_call.status <> 'pending' THEN 'not_pending'
        WHEN v_call.scheduled_at <= v_now THEN 'too_late'
        ELSE 'applied' END;
    IF v_outcome = 'applied' THEN
        v_cause := CASE p_action WHEN 'call_now' THEN 'user_call_now' WHEN 'snooze' THEN 'user_snoozed'
                                 ELSE 'user_skipped' END;
        -- Read by the scheduled_calls triggers: the reason unsent rows and call events carry.
        PERFORM set_config('precall.change_cause', v_cause, true);
        v_previous := v_call.scheduled_at;
        IF p_action = 'call_now' THEN
            UPDATE scheduled_calls c SET scheduled_at = v_now WHERE c.id = v_call.id;
            -- The re-planning leaves no call job for a call that is due now: this one fires at once.
            INSERT INTO precall.call_jobs AS j (call_id, user_id, due_at)
            VALUES (v_call.id, v_call.user_id, v_now)
            ON CONFLICT (call_id) DO UPDATE
                SET due_at = EXCLUDED.due_at, status = 'queued', reason = NULL, attempts = 0, updated_at = v_now;
        ELSIF p_action = 'snooze' THEN
            UPDATE scheduled_calls c
            SET scheduled_at = c.scheduled_at + make_interval(mins => (SELECT s.snooze_minutes FROM precall.settings s))
            WHERE c.id = v_call.id;
        ELSE
            UPDATE scheduled_calls c SET status = 'cancelled' WHERE c.id = v_call.id;
        END IF;
        PERFORM set_config('precall.change_cause', '', true);
        SELECT * INTO v_call FROM scheduled_calls c WHERE c.id = v_call.id;
    END IF;
    INSERT INTO precall.call_actions (call_id, user_id, notification_id, action, channel, device_id, outcome,
                                      previous_scheduled_at, scheduled_at, at)
    VALUES (v_n.call_id, v_n.user_id, v_n.id, p_action, v_n.channel, p_device, v_outcome,
            v_previous, v_call.scheduled_at, v_now);
    RETURN QUERY SELECT v_outcome, v_n.call_id, v_n.user_id, v_n.channel::text, v_call.status::text,
                        v_call.scheduled_at, v_previous, v_found.action, v_found.at;
END
$$;


--
-- Name: apply_sms_status(text, text, integer, timestamp with time zone); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.apply_sms_status(p_sid text, p_status text, p_error_code integer, p_at timestamp with time zone) RETURNS boolean
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_row notification_logs;
BEGIN
    SELECT * INTO v_row FROM notification_logs
    WHERE provider_id = p_sid AND channel = 'sms'
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    p_at := least(greatest(p_at, coalesce(v_row.attempted_at, v_row.sent_at, v_row.created_at)), clock_timestamp());
    IF v_row.status = 'sent' AND p_status = 'delivered' THEN
        UPDATE notification_logs
        SET status = 'delivered', delivered_at = p_at, updated_at = clock_timestamp()
        WHERE id = v_row.id;
    ELSIF v_row.status = 'sent' AND p_status IN ('undelivered', 'failed') THEN
        UPDATE notification_logs
        SET status = 'failed',
            reason = format('twilio_%s: %s', p_status, coalesce(p_error_code::text, 'no error code'))
                     || CASE WHEN p_error_code = 21610 THEN '; sms_opted_out set' ELSE '' END,
            error_msg = format('Twilio reported %s (ErrorCode %s)', p_status, coalesce(p_error_code::text, 'none')),
            updated_at = clock_timestamp()
        WHERE id = v_row.id;
    END IF;
    IF p_error_code = 21610 THEN
        UPDATE users SET sms_opted_out = true WHERE id = v_row.user_id;
    END IF;
    UPDATE precall.sms_status_events SET applied = true WHERE message_sid = p_sid AND status = p_status;
    RETURN true;
END
$$;


--
-- Name: assignment_point(text, uuid); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.assignment_point(p_salt text, p_user uuid) RETURNS double precision
    LANGUAGE sql IMMUTABLE
    AS $$
    SELECT ('x' || substr(md5(p_salt || ':' || p_user::text), 1, 13))::bit(52)::bigint / 4503599627370496.0::float8
$$;


--
-- Name: calls_by_id_in_window(timestamp with time zone, interval, uuid[]); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.calls_by_id_in_window(p_now timestamp with time zone, p_lookahead interval, p_call_ids uuid[]) RETURNS TABLE(call_id uuid, user_id uuid, scheduled_at timestamp with time zone, send_at timestamp with time zone, type text)
    LANGUAGE sql STABLE
    AS $$
    SELECT c.id, c.user_id, c.scheduled_at,
           greatest(c.scheduled_at - make_interval(mins => u.notification_lead_min), p_now),
           precall.guess_preview_type(u)
    FROM scheduled_calls c
    JOIN users u ON u.id = c.user_id
    WHERE c.id = ANY (p_call_ids)
      AND c.status = 'pending'
      AND c.scheduled_at - make_interval(mins => u.notification_lead_min) <= p_now + p_lookahead
$$;


--
-- Name: calls_in_window(timestamp with time zone); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.calls_in_window(p_now timestamp with time zone) RETURNS TABLE(call_id uuid)
    LANGUAGE sql STABLE
    AS $$
    SELECT w.call_id
    FROM precall.plan_window(p_now, (SELECT s.lookahead + s.max_early FROM precall.settings s),
                             greatest(coalesce((SELECT max(u.notification_lead_min) FROM users u), 0),
                                      (SELECT max(a.lead_min) FROM precall.experiment_arms a
                                       JOIN precall.running_experiments(p_now) e ON e.id = a.experiment_id)),
                             EXISTS (SELECT 1 FROM precall.running_experiments(p_now))) w
$$;


--
-- Name: calls_in_window(timestamp with time zone, interval, integer); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.calls_in_window(p_now timestamp with time zone, p_lookahead interval, p_max_lead integer) RETURNS TABLE(call_id uuid, user_id uuid, scheduled_at timestamp with time zone, send_at timestamp with time zone, type text)
    LANGUAGE sql STABLE
    AS $$
    SELECT c.id, c.user_id, c.scheduled_at,
           greatest(c.scheduled_at - make_interval(mins => u.notification_lead_min), p_now),
           precall.guess_preview_type(u)
    FROM scheduled_calls c
    JOIN users u ON u.id = c.user_id
    WHERE c.status = 'pending'
      AND c.scheduled_at > p_now
      AND c.scheduled_at <= p_now + p_lookahead + make_interval(mins => p_max_lead)
      AND c.scheduled_at - make_interval(mins => u.notification_lead_min) <= p_now + p_lookahead
$$;


--
-- Name: cancel_unsent(uuid, text, boolean); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.cancel_unsent(p_call_id uuid, p_reason text, p_with_call_job boolean) RETURNS integer
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_count integer;
BEGIN
    -- A row claimed ahead of its send_at (status 'sending', not attempted yet) is still unsent:
    -- its dispatcher finds it gone at precall.start_attempts and sends nothing.
    UPDATE notification_logs
    SET status = 'cancelled', reason = p_reason, updated_at = now(),
        lease_owner = NULL, lease_expires_at = NULL
    WHERE call_id = p_call_id
      AND (status = 'queued' OR (status = 'sending' AND attempted_at IS NULL));
    GET DIAGNOSTICS v_count = ROW_COUNT;
    IF p_with_call_job THEN
        UPDATE precall.call_jobs
        SET status = 'cancelled', reason = p_reason, updated_at = now()
        WHERE call_id = p_call_id AND status = 'queued';
    END IF;
    RETURN v_count;
END
$$;


--
-- Name: claim_call_events(text, integer, text[]); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.claim_call_events(p_worker text, p_limit integer, p_gone text[] DEFAULT NULL::text[]) RETURNS TABLE(id bigint, call_id uuid, user_id uuid, event text, previous_scheduled_at timestamp with time zone, scheduled_at timestamp with time zone, cause text, created_at timestamp with time zone, attempts integer)
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_now timestamptz := clock_timestamp();
    v_settings precall.settings;
    v_gone text[] := precall.gone_lease_owners(p_gone);
BEGIN
    SELECT * INTO v_settings FROM precall.settings;
    RETURN QUERY
    WITH due AS (
        SELECT e.id FROM precall.call_events e
        WHERE e.status IN ('queued', 'firing')
          AND (e.status = 'queued' OR e.lease_expires_at < v_now OR e.lease_owner = ANY (v_gone))
          AND NOT EXISTS (SELECT 1 FROM precall.call_events o
                          WHERE o.call_id = e.call_id AND o.id < e.id AND o.status IN ('queued', 'firing'))
        ORDER BY e.id
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE precall.call_events e
        SET status = CASE WHEN e.attempts >= v_settings.max_attempts THEN 'failed' ELSE 'firing' END,
            outcome = CASE WHEN e.attempts >= v_settings.max_attempts
                           THEN format('gave_up: %s attempts without an outcome', e.attempts) ELSE e.outcome END,
            lease_owner = p_worker, lease_expires_at = v_now + v_settings.lease,
            attempts = e.attempts + CASE WHEN e.attempts >= v_settings.max_attempts THEN 0 ELSE 1 END
        FROM due WHERE e.id = due.id
        RETURNING e.*
    )
    SELECT c.id, c.call_id, c.user_id, c.event, c.previous_scheduled_at, c.scheduled_at, c.cause, c.created_at, c.attempts
    FROM claimed c WHERE c.status = 'firing';
END
$$;


--
-- Name: claim_due_calls(text, integer, text[]); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.claim_due_calls(p_worker text, p_limit integer, p_gone text[] DEFAULT NULL::text[]) RETURNS TABLE(call_id uuid, user_id uuid, scheduled_at timestamp with time zone, due_at timestamp with time zone, attempts integer)
    LANGUAGE plpgsql
    AS $$
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
$$;


--
-- Name: claim_due_previews(text, integer, text[]); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.claim_due_previews(p_worker text, p_limit integer, p_gone text[] DEFAULT NULL::text[]) RETURNS TABLE(id uuid, call_id uuid, user_id uuid, type text, parent_id uuid, send_at timestamp with time zone, scheduled_at timestamp with time zone, attempts integer, topic text, phone_number text, locale text, coach_name text, current_streak integer, fcm_token text, platform text, push_enabled boolean, notification_pref text, sms_opted_out boolean)
    LANGUAGE sql
    AS $$
    SELECT * FROM precall.claim_due_previews_v2(p_worker, p_limit, p_gone)
$$;


--
-- Name: claim_due_previews_v2(text, integer, text[]); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.claim_due_previews_v2(p_worker text, p_limit integer, p_gone text[] DEFAULT NULL::text[]) RETURNS SETOF precall.claimed_preview
    LANGUAGE sql
    AS $$
    SELECT * FROM precall.claim_due_previews_v3(p_worker, p_limit, p_gone, false)
$$;


--
-- Name: claim_due_previews_v3(text, integer, text[], boolean); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.claim_due_previews_v3(p_worker text, p_limit integer, p_gone text[], p_ahead boolean) RETURNS SETOF precall.claimed_preview
    LANGUAGE plpgsql
    SET jit TO 'off'
    AS $$
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
$$;


--
-- Name: claim_manual_preview(uuid, text, boolean, text); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.claim_manual_preview(p_call_id uuid, p_worker text, p_force boolean DEFAULT false, p_type text DEFAULT NULL::text) RETURNS TABLE(id uuid, call_id uuid, user_id uuid, type text, parent_id uuid, send_at timestamp with time zone, scheduled_at timestamp with time zone, attempts integer, topic text, phone_number text, locale text, coach_name text, current_streak integer, fcm_token text, platform text, push_enabled boolean, notification_pref text, sms_opted_out boolean)
    LANGUAGE sql
    AS $$
    SELECT * FROM precall.claim_manual_preview_v2(p_call_id, p_worker, p_force, p_type)
$$;


--
-- Name: claim_manual_preview_v2(uuid, text, boolean, text); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.claim_manual_preview_v2(p_call_id uuid, p_worker text, p_force boolean DEFAULT false, p_type text DEFAULT NULL::text) RETURNS SETOF precall.claimed_preview
    LANGUAGE plpgsql
    AS $$
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
$$;


SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: settings; Type: TABLE; Schema: precall; Owner: -
--

CREATE TABLE precall.settings (
    singleton boolean DEFAULT true NOT NULL,
    lookahead interval DEFAULT '00:02:00'::interval NOT NULL,
    min_notice interval DEFAULT '00:00:30'::interval NOT NULL,
    lease interval DEFAULT '00:01:00'::interval NOT NULL,
    max_attempts integer DEFAULT 3 NOT NULL,
    retention interval DEFAULT '180 days'::interval NOT NULL,
    call_grace interval DEFAULT '00:02:00'::interval NOT NULL,
    fallback_wait interval DEFAULT '00:00:30'::interval NOT NULL,
    heartbeat_max_age interval DEFAULT '00:00:45'::interval NOT NULL,
    max_lead interval DEFAULT '01:00:00'::interval NOT NULL,
    device_stale_after interval DEFAULT '60 days'::interval NOT NULL,
    push_enabled boolean DEFAULT true NOT NULL,
    sms_enabled boolean DEFAULT true NOT NULL,
    sms_daily_budget jsonb,
    snooze_minutes integer DEFAULT 10 NOT NULL,
    push_capacity_per_s numeric DEFAULT 400 NOT NULL,
    sms_capacity_per_s numeric DEFAULT 1 NOT NULL,
    max_early interval DEFAULT '00:02:00'::interval NOT NULL,
    claim_ahead interval DEFAULT '00:00:00.2'::interval NOT NULL,
    CONSTRAINT settings_call_grace_check CHECK ((call_grace >= '00:00:10'::interval)),
    CONSTRAINT settings_claim_ahead_check CHECK (((claim_ahead >= '00:00:00'::interval) AND (claim_ahead <= '00:00:05'::interval))),
    CONSTRAINT settings_device_stale_after_check CHECK ((device_stale_after >= '1 day'::interval)),
    CONSTRAINT settings_fallback_wait_check CHECK (((fallback_wait >= '00:00:01'::interval) AND (fallback_wait <= '00:10:00'::interval))),
    CONSTRAINT settings_heartbeat_max_age_check CHECK ((heartbeat_max_age >= '00:00:20'::interval)),
    CONSTRAINT settings_lease_check CHECK ((lease >= '00:00:05'::interval)),
    CONSTRAINT settings_lookahead_check CHECK ((lookahead >= '00:01:00'::interval)),
    CONSTRAINT settings_max_attempts_check CHECK ((max_attempts >= 1)),
    CONSTRAINT settings_max_early_check CHECK (((max_early >= '00:00:00'::interval) AND (max_early <= '01:00:00'::interval))),
    CONSTRAINT settings_max_lead_check CHECK (((max_lead >= '00:01:00'::interval) AND (max_lead <= '01:00:00'::interval))),
    CONSTRAINT settings_min_notice_check CHECK ((min_notice >= '00:00:05'::interval)),
    CONSTRAINT settings_push_capacity_per_s_check CHECK ((push_capacity_per_s > (0)::numeric)),
    CONSTRAINT settings_retention_check CHECK ((retention >= '1 day'::interval)),
    CONSTRAINT settings_singleton_check CHECK (singleton),
    CONSTRAINT settings_sms_capacity_per_s_check CHECK ((sms_capacity_per_s > (0)::numeric)),
    CONSTRAINT settings_sms_daily_budget_check CHECK (((sms_daily_budget IS NULL) OR ((jsonb_typeof(sms_daily_budget) = 'object'::text) AND (NOT jsonb_path_exists(sms_daily_budget, '$.*?(@.type() != "number" || @ < 0)'::jsonpath))))),
    CONSTRAINT settings_snooze_minutes_check CHECK (((snooze_minutes >= 1) AND (snooze_minutes <= 60)))
);


--
-- Name: claim_verdict(text, text, boolean, timestamp with time zone, interval, integer, precall.settings); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.claim_verdict(p_kind text, p_call_status text, p_moved boolean, p_receipt_at timestamp with time zone, p_left interval, p_attempts integer, p_settings precall.settings) RETURNS SETOF precall.claim_verdict
    LANGUAGE sql STABLE
    AS $$
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
$$;


--
-- Name: notification_logs; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.notification_logs (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    user_id uuid NOT NULL,
    call_id uuid,
    type character varying(20) NOT NULL,
    channel character varying(10),
    status character varying(20) NOT NULL,
    title text,
    body text,
    provider_id character varying(100),
    error_msg text,
    sent_at timestamp with time zone,
    delivered_at timestamp with time zone,
    opened_at timestamp with time zone,
    created_at timestamp with time zone DEFAULT now(),
    reason text,
    send_at timestamp with time zone,
    attempted_at timestamp with time zone,
    planned_for timestamp with time zone,
    lease_owner text,
    lease_expires_at timestamp with time zone,
    attempts integer DEFAULT 0 NOT NULL,
    parent_id uuid,
    sms_encoding character varying(8),
    sms_segments integer,
    cost_estimate numeric(10,4),
    cost_currency character(3),
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    late_receipt boolean DEFAULT false NOT NULL,
    manual_by text,
    resend boolean DEFAULT false NOT NULL,
    reason_code text,
    experiment_id bigint,
    arm text,
    planned_send_at timestamp with time zone,
    CONSTRAINT notification_logs_channel CHECK ((((channel)::text = ANY ((ARRAY['push'::character varying, 'sms'::character varying])::text[])) OR ((channel IS NULL) AND ((status)::text = ANY ((ARRAY['queued'::character varying, 'skipped'::character varying, 'cancelled'::character varying, 'failed'::character varying])::text[]))))),
    CONSTRAINT notification_logs_channel_when_sent CHECK (((channel IS NOT NULL) OR ((status)::text = ANY ((ARRAY['queued'::character varying, 'sending'::character varying, 'skipped'::character varying, 'cancelled'::character varying, 'failed'::character varying])::text[])))),
    CONSTRAINT notification_logs_planned CHECK ((((status)::text <> ALL ((ARRAY['queued'::character varying, 'sending'::character varying])::text[])) OR ((send_at IS NOT NULL) AND (call_id IS NOT NULL)))),
    CONSTRAINT notification_logs_sms_encoding CHECK (((sms_encoding)::text = ANY ((ARRAY['GSM-7'::character varying, 'UCS-2'::character varying])::text[]))),
    CONSTRAINT notification_logs_status CHECK (((status)::text = ANY ((ARRAY['queued'::character varying, 'sending'::character varying, 'sent'::character varying, 'delivered'::character varying, 'failed'::character varying, 'opened'::character varying, 'skipped'::character varying, 'cancelled'::character varying])::text[]))),
    CONSTRAINT notification_logs_type CHECK (((type)::text = ANY ((ARRAY['preview_push'::character varying, 'preview_sms'::character varying, 'fallback_sms'::character varying])::text[])))
);


--
-- Name: claimed_preview_of(public.notification_logs); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.claimed_preview_of(n public.notification_logs) RETURNS SETOF precall.claimed_preview
    LANGUAGE sql STABLE
    AS $$
    SELECT n.id, n.call_id, n.user_id, n.type::text, n.parent_id, n.send_at,
           c.scheduled_at, n.attempts, c.topic::text,
           u.phone_number::text, u.locale::text, p.name::text, u.current_streak::integer, u.fcm_token::text,
           u.platform::text, u.push_enabled::boolean, u.notification_pref::text, u.sms_opted_out::boolean
    FROM scheduled_calls c
    JOIN users u ON u.id = n.user_id
    LEFT JOIN coach_personas p ON p.id = u.coach_persona_id
    WHERE c.id = n.call_id
$$;


--
-- Name: create_experiment(text, jsonb, numeric, jsonb, timestamp with time zone, timestamp with time zone, text); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.create_experiment(p_name text, p_arms jsonb, p_holdout numeric DEFAULT 0, p_population jsonb DEFAULT '{}'::jsonb, p_starts_at timestamp with time zone DEFAULT now(), p_ends_at timestamp with time zone DEFAULT NULL::timestamp with time zone, p_allocation text DEFAULT 'fixed'::text) RETURNS bigint
    LANGUAGE plpgsql
    AS $_$
DECLARE
    v_id bigint;
    v_arm jsonb;
    v_key text;
    v_names text[] := '{}';
    v_shared numeric := 0;
    v_unshared integer := 0;
    v_rest numeric;
    v_each numeric;
    v_share numeric;
    v_pos integer := 0;
    v_max_lead integer := (SELECT extract(epoch FROM max_lead)::integer / 60 FROM precall.settings);
    v_other precall.experiments;
BEGIN
    IF jsonb_typeof(p_arms) IS DISTINCT FROM 'array' OR jsonb_array_length(p_arms) = 0 THEN
        RAISE EXCEPTION 'give at least one arm (the first is the control)' USING ERRCODE = 'PC010';
    END IF;
    IF p_allocation IS NULL OR p_allocation NOT IN ('fixed', 'thompson') THEN
        RAISE EXCEPTION 'allocation % is not fixed or thompson', quote_nullable(p_allocation) USING ERRCODE = 'PC010';
    ELSIF p_allocation = 'thompson' AND jsonb_array_length(p_arms) < 2 THEN
        RAISE EXCEPTION 'thompson allocation needs at least two arms to weigh' USING ERRCODE = 'PC010';
    END IF;
    IF p_holdout IS NULL OR p_holdout < 0 OR p_holdout >= 1 THEN
        RAISE EXCEPTION 'the holdout share must be in [0, 1), not %', p_holdout USING ERRCODE = 'PC010';
    END IF;
    FOR v_key IN SELECT jsonb_object_keys(coalesce(p_population, '{}')) LOOP
        IF v_key NOT IN ('locale', 'platform', 'notification_pref') THEN
            RAISE EXCEPTION 'unknown population key %: use locale, platform or notification_pref', v_key USING ERRCODE = 'PC010';
        END IF;
    END LOOP;
    FOR v_arm IN SELECT * FROM jsonb_array_elements(p_arms) LOOP
        FOR v_key IN SELECT jsonb_object_keys(v_arm) LOOP
            IF v_key NOT IN ('name', 'share', 'lead_min', 'channel', 'variant', 'none') THEN
                RAISE EXCEPTION 'arm %: unknown key % (use share, lead_min, channel, variant or none)', v_arm ->> 'name', v_key
                    USING ERRCODE = 'PC010';
            END IF;
        END LOOP;
        IF v_arm ->> 'name' IS NULL OR v_arm ->> 'name' !~ '^[a-z0-9][a-z0-9_.-]{0,62}$' THEN
            RAISE EXCEPTION 'arm name % is not a lower-case name', coalesce(v_arm ->> 'name', '(none)') USING ERRCODE = 'PC010';
        ELSIF v_arm ->> 'name' = 'holdout' THEN
            RAISE EXCEPTION 'holdout is a reserved arm name (use --holdout for its share)' USING ERRCODE = 'PC010';
        ELSIF v_arm ->> 'name' = ANY (v_names) THEN
            RAISE EXCEPTION 'arm % is named twice', v_arm ->> 'name' USING ERRCODE = 'PC010';
        ELSIF (v_arm ->> 'lead_min') IS NOT NULL AND ((v_arm ->> 'lead_min') !~ '^[0-9]{1,3}$'
               OR (v_arm ->> 'lead_min')::integer NOT BETWEEN 1 AND least(60, v_max_lead)) THEN
            RAISE EXCEPTION 'arm %: lead_min % is outside 1..%', v_arm ->> 'name', v_arm ->> 'lead_min', least(60, v_max_lead)
                USING ERRCODE = 'PC010';
        ELSIF v_arm ? 'channel' AND (v_arm ->> 'channel') IS DISTINCT FROM 'push' AND (v_arm ->> 'channel') IS DISTINCT FROM 'sms'
              AND (v_arm ->> 'channel') IS DISTINCT FROM 'push_and_sms' THEN
            RAISE EXCEPTION 'arm %: channel % is not push, sms or push_and_sms', v_arm ->> 'name', v_arm ->> 'channel'
                USING ERRCODE = 'PC010';
        ELSIF v_arm ? 'variant' AND coalesce(v_arm ->> 'variant', '') !~ '^[a-z0-9][a-z0-9_-]{0,62}$' THEN
            -- Whether every locale has it is checked by `precall experiments create` (the templates
            -- are files the database cannot see).
            RAISE EXCEPTION 'arm %: variant % is not a lower-case name', v_arm ->> 'name', v_arm ->> 'variant'
                USING ERRCODE = 'PC010';
        ELSIF (v_arm ->> 'share') IS NOT NULL AND ((v_arm ->> 'share') !~ '^(0(\.[0-9]+)?|1(\.0+)?|\.[0-9]+)$'
               OR (v_arm ->> 'share')::numeric <= 0) THEN
            RAISE EXCEPTION 'arm %: share % is not in (0, 1]', v_arm ->> 'name', v_arm ->> 'share' USING ERRCODE = 'PC010';
        END IF;
        v_names := v_names || (v_arm ->> 'name');
        IF (v_arm ->> 'share') IS NULL THEN
            v_unshared := v_unshared + 1;
        ELSE
            v_shared := v_shared + (v_arm ->> 'share')::numeric;
        END IF;
    END LOOP;
    v_rest := 1 - p_holdout - v_shared;
    IF v_rest < -0.000001 THEN
        RAISE EXCEPTION 'the shares add up to % with the holdout: more than 1', round(1 - v_rest, 5) USING ERRCODE = 'PC010';
    ELSIF v_unshared > 0 AND v_rest <= 0.000001 THEN
        RAISE EXCEPTION 'nothing is left for the % arm(s) without a share', v_unshared USING ERRCODE = 'PC010';
    END IF;
    SELECT * INTO v_other FROM precall.experiments e
    WHERE e.stopped_at IS NULL
      AND (e.ends_at IS NULL OR e.ends_at > p_starts_at) AND (p_ends_at IS NULL OR e.starts_at < p_ends_at)
      AND NOT EXISTS (SELECT 1 FROM jsonb_each_text(e.population) a JOIN jsonb_each_text(coalesce(p_population, '{}')) b
                      ON a.key = b.key WHERE lower(a.value) <> lower(b.value))
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'its population overlaps experiment % (running or scheduled then): one experiment per user at a time',
            v_other.name USING ERRCODE = 'PC010';
    END IF;
    v_each := v_rest / nullif(v_unshared, 0);
    INSERT INTO precall.experiments (name, population, holdout, allocation, starts_at, ends_at)
    VALUES (p_name, coalesce(p_population, '{}'), p_holdout, p_allocation, p_starts_at, p_ends_at)
    RETURNING id INTO v_id;
    IF p_holdout > 0 THEN
        INSERT INTO precall.experiment_arms (experiment_id, name, position, share, no_preview)
        VALUES (v_id, 'holdout', 0, p_holdout, true);
    END IF;
    FOR v_arm IN SELECT * FROM jsonb_array_elements(p_arms) LOOP
        v_pos := v_pos + 1;
        IF (v_arm ->> 'share') IS NULL THEN
            -- Equal parts of the rest; the last takes the rounding, so that the shares add up.
            v_unshared := v_unshared - 1;
            v_share := CASE WHEN v_unshared = 0 THEN v_rest ELSE round(v_each, 5) END;
            v_rest := v_rest - v_share;
        ELSE
            v_share := (v_arm ->> 'share')::numeric;
        END IF;
        INSERT INTO precall.experiment_arms (experiment_id, name, position, share, lead_min, channel, variant, no_preview)
        VALUES (v_id, v_arm ->> 'name', v_pos, v_share, (v_arm ->> 'lead_min')::integer, v_arm ->> 'channel',
                v_arm ->> 'variant', coalesce((v_arm ->> 'none')::boolean, false));
    END LOOP;
    INSERT INTO precall.experiment_allocations (experiment_id, shares)
    SELECT v_id, jsonb_object_agg(a.name, a.share) FROM precall.experiment_arms a WHERE a.experiment_id = v_id;
    RETURN v_id;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'an experiment named % exists already', p_name USING ERRCODE = 'PC010';
END
$_$;


--
-- Name: device_list(uuid); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.device_list(p_user uuid) RETURNS TABLE(platform text, push_enabled boolean, last_seen_at timestamp with time zone)
    LANGUAGE sql STABLE
    AS $$
    SELECT d.platform, d.push_enabled AND d.last_seen_at >= now() - s.device_stale_after, d.last_seen_at
    FROM precall.devices d CROSS JOIN precall.settings s
    WHERE d.user_id = p_user
    ORDER BY d.last_seen_at DESC, d.id DESC
$$;


--
-- Name: dispatchers; Type: TABLE; Schema: precall; Owner: -
--

CREATE TABLE precall.dispatchers (
    name text NOT NULL,
    hostname text NOT NULL,
    pid integer NOT NULL,
    started_at timestamp with time zone DEFAULT now() NOT NULL,
    heartbeat_at timestamp with time zone DEFAULT now() NOT NULL,
    stopped_at timestamp with time zone,
    backend_pid integer,
    backend_start timestamp with time zone,
    session_at timestamp with time zone,
    push_rate_per_s numeric,
    sms_rate_per_s numeric
);


--
-- Name: dispatcher_gone(precall.dispatchers); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.dispatcher_gone(d precall.dispatchers) RETURNS boolean
    LANGUAGE plpgsql STABLE
    AS $$
BEGIN
    RETURN d.stopped_at IS NOT NULL
        OR (d.backend_pid IS NOT NULL
            AND d.session_at >= pg_postmaster_start_time()
            AND NOT EXISTS (SELECT 1 FROM pg_stat_get_activity(d.backend_pid) a
                            WHERE a.backend_start = d.backend_start OR a.backend_start IS NULL));
END
$$;


--
-- Name: erfc(double precision); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.erfc(p_x double precision) RETURNS double precision
    LANGUAGE plpgsql IMMUTABLE STRICT
    AS $$
DECLARE
    v_x double precision := abs(p_x);
    v_sum double precision;
    v_term double precision;
    v_n integer := 0;
    v_f double precision;
    v_c double precision;
    v_d double precision;
    v_delta double precision;
    v_a double precision;
    v_result double precision;
BEGIN
    IF v_x < 2 THEN
        -- erf(x) = 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1))
        v_term := v_x;
        v_sum := v_x;
        LOOP
            v_n := v_n + 1;
            v_term := -v_term * v_x * v_x / v_n;
            v_sum := v_sum + v_term / (2 * v_n + 1);
            EXIT WHEN abs(v_term / (2 * v_n + 1)) < 1e-17 * abs(v_sum) OR v_n > 200;
        END LOOP;
        v_result := 1 - 2 / sqrt(pi()) * v_sum;
    ELSIF v_x > 27 THEN
        v_result := 0;  -- below the smallest double
    ELSE
        -- erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + ...)))))
        v_f := v_x;  -- modified Lentz
        v_c := v_x;
        v_d := 0;
        LOOP
            v_n := v_n + 1;
            v_a := v_n / 2.0;
            v_d := v_x + v_a * v_d;
            v_d := CASE WHEN v_d = 0 THEN 1e300 ELSE 1 / v_d END;
            v_c := v_x + v_a / v_c;
            v_delta := v_c * v_d;
            v_f := v_f * v_delta;
            EXIT WHEN abs(v_delta - 1) < 1e-16 OR v_n > 500;
        END LOOP;
        v_result := exp(-v_x * v_x) / sqrt(pi()) / v_f;
    END IF;
    RETURN CASE WHEN p_x < 0 THEN 2 - v_result ELSE v_result END;
END
$$;


--
-- Name: experiment_arm_of(uuid, text, text, text, timestamp with time zone); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.experiment_arm_of(p_user uuid, p_locale text, p_platform text, p_pref text, p_now timestamp with time zone) RETURNS TABLE(experiment_id bigint, experiment text, arm text, lead_min integer, no_preview boolean, assigned boolean)
    LANGUAGE sql STABLE
    AS $$
    SELECT e.id, e.name, a.name, a.lead_min, a.no_preview, s.arm IS NOT NULL
    FROM precall.running_experiments(p_now) e
    LEFT JOIN precall.experiment_assignments s ON s.experiment_id = e.id AND s.user_id = p_user
    JOIN LATERAL (
        SELECT x.* FROM (
            SELECT r.*, sum(r.share) OVER (ORDER BY r.position) AS upto
            FROM precall.experiment_arms r WHERE r.experiment_id = e.id) x
        WHERE CASE WHEN s.arm IS NOT NULL THEN x.name = s.arm
                   ELSE precall.assignment_point(e.salt, p_user) < x.upto END
        ORDER BY x.position LIMIT 1) a ON true
    WHERE s.arm IS NOT NULL OR precall.in_population(e.population, p_locale, p_platform, p_pref)
    ORDER BY e.id
    LIMIT 1
$$;


--
-- Name: fisher_exact_p(bigint, bigint, bigint, bigint); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.fisher_exact_p(p_x1 bigint, p_n1 bigint, p_x2 bigint, p_n2 bigint) RETURNS double precision
    LANGUAGE sql IMMUTABLE
    AS $$
    WITH m AS (
        SELECT p_x1 + p_x2 AS k, p_n1 + p_n2 AS n
    ), tables AS (
        -- log P(X = a): C(n1, a) C(n2, k − a) / C(n, k), over the support of a
        SELECT a, precall.ln_gamma(p_n1 + 1.0) - precall.ln_gamma(a + 1.0) - precall.ln_gamma(p_n1 - a + 1.0)
                  + precall.ln_gamma(p_n2 + 1.0) - precall.ln_gamma(m.k - a + 1.0) - precall.ln_gamma(p_n2 - m.k + a + 1.0)
                  - precall.ln_gamma(m.n + 1.0) + precall.ln_gamma(m.k + 1.0) + precall.ln_gamma(m.n - m.k + 1.0) AS lp
        FROM m, generate_series(greatest(0, m.k - p_n2), least(m.k, p_n1)) a
    )
    SELECT CASE WHEN p_n1 = 0 OR p_n2 = 0 THEN NULL
                ELSE least(1.0, sum(exp(t.lp)) FILTER (WHERE t.lp <= o.lp + ln(1 + 1e-7))) END
    FROM tables t, (SELECT lp FROM tables WHERE a = p_x1) o
$$;


--
-- Name: gone_lease_owners(text[]); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.gone_lease_owners(p_among text[] DEFAULT NULL::text[]) RETURNS text[]
    LANGUAGE plpgsql STABLE
    AS $$
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


--
-- Name: users; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.users (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    phone_number text,
    locale text DEFAULT 'en'::text NOT NULL,
    timezone text DEFAULT 'UTC'::text NOT NULL,
    coach_persona_id uuid,
    current_streak integer DEFAULT 0 NOT NULL,
    fcm_token text,
    platform text,
    push_enabled boolean DEFAULT false NOT NULL,
    notification_pref character varying(20) DEFAULT 'push_only'::character varying NOT NULL,
    notification_lead_min integer DEFAULT 5 NOT NULL,
    sms_opted_out boolean DEFAULT false NOT NULL,
    CONSTRAINT users_notification_lead_min CHECK (((notification_lead_min >= 1) AND (notification_lead_min <= 60)))
);


--
-- Name: guess_preview_type(public.users); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.guess_preview_type(u public.users) RETURNS text
    LANGUAGE sql STABLE
    AS $$
    SELECT CASE
        WHEN u.notification_pref = 'sms_only' THEN 'preview_sms'
        WHEN u.notification_pref = 'push_and_sms' THEN
            CASE WHEN coalesce(u.fcm_token, '') <> '' AND coalesce(u.push_enabled, false)
                 THEN 'preview_push' ELSE 'preview_sms' END
        WHEN coalesce(u.fcm_token, '') <> '' AND coalesce(u.push_enabled, false) THEN 'preview_push'
        WHEN coalesce(u.phone_number, '') <> '' AND NOT coalesce(u.sms_opted_out, false) THEN 'preview_sms'
    END
$$;


--
-- Name: heartbeat(text, text, integer, boolean); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.heartbeat(p_name text, p_hostname text, p_pid integer, p_stopped boolean DEFAULT false) RETURNS void
    LANGUAGE sql
    AS $$
    INSERT INTO precall.dispatchers (name, hostname, pid)
    VALUES (p_name, p_hostname, p_pid)
    ON CONFLICT (name) DO UPDATE
        SET heartbeat_at = clock_timestamp(),
            stopped_at = CASE WHEN p_stopped THEN clock_timestamp() END
$$;


--
-- Name: heartbeat(text, text, integer, boolean, numeric, numeric); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.heartbeat(p_name text, p_hostname text, p_pid integer, p_stopped boolean, p_push_rate_per_s numeric, p_sms_rate_per_s numeric) RETURNS void
    LANGUAGE sql
    AS $$
    INSERT INTO precall.dispatchers (name, hostname, pid, push_rate_per_s, sms_rate_per_s)
    VALUES (p_name, p_hostname, p_pid, p_push_rate_per_s, p_sms_rate_per_s)
    ON CONFLICT (name) DO UPDATE
        SET heartbeat_at = clock_timestamp(),
            stopped_at = CASE WHEN p_stopped THEN clock_timestamp() END,
            push_rate_per_s = excluded.push_rate_per_s, sms_rate_per_s = excluded.sms_rate_per_s
$$;


--
-- Name: history_entries(uuid, integer, integer); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.history_entries(p_user uuid, p_limit integer DEFAULT 20, p_offset integer DEFAULT 0) RETURNS TABLE(id uuid, call_id uuid, type text, channel text, status text, title text, body text, reason text, send_at timestamp with time zone, sent_at timestamp with time zone, delivered_at timestamp with time zone, opened_at timestamp with time zone, created_at timestamp with time zone, action text, outcome text, notification_id uuid)
    LANGUAGE sql STABLE
    AS $$
    SELECT * FROM (
        (SELECT n.id, n.call_id, n.type::text, n.channel::text, n.status::text, n.title, n.body, n.reason,
                n.send_at, n.sent_at, n.delivered_at, n.opened_at, n.created_at,
                NULL::text, NULL::text, NULL::uuid
         FROM notification_logs n WHERE n.user_id = p_user
         ORDER BY n.created_at DESC, n.id DESC LIMIT p_limit + p_offset)
        UNION ALL
        (SELECT a.id, a.call_id, 'action', a.channel, a.outcome, NULL, NULL, NULL,
                NULL, NULL, NULL, NULL, a.at, a.action, a.outcome, a.notification_id
         FROM precall.call_actions a WHERE a.user_id = p_user
         ORDER BY a.at DESC LIMIT p_limit + p_offset)
    ) e
    ORDER BY e.created_at DESC, e.id DESC
    LIMIT p_limit OFFSET p_offset
$$;


--
-- Name: in_population(jsonb, text, text, text); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.in_population(p_population jsonb, p_locale text, p_platform text, p_pref text) RETURNS boolean
    LANGUAGE sql IMMUTABLE
    AS $$
    SELECT (p_population ->> 'locale' IS NULL
            OR lower(replace(coalesce(p_locale, ''), '_', '-')) = lower(p_population ->> 'locale')
            OR split_part(lower(replace(coalesce(p_locale, ''), '_', '-')), '-', 1) = lower(p_population ->> 'locale'))
       AND (p_population ->> 'platform' IS NULL OR coalesce(p_platform, 'none') = p_population ->> 'platform')
       AND (p_population ->> 'notification_pref' IS NULL OR p_pref = p_population ->> 'notification_pref')
$$;


--
-- Name: is_time_zone(text); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.is_time_zone(p_name text) RETURNS boolean
    LANGUAGE plpgsql STABLE
    AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM precall.time_zones WHERE name = p_name)
        OR EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = p_name);
END
$$;


--
-- Name: kpis(timestamp with time zone, text); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.kpis(p_since timestamp with time zone, p_by text DEFAULT 'all'::text) RETURNS TABLE(grp text, kpi text, numerator numeric, denominator numeric, value numeric, target numeric, meets_target boolean)
    LANGUAGE plpgsql STABLE
    AS $$
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
$$;


--
-- Name: left_by_gone_dispatchers(); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.left_by_gone_dispatchers(OUT owners text[], OUT previews boolean, OUT calls boolean) RETURNS record
    LANGUAGE plpgsql STABLE
    AS $$
BEGIN
    owners := precall.gone_lease_owners();
    previews := cardinality(owners) > 0 AND EXISTS (
        SELECT 1 FROM notification_logs WHERE status = 'sending' AND lease_owner = ANY (owners));
    calls := cardinality(owners) > 0 AND EXISTS (
        SELECT 1 FROM precall.call_jobs WHERE status = 'firing' AND lease_owner = ANY (owners));
END
$$;


--
-- Name: ln_gamma(double precision); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.ln_gamma(p_x double precision) RETURNS double precision
    LANGUAGE plpgsql IMMUTABLE STRICT
    AS $$
DECLARE
    v_x double precision := p_x;
    v_shift double precision := 0;
    v_inv2 double precision;
BEGIN
    IF p_x <= 0 THEN
        RAISE EXCEPTION 'ln_gamma is defined here for x > 0, not %', p_x USING ERRCODE = '22003';
    END IF;
    WHILE v_x < 15 LOOP
        v_shift := v_shift + ln(v_x);
        v_x := v_x + 1;
    END LOOP;
    v_inv2 := 1 / (v_x * v_x);
    RETURN (v_x - 0.5) * ln(v_x) - v_x + 0.5 * ln(2 * pi())
        + (1.0 / 12 - v_inv2 * (1.0 / 360 - v_inv2 * (1.0 / 1260 - v_inv2 * (1.0 / 1680 - v_inv2 / 1188)))) / v_x
        - v_shift;
END
$$;


--
-- Name: local_call_time(uuid, timestamp without time zone); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.local_call_time(p_user_id uuid, p_local timestamp without time zone) RETURNS timestamp with time zone
    LANGUAGE sql STABLE
    AS $$
    SELECT p_local AT TIME ZONE u.timezone FROM users u WHERE u.id = p_user_id
$$;


--
-- Name: lock_sms_sid(text); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.lock_sms_sid(p_sid text) RETURNS void
    LANGUAGE sql
    AS $$
    SELECT pg_advisory_xact_lock(hashtextextended('precall.sms_sid:' || p_sid, 0))
$$;


--
-- Name: newcombe_interval(bigint, bigint, bigint, bigint, double precision); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.newcombe_interval(p_x1 bigint, p_n1 bigint, p_x2 bigint, p_n2 bigint, p_z double precision DEFAULT 1.959963984540054, OUT diff double precision, OUT lo double precision, OUT hi double precision) RETURNS record
    LANGUAGE sql IMMUTABLE
    AS $$
    SELECT p1 - p2,
           p1 - p2 - sqrt((p1 - w1.lo) ^ 2 + (w2.hi - p2) ^ 2),
           p1 - p2 + sqrt((w1.hi - p1) ^ 2 + (p2 - w2.lo) ^ 2)
    FROM (SELECT p_x1::float8 / nullif(p_n1, 0) AS p1, p_x2::float8 / nullif(p_n2, 0) AS p2) p,
         precall.wilson_interval(p_x1, p_n1, p_z) w1, precall.wilson_interval(p_x2, p_n2, p_z) w2
$$;


--
-- Name: next_due(); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.next_due(OUT preview_in double precision, OUT call_in double precision) RETURNS record
    LANGUAGE plpgsql STABLE
    AS $$
BEGIN
    preview_in := extract(epoch FROM least(
        (SELECT min(send_at) FROM notification_logs WHERE status = 'queued'),
        (SELECT min(lease_expires_at) FROM notification_logs WHERE status = 'sending')
    ) - clock_timestamp());
    call_in := extract(epoch FROM least(
        (SELECT min(due_at) FROM precall.call_jobs WHERE status = 'queued'),
        (SELECT min(lease_expires_at) FROM precall.call_jobs WHERE status = 'firing')
    ) - clock_timestamp());
END
$$;


--
-- Name: normal_cdf(double precision); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.normal_cdf(p_z double precision) RETURNS double precision
    LANGUAGE sql IMMUTABLE STRICT
    AS $$
    SELECT 0.5 * precall.erfc(-p_z / sqrt(2.0))
$$;


--
-- Name: notification_history(uuid, integer, integer); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.notification_history(p_user uuid, p_limit integer DEFAULT 20, p_offset integer DEFAULT 0) RETURNS SETOF public.notification_logs
    LANGUAGE sql STABLE
    AS $$
    SELECT * FROM notification_logs
    WHERE user_id = p_user
    ORDER BY created_at DESC, id DESC
    LIMIT p_limit OFFSET p_offset
$$;


--
-- Name: notify_due(integer, timestamp with time zone); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.notify_due(p_count integer, p_next_send_at timestamp with time zone) RETURNS void
    LANGUAGE sql
    AS $$
    SELECT pg_notify('precall_due', json_build_object(
        'v', 1, 'type', 'previews_planned', 'count', p_count,
        'next_send_at', p_next_send_at)::text)
$$;


--
-- Name: plan_by_id(timestamp with time zone, interval, uuid[], boolean); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.plan_by_id(p_now timestamp with time zone, p_lookahead interval, p_call_ids uuid[], p_experiments boolean) RETURNS TABLE(call_id uuid, user_id uuid, scheduled_at timestamp with time zone, send_at timestamp with time zone, type text, experiment_id bigint, experiment text, arm text, no_preview boolean, assigned boolean)
    LANGUAGE sql STABLE
    AS $$
    SELECT c.id, c.user_id, c.scheduled_at,
           greatest(c.scheduled_at - make_interval(mins => coalesce(x.lead_min, u.notification_lead_min)), p_now),
           precall.guess_preview_type(u), x.experiment_id, x.experiment, x.arm, coalesce(x.no_preview, false),
           coalesce(x.assigned, false)
    FROM scheduled_calls c
    JOIN users u ON u.id = c.user_id
    LEFT JOIN LATERAL precall.experiment_arm_of(u.id, u.locale::text, u.platform::text, u.notification_pref::text,
                                                p_now) x ON p_experiments
    WHERE c.id = ANY (p_call_ids)
      AND c.status = 'pending'
      AND c.scheduled_at - make_interval(mins => coalesce(x.lead_min, u.notification_lead_min)) <= p_now + p_lookahead
$$;


--
-- Name: plan_calls(uuid[], timestamp with time zone); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.plan_calls(p_call_ids uuid[], p_now timestamp with time zone DEFAULT clock_timestamp()) RETURNS integer
    LANGUAGE plpgsql
    SET jit TO 'off'
    AS $_$
DECLARE
    v_settings precall.settings;
    v_max_lead integer := 0;
    v_source text;
    v_planned integer;
    v_next timestamptz;
    v_experiments boolean;
    v_moved timestamptz;
BEGIN
    IF cardinality(p_call_ids) = 0 THEN
        RETURN 0;
    END IF;
    SELECT * INTO v_settings FROM precall.settings;
    v_experiments := EXISTS (SELECT 1 FROM precall.running_experiments(p_now));
    IF p_call_ids IS NULL THEN
        -- The largest lead in use (an index lookup) bounds the scan, instead of the 60-minute
        -- maximum; a running experiment's arm may lead further.
        v_max_lead := greatest(coalesce((SELECT max(u.notification_lead_min) FROM users u), 0),
                               CASE WHEN v_experiments THEN (SELECT max(a.lead_min) FROM precall.experiment_arms a
                                    JOIN precall.running_experiments(p_now) e ON e.id = a.experiment_id) END);
        v_source := 'precall.plan_window($1, $2, $3, $6)';
    ELSE
        v_source := 'precall.plan_by_id($1, $2, $5, $6)';
    END IF;
    -- EXECUTE plans with the values themselves, so the planner sees how few calls the range
    -- holds; a cached generic plan would guess (and at 10M calls hash-join every user).
    EXECUTE format($q$
        WITH candidates AS MATERIALIZED (
            SELECT * FROM %s
        ), assigned AS (
            -- A user's arm is stored when first used, and kept.
            INSERT INTO precall.experiment_assignments (experiment_id, user_id, arm)
            SELECT DISTINCT cd.experiment_id, cd.user_id, cd.arm FROM candidates cd
            WHERE cd.experiment_id IS NOT NULL AND NOT cd.assigned
            ON CONFLICT DO NOTHING
        ), fresh AS (
            SELECT cd.*, gen_random_uuid() AS id,
                   CASE cd.type WHEN 'preview_sms' THEN 'sms' WHEN 'preview_push' THEN 'push' END AS channel,
                   CASE WHEN cd.no_preview OR cd.scheduled_at - $1 < $4 THEN 'skipped' ELSE 'queued' END AS status
            FROM candidates cd
            WHERE NOT EXISTS (
                SELECT 1 FROM notification_logs n
                WHERE n.call_id = cd.call_id
                  AND n.type IN ('preview_push', 'preview_sms')
                  AND n.planned_for = cd.scheduled_at
                  AND n.status <> 'cancelled')
        ), ranked AS (
            SELECT f.*, row_number() OVER (PARTITION BY f.status, f.channel
                                           ORDER BY f.send_at DESC, f.scheduled_at DESC, f.id DESC) AS k,
                   CASE f.channel WHEN 'sms' THEN $8 ELSE $7 END AS gap
            FROM fresh f
        ), laid AS (
            -- The new previews laid out among themselves as precall.send_layout lays out the queue
            -- (the same running minimum, order and gap), within max_early: when no queued preview
            -- is planned later than they are (a cron run's new rows enter at the window's end),
            -- that is where precall.smooth_sends would move them, and it has nothing to move.
            -- Inserted unsmoothed, a burst was written twice: 10,000 new previews planned in
            -- 733 ms instead of 392 ms without smoothing (bench/planning_cost.py, 1M calls).
            SELECT r.*, CASE WHEN r.status = 'queued' AND r.channel IS NOT NULL
                             THEN greatest(min(r.send_at + r.k * r.gap) OVER (PARTITION BY r.status, r.channel
                                                                              ORDER BY r.k ROWS UNBOUNDED PRECEDING)
                                           - r.k * r.gap,
                                           r.send_at - $9)
                             ELSE r.send_at END AS laid_at
            FROM ranked r
        ), inserted AS (
            INSERT INTO notification_logs (id, user_id, call_id, type, channel, status, reason, send_at, planned_for,
                                           experiment_id, arm, planned_send_at)
            SELECT cd.id, cd.user_id, cd.call_id, coalesce(cd.type, 'preview_push'), cd.channel, cd.status,
                   CASE WHEN cd.no_preview
                        THEN format('holdout: experiment %%s, arm %%s (no preview)', cd.experiment, cd.arm)
                        WHEN cd.scheduled_at <= $1
                        THEN format('in_past: the call at %%s was %%s ago when it was planned',
                                    cd.scheduled_at, date_trunc('second', $1 - cd.scheduled_at))
                        WHEN cd.scheduled_at - $1 < $4
                        THEN format('too_late: planned %%s before the call, cut-off is %%s',
                                    date_trunc('second', cd.scheduled_at - $1), $4) END,
                   cd.laid_at, cd.scheduled_at, cd.experiment_id, cd.arm, cd.send_at
            FROM laid cd
            ON CONFLICT DO NOTHING
            RETURNING status, send_at
        ), jobs AS (
            INSERT INTO precall.call_jobs AS j (call_id, user_id, due_at)
            SELECT cd.call_id, cd.user_id, cd.scheduled_at FROM candidates cd
            WHERE cd.scheduled_at > $1
            ON CONFLICT (call_id) DO UPDATE
                SET due_at = excluded.due_at, status = 'queued', reason = NULL, updated_at = now()
                -- A fired job fires again only if the call moved; a queued one at the same time is left alone.
                WHERE j.status = 'cancelled' OR j.due_at <> excluded.due_at
        )
        SELECT count(*) FILTER (WHERE status = 'queued'), min(send_at) FILTER (WHERE status = 'queued')
        FROM inserted
    $q$, v_source)
    INTO v_planned, v_next
    -- Planning looks max_early further ahead, so that a preview the smoothing moves earlier is
    -- still planned before its new send_at.
    USING p_now, v_settings.lookahead + v_settings.max_early, v_max_lead, v_settings.min_notice, p_call_ids,
          v_experiments, precall.send_gap('push'), precall.send_gap('sms'), v_settings.max_early;

    -- A separate statement: it must see the rows just inserted (and moves queued ones the new
    -- rows crowd, or new rows a later queued preview crowds).
    v_moved := precall.smooth_sends(p_call_ids);
    IF v_planned > 0 OR v_moved IS NOT NULL THEN
        PERFORM precall.notify_due(v_planned, least(v_next, v_moved));
    END IF;
    RETURN v_planned;
END
$_$;


--
-- Name: plan_due_previews(timestamp with time zone); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.plan_due_previews(p_now timestamp with time zone DEFAULT clock_timestamp()) RETURNS integer
    LANGUAGE sql
    AS $$
    SELECT precall.reallocate_due_experiments(p_now);
    SELECT precall.plan_calls(NULL, p_now)
$$;


--
-- Name: plan_window(timestamp with time zone, interval, integer, boolean); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.plan_window(p_now timestamp with time zone, p_lookahead interval, p_max_lead integer, p_experiments boolean) RETURNS TABLE(call_id uuid, user_id uuid, scheduled_at timestamp with time zone, send_at timestamp with time zone, type text, experiment_id bigint, experiment text, arm text, no_preview boolean, assigned boolean)
    LANGUAGE sql STABLE
    AS $$
    SELECT c.id, c.user_id, c.scheduled_at,
           greatest(c.scheduled_at - make_interval(mins => coalesce(x.lead_min, u.notification_lead_min)), p_now),
           precall.guess_preview_type(u), x.experiment_id, x.experiment, x.arm, coalesce(x.no_preview, false),
           coalesce(x.assigned, false)
    FROM scheduled_calls c
    JOIN users u ON u.id = c.user_id
    LEFT JOIN LATERAL precall.experiment_arm_of(u.id, u.locale::text, u.platform::text, u.notification_pref::text,
                                                p_now) x ON p_experiments
    WHERE c.status = 'pending'
      AND c.scheduled_at > p_now
      AND c.scheduled_at <= p_now + p_lookahead + make_interval(mins => p_max_lead)
      AND c.scheduled_at - make_interval(mins => coalesce(x.lead_min, u.notification_lead_min)) <= p_now + p_lookahead
$$;


--
-- Name: preview_inputs(uuid); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.preview_inputs(p_call_id uuid) RETURNS TABLE(call_id uuid, user_id uuid, call_status text, scheduled_at timestamp with time zone, topic text, phone_number text, locale text, coach_name text, current_streak integer, fcm_token text, platform text, push_enabled boolean, notification_pref text, sms_opted_out boolean)
    LANGUAGE sql STABLE
    AS $$
    SELECT c.id, c.user_id, c.status::text, c.scheduled_at, c.topic::text,
           u.phone_number::text, u.locale::text, p.name::text, u.current_streak::integer, u.fcm_token::text,
           u.platform::text, u.push_enabled::boolean, u.notification_pref::text, u.sms_opted_out::boolean
    FROM scheduled_calls c
    JOIN users u ON u.id = c.user_id
    LEFT JOIN coach_personas p ON p.id = u.coach_persona_id
    WHERE c.id = p_call_id
$$;


--
-- Name: previews_at_risk(numeric, text); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.previews_at_risk(p_per_second numeric, p_channel text DEFAULT 'push'::text) RETURNS TABLE(id uuid, call_id uuid, send_at timestamp with time zone, projected_at timestamp with time zone, scheduled_at timestamp with time zone, late_by interval)
    LANGUAGE sql STABLE
    AS $$
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
$$;


--
-- Name: previews_beyond_capacity(text); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.previews_beyond_capacity(p_channel text) RETURNS TABLE(id uuid, call_id uuid, planned_send_at timestamp with time zone, send_at timestamp with time zone, needed_early interval)
    LANGUAGE sql STABLE
    AS $$
    SELECT l.id, l.call_id, l.planned_send_at, l.send_at, l.planned_send_at - l.laid_out
    FROM precall.send_layout(p_channel) l CROSS JOIN precall.settings s
    WHERE l.laid_out < l.planned_send_at - s.max_early
    ORDER BY l.planned_send_at, l.id
$$;


--
-- Name: proportions_p(bigint, bigint, bigint, bigint); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.proportions_p(p_x1 bigint, p_n1 bigint, p_x2 bigint, p_n2 bigint) RETURNS double precision
    LANGUAGE sql IMMUTABLE
    AS $$
    SELECT CASE WHEN coalesce(p_n1, 0) = 0 OR coalesce(p_n2, 0) = 0 THEN NULL
                WHEN least(p_n1, p_n2) * least(k, n - k) / n < 10 THEN precall.fisher_exact_p(p_x1, p_n1, p_x2, p_n2)
                ELSE precall.two_proportion_p(p_x1, p_n1, p_x2, p_n2) END
    FROM (SELECT (p_x1 + p_x2)::float8 AS k, (p_n1 + p_n2)::float8 AS n) m
$$;


--
-- Name: prune_notification_logs(integer, integer); Type: PROCEDURE; Schema: precall; Owner: -
--

CREATE PROCEDURE precall.prune_notification_logs(IN p_batch integer DEFAULT 5000, IN p_max_batches integer DEFAULT 1000)
    LANGUAGE plpgsql
    AS $$
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
$$;


--
-- Name: push_receipt(uuid, bigint, text, timestamp with time zone, uuid); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.push_receipt(p_notification_id uuid, p_device_id bigint, p_event text, p_at timestamp with time zone, p_user uuid, OUT outcome text, OUT delivered_at timestamp with time zone, OUT opened_at timestamp with time zone, OUT late boolean) RETURNS record
    LANGUAGE plpgsql
    AS $$
BEGIN
    outcome := precall.record_device_receipt(p_notification_id, p_device_id, p_event, p_at, p_user);
    SELECT n.delivered_at, n.opened_at, coalesce(n.late_receipt, false) INTO delivered_at, opened_at, late
    FROM notification_logs n WHERE n.id = p_notification_id;
END
$$;


--
-- Name: push_targets(uuid[]); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.push_targets(p_ids uuid[]) RETURNS TABLE(notification_id uuid, device_id bigint, fcm_token text, platform text, sent_provider_id text)
    LANGUAGE plpgsql STABLE
    SET jit TO 'off'
    AS $$
BEGIN
    -- PL/pgSQL keeps the plan between calls (a SQL function was planned again on each: 0.65 ms
    -- a call); jit off, as for the claims: before autovacuum has analyzed freshly filled tables
    -- the estimate passed jit_above_cost and each call spent ~24 ms compiling a plan that runs in
    -- 0.1 ms (bench/throughput.py: 16 ms a call). The delivery is looked up per device by its
    -- primary key (a subquery, never a hash join over the whole table).
    RETURN QUERY
    SELECT n.id, d.id, d.fcm_token, d.platform,
           (SELECT pd.provider_id FROM precall.push_deliveries pd
            WHERE pd.notification_id = n.id AND pd.device_id = d.id AND pd.status = 'sent')
    FROM notification_logs n
    CROSS JOIN precall.settings s
    CROSS JOIN LATERAL (
        SELECT dv.id, dv.fcm_token, dv.platform FROM precall.devices dv
        WHERE dv.user_id = n.user_id AND dv.push_enabled AND dv.last_seen_at >= now() - s.device_stale_after
        ORDER BY dv.last_seen_at DESC, dv.id DESC
        LIMIT 10
    ) d
    WHERE n.id = ANY (p_ids)
    ORDER BY n.id, d.id;
END
$$;


--
-- Name: random_gamma(double precision); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.random_gamma(p_shape double precision) RETURNS double precision
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_d double precision := p_shape - 1.0 / 3;
    v_c double precision := 1 / sqrt(9 * (p_shape - 1.0 / 3));
    v_x double precision;
    v_v double precision;
BEGIN
    LOOP
        LOOP
            v_x := sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random());
            v_v := 1 + v_c * v_x;
            EXIT WHEN v_v > 0;
        END LOOP;
        v_v := v_v * v_v * v_v;
        IF ln(1 - random()) < 0.5 * v_x * v_x + v_d - v_d * v_v + v_d * ln(v_v) THEN
            RETURN v_d * v_v;
        END IF;
    END LOOP;
END
$$;


--
-- Name: reallocate_due_experiments(timestamp with time zone); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.reallocate_due_experiments(p_now timestamp with time zone DEFAULT clock_timestamp()) RETURNS integer
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_id bigint;
    v_count integer := 0;
BEGIN
    FOR v_id IN
        SELECT e.id FROM precall.running_experiments(p_now) e
        WHERE e.allocation = 'thompson'
          AND coalesce((SELECT max(al.at) FROM precall.experiment_allocations al WHERE al.experiment_id = e.id),
                       e.starts_at) <= p_now - interval '1 day'
    LOOP
        PERFORM precall.reallocate_experiment(v_id);
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END
$$;


--
-- Name: reallocate_experiment(bigint, integer); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.reallocate_experiment(p_experiment bigint, p_draws integer DEFAULT 10000) RETURNS jsonb
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_e precall.experiments;
    v_names text[];
    v_a double precision[];
    v_b double precision[];
    v_wins integer[];
    v_k integer;
    v_best integer;
    v_top double precision;
    v_draw double precision;
    v_g double precision;
    v_floor numeric;
    v_avail numeric;
    v_left numeric;
    v_share numeric;
    v_shares jsonb := '{}';
    v_p jsonb := '{}';
BEGIN
    SELECT * INTO v_e FROM precall.experiments WHERE id = p_experiment FOR UPDATE;
    SELECT array_agg(a.name ORDER BY a.position),
           array_agg(coalesce(o.answered, 0) + 1.0 ORDER BY a.position),
           array_agg(coalesce(o.reached - o.answered, 0) + 1.0 ORDER BY a.position)
    INTO v_names, v_a, v_b
    FROM precall.experiment_arms a
    LEFT JOIN (SELECT ec.arm, count(*) FILTER (WHERE ec.reached AND ec.answered) AS answered,
                      count(*) FILTER (WHERE ec.reached) AS reached
               FROM precall.experiment_calls ec WHERE ec.experiment_id = p_experiment GROUP BY ec.arm) o ON o.arm = a.name
    WHERE a.experiment_id = p_experiment AND a.name <> 'holdout';
    v_k := cardinality(v_names);
    v_wins := array_fill(0, ARRAY[v_k]);
    PERFORM setseed((hashtextextended(v_e.salt || ':' || (now() AT TIME ZONE 'UTC')::date, 0) % 1000000) / 1000000.0);
    FOR d IN 1..p_draws LOOP
        v_top := -1;
        FOR i IN 1..v_k LOOP
            v_g := precall.random_gamma(v_a[i]);
            v_draw := v_g / (v_g + precall.random_gamma(v_b[i]));
            IF v_draw > v_top THEN
                v_top := v_draw;
                v_best := i;
            END IF;
        END LOOP;
        v_wins[v_best] := v_wins[v_best] + 1;
    END LOOP;
    v_avail := 1 - v_e.holdout;
    v_floor := least(v_e.floor_share, v_avail / v_k);
    v_left := v_avail;
    FOR i IN 1..v_k LOOP
        v_share := CASE WHEN i = v_k THEN v_left
                        ELSE round(v_floor + (v_avail - v_k * v_floor) * v_wins[i] / p_draws, 5) END;
        v_share := greatest(v_share, 0.00001);
        v_left := v_left - v_share;
        UPDATE precall.experiment_arms SET share = v_share WHERE experiment_id = p_experiment AND name = v_names[i];
        v_shares := v_shares || jsonb_build_object(v_names[i], v_share);
        v_p := v_p || jsonb_build_object(v_names[i], round(v_wins[i]::numeric / p_draws, 4));
    END LOOP;
    IF v_e.holdout > 0 THEN
        v_shares := v_shares || jsonb_build_object('holdout', v_e.holdout);
    END IF;
    INSERT INTO precall.experiment_allocations (experiment_id, shares, p_best) VALUES (p_experiment, v_shares, v_p);
    RETURN v_shares;
END
$$;


--
-- Name: reason_code(text); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.reason_code(p_reason text) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $_$
    SELECT CASE WHEN p_reason IS NOT NULL
                THEN coalesce(substring(p_reason from '^([a-z][a-z0-9_]*)(?:[:;]|$)'), 'other') END
$_$;


--
-- Name: receive_sms(text, text, text); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.receive_sms(p_sid text, p_from text, p_body text) RETURNS TABLE(kind text, action text, outcome text, user_id uuid, locale text, coach_name text, time_zone text, scheduled_at timestamp with time zone, call_status text)
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_kind text := precall.record_inbound_sms(p_sid, p_from, p_body);
    v_action text;
    v_notification uuid;
    v_user uuid;
    v_result record;
    v_action_id uuid;
BEGIN
    IF v_kind <> 'stored' THEN
        RETURN QUERY SELECT v_kind, NULL::text, NULL::text, NULL::uuid, NULL::text, NULL::text, NULL::text,
                            NULL::timestamptz, NULL::text;
        RETURN;
    END IF;
    v_action := precall.sms_reply_action(p_body);
    IF v_action IS NOT NULL THEN
        SELECT n.id, n.user_id INTO v_notification, v_user
        FROM users u JOIN notification_logs n ON n.user_id = u.id
        WHERE u.phone_number = p_from AND coalesce(p_from, '') <> ''
          AND n.channel = 'sms' AND n.type IN ('preview_sms', 'fallback_sms') AND n.call_id IS NOT NULL
          AND n.sent_at >= clock_timestamp() - interval '30 minutes'
        ORDER BY n.sent_at DESC LIMIT 1;
    END IF;
    IF v_notification IS NOT NULL THEN
        SELECT * INTO v_result FROM precall.apply_call_action(v_notification, v_action, NULL, NULL) r;
        SELECT a.id INTO v_action_id FROM precall.call_actions a
        WHERE a.notification_id = v_notification ORDER BY a.at DESC LIMIT 1;
        UPDATE precall.sms_inbound SET call_action_id = v_action_id WHERE message_sid = p_sid;
        RETURN QUERY SELECT 'action', v_action, v_result.outcome, v_user, u.locale::text, p.name::text,
                            u.timezone::text, v_result.scheduled_at, v_result.call_status
        FROM users u LEFT JOIN coach_personas p ON p.id = u.coach_persona_id WHERE u.id = v_user;
        RETURN;
    END IF;
    -- Help: only to a number we know (a stranger's text costs nothing), once a day.
    SELECT u.id INTO v_user FROM users u
    WHERE u.phone_number = p_from AND coalesce(p_from, '') <> '' AND NOT coalesce(u.sms_opted_out, false)
    ORDER BY u.id LIMIT 1;
    IF v_user IS NULL OR EXISTS (
        SELECT 1 FROM precall.sms_inbound i
        WHERE i.from_number = p_from AND i.reply = 'help'
          AND i.received_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')
    THEN
        RETURN QUERY SELECT 'ignored', v_action, NULL::text, v_user, NULL::text, NULL::text, NULL::text,
                            NULL::timestamptz, NULL::text;
        RETURN;
    END IF;
    UPDATE precall.sms_inbound SET reply = 'help' WHERE message_sid = p_sid;
    RETURN QUERY SELECT 'help', v_action, NULL::text, v_user, u.locale::text, p.name::text, u.timezone::text,
                        NULL::timestamptz, NULL::text
    FROM users u LEFT JOIN coach_personas p ON p.id = u.coach_persona_id WHERE u.id = v_user;
END
$$;


--
-- Name: record_call_event(bigint, text, boolean, text); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.record_call_event(p_id bigint, p_worker text, p_ok boolean, p_outcome text) RETURNS boolean
    LANGUAGE sql
    AS $$
    UPDATE precall.call_events
    SET status = CASE WHEN p_ok THEN 'delivered' ELSE 'failed' END, outcome = p_outcome,
        delivered_at = CASE WHEN p_ok THEN clock_timestamp() END, lease_owner = NULL, lease_expires_at = NULL
    WHERE id = p_id AND status = 'firing' AND lease_owner = p_worker
    RETURNING true
$$;


--
-- Name: record_call_fired(uuid, text, boolean, text); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.record_call_fired(p_call_id uuid, p_worker text, p_ok boolean, p_outcome text) RETURNS boolean
    LANGUAGE plpgsql
    AS $$
BEGIN
    UPDATE precall.call_jobs
    SET status = CASE WHEN p_ok THEN 'fired' ELSE 'failed' END, outcome = p_outcome,
        fired_at = clock_timestamp(), lease_owner = NULL, lease_expires_at = NULL, updated_at = clock_timestamp()
    WHERE call_id = p_call_id AND status = 'firing' AND lease_owner = p_worker;
    RETURN FOUND;
END
$$;


--
-- Name: record_call_outcome(uuid, text, text, timestamp with time zone); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.record_call_outcome(p_call_id uuid, p_status text, p_answered_by text, p_at timestamp with time zone) RETURNS TABLE(result text, call_status text, answered_by text)
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_call scheduled_calls;
    v_known precall.call_outcomes;
BEGIN
    SELECT * INTO v_call FROM scheduled_calls c WHERE c.id = p_call_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'unknown', NULL::text, NULL::text;
        RETURN;
    END IF;
    SELECT * INTO v_known FROM precall.call_outcomes o WHERE o.call_id = p_call_id;
    IF FOUND THEN
        RETURN QUERY SELECT CASE WHEN v_known.status = p_status AND v_known.answered_by = p_answered_by
                                 THEN 'duplicate' ELSE 'conflict' END, v_call.status::text, v_known.answered_by;
        RETURN;
    END IF;
    IF v_call.status NOT IN ('pending', 'in_progress') AND v_call.status <> p_status THEN
        RETURN QUERY SELECT 'conflict', v_call.status::text, NULL::text;
        RETURN;
    END IF;
    INSERT INTO precall.call_outcomes (call_id, status, answered_by, at)
    VALUES (p_call_id, p_status, p_answered_by, p_at);
    IF v_call.status <> p_status THEN
        UPDATE scheduled_calls c SET status = p_status WHERE c.id = p_call_id;
    END IF;
    RETURN QUERY SELECT 'recorded', p_status, p_answered_by;
END
$$;


--
-- Name: record_device_receipt(uuid, bigint, text, timestamp with time zone, uuid); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.record_device_receipt(p_notification_id uuid, p_device_id bigint, p_event text, p_at timestamp with time zone DEFAULT clock_timestamp(), p_user uuid DEFAULT NULL::uuid) RETURNS text
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_result text := precall.record_push_receipt(p_notification_id, p_event, p_at, p_user);
    v_at timestamptz;
BEGIN
    IF v_result NOT IN ('on_time', 'late', 'duplicate') THEN
        RETURN v_result;
    END IF;
    SELECT least(greatest(p_at, coalesce(attempted_at, send_at, created_at)), clock_timestamp()) INTO v_at
    FROM notification_logs WHERE id = p_notification_id;
    IF p_device_id IS NULL THEN
        SELECT min(device_id) INTO p_device_id FROM precall.push_deliveries
        WHERE notification_id = p_notification_id
        HAVING count(*) = 1;
        IF p_device_id IS NULL THEN
            RETURN v_result;
        END IF;
    END IF;
    INSERT INTO precall.push_deliveries AS pd (notification_id, device_id, platform, status, delivered_at, opened_at)
    SELECT p_notification_id, p_device_id, d.platform, 'sent', v_at, CASE WHEN p_event = 'opened' THEN v_at END
    FROM (SELECT 1) one LEFT JOIN precall.devices d ON d.id = p_device_id
    ON CONFLICT (notification_id, device_id) DO UPDATE
        SET delivered_at = coalesce(pd.delivered_at, EXCLUDED.delivered_at),
            opened_at = coalesce(pd.opened_at, EXCLUDED.opened_at);
    RETURN v_result;
END
$$;


--
-- Name: record_inbound_sms(text, text, text); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.record_inbound_sms(p_sid text, p_from text, p_body text) RETURNS text
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_action text := precall.sms_consent_keyword(p_body);
    v_changed integer := 0;
BEGIN
    INSERT INTO precall.sms_inbound (message_sid, from_number, body, action)
    VALUES (p_sid, p_from, p_body, v_action)
    ON CONFLICT (message_sid) DO NOTHING;
    IF NOT FOUND THEN
        RETURN 'duplicate';
    END IF;
    IF v_action IS NULL THEN
        RETURN 'stored';
    END IF;
    UPDATE users SET sms_opted_out = (v_action = 'opt_out')
    WHERE phone_number = p_from AND phone_number IS NOT NULL
      AND sms_opted_out IS DISTINCT FROM (v_action = 'opt_out');
    GET DIAGNOSTICS v_changed = ROW_COUNT;
    UPDATE precall.sms_inbound SET users_changed = v_changed WHERE message_sid = p_sid;
    RETURN v_action;
END
$$;


--
-- Name: record_push_deliveries(uuid, text, jsonb); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.record_push_deliveries(p_id uuid, p_worker text, p_rows jsonb) RETURNS integer
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_user uuid;
BEGIN
    SELECT user_id INTO v_user FROM notification_logs
    WHERE id = p_id AND status = 'sending' AND lease_owner = p_worker;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    PERFORM precall.store_push_deliveries(p_rows);
    RETURN (SELECT count(*) FROM precall.devices d CROSS JOIN precall.settings s
            WHERE d.user_id = v_user AND d.push_enabled AND d.last_seen_at >= now() - s.device_stale_after);
END
$$;


--
-- Name: record_push_receipt(uuid, text, timestamp with time zone, uuid); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.record_push_receipt(p_notification_id uuid, p_event text, p_at timestamp with time zone DEFAULT clock_timestamp(), p_user uuid DEFAULT NULL::uuid) RETURNS text
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_push notification_logs;
    v_fallback_gone boolean;
    v_result text := 'duplicate';
BEGIN
    IF p_event NOT IN ('delivered', 'opened') THEN
        RAISE EXCEPTION 'receipt event must be delivered or opened, not %', p_event USING ERRCODE = '22023';
    END IF;
    SELECT * INTO v_push FROM notification_logs
    WHERE id = p_notification_id AND (p_user IS NULL OR user_id = p_user)
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'unknown';
    ELSIF v_push.channel IS DISTINCT FROM 'push' THEN
        RETURN 'not_push';
    ELSIF v_push.status NOT IN ('sending', 'sent', 'delivered', 'opened')
          AND NOT (v_push.status = 'failed' AND v_push.attempted_at IS NOT NULL) THEN
        -- 'failed' after an attempt: a timed-out send that FCM had accepted after all.
        RETURN 'not_sent';
    END IF;
    -- Device clocks drift: the receipt time is kept between the send attempt and now.
    p_at := least(greatest(p_at, coalesce(v_push.attempted_at, v_push.send_at, v_push.created_at)), clock_timestamp());
    IF v_push.delivered_at IS NULL THEN
        UPDATE notification_logs
        SET status = 'cancelled', reason = format('receipt_arrived: push delivered at %s', p_at),
            updated_at = clock_timestamp(),
            lease_owner = NULL, lease_expires_at = NULL
        -- claimed ahead but not attempted yet: still stoppable (precall.start_attempts)
        WHERE parent_id = p_notification_id AND type = 'fallback_sms'
          AND (status = 'queued' OR (status = 'sending' AND attempted_at IS NULL));
        SELECT EXISTS (
            SELECT 1 FROM notification_logs
            WHERE parent_id = p_notification_id AND type = 'fallback_sms'
              AND status IN ('sending', 'sent', 'delivered', 'opened')
        ) INTO v_fallback_gone;
        UPDATE notification_logs
        SET status = CASE WHEN status IN ('sent', 'failed') THEN 'delivered' ELSE status END,
            delivered_at = p_at, late_receipt = v_fallback_gone, updated_at = clock_timestamp()
        WHERE id = p_notification_id;
        v_result := CASE WHEN v_fallback_gone THEN 'late' ELSE 'on_time' END;
    END IF;
    IF p_event = 'opened' AND v_push.opened_at IS NULL THEN
        UPDATE notification_logs
        SET status = CASE WHEN status = 'sending' THEN status ELSE 'opened' END,
            opened_at = greatest(p_at, delivered_at), updated_at = clock_timestamp()
        WHERE id = p_notification_id;
        IF v_result = 'duplicate' THEN
            v_result := CASE WHEN v_push.late_receipt THEN 'late' ELSE 'on_time' END;
        END IF;
    END IF;
    RETURN v_result;
END
$$;


--
-- Name: record_receipt(uuid, timestamp with time zone); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.record_receipt(p_notification_id uuid, p_at timestamp with time zone DEFAULT clock_timestamp()) RETURNS text
    LANGUAGE sql
    AS $$
    SELECT CASE r WHEN 'not_push' THEN 'unknown' WHEN 'not_sent' THEN 'unknown' ELSE r END
    FROM precall.record_push_receipt(p_notification_id, 'delivered', p_at) AS r
$$;


--
-- Name: record_sent_batch(jsonb); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.record_sent_batch(p_rows jsonb) RETURNS SETOF uuid
    LANGUAGE plpgsql
    AS $_$
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
$_$;


--
-- Name: record_sms_reply(text, text, text, text, integer, numeric, text); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.record_sms_reply(p_sid text, p_reply text, p_body text, p_encoding text, p_segments integer, p_cost numeric, p_currency text) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    UPDATE precall.sms_inbound
    SET reply = p_reply, reply_body = p_body, reply_encoding = p_encoding, reply_segments = p_segments,
        reply_cost = p_cost, reply_currency = p_currency
    WHERE message_sid = p_sid;
    IF FOUND AND p_cost IS NOT NULL AND p_currency IS NOT NULL THEN
        INSERT INTO precall.sms_spend AS sp (day, currency, amount, messages)
        VALUES ((now() AT TIME ZONE 'UTC')::date, p_currency, p_cost, 1)
        ON CONFLICT (day, currency) DO UPDATE SET amount = sp.amount + EXCLUDED.amount, messages = sp.messages + 1;
    END IF;
END
$$;


--
-- Name: record_sms_status(text, text, integer, timestamp with time zone); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.record_sms_status(p_sid text, p_status text, p_error_code integer DEFAULT NULL::integer, p_done_at timestamp with time zone DEFAULT NULL::timestamp with time zone) RETURNS text
    LANGUAGE plpgsql
    AS $$
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


--
-- Name: record_unsent(uuid, text, text, text, text, text, text, text, text, timestamp with time zone, text); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.record_unsent(p_id uuid, p_worker text, p_status text, p_reason text, p_type text DEFAULT NULL::text, p_channel text DEFAULT NULL::text, p_title text DEFAULT NULL::text, p_body text DEFAULT NULL::text, p_error_msg text DEFAULT NULL::text, p_attempted_at timestamp with time zone DEFAULT NULL::timestamp with time zone, p_fallback_reason text DEFAULT NULL::text) RETURNS uuid
    LANGUAGE sql
    AS $$
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


--
-- Name: register_device(uuid, text, text, boolean); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.register_device(p_user uuid, p_token text, p_platform text, p_push_enabled boolean) RETURNS boolean
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_tries integer := 0;
BEGIN
    PERFORM 1 FROM users WHERE id = p_user;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    LOOP
        BEGIN
            PERFORM precall.upsert_device(p_user, p_token, p_platform, p_push_enabled);
            RETURN true;
        EXCEPTION WHEN unique_violation OR deadlock_detected THEN
            v_tries := v_tries + 1;
            IF v_tries >= 5 THEN
                RAISE;
            END IF;
        END;
    END LOOP;
END
$$;


--
-- Name: register_session(text, text, integer, boolean); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.register_session(p_name text, p_hostname text, p_pid integer, p_new_process boolean DEFAULT false) RETURNS interval
    LANGUAGE sql
    AS $$
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


--
-- Name: renew_leases(text, uuid[]); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.renew_leases(p_worker text, p_ids uuid[]) RETURNS SETOF uuid
    LANGUAGE sql
    AS $$
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


--
-- Name: experiments; Type: TABLE; Schema: precall; Owner: -
--

CREATE TABLE precall.experiments (
    id bigint NOT NULL,
    name text NOT NULL,
    salt text DEFAULT (gen_random_uuid())::text NOT NULL,
    population jsonb DEFAULT '{}'::jsonb NOT NULL,
    holdout numeric(6,5) DEFAULT 0 NOT NULL,
    allocation text DEFAULT 'fixed'::text NOT NULL,
    floor_share numeric(6,5) DEFAULT 0.05 NOT NULL,
    starts_at timestamp with time zone DEFAULT now() NOT NULL,
    ends_at timestamp with time zone,
    stopped_at timestamp with time zone,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT experiments_allocation_check CHECK ((allocation = ANY (ARRAY['fixed'::text, 'thompson'::text]))),
    CONSTRAINT experiments_check CHECK (((ends_at IS NULL) OR (ends_at > starts_at))),
    CONSTRAINT experiments_floor_share_check CHECK (((floor_share >= (0)::numeric) AND (floor_share < (1)::numeric))),
    CONSTRAINT experiments_holdout_check CHECK (((holdout >= (0)::numeric) AND (holdout < (1)::numeric))),
    CONSTRAINT experiments_name_check CHECK ((name ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'::text)),
    CONSTRAINT experiments_population_check CHECK ((jsonb_typeof(population) = 'object'::text))
);


--
-- Name: running_experiments(timestamp with time zone); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.running_experiments(p_now timestamp with time zone) RETURNS SETOF precall.experiments
    LANGUAGE sql STABLE
    AS $$
    SELECT * FROM precall.experiments e
    WHERE e.stopped_at IS NULL AND e.starts_at <= p_now AND (e.ends_at IS NULL OR e.ends_at > p_now)
$$;


--
-- Name: send_capacity(text); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.send_capacity(p_channel text) RETURNS numeric
    LANGUAGE sql STABLE
    AS $$
    SELECT least(CASE p_channel WHEN 'sms' THEN s.sms_capacity_per_s ELSE s.push_capacity_per_s END,
                 (SELECT CASE WHEN count(*) > 0 AND count(*) = count(r.rate) THEN sum(r.rate) END
                  FROM precall.dispatchers d
                  -- A rate of 0 or below (any client with the role can write a heartbeat) counts
                  -- as unpaced: divided by, it failed every planning run and call INSERT.
                  CROSS JOIN LATERAL (SELECT nullif(greatest(CASE p_channel WHEN 'sms' THEN d.sms_rate_per_s
                                                                            ELSE d.push_rate_per_s END, 0), 0) AS rate) r
                  WHERE d.stopped_at IS NULL AND d.heartbeat_at > clock_timestamp() - s.heartbeat_max_age))
    FROM precall.settings s
$$;


--
-- Name: send_gap(text); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.send_gap(p_channel text) RETURNS interval
    LANGUAGE sql STABLE
    AS $$
    SELECT make_interval(secs => (1 / precall.send_capacity(p_channel))::double precision)
$$;


--
-- Name: send_layout(text); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.send_layout(p_channel text) RETURNS TABLE(id uuid, call_id uuid, send_at timestamp with time zone, planned_send_at timestamp with time zone, laid_out timestamp with time zone)
    LANGUAGE sql STABLE
    AS $$
    -- MATERIALIZED: inlined, the gap (a STABLE function reading settings and dispatchers) was
    -- computed twice per row: 120 of the 136 ms a 10,000-row layout took.
    WITH gap AS MATERIALIZED (
        SELECT precall.send_gap(p_channel) AS gap
    ), q AS (
        SELECT n.id, n.call_id, n.send_at, n.planned_send_at,
               row_number() OVER (ORDER BY n.planned_send_at DESC, n.planned_for DESC, n.id DESC) AS k
        FROM notification_logs n
        WHERE n.status = 'queued' AND n.channel = p_channel AND n.planned_send_at IS NOT NULL
    )
    SELECT q.id, q.call_id, q.send_at, q.planned_send_at,
           min(q.planned_send_at + q.k * gap.gap) OVER (ORDER BY q.k ROWS UNBOUNDED PRECEDING) - q.k * gap.gap
    FROM q CROSS JOIN gap
$$;


--
-- Name: smooth_sends(uuid[]); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.smooth_sends(p_call_ids uuid[] DEFAULT NULL::uuid[]) RETURNS timestamp with time zone
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_channel text;
    v_max_early interval := (SELECT max_early FROM precall.settings);
    v_gap interval;
    v_per_second integer;
    v_ids uuid[];
    v_times jsonb;
    v_locked uuid[];
    v_earliest timestamptz;
    v_moved timestamptz;
BEGIN
    FOREACH v_channel IN ARRAY ARRAY['push', 'sms'] LOOP
        v_gap := precall.send_gap(v_channel);
        v_per_second := greatest(1, floor(precall.send_capacity(v_channel))::integer);
        -- A trigger lays out only when more than capacity rows fall within one second near its
        -- rows: some row is nearer to the row `per_second` places after it than a layout at
        -- capacity would put them (1 s at 400/s; 2 s at 0.5/s, where "within a second" missed two
        -- SMS 1.5 s apart). One ordered range scan (a per-row count was quadratic: 40 s for
        -- 20,000 calls in one INSERT).
        IF p_call_ids IS NOT NULL AND NOT EXISTS (
            WITH mine AS (
                SELECT min(n.send_at) - v_per_second * v_gap AS lo, max(n.send_at) + v_per_second * v_gap AS hi
                FROM notification_logs n
                WHERE n.call_id = ANY (p_call_ids) AND n.status = 'queued' AND n.channel = v_channel
                  AND n.planned_send_at IS NOT NULL
            ), near AS (
                SELECT m.send_at - lag(m.send_at, v_per_second) OVER (ORDER BY m.send_at) AS span
                FROM notification_logs m, mine
                WHERE m.status IN ('queued', 'sending') AND m.channel = v_channel
                  AND m.send_at BETWEEN mine.lo AND mine.hi
            )
            SELECT 1 FROM near WHERE near.span < v_per_second * v_gap) THEN
            CONTINUE;
        END IF;
        -- One layout at a time per channel (two would undo each other's moves).
        PERFORM pg_advisory_xact_lock(hashtext('precall.smooth_sends'), hashtext(v_channel));
        SELECT array_agg(m.id), jsonb_object_agg(m.id, m.smoothed),
               min(m.smoothed) FILTER (WHERE m.smoothed < m.send_at)
        INTO v_ids, v_times, v_earliest
        FROM (SELECT l.id, greatest(l.laid_out, l.planned_send_at - v_max_early) AS smoothed, l.send_at
              FROM precall.send_layout(v_channel) l) m
        WHERE m.smoothed <> m.send_at;
        CONTINUE WHEN v_ids IS NULL;
        SELECT array_agg(x.id) INTO v_locked
        FROM (SELECT n.id FROM notification_logs n
              WHERE n.id = ANY (v_ids) AND n.status = 'queued'
              FOR UPDATE SKIP LOCKED) x;
        UPDATE notification_logs n
        SET send_at = (v_times ->> n.id::text)::timestamptz, updated_at = clock_timestamp()
        WHERE n.id = ANY (v_locked);
        v_moved := least(v_moved, v_earliest);
    END LOOP;
    RETURN v_moved;
END
$$;


--
-- Name: sms_budget_reached(text); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.sms_budget_reached(p_currency text) RETURNS boolean
    LANGUAGE sql STABLE
    AS $$
    SELECT coalesce((
        SELECT coalesce(sp.amount, 0) >= (s.sms_daily_budget ->> p_currency)::numeric
        FROM precall.settings s
        LEFT JOIN precall.sms_spend sp
               ON sp.day = (now() AT TIME ZONE 'UTC')::date AND sp.currency = p_currency
        WHERE s.sms_daily_budget ? p_currency), false)
$$;


--
-- Name: sms_budget_use(); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.sms_budget_use() RETURNS TABLE(currency text, budget numeric, spent numeric, share numeric)
    LANGUAGE sql STABLE
    AS $$
    SELECT b.key, b.value::numeric, coalesce(sp.amount, 0),
           CASE WHEN b.value::numeric > 0 THEN round(coalesce(sp.amount, 0) / b.value::numeric, 4) END
    FROM precall.settings s
    CROSS JOIN LATERAL jsonb_each_text(coalesce(s.sms_daily_budget, '{}')) b
    LEFT JOIN precall.sms_spend sp ON sp.day = (now() AT TIME ZONE 'UTC')::date AND sp.currency = b.key
    ORDER BY b.key
$$;


--
-- Name: sms_consent_keyword(text); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.sms_consent_keyword(p_body text) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$
    SELECT CASE regexp_replace(upper(coalesce(p_body, '')), '[^A-Z]', '', 'g')
               WHEN 'STOP' THEN 'opt_out' WHEN 'STOPALL' THEN 'opt_out' WHEN 'UNSUBSCRIBE' THEN 'opt_out'
               WHEN 'CANCEL' THEN 'opt_out' WHEN 'END' THEN 'opt_out' WHEN 'QUIT' THEN 'opt_out'
               WHEN 'START' THEN 'opt_in' WHEN 'YES' THEN 'opt_in' WHEN 'UNSTOP' THEN 'opt_in'
           END
$$;


--
-- Name: sms_reply_action(text); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.sms_reply_action(p_body text) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$
    SELECT CASE regexp_replace(upper(translate(left(coalesce(p_body, ''), 64),
                   'àâäáãéèêëíìîïóòôöõúùûüçñÀÂÄÁÃÉÈÊËÍÌÎÏÓÒÔÖÕÚÙÛÜÇÑ',
                   'aaaaaeeeeiiiiooooouuuucnAAAAAEEEEIIIIOOOOOUUUUCN')), '[^A-Z0-9]', '', 'g')
               WHEN '1' THEN 'call_now' WHEN 'NOW' THEN 'call_now' WHEN 'MAINTENANT' THEN 'call_now'
               WHEN '2' THEN 'snooze' WHEN 'LATER' THEN 'snooze' WHEN 'PLUSTARD' THEN 'snooze'
               WHEN '3' THEN 'skip' WHEN 'SKIP' THEN 'skip' WHEN 'ANNULER' THEN 'skip'
           END
$$;


--
-- Name: start_attempts(text, uuid[]); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.start_attempts(p_worker text, p_ids uuid[]) RETURNS SETOF uuid
    LANGUAGE sql
    AS $$
    UPDATE notification_logs SET attempted_at = coalesce(attempted_at, clock_timestamp())
    WHERE id = ANY (p_ids) AND status = 'sending' AND lease_owner = p_worker
    RETURNING id
$$;


--
-- Name: stop_experiment(text); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.stop_experiment(p_name text) RETURNS integer
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_id bigint;
    v_calls uuid[];
BEGIN
    UPDATE precall.experiments SET stopped_at = now() WHERE name = p_name AND stopped_at IS NULL RETURNING id INTO v_id;
    IF v_id IS NULL THEN
        RETURN NULL;
    END IF;
    WITH moved AS (
        UPDATE notification_logs n
        SET status = 'cancelled', reason = format('experiment_stopped: %s', p_name), updated_at = now(),
            lease_owner = NULL, lease_expires_at = NULL
        WHERE n.experiment_id = v_id
          -- claimed ahead but not attempted yet: still unsent (precall.start_attempts)
          AND (n.status = 'queued' OR (n.status = 'sending' AND n.attempted_at IS NULL)
               OR (n.status = 'skipped' AND n.reason_code = 'holdout' AND n.send_at > now()))
        RETURNING n.call_id
    )
    SELECT coalesce(array_agg(DISTINCT call_id), '{}') INTO v_calls FROM moved;
    PERFORM precall.plan_calls(v_calls);
    RETURN cardinality(v_calls);
END
$$;


--
-- Name: store_push_deliveries(jsonb); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.store_push_deliveries(p_rows jsonb) RETURNS void
    LANGUAGE plpgsql
    AS $_$
BEGIN
    INSERT INTO precall.push_deliveries AS pd (notification_id, device_id, platform, status, provider_id, error,
                                               attempted_at, sent_at)
    SELECT r.notification_id, r.device_id, r.platform, r.status, r.provider_id, r.error, r.attempted_at, r.sent_at
    FROM jsonb_to_recordset(p_rows) AS r(notification_id uuid, device_id bigint, platform text, status text,
                                         provider_id text, error text, attempted_at timestamptz, sent_at timestamptz)
    ON CONFLICT (notification_id, device_id) DO UPDATE
        SET status = EXCLUDED.status, provider_id = coalesce(EXCLUDED.provider_id, pd.provider_id),
            error = EXCLUDED.error, attempted_at = coalesce(pd.attempted_at, EXCLUDED.attempted_at),
            sent_at = coalesce(EXCLUDED.sent_at, pd.sent_at);
    -- Only when there is a dead token: most batches have none, and the join alone cost a scan.
    IF p_rows @? '$[*] ? (@.status == "dead")' THEN
        UPDATE precall.devices d
        SET push_enabled = false, disabled_reason = 'dead_token: ' || coalesce(r.error, 'FCM')
        FROM jsonb_to_recordset(p_rows) AS r(device_id bigint, status text, error text)
        WHERE r.status = 'dead' AND d.id = r.device_id AND d.push_enabled;
    END IF;
END
$_$;


--
-- Name: sync_push_summary(uuid); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.sync_push_summary(p_user uuid) RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_token text;
    v_platform text;
    v_enabled boolean;
    v_prev text := coalesce(current_setting('precall.devices_sync', true), '');
BEGIN
    IF p_user IS NULL THEN
        RETURN;
    END IF;
    SELECT d.fcm_token, d.platform, d.push_enabled INTO v_token, v_platform, v_enabled
    FROM precall.devices d
    WHERE d.user_id = p_user
    ORDER BY d.push_enabled DESC, d.last_seen_at DESC, d.id DESC
    LIMIT 1;
    PERFORM set_config('precall.devices_sync', 'on', true);
    UPDATE users
    SET fcm_token = v_token, platform = coalesce(v_platform, platform), push_enabled = coalesce(v_enabled, false)
    WHERE id = p_user
      AND (fcm_token IS DISTINCT FROM v_token OR platform IS DISTINCT FROM coalesce(v_platform, platform)
           OR push_enabled IS DISTINCT FROM coalesce(v_enabled, false));
    PERFORM set_config('precall.devices_sync', v_prev, true);
END
$$;


--
-- Name: tg_devices__summary(); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.tg_devices__summary() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND (TG_OP = 'DELETE' OR OLD.user_id <> NEW.user_id) THEN
        PERFORM precall.sync_push_summary(OLD.user_id);  -- first: it frees the token for the new holder
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM precall.sync_push_summary(NEW.user_id);
    END IF;
    RETURN NULL;
END
$$;


--
-- Name: tg_reason_code(); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.tg_reason_code() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    NEW.reason_code := precall.reason_code(NEW.reason);
    RETURN NEW;
END
$$;


--
-- Name: tg_scheduled_calls__after_insert(); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.tg_scheduled_calls__after_insert() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    -- Pre-filter on the widest window (the longest lead + lookahead) so a bulk load stays cheap.
    PERFORM precall.plan_calls(ARRAY(
        SELECT id FROM new_calls
        WHERE status = 'pending'
          AND scheduled_at <= clock_timestamp() + (SELECT max_lead + lookahead + max_early FROM precall.settings)));
    RETURN NULL;
END
$$;


--
-- Name: tg_scheduled_calls__after_update(); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.tg_scheduled_calls__after_update() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_cause text := nullif(current_setting('precall.change_cause', true), '');
BEGIN
    IF NEW.status <> 'pending' THEN
        PERFORM precall.cancel_unsent(NEW.id, coalesce(v_cause, format('call_%s', NEW.status)), NEW.status = 'cancelled');
        RETURN NULL;
    END IF;
    IF OLD.scheduled_at IS DISTINCT FROM NEW.scheduled_at THEN
        PERFORM precall.cancel_unsent(NEW.id,
            format('%s: call moved from %s to %s', coalesce(v_cause, 'rescheduled'), OLD.scheduled_at, NEW.scheduled_at),
            true);
    END IF;
    IF v_cause = 'user_call_now' THEN
        RETURN NULL;
    END IF;
    PERFORM precall.plan_calls(ARRAY[NEW.id]);
    RETURN NULL;
END
$$;


--
-- Name: tg_scheduled_calls__before_update(); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.tg_scheduled_calls__before_update() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    SELECT count(*) > 0, min(n.sent_at) INTO NEW.preview_sent, NEW.preview_sent_at
    FROM notification_logs n
    WHERE n.call_id = NEW.id AND n.planned_for = NEW.scheduled_at
      AND n.type IN ('preview_push', 'preview_sms') AND n.sent_at IS NOT NULL;
    RETURN NEW;
END
$$;


--
-- Name: tg_scheduled_calls__events(); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.tg_scheduled_calls__events() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_event text;
    v_cause text := nullif(current_setting('precall.change_cause', true), '');
BEGIN
    IF NEW.status = 'cancelled' AND OLD.status IS DISTINCT FROM 'cancelled' THEN
        v_event := 'call.cancelled';
    ELSIF NEW.status = 'pending' AND OLD.scheduled_at IS DISTINCT FROM NEW.scheduled_at THEN
        v_event := 'call.rescheduled';
    ELSE
        RETURN NULL;
    END IF;
    INSERT INTO precall.call_events (call_id, user_id, event, previous_scheduled_at, scheduled_at, cause)
    VALUES (NEW.id, NEW.user_id, v_event,
            CASE WHEN v_event = 'call.rescheduled' THEN OLD.scheduled_at END, NEW.scheduled_at, v_cause);
    PERFORM pg_notify('precall_call_changed', json_build_object(
        'v', 1, 'event', v_event, 'call_id', NEW.id, 'user_id', NEW.user_id,
        'previous_scheduled_at', CASE WHEN v_event = 'call.rescheduled' THEN OLD.scheduled_at END,
        'scheduled_at', NEW.scheduled_at, 'cause', v_cause)::text);
    RETURN NULL;
END
$$;


--
-- Name: tg_users__after_update(); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.tg_users__after_update() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_call uuid;
    v_reason text := format('replanned: notification_lead_min %s -> %s, notification_pref %s -> %s',
        OLD.notification_lead_min, NEW.notification_lead_min, OLD.notification_pref, NEW.notification_pref);
    v_calls uuid[] := '{}';
BEGIN
    FOR v_call IN
        SELECT DISTINCT n.call_id FROM notification_logs n
        WHERE n.user_id = NEW.id AND n.type IN ('preview_push', 'preview_sms')
          AND (n.status = 'queued' OR (n.status = 'sending' AND n.attempted_at IS NULL))
    LOOP
        PERFORM precall.cancel_unsent(v_call, v_reason, false);
        v_calls := v_calls || v_call;
    END LOOP;
    -- A longer lead can bring calls into the window that had nothing planned yet.
    v_calls := v_calls || ARRAY(
        SELECT c.id FROM scheduled_calls c
        WHERE c.user_id = NEW.id AND c.status = 'pending'
          AND c.scheduled_at > clock_timestamp()
          AND c.scheduled_at <= clock_timestamp() + (SELECT max_lead + lookahead + max_early FROM precall.settings));
    PERFORM precall.plan_calls(v_calls);
    RETURN NULL;
END
$$;


--
-- Name: tg_users__devices_follow(); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.tg_users__devices_follow() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF coalesce(current_setting('precall.devices_sync', true), '') = 'on' THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' OR NEW.fcm_token IS DISTINCT FROM OLD.fcm_token THEN
        IF coalesce(NEW.fcm_token, '') <> '' THEN
            PERFORM precall.upsert_device(NEW.id, NEW.fcm_token, NEW.platform, coalesce(NEW.push_enabled, false),
                                          'users.push_enabled');
        END IF;
        IF TG_OP = 'UPDATE' AND coalesce(OLD.fcm_token, '') <> '' THEN
            IF coalesce(NEW.fcm_token, '') = '' THEN
                DELETE FROM precall.devices WHERE fcm_token = OLD.fcm_token AND user_id = NEW.id;
            END IF;
        END IF;
    ELSIF NEW.push_enabled IS DISTINCT FROM OLD.push_enabled THEN
        IF coalesce(NEW.push_enabled, false) THEN
            UPDATE precall.devices SET push_enabled = true, disabled_reason = NULL
            WHERE user_id = NEW.id AND NOT push_enabled
              AND (fcm_token = NEW.fcm_token OR disabled_reason = 'users.push_enabled');
        ELSE
            UPDATE precall.devices SET push_enabled = false, disabled_reason = 'users.push_enabled'
            WHERE user_id = NEW.id AND push_enabled;
        END IF;
    ELSIF NEW.platform IS DISTINCT FROM OLD.platform AND coalesce(NEW.fcm_token, '') <> '' THEN
        UPDATE precall.devices SET platform = NEW.platform WHERE fcm_token = NEW.fcm_token AND user_id = NEW.id;
    END IF;
    RETURN NULL;
END
$$;


--
-- Name: tg_users__lead_within_policy(); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.tg_users__lead_within_policy() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_max interval := (SELECT max_lead FROM precall.settings);
BEGIN
    IF make_interval(mins => NEW.notification_lead_min) > v_max THEN
        RAISE EXCEPTION 'notification_lead_min % is longer than the longest lead allowed (precall.settings.max_lead = %)',
            NEW.notification_lead_min, v_max USING ERRCODE = '23514';
    END IF;
    RETURN NEW;
END
$$;


--
-- Name: tg_users__new_number_consents(); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.tg_users__new_number_consents() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF NEW.sms_opted_out IS NOT DISTINCT FROM OLD.sms_opted_out THEN
        NEW.sms_opted_out := false;
    END IF;
    RETURN NEW;
END
$$;


--
-- Name: tg_users__timezone_is_known(); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.tg_users__timezone_is_known() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF NEW.timezone IS NOT NULL AND NOT precall.is_time_zone(NEW.timezone::text) THEN
        RAISE EXCEPTION 'users.timezone % is not a time zone', quote_literal(NEW.timezone)
            USING ERRCODE = '22023', HINT = 'Use an IANA name from pg_timezone_names, such as Europe/Paris.';
    END IF;
    RETURN NEW;
END
$$;


--
-- Name: tg_users__token_moves(); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.tg_users__token_moves() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    UPDATE users SET fcm_token = NULL, push_enabled = false
    WHERE fcm_token = NEW.fcm_token AND id <> NEW.id;
    RETURN NEW;
END
$$;


--
-- Name: two_proportion_p(bigint, bigint, bigint, bigint); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.two_proportion_p(p_x1 bigint, p_n1 bigint, p_x2 bigint, p_n2 bigint) RETURNS double precision
    LANGUAGE sql IMMUTABLE
    AS $$
    SELECT CASE WHEN p_n1 = 0 OR p_n2 = 0 THEN NULL
                WHEN pooled <= 0 OR pooled >= 1 THEN 1.0
                ELSE precall.erfc(abs(p_x1::float8 / p_n1 - p_x2::float8 / p_n2)
                                  / sqrt(pooled * (1 - pooled) * (1.0 / p_n1 + 1.0 / p_n2)) / sqrt(2.0)) END
    FROM (SELECT (p_x1 + p_x2)::float8 / nullif(p_n1 + p_n2, 0) AS pooled) s
$$;


--
-- Name: unregister_device(uuid, text); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.unregister_device(p_user uuid, p_token text) RETURNS void
    LANGUAGE sql
    AS $$
    DELETE FROM precall.devices WHERE fcm_token = p_token AND user_id = p_user
$$;


--
-- Name: upsert_device(uuid, text, text, boolean, text); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.upsert_device(p_user uuid, p_token text, p_platform text, p_push_enabled boolean, p_disabled_reason text DEFAULT 'app'::text) RETURNS void
    LANGUAGE sql
    AS $$
    INSERT INTO precall.devices AS d (user_id, fcm_token, platform, push_enabled, disabled_reason, last_seen_at)
    VALUES (p_user, p_token, p_platform, p_push_enabled, CASE WHEN NOT p_push_enabled THEN p_disabled_reason END, now())
    ON CONFLICT (fcm_token) DO UPDATE
        SET user_id = EXCLUDED.user_id, platform = coalesce(EXCLUDED.platform, d.platform),
            push_enabled = EXCLUDED.push_enabled, disabled_reason = EXCLUDED.disabled_reason,
            last_seen_at = EXCLUDED.last_seen_at
$$;


--
-- Name: wilson_interval(bigint, bigint, double precision); Type: FUNCTION; Schema: precall; Owner: -
--

CREATE FUNCTION precall.wilson_interval(p_x bigint, p_n bigint, p_z double precision DEFAULT 1.959963984540054, OUT lo double precision, OUT hi double precision) RETURNS record
    LANGUAGE sql IMMUTABLE
    AS $$
    SELECT CASE WHEN p_n > 0 THEN (c - h) / d END, CASE WHEN p_n > 0 THEN (c + h) / d END
    FROM (SELECT p_x::float8 / nullif(p_n, 0) AS p) a,
         LATERAL (SELECT a.p + p_z * p_z / (2 * nullif(p_n, 0)) AS c,
                         p_z * sqrt(a.p * (1 - a.p) / nullif(p_n, 0) + p_z * p_z / (4.0 * nullif(p_n, 0) ^ 2)) AS h,
                         1 + p_z * p_z / nullif(p_n, 0) AS d) b
$$;


--
-- Name: call_actions; Type: TABLE; Schema: precall; Owner: -
--

CREATE TABLE precall.call_actions (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    call_id uuid NOT NULL,
    user_id uuid NOT NULL,
    notification_id uuid,
    action text NOT NULL,
    channel text NOT NULL,
    device_id bigint,
    outcome text NOT NULL,
    previous_scheduled_at timestamp with time zone,
    scheduled_at timestamp with time zone,
    at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    CONSTRAINT call_actions_action_check CHECK ((action = ANY (ARRAY['call_now'::text, 'snooze'::text, 'skip'::text]))),
    CONSTRAINT call_actions_channel_check CHECK ((channel = ANY (ARRAY['push'::text, 'sms'::text]))),
    CONSTRAINT call_actions_outcome_check CHECK ((outcome = ANY (ARRAY['applied'::text, 'already_acted'::text, 'not_pending'::text, 'too_late'::text])))
);


--
-- Name: call_events; Type: TABLE; Schema: precall; Owner: -
--

CREATE TABLE precall.call_events (
    id bigint NOT NULL,
    call_id uuid NOT NULL,
    user_id uuid NOT NULL,
    event text NOT NULL,
    previous_scheduled_at timestamp with time zone,
    scheduled_at timestamp with time zone NOT NULL,
    cause text,
    status text DEFAULT 'queued'::text NOT NULL,
    attempts integer DEFAULT 0 NOT NULL,
    lease_owner text,
    lease_expires_at timestamp with time zone,
    outcome text,
    delivered_at timestamp with time zone,
    created_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    CONSTRAINT call_events_event_check CHECK ((event = ANY (ARRAY['call.rescheduled'::text, 'call.cancelled'::text]))),
    CONSTRAINT call_events_status_check CHECK ((status = ANY (ARRAY['queued'::text, 'firing'::text, 'delivered'::text, 'failed'::text])))
);


--
-- Name: call_events_id_seq; Type: SEQUENCE; Schema: precall; Owner: -
--

ALTER TABLE precall.call_events ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME precall.call_events_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: call_outcomes; Type: TABLE; Schema: precall; Owner: -
--

CREATE TABLE precall.call_outcomes (
    call_id uuid NOT NULL,
    status text NOT NULL,
    answered_by text NOT NULL,
    at timestamp with time zone,
    received_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    CONSTRAINT call_outcomes_answered_by_check CHECK ((answered_by = ANY (ARRAY['human'::text, 'machine'::text, 'unknown'::text]))),
    CONSTRAINT call_outcomes_status_check CHECK ((status = ANY (ARRAY['answered'::text, 'no_answer'::text, 'failed'::text])))
);


--
-- Name: scheduled_calls; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.scheduled_calls (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    user_id uuid NOT NULL,
    scheduled_at timestamp with time zone NOT NULL,
    status character varying(20) DEFAULT 'pending'::character varying NOT NULL,
    topic character varying(100),
    preview_sent boolean DEFAULT false NOT NULL,
    preview_sent_at timestamp with time zone,
    CONSTRAINT scheduled_calls_status CHECK (((status)::text = ANY ((ARRAY['pending'::character varying, 'in_progress'::character varying, 'answered'::character varying, 'no_answer'::character varying, 'cancelled'::character varying, 'failed'::character varying])::text[])))
);


--
-- Name: call_facts; Type: VIEW; Schema: precall; Owner: -
--

CREATE VIEW precall.call_facts AS
 SELECT c.id,
    c.user_id,
    c.scheduled_at,
    c.status,
    ((c.scheduled_at AT TIME ZONE 'UTC'::text))::date AS day,
    u.locale,
    COALESCE(u.platform, 'none'::text) AS platform,
    COALESCE(( SELECT n.channel
           FROM public.notification_logs n
          WHERE ((n.call_id = c.id) AND ((n.type)::text = ANY ((ARRAY['preview_push'::character varying, 'preview_sms'::character varying])::text[])) AND (n.sent_at IS NOT NULL))
          ORDER BY n.sent_at
         LIMIT 1), 'none'::character varying) AS channel,
    (((c.status)::text = 'answered'::text) AND (o.answered_by IS DISTINCT FROM 'machine'::text)) AS answered,
    o.answered_by,
    COALESCE(a.action, 'none'::text) AS action,
    COALESCE(((x.experiment || '/'::text) || x.arm), 'none'::text) AS experiment,
    COALESCE(x.held_out, false) AS held_out
   FROM ((((public.scheduled_calls c
     JOIN public.users u ON ((u.id = c.user_id)))
     LEFT JOIN precall.call_outcomes o ON ((o.call_id = c.id)))
     LEFT JOIN precall.call_actions a ON (((a.call_id = c.id) AND (a.outcome = 'applied'::text))))
     LEFT JOIN LATERAL ( SELECT e.name AS experiment,
            n.arm,
            (n.reason_code = 'holdout'::text) AS held_out
           FROM (public.notification_logs n
             JOIN precall.experiments e ON ((e.id = n.experiment_id)))
          WHERE ((n.call_id = c.id) AND (n.experiment_id IS NOT NULL))
          ORDER BY n.created_at DESC
         LIMIT 1) x ON (true))
  WHERE ((c.status)::text = ANY ((ARRAY['answered'::character varying, 'no_answer'::character varying, 'failed'::character varying])::text[]));


--
-- Name: call_jobs; Type: TABLE; Schema: precall; Owner: -
--

CREATE TABLE precall.call_jobs (
    call_id uuid NOT NULL,
    user_id uuid NOT NULL,
    due_at timestamp with time zone NOT NULL,
    status text DEFAULT 'queued'::text NOT NULL,
    reason text,
    lease_owner text,
    lease_expires_at timestamp with time zone,
    attempts integer DEFAULT 0 NOT NULL,
    fired_at timestamp with time zone,
    outcome text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    reason_code text,
    CONSTRAINT call_jobs_status_check CHECK ((status = ANY (ARRAY['queued'::text, 'firing'::text, 'fired'::text, 'failed'::text, 'cancelled'::text, 'expired'::text])))
);


--
-- Name: devices; Type: TABLE; Schema: precall; Owner: -
--

CREATE TABLE precall.devices (
    id bigint NOT NULL,
    user_id uuid NOT NULL,
    fcm_token text NOT NULL,
    platform text,
    push_enabled boolean DEFAULT true NOT NULL,
    disabled_reason text,
    last_seen_at timestamp with time zone DEFAULT now() NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: devices_id_seq; Type: SEQUENCE; Schema: precall; Owner: -
--

ALTER TABLE precall.devices ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME precall.devices_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: experiment_allocations; Type: TABLE; Schema: precall; Owner: -
--

CREATE TABLE precall.experiment_allocations (
    id bigint NOT NULL,
    experiment_id bigint NOT NULL,
    at timestamp with time zone DEFAULT now() NOT NULL,
    shares jsonb NOT NULL,
    p_best jsonb
);


--
-- Name: experiment_allocations_id_seq; Type: SEQUENCE; Schema: precall; Owner: -
--

ALTER TABLE precall.experiment_allocations ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME precall.experiment_allocations_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: experiment_arms; Type: TABLE; Schema: precall; Owner: -
--

CREATE TABLE precall.experiment_arms (
    experiment_id bigint NOT NULL,
    name text NOT NULL,
    "position" integer NOT NULL,
    share numeric(6,5) NOT NULL,
    lead_min integer,
    channel text,
    variant text,
    no_preview boolean DEFAULT false NOT NULL,
    CONSTRAINT experiment_arms_channel_check CHECK ((channel = ANY (ARRAY['push'::text, 'sms'::text, 'push_and_sms'::text]))),
    CONSTRAINT experiment_arms_lead_min_check CHECK (((lead_min >= 1) AND (lead_min <= 60))),
    CONSTRAINT experiment_arms_name_check CHECK ((name ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'::text)),
    CONSTRAINT experiment_arms_position_check CHECK (("position" >= 0)),
    CONSTRAINT experiment_arms_share_check CHECK (((share > (0)::numeric) AND (share <= (1)::numeric))),
    CONSTRAINT experiment_arms_variant_check CHECK ((variant ~ '^[a-z0-9][a-z0-9_-]{0,62}$'::text))
);


--
-- Name: experiment_assignments; Type: TABLE; Schema: precall; Owner: -
--

CREATE TABLE precall.experiment_assignments (
    experiment_id bigint NOT NULL,
    user_id uuid NOT NULL,
    arm text NOT NULL,
    assigned_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: experiment_calls; Type: VIEW; Schema: precall; Owner: -
--

CREATE VIEW precall.experiment_calls AS
 SELECT DISTINCT ON (n.experiment_id, n.call_id) n.experiment_id,
    n.arm,
    n.call_id,
    n.user_id,
    c.status,
    (((c.status)::text = ANY ((ARRAY['answered'::character varying, 'no_answer'::character varying, 'failed'::character varying])::text[])) OR (((c.status)::text = 'cancelled'::text) AND (act.action = 'skip'::text))) AS reached,
    (((c.status)::text = 'answered'::text) AND (o.answered_by IS DISTINCT FROM 'machine'::text)) AS answered
   FROM (((public.notification_logs n
     JOIN public.scheduled_calls c ON ((c.id = n.call_id)))
     LEFT JOIN precall.call_outcomes o ON ((o.call_id = c.id)))
     LEFT JOIN precall.call_actions act ON (((act.call_id = c.id) AND (act.outcome = 'applied'::text))))
  WHERE ((n.experiment_id IS NOT NULL) AND ((n.type)::text = ANY ((ARRAY['preview_push'::character varying, 'preview_sms'::character varying])::text[])))
  ORDER BY n.experiment_id, n.call_id, n.created_at DESC;


--
-- Name: experiment_report; Type: VIEW; Schema: precall; Owner: -
--

CREATE VIEW precall.experiment_report AS
 WITH per_arm AS (
         SELECT a.experiment_id,
            a.name AS arm,
            a."position",
            ( SELECT count(*) AS count
                   FROM precall.experiment_assignments s
                  WHERE ((s.experiment_id = a.experiment_id) AND (s.arm = a.name))) AS users,
            count(ec.call_id) FILTER (WHERE ec.reached) AS calls,
            count(ec.call_id) FILTER (WHERE (ec.reached AND ec.answered)) AS answered
           FROM (precall.experiment_arms a
             LEFT JOIN precall.experiment_calls ec ON (((ec.experiment_id = a.experiment_id) AND (ec.arm = a.name))))
          GROUP BY a.experiment_id, a.name, a."position"
        ), previews AS (
         SELECT n.experiment_id,
            n.arm,
            count(*) FILTER (WHERE (((n.channel)::text = 'push'::text) AND (n.delivered_at IS NOT NULL))) AS receipts,
            count(*) FILTER (WHERE (n.opened_at IS NOT NULL)) AS opens,
            count(*) FILTER (WHERE n.late_receipt) AS late_receipts,
            count(DISTINCT n.user_id) FILTER (WHERE (n.reason ~~ '%arm_channel_not_used%'::text)) AS own_rule_users
           FROM public.notification_logs n
          WHERE (n.experiment_id IS NOT NULL)
          GROUP BY n.experiment_id, n.arm
        ), spend AS (
         SELECT x.experiment_id,
            x.arm,
            jsonb_object_agg(x.cost_currency, x.amount) AS sms_spend
           FROM ( SELECT n.experiment_id,
                    n.arm,
                    (n.cost_currency)::text AS cost_currency,
                    sum(n.cost_estimate) AS amount
                   FROM public.notification_logs n
                  WHERE ((n.experiment_id IS NOT NULL) AND (n.sent_at IS NOT NULL) AND (n.cost_currency IS NOT NULL))
                  GROUP BY n.experiment_id, n.arm, ((n.cost_currency)::text)) x
          GROUP BY x.experiment_id, x.arm
        ), sms_by_call AS (
         SELECT p.experiment_id,
            p.arm,
            (f.cost_currency)::text AS cost_currency,
            sum(f.cost_estimate) AS amount
           FROM (public.notification_logs f
             JOIN public.notification_logs p ON ((p.id = f.parent_id)))
          WHERE ((p.experiment_id IS NOT NULL) AND (f.sent_at IS NOT NULL) AND (f.cost_currency IS NOT NULL))
          GROUP BY p.experiment_id, p.arm, ((f.cost_currency)::text)
        )
 SELECT e.name AS experiment,
    pa.arm,
    pa."position",
    pa.users,
    pa.calls,
    pa.answered,
    ((pa.answered)::double precision / (NULLIF(pa.calls, 0))::double precision) AS answer_rate,
    w.lo AS ci_lo,
    w.hi AS ci_hi,
    vh.diff AS vs_holdout_diff,
    vh.lo AS vs_holdout_lo,
    vh.hi AS vs_holdout_hi,
    precall.proportions_p(pa.answered, pa.calls, h.answered, h.calls) AS vs_holdout_p,
    vc.diff AS vs_control_diff,
    vc.lo AS vs_control_lo,
    vc.hi AS vs_control_hi,
    precall.proportions_p(pa.answered, pa.calls, c.answered, c.calls) AS vs_control_p,
    (COALESCE(sp.sms_spend, '{}'::jsonb) || COALESCE(( SELECT jsonb_object_agg(s.cost_currency, (s.amount + COALESCE(((sp.sms_spend ->> s.cost_currency))::numeric, (0)::numeric))) AS jsonb_object_agg
           FROM sms_by_call s
          WHERE ((s.experiment_id = pa.experiment_id) AND (s.arm = pa.arm))), '{}'::jsonb)) AS sms_spend,
    COALESCE(pv.receipts, (0)::bigint) AS receipts,
    COALESCE(pv.opens, (0)::bigint) AS opens,
    COALESCE(pv.late_receipts, (0)::bigint) AS late_receipts,
    COALESCE(pv.own_rule_users, (0)::bigint) AS own_rule_users
   FROM ((((((((per_arm pa
     JOIN precall.experiments e ON ((e.id = pa.experiment_id)))
     LEFT JOIN per_arm h ON (((h.experiment_id = pa.experiment_id) AND (h."position" = 0) AND (pa."position" <> 0))))
     LEFT JOIN per_arm c ON (((c.experiment_id = pa.experiment_id) AND (c."position" = 1) AND (pa."position" <> 1))))
     LEFT JOIN previews pv ON (((pv.experiment_id = pa.experiment_id) AND (pv.arm = pa.arm))))
     LEFT JOIN spend sp ON (((sp.experiment_id = pa.experiment_id) AND (sp.arm = pa.arm))))
     LEFT JOIN LATERAL precall.wilson_interval(pa.answered, pa.calls) w(lo, hi) ON (true))
     LEFT JOIN LATERAL precall.newcombe_interval(pa.answered, pa.calls, h.answered, h.calls) vh(diff, lo, hi) ON ((h.arm IS NOT NULL)))
     LEFT JOIN LATERAL precall.newcombe_interval(pa.answered, pa.calls, c.answered, c.calls) vc(diff, lo, hi) ON ((c.arm IS NOT NULL)));


--
-- Name: experiments_id_seq; Type: SEQUENCE; Schema: precall; Owner: -
--

ALTER TABLE precall.experiments ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME precall.experiments_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: kpi_targets; Type: TABLE; Schema: precall; Owner: -
--

CREATE TABLE precall.kpi_targets (
    kpi text NOT NULL,
    target numeric NOT NULL,
    higher_is_better boolean NOT NULL,
    baseline numeric
);


--
-- Name: notification_facts; Type: VIEW; Schema: precall; Owner: -
--

CREATE VIEW precall.notification_facts AS
 SELECT n.id,
    n.user_id,
    n.call_id,
    n.type,
    n.channel,
    n.status,
    n.created_at,
    ((n.created_at AT TIME ZONE 'UTC'::text))::date AS day,
    u.locale,
    COALESCE(u.platform, 'none'::text) AS platform,
    (n.sent_at IS NOT NULL) AS sent,
    (n.delivered_at IS NOT NULL) AS delivered,
    (n.opened_at IS NOT NULL) AS opened,
    n.late_receipt,
        CASE
            WHEN ((n.manual_by IS NULL) AND (n.attempted_at IS NOT NULL) AND (n.send_at IS NOT NULL)) THEN (EXTRACT(epoch FROM (n.attempted_at - n.send_at)) * (1000)::numeric)
            ELSE NULL::numeric
        END AS lateness_ms,
        CASE
            WHEN (((n.channel)::text = 'push'::text) AND (n.delivered_at IS NOT NULL) AND (n.sent_at IS NOT NULL)) THEN (EXTRACT(epoch FROM (n.delivered_at - n.sent_at)) * (1000)::numeric)
            ELSE NULL::numeric
        END AS time_to_receipt_ms,
        CASE
            WHEN (n.sent_at IS NOT NULL) THEN n.cost_estimate
            ELSE NULL::numeric
        END AS cost,
    n.cost_currency,
    n.experiment_id,
    n.arm
   FROM (public.notification_logs n
     JOIN public.users u ON ((u.id = n.user_id)));


--
-- Name: push_deliveries; Type: TABLE; Schema: precall; Owner: -
--

CREATE TABLE precall.push_deliveries (
    notification_id uuid NOT NULL,
    device_id bigint NOT NULL,
    platform text,
    status text NOT NULL,
    provider_id text,
    error text,
    attempted_at timestamp with time zone,
    sent_at timestamp with time zone,
    delivered_at timestamp with time zone,
    opened_at timestamp with time zone,
    CONSTRAINT push_deliveries_status_check CHECK ((status = ANY (ARRAY['sent'::text, 'failed'::text, 'dead'::text])))
);


--
-- Name: schema_migrations; Type: TABLE; Schema: precall; Owner: -
--

CREATE TABLE precall.schema_migrations (
    version integer NOT NULL,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: schema_repeatables; Type: TABLE; Schema: precall; Owner: -
--

CREATE TABLE precall.schema_repeatables (
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: sms_inbound; Type: TABLE; Schema: precall; Owner: -
--

CREATE TABLE precall.sms_inbound (
    message_sid text NOT NULL,
    from_number text NOT NULL,
    body text NOT NULL,
    action text,
    users_changed integer DEFAULT 0 NOT NULL,
    received_at timestamp with time zone DEFAULT now() NOT NULL,
    call_action_id uuid,
    reply text,
    reply_body text,
    reply_encoding character varying(8),
    reply_segments integer,
    reply_cost numeric(10,4),
    reply_currency character(3),
    CONSTRAINT sms_inbound_action_check CHECK ((action = ANY (ARRAY['opt_out'::text, 'opt_in'::text]))),
    CONSTRAINT sms_inbound_reply_check CHECK ((reply = ANY (ARRAY['confirmation'::text, 'refused'::text, 'help'::text])))
);


--
-- Name: sms_spend; Type: TABLE; Schema: precall; Owner: -
--

CREATE TABLE precall.sms_spend (
    day date NOT NULL,
    currency character(3) NOT NULL,
    amount numeric(12,4) DEFAULT 0 NOT NULL,
    messages integer DEFAULT 0 NOT NULL
);


--
-- Name: sms_status_events; Type: TABLE; Schema: precall; Owner: -
--

CREATE TABLE precall.sms_status_events (
    message_sid text NOT NULL,
    status text NOT NULL,
    error_code integer,
    received_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    done_at timestamp with time zone,
    applied boolean DEFAULT false NOT NULL
);


--
-- Name: time_zones; Type: TABLE; Schema: precall; Owner: -
--

CREATE TABLE precall.time_zones (
    name text NOT NULL
);


--
-- Name: coach_personas; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.coach_personas (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    name text NOT NULL,
    CONSTRAINT coach_personas_name_len CHECK (((char_length(name) >= 1) AND (char_length(name) <= 24)))
);


--
-- Name: call_actions call_actions_pkey; Type: CONSTRAINT; Schema: precall; Owner: -
--

ALTER TABLE ONLY precall.call_actions
    ADD CONSTRAINT call_actions_pkey PRIMARY KEY (id);


--
-- Name: call_events call_events_pkey; Type: CONSTRAINT; Schema: precall; Owner: -
--

ALTER TABLE ONLY precall.call_events
    ADD CONSTRAINT call_events_pkey PRIMARY KEY (id);


--
-- Name: call_jobs call_jobs_pkey; Type: CONSTRAINT; Schema: precall; Owner: -
--

ALTER TABLE ONLY precall.call_jobs
    ADD CONSTRAINT call_jobs_pkey PRIMARY KEY (call_id);


--
-- Name: call_outcomes call_outcomes_pkey; Type: CONSTRAINT; Schema: precall; Owner: -
--

ALTER TABLE ONLY precall.call_outcomes
    ADD CONSTRAINT call_outcomes_pkey PRIMARY KEY (call_id);


--
-- Name: devices devices_fcm_token_key; Type: CONSTRAINT; Schema: precall; Owner: -
--

ALTER TABLE ONLY precall.devices
    ADD CONSTRAINT devices_fcm_token_key UNIQUE (fcm_token);


--
-- Name: devices devices_pkey; Type: CONSTRAINT; Schema: precall; Owner: -
--

ALTER TABLE ONLY precall.devices
    ADD CONSTRAINT devices_pkey PRIMARY KEY (id);


--
-- Name: dispatchers dispatchers_pkey; Type: CONSTRAINT; Schema: precall; Owner: -
--

ALTER TABLE ONLY precall.dispatchers
    ADD CONSTRAINT dispatchers_pkey PRIMARY KEY (name);


--
-- Name: experiment_allocations experiment_allocations_pkey; Type: CONSTRAINT; Schema: precall; Owner: -
--

ALTER TABLE ONLY precall.experiment_allocations
    ADD CONSTRAINT experiment_allocations_pkey PRIMARY KEY (id);


--
-- Name: experiment_arms experiment_arms_experiment_id_position_key; Type: CONSTRAINT; Schema: precall; Owner: -
--

ALTER TABLE ONLY precall.experiment_arms
    ADD CONSTRAINT experiment_arms_experiment_id_position_key UNIQUE (experiment_id, "position");


--
-- Name: experiment_arms experiment_arms_pkey; Type: CONSTRAINT; Schema: precall; Owner: -
--

ALTER TABLE ONLY precall.experiment_arms
    ADD CONSTRAINT experiment_arms_pkey PRIMARY KEY (experiment_id, name);


--
-- Name: experiment_assignments experiment_assignments_pkey; Type: CONSTRAINT; Schema: precall; Owner: -
--

ALTER TABLE ONLY precall.experiment_assignments
    ADD CONSTRAINT experiment_assignments_pkey PRIMARY KEY (experiment_id, user_id);


--
-- Name: experiments experiments_name_key; Type: CONSTRAINT; Schema: precall; Owner: -
--

ALTER TABLE ONLY precall.experiments
    ADD CONSTRAINT experiments_name_key UNIQUE (name);


--
-- Name: experiments experiments_pkey; Type: CONSTRAINT; Schema: precall; Owner: -
--

ALTER TABLE ONLY precall.experiments
    ADD CONSTRAINT experiments_pkey PRIMARY KEY (id);


--
-- Name: kpi_targets kpi_targets_pkey; Type: CONSTRAINT; Schema: precall; Owner: -
--

ALTER TABLE ONLY precall.kpi_targets
    ADD CONSTRAINT kpi_targets_pkey PRIMARY KEY (kpi);


--
-- Name: push_deliveries push_deliveries_pkey; Type: CONSTRAINT; Schema: precall; Owner: -
--

ALTER TABLE ONLY precall.push_deliveries
    ADD CONSTRAINT push_deliveries_pkey PRIMARY KEY (notification_id, device_id);


--
-- Name: schema_migrations schema_migrations_pkey; Type: CONSTRAINT; Schema: precall; Owner: -
--

ALTER TABLE ONLY precall.schema_migrations
    ADD CONSTRAINT schema_migrations_pkey PRIMARY KEY (version);


--
-- Name: schema_repeatables schema_repeatables_pkey; Type: CONSTRAINT; Schema: precall; Owner: -
--

ALTER TABLE ONLY precall.schema_repeatables
    ADD CONSTRAINT schema_repeatables_pkey PRIMARY KEY (name);


--
-- Name: settings settings_pkey; Type: CONSTRAINT; Schema: precall; Owner: -
--

ALTER TABLE ONLY precall.settings
    ADD CONSTRAINT settings_pkey PRIMARY KEY (singleton);


--
-- Name: sms_inbound sms_inbound_pkey; Type: CONSTRAINT; Schema: precall; Owner: -
--

ALTER TABLE ONLY precall.sms_inbound
    ADD CONSTRAINT sms_inbound_pkey PRIMARY KEY (message_sid);


--
-- Name: sms_spend sms_spend_pkey; Type: CONSTRAINT; Schema: precall; Owner: -
--

ALTER TABLE ONLY precall.sms_spend
    ADD CONSTRAINT sms_spend_pkey PRIMARY KEY (day, currency);


--
-- Name: sms_status_events sms_status_events_pkey; Type: CONSTRAINT; Schema: precall; Owner: -
--

ALTER TABLE ONLY precall.sms_status_events
    ADD CONSTRAINT sms_status_events_pkey PRIMARY KEY (message_sid, status);


--
-- Name: time_zones time_zones_pkey; Type: CONSTRAINT; Schema: precall; Owner: -
--

ALTER TABLE ONLY precall.time_zones
    ADD CONSTRAINT time_zones_pkey PRIMARY KEY (name);


--
-- Name: coach_personas coach_personas_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.coach_personas
    ADD CONSTRAINT coach_personas_pkey PRIMARY KEY (id);


--
-- Name: notification_logs notification_logs_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.notification_logs
    ADD CONSTRAINT notification_logs_pkey PRIMARY KEY (id);


--
-- Name: scheduled_calls scheduled_calls_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.scheduled_calls
    ADD CONSTRAINT scheduled_calls_pkey PRIMARY KEY (id);


--
-- Name: users users_notification_pref; Type: CHECK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE public.users
    ADD CONSTRAINT users_notification_pref CHECK (((notification_pref)::text = ANY ((ARRAY['push_only'::character varying, 'sms_only'::character varying, 'push_and_sms'::character varying])::text[]))) NOT VALID;


--
-- Name: users users_phone_e164; Type: CHECK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE public.users
    ADD CONSTRAINT users_phone_e164 CHECK ((phone_number ~ '^\+[1-9][0-9]{6,14}$'::text)) NOT VALID;


--
-- Name: users users_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.users
    ADD CONSTRAINT users_pkey PRIMARY KEY (id);


--
-- Name: users users_platform; Type: CHECK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE public.users
    ADD CONSTRAINT users_platform CHECK ((platform = ANY (ARRAY['ios'::text, 'android'::text]))) NOT VALID;


--
-- Name: call_actions_at_idx; Type: INDEX; Schema: precall; Owner: -
--

CREATE INDEX call_actions_at_idx ON precall.call_actions USING btree (at);


--
-- Name: call_actions_notification_idx; Type: INDEX; Schema: precall; Owner: -
--

CREATE INDEX call_actions_notification_idx ON precall.call_actions USING btree (notification_id);


--
-- Name: call_actions_once_per_call; Type: INDEX; Schema: precall; Owner: -
--

CREATE UNIQUE INDEX call_actions_once_per_call ON precall.call_actions USING btree (call_id) WHERE (outcome = 'applied'::text);


--
-- Name: call_actions_user_idx; Type: INDEX; Schema: precall; Owner: -
--

CREATE INDEX call_actions_user_idx ON precall.call_actions USING btree (user_id, at DESC);


--
-- Name: call_events_created_idx; Type: INDEX; Schema: precall; Owner: -
--

CREATE INDEX call_events_created_idx ON precall.call_events USING btree (created_at);


--
-- Name: call_events_undelivered_idx; Type: INDEX; Schema: precall; Owner: -
--

CREATE INDEX call_events_undelivered_idx ON precall.call_events USING btree (call_id, id) WHERE (status = ANY (ARRAY['queued'::text, 'firing'::text]));


--
-- Name: call_jobs_active_due_idx; Type: INDEX; Schema: precall; Owner: -
--

CREATE INDEX call_jobs_active_due_idx ON precall.call_jobs USING btree (due_at) WHERE (status = ANY (ARRAY['queued'::text, 'firing'::text]));


--
-- Name: call_jobs_firing_lease_idx; Type: INDEX; Schema: precall; Owner: -
--

CREATE INDEX call_jobs_firing_lease_idx ON precall.call_jobs USING btree (lease_expires_at) WHERE (status = 'firing'::text);


--
-- Name: devices_last_seen_idx; Type: INDEX; Schema: precall; Owner: -
--

CREATE INDEX devices_last_seen_idx ON precall.devices USING btree (last_seen_at);


--
-- Name: devices_user_idx; Type: INDEX; Schema: precall; Owner: -
--

CREATE INDEX devices_user_idx ON precall.devices USING btree (user_id, last_seen_at DESC);


--
-- Name: experiment_allocations_experiment_idx; Type: INDEX; Schema: precall; Owner: -
--

CREATE INDEX experiment_allocations_experiment_idx ON precall.experiment_allocations USING btree (experiment_id, at);


--
-- Name: experiment_assignments_user_idx; Type: INDEX; Schema: precall; Owner: -
--

CREATE INDEX experiment_assignments_user_idx ON precall.experiment_assignments USING btree (user_id);


--
-- Name: sms_inbound_from_idx; Type: INDEX; Schema: precall; Owner: -
--

CREATE INDEX sms_inbound_from_idx ON precall.sms_inbound USING btree (from_number, received_at);


--
-- Name: sms_inbound_received_idx; Type: INDEX; Schema: precall; Owner: -
--

CREATE INDEX sms_inbound_received_idx ON precall.sms_inbound USING btree (received_at);


--
-- Name: idx_notif_call; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX idx_notif_call ON public.notification_logs USING btree (call_id);


--
-- Name: idx_notif_user; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX idx_notif_user ON public.notification_logs USING btree (user_id, created_at DESC);


--
-- Name: notification_logs_active_send_at_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX notification_logs_active_send_at_idx ON public.notification_logs USING btree (send_at) WHERE ((status)::text = ANY ((ARRAY['queued'::character varying, 'sending'::character varying])::text[]));


--
-- Name: notification_logs_created_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX notification_logs_created_idx ON public.notification_logs USING btree (created_at);


--
-- Name: notification_logs_experiment_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX notification_logs_experiment_idx ON public.notification_logs USING btree (experiment_id, arm) WHERE (experiment_id IS NOT NULL);


--
-- Name: notification_logs_one_active_per_call; Type: INDEX; Schema: public; Owner: -
--

CREATE UNIQUE INDEX notification_logs_one_active_per_call ON public.notification_logs USING btree (call_id, (((type)::text = 'fallback_sms'::text))) WHERE (((status)::text = ANY ((ARRAY['queued'::character varying, 'sending'::character varying])::text[])) AND (NOT resend));


--
-- Name: notification_logs_one_sent_per_call_time; Type: INDEX; Schema: public; Owner: -
--

CREATE UNIQUE INDEX notification_logs_one_sent_per_call_time ON public.notification_logs USING btree (call_id, (((type)::text = 'fallback_sms'::text)), planned_for) WHERE (((status)::text = ANY ((ARRAY['sent'::character varying, 'delivered'::character varying, 'opened'::character varying])::text[])) AND (NOT resend));


--
-- Name: notification_logs_parent_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX notification_logs_parent_idx ON public.notification_logs USING btree (parent_id) WHERE (parent_id IS NOT NULL);


--
-- Name: notification_logs_provider_id_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX notification_logs_provider_id_idx ON public.notification_logs USING btree (provider_id) WHERE (provider_id IS NOT NULL);


--
-- Name: notification_logs_sending_lease_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX notification_logs_sending_lease_idx ON public.notification_logs USING btree (lease_expires_at) WHERE ((status)::text = 'sending'::text);


--
-- Name: scheduled_calls_pending_due_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX scheduled_calls_pending_due_idx ON public.scheduled_calls USING btree (scheduled_at) WHERE ((status)::text = 'pending'::text);


--
-- Name: scheduled_calls_user_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX scheduled_calls_user_idx ON public.scheduled_calls USING btree (user_id, scheduled_at);


--
-- Name: users_coach_persona_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX users_coach_persona_idx ON public.users USING btree (coach_persona_id) WHERE (coach_persona_id IS NOT NULL);


--
-- Name: users_fcm_token_key; Type: INDEX; Schema: public; Owner: -
--

CREATE UNIQUE INDEX users_fcm_token_key ON public.users USING btree (fcm_token) WHERE (fcm_token IS NOT NULL);


--
-- Name: users_notification_lead_min_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX users_notification_lead_min_idx ON public.users USING btree (notification_lead_min);


--
-- Name: users_phone_number_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX users_phone_number_idx ON public.users USING btree (phone_number) WHERE (phone_number IS NOT NULL);


--
-- Name: devices _100_summary; Type: TRIGGER; Schema: precall; Owner: -
--

CREATE TRIGGER _100_summary AFTER INSERT OR DELETE OR UPDATE ON precall.devices FOR EACH ROW EXECUTE FUNCTION precall.tg_devices__summary();


--
-- Name: call_jobs _300_reason_code_on_insert; Type: TRIGGER; Schema: precall; Owner: -
--

CREATE TRIGGER _300_reason_code_on_insert BEFORE INSERT ON precall.call_jobs FOR EACH ROW WHEN ((new.reason IS NOT NULL)) EXECUTE FUNCTION precall.tg_reason_code();


--
-- Name: call_jobs _300_reason_code_on_update; Type: TRIGGER; Schema: precall; Owner: -
--

CREATE TRIGGER _300_reason_code_on_update BEFORE UPDATE OF reason ON precall.call_jobs FOR EACH ROW WHEN ((new.reason IS DISTINCT FROM old.reason)) EXECUTE FUNCTION precall.tg_reason_code();


--
-- Name: notification_logs _300_reason_code_on_insert; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER _300_reason_code_on_insert BEFORE INSERT ON public.notification_logs FOR EACH ROW WHEN ((new.reason IS NOT NULL)) EXECUTE FUNCTION precall.tg_reason_code();


--
-- Name: notification_logs _300_reason_code_on_update; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER _300_reason_code_on_update BEFORE UPDATE OF reason ON public.notification_logs FOR EACH ROW WHEN ((new.reason IS DISTINCT FROM old.reason)) EXECUTE FUNCTION precall.tg_reason_code();


--
-- Name: users _300_timezone_is_known; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER _300_timezone_is_known BEFORE INSERT OR UPDATE OF timezone ON public.users FOR EACH ROW EXECUTE FUNCTION precall.tg_users__timezone_is_known();


--
-- Name: users _310_lead_within_policy; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER _310_lead_within_policy BEFORE INSERT OR UPDATE OF notification_lead_min ON public.users FOR EACH ROW WHEN ((new.notification_lead_min IS NOT NULL)) EXECUTE FUNCTION precall.tg_users__lead_within_policy();


--
-- Name: users _320_new_number_consents; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER _320_new_number_consents BEFORE UPDATE OF phone_number ON public.users FOR EACH ROW WHEN (((new.phone_number IS DISTINCT FROM old.phone_number) AND new.sms_opted_out)) EXECUTE FUNCTION precall.tg_users__new_number_consents();


--
-- Name: scheduled_calls _400_preview_sent_follows_time; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER _400_preview_sent_follows_time BEFORE UPDATE OF scheduled_at ON public.scheduled_calls FOR EACH ROW WHEN ((old.scheduled_at IS DISTINCT FROM new.scheduled_at)) EXECUTE FUNCTION precall.tg_scheduled_calls__before_update();


--
-- Name: users _400_token_moves; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER _400_token_moves BEFORE INSERT OR UPDATE OF fcm_token ON public.users FOR EACH ROW WHEN ((new.fcm_token IS NOT NULL)) EXECUTE FUNCTION precall.tg_users__token_moves();


--
-- Name: users _410_devices_follow; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER _410_devices_follow AFTER INSERT OR UPDATE OF fcm_token, platform, push_enabled ON public.users FOR EACH ROW EXECUTE FUNCTION precall.tg_users__devices_follow();


--
-- Name: notification_logs _500_apply_early_sms_status; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER _500_apply_early_sms_status AFTER UPDATE OF provider_id ON public.notification_logs FOR EACH ROW WHEN ((((new.channel)::text = 'sms'::text) AND ((new.status)::text = 'sent'::text) AND (new.provider_id IS NOT NULL) AND ((old.provider_id)::text IS DISTINCT FROM (new.provider_id)::text))) EXECUTE FUNCTION precall._apply_early_sms_status();


--
-- Name: scheduled_calls _500_plan_previews; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER _500_plan_previews AFTER INSERT ON public.scheduled_calls REFERENCING NEW TABLE AS new_calls FOR EACH STATEMENT EXECUTE FUNCTION precall.tg_scheduled_calls__after_insert();


--
-- Name: scheduled_calls _500_replan_previews; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER _500_replan_previews AFTER UPDATE OF scheduled_at, status ON public.scheduled_calls FOR EACH ROW WHEN (((old.scheduled_at IS DISTINCT FROM new.scheduled_at) OR ((old.status)::text IS DISTINCT FROM (new.status)::text))) EXECUTE FUNCTION precall.tg_scheduled_calls__after_update();


--
-- Name: users _500_replan_previews; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER _500_replan_previews AFTER UPDATE OF notification_lead_min, notification_pref ON public.users FOR EACH ROW WHEN (((old.notification_lead_min IS DISTINCT FROM new.notification_lead_min) OR ((old.notification_pref)::text IS DISTINCT FROM (new.notification_pref)::text))) EXECUTE FUNCTION precall.tg_users__after_update();


--
-- Name: scheduled_calls _600_call_events; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER _600_call_events AFTER UPDATE OF scheduled_at, status ON public.scheduled_calls FOR EACH ROW WHEN (((old.scheduled_at IS DISTINCT FROM new.scheduled_at) OR ((old.status)::text IS DISTINCT FROM (new.status)::text))) EXECUTE FUNCTION precall.tg_scheduled_calls__events();


--
-- Name: call_jobs call_jobs_call_id_fkey; Type: FK CONSTRAINT; Schema: precall; Owner: -
--

ALTER TABLE ONLY precall.call_jobs
    ADD CONSTRAINT call_jobs_call_id_fkey FOREIGN KEY (call_id) REFERENCES public.scheduled_calls(id) ON DELETE CASCADE;


--
-- Name: devices devices_user_id_fkey; Type: FK CONSTRAINT; Schema: precall; Owner: -
--

ALTER TABLE ONLY precall.devices
    ADD CONSTRAINT devices_user_id_fkey FOREIGN KEY (user_id) REFERENCES public.users(id) ON DELETE CASCADE;


--
-- Name: experiment_allocations experiment_allocations_experiment_id_fkey; Type: FK CONSTRAINT; Schema: precall; Owner: -
--

ALTER TABLE ONLY precall.experiment_allocations
    ADD CONSTRAINT experiment_allocations_experiment_id_fkey FOREIGN KEY (experiment_id) REFERENCES precall.experiments(id) ON DELETE CASCADE;


--
-- Name: experiment_arms experiment_arms_experiment_id_fkey; Type: FK CONSTRAINT; Schema: precall; Owner: -
--

ALTER TABLE ONLY precall.experiment_arms
    ADD CONSTRAINT experiment_arms_experiment_id_fkey FOREIGN KEY (experiment_id) REFERENCES precall.experiments(id) ON DELETE CASCADE;


--
-- Name: experiment_assignments experiment_assignments_experiment_id_fkey; Type: FK CONSTRAINT; Schema: precall; Owner: -
--

ALTER TABLE ONLY precall.experiment_assignments
    ADD CONSTRAINT experiment_assignments_experiment_id_fkey FOREIGN KEY (experiment_id) REFERENCES precall.experiments(id) ON DELETE CASCADE;


--
-- Name: push_deliveries push_deliveries_notification_id_fkey; Type: FK CONSTRAINT; Schema: precall; Owner: -
--

ALTER TABLE ONLY precall.push_deliveries
    ADD CONSTRAINT push_deliveries_notification_id_fkey FOREIGN KEY (notification_id) REFERENCES public.notification_logs(id) ON DELETE CASCADE;


--
-- Name: notification_logs notification_logs_call_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.notification_logs
    ADD CONSTRAINT notification_logs_call_id_fkey FOREIGN KEY (call_id) REFERENCES public.scheduled_calls(id) ON DELETE CASCADE;


--
-- Name: notification_logs notification_logs_parent_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.notification_logs
    ADD CONSTRAINT notification_logs_parent_id_fkey FOREIGN KEY (parent_id) REFERENCES public.notification_logs(id) ON DELETE SET NULL;


--
-- Name: notification_logs notification_logs_user_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.notification_logs
    ADD CONSTRAINT notification_logs_user_id_fkey FOREIGN KEY (user_id) REFERENCES public.users(id) ON DELETE CASCADE;


--
-- Name: scheduled_calls scheduled_calls_user_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.scheduled_calls
    ADD CONSTRAINT scheduled_calls_user_id_fkey FOREIGN KEY (user_id) REFERENCES public.users(id) ON DELETE CASCADE;


--
-- Name: users users_coach_persona_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.users
    ADD CONSTRAINT users_coach_persona_id_fkey FOREIGN KEY (coach_persona_id) REFERENCES public.coach_personas(id) ON DELETE SET NULL;


--
-- PostgreSQL database dump complete
--

\unrestrict precall

