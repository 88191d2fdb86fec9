"""The one retry policy (precall/retry.py): its delays, and no hand-written backoff elsewhere."""

from __future__ import annotations

import re
from pathlib import Path

from precall import retry


def test_delays_double_up_to_the_cap_and_start_over_after_a_success() -> None:
    a = retry.RECONNECT.attempts()
    assert [round(a.next_delay(), 3) for _ in range(8)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]
    a.reset()
    assert a.upcoming == 0.2


def test_jitter_stays_within_its_fraction() -> None:
    a = retry.FCM_TRANSIENT.attempts()
    delays = [a.next_delay() for _ in range(6)]
    for got, base in zip(delays, [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]):
        assert base * 0.8 <= got <= base * 1.2


def test_no_hand_written_backoff_outside_the_policy() -> None:
    root = Path(__file__).parents[1]
    doubling = re.compile(r"(backoff|delay) \* 2\b|\* 2 \*\* \(")
    offenders = [f"{p.relative_to(root)}:{n}" for folder in ("dispatcher", "api", "cli", "sql", "precall")
                 for p in (root / folder).rglob("*.py") if p.name != "retry.py"
                 for n, line in enumerate(p.read_text().splitlines(), 1) if doubling.search(line)]
    assert not offenders, offenders
