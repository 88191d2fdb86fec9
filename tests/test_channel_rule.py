"""One channel rule: dispatcher/channel.py owns it, and SQL's precall.guess_preview_type (what
planning writes, what `precall capacity --channel` counts) gives the same answer for every
combination of the fields it reads, NULLs and empty strings included."""

from __future__ import annotations

import itertools
import json

from precall.dispatcher.channel import Reachability, first_preview_type

PREFS = [None, "push_only", "sms_only", "push_and_sms"]
TOKENS = [None, "", "tok-" + "x" * 40]
BOOLS = [None, False, True]
PHONES = [None, "", "+15555550100"]


def test_sql_plans_the_preview_the_dispatcher_sends_for_every_combination(conn) -> None:
    combos = list(itertools.product(PREFS, TOKENS, BOOLS, PHONES, BOOLS))
    rows = [dict(notification_pref=p, fcm_token=t, push_enabled=e, phone_number=ph, sms_opted_out=o)
            for p, t, e, ph, o in combos]
    # jsonb_populate_record builds users rows without the table's constraints, as an adopted
    # table's NULLs and empty strings would be.
    sql_answers = [r[0] for r in conn.execute(
        "SELECT precall.guess_preview_type(jsonb_populate_record(NULL::users, x))"
        " FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS a(x, i) ORDER BY i",
        (json.dumps(rows),)).fetchall()]
    mismatches = [(row, sql_answer, first_preview_type(Reachability(**row)))
                  for row, sql_answer in zip(rows, sql_answers)
                  if sql_answer != first_preview_type(Reachability(**row))]
    assert len(sql_answers) == len(combos) == 324
    assert not mismatches, mismatches[:5]


def test_push_and_sms_without_a_token_is_planned_as_sms_and_no_channel_as_none(conn, make) -> None:
    """`precall capacity --channel sms` counts queued rows by channel: a push_and_sms user without
    a token was planned as push (SMS undercounted), a user with no channel as push too."""
    both = make.user(notification_pref="push_and_sms", phone_number="+15555550101")
    nothing = make.user(phone_number=None)
    for user, channel, type_ in ((both, "sms", "preview_sms"), (nothing, None, "preview_push")):
        call = make.call(user, in_seconds=120)
        [row] = make.previews(call)
        assert (row["status"], row["channel"], row["type"]) == ("queued", channel, type_)
    at_risk_sms = conn.execute("SELECT count(*) FROM notification_logs WHERE status = 'queued' AND channel = 'sms'"
                               ).fetchone()
    assert at_risk_sms == (1,)
