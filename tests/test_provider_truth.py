"""What FCM and Twilio really do, end to end against the truthful fakes: OAuth tokens expire and
are refused, FCM asks for a pause (Retry-After), Twilio answers 20429 and sends signed status
callbacks, messaging-service senders, and Twilio's own segment count agrees with precall's."""

from __future__ import annotations

import json

import psycopg
import pytest
import psycopg.rows

from plugins.processes import wait_until
from precall.fakes import fake_fcm as fake_fcm_module
from precall.fakes.fake_twilio import segments


def _rows(conn, call_id):
    return conn.cursor(row_factory=psycopg.rows.dict_row).execute(
        "SELECT * FROM notification_logs WHERE call_id = %s ORDER BY created_at", (call_id,)).fetchall()


def _push_user(make, token: str, **extra) -> str:
    return make.user(fcm_token=token, push_enabled=True, notification_lead_min=1, coach="Max", **extra)


@pytest.mark.parametrize("transport", ["direct", "sdk"])
def test_a_revoked_access_token_is_refreshed_and_the_preview_still_goes(conn, make, fake_fcm, start_dispatcher,
                                                                         transport) -> None:
    start_dispatcher(PRECALL_FCM_TRANSPORT=transport)
    first = make.call(_push_user(make, "tok-before"), in_seconds=61)
    wait_until(lambda: len(fake_fcm.state.accepted()) == 1)
    tokens_before = fake_fcm.state.token_requests
    fake_fcm.state.revoke_tokens()  # as when Google revokes or rotates them
    second = make.call(_push_user(make, "tok-after", phone_number="+15555550101"), in_seconds=61)
    wait_until(lambda: len(fake_fcm.state.accepted()) == 2)
    assert fake_fcm.state.unauthenticated >= 1 and fake_fcm.state.token_requests > tokens_before
    assert [r.message["token"] for r in fake_fcm.state.accepted()] == ["tok-before", "tok-after"]
    wait_until(lambda: _rows(conn, second)[0]["status"] == "sent")
    assert _rows(conn, first)[0]["status"] == "sent"


@pytest.mark.parametrize("transport", ["direct", "sdk"])
def test_refused_fcm_credentials_fail_the_push_and_path_c_sends_the_sms_at_once(
        conn, make, fake_fcm, fake_twilio, start_dispatcher, tmp_path, transport) -> None:
    account = fake_fcm.credentials()
    del fake_fcm_module._TRUSTED_KEYS[account["client_email"]]  # the key was deleted in the console
    creds = tmp_path / "deleted-key.json"
    creds.write_text(json.dumps(account))
    d = start_dispatcher(GOOGLE_APPLICATION_CREDENTIALS=str(creds), PRECALL_FCM_TRANSPORT=transport)
    d.wait_for_log("FCM token warm-up failed")
    uid = _push_user(make, "tok-c", notification_pref="push_and_sms", phone_number="+15555550102")
    call = make.call(uid, in_seconds=62)
    wait_until(lambda: len(fake_twilio.state.accepted()) == 1, timeout=20)
    push, fallback = _rows(conn, call)
    assert push["status"] == "failed" and push["reason"].startswith("fcm_rejected: AUTH"), push["reason"]
    assert fallback["type"] == "fallback_sms"
    assert fake_fcm.state.arrived() == [] and fake_fcm.state.token_refusals


@pytest.mark.parametrize("transport", ["direct", "sdk"])
def test_fcm_retry_after_is_honoured(conn, make, fake_fcm, start_dispatcher, transport) -> None:
    """429 with Retry-After: 2 — the retry comes 2 s later, not after precall's own 0.5 s."""
    fake_fcm.state.retry_after_s = 2
    start_dispatcher(PRECALL_FCM_TRANSPORT=transport)
    make.call(_push_user(make, "flaky-quota"), in_seconds=61)  # flaky-: 503 once, then accepted
    wait_until(lambda: len(fake_fcm.state.accepted()) == 1, timeout=20)
    first, second = fake_fcm.state.arrived()
    assert first.status == 503 and second.status == 200
    assert 2.0 <= second.at - first.at < 3.5, second.at - first.at


