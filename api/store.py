"""The API's database access: one typed function per statement of sql/queries/api.sql."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from precall import sql

ReceiptOutcome = Literal["recorded", "duplicate", "unknown", "not_push", "not_sent"]
SmsStatusOutcome = Literal["applied", "pending", "duplicate"]


@dataclass(frozen=True)
class ReceiptState:
    delivered_at: datetime | None
    opened_at: datetime | None
    late: bool


async def _one(conn: AsyncConnection[Any], name: str, params: dict[str, object]) -> tuple[Any, ...] | None:
    cur = await conn.execute(sql.query(name), params)
    return await cur.fetchone()


async def bound_session(conn: AsyncConnection[Any], statement_timeout_ms: int, lock_timeout_ms: int) -> None:
    await conn.execute(sql.query("session_limits"),
                       {"statement_timeout": f"{statement_timeout_ms}ms", "lock_timeout": f"{lock_timeout_ms}ms"})


async def ping(conn: AsyncConnection[Any]) -> None:
    await conn.execute(sql.query("ping"))


async def user_exists(conn: AsyncConnection[Any], user_id: uuid.UUID) -> bool:
    return await _one(conn, "user_exists", {"user_id": user_id}) is not None


async def register_device(conn: AsyncConnection[Any], user_id: uuid.UUID, fcm_token: str, platform: str,
                          push_enabled: bool) -> bool:
    """False when the user does not exist."""
    row = await _one(conn, "register_device", {"user_id": user_id, "fcm_token": fcm_token, "platform": platform,
                                               "push_enabled": push_enabled})
    return bool(row and row[0])


async def phone_on_file(conn: AsyncConnection[Any], user_id: uuid.UUID) -> bool:
    row = await _one(conn, "phone_on_file", {"user_id": user_id})
    return bool(row and row[0])


async def update_preferences(conn: AsyncConnection[Any], user_id: uuid.UUID, pref: str | None,
                             lead_min: int | None) -> None:
    """Raises psycopg.errors.CheckViolation for a lead above precall.settings.max_lead."""
    await conn.execute(sql.query("update_preferences"), {"user_id": user_id, "pref": pref, "lead_min": lead_min})


async def notification_history(conn: AsyncConnection[Any], user_id: uuid.UUID, limit: int,
                               offset: int) -> list[dict[str, Any]]:
    """Notifications and the actions taken on them, newest first."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(sql.query("history_entries"), {"user_id": user_id, "limit": limit, "offset": offset})
    return await cur.fetchall()


async def unregister_device(conn: AsyncConnection[Any], user_id: uuid.UUID, fcm_token: str) -> None:
    await conn.execute(sql.query("unregister_device"), {"user_id": user_id, "fcm_token": fcm_token})


async def preferences(conn: AsyncConnection[Any], user_id: uuid.UUID) -> dict[str, Any] | None:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(sql.query("preferences"), {"user_id": user_id})
    return await cur.fetchone()


async def devices(conn: AsyncConnection[Any], user_id: uuid.UUID) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(sql.query("devices"), {"user_id": user_id})
    return await cur.fetchall()


async def record_push_receipt(conn: AsyncConnection[Any], notification_id: uuid.UUID, event: str,
                              at: datetime | None, user_id: uuid.UUID | None,
                              device_id: int | None = None) -> tuple[ReceiptOutcome, ReceiptState]:
    """For a user (bearer) or a device (receipt token: user_id None): the outcome, and the
    preview's receipt times after it."""
    row = await _one(conn, "record_push_receipt", {"id": notification_id, "event": event, "at": at, "user_id": user_id,
                                                   "device_id": device_id})
    assert row is not None
    outcome, delivered_at, opened_at, late = row
    return outcome, ReceiptState(delivered_at, opened_at, bool(late))


async def record_sms_status(conn: AsyncConnection[Any], sid: str, status: str, error_code: int | None,
                            done_at: datetime | None) -> SmsStatusOutcome:
    """'pending' when no row has that SID yet."""
    row = await _one(conn, "record_sms_status", {"sid": sid, "status": status, "error_code": error_code,
                                                 "done_at": done_at})
    assert row is not None
    return row[0]


async def record_inbound_sms(conn: AsyncConnection[Any], sid: str, from_number: str, body: str) -> str:
    """'opt_out', 'opt_in', 'stored' or 'duplicate'."""
    row = await _one(conn, "record_inbound_sms", {"sid": sid, "from_number": from_number, "body": body})
    assert row is not None
    return str(row[0])


@dataclass(frozen=True)
class ActionResult:
    """precall.apply_call_action's answer."""

    outcome: Literal["applied", "already_acted", "not_pending", "too_late", "unknown", "not_sent"]
    call_id: uuid.UUID | None
    user_id: uuid.UUID | None
    channel: str | None
    call_status: str | None
    scheduled_at: datetime | None
    previous_scheduled_at: datetime | None
    found_action: str | None
    found_at: datetime | None


async def apply_call_action(conn: AsyncConnection[Any], notification_id: uuid.UUID, action: str,
                            user_id: uuid.UUID | None, device_id: int | None) -> ActionResult:
    row = await _one(conn, "apply_call_action", {"id": notification_id, "action": action, "user_id": user_id,
                                                 "device_id": device_id})
    assert row is not None
    return ActionResult(*row)


@dataclass(frozen=True)
class InboundSms:
    """precall.receive_sms's answer: what to reply, and in whose language."""

    kind: Literal["duplicate", "opt_out", "opt_in", "ignored", "action", "help"]
    action: str | None
    outcome: str | None
    user_id: uuid.UUID | None
    locale: str | None
    coach_name: str | None
    time_zone: str | None
    scheduled_at: datetime | None
    call_status: str | None


async def receive_sms(conn: AsyncConnection[Any], sid: str, from_number: str, body: str) -> InboundSms:
    row = await _one(conn, "receive_sms", {"sid": sid, "from_number": from_number, "body": body})
    assert row is not None
    return InboundSms(*row)


async def record_sms_reply(conn: AsyncConnection[Any], sid: str, reply: str, body: str, encoding: str,
                           segments: int, cost: Decimal | None, currency: str | None) -> None:
    await conn.execute(sql.query("record_sms_reply"), {"sid": sid, "reply": reply, "body": body, "encoding": encoding,
                                                       "segments": segments, "cost": cost, "currency": currency})


async def snooze_minutes(conn: AsyncConnection[Any]) -> int:
    row = await _one(conn, "snooze_minutes", {})
    return int(row[0]) if row else 10


async def record_call_outcome(conn: AsyncConnection[Any], call_id: uuid.UUID, status: str, answered_by: str,
                              at: datetime | None) -> tuple[str, str | None, str | None]:
    """('recorded' | 'duplicate' | 'conflict' | 'unknown', the call's status, answered_by)."""
    row = await _one(conn, "record_call_outcome", {"call_id": call_id, "status": status, "answered_by": answered_by,
                                                   "at": at})
    assert row is not None
    return row[0], row[1], row[2]
