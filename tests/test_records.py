"""What a study leaves behind reads on its own: the logged model served on raw images, the Model
Registry, the parent run, datasets and system metrics, the Optuna study and its dashboard.

All of it from one real tiny study on Fashion-MNIST (conftest.tiny_study).
"""

from __future__ import annotations

import json
import os
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field, fields
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from conftest import FASHION_DIR, ROOT, command_error, free_port, raw_idx, server, study_runs
from mlflow.tracking import MlflowClient
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.storages.journal import JournalFileBackend, JournalStorage
from PIL import Image

from bench import ablation, data, predict, provenance
from bench.config import RunConfig
from bench.engine import record, results, train
from bench.engine.train import EVAL_BATCH
from bench.errors import BenchError
from bench.report import read

SERVED = 256


def client(study) -> MlflowClient:
    return MlflowClient(study.uri)


def children(study) -> list:
    return study_runs(client(study), "tiny")


def parent(study):
    [run] = study_runs(client(study), "tiny", "study")
    return run


def raw_test_images(count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first test images exactly as the dataset stores them: uint8 28x28, and their labels."""
    images = raw_idx(FASHION_DIR / "t10k-images-idx3-ubyte.gz")[:count]
    labels = raw_idx(FASHION_DIR / "t10k-labels-idx1-ubyte.gz")[:count]
    return images, labels


def post_json(url: str, payload) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def best_run_id(study) -> str:
    return max(children(study), key=lambda r: r.data.metrics["best_val_acc"]).info.run_id


def run_accuracy_on(run_id: str, study, count: int) -> float:
    """The run's own model on its own data path (training batches), on the first `count` test images."""
    from bench.tracking import Tracker

    trained = predict.load_trained(run_id=run_id, tracker=Tracker(study.uri))
    predictions = torch.cat([trained.model(x).argmax(1) for x, _ in trained.splits.batches("test", EVAL_BATCH)])
    return float((predictions[:count] == trained.splits.test_y[:count]).float().mean())


# --- 1. the logged model ---------------------------------------------------------------------------


def test_mlflow_models_serve_answers_raw_test_images_as_the_run_does(tiny_study):
    run_id = best_run_id(tiny_study)
    images, labels = raw_test_images(SERVED)
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": tiny_study.uri, "PYTHONPATH": str(ROOT)}
    with server(
        [
            "mlflow",
            "models",
            "serve",
            "-m",
            f"runs:/{run_id}/model",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        f"http://127.0.0.1:{port}/ping",
        tiny_study.root,
        env,
    ):
        status, body = post_json(f"http://127.0.0.1:{port}/invocations", {"inputs": images.tolist()})
        assert status == 200, body
        answers = body["predictions"]
        # A request that is not images gets a 400 with our one line, not a server error.
        bad_status, bad = post_json(f"http://127.0.0.1:{port}/invocations", {"inputs": [["a", "b"], ["c", "d"]]})

    assert len(answers) == SERVED
    classes = set(data.FASHION_CLASSES)
    assert {a["class"] for a in answers} <= classes and len({a["class"] for a in answers}) >= 5
    first = answers[0]
    assert set(first["probabilities"]) == classes
    assert sum(first["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert first["confidence"] == pytest.approx(max(first["probabilities"].values()))
    assert not any(a["inverted"] for a in answers)  # dataset images are dark-background: never flipped
    served = float(np.mean([a["class_index"] for a in answers] == labels))
    assert served > 0.5  # far above chance (0.1): the preprocessing is the run's
    assert served == pytest.approx(run_accuracy_on(run_id, tiny_study, SERVED), abs=0.005)
    assert bad_status == 400 and "images must be" in bad["message"]


def test_the_pyfunc_model_takes_images_as_people_have_them(tiny_study):
    run_id = best_run_id(tiny_study)
    mlflow.set_tracking_uri(tiny_study.uri)
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    images, labels = raw_test_images(32)
    expected = model.predict(images)["class_index"].to_numpy()
    assert (expected == labels).mean() > 0.3  # chance is 0.1 (the served test checks 256 exactly)

    floats = images.astype(np.float32) / 255
    rgb = np.repeat(images[..., None], 3, axis=-1)
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2)))  # the model's own size, 32x32
    for form in (floats, floats[:, None], rgb, rgb.transpose(0, 3, 1, 2), padded):
        assert (model.predict(form)["class_index"].to_numpy() == expected).all()
    single = model.predict(images[3])  # one HxW image
    assert len(single) == 1 and single["class_index"][0] == expected[3]
    bigger = np.asarray(Image.fromarray(images[3]).resize((56, 56), Image.Resampling.BILINEAR))
    assert model.predict(bigger)["class"][0] in data.FASHION_CLASSES

    # A dark garment on a light background is inverted (and says so) unless told not to.
    light = 255 - images
    flipped = model.predict(light)
    assert flipped["inverted"].all() and (flipped["class_index"].to_numpy() == expected).all()
    assert not model.predict(light, params={"invert": "no"})["inverted"].any()

    # The signature and example describe that input; the input example is real test images.
    info = model.metadata
    assert info.signature.params.to_dict()[0]["name"] == "invert"
    example = json.loads(
        Path(mlflow.artifacts.download_artifacts(f"runs:/{run_id}/model/input_example.json")).read_text()
    )
    assert np.array_equal(
        np.asarray(example["inputs"] if isinstance(example, dict) else example), raw_test_images(4)[0]
    )
    assert "28x28" in info.metadata["input"] and info.metadata["classes"] == list(data.FASHION_CLASSES)

    # The bare network stays available for those who want it: normalised 32x32 input, logits out.
    module = mlflow.pytorch.load_model(f"runs:/{run_id}/module")
    assert isinstance(module, torch.nn.Module)


# --- 2. the Model Registry -----------------------------------------------------------------------


def test_the_best_run_is_registered_with_alias_best_and_predict_uses_it(tiny_study, tmp_path, capsys):
    version = client(tiny_study).get_model_version_by_alias("tiny-cpu", "best")
    assert version.run_id == best_run_id(tiny_study)

    images, labels = raw_test_images(2)
    Image.fromarray(images[0]).save(tmp_path / "garment.png")
    Image.fromarray(255 - images[1]).save(tmp_path / "photo.png")  # dark on light, as a photo
    assert (
        predict.main(
            [
                "--model",
                "models:/tiny-cpu@best",
                "--tracking-uri",
                tiny_study.uri,
                str(tmp_path / "garment.png"),
                str(tmp_path / "photo.png"),
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    rows = [line for line in captured.out.splitlines() if ".png" in line]
    assert len(rows) == 2 and "yes" in rows[1] and "yes" not in rows[0]
    assert "inverted" in captured.err and "--no-auto-invert" in captured.err

    # The same study run again trains nothing and registers no new version.
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tiny_study.root)
        assert ablation.main(tiny_study.argv) == 0
    versions = client(tiny_study).search_model_versions("name = 'tiny-cpu'")
    assert [v.version for v in versions] == [version.version]


def predict_error(*argv: str) -> str:
    return command_error("bench.predict", *argv, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)


def test_bad_models_and_images_get_one_line(tiny_study, tmp_path):
    store = tiny_study.root / "mlflow.db"
    before = store.read_bytes()
    image = tmp_path / "x.png"
    Image.fromarray(raw_test_images(1)[0][0]).save(image)
    uri = ["--tracking-uri", tiny_study.uri]
    assert "registered models: tiny-cpu" in predict_error("--model", "models:/nope@best", *uri, str(image))
    assert "no model models:/tiny-cpu@worst" in predict_error("--model", "models:/tiny-cpu@worst", *uri, str(image))
    not_image = tmp_path / "notes.png"
    not_image.write_text("not an image")
    assert "is not an image" in predict_error("--model", "models:/tiny-cpu@best", *uri, str(not_image))
    message = predict_error("--run", parent(tiny_study).info.run_id, *uri, str(image))
    assert "has no artifact checkpoints/best.pt" in message
    empty = tmp_path / "empty.db"  # a store with no registry: not created by asking it
    assert "does not exist" in predict_error(
        "--model", "models:/tiny-cpu@best", "--tracking-uri", f"sqlite:///{empty}", str(image)
    )
    assert not empty.exists()
    assert store.read_bytes() == before


# --- 3. the parent run ---------------------------------------------------------------------------


def test_the_parent_run_carries_the_study(tiny_study):
    run = parent(tiny_study)
    description = run.data.tags["mlflow.note.content"]
    assert "VGG-A with and without BatchNorm" in description and "`cpu`" in description
    assert f"python -m bench.ablation --study {tiny_study.toml}" in description
    params = run.data.params
    assert params["width"] == "0.125" and params["subset"] == "2000" and params["epochs"] == "2"
    assert "batch_norm" not in params and "seed" not in params  # what differs is not shared

    c = client(tiny_study)
    runs = children(tiny_study)
    for variant in ("vgg-a", "vgg-a-bn"):
        accs = [r.data.metrics["test_acc"] for r in runs if r.data.tags["bench.variant"] == variant]
        assert run.data.metrics[f"n.{variant}"] == 2
        assert run.data.metrics[f"test_acc_mean.{variant}"] == pytest.approx(np.mean(accs))
        assert run.data.metrics[f"test_acc_std.{variant}"] == pytest.approx(np.std(accs, ddof=1))
    # One point per summary, so that a chart shows the final value, not a curve over finished runs.
    for key in ("n", "test_acc_mean", "test_acc_std"):
        for variant in ("vgg-a", "vgg-a-bn"):
            assert len(c.get_metric_history(run.info.run_id, f"{key}.{variant}")) == 1
    report = {a.path for a in c.list_artifacts(run.info.run_id, "report")}
    assert report == {f"report/tiny-fashion-mnist-cpu.{ext}" for ext in ("md", "csv", "png")}
    assert (tiny_study.root / "reports" / "tiny-fashion-mnist-cpu.md").is_file()


# --- 4. datasets and system metrics ----------------------------------------------------------------


def test_child_runs_log_their_dataset_and_system_metrics(tiny_study):
    c = client(tiny_study)
    for run in children(tiny_study):
        [dataset_input] = run.inputs.dataset_inputs
        dataset = dataset_input.dataset
        assert dataset.name == "fashion-mnist"
        assert dataset.digest == run.data.tags["bench.data.split_hash"]
        assert "fashion-mnist" in dataset.source
        profile = json.loads(dataset.profile)  # the split's sizes, not the one-row record's
        tags = run.data.tags
        assert profile["num_rows"] == int(tags["bench.data.n_train"]) > 1
        assert [profile[k] for k in ("n_train", "n_val", "n_test")] == [
            int(tags[f"bench.data.{k}"]) for k in ("n_train", "n_val", "n_test")
        ]
        schema = json.dumps(json.loads(dataset.schema))
        assert "n_train" in schema
        system = [k for k in run.data.metrics if k.startswith("system/")]
        assert "system/cpu_utilization_percentage" in system and "system/system_memory_usage_megabytes" in system
        assert c.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")


def test_no_system_metrics_flag(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")
    args = ["--study", "depth", "--budget", "smoke", "--variants", "vgg-a", "--epochs", "1", "--no-system-metrics"]
    assert ablation.main(args) == 0
    [run] = study_runs(MlflowClient(f"sqlite:///{tmp_path}/mlflow.db"), "depth")
    assert run.data.metrics["test_acc"] >= 0 and not [k for k in run.data.metrics if k.startswith("system/")]


# --- 5. the Optuna study -------------------------------------------------------------------------


def test_optuna_shows_the_ablation_with_params_and_curves(tiny_study):
    storage = JournalStorage(JournalFileBackend(str(tiny_study.journal)))  # as the README says
    study = optuna.load_study(study_name="tiny-cpu", storage=storage)
    assert study.metric_names == ["val_acc"]
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert sorted((t.params["variant"], t.params["seed"]) for t in trials) == [
        ("vgg-a", 0),
        ("vgg-a", 1),
        ("vgg-a-bn", 0),
        ("vgg-a-bn", 1),
    ]
    run_ids = {r.info.run_id for r in children(tiny_study)}
    for trial in trials:
        assert trial.distributions["variant"] == CategoricalDistribution(("vgg-a", "vgg-a-bn"))
        assert trial.distributions["seed"] == IntDistribution(0, 1)  # the study's own seeds, a numeric axis
        assert sorted(trial.intermediate_values) == [1, 2]
        assert trial.value == pytest.approx(max(trial.intermediate_values.values()))
        assert trial.user_attrs["mlflow_run_id"] in run_ids
    importances = optuna.importance.get_param_importances(study)
    assert set(importances) == {"variant", "seed"}

    # optuna-dashboard's own API, served on a free loopback port.
    from optuna_dashboard import wsgi

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    server = make_server("127.0.0.1", 0, wsgi(storage), handler_class=Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        with urllib.request.urlopen(f"{base}/api/studies") as response:
            [summary] = [s for s in json.loads(response.read())["study_summaries"] if s["study_name"] == "tiny-cpu"]
        study_id = summary["study_id"]
        with urllib.request.urlopen(f"{base}/api/studies/{study_id}") as response:
            detail = json.loads(response.read())
        with urllib.request.urlopen(f"{base}/api/studies/{study_id}/param_importances") as response:
            answer = json.loads(response.read())
    finally:
        server.shutdown()
    assert detail["objective_names"] == ["val_acc"]  # the dashboard's axis, not "Objective 0"
    assert {p["name"] for p in detail["union_search_space"]} == {"variant", "seed"}
    assert all(len(t["intermediate_values"]) == 2 for t in detail["trials"])
    assert {i["name"] for i in answer["param_importances"][0]} == {"variant", "seed"}


def test_an_ablation_refuses_a_study_file_whose_variants_changed(tiny_study, tmp_path):
    changed = tmp_path / "tiny.toml"
    changed.write_text(
        tiny_study.toml.read_text().replace(
            "vgg-a-bn = { batch_norm = true }", 'vgg-a-bn = { batch_norm = true }\nvgg-b = { model = "vgg-b" }'
        )
    )
    before = tiny_study.journal.read_bytes()
    argv = [a if a != str(tiny_study.toml) else str(changed) for a in tiny_study.argv]
    message = command_error("bench.ablation", *argv)
    assert "variant choices" in message and "--storage" in message
    assert tiny_study.journal.read_bytes() == before


# --- 6. the run record, declared once (bench.engine.record) ----------------------------------------------

WEIRD_LABEL = 'it\'s "q" `b` a\\b'  # a budget label from a folder path may hold any of these


@dataclass
class ResultWithMemory(train.Result):
    """A final metric added the way the record says: a field with its metadata, nothing else."""

    peak_memory_mb: float = field(default=0.0, metadata={"metric": "peak_memory_mb", "report": True})


def log_finished(tracker, experiment_id: str, parent_id: str, config: RunConfig, result) -> str:
    run_id = tracker.start_child(experiment_id, parent_id, config, "run", {"variant": "v", "seed": config.seed})
    tracker.log_result(run_id, config, result, "run")
    tracker.set_status(run_id, "FINISHED")
    return run_id


def test_a_final_metric_added_to_the_result_is_logged_and_read_by_the_report(tmp_path, monkeypatch):
    from bench.tracking import Tracker

    config = RunConfig(model="vgg-a", width=0.0625, dataset="synthetic", subset=256, epochs=1, batch_size=64)
    result = train.fit(config)
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = tracker.experiment_id("record")
    parent_id = tracker.create_parent(experiment_id, "record-parent", {})
    old_run = log_finished(tracker, experiment_id, parent_id, config, result)

    monkeypatch.setattr(results, "Result", ResultWithMemory)
    # A declared column a run lacks is an error that names it, not a column of None.
    with pytest.raises(BenchError, match=f"{old_run} has no metric 'peak_memory_mb'"):
        read.runs_frame(tracker, experiment_id)
    extended = ResultWithMemory(**{f.name: getattr(result, f.name) for f in fields(result)}, peak_memory_mb=123.5)
    new_run = log_finished(tracker, experiment_id, parent_id, config, extended)
    assert tracker.client.get_run(new_run).data.metrics["peak_memory_mb"] == 123.5
    [row] = read.runs_frame(tracker, experiment_id).itertuples()
    assert row.run_id == new_run and row.peak_memory_mb == 123.5 and row.test_acc == result.test_acc


def test_budget_labels_never_go_into_a_filter_string(tmp_path):
    """Tags compared in Python: quotes, backticks and backslashes in a label match exactly."""
    from bench.tracking import Tracker

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = tracker.experiment_id("labels")
    parent_id = tracker.create_parent(experiment_id, "labels-parent", {})
    for label, acc in ((WEIRD_LABEL, 0.75), ("it", 0.25)):
        run = tracker.client.create_run(
            experiment_id,
            tags={"bench.role": "run", "bench.budget": label, "bench.variant": "v", "bench.config_hash": label},
        )
        tracker.log_metrics(run.info.run_id, {name: acc for name in record.reported().values()})
        tracker.set_status(run.info.run_id, "FINISHED")
    [row] = read.runs_frame(tracker, experiment_id, budget=WEIRD_LABEL).itertuples()
    assert row.budget == WEIRD_LABEL and row.test_acc == 0.75
    assert [r.data.tags["bench.budget"] for r in tracker.child_runs(experiment_id, budget=WEIRD_LABEL)] == [WEIRD_LABEL]
    assert tracker.log_variant_summary(parent_id, experiment_id, WEIRD_LABEL)["v"]["test_acc_mean"] == 0.75


def test_a_study_run_again_leaves_its_parent_as_it_was(tiny_study):
    """Nothing trained, nothing moved: the parent's end time, status and summary stay."""
    c = client(tiny_study)
    before = parent(tiny_study)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tiny_study.root)
        assert ablation.main(tiny_study.argv) == 0
    after = parent(tiny_study)
    assert (
        (after.info.status, after.info.end_time)
        == (before.info.status, before.info.end_time)
        == ("FINISHED", before.info.end_time)
    )
    assert len(c.get_metric_history(after.info.run_id, "n.vgg-a")) == 1


def test_runs_models_and_experiment_describe_themselves_in_the_ui(tiny_study):
    """What the MLflow UI shows: source, descriptions, and the registry's texts."""
    c = client(tiny_study)
    experiment = c.get_experiment_by_name("tiny")
    assert "Group by bench.variant" in experiment.tags["mlflow.note.content"]
    for run in [parent(tiny_study), *children(tiny_study)]:
        tags = run.data.tags
        assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.source.name"]
        assert tags["mlflow.source.git.commit"] == provenance.git_commit()
    for run in children(tiny_study):
        note = run.data.tags["mlflow.note.content"]
        assert run.data.tags["bench.variant"] in note and "checkpoints/best.pt" in note
    assert "servable" in c.get_registered_model("tiny-cpu").description
    version = c.get_model_version_by_alias("tiny-cpu", "best")
    assert version.run_id in version.description


def test_the_settings_the_report_reads_come_from_runconfig_fields_typed_with_their_defaults(tmp_path):
    """The report's settings are the fields marked report=True: a run that logged them reads them back typed as
    the field; a run logged before a setting existed reads the field's default, never None."""
    from bench.config import REPORTED_SETTINGS
    from bench.tracking import Tracker

    reported = {f.name for f in fields(RunConfig) if f.metadata.get("report")}
    assert set(REPORTED_SETTINGS) == reported >= {"batch_norm", "epochs", "compute", "compute_scale", "train_scale"}
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = tracker.experiment_id("settings")
    config = RunConfig(
        dataset="synthetic-images", batch_norm=True, epochs=7, compute="flops", compute_scale=0.5, train_scale="256,512"
    )
    for seed, params in ((0, {}), (1, {name: str(getattr(config, name)) for name in reported})):
        run = tracker.client.create_run(
            experiment_id,
            tags={"bench.role": "run", "bench.variant": "v", "bench.seed": str(seed), "bench.config_hash": str(seed)},
        )
        for name, value in params.items():
            tracker.client.log_param(run.info.run_id, name, value)
        tracker.log_metrics(run.info.run_id, {name: 0.5 for name in record.reported().values()})
        tracker.set_status(run.info.run_id, "FINISHED")
    rows = {row.seed: row for row in read.runs_frame(tracker, experiment_id).itertuples()}
    defaults = {f.name: f.default for f in fields(RunConfig) if f.name in reported}
    read_back = {name: getattr(rows["0"], name) for name in reported}
    assert defaults.pop("train_scale") is None and pd.isna(read_back.pop("train_scale"))  # missing, as pandas has it
    assert read_back == defaults
    assert {name: getattr(rows["1"], name) for name in reported} == {name: getattr(config, name) for name in reported}


def test_a_report_from_a_store_whose_artifacts_stayed_elsewhere_says_so_and_creates_nothing_there(
    tiny_study, tmp_path, capsys
):
    """A store brought back without its artifact folder (as from a GPU machine): the report is written to
    --out, its tags set, nothing logged into (or created at) the other machine's paths, and one note says
    what is missing and what it stops."""
    import shutil
    import sqlite3

    from bench.report import command as report_command

    store = tmp_path / "came-back" / "mlflow.db"
    store.parent.mkdir()
    shutil.copy(tiny_study.root / "mlflow.db", store)
    elsewhere = tmp_path / "gpu-machine"  # the path the runs were made under, not on this machine
    with sqlite3.connect(store) as db:
        for table, column in (("experiments", "artifact_location"), ("runs", "artifact_uri")):
            db.execute(f"UPDATE {table} SET {column} = replace({column}, ?, ?)", (str(tiny_study.root), str(elsewhere)))
    out = tmp_path / "reports"
    argv = ["--study", str(tiny_study.toml), "--tracking-uri", f"sqlite:///{store}", "--out", str(out)]
    assert report_command.main(argv) == 0
    said = "".join(capsys.readouterr().err.split())  # the console folds long paths anywhere
    missing = f"the store's artifacts are not on this machine ({elsewhere}/mlruns/tiny does not exist"
    assert "".join(missing.split()) in said and "thereportisnotloggedtotheparentrun" in said
    assert sorted(p.suffix for p in out.iterdir()) == [".csv", ".md", ".png"]
    assert not elsewhere.exists()
