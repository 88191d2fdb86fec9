"""Request and response bodies: the API's contract, as the OpenAPI document shows it."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

# FCM registration tokens are ~160 characters of [A-Za-z0-9_:-]; APNs device tokens are 64 hex.
TOKEN_PATTERN = r"^[A-Za-z0-9_:\-.]+$"


class RegisterDevice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fcm_token: str = Field(min_length=32, max_length=4096, pattern=TOKEN_PATTERN,
                           examples=["dGhpcyBpcyBhIHRva2VuIGZyb20gRkNNIGZvciB0ZXN0aW5nIG9ubHk"])
    platform: Literal["ios", "android"]
    push_enabled: bool = True


class Registered(BaseModel):
    status: Literal["registered"] = "registered"


class NotificationPreferences(BaseModel):
    """Either field may be left out; at least one is needed."""

    model_config = ConfigDict(extra="forbid")
    notification_pref: Literal["push_only", "sms_only", "push_and_sms"] | None = None
    notification_lead_min: int | None = Field(default=None, ge=1, le=60)

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


class History(BaseModel):
    notifications: list[Notification]


class Receipt(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event: Literal["delivered", "opened"]
    at: AwareDatetime | None = Field(default=None, description="When the device saw it; now when left out.")


class ReceiptRecorded(BaseModel):
    status: Literal["recorded", "duplicate"]
    late: bool = Field(description="The fallback SMS had already left: the user got both.")
    delivered_at: datetime | None
    opened_at: datetime | None


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class TwilioStatusAck(BaseModel):
    status: Literal["applied", "pending", "duplicate"]
