"""What every benchmark sets up: a migrated database on a throwaway cluster, and the environment
that points `precall dispatcher` (the real SDKs) at the local fake providers."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import psycopg

from precall.fakes.fake_fcm import FakeFcmServer, service_account
from precall.fakes.fake_twilio import FakeTwilioServer
from precall import localdb
from precall.sql import migrate


def migrated_database(cluster: localdb.LocalCluster, name: str) -> str:
    with psycopg.connect(cluster.admin_dsn, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    dsn = cluster.dsn(name)
    migrate.migrate(dsn)
    return dsn


def dispatcher_env(dsn: str, fcm: FakeFcmServer, twilio: FakeTwilioServer, **extra: str) -> dict[str, str]:
    creds = Path(tempfile.mkdtemp()) / "sa.json"
    creds.write_text(json.dumps(service_account(f"{fcm.url}/token")))
    return {**os.environ, "DATABASE_URL": dsn, "GOOGLE_APPLICATION_CREDENTIALS": str(creds),
            "PRECALL_FCM_BASE_URL": fcm.url, "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
            # The fake checks Basic auth like Twilio: with a wrong token every SMS is refused (20003),
            # which the benchmarks ran with, unnoticed, from 639eb6a to this fix.
            "TWILIO_AUTH_TOKEN": twilio.state.auth_token,
            "PRECALL_TWILIO_FROM": "+15005550006", "PRECALL_TWILIO_BASE_URL": twilio.url,
            "PRECALL_RECEIPT_SECRET": "bench-receipt-secret-" + "r" * 32, **extra}


def load_statement_stats(cluster: localdb.LocalCluster) -> None:
    """Restarts the cluster with pg_stat_statements loaded (benchmarks only): where PostgreSQL's time goes."""
    with (cluster.datadir / "postgresql.conf").open("a") as f:
        f.write("shared_preload_libraries = 'pg_cron,pg_stat_statements'\n")
    cluster.restart()


def top_statements(conn: psycopg.Connection, limit: int = 8) -> list[dict[str, object]]:
    """The statements that took most of the server's time since the extension was created."""
    return [{"total_ms": round(float(r[0])), "calls": r[1], "rows": r[2], "ms_per_call": round(float(r[0]) / max(1, r[1]), 2),
             "query": r[3]}
            for r in conn.execute(
                "SELECT total_exec_time, calls, rows, left(regexp_replace(query, '\\s+', ' ', 'g'), 100)"
                " FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
                " ORDER BY total_exec_time DESC LIMIT %s", (limit,))]
