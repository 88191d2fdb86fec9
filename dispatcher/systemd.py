"""The systemd notify protocol, spoken directly (no extra daemon): READY=1, WATCHDOG=1, STOPPING=1.

NOTIFY_SOCKET is a datagram socket path, or an abstract socket written with a leading '@'.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping


class SystemdNotifier:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        raw = env.get("NOTIFY_SOCKET", "")
        self._address: str | None = ("\0" + raw[1:]) if raw.startswith("@") else (raw or None)
        usec = env.get("WATCHDOG_USEC", "")
        # Ping at half the watchdog period, at most once a second when none is set.
        self._watchdog_every = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 else 1.0
        self._last_watchdog = 0.0
        self._sock: socket.socket | None = None
        if self._address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, message: str) -> None:
        if self._sock is None or self._address is None:
            return
        try:
            self._sock.sendto(message.encode(), self._address)
        except OSError:
            pass  # systemd gone or socket not ours: nothing to tell

    def ready(self) -> None:
        self.notify("READY=1\nSTATUS=listening on precall_due")

    def watchdog(self) -> None:
        now = time.monotonic()
        if now - self._last_watchdog >= self._watchdog_every:
            self._last_watchdog = now
            self.notify("WATCHDOG=1")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
