"""Request and response bodies: the API's contract, as the OpenAPI document shows it."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BeforeValidator, BaseModel, ConfigDict, Field, model_validator

# FCM registration tokens are ~160 characters of [A-Za-z0-9_:-]; APNs device tokens are 64 hex.
TOKEN_PATTERN = r"^[A-Za-z0-9_:\-.]+$"


def _json_integer(value: object) -> object:
    """JSON Schema's integer: 5 and 5.0, never "5" or true."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("must be an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("must be a whole number")
        return int(value)
    return value


JsonInteger = Annotated[int, BeforeValidator(_json_integer)]


class RegisterDevice(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # 0 is not false, "5" is not 5
    fcm_token: str = Field(min_length=32, max_length=4096, pattern=TOKEN_PATTERN,
                           examples=["dGhpcyBpcyBhIHRva2VuIGZyb20gRkNNIGZvciB0ZXN0aW5nIG9ubHk"])
    platform: Literal["ios", "android"]
    push_enabled: bool = True


class Registered(BaseModel):
    status: Literal["registered"] = "registered"


class NotificationPreferences(BaseModel):
    """Either field may be left out (not null); at least one is needed."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})
    # Not Optional: null is refused; left out, the default None means "unchanged".
    notification_pref: Literal["push_only", "sms_only", "push_and_sms"] = None  # type: ignore[assignment]
    notification_lead_min: JsonInteger = Field(default=None, ge=1, le=60)  # type: ignore[assignment]

    @model_validator(mode="after")
    def _something(self) -> NotificationPreferences:
        if self.notification_pref is None and self.notification_lead_min is None:
            raise ValueError("give notification_pref, notification_lead_min or both")
        return self


class Updated(BaseModel):
    status: Literal["updated"] = "updated"


class Notification(BaseModel):
    id: uuid.UUID
    call_id: uuid.UUID | None
    type: str
    channel: str | None
    status: str
    title: str | None
    body: str | None
    reason: str | None
    send_at: datetime | None
    sent_at: datetime | None
    delivered_at: datetime | None
    opened_at: datetime | None
    created_at: datetime | None


class HistoryPage(BaseModel):
    model_config = ConfigDict(extra="forbid")  # ?limt=5 is a typo worth a 422, not a silent default
    limit: int = Field(default=20, ge=1, le=100)
    offset: int = Field(default=0, ge=0, le=100_000)


class History(BaseModel):
    notifications: list[Notification]


def _rfc3339_text(value: object) -> object:
    if value is not None and not isinstance(value, str):
        raise ValueError("must be an RFC 3339 date-time string")
    return value


class Receipt(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event: Literal["delivered", "opened"]
    at: Annotated[AwareDatetime, BeforeValidator(_rfc3339_text)] = Field(
        default=None,  # type: ignore[assignment]
        description="When the device saw it; now when left out. Kept between the send and now (device clocks drift).")


class ReceiptRecorded(BaseModel):
    status: Literal["recorded", "duplicate"]
    late: bool = Field(description="The fallback SMS had already left: the user got both.")
    delivered_at: datetime | None
    opened_at: datetime | None


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class TwilioStatusAck(BaseModel):
    status: Literal["applied", "pending", "duplicate"]
