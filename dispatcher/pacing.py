"""Pacing sends to a provider's rate limit (per dispatcher process; several processes split it)."""

from __future__ import annotations

import asyncio
import math


class Pacer:
    """Spaces calls at least 1/rate seconds apart, in call order; rate None or 0 means unpaced."""

    def __init__(self, per_second: float | None) -> None:
        self._interval = 1.0 / per_second if per_second else 0.0
        self._next = 0.0

    @property
    def paced(self) -> bool:
        return self._interval > 0

    def slots_within(self, horizon_s: float) -> int:
        """How many sends this pacer lets out in the next horizon_s seconds (unpaced: unbounded)."""
        if not self._interval:
            return 1 << 30
        now = asyncio.get_running_loop().time()
        return max(0, math.floor((now + horizon_s - max(now, self._next)) / self._interval) + 1)

    async def wait(self) -> None:
        if not self._interval:
            return
        now = asyncio.get_running_loop().time()
        slot = max(now, self._next)
        self._next = slot + self._interval
        if slot > now:
            await asyncio.sleep(slot - now)
