-- Path C receipts, the call job at T, and dispatcher heartbeats.

-- A receipt that came after the fallback SMS left: the user got both (the stats count it).
ALTER TABLE notification_logs ADD COLUMN late_receipt boolean NOT NULL DEFAULT false;

-- Records the app's delivery receipt for a push (the notification_id from its data). Cancels the
-- planned fallback SMS when it has not left yet. Returns 'on_time', 'late', 'duplicate' or 'unknown'.
CREATE FUNCTION precall.record_receipt(p_notification_id uuid, p_at timestamptz DEFAULT clock_timestamp())
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_push notification_logs;
    v_fallback_gone boolean;
BEGIN
    SELECT * INTO v_push FROM notification_logs
    WHERE id = p_notification_id AND channel = 'push'
    FOR UPDATE;
    IF NOT FOUND OR v_push.status NOT IN ('sent', 'delivered', 'opened') THEN
        RETURN 'unknown';
    END IF;
    IF v_push.delivered_at IS NOT NULL THEN
        RETURN 'duplicate';
    END IF;
    -- Cancel a fallback still waiting; one already claimed or sent cannot be stopped.
    UPDATE notification_logs
    SET status = 'cancelled', reason = format('receipt_arrived: push delivered at %s', p_at), updated_at = clock_timestamp()
    WHERE parent_id = p_notification_id AND type = 'fallback_sms' AND status = 'queued';
    SELECT EXISTS (
        SELECT 1 FROM notification_logs
        WHERE parent_id = p_notification_id AND type = 'fallback_sms' AND status IN ('sending', 'sent', 'delivered', 'opened')
    ) INTO v_fallback_gone;
    UPDATE notification_logs
    SET status = CASE WHEN status = 'sent' THEN 'delivered' ELSE status END,
        delivered_at = p_at, late_receipt = v_fallback_gone, updated_at = clock_timestamp()
    WHERE id = p_notification_id;
    RETURN CASE WHEN v_fallback_gone THEN 'late' ELSE 'on_time' END;
END
$$;

-- Claims the call jobs due now; a call that is no longer pending (or moved) is never fired.
CREATE FUNCTION precall.claim_due_calls(p_worker text, p_limit integer)
RETURNS TABLE (call_id uuid, user_id uuid, scheduled_at timestamptz, due_at timestamptz, attempts integer)
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := clock_timestamp();
    v_settings precall.settings;
BEGIN
    SELECT * INTO v_settings FROM precall.settings;
    RETURN QUERY
    WITH due AS (
        SELECT j.call_id
        FROM precall.call_jobs j
        WHERE j.status IN ('queued', 'firing') AND j.due_at <= v_now
          AND (j.status = 'queued' OR j.lease_expires_at < v_now)
        ORDER BY j.due_at
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ), judged AS (
        SELECT j.call_id,
            CASE
                WHEN c.status IS DISTINCT FROM 'pending' THEN 'cancelled'
                WHEN c.scheduled_at <> j.due_at THEN 'cancelled'
                WHEN j.attempts >= v_settings.max_attempts THEN 'failed'
                ELSE 'firing'
            END AS verdict,
            CASE
                WHEN c.status IS DISTINCT FROM 'pending' THEN 'call_' || coalesce(c.status, 'deleted')
                WHEN c.scheduled_at <> j.due_at THEN 'rescheduled'
                WHEN j.attempts >= v_settings.max_attempts THEN format('gave_up: %s attempts', j.attempts)
            END AS reason
        FROM due
        JOIN precall.call_jobs j ON j.call_id = due.call_id
        LEFT JOIN scheduled_calls c ON c.id = j.call_id
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

-- Records a fired call: NOTIFY precall_call_due for in-database listeners, and the outcome.
CREATE FUNCTION precall.record_call_fired(p_call_id uuid, p_worker text, p_ok boolean, p_outcome text)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    UPDATE precall.call_jobs
    SET status = CASE WHEN p_ok THEN 'fired' ELSE 'failed' END, outcome = p_outcome,
        fired_at = clock_timestamp(), lease_owner = NULL, lease_expires_at = NULL, updated_at = clock_timestamp()
    WHERE call_id = p_call_id AND status = 'firing' AND lease_owner = p_worker;
    RETURN FOUND;
END
$$;

-- Seconds until the next preview and the next call job are due, leases to take over included
-- (database clock, so host clock skew does not matter); NULL when nothing is planned.
CREATE FUNCTION precall.next_due(OUT preview_in double precision, OUT call_in double precision)
LANGUAGE sql STABLE AS $$
    SELECT
        extract(epoch FROM least(
            (SELECT min(send_at) FROM notification_logs WHERE status = 'queued'),
            (SELECT min(lease_expires_at) FROM notification_logs WHERE status = 'sending')
        ) - clock_timestamp())::double precision,
        extract(epoch FROM least(
            (SELECT min(due_at) FROM precall.call_jobs WHERE status = 'queued'),
            (SELECT min(lease_expires_at) FROM precall.call_jobs WHERE status = 'firing')
        ) - clock_timestamp())::double precision
$$;

-- Superseded by precall.next_due().
DROP FUNCTION precall.seconds_until_next_due();

-- One row per dispatcher process, refreshed while it runs (read by `precall doctor`).
CREATE TABLE precall.dispatchers (
    name text PRIMARY KEY,
    hostname text NOT NULL,
    pid integer NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    stopped_at timestamptz
);

-- Upserts a dispatcher's heartbeat (p_stopped marks a clean exit).
CREATE FUNCTION precall.heartbeat(p_name text, p_hostname text, p_pid integer, p_stopped boolean DEFAULT false)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO precall.dispatchers (name, hostname, pid)
    VALUES (p_name, p_hostname, p_pid)
    ON CONFLICT (name) DO UPDATE
        SET heartbeat_at = clock_timestamp(),
            stopped_at = CASE WHEN p_stopped THEN clock_timestamp() END
$$;
