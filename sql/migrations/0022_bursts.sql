-- Bursts (issue 20): coaching calls cluster at :00 and :30. Planning knows how fast the fleet
-- can send and moves the excess of a burst earlier (never later), within max_early; dispatchers
-- claim a little ahead of send_at and fire on the instant.
--
-- * push_capacity_per_s / sms_capacity_per_s: the fleet's sustained send rate per channel (set
--   them from `make bench-throughput` and the provider account's limits); capped by the rates
--   live dispatchers report when they are paced (precall.dispatchers.*_rate_per_s).
-- * max_early: how much earlier than T - lead a preview may leave when its second is full.
-- * claim_ahead: how long before send_at a dispatcher may claim a row, to have the request built
--   when the instant comes. A claimed row stays cancellable until its attempted_at is written.
ALTER TABLE precall.settings
    ADD COLUMN push_capacity_per_s numeric NOT NULL DEFAULT 400 CHECK (push_capacity_per_s > 0),
    ADD COLUMN sms_capacity_per_s numeric NOT NULL DEFAULT 1 CHECK (sms_capacity_per_s > 0),
    ADD COLUMN max_early interval NOT NULL DEFAULT '2 minutes'
        CHECK (max_early >= interval '0' AND max_early <= interval '1 hour'),
    ADD COLUMN claim_ahead interval NOT NULL DEFAULT '200 milliseconds'
        CHECK (claim_ahead >= interval '0' AND claim_ahead <= interval '5 seconds');

-- What planning first chose for a preview (T - lead, or the planning time when later): send_at
-- may be earlier when the burst smoothing moved it. NULL on rows planned before this release.
ALTER TABLE public.notification_logs ADD COLUMN planned_send_at timestamptz;
UPDATE public.notification_logs SET planned_send_at = send_at
WHERE status = 'queued' AND type IN ('preview_push', 'preview_sms');

-- A paced dispatcher's rate per channel (PRECALL_FCM_RATE_PER_S, PRECALL_TWILIO_RATE_PER_S), NULL
-- when unpaced; sent with every heartbeat.
ALTER TABLE precall.dispatchers
    ADD COLUMN push_rate_per_s numeric,
    ADD COLUMN sms_rate_per_s numeric;
