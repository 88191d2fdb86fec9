"""The call system's side: the call at T (NOTIFY precall_call_due and, when configured, the signed
webhook's call.due), and each reschedule or cancel (call.rescheduled / call.cancelled, from the
call events the scheduled_calls triggers write; their NOTIFY precall_call_changed left at commit)."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import httpx

from precall import retry, sql
from precall.dispatcher.db import Database
from precall.webhook_signature import HEADER, sign
from precall.dispatcher.write_back import with_retry

log = logging.getLogger("precall.calls")

WEBHOOK_ATTEMPTS = 3
WEBHOOK_TIMEOUT_S = 5.0


def _utc(at: datetime | None) -> str | None:
    return at.astimezone(timezone.utc).isoformat().replace("+00:00", "Z") if at is not None else None


@dataclass(frozen=True)
class CallEvent:
    """A row returned by precall.claim_call_events()."""

    id: int
    call_id: uuid.UUID
    user_id: uuid.UUID
    event: str
    previous_scheduled_at: datetime | None
    scheduled_at: datetime
    cause: str | None
    created_at: datetime
    attempts: int

    def body(self) -> dict[str, object]:
        out: dict[str, object] = {"event": self.event, "event_id": self.id, "call_id": str(self.call_id),
                                  "user_id": str(self.user_id)}
        if self.event == "call.rescheduled":
            out["previous_scheduled_at"] = _utc(self.previous_scheduled_at)
        out.update(scheduled_at=_utc(self.scheduled_at), cause=self.cause, occurred_at=_utc(self.created_at))
        return out


@dataclass(frozen=True)
class DueCall:
    call_id: uuid.UUID
    user_id: uuid.UUID
    scheduled_at: datetime
    due_at: datetime
    attempts: int


class CallHandOff:
    def __init__(self, pool: Database, worker: str, webhook_url: str | None, secret: str | None) -> None:
        self._pool = pool
        self._worker = worker
        self._url = webhook_url
        self._secret = secret or ""
        self._http: httpx.AsyncClient | None = None

    async def start(self) -> None:
        if self._url:
            self._http = httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT_S)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def fire(self, call: DueCall) -> None:
        """Never raises: the outcome (ok or not) is recorded on the call job."""
        ids = {"call_id": str(call.call_id), "user_id": str(call.user_id)}
        body = json.dumps({
            "event": "call.due", "call_id": str(call.call_id), "user_id": str(call.user_id),
            "scheduled_at": _utc(call.scheduled_at),
        }, separators=(",", ":"))
        try:
            async with self._pool.connection() as conn:
                await conn.execute(sql.query("notify_call_due"), {"payload": body})
            ok, outcome = True, "notified"
            if self._url:
                ok, outcome = await self._post(body.encode())
            params = {"call_id": call.call_id, "worker": self._worker, "ok": ok, "outcome": outcome}
            await with_retry(lambda: self._record(params), "call write-back")  # the call system was told
            late_ms = (datetime.now(timezone.utc) - call.due_at).total_seconds() * 1000
            (log.info if ok else log.error)("call fired: %s", outcome, extra={**ids, "lateness_ms": round(late_ms, 1)})
        except Exception:  # noqa: BLE001 - the lease expiry retries it
            log.exception("call hand-off failed", extra=ids)

    async def deliver(self, event: CallEvent) -> None:
        """A call event to the webhook (its NOTIFY left when the change committed). Never raises:
        the outcome is recorded on the event; a crash leaves its lease to expire and retry."""
        ids = {"call_id": str(event.call_id), "user_id": str(event.user_id)}
        try:
            ok, outcome = True, "notified"
            if self._url:
                ok, outcome = await self._post(json.dumps(event.body(), separators=(",", ":")).encode())
            params = {"id": event.id, "worker": self._worker, "ok": ok, "outcome": outcome}
            await with_retry(lambda: self._record(params, "record_call_event"), "call event write-back")
            (log.info if ok else log.error)("%s delivered: %s", event.event, outcome, extra=ids)
        except Exception:  # noqa: BLE001 - the lease expiry retries it
            log.exception("call event delivery failed", extra=ids)

    async def _record(self, params: dict[str, object], query: str = "record_call_fired") -> None:
        async with self._pool.connection() as conn:
            await conn.execute(sql.query(query), params)

    async def _post(self, body: bytes) -> tuple[bool, str]:
        assert self._http is not None and self._url is not None
        outcome = ""
        backoff = retry.CALL_WEBHOOK.attempts()
        for attempt in range(1, WEBHOOK_ATTEMPTS + 1):
            headers = {"Content-Type": "application/json", HEADER: sign(self._secret, body)}
            try:
                response = await self._http.post(self._url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                outcome = f"webhook error: {type(exc).__name__}"
            else:
                outcome = f"webhook {response.status_code}"
                if response.is_success:
                    return True, outcome
                if response.status_code < 500 and response.status_code != 429:
                    return False, outcome  # the receiver refused it: retrying will not help
            if attempt < WEBHOOK_ATTEMPTS:
                await asyncio.sleep(backoff.next_delay())
        return False, outcome
