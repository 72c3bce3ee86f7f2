"""The paper's Tables 3-5 as data, and the report setting our error per evaluation mode beside the
paper's row at the same training scale S, test scales Q and mode (a synthetic run table)."""

from __future__ import annotations

import pandas as pd
import pytest

from bench.engine import evaluation
from bench.report import build, published_figures, reference, render, variant_rows


def test_the_paper_rows_are_keyed_by_config_s_q_and_mode():
    row = reference.paper_row
    assert (row("vgg-d", False, "256,512", "384").top1, row("vgg-d", False, "256,512", "384").table) == (25.6, 3)
    assert row("vgg-c", False, "384", "384").top5 == 9.3
    assert (row("vgg-e", False, "384", "352,384,416").top1, row("vgg-e", False, "384", "352,384,416").table) == (
        26.7,
        4,
    )
    assert row("vgg-b", False, "256", "224,256,288").top1 == 28.2
    jittered = "256,384,512"
    assert (row("vgg-d", False, "256,512", jittered).top1, row("vgg-d", False, "256,512", jittered).mode) == (
        24.8,
        "dense",
    )
    assert row("vgg-d", False, "256,512", jittered, "multi-crop").top1 == 24.6
    assert row("vgg-e", False, "256,512", jittered, "dense+multi-crop").top5 == 7.1
    # The paper reports no centre crop: its dense row stands in, and says it is dense.
    assert row("vgg-c", False, "256", "256", "centre").mode == "dense"
    assert row("vgg-d", False, "256", "384") is None  # a Q the paper did not test at this S
    assert row("vgg-d", True, "256", "256") is None and row("resnet18", False, "256", "256") is None
    assert reference.paper_errors("vgg-a-lrn", False) == ("A-LRN", 29.7, 10.5)
    keys = [(r.config, r.train_scale, r.test_scales, r.mode) for r in reference.PAPER_ROWS]
    assert len(keys) == len(set(keys)) == 6 + 6 + 10 + 4


def scale_runs() -> pd.DataFrame:
    """Two seeds each of D at S = [256; 512] tested at Q = {256, 384, 512} in four modes (Table 5),
    C at S = 384 tested at 384 in the centre only (Table 3), and D-BN at S = 256."""

    def run(variant, model, seed, bn, train_scale, metrics):
        return {
            "study": "paper",
            "variant": variant,
            "seed": seed,
            "model": model,
            "batch_norm": bn,
            "params": 1.0,
            "flops": 1.0,
            "test_acc": 0.5,
            "best_val_acc": 0.5,
            "train_seconds": 1.0,
            "images_per_s": 1.0,
            "train_scale": train_scale,
            **metrics,
        }

    modes = ("centre", "dense", "multi-crop", "dense+multi-crop")
    rows = []
    for seed, shift in ((0, 0.0), (1, 0.02)):
        d = {}
        for i, mode in enumerate(modes):
            for q in (256, 384, 512, None):
                d[evaluation.metric_name(1, mode, q)] = 0.60 + 0.01 * i + shift
                d[evaluation.metric_name(5, mode, q)] = 0.90 + shift
        rows.append(run("d-s256-512", "vgg-d", seed, False, "256,512", d))
        rows.append(
            run(
                "c-s384",
                "vgg-c",
                seed,
                False,
                "384",
                {"test_top1_centre_q384": 0.7 + shift, "test_top5_centre_q384": 0.95},
            )
        )
        rows.append(
            run("d-bn", "vgg-d", seed, True, "256", {"test_top1_dense_q256": 0.8, "test_top5_dense_q256": 0.99})
        )
    rows.append(run("plain", "vgg-a", 0, False, None, {}))  # no scale protocol: Table 3 at S = Q = 256
    return pd.DataFrame(rows)


def test_report_sets_our_error_per_mode_beside_the_papers_row():
    runs = scale_runs()
    summary = variant_rows.summarize(runs, ["d-s256-512", "c-s384", "d-bn", "plain"]).assign(study="paper")
    table = published_figures.published(summary, "synthetic-images", runs)
    d = table[table["variant"] == "d-s256-512"].set_index("metric")
    assert len(d) == 4
    jittered = "S=256,512, Q=256,384,512"
    multi_crop = d.loc[f"top-1 / top-5 err % (multi-crop, {jittered})"]
    # Ours: 100 - the mean over the two seeds of the multi-scale metric, in percent.
    assert multi_crop["ours"] == f"{100 - 100 * 0.63:.2f} / {100 - 100 * 0.91:.2f}"
    assert multi_crop["theirs"] == "24.6 / 7.5" and "Table 5" in multi_crop["source"]
    assert multi_crop["label"] == reference.PAPER_LABEL
    both = d.loc[f"top-1 / top-5 err % (dense+multi-crop, {jittered})"]
    assert both["theirs"] == "24.4 / 7.2"
    dense = d.loc[f"top-1 / top-5 err % (dense, {jittered})"]
    assert dense["theirs"] == "24.8 / 7.5" and "Table 4" in dense["source"]
    centre = d.loc[f"top-1 / top-5 err % (centre, {jittered})"]
    assert centre["theirs"] == "24.8 / 7.5" and centre["label"].endswith("the paper's mode: dense")

    [c] = table[table["variant"] == "c-s384"].to_dict("records")
    assert c["metric"] == "top-1 / top-5 err % (centre, S=384, Q=384)" and c["theirs"] == "28.1 / 9.3"
    assert c["ours"] == f"{100 - 100 * 0.71:.2f} / {100 - 100 * 0.95:.2f}" and "Table 3" in c["source"]
    [bn] = table[table["variant"] == "d-bn"].to_dict("records")
    assert bn["theirs"] == "none (the paper had no BatchNorm)"
    [plain] = table[table["variant"] == "plain"].to_dict("records")
    assert plain["metric"] == "top-1 err %" and plain["theirs"] == "29.6 (top-5 10.4)"

    rows = summary.set_index("variant")
    # The summary's paper columns follow the run's S and Q too (the paper's dense row there).
    assert rows.loc["c-s384", "paper_top1_err_pct"] == 28.1 and rows.loc["d-s256-512", "paper_top1_err_pct"] == 24.8
    assert rows.loc["plain", "paper_top1_err_pct"] == 29.6 and pd.isna(rows.loc["d-bn", "paper_config"])


def test_markdown_says_the_scales_are_the_papers():
    runs = scale_runs()
    summary = variant_rows.summarize(runs).assign(study="paper")
    report = build.Report(
        ["paper"],
        "cpu",
        "synthetic-images",
        runs,
        summary,
        published_figures.published(summary, "synthetic-images", runs),
        pd.DataFrame(),
        pd.DataFrame(),
        {},
        {},
    )
    text = render.markdown(report)
    assert "| 24.6 / 7.5 |" in text and "S=256 at a 32 px crop is a 37 px shorter side" in text


@pytest.mark.parametrize("name", ["test_acc", "test_top1_", "val_top1_centre_q256"])
def test_other_metrics_are_not_evaluation_modes(name):
    assert evaluation.parse_metric(name) is None
