"""The device kit (python -m bench.kit): a Python holding only a GPU image's packages installs the kit with no
index and runs a study with tracking, registry and report; bad kits are refused in one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import venv
from importlib import metadata
from pathlib import Path

import optuna
import pytest
from conftest import ROOT, command_error, needs_fashion
from mlflow.tracking import MlflowClient
from optuna.storages.journal import JournalFileBackend, JournalStorage

from bench.kit import build as kit_build
from bench.kit import manifest as kit_manifest
from bench.kit import run as kit_run

PYTHON = kit_manifest.running_python()
STUDY = ["ablation", "--study", "depth", "--budget", "smoke", "--variants", "vgg-a,vgg-b", "--dataset", "fashion-mnist"]
REPORT = "reports/depth-fashion-mnist-smoke_dataset_fashion-mnist.md"


def image_python(home: Path) -> Path:
    """A Python that holds only the GPU image's packages: a venv without pip of its own whose site-packages
    links to this machine's torch, torchvision, timm, pandas, rich, scipy, matplotlib, numpy, pillow, pip
    and what they need, and to nothing else (no mlflow, optuna, sqlalchemy, statsmodels)."""
    venv.EnvBuilder(with_pip=False, symlinks=True).create(home)
    site_packages = next(home.glob("lib/python3*/site-packages"))
    for name in kit_build.local_image():
        dist = metadata.distribution(name)
        for top in {Path(f).parts[0] for f in dist.files or ()} - {"..", "__pycache__"}:
            source, link = Path(dist.locate_file(top)), site_packages / top
            if source.exists() and not link.exists():
                link.symlink_to(source)
    return home / "bin" / "python"


def image_env(tmp_path: Path) -> dict[str, str]:
    """Only this tree on the path, a cache of the test's own (a fresh install), no way out to a network."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PYTHONPATH")}
    dead = "http://127.0.0.1:9"
    return {
        **env,
        "PYTHONPATH": str(ROOT),
        "BENCH_CACHE": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
        "http_proxy": dead,
        "https_proxy": dead,
        "HTTP_PROXY": dead,
        "HTTPS_PROXY": dead,
    }


def walk_files(folder: Path) -> list[Path]:
    """Every file under `folder`, not following links (the checkpoint root is one, to outside)."""
    return [Path(top) / name for top, _, names in os.walk(folder) for name in names]


