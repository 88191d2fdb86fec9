-- Actions on a preview (call now, snooze, skip), the SMS replies that carry them, the call
-- events the call system hears of (call.rescheduled, call.cancelled), and the call outcomes it
-- reports back.
--
-- The current definition of each object below; `precall db migrate` re-applies this file when it
-- changes (after the numbered migrations). Edit here, never in sql/migrations/.

-- Applies a person's action to the call of a preview, through the same UPDATE a DBA would run
-- (the scheduled_calls triggers re-plan, cancel and raise the call events). The call row is
-- locked first, so of two racing actions the second sees the first; the unique index
-- call_actions_once_per_call is the backstop. p_user (a bearer caller) must own the preview;
-- p_device (a receipt-token caller) is recorded, and the action also counts as that device's
-- receipt (delivered and opened). Every outcome but 'unknown' / 'not_sent' leaves an action row.
-- outcome: 'applied', 'already_acted' (found_* describe the action that was), 'not_pending',
-- 'too_late' (the call's time has come), 'unknown' (no such preview for this caller), 'not_sent'.
CREATE OR REPLACE FUNCTION precall.apply_call_action(p_notification_id uuid, p_action text, p_user uuid, p_device bigint DEFAULT NULL::bigint)
 RETURNS TABLE(outcome text, call_id uuid, user_id uuid, channel text, call_status text, scheduled_at timestamp with time zone, previous_scheduled_at timestamp with time zone, found_action text, found_at timestamp with time zone)
 LANGUAGE plpgsql
AS $function$
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
$function$;

-- The action an SMS reply asks for: 1 / NOW / MAINTENANT → call_now, 2 / LATER / PLUS TARD →
-- snooze, 3 / SKIP / ANNULER → skip. Case, accents, spaces and punctuation ignored ("Plus tard !",
-- " 2 "); NULL for anything else (STOP and START are consent keywords, precall.sms_consent_keyword).
CREATE OR REPLACE FUNCTION precall.sms_reply_action(p_body text)
 RETURNS text
 LANGUAGE sql
 IMMUTABLE
AS $function$
    SELECT CASE regexp_replace(upper(translate(left(coalesce(p_body, ''), 64),
                   'àâäáãéèêëíìîïóòôöõúùûüçñÀÂÄÁÃÉÈÊËÍÌÎÏÓÒÔÖÕÚÙÛÜÇÑ',
                   'aaaaaeeeeiiiiooooouuuucnAAAAAEEEEIIIIOOOOOUUUUCN')), '[^A-Z0-9]', '', 'g')
               WHEN '1' THEN 'call_now' WHEN 'NOW' THEN 'call_now' WHEN 'MAINTENANT' THEN 'call_now'
               WHEN '2' THEN 'snooze' WHEN 'LATER' THEN 'snooze' WHEN 'PLUSTARD' THEN 'snooze'
               WHEN '3' THEN 'skip' WHEN 'SKIP' THEN 'skip' WHEN 'ANNULER' THEN 'skip'
           END
$function$;

-- An inbound text, all of it: stored once per MessageSid with its consent keyword applied
-- (precall.record_inbound_sms), then, for a reply keyword, the action applied to the call of the
-- most recent SMS preview sent to that number in the last 30 minutes (a number shared by several
-- users: whoever got that SMS). What to answer, and in whose language:
-- kind 'duplicate' / 'opt_out' / 'opt_in' / 'ignored' (nothing to say: Twilio answers the consent
-- keywords; an unknown number, or help already sent to it today), 'action' (outcome as in
-- precall.apply_call_action), 'help' (not a keyword, or no call to apply it to; once per number
-- and UTC day).
CREATE OR REPLACE FUNCTION precall.receive_sms(p_sid text, p_from text, p_body text)
 RETURNS TABLE(kind text, action text, outcome text, user_id uuid, locale text, coach_name text, time_zone text, scheduled_at timestamp with time zone, call_status text)
 LANGUAGE plpgsql
AS $function$
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
$function$;

-- The answer sent back to an inbound text (TwiML <Message>): Twilio bills it as an SMS, so its
-- text, size and cost are kept on the inbound row and its cost counts in today's SMS spend.
CREATE OR REPLACE FUNCTION precall.record_sms_reply(p_sid text, p_reply text, p_body text, p_encoding text, p_segments integer, p_cost numeric, p_currency text)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
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
$function$;

-- The call system's report of a call (POST /api/v1/calls/{id}/outcome): sets scheduled_calls.status
-- (the triggers cancel whatever is unsent) and keeps who answered. Idempotent: the same report
-- again → 'duplicate'; a different one, or a call already finished another way → 'conflict'.
-- A call system that wrote scheduled_calls.status itself may still report the same status.
-- Returns 'recorded', 'duplicate', 'conflict' or 'unknown' (no such call).
CREATE OR REPLACE FUNCTION precall.record_call_outcome(p_call_id uuid, p_status text, p_answered_by text, p_at timestamp with time zone)
 RETURNS TABLE(result text, call_status text, answered_by text)
 LANGUAGE plpgsql
AS $function$
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
$function$;

-- A reschedule or cancel of a pending call becomes a call event (and NOTIFY precall_call_changed
-- at commit, for in-database listeners; it also wakes the dispatchers, which deliver the webhook).
-- The cause: an action's ('user_snoozed', 'user_call_now', 'user_skipped'), else NULL.
CREATE OR REPLACE FUNCTION precall.tg_scheduled_calls__events()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
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
$function$;

-- Claims undelivered call events, the oldest of each call only (a receiver hears a call's
-- events in the order they happened); a gone dispatcher's, or an expired lease, is taken over.
CREATE OR REPLACE FUNCTION precall.claim_call_events(p_worker text, p_limit integer, p_gone text[] DEFAULT NULL::text[])
 RETURNS TABLE(id bigint, call_id uuid, user_id uuid, event text, previous_scheduled_at timestamp with time zone, scheduled_at timestamp with time zone, cause text, created_at timestamp with time zone, attempts integer)
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
$function$;

-- Records a delivered (or refused) call event.
CREATE OR REPLACE FUNCTION precall.record_call_event(p_id bigint, p_worker text, p_ok boolean, p_outcome text)
 RETURNS boolean
 LANGUAGE sql
AS $function$
    UPDATE precall.call_events
    SET status = CASE WHEN p_ok THEN 'delivered' ELSE 'failed' END, outcome = p_outcome,
        delivered_at = CASE WHEN p_ok THEN clock_timestamp() END, lease_owner = NULL, lease_expires_at = NULL
    WHERE id = p_id AND status = 'firing' AND lease_owner = p_worker
    RETURNING true
$function$;

CREATE OR REPLACE TRIGGER _600_call_events
    AFTER UPDATE OF scheduled_at, status ON public.scheduled_calls
    FOR EACH ROW
    WHEN (((old.scheduled_at IS DISTINCT FROM new.scheduled_at) OR ((old.status)::text IS DISTINCT FROM (new.status)::text)))
    EXECUTE FUNCTION precall.tg_scheduled_calls__events();
