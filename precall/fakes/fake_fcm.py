"""A local FCM HTTP v1 server: OAuth token endpoint + messages:send, with FCM's real bodies.

Behaviour is chosen by the device token's prefix, so a test sets up a user and knows what FCM
will answer: dead-* → 404 UNREGISTERED, mismatch-* → 403 SENDER_ID_MISMATCH, invalid-* → 400
INVALID_ARGUMENT (not a valid FCM registration token), badpayload-* → 400 INVALID_ARGUMENT
(another reason), unavailable-* → 503 UNAVAILABLE, quota-* → 429 QUOTA_EXCEEDED, slow-* → a
slow success (FAKE_FCM_SLOW_S), flaky-* → 503 on the first try, then success.
Run standalone: cd tests && python -m fakes.fake_fcm --port 8811
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from precall.fakes.http_fake import FakeServer, JsonHandler

SEND_PATH = re.compile(r"^/v1/projects/([^/]+)/messages:send$")


def _error(code: int, status: str, message: str, fcm_code: str | None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message, "status": status}
    if fcm_code:
        err["details"] = [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": fcm_code}]
    return {"error": err}


ERRORS = {
    "dead-": (404, _error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")),
    "mismatch-": (403, _error(403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH")),
    "invalid-": (400, _error(400, "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token",
                             "INVALID_ARGUMENT")),
    "badpayload-": (400, _error(400, "INVALID_ARGUMENT", "Invalid value at 'message.android.ttl'", "INVALID_ARGUMENT")),
    "unavailable-": (503, _error(503, "UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE")),
    "quota-": (429, _error(429, "RESOURCE_EXHAUSTED", "Quota exceeded.", "QUOTA_EXCEEDED")),
}

FAULTS = {
    500: _error(500, "INTERNAL", "Internal error encountered.", "INTERNAL"),
    503: _error(503, "UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE"),
    429: _error(429, "RESOURCE_EXHAUSTED", "Quota exceeded.", "QUOTA_EXCEEDED"),
}


@dataclass
class FcmRecord:
    at: float
    project: str
    message: dict[str, Any]
    status: int
    received_at: float = 0.0  # when the request arrived (`at`: when it was answered)


@dataclass
class FakeFcmState:
    sent: list[FcmRecord] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    token_requests: int = 0
    slow_s: float = 3.0
    latency_s: float = 0.0  # every answer waits this long (benchmarks: FCM's ~50 ms)
    # Whole-server faults for chaos runs: answer every send with this status (500, 503, 429) or
    # hold every request this long before answering (a provider that is slow or never answers).
    fault_status: int | None = None
    fault_delay_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def accepted(self) -> list[FcmRecord]:
        with self.lock:
            return [r for r in self.sent if r.status == 200]


class _Handler(JsonHandler):
    server: "FakeFcmServer"

    def do_POST(self) -> None:  # noqa: N802
        received_at = time.time()
        raw = self.read_body()
        state = self.server.state
        if self.path in ("/token", "/oauth2/v4/token"):
            with state.lock:
                state.token_requests += 1
            self.reply(200, {"access_token": "fake-access-token", "expires_in": 3600, "token_type": "Bearer"})
            return
        match = SEND_PATH.match(self.path)
        if not match:
            self.reply(404, _error(404, "NOT_FOUND", f"no route {self.path}", None))
            return
        if not self.headers.get("Authorization", "").startswith("Bearer "):
            self.reply(401, _error(401, "UNAUTHENTICATED", "Request is missing required authentication credential.", None))
            return
        message = json.loads(raw)["message"]
        token = message.get("token", "")
        with state.lock:
            state.attempts[token] = state.attempts.get(token, 0) + 1
            attempt = state.attempts[token]
        status, body = 200, {"name": f"projects/{match.group(1)}/messages/0:{time.time_ns()}"}
        for prefix, (code, err) in ERRORS.items():
            if token.startswith(prefix):
                status, body = code, err
        if token.startswith("flaky-") and attempt == 1:
            status, body = ERRORS["unavailable-"]
        if state.fault_status is not None:
            status, body = state.fault_status, FAULTS[state.fault_status]
        if token.startswith("slow-"):
            time.sleep(state.slow_s)
        elif state.latency_s:
            time.sleep(state.latency_s)
        if state.fault_delay_s:
            time.sleep(state.fault_delay_s)
        with state.lock:
            state.sent.append(FcmRecord(time.time(), match.group(1), message, status, received_at))
        self.reply(status, body)


class FakeFcmServer(FakeServer):
    def __init__(self, port: int = 0) -> None:
        super().__init__(_Handler, port)
        self.state = FakeFcmState()

    def start(self) -> "FakeFcmServer":
        super().start()
        return self


def service_account(token_uri: str, project_id: str = "precall-test") -> dict[str, str]:
    """A throwaway service account whose token_uri points at the fake (real JWT-bearer flow)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return {
        "type": "service_account", "project_id": project_id, "private_key_id": "fake",
        "private_key": pem, "client_email": f"precall@{project_id}.iam.gserviceaccount.com",
        "client_id": "1", "token_uri": token_uri,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8811)
    parser.add_argument("--write-credentials", help="write a service-account JSON pointing at this server")
    args = parser.parse_args()
    server = FakeFcmServer(args.port)
    if args.write_credentials:
        with open(args.write_credentials, "w") as f:
            json.dump(service_account(f"{server.url}/token"), f)
    print(f"fake FCM on {server.url}", flush=True)
    server.serve_forever()