def test_twilio_20429_is_retried_and_each_number_gets_one_sms(conn, make, fake_twilio, start_dispatcher) -> None:
    fake_twilio.state.rate_per_s = 2
    start_dispatcher()
    calls = [make.call(make.user(notification_pref="sms_only", phone_number=f"+1555555030{i}", notification_lead_min=1,
                                 coach="Max"), in_seconds=62) for i in range(5)]
    wait_until(lambda: len(fake_twilio.state.accepted()) == 5, timeout=30)
    refused = [r for r in fake_twilio.state.sent if r.status == 429]
    assert refused, "the fake never said 20429: the test proves nothing"
    assert sorted(r.form["To"] for r in fake_twilio.state.accepted()) == [f"+1555555030{i}" for i in range(5)]
    wait_until(lambda: all(_rows(conn, c)[0]["status"] == "sent" for c in calls))


def test_twilio_status_callbacks_reach_the_api_signed_and_mark_the_sms_delivered(
        db, conn, make, fake_twilio, start_dispatcher, start_api) -> None:
    api = start_api(db)
    fake_twilio.state.callbacks_to = f"{api.url}/api/v1/webhooks/twilio/status"  # behind the public URL
    start_dispatcher()
    call = make.call(make.user(notification_pref="sms_only", phone_number="+15555550310", notification_lead_min=1,
                               coach="Max"), in_seconds=62)
    wait_until(lambda: _rows(conn, call)[0]["status"] == "delivered", timeout=20)
    row = _rows(conn, call)[0]
    assert row["delivered_at"] is not None
    assert [c.status for c in fake_twilio.state.callbacks] == [200, 200]
    events = conn.execute("SELECT status FROM precall.sms_status_events WHERE message_sid = %s ORDER BY received_at",
                          (row["provider_id"],)).fetchall()
    assert [e[0] for e in events] == ["sent", "delivered"]


def test_a_messaging_service_sender_is_sent_as_one(conn, make, fake_twilio, start_dispatcher) -> None:
    service = "MG" + "0123456789abcdef" * 2
    start_dispatcher(PRECALL_TWILIO_FROM=service)
    make.call(make.user(notification_pref="sms_only", phone_number="+15555550320", notification_lead_min=1),
              in_seconds=62)
    wait_until(lambda: fake_twilio.state.accepted(), timeout=20)
    [sms] = fake_twilio.state.accepted()
    assert sms.form["MessagingServiceSid"] == service and "From" not in sms.form


def test_twilio_counts_the_segments_precall_recorded(conn, make, fake_twilio, start_dispatcher) -> None:
    """French with accents (GSM-7 has é, è, à) and a coach name outside GSM-7 (ë): Twilio's count,
    computed independently by the fake, is what precall wrote and priced."""
    start_dispatcher()
    fr = make.call(make.user(notification_pref="sms_only", phone_number="+33612345678", locale="fr",
                             timezone="Europe/Paris", notification_lead_min=1, coach="Élodie"), in_seconds=62)
    ucs = make.call(make.user(notification_pref="sms_only", phone_number="+15555550330", notification_lead_min=1,
                              coach="Zoë"), in_seconds=62)
    wait_until(lambda: len(fake_twilio.state.accepted()) == 2, timeout=20)
    by_to = {r.form["To"]: r.form["Body"] for r in fake_twilio.state.accepted()}
    wait_until(lambda: all(_rows(conn, c)[0]["status"] == "sent" for c in (fr, ucs)))
    for call, to in ((fr, "+33612345678"), (ucs, "+15555550330")):
        row = _rows(conn, call)[0]
        assert segments(by_to[to]) == (row["sms_encoding"], row["sms_segments"]), (by_to[to], row["sms_encoding"])
        assert row["sms_segments"] == 1
