"""A lone `python -m bench.train` run is tracked like a study's, and its model is served by the
README's commands from a fresh shell: `source .venv/bin/activate`, then `mlflow models serve`
(which starts uvicorn by name, so it needs the venv's bin on PATH). The served model refuses what
it cannot read with one line and HTTP 400, never guessing and never echoing the input back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FASHION_DIR, ROOT, free_port, needs_fashion, raw_idx, wait_for
from mlflow.tracking import MlflowClient
from test_records import post_json

from bench import predict
from bench.data.preprocessing import Preprocessing
from bench.errors import BenchError
from bench.post import command as post
from bench.post import compress, latency
from bench.run.trained import load_trained

TRAIN = [
    "--model",
    "vgg-a",
    "--width",
    "0.125",
    "--subset",
    "2000",
    "--epochs",
    "1",
    "--batch-size",
    "64",
    "--no-system-metrics",
]
VENV_BIN = Path(sys.executable).parent
FRESH_PATH = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != VENV_BIN)


def train(folder: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [sys.executable, "-m", "bench.train", *TRAIN, *extra],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


@pytest.fixture(scope="module")
def lone_run(tmp_path_factory) -> tuple[Path, str]:
    if not FASHION_DIR.is_dir():
        pytest.skip("apt-get install dataset-fashion-mnist")
    folder = tmp_path_factory.mktemp("lone-run")
    done = train(folder)
    assert done.returncode == 0, done.stderr[-3000:]
    [run] = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}").search_runs(
        [MlflowClient(f"sqlite:///{folder / 'mlflow.db'}").get_experiment_by_name("train").experiment_id]
    )
    assert f"logged as MLflow run {run.info.run_id}" in done.stderr.replace("\n", " ")
    return folder, run.info.run_id


@needs_fashion
def test_bench_train_is_tracked_with_its_model_and_checkpoint(lone_run, tmp_path):
    folder, run_id = lone_run
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["model"] == "vgg-a"
    assert "mlflow.parentRunId" not in run.data.tags and run.data.tags["bench.role"] == "run"
    assert run.data.tags["bench.command"].startswith("python -m bench.train --model vgg-a")
    assert len(MlflowClient(uri).get_metric_history(run_id, "val_acc")) == 1
    artifacts = {a.path for a in MlflowClient(uri).list_artifacts(run_id)}
    assert {"checkpoints", "plots"} <= artifacts
    from bench.tracking import Tracker

    trained = load_trained(run_id=run_id, tracker=Tracker(uri))  # where bench.predict and bench.post start
    assert trained.config.hash == run.data.tags["bench.config_hash"]

    # --no-track keeps nothing: no store is even created.
    untracked = train(tmp_path, "--no-track")
    assert untracked.returncode == 0, untracked.stderr[-3000:]
    assert not (tmp_path / "mlflow.db").exists() and "logged as" not in untracked.stderr


@needs_fashion
def test_the_readme_serving_command_from_a_fresh_shell(lone_run):
    """As a new user types it: a shell whose PATH lacks the venv, the venv activated, then the command."""
    folder, run_id = lone_run
    port = free_port()
    command = (
        f"source {VENV_BIN / 'activate'} && exec mlflow models serve -m runs:/{run_id}/model "
        f"--env-manager local -h 127.0.0.1 -p {port}"
    )
    env = {
        **os.environ,
        "PATH": FRESH_PATH,
        "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
        "PYTHONPATH": str(ROOT),
    }
    process = subprocess.Popen(
        ["bash", "-c", command],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/invocations"
    images = raw_idx(FASHION_DIR / "t10k-images-idx3-ubyte.gz")[:8]
    try:
        wait_for(f"http://127.0.0.1:{port}/ping", process, timeout=300, output=lambda p: p.stdout.read())
        status, body = post_json(url, {"inputs": images.tolist()})
        refused = {
            name: post_json(url, {"inputs": value})
            for name, value in {
                "rgba": np.zeros((28, 28, 4), int).tolist(),
                "two channels": np.zeros((28, 28, 2), int).tolist(),
                "3x28x28": np.zeros((3, 28, 28), int).tolist(),
                "1x1": [[7]],
                "2x2": [[1, 2], [3, 4]],
            }.items()
        }
        refused["empty"] = post_json(url, {"inputs": []})
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=60)
    assert status == 200 and len(body["predictions"]) == 8
    for name, (code, answer) in refused.items():
        message = answer.get("message", "")
        assert code == 400 and "\n" not in message, (name, code, answer)
        assert "Traceback" not in json.dumps(answer), (name, answer)
        assert "[[" not in message and len(message) < 300, (name, message)  # the input is not echoed
    assert "ambiguous" in refused["3x28x28"][1]["message"]
    assert "at least 8 px" in refused["1x1"][1]["message"] and "28x28x4" in refused["rgba"][1]["message"]
    assert "no images" in refused["empty"][1]["message"] and "send at least one" in refused["empty"][1]["message"]


@pytest.mark.parametrize(
    "shape, images",
    [
        ((28, 28), 1),
        ((28, 28, 1), 1),
        ((28, 28, 3), 1),
        ((1, 28, 28), 1),
        ((5, 28, 28), 5),
        ((2, 1, 28, 28), 2),
        ((2, 28, 28, 3), 2),
        ((60, 40), 1),
        ((8, 8), 1),
    ],
)
def test_layouts_read_one_way_only(shape, images):
    preprocessing = Preprocessing(("a", "b"), (0.3,), (0.3,), 1, 32, 28)
    read = preprocessing.to_uint8(np.zeros(shape, np.uint8))
    assert len(read) == images and read.shape[1] == 1 and tuple(read.shape[-2:]) in (shape[-2:], shape[-3:-1])


@pytest.mark.parametrize(
    "shape, says",
    [
        ((28, 28, 4), "cannot read"),
        ((28, 28, 2), "cannot read"),
        ((2, 28, 28, 4), "cannot read"),
        ((3, 28, 28), "ambiguous"),
        ((1, 1), "at least 8 px"),
        ((2, 2), "at least 8 px"),
        ((7, 7), "at least 8 px"),
        ((0, 28, 28), "no images"),
        ((28,), "cannot read"),
    ],
)
def test_what_cannot_be_read_is_refused_in_terms_of_shapes(shape, says):
    preprocessing = Preprocessing(("a", "b"), (0.3,), (0.3,), 1, 32, 28)
    with pytest.raises(BenchError) as refused:
        preprocessing.to_uint8(np.full(shape, 123, np.uint8))
    assert says in str(refused.value) and "123" not in str(refused.value)


@needs_fashion
def test_predict_and_post_say_when_they_write_into_a_recorded_run(lone_run, tmp_path, capsys):
    folder, run_id = lone_run
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    argv = ["--run", run_id, "--tracking-uri", uri]
    assert predict.main([*argv, "--grid", "4", "--out-dir", str(tmp_path)]) == 0
    [note] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: adding")]
    assert f"under predict/ to recorded MLflow run {run_id}" in note
    logged = {a.path for a in MlflowClient(uri).list_artifacts(run_id, "predict")}
    assert logged == {f"predict/predictions-run-{run_id[:8]}.png"}

    assert (
        post.main([*argv, "--prune", "0.5", "--repeats", "12", "--threads", "1", "--out-dir", str(tmp_path / "post")])
        == 0
    )
    captured = capsys.readouterr()
    [note] = [line for line in captured.err.splitlines() if line.startswith("note: adding nested run")]
    assert f"to recorded MLflow run {run_id}" in note
    [child] = MlflowClient(uri).search_runs(
        [MlflowClient(uri).get_run(run_id).info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'"
    )
    assert child.info.run_id in note and child.data.params["layout"] == "NCHW contiguous"
    m = child.data.metrics
    for variant in ("fp32", "pruned-50"):  # the same layout, batch 1 and 32, a median inside its interval
        for b in (1, 32):
            assert 0 < m[f"{variant}.ms_b{b}_low"] <= m[f"{variant}.ms_b{b}"] <= m[f"{variant}.ms_b{b}_high"]
    assert "ms/call b=32" in captured.out


def test_every_format_is_timed_in_one_layout_with_an_interval():
    model = torch.nn.Conv2d(3, 8, 3).to(memory_format=torch.channels_last)
    seen = []
    forward = compress.torch_forward(model)  # the model's weights are made contiguous NCHW
    assert model.weight.is_contiguous() and not model.weight.is_contiguous(memory_format=torch.channels_last)
    [timing] = latency.time_in_turns(
        [lambda x: seen.append(x.is_contiguous()) or forward(x)],
        torch.zeros(2, 8, 8, 3).permute(0, 3, 1, 2),
        rounds=20,
        warmup=1,
    )
    assert all(seen) and timing.batch == 2 and timing.calls == 20
    assert timing.low_ms <= timing.median_ms <= timing.high_ms
    median, low, high = latency.median_interval([float(i) for i in range(1, 51)])
    assert (median, low, high) == (25.5, 18.0, 33.0)  # the order statistics of a binomial(50, 1/2)
    assert latency.median_interval([3.0, 1.0, 2.0]) == (2.0, 1.0, 3.0)  # too few calls: the extremes
