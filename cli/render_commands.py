"""`precall render` and `precall templates check`: what would be sent, and whether every
template fits."""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime, timezone
from typing import Optional

import psycopg
import typer

from precall.cli import store
from precall.templates.catalog import STRING_KEYS, TEMPLATE_KEYS, Catalog
from precall.config import database_url
from precall.errors import PrecallError
from precall.templates.messages import MessageInput, minutes_left
from precall.templates.render import RenderedPreview, Renderer
from precall.templates.sms_replies import REPLY_KINDS, build_reply

templates_app = typer.Typer(no_args_is_help=True, help="Check the message templates.")

# Worst cases: the longest names in each encoding class (24 characters).
WORST_NAMES = {
    "ascii": "Maximilian-Alexandrowski",
    "gsm_extension": "{Max}[Max]{Max}[Max]€€€€",
    "ucs2_bmp": "Ŝtefanŝtefanŝtefanŝtefan",
    "astral": "𝓜" * 24,
}
WORST_STREAKS = (0, 1, 6, 7, 12, 20, 21, 999)
# No hint (a display), and the reply hint with the shortest, default and longest snooze.
SNOOZES = (None, 1, 10, 60)


def _print(rendered: RenderedPreview, channel: str | None) -> None:
    for note in rendered.resolved.notes:
        typer.echo(f"note: {note}")
    if channel in (None, "push"):
        typer.echo(f"title: {rendered.push.title}")
        typer.echo(f"body:  {rendered.push.body}")
    if channel in (None, "sms"):
        sms = rendered.sms
        typer.echo(f"sms:   {sms.text}")
        typer.echo(f"       {sms.encoding}, {sms.units} units, {sms.segments} segment(s), step {sms.step}")


def render_cmd(
    user: Optional[str] = typer.Option(None, help="A user id: render from the database."),
    call: Optional[str] = typer.Option(None, help="A call id (with --user)."),
    locale: str = typer.Option("en", help="Locale (en, fr, fr-CA…)."),
    coach: Optional[str] = typer.Option("Max", help="Coach's bare name."),
    streak: int = typer.Option(1, min=0, help="Streak day."),
    topic: Optional[str] = typer.Option("fitness_checkin", help="Topic key."),
    lead: int = typer.Option(5, min=1, max=60, help="Minutes until the call."),
    channel: Optional[str] = typer.Option(None, help="push or sms (default: both)."),
    snooze: int = typer.Option(10, min=1, max=60, help="Snooze minutes the SMS reply hint says "
                               "(precall.settings.snooze_minutes; read from the database with --user)."),
    variant: Optional[str] = typer.Option(None, help="An experiment's copy variant (templates/<locale>/variants/)."),
) -> None:
    """Print exactly what would be sent: title, body and SMS, with the SMS's encoding and segments.

    Example: precall render --locale fr --coach Léa --streak 7 --topic mood_check --lead 5
    """
    if channel not in (None, "push", "sms"):
        raise PrecallError(f"--channel must be push or sms, not {channel!r}")
    renderer = Renderer.from_env()
    if user or call:
        if not (user and call):
            raise PrecallError("--user and --call go together")
        inp = _from_database(user, call)
    else:
        inp = MessageInput(coach, streak, topic, locale, lead, snooze)
    if variant is not None:
        inp = dataclasses.replace(inp, variant=variant)
    _print(renderer.render(inp), channel)


def _from_database(user_id: str, call_id: str) -> MessageInput:
    with psycopg.connect(database_url(), autocommit=True) as conn:
        try:
            row = store.message_inputs(conn, user_id, call_id)
        except psycopg.errors.InvalidTextRepresentation:
            raise PrecallError("--user and --call must be uuids") from None
    if row is None:
        raise PrecallError(f"no call {call_id} for user {user_id}")
    # Before the preview time, show what the planned send will say (the user's lead).
    lead = row.lead_min
    minutes = lead if row.seconds_left >= lead * 60 else minutes_left(max(row.seconds_left, 0))
    return MessageInput(row.coach_name, row.streak or 0, row.topic, row.locale, minutes, row.snooze_minutes)


_NOON = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


@templates_app.command("check")
def check_cmd() -> None:
    """Render every locale × topic × milestone × channel × reply hint with worst-case inputs, and
    every SMS reply answer; exit 1 if a key is missing in a locale or any SMS needs more than one
    segment.

    Example: precall templates check
    """
    logging.getLogger("precall.messages").setLevel(logging.ERROR)  # the unknown-topic case is deliberate
    catalog = Catalog()
    renderer = Renderer(catalog)
    problems: list[str] = []
    count = hinted = replies = 0
    variants = sorted({v for loc in catalog.locales for v in catalog.variants(loc)})
    for name in variants:  # an experiment arm names a variant for every user, whatever the locale
        problems += [f"{loc}: variant {name} is missing (templates/{loc}/variants/{name}/)"
                     for loc in catalog.locales if name not in catalog.variants(loc)]
    for locale in catalog.locales:
        missing = [k for k in TEMPLATE_KEYS if not catalog.has(locale, k)]
        problems += [f"{locale}: missing template {k}" for k in missing]
        problems += [f"{locale}: missing strings.toml [{sec}] {k}" for sec, k in STRING_KEYS
                     if catalog.string(locale, sec, k) is None]
        if missing:
            continue
        for kind in REPLY_KINDS:
            for name in WORST_NAMES.values():
                for minutes in (1, 10, 60):
                    reply = build_reply(catalog, locale, kind, name=name, at=_NOON, time_zone="Pacific/Chatham",
                                        snooze_minutes=minutes)
                    replies += 1
                    if reply.segments != 1:
                        problems.append(f"{locale}/reply {kind}/{name}: {reply.segments} segments "
                                        f"({reply.encoding}, {reply.units} units)")
        topics = sorted(set(catalog.topic_keys(locale)) | set(catalog.topic_keys("en")) | {"no_such_topic"})
        problems += [f"{locale}: missing topic {t}" for t in catalog.topic_keys("en") if t not in catalog.topic_keys(locale)]
        for topic in topics:
            for streak in WORST_STREAKS:
                for kind, name in WORST_NAMES.items():
                    for lead in (1, 5, 60):
                        for snooze in SNOOZES:
                            for variant in (None, *catalog.variants(locale)):
                                r = renderer.render(MessageInput(name, streak, topic, locale, lead, snooze, variant))
                                count += 1
                                hinted += r.sms.step.endswith("+hint")
                                if r.sms.segments != 1:
                                    problems.append(f"{locale}/{variant or 'default'}/{topic}/day {streak}/{kind} name/"
                                                    f"{lead} min/snooze {snooze}: SMS is {r.sms.segments} segments "
                                                    f"({r.sms.encoding}, {r.sms.units} units)")
                        if not r.push.title or not r.push.body:
                            problems.append(f"{locale}/{topic}/day {streak}: empty push text")
    for p in problems:
        typer.echo(p, err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo(f"templates ok: {len(catalog.locales)} locales, {len(variants)} variant(s), {count} renderings "
               f"({hinted} with the reply hint), {replies} reply answers, every SMS one segment")
