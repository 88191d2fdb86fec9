"""PreviewSender on its own: fake providers, an in-memory outcome store and an injected clock, so
every branch of one send (the path, the text, retries up to the deadline, the fallback, the
outcome written) runs in milliseconds, without PostgreSQL, child processes or sleeps.
The same branches run end to end, against the database and the fake FCM/Twilio servers, in
test_dispatcher.py, test_fallback_and_ops.py and test_channel_path.py."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from precall import receipt_tokens
from precall.config import Config
from precall.dispatcher.providers.fcm import build_message
from precall.dispatcher.providers.base import (
    Accepted, DeadToken, PushRequest, SmsOptedOut, SmsRequest, Transient,
)
from precall.dispatcher.push_targets import PushTarget
from precall.dispatcher.send_preview import ClaimedPreview, PreviewSender
from precall.dispatcher.write_back import SendPolicy
from precall.templates.render import Renderer

pytestmark = pytest.mark.unit

T0 = datetime(2026, 12, 3, 6, 55, tzinfo=timezone.utc)


class Clock:
    """The sender's clock and sleep: time moves only when the sender sleeps (or a test says so)."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += timedelta(seconds=seconds)


@dataclass
class FakePush:
    """Answers each send with the next outcome in `script` (an exception to raise, or accepted)."""

    clock: Clock
    script: list[Exception | None] = field(default_factory=list)
    sent: list[tuple[datetime, PushRequest, float]] = field(default_factory=list)
    name: str = "fake-fcm"

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def send(self, request: PushRequest, timeout: float) -> Accepted:
        self.sent.append((self.clock(), request, timeout))
        outcome = self.script.pop(0) if self.script else None
        if outcome is not None:
            raise outcome
        return Accepted(f"projects/p/messages/{len(self.sent)}")


@dataclass
class FakeSms:
    clock: Clock
    script: list[Exception | None] = field(default_factory=list)
    sent: list[tuple[datetime, SmsRequest]] = field(default_factory=list)
    name: str = "fake-twilio"

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def send(self, request: SmsRequest, timeout: float) -> Accepted:
        self.sent.append((self.clock(), request))
        outcome = self.script.pop(0) if self.script else None
        if outcome is not None:
            raise outcome
        return Accepted("SM" + f"{len(self.sent)}".rjust(32, "0"))


@dataclass
class Outcomes:
    """The outcome store, in memory: what the sender would have written, in order."""

    fallback_wait: float | None = None
    devices_left: int = 0
    writes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    renewed: list[uuid.UUID] = field(default_factory=list)
    cancelled: set[uuid.UUID] = field(default_factory=set)  # rows cancelled after their claim
    attempts: list[uuid.UUID] = field(default_factory=list)  # start_attempt calls, in order

    async def start_attempt(self, notification_id: uuid.UUID, worker: str) -> bool:
        self.attempts.append(notification_id)
        return notification_id not in self.cancelled

    async def sent(self, row: dict[str, Any]) -> None:
        self.writes.append(("sent", row))

    async def unsent(self, params: dict[str, Any]) -> uuid.UUID | None:
        self.writes.append(("unsent", params))
        return uuid.uuid4() if params.get("fallback_reason") else None

    async def deliveries(self, notification_id: uuid.UUID, worker: str, rows: list[dict[str, Any]]) -> int | None:
        self.writes.append(("deliveries", {"id": notification_id, "rows": rows}))
        return self.devices_left

    async def opt_out_sms(self, user_id: uuid.UUID, phone: str) -> None:
        self.writes.append(("opt_out_sms", {"user_id": user_id, "phone": phone}))

    async def renew_lease(self, notification_id: uuid.UUID, worker: str) -> None:
        self.renewed.append(notification_id)  # a one-off sender's own renewal while it backs off

    async def policy(self) -> SendPolicy | None:
        return SendPolicy(self.fallback_wait) if self.fallback_wait is not None else None

    async def sms_budget_reached(self, currency: str) -> bool:
        return False

    def kinds(self) -> list[str]:
        return [k for k, _ in self.writes]


