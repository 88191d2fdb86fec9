"""Refusals from SQL carry precall's own SQLSTATEs, mapped to one exception class each, once."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from precall import errors


def refusal(conn: psycopg.Connection, sql: str, *args: object) -> errors.Refused:
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(sql, args)
    mapped = errors.from_database(caught.value)
    assert mapped is not None, (caught.value.sqlstate, str(caught.value))
    return mapped


def test_each_manual_send_refusal_has_its_sqlstate_and_class(conn, make) -> None:
    claim = "SELECT * FROM precall.claim_manual_preview_v2(%s, 'support')"
    uid = make.user(fcm_token="tok-" + "f" * 40, push_enabled=True)
    assert isinstance(refusal(conn, claim, uuid.uuid4()), errors.NoSuchCall)
    cancelled = make.call(uid, in_seconds=3600, status="cancelled")
    assert isinstance(refusal(conn, claim, cancelled), errors.CallNotPending)
    conn.execute("ALTER TABLE scheduled_calls DISABLE TRIGGER USER")
    past = make.call(uid, in_seconds=-60)
    conn.execute("ALTER TABLE scheduled_calls ENABLE TRIGGER USER")
    assert isinstance(refusal(conn, claim, past), errors.CallTooLate)
    call = make.call(uid, in_seconds=3600)
    conn.execute(claim, (call,))  # now being sent by 'support'
    in_flight = refusal(conn, claim, call)
    assert isinstance(in_flight, errors.PreviewInFlight) and "being sent right now by support" in str(in_flight)
    conn.execute("UPDATE notification_logs SET status = 'sent', channel = 'push', sent_at = now() WHERE call_id = %s",
                 (call,))
    sent = refusal(conn, claim, call)
    assert isinstance(sent, errors.PreviewAlreadySent) and "use --force" in str(sent)
    assert isinstance(refusal(conn, "SELECT * FROM precall.kpis(now(), 'colour')"), errors.InvalidArgument)


def test_other_database_errors_are_not_refusals(conn) -> None:
    with pytest.raises(psycopg.Error) as caught:
        conn.execute("SELECT 1/0")
    assert errors.from_database(caught.value) is None


def test_the_tree_holds_provider_and_api_errors() -> None:
    from precall.dispatcher.providers.base import DeadToken

    assert issubclass(DeadToken, errors.ProviderError) and issubclass(errors.ProviderError, errors.PrecallError)
    assert issubclass(errors.ApiError, errors.PrecallError)
