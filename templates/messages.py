"""Builds the push title and body for a preview: coach name, minutes, streak emoji, topic, locale."""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field

from precall.templates.catalog import Catalog, Phrase

log = logging.getLogger("precall.messages")

DEFAULT_COACH_NAME = "Max"
MAX_NAME_CHARS = 24
NARROW_NBSP = "\u202f"


def streak_emoji(streak: int) -> str:
    """The milestone emoji: 🌱 days 0-2 (a habit sprouting), ⭐ on the weekly milestones 7 and 14,
    🔥 days 15-20 (on fire), 🏆 from day 21 (the program's final check-in), 💪 otherwise."""
    if streak >= 21:
        return "🏆"
    if streak in (7, 14):
        return "⭐"
    if streak >= 15:
        return "🔥"
    if streak <= 2:
        return "🌱"
    return "💪"


ZWJ = "\u200d"


def _emoji_joiner(value: str, i: int) -> bool:
    """A zero-width joiner inside an emoji sequence (👨‍👩‍👧, ❤️‍🔥): kept, it is part of the glyph."""
    before = value[i - 1] if i > 0 else ""
    after = value[i + 1] if i + 1 < len(value) else ""
    return (bool(before) and (unicodedata.category(before) in ("So", "Sk") or before == "\ufe0f")
            and bool(after) and unicodedata.category(after) == "So")


def clean_text(value: str) -> str:
    """Data for a message: NFC; control, surrogate and format characters removed (bidi overrides
    such as U+202E reorder the text around them, zero-width ones hide in it); whitespace
    collapsed."""
    value = unicodedata.normalize("NFC", value)
    kept = []
    for i, ch in enumerate(value):
        if ch.isspace():
            kept.append(" ")
        elif unicodedata.category(ch) in ("Cc", "Cs"):
            continue
        elif unicodedata.category(ch) == "Cf" and not (ch == ZWJ and _emoji_joiner(value, i)):
            continue
        else:
            kept.append(ch)
    return re.sub(r"\s+", " ", "".join(kept)).strip()


def coach_name(raw: str | None) -> str:
    """The bare name ("Max"): a stored "Coach Max" does not become "Coach Coach Max"."""
    name = clean_text(raw or "")
    name = re.sub(r"^(coach\s+)+", "", name, flags=re.IGNORECASE)
    name = name[:MAX_NAME_CHARS].rstrip()
    return name or DEFAULT_COACH_NAME


def minutes_left(seconds: float) -> int:
    """Whole minutes until the call, rounded, at least 1."""
    return max(1, int(seconds / 60 + 0.5))


def french_typography(text: str) -> str:
    """A narrow no-break space before ! ? ; : (push only; an SMS never carries it)."""
    return re.sub(r" ([!?;:])", NARROW_NBSP + r"\1", text)


@dataclass(frozen=True)
class MessageInput:
    coach_name: str | None
    streak: int
    topic_key: str | None
    locale: str | None
    minutes: int
    # precall.settings.snooze_minutes: the SMS ends with the reply hint ("Reply 2: +10 min, 3:
    # skip") when it still fits one segment; None: no hint (a display, not a send).
    snooze_minutes: int | None = None
    # An experiment arm's copy variant (templates/<locale>/variants/<name>/), None: the default texts.
    variant: str | None = None


@dataclass(frozen=True)
class Resolved:
    """The input after every fallback, with the fallbacks noted."""

    locale: str
    name: str
    streak: int
    minutes: int
    emoji: str
    topic: Phrase
    notes: list[str] = field(default_factory=list)
    snooze_minutes: int | None = None
    variant: str | None = None


@dataclass(frozen=True)
class PushText:
    title: str
    body: str


def resolve(catalog: Catalog, inp: MessageInput, ids: Mapping[str, object] | None = None) -> Resolved:
    """`ids` (call, user, notification) go on any warning, so a log line names its preview."""
    notes: list[str] = []
    locale = catalog.resolve(inp.locale)
    if (inp.locale or "").replace("_", "-").lower() != locale:
        notes.append(f"locale {inp.locale!r} -> {locale}")
    name = coach_name(inp.coach_name)
    if not clean_text(inp.coach_name or ""):
        notes.append(f"no coach name -> {name}")
    topic_key = clean_text(inp.topic_key) if inp.topic_key is not None else None
    topic = catalog.topic(locale, topic_key)
    if topic is None:
        topic = catalog.unknown_topic(locale)
        notes.append(f"unknown topic {inp.topic_key!r} -> {topic.full!r}")
        log.warning("unknown topic key %r, using a neutral phrase", inp.topic_key, extra=dict(ids or {}))
    streak = max(0, int(inp.streak))
    snooze = max(1, int(inp.snooze_minutes)) if inp.snooze_minutes is not None else None
    variant = inp.variant
    if variant is not None and variant not in catalog.variants(locale):
        notes.append(f"variant {variant!r} missing in {locale} -> default texts")
        variant = None
    return Resolved(locale, name, streak, max(1, int(inp.minutes)), streak_emoji(streak), topic, notes, snooze, variant)


def push_text(catalog: Catalog, r: Resolved, typography: bool = False) -> PushText:
    if r.streak == 7:
        body = catalog.render(r.locale, "preview.body.milestone_7", r.variant)
    elif r.streak == 21:
        body = catalog.render(r.locale, "preview.body.milestone_21", r.variant)
    else:
        body = catalog.render(r.locale, "preview.body.default", r.variant, streak=r.streak, topic=r.topic.full,
                              context=catalog.context_line(r.locale, r.streak))
    # No doubled emoji: the day-21 body already ends on 🏆.
    emoji = "" if r.emoji in body else r.emoji
    title = catalog.render(r.locale, "preview.title", r.variant, name=r.name, min=r.minutes, emoji=emoji)
    if typography and r.locale == "fr":
        title, body = french_typography(title), french_typography(body)
    return PushText(title, body)
