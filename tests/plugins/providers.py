"""Fixtures: the fake providers (FCM, Twilio: precall.fakes, speaking their wire formats) and a
receiver for the call webhook, each on a free local port for one test."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from precall.fakes.fake_fcm import FakeFcmServer
from precall.fakes.fake_twilio import FakeTwilioServer

TWILIO_SID = "AC" + "0" * 32


@pytest.fixture
def fake_fcm() -> Iterator[FakeFcmServer]:
    server = FakeFcmServer().start()
    yield server
    server.shutdown()


@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilioServer]:
    server = FakeTwilioServer().start()
    yield server
    server.shutdown()


# --- the call webhook's receiver ------------------------------------------------------------

class _Receiver(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((time.time(), dict(self.headers), body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def webhook_receiver() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.received = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
