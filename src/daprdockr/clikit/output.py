"""Rendering rows as rich tables or JSON, and the one-line error convention.

Every listing command prints either a table (rich) or, with ``--json``, the same rows as JSON.
Errors are one line on stderr, ``daprdockr: <message>``, with an exit code per kind.

Text from etcd is shown as text: table cells are rich ``Text`` objects (never parsed as markup),
and control characters are escaped (``\x1b`` prints as the four characters ``\x1b``), so a value
written into etcd cannot restyle, move the cursor or clear the operator's terminal.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from daprdockr.errors import (
    DaprDockrError,
    NotFoundError,
    RolloutFailedError,
    StoreUnavailableError,
    ValidationError,
    WaitTimeoutError,
)

EXIT_OK = 0
EXIT_INVALID = 2
EXIT_NOT_FOUND = 3
EXIT_UNREACHABLE = 4
EXIT_TIMEOUT = 5
EXIT_ROLLOUT_FAILED = 6
EXIT_ERROR = 1


def exit_code_for(exc: DaprDockrError) -> int:
    if isinstance(exc, ValidationError):
        return EXIT_INVALID
    if isinstance(exc, NotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(exc, StoreUnavailableError):
        return EXIT_UNREACHABLE
    if isinstance(exc, WaitTimeoutError):
        return EXIT_TIMEOUT
    if isinstance(exc, RolloutFailedError):
        return EXIT_ROLLOUT_FAILED
    return EXIT_ERROR


def error_line(message: str) -> None:
    print(f"daprdockr: {safe_text(message)}", file=sys.stderr)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


# control characters, and the invisible ones that reorder or hide text on a terminal (bidi
# overrides and isolates, zero-width characters, the BOM)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


def safe_text(text: str) -> str:
    """``text`` with every control or invisible formatting character written as an escape
    (``\x1b``, ``\n``, ``\u202e``)."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def _cell_text(value: Any) -> str:
    if isinstance(value, dict):
        text = ",".join(f"{k}->{v}" for k, v in value.items()) or "-"
    elif isinstance(value, bool):
        text = "yes" if value else ""
    else:
        text = "-" if value in ("", None) else str(value)
    return safe_text(text)


def _cell(value: Any) -> Text:
    return Text(_cell_text(value))


def make_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], *, title: str | None = None) -> Table:
    table = Table(title=title, header_style="bold", box=None, pad_edge=False)
    for col in columns:
        table.add_column(col.upper().replace("_", " "))
    for row in rows:
        table.add_row(*(_cell(row.get(col)) for col in columns))
    return table


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], *, title: str | None = None) -> None:
    console = Console(width=200 if not sys.stdout.isatty() else None)
    plain = _plain_table(rows, columns, title=title, width=console.width) if console.color_system is None else None
    if plain is None:
        console.print(make_table(rows, columns, title=title))
    else:
        sys.stdout.write(plain)


def _plain(text: str) -> bool:
    """One terminal cell per character, and nothing rich would strip at the edges."""
    return text.isascii() and text == text.strip()


def _plain_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], *, title: str | None,
                 width: int) -> str | None:
    """What rich prints for :func:`make_table` without styles (not a terminal), when the table is
    simple: every cell and the title of plain ASCII (control characters are escaped already),
    and all of it fits ``width``.  None otherwise (rich lays it out: wide characters, wrapping).
    Rich's layout is far slower per row (BENCHMARKS.md, "Scale: the cost of one event at 1k, 10k
    and 100k instances")."""
    header = [col.upper().replace("_", " ") for col in columns]
    cells = [[_cell_text(row.get(col)) for col in columns] for row in rows]
    if not all(_plain(text) for line in [header, *cells] for text in line):
        return None
    widths = [max(len(text) for text in column) for column in zip(header, *cells, strict=True)]
    total = sum(widths) + 2 * (len(widths) - 1)
    if total > width or (title is not None and (not _plain(title) or len(title) > total)):
        return None
    left = (total - len(title or "")) // 2  # (centred; an odd space goes to the right)
    out = [] if title is None else [" " * left + title.ljust(total - left)]
    out += ["  ".join(text.ljust(w) for text, w in zip(line, widths, strict=True)) for line in [header, *cells]]
    return "".join(line + "\n" for line in out)
