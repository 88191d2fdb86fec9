"""Planning cost: one precall.plan_due_previews() run as the calls table grows from 1M to 10M rows.

    .venv/bin/python bench/planning_cost.py [--users 1000000] [--sizes 1000000,10000000] [--due 1000,10000]

A throwaway PostgreSQL 15 (with pg_cron) gets 1M users and calls spread evenly over 30 days
(past ones answered, future ones pending, the way a live table looks). For each table size and
each D in --due, the calls already in one planning window 10 days out are planned (as the previous
minute's run would have), D extra calls are put in that window, and the run that plans them is
timed (median of 5, each rolled back so the next one plans the same rows); so is a run with
nothing new to plan. The
plan of the window query is printed and checked for sequential scans. JSON goes to stdout and
bench/results_planning.json.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

import psycopg

import harness  # bench/harness.py
from precall import localdb

WINDOW_AT = "date_trunc('minute', now()) + interval '10 days'"  # inside the data: ~14k calls per 62 min at 10M


def grow_calls(conn: psycopg.Connection, users: int, start: int, end: int) -> float:
    """Calls start+1..end, spread evenly over now-15 days .. now+15 days, random users."""
    t0 = time.perf_counter()
    step = 1_000_000
    for lo in range(start, end, step):
        hi = min(end, lo + step)
        conn.execute(
            "INSERT INTO scheduled_calls (user_id, scheduled_at, status, topic)"
            " SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(1 + (g::bigint * 7919) %% %(users)s), 12, '0'))::uuid,"
            "        t, CASE WHEN t < now() THEN 'answered' ELSE 'pending' END, 'fitness_checkin'"
            " FROM generate_series(%(lo)s + 1, %(hi)s) g,"
            "      LATERAL (SELECT now() - interval '15 days' + (g %% 2592000) * interval '1 second'"
            "                      + (g / 2592000) * interval '1 millisecond' AS t) x",
            {"users": users, "lo": lo, "hi": hi})
        print(f"  calls: {hi:,}", file=sys.stderr)
    return time.perf_counter() - t0


def time_planning(conn: psycopg.Connection, due: int) -> dict[str, object]:
    # The window's own calls are planned first, as the previous minute's run would have done in
    # production; then D new pending calls whose previews (lead 5 min) fall in the window are
    # added and the run that plans them is timed.
    background = conn.execute(f"SELECT precall.plan_due_previews({WINDOW_AT})").fetchone()
    idle = []
    for _ in range(5):  # a run with nothing new to plan: what pg_cron pays every quiet minute
        t0 = time.perf_counter()
        conn.execute(f"SELECT precall.plan_due_previews({WINDOW_AT})")
        idle.append((time.perf_counter() - t0) * 1000)
    timings, planned = [], 0
    for _ in range(5):
        with conn.transaction(force_rollback=True):
            conn.execute(
                "INSERT INTO scheduled_calls (user_id, scheduled_at, topic)"
                f" SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(1 + g), 12, '0'))::uuid,"
                f"        {WINDOW_AT} + interval '5 minutes' + (g %% 60) * interval '1 second', 'mood_check'"
                " FROM generate_series(1, %s) g", (due,))
            t0 = time.perf_counter()
            row = conn.execute(f"SELECT precall.plan_due_previews({WINDOW_AT})").fetchone()
            timings.append((time.perf_counter() - t0) * 1000)
            planned = int(row[0]) if row else 0
    return {"due_inserted": due, "planned_per_run": planned, "run_ms_median": round(statistics.median(timings), 1),
            "run_ms_min": round(min(timings), 1), "run_ms_max": round(max(timings), 1),
            "us_per_planned_row": round(statistics.median(timings) * 1000 / max(1, planned), 1),
            "window_background_planned_before": int(background[0]) if background else 0,
            "run_ms_nothing_new": round(statistics.median(idle), 1)}


def explain(conn: psycopg.Connection) -> list[str]:
    # As plan_calls runs it: the lookahead and the largest lead in use passed as values.
    rows = conn.execute(f"EXPLAIN SELECT * FROM precall.calls_in_window({WINDOW_AT}, interval '2 minutes', 5)").fetchall()
    return [r[0] for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--due", default="1000,10000")
    ap.add_argument("--shared-buffers", default=None, help="e.g. 2GB (PostgreSQL's default is 128MB)")
    ap.add_argument("--auto-explain", action="store_true",
                    help="log each planning statement's EXPLAIN ANALYZE (auto_explain) and print the slowest")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    dues = [int(d) for d in args.due.split(",")]

    cluster = localdb.throwaway()
    results: dict[str, object] = {"users": args.users, "runs": [], "shared_buffers": args.shared_buffers or "128MB"}
    try:
        if args.shared_buffers:
            with psycopg.connect(cluster.admin_dsn, autocommit=True) as c:
                c.execute(f"ALTER SYSTEM SET shared_buffers = '{args.shared_buffers}'")
            cluster.restart()
        if args.auto_explain:
            with psycopg.connect(cluster.admin_dsn, autocommit=True) as c:
                c.execute("LOAD 'auto_explain'")  # ALTER SYSTEM accepts its settings only once loaded
                for setting, value in (("session_preload_libraries", "auto_explain"),
                                       ("auto_explain.log_min_duration", "50ms"), ("auto_explain.log_analyze", "on"),
                                       ("auto_explain.log_buffers", "on"), ("auto_explain.log_nested_statements", "on")):
                    c.execute(f"ALTER SYSTEM SET {setting} = '{value}'")
                c.execute("SELECT pg_reload_conf()")
        dsn = harness.migrated_database(cluster, "bench")
        with psycopg.connect(dsn, autocommit=True) as conn:
            # Bulk loads bypass the insert trigger (it would plan the few calls in today's window).
            conn.execute("ALTER TABLE scheduled_calls DISABLE TRIGGER _500_plan_previews")
            conn.execute(
                "INSERT INTO users (id, fcm_token, push_enabled, notification_lead_min)"
                " SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(g), 12, '0'))::uuid, 'tok-' || g, true, 5"
                " FROM generate_series(1, %s) g", (args.users,))
            loaded = 0
            for size in sizes:
                load_s = grow_calls(conn, args.users, loaded, size)
                loaded = size
                conn.execute("VACUUM ANALYZE scheduled_calls")
                conn.execute("VACUUM ANALYZE users")
                plan = explain(conn)
                run = {"calls_in_table": size, "load_s": round(load_s, 1),
                       "seq_scans": [line.strip() for line in plan if "Seq Scan" in line and "settings" not in line],
                       "plan": plan, "by_due": [time_planning(conn, d) for d in dues]}
                results["runs"].append(run)  # type: ignore[union-attr]
                print(json.dumps(run["by_due"]), file=sys.stderr)
            conn.execute("ALTER TABLE scheduled_calls ENABLE TRIGGER _500_plan_previews")
        if args.auto_explain:
            log = (cluster.datadir / "server.log").read_text(errors="replace")
            log = re.sub(r"\{[0-9a-f,-]{100,}\}", "{…ids…}", log)  # the 10k-id arrays in the query texts
            results["auto_explain_tail"] = log[-12000:]
    finally:
        cluster.destroy()
    text = json.dumps(results, indent=2, default=str)
    print(text)
    (Path(__file__).parent / "results_planning.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
