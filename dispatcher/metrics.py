"""Prometheus metrics of one dispatcher process (served on PRECALL_METRICS_PORT when set).

Each Dispatcher owns its registry: no process-wide state, so tests can run several side by side.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# Lateness is judged in milliseconds (target p99 ≤ 20 ms); provider calls in tens to hundreds.
LATENESS_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 15, 60)
PROVIDER_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.5, 3, 5, 10)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.sends = Counter("precall_sends", "Previews handled, by channel, type and outcome "
                             "(sent, failed, skipped, cancelled).", ["channel", "type", "outcome"], registry=r)
        self.lateness = Histogram("precall_lateness_seconds", "attempted_at - send_at of each send attempt.",
                                  buckets=LATENESS_BUCKETS, registry=r)
        self.provider_latency = Histogram("precall_provider_latency_seconds", "One provider API call.",
                                          ["provider", "result"], buckets=PROVIDER_BUCKETS, registry=r)
        self.lease_recoveries = Counter("precall_lease_recoveries", "Rows taken over after another "
                                        "dispatcher's lease expired (it crashed or hung mid-send).", registry=r)
        self.fallbacks_fired = Counter("precall_fallbacks_fired", "Path C fallback SMS sent by this process.",
                                       registry=r)
        # Read from the database (the whole cluster's view, the same in every dispatcher).
        self.queue_depth = Gauge("precall_queue_depth", "Previews queued (planned, not yet sent).", registry=r)
        self.oldest_overdue = Gauge("precall_oldest_overdue_seconds", "How late the oldest queued preview is "
                                    "(0 when none is overdue).", registry=r)
        self.fallbacks_last_hour = Gauge("precall_fallbacks_last_hour", "Path C fallbacks in the last hour: "
                                         "fired (SMS sent) or avoided (receipt arrived first).", ["outcome"],
                                         registry=r)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @contextmanager
    def timed(self, provider: str) -> Iterator[None]:
        """Observes one provider call's duration, labelled ok or error."""
        start, result = time.perf_counter(), "error"
        try:
            yield
            result = "ok"
        finally:
            self.provider_latency.labels(provider, result).observe(time.perf_counter() - start)

    def serve(self, port: int, addr: str) -> None:
        self._server, self._thread = start_http_server(port, addr=addr, registry=self.registry)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
