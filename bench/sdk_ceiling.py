"""The ceiling firebase-admin sets on this machine: the SDK alone, no database, no precall loop.

    .venv/bin/python bench/sdk_ceiling.py [--messages 20000] [--processes 2] [--in-flight 64]

Each of --processes client processes sends its share of --messages pushes, one
`messaging.send_each_async([message])` per push (the call the dispatcher makes, with the
dispatcher's payload), at most --in-flight at once, to the fake FCM in this process (50 ms
latency, as in bench/throughput.py). Two transports: the SDK as shipped, and with precall's
connection lanes (dispatcher/providers/http_lanes.py). Reports sends/s and CPU per send in the
clients and in the fake. bench/throughput.py's previews/s is read against this figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import resource
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from precall.fakes.fake_fcm import FakeFcmServer, service_account


def client(creds: str, url: str, count: int, in_flight: int, lanes: bool, start: Any, out: Any) -> None:
    import firebase_admin
    from firebase_admin import credentials, messaging

    from precall.dispatcher.providers.base import PushRequest
    from precall.dispatcher.providers.fcm import build_message
    from precall.dispatcher.providers.http_lanes import LaneTransport

    async def run() -> tuple[float, float, float]:
        info = json.loads(Path(creds).read_text())
        app = firebase_admin.initialize_app(credentials.Certificate(info), {"projectId": info["project_id"]})
        service = messaging._get_messaging_service(app)  # noqa: SLF001 - as the dispatcher does
        service._fcm_url = f"{url}/v1/projects/{info['project_id']}/messages:send"  # noqa: SLF001
        if lanes:
            for transport in service._async_client._mounts.values():  # noqa: SLF001
                transport._wrapped_transport = LaneTransport(in_flight)  # noqa: SLF001
        deadline = datetime.now(timezone.utc) + timedelta(minutes=10)
        slots = asyncio.Semaphore(in_flight)

        async def one(i: int) -> None:
            request = PushRequest(f"tok-{i}", "Coach Max is calling you in 5 min! 💪", "Day 12 — fitness check-in.",
                                  {"route": "incoming_call", "call_id": str(i), "notification_id": str(i)}, deadline, str(i))
            async with slots:
                batch = await messaging.send_each_async([build_message(request)], app=app)
                assert batch.success_count == 1, batch.responses[0].exception

        await asyncio.gather(*(one(i) for i in range(200)))  # warm: token, connections
        await asyncio.to_thread(start.wait)
        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(count)))
        return time.process_time() - cpu0, t0, time.perf_counter()

    out.put(asyncio.run(run()))


def measure(fcm: FakeFcmServer, creds: str, messages: int, processes: int, in_flight: int, lanes: bool) -> dict[str, object]:
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    share = messages // processes
    procs = [ctx.Process(target=client, args=(creds, fcm.url, share, in_flight, lanes, start, out)) for _ in range(processes)]
    for p in procs:
        p.start()
    time.sleep(8)  # imports, token, warm-up sends
    connections0 = fcm.connections
    fake0 = resource.getrusage(resource.RUSAGE_SELF)
    start.set()
    results = [out.get(timeout=600) for _ in procs]
    fake1 = resource.getrusage(resource.RUSAGE_SELF)
    for p in procs:
        p.join()
    wall = max(r[2] for r in results) - min(r[1] for r in results)
    client_cpu = sum(r[0] for r in results)
    fake_cpu = (fake1.ru_utime + fake1.ru_stime) - (fake0.ru_utime + fake0.ru_stime)
    sent = share * processes
    return {"transport": "precall lanes" if lanes else "SDK as shipped", "sends": sent, "seconds": round(wall, 2),
            "sends_per_s": round(sent / wall, 1),
            "cpu_ms_per_send": {"sdk_clients": round(client_cpu * 1000 / sent, 2), "fake_fcm": round(fake_cpu * 1000 / sent, 2)},
            "tcp_connections": fcm.connections - connections0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--in-flight", type=int, default=64, help="per process, as PRECALL_MAX_IN_FLIGHT")
    ap.add_argument("--fcm-latency", type=float, default=0.05)
    args = ap.parse_args()
    fcm = FakeFcmServer().start()
    fcm.state.latency_s = args.fcm_latency
    creds = Path(tempfile.mkdtemp()) / "sa.json"
    creds.write_text(json.dumps(service_account(f"{fcm.url}/token")))
    runs = [measure(fcm, str(creds), args.messages, args.processes, args.in_flight, lanes) for lanes in (False, True)]
    result = {"messages": args.messages, "processes": args.processes, "in_flight_per_process": args.in_flight,
              "fcm_latency_s": args.fcm_latency, "runs": runs}
    text = json.dumps(result, indent=2)
    print(text)
    (Path(__file__).parent / "results_sdk_ceiling.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
