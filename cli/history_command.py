"""`precall history USER_ID`: a user's notifications, newest first (support's view of the app's history)."""

from __future__ import annotations

import uuid

import psycopg
import typer

from precall.cli import store
from precall.cli.output import JSON_HELP, emit
from precall.config import database_url
from precall.errors import PrecallError

COLUMNS = ["created_at", "type", "channel", "status", "title", "sent_at", "delivered_at", "opened_at", "reason", "id"]


def parse_uuid(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise PrecallError(f"{what} {value!r} is not a uuid") from None


def history_cmd(
    user_id: str = typer.Argument(..., help="The user's id."),
    limit: int = typer.Option(20, min=1, max=1000, help="How many rows, newest first."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """A user's notification history, newest first.

    Example: precall history 3f2c7a1e-5b1d-4c1e-9a7e-2d5f0c9b1a11 --limit 5
    """
    uid = parse_uuid(user_id, "user id")
    with psycopg.connect(database_url(), autocommit=True) as conn:
        if not store.user_known(conn, uid):
            raise PrecallError(f"no user with id {uid}")
        rows = store.history(conn, uid, limit)
    emit(rows, COLUMNS, as_json, title=f"notifications of {uid}")
