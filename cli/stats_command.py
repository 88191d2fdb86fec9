"""`precall stats`: the product's KPIs against their targets, from precall.kpis() (SQL a DBA can run)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Optional

import psycopg
import typer

from precall.cli import store
from precall.cli.output import JSON_HELP, table, to_json
from precall.config import database_url
from precall.errors import PrecallError

UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
GROUPS = ("channel", "locale", "platform", "day", "action", "experiment")


def parse_since(text: str, now: datetime) -> datetime:
    """'7d', '12h', '30m', '2w', or an ISO date/time (UTC when it has no offset)."""
    match = re.fullmatch(r"\s*(\d+)\s*([mhdw])\s*", text)
    if match:
        return now - timedelta(**{UNITS[match.group(2)]: int(match.group(1))})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise PrecallError(f"--since {text!r}: use 7d, 12h, 30m, 2w or a date like 2026-11-01") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _value(kpi: str, value: Optional[Decimal]) -> str:
    if value is None:
        return "-"
    if kpi.endswith("_rate") or kpi == "late_receipts":
        return f"{value * 100:.1f}%"
    if kpi.startswith(("lateness_", "time_to_receipt_")):
        return f"{value:.1f} ms"
    if kpi.startswith("sms_spend_"):
        return f"{value:.4f} {kpi.removeprefix('sms_spend_')}"
    return str(value)


def _target(kpi: str, target: Optional[Decimal]) -> str:
    if target is None:
        return "-"
    better = "≤" if kpi in ("fallback_sms_rate",) or kpi.startswith("lateness_") else "≥"
    return f"{better} {_value(kpi, target)}"


def stats_cmd(
    since: str = typer.Option("7d", help="Window start: 7d, 12h, 30m, 2w or a date."),
    by: Optional[str] = typer.Option(None, help="Group by channel, locale, platform, day, action (the applied action on the call: none, call_now, snooze, skip) or experiment (name/arm; the holdout is counted only here)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """The KPIs (answer, open, delivery and fallback rates, lateness, receipts, SMS spend) against their targets.

    Definitions are in the README; the numbers come from SELECT * FROM precall.kpis(since, by).

    Example: precall stats --since 30d --by locale
    """
    if by is not None and by not in GROUPS:
        raise PrecallError(f"--by must be one of {', '.join(GROUPS)}")
    start = parse_since(since, datetime.now(timezone.utc))
    with psycopg.connect(database_url(), autocommit=True) as conn:
        rows = store.kpis(conn, start, by or "all")
    if as_json:
        print(to_json({"since": start, "by": by or "all", "kpis": rows}))
        return
    shown: list[dict[str, Any]] = []
    for r in rows:
        meets = r["meets_target"]
        shown.append({
            by or "group": r["grp"], "kpi": r["kpi"], "value": _value(r["kpi"], r["value"]),
            "of": "-" if r["numerator"] is None or r["kpi"].startswith("sms_spend_")
                  else f"{r['numerator']:.0f} / {r['denominator']:.0f}",
            "n": f"{r['denominator']:.0f}" if r["denominator"] is not None else "-",
            "target": _target(r["kpi"], r["target"]),
            "ok": "-" if meets is None else ("yes" if meets else "NO"),
        })
    if not shown:
        typer.echo(f"no notifications or finished calls since {start:%Y-%m-%d %H:%M} UTC")
        return
    cols = [by or "group", "kpi", "value", "of", "target", "ok"]
    table(shown, cols, title=f"since {start:%Y-%m-%d %H:%M} UTC")
