"""How a study shows itself to a person who is not watching a terminal: plain progress lines when
stderr is a pipe, and Optuna's view of its seeds and objective (what optuna-dashboard draws)."""

from __future__ import annotations

import os
import subprocess
import sys

import optuna
import pytest
from conftest import command_error
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.storages.journal import JournalFileBackend, JournalStorage

from bench import ablation

SMOKE = ["--study", "depth", "--budget", "smoke", "--variants", "vgg-a", "--no-system-metrics"]
OLD_SEEDS = CategoricalDistribution(tuple(range(100)))  # every ablation's seed before: 0..99, categorical


def journal(workdir) -> JournalStorage:
    (workdir / ".bench").mkdir(exist_ok=True)
    return JournalStorage(JournalFileBackend(str(workdir / ".bench" / "optuna.journal")))


def test_piped_study_writes_a_line_per_run_and_seeds_are_a_numeric_range(workdir):
    process = subprocess.run(
        [sys.executable, "-m", "bench.ablation", *SMOKE, "--seeds", "0,2"],
        cwd=workdir,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    lines = [line for line in process.stderr.splitlines() if line.startswith("vgg-a seed=")]
    assert [line.split(":")[0] for line in lines] == ["vgg-a seed=0", "vgg-a seed=2"], process.stderr
    assert lines[0].endswith("; 1 of 2 runs left") and lines[1].endswith("; 0 of 2 runs left")
    for line in lines:
        assert "best val acc 0." in line and "2 of 2 epochs" in line and " s;" in line
    assert "━" not in process.stderr  # no bar drawn once at the end

    study = optuna.load_study(study_name="depth-smoke", storage=journal(workdir))
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert sorted(t.params["seed"] for t in trials) == [0, 2]
    assert all(t.distributions["seed"] == IntDistribution(0, 2) for t in trials)  # the study's own seeds
    assert study.user_attrs["objective"].startswith("best_val_acc")
    for trial in trials:
        assert trial.value == pytest.approx(max(trial.intermediate_values.values()))


def test_a_journal_begun_with_seeds_as_categorical_still_resumes(workdir):
    """Optuna refuses another kind of distribution for a param its trials hold: an old study keeps
    its categorical seeds; a seed it cannot hold is refused in one line, before anything runs."""
    old = optuna.create_study(study_name="depth-smoke", storage=journal(workdir), direction="maximize")
    old.add_trial(
        optuna.trial.create_trial(
            params={"variant": "vgg-a", "seed": 0},
            state=optuna.trial.TrialState.FAIL,
            distributions={"variant": CategoricalDistribution(("vgg-a", "vgg-b", "vgg-d", "vgg-e")), "seed": OLD_SEEDS},
        )
    )
    message = command_error("bench.ablation", *SMOKE, "--seeds", "5,100", cwd=workdir, timeout=600)
    assert "seed 100 is not among" in message and "--storage" in message
    assert ablation.main([*SMOKE, "--seeds", "1"]) == 0
    study = optuna.load_study(study_name="depth-smoke", storage=journal(workdir))
    [done] = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert done.params["seed"] == 0 and done.distributions["seed"] == OLD_SEEDS
