"""The confirmation budget: a study's budget at twice the epochs (NAME-2x beside NAME). Under a
cosine schedule a curve flattens because the learning rate does, whether or not the net has
converged; the same comparisons at 2x epochs say whether any ranking was an artefact of that."""

from __future__ import annotations

import pandas as pd

from bench.report import stats

SUFFIX = "-2x"


def partner(budget: str) -> str:
    """The other budget of the pair: NAME-2x for NAME, NAME for NAME-2x (a label's overrides kept)."""
    name, plus, overrides = budget.partition("+")
    other = name.removesuffix(SUFFIX) if name.endswith(SUFFIX) else name + SUFFIX
    return other + plus + overrides


def ranking(row) -> str:
    """How a comparison ranks its two sides: better, worse, or no significant difference (Holm)."""
    if pd.isna(row.p_holm) or row.p_holm >= stats.ALPHA:
        return "no significant difference"
    return "better" if row.diff_pts > 0 else "worse"


def changes(base: pd.DataFrame, doubled: pd.DataFrame, base_label: str, doubled_label: str) -> list[str]:
    """One line per comparison both budgets tested: the same ranking or a changed one, and a
    summary line first."""
    theirs = {(r.variant, r.reference): r for r in doubled.itertuples()}
    lines = []
    for r in base.itertuples():
        other = theirs.get((r.variant, r.reference))
        if other is None or pd.isna(r.diff_pts) or pd.isna(other.diff_pts):
            continue
        before, after = ranking(r), ranking(other)
        word = "unchanged" if before == after else "CHANGED"
        lines.append(
            f"{r.variant} vs {r.reference}: {word}: {base_label} {before} ({r.diff_pts:+.2f} points), "
            f"{doubled_label} {after} ({other.diff_pts:+.2f} points)"
        )
    if not lines:
        return []
    changed = sum("CHANGED" in line for line in lines)
    head = (
        f"no ranking changed at {doubled_label} against {base_label}"
        if not changed
        else f"{changed} of {len(lines)} rankings changed at {doubled_label} against {base_label}"
    )
    return [head, *lines]
