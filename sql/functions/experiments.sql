-- Experiments: who is in which, which arm a user is assigned, what planning applies, and the
-- report (precall.experiment_report) that scores arms on answered calls.
--
-- The current definition of each object below; `precall db migrate` re-applies this file when it
-- changes (after the numbered migrations). Edit here, never in sql/migrations/.

-- Whether a user belongs to a population ({} is everyone; locale matches exactly or by base
-- language: "fr" takes fr-CA; platform 'none' is a user without one).
CREATE OR REPLACE FUNCTION precall.in_population(p_population jsonb, p_locale text, p_platform text, p_pref text)
 RETURNS boolean
 LANGUAGE sql
 IMMUTABLE
AS $function$
    SELECT (p_population ->> 'locale' IS NULL
            OR lower(replace(coalesce(p_locale, ''), '_', '-')) = lower(p_population ->> 'locale')
            OR split_part(lower(replace(coalesce(p_locale, ''), '_', '-')), '-', 1) = lower(p_population ->> 'locale'))
       AND (p_population ->> 'platform' IS NULL OR coalesce(p_platform, 'none') = p_population ->> 'platform')
       AND (p_population ->> 'notification_pref' IS NULL OR p_pref = p_population ->> 'notification_pref')
$function$;

-- Where a user falls in [0, 1) for an experiment: the first 52 bits of md5(salt ':' user id).
-- Reproducible anywhere (tests recompute it in Python), and independent between experiments.
CREATE OR REPLACE FUNCTION precall.assignment_point(p_salt text, p_user uuid)
 RETURNS double precision
 LANGUAGE sql
 IMMUTABLE
AS $function$
    SELECT ('x' || substr(md5(p_salt || ':' || p_user::text), 1, 13))::bit(52)::bigint / 4503599627370496.0::float8
$function$;

-- The experiments running at p_now.
CREATE OR REPLACE FUNCTION precall.running_experiments(p_now timestamp with time zone)
 RETURNS SETOF precall.experiments
 LANGUAGE sql
 STABLE
AS $function$
    SELECT * FROM precall.experiments e
    WHERE e.stopped_at IS NULL AND e.starts_at <= p_now AND (e.ends_at IS NULL OR e.ends_at > p_now)
$function$;

-- The arm a user is in at p_now: the stored assignment, else where assignment_point falls among
-- the arms' shares (holdout first, then by position); no row when no running experiment takes
-- the user (or the shares leave them out). `assigned`: already stored.
CREATE OR REPLACE FUNCTION precall.experiment_arm_of(p_user uuid, p_locale text, p_platform text, p_pref text, p_now timestamp with time zone)
 RETURNS TABLE(experiment_id bigint, experiment text, arm text, lead_min integer, no_preview boolean, assigned boolean)
 LANGUAGE sql
 STABLE
AS $function$
    SELECT e.id, e.name, a.name, a.lead_min, a.no_preview, s.arm IS NOT NULL
    FROM precall.running_experiments(p_now) e
    LEFT JOIN precall.experiment_assignments s ON s.experiment_id = e.id AND s.user_id = p_user
    JOIN LATERAL (
        SELECT x.* FROM (
            SELECT r.*, sum(r.share) OVER (ORDER BY r.position) AS upto
            FROM precall.experiment_arms r WHERE r.experiment_id = e.id) x
        WHERE CASE WHEN s.arm IS NOT NULL THEN x.name = s.arm
                   ELSE precall.assignment_point(e.salt, p_user) < x.upto END
        ORDER BY x.position LIMIT 1) a ON true
    WHERE s.arm IS NOT NULL OR precall.in_population(e.population, p_locale, p_platform, p_pref)
    ORDER BY e.id
    LIMIT 1
$function$;

