"""Sends one claimed preview: picks the path, renders, calls the provider, writes the outcome back."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from collections.abc import Awaitable, Callable
from typing import Any

from precall import receipt_tokens, retry
from precall.dispatcher.db import Database
from precall.dispatcher.channel import Path, Reachability, select_notification_path, valid_phone
from precall.config import Config
from precall.dispatcher.liveness import Liveness
from precall.templates.messages import MessageInput, minutes_left
from precall.dispatcher.metrics import Metrics
from precall.dispatcher.pacing import Pacer
from precall.dispatcher.providers.base import (
    DeadToken, ProviderError, PushRequest, PushSender, SmsOptedOut, SmsRequest, SmsSender, Transient,
)
from precall.templates.render import RenderedPreview, Renderer
from precall.templates.sms_pricing import estimate
from precall.dispatcher.push_targets import PushTarget
from precall.dispatcher.write_back import DatabaseOutcomes, OutcomeStore, SendPolicy

log = logging.getLogger("precall.dispatcher")

# Below this, Twilio's ValidityPeriod would be meaningless and the SMS would land with the call.
MIN_SMS_SECONDS = 5.0
# A row claimed ahead is re-read (precall.start_attempts) this long before its send_at, then sent
# on the instant: the round trip (~2 ms, p50 lateness at the fake 2.9 ms with the re-read on the
# instant, bench/throughput.py --spread-s 60) is off the send's path. A cancel in these last 3 ms
# is no longer seen, like one during the provider round trip.
MARK_AHEAD_S = 0.003
DEFAULT_FALLBACK_WAIT_S = 30.0  # precall.settings.fallback_wait's default, until the first read
ACTIONS = "call_now,snooze,skip"
ARM_PREFS = {"push": "push_only", "sms": "sms_only", "push_and_sms": "push_and_sms"}
ACTION_CATEGORY = "PRECALL_CALL"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class ClaimedPreview:
    """A row returned by precall.claim_due_previews(): the preview plus the user's current row."""

    id: uuid.UUID
    call_id: uuid.UUID
    user_id: uuid.UUID
    type: str
    parent_id: uuid.UUID | None
    send_at: datetime
    scheduled_at: datetime
    attempts: int
    topic: str | None
    phone_number: str | None
    locale: str | None
    coach_name: str | None
    current_streak: int | None
    fcm_token: str | None
    platform: str | None
    push_enabled: bool
    notification_pref: str | None
    sms_opted_out: bool
    # Filled in after the claim (push_targets.attach): the devices the push goes to.
    devices: tuple[PushTarget, ...] = ()
    # Filled in after the claim (experiment_arms.attach) for a preview planned under an experiment
    # arm that sets a channel or a copy variant.
    arm_channel: str | None = None
    variant: str | None = None

    @property
    def reach(self) -> Reachability:
        """Push is possible when a device is (users.fcm_token is only the devices' summary)."""
        token = self.devices[0].fcm_token if self.devices else None
        return Reachability(self.notification_pref, token, bool(self.devices), self.phone_number, self.sms_opted_out)

    def ids(self, notification_id: uuid.UUID | None = None) -> dict[str, str]:
        return {"call_id": str(self.call_id), "user_id": str(self.user_id),
                "notification_id": str(notification_id or self.id)}


@dataclass
class _DeviceOutcome:
    """What one device's send came to: accepted (FCM's message id), or the error (dead: the token is)."""

    target: PushTarget
    attempted_at: datetime
    accepted: str | None = None
    sent_at: datetime | None = None
    error: ProviderError | None = None
    dead: bool = False
    recorded: bool = False

    def as_row(self, notification_id: uuid.UUID) -> dict[str, Any]:
        """One object of precall.store_push_deliveries' JSON."""
        status = "sent" if self.accepted else "dead" if self.dead else "failed"
        return {"notification_id": str(notification_id), "device_id": self.target.device_id,
                "platform": self.target.platform, "status": status, "provider_id": self.accepted,
                "error": self.error.code if self.error else None, "attempted_at": self.attempted_at,
                "sent_at": self.sent_at}


