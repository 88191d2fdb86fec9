-- precall tables: creates users / coach_personas / scheduled_calls / notification_logs,
-- or adopts them when the app database already has them (adds missing columns with
-- defaults, keeps every row, refuses on incompatible types or unknown statuses).

CREATE SCHEMA IF NOT EXISTS precall;

-- Refuse, in one line, to adopt tables whose shape we cannot keep without guessing.
DO $$
DECLARE
    v_problems text[] := '{}';
    v_type text;
    v_bad text;
BEGIN
    FOR v_type, v_bad IN
        SELECT format_type(a.atttypid, a.atttypmod), c.relname || '.' || a.attname
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = current_schema()
          AND (c.relname, a.attname) IN (('users', 'id'), ('scheduled_calls', 'id'),
                                         ('scheduled_calls', 'user_id'), ('notification_logs', 'id'),
                                         ('notification_logs', 'user_id'), ('notification_logs', 'call_id'))
          AND a.attnum > 0 AND NOT a.attisdropped
          AND a.atttypid <> 'uuid'::regtype
    LOOP
        v_problems := v_problems || format('%s is %s, precall needs uuid', v_bad, v_type);
    END LOOP;

    SELECT format_type(a.atttypid, a.atttypmod) INTO v_type
    FROM pg_attribute a
    WHERE a.attrelid = to_regclass('scheduled_calls') AND a.attname = 'scheduled_at' AND NOT a.attisdropped;
    IF v_type IS NOT NULL AND v_type <> 'timestamp with time zone' THEN
        v_problems := v_problems || format('scheduled_calls.scheduled_at is %s, precall needs timestamptz', v_type);
    END IF;

    IF to_regclass('scheduled_calls') IS NOT NULL AND EXISTS (
        SELECT 1 FROM pg_attribute
        WHERE attrelid = to_regclass('scheduled_calls') AND attname = 'status' AND NOT attisdropped
    ) THEN
        EXECUTE $q$
            SELECT string_agg(DISTINCT quote_literal(status::text), ', ' ORDER BY quote_literal(status::text))
            FROM scheduled_calls
            WHERE status::text NOT IN ('pending', 'in_progress', 'answered', 'no_answer', 'cancelled', 'failed')
               OR status IS NULL
        $q$ INTO v_bad;
        IF v_bad IS NOT NULL THEN
            v_problems := v_problems || format(
                'scheduled_calls.status holds values outside pending/in_progress/answered/no_answer/cancelled/failed: %s',
                v_bad);
        END IF;
    END IF;

    IF cardinality(v_problems) > 0 THEN
        RAISE EXCEPTION 'precall cannot adopt the existing tables: %', array_to_string(v_problems, '; ')
            USING HINT = 'Map or convert these yourself, then run precall db migrate again.';
    END IF;
END
$$;

-- Adds a constraint only when a constraint of that name is not there yet (adoption-safe).
CREATE FUNCTION precall._add_constraint(p_table regclass, p_name text, p_definition text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = p_table AND conname = p_name) THEN
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s', p_table, p_name, p_definition);
    END IF;
END
$$;

CREATE TABLE IF NOT EXISTS coach_personas (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid()
);
ALTER TABLE coach_personas ADD COLUMN IF NOT EXISTS name text NOT NULL DEFAULT 'Max';
ALTER TABLE coach_personas ALTER COLUMN name DROP DEFAULT;
-- The bare name: templates add "Coach"; 24 keeps every SMS within one segment.
SELECT precall._add_constraint('coach_personas', 'coach_personas_name_len', 'CHECK (char_length(name) BETWEEN 1 AND 24)');

CREATE TABLE IF NOT EXISTS users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid()
);
ALTER TABLE users
    ADD COLUMN IF NOT EXISTS phone_number text,
    ADD COLUMN IF NOT EXISTS locale text NOT NULL DEFAULT 'en',
    ADD COLUMN IF NOT EXISTS timezone text NOT NULL DEFAULT 'UTC',
    ADD COLUMN IF NOT EXISTS coach_persona_id uuid REFERENCES coach_personas(id) ON DELETE SET NULL,
    ADD COLUMN IF NOT EXISTS current_streak integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS fcm_token text,
    ADD COLUMN IF NOT EXISTS platform text,
    ADD COLUMN IF NOT EXISTS push_enabled boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS notification_pref varchar(20) NOT NULL DEFAULT 'push_only',
    ADD COLUMN IF NOT EXISTS notification_lead_min integer NOT NULL DEFAULT 5,
    ADD COLUMN IF NOT EXISTS sms_opted_out boolean NOT NULL DEFAULT false;
-- NOT VALID: rows an existing app already holds are kept as they are (the dispatcher
-- records a malformed one as failed); every new or changed row is checked.
SELECT precall._add_constraint('users', 'users_phone_e164', $c$CHECK (phone_number ~ '^\+[1-9][0-9]{6,14}$') NOT VALID$c$);
SELECT precall._add_constraint('users', 'users_platform', $c$CHECK (platform IN ('ios', 'android')) NOT VALID$c$);
SELECT precall._add_constraint('users', 'users_notification_pref',
    $c$CHECK (notification_pref IN ('push_only', 'sms_only', 'push_and_sms')) NOT VALID$c$);
