"""Receipt tokens: what lets an app acknowledge a push without a session.

Each push carries one in `data.receipt_token`; the app (an Android data-message handler, an iOS
Notification Service Extension) sends it back in `X-Precall-Receipt` to
`POST /api/v1/notifications/{id}/receipt`. A token names the notification, the device it went to
and when it stops being valid (one hour after the call), under an HMAC-SHA256 of
PRECALL_RECEIPT_SECRET: it cannot be forged or moved to another notification, and it needs no
database row. During a rotation PRECALL_RECEIPT_SECRET_PREVIOUS verifies the tokens already sent.

Format: `r1.<device id>.<expiry, unix seconds>.<base64url of the first 18 bytes of the MAC>`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta

VALID_AFTER_CALL = timedelta(hours=1)
MAX_LENGTH = 80
_FORMAT = re.compile(r"r1\.([0-9]{1,18})\.([0-9]{1,12})\.([A-Za-z0-9_-]{24})")


def _mac(secret: str, notification_id: uuid.UUID, device_id: int, expires: int) -> str:
    message = f"precall-receipt:{notification_id}:{device_id}:{expires}".encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()[:18]
    return base64.urlsafe_b64encode(digest).decode()


def issue(secret: str, notification_id: uuid.UUID, device_id: int, call_at: datetime) -> str:
    """The token for one push to one device, valid until an hour after the call."""
    expires = int((call_at + VALID_AFTER_CALL).timestamp())
    return f"r1.{device_id}.{expires}.{_mac(secret, notification_id, device_id, expires)}"


def verify(token: str, notification_id: uuid.UUID, secrets: Iterable[str | None], now: datetime) -> int | None:
    """The device id the token was issued for, or None: malformed, expired, for another
    notification, or not made with any of `secrets`."""
    if len(token) > MAX_LENGTH:
        return None
    match = _FORMAT.fullmatch(token)
    if match is None:
        return None
    device_id, expires, mac = int(match[1]), int(match[2]), match[3]
    if expires < now.timestamp():
        return None
    for secret in secrets:
        if secret and hmac.compare_digest(_mac(secret, notification_id, device_id, expires), mac):
            return device_id
    return None
