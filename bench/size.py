"""precall at production size: 300k users, 1M calls, 500k notification_logs (half past retention).

Reports what issue 14 measured degrading with size, on one throwaway cluster:
- the retention job: one 5,000-row batch of precall.prune_notification_logs (and, as the peer in
  the same run, a 200-row batch with the parent_id index dropped: what it cost before 0013);
- the API's hot paths, 1,000 sequential requests from one keep-alive client each: a signed Twilio
  status callback, a push receipt, register-device, a push action (snooze: the call moves and is
  re-planned, a call event is written), a signed SMS reply "2" (the same, found by phone number,
  answered with TwiML) and the history page (median and p99);
- 400 register-device requests at once (how many 5xx);
- a planning run at that size (nothing new, and 1,000 new calls due), without and with a running
  experiment that takes every user.

    make bench-size            # writes bench/results_size.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jwt
import psycopg
from twilio.request_validator import RequestValidator

import harness  # bench/harness.py
from precall import localdb

JWT_SECRET = "bench-secret-" + "s" * 32
TWILIO_TOKEN = "bench-twilio-token"
CALLBACK_URL = "https://hooks.example.com/twilio/status"
INBOUND_URL = "https://hooks.example.com/twilio/inbound"


def uid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012x}"


def load(conn: psycopg.Connection, users: int, calls: int, logs: int) -> dict[str, float]:
    took: dict[str, float] = {}
    t0 = time.perf_counter()
    conn.execute(
        "INSERT INTO users (id, phone_number, fcm_token, platform, push_enabled, notification_lead_min)"
        " SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(g), 12, '0'))::uuid,"
        "        '+1555' || lpad(g::text, 7, '0'), 'tok-' || lpad(g::text, 40, '0'), 'android', true, 5"
        " FROM generate_series(1, %s) g", (users,))
    took["users_s"] = time.perf_counter() - t0
    # Bulk loads bypass the insert trigger (it would plan the few calls in today's window).
    conn.execute("ALTER TABLE scheduled_calls DISABLE TRIGGER _500_plan_previews")
    t0 = time.perf_counter()
    conn.execute(
        "INSERT INTO scheduled_calls (id, user_id, scheduled_at, status, topic)"
        " SELECT ('00000000-0000-4000-9000-' || lpad(to_hex(g), 12, '0'))::uuid,"
        "        ('00000000-0000-4000-8000-' || lpad(to_hex(1 + g %% %(users)s), 12, '0'))::uuid, t,"
        "        CASE WHEN t < now() THEN 'answered' ELSE 'pending' END, 'fitness_checkin'"
        " FROM generate_series(1, %(calls)s) g,"
        "      LATERAL (SELECT now() - interval '360 days' + g * (interval '390 days' / %(calls)s) AS t) x",
        {"users": users, "calls": calls})
    conn.execute("ALTER TABLE scheduled_calls ENABLE TRIGGER _500_plan_previews")
    took["calls_s"] = time.perf_counter() - t0
    # One log row per past call: a push (70%, every tenth with a fallback SMS as its child) or an
    # SMS with its Twilio SID (30%); created on the call's day, so half are past the 180-day retention.
    t0 = time.perf_counter()
    conn.execute(
        "INSERT INTO notification_logs (id, user_id, call_id, type, channel, status, provider_id, send_at,"
        "                               attempted_at, sent_at, planned_for, created_at)"
        " SELECT ('00000000-0000-4000-a000-' || lpad(to_hex(c.n), 12, '0'))::uuid, c.user_id, c.id,"
        "        CASE WHEN c.n %% 10 < 7 THEN 'preview_push' ELSE 'preview_sms' END,"
        "        CASE WHEN c.n %% 10 < 7 THEN 'push' ELSE 'sms' END, 'sent',"
        "        CASE WHEN c.n %% 10 < 7 THEN 'projects/p/messages/' || c.n"
        "             ELSE 'SM' || lpad(to_hex(c.n), 32, '0') END,"
        "        c.scheduled_at - interval '5 minutes', c.scheduled_at - interval '5 minutes',"
        "        c.scheduled_at - interval '5 minutes', c.scheduled_at, c.scheduled_at - interval '5 minutes'"
        " FROM (SELECT id, user_id, scheduled_at, row_number() OVER (ORDER BY scheduled_at) AS n"
        "       FROM scheduled_calls ORDER BY scheduled_at LIMIT %s) c", (logs,))
    conn.execute(
        "INSERT INTO notification_logs (user_id, call_id, type, channel, status, provider_id, send_at, attempted_at,"
        "                               sent_at, planned_for, parent_id, created_at)"
        " SELECT n.user_id, n.call_id, 'fallback_sms', 'sms', 'sent', 'SMf' || lpad(to_hex(row_number() OVER ()), 31, '0'),"
        "        n.send_at + interval '30 s', n.send_at + interval '30 s', n.send_at + interval '30 s', n.planned_for,"
        "        n.id, n.created_at + interval '30 s'"
        " FROM notification_logs n WHERE n.type = 'preview_push' AND (hashtext(n.id::text) % 10) = 0")
    took["logs_s"] = time.perf_counter() - t0
    for table in ("users", "scheduled_calls", "notification_logs"):
        conn.execute(f"VACUUM ANALYZE {table}")
    return took


def retention(conn: psycopg.Connection) -> dict[str, object]:
    past = conn.execute("SELECT count(*) FROM notification_logs"
                        " WHERE created_at < now() - (SELECT retention FROM precall.settings)").fetchone()
    batches = []
    for _ in range(3):
        t0 = time.perf_counter()
        conn.execute("CALL precall.prune_notification_logs(5000, 1)")
        batches.append((time.perf_counter() - t0) * 1000)
    # The peer: the same job without the parent_id index (what 0013 added).
    conn.execute("DROP INDEX notification_logs_parent_idx")
    t0 = time.perf_counter()
    conn.execute("CALL precall.prune_notification_logs(200, 1)")
    without = (time.perf_counter() - t0) * 1000
    conn.execute("CREATE INDEX notification_logs_parent_idx ON notification_logs (parent_id) WHERE parent_id IS NOT NULL")
    return {"rows_past_retention": past[0] if past else 0,
            "batch_5000_ms": [round(b, 1) for b in batches], "batch_5000_ms_median": round(statistics.median(batches), 1),
            "peer_without_parent_index_batch_200_ms": round(without, 1)}


def planning(conn: psycopg.Connection, experiment: bool = False) -> dict[str, object]:
    """With `experiment`, the same runs under a running experiment that takes every user (holdout
    10%, control, lead10): each candidate call's arm is looked up (or computed and stored)."""
    if experiment:
        conn.execute("SELECT precall.create_experiment('bench', '[{\"name\": \"control\"}, "
                     "{\"name\": \"lead10\", \"lead_min\": 10}]', 0.1)")
    idle = []
    for _ in range(5):
        t0 = time.perf_counter()
        conn.execute("SELECT precall.plan_due_previews()")
        idle.append((time.perf_counter() - t0) * 1000)
    with conn.transaction(force_rollback=True):
        conn.execute("ALTER TABLE scheduled_calls DISABLE TRIGGER _500_plan_previews")
        conn.execute("INSERT INTO scheduled_calls (user_id, scheduled_at, topic)"
                     " SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(1 + g), 12, '0'))::uuid,"
                     "        now() + interval '5 minutes' + (g % 60) * interval '1 second', 'mood_check'"
                     " FROM generate_series(1, 1000) g")
        t0 = time.perf_counter()
        planned = conn.execute("SELECT precall.plan_due_previews()").fetchone()
        busy = (time.perf_counter() - t0) * 1000
        held = conn.execute("SELECT count(*) FROM notification_logs WHERE reason_code = 'holdout'").fetchone()
    if experiment:
        conn.execute("UPDATE precall.experiments SET stopped_at = now() WHERE name = 'bench'")
    return {"nothing_new_ms_median": round(statistics.median(idle), 1),
            "planned_1000_ms": round(busy, 1), "planned": planned[0] if planned else 0,
            "held_out": held[0] if held else 0}


