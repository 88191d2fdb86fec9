import pytest
"""Configuration: base URLs are settings, `log` is only an explicit choice, bad setup is one line."""

import os
import subprocess
from pathlib import Path

from firebase_admin import messaging

from plugins.processes import precall_cli

from precall.config import Config


def test_pinned_firebase_admin_still_has_the_endpoint_we_override() -> None:
    # PRECALL_FCM_BASE_URL works by setting _MessagingService._fcm_url (no public setting exists).
    assert messaging._MessagingService.FCM_URL == "https://fcm.googleapis.com/v1/projects/{0}/messages:send"
    assert "self._fcm_url" in Path(messaging.__file__).read_text()


def _dispatcher(env_overrides: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRECALL_", "TWILIO_", "GOOGLE_"))}
    env["DATABASE_URL"] = "postgresql://nobody@127.0.0.1:1/none"
    env["PRECALL_RECEIPT_SECRET"] = "r" * 32
    env.update(env_overrides)
    return precall_cli("dispatcher", env=env, timeout=30)


@pytest.mark.integration  # a child process or a local server: not the unit layer
def test_fcm_without_credentials_refuses_to_start_in_one_line() -> None:
    out = _dispatcher({})
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "precall: PRECALL_PUSH_PROVIDER=fcm needs GOOGLE_APPLICATION_CREDENTIALS (a service-account JSON); "
        "set PRECALL_PUSH_PROVIDER=log to run without push"]


@pytest.mark.integration  # a child process or a local server: not the unit layer
def test_twilio_without_credentials_refuses_to_start() -> None:
    out = _dispatcher({"PRECALL_PUSH_PROVIDER": "log"})
    assert out.returncode == 1
    assert "TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, PRECALL_TWILIO_FROM" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.integration  # a child process or a local server: not the unit layer
def test_unknown_provider_and_bad_numbers_are_one_line() -> None:
    out = _dispatcher({"PRECALL_PUSH_PROVIDER": "apns"})
    assert out.returncode == 1 and out.stderr.strip() == "precall: PRECALL_PUSH_PROVIDER='apns' is not one of fcm, log"
    out = _dispatcher({"PRECALL_PUSH_PROVIDER": "log", "PRECALL_SMS_PROVIDER": "log", "PRECALL_POLL_INTERVAL_S": "soon"})
    assert out.returncode == 1 and "PRECALL_POLL_INTERVAL_S='soon' is not a number" in out.stderr


@pytest.mark.integration  # a child process or a local server: not the unit layer
def test_webhook_needs_a_secret() -> None:
    out = _dispatcher({"PRECALL_PUSH_PROVIDER": "log", "PRECALL_SMS_PROVIDER": "log",
                       "PRECALL_CALL_WEBHOOK_URL": "http://127.0.0.1:9/x"})
    assert out.returncode == 1 and "PRECALL_WEBHOOK_SECRET" in out.stderr


def test_defaults_are_the_real_providers() -> None:
    c = Config.from_env({"DATABASE_URL": "postgresql:///x", "PRECALL_RECEIPT_SECRET": "r" * 32})
    assert (c.push_provider, c.sms_provider) == ("fcm", "twilio")
    assert c.android_message == "notification"  # apps not yet updated for data messages keep working
    assert c.fcm_base_url == "https://fcm.googleapis.com" and c.twilio_base_url == "https://api.twilio.com"
    assert c.fallback_wait_s is None  # the database's precall.settings.fallback_wait, unless the deprecated variable is set


def test_systemd_unit_runs_the_daemon_directly() -> None:
    unit = (Path(__file__).parents[1] / "deploy" / "precall-dispatcher.service").read_text()
    lines = {line.split("=", 1)[0]: line.split("=", 1)[1] for line in unit.splitlines() if "=" in line and not line.startswith("#")}
    assert lines["Type"] == "notify" and lines["NotifyAccess"] == "main" and lines["Restart"] == "on-failure"
    assert lines["ExecStart"].endswith("precall dispatcher") and "WatchdogSec" in lines and "EnvironmentFile" in lines


@pytest.mark.integration  # a child process or a local server: not the unit layer
def test_a_burst_of_fcm_503s_does_not_exhaust_the_connection_pool(fake_fcm, tmp_path) -> None:
    """firebase-admin's own 503 retry leaks a pooled connection per retried answer: 150 sends
    answered 503 used to leave the pool (100) exhausted, and every later send timed out."""
    import asyncio
    import json
    from datetime import datetime, timedelta, timezone

    from precall.fakes.fake_fcm import service_account
    from precall.dispatcher.providers.base import PushRequest, Transient
    from precall.dispatcher.providers.fcm import FcmPushSender

    creds = tmp_path / "sa.json"
    creds.write_text(json.dumps(service_account(f"{fake_fcm.url}/token")))
    deadline = datetime.now(timezone.utc) + timedelta(minutes=5)

    async def run() -> list[object]:
        sender = FcmPushSender(str(creds), fake_fcm.url, 5.0)
        await sender.start()
        fake_fcm.state.fault_status = 503
        failed = await asyncio.gather(*(sender.send(PushRequest(f"tok-{i}", "t", "b", {}, deadline, "c"), timeout=5)
                                        for i in range(150)), return_exceptions=True)
        assert all(isinstance(f, Transient) and f.code == "UNAVAILABLE" for f in failed), failed[:3]
        fake_fcm.state.fault_status = None
        ok = await asyncio.gather(*(sender.send(PushRequest(f"ok-{i}", "t", "b", {}, deadline, "c"), timeout=2)
                                    for i in range(20)), return_exceptions=True)
        await sender.close()
        return ok

    ok = asyncio.run(run())
    assert not [o for o in ok if isinstance(o, Exception)], ok[:3]
    assert len(fake_fcm.state.sent) == 170  # one request per send: no hidden SDK retries either


@pytest.mark.integration  # a child process or a local server: not the unit layer
def test_sixty_four_pushes_in_flight_reuse_their_connections(fake_fcm, tmp_path) -> None:
    """The SDK's one httpx pool keeps 20 idle connections and closes the rest (and walks every
    connection per request): with 64 in flight nearly every send reconnected. precall's lanes
    (providers/http_lanes.py) keep them: 640 sends open about one connection per send in flight."""
    import asyncio
    import json
    from datetime import datetime, timedelta, timezone

    from precall.fakes.fake_fcm import service_account
    from precall.dispatcher.providers.base import PushRequest
    from precall.dispatcher.providers.fcm import FcmPushSender

    creds = tmp_path / "sa.json"
    creds.write_text(json.dumps(service_account(f"{fake_fcm.url}/token")))
    deadline = datetime.now(timezone.utc) + timedelta(minutes=5)
    fake_fcm.state.latency_s = 0.02

    async def run() -> None:
        sender = FcmPushSender(str(creds), fake_fcm.url, 5.0, in_flight=64)
        await sender.start()
        slots = asyncio.Semaphore(64)

        async def one(i: int) -> None:
            async with slots:
                await sender.send(PushRequest(f"tok-{i}", "t", "b", {}, deadline, "c"), timeout=5)

        await asyncio.gather(*(one(i) for i in range(640)))
        await sender.close()

    asyncio.run(run())
    assert len(fake_fcm.state.accepted()) == 640
    assert fake_fcm.connections <= 64 + 16, fake_fcm.connections  # + the token fetch and a lane's spare
