"""The API's database access: one typed function per statement of sql/queries/api.sql."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
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
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(sql.query("notification_history"), {"user_id": user_id, "limit": limit, "offset": offset})
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
                              device_id: int | None = None) -> ReceiptOutcome:
    """For a user (bearer) or a device (receipt token: user_id None)."""
    row = await _one(conn, "record_push_receipt", {"id": notification_id, "event": event, "at": at, "user_id": user_id,
                                                   "device_id": device_id})
    assert row is not None
    return row[0]


async def receipt_state(conn: AsyncConnection[Any], notification_id: uuid.UUID) -> ReceiptState:
    row = await _one(conn, "receipt_state", {"id": notification_id})
    delivered_at, opened_at, late = row or (None, None, False)
    return ReceiptState(delivered_at, opened_at, bool(late))


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
