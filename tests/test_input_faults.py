"""Input that must not escape its place (issue 25, items 2-7): secrets of any characters, study names that
would become paths, a run's data changed under its checkpoint, weights or losses that are not finite,
a corrupt best.pt, search settings that cannot run, decompression bombs, an --out that is a file.
Each reproduced for real (real MLflow, Optuna, PostgreSQL, data) and checked to be fixed."""

from __future__ import annotations

import os
import shlex
import struct
import zlib
from pathlib import Path

import pytest
import torch
from conftest import main_error, stop_after, study_records, study_runs
from mlflow.tracking import MlflowClient

from bench import ablation, data, predict
from bench import train as train_command
from bench.benchmark import command as benchmark
from bench.config import RunConfig
from bench.data.generate import make_tree
from bench.engine import checkpoint
from bench.engine.train import build_model, fit
from bench.errors import BenchError, redact
from bench.post import command as post
from bench.report import command as report
from bench.search import command as search

ONE = ["--study", "depth", "--budget", "smoke", "--variants", "vgg-a"]

# --- item 2: a password of any characters is never shown --------------------------------------------

SPECIAL = ["/", "?", "#", " ", "@", ":"]


@pytest.mark.parametrize("char", SPECIAL)
def test_redact_hides_a_password_with_any_character(char):
    password = f"Pw{char}x{char}9"
    url = f"postgresql://bench:{password}@db:5432/mlflow"
    assert redact(url) == "postgresql://bench:***@db:5432/mlflow"
    line = f"error: cannot open Optuna storage {url}: refused"
    assert redact(line) == "error: cannot open Optuna storage postgresql://bench:***@db:5432/mlflow: refused"
    # a command line as shlex.join writes it (the URL quoted where it must be), with a second URL
    command = shlex.join(["--storage", url, "--tracking-uri", f"mysql://u:{password}@h/m", "--epochs", "1"])
    shown = redact(command)
    assert "Pw" not in shown and "x" not in shown and shown.count(":***@") == 2, shown


def test_redact_leaves_urls_without_a_password_alone():
    text = "http://127.0.0.1:5000 sqlite:///x.db postgresql://bench@db:5432/x file:///a:b"
    assert redact(text) == text


def test_a_password_with_every_special_character_appears_nowhere(postgres, workdir, capsys):
    """Raw in the URL (SQLAlchemy takes '/', '?', '#', ' ' and ':' raw), for the store and the queue."""
    password = "P/w?" + os.urandom(4).hex() + "#s p:c"
    role = postgres.role(password)

    def url(database: str) -> str:
        return database.replace(f"//{role}@", f"//{role}:{password}@")

    uri, storage = url(postgres.database(owner=role)), url(postgres.database(owner=role))
    assert ablation.main([*ONE, "--epochs", "1", "--tracking-uri", uri, "--storage", storage]) == 0
    assert report.main(["--study", "depth", "--tracking-uri", uri, "--out", "out"]) == 0
    printed = capsys.readouterr()
    assert ":***@" in printed.err
    written = [p.read_bytes().decode("latin-1") for p in (workdir / "out").iterdir()]
    records = study_records(MlflowClient(uri), "depth", workdir / "artifacts", ("report", "config.json", "study.toml"))
    assert any("bench.storage" in r and ":***@" in r for r in records)  # the parent's tag was checked
    secret = password.split("#")[0][2:]  # the random part and what surrounds it, in any text
    for text in [printed.out, printed.err, *written, *records]:
        assert secret not in text and password not in text


# --- item 3: a study's names never become paths ------------------------------------------------------

SMOKE = '[budgets.smoke]\ndataset = "synthetic"\nwidth = 0.0625\nsubset = 160\nepochs = 1\n'


@pytest.mark.parametrize(
    "where, name",
    [
        ("name", "../../../x"),
        ("name", "/tmp/abs"),
        ("name", "a/b"),
        ("name", "a\\b"),
        ("name", ".."),
        ("variant", "../v"),
        ("budget", "../b"),
    ],
)
def test_a_study_name_that_would_become_a_path_is_refused_when_read(workdir, capsys, where, name):
    quoted = f"'{name}'"  # a TOML literal string: the backslash stays one
    text = {
        "name": f'name = {quoted}\n[variants]\nvgg-a = {{ model = "vgg-a" }}\n' + SMOKE,
        "variant": f'name = "ok"\n[variants]\n{quoted} = {{ model = "vgg-a" }}\n' + SMOKE,
        "budget": 'name = "ok"\n[variants]\nvgg-a = {}\n' + SMOKE.replace("smoke", quoted),
    }
    (workdir / "bad.toml").write_text(text[where])
    line = main_error(ablation.main, ["--study", "bad.toml"], capsys)
    assert f"{where} {name!r} would become a path" in line
    assert sorted(p.name for p in workdir.iterdir()) == ["bad.toml"]  # nothing recorded, nothing written


