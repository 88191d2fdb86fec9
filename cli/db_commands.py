"""`precall db …`: migrations and pg_cron jobs."""

from __future__ import annotations


import typer

from precall.sql import cron, migrate
from precall.config import cron_database_url, database_url
from precall.errors import CronUnavailable

app = typer.Typer(no_args_is_help=True, help="Schema migrations and the pg_cron planning job.")


def _cron_dsn(app_dsn: str) -> str:
    return cron.cron_dsn(app_dsn, cron_database_url())


@app.command("migrate")
def migrate_cmd(
    with_cron: bool = typer.Option(True, "--cron/--no-cron", help="Also install the pg_cron jobs when pg_cron is loaded."),
) -> None:
    """Apply pending migrations (advisory-locked, recorded in precall.schema_migrations).

    Example: DATABASE_URL=postgresql://app@db:5432/app precall db migrate
    """
    dsn = database_url()
    applied = migrate.migrate(dsn)
    for m in applied:
        typer.echo(f"applied {m.label}")
    if not applied:
        typer.echo("database is up to date")
    if with_cron:
        try:
            st = cron.install(dsn, _cron_dsn(dsn))
            typer.echo(f"pg_cron: planning job scheduled every minute (cron database {st.cron_database})")
        except CronUnavailable as exc:
            typer.echo(f"pg_cron: not scheduled — {exc}", err=True)


@app.command("cron-install")
def cron_install_cmd() -> None:
    """Schedule precall.plan_due_previews() every minute, the daily retention prune and history purge.

    Example: precall db cron-install
    """
    dsn = database_url()
    st = cron.install(dsn, _cron_dsn(dsn))
    typer.echo(
        f"scheduled {cron.plan_job_name(st.app_database)} (every minute, in {st.app_database}) "
        f"and {cron.PURGE_JOB} (daily, in {st.cron_database})"
    )


@app.command("cron-uninstall")
def cron_uninstall_cmd() -> None:
    """Remove this database's planning and prune jobs (planning stops; queued rows still go out).

    Example: precall db cron-uninstall
    """
    dsn = database_url()
    cron.uninstall(dsn, _cron_dsn(dsn))
    typer.echo("planning job removed")


@app.command("status")
def status_cmd() -> None:
    """Applied and pending migrations, and whether pg_cron runs the planning job.

    Example: precall db status
    """
    dsn = database_url()
    st = migrate.status(dsn)
    for version, name, at in st.applied:
        typer.echo(f"applied  {version:04d}_{name}  {at}")
    for m in st.pending:
        typer.echo(f"pending  {m.label}")
    for r in st.stale:
        typer.echo(f"pending  {r.label} (changed since the last migrate)")
    try:
        cs = cron.state(dsn, _cron_dsn(dsn))
    except CronUnavailable as exc:
        typer.echo(f"pg_cron: {exc}")
        return
    if not cs.loaded:
        typer.echo("pg_cron: not loaded (shared_preload_libraries lacks pg_cron)")
    else:
        typer.echo(f"pg_cron: loaded, cron database {cs.cron_database}")
        typer.echo(f"planning job: {'scheduled' if cs.plan_job_active else 'NOT scheduled (run precall db cron-install)'}")
        typer.echo(f"purge job: {'scheduled' if cs.purge_job_active else 'not scheduled'}")
        typer.echo(f"prune job: {'scheduled' if cs.prune_job_active else 'not scheduled'} (notification_logs retention)")
