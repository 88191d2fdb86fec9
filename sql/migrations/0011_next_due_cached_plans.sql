-- precall.next_due() in PL/pgSQL, whose statement plans are cached per connection.
--
-- As a SQL function (0004) its four subqueries were planned again on every call: ~0.5-0.9 ms,
-- against ~0.17 ms now. The dispatcher asks before every claim and after every wake-up: in
-- bench/throughput.py --spread-s 600 it ran 47 times a second and took half of PostgreSQL's CPU.

-- Seconds until the next preview is due (a queued send_at, or an expiring lease to take over)
-- and until the next call job is; NULL when nothing is planned. Database clock, so host skew
-- does not matter.
CREATE OR REPLACE FUNCTION precall.next_due(OUT preview_in double precision, OUT call_in double precision)
LANGUAGE plpgsql STABLE AS $$
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
$$;
