"""Loads the per-locale Jinja2 templates and phrases, and resolves a user's locale to one of them."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cached_property
from importlib import resources

import jinja2

DEFAULT_LOCALE = "en"
# Every locale must define each of these (`precall templates check` enforces it).
TEMPLATE_KEYS = (
    "preview.title",
    "preview.body.default",
    "preview.body.milestone_7",
    "preview.body.milestone_21",
    "preview.sms",
    "preview.sms.short",
    "preview.sms.minimal",
    "preview.sms.tiny",
)
# strings.toml phrases every locale must define (`precall templates check`).
STRING_KEYS = (
    ("sms", "hint"), ("sms", "hint_short"),
    ("replies", "call_now"), ("replies", "call_now_short"), ("replies", "snooze"), ("replies", "snooze_short"),
    ("replies", "skip"), ("replies", "refused"), ("replies", "help"),
)


def sentence(text: str) -> str:
    """Ends a phrase as a sentence without doubling punctuation ("celebration!" stays as is)."""
    text = text.rstrip()
    return text if text.endswith((".", "!", "?", "…")) else text + "."


@dataclass(frozen=True)
class Phrase:
    full: str
    short: str


class Catalog:
    """Templates and phrases for every locale folder under precall.templates."""

    def __init__(self) -> None:
        root = resources.files("precall.templates")
        self._root = root
        self.locales = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_"))
        # Data (names, topics) is only ever passed as variables, never compiled as a template,
        # so `{{ }}` in a coach name is inert. No HTML autoescape: these are plain-text messages.
        self._env = jinja2.Environment(
            loader=jinja2.FunctionLoader(self._load),
            autoescape=False,
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=False,
        )
        self._env.filters["sentence"] = sentence

    def _load(self, name: str) -> str | None:
        path = self._root.joinpath(name)
        return path.read_text(encoding="utf-8") if path.is_file() else None

    def resolve(self, locale: str | None) -> str:
        """Exact match, then the base language (fr-CA → fr), then English."""
        wanted = (locale or "").strip().replace("_", "-").lower()
        if wanted in self.locales:
            return wanted
        base = wanted.split("-")[0]
        return base if base in self.locales else DEFAULT_LOCALE

    def has(self, locale: str, key: str) -> bool:
        return self._root.joinpath(locale, f"{key}.j2").is_file()

    def variants(self, locale: str) -> list[str]:
        """The copy variants of a locale: folders under <locale>/variants/ (an experiment's arm
        names one; each template it lacks falls back to the locale's default)."""
        folder = self._root.joinpath(locale, "variants")
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []

    def render(self, locale: str, key: str, variant: str | None = None, **values: object) -> str:
        """The variant's template when it has one for this key, else the locale's default."""
        if variant and self._root.joinpath(locale, "variants", variant, f"{key}.j2").is_file():
            return self._env.get_template(f"{locale}/variants/{variant}/{key}.j2").render(**values).strip()
        return self._env.get_template(f"{locale}/{key}.j2").render(**values).strip()

    @cached_property
    def _strings(self) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = {}
        for locale in self.locales:
            path = self._root.joinpath(locale, "strings.toml")
            out[locale] = tomllib.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        return out

    def topic_keys(self, locale: str) -> list[str]:
        topics = self._strings[locale].get("topics", {})
        assert isinstance(topics, dict)
        return sorted(topics)

    def topic(self, locale: str, key: str | None) -> Phrase | None:
        topics = self._strings[locale].get("topics", {})
        assert isinstance(topics, dict)
        entry = topics.get(key or "")
        return Phrase(entry["full"], entry["short"]) if entry else None

    def unknown_topic(self, locale: str) -> Phrase:
        entry = self._strings[locale]["unknown_topic"]
        assert isinstance(entry, dict)
        return Phrase(entry["full"], entry["short"])

    def context_line(self, locale: str, streak: int) -> str | None:
        context = self._strings[locale].get("context", {})
        assert isinstance(context, dict)
        line = context.get(str(streak))
        return str(line) if line else None

    def string(self, locale: str, section: str, key: str) -> str | None:
        """A phrase of strings.toml's [section] (sms, replies), None when the locale lacks it."""
        table = self._strings[locale].get(section, {})
        assert isinstance(table, dict)
        value = table.get(key)
        return str(value) if value is not None else None
