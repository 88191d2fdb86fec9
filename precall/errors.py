"""precall's exception tree, in one place.

PrecallError                 anything reported as one readable line (CLI) or one error body (API)
 ├── ConfigError             a missing or invalid environment variable
 ├── MigrationError          the ledger and the code disagree, or a migration refused
 ├── CronUnavailable         pg_cron is not loaded or lives elsewhere
 ├── Refused                 the database said no, with one of precall's SQLSTATEs (below)
 │    ├── NoSuchCall              PC001
 │    ├── CallNotPending          PC002
 │    ├── CallTooLate             PC003
 │    ├── PreviewInFlight         PC004
 │    ├── PreviewAlreadySent      PC005
 │    ├── ExperimentRefused       PC010 (precall.create_experiment: what would not run as asked)
 │    └── InvalidArgument         22023 (PostgreSQL's invalid_parameter_value)
 ├── ProviderError           a send failed; `code` is FCM's or Twilio's own
 │    ├── DeadToken               the push token will never work again
 │    ├── Transient               worth retrying before the deadline
 │    └── Permanent               do not retry
 └── ApiError                an HTTP answer: status, error code, detail (api/errors.py renders it)

SQL functions raise refusals with `USING ERRCODE = 'PC00n'`; `from_database()` is the one place
that turns a SQLSTATE into a class, so callers catch classes, never match message text.
"""

from __future__ import annotations

from typing import ClassVar

import psycopg


class PrecallError(Exception):
    """An error the user can act on; str(e) is the one line to print."""


class ConfigError(PrecallError):
    pass


class MigrationError(PrecallError):
    pass


class CronUnavailable(PrecallError):
    pass


# -- refusals from SQL ----------------------------------------------------------------------------

class Refused(PrecallError):
    sqlstate: ClassVar[str] = ""


class NoSuchCall(Refused):
    sqlstate = "PC001"


class CallNotPending(Refused):
    sqlstate = "PC002"


class CallTooLate(Refused):
    sqlstate = "PC003"


class PreviewInFlight(Refused):
    sqlstate = "PC004"


class PreviewAlreadySent(Refused):
    sqlstate = "PC005"


class ExperimentRefused(Refused):
    sqlstate = "PC010"


class InvalidArgument(Refused):
    sqlstate = "22023"


BY_SQLSTATE: dict[str, type[Refused]] = {
    cls.sqlstate: cls for cls in (NoSuchCall, CallNotPending, CallTooLate, PreviewInFlight, PreviewAlreadySent,
                                  ExperimentRefused, InvalidArgument)
}


def from_database(exc: psycopg.Error) -> Refused | None:
    """The Refused subclass for a database error carrying one of precall's SQLSTATEs, else None."""
    cls = BY_SQLSTATE.get(exc.sqlstate or "")
    if cls is None:
        return None
    return cls(exc.diag.message_primary or str(exc).splitlines()[0])


# -- providers ------------------------------------------------------------------------------------

class ProviderError(PrecallError):
    """A send that failed; `code` is the provider's own (FCM errorCode, Twilio error code)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class DeadToken(ProviderError):
    """The push token will never work again (UNREGISTERED, SENDER_ID_MISMATCH, invalid token)."""


class Transient(ProviderError):
    """Worth retrying before the deadline (429, 500, 503, timeouts). `retry_after_s`: the wait the
    provider asked for (an HTTP Retry-After), which a retry honours."""

    def __init__(self, code: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(code, message)
        self.retry_after_s = retry_after_s


class Permanent(ProviderError):
    """Do not retry (bad payload, invalid number, opted out…)."""


# -- the API --------------------------------------------------------------------------------------

class ApiError(PrecallError):
    """An HTTP error answer in the one shape {"error": error, "detail": detail}."""

    def __init__(self, status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail, self.headers = status, error, detail, headers
