-- Planning: which calls get a preview when, the triggers that re-plan moved or cancelled calls
-- and changed preferences, and the wake-up hint for dispatchers (next_due, NOTIFY precall_due).
--
-- The current definition of each object below; `precall db migrate` re-applies this file when it
-- changes (after the numbered migrations). Edit here, never in sql/migrations/.

-- The preview the dispatcher will send first for this user: the spec's select_notification_path
-- as dispatcher/channel.py applies it (that file owns the rule; tests/test_channel_rule.py runs
-- every combination of these fields, NULLs and empty strings included, through both).
-- 'preview_push', 'preview_sms', or NULL for a user with no channel (planned without one; the
-- dispatcher skips it as no_channel). push_and_sms without a usable token sends the SMS half.
-- A guess made at planning: the dispatcher decides again from the user's row at send time.
CREATE OR REPLACE FUNCTION precall.guess_preview_type(u users)
 RETURNS text
 LANGUAGE sql
 STABLE
AS $function$
    SELECT CASE
        WHEN u.notification_pref = 'sms_only' THEN 'preview_sms'
        WHEN u.notification_pref = 'push_and_sms' THEN
            CASE WHEN coalesce(u.fcm_token, '') <> '' AND coalesce(u.push_enabled, false)
                 THEN 'preview_push' ELSE 'preview_sms' END
        WHEN coalesce(u.fcm_token, '') <> '' AND coalesce(u.push_enabled, false) THEN 'preview_push'
        WHEN coalesce(u.phone_number, '') <> '' AND NOT coalesce(u.sms_opted_out, false) THEN 'preview_sms'
    END
$function$;

-- Plans the previews and call jobs of the given calls (NULL: every call in the window),
-- writes 'skipped' rows past the cut-off, and NOTIFYs precall_due once. Returns rows planned.
CREATE OR REPLACE FUNCTION precall.plan_calls(p_call_ids uuid[], p_now timestamp with time zone DEFAULT clock_timestamp())
 RETURNS integer
 LANGUAGE plpgsql
 SET jit TO 'off'
AS $function$
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
$function$;

-- The fleet's sustained send rate on a channel, previews per second: precall.settings'
-- push_capacity_per_s / sms_capacity_per_s, capped by what the live dispatchers report when every
-- one of them is paced on that channel (their summed PRECALL_FCM_RATE_PER_S / _TWILIO_).
CREATE OR REPLACE FUNCTION precall.send_capacity(p_channel text)
 RETURNS numeric
 LANGUAGE sql
 STABLE
AS $function$
    SELECT least(CASE p_channel WHEN 'sms' THEN s.sms_capacity_per_s ELSE s.push_capacity_per_s END,
                 (SELECT CASE WHEN count(*) > 0 AND count(*) = count(r.rate) THEN sum(r.rate) END
                  FROM precall.dispatchers d
                  -- A rate of 0 or below (any client with the role can write a heartbeat) counts
                  -- as unpaced: divided by, it failed every planning run and call INSERT.
                  CROSS JOIN LATERAL (SELECT nullif(greatest(CASE p_channel WHEN 'sms' THEN d.sms_rate_per_s
                                                                            ELSE d.push_rate_per_s END, 0), 0) AS rate) r
                  WHERE d.stopped_at IS NULL AND d.heartbeat_at > clock_timestamp() - s.heartbeat_max_age))
    FROM precall.settings s
$function$;

-- The time between two sends on a channel at its capacity (1/capacity, whole microseconds):
-- the step of the layout, in precall.send_layout and in plan_calls' insert alike.
CREATE OR REPLACE FUNCTION precall.send_gap(p_channel text)
 RETURNS interval
 LANGUAGE sql
 STABLE
AS $function$
    SELECT make_interval(secs => (1 / precall.send_capacity(p_channel))::double precision)
$function$;

