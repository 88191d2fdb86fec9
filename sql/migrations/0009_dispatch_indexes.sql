-- Indexes for what the dispatcher asks before every claim, found by bench/throughput.py.

-- precall.next_due()'s earliest lease to expire: without it, min(lease_expires_at) read every
-- queued row of a burst through the active index (9 ms per call with 10k queued; 796 calls).
CREATE INDEX notification_logs_sending_lease_idx
    ON notification_logs (lease_expires_at) WHERE status = 'sending';

-- The same for call jobs: every planned preview has a queued call job waiting for its T.
CREATE INDEX call_jobs_firing_lease_idx
    ON precall.call_jobs (lease_expires_at) WHERE status = 'firing';
