"""The peer in bench/throughput.py: PgQueuer (a PostgreSQL job queue, the fastest Python one measured
on this machine) doing the job its users would write for a preview.

    python bench/peer_pgqueuer.py --dsn DSN --fcm-url URL --credentials sa.json --jobs 20000

Its documented settings: asyncpg driver, `QueueManager.run(batch_size=10)`, one entrypoint with
`concurrency_limit=200`. Each job: one firebase-admin push (`messaging.send_each_async`, the same
payload as precall's, the same fake FCM answering after 50 ms) and one status UPDATE of the job's
row in a table of its own. The jobs are enqueued before the clock starts; the run drains the queue
(`mode=drain`) in this one process. Prints one JSON object: jobs, seconds, jobs/s, this
process's CPU ms per job, pushes accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--fcm-url", required=True)
    ap.add_argument("--credentials", required=True)
    ap.add_argument("--jobs", type=int, default=20_000)
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=10)
    args = ap.parse_args()

    import asyncpg
    import firebase_admin
    from firebase_admin import credentials, messaging
    from pgqueuer import AsyncpgDriver, Job, Queries, QueueManager
    from pgqueuer.types import QueueExecutionMode

    from precall.dispatcher.providers.base import PushRequest
    from precall.dispatcher.providers.fcm import build_message

    info = json.loads(Path(args.credentials).read_text())
    app = firebase_admin.initialize_app(credentials.Certificate(info), {"projectId": info["project_id"]})
    service = messaging._get_messaging_service(app)  # noqa: SLF001 - the only way to point the SDK at the fake
    service._fcm_url = f"{args.fcm_url}/v1/projects/{info['project_id']}/messages:send"  # noqa: SLF001

    dsn = args.dsn.replace("postgresql://", "postgres://")
    setup = await asyncpg.connect(dsn)
    queries = Queries(AsyncpgDriver(setup))
    await queries.install()
    await setup.execute("CREATE TABLE previews (id bigint PRIMARY KEY, token text, status text NOT NULL DEFAULT 'queued',"
                        " sent_at timestamptz, provider_id text)")
    await setup.execute("INSERT INTO previews (id, token) SELECT g, 'tok-' || g FROM generate_series(1, $1) g", args.jobs)
    for start in range(1, args.jobs + 1, 1000):
        ids = list(range(start, min(args.jobs, start + 999) + 1))
        await queries.enqueue(["push"] * len(ids), [str(i).encode() for i in ids], [0] * len(ids))
    await setup.close()

    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=10)
    conn = await asyncpg.connect(dsn)
    qm = QueueManager(Queries(AsyncpgDriver(conn)))
    deadline = datetime.now(timezone.utc) + timedelta(minutes=30)
    done = 0

    @qm.entrypoint("push", concurrency_limit=args.concurrency)
    async def push(job: Job) -> None:
        nonlocal done
        pid = int((job.payload or b"0").decode())
        request = PushRequest(f"tok-{pid}", "Coach Max is calling you in 5 min! 💪", "Day 12: your fitness check-in.",
                              {"route": "incoming_call", "call_id": str(pid), "notification_id": str(pid)},
                              deadline, str(pid))
        batch = await messaging.send_each_async([build_message(request)], app=app)
        result = batch.responses[0]
        await pool.execute("UPDATE previews SET status = $2, sent_at = now(), provider_id = $3 WHERE id = $1",
                           pid, "sent" if result.success else "failed", result.message_id)
        done += 1

    cpu0, t0 = cpu_s(), time.monotonic()
    await qm.run(batch_size=args.batch_size, mode=QueueExecutionMode.drain)
    elapsed, cpu = time.monotonic() - t0, cpu_s() - cpu0
    await pool.close()
    await conn.close()
    print(json.dumps({"jobs": done, "seconds": round(elapsed, 2), "jobs_per_s": round(done / elapsed, 1),
                      "cpu_ms_per_job": round(cpu * 1000 / max(1, done), 2)}))


if __name__ == "__main__":
    asyncio.run(main())
