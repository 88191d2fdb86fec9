-- One shape for a claimed preview and one for a claim's verdict.
--
-- The claimed-preview row (the preview plus the call and the user as they are now) was written
-- out as a RETURNS TABLE list in three functions; it is now the type precall.claimed_preview,
-- built in one place (precall.claimed_preview_of() in sql/functions/dispatch.sql). A function's
-- declared return type cannot change under CREATE OR REPLACE, so the claims that return it get
-- versioned names (claim_due_previews_v2, claim_manual_preview_v2); the old names stay, as thin
-- wrappers returning the same columns, for dispatchers of the previous release during a rolling
-- upgrade (tests/test_rolling_upgrade.py), until a later release drops them.
CREATE TYPE precall.claimed_preview AS (
    id uuid,
    call_id uuid,
    user_id uuid,
    type text,
    parent_id uuid,
    send_at timestamptz,
    scheduled_at timestamptz,
    attempts integer,
    topic text,
    phone_number text,
    locale text,
    coach_name text,
    current_streak integer,
    fcm_token text,
    platform text,
    push_enabled boolean,
    notification_pref text,
    sms_opted_out boolean
);

-- What a claim decides for one due row: the status it gets and, unless it goes out, why.
CREATE TYPE precall.claim_verdict AS (
    verdict text,
    reason text
);