-- Creates an experiment from its arms (JSON: [{"name", "share"?, "lead_min"?, "channel"?,
-- "variant"?, "none"?}], the first is the control), refusing with one line (SQLSTATE PC010)
-- whatever would not run as asked: a reserved or repeated arm name, an unknown key, a lead outside
-- 1..precall.settings.max_lead, shares over 1 with the holdout, an arm left with no share, a
-- population key other than locale / platform / notification_pref, or an overlap with a running
-- or scheduled experiment (one experiment per user at a time). Arms without a share split what
-- the holdout and the shared arms leave, equally. Returns the experiment's id.
CREATE OR REPLACE FUNCTION precall.create_experiment(p_name text, p_arms jsonb, p_holdout numeric DEFAULT 0, p_population jsonb DEFAULT '{}'::jsonb, p_starts_at timestamp with time zone DEFAULT now(), p_ends_at timestamp with time zone DEFAULT NULL::timestamp with time zone, p_allocation text DEFAULT 'fixed'::text)
 RETURNS bigint
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_id bigint;
    v_arm jsonb;
    v_key text;
    v_names text[] := '{}';
    v_shared numeric := 0;
    v_unshared integer := 0;
    v_rest numeric;
    v_each numeric;
    v_share numeric;
    v_pos integer := 0;
    v_max_lead integer := (SELECT extract(epoch FROM max_lead)::integer / 60 FROM precall.settings);
    v_other precall.experiments;
