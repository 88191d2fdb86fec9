"""Both FCM transports (PRECALL_FCM_TRANSPORT=direct, the default, and sdk) against the truthful
fake: the same request body, and every documented FCM answer mapped to the same precall error
(dead tokens, bad payloads, quota with Retry-After, 5xx, timeouts, a revoked OAuth token,
refused credentials)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from firebase_admin.messaging import _MessagingService

from precall.dispatcher.providers.base import Accepted, PushRequest
from precall.dispatcher.providers.fcm import FcmPushSender, build_message
from precall.dispatcher.providers.fcm_direct import FcmDirectSender, message_body
from precall.fakes import fake_fcm as fake_fcm_module
from precall.fakes.fake_fcm import FakeFcmServer, service_account

TRANSPORTS = {"direct": FcmDirectSender, "sdk": FcmPushSender}
# One deadline for every request of a run: apns-expiration is its epoch second, and two requests
# built a moment apart across a second boundary differed by one (a CI failure).
DEADLINE = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=1)


def request(token: str = "tok-1", **overrides: Any) -> PushRequest:
    req = PushRequest(token=token, title="Coach Max is calling in 5 min! 💪", body="Day 12: your fitness check-in.",
                      data={"route": "incoming_call", "call_id": "c-1", "actions": "call_now,snooze,skip"},
                      deadline=DEADLINE,
                      collapse_id="5f0c3f5e-call", category="PRECALL_CALL")
    return dataclasses.replace(req, **overrides)


@pytest.mark.unit
@pytest.mark.parametrize("overrides", [{}, {"category": None}, {"data_only": True}, {"collapse_id": "x" * 80},
                                       {"title": "Réponds «vite» ’", "data": {}}])
def test_the_direct_body_is_the_one_firebase_admin_encodes(overrides: dict[str, Any]) -> None:
    req = request(**overrides)
    assert message_body(req) == _MessagingService.encode_message(build_message(req))


def _credentials(fake: FakeFcmServer, tmp_path: Path) -> str:
    path = tmp_path / "sa.json"
    path.write_text(json.dumps(service_account(f"{fake.url}/token")))
    return str(path)


def outcome(result: object) -> tuple[str, ...]:
    if isinstance(result, Accepted):
        return ("Accepted", result.provider_id.split("/messages/")[0])
    code = getattr(result, "code", "?")
    retry_after = getattr(result, "retry_after_s", None)
    return (type(result).__name__, str(code), str(retry_after))


def run_sends(transport: str, fake: FakeFcmServer, creds: str, tokens: list[str], timeout: float = 5.0) -> list[tuple[str, ...]]:
    async def run() -> list[tuple[str, ...]]:
        sender = TRANSPORTS[transport](creds, fake.url, 5.0, in_flight=8)
        await sender.start()
        try:
            results = await asyncio.gather(*(sender.send(request(t), timeout=timeout) for t in tokens),
                                           return_exceptions=True)
        finally:
            await sender.close()
        return [outcome(r) for r in results]
    return asyncio.run(run())


EXPECTED = {
    "tok-ok": ("Accepted", "projects/precall-test"),
    "dead-1": ("DeadToken", "UNREGISTERED", "None"),
    "mismatch-1": ("DeadToken", "SENDER_ID_MISMATCH", "None"),
    "invalid-1": ("DeadToken", "INVALID_ARGUMENT", "None"),
    "badpayload-1": ("Permanent", "INVALID_ARGUMENT", "None"),
    "unavailable-1": ("Transient", "UNAVAILABLE", "1.0"),
    "quota-1": ("Transient", "RESOURCE_EXHAUSTED", "1.0"),
}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_every_documented_answer_maps_to_the_same_error(transport: str, fake_fcm: FakeFcmServer, tmp_path: Path) -> None:
    creds = _credentials(fake_fcm, tmp_path)
    got = dict(zip(EXPECTED, run_sends(transport, fake_fcm, creds, list(EXPECTED))))
    assert got == EXPECTED
    assert len(fake_fcm.state.arrived()) == len(EXPECTED)  # one request each: no hidden retries
    fake_fcm.state.fault_status = 500
    assert run_sends(transport, fake_fcm, creds, ["tok-2"]) == [("Transient", "INTERNAL", "None")]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_slow_fcm_is_a_timeout(transport: str, fake_fcm: FakeFcmServer, tmp_path: Path) -> None:
    fake_fcm.state.slow_s = 2.0
    [(kind, code, _)] = run_sends(transport, fake_fcm, _credentials(fake_fcm, tmp_path), ["slow-1"], timeout=0.5)
    assert (kind, code) == ("Transient", "TIMEOUT")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_revoked_access_token_is_refreshed_once_and_the_push_goes(transport: str, fake_fcm: FakeFcmServer,
                                                                    tmp_path: Path) -> None:
    creds = _credentials(fake_fcm, tmp_path)

    async def run() -> list[tuple[str, ...]]:
        sender = TRANSPORTS[transport](creds, fake_fcm.url, 5.0)
        await sender.start()
        first = await sender.send(request("tok-a"), timeout=5)
        fake_fcm.state.revoke_tokens()
        second = await sender.send(request("tok-b"), timeout=5)
        await sender.close()
        return [outcome(first), outcome(second)]

    before = fake_fcm.state.token_requests
    assert asyncio.run(run()) == [("Accepted", "projects/precall-test")] * 2
    assert fake_fcm.state.unauthenticated == 1 and fake_fcm.state.token_requests >= before + 2
    assert [r.message["token"] for r in fake_fcm.state.accepted()] == ["tok-a", "tok-b"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_refused_credentials_are_a_permanent_auth_error_and_nothing_is_sent(transport: str, fake_fcm: FakeFcmServer,
                                                                           tmp_path: Path) -> None:
    account = fake_fcm.credentials()
    del fake_fcm_module._TRUSTED_KEYS[account["client_email"]]  # the key was deleted in the console
    path = tmp_path / "deleted.json"
    path.write_text(json.dumps(account))
    [(kind, code, _)] = run_sends(transport, fake_fcm, str(path), ["tok-1"])
    assert (kind, code) == ("Permanent", "AUTH")
    assert fake_fcm.state.arrived() == []


def test_both_transports_put_the_same_message_on_the_wire(fake_fcm: FakeFcmServer, tmp_path: Path) -> None:
    creds = _credentials(fake_fcm, tmp_path)
    for transport in TRANSPORTS:
        run_sends(transport, fake_fcm, creds, ["tok-same"])
    direct, sdk = (r.message for r in fake_fcm.state.accepted())
    for m in (direct, sdk):
        m["android"].pop("ttl")  # seconds left: may differ by one between the two sends
    assert direct == sdk


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_burst_of_503s_leaves_the_connections_usable(transport: str, fake_fcm: FakeFcmServer, tmp_path: Path) -> None:
    creds = _credentials(fake_fcm, tmp_path)

    async def run() -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
        sender = TRANSPORTS[transport](creds, fake_fcm.url, 5.0, in_flight=16)
        await sender.start()
        fake_fcm.state.fault_status = 503
        failed = await asyncio.gather(*(sender.send(request(f"tok-{i}"), timeout=5) for i in range(150)),
                                      return_exceptions=True)
        fake_fcm.state.fault_status = None
        ok = await asyncio.gather(*(sender.send(request(f"ok-{i}"), timeout=2) for i in range(20)),
                                  return_exceptions=True)
        await sender.close()
        return [outcome(f) for f in failed], [outcome(o) for o in ok]

    failed, ok = asyncio.run(run())
    assert set(failed) == {("Transient", "UNAVAILABLE", "1.0")}
    assert set(ok) == {("Accepted", "projects/precall-test")}
    assert len(fake_fcm.state.arrived()) == 170
