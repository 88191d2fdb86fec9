-- Rules on users' rows: time zones, one holder per push token, leads within policy, local times
-- (devices and the users-row summary they keep: sql/functions/devices.sql).
--
-- The current definition of each object below; `precall db migrate` re-applies this file when it
-- changes (after the numbered migrations). Edit here, never in sql/migrations/.

-- A user's local wall-clock time as an instant (PostgreSQL applies the IANA rules, DST included).
CREATE OR REPLACE FUNCTION precall.local_call_time(p_user_id uuid, p_local timestamp without time zone)
 RETURNS timestamp with time zone
 LANGUAGE sql
 STABLE
AS $function$
    SELECT p_local AT TIME ZONE u.timezone FROM users u WHERE u.id = p_user_id
$function$;

-- Whoever writes a token (the API, the app's own code, a DBA) moves it: the previous holder
-- loses it. Two writers racing for one token: the unique index makes the second wait for the
-- first and fail; precall.register_device retries, so the last to commit holds it.
CREATE OR REPLACE FUNCTION precall.tg_users__token_moves()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    UPDATE users SET fcm_token = NULL, push_enabled = false
    WHERE fcm_token = NEW.fcm_token AND id <> NEW.id;
    RETURN NEW;
END
$function$;

-- An IANA name PostgreSQL knows: precall.time_zones first (an index lookup), pg_timezone_names
-- (21 ms, it reads the zone files) only for a name missing there, e.g. after a tzdata upgrade.
CREATE OR REPLACE FUNCTION precall.is_time_zone(p_name text)
 RETURNS boolean
 LANGUAGE plpgsql
 STABLE
AS $function$
BEGIN
    RETURN EXISTS (SELECT 1 FROM precall.time_zones WHERE name = p_name)
        OR EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = p_name);
END
$function$;

-- Every new or changed timezone must be one PostgreSQL knows (NULL in an adopted nullable
-- column is left alone: nothing converts it).
CREATE OR REPLACE FUNCTION precall.tg_users__timezone_is_known()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    IF NEW.timezone IS NOT NULL AND NOT precall.is_time_zone(NEW.timezone::text) THEN
        RAISE EXCEPTION 'users.timezone % is not a time zone', quote_literal(NEW.timezone)
            USING ERRCODE = '22023', HINT = 'Use an IANA name from pg_timezone_names, such as Europe/Paris.';
    END IF;
    RETURN NEW;
END
$function$;

CREATE OR REPLACE TRIGGER _300_timezone_is_known
    BEFORE INSERT OR UPDATE OF timezone ON public.users
    FOR EACH ROW
    EXECUTE FUNCTION precall.tg_users__timezone_is_known();

-- A user's lead may not exceed the fleet's policy (precall.settings.max_lead; the table's CHECK
-- keeps 1..60 as the absolute bound). check_violation, so the API answers 422.
CREATE OR REPLACE FUNCTION precall.tg_users__lead_within_policy()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_max interval := (SELECT max_lead FROM precall.settings);
BEGIN
    IF make_interval(mins => NEW.notification_lead_min) > v_max THEN
        RAISE EXCEPTION 'notification_lead_min % is longer than the longest lead allowed (precall.settings.max_lead = %)',
            NEW.notification_lead_min, v_max USING ERRCODE = '23514';
    END IF;
    RETURN NEW;
END
$function$;

CREATE OR REPLACE TRIGGER _310_lead_within_policy
    BEFORE INSERT OR UPDATE OF notification_lead_min ON public.users
    FOR EACH ROW
    WHEN (NEW.notification_lead_min IS NOT NULL)
    EXECUTE FUNCTION precall.tg_users__lead_within_policy();

CREATE OR REPLACE TRIGGER _400_token_moves
    BEFORE INSERT OR UPDATE OF fcm_token ON public.users
    FOR EACH ROW
    WHEN ((new.fcm_token IS NOT NULL))
    EXECUTE FUNCTION precall.tg_users__token_moves();
