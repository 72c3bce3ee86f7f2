"""The report's figure: validation accuracy per epoch (with the time-to-accuracy target), and test
accuracy against parameters and FLOPs with the cost/accuracy front."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import ticker  # noqa: E402

from bench.report.build import Report  # noqa: E402


def figure(report: Report, path: Path) -> Path:
    """Validation accuracy per epoch (mean, min-max band over seeds); test accuracy vs params and FLOPs."""
    fig, (curve_ax, params_ax, flops_ax) = plt.subplots(1, 3, figsize=(16, 5.4))
    summary = report.summary
    labels = [f"{r.study}/{r.variant}" if len(report.studies) > 1 else r.variant for r in summary.itertuples()]
    colors = [plt.colormaps["tab10"](i % 10) for i in range(len(summary))]
    for r, label, color in zip(summary.itertuples(), labels, colors):
        curves = report.curves[(report.curves["study"] == r.study) & (report.curves["variant"] == r.variant)]
        by_epoch = curves.groupby("epoch")["val_acc"].agg(["mean", "min", "max"]) * 100
        flag = ", not converged" if r.converged == "no" else ""
        curve_ax.plot(by_epoch.index, by_epoch["mean"], "o-", color=color, label=f"{label} (n={r.runs}{flag})")
        curve_ax.fill_between(by_epoch.index, by_epoch["min"], by_epoch["max"], color=color, alpha=0.18)
    for target in summary["target_val_acc_pct"].dropna().unique():
        curve_ax.axhline(target, color="grey", linestyle=":", label=f"time-to-accuracy target {target:g} %")
    curve_ax.set(
        xlabel="epoch", ylabel="validation accuracy %", title="validation accuracy (mean over seeds, band: min to max)"
    )
    curve_ax.xaxis.get_major_locator().set_params(integer=True)
    curve_ax.legend(fontsize=9)
    for ax, column, name in ((params_ax, "params", "parameters"), (flops_ax, "flops", "forward FLOPs per image")):
        cost_scatter(ax, summary[column].to_numpy(), summary, labels, colors)
        ax.set(
            xlabel=f"{name} (log scale)",
            ylabel="test accuracy % (mean ± std over seeds)",
            title=f"test accuracy against {name}",
        )
    for ax in (curve_ax, params_ax, flops_ax):
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(report.title, fontsize=13)
    h = report.header
    footer = "\n".join(
        textwrap.wrap(
            f"{h['date']} · {h['command']} · report machine {h['machine']}, commit {h['project commit']} · "
            f"runs trained on {h['runs trained on']}, torch {h['runs torch']}, commit {h['runs commit']}",
            210,
        )
    )
    fig.text(0.01, 0.01, footer, fontsize=7.5, color="dimgrey", va="bottom")
    fig.tight_layout(rect=(0, 0.02 + 0.025 * (footer.count("\n") + 1), 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Description": footer, "Source": h["command"]})
    plt.close(fig)
    return path


def cost_scatter(ax, costs: np.ndarray, summary: pd.DataFrame, labels: list[str], colors: list) -> None:
    """Test accuracy (mean ± std) against a cost on a log axis, with the cost/accuracy front."""
    accuracy = summary["test_acc_pct"].to_numpy()
    for cost, acc, std, color in zip(costs, accuracy, summary["test_acc_pct_std"].fillna(0), colors):
        ax.errorbar(cost, acc, yerr=std, fmt="o", color=color, capsize=4, markersize=7)
    front = pareto_front(costs, accuracy)
    ax.plot(
        costs[front],
        accuracy[front],
        "--",
        color="grey",
        alpha=0.7,
        label="front: more accurate than every cheaper variant",
    )
    ax.legend(fontsize=9, loc="lower right")
    ax.set_xscale("log")
    ax.margins(x=0.12, y=0.12)
    if costs.max() < 10 * costs.min():  # under a decade a log axis has no labelled ticks of its own
        ax.xaxis.set_major_locator(ticker.MaxNLocator(nbins=5, min_n_ticks=3))
        ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.xaxis.set_major_formatter(ticker.EngFormatter(sep=""))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    place_labels(ax, costs, accuracy, labels)


def place_labels(ax, xs: np.ndarray, ys: np.ndarray, labels: list[str]) -> None:
    """Name each point, moving a name up or down until it clears the names already placed nearby
    (variants of equal cost, like A and A-LRN, would otherwise print over each other)."""
    to_axes = ax.transData + ax.transAxes.inverted()
    point = ax.figure.dpi / 72 / ax.bbox.height  # one typographic point, in axes fractions
    placed: list[tuple[float, float]] = []
    for i in np.lexsort((ys, xs)):
        x, y = to_axes.transform((xs[i], ys[i]))
        for dy in (5, -13, 17, -25, 29, -37, 41):
            if all(abs(y + dy * point - py) > 13 * point or abs(x - px) > 0.25 for px, py in placed):
                break
        placed.append((x, y + dy * point))
        right_half = x > 0.6  # name to the left there, so it stays inside the axes
        ax.annotate(
            labels[i],
            (xs[i], ys[i]),
            textcoords="offset points",
            fontsize=9,
            xytext=(-7 if right_half else 7, dy),
            ha="right" if right_half else "left",
        )


def pareto_front(cost: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    """Indices, by rising cost, of the points that no cheaper-or-equal point beats in accuracy."""
    front, best = [], -np.inf
    for i in np.lexsort((-accuracy, cost)):
        if accuracy[i] > best:
            front.append(i)
            best = accuracy[i]
    return np.asarray(front, dtype=int)