def start_api(dsn: str) -> tuple[subprocess.Popen[bytes], str]:
    port = localdb.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRECALL_", "TWILIO_"))}
    env.update({"DATABASE_URL": dsn, "PRECALL_JWT_SECRET": JWT_SECRET, "PRECALL_RECEIPT_SECRET": JWT_SECRET, "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
                "PRECALL_TWILIO_STATUS_CALLBACK_URL": CALLBACK_URL, "PRECALL_TWILIO_INBOUND_URL": INBOUND_URL})
    proc = subprocess.Popen([sys.executable, "-m", "precall.cli", "api", "--port", str(port), "--log-level", "warning"],
                            env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("precall api did not start")


def token(user: str) -> str:
    return jwt.encode({"sub": user, "exp": int(time.time()) + 3600}, JWT_SECRET, algorithm="HS256")


def summary(ms: list[float], statuses: list[int]) -> dict[str, object]:
    ordered = sorted(ms)
    return {"requests": len(ms), "median_ms": round(statistics.median(ordered), 2),
            "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1], 2), "max_ms": round(ordered[-1], 2),
            "statuses": {str(s): statuses.count(s) for s in sorted(set(statuses))}}


def sequential(url: str, requests: list[tuple[str, dict[str, str], dict[str, object] | None, dict[str, str] | None]],
               method: str = "POST") -> dict[str, object]:
    ms, statuses = [], []
    with httpx.Client(base_url=url, timeout=30) as http:
        for path, headers, body, form in requests[:20]:  # warm-up: connections and plans
            http.request(method, path, headers=headers, json=body, data=form)
        for path, headers, body, form in requests[20:]:
            t0 = time.perf_counter()
            r = http.request(method, path, headers=headers, json=body, data=form)
            ms.append((time.perf_counter() - t0) * 1000)
            statuses.append(r.status_code)
    return summary(ms, statuses)


def hot_paths(conn: psycopg.Connection, url: str, n: int) -> dict[str, object]:
    validator = RequestValidator(TWILIO_TOKEN)
    sids = [r[0] for r in conn.execute(
        "SELECT provider_id FROM notification_logs WHERE type = 'preview_sms' AND status = 'sent'"
        " ORDER BY created_at DESC LIMIT %s", (n + 20,))]
    twilio = []
    for sid in sids:
        form = {"MessageSid": sid, "MessageStatus": "delivered", "AccountSid": "AC" + "0" * 32}
        twilio.append(("/api/v1/webhooks/twilio/status",
                       {"X-Twilio-Signature": validator.compute_signature(CALLBACK_URL, form)}, None, form))
    pushes = conn.execute(
        "SELECT id::text, user_id::text FROM notification_logs WHERE type = 'preview_push' AND status = 'sent'"
        " ORDER BY created_at DESC LIMIT %s", (n + 20,)).fetchall()
    receipts = [(f"/api/v1/notifications/{nid}/receipt", {"Authorization": f"Bearer {token(user)}"},
                 {"event": "delivered"}, None) for nid, user in pushes]
    registers = [("/api/v1/notifications/register-device", {"Authorization": f"Bearer {token(uid(i))}"},
                  {"fcm_token": f"new-{i:08d}-" + "r" * 40, "platform": "ios", "push_enabled": True}, None)
                 for i in range(1, n + 21)]
    # Previews just sent for calls 15+ minutes ahead (one call per user), acted on: a push by the
    # app (snooze), an SMS by a reply "2" from the user's number.
    sent = conn.execute(
        "WITH picked AS (SELECT DISTINCT ON (c.user_id) c.id, c.user_id FROM scheduled_calls c"
        "                WHERE c.status = 'pending' AND c.scheduled_at > now() + interval '15 minutes'"
        "                ORDER BY c.user_id, c.scheduled_at LIMIT %s)"
        " INSERT INTO notification_logs (user_id, call_id, type, channel, status, send_at, attempted_at, sent_at,"
        "                                planned_for, provider_id)"
        " SELECT p.user_id, p.id, CASE WHEN row_number() OVER () %% 2 = 0 THEN 'preview_push' ELSE 'preview_sms' END,"
        "        CASE WHEN row_number() OVER () %% 2 = 0 THEN 'push' ELSE 'sms' END, 'sent', now(), now(), now(),"
        "        c.scheduled_at, NULL"
        " FROM picked p JOIN scheduled_calls c ON c.id = p.id"
        " RETURNING id::text, user_id::text, channel", (2 * (n + 20),)).fetchall()
    conn.execute("VACUUM ANALYZE notification_logs")
    actions = [(f"/api/v1/notifications/{nid}/action", {"Authorization": f"Bearer {token(user)}"},
                {"action": "snooze"}, None) for nid, user, channel in sent if channel == "push"]
    phones = dict(conn.execute("SELECT id::text, phone_number FROM users WHERE id = ANY(%s::uuid[])",
                               ([user for _, user, channel in sent if channel == "sms"],)).fetchall())
    replies = []
    for i, (_, user, channel) in enumerate(r for r in sent if r[2] == "sms"):
        form = {"MessageSid": f"SM{i:032x}", "From": phones[user], "To": "+15005550006", "Body": "2",
                "AccountSid": "AC" + "0" * 32}
        replies.append(("/api/v1/webhooks/twilio/inbound",
                        {"X-Twilio-Signature": validator.compute_signature(INBOUND_URL, form)}, None, form))
    histories = [("/api/v1/notifications/history?limit=20", {"Authorization": f"Bearer {token(user)}"}, None, None)
                 for _, user, _ in sent]
    out = {"twilio_callback": sequential(url, twilio), "receipt": sequential(url, receipts),
           "register_device": sequential(url, registers), "action_snooze": sequential(url, actions),
           "sms_reply_snooze": sequential(url, replies), "history": sequential(url, histories[: n + 20], "GET")}
    out["actions_applied"] = conn.execute("SELECT count(*) FROM precall.call_actions WHERE outcome = 'applied'").fetchone()[0]  # type: ignore[index]
    return out


async def concurrent_registrations(url: str, n: int) -> dict[str, object]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        async def one(i: int) -> tuple[int, float]:
            t0 = time.perf_counter()
            r = await http.post("/api/v1/notifications/register-device",
                                headers={"Authorization": f"Bearer {token(uid(100_000 + i))}"},
                                json={"fcm_token": f"burst-{i:08d}-" + "b" * 40, "platform": "android",
                                      "push_enabled": True})
            return r.status_code, (time.perf_counter() - t0) * 1000

        results = await asyncio.gather(*(one(i) for i in range(n)))
    statuses = [s for s, _ in results]
    out = summary([ms for _, ms in results], statuses)
    out["5xx"] = sum(1 for s in statuses if s >= 500)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=300_000)
    ap.add_argument("--calls", type=int, default=1_000_000)
    ap.add_argument("--logs", type=int, default=500_000)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--concurrent", type=int, default=400)
    args = ap.parse_args()
    cluster = localdb.throwaway()
    results: dict[str, object] = {"users": args.users, "calls": args.calls, "logs": args.logs,
                                  "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    api = None
    try:
        dsn = harness.migrated_database(cluster, "size")
        with psycopg.connect(dsn, autocommit=True) as conn:
            results["load"] = {k: round(v, 1) for k, v in load(conn, args.users, args.calls, args.logs).items()}
            results["log_rows"] = conn.execute("SELECT count(*) FROM notification_logs").fetchone()[0]  # type: ignore[index]
            print(json.dumps(results), file=sys.stderr)
            results["planning"] = planning(conn)
            results["planning_with_experiment"] = planning(conn, experiment=True)  # the peer: same run, same data
            api, url = start_api(dsn)
            results["api_sequential"] = hot_paths(conn, url, args.requests)
            results["api_concurrent_register_device"] = asyncio.run(concurrent_registrations(url, args.concurrent))
            results["retention"] = retention(conn)
    finally:
        if api is not None:
            api.terminate()
            api.wait(10)
        cluster.destroy()
    text = json.dumps(results, indent=2, default=str)
    print(text)
    (Path(__file__).parent / "results_size.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
