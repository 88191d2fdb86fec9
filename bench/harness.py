"""What every benchmark sets up: a migrated database on a throwaway cluster, and the environment
that points `precall dispatcher` (the real SDKs) at the local fake providers."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

from fakes.fake_fcm import FakeFcmServer, service_account  # noqa: E402
from fakes.fake_twilio import FakeTwilioServer  # noqa: E402
from precall.cli import localdb  # noqa: E402
from precall.dispatcher import migrate  # noqa: E402


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
            "PRECALL_FCM_BASE_URL": fcm.url, "TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "TWILIO_AUTH_TOKEN": "x",
            "PRECALL_TWILIO_FROM": "+15005550006", "PRECALL_TWILIO_BASE_URL": twilio.url, **extra}