# --- item 4: a run never silently mixes data or trains on garbage -------------------------------------


def small_config(**values) -> RunConfig:
    return RunConfig(
        **{
            "dataset": "synthetic",
            "width": 0.0625,
            "subset": 256,
            "epochs": 2,
            "batch_size": 64,
            "lr": 0.02,
            "device": "cpu",
            **values,
        }
    )


def test_a_resume_on_a_changed_image_folder_is_refused_naming_the_difference(tmp_path, isolated_cache):
    folder = make_tree(tmp_path / "tree", images=40, classes=2, size=(36, 36), workers=1)
    config = small_config(dataset=f"imagefolder:{folder}", image_size=32, subset=None, batch_size=8)
    with pytest.raises(KeyboardInterrupt):
        fit(config, checkpoint_dir=tmp_path / "ck", on_epoch=stop_after(1))
    first, second = sorted((folder / "train").rglob("*.jpg"))[:2]
    first.write_bytes(first.read_bytes() + b"\xff\xd9")  # another file under the same name
    (second.parent / "added.jpg").write_bytes(second.read_bytes())
    with pytest.raises(BenchError) as refused:
        fit(config, checkpoint_dir=tmp_path / "ck")
    message = str(refused.value)
    assert f"{first.relative_to(folder)} changed size" in message, message
    assert f"1 file(s) added (e.g. {(second.parent / 'added.jpg').relative_to(folder)})" in message
    assert "last.pt was trained on other data" in message and "\n" not in message


def test_a_resume_on_the_same_data_goes_on(tmp_path):
    config = small_config()
    with pytest.raises(KeyboardInterrupt):
        fit(config, checkpoint_dir=tmp_path / "ck", on_epoch=stop_after(1))
    resumed = fit(config, checkpoint_dir=tmp_path / "ck")
    assert [h.epoch for h in resumed.history] == [1, 2]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_pretrained_file_with_non_finite_weights_is_refused_before_a_record(workdir, capsys, bad):
    config = small_config(model="vgg-a")
    state = build_model(config, data.open_run(config)).state_dict()
    state["features.0.weight"][0, 0, 0, 0] = bad
    torch.save(state, workdir / "weights.pt")
    line = main_error(ablation.main, [*ONE, "--pretrained", str(workdir / "weights.pt")], capsys)
    assert "NaN or infinite weights (features.0.weight)" in line
    assert not (workdir / "mlflow.db").exists() and not list(workdir.rglob("*.journal"))  # nothing recorded


def test_a_run_whose_loss_turns_non_finite_fails_and_is_never_registered(workdir, capsys):
    (workdir / "diverge.toml").write_text(
        'name = "diverge"\n[variants]\nvgg-a = { model = "vgg-a", lr = 10.0 }\n'
        '[budgets.smoke]\ndataset = "synthetic"\nwidth = 0.0625\nsubset = 256\nepochs = 2\nbatch_size = 64\n'
    )
    assert ablation.main(["--study", "diverge.toml"]) == 1  # the run failed; a study would go on
    err = " ".join(capsys.readouterr().err.split())
    assert "Traceback" not in err and "the loss is not finite" in err and "lower lr" in err, err[-3000:]
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    assert [r.info.status for r in study_runs(client, "diverge")] == ["FAILED"]
    assert client.search_registered_models() == []


# --- item 5: a corrupt best.pt is set aside and the run recovers --------------------------------------


def test_a_corrupt_best_checkpoint_is_set_aside_and_the_run_trains_again(tmp_path, caplog):
    config = small_config()
    fit(config, checkpoint_dir=tmp_path / "ck")
    best = tmp_path / "ck" / "best.pt"
    best.write_bytes(best.read_bytes()[:300])  # a crash of the disk, a bad copy
    again = fit(config, checkpoint_dir=tmp_path / "ck")
    assert [h.epoch for h in again.history] == [1, 2]  # trained again: the best weights were lost
    [aside] = best.parent.glob("best.pt.corrupt-*")
    assert aside.stat().st_size == 300
    assert checkpoint.load(best, config_hash=config.hash)["best"]["epoch"] == again.best_epoch
    assert any("set aside" in r.getMessage() and "best.pt" in r.getMessage() for r in caplog.records)


