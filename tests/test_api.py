"""The app's HTTP API and Twilio's status webhook, over real HTTP against the real database."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import jwt
import psycopg
import psycopg.rows
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from twilio.request_validator import RequestValidator

from plugins.processes import STATUS_CALLBACK_URL, precall_cli, user_token, wait_until

TOKEN = "fcm-" + "a" * 60
SID = "SM" + "1" * 32


@pytest.fixture
def api(db, start_api):
    return start_api(db)


def client(api, user_id: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {user_token(user_id)}"} if user_id else {}
    return httpx.Client(base_url=api.url, headers=headers, timeout=10)


def row(conn, sql, *args):
    return conn.cursor(row_factory=psycopg.rows.dict_row).execute(sql, args).fetchone()


def sent_push(conn, make, user_id, **extra):
    """A push preview the dispatcher has sent (status 'sent'), with its call."""
    call = make.call(user_id, in_seconds=3600)
    ten_s_ago = datetime.now(timezone.utc) - timedelta(seconds=10)
    values = {"status": "sent", "type": "preview_push", "channel": "push", "sent_at": ten_s_ago,
              "attempted_at": ten_s_ago, **extra}
    names = ", ".join(values)
    marks = ", ".join(["%s"] * len(values))
    got = conn.execute(f"INSERT INTO notification_logs (user_id, call_id, {names}) VALUES (%s, %s, {marks}) RETURNING id",
                       (user_id, call, *values.values())).fetchone()
    return str(got[0]), call


# --- auth ---------------------------------------------------------------------------------------

def test_every_app_endpoint_needs_a_valid_token_for_a_known_user(api, make) -> None:
    uid = make.user()
    calls = [("POST", "/api/v1/notifications/register-device", {"fcm_token": TOKEN, "platform": "ios", "push_enabled": True}),
             ("POST", "/api/v1/users/notification-preferences", {"notification_lead_min": 10}),
             ("GET", "/api/v1/notifications/history", None),
             ("POST", f"/api/v1/notifications/{uuid.uuid4()}/receipt", {"event": "delivered"})]
    bad_tokens = {
        "missing": None,
        "wrong signature": user_token(uid, secret="another-secret-of-at-least-32-chars!!"),
        "expired": user_token(uid, expires_in=-120),
        "unknown user": user_token(str(uuid.uuid4())),
        "sub not a uuid": user_token("alice"),
        "alg none": jwt.encode({"sub": uid, "exp": int(time.time()) + 60}, None, algorithm="none"),
    }
    with httpx.Client(base_url=api.url) as http:
        for method, path, body in calls:
            for why, token in bad_tokens.items():
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                r = http.request(method, path, json=body, headers=headers)
                assert r.status_code == 401, (method, path, why, r.text)
                assert r.json()["error"] == "unauthorized" and r.json()["detail"], why
                assert r.headers["www-authenticate"] == "Bearer"
    assert "expired" in httpx.get(f"{api.url}/api/v1/notifications/history",
                                  headers={"Authorization": f"Bearer {bad_tokens['expired']}"}).json()["detail"]


def test_rs256_and_es256_keys_with_audience_and_issuer(db, make, start_api) -> None:
    uid = make.user()
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    api = start_api(db, PRECALL_JWT_SECRET="", PRECALL_JWT_PUBLIC_KEY=pem.decode(),
                    PRECALL_JWT_AUDIENCE="precall", PRECALL_JWT_ISSUER="https://auth.example.com")

    def token(**claims):
        payload = {"sub": uid, "exp": int(time.time()) + 60, "aud": "precall", "iss": "https://auth.example.com", **claims}
        return jwt.encode(payload, key, algorithm="ES256")

    def status(tok):
        return httpx.get(f"{api.url}/api/v1/notifications/history", headers={"Authorization": f"Bearer {tok}"}).status_code

    assert status(token()) == 200
    assert status(token(aud="someone-else")) == 401
    assert status(token(iss="https://evil.example.com")) == 401
    # An HS256 token signed with the public key as the secret (the classic confusion) is refused.
    assert status(jwt.encode({"sub": uid, "exp": int(time.time()) + 60}, "x" * 40, algorithm="HS256")) == 401


def test_api_without_a_jwt_key_refuses_to_start_in_one_line(db) -> None:

    from plugins.processes import api_env

    env = api_env(db, PRECALL_JWT_SECRET="")
    out = precall_cli("api", env=env, timeout=30)
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0 and "PRECALL_JWT_SECRET" in out.stderr


# --- register-device and preferences ------------------------------------------------------------

def test_register_device_replaces_the_token_and_reenables_push(api, conn, make) -> None:
    uid = make.user(fcm_token="old-dead-token", push_enabled=False, platform="android")
    other = make.user(fcm_token=TOKEN, push_enabled=True)  # the phone changed hands
    with client(api, uid) as http:
        r = http.post("/api/v1/notifications/register-device", json={"fcm_token": TOKEN, "platform": "ios", "push_enabled": True})
    assert r.status_code == 200 and r.json() == {"status": "registered"}
    assert row(conn, "SELECT fcm_token, platform, push_enabled FROM users WHERE id = %s", uid) == \
        {"fcm_token": TOKEN, "platform": "ios", "push_enabled": True}
    assert row(conn, "SELECT fcm_token, push_enabled FROM users WHERE id = %s", other) == \
        {"fcm_token": None, "push_enabled": False}


@pytest.mark.parametrize("body, where", [
    ({"fcm_token": "short", "platform": "ios", "push_enabled": True}, "fcm_token"),
    ({"fcm_token": "x" * 40 + " <script>", "platform": "ios", "push_enabled": True}, "fcm_token"),
    ({"fcm_token": TOKEN, "platform": "windows", "push_enabled": True}, "platform"),
    ({"fcm_token": TOKEN, "platform": "ios", "push_enabled": "maybe"}, "push_enabled"),
    ({"platform": "ios"}, "fcm_token"),
])
def test_register_device_rejects_bad_input_with_a_reason(api, conn, make, body, where) -> None:
    uid = make.user(fcm_token="kept-token", push_enabled=True)
    with client(api, uid) as http:
        r = http.post("/api/v1/notifications/register-device", json=body)
    assert r.status_code == 422 and r.json()["error"] == "invalid_request" and where in r.json()["detail"]
    assert row(conn, "SELECT fcm_token FROM users WHERE id = %s", uid)["fcm_token"] == "kept-token"


def test_preferences_move_the_unsent_preview(api, conn, make) -> None:
    uid = make.user(fcm_token="tok", push_enabled=True, notification_lead_min=5)
    call = make.call(uid, in_seconds=400)  # send_at T-5 min is 100 s away: planned at once
    before = row(conn, "SELECT send_at FROM notification_logs WHERE call_id = %s AND status = 'queued'", call)
    with client(api, uid) as http:
        r = http.put("/api/v1/users/notification-preferences", json={"notification_pref": "push_and_sms", "notification_lead_min": 6})
    assert r.status_code == 200 and r.json() == {"status": "updated"}
    after = row(conn, "SELECT send_at FROM notification_logs WHERE call_id = %s AND status = 'queued'", call)
    assert before["send_at"] - after["send_at"] == timedelta(minutes=1)
    assert row(conn, "SELECT notification_pref, notification_lead_min FROM users WHERE id = %s", uid) == \
        {"notification_pref": "push_and_sms", "notification_lead_min": 6}


@pytest.mark.parametrize("body, status, detail", [
    ({"notification_lead_min": 0}, 422, "notification_lead_min"),
    ({"notification_lead_min": 61}, 422, "notification_lead_min"),
    ({"notification_pref": "carrier_pigeon"}, 422, "notification_pref"),
    ({}, 422, "give notification_pref"),
    ({"notification_pref": "sms_only"}, 409, "phone number"),
])
def test_preferences_reject_bad_input(api, conn, make, body, status, detail) -> None:
    uid = make.user(phone_number=None, notification_pref="push_only", notification_lead_min=5)
    with client(api, uid) as http:
        r = http.post("/api/v1/users/notification-preferences", json=body)
    assert r.status_code == status and detail in r.json()["detail"]
    assert row(conn, "SELECT notification_pref, notification_lead_min FROM users WHERE id = %s", uid) == \
        {"notification_pref": "push_only", "notification_lead_min": 5}


# --- history ------------------------------------------------------------------------------------

def test_history_is_the_callers_own_newest_first_and_paged(api, conn, make) -> None:
    uid, other = make.user(), make.user()
    ids = []
    for minutes_ago in (30, 20, 10):
        nid, _ = sent_push(conn, make, uid, title=f"T-{minutes_ago}")
        conn.execute("UPDATE notification_logs SET created_at = now() - make_interval(mins => %s) WHERE id = %s", (minutes_ago, nid))
        ids.append(nid)
    sent_push(conn, make, other, title="not yours")
    with client(api, uid) as http:
        full = http.get("/api/v1/notifications/history").json()["notifications"]
        page = http.get("/api/v1/notifications/history", params={"limit": 1, "offset": 1}).json()["notifications"]
        bad = [http.get("/api/v1/notifications/history", params=p) for p in ({"limit": 0}, {"limit": 101}, {"offset": -1}, {"limit": "x"})]
    assert [n["id"] for n in full] == ids[::-1]
    assert [n["title"] for n in full] == ["T-10", "T-20", "T-30"]
    assert full[0]["type"] == "preview_push" and full[0]["status"] == "sent" and full[0]["sent_at"]
    assert [n["id"] for n in page] == [ids[1]]
    assert [r.status_code for r in bad] == [422] * 4 and all(r.json()["detail"] for r in bad)


# --- receipts -----------------------------------------------------------------------------------

def test_receipts_are_idempotent_and_opened_implies_delivered(api, conn, make) -> None:
    uid = make.user()
    nid, _ = sent_push(conn, make, uid)
    at = datetime.now(timezone.utc) - timedelta(seconds=3)
    with client(api, uid) as http:
        first = http.post(f"/api/v1/notifications/{nid}/receipt", json={"event": "opened", "at": at.isoformat()})
        again = http.post(f"/api/v1/notifications/{nid}/receipt", json={"event": "delivered"})
        opened_again = http.post(f"/api/v1/notifications/{nid}/receipt", json={"event": "opened"})
    assert first.status_code == 200 and first.json()["status"] == "recorded" and first.json()["late"] is False
    assert again.json()["status"] == "duplicate" and opened_again.json()["status"] == "duplicate"
    got = row(conn, "SELECT status, delivered_at, opened_at FROM notification_logs WHERE id = %s", nid)
    assert got["status"] == "opened" and got["delivered_at"] == at and got["opened_at"] == at


def test_receipt_times_are_kept_between_the_send_and_now(api, conn, make) -> None:
    uid = make.user()
    early, _ = sent_push(conn, make, uid)
    late, _ = sent_push(conn, make, uid)
    with client(api, uid) as http:
        http.post(f"/api/v1/notifications/{early}/receipt", json={"event": "delivered", "at": "2000-01-01T00:00:00Z"})
        http.post(f"/api/v1/notifications/{late}/receipt", json={"event": "delivered", "at": "2100-01-01T00:00:00+01:00"})
    a = row(conn, "SELECT delivered_at - attempted_at AS d FROM notification_logs WHERE id = %s", early)["d"]
    b = row(conn, "SELECT now() - delivered_at AS d FROM notification_logs WHERE id = %s", late)["d"]
    assert a == timedelta(0) and timedelta(0) <= b < timedelta(seconds=10)


def test_receipt_for_someone_elses_or_an_sms_or_unknown_notification(api, conn, make) -> None:
    uid, other = make.user(), make.user()
    theirs, _ = sent_push(conn, make, other)
    sms, _ = sent_push(conn, make, uid, type="preview_sms", channel="sms")
    queued, _ = sent_push(conn, make, uid, status="skipped", channel=None, sent_at=None, attempted_at=None)
    with client(api, uid) as http:
        r_theirs = http.post(f"/api/v1/notifications/{theirs}/receipt", json={"event": "delivered"})
        r_unknown = http.post(f"/api/v1/notifications/{uuid.uuid4()}/receipt", json={"event": "delivered"})
        r_sms = http.post(f"/api/v1/notifications/{sms}/receipt", json={"event": "delivered"})
        r_skipped = http.post(f"/api/v1/notifications/{queued}/receipt", json={"event": "delivered"})
        r_bad = http.post(f"/api/v1/notifications/{theirs}/receipt", json={"event": "read"})
        r_naive = http.post(f"/api/v1/notifications/{sms}/receipt", json={"event": "delivered", "at": "2026-11-25T10:00:00"})
        r_path = http.post("/api/v1/notifications/not-a-uuid/receipt", json={"event": "delivered"})
    assert (r_theirs.status_code, r_unknown.status_code) == (404, 404)
    assert (r_sms.status_code, r_skipped.status_code) == (409, 409)
    assert [r.status_code for r in (r_bad, r_naive, r_path)] == [422] * 3
    assert row(conn, "SELECT delivered_at FROM notification_logs WHERE id = %s", theirs)["delivered_at"] is None


def test_receipt_racing_the_dispatchers_write_back_still_stops_the_fallback(api, conn, make) -> None:
    """The device answers before the dispatcher has recorded 'sent': no fallback gets planned."""
    uid = make.user()
    nid, _ = sent_push(conn, make, uid, status="sending", sent_at=None, lease_owner="w1",
                       send_at=datetime.now(timezone.utc), lease_expires_at=datetime.now(timezone.utc) + timedelta(minutes=1))
    with client(api, uid) as http:
        assert http.post(f"/api/v1/notifications/{nid}/receipt", json={"event": "delivered"}).json()["status"] == "recorded"
    import json

    from precall import sql

    now = datetime.now(timezone.utc).isoformat()
    conn.execute(sql.query("record_sent_batch"), {"rows": json.dumps([{
        "id": str(nid), "worker": "w1", "type": "preview_push", "channel": "push", "title": "t", "body": "b",
        "provider_id": "projects/p/messages/1", "reason": None, "attempted_at": now,
        "sent_at": now, "sms_encoding": None, "sms_segments": None, "cost": None, "currency": None,
        "fallback_at": now}])})
    # The write-back plans Path C's fallback itself, and not for a push already delivered.
    assert conn.execute("SELECT count(*) FROM notification_logs WHERE parent_id = %s", (nid,)).fetchone() == (0,)
    assert row(conn, "SELECT status FROM notification_logs WHERE id = %s", nid)["status"] == "delivered"


# --- Twilio status callbacks --------------------------------------------------------------------

def twilio_post(api, form: dict[str, str], *, token: str = "test-auth-token", url: str = STATUS_CALLBACK_URL,
                tamper: bool = False, sign: bool = True) -> httpx.Response:
    signature = RequestValidator(token).compute_signature(url, form)
    if tamper:
        form = {**form, "MessageStatus": "failed" if form["MessageStatus"] != "failed" else "delivered"}
    headers = {"X-Twilio-Signature": signature} if sign else {}
    return httpx.post(f"{api.url}/api/v1/webhooks/twilio/status", data=form, headers=headers)


def callback(status: str, sid: str = SID, **extra: str) -> dict[str, str]:
    return {"MessageSid": sid, "SmsSid": sid, "MessageStatus": status, "SmsStatus": status, "AccountSid": "AC" + "0" * 32,
            "From": "+15005550006", "To": "+15555550100", "ApiVersion": "2010-04-01", **extra}


def test_signed_twilio_callback_updates_the_row_and_unsigned_or_tampered_get_403(api, conn, make) -> None:
    uid = make.user()
    ten_min_ago = datetime.now(timezone.utc) - timedelta(minutes=10)
    nid, _ = sent_push(conn, make, uid, type="preview_sms", channel="sms", provider_id=SID,
                       attempted_at=ten_min_ago, sent_at=ten_min_ago)
    assert twilio_post(api, callback("delivered"), sign=False).status_code == 403
    assert twilio_post(api, callback("delivered"), tamper=True).status_code == 403
    assert twilio_post(api, callback("delivered"), token="wrong-token").status_code == 403
    assert twilio_post(api, callback("delivered"), url="https://hooks.example.com/other").status_code == 403
    assert row(conn, "SELECT status FROM notification_logs WHERE id = %s", nid)["status"] == "sent"

    # The carrier's YYMMDDhhmm (UTC), five minutes ago: taken as is (it lies between the send and now).
    done = (datetime.now(timezone.utc) - timedelta(minutes=5)).replace(second=0, microsecond=0)
    r = twilio_post(api, callback("delivered", RawDlrDoneDate=done.strftime("%y%m%d%H%M")))
    assert r.status_code == 200 and r.json() == {"status": "applied"}
    got = row(conn, "SELECT status, delivered_at FROM notification_logs WHERE id = %s", nid)
    assert got == {"status": "delivered", "delivered_at": done}
    # Out of order and repeated: a late 'sent' and a repeated 'delivered' change nothing.
    assert twilio_post(api, callback("sent")).json() == {"status": "applied"}
    assert twilio_post(api, callback("delivered")).json() == {"status": "duplicate"}
    assert row(conn, "SELECT status FROM notification_logs WHERE id = %s", nid)["status"] == "delivered"


def test_twilio_undelivered_and_stop_are_recorded(api, conn, make) -> None:
    uid = make.user()
    sid2 = "SM" + "2" * 32
    nid, _ = sent_push(conn, make, uid, type="preview_sms", channel="sms", provider_id=SID)
    nid2, _ = sent_push(conn, make, uid, type="fallback_sms", channel="sms", provider_id=sid2)
    assert twilio_post(api, callback("undelivered", ErrorCode="30003")).status_code == 200
    assert twilio_post(api, callback("failed", sid=sid2, ErrorCode="21610")).status_code == 200
    first = row(conn, "SELECT status, reason FROM notification_logs WHERE id = %s", nid)
    second = row(conn, "SELECT status, reason FROM notification_logs WHERE id = %s", nid2)
    assert first == {"status": "failed", "reason": "twilio_undelivered: 30003"}
    assert second["status"] == "failed" and second["reason"].startswith("twilio_failed: 21610")
    assert row(conn, "SELECT sms_opted_out FROM users WHERE id = %s", uid)["sms_opted_out"] is True


def test_twilio_callback_before_the_sid_is_written_back_is_applied_then(api, conn, make) -> None:
    uid = make.user()
    nid, _ = sent_push(conn, make, uid, type="preview_sms", channel="sms", status="sending", sent_at=None,
                       send_at=datetime.now(timezone.utc))
    assert twilio_post(api, callback("delivered")).json() == {"status": "pending"}
    conn.execute("UPDATE notification_logs SET status = 'sent', provider_id = %s WHERE id = %s", (SID, nid))
    assert row(conn, "SELECT status FROM notification_logs WHERE id = %s", nid)["status"] == "delivered"


def test_twilio_callback_with_bad_fields_is_422_once_signed(api) -> None:
    r = twilio_post(api, callback("delivered", sid="not-a-sid"))
    assert r.status_code == 422 and "MessageSid" in r.json()["detail"]


def test_healthz_and_openapi(api) -> None:
    assert httpx.get(f"{api.url}/healthz").json() == {"status": "ok"}
    paths = httpx.get(f"{api.url}/openapi.json").json()["paths"]
    assert {"/api/v1/notifications/register-device", "/api/v1/users/notification-preferences",
            "/api/v1/notifications/history", "/api/v1/notifications/{notification_id}/receipt",
            "/api/v1/webhooks/twilio/status", "/healthz", "/api/v1/notifications/unregister-device",
            "/api/v1/webhooks/twilio/inbound"} <= set(paths)
    assert "get" in paths["/api/v1/users/notification-preferences"]


def test_healthz_is_503_when_the_database_is_gone(db, start_api, pg_server) -> None:
    api = start_api(db)
    with psycopg.connect(pg_server.admin_dsn, autocommit=True) as admin:
        name = db.rsplit("dbname=", 1)[-1].split()[0] if "dbname=" in db else db.rsplit("/", 1)[-1]
        admin.execute("ALTER DATABASE \"%s\" WITH ALLOW_CONNECTIONS false" % name)
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        try:
            wait_until(lambda: httpx.get(f"{api.url}/healthz", timeout=10).status_code == 503, timeout=20)
            r = httpx.get(f"{api.url}/healthz", timeout=10)
            assert r.json()["error"] == "database_unavailable"
        finally:
            admin.execute("ALTER DATABASE \"%s\" WITH ALLOW_CONNECTIONS true" % name)


# --- end to end: the app's receipt over HTTP stops the Path C fallback -----------------------------

def test_receipt_over_http_10s_after_a_path_c_push_means_no_sms(db, make, fake_fcm, fake_twilio, start_dispatcher, start_api) -> None:
    api = start_api(db)
    start_dispatcher()
    uid = make.user(notification_pref="push_and_sms", fcm_token="tok-c", push_enabled=True,
                    phone_number="+15555550777", notification_lead_min=2, coach="Max", current_streak=12)
    call = make.call(uid, in_seconds=100)
    wait_until(lambda: fake_fcm.state.accepted(), timeout=10)
    pushed = fake_fcm.state.accepted()[0]
    notification_id = pushed.message["data"]["notification_id"]  # what the app reads from the push
    time.sleep(max(0, pushed.at + 10 - time.time()))
    with client(api, uid) as http:
        r = http.post(f"/api/v1/notifications/{notification_id}/receipt", json={"event": "delivered"})
    assert r.status_code == 200 and r.json()["status"] == "recorded" and r.json()["late"] is False
    time.sleep(max(0, pushed.at + 33 - time.time()))  # past the 30 s fallback instant
    assert fake_twilio.state.sent == []
    with psycopg.connect(db) as c:
        rows = c.cursor(row_factory=psycopg.rows.dict_row).execute(
            "SELECT type, status, reason FROM notification_logs WHERE call_id = %s ORDER BY created_at", (call,)).fetchall()
    assert [(r["type"], r["status"]) for r in rows] == [("preview_push", "delivered"), ("fallback_sms", "cancelled")]


def test_a_token_for_another_key_type_is_a_401_not_a_500(db, make, start_api) -> None:
    """RSA key configured, a token whose header says ES256 with a garbage signature: PyJWT raises
    InvalidKeyError (not an InvalidTokenError) — a 401 in the one error shape, never a 500."""
    import base64
    import json as _json

    from cryptography.hazmat.primitives.asymmetric import rsa

    uid = make.user()
    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    api = start_api(db, PRECALL_JWT_SECRET="", PRECALL_JWT_PUBLIC_KEY=pem.decode())

    def b64(obj: dict) -> str:
        return base64.urlsafe_b64encode(_json.dumps(obj).encode()).rstrip(b"=").decode()

    forged = f"{b64({'alg': 'ES256', 'typ': 'JWT'})}.{b64({'sub': uid, 'exp': int(time.time()) + 60})}.{'A' * 86}"
    r = httpx.get(f"{api.url}/api/v1/notifications/history", headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "unauthorized"


def test_an_unexpected_error_answers_in_the_one_shape_without_a_traceback(api, conn, make) -> None:
    uid = make.user()
    conn.execute("ALTER FUNCTION precall.history_entries(uuid, integer, integer) RENAME TO gone_history")
    with client(api, uid) as http:
        r = http.get("/api/v1/notifications/history")
    assert r.status_code == 500
    assert r.json() == {"error": "internal_error", "detail": "an unexpected error; it has been logged"}
    assert "Traceback" not in r.text


def test_a_held_row_lock_fails_that_users_requests_fast_and_nobody_elses(db, conn, make, start_api) -> None:
    """A DBA leaves `UPDATE users … WHERE id = A` open. A's registrations answer 503 lock_timeout
    within the lock timeout; B's requests and /healthz keep answering (they used to wait for the
    pool that A's requests filled)."""
    import concurrent.futures

    a, b = make.user(), make.user()
    api = start_api(db, PRECALL_DB_LOCK_TIMEOUT_MS="1000", PRECALL_API_DB_POOL_MAX="4")
    body = {"fcm_token": TOKEN, "platform": "ios", "push_enabled": True}
    with psycopg.connect(db) as dba:
        dba.execute("UPDATE users SET locale = locale WHERE id = %s", (a,))  # held open
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            held = [pool.submit(lambda: client(api, a).post("/api/v1/notifications/register-device", json=body))
                    for _ in range(8)]
            time.sleep(0.3)
            other = client(api, b).get("/api/v1/notifications/history")
            health = httpx.get(f"{api.url}/healthz", timeout=10)
            answers = [f.result(timeout=30) for f in held]
        elapsed = time.monotonic() - started
        dba.rollback()
    assert other.status_code == 200 and health.status_code == 200
    assert {r.status_code for r in answers} == {503}, [r.text for r in answers]
    assert {r.json()["error"] for r in answers} == {"lock_timeout"}
    assert elapsed < 10, elapsed


