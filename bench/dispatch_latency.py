"""Benchmarks: how late previews leave, how fast a burst drains, what planning costs.

Runs on a throwaway local PostgreSQL with pg_cron, `precall dispatcher` as a child process with
the real firebase-admin / twilio SDKs pointed at the local fakes (precall/fakes/).

    .venv/bin/python bench/dispatch_latency.py [--spread 200] [--burst 2000] [--plan-calls 1000000]

Prints a JSON summary (also written to bench/results.json).
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg

import harness  # bench/harness.py
from precall.fakes.fake_fcm import FakeFcmServer
from precall.fakes.fake_twilio import FakeTwilioServer
from precall import localdb


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def summary(ms: list[float]) -> dict[str, float]:
    return {"n": len(ms), "p50_ms": round(pct(ms, 50), 2), "p90_ms": round(pct(ms, 90), 2),
            "p99_ms": round(pct(ms, 99), 2), "max_ms": round(max(ms), 2), "mean_ms": round(statistics.mean(ms), 2)}


def start_dispatcher(env: dict[str, str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "precall.cli", "dispatcher", "--log-level", "WARNING"], env=env,
                            stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL, text=True)
    time.sleep(2.5)
    return proc


def wait_drained(conn: psycopg.Connection, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute("SELECT count(*) FROM notification_logs WHERE status IN ('queued', 'sending')").fetchone()
        if row and row[0] == 0:
            return
        time.sleep(0.2)
    raise RuntimeError("previews still queued")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spread", type=int, default=200, help="previews spread over ~20 s (lateness)")
    ap.add_argument("--burst", type=int, default=2000, help="previews due at the same instant (throughput)")
    ap.add_argument("--plan-calls", type=int, default=1_000_000, help="calls in the table for the planning cost")
    args = ap.parse_args()

    cluster = localdb.throwaway()
    fcm, twilio = FakeFcmServer().start(), FakeTwilioServer().start()
    results: dict[str, object] = {}
    try:
        dsn = harness.migrated_database(cluster, "bench")
        env = harness.dispatcher_env(dsn, fcm, twilio)
        conn = psycopg.connect(dsn, autocommit=True)

        # 1. Lateness: previews spread over ~20 s, 10% SMS.
        proc = start_dispatcher(env)
        conn.execute(
            "INSERT INTO users (fcm_token, push_enabled, phone_number, notification_lead_min, notification_pref)"
            " SELECT 'tok-' || g, true, '+1555' || lpad(g::text, 7, '0'), 1,"
            "        CASE WHEN g %% 10 = 0 THEN 'sms_only' ELSE 'push_only' END FROM generate_series(1, %s) g",
            (args.spread,))
        conn.execute("INSERT INTO scheduled_calls (user_id, scheduled_at, topic)"
                     " SELECT id, now() + interval '65 seconds' + random() * interval '20 seconds', 'mood_check' FROM users")
        wait_drained(conn, 120)
        at_provider = {r.message["data"]["notification_id"]: r.at for r in fcm.state.accepted()}
        rows = conn.execute("SELECT id::text, extract(epoch FROM send_at), extract(epoch FROM attempted_at - send_at) * 1000"
                            " FROM notification_logs WHERE status = 'sent'").fetchall()
        results["lateness_attempted_vs_send_at"] = summary([float(r[2]) for r in rows])
        results["lateness_push_at_fake_fcm_vs_send_at"] = summary(
            [(at_provider[i] - float(s)) * 1000 for i, s, _ in rows if i in at_provider])

        # 2. Burst: N previews due at the same instant, two dispatchers.
        proc2 = start_dispatcher(env)
        conn.execute("TRUNCATE notification_logs, scheduled_calls, users, precall.call_jobs CASCADE")
        fcm.state.sent.clear()
        conn.execute(
            "INSERT INTO users (fcm_token, push_enabled, notification_lead_min)"
            " SELECT 'tok-b' || g, true, 1 FROM generate_series(1, %s) g", (args.burst,))
        conn.execute("INSERT INTO scheduled_calls (user_id, scheduled_at, topic)"
                     " SELECT id, date_trunc('second', now()) + interval '64 seconds', 'mood_check' FROM users")
        wait_drained(conn, 300)
        row = conn.execute("SELECT count(*), extract(epoch FROM max(sent_at) - min(send_at)),"
                           " percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM attempted_at - send_at))"
                           " FROM notification_logs WHERE status = 'sent'").fetchone()
        assert row is not None
        results["burst_two_dispatchers"] = {"previews": row[0], "drain_s": round(float(row[1]), 2),
                                            "previews_per_s": round(row[0] / float(row[1]), 1),
                                            "median_lateness_ms": round(float(row[2]) * 1000, 1),
                                            "sends_at_fake": len(fcm.state.accepted())}
        for p in (proc, proc2):
            p.send_signal(signal.SIGTERM)
            p.wait(30)

        # 3. Planning cost with a big table: one minute's run, EXPLAIN ANALYZE.
        conn.execute("TRUNCATE notification_logs, scheduled_calls, users, precall.call_jobs CASCADE")
        conn.execute("ALTER TABLE scheduled_calls DISABLE TRIGGER _500_plan_previews")
        conn.execute("INSERT INTO users (notification_lead_min) SELECT 5 FROM generate_series(1, 100000)")
        conn.execute(
            "INSERT INTO scheduled_calls (user_id, scheduled_at, status, topic)"
            " SELECT u.ids[1 + g %% 100000], now() - interval '15 days' + g * (interval '30 days' / %s),"
            "        CASE WHEN g < %s / 2 THEN 'answered' ELSE 'pending' END, 'mood_check'"
            " FROM generate_series(1, %s) g, (SELECT array_agg(id) AS ids FROM users) u",
            (args.plan_calls, args.plan_calls, args.plan_calls))
        conn.execute("ALTER TABLE scheduled_calls ENABLE TRIGGER _500_plan_previews")
        conn.execute("VACUUM ANALYZE")
        timings = []
        for _ in range(5):
            conn.execute("DELETE FROM notification_logs")
            t0 = time.perf_counter()
            planned = conn.execute("SELECT precall.plan_due_previews()").fetchone()
            timings.append((time.perf_counter() - t0) * 1000)
        results["planning"] = {"calls_in_table": args.plan_calls, "previews_planned_per_run": planned[0] if planned else 0,
                               "run_ms_median": round(statistics.median(timings), 1)}
        conn.close()
    finally:
        fcm.shutdown()
        twilio.shutdown()
        cluster.destroy()
    text = json.dumps(results, indent=2)
    print(text)
    (Path(__file__).parent / "results.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
