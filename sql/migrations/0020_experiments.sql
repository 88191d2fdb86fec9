-- Experiments scored on answered calls (issue 19): experiments as data, arms, sticky per-user
-- assignments; every preview row planned under an experiment records it and its arm.
CREATE TABLE precall.experiments (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
    -- Assignment hashes (salt, user id): a new experiment reshuffles users, a re-run does not.
    salt text NOT NULL DEFAULT gen_random_uuid()::text,
    -- {} (everyone), or any of {"locale": "fr", "platform": "ios", "notification_pref": "sms_only"}.
    population jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(population) = 'object'),
    holdout numeric(6, 5) NOT NULL DEFAULT 0 CHECK (holdout >= 0 AND holdout < 1),
    allocation text NOT NULL DEFAULT 'fixed' CHECK (allocation IN ('fixed', 'thompson')),
    floor_share numeric(6, 5) NOT NULL DEFAULT 0.05 CHECK (floor_share >= 0 AND floor_share < 1),
    starts_at timestamptz NOT NULL DEFAULT now(),
    ends_at timestamptz,
    stopped_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at IS NULL OR ends_at > starts_at)
);

-- The arms, holdout first (position 0, no preview), then the control (position 1: the first
-- --arm) and the others. share: the target share of new users.
CREATE TABLE precall.experiment_arms (
    experiment_id bigint NOT NULL REFERENCES precall.experiments (id) ON DELETE CASCADE,
    name text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
    position integer NOT NULL CHECK (position >= 0),
    share numeric(6, 5) NOT NULL CHECK (share > 0 AND share <= 1),
    lead_min integer CHECK (lead_min BETWEEN 1 AND 60),
    channel text CHECK (channel IN ('push', 'sms', 'push_and_sms')),
    variant text CHECK (variant ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    no_preview boolean NOT NULL DEFAULT false,
    PRIMARY KEY (experiment_id, name),
    UNIQUE (experiment_id, position)
);

-- A user's arm, stored when first used (planning) and kept for the experiment's life.
CREATE TABLE precall.experiment_assignments (
    experiment_id bigint NOT NULL REFERENCES precall.experiments (id) ON DELETE CASCADE,
    user_id uuid NOT NULL,
    arm text NOT NULL,
    assigned_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (experiment_id, user_id)
);
CREATE INDEX experiment_assignments_user_idx ON precall.experiment_assignments (user_id);

ALTER TABLE notification_logs
    ADD COLUMN experiment_id bigint,
    ADD COLUMN arm text;
CREATE INDEX notification_logs_experiment_idx ON notification_logs (experiment_id, arm) WHERE experiment_id IS NOT NULL;
