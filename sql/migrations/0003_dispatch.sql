-- Dispatching: claim due previews atomically (SKIP LOCKED + lease), re-checking the call in the
-- same transaction; say when the next one is due.

-- Claims up to p_limit due previews for p_worker. In the same transaction, rows whose call is no
-- longer pending, has moved, is too close, whose receipt arrived (fallback) or which ran out of
-- attempts get their final status and reason; only the rows to send are returned.
CREATE FUNCTION precall.claim_due_previews(p_worker text, p_limit integer)
RETURNS TABLE (
    id uuid, call_id uuid, user_id uuid, type text, parent_id uuid, send_at timestamptz,
    scheduled_at timestamptz, attempts integer, topic text,
    phone_number text, locale text, coach_name text, current_streak integer, fcm_token text,
    platform text, push_enabled boolean, notification_pref text, sms_opted_out boolean
)
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := clock_timestamp();
    v_settings precall.settings;
BEGIN
    SELECT * INTO v_settings FROM precall.settings;
    RETURN QUERY
    WITH due AS (
        SELECT n.id
        FROM notification_logs n
        WHERE n.status IN ('queued', 'sending')
          AND n.send_at <= v_now
          AND (n.status = 'queued' OR n.lease_expires_at < v_now)
        ORDER BY n.send_at
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ), judged AS (
        SELECT n.id,
            CASE
                WHEN c.id IS NULL OR c.status <> 'pending' THEN 'cancelled'
                WHEN c.scheduled_at IS DISTINCT FROM n.planned_for THEN 'cancelled'
                WHEN n.type = 'fallback_sms' AND parent.delivered_at IS NOT NULL THEN 'cancelled'
                WHEN c.scheduled_at - v_now < v_settings.min_notice THEN 'skipped'
                WHEN n.attempts >= v_settings.max_attempts THEN 'failed'
                ELSE 'sending'
            END AS verdict,
            CASE
                WHEN c.id IS NULL THEN 'call_deleted'
                WHEN c.status <> 'pending' THEN 'call_' || c.status
                WHEN c.scheduled_at IS DISTINCT FROM n.planned_for THEN 'rescheduled'
                WHEN n.type = 'fallback_sms' AND parent.delivered_at IS NOT NULL THEN
                    format('receipt_arrived: push delivered at %s', parent.delivered_at)
                WHEN c.scheduled_at - v_now < v_settings.min_notice THEN
                    format('too_late: %s left before the call at send time, cut-off is %s',
                           date_trunc('second', c.scheduled_at - v_now), v_settings.min_notice)
                WHEN n.attempts >= v_settings.max_attempts THEN
                    format('gave_up: %s attempts without an outcome (dispatcher crashed mid-send?)', n.attempts)
            END AS reason
        FROM due
        JOIN notification_logs n ON n.id = due.id
        LEFT JOIN scheduled_calls c ON c.id = n.call_id
        LEFT JOIN notification_logs parent ON parent.id = n.parent_id
    ), claimed AS (
        UPDATE notification_logs n
        SET status = j.verdict,
            reason = coalesce(j.reason, n.reason),
            lease_owner = CASE WHEN j.verdict = 'sending' THEN p_worker END,
            lease_expires_at = CASE WHEN j.verdict = 'sending' THEN v_now + v_settings.lease END,
            attempts = n.attempts + CASE WHEN j.verdict = 'sending' THEN 1 ELSE 0 END,
            updated_at = v_now
        FROM judged j
        WHERE n.id = j.id
        RETURNING n.*
    )
    SELECT cl.id, cl.call_id, cl.user_id, cl.type::text, cl.parent_id, cl.send_at,
           c.scheduled_at, cl.attempts, c.topic::text,
           u.phone_number, u.locale, p.name, u.current_streak, u.fcm_token,
           u.platform, u.push_enabled, u.notification_pref::text, u.sms_opted_out
    FROM claimed cl
    JOIN scheduled_calls c ON c.id = cl.call_id
    JOIN users u ON u.id = cl.user_id
    LEFT JOIN coach_personas p ON p.id = u.coach_persona_id
    WHERE cl.status = 'sending'
    ORDER BY cl.send_at;
END
$$;

-- Seconds until the next preview is due (a queued send_at, or an expiring lease to take over);
-- NULL when nothing is planned. Computed on the database clock, so host clock skew does not matter.
CREATE FUNCTION precall.seconds_until_next_due()
RETURNS double precision LANGUAGE sql STABLE AS $$
    SELECT extract(epoch FROM least(
        (SELECT min(send_at) FROM notification_logs WHERE status = 'queued'),
        (SELECT min(lease_expires_at) FROM notification_logs WHERE status = 'sending')
    ) - clock_timestamp())::double precision
$$;
