"""A local Twilio Messages API: POST /2010-04-01/Accounts/{AC…}/Messages.json with Twilio's
real success and error JSON.

Behaviour by destination (as Twilio's magic test numbers): +15005550004 → 21610 (replied STOP),
+15005550001 → 21211 (invalid To), +15005550009 → 21614 (not a mobile), +15005550002 → 500.
Run standalone: cd tests && python -m fakes.fake_twilio --port 8812
"""

from __future__ import annotations

import argparse
import base64
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from precall.fakes.http_fake import FakeServer, JsonHandler

MESSAGES_PATH = re.compile(r"^/2010-04-01/Accounts/(AC\w+)/Messages\.json$")

ERRORS = {
    "+15005550004": (21610, "Attempt to send to unsubscribed recipient"),
    "+15005550001": (21211, "The 'To' number +15005550001 is not a valid phone number."),
    "+15005550009": (21614, "'To' number is not a valid mobile number"),
}


@dataclass
class SmsRecord:
    at: float
    account: str
    form: dict[str, str]
    status: int
    received_at: float = 0.0  # when the request arrived (`at`: when it was answered)


@dataclass
class FakeTwilioState:
    sent: list[SmsRecord] = field(default_factory=list)  # answered requests, recorded when answered
    arrived: list[dict[str, str]] = field(default_factory=list)  # every request's form, as it arrives
    latency_s: float = 0.0  # every answer waits this long (benchmarks: Twilio's ~200 ms)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def accepted(self) -> list[SmsRecord]:
        with self.lock:
            return [r for r in self.sent if r.status == 201]


class _Handler(JsonHandler):
    server: "FakeTwilioServer"

    def do_POST(self) -> None:  # noqa: N802
        received_at = time.time()
        raw = self.read_body().decode()
        match = MESSAGES_PATH.match(self.path)
        if not match:
            self.reply(404, {"code": 20404, "message": "The requested resource was not found", "status": 404})
            return
        auth = self.headers.get("Authorization", "")
        user = base64.b64decode(auth.split(" ", 1)[1]).decode().split(":")[0] if auth.startswith("Basic ") else ""
        if user != match.group(1):
            self.reply(401, {"code": 20003, "message": "Authenticate", "more_info": "https://www.twilio.com/docs/errors/20003", "status": 401})
            return
        form = {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}
        with self.server.state.lock:
            self.server.state.arrived.append(form)
        to = form.get("To", "")
        if to == "+15005550002":
            status, body = 500, {"code": 20500, "message": "Internal Server Error", "status": 500}
        elif to in ERRORS:
            code, message = ERRORS[to]
            status, body = 400, {"code": code, "message": message,
                                 "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": 400}
        else:
            sid = "SM" + uuid.uuid4().hex
            status, body = 201, {
                "account_sid": match.group(1), "api_version": "2010-04-01", "body": form.get("Body"),
                "date_created": time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()),
                "direction": "outbound-api", "error_code": None, "error_message": None,
                "from": form.get("From"), "messaging_service_sid": form.get("MessagingServiceSid"),
                "num_segments": "1", "price": None, "sid": sid, "status": "queued", "to": to,
                "uri": f"/2010-04-01/Accounts/{match.group(1)}/Messages/{sid}.json",
            }
        if self.server.state.latency_s:
            time.sleep(self.server.state.latency_s)
        with self.server.state.lock:
            self.server.state.sent.append(SmsRecord(time.time(), match.group(1), form, status, received_at))
        self.reply(status, body)


class FakeTwilioServer(FakeServer):
    def __init__(self, port: int = 0) -> None:
        super().__init__(_Handler, port)
        self.state = FakeTwilioState()

    def start(self) -> "FakeTwilioServer":
        super().start()
        return self


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8812)
    args = parser.parse_args()
    server = FakeTwilioServer(args.port)
    print(f"fake Twilio on {server.url}", flush=True)
    server.serve_forever()
