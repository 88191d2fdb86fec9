"""Fixtures: a real PostgreSQL with pg_cron for every test, one server per session, one database
per test (cloned from a migrated template), and a factory for rows as a DBA or the app writes them.

The server is chosen in this order: PRECALL_TEST_DATABASE_URL (an admin DSN to a server with
pg_cron preloaded); testcontainers, when a Docker engine answers; otherwise a throwaway local
cluster started here (initdb + pg_ctl, as the postgres user when running as root).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from pathlib import Path

import psycopg
import psycopg.rows
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from precall import localdb
from precall.sql import cron, migrate

TESTS = Path(__file__).parents[1]


@dataclass
class PgServer:
    admin_dsn: str
    cluster: localdb.LocalCluster | None = None  # set when the tests own a local cluster
    container: Any = None  # set when the tests own a testcontainers container (on a fixed host port)

    def dsn(self, dbname: str) -> str:
        return make_conninfo(self.admin_dsn, dbname=dbname)

    @property
    def restartable(self) -> str | None:
        """None when the tests can stop and start this server, else why not."""
        if self.cluster is None and self.container is None:
            return "PRECALL_TEST_DATABASE_URL points at a server these tests do not own: they cannot restart it"
        return None

    def stop(self) -> None:
        """Stops PostgreSQL fast (connections end, as in a crash or a failover)."""
        if self.cluster is not None:
            self.cluster.stop("fast")
        else:
            self.container.get_wrapped_container().stop(timeout=10)

    def start(self) -> None:
        if self.cluster is not None:
            self.cluster.start()
        else:
            self.container.get_wrapped_container().start()  # the same host port: bound explicitly
            localdb_wait(self.admin_dsn)

    @property
    def cron_database(self) -> str:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            row = conn.execute("SELECT current_setting('cron.database_name', true)").fetchone()
            return str(row[0]) if row and row[0] else "postgres"


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    external = os.environ.get("PRECALL_TEST_DATABASE_URL")
    if external:
        yield PgServer(external)
        return
    if _docker_answers():
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.image import DockerImage
        from testcontainers.core.waiting_utils import wait_for_logs

        with DockerImage(path=str(TESTS / "docker"), tag="precall-test-pg:15") as image:
            # A fixed host port, so a restarted container (the restart tests) answers where it did.
            port = _free_port()
            container = DockerContainer(str(image)).with_bind_ports(5432, port)
            container.with_env("POSTGRES_HOST_AUTH_METHOD", "trust")
            with container:
                wait_for_logs(container, "database system is ready to accept connections", timeout=60)
                dsn = f"postgresql://postgres@{container.get_container_host_ip()}:{port}/postgres"
                localdb_wait(dsn)
                yield PgServer(dsn, container=container)
        return
    cluster = localdb.throwaway()
    try:
        yield PgServer(cluster.admin_dsn, cluster)
    finally:
        cluster.destroy()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def localdb_wait(dsn: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            with psycopg.connect(dsn, connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.fixture(scope="session")
def template_db(pg_server: PgServer) -> str:
    """A migrated template. No cron job ever points at it: pg_cron's connection would block
    CREATE DATABASE … TEMPLATE."""
    name = f"precall_tmpl_{os.getpid()}"
    with psycopg.connect(pg_server.admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    migrate.migrate(pg_server.dsn(name))
    return name


def create_db(pg_server: PgServer, template: str | None) -> str:
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(pg_server.admin_dsn, autocommit=True) as conn:
        if template:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        else:
            conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_db(pg_server: PgServer, name: str) -> None:
    dsn = pg_server.dsn(name)
    try:
        cron.uninstall(dsn, cron.cron_dsn(dsn, None))
    except Exception:  # noqa: BLE001 - pg_cron may be absent; teardown must go on
        pass
    with psycopg.connect(pg_server.admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def fresh_db(pg_server: PgServer, template: str | None) -> Iterator[str]:
    name = create_db(pg_server, template)
    try:
        yield pg_server.dsn(name)
    finally:
        drop_db(pg_server, name)


@pytest.fixture
def db(pg_server: PgServer, template_db: str) -> Iterator[str]:
    """DSN of a fresh, migrated database for this test (dropped, cron jobs removed, afterwards)."""
    with fresh_db(pg_server, template_db) as dsn:
        yield dsn


@pytest.fixture
def empty_db(pg_server: PgServer) -> Iterator[str]:
    """DSN of a fresh database with nothing in it (for migration tests)."""
    with fresh_db(pg_server, None) as dsn:
        yield dsn


@pytest.fixture
def conn(db: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db, autocommit=True) as c:
        yield c


def dbname(dsn: str) -> str:
    return str(conninfo_to_dict(dsn)["dbname"])


class Factory:
    """Inserts users, coaches and calls the way a DBA or the app would."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def coach(self, name: str = "Max") -> str:
        row = self.conn.execute("INSERT INTO coach_personas (name) VALUES (%s) RETURNING id", (name,)).fetchone()
        assert row is not None
        return str(row[0])

    def user(self, **columns: object) -> str:
        columns.setdefault("phone_number", "+15555550100")
        if "coach" in columns:
            columns["coach_persona_id"] = self.coach(str(columns.pop("coach")))
        names = ", ".join(columns)
        marks = ", ".join(["%s"] * len(columns))
        row = self.conn.execute(
            f"INSERT INTO users ({names}) VALUES ({marks}) RETURNING id",  # type: ignore[arg-type]
            tuple(columns.values()),
        ).fetchone()
        assert row is not None
        return str(row[0])

    def call(self, user_id: str, in_seconds: float | None = None, at: object | None = None,
             topic: str = "fitness_checkin", status: str = "pending") -> str:
        if at is None:
            row = self.conn.execute(
                "INSERT INTO scheduled_calls (user_id, scheduled_at, topic, status)"
                " VALUES (%s, now() + make_interval(secs => %s), %s, %s) RETURNING id",
                (user_id, in_seconds, topic, status),
            ).fetchone()
        else:
            row = self.conn.execute(
                "INSERT INTO scheduled_calls (user_id, scheduled_at, topic, status) VALUES (%s, %s, %s, %s) RETURNING id",
                (user_id, at, topic, status),
            ).fetchone()
        assert row is not None
        return str(row[0])

    def previews(self, call_id: str) -> list[dict[str, object]]:
        cur = self.conn.cursor(row_factory=psycopg.rows.dict_row)
        return cur.execute(
            "SELECT * FROM notification_logs WHERE call_id = %s ORDER BY created_at, send_at", (call_id,)
        ).fetchall()


@pytest.fixture
def make(conn: psycopg.Connection) -> Factory:
    return Factory(conn)
