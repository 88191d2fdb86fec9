-- Applied by `precall db cron-install` to the database where pg_cron lives (cron.database_name),
-- which may not be the app database: cron.job_run_details is only reachable from there.
CREATE SCHEMA IF NOT EXISTS precall;

-- Deletes pg_cron's run history older than p_keep (it grows by 1,440 rows a day per job).
CREATE OR REPLACE FUNCTION precall.purge_cron_history(p_keep interval DEFAULT '7 days')
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_count integer;
BEGIN
    DELETE FROM cron.job_run_details WHERE end_time < now() - p_keep;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;
