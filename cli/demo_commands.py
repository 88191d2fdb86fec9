"""`precall demo …`: a local database with pg_cron, demo users and calls, and what is planned."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal

import psycopg
import typer

from precall.cli import store
from precall import localdb
from precall.sql import cron, migrate
from precall import logs
from precall import config as settings
from precall.config import Config
from precall.dispatcher.service import Dispatcher

app = typer.Typer(no_args_is_help=True, help="A running demo on a local PostgreSQL with pg_cron.")

STATE_DIR = settings.state_dir()
DEMO_DB = "precall"


def _demo_dsn() -> str:
    url = settings.database_url_or_none()
    if url:
        return url
    cluster = localdb.project_cluster(STATE_DIR, cron_database=DEMO_DB)
    return cluster.dsn(DEMO_DB)


@app.command("db-up")
def db_up() -> None:
    """Start the embedded PostgreSQL under .precall/ (unless DATABASE_URL is set) and print its URL.

    Example: export DATABASE_URL=$(precall demo db-up)
    """
    typer.echo(_demo_dsn())


@app.command("env")
def env_cmd() -> None:
    """Print the exports that point every precall command at the demo (database, log providers).

    Example: eval "$(precall demo env)"; precall doctor
    """
    typer.echo(f"export DATABASE_URL='{_demo_dsn()}' PRECALL_PUSH_PROVIDER=log PRECALL_SMS_PROVIDER=log")


@app.command("db-down")
def db_down() -> None:
    """Stop the embedded PostgreSQL.

    Example: precall demo db-down
    """
    link = STATE_DIR / "pgdata"
    if link.exists():
        localdb.LocalCluster(link.resolve(), 0).stop()
        typer.echo("stopped")


DEMO_USERS = [
    # (phone, locale, tz, streak, token, platform, push, pref, lead min, coach, topic, call in seconds)
    # Short leads so the demo's previews leave within a minute and a half.
    ("+15555550101", "en", "America/New_York", 12, "demo-token-en", "ios", True, "push_only", 1, "Max", "fitness_checkin", 75),
    ("+33612345678", "fr", "Europe/Paris", 7, None, None, False, "sms_only", 1, "Léa", "mood_check", 90),
    ("+15555550103", "en", "America/Chicago", 21, "demo-token-c", "android", True, "push_only", 1, "Sam", "streak_celebrate", 105),
    (None, "en", "UTC", 3, None, None, False, "push_only", 1, "Max", "meal_review", 110),
    ("+15555550105", "fr", "Europe/Paris", 20, "demo-token-fr", "ios", True, "push_only", 2, "Max", "weekly_weighin", 150),
]


def seed(dsn: str) -> int:
    """Inserts the demo coaches, users and calls a few minutes out; returns calls created."""
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        coaches = {name: store.demo_coach(conn, name) for name in sorted({u[9] for u in DEMO_USERS})}
        for phone, locale, tz, streak, token, platform, push, pref, lead, coach, topic, seconds in DEMO_USERS:
            uid = store.demo_user(conn, phone=phone, locale=locale, tz=tz, streak=streak, token=token,
                                  platform=platform, push=push, pref=pref, lead=lead, coach_id=coaches[coach])
            store.demo_call(conn, uid, seconds, topic)
    return len(DEMO_USERS)


def show(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = store.demo_previews(conn)
        pending = store.demo_calls_not_planned(conn)
    typer.echo("send_at (UTC)  call at   type          status   late(ms)  reason")
    for send_at, call_at, type_, status, late, reason in rows:
        typer.echo(f"{send_at}       {call_at}  {type_:<13} {status:<8} {late:>8}  {reason}")
    typer.echo(f"{pending} more call(s) not yet in the window: pg_cron plans them each minute.")


@app.command("seed")
def seed_cmd() -> None:
    """Insert demo users and calls 1-3 minutes out (1-2 minute leads).

    Example: precall demo seed
    """
    typer.echo(f"seeded {seed(_demo_dsn())} calls")


@app.command("show")
def show_cmd() -> None:
    """Show planned previews (SELECT … FROM notification_logs).

    Example: precall demo show
    """
    show(_demo_dsn())


@app.command("setup")
def setup_cmd() -> str:
    """Start the database, migrate, install the cron job, seed and show the plan.

    Example: precall demo setup
    """
    dsn = _demo_dsn()
    os.environ["DATABASE_URL"] = dsn
    for m in migrate.migrate(dsn):
        typer.echo(f"applied {m.label}")
    st = cron.install(dsn, cron.cron_dsn(dsn, settings.cron_database_url()))
    typer.echo(f"pg_cron: planning every minute in {st.app_database}")
    typer.echo(f"seeded {seed(dsn)} calls")
    show(dsn)
    typer.echo(f"\nDATABASE_URL={dsn}")
    return dsn


@app.command("run")
def run_cmd(
    max_seconds: float = typer.Option(180, help="Stop the dispatcher after this long at most."),
) -> None:
    """The whole demo: setup, then the dispatcher (log providers) until every preview has left.

    Example: precall demo run --max-seconds 120
    """
    dsn = setup_cmd()
    os.environ.update({"DATABASE_URL": dsn, "PRECALL_PUSH_PROVIDER": "log", "PRECALL_SMS_PROVIDER": "log",
                       "PRECALL_POLL_INTERVAL_S": settings.demo_poll_interval()})
    # Receipt tokens need a secret; the demo's is random and lives as long as this process.
    os.environ.setdefault("PRECALL_RECEIPT_SECRET", secrets.token_hex(32))
    logs.configure("INFO", json_lines=False)
    typer.echo("\nrunning the dispatcher with the log providers (Ctrl-C to stop)…")
    asyncio.run(_dispatch_until_done(dsn, max_seconds))
    typer.echo("")
    show(dsn)


async def _dispatch_until_done(dsn: str, max_seconds: float) -> None:
    dispatcher = Dispatcher(Config.from_env())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(dispatcher.run(stop))
    deadline = loop.time() + max_seconds
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        while not stop.is_set() and loop.time() < deadline:
            if await store.demo_work_left(conn) == 0:
                break
            await asyncio.sleep(1)
    stop.set()
    await task
