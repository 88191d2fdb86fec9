"""schemathesis over /openapi.json: every operation, 50+ examples each, as a real signed-in user.

Checks: no 5xx, responses match the documented schemas and status codes. The Twilio webhook's
cases are signed the way Twilio signs them, so they reach the handler instead of stopping at 403.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from twilio.request_validator import RequestValidator

import httpx
import psycopg

from plugins.database import Factory, fresh_db
from plugins.processes import INBOUND_URL, STATUS_CALLBACK_URL, ApiProcess, api_env, user_token
from precall.api.app import create_app
from precall.config import ApiConfig
from precall.webhook_signature import sign

try:  # where schemathesis keeps its "no body" marker
    from schemathesis.core import NotSet
except ImportError:  # pragma: no cover - older schemathesis
    from schemathesis.types import NotSet  # type: ignore[no-redef]

WEBHOOK_SECRET = "whsec-fuzz"


@pytest.fixture(scope="module")
def seeded_api(pg_server, template_db):
    with fresh_db(pg_server, template_db) as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            make = Factory(conn)
            uid = make.user(fcm_token="t" * 40, push_enabled=True, platform="ios", coach="Max")
            call = make.call(uid, in_seconds=7200)
            # The call whose outcome the fuzzed call system reports (the push's call may be skipped
            # by a fuzzed action first, and a cancelled call takes no outcome: 409).
            reported = make.call(uid, in_seconds=7300)
            push = conn.execute(
                "INSERT INTO notification_logs (user_id, call_id, type, channel, status, sent_at, attempted_at)"
                " VALUES (%s, %s, 'preview_push', 'push', 'sent', now(), now()) RETURNING id", (uid, call)).fetchone()
        api = ApiProcess(api_env(dsn, PRECALL_WEBHOOK_SECRET=WEBHOOK_SECRET))
        try:
            yield api, uid, str(push[0]), str(reported)
        finally:
            api.stop()


# The document the app serves (test_served_document_is_the_one_fuzzed checks they are the same);
# loaded at import because schemathesis' lazy fixture loader does not run under pytest 9.
DOCUMENT = create_app(ApiConfig(database_url="postgresql:///unused", jwt_secret="x" * 32)).openapi()
schema = schemathesis.openapi.from_dict(DOCUMENT)
OPERATIONS = [(m, p) for p, item in DOCUMENT["paths"].items() for m in item]
SEEN: dict[str, list[int]] = {}


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _twilio_signature(body: Any, url: str) -> str:
    params = {k: str(v) for k, v in body.items() if v is not None} if isinstance(body, dict) else {}
    return RequestValidator("test-auth-token").compute_signature(url, params)


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi(case, seeded_api) -> None:
    api, uid, push_id, call_id = seeded_api
    # Random ids are all 404s: every other valid one is swapped for the user's real push (call).
    generated = (case.path_parameters or {}).get("notification_id")
    if isinstance(generated, str) and _is_uuid(generated) and uuid.UUID(generated).int % 2 == 0:
        case.path_parameters["notification_id"] = push_id
    generated = (case.path_parameters or {}).get("call_id")
    if isinstance(generated, str) and _is_uuid(generated) and uuid.UUID(generated).int % 2 == 0:
        case.path_parameters["call_id"] = call_id
    headers = {"Authorization": f"Bearer {user_token(uid)}"}
    extra: dict[str, Any] = {}
    if case.path.endswith("/outcome"):
        # The call system signs the raw body: send exactly the bytes that were signed.
        body = case.body
        raw = b"" if isinstance(body, NotSet) else body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"X-Precall-Signature": sign(WEBHOOK_SECRET, raw), "Content-Type": "application/json"}
        extra["data"] = raw
    if case.path.endswith("/webhooks/twilio/status"):
        headers = {"X-Twilio-Signature": _twilio_signature(case.body, STATUS_CALLBACK_URL)}
    if case.path.endswith("/webhooks/twilio/inbound"):
        headers = {"X-Twilio-Signature": _twilio_signature(case.body, INBOUND_URL)}
    response = case.call_and_validate(base_url=api.url, headers=headers, **extra)
    SEEN.setdefault(case.operation.label, []).append(response.status_code)


@pytest.mark.integration
def test_the_fuzzing_reached_the_handlers() -> None:
    """An all-401 (or all-403) run proves nothing: every operation must have answered 2xx too,
    over at least 50 requests (GET /healthz takes no input: hypothesis stops once it has tried
    the few requests there are; so does GET of the preferences)."""
    assert len(SEEN) == len(OPERATIONS), sorted(SEEN)
    for operation, statuses in SEEN.items():
        print(operation, len(statuses), sorted(set(statuses)))
        assert any(200 <= s < 300 for s in statuses), (operation, sorted(set(statuses)))
        if operation not in ("GET /healthz", "GET /api/v1/users/notification-preferences"):
            assert len(statuses) >= 50, (operation, len(statuses))


def test_served_document_is_the_one_fuzzed(seeded_api) -> None:
    api, _, _, _ = seeded_api
    assert httpx.get(f"{api.url}/openapi.json").json() == DOCUMENT
