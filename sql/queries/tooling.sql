-- The database tooling's statements: the migration runner (sql/migrate.py) and pg_cron's jobs
-- (sql/cron.py), whose module functions are their typed callers. Each block starts with `-- name --`.

-- migrate_lock --
-- One lock for every precall migrate on the cluster's database: concurrent runs queue up.
SELECT pg_advisory_lock(hashtextextended('precall.migrate', 0))

-- migrate_unlock --
SELECT pg_advisory_unlock(hashtextextended('precall.migrate', 0))

-- migrate_ledger --
CREATE SCHEMA IF NOT EXISTS precall;
CREATE TABLE IF NOT EXISTS precall.schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS precall.schema_repeatables (
    name text PRIMARY KEY,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- has_migration_ledger --
SELECT to_regclass('precall.schema_migrations') IS NOT NULL

-- applied_migrations --
SELECT version, name, checksum, to_char(applied_at, 'YYYY-MM-DD HH24:MI:SS TZ')
FROM precall.schema_migrations ORDER BY version

-- has_repeatables_ledger --
SELECT to_regclass('precall.schema_repeatables') IS NOT NULL

-- applied_repeatables --
SELECT name, checksum FROM precall.schema_repeatables

-- record_migration --
INSERT INTO precall.schema_migrations (version, name, checksum) VALUES (%(version)s, %(name)s, %(checksum)s)

-- repeatable_session --
-- As pg_dump: function bodies are checked when they run, so the sql/functions files need no order.
SET LOCAL check_function_bodies = off

-- record_repeatable --
INSERT INTO precall.schema_repeatables (name, checksum) VALUES (%(name)s, %(checksum)s)
ON CONFLICT (name) DO UPDATE SET checksum = excluded.checksum, applied_at = now()

-- preload_libraries --
SELECT current_setting('shared_preload_libraries')

-- cron_database_name --
SELECT current_setting('cron.database_name', true)

-- current_database --
SELECT current_database()

-- create_pg_cron --
CREATE EXTENSION IF NOT EXISTS pg_cron

-- cron_schedule --
SELECT cron.schedule(%(name)s, %(schedule)s, %(command)s)

-- cron_schedule_in_database --
SELECT cron.schedule_in_database(%(name)s, %(schedule)s, %(command)s, %(database)s)

-- cron_unschedule --
SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = ANY (%(names)s::text[])

-- has_cron_jobs --
SELECT to_regclass('cron.job') IS NOT NULL

-- cron_jobs --
SELECT jobname, active FROM cron.job WHERE jobname = ANY (%(names)s::text[])

-- cron_last_run --
-- The job's last finished run, and its last success (for `precall doctor`).
SELECT d.status, d.end_time, d.return_message,
       (SELECT max(s.end_time) FROM cron.job_run_details s WHERE s.jobid = j.jobid AND s.status = 'succeeded')
FROM cron.job j LEFT JOIN LATERAL (
    SELECT * FROM cron.job_run_details r WHERE r.jobid = j.jobid AND r.end_time IS NOT NULL
    ORDER BY r.end_time DESC LIMIT 1) d ON true
WHERE j.jobname = %(name)s

-- job_plan_due_previews --
-- pg_cron's commands: what each job runs in the app database.
SELECT precall.plan_due_previews()

-- job_purge_cron_history --
SELECT precall.purge_cron_history()

-- job_prune_notification_logs --
-- A procedure: it commits between batches of deletes.
CALL precall.prune_notification_logs()
