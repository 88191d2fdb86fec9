"""pg_cron: both layouts (in the app database, or in another database of the cluster), a real
run by pg_cron itself, and a clear line when pg_cron is not there."""

import os
import time

import psycopg
import pytest

from precall import localdb
from precall.sql import cron, migrate
from precall.errors import CronUnavailable

from plugins.database import PgServer, dbname
from plugins.processes import precall_cli


def _jobs(pg_server: PgServer) -> dict[str, tuple[str, str]]:
    with psycopg.connect(pg_server.dsn(pg_server.cron_database), autocommit=True) as conn:
        return {name: (database, command) for name, database, command in
                conn.execute("SELECT jobname, database, command FROM cron.job")}


def test_layout_cron_in_another_database(pg_server: PgServer, db: str) -> None:
    app_db = dbname(db)
    assert app_db != pg_server.cron_database
    # PRECALL_CRON_DATABASE_URL unset: precall finds cron.database_name on the same server.
    cron_dsn = cron.cron_dsn(db, None)
    assert dbname(cron_dsn) == pg_server.cron_database
    st = cron.install(db, cron_dsn)
    assert st.plan_job_active and st.purge_job_active and st.prune_job_active
    jobs = _jobs(pg_server)
    assert jobs[cron.plan_job_name(app_db)] == (app_db, "SELECT precall.plan_due_previews()")
    assert jobs[cron.PURGE_JOB] == (pg_server.cron_database, "SELECT precall.purge_cron_history()")
    # The purge function exists where cron.job_run_details lives, and runs.
    with psycopg.connect(cron_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT precall.purge_cron_history()").fetchone() is not None
    # Pointing PRECALL_CRON_DATABASE_URL at the app database itself is refused in one line.
    with pytest.raises(CronUnavailable, match="pg_cron lives in database"):
        cron.install(db, db)


def test_layout_cron_in_the_app_database(pg_server: PgServer) -> None:
    cron_db_dsn = pg_server.dsn(pg_server.cron_database)
    migrate.migrate(cron_db_dsn)
    try:
        st = cron.install(cron_db_dsn, cron.cron_dsn(cron_db_dsn, None))
        assert st.plan_job_active
        jobs = _jobs(pg_server)
        name = cron.plan_job_name(pg_server.cron_database)
        assert jobs[name] == (pg_server.cron_database, "SELECT precall.plan_due_previews()")
    finally:
        cron.uninstall(cron_db_dsn, cron_db_dsn)
        with psycopg.connect(cron_db_dsn, autocommit=True) as conn:
            conn.execute(
                "DROP TABLE IF EXISTS notification_logs, scheduled_calls, users, coach_personas CASCADE;"
                " DROP SCHEMA IF EXISTS precall CASCADE"
            )


def test_pg_cron_itself_runs_the_planning_job(pg_server: PgServer, db: str, make, conn) -> None:
    cron.install(db, cron.cron_dsn(db, None))
    user = make.user()
    # Preview at now + 4.5 min: outside the window (lookahead 2 min + max_early 2 min) now,
    # inside it at the next cron minute.
    call = make.call(user, in_seconds=9 * 60 + 30)
    assert make.previews(call) == []
    deadline = time.monotonic() + 130
    while time.monotonic() < deadline and not make.previews(call):
        time.sleep(1)
    rows = make.previews(call)
    assert [r["status"] for r in rows] == ["queued"], "pg_cron did not run precall.plan_due_previews() within 130 s"
    with psycopg.connect(pg_server.dsn(pg_server.cron_database), autocommit=True) as c:
        runs = c.execute(
            "SELECT d.status FROM cron.job_run_details d JOIN cron.job j USING (jobid) WHERE j.jobname = %s",
            (cron.plan_job_name(dbname(db)),),
        ).fetchall()
    assert ("succeeded",) in runs


@pytest.mark.integration  # starts its own cluster
def test_without_pg_cron_says_what_to_do() -> None:
    cluster = localdb.throwaway(preload_cron=False)
    try:
        with psycopg.connect(cluster.admin_dsn, autocommit=True) as c:
            c.execute("CREATE DATABASE app")
        env = {**os.environ, "DATABASE_URL": cluster.dsn("app")}
        env.pop("PRECALL_CRON_DATABASE_URL", None)
        out = precall_cli("db", "migrate", env=env)
        assert out.returncode == 0, out.stderr
        assert "applied 0001_tables" in out.stdout
        assert out.stderr.strip().startswith("pg_cron: not scheduled — pg_cron is not loaded: install it")
        out = precall_cli("db", "cron-install", env=env)
        assert out.returncode == 1
        assert len(out.stderr.strip().splitlines()) == 1
        assert "shared_preload_libraries = 'pg_cron'" in out.stderr
    finally:
        cluster.destroy()
