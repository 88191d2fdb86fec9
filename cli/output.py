"""How read commands print: a Rich table for people, JSON (--json) for scripts.

Rich drops colour by itself when stdout is not a terminal (and honours NO_COLOR).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from rich.console import Console
from rich.table import Table

JSON_HELP = "Print JSON instead of a table."


def _plain(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return float(value) if value == value.to_integral_value() or abs(value) < 10**15 else str(value)
    if isinstance(value, UUID):
        return str(value)
    return value


def to_json(data: Any) -> str:
    def walk(v: Any) -> Any:
        if isinstance(v, Mapping):
            return {str(k): walk(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [walk(x) for x in v]
        return _plain(v)

    return json.dumps(walk(data), ensure_ascii=False, indent=2)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S%z")
    return str(_plain(value))


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], title: str | None = None,
          styles: Mapping[str, str] | None = None) -> None:
    console = Console(soft_wrap=False)
    if not console.is_terminal:
        console.width = max(console.width, 240)  # a pipe or a file: keep ids and times on one line
    t = Table(title=title, show_lines=False, header_style="bold")
    for c in columns:
        t.add_column(c, style=(styles or {}).get(c), overflow="fold", no_wrap=c.endswith(("id", "_at")))
    for r in rows:
        t.add_row(*(_cell(r.get(c)) for c in columns))
    console.print(t)


def emit(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], as_json: bool, title: str | None = None) -> None:
    if as_json:
        print(to_json(list(rows)))
    else:
        table(rows, columns, title)
