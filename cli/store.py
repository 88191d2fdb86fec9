"""The command line's database access: one typed function per statement of sql/queries/cli.sql."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import class_row, dict_row

from precall import sql
from precall.errors import from_database
from precall.dispatcher.send_preview import ClaimedPreview

Row = dict[str, Any]


def _one(conn: psycopg.Connection[Any], name: str, params: dict[str, object] | None = None) -> tuple[Any, ...] | None:
    return conn.execute(sql.query(name), params or {}).fetchone()


def _dicts(conn: psycopg.Connection[Any], name: str, params: dict[str, object]) -> list[Row]:
    return conn.cursor(row_factory=dict_row).execute(sql.query(name), params).fetchall()


# -- users, history, KPIs -------------------------------------------------------------------------

def user_known(conn: psycopg.Connection[Any], user_id: uuid.UUID) -> bool:
    return _one(conn, "user_known", {"user_id": user_id}) is not None


def history(conn: psycopg.Connection[Any], user_id: uuid.UUID, limit: int) -> list[Row]:
    return _dicts(conn, "history", {"user_id": user_id, "limit": limit})


def kpis(conn: psycopg.Connection[Any], since: datetime, by: str) -> list[Row]:
    return _dicts(conn, "kpis", {"since": since, "by": by})


# -- calls ----------------------------------------------------------------------------------------

def list_calls(conn: psycopg.Connection[Any], *, id: uuid.UUID | None = None, user: uuid.UUID | None = None,
               status: str | None = None, since: str | None = None, until: str | None = None,
               limit: int = 50) -> list[Row]:
    return _dicts(conn, "list_calls", {"id": id, "user": user, "status": status, "since": since, "until": until,
                                       "limit": limit})


def local_call_time(conn: psycopg.Connection[Any], user_id: object, local: datetime) -> datetime | None:
    """The instant of the user's wall-clock time `local` (DST included); None for an unknown user."""
    row = _one(conn, "local_call_time", {"user_id": user_id, "local": local})
    return row[0] if row else None


def call_state(conn: psycopg.Connection[Any], call_id: uuid.UUID) -> tuple[str, uuid.UUID] | None:
    """(status, user_id), or None when there is no such call."""
    row = _one(conn, "call_state", {"id": call_id})
    return (row[0], row[1]) if row else None


def schedule_call(conn: psycopg.Connection[Any], user_id: uuid.UUID, at: datetime, topic: str | None) -> uuid.UUID:
    row = _one(conn, "schedule_call", {"user_id": user_id, "at": at, "topic": topic})
    assert row is not None
    return row[0]


def reschedule_call(conn: psycopg.Connection[Any], call_id: uuid.UUID, at: datetime) -> None:
    conn.execute(sql.query("reschedule_call"), {"id": call_id, "at": at})


def cancel_call(conn: psycopg.Connection[Any], call_id: uuid.UUID) -> None:
    conn.execute(sql.query("cancel_call"), {"id": call_id})


# -- capacity and health ----------------------------------------------------------------------------

def live_dispatchers(conn: psycopg.Connection[Any]) -> int:
    row = _one(conn, "live_dispatchers")
    return int(row[0]) if row else 0


def queued_on_channel(conn: psycopg.Connection[Any], channel: str) -> int:
    row = _one(conn, "queued_on_channel", {"channel": channel})
    return int(row[0]) if row else 0


def send_capacity(conn: psycopg.Connection[Any], channel: str) -> float:
    """precall.send_capacity(): the rate planning smooths bursts to."""
    row = _one(conn, "send_capacity", {"channel": channel})
    assert row is not None
    return float(row[0])


def previews_beyond_capacity(conn: psycopg.Connection[Any], channel: str) -> list[Row]:
    return _dicts(conn, "previews_beyond_capacity", {"channel": channel})


def previews_at_risk(conn: psycopg.Connection[Any], rate: float, channel: str) -> list[Row]:
    return _dicts(conn, "previews_at_risk", {"rate": rate, "channel": channel})


def dispatcher_heartbeats(conn: psycopg.Connection[Any]) -> list[tuple[str, datetime, datetime | None]]:
    """(name, heartbeat_at, stopped_at), the latest heartbeat first."""
    return [(r[0], r[1], r[2]) for r in conn.execute(sql.query("dispatcher_heartbeats")).fetchall()]


def heartbeat_max_age(conn: psycopg.Connection[Any]) -> timedelta:
    row = _one(conn, "heartbeat_max_age")
    assert row is not None
    return row[0]


@dataclass(frozen=True)
class QueueHealth:
    queued: int
    overdue: int
    oldest_overdue_s: float | None
    expired_leases: int


def queue_health(conn: psycopg.Connection[Any], overdue_after: timedelta) -> QueueHealth:
    row = _one(conn, "queue_health", {"after": overdue_after}) or (0, 0, None, 0)
    return QueueHealth(int(row[0]), int(row[1]), float(row[2]) if row[2] is not None else None, int(row[3]))


def expired_calls(conn: psycopg.Connection[Any]) -> tuple[int, datetime | None]:
    """Call jobs that expired unhanded in the last 24 h, and the last one's time."""
    row = _one(conn, "expired_calls") or (0, None)
    return int(row[0]), row[1]


def snooze_minutes(conn: psycopg.Connection[Any]) -> int:
    """precall.settings.snooze_minutes: what the SMS reply hint says."""
    row = _one(conn, "snooze_minutes")
    return int(row[0]) if row else 10


def failed_call_events(conn: psycopg.Connection[Any]) -> tuple[int, datetime | None]:
    """Call events (call.rescheduled / call.cancelled) not delivered in the last 24 h, and the last one's time."""
    row = _one(conn, "failed_call_events") or (0, None)
    return int(row[0]), row[1]


