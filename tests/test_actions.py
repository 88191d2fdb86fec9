"""Interactive previews (issue 18): call now, snooze and skip from the push or an SMS reply, the
call events the call system hears, and the outcomes it reports back — judged at the fake FCM and
Twilio servers, at the call webhook's receiver, and through the API as the app and Twilio call it."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import pytest
from twilio.request_validator import RequestValidator

from plugins.processes import INBOUND_URL, precall_cli, user_token, wait_until
from precall.webhook_signature import sign

pytestmark = pytest.mark.integration

SECRET = "whsec-actions-test"
PHONE_FR = "+33612345678"


def pushes(fake_fcm, call: str) -> list:
    return [r for r in fake_fcm.state.accepted() if r.message["data"]["call_id"] == call]


def call_at(conn, call: str):
    return conn.execute("SELECT scheduled_at, status FROM scheduled_calls WHERE id = %s", (call,)).fetchone()


def events(receiver, call: str) -> list[dict]:
    return [json.loads(body) for _, _, body in receiver.received if json.loads(body)["call_id"] == call]


def act(api, nid: str, action: str, token: str | None = None, bearer: str | None = None) -> httpx.Response:
    headers = {"X-Precall-Receipt": token} if token else {"Authorization": f"Bearer {bearer}"}
    return httpx.post(f"{api.url}/api/v1/notifications/{nid}/action", json={"action": action}, headers=headers)


def inbound(api_url: str, sid: str, from_number: str, body: str) -> httpx.Response:
    form = {"MessageSid": sid, "From": from_number, "To": "+15005550006", "Body": body, "AccountSid": "AC" + "0" * 32}
    headers = {"X-Twilio-Signature": RequestValidator("test-auth-token").compute_signature(INBOUND_URL, form)}
    return httpx.post(f"{api_url}/api/v1/webhooks/twilio/inbound", data=form, headers=headers)


def sid() -> str:
    return "SM" + uuid.uuid4().hex


def test_push_actions_end_to_end_at_the_fakes(db, conn, make, fake_fcm, webhook_receiver, start_dispatcher,
                                              start_api) -> None:
    """snooze (receipt token) moves the call, re-plans its preview and tells the call system before
    the call.due at the new time; call_now fires the call at once; skip cancels both."""
    conn.execute("UPDATE precall.settings SET snooze_minutes = 1")  # the whole loop within ~2 minutes
    hook = f"http://127.0.0.1:{webhook_receiver.server_address[1]}/calls"
    start_dispatcher(PRECALL_CALL_WEBHOOK_URL=hook, PRECALL_WEBHOOK_SECRET=SECRET)
    api = start_api(db)
    users = {name: make.user(notification_pref="push_only", fcm_token=f"tok-{name}", platform="android",
                             push_enabled=True, notification_lead_min=1, coach="Max", current_streak=5)
             for name in ("snoozer", "caller", "skipper")}
    calls = {name: make.call(uid, in_seconds=62) for name, uid in users.items()}
    T = {name: call_at(conn, c)[0] for name, c in calls.items()}
    wait_until(lambda: all(pushes(fake_fcm, c) for c in calls.values()), timeout=15)
    data = {name: pushes(fake_fcm, c)[0].message["data"] for name, c in calls.items()}
    assert data["snoozer"]["actions"] == "call_now,snooze,skip" and data["snoozer"]["snooze_minutes"] == "1"

    # snooze, with only the push's receipt token (an Android background handler)
    answer = act(api, data["snoozer"]["notification_id"], "snooze", token=data["snoozer"]["receipt_token"])
    assert answer.status_code == 200, answer.text
    new_T = T["snoozer"] + timedelta(minutes=1)
    assert answer.json() == {"status": "applied", "action": "snooze", "call_status": "pending",
                             "scheduled_at": new_T.isoformat().replace("+00:00", "Z")}
    assert call_at(conn, calls["snoozer"]) == (new_T, "pending")
    replanned = conn.execute("SELECT status, send_at, reason_code FROM notification_logs WHERE call_id = %s "
                             "ORDER BY created_at", (calls["snoozer"],)).fetchall()
    assert [(r[0], r[2]) for r in replanned] == [("opened", None), ("queued", None)]  # the action is a receipt
    assert replanned[1][1] == new_T - timedelta(minutes=1)

    # call_now: the call webhook within 1 s
    acted_at = time.time()
    answer = act(api, data["caller"]["notification_id"], "call_now", bearer=user_token(users["caller"]))
    assert answer.status_code == 200, answer.text
    wait_until(lambda: any(e["event"] == "call.due" for e in events(webhook_receiver, calls["caller"])), timeout=5)
    due_at = next(at for at, _, b in webhook_receiver.received
                  if json.loads(b)["call_id"] == calls["caller"] and json.loads(b)["event"] == "call.due")
    assert due_at - acted_at < 1.0
    assert [e["event"] for e in events(webhook_receiver, calls["caller"])] == ["call.rescheduled", "call.due"]

    # skip: call.cancelled, the call job cancelled with the person's reason, no call.due
    answer = act(api, data["skipper"]["notification_id"], "skip", bearer=user_token(users["skipper"]))
    assert answer.status_code == 200 and answer.json()["call_status"] == "cancelled"
    job = conn.execute("SELECT status, reason_code FROM precall.call_jobs WHERE call_id = %s", (calls["skipper"],)).fetchone()
    assert job == ("cancelled", "user_skipped")

    # A second action on a call → 409 with what was found.
    again = act(api, data["snoozer"]["notification_id"], "skip", token=data["snoozer"]["receipt_token"])
    assert again.status_code == 409 and again.json()["error"] == "already_acted", again.text
    assert "snooze" in again.json()["detail"]

    # The snoozed call: its new preview at new T - lead, then call.due at new T (and none at the old T).
    wait_until(lambda: len(pushes(fake_fcm, calls["snoozer"])) == 2, timeout=80)
    second = pushes(fake_fcm, calls["snoozer"])[1]
    assert -0.05 <= second.at - (new_T - timedelta(minutes=1)).timestamp() <= 1.0
    wait_until(lambda: any(e["event"] == "call.due" for e in events(webhook_receiver, calls["snoozer"])), timeout=70)
    snoozed_events = events(webhook_receiver, calls["snoozer"])
    assert [e["event"] for e in snoozed_events] == ["call.rescheduled", "call.due"]
    assert snoozed_events[0]["previous_scheduled_at"] == T["snoozer"].isoformat().replace("+00:00", "Z")
    assert snoozed_events[0]["cause"] == "user_snoozed"
    due_at = next(at for at, _, b in webhook_receiver.received
                  if json.loads(b)["call_id"] == calls["snoozer"] and json.loads(b)["event"] == "call.due")
    assert 0 <= due_at - new_T.timestamp() < 1.0
    assert [e["event"] for e in events(webhook_receiver, calls["skipper"])] == ["call.cancelled"]
    for _, headers, body in webhook_receiver.received:
        t, v1 = (p.split("=", 1)[1] for p in headers["X-Precall-Signature"].split(","))
        assert v1 == hmac.new(SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()

    history = httpx.get(f"{api.url}/api/v1/notifications/history",
                        headers={"Authorization": f"Bearer {user_token(users['skipper'])}"}).json()["notifications"]
    assert history[0]["type"] == "action" and history[0]["action"] == "skip"
    assert (history[0]["channel"], history[0]["outcome"]) == ("push", "applied")


def test_a_dba_update_raises_call_events_and_notify(db, conn, make, webhook_receiver, start_dispatcher) -> None:
    import psycopg

    uid = make.user(fcm_token="tok-dba", push_enabled=True)
    call = make.call(uid, in_seconds=3600)
    with psycopg.connect(db, autocommit=True) as listener:
        listener.execute("LISTEN precall_call_changed")
        conn.execute("UPDATE scheduled_calls SET scheduled_at = scheduled_at + interval '1 hour' WHERE id = %s", (call,))
        conn.execute("UPDATE scheduled_calls SET status = 'cancelled' WHERE id = %s", (call,))
        notes = [json.loads(n.payload) for n in listener.notifies(timeout=3, stop_after=2)]
    assert [(n["event"], n["cause"]) for n in notes] == [("call.rescheduled", None), ("call.cancelled", None)]
    start_dispatcher(PRECALL_CALL_WEBHOOK_URL=f"http://127.0.0.1:{webhook_receiver.server_address[1]}/c",
                     PRECALL_WEBHOOK_SECRET=SECRET)
    wait_until(lambda: len(events(webhook_receiver, call)) == 2, timeout=10)
    assert [e["event"] for e in events(webhook_receiver, call)] == ["call.rescheduled", "call.cancelled"]
    assert conn.execute("SELECT array_agg(status) FROM precall.call_events WHERE call_id = %s", (call,)).fetchone() \
        == (["delivered", "delivered"],)


def test_sms_reply_2_snoozes_and_answers_in_french(db, conn, make, fake_twilio, start_dispatcher, start_api) -> None:
    uid = make.user(notification_pref="sms_only", phone_number=PHONE_FR, locale="fr", timezone="Europe/Paris",
                    notification_lead_min=1, coach="Max", current_streak=5)
    call = make.call(uid, in_seconds=63)
    T = call_at(conn, call)[0]
    start_dispatcher()
    api = start_api(db, PRECALL_SMS_PRICES="FR=0.0650:EUR")
    wait_until(lambda: fake_twilio.state.arrived, timeout=15)
    [sms] = fake_twilio.state.arrived
    assert sms["Body"].endswith("Réponds 2 : +10 min, 3 : annuler"), sms["Body"]
    answer = inbound(api.url, sid(), PHONE_FR, " plus  tard ")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/xml")
    new_T = T + timedelta(minutes=10)
    local = new_T.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Paris")).strftime("%H:%M")
    assert f"<Message>OK : Coach Max t'appellera à {local}.</Message>" in answer.text, answer.text
    assert call_at(conn, call) == (new_T, "pending")
    # Nine minutes ahead: outside the planning window now; pg_cron's run then plans it at T' - lead.
    conn.execute("SELECT precall.plan_due_previews(%s)", (new_T - timedelta(seconds=90),))
    queued = conn.execute("SELECT send_at FROM notification_logs WHERE call_id = %s AND status = 'queued'",
                          (call,)).fetchall()
    assert queued == [(new_T - timedelta(minutes=1),)]
    action = conn.execute("SELECT action, channel, outcome FROM precall.call_actions WHERE call_id = %s", (call,)).fetchall()
    assert action == [("snooze", "sms", "applied")]
    reply = conn.execute("SELECT reply, reply_segments, reply_cost, reply_currency FROM precall.sms_inbound "
                         "WHERE reply IS NOT NULL").fetchall()
    assert [(r[0], r[1], float(r[2]), r[3]) for r in reply] == [("confirmation", 1, 0.065, "EUR")]
    # Another reply: the call was acted on already → a refusal, nothing moved.
    refused = inbound(api.url, sid(), PHONE_FR, "3")
    assert "Rien n'a changé" in refused.text and call_at(conn, call) == (new_T, "pending")


def test_racing_actions_one_applies_one_409(db, conn, make, fake_fcm, start_dispatcher, start_api) -> None:
    uids = [make.user(notification_pref="push_only", fcm_token=f"tok-race-{i}", push_enabled=True,
                      notification_lead_min=1) for i in range(4)]
    calls = [make.call(uid, in_seconds=62) for uid in uids]
    start_dispatcher()
    api = start_api(db)
    wait_until(lambda: all(pushes(fake_fcm, c) for c in calls), timeout=15)
    for uid, call in zip(uids, calls):
        d = pushes(fake_fcm, call)[0].message["data"]
        with ThreadPoolExecutor(2) as pool:  # the push button and the app screen at once
            a = pool.submit(act, api, d["notification_id"], "snooze", d["receipt_token"])
            b = pool.submit(act, api, d["notification_id"], "skip", None, user_token(uid))
            codes = sorted([a.result().status_code, b.result().status_code])
        assert codes == [200, 409]
        assert conn.execute("SELECT count(*) FROM precall.call_actions WHERE call_id = %s AND outcome = 'applied'",
                            (call,)).fetchone() == (1,)


def test_action_bad_input_never_500_nothing_moved(db, conn, make, fake_fcm, start_dispatcher, start_api) -> None:
    uid = make.user(notification_pref="push_only", fcm_token="tok-bad", push_enabled=True, notification_lead_min=1,
                    phone_number="+15555550142")
    other = make.user(notification_pref="push_only", fcm_token="tok-bad-2", push_enabled=True)
    call = make.call(uid, in_seconds=62)
    T = call_at(conn, call)
    start_dispatcher()
    api = start_api(db)
    wait_until(lambda: pushes(fake_fcm, call), timeout=15)
    d = pushes(fake_fcm, call)[0].message["data"]
    nid, token = d["notification_id"], d["receipt_token"]
    url = f"{api.url}/api/v1/notifications/{nid}/action"
    assert httpx.post(url, json={"action": "call_later"}, headers={"X-Precall-Receipt": token}).status_code == 422
    assert httpx.post(url, json={"action": "snooze", "x": 1}, headers={"X-Precall-Receipt": token}).status_code == 422
    assert httpx.post(url, json={"action": "snooze"}).status_code == 401
    assert httpx.post(url, json={"action": "snooze"}, headers={"X-Precall-Receipt": token[:-3] + "AAA"}).status_code == 401
    assert act(api, nid, "snooze", bearer=user_token(other)).status_code == 404  # another user's preview
    assert act(api, str(uuid.uuid4()), "snooze", bearer=user_token(uid)).status_code == 404
    # SMS: a stranger, 2 kB, emoji, STOP-like words: no 500, nothing moved; help once a day.
    assert inbound(api.url, sid(), "+15550000000", "2").text.endswith("<Response/>")
    assert inbound(api.url, sid(), "+15555550142", "x" * 2048).status_code == 422
    first = inbound(api.url, sid(), "+15555550142", "🙂🙂🙂 ok?")
    assert "<Message>Reply 1: call now, 2: +10 min, 3: skip." in first.text, first.text
    assert inbound(api.url, sid(), "+15555550142", "what?").text.endswith("<Response/>")  # help sent today already
    assert inbound(api.url, sid(), "+15555550142", "2").text.endswith("<Response/>")  # no SMS preview: no call
    assert call_at(conn, call) == T
    assert conn.execute("SELECT count(*) FROM precall.call_actions").fetchone() == (0,)


def test_signed_outcomes_and_machine_answers_in_stats(db, conn, make, start_api) -> None:
    uid = make.user(fcm_token="tok-out", push_enabled=True)
    human, machine, untouched = (make.call(uid, in_seconds=3600) for _ in range(3))
    conn.execute("UPDATE scheduled_calls SET scheduled_at = now() - interval '1 minute'")
    api = start_api(db, PRECALL_WEBHOOK_SECRET=SECRET)

    def report(call: str, status: str, answered_by: str, timestamp: int | None = None, secret: str = SECRET,
               signed: bool = True) -> httpx.Response:
        body = json.dumps({"status": status, "answered_by": answered_by, "at": "2026-12-04T10:00:00Z"}).encode()
        headers = {"Content-Type": "application/json"}
        if signed:
            headers["X-Precall-Signature"] = sign(secret, body, timestamp)
        return httpx.post(f"{api.url}/api/v1/calls/{call}/outcome", content=body, headers=headers)

    assert report(untouched, "answered", "human", signed=False).status_code == 401
    assert report(untouched, "answered", "human", timestamp=int(time.time()) - 301).status_code == 403  # a replay
    assert report(untouched, "answered", "human", secret="wrong").status_code == 403
    assert call_at(conn, untouched)[1] == "pending"
    ok = report(human, "answered", "human")
    assert ok.status_code == 200 and ok.json() == {"status": "recorded", "call_status": "answered", "answered_by": "human"}
    assert report(human, "answered", "human").json()["status"] == "duplicate"
    assert report(human, "no_answer", "unknown").status_code == 409
    assert report(machine, "answered", "machine").status_code == 200
    assert call_at(conn, human)[1] == call_at(conn, machine)[1] == "answered"
    assert report(str(uuid.uuid4()), "answered", "human").status_code == 404
    stats = json.loads(precall_cli("stats", "--since", "1d", "--json", env={"DATABASE_URL": db}).stdout)
    rate = next(k for k in stats["kpis"] if k["kpi"] == "call_answer_rate")
    assert (float(rate["numerator"]), float(rate["denominator"])) == (1.0, 2.0)  # the machine's answer is not one


def test_action_rate_and_snoozed_answer_rate_in_stats(db, conn, make) -> None:
    uid = make.user(fcm_token="tok-stats", push_enabled=True)
    calls = [make.call(uid, in_seconds=3600 + i) for i in range(3)]
    rows = []
    for c in calls:
        rows.append(conn.execute(
            "INSERT INTO notification_logs (user_id, call_id, type, channel, status, sent_at, planned_for) "
            "SELECT user_id, id, 'preview_push', 'push', 'sent', now(), scheduled_at FROM scheduled_calls "
            "WHERE id = %s RETURNING id", (c,)).fetchone()[0])
    got = conn.execute("SELECT outcome FROM precall.apply_call_action(%s, 'snooze', %s)", (rows[0], uid)).fetchone()
    assert got == ("applied",)
    conn.execute("UPDATE scheduled_calls SET scheduled_at = now() - interval '1 minute', status = 'answered' WHERE id = %s",
                 (calls[0],))
    conn.execute("UPDATE scheduled_calls SET scheduled_at = now() - interval '1 minute', status = 'no_answer' WHERE id = %s",
                 (calls[1],))
    kpis = {(r[0], r[1]): r[2:4] for r in conn.execute(
        "SELECT grp, kpi, numerator, denominator FROM precall.kpis(now() - interval '1 day', 'action')")}
    assert kpis[("snooze", "call_answer_rate")] == (1, 1)
    assert kpis[("none", "call_answer_rate")] == (0, 1)
    assert kpis[("snooze", "snoozed_answer_rate")] == (1, 1)
    overall = {r[0]: r[1:3] for r in conn.execute(
        "SELECT kpi, numerator, denominator FROM precall.kpis(now() - interval '1 day')")}
    assert overall["action_rate"] == (1, 3)
    out = precall_cli("stats", "--since", "1d", "--by", "action", "--json", env={"DATABASE_URL": db})
    assert out.returncode == 0, out.stderr
    rows = {(k["grp"], k["kpi"]): k["value"] for k in json.loads(out.stdout)["kpis"]}
    assert float(rows[("snooze", "snoozed_answer_rate")]) == 1.0
    table = precall_cli("stats", "--since", "1d", "--by", "action", env={"DATABASE_URL": db}).stdout
    assert "action_rate" in table and "snoozed_answer_rate" in table


@pytest.mark.parametrize("body,action", [
    ("1", "call_now"), (" now ", "call_now"), ("Maintenant !", "call_now"), ("MAINTENANT", "call_now"),
    ("2", "snooze"), ("later", "snooze"), ("Plus tard", "snooze"), ("plus-tard", "snooze"), ("PLUS TÂRD", "snooze"),
    ("3", "skip"), ("Skip.", "skip"), ("annuler", "skip"), ("Annulér", "skip"),
    ("STOP", None), ("cancel", None), ("12", None), ("2 please", None), ("🙂", None), ("", None), ("x" * 2000, None),
])
def test_sms_reply_keywords(conn, body, action) -> None:
    assert conn.execute("SELECT precall.sms_reply_action(%s)", (body,)).fetchone() == (action,)


def test_actions_refused_after_the_call_time_or_when_not_pending(conn, make) -> None:
    uid = make.user(fcm_token="tok-late", push_enabled=True)
    past, answered = make.call(uid, in_seconds=3600), make.call(uid, in_seconds=3600)
    nids = {}
    for call in (past, answered):
        nids[call] = conn.execute(
            "INSERT INTO notification_logs (user_id, call_id, type, channel, status, sent_at, planned_for) "
            "SELECT user_id, id, 'preview_push', 'push', 'sent', now(), scheduled_at FROM scheduled_calls "
            "WHERE id = %s RETURNING id", (call,)).fetchone()[0]
    conn.execute("UPDATE scheduled_calls SET scheduled_at = now() - interval '1 second' WHERE id = %s", (past,))
    conn.execute("UPDATE scheduled_calls SET status = 'answered' WHERE id = %s", (answered,))
    got = [conn.execute("SELECT outcome FROM precall.apply_call_action(%s, 'snooze', %s)", (nids[c], uid)).fetchone()[0]
           for c in (past, answered)]
    assert got == ["too_late", "not_pending"]
    rows = conn.execute("SELECT outcome FROM precall.call_actions ORDER BY at").fetchall()
    assert rows == [("too_late",), ("not_pending",)]  # refused actions are rows too
    with pytest.raises(Exception, match="unknown action"):
        conn.execute("SELECT * FROM precall.apply_call_action(%s, 'later', %s)", (nids[past], uid))
