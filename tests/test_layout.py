"""The package installs as precall.* only, with its SQL and templates as live resources."""

import importlib.util
import re
import shutil
import os
import subprocess
import sys

from precall import sql


def test_no_generic_top_level_modules() -> None:
    for generic in ("dispatcher", "cli", "sql", "templates"):
        assert importlib.util.find_spec(generic) is None, f"{generic} must not be importable at top level"
    assert importlib.util.find_spec("precall.dispatcher") is not None
    assert importlib.util.find_spec("precall.cli") is not None


def test_migration_files_are_numbered_and_loadable() -> None:
    found = sql.migrations()
    assert [m.version for m in found] == list(range(1, len(found) + 1))
    for m in found:
        assert re.fullmatch(r"[a-z0-9_]+", m.name)
        assert m.sql.strip()


def test_console_script_runs() -> None:
    exe = shutil.which("precall", path=os.path.dirname(sys.executable))
    assert exe is not None
    out = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "db" in out.stdout
