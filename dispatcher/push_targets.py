"""Where a claimed preview's push goes: the user's devices (precall.push_targets), read once per
claim batch and attached to each claimed row."""

from __future__ import annotations

import dataclasses
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from psycopg import AsyncConnection

from precall import sql


@dataclass(frozen=True)
class PushTarget:
    """One device a preview push goes to. sent_provider_id: it already took this preview (an
    earlier attempt recorded it), so it is not sent again."""

    device_id: int
    fcm_token: str
    platform: str | None
    sent_provider_id: str | None = None


class _Claimed(Protocol):
    @property
    def id(self) -> uuid.UUID: ...

    @property
    def type(self) -> str: ...


R = TypeVar("R", bound=_Claimed)


async def attach(conn: AsyncConnection[Any], rows: list[R]) -> list[R]:
    """The rows with their `devices` filled in: one statement for the whole batch (a fallback SMS
    needs none)."""
    ids = [r.id for r in rows if r.type != "fallback_sms"]
    if not ids:
        return rows
    cur = await conn.execute(sql.query("push_targets"), {"ids": ids})
    by_row: dict[uuid.UUID, list[PushTarget]] = defaultdict(list)
    for notification_id, device_id, token, platform, sent_provider_id in await cur.fetchall():
        by_row[notification_id].append(PushTarget(device_id, token, platform, sent_provider_id))
    return [dataclasses.replace(r, devices=tuple(by_row.get(r.id, ())))  # type: ignore[type-var]
            for r in rows]
