"""The `precall` command: database tooling, the dispatcher, rendering and support tools."""

from __future__ import annotations

import sys
from typing import NoReturn

import psycopg
import typer

from precall.cli import (
    api_command, calls_commands, capacity_command, db_commands, demo_commands, dispatcher_command, doctor_command,
    experiments_commands, history_command, render_commands, send_command, stats_command,
)
from precall.errors import PrecallError

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="precall: previews (push/SMS) a few minutes before each scheduled coaching call.",
)
app.add_typer(db_commands.app, name="db")
app.add_typer(demo_commands.app, name="demo")
app.add_typer(render_commands.templates_app, name="templates")
app.command("render")(render_commands.render_cmd)
app.command("dispatcher")(dispatcher_command.dispatcher_cmd)
app.command("api")(api_command.api_cmd)
app.command("send")(send_command.send_cmd)
app.add_typer(calls_commands.app, name="calls")
app.command("history")(history_command.history_cmd)
app.command("stats")(stats_command.stats_cmd)
app.command("doctor")(doctor_command.doctor_cmd)
app.command("capacity")(capacity_command.capacity_cmd)
app.add_typer(experiments_commands.app, name="experiments")


def fail(message: str) -> NoReturn:
    typer.echo(f"precall: {message}", err=True)
    raise SystemExit(1)


def main() -> None:
    """Console entry point: every expected failure is one readable line and exit status 1
    (a command line typer cannot parse: one line and status 2)."""
    try:
        status = app(standalone_mode=False)
    except typer.TyperException as exc:  # typer's (vendored click) usage errors: bad option, missing argument
        ctx = getattr(exc, "ctx", None)
        if exc.format_message():  # empty: no_args_is_help has printed the help already
            typer.echo(f"precall: {exc.format_message()} (see {ctx.command_path if ctx else 'precall'} --help)",
                       err=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except PrecallError as exc:
        fail(str(exc))
    except psycopg.OperationalError as exc:
        fail(f"cannot reach the database: {str(exc).strip().splitlines()[-1]}")
    except psycopg.Error as exc:
        fail(exc.diag.message_primary or str(exc).splitlines()[0])
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(status if isinstance(status, int) else 0)
