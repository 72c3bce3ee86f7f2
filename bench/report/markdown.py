"""Markdown for the reports the commands write: a table, and a cell or list item whose '|' is escaped."""

from __future__ import annotations


def table(headers: list[str], rows: list[list]) -> str:
    def line(cells) -> str:
        return "| " + " | ".join(cell(c) for c in cells) + " |"

    return "\n".join([line(headers), "|" + "|".join("---" for _ in headers) + "|", *map(line, rows)])


def cell(value) -> str:
    """`value` as text that cannot end a table cell early."""
    return str(value).replace("|", "\\|")
