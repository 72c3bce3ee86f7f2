"""--workers auto: the chooser's arithmetic, its measurement through the engine, a study run with
it on the CPU (one worker, said so), the helpers' command line, and the bad input it refuses."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from conftest import command_error, study_runs
from mlflow.tracking import MlflowClient

from bench import ablation, cli
from bench.benchmark import gpu_report
from bench.config import RunConfig
from bench.run import budget_estimates as budgets
from bench.run import packing, studies
from bench.run.packing import CONTEXT_BYTES, GIB, Measurement, choose

SMOKE = ["--study", "depth", "--budget", "smoke", "--variants", "vgg-a,vgg-b"]


def measured(peak_gib: float, busy: float | None) -> Measurement:
    return Measurement(int(peak_gib * GIB), 0.01, busy, "" if busy is not None else "no CUPTI")


# --- the arithmetic ------------------------------------------------------------------------------


def test_the_busy_share_sets_the_count_when_memory_and_cores_are_plenty():
    choice = choose(80 * GIB, measured(1.5, 0.3), cores=16)
    assert choice.workers == 4 and choice.binding == "GPU busy share"  # ceil(1 / 0.3): four keep it busy
    assert choose(80 * GIB, measured(1.5, 0.5), cores=16).workers == 2  # exactly half busy: two
    assert choose(80 * GIB, measured(1.5, 1.3), cores=16).workers == 1  # overlapping streams: already busy


def test_memory_sets_the_count_when_runs_are_big():
    per_run = 9 * GIB + CONTEXT_BYTES
    choice = choose(40 * GIB, measured(9, 0.1), cores=16)
    assert choice.limits["memory"] == int(40 * GIB * 0.9 // per_run) == 3
    assert choice.workers == 3 and choice.binding == "memory"
    # A run bigger than the free memory still ran in the measurement: one worker, never none.
    assert choose(4 * GIB, measured(9, 0.1), cores=16).workers == 1


def test_cores_and_the_cap_bound_the_count():
    assert choose(80 * GIB, measured(0.5, 0.05), cores=3).workers == 3  # 20 would fill the GPU
    choice = choose(80 * GIB, measured(0.5, 0.05), cores=64)
    assert choice.workers == packing.MAX_WORKERS == 8 and choice.binding == "cap"
    assert choose(80 * GIB, measured(0.5, 0.05), cores=64, cap=5).workers == 5


def test_without_a_profile_memory_cores_and_the_cap_decide_and_the_line_says_why():
    choice = choose(80 * GIB, measured(0.5, None), cores=6)
    assert "GPU busy share" not in choice.limits and choice.workers == 6
    line = packing.explain(choice, measured(0.5, None), 80 * GIB, "NVIDIA H100")
    assert line.startswith("--workers auto: 6 workers on NVIDIA H100 (set by host cores)")
    assert "GPU busy share not measured (no CUPTI)" in line and "80.0 GiB are free" in line


def test_the_line_gives_the_numbers_that_chose():
    choice = choose(80 * GIB, measured(1.5, 0.3), cores=16)
    line = packing.explain(choice, measured(1.5, 0.3), 80 * GIB, "NVIDIA H100")
    assert line.startswith("--workers auto: 4 workers on NVIDIA H100 (set by GPU busy share): ")
    for part in (
        "one run peaks at 1.50 GiB",
        "the GPU is busy 30% of a 10.0 ms step: 4 keep it busy",
        "16 host cores",
        "at most 8",
    ):
        assert part in line, (part, line)


def test_the_measurement_stops_the_engine_after_its_steps():
    config = RunConfig(
        model="vgg-a", width=0.0625, dataset="synthetic", subset=2000, batch_size=16, epochs=3, device="cpu"
    )
    window = packing.first_steps(config, None, torch.device("cpu"))
    # On a CPU the CUDA profiler cannot start: the engine stops once the timed steps are done.
    timed = packing.WARMUP_STEPS + packing.TIMED_STEPS
    assert window.steps == timed < 3 * 2000 * 0.9 // 16  # not at the end of the run
    assert window.step_s > 0 and window.busy is None and window.why_not.startswith("torch.profiler: ")
    short = packing.first_steps(config.replace(subset=400, epochs=1), None, torch.device("cpu"))
    assert short.steps < timed and short.step_s is None and "fewer than 35 steps" in short.why_not


def test_helpers_get_one_worker_in_place_of_the_parents_count():
    tail = ["--workers", "1"]
    assert packing.helper_args(["--study", "depth", "--workers", "auto"]) == ["--study", "depth", *tail]
    assert packing.helper_args(["--workers=auto", "--width", "0.5"]) == ["--width", "0.5", *tail]
    assert packing.helper_args(["--work", "3", "--wo=2", "--w", "x"]) == ["--w", "x", *tail]


# --- the commands ---------------------------------------------------------------------------------


def test_auto_on_a_cpu_is_one_worker_said_so_and_the_study_ends_as_with_one(workdir):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = {}
    for count in ("auto", "1"):
        store = f"sqlite:///{workdir}/{count}.db"
        done[count] = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.ablation",
                *SMOKE,
                "--workers",
                count,
                "--tracking-uri",
                store,
                "--storage",
                str(workdir / f"{count}.journal"),
                "--checkpoint-root",
                str(workdir / count),
                "--no-system-metrics",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            cwd=workdir,
        )
        assert done[count].returncode == 0, done[count].stderr[-3000:]
    said = [line for line in done["auto"].stderr.splitlines() if "--workers auto" in line]
    assert said == [
        "--workers auto: 1 worker (device cpu: runs there share the same cores, so packing several gains nothing)"
    ]
    assert "--workers auto" not in done["1"].stderr
    assert not list(workdir.glob(".bench/logs/*worker*"))  # no helper was started

    def finished(count: str) -> dict[str, float]:
        client = MlflowClient(f"sqlite:///{workdir}/{count}.db")
        [parent] = study_runs(client, "depth", "study")
        assert parent.info.status == "FINISHED"
        runs = study_runs(client, "depth")
        return {r.info.run_name: (r.info.status, r.data.metrics["test_acc"]) for r in runs}

    assert finished("auto") == finished("1")  # the same runs, finished, with the same numbers
    assert len(finished("auto")) == 2


@pytest.mark.parametrize(
    "command, args, fragment",
    [
        (
            "bench.ablation",
            ["--workers", "auto", "--workers", "3"],
            "--workers auto chooses the count itself, but --workers 3 fixes it too",
        ),
        (
            "bench.search",
            ["--workers", "2", "--workers=auto"],
            "--workers auto chooses the count itself, but --workers 2 fixes it too",
        ),
        (
            "bench.ablation",
            ["--workers", "auto", "--gpus-per-run", "2"],
            "--workers auto packs runs onto one GPU, but --gpus-per-run 2",
        ),
        ("bench.search", ["--workers", "many"], "argument --workers: takes a count or 'auto', not 'many'"),
    ],
)
def test_auto_beside_a_fixed_count_is_one_line_and_records_nothing(workdir, command, args, fragment):
    study = ["--study", "depth"] if command == "bench.ablation" else ["--study", "lr-wd"]
    message = command_error(command, *study, "--budget", "smoke", *args, cwd=workdir)
    assert fragment in message, message
    assert sorted(p.name for p in workdir.iterdir()) == []  # no store, no journal, no folder


# --- the suite's packing measurement and the gpu budgets ---------------------------------------------


def passes(*walls: tuple[int, float]) -> dict:
    return {
        "study": "depth",
        "budget": "gpu",
        "overrides": {"epochs": 2},
        "device": "cuda",
        "passes": [{"workers": w, "wall_s": wall, "runs": [{}] * 8, "processes": w} for w, wall in walls],
    }


def test_the_packing_target_is_the_best_runs_per_hour_over_one_workers():
    shared = passes((1, 80.0), (2, 44.0), (4, 25.0), (8, 27.0))
    target = gpu_report.packing_target({"workers": shared})
    assert target["met"] is True
    assert target["measured"] == "3.20x at 4 workers (360 runs/h alone, 1,152 packed)"
    assert target["where"][0] == "1 worker: 360 runs/h, 1.00x one worker" and len(target["where"]) == 4
    assert budgets.packing_gain(shared) == pytest.approx(3.2)
    short = gpu_report.packing_target({"workers": passes((1, 80.0), (2, 50.0))})
    assert short["met"] is False and short["gap"] == "1.88x short of 3x"  # 1.60x against 3x: a ratio, not 3 - 1.60
    assert gpu_report.packing_target({"workers": passes((2, 50.0))})["met"] is None  # no one-worker pass
    # A smoke study's seconds-long runs say nothing of packing: estimates keep the assumed gain.
    assert budgets.packing_gain({**shared, "budget": "smoke"}) is None


GPU_STUDIES = ("depth", "bn", "lrn", "conv1", "baselines", "lr-wd")


@pytest.mark.parametrize("name", GPU_STUDIES)
def test_gpu_budgets_are_full_width_on_all_of_fashion_mnist_with_five_seeds_or_more(name):
    study = studies.load(name)
    budget = study.budgets[budgets.GPU_BUDGET]
    configs = budgets._configs(study, None, budgets.GPU_BUDGET)
    assert all(c.width == 1.0 and c.dataset == "fashion-mnist" and c.subset is None for c in configs)
    if study.variants:
        assert len(budget.seeds) >= 5 and len(configs) == len(budget.seeds) * len(study.variants)
    assert " not " in budget.description or "; not" in budget.description  # what it cannot show, too
    estimate = budgets.packed_estimate(study, budgets.GPU_BUDGET)
    assert estimate["minutes"] == pytest.approx(60 * estimate["hours"] / 0.7 / 3.0)  # H200 -> H100, packed 3x
    assert estimate["gain_measured"] is False  # the committed suite run shared out a smoke study only
    assert cli.budget_cell(study, "gpu") == f"gpu (~{estimate['minutes']:.1f} min packed on one H100)"


def test_depth_fits_four_minutes_and_bn_eight_packed_on_one_h100():
    minutes = {n: budgets.packed_estimate(studies.load(n), "gpu")["minutes"] for n in GPU_STUDIES}
    assert minutes["depth"] <= 4 and minutes["bn"] <= 8 and minutes["lr-wd"] <= 3.5, minutes
    assert studies.load("bn").budgets["gpu"].seeds == studies.load("depth").budgets["gpu"].seeds


def test_list_and_the_opening_line_give_the_estimate(capsys):
    assert ablation.main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert "gpu (~" in listed and "min packed on" in listed
    study = studies.load("depth")
    cli.announce(study, study.budgets["gpu"], "gpu", True, "20 runs")
    said = " ".join(capsys.readouterr().err.split())
    estimate = budgets.packed_estimate(study, "gpu")
    assert (
        f"20 runs estimate: ~{estimate['minutes']:.1f} min packed on one H100: 20 runs x 9 epochs at the "
        "first-epoch speeds measured on NVIDIA H200 (gpu-nvidia-h200.json), x0.70 for the H100"
    ) in said
    assert "3.0x the runs per hour of one worker (assumed: the GPU suite's target, not yet measured)" in said
    cli.announce(study, study.budgets["cpu"], "cpu", True, "12 runs")
    assert "estimate" not in capsys.readouterr().err  # only gpu budgets are sized for one packed GPU
