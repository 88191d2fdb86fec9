"""Messages: the spec's keys word for word, the milestone emoji, and an SMS that always fits one segment."""


import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plugins.processes import precall_cli

from precall.templates import gsm7
from precall.templates.messages import MessageInput, coach_name, minutes_left, streak_emoji
from precall.templates.render import Renderer
from precall.templates.sms_pricing import country_of, estimate
from precall.config import DEFAULT_SMS_PRICES
from decimal import Decimal

R = Renderer()


def render(locale="en", name="Max", streak=12, topic="fitness_checkin", minutes=5):
    return R.render(MessageInput(name, streak, topic, locale, minutes))


# --- the spec's push keys, word for word -------------------------------------------------------

@pytest.mark.parametrize("locale,title,body", [
    ("en", "Coach Max is calling in 5 min! 💪", "Day 12: your fitness goal check-in."),
    ("fr", "Coach Max t'appelle dans 5 min ! 💪", "Jour 12 : point objectif fitness."),
])
def test_default_push_keys_word_for_word(locale, title, body) -> None:
    r = render(locale)
    assert (r.push.title, r.push.body) == (title, body)


@pytest.mark.parametrize("locale,streak,body", [
    ("en", 7, "Day 7 — one full week! Let's celebrate."),
    ("fr", 7, "Jour 7 — une semaine complète ! On fête ça."),
    ("en", 21, "DAY 21! You made it. Final check-in. 🏆"),
    ("fr", 21, "JOUR 21 ! Tu l'as fait. Dernier point. 🏆"),
])
def test_milestone_bodies_word_for_word(locale, streak, body) -> None:
    assert render(locale, streak=streak).push.body == body


@pytest.mark.parametrize("key,en,fr", [
    ("fitness_checkin", "your fitness goal check-in", "point objectif fitness"),
    ("weekly_weighin", "weekly weigh-in & meal review", "pesée & bilan repas de la semaine"),
    ("mood_check", "mood & energy check", "point humeur & énergie"),
    ("meal_review", "yesterday's meals review", "bilan repas d'hier"),
    ("exercise_plan", "today's exercise plan", "planning sport du jour"),
])
def test_topics_word_for_word(key, en, fr) -> None:
    assert render("en", topic=key, streak=12).push.body == f"Day 12: {en}."
    assert render("fr", topic=key, streak=12).push.body == f"Jour 12 : {fr}."


def test_no_doubled_punctuation_or_emoji() -> None:
    assert render("en", topic="streak_celebrate").push.body == "Day 12: streak celebration!"
    assert render("fr", topic="streak_celebrate").push.body == "Jour 12 : fête du streak !"
    day21 = render("en", streak=21)
    assert (day21.push.title + day21.push.body).count("🏆") == 1
    assert day21.push.title == "Coach Max is calling in 5 min!"
    for streak in range(0, 30):
        r = render("en", streak=streak, topic="streak_celebrate")
        assert "!." not in r.push.body + r.sms.text and ".." not in r.push.body


def test_emoji_rule() -> None:
    assert [streak_emoji(d) for d in (0, 1, 2, 3, 6, 7, 12, 14, 15, 20, 21, 40)] == \
        ["🌱", "🌱", "🌱", "💪", "💪", "⭐", "💪", "⭐", "🔥", "🔥", "🏆", "🏆"]


def test_contextual_line_days() -> None:
    assert render("en", streak=6).push.body == "Day 6: your fitness goal check-in. One more day to a full week!"
    assert render("fr", streak=20).push.body == "Jour 20 : point objectif fitness. Demain, c'est le jour 21 !"
    assert render("en", streak=13).push.body == "Day 13: your fitness goal check-in."


def test_coach_name_is_bare_and_defaults() -> None:
    assert render(name="Coach Max").push.title.startswith("Coach Max is")
    assert coach_name("  coach  coach Léa\x07 ") == "Léa"
    r = render(name=None)
    assert r.push.title.startswith("Coach Max is") and any("no coach" in n for n in r.resolved.notes)


def test_template_injection_is_inert() -> None:
    r = render(name="{{ 7*7 }}{% if 1 %}x{% endif %}"[:24])
    assert "{{ 7*7 }}" in r.push.title and "49" not in r.push.title


def test_locale_fallback_order() -> None:
    assert render("fr-CA").resolved.locale == "fr"
    assert render("fr_FR").resolved.locale == "fr"
    assert render("de").resolved.locale == "en"
    assert render(None).resolved.locale == "en"


def test_unknown_topic_is_neutral_and_noted() -> None:
    r = render("en", topic="no_such_topic")
    assert r.push.body == "Day 12: today's check-in."
    assert any("unknown topic" in n for n in r.resolved.notes)


def test_minutes_left() -> None:
    assert [minutes_left(s) for s in (0, 20, 30, 89, 90, 299, 300, 330)] == [1, 1, 1, 1, 2, 5, 5, 6]
    assert render(minutes=3).sms.text.startswith("Coach Max calling in 3 min!")