def preview(**overrides: Any) -> ClaimedPreview:
    """Day 12 of a fitness check-in with Coach Max, call 5 minutes after T0, due now."""
    row = ClaimedPreview(
        id=uuid.uuid4(), call_id=uuid.uuid4(), user_id=uuid.uuid4(), type="preview_push", parent_id=None,
        send_at=T0, scheduled_at=T0 + timedelta(minutes=5), attempts=1, topic="fitness_checkin",
        phone_number="+15555550100", locale="en", coach_name="Max", current_streak=12, fcm_token="tok-1",
        platform="android", push_enabled=True, notification_pref="push_only", sms_opted_out=False,
        devices=(PushTarget(1, "tok-1", "android"),))
    if overrides.get("fcm_token", "tok-1") is None:
        overrides["devices"] = ()  # no device left: the users row's summary has no token either
    return replace(row, **overrides)


@dataclass
class Rig:
    clock: Clock
    push: FakePush
    sms: FakeSms
    outcomes: Outcomes
    sender: PreviewSender

    def run(self, row: ClaimedPreview, channel: str | None = None) -> None:
        asyncio.run(self.sender.process(row, channel))


def rig(push: list[Exception | None] | None = None, sms: list[Exception | None] | None = None,
        fallback_wait: float | None = None, **config: Any) -> Rig:
    clock = Clock()
    fake_push, fake_sms = FakePush(clock, list(push or [])), FakeSms(clock, list(sms or []))
    outcomes = Outcomes(fallback_wait)
    sender = PreviewSender(None, fake_push, fake_sms, Renderer(), Config(database_url="unused", **config), "w-1",
                           outcomes=outcomes, clock=clock, sleep=clock.sleep)
    if fallback_wait is not None:
        asyncio.run(sender.follow_policy())
    return Rig(clock, fake_push, fake_sms, outcomes, sender)


def test_a_push_user_gets_one_push_with_the_minutes_left_and_it_is_recorded_sent() -> None:
    r = rig()
    row = preview()
    r.run(row)
    [(at, request, _)] = r.push.sent
    assert request.title == "Coach Max is calling in 5 min! 💪"
    assert request.token == "tok-1" and request.collapse_id == str(row.call_id)
    assert request.data["notification_id"] == str(row.id) and request.deadline == row.scheduled_at
    assert r.sms.sent == []
    [(kind, written)] = r.outcomes.writes
    assert kind == "sent" and written["type"] == "preview_push" and written["channel"] == "push"
    assert written["attempted_at"] == T0 and written["fallback_at"] is None


def test_path_c_plans_the_fallback_at_the_databases_wait() -> None:
    r = rig(fallback_wait=12)
    r.run(preview(notification_pref="push_and_sms"))
    [(kind, written)] = r.outcomes.writes
    assert kind == "sent" and written["fallback_at"] == T0 + timedelta(seconds=12)
    assert r.sms.sent == []  # the SMS is a row of its own, sent when it is due


def test_the_deprecated_variable_overrides_the_database() -> None:
    r = rig(fallback_wait=12, fallback_wait_s=40.0)
    r.run(preview(notification_pref="push_and_sms"))
    assert r.outcomes.writes[0][1]["fallback_at"] == T0 + timedelta(seconds=40)


def test_an_sms_user_gets_one_segment_with_its_cost() -> None:
    r = rig()
    r.run(preview(notification_pref="sms_only"))
    [(_, request)] = r.sms.sent
    assert request.to == "+15555550100"
    assert request.body == ("Coach Max calling in 5 min! Day 12 - your fitness goal check-in. Answer! "
                            "Reply 2: +10 min, 3: skip")
    [(kind, written)] = r.outcomes.writes
    assert kind == "sent" and written["type"] == "preview_sms" and written["sms_segments"] == 1
    assert (written["cost"], written["currency"]) == (Decimal("0.0075"), "USD")


def test_no_channel_is_skipped_without_a_provider_call() -> None:
    r = rig()
    r.run(preview(fcm_token=None, phone_number=None))
    assert r.push.sent == [] and r.sms.sent == []
    [(kind, written)] = r.outcomes.writes
    assert kind == "unsent" and written["status"] == "skipped" and written["reason"].startswith("no_channel")


def test_a_dead_token_disables_push_and_the_sms_goes_at_once() -> None:
    r = rig(push=[DeadToken("UNREGISTERED", "Requested entity was not found.")])
    row = preview(notification_pref="push_and_sms")
    r.run(row)
    assert r.outcomes.kinds() == ["deliveries", "unsent", "sent"]
    failed = r.outcomes.writes[1][1]
    assert failed["reason"].startswith("token_dead: UNREGISTERED") and failed["fallback_reason"]
    [(at, sms)] = r.sms.sent
    assert at == T0 and r.outcomes.writes[2][1]["type"] == "fallback_sms"