SELECT precall._add_constraint('users', 'users_notification_lead_min', 'CHECK (notification_lead_min BETWEEN 1 AND 60) NOT VALID');

CREATE TABLE IF NOT EXISTS scheduled_calls (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    scheduled_at timestamptz NOT NULL
);
ALTER TABLE scheduled_calls
    ADD COLUMN IF NOT EXISTS status varchar(20) NOT NULL DEFAULT 'pending',
    ADD COLUMN IF NOT EXISTS topic varchar(100),
    ADD COLUMN IF NOT EXISTS preview_sent boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS preview_sent_at timestamptz;
SELECT precall._add_constraint('scheduled_calls', 'scheduled_calls_status',
    $c$CHECK (status IN ('pending', 'in_progress', 'answered', 'no_answer', 'cancelled', 'failed'))$c$);
CREATE INDEX IF NOT EXISTS scheduled_calls_user_idx ON scheduled_calls (user_id, scheduled_at);
-- The planning scan reads pending calls in a time window: its cost follows the calls
-- due soon, not the size of the table (asserted with EXPLAIN in tests).
CREATE INDEX IF NOT EXISTS scheduled_calls_pending_due_idx ON scheduled_calls (scheduled_at) WHERE status = 'pending';

CREATE TABLE IF NOT EXISTS notification_logs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    call_id uuid REFERENCES scheduled_calls(id) ON DELETE CASCADE,
    type varchar(20) NOT NULL,
    channel varchar(10),
    status varchar(20) NOT NULL,
    title text,
    body text,
    provider_id varchar(100),
    error_msg text,
    sent_at timestamptz,
    delivered_at timestamptz,
    opened_at timestamptz,
    created_at timestamptz DEFAULT now()
);
-- The spec's channel is NOT NULL; relaxed so a preview that found no channel at all can
-- still leave its 'skipped' row (and a queued row may not know its channel yet).
ALTER TABLE notification_logs ALTER COLUMN channel DROP NOT NULL;
ALTER TABLE notification_logs
    ADD COLUMN IF NOT EXISTS reason text,
    ADD COLUMN IF NOT EXISTS send_at timestamptz,
    ADD COLUMN IF NOT EXISTS attempted_at timestamptz,
    ADD COLUMN IF NOT EXISTS planned_for timestamptz,
    ADD COLUMN IF NOT EXISTS lease_owner text,
    ADD COLUMN IF NOT EXISTS lease_expires_at timestamptz,
    ADD COLUMN IF NOT EXISTS attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS parent_id uuid REFERENCES notification_logs(id) ON DELETE SET NULL,
    ADD COLUMN IF NOT EXISTS sms_encoding varchar(8),
    ADD COLUMN IF NOT EXISTS sms_segments integer,
    ADD COLUMN IF NOT EXISTS cost_estimate numeric(10, 4),
    ADD COLUMN IF NOT EXISTS cost_currency char(3),
    ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now();
SELECT precall._add_constraint('notification_logs', 'notification_logs_type',
    $c$CHECK (type IN ('preview_push', 'preview_sms', 'fallback_sms'))$c$);
SELECT precall._add_constraint('notification_logs', 'notification_logs_channel',
    $c$CHECK (channel IN ('push', 'sms') OR (channel IS NULL AND status IN ('queued', 'skipped', 'cancelled', 'failed')))$c$);
SELECT precall._add_constraint('notification_logs', 'notification_logs_status',
    $c$CHECK (status IN ('queued', 'sending', 'sent', 'delivered', 'failed', 'opened', 'skipped', 'cancelled'))$c$);
SELECT precall._add_constraint('notification_logs', 'notification_logs_planned',
    $c$CHECK (status NOT IN ('queued', 'sending') OR (send_at IS NOT NULL AND call_id IS NOT NULL))$c$);
SELECT precall._add_constraint('notification_logs', 'notification_logs_sms_encoding',
    $c$CHECK (sms_encoding IN ('GSM-7', 'UCS-2'))$c$);

CREATE INDEX IF NOT EXISTS idx_notif_user ON notification_logs (user_id, created_at DESC);
CREATE INDEX IF NOT EXISTS idx_notif_call ON notification_logs (call_id);
-- What the dispatcher claims next: only the few active rows are in this index.
CREATE INDEX IF NOT EXISTS notification_logs_active_send_at_idx
    ON notification_logs (send_at) WHERE status IN ('queued', 'sending');
-- Once means once. A preview and its fallback are separate kinds; the stronger
-- (call, kind) key implies "one per call and type".
CREATE UNIQUE INDEX IF NOT EXISTS notification_logs_one_active_per_call
    ON notification_logs (call_id, (type = 'fallback_sms')) WHERE status IN ('queued', 'sending');
-- A preview already sent for 07:00 does not block one for the call moved to 09:00.
CREATE UNIQUE INDEX IF NOT EXISTS notification_logs_one_sent_per_call_time
    ON notification_logs (call_id, (type = 'fallback_sms'), planned_for) WHERE status IN ('sent', 'delivered', 'opened');
