"""`precall calls …`: support's view of the schedule, thin wrappers over the SQL a DBA would run."""

from __future__ import annotations

from datetime import datetime
from typing import Optional

import uuid
import psycopg
import typer

from precall.cli import store
from precall.cli.history_command import parse_uuid
from precall.cli.output import JSON_HELP, emit
from precall.config import database_url
from precall.errors import PrecallError

app = typer.Typer(no_args_is_help=True, help="List, schedule, reschedule and cancel calls.")

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
    at = store.local_call_time(conn, user_id, when)
    if at is None:
        raise PrecallError(f"no user with id {user_id}")
    return at


def _show(conn: psycopg.Connection, call_id: uuid.UUID) -> None:
    emit(store.list_calls(conn, id=call_id, limit=1), COLUMNS, False)


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
    uid = parse_uuid(user, "user id") if user else None
    with psycopg.connect(database_url(), autocommit=True) as conn:
        rows = store.list_calls(conn, user=uid, status=status, since=_utc(since), until=_utc(until), limit=limit)
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
        _show(conn, store.schedule_call(conn, uid, at, topic))


def _update(call_id: str, when: datetime | None, verb: str) -> None:
    """Reschedules (with `when`) or cancels a pending call."""
    cid = parse_uuid(call_id, "call id")
    with psycopg.connect(database_url(), autocommit=True) as conn:
        current = store.call_state(conn, cid)
        if current is None:
            raise PrecallError(f"no call with id {cid}")
        status, user_id = current
        if status != "pending":
            raise PrecallError(f"call {cid} is {status}: only a pending call can be {verb}")
        # The scheduled_calls triggers re-plan or cancel the unsent previews, as for a DBA's UPDATE.
        if when is not None:
            store.reschedule_call(conn, cid, _instant(conn, user_id, when))
        else:
            store.cancel_call(conn, cid)
        _show(conn, cid)


@app.command("reschedule")
def reschedule_cmd(
    call_id: str = typer.Argument(..., help="The call's id."),
    when: str = typer.Argument(..., help="New local time of the user, e.g. '2026-11-26 08:30'."),
) -> None:
    """Move a pending call; its unsent preview moves with it.

    Example: precall calls reschedule 9b1d7c1e-0f4a-4d8e-8a51-6b1f9e2c3d40 "2026-11-26 08:30"
    """
    _update(call_id, _when(when), "rescheduled")


@app.command("cancel")
def cancel_cmd(call_id: str = typer.Argument(..., help="The call's id.")) -> None:
    """Cancel a pending call; its unsent preview is cancelled too.

    Example: precall calls cancel 9b1d7c1e-0f4a-4d8e-8a51-6b1f9e2c3d40
    """
    _update(call_id, None, "cancelled")
