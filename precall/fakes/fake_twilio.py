"""A local Twilio Messages API: POST /2010-04-01/Accounts/{AC…}/Messages.json with Twilio's real
success and error JSON, and the status callbacks Twilio sends afterwards.

What it checks and does, as Twilio does:
- HTTP Basic auth: the account SID and its auth token (`auth_token`); otherwise 401 (20003).
- A sender: `From` or a messaging service (`MessagingServiceSid`, MG…); otherwise 400 (21603).
- Rate: more than `rate_per_s` messages a second from one sender → 429 (20429), nothing queued.
- `num_segments` counted from the body: GSM-7 (160 septets, 153 per part, extension characters
  count two) or UCS-2 (70 UTF-16 units, 67 per part).
- With `callbacks_to` set, each accepted message's StatusCallback receives `sent` then
  `delivered` (form-encoded, as Twilio posts them), posted to `callbacks_to` and signed for the
  StatusCallback URL itself (X-Twilio-Signature: base64 HMAC-SHA1 of the URL followed by each
  parameter's name and value in name order, under the auth token), computed here by hand.

Each request is recorded when it arrives (`arrived`, and `at` on the record), before any latency.
Behaviour by destination (as Twilio's magic test numbers): +15005550004 → 21610 (replied STOP),
+15005550001 → 21211 (invalid To), +15005550009 → 21614 (not a mobile), +15005550002 → 500.
Run standalone: python -m precall.fakes.fake_twilio --port 8812
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import math
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlencode

from precall.fakes.http_fake import FakeServer, JsonHandler

MESSAGES_PATH = re.compile(r"^/2010-04-01/Accounts/(AC\w+)/Messages\.json$")

ERRORS = {
    "+15005550004": (21610, "Attempt to send to unsubscribed recipient"),
    "+15005550001": (21211, "The 'To' number +15005550001 is not a valid phone number."),
    "+15005550009": (21614, "'To' number is not a valid mobile number"),
}

# GSM 03.38: the basic set, and the extension table (each costs an escape plus the character).
GSM7_BASIC = set("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
                 "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
GSM7_EXTENSION = set("^{}\\[~]|€\f")


def segments(body: str) -> tuple[str, int]:
    """(encoding, segments) as Twilio counts them."""
    if all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in body):
        septets = sum(2 if c in GSM7_EXTENSION else 1 for c in body)
        return "GSM-7", 1 if septets <= 160 else math.ceil(septets / 153)
    units = len(body.encode("utf-16-le")) // 2
    return "UCS-2", 1 if units <= 70 else math.ceil(units / 67)


def signature(auth_token: str, url: str, params: dict[str, str]) -> str:
    """Twilio's X-Twilio-Signature, by hand: HMAC-SHA1 over the URL and the sorted name+value pairs."""
    data = url + "".join(name + params[name] for name in sorted(params))
    return base64.b64encode(hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()).decode()


@dataclass
class SmsRecord:
    at: float  # when the request arrived
    account: str
    form: dict[str, str]
    status: int
    answered_at: float | None = None

    @property
    def received_at(self) -> float:
        return self.at


@dataclass
class Callback:
    url: str  # the StatusCallback URL (what the signature covers)
    form: dict[str, str]
    signature: str
    status: int | None = None  # the receiver's answer (None: not reached)


@dataclass
class FakeTwilioState:
    sent: list[SmsRecord] = field(default_factory=list)  # every message request, recorded as it arrives
    arrived: list[dict[str, str]] = field(default_factory=list)  # every request's form, as it arrives
    latency_s: float = 0.0  # every answer waits this long (benchmarks: Twilio's ~200 ms)
    auth_token: str = "test-auth-token"
    rate_per_s: float | None = None  # per sender; None: unlimited
    # Where status callbacks really go: the URL behind the public StatusCallback (as a reverse
    # proxy would forward it); the signature still covers the public URL.
    callbacks_to: str | None = None
    callback_delay_s: float = 0.05
    callbacks: list[Callback] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _sent_by_sender: dict[str, list[float]] = field(default_factory=dict)

    def accepted(self) -> list[SmsRecord]:
        with self.lock:
            return [r for r in self.sent if r.status == 201]

    def over_rate(self, sender: str, now: float) -> bool:
        if not self.rate_per_s:
            return False
        with self.lock:
            recent = [t for t in self._sent_by_sender.get(sender, []) if now - t < 1.0]
            if len(recent) >= self.rate_per_s:
                self._sent_by_sender[sender] = recent
                return True
            self._sent_by_sender[sender] = recent + [now]
            return False


