"""python -m bench.benchmark --suite gpu: everything worth knowing about a CUDA machine, in one run.

Made for a GPU that is lent now and then for half an hour, with no internet, no installs, no
MLflow and no Optuna: it needs the repository, torch/torchvision, rich, pandas, matplotlib, the
Fashion-MNIST files in --data-dir, and timm when present. It measures, in order of what the
targets need first, until everything ran or its time limit (default 520 s) is near:

1. train/inference steps (images/s, step time, peak memory, MFU against the datasheet's bf16 peak
   and a matmul measured in the same run) of every model at 32 px and at 224 px with the paper's
   head; the precision x memory format x compile matrix for VGG-D-BN; timm's vgg16, vgg16_bn
   and resnet18 side by side with ours; a batch that runs out of memory is halved and retried;
2. the training step, eager and captured as a CUDA graph (bench.engine.step): on a fixed batch and a whole
   epoch end to end, VGG-D-BN at 32 px, batch 256 (bench.benchmark.step_overhead);
3. time to 93 % Fashion-MNIST test accuracy for VGG-D-BN: bench.train against the tutorials' loop;
4. a study through the engine with 1, 2, 4 and 8 worker processes sharing the device (packing);
5. the first epoch of each distinct run config of the studies' full budgets at full width on the
   carried data, and from them each study's full budget in hours.

Results go to OUT/gpu-<device>.json and .md (+ the curves' .png), rewritten after every
measurement so that a run cut short keeps what it measured. `--smoke` runs the same code at tiny
sizes on whatever device there is (the CPU in the tests). What it measures is bench.benchmark.gpu_plan,
what it checks first gpu_checks, what it writes gpu_report.
"""

from __future__ import annotations

import json
import os
import re
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from bench import provenance
from bench.benchmark import budgets, gpu_report, output
from bench.benchmark.gpu_checks import check, peer_library
from bench.benchmark.gpu_plan import FULL, SMOKE, VGGS, Plan, Row, rows
from bench.benchmark.step_overhead import overhead
from bench.benchmark.steps import Peaks, measure_model, measure_steps
from bench.benchmark.time_to_accuracy import race
from bench.config import RunConfig
from bench.errors import one_line
from bench.progress import console
from bench.run import budget_estimates, studies


