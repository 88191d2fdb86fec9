-- Many devices per user, per-device push outcomes, SMS consent from inbound texts, channel
-- switches and an SMS budget (issue 17).
--
-- precall.devices is where push tokens live now: one row per installed app, a token belongs to
-- one user at a time (unique). users.fcm_token / platform / push_enabled stay, as a summary the
-- device triggers keep (the most recently seen enabled device; push_enabled = any device can
-- take a push), so the channel rule, the planner and apps or DBAs that read or write those columns
-- keep working: writing users.fcm_token upserts that device, users.push_enabled = false disables
-- every device of the user (sql/functions/devices.sql).
CREATE TABLE precall.devices (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    fcm_token text NOT NULL UNIQUE,
    platform text,
    push_enabled boolean NOT NULL DEFAULT true,
    -- Why push_enabled is false: 'dead_token: UNREGISTERED', 'users.push_enabled', 'app'.
    disabled_reason text,
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX devices_user_idx ON precall.devices (user_id, last_seen_at DESC);
-- Retention's stale-device sweep.
CREATE INDEX devices_last_seen_idx ON precall.devices (last_seen_at);

-- Every user's current token is their first device (no trigger runs here: the summary already
-- matches). users_fcm_token_key (0012) guarantees one user per token.
INSERT INTO precall.devices (user_id, fcm_token, platform, push_enabled, disabled_reason)
SELECT id, fcm_token, platform, coalesce(push_enabled, false),
       CASE WHEN NOT coalesce(push_enabled, false) THEN 'users.push_enabled' END
FROM users
WHERE coalesce(fcm_token, '') <> ''
ON CONFLICT (fcm_token) DO NOTHING;

-- One preview push is one notification_logs row (the user's history, receipts, Path C) and one
-- row here per device it went to: its own outcome, FCM message id and receipt. The primary key
-- makes each device get a preview once: notification_logs already holds one preview per call and
-- kind (notification_logs_one_active_per_call), so this is one per call, kind and device.
-- device_id is not a foreign key: the outcome outlives a pruned or unregistered device.
CREATE TABLE precall.push_deliveries (
    notification_id uuid NOT NULL REFERENCES notification_logs (id) ON DELETE CASCADE,
    device_id bigint NOT NULL,
    platform text,
    status text NOT NULL CHECK (status IN ('sent', 'failed', 'dead')),
    provider_id text,
    error text,
    attempted_at timestamptz,
    sent_at timestamptz,
    delivered_at timestamptz,
    opened_at timestamptz,
    PRIMARY KEY (notification_id, device_id)
);

-- Inbound texts from Twilio (the consent webhook): STOP / START and their synonyms change
-- users.sms_opted_out, anything else is kept for support. Idempotent on the MessageSid.
CREATE TABLE precall.sms_inbound (
    message_sid text PRIMARY KEY,
    from_number text NOT NULL,
    body text NOT NULL,
    action text CHECK (action IN ('opt_out', 'opt_in')),
    users_changed integer NOT NULL DEFAULT 0,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sms_inbound_received_idx ON precall.sms_inbound (received_at);

-- What SMS cost per UTC day and currency, kept by the write-back (precall.record_sent_batch), so
-- the budget check reads one row instead of summing the day's SMS.
CREATE TABLE precall.sms_spend (
    day date NOT NULL,
    currency char(3) NOT NULL,
    amount numeric(12, 4) NOT NULL DEFAULT 0,
    messages integer NOT NULL DEFAULT 0,
    PRIMARY KEY (day, currency)
);
INSERT INTO precall.sms_spend (day, currency, amount, messages)
SELECT (sent_at AT TIME ZONE 'UTC')::date, cost_currency, sum(cost_estimate), count(*)
FROM notification_logs
WHERE channel = 'sms' AND sent_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
  AND cost_estimate IS NOT NULL AND cost_currency IS NOT NULL
GROUP BY 1, 2;

-- Fleet policy for devices and channels:
-- * device_stale_after: a device not seen for this long gets no push and is pruned by retention;
-- * push_enabled / sms_enabled: switch a channel off for everyone; a preview on a switched-off
--   channel is skipped (channel_disabled), never moved to the other channel;
-- * sms_daily_budget: e.g. {"EUR": 50}, per UTC day; past it, fallback SMS are skipped
--   (sms_budget) while first-channel SMS still go. NULL: no budget.
ALTER TABLE precall.settings
    ADD COLUMN device_stale_after interval NOT NULL DEFAULT '60 days'
        CHECK (device_stale_after >= '1 day'),
    ADD COLUMN push_enabled boolean NOT NULL DEFAULT true,
    ADD COLUMN sms_enabled boolean NOT NULL DEFAULT true,
    ADD COLUMN sms_daily_budget jsonb
        CHECK (sms_daily_budget IS NULL OR (jsonb_typeof(sms_daily_budget) = 'object'
               AND NOT jsonb_path_exists(sms_daily_budget, '$.* ? (@.type() != "number" || @ < 0)')));

-- Inbound STOP / START find the user by the number they texted from.
CREATE INDEX IF NOT EXISTS users_phone_number_idx ON users (phone_number) WHERE phone_number IS NOT NULL;
