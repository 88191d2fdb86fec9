-- What arrives from outside: push receipts from the app, Twilio status callbacks, the app's history.
--
-- The current definition of each object below; `precall db migrate` re-applies this file when it
-- changes (after the numbered migrations). Edit here, never in sql/migrations/.

-- The delivery receipt, as the dispatcher tests and DBAs call it (kept from 0004).
CREATE OR REPLACE FUNCTION precall.record_receipt(p_notification_id uuid, p_at timestamp with time zone DEFAULT clock_timestamp())
 RETURNS text
 LANGUAGE sql
AS $function$
    SELECT CASE r WHEN 'not_push' THEN 'unknown' WHEN 'not_sent' THEN 'unknown' ELSE r END
    FROM precall.record_push_receipt(p_notification_id, 'delivered', p_at) AS r
$function$;

-- Records a push receipt from the app ('delivered' or 'opened'; opened implies delivered) and
-- cancels a Path C fallback still waiting. Accepted while the dispatcher is still writing the
-- send back ('sending'): a fast device can answer before our own UPDATE lands. Returns
-- 'on_time', 'late' (the fallback SMS had left), 'duplicate', 'unknown', 'not_push' or 'not_sent'.
CREATE OR REPLACE FUNCTION precall.record_push_receipt(p_notification_id uuid, p_event text, p_at timestamp with time zone DEFAULT clock_timestamp(), p_user uuid DEFAULT NULL::uuid)
 RETURNS text
 LANGUAGE plpgsql
AS $function$
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
$function$;

-- Applies a Twilio status to its SMS row. Terminal states (delivered, undelivered, failed) win
-- over 'sent' whatever the order they arrive in, and the first terminal one stays.
-- 21610 (the user replied STOP) sets users.sms_opted_out. Returns false when no row has the SID yet.
CREATE OR REPLACE FUNCTION precall.apply_sms_status(p_sid text, p_status text, p_error_code integer, p_at timestamp with time zone)
 RETURNS boolean
 LANGUAGE plpgsql
AS $function$
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
$function$;

-- Records one Twilio status callback (idempotent on SID + status) and applies it when the SMS
-- row is known. Returns 'applied', 'pending' (no row with that SID yet) or 'duplicate'.
CREATE OR REPLACE FUNCTION precall.record_sms_status(p_sid text, p_status text, p_error_code integer DEFAULT NULL::integer, p_done_at timestamp with time zone DEFAULT NULL::timestamp with time zone)
 RETURNS text
 LANGUAGE plpgsql
AS $function$
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
$function$;

-- Applies callbacks that arrived before the dispatcher wrote the SID back, terminal ones last.
CREATE OR REPLACE FUNCTION precall._apply_early_sms_status()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
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
$function$;

-- The caller's notifications, newest first (what the history endpoint read before actions
-- existed; it now reads precall.history_entries).
CREATE OR REPLACE FUNCTION precall.notification_history(p_user uuid, p_limit integer DEFAULT 20, p_offset integer DEFAULT 0)
 RETURNS SETOF notification_logs
 LANGUAGE sql
 STABLE
AS $function$
    SELECT * FROM notification_logs
    WHERE user_id = p_user
    ORDER BY created_at DESC, id DESC
    LIMIT p_limit OFFSET p_offset
$function$;

-- The app's history: the caller's notifications and their actions on them (entry_type 'action':
-- type 'action', status and outcome the action's outcome, created_at when it was taken), newest
-- first. Each side reads at most p_limit + p_offset rows through its (user, time) index.
CREATE OR REPLACE FUNCTION precall.history_entries(p_user uuid, p_limit integer DEFAULT 20, p_offset integer DEFAULT 0)
 RETURNS TABLE(id uuid, call_id uuid, type text, channel text, status text, title text, body text, reason text, send_at timestamp with time zone, sent_at timestamp with time zone, delivered_at timestamp with time zone, opened_at timestamp with time zone, created_at timestamp with time zone, action text, outcome text, notification_id uuid)
 LANGUAGE sql
 STABLE
AS $function$
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
$function$;

CREATE OR REPLACE TRIGGER _500_apply_early_sms_status
    AFTER UPDATE OF provider_id ON public.notification_logs
    FOR EACH ROW
    WHEN ((((new.channel)::text = 'sms'::text) AND ((new.status)::text = 'sent'::text) AND (new.provider_id IS NOT NULL) AND ((old.provider_id)::text IS DISTINCT FROM (new.provider_id)::text)))
    EXECUTE FUNCTION precall._apply_early_sms_status();
