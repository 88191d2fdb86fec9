-- Planning stops rewriting call jobs that are already queued for the right time.
--
-- 0007's upsert updated every queued job in the window on every run (its WHERE let
-- status = 'queued' through): with a 50,000-call burst in the window, each minute's run rewrote
-- 50,000 rows for nothing (1.25 s a run in bench/throughput.py) and left a dead tuple per job per
-- minute. Only the upsert's WHERE changes; CREATE OR REPLACE needs the whole function.

-- Plans the previews and call jobs of the given calls (NULL: every call in the window),
-- writes 'skipped' rows past the cut-off, and NOTIFYs precall_due once. Returns rows planned.
CREATE OR REPLACE FUNCTION precall.plan_calls(p_call_ids uuid[], p_now timestamptz DEFAULT clock_timestamp())
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_settings precall.settings;
    v_max_lead integer;
    v_ids uuid[];
    v_planned integer;
    v_next timestamptz;
BEGIN
    SELECT * INTO v_settings FROM precall.settings;
    IF p_call_ids IS NULL THEN
        v_max_lead := coalesce((SELECT max(u.notification_lead_min) FROM users u), 0);
        -- EXECUTE plans with the values themselves, so the planner sees how few calls the range
        -- holds; a cached generic plan would guess (and at 10M calls hash-join every user).
        EXECUTE 'SELECT ARRAY(SELECT w.call_id FROM precall.calls_in_window($1, $2, $3) w)'
            INTO v_ids USING p_now, v_settings.lookahead, v_max_lead;
    ELSE
        -- New or changed calls (the triggers): look at those rows only, not the whole window.
        v_ids := ARRAY(
            SELECT c.id FROM scheduled_calls c JOIN users u ON u.id = c.user_id
            WHERE c.id = ANY (p_call_ids) AND c.status = 'pending' AND c.scheduled_at > p_now
              AND c.scheduled_at - make_interval(mins => u.notification_lead_min) <= p_now + v_settings.lookahead);
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
        -- A fired job fires again only if the call moved to a new time; a queued one at the
        -- same time is left alone (0007 rewrote every queued job of the window on each run).
        WHERE j.status = 'cancelled' OR j.due_at <> excluded.due_at;

    IF v_planned > 0 THEN
        PERFORM precall.notify_due(v_planned, v_next);
    END IF;
    RETURN v_planned;
END
$$;

-- CREATE OR REPLACE resets the function's settings: a misestimate must never buy a JIT compile.
ALTER FUNCTION precall.plan_calls(uuid[], timestamptz) SET jit = off;
