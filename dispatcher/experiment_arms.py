"""What an experiment arm changes at send time: its channel and its copy variant, read once per
claim batch (only while a running experiment has such an arm: precall.settings is asked with every
heartbeat) and attached to each claimed row. Lead and holdout arms act at planning, in SQL."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any, Protocol, TypeVar

from psycopg import AsyncConnection

from precall import sql


class _Claimed(Protocol):
    @property
    def id(self) -> uuid.UUID: ...


R = TypeVar("R", bound=_Claimed)


async def attach(conn: AsyncConnection[Any], rows: list[R]) -> list[R]:
    """The rows with `arm_channel` and `variant` filled in from their arm (a fallback SMS from its
    push's arm)."""
    if not rows:
        return rows
    cur = await conn.execute(sql.query("arm_overrides"), {"ids": [r.id for r in rows]})
    found = {nid: (channel, variant) for nid, channel, variant in await cur.fetchall()}
    if not found:
        return rows
    return [dataclasses.replace(r, arm_channel=found[r.id][0], variant=found[r.id][1])  # type: ignore[type-var]
            if r.id in found else r for r in rows]