BEGIN
    IF jsonb_typeof(p_arms) IS DISTINCT FROM 'array' OR jsonb_array_length(p_arms) = 0 THEN
        RAISE EXCEPTION 'give at least one arm (the first is the control)' USING ERRCODE = 'PC010';
    END IF;
    IF p_allocation IS NULL OR p_allocation NOT IN ('fixed', 'thompson') THEN
        RAISE EXCEPTION 'allocation % is not fixed or thompson', quote_nullable(p_allocation) USING ERRCODE = 'PC010';
    ELSIF p_allocation = 'thompson' AND jsonb_array_length(p_arms) < 2 THEN
        RAISE EXCEPTION 'thompson allocation needs at least two arms to weigh' USING ERRCODE = 'PC010';
    END IF;
    IF p_holdout IS NULL OR p_holdout < 0 OR p_holdout >= 1 THEN
        RAISE EXCEPTION 'the holdout share must be in [0, 1), not %', p_holdout USING ERRCODE = 'PC010';
    END IF;
    FOR v_key IN SELECT jsonb_object_keys(coalesce(p_population, '{}')) LOOP
        IF v_key NOT IN ('locale', 'platform', 'notification_pref') THEN
            RAISE EXCEPTION 'unknown population key %: use locale, platform or notification_pref', v_key USING ERRCODE = 'PC010';
        END IF;
    END LOOP;
    FOR v_arm IN SELECT * FROM jsonb_array_elements(p_arms) LOOP
        FOR v_key IN SELECT jsonb_object_keys(v_arm) LOOP
            IF v_key NOT IN ('name', 'share', 'lead_min', 'channel', 'variant', 'none') THEN
                RAISE EXCEPTION 'arm %: unknown key % (use share, lead_min, channel, variant or none)', v_arm ->> 'name', v_key
                    USING ERRCODE = 'PC010';
            END IF;
        END LOOP;
        IF v_arm ->> 'name' IS NULL OR v_arm ->> 'name' !~ '^[a-z0-9][a-z0-9_.-]{0,62}$' THEN
            RAISE EXCEPTION 'arm name % is not a lower-case name', coalesce(v_arm ->> 'name', '(none)') USING ERRCODE = 'PC010';
        ELSIF v_arm ->> 'name' = 'holdout' THEN
            RAISE EXCEPTION 'holdout is a reserved arm name (use --holdout for its share)' USING ERRCODE = 'PC010';
        ELSIF v_arm ->> 'name' = ANY (v_names) THEN
            RAISE EXCEPTION 'arm % is named twice', v_arm ->> 'name' USING ERRCODE = 'PC010';
        ELSIF (v_arm ->> 'lead_min') IS NOT NULL AND ((v_arm ->> 'lead_min') !~ '^[0-9]{1,3}$'
               OR (v_arm ->> 'lead_min')::integer NOT BETWEEN 1 AND least(60, v_max_lead)) THEN
            RAISE EXCEPTION 'arm %: lead_min % is outside 1..%', v_arm ->> 'name', v_arm ->> 'lead_min', least(60, v_max_lead)
                USING ERRCODE = 'PC010';
        ELSIF v_arm ? 'channel' AND (v_arm ->> 'channel') IS DISTINCT FROM 'push' AND (v_arm ->> 'channel') IS DISTINCT FROM 'sms'
              AND (v_arm ->> 'channel') IS DISTINCT FROM 'push_and_sms' THEN
            RAISE EXCEPTION 'arm %: channel % is not push, sms or push_and_sms', v_arm ->> 'name', v_arm ->> 'channel'
                USING ERRCODE = 'PC010';
        ELSIF v_arm ? 'variant' AND coalesce(v_arm ->> 'variant', '') !~ '^[a-z0-9][a-z0-9_-]{0,62}$' THEN
            -- Whether every locale has it is checked by `precall experiments create` (the templates
            -- are files the database cannot see).
            RAISE EXCEPTION 'arm %: variant % is not a lower-case name', v_arm ->> 'name', v_arm ->> 'variant'
                USING ERRCODE = 'PC010';
        ELSIF (v_arm ->> 'share') IS NOT NULL AND ((v_arm ->> 'share') !~ '^(0(\.[0-9]+)?|1(\.0+)?|\.[0-9]+)$'
               OR (v_arm ->> 'share')::numeric <= 0) THEN
            RAISE EXCEPTION 'arm %: share % is not in (0, 1]', v_arm ->> 'name', v_arm ->> 'share' USING ERRCODE = 'PC010';
        END IF;
        v_names := v_names || (v_arm ->> 'name');
        IF (v_arm ->> 'share') IS NULL THEN
            v_unshared := v_unshared + 1;
        ELSE
            v_shared := v_shared + (v_arm ->> 'share')::numeric;
        END IF;
    END LOOP;
    v_rest := 1 - p_holdout - v_shared;
    IF v_rest < -0.000001 THEN
        RAISE EXCEPTION 'the shares add up to % with the holdout: more than 1', round(1 - v_rest, 5) USING ERRCODE = 'PC010';
    ELSIF v_unshared > 0 AND v_rest <= 0.000001 THEN
        RAISE EXCEPTION 'nothing is left for the % arm(s) without a share', v_unshared USING ERRCODE = 'PC010';
    END IF;
    SELECT * INTO v_other FROM precall.experiments e
    WHERE e.stopped_at IS NULL
      AND (e.ends_at IS NULL OR e.ends_at > p_starts_at) AND (p_ends_at IS NULL OR e.starts_at < p_ends_at)
      AND NOT EXISTS (SELECT 1 FROM jsonb_each_text(e.population) a JOIN jsonb_each_text(coalesce(p_population, '{}')) b
                      ON a.key = b.key WHERE lower(a.value) <> lower(b.value))
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'its population overlaps experiment % (running or scheduled then): one experiment per user at a time',
            v_other.name USING ERRCODE = 'PC010';
    END IF;
    v_each := v_rest / nullif(v_unshared, 0);
    INSERT INTO precall.experiments (name, population, holdout, allocation, starts_at, ends_at)
    VALUES (p_name, coalesce(p_population, '{}'), p_holdout, p_allocation, p_starts_at, p_ends_at)
    RETURNING id INTO v_id;
    IF p_holdout > 0 THEN
        INSERT INTO precall.experiment_arms (experiment_id, name, position, share, no_preview)
        VALUES (v_id, 'holdout', 0, p_holdout, true);
    END IF;
    FOR v_arm IN SELECT * FROM jsonb_array_elements(p_arms) LOOP
        v_pos := v_pos + 1;
        IF (v_arm ->> 'share') IS NULL THEN
            -- Equal parts of the rest; the last takes the rounding, so that the shares add up.
            v_unshared := v_unshared - 1;
            v_share := CASE WHEN v_unshared = 0 THEN v_rest ELSE round(v_each, 5) END;
            v_rest := v_rest - v_share;
        ELSE
            v_share := (v_arm ->> 'share')::numeric;
        END IF;
        INSERT INTO precall.experiment_arms (experiment_id, name, position, share, lead_min, channel, variant, no_preview)
        VALUES (v_id, v_arm ->> 'name', v_pos, v_share, (v_arm ->> 'lead_min')::integer, v_arm ->> 'channel',
                v_arm ->> 'variant', coalesce((v_arm ->> 'none')::boolean, false));
    END LOOP;
    INSERT INTO precall.experiment_allocations (experiment_id, shares)
    SELECT v_id, jsonb_object_agg(a.name, a.share) FROM precall.experiment_arms a WHERE a.experiment_id = v_id;
    RETURN v_id;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'an experiment named % exists already', p_name USING ERRCODE = 'PC010';
END
$function$;

