"""A local FCM HTTP v1 server: OAuth token endpoint + messages:send, with FCM's real behaviour.

What it checks, as FCM does:
- OAuth 2.0 JWT-bearer: the assertion must be signed by a service account this process created
  (service_account() registers its public key), for this token endpoint, unexpired, with an
  FCM scope; otherwise 400 invalid_grant. Access tokens expire (`token_lifetime_s`) and can be
  revoked (`revoke_tokens()`); a send with a missing, unknown or expired one is 401 UNAUTHENTICATED.
- The message: one token, string-only data without reserved keys, a TTL FCM parses, known
  enums, APNs headers APNs accepts, at most 4 KB; otherwise 400 INVALID_ARGUMENT naming the field.
- 429 and 503 carry Retry-After (`retry_after_s`).

Each request is recorded when it arrives (`at`), before any simulated latency, so a request the
client abandoned still counts; `answered_at` is when the answer left.

Behaviour is chosen by the device token's prefix, so a test sets up a user and knows what FCM
will answer: dead-* → 404 UNREGISTERED, mismatch-* → 403 SENDER_ID_MISMATCH, invalid-* → 400
INVALID_ARGUMENT (not a valid FCM registration token), badpayload-* → 400 INVALID_ARGUMENT
(another reason), unavailable-* → 503 UNAVAILABLE, quota-* → 429 QUOTA_EXCEEDED, slow-* → a
slow success (`slow_s`), flaky-* → 503 on the first try, then success.
Run standalone: python -m precall.fakes.fake_fcm --port 8811 --write-credentials sa.json
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from precall.fakes.http_fake import FakeServer, JsonHandler

SEND_PATH = re.compile(r"^/v1/projects/([^/]+)/messages:send$")
TOKEN_PATHS = ("/token", "/oauth2/v4/token")
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# What Google's token endpoint accepts as the assertion's audience (google-auth sends the first
# whatever the service account's token_uri; a fake's own URI is accepted too).
TOKEN_AUDIENCES = ("https://oauth2.googleapis.com/token", "https://www.googleapis.com/oauth2/v4/token")
FCM_SCOPES = {"https://www.googleapis.com/auth/firebase.messaging", "https://www.googleapis.com/auth/cloud-platform"}
TTL = re.compile(r"^\d{1,7}(\.\d{1,9})?s$")
RESERVED_DATA_KEYS = {"from", "notification", "message_type"}
MAX_PAYLOAD_BYTES = 4096

# The public keys of the service accounts created by service_account() in this process.
_TRUSTED_KEYS: dict[str, Any] = {}


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

UNAUTHENTICATED = _error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials. Expected OAuth 2 "
                         "access token, login cookie or other valid authentication credential.", None)


def invalid_message(message: Any) -> str | None:
    """Why FCM would refuse this message (400 INVALID_ARGUMENT), or None. Only what precall sends
    is modelled, with FCM's field paths."""
    if not isinstance(message, dict):
        return "Invalid JSON payload received. 'message' is not an object"
    unknown = set(message) - {"token", "notification", "data", "android", "apns", "webpush", "fcm_options", "name"}
    if unknown:
        return f"Invalid JSON payload received. Unknown name \"{sorted(unknown)[0]}\" at 'message'"
    if not isinstance(message.get("token"), str) or not message["token"]:
        return "Invalid value at 'message.token': a registration token is required"
    notification = message.get("notification", {})
    for key in ("title", "body"):
        if key in notification and not isinstance(notification[key], str):
            return f"Invalid value at 'message.notification.{key}' (TYPE_STRING)"
    data = message.get("data", {})
    if not isinstance(data, dict):
        return "Invalid value at 'message.data'"
    for key, value in data.items():
        if not isinstance(value, str):
            return f"Invalid value at 'message.data[{key}].value' (TYPE_STRING)"
        if key in RESERVED_DATA_KEYS or key.startswith(("google.", "gcm.")):
            return f"Invalid data payload key: {key}"
    android = message.get("android", {})
    if android.get("priority", "normal").lower() not in ("normal", "high"):
        return f"Invalid value at 'message.android.priority' ({android.get('priority')})"
    if "ttl" in android and (not isinstance(android["ttl"], str) or not TTL.match(android["ttl"])
                             or float(android["ttl"][:-1]) > 2_419_200):
        return f"Invalid value at 'message.android.ttl' ({android['ttl']!r})"
    headers = message.get("apns", {}).get("headers", {})
    if any(not isinstance(v, str) for v in headers.values()):
        return "Invalid value at 'message.apns.headers' (TYPE_STRING)"
    if headers.get("apns-priority", "10") not in ("5", "10", "1"):
        return "Invalid APNs priority"
    if "apns-expiration" in headers and not headers["apns-expiration"].isdigit():
        return "Invalid APNs expiration"
    if len(headers.get("apns-collapse-id", "").encode()) > 64:
        return "Invalid APNs collapse id: longer than 64 bytes"
    if len(json.dumps(message).encode()) > MAX_PAYLOAD_BYTES:
        return "Message is too big"
    return None


