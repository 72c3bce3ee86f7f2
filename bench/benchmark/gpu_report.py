"""The GPU suite's results as markdown (+ a figure of the time-to-accuracy curves), targets judged.

Everything here reads the suite's results dict only, so the file can be rendered again from the
JSON (`markdown(json.load(...), figure)`). The targets are judged in bench.benchmark.gpu_targets,
the sections after them written by bench.benchmark.gpu_sections.
"""

from __future__ import annotations

from pathlib import Path

from bench.benchmark.gpu_sections import (
    estimates_section,
    race_section,
    step_overhead_section,
    steps_section,
    workers_section,
)
from bench.benchmark.gpu_targets import mfu_target, packing_target, race_target, step_target, timm_target
from bench.report import markdown as md


def targets(results: dict) -> list[dict]:
    return [
        mfu_target(results),
        timm_target(results),
        step_target(results),
        race_target(results),
        packing_target(results),
    ]


def markdown(results: dict, figure: Path | None) -> str:
    plan = results["plan"]
    lines = [f"# GPU check on {results['device']}", ""]
    lines += [
        f"- {key}: {md.cell(results.get(key))}" for key in ("command", "date", "host", "torch", "python", "commit")
    ]
    lines += [
        f"- timm: {results['timm'] or results['timm_missing'] + ' (its rows are skipped)'}",
        f"- plan: {plan['name']} (width {plan['width']}); {results['seconds']:.0f} s of a "
        f"{results['time_limit_s']:.0f} s limit",
        "",
    ]
    if plan["name"] == "smoke":
        lines += ["**Smoke run**: tiny sizes that check the code paths; no figure here measures a target.", ""]
    lines += [
        "## Targets",
        "",
        md.table(
            ["target", "goal", "measured", "verdict"],
            [[t["name"], t["goal"], t["measured"], _verdict(t)] for t in results["targets"]],
        ),
        "",
    ]
    for t in results["targets"]:
        if t.get("met") is False:
            lines += [f"**{t['name']}**: missed, {t.get('gap', '')}. Where the time goes:", ""]
            lines += [f"- {line}" for line in t.get("where", [])] + [""]
    lines += steps_section(results) + step_overhead_section(results) + race_section(results, figure)
    lines += workers_section(results)
    lines += estimates_section(results)
    if results["skipped"] or results["failed"]:
        lines += ["## Not measured", ""]
        lines += [f"- skipped for time: {s}" for s in results["skipped"]]
        lines += [f"- failed: {f}" for f in results["failed"]] + [""]
    return "\n".join(lines)


def curves_figure(results: dict, path: Path) -> Path | None:
    race = results.get("race")
    if race is None:
        return None
    from bench.engine import plots

    fig, ax = plots.plt.subplots(figsize=(7, 4))
    for loop in race["loops"]:
        ax.plot(
            [r["train_seconds_total"] for r in loop["rows"]],
            [r["test_acc"] for r in loop["rows"]],
            "o-",
            label=loop["loop"],
        )
    ax.axhline(race["target"], color="grey", linestyle="--", label=f"target {race['target']:.0%}")
    ax.set(xlabel="training seconds", ylabel="test accuracy", title=f"time to accuracy on {results['device']}")
    ax.grid(alpha=0.3)
    ax.legend()
    return plots.save_figure(fig, path)


def _verdict(target: dict) -> str:
    return {True: "met", False: "missed", None: "not measured"}[target.get("met")]
