-- Planning in one statement: the window scan feeds both inserts directly.
--
-- 0007's plan_calls collected the window's call ids into an array, then looked them up again
-- with `id = ANY (array)`, once for the previews and once for the call jobs. At 10M calls the
-- planner made those lookups sequential scans: a run with nothing new to plan cost 300 ms and a
-- run planning 1,000 new calls 756 ms (bench/planning_cost.py). Now the window query returns
-- what the inserts need, runs once (a MATERIALIZED CTE), and both inserts read that.
-- Also: 0007's call-job upsert rewrote every job already queued in the window on every run (its
-- WHERE let status = 'queued' through): a 50,000-call burst cost 50,000 row updates a minute.

-- The pending calls whose preview falls in the window [p_now, p_now + p_lookahead], for users
-- whose lead is at most p_max_lead minutes, with what planning writes for each.
DROP FUNCTION precall.calls_in_window(timestamptz, interval, integer);
CREATE FUNCTION precall.calls_in_window(p_now timestamptz, p_lookahead interval, p_max_lead integer)
RETURNS TABLE (call_id uuid, user_id uuid, scheduled_at timestamptz, send_at timestamptz, type text)
LANGUAGE sql STABLE AS $$
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

-- The same for the given calls only (new or changed rows, from the triggers).
CREATE FUNCTION precall.calls_by_id_in_window(p_now timestamptz, p_lookahead interval, p_call_ids uuid[])
RETURNS TABLE (call_id uuid, user_id uuid, scheduled_at timestamptz, send_at timestamptz, type text)
LANGUAGE sql STABLE AS $$
    SELECT c.id, c.user_id, c.scheduled_at,
           greatest(c.scheduled_at - make_interval(mins => u.notification_lead_min), p_now),
           precall.guess_preview_type(u)
    FROM scheduled_calls c
    JOIN users u ON u.id = c.user_id
    WHERE c.id = ANY (p_call_ids)
      AND c.status = 'pending'
      AND c.scheduled_at > p_now
      AND c.scheduled_at - make_interval(mins => u.notification_lead_min) <= p_now + p_lookahead
$$;

-- Plans the previews and call jobs of the given calls (NULL: every call in the window),
-- writes 'skipped' rows past the cut-off, and NOTIFYs precall_due once. Returns rows planned.
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
                   CASE WHEN cd.scheduled_at - $1 < $4
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