def test_fcm_unavailable_is_retried_until_the_fallback_would_have_gone_then_the_sms_goes() -> None:
    """503 after 503: backoff retries, never past attempted_at + fallback_wait; then failed as
    fcm_unavailable and the fallback SMS at once (not 30 s later)."""
    r = rig(push=[Transient("UNAVAILABLE", "503")] * 100, fallback_wait=30)
    r.run(preview(notification_pref="push_and_sms"))
    assert len(r.push.sent) > 3
    assert all(at < T0 + timedelta(seconds=30) for at, _, _ in r.push.sent)
    assert all(timeout <= 5.0 for _, _, timeout in r.push.sent)
    kinds = r.outcomes.kinds()
    assert kinds == ["deliveries", "unsent", "sent"] and len(r.outcomes.renewed) == len(r.push.sent) - 1
    failed = r.outcomes.writes[-2][1]
    assert failed["status"] == "failed" and failed["reason"].startswith("fcm_unavailable: UNAVAILABLE")
    [(sms_at, _)] = r.sms.sent
    assert sms_at < T0 + timedelta(seconds=30)


def test_a_push_only_user_is_retried_until_the_call_and_no_sms() -> None:
    r = rig(push=[Transient("UNAVAILABLE", "503")] * 1000)
    r.run(preview())
    assert r.push.sent[-1][0] < T0 + timedelta(minutes=5)
    assert r.sms.sent == []
    assert r.outcomes.writes[-1][1]["reason"].startswith("fcm_unavailable")


def test_one_transient_error_then_accepted_is_one_sent_row() -> None:
    r = rig(push=[Transient("INTERNAL", "500"), None])
    r.run(preview())
    assert len(r.push.sent) == 2 and r.clock.slept and r.outcomes.kinds()[-1] == "sent"
    assert r.outcomes.writes[-1][1]["attempted_at"] == T0


def test_an_sms_less_than_5_seconds_before_the_call_is_not_sent() -> None:
    r = rig()
    r.clock.now = T0 + timedelta(minutes=5) - timedelta(seconds=3)
    r.run(preview(notification_pref="sms_only"))
    assert r.sms.sent == []
    [(kind, written)] = r.outcomes.writes
    assert written["status"] == "skipped" and written["reason"].startswith("too_late_for_sms")


def test_stop_at_twilio_marks_the_number_opted_out() -> None:
    r = rig(sms=[SmsOptedOut("21610", "Attempt to send to unsubscribed recipient")])
    row = preview(notification_pref="sms_only")
    r.run(row)
    assert r.outcomes.kinds() == ["opt_out_sms", "unsent"]
    assert r.outcomes.writes[1][1]["reason"].startswith("twilio_error: 21610")


def test_a_number_that_is_not_e164_fails_without_a_provider_call() -> None:
    r = rig()
    r.run(preview(notification_pref="sms_only", phone_number="0612345678"))
    assert r.sms.sent == []
    assert r.outcomes.writes[0][1]["reason"].startswith("bad_phone")


def test_an_unexpected_error_fails_this_row_and_does_not_raise() -> None:
    r = rig(push=[RuntimeError("boom")])
    r.run(preview())
    [(kind, written)] = r.outcomes.writes
    assert written["status"] == "failed" and written["reason"] == "internal_error: RuntimeError: boom"


def test_a_manual_push_to_a_user_without_a_token_fails() -> None:
    r = rig()
    r.run(preview(fcm_token=None), channel="push")
    assert r.push.sent == []
    assert r.outcomes.writes[0][1]["reason"].startswith("no_push_token")


def test_fcm_retry_after_is_a_floor_under_the_backoff() -> None:
    """FCM asks clients to honour Retry-After on 429/503: the retry waits 3 s, not 0.5 s."""
    r = rig(push=[Transient("QUOTA_EXCEEDED", "429", retry_after_s=3.0), None])
    r.run(preview())
    assert len(r.push.sent) == 2 and r.clock.slept == [3.0]
    assert r.push.sent[1][0] - r.push.sent[0][0] == timedelta(seconds=3)
    assert r.outcomes.kinds() == ["sent"]