def _twilio_error(status: int, code: int, message: str) -> dict[str, object]:
    return {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status}


class _Handler(JsonHandler):
    server: "FakeTwilioServer"

    def do_POST(self) -> None:  # noqa: N802
        arrived = time.time()
        raw = self.read_body().decode()
        state = self.server.state
        match = MESSAGES_PATH.match(self.path)
        if not match:
            self.reply(404, {"code": 20404, "message": "The requested resource was not found", "status": 404})
            return
        auth = self.headers.get("Authorization", "")
        user, _, password = (base64.b64decode(auth.split(" ", 1)[1]).decode().partition(":")
                             if auth.startswith("Basic ") else ("", "", ""))
        if user != match.group(1) or password != state.auth_token:
            self.reply(401, _twilio_error(401, 20003, "Authenticate"))
            return
        form = {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}
        with state.lock:
            state.arrived.append(form)
        to = form.get("To", "")
        sender = form.get("MessagingServiceSid") or form.get("From") or ""
        if not sender:
            status, body = 400, _twilio_error(400, 21603, "A 'From' phone number is required.")
        elif sender.startswith("MG") and not re.fullmatch(r"MG[0-9a-f]{32}", sender):
            status, body = 400, _twilio_error(400, 21701, f"The Messaging Service Sid {sender} is invalid.")
        elif state.over_rate(sender, arrived):
            status, body = 429, _twilio_error(429, 20429, "Too Many Requests")
        elif to == "+15005550002":
            status, body = 500, {"code": 20500, "message": "Internal Server Error", "status": 500}
        elif to in ERRORS:
            code, message = ERRORS[to]
            status, body = 400, _twilio_error(400, code, message)
        else:
            sid = "SM" + uuid.uuid4().hex
            _, parts = segments(form.get("Body", ""))
            status, body = 201, {
                "account_sid": match.group(1), "api_version": "2010-04-01", "body": form.get("Body"),
                "date_created": time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()),
                "direction": "outbound-api", "error_code": None, "error_message": None,
                "from": form.get("From"), "messaging_service_sid": form.get("MessagingServiceSid"),
                "num_segments": str(parts), "price": None, "sid": sid, "status": "queued", "to": to,
                "uri": f"/2010-04-01/Accounts/{match.group(1)}/Messages/{sid}.json",
            }
            if form.get("StatusCallback") and state.callbacks_to:
                threading.Thread(target=self.server.send_callbacks, args=(match.group(1), sid, form), daemon=True).start()
        record = SmsRecord(arrived, match.group(1), form, status)
        with state.lock:
            state.sent.append(record)
        if state.latency_s:
            time.sleep(state.latency_s)
        record.answered_at = time.time()
        self.reply(status, body)


class FakeTwilioServer(FakeServer):
    def __init__(self, port: int = 0) -> None:
        super().__init__(_Handler, port)
        self.state = FakeTwilioState()

    def start(self) -> "FakeTwilioServer":
        super().start()
        return self

    def send_callbacks(self, account: str, sid: str, form: dict[str, str]) -> None:
        """`sent`, then `delivered`, as Twilio posts them to the message's StatusCallback."""
        state = self.state
        public_url = form["StatusCallback"]
        for message_status in ("sent", "delivered"):
            time.sleep(state.callback_delay_s)
            params = {"AccountSid": account, "ApiVersion": "2010-04-01", "From": form.get("From", ""),
                      "MessageSid": sid, "MessageStatus": message_status, "SmsSid": sid, "SmsStatus": message_status,
                      "To": form.get("To", "")}
            if message_status == "delivered":
                params["RawDlrDoneDate"] = time.strftime("%y%m%d%H%M", time.gmtime())
            callback = Callback(public_url, params, signature(state.auth_token, public_url, params))
            with state.lock:
                state.callbacks.append(callback)
            assert state.callbacks_to is not None
            request = urllib.request.Request(state.callbacks_to, data=urlencode(params).encode(), method="POST", headers={
                "Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": callback.signature,
                "I-Twilio-Idempotency-Token": uuid.uuid4().hex})
            try:
                with urllib.request.urlopen(request, timeout=5) as answer:
                    callback.status = answer.status
            except urllib.error.HTTPError as exc:
                callback.status = exc.code
            except OSError:
                callback.status = None


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8812)
    args = parser.parse_args()
    server = FakeTwilioServer(args.port)
    print(f"fake Twilio on {server.url}", flush=True)
    server.serve_forever()
