"""The package installs as precall.* only, with its SQL and templates as live resources."""

import importlib.util
import re
import shutil
import os
import subprocess
import sys

import pytest

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


@pytest.mark.integration  # a child process or a local server: not the unit layer
def test_console_script_runs() -> None:
    exe = shutil.which("precall", path=os.path.dirname(sys.executable))
    assert exe is not None
    out = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "db" in out.stdout


def test_only_the_settings_module_reads_the_environment() -> None:
    """precall/config.py is the one reader (systemd's NOTIFY_SOCKET in dispatcher/systemd.py aside);
    tests, benches and the fakes are not precall's runtime."""
    from pathlib import Path

    root = Path(__file__).parents[1]
    reads = re.compile(r"os\.environ\.get|os\.getenv|envvar=|os\.environ if|= os\.environ\b|os\.environ\[[^\]]+\](?!\s*=)")
    offenders = []
    for folder in ("api", "cli", "dispatcher", "sql", "templates", "precall"):
        for path in (root / folder).rglob("*.py"):
            rel = path.relative_to(root).as_posix()
            if rel in ("precall/config.py", "dispatcher/systemd.py") or rel.startswith("precall/fakes/"):
                continue
            offenders += [f"{rel}:{n}" for n, line in enumerate(path.read_text().splitlines(), 1) if reads.search(line)]
    assert not offenders, offenders


def test_unknown_precall_variables_are_named() -> None:
    from precall.config import unknown_variables

    assert unknown_variables({"PRECALL_FCM_RATE_PER_SEC": "5", "PRECALL_FCM_RATE_PER_S": "5", "HOME": "/"}) == [
        "PRECALL_FCM_RATE_PER_SEC"]