-- Burst smoothing. On a channel, the queued previews laid out latest first, each at its
-- planned_send_at or 1/capacity before the next one, whichever is earlier:
--     s_1 = p_1,  s_k = min(p_k, s_(k-1) - gap)  =  min over j <= k of (p_j + j*gap) - k*gap
-- (a running minimum: one window function, no loop). At equal planned times the earlier call
-- leaves first. `laid_out` is that time before the max_early floor: a row whose laid_out is
-- earlier than planned_send_at - max_early does not fit (precall.smooth_sends keeps it at the
-- floor; `precall capacity` and `doctor` report it). The layout depends only on the planned
-- times of what is still queued.
CREATE OR REPLACE FUNCTION precall.send_layout(p_channel text)
 RETURNS TABLE(id uuid, call_id uuid, send_at timestamp with time zone, planned_send_at timestamp with time zone, laid_out timestamp with time zone)
 LANGUAGE sql
 STABLE
AS $function$
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
$function$;

-- The queued previews the fleet's capacity cannot send in time even max_early earlier than
-- planned: their layout needed them needed_early before planned_send_at. They wait at the
-- floor (planned_send_at - max_early) and leave as fast as the dispatchers go.
CREATE OR REPLACE FUNCTION precall.previews_beyond_capacity(p_channel text)
 RETURNS TABLE(id uuid, call_id uuid, planned_send_at timestamp with time zone, send_at timestamp with time zone, needed_early interval)
 LANGUAGE sql
 STABLE
AS $function$
    SELECT l.id, l.call_id, l.planned_send_at, l.send_at, l.planned_send_at - l.laid_out
    FROM precall.send_layout(p_channel) l CROSS JOIN precall.settings s
    WHERE l.laid_out < l.planned_send_at - s.max_early
    ORDER BY l.planned_send_at, l.id
$function$;

