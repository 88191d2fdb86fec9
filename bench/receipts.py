"""Receipts keep up with pushes: the API's receipts/s and latency beside the dispatcher's push rate,
measured in one invocation on one machine.

    .venv/bin/python bench/receipts.py [--previews 20000] [--workers 2] [--clients 50]

1. The dispatcher's rate: bench/throughput.py's run (one dispatcher, the default transport, push
   only, every preview due at once, the fake FCM answering after 50 ms): previews/s.
2. The API: `precall api --workers N` on that database; --clients concurrent clients (aiohttp)
   post one receipt each for every sent push, with the user's bearer JWT (made before the clock
   starts), as the app does when the push arrives. Reported: receipts/s, p50/p99/max latency,
   statuses, and the ratio to the dispatcher's previews/s (>= 1: receipts keep up).
JSON to stdout and bench/results_receipts.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import jwt
import psycopg

import harness  # bench/harness.py
import throughput  # bench/throughput.py
from precall import localdb
from precall.fakes.fake_fcm import FakeFcmServer
from precall.fakes.fake_twilio import FakeTwilioServer

JWT_SECRET = "bench-secret-" + "s" * 32


def own_cpu() -> float:
    import resource
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def start_api(dsn: str, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    port = localdb.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRECALL_", "TWILIO_"))}
    env.update({"DATABASE_URL": dsn, "PRECALL_JWT_SECRET": JWT_SECRET, "PRECALL_RECEIPT_SECRET": JWT_SECRET})
    proc = subprocess.Popen([sys.executable, "-m", "precall.cli", "api", "--port", str(port), "--log-level", "warning",
                             "--workers", str(workers)], env=env)
    url = f"http://127.0.0.1:{port}"

    async def ready() -> bool:
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                try:
                    async with http.get(f"{url}/healthz") as r:
                        if r.status == 200:
                            return True
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        return False

    if not asyncio.run(ready()):
        proc.kill()
        raise SystemExit("precall api did not start")
    return proc, url


async def post_receipts(url: str, rows: list[tuple[str, str]], clients: int) -> tuple[float, list[float], dict[int, int]]:
    headers = {nid: {"Authorization": f"Bearer {jwt.encode({'sub': user, 'exp': int(time.time()) + 3600}, JWT_SECRET)}"}
               for nid, user in rows}
    queue = list(rows)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(base_url=url, connector=connector) as http:
        async def client() -> None:
            while queue:
                nid, _ = queue.pop()
                t0 = time.perf_counter()
                async with http.post(f"/api/v1/notifications/{nid}/receipt", json={"event": "delivered"},
                                     headers=headers[nid]) as r:
                    await r.read()
                    statuses[r.status] = statuses.get(r.status, 0) + 1
                latencies.append((time.perf_counter() - t0) * 1000)

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        return time.perf_counter() - t0, latencies, statuses


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--previews", type=int, default=20_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--no-dispatcher", action="store_true",
                    help="skip step 1: sent pushes are inserted by SQL (to work on the API alone)")
    ap.add_argument("--profile", action="store_true", help="py-spy one API worker for 10 s mid-run")
    args = ap.parse_args()
    run_args = argparse.Namespace(previews=args.previews, dispatchers=1, sms_share=0.0, fcm_latency=0.05,
                                  twilio_latency=0.2, in_flight=None, profile=False, spread_s=0.0, capacity=None,
                                  max_early=120.0)
    cluster = localdb.throwaway()
    harness.load_statement_stats(cluster)
    fcm, twilio = FakeFcmServer().start(), FakeTwilioServer().start()
    fcm.state.latency_s = 0.05
    api: subprocess.Popen[bytes] | None = None
    try:
        with psycopg.connect(cluster.admin_dsn, autocommit=True) as c:
            checkpointer = int(c.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'")
                               .fetchone()[0])  # type: ignore[index]
        postmaster = int(Path(f"/proc/{checkpointer}/stat").read_text().rsplit(")", 1)[1].split()[1])
        if args.no_dispatcher:
            dsn = harness.migrated_database(cluster, "bench_direct")
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("INSERT INTO users (fcm_token, push_enabled, phone_number, notification_lead_min)"
                             " SELECT 'tok-' || g, true, '+1555' || lpad(g::text, 7, '0'), 10"
                             " FROM generate_series(1, %s) g", (args.previews,))
                conn.execute("INSERT INTO scheduled_calls (user_id, scheduled_at, topic)"
                             " SELECT id, now() + interval '1 hour', 'mood_check' FROM users")
                conn.execute("INSERT INTO notification_logs (user_id, call_id, type, channel, status, send_at,"
                             " planned_for, attempted_at, sent_at, provider_id)"
                             " SELECT c.user_id, c.id, 'preview_push', 'push', 'sent', now(), c.scheduled_at, now(), now(),"
                             "        'projects/p/messages/' || c.id FROM scheduled_calls c")
            pushes: dict[str, object] = {"previews_per_s": float("nan"), "cpu_ms_per_preview": None}
        else:
            pushes = throughput.precall_run(run_args, cluster, fcm, twilio, postmaster, "direct")
            dsn = cluster.dsn("bench_direct")
        with psycopg.connect(dsn, autocommit=True) as conn:
            rows = [(str(a), str(b)) for a, b in conn.execute(
                "SELECT id, user_id FROM notification_logs WHERE status = 'sent' AND channel = 'push'")]
        api, url = start_api(dsn, args.workers)
        warm, rows = rows[:200], rows[200:]
        asyncio.run(post_receipts(url, warm, args.clients))  # connections, plans, JWT key cache
        api_pids = [api.pid, *throughput.children(api.pid)]
        cpu0 = (sum(throughput.cpu_seconds(p) for p in api_pids), throughput.postgres_cpu(postmaster), own_cpu())
        spy = None
        if args.profile:
            import threading
            workers = throughput.children(api.pid)
            box: dict[str, object] = {}
            t = threading.Thread(target=lambda: box.update(throughput.profile(workers[-1], 10)))
            t.start()
        elapsed, ms, statuses = asyncio.run(post_receipts(url, rows, args.clients))
        if args.profile:
            t.join()
            spy = box
        cpu1 = (sum(throughput.cpu_seconds(p) for p in api_pids), throughput.postgres_cpu(postmaster), own_cpu())
        ms.sort()
        rate = len(ms) / elapsed
        result = {
            "dispatcher_previews_per_s": pushes["previews_per_s"], "dispatcher_cpu_ms_per_preview":
                pushes["cpu_ms_per_preview"],
            "api_workers": args.workers, "clients": args.clients, "receipts": len(ms),
            "receipts_per_s": round(rate, 1),
            "latency_ms": {"p50": round(ms[len(ms) // 2], 1), "p99": round(ms[int(len(ms) * 0.99) - 1], 1),
                           "max": round(ms[-1], 1)},
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "receipts_per_push_rate": round(rate / float(pushes["previews_per_s"]), 2),  # type: ignore[arg-type]
            **({"api_worker_profile": spy} if spy else {}),
            "cpu_ms_per_receipt": {name: round((b - a) * 1000 / len(ms), 3)
                                   for name, a, b in zip(("api", "postgres", "load_client"), cpu0, cpu1)},
        }
    finally:
        if api is not None:
            api.terminate()
            try:
                api.wait(15)
            except subprocess.TimeoutExpired:
                api.kill()
        fcm.shutdown()
        twilio.shutdown()
        cluster.destroy()
    text = json.dumps(result, indent=2)
    print(text)
    (Path(__file__).parent / "results_receipts.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
