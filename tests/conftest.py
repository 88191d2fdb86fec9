"""A real PostgreSQL with pg_cron for every test: one server per session, one database per test.

The server is chosen in this order: PRECALL_TEST_DATABASE_URL (an admin DSN to a server with
pg_cron preloaded); testcontainers, when a Docker engine answers; otherwise a throwaway local
cluster started here (initdb + pg_ctl, as the postgres user when running as root).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg
import psycopg.rows
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from precall.fakes.fake_fcm import FakeFcmServer, service_account
from precall.fakes.fake_twilio import FakeTwilioServer
from precall import localdb
from precall.sql import cron, migrate

TESTS = Path(__file__).parent


@dataclass
class PgServer:
    admin_dsn: str
    cluster: localdb.LocalCluster | None = None  # set when the tests own the server (can restart it)

    def dsn(self, dbname: str) -> str:
        return make_conninfo(self.admin_dsn, dbname=dbname)

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
            container = DockerContainer(str(image)).with_exposed_ports(5432)
            container.with_env("POSTGRES_HOST_AUTH_METHOD", "trust")
            with container:
                wait_for_logs(container, "database system is ready to accept connections", timeout=60)
                host, port = container.get_container_host_ip(), container.get_exposed_port(5432)
                dsn = f"postgresql://postgres@{host}:{port}/postgres"
                localdb_wait(dsn)
                yield PgServer(dsn)
        return
    cluster = localdb.throwaway()
    try:
        yield PgServer(cluster.admin_dsn, cluster)
    finally:
        cluster.destroy()


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


# --- the dispatcher against the fake providers ------------------------------------------------


TWILIO_SID = "AC" + "0" * 32


@pytest.fixture
def fake_fcm() -> Iterator[FakeFcmServer]:
    server = FakeFcmServer().start()
    yield server
    server.shutdown()


@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilioServer]:
    server = FakeTwilioServer().start()
    yield server
    server.shutdown()


@pytest.fixture
def dispatcher_env(db: str, fake_fcm: FakeFcmServer, fake_twilio: FakeTwilioServer, tmp_path: Path) -> dict[str, str]:
    """The environment an operator would set, pointing the real SDKs at the local fakes."""
    creds = tmp_path / "service-account.json"
    creds.write_text(json.dumps(service_account(f"{fake_fcm.url}/token")))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRECALL_", "TWILIO_"))}
    env.update({
        "DATABASE_URL": db,
        "PRECALL_PUSH_PROVIDER": "fcm",
        "PRECALL_SMS_PROVIDER": "twilio",
        "GOOGLE_APPLICATION_CREDENTIALS": str(creds),
        "PRECALL_FCM_BASE_URL": fake_fcm.url,
        "TWILIO_ACCOUNT_SID": TWILIO_SID,
        "TWILIO_AUTH_TOKEN": "test-auth-token",
        "PRECALL_TWILIO_FROM": "+15005550006",
        "PRECALL_TWILIO_BASE_URL": fake_twilio.url,
        "PRECALL_TWILIO_STATUS_CALLBACK_URL": "https://hooks.example.com/twilio/status",
        "PRECALL_POLL_INTERVAL_S": "2",
    })
    return env


class DispatcherProcess:
    """`precall dispatcher` as ops run it, in a child process; its JSON log lines are collected."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "precall.cli", "dispatcher"], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def logs(self) -> list[dict[str, object]]:
        out = []
        for line in list(self.lines):
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"msg": line})
        return out

    def wait_for_log(self, text: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no log line with {text!r}; got:\n" + "\n".join(self.lines[-30:]))

    def terminate(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def start_dispatcher(dispatcher_env: dict[str, str]) -> Iterator[Callable[..., DispatcherProcess]]:
    started: list[DispatcherProcess] = []

    def start(wait_listening: bool = True, **overrides: str) -> DispatcherProcess:
        d = DispatcherProcess({**dispatcher_env, **overrides})
        started.append(d)
        if wait_listening:
            d.wait_for_log("listening on precall_due")
        return d

    yield start
    for d in started:
        d.kill()


def precall_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`precall ARGS…` as support runs it, in a child process: exit status, stdout, stderr as text."""
    return subprocess.run([sys.executable, "-m", "precall.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def wait_until(predicate: Callable[[], object], timeout: float = 15, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError("condition not met within %.0fs" % timeout)


# --- the call webhook's receiver ------------------------------------------------------------

class _Receiver(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((time.time(), dict(self.headers), body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def webhook_receiver() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.received = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()



# --- the HTTP API ---------------------------------------------------------------------------------

JWT_SECRET = "test-jwt-secret-that-is-at-least-32-chars"
STATUS_CALLBACK_URL = "https://hooks.example.com/twilio/status"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ApiProcess:
    """`precall api` as ops run it (uvicorn in a child process)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "precall.cli", "api", "--port", str(self.port),
                                      "--log-level", "warning"], env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        import httpx

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("precall api exited: " + (self.proc.stderr.read() if self.proc.stderr else ""))
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("precall api did not become healthy")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def api_env(dsn: str, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRECALL_", "TWILIO_"))}
    env.update({"DATABASE_URL": dsn, "PRECALL_JWT_SECRET": JWT_SECRET, "TWILIO_AUTH_TOKEN": "test-auth-token",
                "PRECALL_TWILIO_STATUS_CALLBACK_URL": STATUS_CALLBACK_URL})
    env.update(overrides)
    return {k: v for k, v in env.items() if v != ""}


@pytest.fixture
def start_api() -> Iterator[Callable[..., ApiProcess]]:
    started: list[ApiProcess] = []

    def start(dsn: str, **overrides: str) -> ApiProcess:
        api = ApiProcess(api_env(dsn, **overrides))
        started.append(api)
        return api

    yield start
    for api in started:
        api.stop()


def user_token(user_id: str, secret: str = JWT_SECRET, expires_in: float = 3600, **claims: object) -> str:
    import jwt

    payload = {"sub": user_id, "exp": int(time.time() + expires_in), **claims}
    return jwt.encode(payload, secret, algorithm="HS256")


# --- layers ----------------------------------------------------------------------------------

# A test that reaches none of these (directly or through other fixtures) needs no PostgreSQL and
# no long-running process: it is in the unit layer, `make test-unit` (pytest -m unit).
NEEDS_A_SERVER = {"pg_server", "template_db", "db", "empty_db", "conn", "make", "start_dispatcher",
                  "start_api", "dispatcher_env", "api", "seeded_api", "webhook_receiver"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not NEEDS_A_SERVER & set(getattr(item, "fixturenames", ())) and not item.get_closest_marker("integration"):
            item.add_marker(pytest.mark.unit)
