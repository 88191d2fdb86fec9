"""Dispatch throughput: N previews due at the same instant, end to end through the real SDKs.

    .venv/bin/python bench/throughput.py [--previews 50000] [--dispatchers 2] [--sms-share 0.1]
        [--fcm-latency 0.05] [--twilio-latency 0.2] [--profile] [--runs direct,sdk,pgqueuer]
        [--capacity RATE --max-early S]

--runs: one after the other in this invocation, each on a fresh database of the same cluster,
against the same fakes: `direct` and `sdk` are precall with PRECALL_FCM_TRANSPORT set so, and
`pgqueuer` is the peer (bench/peer_pgqueuer.py: PgQueuer, one process, its documented settings,
the same push + status UPDATE job). Ratios against the peer are printed when it ran.
Without --capacity, precall.settings.push_capacity_per_s is set out of reach so that every
preview stays due at one instant (raw throughput); with it (and --max-early), planning smooths
the burst to that rate and the result reports the spread, and each arrival at the fake against
its planned_send_at (T - lead) and against the max_early floor.
BENCH_DISPATCHER_LOG=FILE keeps the dispatchers' stderr (warnings and errors) in FILE.

A throwaway PostgreSQL 15 with pg_cron; `precall dispatcher` child processes with firebase-admin
and twilio pointed at the local fakes (precall/fakes/), which answer after the given latency. Every
preview's send_at is the same second. Reported: previews/s from the first send_at to the last
write-back, the sends each fake received (duplicates counted), CPU seconds per process group
(dispatchers, PostgreSQL, the fakes in this process), peak RSS per dispatcher, and with --profile
a py-spy sample of one dispatcher split into SDK, database and the rest, and PostgreSQL's top
statements (pg_stat_statements). JSON to stdout and bench/results_throughput.json (--out).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

import harness  # bench/harness.py
from precall.fakes.fake_fcm import FakeFcmServer
from precall.fakes.fake_twilio import FakeTwilioServer
from precall import localdb

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its reaped children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / TICK


def children(ppid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == ppid:
                    out.append(int(entry.name))
            except (OSError, ValueError):
                pass
    return out


def postgres_cpu(postmaster: int) -> float:
    # Backends come and go; the postmaster's reaped-children counters keep the ones that ended.
    return cpu_seconds(postmaster) + sum(cpu_seconds(p) for p in children(postmaster))


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def classify(stack: str) -> str:
    if any(m in stack for m in ("firebase_admin", "google/auth", "twilio/", "aiohttp", "httpx", "httpcore", "h11", "ssl.py")):
        return "sdk_and_http"
    if "psycopg" in stack:
        return "database_client"
    if "asyncio" in stack.split(";")[-1] or "selectors" in stack or "base_events.py" in stack.split(";")[-1]:
        return "event_loop"
    return "precall_and_rest"


def profile(pid: int, seconds: int) -> dict[str, object]:
    out = Path(tempfile.mkdtemp()) / "spy.txt"
    subprocess.run([str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(pid), "-d", str(seconds), "-r", "200", "--format", "raw", "-o", str(out),
                    "--nonblocking"], capture_output=True, timeout=seconds + 30)
    counts: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()  # precall's own functions, time under them
    by_module: collections.Counter[str] = collections.Counter()  # the module of the innermost Python frame
    idle = 0
    for line in out.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if "select (selectors.py" in stack.split(";")[-1] or "epoll" in stack.split(";")[-1]:
            idle += int(n)
            continue
        counts[classify(stack)] += int(n)
        leaf = stack.split(";")[-1]
        by_module[leaf.split("(")[-1].split(":")[0].replace(str(Path(sys.executable).parent.parent), "")] += int(n)
        seen = set()
        for frame in stack.split(";"):
            if "site-packages" in frame and "/precall/" not in frame:
                continue
            if any(f"{d}/" in frame for d in ("dispatcher", "templates", "precall", "providers")):
                name = frame.split(" (")[0] + " " + frame.split("/")[-1].split(":")[0]
                if name not in seen:
                    seen.add(name)
                    inclusive[name] += int(n)
    busy = sum(counts.values())
    shares: dict[str, object] = {k: round(v / busy, 3) for k, v in counts.most_common()}
    shares["idle_share_of_samples"] = round(idle / max(1, busy + idle), 3)
    shares["precall_functions_inclusive"] = {k: round(v / busy, 3) for k, v in inclusive.most_common(15)}
    shares["innermost_modules"] = {k: round(v / busy, 3) for k, v in by_module.most_common(15)}
    return shares  # type: ignore[return-value]


def precall_run(args: argparse.Namespace, cluster: localdb.LocalCluster, fcm: FakeFcmServer,
                twilio: FakeTwilioServer, postmaster: int, transport: str) -> dict[str, object]:
    result: dict[str, object] = {"previews": args.previews, "dispatchers": args.dispatchers, "transport": transport,
                                 "fcm_latency_s": args.fcm_latency, "twilio_latency_s": args.twilio_latency}
    procs: list[subprocess.Popen[bytes]] = []
    dbname = f"bench_{transport}"
    log = open(os.environ.get("BENCH_DISPATCHER_LOG", os.devnull), "ab")  # closed after the dispatchers stop
    try:
        dsn = harness.migrated_database(cluster, dbname)
        env = harness.dispatcher_env(dsn, fcm, twilio, PRECALL_FCM_TRANSPORT=transport)
        if args.in_flight:
            env["PRECALL_MAX_IN_FLIGHT"] = str(args.in_flight)
        conn = psycopg.connect(dsn, autocommit=True)
        # Raw throughput: every preview due at one instant (no smoothing). With --capacity: the
        # burst is laid out at that rate, up to --max-early earlier.
        conn.execute("UPDATE precall.settings SET push_capacity_per_s = %s, sms_capacity_per_s = %s,"
                     " max_early = make_interval(secs => %s)",
                     (args.capacity or 1e6, args.capacity or 1e6, args.max_early))
        result["push_capacity_per_s"], result["max_early_s"] = args.capacity, args.max_early
        sms_every = round(1 / args.sms_share) if args.sms_share else 0
        conn.execute(
            "INSERT INTO users (fcm_token, push_enabled, phone_number, notification_lead_min, notification_pref)"
            " SELECT 'tok-' || g, true, '+1555' || lpad(g::text, 7, '0'), 10,"
            "        CASE WHEN %(every)s > 0 AND g %% %(every)s = 0 THEN 'sms_only' ELSE 'push_only' END"
            " FROM generate_series(1, %(n)s) g", {"n": args.previews, "every": sms_every})
        for _ in range(args.dispatchers):
            procs.append(subprocess.Popen([sys.executable, "-m", "precall.cli", "dispatcher", "--log-level", "WARNING"],
                                          env=env, stdout=subprocess.DEVNULL,
                                          stderr=log))
        time.sleep(3)
        # Calls at T+615 s with a 10-minute lead: every preview is due at the same second, ~15 s
        # from now, and none is near its call's cut-off however long the drain takes.
        # With --spread-s, planning (pg_cron's job, run here by hand each minute) plans them as their
        # window opens, as in production.
        # With --capacity the calls are further out by max_early: the laid-out burst starts ~15 s from now.
        ahead = 615 + (args.max_early if args.capacity else 0)
        conn.execute("INSERT INTO scheduled_calls (user_id, scheduled_at, topic)"
                     " SELECT id, date_trunc('second', now()) + make_interval(secs => %s)"
                     "        + random() * make_interval(secs => %s), 'mood_check' FROM users", (ahead, args.spread_s))
        due = conn.execute("SELECT min(send_at), count(*) FROM notification_logs WHERE status = 'queued'").fetchone()
        assert due is not None and (args.spread_s or due[1] == args.previews), due
        wait = (due[0].timestamp() - time.time())
        time.sleep(max(0.0, wait - 1))
        cpu0 = {"dispatchers": sum(cpu_seconds(p.pid) for p in procs), "postgres": postgres_cpu(postmaster),
                "fakes_and_bench": resource.getrusage(resource.RUSAGE_SELF).ru_utime
                + resource.getrusage(resource.RUSAGE_SELF).ru_stime}
        spy: dict[str, object] | None = None
        if args.profile:
            time.sleep(4)
            spy = profile(procs[0].pid, 15)
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute("SELECT pg_stat_statements_reset()")
        xact0 = conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (dbname,)).fetchone()[0]  # type: ignore[index]
        t_start = time.monotonic()
        deadline = time.monotonic() + 1800 + args.spread_s
        next_plan = time.monotonic() + 60
        while time.monotonic() < deadline:
            if time.monotonic() >= next_plan:  # what the pg_cron job does every minute
                conn.execute("SELECT precall.plan_due_previews()")
                next_plan += 60
            # Cheap while sending (the active rows' partial index); the full count only at the end,
            # when calls not yet planned (spread mode) may still be to come. These benches make one
            # preview row per call.
            left = conn.execute("SELECT count(*) FROM notification_logs WHERE status IN ('queued', 'sending')").fetchone()
            if left and left[0] == 0:
                rows = conn.execute("SELECT count(*) FROM notification_logs").fetchone()
                if rows and rows[0] >= args.previews:
                    break
            time.sleep(1.0)
        xact1 = conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (dbname,)).fetchone()[0]  # type: ignore[index]
        run_s = time.monotonic() - t_start
        cpu1 = {"dispatchers": sum(cpu_seconds(p.pid) for p in procs), "postgres": postgres_cpu(postmaster),
                "fakes_and_bench": resource.getrusage(resource.RUSAGE_SELF).ru_utime
                + resource.getrusage(resource.RUSAGE_SELF).ru_stime}
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'sent'), count(*) FILTER (WHERE status <> 'sent'),"
            " extract(epoch FROM max(updated_at) - min(send_at)),"
            " percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY extract(epoch FROM attempted_at - send_at)),"
            " count(*) FILTER (WHERE channel = 'sms' AND status = 'sent')"
            " FROM notification_logs").fetchone()
        assert row is not None
        sent, other, span, lateness, sms_sent = row
        per_id = collections.Counter(r.message["data"]["notification_id"] for r in fcm.state.accepted())
        ms = sorted(float(r[0]) for r in conn.execute(
            "SELECT extract(epoch FROM attempted_at - send_at) * 1000 FROM notification_logs WHERE status = 'sent'"))
        send_at = {str(r[0]): float(r[1]) for r in conn.execute(
            "SELECT id, extract(epoch FROM send_at) FROM notification_logs WHERE channel = 'push'")}
        at_fake = sorted((r.at - send_at[r.message["data"]["notification_id"]]) * 1000 for r in fcm.state.accepted())

        def pcts(values: list[float]) -> dict[str, float]:
            return {f"p{p}": round(values[min(len(values) - 1, int(len(values) * p / 100))], 1) for p in (50, 95, 99)} \
                | {"max": round(values[-1], 1)} if values else {}

        result["lateness_ms_attempted_minus_send_at"] = pcts(ms)
        result["lateness_ms_at_fake_fcm"] = pcts(at_fake)
        result["postgres_top_statements"] = harness.top_statements(conn)
        result["db_transactions_per_s"] = round((xact1 - xact0) / run_s, 1)
        result.update({
            "sent": sent, "not_sent": other, "sms_sent": sms_sent, "drain_s": round(float(span), 2),
            "previews_per_s": round(sent / float(span), 1),
            "lateness_p50_s": round(lateness[0], 2), "lateness_p99_s": round(lateness[1], 2),
            "fcm_requests": len(fcm.state.sent), "fcm_duplicates": sum(n - 1 for n in per_id.values() if n > 1),
            "twilio_requests": len(twilio.state.sent),
            "cpu_s": {k: round(cpu1[k] - cpu0[k], 1) for k in cpu0},
            "cpu_ms_per_preview": {k: round((cpu1[k] - cpu0[k]) * 1000 / max(1, sent), 2) for k in cpu0},
            "dispatcher_peak_rss_mb": [round(peak_rss_mb(p.pid), 1) for p in procs],
        })
        if spy is not None:
            result["dispatcher_profile_share"] = spy
        if args.capacity:
            result["burst"] = burst_figures(conn, fcm, twilio, args)
        conn.close()
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        log.close()
    return result


def burst_figures(conn: psycopg.Connection, fcm: FakeFcmServer, twilio: FakeTwilioServer,
                  args: argparse.Namespace) -> dict[str, object]:
    """The smoothed burst: how far planning spread it, and when each request reached its fake
    against its planned_send_at (T - lead: none later than + 1 s) and the max_early floor (none
    earlier). Pushes are matched by notification id, SMS by the user's number."""
    by_id, by_phone = {}, {}
    for nid, phone, channel, planned, send_at in conn.execute(
            "SELECT n.id, u.phone_number, n.channel, extract(epoch FROM n.planned_send_at),"
            " extract(epoch FROM n.send_at) FROM notification_logs n JOIN users u ON u.id = n.user_id"):
        (by_id if channel == "push" else by_phone)[str(nid) if channel == "push" else phone] = float(planned)
    arrivals = [(r.at, by_id[r.message["data"]["notification_id"]]) for r in fcm.state.accepted()]
    arrivals += [(r.at, by_phone[r.form["To"]]) for r in twilio.state.accepted()]
    after_planned = sorted(at - p for at, p in arrivals)
    spread = conn.execute("SELECT extract(epoch FROM max(planned_send_at - send_at)),"
                          " count(*) FILTER (WHERE send_at < planned_send_at) FROM notification_logs").fetchone()
    assert spread is not None
    first, last = min(at for at, _ in arrivals), max(at for at, _ in arrivals)
    return {
        "requests": len(arrivals), "planned_earlier_max_s": round(float(spread[0] or 0), 2), "moved_earlier": spread[1],
        "arrival_minus_planned_s": {"min": round(after_planned[0], 3), "max": round(after_planned[-1], 3)},
        "later_than_planned_plus_1s": sum(1 for d in after_planned if d > 1.0),
        "earlier_than_max_early": sum(1 for d in after_planned if d < -args.max_early),
        "drain_rate_per_s": round(len(arrivals) / max(1e-9, last - first), 1),
        "arrivals_span_s": round(last - first, 2),
    }


