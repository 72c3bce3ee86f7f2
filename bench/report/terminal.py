"""The report's tables sized to the terminal: the columns that fit its width whole, in order of
importance, the rest left to the md/csv. A number is never cut; only text columns may wrap."""

from __future__ import annotations

import shutil

from rich.markup import escape
from rich.table import Table

from bench.report.render import TEXT_COLUMNS

FALLBACK_WIDTH = 100  # piped with no $COLUMNS: a width any terminal shows, not a file's 160
WRAPPED_TEXT = 24  # a text column may wrap down to this width
# The columns a reader needs first; the others follow in the table's own order while they fit.
FIRST = (
    "study",
    "variant",
    "vs",
    "test %",
    "Δ test pts (95% CI)",
    "Holm p",
    "converged (val pts/ep)",
    "metric",
    "ours",
    "theirs",
)


def width() -> int:
    """$COLUMNS, else the terminal's width, else FALLBACK_WIDTH."""
    return shutil.get_terminal_size((FALLBACK_WIDTH, 24)).columns


def fit(headers: list[str], rows: list[list[str]], columns: int) -> tuple[dict[int, int], list[str]]:
    """The columns to show (index: width) and the headers left out: the FIRST ones, then the rest,
    each while the table (rich's borders and padding: 3 a column, 1 more) still fits in `columns`;
    width left over goes to headers that would otherwise wrap."""
    needed = [column_width(h, [r[i] for r in rows]) for i, h in enumerate(headers)]
    ranked = sorted(range(len(headers)), key=lambda i: (headers[i] not in FIRST, i))
    shown, spare = {}, columns - 1
    for i in ranked:
        if needed[i] + 3 <= spare or not shown:
            shown[i] = needed[i]
            spare -= needed[i] + 3
    for i in sorted(shown):
        grow = max(0, min(len(headers[i]) - shown[i], spare))
        shown[i] += grow
        spare -= grow
    return dict(sorted(shown.items())), [h for i, h in enumerate(headers) if i not in shown]


def column_width(header: str, cells: list[str]) -> int:
    """A number column's widest cell (and the header's longest word); a text column's, capped."""
    widest = max([len(c) for c in cells] + [max(map(len, header.split()), default=0)])
    return min(widest, WRAPPED_TEXT) if is_text(header) else widest


def is_text(header: str) -> bool:
    return header.split(" ")[0] in TEXT_COLUMNS


def table(headers: list[str], rows: list[list[str]], title: str, columns: int) -> tuple[Table, list[str]]:
    """A rich table of the columns that fit in `columns`, and the headers it left out."""
    shown, left = fit(headers, rows, columns)
    out = Table(title=title)
    for i, wide in shown.items():  # fixed widths, as fit() counted them: never narrower than a number
        justify = "left" if is_text(headers[i]) else "right"
        out.add_column(escape(headers[i]), justify=justify, overflow="fold", width=wide)
    for row in rows:
        out.add_row(*(escape(row[i]) for i in shown))
    return out, left
