"""Fixtures: precall as ops and support run it, in child processes — `precall dispatcher` against
the fake providers, `precall api` (uvicorn), and one-off `precall …` commands — plus the app's
JWTs and a polling wait."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from precall.fakes.fake_fcm import FakeFcmServer, service_account
from precall.fakes.fake_twilio import FakeTwilioServer
from plugins.providers import TWILIO_SID

# Signs the receipt tokens pushes carry; the API verifies them with the same value.
RECEIPT_SECRET = "test-receipt-secret-that-is-32-chars-or-more"

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
        "PRECALL_RECEIPT_SECRET": RECEIPT_SECRET,
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


# --- the HTTP API ---------------------------------------------------------------------------------

JWT_SECRET = "test-jwt-secret-that-is-at-least-32-chars"
STATUS_CALLBACK_URL = "https://hooks.example.com/twilio/status"
INBOUND_URL = "https://hooks.example.com/twilio/inbound"


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
                "PRECALL_TWILIO_STATUS_CALLBACK_URL": STATUS_CALLBACK_URL, "PRECALL_RECEIPT_SECRET": RECEIPT_SECRET,
                "PRECALL_TWILIO_INBOUND_URL": INBOUND_URL})
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