-- Stops an experiment: what was sent stays as it was; its queued previews, and the holdout's
-- previews whose time has not come, are re-planned under each user's own rules. Returns the
-- calls re-planned; NULL when there is no such running experiment.
CREATE OR REPLACE FUNCTION precall.stop_experiment(p_name text)
 RETURNS integer
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_id bigint;
    v_calls uuid[];
BEGIN
    UPDATE precall.experiments SET stopped_at = now() WHERE name = p_name AND stopped_at IS NULL RETURNING id INTO v_id;
    IF v_id IS NULL THEN
        RETURN NULL;
    END IF;
    WITH moved AS (
        UPDATE notification_logs n
        SET status = 'cancelled', reason = format('experiment_stopped: %s', p_name), updated_at = now(),
            lease_owner = NULL, lease_expires_at = NULL
        WHERE n.experiment_id = v_id
          -- claimed ahead but not attempted yet: still unsent (precall.start_attempts)
          AND (n.status = 'queued' OR (n.status = 'sending' AND n.attempted_at IS NULL)
               OR (n.status = 'skipped' AND n.reason_code = 'holdout' AND n.send_at > now()))
        RETURNING n.call_id
    )
    SELECT coalesce(array_agg(DISTINCT call_id), '{}') INTO v_calls FROM moved;
    PERFORM precall.plan_calls(v_calls);
    RETURN cardinality(v_calls);
END
$function$;

-- One row per call of an experiment (every call planned while it ran left a preview row with
-- its experiment and arm, the holdout's a skipped one), with its outcome as the report counts it:
-- reached (answered, no_answer, failed, or skipped by the user from the preview) and answered (not
-- by a machine; a call the user skipped counts as not answered, so that an arm cannot look better
-- by prompting skips).
CREATE OR REPLACE VIEW precall.experiment_calls AS
SELECT DISTINCT ON (n.experiment_id, n.call_id)
       n.experiment_id, n.arm, n.call_id, n.user_id, c.status,
       c.status IN ('answered', 'no_answer', 'failed')
           OR (c.status = 'cancelled' AND act.action = 'skip') AS reached,
       c.status = 'answered' AND o.answered_by IS DISTINCT FROM 'machine' AS answered
FROM notification_logs n
JOIN scheduled_calls c ON c.id = n.call_id
LEFT JOIN precall.call_outcomes o ON o.call_id = c.id
LEFT JOIN precall.call_actions act ON act.call_id = c.id AND act.outcome = 'applied'
WHERE n.experiment_id IS NOT NULL AND n.type IN ('preview_push', 'preview_sms')
ORDER BY n.experiment_id, n.call_id, n.created_at DESC;

-- Per experiment and arm: users, calls that reached their time, answered, the answer rate with
-- its 95% Wilson interval, the difference against the holdout and against the control (the first
-- arm) with Newcombe's hybrid score interval and a two-sided p-value (pooled z-test, or Fisher's
-- exact test when any expected cell is below 10), and the preview figures (SMS spend by
-- currency, receipts, opens, late receipts, users an arm's channel could not reach who kept their
-- own rule). Methods: sql/functions/estimation.sql.
CREATE OR REPLACE VIEW precall.experiment_report AS
WITH per_arm AS (
    SELECT a.experiment_id, a.name AS arm, a.position,
           (SELECT count(*) FROM precall.experiment_assignments s
            WHERE s.experiment_id = a.experiment_id AND s.arm = a.name) AS users,
           count(ec.call_id) FILTER (WHERE ec.reached) AS calls,
           count(ec.call_id) FILTER (WHERE ec.reached AND ec.answered) AS answered
    FROM precall.experiment_arms a
    LEFT JOIN precall.experiment_calls ec ON ec.experiment_id = a.experiment_id AND ec.arm = a.name
    GROUP BY a.experiment_id, a.name, a.position
), previews AS (
    SELECT n.experiment_id, n.arm,
           count(*) FILTER (WHERE n.channel = 'push' AND n.delivered_at IS NOT NULL) AS receipts,
           count(*) FILTER (WHERE n.opened_at IS NOT NULL) AS opens,
           count(*) FILTER (WHERE n.late_receipt) AS late_receipts,
           count(DISTINCT n.user_id) FILTER (WHERE n.reason LIKE '%arm_channel_not_used%') AS own_rule_users
    FROM notification_logs n WHERE n.experiment_id IS NOT NULL GROUP BY 1, 2
), spend AS (
    SELECT x.experiment_id, x.arm, jsonb_object_agg(x.cost_currency, x.amount) AS sms_spend
    FROM (SELECT n.experiment_id, n.arm, n.cost_currency::text AS cost_currency, sum(n.cost_estimate) AS amount
          FROM notification_logs n
          WHERE n.experiment_id IS NOT NULL AND n.sent_at IS NOT NULL AND n.cost_currency IS NOT NULL
          GROUP BY 1, 2, 3) x
    GROUP BY 1, 2
), sms_by_call AS (
    -- fallback SMS carry no experiment: counted through their parent push
    SELECT p.experiment_id, p.arm, f.cost_currency::text AS cost_currency, sum(f.cost_estimate) AS amount
    FROM notification_logs f JOIN notification_logs p ON p.id = f.parent_id
    WHERE p.experiment_id IS NOT NULL AND f.sent_at IS NOT NULL AND f.cost_currency IS NOT NULL
    GROUP BY 1, 2, 3
)
SELECT e.name AS experiment, pa.arm, pa.position, pa.users, pa.calls, pa.answered,
       pa.answered::float8 / nullif(pa.calls, 0) AS answer_rate,
       w.lo AS ci_lo, w.hi AS ci_hi,
       vh.diff AS vs_holdout_diff, vh.lo AS vs_holdout_lo, vh.hi AS vs_holdout_hi,
       precall.proportions_p(pa.answered, pa.calls, h.answered, h.calls) AS vs_holdout_p,
       vc.diff AS vs_control_diff, vc.lo AS vs_control_lo, vc.hi AS vs_control_hi,
       precall.proportions_p(pa.answered, pa.calls, c.answered, c.calls) AS vs_control_p,
       coalesce(sp.sms_spend, '{}') || coalesce((SELECT jsonb_object_agg(s.cost_currency,
                    s.amount + coalesce((sp.sms_spend ->> s.cost_currency)::numeric, 0))
                FROM sms_by_call s WHERE s.experiment_id = pa.experiment_id AND s.arm = pa.arm), '{}') AS sms_spend,
       coalesce(pv.receipts, 0) AS receipts, coalesce(pv.opens, 0) AS opens, coalesce(pv.late_receipts, 0) AS late_receipts,
       coalesce(pv.own_rule_users, 0) AS own_rule_users
