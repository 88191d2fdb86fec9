"""precall's exception tree, in one place.

PrecallError                 anything the CLI reports as one readable line
 ├── ConfigError             a missing or invalid environment variable
 ├── MigrationError          the ledger and the code disagree, or a migration refused
 └── CronUnavailable         pg_cron is not loaded or lives elsewhere
"""


class PrecallError(Exception):
    """An error the user can act on; str(e) is the one line to print."""


class ConfigError(PrecallError):
    pass


class MigrationError(PrecallError):
    pass


class CronUnavailable(PrecallError):
    pass
