-- Devices: a user's push tokens (precall.devices), the users-row summary they keep, where a
-- preview push goes (one FCM message per device), per-device outcomes and receipts, SMS consent
-- from inbound texts, and the SMS budget.
--
-- The current definition of each object below; `precall db migrate` re-applies this file when it
-- changes (after the numbered migrations). Edit here, never in sql/migrations/.

-- users.fcm_token / platform / push_enabled summarise the user's devices: the most recently seen
-- enabled device (or, with none enabled, the most recent one) and whether any device can take a
-- push. The channel rule and the planner read the summary (precall.guess_preview_type).
-- precall.devices_sync is 'on' while the summary is written, so the users trigger below does
-- not write it back to the devices.
CREATE OR REPLACE FUNCTION precall.sync_push_summary(p_user uuid)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
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
$function$;

-- Adds or refreshes a device (last_seen_at = now); a token held by another user moves to p_user.
CREATE OR REPLACE FUNCTION precall.upsert_device(p_user uuid, p_token text, p_platform text, p_push_enabled boolean, p_disabled_reason text DEFAULT 'app')
 RETURNS void
 LANGUAGE sql
AS $function$
    INSERT INTO precall.devices AS d (user_id, fcm_token, platform, push_enabled, disabled_reason, last_seen_at)
    VALUES (p_user, p_token, p_platform, p_push_enabled, CASE WHEN NOT p_push_enabled THEN p_disabled_reason END, now())
    ON CONFLICT (fcm_token) DO UPDATE
        SET user_id = EXCLUDED.user_id, platform = coalesce(EXCLUDED.platform, d.platform),
            push_enabled = EXCLUDED.push_enabled, disabled_reason = EXCLUDED.disabled_reason,
            last_seen_at = EXCLUDED.last_seen_at
$function$;

-- The API's register-device: adds or refreshes the caller's device, leaves their other devices
-- alone, moves a token another user held. Returns false for an unknown user. Two users
-- registering one token at once: the token's unique index orders them, the last to commit holds
-- it (two registrations crossing over each other's tokens can deadlock: retried).
CREATE OR REPLACE FUNCTION precall.register_device(p_user uuid, p_token text, p_platform text, p_push_enabled boolean)
 RETURNS boolean
 LANGUAGE plpgsql
AS $function$
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
$function$;

-- Logout: the caller's device with that token goes (another user's token is not touched).
CREATE OR REPLACE FUNCTION precall.unregister_device(p_user uuid, p_token text)
 RETURNS void
 LANGUAGE sql
AS $function$
    DELETE FROM precall.devices WHERE fcm_token = p_token AND user_id = p_user
$function$;

-- A device changed, came or went: its user's summary follows (both users' when a token moved).
CREATE OR REPLACE FUNCTION precall.tg_devices__summary()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND (TG_OP = 'DELETE' OR OLD.user_id <> NEW.user_id) THEN
        PERFORM precall.sync_push_summary(OLD.user_id);  -- first: it frees the token for the new holder
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM precall.sync_push_summary(NEW.user_id);
    END IF;
    RETURN NULL;
END
$function$;

CREATE OR REPLACE TRIGGER _100_summary
    AFTER INSERT OR DELETE OR UPDATE ON precall.devices
    FOR EACH ROW
    EXECUTE FUNCTION precall.tg_devices__summary();

-- Apps and DBAs that write the users columns keep working: a token written to users.fcm_token
-- becomes (or refreshes) that user's device; users.push_enabled = false disables every device of
-- the user, true re-enables those it disabled and the one in fcm_token; a token removed from
-- users.fcm_token removes that device.
CREATE OR REPLACE FUNCTION precall.tg_users__devices_follow()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
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
$function$;

CREATE OR REPLACE TRIGGER _410_devices_follow
    AFTER INSERT OR UPDATE OF fcm_token, platform, push_enabled ON public.users
    FOR EACH ROW
    EXECUTE FUNCTION precall.tg_users__devices_follow();

-- A new phone number has not replied STOP: its opt-out goes (unless the same update sets it).
CREATE OR REPLACE FUNCTION precall.tg_users__new_number_consents()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    IF NEW.sms_opted_out IS NOT DISTINCT FROM OLD.sms_opted_out THEN
        NEW.sms_opted_out := false;
    END IF;
    RETURN NEW;
END
$function$;

CREATE OR REPLACE TRIGGER _320_new_number_consents
    BEFORE UPDATE OF phone_number ON public.users
    FOR EACH ROW
    WHEN (NEW.phone_number IS DISTINCT FROM OLD.phone_number AND NEW.sms_opted_out)
    EXECUTE FUNCTION precall.tg_users__new_number_consents();

-- Where each claimed push preview goes: the user's enabled devices seen within
-- precall.settings.device_stale_after, the ten most recently seen (a bound on what one preview
-- can cost). sent_provider_id: this device already took this preview (an earlier attempt
-- recorded it before a crash or a retry elsewhere); the sender skips it.
CREATE OR REPLACE FUNCTION precall.push_targets(p_ids uuid[])
 RETURNS TABLE(notification_id uuid, device_id bigint, fcm_token text, platform text, sent_provider_id text)
 LANGUAGE plpgsql
 STABLE
 SET jit TO 'off'
AS $function$
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
$function$;

-- Stores per-device outcomes (one JSON object per device: notification_id, device_id, platform,
-- status 'sent' | 'failed' | 'dead', provider_id, error, attempted_at, sent_at) and disables the
-- devices whose token FCM called dead. A receipt that came first keeps its times.
CREATE OR REPLACE FUNCTION precall.store_push_deliveries(p_rows jsonb)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
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
$function$;