class Suite:
    def __init__(self, plan: Plan, args, argv: list[str]):
        self.plan = plan
        self.args = args
        self.device, self.models, self.timm_models = check(args, plan)
        self.timm, self.timm_missing = peer_library()
        self.estimate_names = list(plan.estimate_studies) if plan.estimate_studies else studies.names()
        self.began = time.perf_counter()
        self.limit = args.time_limit if args.time_limit is not None else plan.time_limit_s
        self.out = Path(args.out)
        self.peaks = Peaks(plan.matmul_size)
        slug = "cpu" if self.device.type == "cpu" else _slug(provenance.device_name(self.device))
        self.base = f"gpu-{slug}" + ("-smoke" if plan.name == "smoke" else "")
        self.results = {
            "kind": "gpu-suite",
            **output.stamp(self.device, argv),
            "plan": asdict(plan),
            "time_limit_s": self.limit,
            "timm": getattr(self.timm, "__version__", None),
            "timm_missing": self.timm_missing,
            "peaks": [],
            "steps": [],
            "step_overhead": None,
            "race": None,
            "workers": None,
            "first_epochs": {},
            "estimates": [],
            "skipped": [],
            "failed": [],
            "task_seconds": {},
            "seconds": 0.0,
        }

    def left(self) -> float:
        return self.limit - (time.perf_counter() - self.began)

    def run(self) -> int:
        self.out.mkdir(parents=True, exist_ok=True)
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 rows are fp32; bf16 rows use autocast
        for name, cost, task in self.tasks():
            if self.left() < cost:
                self.results["skipped"].append(f"{name} (needs ~{cost:.0f} s, {max(0.0, self.left()):.0f} s left)")
                continue
            console.print(f"[bold]{name}[/] ({self.left():.0f} s left)")
            began = time.perf_counter()
            try:
                task()
            except KeyboardInterrupt:
                self.results["failed"].append(f"{name}: interrupted")
                self.write()
                raise
            except Exception as exc:  # noqa: BLE001 - one failed measurement must not lose the others
                text = one_line(exc, 300)
                self.results["failed"].append(f"{name}: {type(exc).__name__}: {text}")
                console.print(f"[red]failed[/] {name}: {type(exc).__name__}: {text}")
                traceback.print_exc()
            self.results["task_seconds"][name] = time.perf_counter() - began
            self.write()
        return 1 if self.results["failed"] else 0

    def tasks(self) -> list[tuple[str, float, Callable[[], None]]]:
        step_rows = rows(self.plan, self.models, self.timm_models)
        first = [r for r in step_rows if r.group.startswith("target")]
        rest = [r for r in step_rows if r not in first]
        tasks = [(f"steps: {r.group}: {_describe(r)}", r.cost_s, lambda r=r: self.step(r)) for r in first]
        tasks.append(("training step: eager vs CUDA graph, fixed batch vs end to end", 40.0, self.step_overhead))
        tasks.append((f"time to {self.plan.target:.0%} test accuracy", 150.0, self.race))
        tasks += [
            (f"steps: {r.group}: {_describe(r)}", r.cost_s, lambda r=r: self.step(r))
            for r in rest
            if not r.compile and r.group != "fp32 NCHW (the tutorials' default)"
        ]
        plan = self.plan
        tasks.append(
            (
                f"{plan.study} {plan.study_budget} study with {plan.study_workers} workers",
                plan.study_cost_s,
                self.workers,
            )
        )
        configs = budget_estimates.full_budget_configs(self.estimate_names, self.args.data_dir)
        ordered = sorted(configs.items(), key=lambda item: self.plan.study not in item[1]["studies"])
        for key, entry in ordered:
            label = f"first epoch of {entry['config'].model} ({', '.join(entry['studies'])})"
            tasks.append((label, 12.0, lambda key=key, entry=entry: self.first_epoch(key, entry)))
        tasks += [
            (f"steps: {r.group}: {_describe(r)}", r.cost_s, lambda r=r: self.step(r))
            for r in rest
            if r.compile or r.group == "fp32 NCHW (the tutorials' default)"
        ]
        return tasks

    # --- the tasks

    def step(self, row: Row) -> None:
        plan = self.plan
        image, batch = plan.small if row.size == "small" else plan.large
        classes = 10 if row.size == "small" else plan.large_classes
        head = "small" if row.size == "small" else "paper"
        settings = dict(
            batch_size=batch,
            precision=row.precision,
            channels_last=row.channels_last,
            compile=row.compile,
            device=str(self.device),
            image_size=image,
        )
        if row.source == "timm":
            if self.timm is None:
                self.results["steps"].append({**_row_fields(row), "skipped": self.timm_missing})
                return
            model = self.timm.create_model(row.model, pretrained=False, num_classes=classes, in_chans=3)
            config = RunConfig(**settings)  # execution settings and the optimizer only
            result = measure_model(
                model,
                f"timm:{row.model}",
                {},
                config,
                (3, image, image),
                classes,
                plan.steps,
                plan.warmup,
                self.peaks,
                profile=row.profile,
            )
        else:
            options = {"batch_norm": row.batch_norm, "head": head} if row.model in VGGS else {}
            config = RunConfig(model=row.model, width=plan.width, **options, **settings)
            result = measure_steps(config, 3, classes, plan.steps, plan.warmup, self.peaks, profile=row.profile)
        self.results["steps"].append({**_row_fields(row), **result})
        self.results["peaks"] = self.peaks.summary()

    def step_overhead(self) -> None:
        config = RunConfig.from_dict({**self.plan.recipe, "device": str(self.device)})
        plan = self.plan
        self.results["step_overhead"] = overhead(config, self.args.data_dir, plan.steps, plan.warmup)

    def race(self) -> None:
        config = RunConfig.from_dict({**self.plan.recipe, "device": str(self.device)})
        self.results["race"] = race(
            config, self.plan.target, self.args.data_dir, self.args.loader_workers, self.plan.tutorial_cap, self.left
        )

    def workers(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()  # the workers share the device: leave them what earlier rows cached
        plan = self.plan
        self.results["workers"] = budgets.workers_share(
            plan.study,
            str(self.device),
            plan.study_workers,
            self.args.data_dir,
            plan.study_budget,
            plan.study_overrides,
            plan.study_seeds,
        )

    def first_epoch(self, key: str, entry: dict) -> None:
        measured = budgets.first_epoch(
            entry["config"],
            self.args.data_dir,
            budget_estimates.CARRIED,
            {"device": str(self.device), **self.plan.estimate_overrides},
        )
        self.results["first_epochs"][key] = {**measured, "studies": entry["studies"]}
        self.results["estimates"] = budget_estimates.estimates(
            self.estimate_names, self.results["first_epochs"], self.args.data_dir
        )

    # --- output

    def write(self) -> None:
        self.results["seconds"] = time.perf_counter() - self.began
        self.results["targets"] = gpu_report.targets(self.results)
        _write(self.out / f"{self.base}.json", json.dumps(self.results, indent=1, default=str))
        figure = gpu_report.curves_figure(self.results, self.out / f"{self.base}-curves.png")
        _write(self.out / f"{self.base}.md", gpu_report.markdown(self.results, figure))


def _row_fields(row: Row) -> dict:
    return {
        "group": row.group,
        "source": row.source,
        "label": row.label,
        "size": row.size,
        "precision": row.precision,
        "channels_last": row.channels_last,
        "compile": row.compile,
    }


def _describe(row: Row) -> str:
    return (
        f"{row.label} {row.size} {row.precision} {'channels_last' if row.channels_last else 'NCHW'} "
        f"{'compiled' if row.compile else 'eager'}"
    )


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _write(path: Path, text: str) -> None:
    """Atomically: a run killed mid-write leaves the previous version."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def run_suite(args, argv: list[str]) -> int:
    suite = Suite(SMOKE if args.smoke else FULL, args, argv)
    code = suite.run()
    console.print(
        f"wrote {suite.out / suite.base}.md and .json in {suite.results['seconds']:.0f} s"
        + (f"; {len(suite.results['failed'])} failed" if suite.results["failed"] else "")
    )
    print((suite.out / f"{suite.base}.md").read_text())
    return code
