-- The schedule in SQL: settings, call jobs, planning function, triggers that keep
-- previews in step with DBA edits.

-- One row of tunables, so a DBA changes behaviour with UPDATE, not a deploy.
CREATE TABLE precall.settings (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    -- How far ahead planning writes previews; > 1 minute so a once-a-minute cron never misses one.
    lookahead interval NOT NULL DEFAULT '2 minutes' CHECK (lookahead >= '1 minute'),
    -- The cut-off: a preview that cannot leave at least this long before the call is not
    -- sent (planning writes a 'skipped' row instead; the dispatcher re-checks before sending).
    min_notice interval NOT NULL DEFAULT '30 seconds' CHECK (min_notice >= '5 seconds'),
    -- How long a claimed row stays leased to one dispatcher before another may take it over.
    lease interval NOT NULL DEFAULT '60 seconds' CHECK (lease >= '5 seconds'),
    -- After this many claims without an outcome a row is failed instead of tried again.
    max_attempts integer NOT NULL DEFAULT 3 CHECK (max_attempts >= 1)
);
INSERT INTO precall.settings DEFAULT VALUES;

-- The call job at T: the dispatcher fires each row at due_at; a call system may poll it instead.
CREATE TABLE precall.call_jobs (
    call_id uuid PRIMARY KEY REFERENCES scheduled_calls(id) ON DELETE CASCADE,
    user_id uuid NOT NULL,
    due_at timestamptz NOT NULL,
    status text NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'firing', 'fired', 'failed', 'cancelled')),
    reason text,
    lease_owner text,
    lease_expires_at timestamptz,
    attempts integer NOT NULL DEFAULT 0,
    fired_at timestamptz,
    outcome text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX call_jobs_active_due_idx ON precall.call_jobs (due_at) WHERE status IN ('queued', 'firing');

-- Pending calls whose preview time falls in the planning window (inlined by the planner,
-- so EXPLAIN of this function shows the partial index scan).
CREATE FUNCTION precall.calls_in_window(p_now timestamptz)
RETURNS TABLE (call_id uuid)
LANGUAGE sql STABLE AS $$
    SELECT c.id
    FROM scheduled_calls c
    JOIN users u ON u.id = c.user_id
    CROSS JOIN precall.settings s
    WHERE c.status = 'pending'
      AND c.scheduled_at > p_now
      -- 60 min is the largest lead (users_notification_lead_min): a bounded index range.
      AND c.scheduled_at <= p_now + s.lookahead + interval '60 minutes'
      AND c.scheduled_at - make_interval(mins => u.notification_lead_min) <= p_now + s.lookahead
$$;

-- The path the spec's select_notification_path would take for this user right now (planning
-- guess only; the dispatcher decides again from the user's row at send time).
CREATE FUNCTION precall.guess_preview_type(u users)
RETURNS text LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN u.notification_pref = 'sms_only' THEN 'preview_sms'
        WHEN u.notification_pref = 'push_and_sms' THEN 'preview_push'
        WHEN u.fcm_token IS NOT NULL AND u.push_enabled THEN 'preview_push'
        WHEN u.phone_number IS NOT NULL AND NOT u.sms_opted_out THEN 'preview_sms'
        ELSE 'preview_push'
    END
$$;

-- Plans the previews and call jobs of the given calls (NULL: every call in the window),
-- writes 'skipped' rows past the cut-off, and NOTIFYs precall_due once. Returns rows planned.
CREATE FUNCTION precall.plan_calls(p_call_ids uuid[], p_now timestamptz DEFAULT clock_timestamp())
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_settings precall.settings;
    v_ids uuid[];
    v_planned integer;
    v_next timestamptz;