def peer_run(args: argparse.Namespace, cluster: localdb.LocalCluster, fcm: FakeFcmServer,
             postmaster: int) -> dict[str, object]:
    """PgQueuer on the same job, one process (bench/peer_pgqueuer.py)."""
    dsn = harness.migrated_database(cluster, "bench_pgqueuer")
    creds = Path(tempfile.mkdtemp()) / "sa.json"
    from precall.fakes.fake_fcm import service_account
    creds.write_text(json.dumps(service_account(f"{fcm.url}/token")))
    pg0 = postgres_cpu(postmaster)
    out = subprocess.run([sys.executable, str(Path(__file__).parent / "peer_pgqueuer.py"), "--dsn", dsn,
                          "--fcm-url", fcm.url, "--credentials", str(creds), "--jobs", str(args.previews)],
                         capture_output=True, text=True, timeout=3600, env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)})
    if out.returncode != 0:
        raise RuntimeError(f"pgqueuer peer failed: {out.stderr[-2000:]}")
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    result["postgres_cpu_s_incl_enqueue"] = round(postgres_cpu(postmaster) - pg0, 1)
    result["fcm_accepted"] = len(fcm.state.accepted())
    result["previews_per_s"] = result["jobs_per_s"]
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default="direct",
                    help="comma-separated: direct, sdk (precall's FCM transports), pgqueuer (the peer)")
    ap.add_argument("--capacity", type=float, default=None,
                    help="precall.settings.push_capacity_per_s (default: out of reach, no smoothing)")
    ap.add_argument("--max-early", type=float, default=120.0, help="precall.settings.max_early, seconds")
    ap.add_argument("--previews", type=int, default=50_000)
    ap.add_argument("--dispatchers", type=int, default=2)
    ap.add_argument("--sms-share", type=float, default=0.1)
    ap.add_argument("--fcm-latency", type=float, default=0.05)
    ap.add_argument("--twilio-latency", type=float, default=0.2)
    ap.add_argument("--in-flight", type=int, default=None, help="PRECALL_MAX_IN_FLIGHT (default: the dispatcher's)")
    ap.add_argument("--profile", action="store_true", help="py-spy one dispatcher for 15 s mid-run")
    ap.add_argument("--spread-s", type=float, default=0.0,
                    help="spread the send_at instants over this many seconds (lateness mode) instead of one")
    ap.add_argument("--out", default=None,
                    help="file name under bench/ (default: results_throughput.json, or results_lateness.json with --spread-s)")
    args = ap.parse_args()

    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    cluster = localdb.throwaway()
    harness.load_statement_stats(cluster)
    fcm, twilio = FakeFcmServer().start(), FakeTwilioServer().start()
    fcm.state.latency_s, twilio.state.latency_s = args.fcm_latency, args.twilio_latency
    results: dict[str, dict[str, object]] = {}
    try:
        with psycopg.connect(cluster.admin_dsn, autocommit=True) as c:
            postmaster = int(c.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'")
                             .fetchone()[0])  # type: ignore[index]
        postmaster = int(Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()[1])
        for name in runs:
            fcm.state.sent.clear()
            twilio.state.sent.clear()
            if name == "pgqueuer":
                results[name] = peer_run(args, cluster, fcm, postmaster)
            else:
                results[name] = precall_run(args, cluster, fcm, twilio, postmaster, name)
            print(f"bench: {name}: {json.dumps({k: v for k, v in results[name].items() if not isinstance(v, (dict, list))})}",
                  file=sys.stderr)
    finally:
        fcm.shutdown()
        twilio.shutdown()
        cluster.destroy()
    result: dict[str, object] = dict(results[runs[0]]) if len(runs) == 1 else {"runs": results}
    if "pgqueuer" in results:
        peer = float(results["pgqueuer"]["jobs_per_s"])  # type: ignore[arg-type]
        result["ratio_to_pgqueuer"] = {k: round(float(v["previews_per_s"]) / peer, 2)  # type: ignore[arg-type]
                                       for k, v in results.items() if k != "pgqueuer"}
    text = json.dumps(result, indent=2)
    print(text)
    (Path(__file__).parent / (args.out or ("results_lateness.json" if args.spread_s else "results_throughput.json"))).write_text(text + "\n")
    refused = {k: v.get("not_sent") for k, v in results.items() if v.get("not_sent")}
    if refused:
        # A figure measured with previews refused is not the figure the table claims.
        print(f"bench: previews not sent ({refused}) of {args.previews}; see notification_logs.reason", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