def test_a_retry_after_past_the_fallback_sends_the_sms_at_once() -> None:
    """Path C waits at most fallback_wait for the push: FCM asking for 60 s means the SMS now."""
    r = rig(push=[Transient("UNAVAILABLE", "503", retry_after_s=60.0)], fallback_wait=30)
    r.run(preview(notification_pref="push_and_sms"))
    assert len(r.push.sent) == 1 and r.clock.slept == []
    assert r.outcomes.kinds() == ["deliveries", "unsent", "sent"] and len(r.sms.sent) == 1


def test_twilio_20429_is_retried_while_the_sms_can_land_before_the_call() -> None:
    """Twilio's 429 creates no message, so a retry cannot double it."""
    r = rig(sms=[Transient("20429", "Too Many Requests"), Transient("20429", "Too Many Requests"), None])
    r.run(preview(notification_pref="sms_only"))
    assert len(r.sms.sent) == 3 and len(r.clock.slept) == 2
    [(kind, written)] = r.outcomes.writes
    assert kind == "sent" and written["attempted_at"] == T0  # lateness is the first attempt's


def test_twilio_20429_near_the_call_fails_the_row() -> None:
    r = rig(sms=[Transient("20429", "Too Many Requests")] * 10)
    r.clock.now = T0 + timedelta(minutes=5) - timedelta(seconds=6.5)
    r.run(preview(notification_pref="sms_only"))
    assert len(r.sms.sent) == 1
    [(kind, written)] = r.outcomes.writes
    assert written["status"] == "failed" and written["reason"].startswith("twilio_error: 20429")


# --- several devices (issue 17) -------------------------------------------------------------------

TWO = (PushTarget(1, "tok-android", "android"), PushTarget(2, "tok-ios", "ios"))


def test_each_device_gets_its_own_push_with_its_own_receipt_token_and_one_row_is_written() -> None:
    r = rig(receipt_secret="s" * 32)
    row = preview(devices=TWO)
    r.run(row)
    requests = [req for _, req, _ in r.push.sent]
    assert sorted(req.token for req in requests) == ["tok-android", "tok-ios"]
    assert {req.collapse_id for req in requests} == {str(row.call_id)}
    tokens = {req.token: req.data["receipt_token"] for req in requests}
    assert receipt_tokens.verify(tokens["tok-ios"], row.id, ["s" * 32], T0) == 2
    assert receipt_tokens.verify(tokens["tok-android"], row.id, ["s" * 32], T0) == 1
    [(kind, written)] = r.outcomes.writes
    assert kind == "sent" and [d["status"] for d in written["devices"]] == ["sent", "sent"]


def test_a_device_that_took_it_before_a_crash_is_not_sent_again() -> None:
    r = rig()
    r.run(preview(devices=(replace(TWO[0], sent_provider_id="projects/p/messages/earlier"), TWO[1])))
    assert [req.token for _, req, _ in r.push.sent] == ["tok-ios"]
    [(kind, written)] = r.outcomes.writes
    assert kind == "sent"


def test_a_dead_token_on_one_of_two_devices_is_no_reason_for_an_sms() -> None:
    r = rig(push=[DeadToken("UNREGISTERED", "Requested entity was not found."), None])
    r.run(preview(notification_pref="push_and_sms", devices=TWO))
    assert r.sms.sent == []
    [(kind, written)] = r.outcomes.writes
    assert kind == "sent" and written["fallback_at"] is not None  # Path C still waits for a receipt
    assert sorted(d["status"] for d in written["devices"]) == ["dead", "sent"]


def test_every_device_dead_but_one_registered_meanwhile_means_no_fallback_sms() -> None:
    dead = DeadToken("UNREGISTERED", "Requested entity was not found.")
    r = rig(push=[dead, dead])
    r.outcomes.devices_left = 1
    r.run(preview(notification_pref="push_and_sms", devices=TWO))
    assert r.sms.sent == []
    assert r.outcomes.kinds() == ["deliveries", "unsent"]
    assert r.outcomes.writes[1][1]["reason"].startswith("token_dead") and not r.outcomes.writes[1][1]["fallback_reason"]


def test_android_data_messages_only_for_android_devices() -> None:
    r = rig(android_message="data")
    r.run(preview(devices=TWO))
    by_token = {req.token: req for _, req, _ in r.push.sent}
    assert by_token["tok-android"].data_only and not by_token["tok-ios"].data_only
    message = build_message(by_token["tok-android"])
    assert message.notification is None and message.apns is None and message.data["title"].startswith("Coach Max")


