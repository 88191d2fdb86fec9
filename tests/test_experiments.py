"""Experiments scored on answered calls (issue 19): assignment, planning under an arm, the
holdout, and the report's figures against independent computations (tests/test_statistics.py)."""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from datetime import timedelta

import pytest

from plugins.processes import precall_cli, wait_until
from test_statistics import fisher_p, newcombe, wilson, z_test_p

pytestmark = pytest.mark.integration

USERS = 3000
SHARES = {"holdout": 0.2, "control": 0.4, "lead10": 0.4}


def create(db, *args: str) -> None:
    out = precall_cli("experiments", "create", *args, env={"DATABASE_URL": db})
    assert out.returncode == 0, out.stderr


def point(salt: str, user: str) -> float:
    """precall.assignment_point, recomputed: the first 52 bits of md5(salt ':' user id)."""
    return int(hashlib.md5(f"{salt}:{user}".encode()).hexdigest()[:13], 16) / 2**52


def expected_arm(salt: str, user: str) -> str:
    upto = 0.0
    for arm in ("holdout", "control", "lead10"):
        upto += SHARES[arm]
        if point(salt, user) < upto:
            return arm
    raise AssertionError("shares add up to 1")


def three_thousand(conn, db) -> tuple[dict[str, str], object]:
    conn.execute("INSERT INTO users (fcm_token, platform, push_enabled, notification_lead_min)"
                 " SELECT 'tok-exp-' || g, 'android', true, 1 FROM generate_series(1, %s) g", (USERS,))
    create(db, "lead-test", "--arm", "control", "--arm", "lead10:lead_min=10", "--holdout", "0.2")
    T = conn.execute("SELECT date_trunc('second', now()) + interval '10 minutes 40 seconds'").fetchone()[0]
    conn.execute("INSERT INTO scheduled_calls (user_id, scheduled_at, topic) SELECT id, %s, 'mood_check' FROM users", (T,))
    # The triggers planned the lead10 previews (due in the window now); the cron run at
    # T - 90 s plans the rest (time set through the database, not waited for).
    conn.execute("SELECT precall.plan_due_previews(%s)", (T - timedelta(seconds=90),))
    arms = dict(conn.execute("SELECT user_id::text, arm FROM precall.experiment_assignments").fetchall())
    return arms, T


def test_assignment_is_per_user_reproducible_and_planning_applies_the_arm(db, conn) -> None:
    arms, T = three_thousand(conn, db)
    assert len(arms) == USERS
    for arm, share in SHARES.items():
        count = sum(1 for a in arms.values() if a == arm)
        assert abs(count - USERS * share) <= 3 * math.sqrt(USERS * share * (1 - share)), (arm, count)
    salt = conn.execute("SELECT salt FROM precall.experiments WHERE name = 'lead-test'").fetchone()[0]
    assert all(expected_arm(salt, u) == a for u, a in arms.items())  # the documented hash, recomputed
    # planned_send_at: the arm's lead decides it (send_at may be a few ms earlier: the burst
    # smoothing spaces previews planned for one instant 1/capacity apart).
    rows = conn.execute("SELECT n.user_id::text, n.arm, n.status, n.reason_code, n.planned_send_at"
                        " FROM notification_logs n").fetchall()
    assert len(rows) == USERS and all(arms[u] == arm for u, arm, *_ in rows)  # each row records its arm
    for user, arm, status, code, send_at in rows:
        if arm == "holdout":
            assert (status, code) == ("skipped", "holdout")
        elif arm == "lead10":
            assert status == "queued" and send_at == T - timedelta(minutes=10)
        else:
            assert status == "queued" and send_at == T - timedelta(minutes=1)  # the user's own lead
    # A re-run changes nothing: no new rows, no new or changed assignments.
    conn.execute("SELECT precall.plan_due_previews(%s)", (T - timedelta(seconds=80),))
    assert dict(conn.execute("SELECT user_id::text, arm FROM precall.experiment_assignments").fetchall()) == arms
    assert conn.execute("SELECT count(*) FROM notification_logs").fetchone() == (USERS,)


