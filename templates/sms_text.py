"""Builds the SMS text, guaranteed to fit one segment.

It starts from the locale's `preview.sms` template and degrades, in this order, until the
text fits one segment (160 GSM-7 septets or 70 UCS-2 units):
  1. the template as written;
  2. typographic punctuation → GSM-7 equivalents ("—" → "-", "’" → "'");
  3. no emoji;
  4. the topic's short phrase;
  5. the short phrase cut word by word;
  6. `preview.sms.short` (no topic);
  7. `preview.sms.minimal` (name, minutes, day only);
  8. `preview.sms.tiny` (the same, tersest: for 24-character names outside the BMP).
Every step keeps the coach name, the minutes and the streak day, and ends on a whole word.

With a snooze time (a send, not a display), the text ends with the locale's reply hint ([sms]
hint, then hint_short) when the whole text still fits one segment. The hint is worth more than the
emoji and the full topic (it is how a person answers the preview by SMS, and an emoji alone
halves the room: UCS-2), so steps 1-4 are tried with the hint first; from step 5 on, no hint.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from precall.templates import gsm7
from precall.templates.catalog import Catalog
from precall.templates.messages import Resolved


@dataclass(frozen=True)
class SmsText:
    text: str
    encoding: gsm7.Encoding
    units: int
    segments: int
    step: str  # which degradation step produced it


def _tidy(text: str) -> str:
    return re.sub(r" {2,}", " ", text).strip()


_NAME = "\x00"  # stands in for the coach name, so punctuation swaps never alter the name itself


def _candidates(catalog: Catalog, r: Resolved) -> Iterator[tuple[str, str]]:
    def sms(key: str, gsm: bool, **values: object) -> str:
        text = _tidy(catalog.render(r.locale, key, r.variant, name=_NAME, min=r.minutes, streak=r.streak, **values))
        if gsm:
            text = gsm7.to_gsm_punctuation(text)
        return text.replace(_NAME, r.name)

    yield "as_written", sms("preview.sms", False, emoji=r.emoji, topic=r.topic.full)
    yield "gsm_punctuation", sms("preview.sms", True, emoji=r.emoji, topic=r.topic.full)
    yield "no_emoji", sms("preview.sms", True, emoji="", topic=r.topic.full)
    yield "short_topic", sms("preview.sms", True, emoji="", topic=r.topic.short)
    words = r.topic.short.split()
    for n in range(len(words) - 1, 0, -1):
        yield "topic_cut", sms("preview.sms", True, emoji="", topic=" ".join(words[:n]))
    yield "no_topic", sms("preview.sms.short", True)
    yield "minimal", sms("preview.sms.minimal", True)
    yield "tiny", sms("preview.sms.tiny", True)


HINTED_STEPS = ("as_written", "gsm_punctuation", "no_emoji", "short_topic")


def _hints(catalog: Catalog, r: Resolved) -> list[str]:
    if r.snooze_minutes is None:
        return []
    found = (catalog.string(r.locale, "sms", key) for key in ("hint", "hint_short"))
    return [h.format(snooze=r.snooze_minutes) for h in found if h]


def build_sms(catalog: Catalog, r: Resolved) -> SmsText:
    """The first candidate that fits one segment; the minimal form always does for names of
    ≤ 24 characters, leads ≤ 60 and streaks < 10^6 (property-tested)."""
    hints = _hints(catalog, r)
    if hints:
        for step, text in _candidates(catalog, r):
            if step not in HINTED_STEPS:
                break
            for hint in hints:
                size = gsm7.measure(f"{text} {hint}")
                if size.segments <= 1:
                    return SmsText(f"{text} {hint}", size.encoding, size.units, size.segments, step + "+hint")
    last: tuple[str, str] | None = None
    for step, text in _candidates(catalog, r):
        size = gsm7.measure(text)
        last = (step, text)
        if size.segments <= 1:
            return SmsText(text, size.encoding, size.units, size.segments, step)
    assert last is not None
    size = gsm7.measure(last[1])
    return SmsText(last[1], size.encoding, size.units, size.segments, last[0])
