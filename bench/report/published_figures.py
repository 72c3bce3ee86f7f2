"""The published figures beside a summary's variants: the paper's Tables 3-5 (at the runs' own scale
protocol, S, Q and evaluation modes, where they have one) and the peers' figures, each labelled."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from bench.config import EVAL_MODES
from bench.engine import evaluation
from bench.report import reference


@dataclass(frozen=True)
class ScaleProtocol:
    """How a variant's runs were tested under the paper's scale protocol, read off their metrics."""

    train_scale: str  # S as RunConfig spells it, at the paper's 224 crop
    test_scales: str  # the Q the runs were tested at, ascending, comma-separated
    modes: tuple[str, ...]

    @property
    def q_key(self) -> int | None:
        """The Q of the metric that sums the runs up: the one test scale, or None for the multi-scale average."""
        return None if "," in self.test_scales else int(self.test_scales)


def scale_protocol(runs: pd.DataFrame) -> ScaleProtocol | None:
    """None for runs without the paper's scale protocol (no train_scale)."""
    if "train_scale" not in runs or runs["train_scale"].isna().all():
        return None
    found = [evaluation.parse_metric(c) for c in runs.columns if runs[c].notna().any()]
    found = [f for f in found if f is not None]
    if not found:
        return None
    qs = sorted({q for _, _, q in found if q is not None})
    modes = {mode for _, mode, _ in found}
    return ScaleProtocol(
        runs["train_scale"].iloc[0], ",".join(map(str, qs)), tuple(m for m in EVAL_MODES if m in modes)
    )


def variant_runs(runs: pd.DataFrame, row) -> pd.DataFrame:
    """The runs of one summary row (its study's, where the summary has several)."""
    mine = runs["variant"] == row.variant
    if "study" in runs and hasattr(row, "study"):
        mine &= runs["study"] == row.study
    return runs[mine]


def paper_protocol_rows(model: str, batch_norm: bool, runs: pd.DataFrame, scales: ScaleProtocol) -> list[dict]:
    """Per evaluation mode: our top-1 / top-5 error (means over seeds) beside the paper's row at the same S
    and Q, in the same mode where the paper has it (else its dense row, and the label says so)."""
    rows = []
    for mode in scales.modes:
        errors = [100 - 100 * runs[evaluation.metric_name(k, mode, scales.q_key)].astype(float).mean() for k in (1, 5)]
        paper = reference.paper_row(model, batch_norm, scales.train_scale, scales.test_scales, mode)
        row = {
            "metric": f"top-1 / top-5 err % ({mode}, S={scales.train_scale}, Q={scales.test_scales})",
            "ours": f"{errors[0]:.2f} / {errors[1]:.2f}",
        }
        if paper is None:
            why = "the paper had no BatchNorm" if batch_norm else "the paper has no row at this S and Q"
            rows.append({**row, "theirs": f"none ({why})", "source": reference.PAPER_SOURCE, "label": ""})
            continue
        label = reference.PAPER_LABEL + ("" if paper.mode == mode else f"; the paper's mode: {paper.mode}")
        rows.append(
            {
                **row,
                "theirs": f"{paper.top1:.1f} / {paper.top5:.1f}",
                "source": reference.paper_source(paper),
                "label": label,
            }
        )
    return rows


def published(summary: pd.DataFrame, dataset: str, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """The paper's Tables 3-5 and the peers' figures for the variants in the summary, each labelled;
    runs under the paper's scale protocol (in `runs`) get the paper's row at their S, Q and modes."""
    several = "study" in summary and summary["study"].nunique() > 1
    rows = []
    for r in summary.itertuples():
        first = {"study": r.study, "variant": r.variant} if several else {"variant": r.variant}
        mine = None if runs is None else variant_runs(runs, r)
        scales = None if mine is None or not reference.paper_config(r.model) else scale_protocol(mine)
        if scales is not None:
            rows += [{**first, **row} for row in paper_protocol_rows(r.model, r.batch_norm, mine, scales)]
        elif isinstance(r.paper_config, str):  # under pandas 3 a missing config is NaN, which is truthy
            rows.append(
                {
                    **first,
                    "metric": "top-1 err %",
                    "ours": f"{r.top1_err_pct:.2f}",
                    "theirs": f"{r.paper_top1_err_pct:.1f} (top-5 {r.paper_top5_err_pct:.1f})",
                    "source": f"{reference.PAPER_SOURCE}, config {r.paper_config}",
                    "label": reference.PAPER_LABEL,
                }
            )
        elif reference.paper_config(r.model):
            rows.append(
                {
                    **first,
                    "metric": "top-1 err %",
                    "ours": f"{r.top1_err_pct:.2f}",
                    "theirs": "none (the paper had no BatchNorm)",
                    "source": reference.PAPER_SOURCE,
                    "label": "",
                }
            )
        for figure in reference.peer_figures(r.model, r.batch_norm, dataset):
            rows.append(
                {
                    **first,
                    "metric": "test acc %",
                    "ours": f"{r.test_acc_pct:.2f}",
                    "theirs": f"{figure.test_acc_pct:.2f}",
                    "source": figure.source,
                    "label": figure.label,
                }
            )
    return pd.DataFrame(rows)
