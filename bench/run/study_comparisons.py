"""A study's [comparisons] table: the pairs of variants its report tests, Holm's correction over
them. Without one, each variant is compared with the study's reference."""

from __future__ import annotations

from typing import Any

from bench.errors import BenchError

COMPARISON_KEYS = {"pairs", "each"}
EACH = "{x}"  # in an `each` pattern: any part of a variant's name, the same on both sides


def parse(table: Any, variants: list[str], where: str) -> tuple[tuple[str, str], ...] | None:
    """[comparisons]: `pairs = [["vgg-c", "vgg-b"]]` names (variant, against) pairs; `each =
    [["{x}-bn", "{x}"]]` pairs every variant matching the left pattern with the one the right
    pattern then names (each depth with BN against the same depth without). None when absent."""
    if table is None:
        return None
    fix = 'e.g. [comparisons] pairs = [["vgg-c", "vgg-b"]] or each = [["{x}-bn", "{x}"]]'
    if not isinstance(table, dict) or not table or set(table) - COMPARISON_KEYS:
        raise BenchError(f"{where}: [comparisons] holds only pairs and each, lists of [variant, against]; {fix}")
    found: list[tuple[str, str]] = []
    for key in ("pairs", "each"):
        entries = table.get(key, [])
        if not isinstance(entries, list) or not all(
            isinstance(e, list) and len(e) == 2 and all(isinstance(n, str) for n in e) for e in entries
        ):
            raise BenchError(f"{where}: comparisons.{key} must be a list of [variant, against] pairs; {fix}")
        for left, right in entries:
            expand = _pair if key == "pairs" else _each
            found += expand(left, right, variants, where)
    if len(set(found)) != len(found):
        raise BenchError(f"{where}: [comparisons] names a comparison twice: list each pair once")
    return tuple(found)


def _pair(left: str, right: str, variants: list[str], where: str) -> list[tuple[str, str]]:
    for name in (left, right):
        if name not in variants:
            raise BenchError(
                f"{where}: comparisons.pairs names {name!r}, not one of its variants: {', '.join(variants)}"
            )
    if left == right:
        raise BenchError(f"{where}: comparisons.pairs compares {left!r} with itself: name two variants")
    return [(left, right)]


def _each(left: str, right: str, variants: list[str], where: str) -> list[tuple[str, str]]:
    if left.count(EACH) != 1 or right.count(EACH) != 1 or left == right:
        raise BenchError(
            f"{where}: comparisons.each [{left!r}, {right!r}] needs {EACH} once on each side, "
            f'in two different patterns, e.g. ["{EACH}-bn", "{EACH}"]'
        )
    prefix, suffix = left.split(EACH)
    found = []
    for name in variants:
        if name.startswith(prefix) and name.endswith(suffix) and len(name) > len(prefix) + len(suffix):
            against = right.replace(EACH, name[len(prefix) : len(name) - len(suffix)])
            if against in variants:
                found.append((name, against))
    if not found:
        raise BenchError(
            f"{where}: comparisons.each [{left!r}, {right!r}] matches no pair of its variants: {', '.join(variants)}"
        )
    return found