# --- item 7: one line, not a traceback ---------------------------------------------------------------


def bomb_png(path: Path, side: int = 20_000) -> Path:
    """A PNG whose header claims side x side pixels (400 M at the default): PIL's decompression-bomb limit."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + struct.pack(">I", 0)
        + b"IEND"
        + struct.pack(">I", zlib.crc32(b"IEND"))
    )
    return path


@pytest.mark.parametrize("side", [20_000, 10_000])  # past PIL's error limit, and past its warning limit
def test_a_decompression_bomb_in_an_image_folder_is_one_line(tmp_path, isolated_cache, capsys, side):
    folder = make_tree(tmp_path / "tree", images=20, classes=2, size=(36, 36), workers=1)
    bomb = bomb_png(folder / "train" / sorted(os.listdir(folder / "train"))[0] / "bomb.png", side)
    line = main_error(
        train_command.main,
        ["--dataset", f"imagefolder:{folder}", "--image-size", "32", "--epochs", "1", "--width", "0.0625"],
        capsys,
    )
    assert f"cannot read image {bomb}: a decompression bomb" in line


@pytest.mark.parametrize(
    "command, argv",
    [
        ("report", ["--study", "depth", "--out"]),
        ("predict", ["--checkpoint", "best.pt", "--grid", "2", "--out-dir"]),
        ("post", ["--checkpoint", "best.pt", "--quantize", "--out-dir"]),
        ("benchmark", ["--suite", "gpu", "--smoke", "--out"]),
    ],
)
@pytest.mark.parametrize("where", ["file", "under a file"])
def test_an_out_folder_that_is_a_file_is_one_line(workdir, capsys, command, argv, where):
    (workdir / "taken").write_text("a file, not a folder")
    target = "taken" if where == "file" else "taken/reports"
    mains = {"report": report.main, "predict": predict.main, "post": post.main, "benchmark": benchmark.main}
    main = mains[command]
    line = main_error(main, [*argv, target], capsys)
    assert f"{argv[-1]} {target} " in line and "not a folder" in line
    assert (workdir / "taken").read_text() == "a file, not a folder"


# --- item 6: search settings that cannot run are refused before anything is recorded --------------------


def search_study(workdir: Path, space: str, search_table: str = "") -> Path:
    path = workdir / "probe.toml"
    path.write_text(
        'name = "probe"\n[budgets.smoke]\ndataset = "synthetic"\nwidth = 0.0625\nsubset = 160\n'
        f"epochs = 3\nbatch_size = 32\n[search]\n{search_table}\n[search.space]\n{space}\n"
    )
    return path


LR = 'lr = { type = "float", low = 0.001, high = 0.1, log = true }'


@pytest.mark.parametrize(
    "pruner, said",
    [
        ('{ name = "hyperband", min_resource = 0 }', "ZeroDivisionError"),
        ('{ name = "hyperband", reduction_factor = 1 }', "ZeroDivisionError"),
        ('{ name = "hyperband", reduction_factor = nan }', "reduction_factor = nan is not a finite number"),
        ('{ name = "median", n_warmup_steps = inf }', "n_warmup_steps = inf is not a finite number"),
    ],
)
def test_pruner_options_that_cannot_run_are_refused_up_front(workdir, capsys, pruner, said):
    path = search_study(workdir, LR, f"pruner = {pruner}")
    line = main_error(search.main, ["--study", str(path)], capsys)
    assert said in line and "probe.toml: search" in line, line
    assert not (workdir / "mlflow.db").exists() and not list(workdir.rglob("*.journal"))


def test_a_space_whose_corner_leaves_no_training_batch_is_refused_up_front(workdir, capsys):
    space = (
        'subset = { type = "int", low = 64, high = 512 }\n'
        'batch_size = { type = "categorical", choices = [32, 128] }\n' + LR
    )
    line = main_error(search.main, ["--study", str(search_study(workdir, space))], capsys)
    assert "batch size 128 is larger than the training split" in line and "subset 64" in line, line
    assert not (workdir / "mlflow.db").exists() and not list(workdir.rglob("*.journal"))
