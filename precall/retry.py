"""The one retry policy: exponential backoff, capped, optionally jittered, named per use.

Every wait-and-try-again in precall takes its delays from a `Backoff` below, so the constants
are in one place and each says why it is what it is. `Backoff.attempts()` hands out the delays of
one run of failures; `reset()` starts over after a success.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    first_s: float
    cap_s: float
    factor: float = 2.0
    jitter: float = 0.0  # ± this fraction of each delay, so retries of many rows do not align

    def attempts(self) -> Attempts:
        return Attempts(self)


class Attempts:
    """The delays of one run of failures: first_s, then ×factor up to cap_s."""

    def __init__(self, policy: Backoff) -> None:
        self.policy = policy
        self._next = policy.first_s

    @property
    def upcoming(self) -> float:
        """The next delay, without jitter (for a log line or a deadline check)."""
        return self._next

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(delay * self.policy.factor, self.policy.cap_s)
        if self.policy.jitter:
            delay *= random.uniform(1 - self.policy.jitter, 1 + self.policy.jitter)
        return delay

    def reset(self) -> None:
        self._next = self.policy.first_s


# Reconnecting to PostgreSQL (dispatcher loop, liveness, write-backs while the server restarts):
# back at once after a restart (0.2 s), never more than 5 s away from it.
RECONNECT = Backoff(first_s=0.2, cap_s=5.0)
# The LISTEN connection: a missed NOTIFY costs nothing (the loop polls and catches up), so it
# may wait longer between attempts.
LISTEN = Backoff(first_s=0.2, cap_s=10.0)
# FCM's transient answers (429/5xx/timeouts): inside the preview's few minutes, jittered so the
# previews of one outage do not come back in step.
FCM_TRANSIENT = Backoff(first_s=0.5, cap_s=5.0, jitter=0.2)
# Twilio's 429 (20429, too many requests for this sender): the message was not created, so a
# retry cannot send twice; a second later the sender's queue has room again.
SMS_RATE_LIMITED = Backoff(first_s=1.0, cap_s=4.0, jitter=0.2)
# The call webhook at T: three quick attempts (0.5 s, 1 s) inside the call's grace period.
CALL_WEBHOOK = Backoff(first_s=0.5, cap_s=2.0)
