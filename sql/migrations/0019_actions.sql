-- Interactive previews (issue 18): the person answers the preview (call now, snooze, skip) from
-- the push or an SMS reply, the call system hears of every reschedule and cancel, and reports each
-- call's outcome back.
--
-- * snooze_minutes: how far a snooze moves the call, counted from its current time. The SMS hint
--   ("Reply 2: +10 min") says it, so it is one fleet-wide number, not per user.
ALTER TABLE precall.settings
    ADD COLUMN snooze_minutes integer NOT NULL DEFAULT 10 CHECK (snooze_minutes BETWEEN 1 AND 60);

-- Every action a person took on a preview, applied or refused: who, on which preview, by which
-- channel, when, and what came of it. At most one applied action per call (the unique index:
-- the database, not the API, decides which of two racing actions wins).
CREATE TABLE precall.call_actions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    call_id uuid NOT NULL,
    user_id uuid NOT NULL,
    notification_id uuid,
    action text NOT NULL CHECK (action IN ('call_now', 'snooze', 'skip')),
    channel text NOT NULL CHECK (channel IN ('push', 'sms')),
    device_id bigint,
    outcome text NOT NULL CHECK (outcome IN ('applied', 'already_acted', 'not_pending', 'too_late')),
    previous_scheduled_at timestamptz,
    scheduled_at timestamptz,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE UNIQUE INDEX call_actions_once_per_call ON precall.call_actions (call_id) WHERE outcome = 'applied';
CREATE INDEX call_actions_user_idx ON precall.call_actions (user_id, at DESC);
CREATE INDEX call_actions_notification_idx ON precall.call_actions (notification_id);
CREATE INDEX call_actions_at_idx ON precall.call_actions (at);

-- The call system's outbox beside the call jobs: one row per reschedule or cancel of a call,
-- whoever made it (an action, the API, the CLI, a DBA's UPDATE), delivered by the dispatchers
-- like a call job (lease, attempts) as the signed webhook's call.rescheduled / call.cancelled.
CREATE TABLE precall.call_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    call_id uuid NOT NULL,
    user_id uuid NOT NULL,
    event text NOT NULL CHECK (event IN ('call.rescheduled', 'call.cancelled')),
    previous_scheduled_at timestamptz,
    scheduled_at timestamptz NOT NULL,
    cause text,
    status text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'firing', 'delivered', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    lease_owner text,
    lease_expires_at timestamptz,
    outcome text,
    delivered_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX call_events_undelivered_idx ON precall.call_events (call_id, id) WHERE status IN ('queued', 'firing');
CREATE INDEX call_events_created_idx ON precall.call_events (created_at);

-- What the call system reported for a call (POST /api/v1/calls/{id}/outcome): the status it set
-- on scheduled_calls, and who answered (a machine's answer is not an answered call).
CREATE TABLE precall.call_outcomes (
    call_id uuid PRIMARY KEY,
    status text NOT NULL CHECK (status IN ('answered', 'no_answer', 'failed')),
    answered_by text NOT NULL CHECK (answered_by IN ('human', 'machine', 'unknown')),
    at timestamptz,
    received_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Inbound texts now answer: an action's confirmation, or a help text (at most one per number and
-- day). The reply is an SMS Twilio bills: its text, size and estimated cost are kept here.
ALTER TABLE precall.sms_inbound
    ADD COLUMN call_action_id uuid,
    ADD COLUMN reply text CHECK (reply IN ('confirmation', 'refused', 'help')),
    ADD COLUMN reply_body text,
    ADD COLUMN reply_encoding varchar(8),
    ADD COLUMN reply_segments integer,
    ADD COLUMN reply_cost numeric(10, 4),
    ADD COLUMN reply_currency char(3);
CREATE INDEX sms_inbound_from_idx ON precall.sms_inbound (from_number, received_at);