-- Moves queued previews to their layout (precall.send_layout) within max_early: a burst's
-- excess leaves earlier, never later. Re-running it moves nothing already placed unless previews
-- were added (earlier ones move earlier) or cancelled (they move back toward planned_send_at).
-- Rows another transaction holds (being claimed, cancelled) are skipped, never waited for. The
-- cron run lays out every queued row; a trigger (p_call_ids) only when one of its rows landed
-- in a full second. Returns the earliest send_at a row was moved earlier to (NOTIFY's hint).
--
-- No statement here joins the layout back to notification_logs: the rows were usually inserted
-- by the same transaction, so the planner's statistics say the table holds none of them, and
-- with that estimate it joined 10,000 moved rows by a full index scan per row (33 s at 1M
-- calls). Ids go by array (`id = ANY`, one index probe each) and new times by a jsonb map.
CREATE OR REPLACE FUNCTION precall.smooth_sends(p_call_ids uuid[] DEFAULT NULL)
 RETURNS timestamp with time zone
 LANGUAGE plpgsql
AS $function$
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
$function$;

-- Wakes the dispatchers: a small versioned JSON payload, a hint only (never the truth).
CREATE OR REPLACE FUNCTION precall.notify_due(p_count integer, p_next_send_at timestamp with time zone)
 RETURNS void
 LANGUAGE sql
AS $function$
    SELECT pg_notify('precall_due', json_build_object(
        'v', 1, 'type', 'previews_planned', 'count', p_count,
        'next_send_at', p_next_send_at)::text)
$function$;

-- The pg_cron job: re-weights the Thompson experiments due for it (once a day), then plans every
-- preview due within the lookahead window.
CREATE OR REPLACE FUNCTION precall.plan_due_previews(p_now timestamp with time zone DEFAULT clock_timestamp())
 RETURNS integer
 LANGUAGE sql
AS $function$
    SELECT precall.reallocate_due_experiments(p_now);
    SELECT precall.plan_calls(NULL, p_now)
$function$;

-- Cancels the unsent previews - queued, or claimed and not attempted yet - (and optionally the call job) of one call, leaving the reason.
CREATE OR REPLACE FUNCTION precall.cancel_unsent(p_call_id uuid, p_reason text, p_with_call_job boolean)
 RETURNS integer
 LANGUAGE plpgsql
AS $function$
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
$function$;

-- New calls: plan at once when their preview falls inside the window.
CREATE OR REPLACE FUNCTION precall.tg_scheduled_calls__after_insert()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    -- Pre-filter on the widest window (the longest lead + lookahead) so a bulk load stays cheap.
    PERFORM precall.plan_calls(ARRAY(
        SELECT id FROM new_calls
        WHERE status = 'pending'
          AND scheduled_at <= clock_timestamp() + (SELECT max_lead + lookahead + max_early FROM precall.settings)));
    RETURN NULL;
END
$function$;

-- Moved or cancelled calls: cancel what is unsent, then re-plan for the new time. A person's
-- action (precall.apply_call_action) names itself in precall.change_cause: its rows carry that
-- reason ('user_skipped' instead of 'call_cancelled'), and a call moved to now by 'call me now'
-- gets no preview (its call job is queued by the action).
CREATE OR REPLACE FUNCTION precall.tg_scheduled_calls__after_update()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
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
$function$;

-- A new lead time or preference re-plans that user's unsent previews.
CREATE OR REPLACE FUNCTION precall.tg_users__after_update()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
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
$function$;

-- Seconds until the next preview is due (a queued send_at, or an expiring lease to take over)
-- and until the next call job is (call events wake dispatchers by NOTIFY precall_call_changed,
-- and are looked for about once a second besides: a release that does not deliver them must not
-- see them as due and spin); NULL when nothing is planned. Database clock, so host skew
-- does not matter.
CREATE OR REPLACE FUNCTION precall.next_due(OUT preview_in double precision, OUT call_in double precision)
 RETURNS record
 LANGUAGE plpgsql
 STABLE
AS $function$
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
$function$;

-- The pending calls whose preview falls in the window [p_now, p_now + p_lookahead], for users
-- whose lead is at most p_max_lead minutes, with what planning wrote for each before experiments
-- (planning reads precall.plan_window now; kept for DBAs' queries and the previous release).
CREATE OR REPLACE FUNCTION precall.calls_in_window(p_now timestamp with time zone, p_lookahead interval, p_max_lead integer)
 RETURNS TABLE(call_id uuid, user_id uuid, scheduled_at timestamp with time zone, send_at timestamp with time zone, type text)
 LANGUAGE sql
 STABLE
AS $function$
    SELECT c.id, c.user_id, c.scheduled_at,
           greatest(c.scheduled_at - make_interval(mins => u.notification_lead_min), p_now),
           precall.guess_preview_type(u)
    FROM scheduled_calls c
    JOIN users u ON u.id = c.user_id
    WHERE c.status = 'pending'
      AND c.scheduled_at > p_now
      AND c.scheduled_at <= p_now + p_lookahead + make_interval(mins => p_max_lead)
      AND c.scheduled_at - make_interval(mins => u.notification_lead_min) <= p_now + p_lookahead
$function$;

-- The pending calls whose preview falls in the planning window at p_now (for DBAs: what the
-- next planning run would pick up).
CREATE OR REPLACE FUNCTION precall.calls_in_window(p_now timestamp with time zone)
 RETURNS TABLE(call_id uuid)
 LANGUAGE sql
 STABLE
AS $function$
    SELECT w.call_id
    FROM precall.plan_window(p_now, (SELECT s.lookahead + s.max_early FROM precall.settings s),
                             greatest(coalesce((SELECT max(u.notification_lead_min) FROM users u), 0),
                                      (SELECT max(a.lead_min) FROM precall.experiment_arms a
                                       JOIN precall.running_experiments(p_now) e ON e.id = a.experiment_id)),
                             EXISTS (SELECT 1 FROM precall.running_experiments(p_now))) w
$function$;

-- What planning reads at p_now: the pending calls whose preview falls in the window (the cron
-- run), or the given calls (the triggers, past ones included), with what planning writes for
-- each — under a running experiment, the user's arm (its lead; no preview for the holdout).
-- p_experiments false (no experiment runs) leaves the arm lookup out of the plan.
CREATE OR REPLACE FUNCTION precall.plan_window(p_now timestamp with time zone, p_lookahead interval, p_max_lead integer, p_experiments boolean)
 RETURNS TABLE(call_id uuid, user_id uuid, scheduled_at timestamp with time zone, send_at timestamp with time zone, type text, experiment_id bigint, experiment text, arm text, no_preview boolean, assigned boolean)
 LANGUAGE sql
 STABLE
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION precall.plan_by_id(p_now timestamp with time zone, p_lookahead interval, p_call_ids uuid[], p_experiments boolean)
 RETURNS TABLE(call_id uuid, user_id uuid, scheduled_at timestamp with time zone, send_at timestamp with time zone, type text, experiment_id bigint, experiment text, arm text, no_preview boolean, assigned boolean)
 LANGUAGE sql
 STABLE
AS $function$
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
$function$;

-- The given calls (new or changed rows, from the triggers), past ones included (planning reads
-- precall.plan_by_id now; kept for DBAs' queries and the previous release).
CREATE OR REPLACE FUNCTION precall.calls_by_id_in_window(p_now timestamp with time zone, p_lookahead interval, p_call_ids uuid[])
 RETURNS TABLE(call_id uuid, user_id uuid, scheduled_at timestamp with time zone, send_at timestamp with time zone, type text)
 LANGUAGE sql
 STABLE
AS $function$
    SELECT c.id, c.user_id, c.scheduled_at,
           greatest(c.scheduled_at - make_interval(mins => u.notification_lead_min), p_now),
           precall.guess_preview_type(u)
    FROM scheduled_calls c
    JOIN users u ON u.id = c.user_id
    WHERE c.id = ANY (p_call_ids)
      AND c.status = 'pending'
      AND c.scheduled_at - make_interval(mins => u.notification_lead_min) <= p_now + p_lookahead
$function$;

-- preview_sent(_at) describe the preview for the call's current time: a moved call starts
-- unsent (or sent, when it moves back to a time a preview already went out for).
CREATE OR REPLACE FUNCTION precall.tg_scheduled_calls__before_update()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    SELECT count(*) > 0, min(n.sent_at) INTO NEW.preview_sent, NEW.preview_sent_at
    FROM notification_logs n
    WHERE n.call_id = NEW.id AND n.planned_for = NEW.scheduled_at
      AND n.type IN ('preview_push', 'preview_sms') AND n.sent_at IS NOT NULL;
    RETURN NEW;
END
$function$;

CREATE OR REPLACE TRIGGER _400_preview_sent_follows_time
    BEFORE UPDATE OF scheduled_at ON public.scheduled_calls
    FOR EACH ROW
    WHEN ((old.scheduled_at IS DISTINCT FROM new.scheduled_at))
    EXECUTE FUNCTION precall.tg_scheduled_calls__before_update();

CREATE OR REPLACE TRIGGER _500_plan_previews
    AFTER INSERT ON public.scheduled_calls
    REFERENCING NEW TABLE AS new_calls
    FOR EACH STATEMENT
    EXECUTE FUNCTION precall.tg_scheduled_calls__after_insert();

CREATE OR REPLACE TRIGGER _500_replan_previews
    AFTER UPDATE OF scheduled_at, status ON public.scheduled_calls
    FOR EACH ROW
    WHEN (((old.scheduled_at IS DISTINCT FROM new.scheduled_at) OR ((old.status)::text IS DISTINCT FROM (new.status)::text)))
    EXECUTE FUNCTION precall.tg_scheduled_calls__after_update();

CREATE OR REPLACE TRIGGER _500_replan_previews
    AFTER UPDATE OF notification_lead_min, notification_pref ON public.users
    FOR EACH ROW
    WHEN (((old.notification_lead_min IS DISTINCT FROM new.notification_lead_min) OR ((old.notification_pref)::text IS DISTINCT FROM (new.notification_pref)::text)))
    EXECUTE FUNCTION precall.tg_users__after_update();