def test_a_switched_off_channel_skips_the_preview_and_never_moves_it() -> None:
    r = rig()
    r.sender.policy = SendPolicy(push_enabled=False)
    r.run(preview(notification_pref="push_and_sms"))
    assert r.push.sent == [] and r.sms.sent == []
    [(kind, written)] = r.outcomes.writes
    assert written["status"] == "skipped" and written["reason"].startswith("channel_disabled: push")


def test_receipt_tokens_refuse_what_they_were_not_made_for() -> None:
    nid, other = uuid.uuid4(), uuid.uuid4()
    token = receipt_tokens.issue("a" * 32, nid, 7, T0)
    assert receipt_tokens.verify(token, nid, ["a" * 32], T0) == 7
    assert receipt_tokens.verify(token, nid, [None, "a" * 32], T0 + timedelta(minutes=59)) == 7  # rotation
    assert receipt_tokens.verify(token, nid, ["a" * 32], T0 + timedelta(minutes=61)) is None  # an hour after the call
    assert receipt_tokens.verify(token, other, ["a" * 32], T0) is None
    assert receipt_tokens.verify(token, nid, ["b" * 32], T0) is None
    assert receipt_tokens.verify(token.replace("r1.7.", "r1.8."), nid, ["a" * 32], T0) is None
    assert receipt_tokens.verify(token + "x", nid, ["a" * 32], T0) is None
    assert receipt_tokens.verify("", nid, ["a" * 32], T0) is None


def test_every_push_carries_its_actions_for_both_platforms() -> None:
    r = rig()
    r.run(preview(devices=TWO))
    for _, request, _ in r.push.sent:
        assert request.data["actions"] == "call_now,snooze,skip" and request.data["snooze_minutes"] == "10"
        assert request.data["click_action"] == "PRECALL_CALL" and request.data["route"] == "incoming_call"
        message = build_message(request)
        assert message.apns.payload.aps.category == "PRECALL_CALL"


def test_an_sms_arm_texts_a_push_user_but_never_an_opted_out_one() -> None:
    r = rig()
    r.run(preview(arm_channel="sms"))
    assert len(r.sms.sent) == 1 and r.push.sent == []
    r = rig()
    r.run(preview(arm_channel="sms", sms_opted_out=True))
    assert r.sms.sent == [] and len(r.push.sent) == 1  # the user's own rule
    [(kind, written)] = r.outcomes.writes
    assert kind == "sent" and "arm_channel_not_used" in written["reason"]


def test_a_variant_arm_changes_the_texts_and_a_missing_one_falls_back() -> None:
    r = rig()
    r.run(preview(variant="warm"))
    [(_, request, _)] = r.push.sent
    assert request.title == "Max saved you a spot: your call is in 5 min! 💪"
    r = rig()
    r.run(preview(variant="nope"))
    [(_, request, _)] = r.push.sent
    assert request.title == "Coach Max is calling in 5 min! 💪"


def test_a_row_claimed_ahead_leaves_at_its_send_at_not_before() -> None:
    """claim_ahead: the row comes 150 ms before its send_at; the request leaves on the instant,
    after the database re-read it (one start_attempt), and attempted_at is the instant."""
    r = rig()
    row = preview(send_at=T0 + timedelta(milliseconds=150))
    r.run(row)
    [(at, _, _)] = r.push.sent
    assert at == row.send_at
    assert r.outcomes.attempts == [row.id]
    [(kind, written)] = r.outcomes.writes
    assert kind == "sent" and written["attempted_at"] == row.send_at


def test_a_row_cancelled_after_its_claim_is_not_sent() -> None:
    """A cancel inside the claim-ahead window: start_attempt finds the row gone; no provider call
    and no write (the cancel wrote the row's outcome)."""
    r = rig()
    row = preview(send_at=T0 + timedelta(milliseconds=150))
    r.outcomes.cancelled.add(row.id)
    r.run(row)
    assert r.push.sent == [] and r.sms.sent == []
    assert r.outcomes.writes == []


def test_a_retried_push_re_reads_the_row_once() -> None:
    """The re-read is per row, not per provider call: a retry after a transient error does not
    ask again (the row is attempted: a cancel can no longer stop it)."""
    r = rig(push=[Transient("UNAVAILABLE", "503"), None])
    row = preview()
    r.run(row)
    assert len(r.push.sent) == 2
    assert r.outcomes.attempts == [row.id]
