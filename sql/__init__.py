"""precall's SQL: numbered migrations, the repeatable definitions of functions, views and
triggers (sql/functions/), and the named statements Python sends (sql/queries/, one file per
caller: dispatcher, api, cli, tooling), loaded as package resources."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import LiteralString, cast

_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_QUERY_HEADER = re.compile(r"^-- (\w+) --$", re.MULTILINE)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


@dataclass(frozen=True)
class Repeatable:
    """One file of sql/functions/: the current definition of every function, view and trigger
    of an area, re-applied whenever the file changes."""

    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def label(self) -> str:
        return f"functions/{self.name}"


def migrations() -> list[Migration]:
    """Every migration file, in version order; a badly named file is an error, not skipped."""
    found: list[Migration] = []
    for entry in resources.files(__name__).joinpath("migrations").iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _MIGRATION_NAME.match(entry.name)
        if match is None:
            raise ValueError(f"migration file name {entry.name!r} does not match NNNN_snake_case.sql")
        found.append(Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration versions in {versions}")
    return found


def repeatables() -> list[Repeatable]:
    """sql/functions/*.sql by name. Their order barely matters: each file holds its triggers after
    their functions and function bodies are checked when they run; a view is checked when created,
    so one that calls functions (experiments.sql's report) sorts after their file (estimation.sql)."""
    files = resources.files(__name__).joinpath("functions").iterdir()
    return sorted((Repeatable(e.name, e.read_text(encoding="utf-8")) for e in files if e.name.endswith(".sql")),
                  key=lambda r: r.name)


def script(name: str) -> LiteralString:
    """A whole .sql file shipped beside the migrations (e.g. cron_support.sql)."""
    return cast(LiteralString, resources.files(__name__).joinpath(name).read_text(encoding="utf-8"))


@cache
def _queries() -> dict[str, str]:
    found: dict[str, str] = {}
    for entry in sorted(resources.files(__name__).joinpath("queries").iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        parts = _QUERY_HEADER.split(entry.read_text(encoding="utf-8"))
        for i in range(1, len(parts), 2):
            if parts[i] in found:
                raise ValueError(f"query {parts[i]!r} is named twice (sql/queries/{entry.name})")
            # The comment lines above a statement document it; the server gets the statement alone
            # (pg_cron stores it as the job's command, pg_stat_activity shows it).
            lines = parts[i + 1].strip().splitlines()
            while lines and lines[0].startswith("--"):
                lines.pop(0)
            found[parts[i]] = "\n".join(lines).strip()
    return found


def query_names() -> list[str]:
    return sorted(_queries())


def query(name: str) -> LiteralString:
    """A named statement of sql/queries/<caller>.sql (each starts with a `-- name --` header)."""
    return cast(LiteralString, _queries()[name])
