"""What a hostile or careless client can cost the API: big, slow or multipart bodies, tokens that
live forever or pick their algorithm, and clients that leave while their request waits on a lock."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import time

import httpx
import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from plugins.processes import user_token

REGISTER = "/api/v1/notifications/register-device"
TWILIO = "/api/v1/webhooks/twilio/status"
BODY = {"fcm_token": "fcm-" + "a" * 60, "platform": "ios", "push_enabled": True}


@pytest.fixture
def api(db, start_api):
    return start_api(db, PRECALL_API_READ_TIMEOUT_S="1")


def raw_request(api, head: str, body: bytes = b"", wait_s: float = 5) -> tuple[int, dict, float]:
    """Sends `head` and the first bytes of a body, then waits for an answer without sending the
    rest: what the server decides before (or instead of) reading the whole body."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", api.port), timeout=wait_s) as s:
        s.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    elapsed = time.monotonic() - started
    status = int(data.split(b" ", 2)[1])
    return status, json.loads(data.split(b"\r\n\r\n", 1)[1] or b"{}"), elapsed


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def test_a_100_mb_body_is_refused_before_it_is_read(api, make) -> None:
    """Announced as 100 MB, 1 KB sent: 413 at once, with or without a token."""
    uid = make.user()
    for auth in (f"Authorization: Bearer {user_token(uid)}\n", ""):
        status, body, elapsed = raw_request(api, f"POST {REGISTER} HTTP/1.1\nHost: x\nContent-Type: application/json\n"
                                                 f"{auth}Content-Length: 104857600\n", b"{" + b" " * 1024)
        assert status == 413 and body["error"] == "payload_too_large", body
        assert elapsed < 1, elapsed


