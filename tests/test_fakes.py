"""The fakes tell the truth: they refuse what FCM and Twilio refuse, answer what they answer
(Retry-After, 401, 20429, real segment counts) and sign status callbacks as Twilio does. Checked
here with hand-built requests (PyJWT, httpx, hmac), independently of the SDKs precall sends with."""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time

import httpx
import jwt
import pytest
from twilio.request_validator import RequestValidator

from precall.fakes.fake_fcm import FakeFcmServer, service_account
from precall.fakes.fake_twilio import FakeTwilioServer, segments

pytestmark = pytest.mark.integration  # local servers

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
MESSAGE = {"token": "tok-1", "notification": {"title": "t", "body": "b"}, "data": {"call_id": "c"},
           "android": {"priority": "high", "ttl": "300s"}, "apns": {"headers": {"apns-priority": "10"}}}


@pytest.fixture
def fcm():
    server = FakeFcmServer().start()
    yield server
    server.shutdown()


@pytest.fixture
def twilio():
    server = FakeTwilioServer().start()
    yield server
    server.shutdown()


def assertion(account: dict[str, str], **overrides: object) -> str:
    now = int(time.time())
    claims = {"iss": account["client_email"], "scope": SCOPE, "aud": account["token_uri"], "iat": now,
              "exp": now + 3600, **overrides}
    return jwt.encode(claims, account["private_key"], algorithm="RS256")


