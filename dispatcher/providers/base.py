"""The provider interface: what the dispatcher asks of a push or SMS sender, and what can go wrong."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class PushRequest:
    token: str
    title: str
    body: str
    data: dict[str, str]
    deadline: datetime  # the call time: TTL and apns-expiration end here
    collapse_id: str


@dataclass(frozen=True)
class SmsRequest:
    to: str
    body: str
    deadline: datetime


@dataclass(frozen=True)
class Accepted:
    provider_id: str  # FCM message name or Twilio SID


class ProviderError(Exception):
    """A send that failed; `code` is the provider's own (FCM errorCode, Twilio error code)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class DeadToken(ProviderError):
    """The push token will never work again (UNREGISTERED, SENDER_ID_MISMATCH, invalid token)."""


class Transient(ProviderError):
    """Worth retrying before the deadline (429, 500, 503, timeouts)."""


class Permanent(ProviderError):
    """Do not retry (bad payload, invalid number, opted out…)."""


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
