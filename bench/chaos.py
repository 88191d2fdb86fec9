"""Reliability runs, judged at the fake providers: nothing lost, duplicates only where explained.

    .venv/bin/python bench/chaos.py [kill9 pg_restart listener_kill provider_faults three path_c_kill9 ...]

Each scenario gets its own database on one throwaway PostgreSQL 15 with pg_cron, `precall
dispatcher` child processes with the real SDKs pointed at precall/fakes/, and previews whose
send_at are spread over a few tens of seconds (90% push, 10% SMS, 2-minute lead). After the
run, every call must have a preview row in a final state (sent, or failed/skipped/cancelled
with a reason), every row marked sent must have reached a fake, and each call's requests at the
fakes are counted: more than one is a duplicate. JSON to stdout and bench/results_chaos.json.
"""

from __future__ import annotations

import collections
import json
import random
import signal
import subprocess
import sys
import time
from datetime import datetime
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

import harness  # bench/harness.py
from precall.fakes.fake_fcm import FakeFcmServer
from precall.fakes.fake_twilio import FakeTwilioServer
from precall import localdb


@dataclass
class Run:
    name: str
    dsn: str
    env: dict[str, str]
    cluster: localdb.LocalCluster
    fcm: FakeFcmServer
    twilio: FakeTwilioServer
    first_send: float = 0.0
    last_send: float = 0.0
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)
    kill_times: list[float] = field(default_factory=list)

    def start(self) -> subprocess.Popen[bytes]:
        # A known worker name per process: which rows a killed one held is read from lease_owner.
        name = f"chaos-{len(self.procs)}"
        p = subprocess.Popen([sys.executable, "-m", "precall.cli", "dispatcher", "--log-level", "WARNING"],
                             env={**self.env, "PRECALL_WORKER_NAME": name},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        self.names[p.pid] = name
        return p

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs if p.poll() is None]

    def stop_all(self) -> None:
        for p in self.alive():
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def setup(cluster: localdb.LocalCluster, fcm: FakeFcmServer, twilio: FakeTwilioServer, name: str,
          previews: int, spread_s: float, lease_s: int) -> Run:
    dsn = harness.migrated_database(cluster, name)
    env = harness.dispatcher_env(dsn, fcm, twilio, PRECALL_POLL_INTERVAL_S="2")
    with psycopg.connect(dsn, autocommit=True) as conn:
        # A short lease so a killed dispatcher's rows are taken over well before their calls.
        conn.execute("UPDATE precall.settings SET lease = make_interval(secs => %s)", (lease_s,))
        conn.execute(
            "INSERT INTO users (fcm_token, push_enabled, phone_number, notification_lead_min, notification_pref)"
            " SELECT 'tok-' || g, true, '+1555' || lpad(g::text, 7, '0'), 2,"
            "        CASE WHEN g %% 10 = 0 THEN 'sms_only' ELSE 'push_only' END FROM generate_series(1, %s) g",
            (previews,))
    return Run(name, dsn, env, cluster, fcm, twilio)


def schedule(run: Run, spread_s: float) -> None:
    with psycopg.connect(run.dsn, autocommit=True) as conn:
        # send_at = call - 2 min, spread over [now + 5 s, now + 5 s + spread].
        conn.execute("INSERT INTO scheduled_calls (user_id, scheduled_at, topic)"
                     " SELECT id, now() + interval '125 seconds' + random() * make_interval(secs => %s), 'mood_check'"
                     " FROM users", (spread_s,))
        row = conn.execute("SELECT extract(epoch FROM min(send_at)), extract(epoch FROM max(send_at))"
                           " FROM notification_logs").fetchone()
    assert row is not None
    run.first_send, run.last_send = float(row[0]), float(row[1])