def test_a_chunked_body_is_cut_at_the_limit(api, make) -> None:
    uid = make.user()

    def chunks():
        yield b'{"fcm_token": "'
        for _ in range(200):
            yield b"a" * 1024

    r = httpx.post(f"{api.url}{REGISTER}", content=chunks(), timeout=10,
                   headers={"Authorization": f"Bearer {user_token(uid)}", "Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large", r.text
    # A body just under the limit is parsed as usual (a 422 for the bad token, not a 413).
    r = httpx.post(f"{api.url}{REGISTER}", json={**BODY, "fcm_token": "a" * 60_000},
                   headers={"Authorization": f"Bearer {user_token(uid)}"})
    assert r.status_code == 422, r.text


def test_multipart_is_415_and_an_unsigned_twilio_body_is_not_read(api) -> None:
    status, body, elapsed = raw_request(
        api, f"POST {TWILIO} HTTP/1.1\nHost: x\nContent-Type: multipart/form-data; boundary=xx\n"
             "X-Twilio-Signature: abc\nContent-Length: 314572800\n", b"--xx\r\n")
    assert status == 415 and body["error"] == "unsupported_media_type" and elapsed < 1
    status, body, elapsed = raw_request(
        api, f"POST {TWILIO} HTTP/1.1\nHost: x\nContent-Type: application/x-www-form-urlencoded\n"
             "Content-Length: 60000\n", b"MessageSid=SM")
    assert status == 403 and body == {"error": "forbidden", "detail": "missing X-Twilio-Signature"} and elapsed < 1


def test_no_token_is_a_401_before_the_body(api) -> None:
    status, body, elapsed = raw_request(api, f"POST {REGISTER} HTTP/1.1\nHost: x\nContent-Type: application/json\n"
                                             "Content-Length: 60000\n", b"{")
    assert status == 401 and body["error"] == "unauthorized" and elapsed < 1


def test_a_body_that_never_finishes_is_408_after_the_read_timeout(api, make) -> None:
    uid = make.user()
    status, body, elapsed = raw_request(
        api, f"POST {REGISTER} HTTP/1.1\nHost: x\nContent-Type: application/json\n"
             f"Authorization: Bearer {user_token(uid)}\nContent-Length: 500\n", b'{"fcm_token": ', wait_s=10)
    assert status == 408 and body["error"] == "request_timeout", body
    assert 0.9 < elapsed < 4, elapsed


def test_size_limits_are_in_the_openapi_document(api) -> None:
    doc = httpx.get(f"{api.url}/openapi.json").json()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in ("post", "put"):
                assert {"408", "413", "415"} <= set(op["responses"]), (method, path)
                assert "65536" in op["responses"]["413"]["description"]


def test_a_token_valid_for_longer_than_the_maximum_is_refused(api, make) -> None:
    uid = make.user()
    for lifetime in (10**12, 2 * 86400):
        r = httpx.get(f"{api.url}/api/v1/notifications/history",
                      headers={"Authorization": f"Bearer {user_token(uid, expires_in=lifetime)}"})
        assert r.status_code == 401 and "PRECALL_JWT_MAX_LIFETIME_S" in r.json()["detail"], r.text
    far = jwt.encode({"sub": uid, "exp": 10**30}, "x" * 40, algorithm="HS256")
    r = httpx.get(f"{api.url}/api/v1/notifications/history", headers={"Authorization": f"Bearer {far}"})
    assert r.status_code == 401 and r.json()["error"] == "unauthorized", r.text
    r = httpx.get(f"{api.url}/api/v1/notifications/history",
                  headers={"Authorization": f"Bearer {user_token(uid, expires_in=86000)}"})
    assert r.status_code == 200, r.text


def test_only_the_configured_key_types_algorithm_is_accepted(db, make, start_api) -> None:
    """An EC P-256 key accepts ES256 only: an ES384 header, or RS256, is a 401 (the algorithm is
    the key's, never the token's choice)."""
    uid = make.user()
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    api = start_api(db, PRECALL_JWT_SECRET="", PRECALL_JWT_PUBLIC_KEY=pem.decode())
    claims = {"sub": uid, "exp": int(time.time()) + 60}

    def status(token: str) -> int:
        return httpx.get(f"{api.url}/api/v1/notifications/history",
                         headers={"Authorization": f"Bearer {token}"}).status_code

    assert status(jwt.encode(claims, key, algorithm="ES256")) == 200
    assert status(jwt.encode(claims, ec.generate_private_key(ec.SECP384R1()), algorithm="ES384")) == 401
    assert status(jwt.encode(claims, rsa.generate_private_key(public_exponent=65537, key_size=2048),
                             algorithm="RS256")) == 401


def test_p384_and_ed25519_keys_take_their_own_algorithm(db, make, start_api) -> None:
    """The algorithm follows the key: a P-384 key's ES384 tokens and an Ed25519 key's EdDSA tokens
    are accepted (the fixed RS256/ES256 list refused both)."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    uid = make.user()
    claims = {"sub": uid, "exp": int(time.time()) + 60}
    for key, alg in ((ec.generate_private_key(ec.SECP384R1()), "ES384"), (ed25519.Ed25519PrivateKey.generate(), "EdDSA")):
        pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        api = start_api(db, PRECALL_JWT_SECRET="", PRECALL_JWT_PUBLIC_KEY=pem.decode())
        r = httpx.get(f"{api.url}/api/v1/notifications/history",
                      headers={"Authorization": f"Bearer {jwt.encode(claims, key, algorithm=alg)}"})
        assert r.status_code == 200, (alg, r.text)
        api.stop()


def test_clients_that_leave_free_their_slot(db, conn, make, start_api) -> None:
    """A DBA holds user A's row; A's app retries and gives up after 0.5 s each time. With a long
    lock timeout those requests used to hold the whole pool until the lock went (/healthz and B
    answered 503); now a departed client's statement is cancelled and its connection returned."""
    a, b = make.user(), make.user()
    api = start_api(db, PRECALL_DB_LOCK_TIMEOUT_MS="60000", PRECALL_API_DB_POOL_MAX="2")
    with psycopg.connect(db) as dba:
        dba.execute("UPDATE users SET locale = locale WHERE id = %s", (a,))  # held open

        def impatient() -> str:
            try:
                httpx.post(f"{api.url}{REGISTER}", json=BODY, timeout=0.5,
                           headers={"Authorization": f"Bearer {user_token(a)}"})
            except httpx.TimeoutException:
                return "gave up"
            return "answered"

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            assert list(pool.map(lambda _: impatient(), range(6))) == ["gave up"] * 6
        time.sleep(0.3)
        waiting = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'precall-api'"
                               " AND wait_event_type = 'Lock'").fetchone()[0]
        health = httpx.get(f"{api.url}/healthz", timeout=10)
        other = httpx.get(f"{api.url}/api/v1/notifications/history", timeout=10,
                          headers={"Authorization": f"Bearer {user_token(b)}"})
        dba.rollback()
    assert waiting == 0
    assert health.status_code == 200 and other.status_code == 200, (health.text, other.text)
