"""`precall calls …`: support's view of the schedule, thin wrappers over the SQL a DBA would run."""

from __future__ import annotations

from datetime import datetime
from typing import Optional

import psycopg
import typer
from psycopg.rows import dict_row

from precall.cli.history_command import parse_uuid
from precall.cli.output import JSON_HELP, emit
from precall.config import database_url
from precall.errors import PrecallError

app = typer.Typer(no_args_is_help=True, help="List, schedule, reschedule and cancel calls.")

LIST_SQL = """
SELECT c.id, c.user_id, c.scheduled_at,
       to_char(c.scheduled_at AT TIME ZONE u.timezone, 'YYYY-MM-DD HH24:MI') || ' ' || u.timezone AS local_time,
       c.status, c.topic,
       (SELECT n.type || ' ' || n.status FROM notification_logs n WHERE n.call_id = c.id
        ORDER BY n.created_at DESC LIMIT 1) AS preview
FROM scheduled_calls c JOIN users u ON u.id = c.user_id
WHERE (%(id)s::uuid IS NULL OR c.id = %(id)s)
  AND (%(user)s::uuid IS NULL OR c.user_id = %(user)s)
  AND (%(status)s::text IS NULL OR c.status = %(status)s)
  AND (%(since)s::timestamptz IS NULL OR c.scheduled_at >= %(since)s)
  AND (%(until)s::timestamptz IS NULL OR c.scheduled_at < %(until)s)
ORDER BY c.scheduled_at
LIMIT %(limit)s
"""
COLUMNS = ["id", "user_id", "scheduled_at", "local_time", "status", "topic", "preview"]
STATUSES = ("pending", "in_progress", "answered", "no_answer", "cancelled", "failed")


def _when(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.strip().replace(" ", "T", 1))
    except ValueError:
        raise PrecallError(f"{text!r} is not a date and time (YYYY-MM-DD HH:MM, optionally with +HH:MM)") from None


def _instant(conn: psycopg.Connection, user_id: object, when: datetime) -> datetime:
    """A time with an offset is taken as is; without one, it is the user's local wall-clock time."""
    if when.tzinfo is not None:
        return when
    row = conn.execute("SELECT precall.local_call_time(%s, %s)", (user_id, when)).fetchone()
    if row is None or row[0] is None:
        raise PrecallError(f"no user with id {user_id}")
    return row[0]


def _show(conn: psycopg.Connection, call_id: object) -> None:
    rows = conn.cursor(row_factory=dict_row).execute(
        LIST_SQL, {"id": call_id, "user": None, "status": None, "since": None, "until": None, "limit": 1}).fetchall()
    emit(rows, COLUMNS, False)


@app.command("list")
def list_cmd(
    user: Optional[str] = typer.Option(None, help="Only this user's calls."),
    status: Optional[str] = typer.Option(None, help="pending, answered, no_answer, cancelled…"),
    since: Optional[str] = typer.Option(None, "--from", help="From this instant (ISO 8601; UTC if no offset)."),
    until: Optional[str] = typer.Option(None, "--to", help="Before this instant."),
    limit: int = typer.Option(50, min=1, max=10000),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Calls in time order, with the user's local time and the latest preview.

    Example: precall calls list --status pending --from 2026-11-26 --limit 20
    """
    if status is not None and status not in STATUSES:
        raise PrecallError(f"--status must be one of {', '.join(STATUSES)}")
    params = {"id": None, "user": parse_uuid(user, "user id") if user else None, "status": status,
              "since": _utc(since), "until": _utc(until), "limit": limit}
    with psycopg.connect(database_url(), autocommit=True) as conn:
        rows = conn.cursor(row_factory=dict_row).execute(LIST_SQL, params).fetchall()
    emit(rows, COLUMNS, as_json)


def _utc(text: Optional[str]) -> Optional[str]:
    if text is None:
        return None
    when = _when(text)
    return when.isoformat() if when.tzinfo else when.isoformat() + "+00:00"


@app.command("schedule")
def schedule_cmd(
    user_id: str = typer.Argument(..., help="The user's id."),
    when: str = typer.Argument(..., help="The user's local time, e.g. '2026-11-26 07:00' (or with an offset)."),
    topic: Optional[str] = typer.Option(None, help="Today's topic key, e.g. fitness_checkin."),
) -> None:
    """Schedule a call at the user's local time (their timezone, DST included).

    Example: precall calls schedule 3f2c7a1e-5b1d-4c1e-9a7e-2d5f0c9b1a11 "2026-11-26 07:00" --topic fitness_checkin
    """
    uid = parse_uuid(user_id, "user id")
    with psycopg.connect(database_url(), autocommit=True) as conn:
        at = _instant(conn, uid, _when(when))
        row = conn.execute("INSERT INTO scheduled_calls (user_id, scheduled_at, topic) VALUES (%s, %s, %s) RETURNING id",
                           (uid, at, topic)).fetchone()
        assert row is not None
        _show(conn, row[0])


def _update(call_id: str, sql: str, params: dict[str, object], verb: str) -> None:
    cid = parse_uuid(call_id, "call id")
    with psycopg.connect(database_url(), autocommit=True) as conn:
        current = conn.execute("SELECT status, user_id FROM scheduled_calls WHERE id = %s", (cid,)).fetchone()
        if current is None:
            raise PrecallError(f"no call with id {cid}")
        if current[0] != "pending":
            raise PrecallError(f"call {cid} is {current[0]}: only a pending call can be {verb}")
        if "when" in params:
            params["when"] = _instant(conn, current[1], params["when"])  # type: ignore[arg-type]
        # The scheduled_calls triggers re-plan or cancel the unsent previews, as for a DBA's UPDATE.
        conn.execute(sql, {**params, "id": cid})
        _show(conn, cid)


@app.command("reschedule")
def reschedule_cmd(
    call_id: str = typer.Argument(..., help="The call's id."),
    when: str = typer.Argument(..., help="New local time of the user, e.g. '2026-11-26 08:30'."),
) -> None:
    """Move a pending call; its unsent preview moves with it.

    Example: precall calls reschedule 9b1d7c1e-0f4a-4d8e-8a51-6b1f9e2c3d40 "2026-11-26 08:30"
    """
    _update(call_id, "UPDATE scheduled_calls SET scheduled_at = %(when)s WHERE id = %(id)s AND status = 'pending'",
            {"when": _when(when)}, "rescheduled")


@app.command("cancel")
def cancel_cmd(call_id: str = typer.Argument(..., help="The call's id.")) -> None:
    """Cancel a pending call; its unsent preview is cancelled too.

    Example: precall calls cancel 9b1d7c1e-0f4a-4d8e-8a51-6b1f9e2c3d40
    """
    _update(call_id, "UPDATE scheduled_calls SET status = 'cancelled' WHERE id = %(id)s AND status = 'pending'",
            {}, "cancelled")