def sms_budget_use(conn: psycopg.Connection[Any]) -> list[tuple[str, Decimal, Decimal, Decimal | None]]:
    """Today's SMS spend against each currency's budget (precall.settings.sms_daily_budget)."""
    return [(r[0], r[1], r[2], r[3]) for r in conn.execute(sql.query("sms_budget_use")).fetchall()]


# -- manual sends and rendering ---------------------------------------------------------------------

def preview_inputs(conn: psycopg.Connection[Any], call_id: uuid.UUID) -> Row | None:
    return conn.cursor(row_factory=dict_row).execute(sql.query("preview_inputs"), {"call_id": call_id}).fetchone()


def last_sent_preview(conn: psycopg.Connection[Any], call_id: uuid.UUID,
                      planned_for: datetime) -> tuple[datetime, str, str] | None:
    """(sent_at, channel, type) of the latest preview sent for this call time."""
    row = _one(conn, "last_sent_preview", {"call_id": call_id, "planned_for": planned_for})
    return (row[0], row[1], row[2]) if row else None


async def claim_manual_preview(conn: psycopg.AsyncConnection[Any], call_id: uuid.UUID, worker: str, force: bool,
                               type_: str | None) -> ClaimedPreview:
    """Raises psycopg errors with precall's SQLSTATEs on a refusal (precall.errors.from_database)."""
    cur = conn.cursor(row_factory=class_row(ClaimedPreview))
    await cur.execute(sql.query("claim_manual_preview_v2"),
                      {"call_id": call_id, "worker": worker, "force": force, "type": type_})
    row = await cur.fetchone()
    assert row is not None
    return row


async def notification_and_fallback(conn: psycopg.AsyncConnection[Any], notification_id: uuid.UUID) -> list[Row]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(sql.query("notification_and_fallback"), {"id": notification_id})
    return await cur.fetchall()


@dataclass(frozen=True)
class MessageInputs:
    coach_name: str | None
    streak: int | None
    topic: str | None
    locale: str
    seconds_left: float
    lead_min: int
    snooze_minutes: int


def message_inputs(conn: psycopg.Connection[Any], user_id: str, call_id: str) -> MessageInputs | None:
    """Raises psycopg.errors.InvalidTextRepresentation when an id is not a uuid."""
    row = _one(conn, "message_inputs", {"call_id": call_id, "user_id": user_id})
    return MessageInputs(*row) if row else None


# -- the demo ---------------------------------------------------------------------------------------

def demo_coach(conn: psycopg.Connection[Any], name: str) -> uuid.UUID:
    row = _one(conn, "demo_coach", {"name": name})
    assert row is not None
    return row[0]


def demo_user(conn: psycopg.Connection[Any], **columns: object) -> uuid.UUID:
    """phone, locale, tz, streak, token, platform, push, pref, lead, coach_id."""
    row = _one(conn, "demo_user", columns)
    assert row is not None
    return row[0]


def demo_call(conn: psycopg.Connection[Any], user_id: uuid.UUID, in_seconds: float, topic: str) -> None:
    conn.execute(sql.query("demo_call"), {"user_id": user_id, "seconds": in_seconds, "topic": topic})


def demo_previews(conn: psycopg.Connection[Any]) -> list[tuple[str, str, str, str, str, str]]:
    """(send_at, call at, type, status, late ms, reason) as text, in send order."""
    return [tuple(r) for r in conn.execute(sql.query("demo_previews")).fetchall()]


def demo_calls_not_planned(conn: psycopg.Connection[Any]) -> int:
    row = _one(conn, "demo_calls_not_planned")
    return int(row[0]) if row else 0


async def demo_work_left(conn: psycopg.AsyncConnection[Any]) -> int:
    cur = await conn.execute(sql.query("demo_work_left"))
    row = await cur.fetchone()
    return int(row[0]) if row else 0


# -- experiments ------------------------------------------------------------------------------------

def create_experiment(conn: psycopg.Connection[Any], name: str, arms: list[dict[str, Any]], holdout: float,
                      population: dict[str, str], starts_at: datetime | None, ends_at: datetime | None,
                      allocation: str) -> int:
    """Raises ExperimentRefused (PC010) with the reason on one line."""
    try:
        row = _one(conn, "create_experiment", {"name": name, "arms": json.dumps(arms), "holdout": holdout,
                                               "population": json.dumps(population), "starts_at": starts_at,
                                               "ends_at": ends_at, "allocation": allocation})
    except psycopg.Error as exc:
        raise (from_database(exc) or exc) from None
    assert row is not None
    return int(row[0])


def stop_experiment(conn: psycopg.Connection[Any], name: str) -> int | None:
    """The calls re-planned; None when no running experiment has that name."""
    row = _one(conn, "stop_experiment", {"name": name})
    return None if row is None or row[0] is None else int(row[0])


def experiments(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    return conn.cursor(row_factory=dict_row).execute(sql.query("experiments"), {}).fetchall()


def experiment_report(conn: psycopg.Connection[Any], name: str) -> list[dict[str, Any]]:
    return conn.cursor(row_factory=dict_row).execute(sql.query("experiment_report"), {"name": name}).fetchall()


def experiment_guardrail(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """Arms significantly worse than their control (p < 0.01, ≥ 200 calls each)."""
    return conn.cursor(row_factory=dict_row).execute(sql.query("experiment_guardrail")).fetchall()


def experiment_allocations(conn: psycopg.Connection[Any], name: str) -> list[dict[str, Any]]:
    """The shares at creation and after each Thompson re-weighting, oldest first."""
    return conn.cursor(row_factory=dict_row).execute(sql.query("experiment_allocations"), {"name": name}).fetchall()