def test_french_typography_push_only() -> None:
    r = Renderer(french_typography=True).render(MessageInput("Max", 12, "fitness_checkin", "fr", 5))
    assert r.push.title == "Coach Max t'appelle dans 5 min\u202f! 💪"
    assert "\u202f" not in r.sms.text


# --- encoding and segments, against hand-computed cases ---------------------------------------

@pytest.mark.parametrize("text,encoding,units,segments", [
    ("Hello", "GSM-7", 5, 1),
    ("€", "GSM-7", 2, 1),
    ("[x]", "GSM-7", 5, 1),
    ("Ça", "GSM-7", 2, 1),       # capital Ç is in the basic table
    ("ça", "UCS-2", 2, 1),       # lowercase ç is not
    ("fenêtre", "UCS-2", 7, 1),
    ("à é è ù", "GSM-7", 7, 1),
    ("⭐", "UCS-2", 1, 1),
    ("⭐\ufe0f", "UCS-2", 2, 1),
    ("💪", "UCS-2", 2, 1),
    ("a" * 160, "GSM-7", 160, 1),
    ("a" * 161, "GSM-7", 161, 2),
    ("a" * 306, "GSM-7", 306, 2),
    ("a" * 307, "GSM-7", 307, 3),
    ("[" * 80, "GSM-7", 160, 1),
    ("[" * 81, "GSM-7", 162, 2),
    ("é" * 70 + "ç", "UCS-2", 71, 2),
    ("ç" * 70, "UCS-2", 70, 1),
    ("ç" * 134, "UCS-2", 134, 2),
    ("ç" * 135, "UCS-2", 135, 3),
    ("Coach Max calling in 5 min! 💪 Day 12 — your fitness goal check-in. Answer!", "UCS-2", 75, 2),
    ("Coach Max t'appelle dans 5 min ! 💪 Jour 12 — point objectif fitness. Décroche !", "UCS-2", 80, 2),
])
def test_measure_hand_computed(text, encoding, units, segments) -> None:
    assert gsm7.measure(text) == gsm7.SmsSize(encoding, units, segments)


def test_spec_sms_degrades_to_one_segment() -> None:
    en = render("en")
    assert en.sms.text == "Coach Max calling in 5 min! Day 12 - your fitness goal check-in. Answer!"
    assert (en.sms.encoding, en.sms.segments) == ("GSM-7", 1)
    fr = render("fr")
    assert fr.sms.text == "Coach Max t'appelle dans 5 min ! Jour 12 - point objectif fitness. Décroche !"
    assert (fr.sms.encoding, fr.sms.segments) == ("GSM-7", 1)


def test_french_with_c_cedilla_still_fits_in_ucs2() -> None:
    r = render("fr", name="François-Xavier", topic="streak_celebrate", streak=123, minutes=60)
    assert r.sms.encoding == "UCS-2" and r.sms.units <= 70
    assert "François-Xavier" in r.sms.text and "60 min" in r.sms.text and "123" in r.sms.text


def test_sms_cost_estimate() -> None:
    assert country_of("+33612345678") == "FR" and country_of("+15555550100") == "US"
    assert estimate("+33612345678", 1, DEFAULT_SMS_PRICES) == (Decimal("0.065"), "EUR")
    assert estimate("+15555550100", 2, DEFAULT_SMS_PRICES) == (Decimal("0.0150"), "USD")
    assert estimate("+819012345678", 1, DEFAULT_SMS_PRICES) is None


# --- property: every SMS fits one segment and keeps coach, minutes and day ---------------------

names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=24
).filter(lambda s: s.strip() and not s.strip().lower().startswith("coach"))


@settings(max_examples=400, deadline=None)
@given(name=names, streak=st.integers(0, 999), minutes=st.integers(1, 60),
       topic=st.sampled_from(["fitness_checkin", "weekly_weighin", "mood_check", "meal_review",
                              "exercise_plan", "streak_celebrate", "unknown_x"]),
       locale=st.sampled_from(["en", "fr", "fr-CA", "en-GB", "de", ""]))
def test_every_sms_fits_one_segment(name, streak, minutes, topic, locale) -> None:
    r = R.render(MessageInput(name, streak, topic, locale, minutes))
    size = gsm7.measure(r.sms.text)
    assert size.segments == 1, (r.sms.text, size)
    assert (r.sms.encoding, r.sms.units) == (size.encoding, size.units)
    assert r.resolved.name in r.sms.text
    assert f"{minutes} min" in r.sms.text
    assert str(streak) in r.sms.text
    assert r.sms.text == r.sms.text.strip()


@pytest.mark.integration  # a child process or a local server: not the unit layer
def test_templates_check_passes_and_runs_in_make_test() -> None:
    out = precall_cli("templates", "check")
    assert out.returncode == 0, out.stderr
    assert "every SMS one segment" in out.stdout