-- Per-device outcomes of a push that was not sent to any device, written by the dispatcher that
-- holds its lease before its precall.record_unsent. Returns how many devices the user has left
-- that could take a push (dead-token fallback SMS only when none is).
CREATE OR REPLACE FUNCTION precall.record_push_deliveries(p_id uuid, p_worker text, p_rows jsonb)
 RETURNS integer
 LANGUAGE plpgsql
AS $function$
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
$function$;

-- A receipt from one device (the X-Precall-Receipt token names it; a bearer receipt names none,
-- and counts for the device when the preview went to just one): the preview's receipt as
-- precall.record_push_receipt records it, and that device's own times.
CREATE OR REPLACE FUNCTION precall.record_device_receipt(p_notification_id uuid, p_device_id bigint, p_event text, p_at timestamp with time zone DEFAULT clock_timestamp(), p_user uuid DEFAULT NULL::uuid)
 RETURNS text
 LANGUAGE plpgsql
AS $function$
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
$function$;

-- What the app's preferences screen shows: the user's settings and their devices, never the raw
-- tokens or the number.
CREATE OR REPLACE FUNCTION precall.device_list(p_user uuid)
 RETURNS TABLE(platform text, push_enabled boolean, last_seen_at timestamp with time zone)
 LANGUAGE sql
 STABLE
AS $function$
    SELECT d.platform, d.push_enabled AND d.last_seen_at >= now() - s.device_stale_after, d.last_seen_at
    FROM precall.devices d CROSS JOIN precall.settings s
    WHERE d.user_id = p_user
    ORDER BY d.last_seen_at DESC, d.id DESC
$function$;

-- The keyword an inbound text is, Twilio's list: STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT
-- opt out; START, YES, UNSTOP opt back in. Case, spaces and punctuation ignored ("Stop all.").
CREATE OR REPLACE FUNCTION precall.sms_consent_keyword(p_body text)
 RETURNS text
 LANGUAGE sql
 IMMUTABLE
AS $function$
    SELECT CASE regexp_replace(upper(coalesce(p_body, '')), '[^A-Z]', '', 'g')
               WHEN 'STOP' THEN 'opt_out' WHEN 'STOPALL' THEN 'opt_out' WHEN 'UNSUBSCRIBE' THEN 'opt_out'
               WHEN 'CANCEL' THEN 'opt_out' WHEN 'END' THEN 'opt_out' WHEN 'QUIT' THEN 'opt_out'
               WHEN 'START' THEN 'opt_in' WHEN 'YES' THEN 'opt_in' WHEN 'UNSTOP' THEN 'opt_in'
           END
$function$;

-- Records an inbound text (once per MessageSid) and applies its consent keyword to every user
-- with that number. Returns 'opt_out', 'opt_in', 'stored' (no keyword) or 'duplicate'.
CREATE OR REPLACE FUNCTION precall.record_inbound_sms(p_sid text, p_from text, p_body text)
 RETURNS text
 LANGUAGE plpgsql
AS $function$
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
$function$;

-- Whether today's (UTC) SMS spend in p_currency has reached precall.settings.sms_daily_budget's
-- amount for it (false when no budget is set for that currency).
CREATE OR REPLACE FUNCTION precall.sms_budget_reached(p_currency text)
 RETURNS boolean
 LANGUAGE sql
 STABLE
AS $function$
    SELECT coalesce((
        SELECT coalesce(sp.amount, 0) >= (s.sms_daily_budget ->> p_currency)::numeric
        FROM precall.settings s
        LEFT JOIN precall.sms_spend sp
               ON sp.day = (now() AT TIME ZONE 'UTC')::date AND sp.currency = p_currency
        WHERE s.sms_daily_budget ? p_currency), false)
$function$;

-- Today's spend against each budget (doctor warns at 80%).
CREATE OR REPLACE FUNCTION precall.sms_budget_use()
 RETURNS TABLE(currency text, budget numeric, spent numeric, share numeric)
 LANGUAGE sql
 STABLE
AS $function$
    SELECT b.key, b.value::numeric, coalesce(sp.amount, 0),
           CASE WHEN b.value::numeric > 0 THEN round(coalesce(sp.amount, 0) / b.value::numeric, 4) END
    FROM precall.settings s
    CROSS JOIN LATERAL jsonb_each_text(coalesce(s.sms_daily_budget, '{}')) b
    LEFT JOIN precall.sms_spend sp ON sp.day = (now() AT TIME ZONE 'UTC')::date AND sp.currency = b.key
    ORDER BY b.key
$function$;

-- The API's receipt in one round trip: precall.record_device_receipt, then the preview's receipt
-- times as they are after it (a second statement in this function sees the first's writes; one
-- SQL statement would read the row as it was).
CREATE OR REPLACE FUNCTION precall.push_receipt(p_notification_id uuid, p_device_id bigint, p_event text, p_at timestamp with time zone, p_user uuid, OUT outcome text, OUT delivered_at timestamp with time zone, OUT opened_at timestamp with time zone, OUT late boolean)
 RETURNS record
 LANGUAGE plpgsql
AS $function$
BEGIN
    outcome := precall.record_device_receipt(p_notification_id, p_device_id, p_event, p_at, p_user);
    SELECT n.delivered_at, n.opened_at, coalesce(n.late_receipt, false) INTO delivered_at, opened_at, late
    FROM notification_logs n WHERE n.id = p_notification_id;
END
$function$;