def test_precall_api_workers_serve_receipts_from_several_processes(db, conn, make, start_api) -> None:
    """PRECALL_API_WORKERS=2 (`precall api --workers 2`): two worker processes on one port; a
    receipt for each of 20 pushes is recorded once, whichever process answers; all exit on stop."""
    workers_api = start_api(db, PRECALL_API_WORKERS="2")
    import os
    parent = workers_api.proc.pid
    kids = [int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == parent]
    assert len(kids) >= 2, kids  # uvicorn's workers (and its multiprocessing helper)
    uid = make.user(fcm_token=TOKEN, push_enabled=True)
    pushes = [sent_push(conn, make, uid)[0] for _ in range(20)]
    with client(workers_api, uid) as http:
        answers = [http.post(f"/api/v1/notifications/{nid}/receipt", json={"event": "delivered"}) for nid in pushes]
        again = http.post(f"/api/v1/notifications/{pushes[0]}/receipt", json={"event": "delivered"})
    assert [a.status_code for a in answers] == [200] * 20 and {a.json()["status"] for a in answers} == {"recorded"}
    assert answers[0].json()["delivered_at"] is not None
    assert again.json()["status"] == "duplicate"
    assert conn.execute("SELECT count(*) FROM notification_logs WHERE id = ANY(%s::uuid[]) AND status = 'delivered'",
                        (pushes,)).fetchone() == (20,)
    workers_api.stop()
    wait_until(lambda: not [k for k in kids if _alive(k)], timeout=10)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return -1