FROM per_arm pa
JOIN precall.experiments e ON e.id = pa.experiment_id
LEFT JOIN per_arm h ON h.experiment_id = pa.experiment_id AND h.position = 0 AND pa.position <> 0
LEFT JOIN per_arm c ON c.experiment_id = pa.experiment_id AND c.position = 1 AND pa.position <> 1
LEFT JOIN previews pv ON pv.experiment_id = pa.experiment_id AND pv.arm = pa.arm
LEFT JOIN spend sp ON sp.experiment_id = pa.experiment_id AND sp.arm = pa.arm
LEFT JOIN LATERAL precall.wilson_interval(pa.answered, pa.calls) w ON true
LEFT JOIN LATERAL precall.newcombe_interval(pa.answered, pa.calls, h.answered, h.calls) vh ON h.arm IS NOT NULL
LEFT JOIN LATERAL precall.newcombe_interval(pa.answered, pa.calls, c.answered, c.calls) vc ON c.arm IS NOT NULL;

-- A Gamma(shape, 1) draw, shape ≥ 1 (Marsaglia & Tsang, 2000; the normal by Box-Muller).
CREATE OR REPLACE FUNCTION precall.random_gamma(p_shape double precision)
 RETURNS double precision
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_d double precision := p_shape - 1.0 / 3;
    v_c double precision := 1 / sqrt(9 * (p_shape - 1.0 / 3));
    v_x double precision;
    v_v double precision;
BEGIN
    LOOP
        LOOP
            v_x := sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random());
            v_v := 1 + v_c * v_x;
            EXIT WHEN v_v > 0;
        END LOOP;
        v_v := v_v * v_v * v_v;
        IF ln(1 - random()) < 0.5 * v_x * v_x + v_d - v_d * v_v + v_d * ln(v_v) THEN
            RETURN v_d * v_v;
        END IF;
    END LOOP;
END
$function$;