def wait_final(run: Run, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(run.dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT count(*) FROM notification_logs WHERE status IN ('queued', 'sending')").fetchone()
            if row and row[0] == 0 and time.time() > run.last_send:
                return
            time.sleep(0.5)


def judge(run: Run, windows: list[tuple[float, float]] | None = None) -> dict[str, object]:
    with psycopg.connect(run.dsn, autocommit=True) as conn:
        calls = conn.execute("SELECT c.id::text, u.phone_number, c.scheduled_at FROM scheduled_calls c"
                             " JOIN users u ON u.id = c.user_id").fetchall()
        logs = conn.execute(
            "SELECT call_id::text, type, status, coalesce(split_part(reason, ':', 1), ''),"
            " extract(epoch FROM send_at), extract(epoch FROM attempted_at - send_at) * 1000,"
            " extract(epoch FROM sent_at) FROM notification_logs").fetchall()
    by_call: dict[str, list[tuple]] = collections.defaultdict(list)
    for r in logs:
        by_call[r[0]].append(r)
    phone_to_call = {p: c for c, p, _ in calls}
    requests: collections.Counter[str] = collections.Counter()
    first_arrival: dict[str, float] = {}
    for call_id, at in [(r.message["data"]["call_id"], r.received_at) for r in run.fcm.state.accepted()] + \
            [(phone_to_call.get(r.form.get("To", ""), "?"), r.received_at) for r in run.twilio.state.accepted()]:
        requests[call_id] += 1
        first_arrival[call_id] = min(at, first_arrival.get(call_id, at))
    statuses: collections.Counter[str] = collections.Counter()
    lost, unexplained, duplicates, unexplained_duplicates = [], [], 0, 0
    for call_id, _, _ in calls:
        rows = by_call.get(call_id, [])
        final = [r for r in rows if r[2] not in ("queued", "sending")]
        if not rows or len(final) < len(rows):
            lost.append(call_id)
            continue
        sent = [r for r in rows if r[2] == "sent"]
        for r in rows:
            statuses[f"{r[2]}{':' + r[3] if r[3] and r[2] != 'sent' else ''}"] += 1
        if sent and requests[call_id] == 0:
            lost.append(call_id)  # marked sent, never reached a provider
        if not sent and requests[call_id] > 0:
            unexplained.append(call_id)  # reached a provider, recorded as not sent
        duplicates += max(0, requests[call_id] - 1)
        # A duplicate is explained by a kill less than 5 s after the first request arrived, before
        # the row was recorded as sent: the provider round trip window.
        if requests[call_id] > 1 and not any(
                first_arrival[call_id] <= k < first_arrival[call_id] + 5 and float(sent[0][6] or 0) > k
                for k in run.kill_times if sent):
            unexplained_duplicates += requests[call_id] - 1
    result: dict[str, object] = {
        "calls": len(calls), "statuses": dict(statuses.most_common()), "lost": len(lost),
        "reached_provider_but_not_marked_sent": len(unexplained), "duplicate_requests": duplicates,
        "unexplained_duplicates": unexplained_duplicates if run.kill_times else None,
        "fcm_requests": len(run.fcm.state.sent), "twilio_requests": len(run.twilio.state.sent),
        "events": run.events[:40],
    }
    late = [float(r[5]) for r in logs if r[2] == "sent" and r[5] is not None
            and not any(a - 1 <= float(r[4]) <= b + 6 for a, b in (windows or []))]
    if late:
        late.sort()
        result["lateness_ms_outside_fault_windows"] = {
            "n": len(late), "p50": round(late[len(late) // 2], 1), "p99": round(late[int(len(late) * 0.99)], 1),
            "max": round(late[-1], 1)}
    return result


# --- scenarios ------------------------------------------------------------------------------------

def kill9(run: Run) -> dict[str, object]:
    """Two dispatchers; every 1-4 s one is SIGKILLed at a random moment and replaced at once."""
    for _ in range(2):
        run.start()
    time.sleep(3)
    schedule(run, 60)
    rng = random.Random(7)
    while time.time() < run.last_send + 2:
        time.sleep(rng.uniform(1, 4))
        victim = rng.choice(run.alive())
        victim.kill()
        run.kill_times.append(time.time())
        victim.wait()
        run.events.append(f"{time.time() - run.first_send:6.1f}s kill -9 pid {victim.pid}")
        run.start()
    wait_final(run, 180)
    return judge(run)


def pg_restart(run: Run) -> dict[str, object]:
    for _ in range(2):
        run.start()
    time.sleep(3)
    schedule(run, 30)
    time.sleep(max(0.0, run.first_send + 10 - time.time()))
    t0 = time.time()
    run.cluster.restart()
    run.events.append(f"PostgreSQL restarted in {time.time() - t0:.1f}s, {t0 - run.first_send:.1f}s into the run")
    wait_final(run, 180)
    return judge(run)


def listener_kill(run: Run) -> dict[str, object]:
    for _ in range(2):
        run.start()
    time.sleep(3)
    schedule(run, 30)
    with psycopg.connect(run.dsn, autocommit=True) as conn:
        while time.time() < run.last_send:
            time.sleep(5)
            n = conn.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                             " WHERE application_name = 'precall-listener'").fetchone()
            run.events.append(f"{time.time() - run.first_send:5.1f}s terminated {n[0] if n else 0} listener(s)")
    wait_final(run, 180)
    return judge(run)


def provider_faults(run: Run) -> dict[str, object]:
    """FCM answers 503, then 500, then 429 for 4 s each, then takes 2 s per answer, then never answers
    (30 s, beyond the 5 s timeout); previews due outside those windows must still leave on time."""
    run.start()
    time.sleep(3)
    schedule(run, 45)
    plan: list[tuple[float, float, Callable[[], None]]] = [
        (5, 9, lambda: setattr(run.fcm.state, "fault_status", 503)),
        (14, 18, lambda: setattr(run.fcm.state, "fault_status", 500)),
        (23, 27, lambda: setattr(run.fcm.state, "fault_status", 429)),
        (31, 34, lambda: setattr(run.fcm.state, "fault_delay_s", 2.0)),
        (38, 41, lambda: setattr(run.fcm.state, "fault_delay_s", 30.0)),
    ]
    windows = []
    for start, end, on in plan:
        time.sleep(max(0.0, run.first_send + start - time.time()))
        on()
        time.sleep(max(0.0, run.first_send + end - time.time()))
        run.fcm.state.fault_status, run.fcm.state.fault_delay_s = None, 0.0
        windows.append((run.first_send + start, run.first_send + end))
        run.events.append(f"fault {start}-{end}s")
    wait_final(run, 240)
    result = judge(run, windows)
    # Judged at the fake, every attempt by its arrival: a retry that reached FCM after the call
    # shows here (notification_logs.attempted_at is the first attempt's only).
    result["attempts_after_the_call"] = sum(
        1 for r in run.fcm.state.arrived()
        if r.at > datetime.fromisoformat(r.message["data"]["deadline"].replace("Z", "+00:00")).timestamp())
    return result


def three(run: Run) -> dict[str, object]:
    for _ in range(3):
        run.start()
    time.sleep(3)
    schedule(run, 20)
    wait_final(run, 180)
    return judge(run)


def path_c_kill9(run: Run) -> dict[str, object]:
    """Every user push_and_sms and no receipt: each call must end with one push and exactly one SMS
    (the fallback, 30 s later) or an explicit failed/skipped row. Two dispatchers; every 1-4 s one is
    SIGKILLed and replaced at once, through the push phase and the fallback phase. The lease is the
    default 60 s: what a killed process held is taken over because its session ended."""
    with psycopg.connect(run.dsn, autocommit=True) as conn:
        conn.execute("UPDATE precall.settings SET lease = '60 seconds'")
        conn.execute("UPDATE users SET notification_pref = 'push_and_sms'")
    # Providers' usual answer times, so that kills find sends in flight.
    run.fcm.state.latency_s, run.twilio.state.latency_s = 0.05, 0.2
    for _ in range(2):
        run.start()
    time.sleep(3)
    schedule(run, 60)
    rng = random.Random(11)
    kills: list[tuple[float, set[str]]] = []  # (when, ids the victim held)
    held_sql = "SELECT id::text FROM notification_logs WHERE status = 'sending' AND lease_owner = %s"
    with psycopg.connect(run.dsn, autocommit=True) as conn:
        while time.time() < run.last_send + 35:  # the fallbacks leave 30 s after their pushes
            time.sleep(rng.uniform(1, 4))
            victim = rng.choice(run.alive())
            name = run.names[victim.pid]
            before = {r[0] for r in conn.execute(held_sql, (name,)).fetchall()}
            victim.kill()
            at = time.time()
            victim.wait()
            after = {r[0] for r in conn.execute(held_sql, (name,)).fetchall()}
            kills.append((at, before | after))
            run.events.append(f"{at - run.first_send:6.1f}s kill -9 {name}: held {len(before | after)}")
            run.start()
    wait_final(run, 240)
    return judge_path_c(run, kills)


def judge_path_c(run: Run, kills: list[tuple[float, set[str]]]) -> dict[str, object]:
    with psycopg.connect(run.dsn, autocommit=True) as conn:
        calls = conn.execute("SELECT c.id::text, u.phone_number FROM scheduled_calls c"
                             " JOIN users u ON u.id = c.user_id").fetchall()
        logs = conn.execute(
            "SELECT id::text, call_id::text, type, status, coalesce(split_part(reason, ':', 1), ''),"
            " extract(epoch FROM attempted_at), extract(epoch FROM sent_at) FROM notification_logs").fetchall()
    phone_to_call = {p: c for c, p in calls}
    # Requests the fakes accepted, per call and kind, with when they arrived.
    accepted: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    for r in run.fcm.state.accepted():
        accepted[(r.message["data"]["call_id"], "push")].append(r.received_at)
    for r in run.twilio.state.accepted():
        accepted[(phone_to_call.get(r.form.get("To", ""), "?"), "sms")].append(r.received_at)
    rows_by_call: dict[str, list[tuple]] = collections.defaultdict(list)
    for r in logs:
        rows_by_call[r[1]].append(r)
    statuses: collections.Counter[str] = collections.Counter()
    lost, not_one_sms = [], []
    for call_id, _ in calls:
        rows = rows_by_call.get(call_id, [])
        for r in rows:
            statuses[f"{r[2]}:{r[3]}{':' + r[4] if r[4] and r[3] not in ('sent', 'delivered') else ''}"] += 1
        if not rows or any(r[3] in ("queued", "sending") for r in rows):
            lost.append(call_id)
            continue
        sms = len(accepted.get((call_id, "sms"), []))
        explicit = any(r[3] in ("failed", "skipped") and r[2] in ("fallback_sms", "preview_sms") for r in rows)
        if sms != 1 and not (sms == 0 and explicit):
            not_one_sms.append((call_id, sms))
        if any(r[3] == "sent" for r in rows) and not any(k[0] == call_id for k in accepted):
            lost.append(call_id)
    # Duplicates: a second request for one call and kind. Each must be a message the fake had
    # accepted (arrived) before a kill, within one provider round trip of it (5 s at most), whose
    # row was recorded as sent only after that kill (by the process that took it over).
    kill_times = [at for at, _ in kills]
    sent_at = {(r[1], "push" if r[2] == "preview_push" else "sms"): r[6] for r in logs if r[6] is not None}
    duplicates = {key: len(v) - 1 for key, v in accepted.items() if len(v) > 1}
    unexplained = [key for key in duplicates
                   if not any(min(accepted[key]) <= k < min(accepted[key]) + 5 and float(sent_at.get(key) or 0) > k
                              for k in kill_times)]
    # The sends in flight at the kills: rows the victim held whose request had reached the fake.
    row_key = {r[0]: (r[1], "push" if r[2] == "preview_push" else "sms") for r in logs}
    in_flight_at_kills = sum(1 for at, held in kills for nid in held
                             if nid in row_key and any(t <= at for t in accepted.get(row_key[nid], [])))
    # Recovery: a row the victim held, attempted again after the kill, how long after.
    attempted = {r[0]: r[5] for r in logs}
    delays = sorted(float(attempted[nid]) - at for at, held in kills for nid in held
                    if attempted.get(nid) is not None and float(attempted[nid]) > at)
    return {
        "calls": len(calls), "kills": len(kills), "statuses": dict(statuses.most_common()),
        "lost": len(lost), "calls_without_exactly_one_sms_or_an_explicit_row": len(not_one_sms),
        "duplicate_requests": sum(duplicates.values()), "in_flight_at_kills": in_flight_at_kills,
        "unexplained_duplicates": len(unexplained), "unexplained": [f"{c}/{k}" for c, k in unexplained][:10],
        "recovered_rows": len(delays),
        "recovery_s": {"p50": round(delays[len(delays) // 2], 2), "p99": round(delays[int(len(delays) * 0.99)], 2),
                       "max": round(delays[-1], 2)} if delays else None,
        "fcm_requests": len(run.fcm.state.sent), "twilio_requests": len(run.twilio.state.sent),
        "events": run.events[:40],
    }


SCENARIOS = {"kill9": (kill9, 5000, 10), "pg_restart": (pg_restart, 2000, 10),
             "listener_kill": (listener_kill, 2000, 10), "provider_faults": (provider_faults, 2000, 10),
             "three": (three, 5000, 60), "path_c_kill9": (path_c_kill9, 800, 60)}


def main() -> None:
    names = sys.argv[1:] or list(SCENARIOS)
    cluster = localdb.throwaway()
    results: dict[str, object] = {}
    try:
        for name in names:
            scenario, previews, lease = SCENARIOS[name]
            fcm, twilio = FakeFcmServer().start(), FakeTwilioServer().start()
            run = setup(cluster, fcm, twilio, name, previews, 0, lease)
            print(f"{name}: {previews} previews …", file=sys.stderr)
            t0 = time.monotonic()
            try:
                results[name] = {"previews": previews, "lease_s": lease, **scenario(run),
                                 "wall_s": round(time.monotonic() - t0, 1)}
            finally:
                run.stop_all()
                fcm.shutdown()
                twilio.shutdown()
            print(json.dumps(results[name]), file=sys.stderr)
    finally:
        cluster.destroy()
    text = json.dumps(results, indent=2)
    print(text)
    out = Path(__file__).parent / "results_chaos.json"
    previous = json.loads(out.read_text()) if out.exists() else {}
    out.write_text(json.dumps({**previous, **results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
