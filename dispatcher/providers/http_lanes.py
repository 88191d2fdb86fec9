"""An httpx transport that spreads requests over several small connection pools ("lanes").

Why: httpcore 1.0.9's pool costs O(connections²) per request (it recounts every connection for
each idle one it looks at), and with more connections than `max_keepalive_connections` (20 by
default) it closes idle connections, so above ~20 sends in flight nearly every send opened a new
TCP connection. Raising the keep-alive limit on one big pool kept the connections but tripled the
CPU per send (bench/throughput.py). Several pools of a few connections each keep every connection
alive and make each acquire cheap.
"""

from __future__ import annotations

import httpx

PER_LANE = 4  # requests a lane is expected to carry at once; its pool keeps that many connections


class LaneTransport(httpx.AsyncBaseTransport):
    def __init__(self, in_flight: int, http2: bool = True) -> None:
        lanes = max(1, -(-in_flight // PER_LANE))
        # One SSL context for all lanes: building one loads the CA bundle (~40 ms of CPU).
        ssl_context = httpx.create_ssl_context()
        limits = httpx.Limits(max_connections=PER_LANE * 2, max_keepalive_connections=PER_LANE * 2)
        self._lanes = [httpx.AsyncHTTPTransport(verify=ssl_context, http2=http2, retries=0, limits=limits)
                       for _ in range(lanes)]
        self._busy = [0] * lanes

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        lane = min(range(len(self._lanes)), key=self._busy.__getitem__)
        # Counted until the answer's headers are in; the body follows at once (FCM answers are small).
        self._busy[lane] += 1
        try:
            return await self._lanes[lane].handle_async_request(request)
        finally:
            self._busy[lane] -= 1

    async def aclose(self) -> None:
        for lane in self._lanes:
            await lane.aclose()
