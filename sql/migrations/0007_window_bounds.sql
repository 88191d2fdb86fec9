-- Planning's window scan, bounded on both sides in the index and sized to the leads in use.
--
-- 0002 joined precall.settings to read the lookahead, so the upper bound on scheduled_at was a
-- join filter: the index scan read every pending call after now, and the never-analyzed one-row
-- settings table (guessed at ~840 rows) priced the query into a 300 ms JIT compile per run.
-- Here the bounds are values: plan_calls passes its settings and the largest lead in use through
-- EXECUTE, so the planner sees how few calls the range holds (at 10M calls a
-- 62-minute range made it hash-join a sequential scan of all users; bench/planning_cost.py).

-- The largest lead in use, read from this index instead of assumed to be the 60-minute maximum.
CREATE INDEX IF NOT EXISTS users_notification_lead_min_idx ON users (notification_lead_min);

-- The pending calls whose preview falls in the window [p_now, p_now + p_lookahead], for users
-- whose lead is at most p_max_lead minutes.
CREATE FUNCTION precall.calls_in_window(p_now timestamptz, p_lookahead interval, p_max_lead integer)
RETURNS TABLE (call_id uuid)
LANGUAGE sql STABLE AS $$
    SELECT c.id
    FROM scheduled_calls c
    JOIN users u ON u.id = c.user_id
    WHERE c.status = 'pending'
      AND c.scheduled_at > p_now
      AND c.scheduled_at <= p_now + p_lookahead + make_interval(mins => p_max_lead)
      AND c.scheduled_at - make_interval(mins => u.notification_lead_min) <= p_now + p_lookahead
$$;

-- The pending calls whose preview falls in the planning window at p_now (for DBAs: what the
-- next planning run would pick up).
CREATE OR REPLACE FUNCTION precall.calls_in_window(p_now timestamptz)
RETURNS TABLE (call_id uuid)
LANGUAGE sql STABLE AS $$
    SELECT w.call_id
    FROM precall.calls_in_window(p_now, (SELECT s.lookahead FROM precall.settings s),
                                 coalesce((SELECT max(u.notification_lead_min) FROM users u), 0)) w
$$;

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
        -- A fired job fires again only if the call moved to a new time.
        WHERE j.status IN ('queued', 'cancelled') OR j.due_at <> excluded.due_at;

    IF v_planned > 0 THEN
        PERFORM precall.notify_due(v_planned, v_next);
    END IF;
    RETURN v_planned;
END
$$;

-- These are short OLTP statements: a misestimate must never buy a JIT compile (300 ms measured).
-- (Not force_custom_plan: re-planning the statements that take the 10k-element id array cost
-- more than it saved, 450 -> 1,085 ms at 1M calls.)
ALTER FUNCTION precall.plan_calls(uuid[], timestamptz) SET jit = off;
ALTER FUNCTION precall.claim_due_previews(text, integer) SET jit = off;
ALTER FUNCTION precall.claim_due_calls(text, integer) SET jit = off;