@dataclass
class FcmRecord:
    at: float  # when the request arrived
    project: str
    message: dict[str, Any]
    status: int  # what FCM decided (a 200 is delivered even if the client gave up waiting)
    answered_at: float | None = None

    @property
    def received_at(self) -> float:
        return self.at


@dataclass
class FakeFcmState:
    sent: list[FcmRecord] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    token_requests: int = 0
    token_refusals: list[str] = field(default_factory=list)
    unauthenticated: int = 0  # sends refused with 401
    slow_s: float = 3.0
    latency_s: float = 0.0  # every answer waits this long (benchmarks: FCM's ~50 ms)
    retry_after_s: int = 1  # the Retry-After of a 429 or 503
    token_lifetime_s: int = 3600
    # Whole-server faults for chaos runs: answer every send with this status (500, 503, 429) or
    # hold every request this long before answering (a provider that is slow or never answers).
    fault_status: int | None = None
    fault_delay_s: float = 0.0
    access_tokens: dict[str, float] = field(default_factory=dict)  # token -> expiry (epoch s)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def accepted(self) -> list[FcmRecord]:
        with self.lock:
            return [r for r in self.sent if r.status == 200]

    def arrived(self) -> list[FcmRecord]:
        """Every send request that reached the server, whatever its answer."""
        with self.lock:
            return list(self.sent)

    def revoke_tokens(self) -> None:
        """Every access token issued so far stops working (as when Google rotates or revokes them)."""
        with self.lock:
            self.access_tokens.clear()


def _check_assertion(assertion: str, token_uri: str) -> str | None:
    """Why Google's token endpoint would refuse this JWT-bearer assertion, or None."""
    import jwt

    try:
        unverified = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        return f"Invalid JWT: {exc}"
    key = _TRUSTED_KEYS.get(str(unverified.get("iss")))
    if key is None:
        return "Invalid JWT Signature."  # a key Google does not know (deleted, another project)
    try:
        claims = jwt.decode(assertion, key, algorithms=["RS256"], audience=[*TOKEN_AUDIENCES, token_uri], leeway=60)
    except jwt.ExpiredSignatureError:
        return "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe."
    except jwt.InvalidAudienceError:
        return "Invalid JWT: Failed audience check."
    except jwt.PyJWTError:
        return "Invalid JWT Signature."
    if not FCM_SCOPES & set(str(claims.get("scope", "")).split()):
        return "Invalid JWT: no FCM scope"
    return None