def access_token(fcm: FakeFcmServer, account: dict[str, str], **overrides: object) -> httpx.Response:
    return httpx.post(account["token_uri"], data={
        "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion(account, **overrides)})


def send(fcm: FakeFcmServer, bearer: str, message: dict[str, object] = MESSAGE) -> httpx.Response:
    return httpx.post(f"{fcm.url}/v1/projects/p/messages:send", json={"message": message},
                      headers={"Authorization": f"Bearer {bearer}"})


def test_fcm_token_endpoint_checks_the_assertion(fcm) -> None:
    account = fcm.credentials()
    ok = access_token(fcm, account)
    assert ok.status_code == 200 and ok.json()["access_token"].startswith("ya29.")
    stranger = service_account(account["token_uri"])  # a key this process made, but for iss of another
    forged = httpx.post(account["token_uri"], data={
        "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
        "assertion": jwt.encode({"iss": account["client_email"], "scope": SCOPE, "aud": account["token_uri"],
                                 "iat": int(time.time()), "exp": int(time.time()) + 3600},
                                stranger["private_key"], algorithm="RS256")})
    assert forged.status_code == 400 and forged.json()["error"] == "invalid_grant"
    expired = access_token(fcm, account, iat=int(time.time()) - 7300, exp=int(time.time()) - 3700)
    assert expired.status_code == 400
    wrong_audience = access_token(fcm, account, aud="https://example.com/token")
    assert wrong_audience.status_code == 400
    no_scope = access_token(fcm, account, scope="https://www.googleapis.com/auth/userinfo.email")
    assert no_scope.status_code == 400


def test_fcm_sends_need_a_live_access_token(fcm) -> None:
    token = access_token(fcm, fcm.credentials()).json()["access_token"]
    assert send(fcm, token).status_code == 200
    assert send(fcm, "ya29.made-up").status_code == 401
    fcm.state.revoke_tokens()
    refused = send(fcm, token)
    assert refused.status_code == 401 and refused.json()["error"]["status"] == "UNAUTHENTICATED"


@pytest.mark.parametrize("field, value, says", [
    ("data", {"n": 5}, "message.data[n].value"),
    ("data", {"from": "x"}, "Invalid data payload key: from"),
    ("android", {"ttl": "300"}, "message.android.ttl"),
    ("android", {"priority": "urgent"}, "message.android.priority"),
    ("apns", {"headers": {"apns-collapse-id": "x" * 65}}, "64 bytes"),
    ("apns", {"headers": {"apns-expiration": 1700000000}}, "message.apns.headers"),
    ("unknown_field", 1, "Unknown name"),
])
def test_fcm_refuses_payloads_fcm_refuses(fcm, field, value, says) -> None:
    token = access_token(fcm, fcm.credentials()).json()["access_token"]
    answer = send(fcm, token, {**MESSAGE, field: value})
    assert answer.status_code == 400 and says in answer.json()["error"]["message"], answer.json()


def test_fcm_429_and_503_say_when_to_retry(fcm) -> None:
    token = access_token(fcm, fcm.credentials()).json()["access_token"]
    fcm.state.retry_after_s = 7
    quota = send(fcm, token, {**MESSAGE, "token": "quota-1"})
    unavailable = send(fcm, token, {**MESSAGE, "token": "unavailable-1"})
    assert quota.status_code == 429 and quota.headers["Retry-After"] == "7"
    assert unavailable.status_code == 503 and unavailable.headers["Retry-After"] == "7"


def test_fcm_records_a_request_when_it_arrives(fcm) -> None:
    """A client that gives up during a slow answer still reached FCM: the record says so at once."""
    token = access_token(fcm, fcm.credentials()).json()["access_token"]
    fcm.state.latency_s = 1.0
    started = time.time()
    thread = threading.Thread(target=send, args=(fcm, token))
    thread.start()
    deadline = time.time() + 0.8
    while not fcm.state.arrived() and time.time() < deadline:
        time.sleep(0.01)
    [record] = fcm.state.arrived()
    assert record.at - started < 0.5 and record.answered_at is None
    thread.join()
    assert record.answered_at is not None and record.answered_at - record.at >= 1.0


def twilio_post(twilio: FakeTwilioServer, form: dict[str, str], token: str = "test-auth-token") -> httpx.Response:
    sid = "AC" + "0" * 32
    return httpx.post(f"{twilio.url}/2010-04-01/Accounts/{sid}/Messages.json", data=form, auth=(sid, token))


def test_twilio_checks_the_auth_token_and_a_sender(twilio) -> None:
    assert twilio_post(twilio, {"To": "+15555550100", "From": "+15005550006", "Body": "hi"}).status_code == 201
    wrong = twilio_post(twilio, {"To": "+15555550100", "From": "+15005550006", "Body": "hi"}, token="wrong")
    assert wrong.status_code == 401 and wrong.json()["code"] == 20003
    nobody = twilio_post(twilio, {"To": "+15555550100", "Body": "hi"})
    assert nobody.status_code == 400 and nobody.json()["code"] == 21603
    via_service = twilio_post(twilio, {"To": "+15555550100", "MessagingServiceSid": "MG" + "a" * 32, "Body": "hi"})
    assert via_service.status_code == 201 and via_service.json()["messaging_service_sid"] == "MG" + "a" * 32


def test_twilio_answers_20429_over_its_rate(twilio) -> None:
    twilio.state.rate_per_s = 2
    answers = [twilio_post(twilio, {"To": f"+1555555010{i}", "From": "+15005550006", "Body": "hi"}) for i in range(3)]
    assert [a.status_code for a in answers] == [201, 201, 429]
    assert answers[2].json()["code"] == 20429


@pytest.mark.parametrize("body, expected", [
    ("a" * 160, ("GSM-7", 1)), ("a" * 161, ("GSM-7", 2)), ("€" * 80, ("GSM-7", 1)), ("€" * 81, ("GSM-7", 2)),
    ("é" * 160, ("GSM-7", 1)), ("ê" * 70, ("UCS-2", 1)), ("ê" * 71, ("UCS-2", 2)), ("💪" * 35, ("UCS-2", 1)),
    ("💪" * 36, ("UCS-2", 2)),
])
def test_twilio_counts_segments_as_twilio_does(body, expected) -> None:
    assert segments(body) == expected


def test_status_callbacks_are_signed_as_twilio_signs_them(twilio) -> None:
    """The signature, computed here by hand (HMAC-SHA1 under the auth token of the URL and each
    parameter's name and value in name order, base64), matches the fake's and the SDK's."""
    received: list[tuple[str, dict[str, str], str]] = []

    import http.server
    from urllib.parse import parse_qs

    class Receiver(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            received.append((self.path, {k: v[0] for k, v in parse_qs(body).items()},
                             self.headers["X-Twilio-Signature"]))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        twilio.state.callbacks_to = f"http://127.0.0.1:{receiver.server_address[1]}/twilio/status"
        public = "https://hooks.example.com/twilio/status"
        created = twilio_post(twilio, {"To": "+15555550100", "From": "+15005550006", "Body": "hi",
                                       "StatusCallback": public})
        deadline = time.time() + 5
        while len(received) < 2 and time.time() < deadline:
            time.sleep(0.02)
    finally:
        receiver.shutdown()
    assert [form["MessageStatus"] for _, form, _ in received] == ["sent", "delivered"]
    for path, form, sent_signature in received:
        assert path == "/twilio/status" and form["MessageSid"] == created.json()["sid"]
        data = public + "".join(k + form[k] for k in sorted(form))
        by_hand = base64.b64encode(hmac.new(b"test-auth-token", data.encode(), hashlib.sha1).digest()).decode()
        assert sent_signature == by_hand
        assert RequestValidator("test-auth-token").validate(public, form, sent_signature)
        assert not RequestValidator("another-token").validate(public, form, sent_signature)
