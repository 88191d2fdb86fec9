"""`precall capacity`: would the planned previews leave in time under a provider rate limit?"""

from __future__ import annotations

from typing import Optional

import psycopg
import typer

from precall.cli import store
from precall.cli.output import JSON_HELP, emit, to_json
from precall import config as settings
from precall.config import RATE_VARIABLES, database_url
from precall.errors import PrecallError

ENV_RATE = RATE_VARIABLES


def total_rate(conn: psycopg.Connection, channel: str) -> tuple[float, str] | None:
    """The configured per-process rate times the live dispatchers, and how it was worked out."""
    configured = settings.rate_per_s(channel)
    if configured is None:
        return None
    per_process, name = configured
    alive = max(1, store.live_dispatchers(conn))
    return per_process * alive, f"{name}={per_process:g} x {alive} live dispatcher(s)"


def capacity_cmd(
    rate: Optional[float] = typer.Option(None, min=0.001, help="Sends per second, all dispatchers together "
                                         "(default: the configured per-process rate x live dispatchers)."),
    channel: str = typer.Option("push", help="push or sms."),
    limit: int = typer.Option(20, min=1, help="At-risk previews to list."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Project the planned previews through a rate limit and list those that would miss their call.

    Also lists the previews the burst smoothing could not fit: at precall.settings' capacity
    (push_capacity_per_s / sms_capacity_per_s) their second is full even max_early earlier.
    Exits 1 when any would miss or not fit. Planning looks lookahead + max_early ahead, so this
    sees the next few minutes.

    Example: precall capacity --rate 500 --channel push
    """
    if channel not in ENV_RATE:
        raise PrecallError("--channel must be push or sms")
    with psycopg.connect(database_url(), autocommit=True) as conn:
        how = f"--rate {rate:g}" if rate is not None else ""
        if rate is None:
            configured = total_rate(conn, channel)
            if configured is None:
                rate, how = store.send_capacity(conn, channel), f"precall.settings.{channel}_capacity_per_s"
            else:
                rate, how = configured
        queued = store.queued_on_channel(conn, channel)
        risk = store.previews_at_risk(conn, rate, channel)
        beyond = store.previews_beyond_capacity(conn, channel)
    summary = {"channel": channel, "rate_per_s": rate, "rate_from": how, "queued": queued,
               "at_risk": len(risk), "at_risk_previews": risk[:limit],
               "beyond_capacity": len(beyond), "beyond_capacity_previews": beyond[:limit]}
    if as_json:
        print(to_json(summary))
    else:
        typer.echo(f"{summary['queued']} {channel} preview(s) queued; at {rate:g}/s ({how}) "
                   f"{len(risk)} would leave after their call's cut-off")
        if risk:
            emit(risk[:limit], ["call_id", "send_at", "projected_at", "scheduled_at", "late_by", "id"], False)
        if beyond:
            typer.echo(f"{len(beyond)} {channel} preview(s) beyond capacity: their second is full even "
                       "max_early earlier (raise precall.settings.max_early or the capacity)")
            emit(beyond[:limit], ["call_id", "planned_send_at", "send_at", "needed_early", "id"], False)
    if risk or beyond:
        raise typer.Exit(1)