def test_lead10_leaves_at_t_minus_10_and_the_holdout_sends_nothing(db, conn, make, fake_fcm, start_dispatcher) -> None:
    users = [make.user(fcm_token=f"tok-e2e-{i}", platform="android", push_enabled=True, notification_lead_min=1)
             for i in range(40)]
    create(db, "e2e", "--arm", "control", "--arm", "lead10:lead_min=10", "--holdout", "0.2")
    conn.execute("INSERT INTO scheduled_calls (user_id, scheduled_at, topic)"
                 " SELECT unnest(%s::uuid[]), now() + interval '10 minutes 4 seconds', 'mood_check'", (users,))
    T = conn.execute("SELECT max(scheduled_at) FROM scheduled_calls").fetchone()[0]
    arms = dict(conn.execute("SELECT user_id::text, arm FROM precall.experiment_assignments").fetchall())
    lead10 = {u for u, a in arms.items() if a == "lead10"}
    assert lead10 and len(arms) == len(lead10)  # only lead10's previews were in the window: only they are assigned
    start_dispatcher()
    wait_until(lambda: len(fake_fcm.state.accepted()) == len(lead10), timeout=20)
    time.sleep(2)
    sent = fake_fcm.state.accepted()
    assert len(sent) == len(lead10)
    for r in sent:
        assert -0.05 <= r.at - (T - timedelta(minutes=10)).timestamp() <= 1.5
        assert r.message["notification"]["title"].startswith("Coach Max is calling in 10 min")
    # The others are planned at their own lead; the holdout's rows say why nothing will leave.
    conn.execute("SELECT precall.plan_due_previews(%s)", (T - timedelta(seconds=90),))
    holdout = conn.execute("SELECT count(*) FROM notification_logs WHERE arm = 'holdout' AND status = 'skipped'"
                           " AND reason_code = 'holdout'").fetchone()[0]
    assert holdout == sum(1 for a in conn.execute("SELECT arm FROM precall.experiment_assignments") if a[0] == "holdout")


def _p(x1: int, n1: int, x2: int, n2: int) -> float:
    k, n = x1 + x2, n1 + n2
    expected = min(n1, n2) * min(k, n - k) / n
    return fisher_p(x1, n1, x2, n2) if expected < 10 else z_test_p(x1, n1, x2, n2)


