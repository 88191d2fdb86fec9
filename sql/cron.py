"""Schedules precall's pg_cron jobs, wherever pg_cron lives on the cluster."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from precall import sql
from precall.errors import CronUnavailable

PLAN_SCHEDULE = "* * * * *"
PURGE_SCHEDULE = "17 3 * * *"
PRUNE_SCHEDULE = "41 3 * * *"
# What each job runs (sql/queries/tooling.sql).
PLAN_COMMAND = sql.query("job_plan_due_previews")
PURGE_COMMAND = sql.query("job_purge_cron_history")
PRUNE_COMMAND = sql.query("job_prune_notification_logs")


def plan_job_name(app_database: str) -> str:
    # One planning job per app database: several precall databases may share a cluster.
    return f"precall_plan_due_previews:{app_database}"


def prune_job_name(app_database: str) -> str:
    return f"precall_prune_notification_logs:{app_database}"


PURGE_JOB = "precall_purge_cron_history"


@dataclass(frozen=True)
class CronState:
    loaded: bool
    cron_database: str | None
    app_database: str
    plan_job_active: bool
    purge_job_active: bool
    prune_job_active: bool = False
    # The planning job's last finished run in cron.job_run_details (for `precall doctor`).
    plan_last_status: str | None = None
    plan_last_end: datetime | None = None
    plan_last_message: str | None = None
    plan_last_success: datetime | None = None


def _preloaded(conn: psycopg.Connection) -> bool:
    row = conn.execute(sql.query("preload_libraries")).fetchone()
    return row is not None and "pg_cron" in [s.strip() for s in str(row[0]).split(",")]


def _cron_database(conn: psycopg.Connection) -> str:
    row = conn.execute(sql.query("cron_database_name")).fetchone()
    return str(row[0]) if row and row[0] else "postgres"


def cron_dsn(app_dsn: str, configured: str | None) -> str:
    """PRECALL_CRON_DATABASE_URL if set, else the app server's database named by cron.database_name."""
    if configured:
        return configured
    with psycopg.connect(app_dsn, autocommit=True) as conn:
        if not _preloaded(conn):
            return app_dsn
        cron_db = _cron_database(conn)
    params = conninfo_to_dict(app_dsn)
    if params.get("dbname") == cron_db:
        return app_dsn
    return make_conninfo(app_dsn, dbname=cron_db)


def _database_name(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(sql.query("current_database")).fetchone()
        assert row is not None
        return str(row[0])


def _require_pg_cron(conn: psycopg.Connection) -> str:
    if not _preloaded(conn):
        raise CronUnavailable(
            "pg_cron is not loaded: install it (Debian: apt-get install postgresql-15-cron), add "
            "shared_preload_libraries = 'pg_cron' to postgresql.conf and restart PostgreSQL, then run precall db cron-install"
        )
    cron_db = _cron_database(conn)
    here = conn.execute(sql.query("current_database")).fetchone()
    if here is None or here[0] != cron_db:
        raise CronUnavailable(
            f"pg_cron lives in database {cron_db!r} (cron.database_name), not {here[0] if here else '?'!r}: "
            "set PRECALL_CRON_DATABASE_URL to that database"
        )
    return cron_db


def install(app_dsn: str, cron_dsn_: str) -> CronState:
    """Creates the extension if needed and upserts the planning and purge jobs."""
    app_db = _database_name(app_dsn)
    with psycopg.connect(cron_dsn_, autocommit=True) as conn:
        cron_db = _require_pg_cron(conn)
        conn.execute(sql.query("create_pg_cron"))
        conn.execute(sql.script("cron_support.sql").encode())
        for name, schedule, command in ((plan_job_name(app_db), PLAN_SCHEDULE, PLAN_COMMAND),
                                        (prune_job_name(app_db), PRUNE_SCHEDULE, PRUNE_COMMAND)):
            if cron_db == app_db:
                conn.execute(sql.query("cron_schedule"), {"name": name, "schedule": schedule, "command": command})
            else:
                conn.execute(sql.query("cron_schedule_in_database"),
                             {"name": name, "schedule": schedule, "command": command, "database": app_db})
        # The history lives in the cron database: purge it there.
        conn.execute(sql.query("cron_schedule"),
                     {"name": PURGE_JOB, "schedule": PURGE_SCHEDULE, "command": PURGE_COMMAND})
    return state(app_dsn, cron_dsn_)


def uninstall(app_dsn: str, cron_dsn_: str) -> None:
    """Removes this app database's planning and prune jobs (the shared purge job stays)."""
    app_db = _database_name(app_dsn)
    with psycopg.connect(cron_dsn_, autocommit=True) as conn:
        _require_pg_cron(conn)
        conn.execute(sql.query("cron_unschedule"), {"names": [plan_job_name(app_db), prune_job_name(app_db)]})


def state(app_dsn: str, cron_dsn_: str) -> CronState:
    app_db = _database_name(app_dsn)
    try:
        conn = psycopg.connect(cron_dsn_, autocommit=True)
    except psycopg.OperationalError:
        return CronState(False, None, app_db, False, False)
    with conn:
        if not _preloaded(conn):
            return CronState(False, None, app_db, False, False)
        cron_db = _cron_database(conn)
        has_ext = conn.execute(sql.query("has_cron_jobs")).fetchone()
        if not has_ext or not has_ext[0]:
            return CronState(True, cron_db, app_db, False, False)
        jobs: dict[str, bool] = dict(
            conn.execute(sql.query("cron_jobs"),
                         {"names": [plan_job_name(app_db), PURGE_JOB, prune_job_name(app_db)]}).fetchall()
        )
        last = conn.execute(sql.query("cron_last_run"), {"name": plan_job_name(app_db)}).fetchone() or (None, None, None, None)
        return CronState(True, cron_db, app_db, bool(jobs.get(plan_job_name(app_db))), bool(jobs.get(PURGE_JOB)),
                         bool(jobs.get(prune_job_name(app_db))), *last)
