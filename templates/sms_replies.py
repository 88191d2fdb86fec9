"""The answers to an SMS reply (a confirmation, a refusal, the help text), each one segment.

Twilio sends the TwiML <Message> as an SMS billed like any other, so each answer is measured like
the preview: the full form (with the coach's name) when it fits one segment, else the `_short`
form without the name (a 24-character name outside GSM-7 would not fit 70 UCS-2 units).
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from precall.templates import gsm7
from precall.templates.catalog import Catalog
from precall.templates.messages import coach_name
from precall.templates.sms_text import SmsText

REPLY_KINDS = ("call_now", "snooze", "skip", "refused", "help")


def local_time(at: datetime, time_zone: str | None) -> str:
    """HH:MM in the user's IANA zone (UTC when it is unknown to this host)."""
    try:
        zone = ZoneInfo(time_zone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    return at.astimezone(zone).strftime("%H:%M")


def build_reply(catalog: Catalog, locale: str | None, kind: str, *, name: str | None = None,
                at: datetime | None = None, time_zone: str | None = None, snooze_minutes: int = 10) -> SmsText:
    """One answer in the user's language; `kind` is one of REPLY_KINDS."""
    loc = catalog.resolve(locale)
    values = {"name": coach_name(name), "time": local_time(at, time_zone) if at else "", "snooze": snooze_minutes}
    last: SmsText | None = None
    for key in (kind, f"{kind}_short"):
        template = catalog.string(loc, "replies", key) or catalog.string("en", "replies", key)
        if template is None:
            continue
        text = gsm7.to_gsm_punctuation(template.format(**values))
        size = gsm7.measure(text)
        last = SmsText(text, size.encoding, size.units, size.segments, key)
        if size.segments <= 1:
            return last
    assert last is not None, f"no reply text for {kind}"
    return last
