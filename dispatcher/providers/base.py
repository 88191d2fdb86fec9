"""The provider interface: what the dispatcher asks of a push or SMS sender, and what can go wrong."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

# The providers' errors live in the one exception tree; importable from here as before.
from precall.errors import DeadToken, Permanent, ProviderError, Transient

__all__ = ["Accepted", "DeadToken", "Permanent", "ProviderError", "PushRequest", "PushSender", "SmsOptedOut",
           "SmsRequest", "SmsSender", "Transient"]


@dataclass(frozen=True)
class PushRequest:
    token: str
    title: str
    body: str
    data: dict[str, str]
    deadline: datetime  # the call time: TTL and apns-expiration end here
    collapse_id: str
    # An Android device with PRECALL_ANDROID_MESSAGE=data: no notification block, so the app's
    # onMessageReceived runs in the background too (and can acknowledge); it shows the notification.
    data_only: bool = False
    # The iOS notification category whose buttons the app registered (PRECALL_CALL: call now,
    # snooze, skip); None: a plain notification.
    category: str | None = None


@dataclass(frozen=True)
class SmsRequest:
    to: str
    body: str
    deadline: datetime


@dataclass(frozen=True)
class Accepted:
    provider_id: str  # FCM message name or Twilio SID


class SmsOptedOut(Permanent):
    """Twilio 21610: the number replied STOP."""


class PushSender(Protocol):
    name: str

    async def start(self) -> None: ...

    async def send(self, request: PushRequest, timeout: float) -> Accepted: ...

    async def close(self) -> None: ...


class SmsSender(Protocol):
    name: str

    async def start(self) -> None: ...

    async def send(self, request: SmsRequest, timeout: float) -> Accepted: ...

    async def close(self) -> None: ...