BEGIN
    SELECT * INTO v_settings FROM precall.settings;
    IF p_call_ids IS NULL THEN
        v_ids := ARRAY(SELECT w.call_id FROM precall.calls_in_window(p_now) w);
    ELSE
        v_ids := ARRAY(SELECT w.call_id FROM precall.calls_in_window(p_now) w WHERE w.call_id = ANY (p_call_ids));
    END IF;
    IF cardinality(v_ids) = 0 THEN
        RETURN 0;
    END IF;

    WITH candidates AS (
        SELECT c.id AS call_id, c.user_id, c.scheduled_at,
               greatest(c.scheduled_at - make_interval(mins => u.notification_lead_min), p_now) AS send_at,
               precall.guess_preview_type(u) AS type
        FROM scheduled_calls c
        JOIN users u ON u.id = c.user_id
        WHERE c.id = ANY (v_ids)
          AND NOT EXISTS (
              SELECT 1 FROM notification_logs n
              WHERE n.call_id = c.id
                AND n.type IN ('preview_push', 'preview_sms')
                AND n.planned_for = c.scheduled_at
                AND n.status <> 'cancelled')
    ), inserted AS (
        INSERT INTO notification_logs (user_id, call_id, type, channel, status, reason, send_at, planned_for)
        SELECT user_id, call_id, type,
               CASE type WHEN 'preview_sms' THEN 'sms' ELSE 'push' END,
               CASE WHEN scheduled_at - p_now < v_settings.min_notice THEN 'skipped' ELSE 'queued' END,
               CASE WHEN scheduled_at - p_now < v_settings.min_notice
                    THEN format('too_late: planned %s before the call, cut-off is %s',
                                date_trunc('second', scheduled_at - p_now), v_settings.min_notice) END,
               send_at, scheduled_at
        FROM candidates
        ON CONFLICT DO NOTHING
        RETURNING status, send_at
    )
    SELECT count(*) FILTER (WHERE status = 'queued'), min(send_at) FILTER (WHERE status = 'queued')
    INTO v_planned, v_next
    FROM inserted;

    INSERT INTO precall.call_jobs AS j (call_id, user_id, due_at)
    SELECT c.id, c.user_id, c.scheduled_at
    FROM scheduled_calls c
    WHERE c.id = ANY (v_ids)
    ON CONFLICT (call_id) DO UPDATE
        SET due_at = excluded.due_at, status = 'queued', reason = NULL, updated_at = now()
        -- A fired job fires again only if the call moved to a new time.
        WHERE j.status IN ('queued', 'cancelled') OR j.due_at <> excluded.due_at;

    IF v_planned > 0 THEN
        PERFORM precall.notify_due(v_planned, v_next);
    END IF;
    RETURN v_planned;
END
$$;

-- Wakes the dispatchers: a small versioned JSON payload, a hint only (never the truth).
CREATE FUNCTION precall.notify_due(p_count integer, p_next_send_at timestamptz)
RETURNS void LANGUAGE sql AS $$
    SELECT pg_notify('precall_due', json_build_object(
        'v', 1, 'type', 'previews_planned', 'count', p_count,
        'next_send_at', p_next_send_at)::text)
$$;

-- The pg_cron job: plans every preview due within the lookahead window.
CREATE FUNCTION precall.plan_due_previews(p_now timestamptz DEFAULT clock_timestamp())
RETURNS integer LANGUAGE sql AS $$
    SELECT precall.plan_calls(NULL, p_now)
$$;

-- Cancels the unsent previews (and optionally the call job) of one call, leaving the reason.
CREATE FUNCTION precall.cancel_unsent(p_call_id uuid, p_reason text, p_with_call_job boolean)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_count integer;
BEGIN
    UPDATE notification_logs
    SET status = 'cancelled', reason = p_reason, updated_at = now(),
        lease_owner = NULL, lease_expires_at = NULL
    WHERE call_id = p_call_id AND status = 'queued';
    GET DIAGNOSTICS v_count = ROW_COUNT;
    IF p_with_call_job THEN
        UPDATE precall.call_jobs
        SET status = 'cancelled', reason = p_reason, updated_at = now()
        WHERE call_id = p_call_id AND status = 'queued';
    END IF;
    RETURN v_count;
