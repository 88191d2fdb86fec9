"""Where the channel is chosen: the spec's select_notification_path, on the user's row at send time."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


class Path(enum.Enum):
    PUSH = "A"                 # Path A: push only
    SMS = "B"                  # Path B: SMS
    PUSH_WITH_FALLBACK = "C"   # Path C: push, then SMS if no receipt in time


@dataclass(frozen=True)
class Reachability:
    notification_pref: str | None
    fcm_token: str | None
    push_enabled: bool
    phone_number: str | None
    sms_opted_out: bool

    @property
    def phone(self) -> str | None:
        """A number SMS may go to: an opted-out number counts as none."""
        return self.phone_number if self.phone_number and not self.sms_opted_out else None

    @property
    def can_push(self) -> bool:
        return bool(self.fcm_token) and self.push_enabled


def select_notification_path(user: Reachability) -> Path | None:
    """Exactly the spec's rules, in order: sms_only → B; push_and_sms → C; a token with push
    enabled → A; a phone number → B (also for a push_only user without a token); otherwise None
    (warn, leave a skipped row; the call still goes on). What a path does when its channel turns
    out to be unavailable (no usable number, no token) is the sender's decision (send_preview.py)."""
    if user.notification_pref == "sms_only":
        return Path.SMS
    if user.notification_pref == "push_and_sms":
        return Path.PUSH_WITH_FALLBACK
    if user.can_push:
        return Path.PUSH
    if user.phone:
        return Path.SMS
    return None


def first_preview_type(user: Reachability) -> str | None:
    """What the sender sends first on the path (send_preview.py `_process`): push_and_sms without a
    usable token sends its SMS half. SQL's precall.guess_preview_type plans with the same answer
    (tests/test_channel_rule.py checks every combination)."""
    path = select_notification_path(user)
    if path is None:
        return None
    if path is Path.SMS or (path is Path.PUSH_WITH_FALLBACK and not user.can_push):
        return "preview_sms"
    return "preview_push"


def valid_phone(number: str) -> bool:
    return bool(E164.match(number))