class _Fanout:
    """The devices of one push that took it so far, written before any retry waits."""

    def __init__(self, notification_id: uuid.UUID) -> None:
        self._id = notification_id
        self._taken: list[_DeviceOutcome] = []
        self.first_attempt: datetime | None = None  # the preview's attempted_at

    def accepted(self, outcome: _DeviceOutcome) -> None:
        self._taken.append(outcome)

    async def flush(self, outcomes: OutcomeStore, worker: str) -> None:
        fresh = [o for o in self._taken if not o.recorded]
        if fresh:
            await outcomes.deliveries(self._id, worker, [o.as_row(self._id) for o in fresh])
            for o in fresh:
                o.recorded = True


class PreviewSender:
    """Sends claimed previews. Its ports: the providers (push, sms), the outcome store (the
    database unless `outcomes` is given), the clock and the sleep (tests inject both)."""

    def __init__(self, pool: Database | None, push: PushSender, sms: SmsSender, renderer: Renderer,
                 config: Config, worker: str, metrics: Metrics | None = None,
                 liveness: Liveness | None = None, *, outcomes: OutcomeStore | None = None,
                 clock: Callable[[], datetime] = utcnow,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._liveness = liveness  # None: a one-off sender (`precall send`), its lease is the guard
        self._metrics = metrics or Metrics()
        self._push_pacer = Pacer(config.fcm_rate_per_s)
        self.backing_off = 0  # tasks sleeping between retries (they do not count as in flight)
        self._sms_pacer = Pacer(config.twilio_rate_per_s)
        if outcomes is None:
            assert pool is not None, "a PreviewSender writes to the database unless given an outcome store"
            outcomes = DatabaseOutcomes(pool)
        self._outcomes = outcomes
        self._now = clock
        self._sleep = sleep
        self._push = push
        self._sms = sms
        self._renderer = renderer
        self._config = config
        self._arm_notes: dict[uuid.UUID, str] = {}  # previews whose arm's channel could not be used
        self._attempted: set[uuid.UUID] = set()  # rows marked attempted (precall.start_attempts), in process()
        self._worker = worker
        # precall.settings, re-read by follow_policy(); the deprecated PRECALL_FALLBACK_WAIT_S
        # wins over its fallback_wait when set.
        self.policy = SendPolicy(config.fallback_wait_s or DEFAULT_FALLBACK_WAIT_S)

    @property
    def fallback_wait_s(self) -> float:
        return self.policy.fallback_wait_s

    async def follow_policy(self) -> None:
        """Reads the fleet's policy from precall.settings."""
        policy = await self._outcomes.policy()
        if policy is None:
            return
        if self._config.fallback_wait_s is not None:
            policy = dataclasses.replace(policy, fallback_wait_s=self._config.fallback_wait_s)
        self.policy = policy

    # -- database writes ------------------------------------------------------------------------

    async def _unsent(self, nid: uuid.UUID, status: str, reason: str, *, type_: str | None = None,
                      channel: str | None = None, title: str | None = None, body: str | None = None,
                      error_msg: str | None = None, attempted_at: datetime | None = None,
                      fallback_reason: str | None = None) -> uuid.UUID | None:
        """Records a preview that was not sent. With fallback_reason, the fallback SMS row is created
        in the same statement (leased to us) and its id returned."""
        self._metrics.sends.labels(channel or "none", type_ or "unknown", status).inc()
        return await self._outcomes.unsent({
            "id": nid, "worker": self._worker, "status": status, "type": type_, "channel": channel,
            "title": title, "body": body, "reason": reason, "error_msg": error_msg, "attempted_at": attempted_at,
            "fallback_reason": fallback_reason,
        })

    async def _until(self, instant: datetime) -> None:
        while (early := (instant - self._now()).total_seconds()) > 0:
            await self._sleep(early)  # again if a timer fired a hair early: never before the instant

    async def _until_send_at(self, nid: uuid.UUID, row: ClaimedPreview) -> None:
        """A row claimed ahead (precall.settings.claim_ahead) waits here, its request built, until
        just before its send_at (MARK_AHEAD_S: the re-read in _still_ours then happens before the
        instant, and the request leaves on it)."""
        if nid != row.id or nid in self._attempted:
            return  # a fallback SMS created now, or a retry
        await self._until(row.send_at - timedelta(seconds=MARK_AHEAD_S))

    async def _still_ours(self, nid: uuid.UUID, row: ClaimedPreview) -> bool:
        """Checked right before a provider call. Once per row, the database re-reads it
        (precall.start_attempts): a row cancelled since its claim is not sent; then the row waits
        for its send_at (never sent before it). A row taken over meanwhile is not sent from here."""
        if nid not in self._attempted:
            if not await self._outcomes.start_attempt(nid, self._worker):
                log.info("not sending: cancelled or taken over since the claim", extra=row.ids(nid))
                return False
            self._attempted.add(nid)
            if nid == row.id:
                await self._until(row.send_at)
        if self._liveness is None or await self._liveness.still_ours(nid):
            return True
        log.warning("not sending: the lease was taken over by another dispatcher", extra=row.ids(nid))
        return False

    async def _back_off(self, nid: uuid.UUID, delay: float) -> None:
        """Waits before a retry. Backing off is not sending: the dispatcher claims other previews
        meanwhile (a provider outage must not stall the previews due after it)."""
        if self._liveness is None:  # a dispatcher's liveness connection renews every lease it holds
            await self._outcomes.renew_lease(nid, self._worker)
        self.backing_off += 1
        try:
            await self._sleep(delay)
        finally:
            self.backing_off -= 1

    def paced_capacity(self, horizon_s: float) -> int:
        """How many previews the pacers let out within horizon_s; unbounded unless both are paced."""
        if not (self._push_pacer.paced and self._sms_pacer.paced):
            return 1 << 30
        return self._push_pacer.slots_within(horizon_s) + self._sms_pacer.slots_within(horizon_s)

    async def _sent(self, nid: uuid.UUID, *, type_: str, channel: str, title: str | None, body: str,
                    provider_id: str, attempted_at: datetime, reason: str | None = None,
                    sms_encoding: str | None = None, sms_segments: int | None = None,
                    cost: tuple[Any, str] | None = None, fallback_at: datetime | None = None,
                    devices: list[dict[str, Any]] | None = None) -> None:
        self._metrics.sends.labels(channel, type_, "sent").inc()
        if type_ == "fallback_sms":
            self._metrics.fallbacks_fired.inc()
        await self._outcomes.sent({
            "id": nid, "worker": self._worker, "type": type_, "channel": channel, "title": title, "body": body,
            "provider_id": provider_id, "reason": reason, "attempted_at": attempted_at, "sent_at": self._now(),
            "sms_encoding": sms_encoding, "sms_segments": sms_segments,
            "cost": cost[0] if cost else None, "currency": cost[1] if cost else None,
            "fallback_at": fallback_at, **({"devices": devices} if devices else {}),
        })

    # -- the decision ---------------------------------------------------------------------------

    async def process(self, row: ClaimedPreview, channel: str | None = None) -> None:
        """Never raises: an unexpected error fails this row (with the reason) and nobody else's.
        `channel` forces push or SMS (a manual send); otherwise the path rules choose."""
        if row.attempts > 1:
            self._metrics.lease_recoveries.inc()
        try:
            if channel is None:
                await self._process(row)
            else:
                await self._process_forced(row, channel)
        except Exception as exc:  # noqa: BLE001 - one bad row must not stop the dispatcher
            log.exception("preview failed unexpectedly", extra=row.ids())
            try:
                await self._unsent(row.id, "failed", f"internal_error: {type(exc).__name__}: {exc}"[:500])
            except Exception:  # noqa: BLE001 - the lease expiry recovers it
                log.exception("could not record the failure", extra=row.ids())
        finally:
            self._arm_notes.pop(row.id, None)
            self._attempted.discard(row.id)

    def _render(self, row: ClaimedPreview, minutes: int) -> RenderedPreview:
        rendered = self._renderer.render(MessageInput(row.coach_name, row.current_streak or 0, row.topic, row.locale,
                                                      minutes, snooze_minutes=self.policy.snooze_minutes,
                                                      variant=row.variant), row.ids())
        if row.id in self._arm_notes:
            rendered.resolved.notes.append(self._arm_notes[row.id])
        return rendered

    async def _arm_reach(self, row: ClaimedPreview) -> Reachability:
        """The user's reachability with an experiment arm's channel as their preference, when the
        arm's channel can be used: it never overrides an SMS opt-out, a missing number or device,
        a switched-off channel or a reached SMS budget (then the user keeps their own rule, and
        the row's reason says so, so the report can count it per arm)."""
        reach = row.reach
        if not row.arm_channel:
            return reach
        usable_sms = bool(reach.phone and valid_phone(reach.phone)) and self.policy.sms_enabled
        if usable_sms and reach.phone and self.policy.sms_budget_set:
            cost = estimate(reach.phone, 1, self._config.sms_prices)
            usable_sms = not (cost and await self._outcomes.sms_budget_reached(cost[1]))
        usable_push = reach.can_push and self.policy.push_enabled
        if usable_sms if row.arm_channel == "sms" else usable_push:
            return dataclasses.replace(reach, notification_pref=ARM_PREFS[row.arm_channel])
        self._arm_notes[row.id] = (f"arm_channel_not_used: the arm's {row.arm_channel} is not usable for this "
                                   "user (opt-out, no number or device, channel switched off, or SMS budget); "
                                   "their own rule applies")
        return reach

    async def _channel_off(self, row: ClaimedPreview, nid: uuid.UUID, channel: str, type_: str) -> bool:
        """precall.settings.push_enabled / sms_enabled: a preview on a switched-off channel is
        skipped, never moved to the other one (the claim checks the planned type; this, the
        channel chosen at send time, with the policy read at the last heartbeat)."""
        if (self.policy.push_enabled if channel == "push" else self.policy.sms_enabled):
            return False
        await self._unsent(nid, "skipped", f"channel_disabled: {channel} is switched off "
                           f"(precall.settings.{channel}_enabled)", type_=type_, channel=channel)
        return True

    async def _process(self, row: ClaimedPreview) -> None:
        if row.type == "fallback_sms":
            await self._send_sms(row, row.id, "fallback_sms")
            return
        reach = await self._arm_reach(row)
        if reach is not row.reach:
            row = dataclasses.replace(row, notification_pref=reach.notification_pref)
        path = select_notification_path(row.reach)
        if path is None:
            log.warning("No notification channel for user %s", row.user_id, extra=row.ids())
            await self._unsent(row.id, "skipped", "no_channel: no push token with push enabled and no usable phone number")
            return
        if path is Path.SMS:
            await self._send_sms(row, row.id, "preview_sms")
            return
        if path is Path.PUSH_WITH_FALLBACK and not row.reach.can_push:
            # push_and_sms without a usable token: the SMS half is all there is.
            await self._send_sms(row, row.id, "preview_sms", note="push_and_sms user without a usable push token")
            return
        await self._send_push(row, with_fallback=path is Path.PUSH_WITH_FALLBACK)

    async def _process_forced(self, row: ClaimedPreview, channel: str) -> None:
        if channel == "sms":
            await self._send_sms(row, row.id, "preview_sms", note="manual send by SMS")
        elif not row.reach.can_push:
            await self._unsent(row.id, "failed", "no_push_token: manual push asked for, but the user has no "
                               "usable token with push enabled", type_="preview_push", channel="push")
        else:
            await self._send_push(row, with_fallback=False)

    # -- push -----------------------------------------------------------------------------------

    def _push_request(self, row: ClaimedPreview, target: PushTarget, title: str, body: str) -> PushRequest:
        # The actions (POST /api/v1/notifications/{id}/action): Android reads data.actions, iOS
        # shows the PRECALL_CALL category's buttons the app registered (README: "Actions").
        data = {"route": "incoming_call", "call_id": str(row.call_id), "notification_id": str(row.id),
                "deadline": row.scheduled_at.astimezone(timezone.utc).isoformat().replace("+00:00", "Z"),
                "actions": ACTIONS, "click_action": ACTION_CATEGORY, "snooze_minutes": str(self.policy.snooze_minutes)}
        if self._config.receipt_secret:
            data["receipt_token"] = receipt_tokens.issue(self._config.receipt_secret, row.id, target.device_id,
                                                         row.scheduled_at)
        data_only = self._config.android_message == "data" and target.platform == "android"
        return PushRequest(token=target.fcm_token, title=title, body=body, data=data, deadline=row.scheduled_at,
                           collapse_id=str(row.call_id), data_only=data_only, category=ACTION_CATEGORY)

    async def _send_push(self, row: ClaimedPreview, with_fallback: bool) -> None:
        """One FCM message per device (the same collapse key: the call id), each device once."""
        if await self._channel_off(row, row.id, "push", "preview_push"):
            return
        minutes = minutes_left((row.scheduled_at - self._now()).total_seconds())
        rendered = self._render(row, minutes)
        title, body = rendered.push.title, rendered.push.body
        common: dict[str, Any] = {"type_": "preview_push", "channel": "push", "title": title, "body": body}
        taken = [t for t in row.devices if t.sent_provider_id]
        pending = [t for t in row.devices if not t.sent_provider_id]
        # Retries stop at the call, or for Path C when its SMS would have gone out anyway.
        give_up_at = row.scheduled_at
        if with_fallback and row.reach.phone:
            give_up_at = min(give_up_at, self._now() + timedelta(seconds=self.fallback_wait_s))
        fan = _Fanout(row.id)
        outcomes = await asyncio.gather(*(self._push_device(row, t, title, body, give_up_at, fan) for t in pending))
        if any(o is None for o in outcomes):
            return  # the row was taken over mid-send: its new holder writes the outcome
        # When the first request left: a configured rate limit's wait counts as lateness.
        attempted_at = fan.first_attempt or self._now()
        done = [o for o in outcomes if o is not None]
        accepted = [o for o in done if o.accepted is not None]
        devices = [o.as_row(row.id) for o in done]
        if accepted or taken:
            provider_id = accepted[0].accepted if accepted else taken[0].sent_provider_id
            assert provider_id is not None
            # Path C: the fallback SMS is planned by the same statement that records the send.
            fallback_at = (self._now() + timedelta(seconds=self.fallback_wait_s)
                           if with_fallback and row.reach.phone else None)
            notes = list(rendered.resolved.notes)
            if len(done) > len(accepted):
                notes.append(f"{len(accepted) + len(taken)} of {len(row.devices)} devices took it")
            await self._sent(row.id, provider_id=provider_id, attempted_at=attempted_at,
                             reason="; ".join(notes) or None, fallback_at=fallback_at, devices=devices, **common)
            log.info("push sent", extra={**row.ids(), "devices": len(accepted) + len(taken),
                                         "lateness_ms": round((attempted_at - row.send_at).total_seconds() * 1000, 1)})
            return
        left = await self._outcomes.deliveries(row.id, self._worker, devices)
        first_error = next((o.error for o in done if not o.dead), None)
        if first_error is None:  # every device's token is dead
            dead = done[0].error
            assert dead is not None
            if left:
                # A device registered meanwhile can still take the next preview: no SMS for this one.
                await self._failed_push(row, f"token_dead: {dead.code} on {len(done)} device(s), push disabled on "
                                        f"them; {left} other device(s) left", dead, common, attempted_at, None)
            else:
                await self._failed_push(row, f"token_dead: {dead.code}; push disabled on {len(done)} device(s)",
                                        dead, common, attempted_at, f"push token dead ({dead.code})")
            return
        if isinstance(first_error, Transient):
            await self._failed_push(row, f"fcm_unavailable: {first_error.code}, gave up before the deadline",
                                    first_error, common, attempted_at,
                                    f"push failed ({first_error.code})" if with_fallback else None)
        else:
            await self._failed_push(row, f"fcm_rejected: {first_error.code}", first_error, common, attempted_at,
                                    f"push rejected ({first_error.code})" if with_fallback else None)

    async def _push_device(self, row: ClaimedPreview, target: PushTarget, title: str, body: str,
                           give_up_at: datetime, fan: _Fanout) -> _DeviceOutcome | None:
        """Sends to one device, retrying transient errors until give_up_at; None when the row
        stopped being ours."""
        request = self._push_request(row, target, title, body)
        backoff = retry.FCM_TRANSIENT.attempts()
        attempted_at: datetime | None = None
        while True:
            await self._until_send_at(row.id, row)
            await self._push_pacer.wait()  # a configured FCM rate limit: the wait counts as lateness
            if not await self._still_ours(row.id, row):
                return None
            attempted_at = attempted_at or self._now()
            if fan.first_attempt is None:
                fan.first_attempt = attempted_at
                self._metrics.lateness.observe(max(0.0, (attempted_at - row.send_at).total_seconds()))
            try:
                remaining = (give_up_at - self._now()).total_seconds()
                with self._metrics.timed("fcm"):
                    accepted = await self._push.send(request, timeout=max(0.1, min(self._config.fcm_timeout_s, remaining)))
            except DeadToken as exc:
                return _DeviceOutcome(target, attempted_at, error=exc, dead=True)
            except Transient as exc:
                # A timeout is ambiguous (FCM may have accepted it): a retry can deliver twice, but
                # the shared collapse key (the call id) makes the device show one notification.
                # FCM's Retry-After (on 429 and 503) is a floor under our own backoff.
                floor = exc.retry_after_s or 0.0
                if (give_up_at - self._now()).total_seconds() < max(backoff.upcoming, floor) + 1:
                    return _DeviceOutcome(target, attempted_at, error=exc)
                delay = max(backoff.next_delay(), floor)
                log.info("transient FCM error %s, retrying in %.1fs", exc.code, delay,
                         extra={**row.ids(), "device_id": target.device_id})
                # The devices that took it already are written before we wait: a crash meanwhile
                # must not send to them again.
                await fan.flush(self._outcomes, self._worker)
                await self._back_off(row.id, delay)
                continue
            except ProviderError as exc:
                return _DeviceOutcome(target, attempted_at, error=exc)
            outcome = _DeviceOutcome(target, attempted_at, accepted=accepted.provider_id, sent_at=self._now())
            fan.accepted(outcome)
            return outcome

    async def _failed_push(self, row: ClaimedPreview, reason: str, exc: ProviderError, common: dict[str, Any],
                           attempted_at: datetime, fallback: str | None) -> None:
        """The push failed for good. With `fallback` (Path C, a dead token) the SMS goes now, as
        fallback_sms: its row is created with the failure, in one statement (once: a unique index)."""
        if fallback and not row.reach.phone:
            log.warning("%s and no usable phone number: no preview", fallback, extra=row.ids())
            fallback = None
        created = await self._unsent(row.id, "failed", reason, error_msg=exc.message, attempted_at=attempted_at,
                                     fallback_reason=fallback, **common)
        if created is not None:
            if self._liveness is not None:
                self._liveness.hold(created)
            try:
                await self._send_sms(row, created, "fallback_sms")
            finally:
                self._attempted.discard(created)
                if self._liveness is not None:
                    self._liveness.release(created)

    # -- SMS ------------------------------------------------------------------------------------

    async def _send_sms(self, row: ClaimedPreview, nid: uuid.UUID, type_: str, note: str | None = None) -> None:
        ids = row.ids(nid)
        if await self._channel_off(row, nid, "sms", type_):
            return
        phone = row.reach.phone
        if phone is None:
            why = "sms_opted_out" if row.phone_number and row.sms_opted_out else "no_phone"
            await self._unsent(nid, "skipped", f"{why}: no usable phone number for SMS", type_=type_, channel="sms")
            return
        if not valid_phone(phone):
            await self._unsent(nid, "failed", f"bad_phone: {phone!r} is not E.164", type_=type_, channel="sms")
            return
        backoff = retry.SMS_RATE_LIMITED.attempts()
        first_attempt_at: datetime | None = None
        while True:
            await self._until_send_at(nid, row)
            await self._sms_pacer.wait()  # a configured Twilio rate limit: the text says the minutes left after it
            if not await self._still_ours(nid, row):
                return
            remaining = (row.scheduled_at - self._now()).total_seconds()
            if remaining < MIN_SMS_SECONDS:
                await self._unsent(nid, "skipped", f"too_late_for_sms: {remaining:.1f}s before the call",
                                   type_=type_, channel="sms", attempted_at=first_attempt_at)
                return
            rendered = self._render(row, minutes_left(remaining))
            sms = rendered.sms
            cost = estimate(phone, sms.segments, self._config.sms_prices)
            if (type_ == "fallback_sms" and first_attempt_at is None and cost is not None
                    and self.policy.sms_budget_set and await self._outcomes.sms_budget_reached(cost[1])):
                # The brake: past the day's budget fallback SMS stop; first-channel SMS still go.
                await self._unsent(nid, "skipped", f"sms_budget: today's {cost[1]} SMS spend reached "
                                   "precall.settings.sms_daily_budget", type_=type_, channel="sms")
                return
            attempted_at = self._now()
            if first_attempt_at is None:
                first_attempt_at = attempted_at
                self._metrics.lateness.observe(max(0.0, (attempted_at - row.send_at).total_seconds()))
            try:
                with self._metrics.timed("twilio"):
                    accepted = await self._sms.send(SmsRequest(phone, sms.text, row.scheduled_at),
                                                    timeout=self._config.twilio_timeout_s)
            except SmsOptedOut as exc:
                await self._outcomes.opt_out_sms(row.user_id, phone)
                await self._unsent(nid, "failed", f"twilio_error: {exc.code} (replied STOP); sms_opted_out set",
                                   type_=type_, channel="sms", body=sms.text, error_msg=exc.message,
                                   attempted_at=first_attempt_at)
                return
            except Transient as exc:
                # Twilio's 429 (20429): the message was not created, so trying again cannot send
                # twice; worth it while the SMS still lands before the call.
                delay = max(backoff.next_delay(), exc.retry_after_s or 0.0)
                if remaining - delay < MIN_SMS_SECONDS + 1:
                    await self._unsent(nid, "failed", f"twilio_error: {exc.code}, still refused when the call was near",
                                       type_=type_, channel="sms", body=sms.text, error_msg=exc.message,
                                       attempted_at=first_attempt_at)
                    return
                log.info("Twilio %s (too many requests), retrying in %.1fs", exc.code, delay, extra=ids)
                await self._back_off(nid, delay)
                continue
            except ProviderError as exc:
                # Not retried: the call is minutes away, and a retried POST can send twice.
                await self._unsent(nid, "failed", f"twilio_error: {exc.code}", type_=type_, channel="sms",
                                   body=sms.text, error_msg=exc.message, attempted_at=first_attempt_at)
                log.warning("SMS failed: %s", exc, extra=ids)
                return
            break
        attempted_at = first_attempt_at or attempted_at
        notes = [n for n in (note, *rendered.resolved.notes) if n]
        await self._sent(nid, type_=type_, channel="sms", title=None, body=sms.text, provider_id=accepted.provider_id,
                         attempted_at=attempted_at, reason="; ".join(notes) or None,
                         sms_encoding=sms.encoding, sms_segments=sms.segments, cost=cost)
        log.info("sms sent", extra={**ids, "lateness_ms": round((attempted_at - row.send_at).total_seconds() * 1000, 1)})