class _Handler(JsonHandler):
    server: "FakeFcmServer"

    def do_POST(self) -> None:  # noqa: N802
        arrived = time.time()
        raw = self.read_body()
        state = self.server.state
        if self.path in TOKEN_PATHS:
            self._token(raw, state)
            return
        match = SEND_PATH.match(self.path)
        if not match:
            self.reply(404, _error(404, "NOT_FOUND", f"no route {self.path}", None))
            return
        bearer = self.headers.get("Authorization", "")
        with state.lock:
            expiry = state.access_tokens.get(bearer.removeprefix("Bearer ")) if bearer.startswith("Bearer ") else None
        if expiry is None or expiry < time.time():
            with state.lock:
                state.unauthenticated += 1
            self.reply(401, UNAUTHENTICATED, headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'})
            return
        try:
            message = json.loads(raw)["message"]
        except (ValueError, KeyError, TypeError):
            self.reply(400, _error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.", None))
            return
        token = message.get("token", "") if isinstance(message, dict) else ""
        with state.lock:
            state.attempts[token] = state.attempts.get(token, 0) + 1
            attempt = state.attempts[token]
        status, body = 200, {"name": f"projects/{match.group(1)}/messages/0:{time.time_ns()}"}
        why = invalid_message(message)
        if why is not None:
            status, body = 400, _error(400, "INVALID_ARGUMENT", why, "INVALID_ARGUMENT")
        for prefix, (code, err) in ERRORS.items():
            if token.startswith(prefix):
                status, body = code, err
        if token.startswith("flaky-") and attempt == 1:
            status, body = ERRORS["unavailable-"]
        if state.fault_status is not None:
            status, body = state.fault_status, FAULTS[state.fault_status]
        record = FcmRecord(arrived, match.group(1), message if isinstance(message, dict) else {}, status)
        with state.lock:
            state.sent.append(record)
        if token.startswith("slow-"):
            time.sleep(state.slow_s)
        elif state.latency_s:
            time.sleep(state.latency_s)
        if state.fault_delay_s:
            time.sleep(state.fault_delay_s)
        headers = {"Retry-After": str(state.retry_after_s)} if status in (429, 503) else {}
        record.answered_at = time.time()
        self.reply(status, body, headers=headers)

    def _token(self, raw: bytes, state: FakeFcmState) -> None:
        form = urllib.parse.parse_qs(raw.decode())
        token_uri = f"http://{self.headers.get('Host', '')}{self.path}"
        why = ("Invalid grant_type" if form.get("grant_type") != [JWT_BEARER]
               else _check_assertion(form.get("assertion", [""])[0], token_uri))
        with state.lock:
            state.token_requests += 1
            if why is not None:
                state.token_refusals.append(why)
        if why is not None:
            self.reply(400, {"error": "invalid_grant", "error_description": why})
            return
        access_token = "ya29.fake-" + secrets.token_hex(16)
        with state.lock:
            state.access_tokens[access_token] = time.time() + state.token_lifetime_s
        self.reply(200, {"access_token": access_token, "expires_in": state.token_lifetime_s, "token_type": "Bearer"})


class FakeFcmServer(FakeServer):
    def __init__(self, port: int = 0) -> None:
        super().__init__(_Handler, port)
        self.state = FakeFcmState()

    def start(self) -> "FakeFcmServer":
        super().start()
        return self

    def credentials(self, project_id: str = "precall-test") -> dict[str, str]:
        """A service account this server accepts, its token_uri pointing here."""
        return service_account(f"{self.url}/token", project_id)


def service_account(token_uri: str, project_id: str = "precall-test") -> dict[str, str]:
    """A throwaway service account whose token_uri points at a fake; the fakes of this process
    trust its key (real JWT-bearer flow, signature checked)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    email = f"precall-{secrets.token_hex(4)}@{project_id}.iam.gserviceaccount.com"
    _TRUSTED_KEYS[email] = key.public_key()
    return {
        "type": "service_account", "project_id": project_id, "private_key_id": secrets.token_hex(8),
        "private_key": pem, "client_email": email, "client_id": "1", "token_uri": token_uri,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8811)
    parser.add_argument("--write-credentials", help="write a service-account JSON pointing at this server")
    args = parser.parse_args()
    server = FakeFcmServer(args.port)
    if args.write_credentials:
        with open(args.write_credentials, "w") as f:
            json.dump(server.credentials(), f)
    print(f"fake FCM on {server.url}", flush=True)
    server.serve_forever()
