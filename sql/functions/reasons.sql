-- Reasons: the machine-readable `reason_code` beside the human `reason`, on notification_logs
-- and precall.call_jobs.
--
-- The current definition of each object below; `precall db migrate` re-applies this file when it
-- changes (after the numbered migrations). Edit here, never in sql/migrations/.

-- The code a reason starts with: 'too_late: planned 00:00:20 before the call…' → 'too_late';
-- 'call_cancelled' → 'call_cancelled'; a reason with no leading code → 'other'; NULL → NULL.
-- (The same expression backfilled existing rows in migration 0015.)
CREATE OR REPLACE FUNCTION precall.reason_code(p_reason text)
 RETURNS text
 LANGUAGE sql
 IMMUTABLE
AS $function$
    SELECT CASE WHEN p_reason IS NOT NULL
                THEN coalesce(substring(p_reason from '^([a-z][a-z0-9_]*)(?:[:;]|$)'), 'other') END
$function$;

CREATE OR REPLACE FUNCTION precall.tg_reason_code()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    NEW.reason_code := precall.reason_code(NEW.reason);
    RETURN NEW;
END
$function$;

-- WHEN clauses keep the function off the hot paths: a planned row has no reason, and most
-- updates do not change it.
CREATE OR REPLACE TRIGGER _300_reason_code_on_insert
    BEFORE INSERT ON public.notification_logs
    FOR EACH ROW
    WHEN (NEW.reason IS NOT NULL)
    EXECUTE FUNCTION precall.tg_reason_code();

CREATE OR REPLACE TRIGGER _300_reason_code_on_update
    BEFORE UPDATE OF reason ON public.notification_logs
    FOR EACH ROW
    WHEN (NEW.reason IS DISTINCT FROM OLD.reason)
    EXECUTE FUNCTION precall.tg_reason_code();

CREATE OR REPLACE TRIGGER _300_reason_code_on_insert
    BEFORE INSERT ON precall.call_jobs
    FOR EACH ROW
    WHEN (NEW.reason IS NOT NULL)
    EXECUTE FUNCTION precall.tg_reason_code();

CREATE OR REPLACE TRIGGER _300_reason_code_on_update
    BEFORE UPDATE OF reason ON precall.call_jobs
    FOR EACH ROW
    WHEN (NEW.reason IS DISTINCT FROM OLD.reason)
    EXECUTE FUNCTION precall.tg_reason_code();