@needs_fashion
def test_a_clean_image_installs_the_kit_offline_and_runs_a_study(tmp_path):
    kit, out = tmp_path / "kit", tmp_path / "out"
    # Built for this Python (the GPU image's is 3.12); wheels come from the user's cache after a first build.
    build = [sys.executable, "-m", "bench.kit", "build", "--python", PYTHON, "--out", str(kit)]
    built = subprocess.run(build, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    manifest = json.loads((kit / "manifest.json").read_text())
    names = {w["name"] for w in manifest["wheels"]}
    assert {"mlflow-skinny", "optuna", "sqlalchemy", "alembic", "psutil", "nvidia-ml-py", "statsmodels"} <= names
    assert not names & {"mlflow", "pyarrow", "torch", "numpy", "pandas", "scipy", "matplotlib"}
    data = sorted(p.name for p in (kit / "data" / "fashion-mnist").iterdir())
    assert data == sorted(kit_build.FASHION_FILES)
    assert kit_build.size_mib(kit) < 64

    python, env = image_python(tmp_path / "image"), image_env(tmp_path)
    for name in ("mlflow", "optuna", "sqlalchemy", "statsmodels"):  # the image lacks them, the kit has them
        probe = subprocess.run([str(python), "-c", f"import {name}"], env=env, capture_output=True, text=True)
        assert probe.returncode != 0 and "No module named" in probe.stderr
    run = [str(python), "-m", "bench.kit", "run", "--kit", str(kit), "--out", str(out), *STUDY]
    done = subprocess.run(run, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "installed the kit" in done.stderr and "vgg-b" in done.stdout  # the table on stdout

    # One folder: the store (readable by this machine's MLflow), the journal, the reports; no checkpoint.
    files = {p.relative_to(out).as_posix() for p in walk_files(out)}
    assert {"mlflow.db", ".bench/optuna.journal", REPORT} <= files
    assert not [f for f in files if "checkpoints/" in f or f.endswith(("best.pt", "last.pt"))], files
    assert (out / ".bench" / "checkpoints").is_symlink()
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("depth")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted((r.data.tags["bench.role"], r.info.status) for r in runs) == [
        ("run", "FINISHED"),
        ("run", "FINISHED"),
        ("study", "FINISHED"),
    ]
    for run in runs:
        if run.data.tags["bench.role"] == "run":  # trained on the kit's data, the checkpoint kept outside
            [source] = {d.dataset.source for d in run.inputs.dataset_inputs}
            assert json.loads(source)["uri"] == str(kit.resolve() / "data" / "fashion-mnist")
            assert client.list_artifacts(run.info.run_id, "checkpoints") == []
        else:
            assert {a.path for a in client.list_artifacts(run.info.run_id, "report")}  # the report, logged
    best = client.get_model_version_by_alias("depth-smoke+dataset=fashion-mnist", "best")  # the registry
    assert best.run_id in {r.info.run_id for r in runs}
    kept = [p.name for p in walk_files(tmp_path / "cache" / "kit-checkpoints")]
    assert kept.count("best.pt") >= 4  # each run's in the checkpoint root, and its MLflow copy
    journal = JournalStorage(JournalFileBackend(str(out / ".bench" / "optuna.journal")))
    study = optuna.load_study(study_name="depth-smoke+dataset=fashion-mnist", storage=journal)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2


def fake_kit(
    folder: Path, python: str = PYTHON, wheels: tuple[str, ...] = (), requirements: tuple[str, ...] = ()
) -> Path:
    (folder / "wheels").mkdir(parents=True)
    manifest = {
        "python": python,
        "requirements": list(requirements),
        "wheels": [{"name": w.split("-")[0], "file": w} for w in wheels],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def refused(tmp_path: Path, kit: Path, *job: str, options: tuple[str, ...] = ()) -> str:
    """`bench.kit run` refused in one line, with nothing made: no output folder, no environment."""
    out = tmp_path / "out"
    line = command_error(
        "bench.kit", "run", "--kit", str(kit), "--out", str(out), *options, *job, env=image_env(tmp_path), cwd=tmp_path
    )
    assert not out.exists() and not list((tmp_path / "cache").glob("kit-env/*"))
    return line


def test_a_missing_kit_is_refused(tmp_path):
    line = refused(tmp_path, tmp_path / "nowhere", *STUDY)
    assert "does not exist" in line and f"bench.kit build --python {PYTHON}" in line


def test_a_kit_for_another_python_is_refused(tmp_path):
    line = refused(tmp_path, fake_kit(tmp_path / "kit", python="3.99"), *STUDY)
    assert "built for Python 3.99" in line and f"this is Python {PYTHON}" in line


def test_a_wheel_missing_from_the_kit_is_named(tmp_path):
    line = refused(tmp_path, fake_kit(tmp_path / "kit", wheels=("optuna-5.1.0-py3-none-any.whl",)), *STUDY)
    assert "lacks the wheel optuna-5.1.0-py3-none-any.whl" in line


def test_a_package_the_machine_needs_and_the_kit_lacks_is_named(tmp_path):
    # The manifest is complete, but pip finds no wheel for what it asks: the real pip, offline, says which.
    kit = fake_kit(tmp_path / "kit", requirements=("not-in-the-kit==1.0",))
    line = refused(tmp_path, kit, *STUDY)
    assert "no wheel for not-in-the-kit==1.0" in line and "--image" in line


@pytest.mark.parametrize(
    "options, job, expected",
    [
        ((), ("ablations", "--study", "depth"), "unknown command 'ablations'"),
        ((), ("../../bin/sh",), "unknown command '../../bin/sh'"),
        ((), (), "no command given"),
        (("--time-limit", "nan"), STUDY, "--time-limit nan is not a positive number"),
        (("--time-limit", "inf"), STUDY, "--time-limit inf is not a positive number"),
    ],
)
def test_a_bad_job_is_refused(tmp_path, options, job, expected):
    line = refused(tmp_path, fake_kit(tmp_path / "kit"), *job, options=options)
    assert expected in line


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--python", "3.x"], "not a CPython version"),
        (["--data", "empty"], "lacks train-images-idx3-ubyte.gz"),
        (["--image", "absent.txt"], "cannot read --image"),
    ],
)
def test_a_bad_build_is_refused_before_any_download(tmp_path, flags, expected):
    (tmp_path / "empty").mkdir()
    line = command_error("bench.kit", "build", "--out", "kit", *flags, cwd=tmp_path)
    assert expected in line and not (tmp_path / "kit").exists()


def test_an_image_freeze_names_the_packages_that_stay_out(tmp_path):
    freeze = tmp_path / "freeze.txt"
    freeze.write_text("# pip freeze\ntorch==2.11.0\nPillow==11.0.0\ntimm @ file:///wheels/timm.whl\n-e git+x#egg=y\n")
    assert kit_build.frozen_image(freeze) == {"torch": "2.11.0", "pillow": "11.0.0", "timm": None}


def test_a_command_past_its_time_limit_is_stopped_with_sigterm(tmp_path):
    started = time.monotonic()
    code = kit_run.follow([sys.executable, "-c", "import time; time.sleep(120)"], tmp_path, dict(os.environ), 1.0)
    assert code == 128 + signal.SIGTERM and time.monotonic() - started < 30


def test_a_command_deaf_to_sigterm_is_killed_after_the_grace(tmp_path, monkeypatch):
    monkeypatch.setattr(kit_run, "STOP_GRACE_S", 1.0)
    deaf = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"
    started = time.monotonic()
    code = kit_run.follow([sys.executable, "-c", deaf], tmp_path, dict(os.environ), 5.0)
    assert code == 128 + signal.SIGKILL and time.monotonic() - started < 60
