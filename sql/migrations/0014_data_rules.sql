-- Rows the database used to let through (issue 14, each measured):
-- * a 'sent' row without a channel (the CHECK was NULL, which passes);
-- * users.timezone = 'Mars/Olympus', which then broke `precall calls list` for everyone;
-- * an adopted notification_lead_min of 10^9 behind a NOT VALID constraint, which widened every
--   planning scan to all pending calls and sent "calling in 10079 min";
-- * Twilio's RawDlrDoneDate taken verbatim (a 2025 or 9999 delivered_at for a 2026 send);
-- * a call inserted in the past: no row, no reason.

-------------------------------------------------------------------------------------------------
-- Adoption: refuse, in one line each, what cannot be kept without guessing.
-------------------------------------------------------------------------------------------------

-- The IANA names PostgreSQL knows, kept in a table: pg_timezone_names reads the zone files on
-- every query (21 ms a lookup here), too slow for a trigger on a bulk load. A name missing here
-- (a newer tzdata after a PostgreSQL upgrade) is still looked up in pg_timezone_names.
CREATE TABLE precall.time_zones (name text PRIMARY KEY);
INSERT INTO precall.time_zones SELECT DISTINCT name FROM pg_timezone_names;

CREATE FUNCTION precall.is_time_zone(p_name text)
RETURNS boolean LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM precall.time_zones WHERE name = p_name)
        OR EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = p_name);
END
$$;

DO $$
DECLARE
    v_problems text[] := '{}';
    v_count bigint;
    v_some text;
BEGIN
    SELECT count(*) INTO v_count FROM users
    WHERE timezone IS NOT NULL AND timezone::text NOT IN (SELECT name FROM precall.time_zones);
    IF v_count > 0 THEN
        SELECT string_agg(quote_literal(t), ', ') INTO v_some FROM (
            SELECT DISTINCT timezone::text AS t FROM users
            WHERE timezone IS NOT NULL AND timezone::text NOT IN (SELECT name FROM precall.time_zones)
            ORDER BY 1 LIMIT 5) s;
        v_problems := v_problems || format('users.timezone is not a time zone in %s row(s): %s', v_count, v_some);
    END IF;

    SELECT count(*) INTO v_count FROM users WHERE notification_lead_min NOT BETWEEN 1 AND 60;
    IF v_count > 0 THEN
        SELECT string_agg(format('%s (%s)', id, notification_lead_min), ', ') INTO v_some FROM (
            SELECT id, notification_lead_min FROM users
            WHERE notification_lead_min NOT BETWEEN 1 AND 60 ORDER BY id LIMIT 5) s;
        v_problems := v_problems || format('users.notification_lead_min is outside 1..60 in %s row(s): %s',
                                           v_count, v_some);
    END IF;

    IF cardinality(v_problems) > 0 THEN
        RAISE EXCEPTION 'precall cannot adopt the existing tables: %', array_to_string(v_problems, '; ')
            USING HINT = 'Fix these rows (IANA names such as Europe/Paris; a lead of 1 to 60 minutes), then run precall db migrate again.';
    END IF;
END
$$;

-- Now that no row breaks it, the lead rule holds for every row (the planning window relies on it).
-- VALIDATE takes SHARE UPDATE EXCLUSIVE: reads and writes go on while it scans.
ALTER TABLE users VALIDATE CONSTRAINT users_notification_lead_min;

-- Every new or changed timezone must be one PostgreSQL knows (NULL in an adopted nullable
-- column is left alone: nothing converts it).
CREATE FUNCTION precall.tg_users__timezone_is_known()
RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.timezone IS NOT NULL AND NOT precall.is_time_zone(NEW.timezone::text) THEN
        RAISE EXCEPTION 'users.timezone % is not a time zone', quote_literal(NEW.timezone)
            USING ERRCODE = '22023', HINT = 'Use an IANA name from pg_timezone_names, such as Europe/Paris.';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER _300_timezone_is_known
    BEFORE INSERT OR UPDATE OF timezone ON users
    FOR EACH ROW EXECUTE FUNCTION precall.tg_users__timezone_is_known();

-------------------------------------------------------------------------------------------------
-- A row that was sent says on which channel. NOT VALID first: rows an existing app already holds
-- are kept (validated only when none breaks it, with a notice otherwise).
-------------------------------------------------------------------------------------------------

SELECT precall._add_constraint('notification_logs', 'notification_logs_channel_when_sent',
    $c$CHECK (channel IS NOT NULL OR status IN ('queued', 'sending', 'skipped', 'cancelled', 'failed')) NOT VALID$c$);
DO $$
DECLARE
    v_count bigint;
BEGIN
    SELECT count(*) INTO v_count FROM notification_logs
    WHERE channel IS NULL AND status NOT IN ('queued', 'sending', 'skipped', 'cancelled', 'failed');
    IF v_count = 0 THEN
        ALTER TABLE notification_logs VALIDATE CONSTRAINT notification_logs_channel_when_sent;
    ELSE
        RAISE NOTICE 'notification_logs: % existing sent/delivered/opened row(s) have no channel; kept as they are, new rows are checked', v_count;
    END IF;