-- Thompson sampling over an experiment's arms (the holdout keeps its share): each arm's answer
-- rate drawn p_draws times from Beta(answered + 1, not answered + 1); the probability that an arm
-- draws best sets its share of what the holdout leaves, above a floor every arm keeps
-- (precall.experiments.floor_share): share = floor + (1 − holdout − arms × floor) × P(best).
-- Seeded by the experiment and the day, so a re-run the same day gives the same shares.
-- Updates the arms' target shares (users already assigned keep their arm), records the
-- allocation, and returns it.
CREATE OR REPLACE FUNCTION precall.reallocate_experiment(p_experiment bigint, p_draws integer DEFAULT 10000)
 RETURNS jsonb
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_e precall.experiments;
    v_names text[];
    v_a double precision[];
    v_b double precision[];
    v_wins integer[];
    v_k integer;
    v_best integer;
    v_top double precision;
    v_draw double precision;
    v_g double precision;
    v_floor numeric;
    v_avail numeric;
    v_left numeric;
    v_share numeric;
    v_shares jsonb := '{}';
    v_p jsonb := '{}';
BEGIN
    SELECT * INTO v_e FROM precall.experiments WHERE id = p_experiment FOR UPDATE;
    SELECT array_agg(a.name ORDER BY a.position),
           array_agg(coalesce(o.answered, 0) + 1.0 ORDER BY a.position),
           array_agg(coalesce(o.reached - o.answered, 0) + 1.0 ORDER BY a.position)
    INTO v_names, v_a, v_b
    FROM precall.experiment_arms a
    LEFT JOIN (SELECT ec.arm, count(*) FILTER (WHERE ec.reached AND ec.answered) AS answered,
                      count(*) FILTER (WHERE ec.reached) AS reached
               FROM precall.experiment_calls ec WHERE ec.experiment_id = p_experiment GROUP BY ec.arm) o ON o.arm = a.name
    WHERE a.experiment_id = p_experiment AND a.name <> 'holdout';
    v_k := cardinality(v_names);
    v_wins := array_fill(0, ARRAY[v_k]);
    PERFORM setseed((hashtextextended(v_e.salt || ':' || (now() AT TIME ZONE 'UTC')::date, 0) % 1000000) / 1000000.0);
    FOR d IN 1..p_draws LOOP
        v_top := -1;
        FOR i IN 1..v_k LOOP
            v_g := precall.random_gamma(v_a[i]);
            v_draw := v_g / (v_g + precall.random_gamma(v_b[i]));
            IF v_draw > v_top THEN
                v_top := v_draw;
                v_best := i;
            END IF;
        END LOOP;
        v_wins[v_best] := v_wins[v_best] + 1;
    END LOOP;
    v_avail := 1 - v_e.holdout;
    v_floor := least(v_e.floor_share, v_avail / v_k);
    v_left := v_avail;
    FOR i IN 1..v_k LOOP
        v_share := CASE WHEN i = v_k THEN v_left
                        ELSE round(v_floor + (v_avail - v_k * v_floor) * v_wins[i] / p_draws, 5) END;
        v_share := greatest(v_share, 0.00001);
        v_left := v_left - v_share;
        UPDATE precall.experiment_arms SET share = v_share WHERE experiment_id = p_experiment AND name = v_names[i];
        v_shares := v_shares || jsonb_build_object(v_names[i], v_share);
        v_p := v_p || jsonb_build_object(v_names[i], round(v_wins[i]::numeric / p_draws, 4));
    END LOOP;
    IF v_e.holdout > 0 THEN
        v_shares := v_shares || jsonb_build_object('holdout', v_e.holdout);
    END IF;
    INSERT INTO precall.experiment_allocations (experiment_id, shares, p_best) VALUES (p_experiment, v_shares, v_p);
    RETURN v_shares;
END
$function$;

-- The daily re-weighting of running Thompson experiments (called by the planning job, so no
-- extra pg_cron job): those whose last allocation is a day old. Returns how many were re-weighted.
CREATE OR REPLACE FUNCTION precall.reallocate_due_experiments(p_now timestamp with time zone DEFAULT clock_timestamp())
 RETURNS integer
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_id bigint;
    v_count integer := 0;
BEGIN
    FOR v_id IN
        SELECT e.id FROM precall.running_experiments(p_now) e
        WHERE e.allocation = 'thompson'
          AND coalesce((SELECT max(al.at) FROM precall.experiment_allocations al WHERE al.experiment_id = e.id),
                       e.starts_at) <= p_now - interval '1 day'
    LOOP
        PERFORM precall.reallocate_experiment(v_id);
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END
$function$;