@pytest.mark.integration  # a child process or a local server: not the unit layer
def test_render_cli_prints_fallbacks_not_tracebacks() -> None:
    out = precall_cli("render", "--locale", "xx", "--topic", "nope",
                      "--coach", "Max", "--streak", "12", "--lead", "5", "--channel", "sms")
    assert out.returncode == 0, out.stderr
    assert "note: locale 'xx' -> en" in out.stdout
    assert "note: unknown topic 'nope'" in out.stdout
    # The reply hint is worth more than the emoji (which alone makes the text UCS-2).
    assert "sms:   Coach Max calling in 5 min! Day 12 - today's check-in. Answer! Reply 2: +10 min, 3: skip" in out.stdout
    assert "GSM-7, 88 units, 1 segment(s), step no_emoji+hint" in out.stdout
    bare = precall_cli("render", "--locale", "xx", "--topic", "nope", "--coach", "Max", "--streak", "12", "--lead", "5",
                       "--channel", "sms", "--snooze", "60")
    assert "Reply 2: +60 min, 3: skip" in bare.stdout
    bad = precall_cli("render", "--channel", "fax")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_bidi_controls_and_zero_width_characters_never_reach_a_message() -> None:
    """U+202E reverses what follows it on screen ("Max" + RLO + "txet" shows as "Maxtext…"); zero-width
    characters hide inside a name. Both are removed; a ZWJ inside an emoji sequence stays."""
    hostile = "Max\u202eLIAVED\u200b\u2066\u200f\ufeff"
    r = render(name=hostile, topic="fitness\u200b_checkin")
    for text in (r.push.title, r.push.body, r.sms.text):
        assert not any(ch in text for ch in "\u202e\u200b\u2066\u200f\ufeff"), ascii(text)
    assert r.push.title.startswith("Coach MaxLIAVED is calling")
    assert r.push.body == "Day 12: your fitness goal check-in."  # the cleaned key is the known topic
    assert coach_name("Léa \U0001F469\u200d\U0001F4BB") == "Léa \U0001F469\u200d\U0001F4BB"
    assert coach_name("L\u200dé\u200da") == "Léa"


def test_the_unknown_topic_warning_names_its_preview(caplog) -> None:
    ids = {"call_id": "c-1", "user_id": "u-1", "notification_id": "n-1"}
    with caplog.at_level("WARNING", logger="precall.messages"):
        Renderer().render(MessageInput("Max", 12, "no_such_topic", "en", 5), ids)
    [rec] = [r for r in caplog.records if "unknown topic" in r.getMessage()]
    assert (rec.call_id, rec.user_id, rec.notification_id) == ("c-1", "u-1", "n-1")


# --- the reply hint and the answers to SMS replies (issue 18) -----------------------------------

def test_sms_ends_with_the_reply_hint_when_it_fits_one_segment() -> None:
    en = R.render(MessageInput("Max", 12, "fitness_checkin", "en", 5, snooze_minutes=10)).sms
    assert en.text == "Coach Max calling in 5 min! Day 12 - your fitness goal check-in. Answer! Reply 2: +10 min, 3: skip"
    assert (en.encoding, en.segments) == ("GSM-7", 1)
    fr = R.render(MessageInput("Max", 12, "fitness_checkin", "fr", 5, snooze_minutes=15)).sms
    assert fr.text.endswith("Décroche ! Réponds 2 : +15 min, 3 : annuler") and fr.segments == 1
    # Without a snooze time (a display), the text is what it was before the hint existed.
    assert render("en").sms.text == "Coach Max calling in 5 min! Day 12 - your fitness goal check-in. Answer!"


@given(name=st.text(min_size=0, max_size=40), streak=st.integers(0, 10**5), lead=st.integers(1, 60),
       snooze=st.integers(1, 60), locale=st.sampled_from(["en", "fr", "de"]))
@settings(max_examples=300, deadline=None)
def test_a_hinted_sms_is_always_one_segment(name, streak, lead, snooze, locale) -> None:
    sms = R.render(MessageInput(name, streak, "weekly_weighin", locale, lead, snooze_minutes=snooze)).sms
    assert sms.segments == 1, sms


def test_reply_answers_in_the_users_language_and_time_zone() -> None:
    from datetime import datetime, timezone

    from precall.templates.sms_replies import build_reply

    at = datetime(2026, 12, 4, 7, 40, tzinfo=timezone.utc)
    fr = build_reply(R.catalog, "fr-FR", "snooze", name="Coach Max", at=at, time_zone="Europe/Paris")
    assert (fr.text, fr.segments) == ("OK : Coach Max t'appellera à 08:40.", 1)
    en = build_reply(R.catalog, "en", "snooze", name="Max", at=at, time_zone="America/New_York")
    assert en.text == "OK: Coach Max will call at 02:40."
    assert build_reply(R.catalog, "xx", "skip").text == "OK: today's call is skipped."
    assert build_reply(R.catalog, "fr", "call_now", name="Max").text == "OK : Coach Max t'appelle maintenant."
    # A name that would not fit one UCS-2 segment: the short form, without it.
    long = build_reply(R.catalog, "fr", "snooze", name="𝓜" * 24, at=at, time_zone="No/Such_Zone")
    assert (long.text, long.segments) == ("OK : ton appel sera à 07:40.", 1)
    assert build_reply(R.catalog, "en", "help", snooze_minutes=15).text.startswith("Reply 1: call now, 2: +15 min")
