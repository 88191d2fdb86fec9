-- Capacity: which planned previews would miss their call under a provider rate limit.

-- The queued previews on p_channel ('push' or 'sms') that, sent in send_at order at
-- p_per_second in total (all dispatchers together), could not leave before their call's cut-off
-- (scheduled_at - min_notice). projected_at is when each would leave: the k-th row at
-- max over earlier rows j of (send_at_j + (k - j) / rate).
CREATE FUNCTION precall.previews_at_risk(p_per_second numeric, p_channel text DEFAULT 'push')
RETURNS TABLE (id uuid, call_id uuid, send_at timestamptz, projected_at timestamptz,
               scheduled_at timestamptz, late_by interval)
LANGUAGE sql STABLE AS $$
    WITH q AS (
        SELECT n.id, n.call_id, n.send_at, c.scheduled_at,
               (row_number() OVER w - 1) / p_per_second AS k_s
        FROM notification_logs n
        JOIN scheduled_calls c ON c.id = n.call_id
        WHERE n.status = 'queued' AND n.channel = p_channel
        WINDOW w AS (ORDER BY n.send_at, n.id)
    ), projected AS (
        SELECT q.*, to_timestamp(q.k_s + max(extract(epoch FROM q.send_at) - q.k_s)
                    OVER (ORDER BY q.send_at, q.id ROWS UNBOUNDED PRECEDING)) AS projected_at
        FROM q
    )
    SELECT p.id, p.call_id, p.send_at, p.projected_at, p.scheduled_at,
           p.projected_at - (p.scheduled_at - s.min_notice)
    FROM projected p CROSS JOIN precall.settings s
    WHERE p.projected_at > p.scheduled_at - s.min_notice
    ORDER BY p.send_at, p.id
$$;