def test_the_report_equals_independent_computations(db, conn) -> None:
    arms, T = three_thousand(conn, db)
    calls = conn.execute("SELECT c.id::text, c.user_id::text FROM scheduled_calls c ORDER BY c.id").fetchall()
    by_arm: dict[str, list[str]] = {}
    for call, user in calls:
        by_arm.setdefault(arms[user], []).append(call)
    # Outcomes the test sets: the holdout rarely answers (Fisher's test against the control's few),
    # lead10 often; one of lead10's calls is skipped by the user and one answered by a machine:
    # both count as not answered.
    answered = {"holdout": set(by_arm["holdout"][:1]), "control": set(by_arm["control"][:6]),
                "lead10": set(by_arm["lead10"][: len(by_arm["lead10"]) * 3 // 5])}
    skipped, machine = by_arm["lead10"][0], by_arm["lead10"][1]
    conn.execute("UPDATE scheduled_calls SET scheduled_at = now() - interval '1 hour'")
    conn.execute("UPDATE notification_logs SET sent_at = now() - interval '1 hour' WHERE status = 'queued'")
    every_answered = [c for s in answered.values() for c in s]
    conn.execute("UPDATE scheduled_calls SET status = CASE WHEN id = ANY(%s::uuid[]) THEN 'answered' ELSE 'no_answer' END",
                 (every_answered,))
    conn.execute("INSERT INTO precall.call_outcomes (call_id, status, answered_by) VALUES (%s, 'answered', 'machine')",
                 (machine,))
    conn.execute("UPDATE scheduled_calls SET status = 'cancelled' WHERE id = %s", (skipped,))
    conn.execute("INSERT INTO precall.call_actions (call_id, user_id, action, channel, outcome)"
                 " SELECT id, user_id, 'skip', 'push', 'applied' FROM scheduled_calls WHERE id = %s", (skipped,))
    counts = {arm: (len(answered[arm] - {skipped, machine}), len(by_arm[arm])) for arm in SHARES}
    out = precall_cli("experiments", "report", "lead-test", "--json", env={"DATABASE_URL": db})
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    got = {a["arm"]: a for a in report["arms"]}
    assert [a["arm"] for a in report["arms"]] == ["holdout", "control", "lead10"]
    for arm, (x, n) in counts.items():
        a = got[arm]
        assert (a["answered"], a["calls"], a["users"]) == (x, n, n)
        assert a["answer_rate"] == pytest.approx(x / n, abs=1e-12)
        assert a["ci95"] == pytest.approx(list(wilson(x, n)), abs=1e-9)
        for key, base in (("vs_holdout", "holdout"), ("vs_control", "control")):
            if arm == base:
                assert a[key] is None
                continue
            bx, bn = counts[base]
            diff, lo, hi = newcombe(x, n, bx, bn)
            assert a[key]["diff"] == pytest.approx(diff, abs=1e-9)
            assert a[key]["ci95"] == pytest.approx([lo, hi], abs=1e-9)
            assert a[key]["p"] == pytest.approx(_p(x, n, bx, bn), abs=1e-9)
    assert got["control"]["vs_holdout"]["p"] == pytest.approx(fisher_p(*counts["control"], *counts["holdout"]), abs=1e-9)
    assert report["verdict"].startswith("lead10 beats control by +")
    assert report["allocations"][0]["shares"] == {"holdout": 0.2, "control": 0.4, "lead10": 0.4}
    assert report["allocation"] == "fixed" and len(report["allocations"]) == 1
    # precall stats leaves the holdout out of call_answer_rate.
    kpi = conn.execute("SELECT numerator, denominator FROM precall.kpis(now() - interval '1 day')"
                       " WHERE kpi = 'call_answer_rate'").fetchone()
    assert (int(kpi[0]), int(kpi[1])) == (counts["control"][0] + counts["lead10"][0],
                                          counts["control"][1] + counts["lead10"][1] - 1)


def test_bad_experiments_are_refused_in_one_line_and_nothing_is_written(db, conn) -> None:
    create(db, "fr-only", "--arm", "control", "--population", "locale=fr")
    for args, says in [
        (["x1", "--arm", "a:share=0.9", "--holdout", "0.2", "--population", "locale=de"], "more than 1"),
        (["x2", "--arm", "a:lead_min=61", "--population", "locale=de"], "outside 1..60"),
        (["x3", "--arm", "a:colour=red", "--population", "locale=de"], "unknown key 'colour'"),
        (["x4", "--arm", "holdout", "--population", "locale=de"], "reserved"),
        (["x5", "--arm", "a", "--population", "locale=fr"], "overlaps experiment fr-only"),
        (["x6", "--arm", "a", "--population", "platform=ios"], "overlaps experiment fr-only"),
        (["x7", "--arm", "a", "--population", "colour=red"], "--population"),
        (["x8", "--arm", "a:variant=cold", "--population", "locale=de"], "variant 'cold' is missing in en, fr"),
        (["x9", "--arm", "a:channel=fax", "--population", "locale=de"], "not push, sms or push_and_sms"),
        (["fr-only", "--arm", "a", "--population", "locale=de"], "exists already"),
    ]:
        out = precall_cli("experiments", "create", *args, env={"DATABASE_URL": db})
        assert out.returncode == 1 and says in out.stderr and len(out.stderr.strip().splitlines()) == 1, (args, out.stderr)
    assert conn.execute("SELECT array_agg(name) FROM precall.experiments").fetchone() == (["fr-only"],)
    create(db, "de-only", "--arm", "control", "--arm", "b", "--population", "locale=de")  # disjoint: fine
    assert precall_cli("experiments", "stop", "nope", env={"DATABASE_URL": db}).returncode == 1


def test_stopping_replans_queued_previews_under_the_users_own_rules(db, conn, make) -> None:
    uid = make.user(fcm_token="tok-stop", push_enabled=True, notification_lead_min=1)
    create(db, "stop-me", "--arm", "lead10:lead_min=10")
    call = make.call(uid, in_seconds=9 * 60)
    assert conn.execute("SELECT arm, status FROM notification_logs WHERE call_id = %s", (call,)).fetchone() == ("lead10", "queued")
    out = precall_cli("experiments", "stop", "stop-me", env={"DATABASE_URL": db})
    assert out.returncode == 0 and "1 call(s) re-planned" in out.stdout, out.stderr
    rows = conn.execute("SELECT arm, status, reason_code FROM notification_logs WHERE call_id = %s ORDER BY created_at",
                        (call,)).fetchall()
    # The user's own lead is 1 minute: nothing is due yet, so nothing new is queued until then.
    assert rows == [("lead10", "cancelled", "experiment_stopped")]


def test_thompson_moves_shares_towards_the_better_arm_and_keeps_every_floor(db, conn) -> None:
    conn.execute("INSERT INTO users (fcm_token, platform, push_enabled, notification_lead_min)"
                 " SELECT 'tok-ts-' || g, 'ios', true, 1 FROM generate_series(1, 600) g")
    create(db, "ts", "--arm", "worse", "--arm", "better", "--arm", "same", "--holdout", "0.1", "--allocation", "thompson")
    T = conn.execute("SELECT date_trunc('second', now()) + interval '30 minutes'").fetchone()[0]
    conn.execute("INSERT INTO scheduled_calls (user_id, scheduled_at, topic) SELECT id, %s, 'mood_check' FROM users", (T,))
    conn.execute("SELECT precall.plan_due_previews(%s)", (T - timedelta(seconds=90),))
    # Outcomes: 'better' answers 70% of its calls, the others 20%.
    conn.execute("UPDATE scheduled_calls SET scheduled_at = now() - interval '1 hour'")
    conn.execute("""
        UPDATE scheduled_calls c SET status = CASE
            WHEN (row_number_in_arm % 10) < CASE s.arm WHEN 'better' THEN 7 ELSE 2 END THEN 'answered' ELSE 'no_answer' END
        FROM (SELECT s.user_id, s.arm, row_number() OVER (PARTITION BY s.arm ORDER BY s.user_id) AS row_number_in_arm
              FROM precall.experiment_assignments s) s
        WHERE s.user_id = c.user_id""")
    before = {a: float(v) for a, v in conn.execute(
        "SELECT name, share FROM precall.experiment_arms WHERE experiment_id = (SELECT id FROM precall.experiments WHERE name = 'ts')")}
    assert conn.execute("SELECT precall.reallocate_due_experiments(now())").fetchone() == (0,)  # not a day old yet
    assert conn.execute("SELECT precall.reallocate_due_experiments(now() + interval '1 day 1 minute')").fetchone() == (1,)
    after = {a: float(v) for a, v in conn.execute(
        "SELECT name, share FROM precall.experiment_arms WHERE experiment_id = (SELECT id FROM precall.experiments WHERE name = 'ts')")}
    assert after["holdout"] == before["holdout"] == 0.1
    assert after["better"] > before["better"] + 0.3, after
    assert min(after["worse"], after["same"]) >= 0.05, after
    assert sum(after.values()) == pytest.approx(1.0, abs=1e-9)
    report = json.loads(precall_cli("experiments", "report", "ts", "--json", env={"DATABASE_URL": db}).stdout)
    assert [al["shares"] for al in report["allocations"]] == [
        {k: pytest.approx(v) for k, v in before.items()}, {k: pytest.approx(v) for k, v in after.items()}]
    assert report["allocations"][1]["p_best"]["better"] > 0.99
    # Users keep their arm: only where new users go changes.
    assert conn.execute("SELECT count(*) FROM precall.experiment_assignments").fetchone() == (600,)


def test_doctor_warns_of_an_arm_significantly_below_control_and_stats_show_every_arm(db, conn) -> None:
    conn.execute("INSERT INTO users (fcm_token, platform, push_enabled, notification_lead_min)"
                 " SELECT 'tok-g-' || g, 'android', true, 1 FROM generate_series(1, 1200) g")
    create(db, "guard", "--arm", "control", "--arm", "worse:lead_min=10", "--holdout", "0.1")
    T = conn.execute("SELECT date_trunc('second', now()) + interval '30 minutes'").fetchone()[0]
    conn.execute("INSERT INTO scheduled_calls (user_id, scheduled_at, topic) SELECT id, %s, 'mood_check' FROM users", (T,))
    conn.execute("SELECT precall.plan_due_previews(%s)", (T - timedelta(seconds=90),))
    conn.execute("UPDATE scheduled_calls SET scheduled_at = now() - interval '1 hour'")
    conn.execute("""
        UPDATE scheduled_calls c SET status = CASE
            WHEN (s.n % 10) < CASE s.arm WHEN 'control' THEN 6 ELSE 3 END THEN 'answered' ELSE 'no_answer' END
        FROM (SELECT user_id, arm, row_number() OVER (PARTITION BY arm ORDER BY user_id) AS n
              FROM precall.experiment_assignments) s
        WHERE s.user_id = c.user_id""")
    out = precall_cli("doctor", env={"DATABASE_URL": db})
    line = next((ln for ln in out.stdout.splitlines() if "experiments" in ln and "guard" in ln), None)
    # The salt is random: the arms' sizes (and so the rates, to a point or so) vary from run to run.
    assert line is not None and re.match(r"WARN experiments: guard: arm worse answers (29|30)\.\d% against the "
                                         r"control's (59|60)\.\d%", line), out.stdout
    assert "precall experiments stop guard" in line
    by = json.loads(precall_cli("stats", "--since", "1d", "--by", "experiment", "--json", env={"DATABASE_URL": db}).stdout)
    groups = {k["grp"] for k in by["kpis"] if k["kpi"] == "call_answer_rate"}
    assert groups == {"guard/holdout", "guard/control", "guard/worse"}


def test_channel_and_variant_arms_at_send_time(db, conn, make, fake_fcm, fake_twilio, start_dispatcher) -> None:
    """An sms arm sends SMS to push users (never to an opted-out number: that user keeps their own
    rule, and the row says so); a variant arm's pushes carry its texts."""
    users = [make.user(fcm_token=f"tok-cv-{i}", platform="android", push_enabled=True, notification_lead_min=1,
                       phone_number=f"+1555555{i:04d}", coach="Max", current_streak=12) for i in range(30)]
    create(db, "cv", "--arm", "control", "--arm", "texted:channel=sms", "--arm", "warm:variant=warm")
    salt = conn.execute("SELECT salt FROM precall.experiments WHERE name = 'cv'").fetchone()[0]
    shares = conn.execute("SELECT a.name, a.share FROM precall.experiment_arms a JOIN precall.experiments e"
                          " ON e.id = a.experiment_id WHERE e.name = 'cv' ORDER BY a.position").fetchall()

    def arm_of(user: str) -> str:
        upto = 0.0
        for name, share in shares:
            upto += float(share)
            if point(salt, user) < upto:
                return name
        raise AssertionError

    texted = [u for u in users if arm_of(u) == "texted"]
    opted_out = texted[0]
    conn.execute("UPDATE users SET sms_opted_out = true WHERE id = %s", (opted_out,))
    start_dispatcher()
    conn.execute("INSERT INTO scheduled_calls (user_id, scheduled_at, topic)"
                 " SELECT unnest(%s::uuid[]), now() + interval '63 seconds', 'fitness_checkin'", (users,))
    wait_until(lambda: len(fake_fcm.state.accepted()) + len(fake_twilio.state.accepted()) == len(users), timeout=20)
    time.sleep(1)
    by_token = {r.message["token"]: r.message for r in fake_fcm.state.accepted()}
    sms_to = {r.form["To"] for r in fake_twilio.state.accepted()}
    phones = dict(conn.execute("SELECT id::text, phone_number FROM users").fetchall())
    tokens = dict(conn.execute("SELECT id::text, fcm_token FROM users").fetchall())
    for u in users:
        arm = arm_of(u)
        if arm == "texted" and u != opted_out:
            assert phones[u] in sms_to and tokens[u] not in by_token
        else:
            assert tokens[u] in by_token and phones[u] not in sms_to
            title = by_token[tokens[u]]["notification"]["title"]
            assert title.startswith("Max saved you a spot: your call is in 1 min!" if arm == "warm"
                                    else "Coach Max is calling in 1 min!"), (arm, title)
    kept = conn.execute("SELECT channel, reason FROM notification_logs WHERE user_id = %s", (opted_out,)).fetchone()
    assert kept[0] == "push" and "arm_channel_not_used" in kept[1]
    report = json.loads(precall_cli("experiments", "report", "cv", "--json", env={"DATABASE_URL": db}).stdout)
    got = {a["arm"]: a for a in report["arms"]}
    assert got["texted"]["own_rule_users"] == 1 and got["control"]["own_rule_users"] == 0
    assert got["texted"]["sms_spend"] == {"USD": pytest.approx(0.0075 * (len(texted) - 1))}
    assert got["texted"]["channel"] == "sms" and got["warm"]["variant"] == "warm"