END
$$;

-- New calls: plan at once when their preview falls inside the window.
CREATE FUNCTION precall.tg_scheduled_calls__after_insert()
RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Pre-filter on the widest window (60-minute lead + lookahead) so a bulk load stays cheap.
    PERFORM precall.plan_calls(ARRAY(
        SELECT id FROM new_calls
        WHERE status = 'pending' AND scheduled_at <= clock_timestamp() + interval '70 minutes'));
    RETURN NULL;
END
$$;
CREATE TRIGGER _500_plan_previews
    AFTER INSERT ON scheduled_calls
    REFERENCING NEW TABLE AS new_calls
    FOR EACH STATEMENT EXECUTE FUNCTION precall.tg_scheduled_calls__after_insert();

-- Moved or cancelled calls: cancel what is unsent, then re-plan for the new time.
CREATE FUNCTION precall.tg_scheduled_calls__after_update()
RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status <> 'pending' THEN
        PERFORM precall.cancel_unsent(NEW.id, format('call_%s', NEW.status), NEW.status = 'cancelled');
        RETURN NULL;
    END IF;
    IF OLD.scheduled_at IS DISTINCT FROM NEW.scheduled_at THEN
        PERFORM precall.cancel_unsent(NEW.id,
            format('rescheduled: call moved from %s to %s', OLD.scheduled_at, NEW.scheduled_at), true);
    END IF;
    PERFORM precall.plan_calls(ARRAY[NEW.id]);
    RETURN NULL;
END
$$;
CREATE TRIGGER _500_replan_previews
    AFTER UPDATE OF scheduled_at, status ON scheduled_calls
    FOR EACH ROW
    WHEN (OLD.scheduled_at IS DISTINCT FROM NEW.scheduled_at OR OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION precall.tg_scheduled_calls__after_update();

-- A new lead time or preference re-plans that user's unsent previews.
CREATE FUNCTION precall.tg_users__after_update()
RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_call uuid;
    v_reason text := format('replanned: notification_lead_min %s -> %s, notification_pref %s -> %s',
        OLD.notification_lead_min, NEW.notification_lead_min, OLD.notification_pref, NEW.notification_pref);
    v_calls uuid[] := '{}';
BEGIN
    FOR v_call IN
        SELECT DISTINCT n.call_id FROM notification_logs n
        WHERE n.user_id = NEW.id AND n.status = 'queued' AND n.type IN ('preview_push', 'preview_sms')
    LOOP
        PERFORM precall.cancel_unsent(v_call, v_reason, false);
        v_calls := v_calls || v_call;
    END LOOP;
    -- A longer lead can bring calls into the window that had nothing planned yet.
    v_calls := v_calls || ARRAY(
        SELECT c.id FROM scheduled_calls c
        WHERE c.user_id = NEW.id AND c.status = 'pending'
          AND c.scheduled_at > clock_timestamp()
          AND c.scheduled_at <= clock_timestamp() + interval '62 minutes');
    PERFORM precall.plan_calls(v_calls);
    RETURN NULL;
END
$$;
CREATE TRIGGER _500_replan_previews
    AFTER UPDATE OF notification_lead_min, notification_pref ON users
    FOR EACH ROW
    WHEN (OLD.notification_lead_min IS DISTINCT FROM NEW.notification_lead_min
          OR OLD.notification_pref IS DISTINCT FROM NEW.notification_pref)
    EXECUTE FUNCTION precall.tg_users__after_update();

-- A user's local wall-clock time as an instant (PostgreSQL applies the IANA rules, DST included).
CREATE FUNCTION precall.local_call_time(p_user_id uuid, p_local timestamp)
RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT p_local AT TIME ZONE u.timezone FROM users u WHERE u.id = p_user_id
$$;
