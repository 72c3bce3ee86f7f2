"""Input that must not escape its place (issue 25, items 2-7): secrets of any characters, study names that
would become paths, a run's data changed under its checkpoint, weights or losses that are not finite,
a corrupt best.pt, search settings that cannot run, decompression bombs, an --out that is a file.
Each reproduced for real (real MLflow, Optuna, PostgreSQL, data) and checked to be fixed."""

from __future__ import annotations

import os
import shlex

import pytest
from mlflow.tracking import MlflowClient

from bench import ablation
from bench.errors import redact
from bench.report import command as report
from conftest import main_error, study_runs

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
    client = MlflowClient(uri)
    records = []
    for run in study_runs(client, "depth") + study_runs(client, "depth", "study"):
        records += [str(run.data.tags), str(run.data.params)]
        folder = workdir / "artifacts" / run.info.run_id
        folder.mkdir(parents=True)
        for entry in client.list_artifacts(run.info.run_id):
            if entry.path in ("report", "config.json", "study.toml"):
                client.download_artifacts(run.info.run_id, entry.path, str(folder))
        records += [p.read_bytes().decode("latin-1") for p in folder.rglob("*") if p.is_file()]
    assert any("bench.storage" in r and ":***@" in r for r in records)  # the parent's tag was checked
    secret = password.split("#")[0][2:]  # the random part and what surrounds it, in any text
    for text in [printed.out, printed.err, *written, *records]:
        assert secret not in text and password not in text


# --- item 3: a study's names never become paths ------------------------------------------------------

SMOKE = '[budgets.smoke]\ndataset = "synthetic"\nwidth = 0.0625\nsubset = 160\nepochs = 1\n'


@pytest.mark.parametrize("where, name", [
    ("name", "../../../x"), ("name", "/tmp/abs"), ("name", "a/b"), ("name", "a\\b"), ("name", ".."),
    ("variant", "../v"), ("budget", "../b"),
])
def test_a_study_name_that_would_become_a_path_is_refused_when_read(workdir, capsys, where, name):
    quoted = f"'{name}'"  # a TOML literal string: the backslash stays one
    text = {"name": f'name = {quoted}\n[variants]\nvgg-a = {{ model = "vgg-a" }}\n' + SMOKE,
            "variant": f'name = "ok"\n[variants]\n{quoted} = {{ model = "vgg-a" }}\n' + SMOKE,
            "budget": f'name = "ok"\n[variants]\nvgg-a = {{ model = "vgg-a" }}\n' + SMOKE.replace("smoke", quoted)}
    (workdir / "bad.toml").write_text(text[where])
    line = main_error(ablation.main, ["--study", "bad.toml"], capsys)
    assert f"{where} {name!r} would become a path" in line
    assert sorted(p.name for p in workdir.iterdir()) == ["bad.toml"]  # nothing recorded, nothing written