END
$$;

-------------------------------------------------------------------------------------------------
-- Twilio's delivery time is the carrier's clock: kept between the send attempt and now, as push
-- receipts already are (record_push_receipt).
-------------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION precall.apply_sms_status(p_sid text, p_status text, p_error_code integer, p_at timestamptz)
RETURNS boolean LANGUAGE plpgsql AS $$
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

-------------------------------------------------------------------------------------------------
-- A call inserted (or moved) into the past leaves a 'skipped' row saying so, like one inside the
-- cut-off (too_late). A call already past gets no call job.
-------------------------------------------------------------------------------------------------

-- The given calls (new or changed rows, from the triggers), past ones included.
CREATE OR REPLACE FUNCTION precall.calls_by_id_in_window(p_now timestamptz, p_lookahead interval, p_call_ids uuid[])
RETURNS TABLE (call_id uuid, user_id uuid, scheduled_at timestamptz, send_at timestamptz, type text)
LANGUAGE sql STABLE AS $$
    SELECT c.id, c.user_id, c.scheduled_at,
           greatest(c.scheduled_at - make_interval(mins => u.notification_lead_min), p_now),
           precall.guess_preview_type(u)
    FROM scheduled_calls c
    JOIN users u ON u.id = c.user_id
    WHERE c.id = ANY (p_call_ids)
      AND c.status = 'pending'
      AND c.scheduled_at - make_interval(mins => u.notification_lead_min) <= p_now + p_lookahead
$$;

CREATE OR REPLACE FUNCTION precall.plan_calls(p_call_ids uuid[], p_now timestamptz DEFAULT clock_timestamp())
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_settings precall.settings;
    v_max_lead integer := 0;
    v_source text;
    v_planned integer;
    v_next timestamptz;
BEGIN
    IF cardinality(p_call_ids) = 0 THEN
        RETURN 0;
    END IF;
    SELECT * INTO v_settings FROM precall.settings;
    IF p_call_ids IS NULL THEN
        -- The largest lead in use (an index lookup) bounds the scan, instead of the 60-minute maximum.
        v_max_lead := coalesce((SELECT max(u.notification_lead_min) FROM users u), 0);
        v_source := 'precall.calls_in_window($1, $2, $3)';
    ELSE
        v_source := 'precall.calls_by_id_in_window($1, $2, $5)';
    END IF;
    -- EXECUTE plans with the values themselves, so the planner sees how few calls the range
    -- holds; a cached generic plan would guess (and at 10M calls hash-join every user).
    EXECUTE format($q$
        WITH candidates AS MATERIALIZED (
            SELECT * FROM %s
        ), inserted AS (
            INSERT INTO notification_logs (user_id, call_id, type, channel, status, reason, send_at, planned_for)
            SELECT cd.user_id, cd.call_id, cd.type,
                   CASE cd.type WHEN 'preview_sms' THEN 'sms' ELSE 'push' END,
                   CASE WHEN cd.scheduled_at - $1 < $4 THEN 'skipped' ELSE 'queued' END,
                   CASE WHEN cd.scheduled_at <= $1
                        THEN format('in_past: the call at %%s was %%s ago when it was planned',
                                    cd.scheduled_at, date_trunc('second', $1 - cd.scheduled_at))
                        WHEN cd.scheduled_at - $1 < $4
                        THEN format('too_late: planned %%s before the call, cut-off is %%s',
                                    date_trunc('second', cd.scheduled_at - $1), $4) END,
                   cd.send_at, cd.scheduled_at
            FROM candidates cd
            WHERE NOT EXISTS (
                SELECT 1 FROM notification_logs n
                WHERE n.call_id = cd.call_id
                  AND n.type IN ('preview_push', 'preview_sms')
                  AND n.planned_for = cd.scheduled_at
                  AND n.status <> 'cancelled')
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
    USING p_now, v_settings.lookahead, v_max_lead, v_settings.min_notice, p_call_ids;

    IF v_planned > 0 THEN
        PERFORM precall.notify_due(v_planned, v_next);
    END IF;
    RETURN v_planned;
END
$$;
-- CREATE OR REPLACE resets the function's settings: a misestimate must never buy a JIT compile.
ALTER FUNCTION precall.plan_calls(uuid[], timestamptz) SET jit = off;

-------------------------------------------------------------------------------------------------
-- The last foreign key without an index: deleting a coach persona set its users' column to NULL
-- by a scan of users. (On a large existing table build it first:
--   CREATE INDEX CONCURRENTLY users_coach_persona_idx ON users (coach_persona_id) WHERE coach_persona_id IS NOT NULL;)
-------------------------------------------------------------------------------------------------
CREATE INDEX IF NOT EXISTS users_coach_persona_idx ON users (coach_persona_id) WHERE coach_persona_id IS NOT NULL;
