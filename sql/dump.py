"""The committed schema dump, sql/schema.sql: what `precall db migrate` builds in an empty
database, for reading and for review diffs (tests/test_schema.py fails when it is stale).

    .venv/bin/python -m precall.sql.dump        # or: make schema

pg_dump ≥ 15.14 writes a random `\\restrict` key into every dump; a fixed one keeps the file
stable. Comment lines (`--`) are not compared: they carry pg_dump's version.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

RESTRICT_KEY = "precall"
SCHEMA_FILE = Path(__file__).with_name("schema.sql")


def pg_dump_bin() -> str:
    from precall.localdb import _pg_bindir

    return str(_pg_bindir() / "pg_dump")


def dump(dsn: str) -> str:
    """The schema of the database at `dsn`, as committed."""
    out = subprocess.run([pg_dump_bin(), "--schema-only", "--no-owner", "--no-privileges",
                          f"--restrict-key={RESTRICT_KEY}", dsn], capture_output=True, text=True, check=True)
    return out.stdout


def comparable(text: str) -> list[str]:
    """The dump without comment and blank lines."""
    return [line for line in text.splitlines() if line.strip() and not line.startswith("--")]


def main() -> None:
    import psycopg

    from precall import localdb
    from precall.sql import migrate

    cluster = localdb.throwaway(preload_cron=False)
    try:
        with psycopg.connect(cluster.admin_dsn, autocommit=True) as conn:
            conn.execute("CREATE DATABASE app")
        dsn = cluster.dsn("app")
        migrate.migrate(dsn)
        SCHEMA_FILE.write_text(dump(dsn))
    finally:
        cluster.destroy()
    print(f"wrote {SCHEMA_FILE}", file=sys.stderr)


if __name__ == "__main__":
    main()
