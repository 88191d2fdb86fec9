"""Providers that only log what they would send: the demo's, and only ever an explicit choice."""

from __future__ import annotations

import logging
import uuid

from precall.dispatcher.providers.base import Accepted, PushRequest, SmsRequest

log = logging.getLogger("precall.providers.log")


class LogPushSender:
    name = "log"

    async def start(self) -> None:
        pass

    async def send(self, request: PushRequest, timeout: float) -> Accepted:
        log.info("PUSH to %s… | %s | %s", request.token[:12], request.title, request.body,
                 extra={"notification_id": request.data.get("notification_id"), "call_id": request.data.get("call_id")})
        return Accepted(f"log/push/{uuid.uuid4()}")

    async def close(self) -> None:
        pass


class LogSmsSender:
    name = "log"

    async def start(self) -> None:
        pass

    async def send(self, request: SmsRequest, timeout: float) -> Accepted:
        log.info("SMS to %s | %s", request.to, request.body)
        return Accepted(f"log/sms/{uuid.uuid4()}")

    async def close(self) -> None:
        pass
