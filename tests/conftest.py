"""The test suite's fixtures live in plugins, one per kind of real part (tests/plugins/):
`database` (PostgreSQL with pg_cron, a fresh database per test), `providers` (the fake FCM and
Twilio servers, the call webhook receiver), `processes` (the dispatcher, the API and the CLI as
child processes). This file registers them and sorts tests into layers."""

from __future__ import annotations

import pytest

pytest_plugins = ["plugins.database", "plugins.providers", "plugins.processes"]

# --- layers ----------------------------------------------------------------------------------

# A test that reaches none of these (directly or through other fixtures) needs no PostgreSQL and
# no long-running process: it is in the unit layer, `make test-unit` (pytest -m unit).
NEEDS_A_SERVER = {"pg_server", "template_db", "db", "empty_db", "conn", "make", "start_dispatcher",
                  "start_api", "dispatcher_env", "api", "seeded_api", "webhook_receiver"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not NEEDS_A_SERVER & set(getattr(item, "fixturenames", ())) and not item.get_closest_marker("integration"):
            item.add_marker(pytest.mark.unit)
