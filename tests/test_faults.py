"""Trying to break a study: each defect found that way, reproduced for real (real MLflow store, real
Optuna journal, real PostgreSQL where it matters) and checked to be fixed."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import psutil
import pytest
import torch
from conftest import command_error, error_line, journal_trials, main_error, study_records, study_runs, wait_for_epochs
from mlflow.tracking import MlflowClient
from sqlalchemy.engine import make_url

from bench import ablation
from bench.config import RunConfig
from bench.engine import checkpoint
from bench.errors import BenchError, redact
from bench.report import command as report
from bench.run import studies
from bench.run import trial as one_trial
from bench.search import command as search
from bench.tracking import Tracker

ONE = ["--study", "depth", "--budget", "smoke", "--variants", "vgg-a"]
TWO = ["--study", "depth", "--budget", "smoke", "--variants", "vgg-a,vgg-b"]


def local_client(workdir: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{workdir}/mlflow.db")


# --- 2. passwords ----------------------------------------------------------------------------------


def test_redact_hides_every_password_in_a_text():
    text = (
        "python -m bench.report --tracking-uri postgresql://bench:pa@ss@db:5432/mlflow "
        "--storage=mysql+pymysql://u:p%40w@h/db?x=1 http://h:5000 sqlite:///mlflow.db postgresql://bench@db/x"
    )
    assert redact(text) == (
        "python -m bench.report --tracking-uri postgresql://bench:***@db:5432/mlflow "
        "--storage=mysql+pymysql://u:***@h/db?x=1 http://h:5000 sqlite:///mlflow.db "
        "postgresql://bench@db/x"
    )


def test_a_tracking_password_appears_nowhere(postgres, workdir, capsys):
    password = "Pw-" + os.urandom(6).hex()
    role = postgres.role(password)
    uri = make_url(postgres.database(owner=role)).set(password=password).render_as_string(hide_password=False)
    assert ablation.main([*ONE, "--epochs", "1", "--tracking-uri", uri]) == 0
    assert report.main(["--study", "depth", "--tracking-uri", uri, "--out", "out"]) == 0
    printed = capsys.readouterr()
    assert "MLflow store: postgresql://" in printed.err and ":***@" in printed.err
    written = [p.read_bytes() for p in (workdir / "out").iterdir()]
    assert len(written) == 3  # md, csv, png (its metadata holds the command)
    records = study_records(MlflowClient(uri), "depth", workdir / "artifacts", ("report",))
    assert any("python -m bench.report" in r for r in records)  # the stamped command was checked
    for text in [printed.out, printed.err, *[w.decode("latin-1") for w in written], *records]:
        assert password not in text


# --- 3. a corrupt checkpoint ----------------------------------------------------------------------


def test_a_corrupt_checkpoint_is_set_aside_and_the_study_goes_on(workdir, caplog):
    [first, second] = studies.load("depth").grid("smoke", variants=["vgg-a", "vgg-b"])
    torn = workdir / ".bench" / "checkpoints" / first.config.hash / "last.pt"
    checkpoint.save(torn, {"config_hash": first.config.hash, "model": {"w": torch.ones(1000)}})
    torn.write_bytes(torn.read_bytes()[:300])  # what a crash of the disk or a bad copy leaves

    assert ablation.main(TWO) == 0
    client = local_client(workdir)
    assert sorted(r.info.status for r in study_runs(client, "depth")) == ["FINISHED", "FINISHED"]
    assert [r.info.status for r in study_runs(client, "depth", "study")] == ["FINISHED"]
    [aside] = torn.parent.glob("last.pt.corrupt-*")
    assert aside.stat().st_size == 300  # kept, not deleted
    [note] = [r.getMessage() for r in caplog.records if "set aside" in r.getMessage()]
    assert str(aside.relative_to(workdir)) in note and "\n" not in note
    [run] = [r for r in study_runs(client, "depth") if r.data.tags["bench.config_hash"] == first.config.hash]
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_acc"))
    assert steps == list(range(1, first.config.epochs + 1))


# --- 4. a deleted MLflow store --------------------------------------------------------------------


def test_a_deleted_store_is_filled_again_from_the_journal(workdir):
    assert ablation.main(TWO) == 0
    (workdir / "mlflow.db").unlink()
    shutil.rmtree(workdir / "mlruns")

    # A new process, as a person would run it (this one's MLflow keeps the deleted file open).
    again = subprocess.run(
        [sys.executable, "-m", "bench.ablation", *TWO],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "300"},
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert "2 run(s) complete in Optuna" in again.stderr
    client = local_client(workdir)
    children = study_runs(client, "depth")
    assert sorted(r.info.run_name for r in children) == ["vgg-a seed=0", "vgg-b seed=0"]
    assert all(r.info.status == "FINISHED" and "test_acc" in r.data.metrics for r in children)
    for run in children:
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_acc")) == [1, 2]
    assert [r.info.status for r in study_runs(client, "depth", "study")] == ["FINISHED"]
    latest = {}
    for trial in journal_trials(workdir):
        latest[trial.user_attrs["point"]] = trial.state
    assert list(latest.values()) == [optuna.trial.TrialState.COMPLETE] * 2


# --- 5. the parent's status -----------------------------------------------------------------------


def test_an_error_that_ends_a_worker_fails_the_parent(workdir, monkeypatch):
    def broken_disk(config, **kwargs):
        raise BenchError("disk full")  # an error that no check before the study could have seen

    with monkeypatch.context() as patched:
        patched.setattr(one_trial, "fit", broken_disk)
        with pytest.raises(BenchError, match="disk full"):
            ablation.main(ONE)
    client = local_client(workdir)
    assert [r.info.status for r in study_runs(client, "depth")] == ["FAILED"]
    assert [r.info.status for r in study_runs(client, "depth", "study")] == ["FAILED"]

    assert ablation.main(ONE) == 0  # run again, it resumes and the parent ends true
    assert [r.info.status for r in study_runs(client, "depth")] == ["FINISHED"]
    assert [r.info.status for r in study_runs(client, "depth", "study")] == ["FINISHED"]


# --- 6. a torn journal ----------------------------------------------------------------------------


def test_a_torn_journal_line_is_set_aside_and_the_study_goes_on(workdir, capsys):
    assert ablation.main(ONE) == 0
    journal = workdir / ".bench" / "optuna.journal"
    whole = journal.read_bytes()
    with open(journal, "ab") as f:
        f.write(b'{"op_code":5,"worker_id":"9f3c-')  # a log cut short by a crash
    capsys.readouterr()

    assert ablation.main(TWO) == 0  # appends many logs after the torn one
    err = capsys.readouterr().err
    [kept] = journal.parent.glob("optuna.journal.torn-*")
    assert f"{journal.relative_to(workdir)} had a torn line" in err and kept.name in err
    assert kept.read_bytes() == whole + b'{"op_code":5,"worker_id":"9f3c-'
    assert journal.read_bytes().startswith(whole)
    assert [t.state for t in journal_trials(workdir)] == [optuna.trial.TrialState.COMPLETE] * 2


def test_a_log_glued_onto_a_torn_one_is_kept(workdir):
    from bench.run import journal

    path = workdir / "j.journal"
    path.write_bytes(b'{"op_code":0,"a":1}\n{"op_co{"op_code":4,"b":2}\n{"op_code":5,"c":3}\n')
    assert journal.repair(path) is not None
    assert path.read_bytes() == b'{"op_code":0,"a":1}\n{"op_code":4,"b":2}\n{"op_code":5,"c":3}\n'
    assert journal.repair(path) is None  # whole now: left alone


# --- 7, 11. settings ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_every_float_setting_refuses_nan_and_infinity(value):
    floats = [name for name, hint in RunConfig.__annotations__.items() if hint == "float"]
    assert {"lr", "width", "warmup_epochs", "momentum"} <= set(floats)
    for name in floats:
        with pytest.raises(BenchError, match=f"'{name}' = .* is not a finite number"):
            RunConfig.from_dict({name: value})


def test_nan_on_the_command_line_is_one_line_before_anything(workdir, capsys):
    assert "'lr' = nan" in main_error(ablation.main, [*ONE, "--lr", "nan"], capsys)
    assert "--timeout" in main_error(search.main, ["--study", "lr-wd", "--budget", "smoke", "--timeout", "nan"], capsys)
    assert not (workdir / "mlflow.db").exists() and not (workdir / ".bench" / "optuna.journal").exists()


@pytest.mark.parametrize(
    "command",
    [
        "bench.ablation",
        "bench.search",
        "bench.train",
        "bench.predict",
        "bench.post",
        "bench.report",
        "bench.models",
        "bench.benchmark",
        "bench.data.generate",
        "bench.benchmark.stream",
    ],
)
def test_a_mistyped_flag_is_one_line_naming_help(command, workdir):
    message = command_error(command, "--no-such-flag", cwd=workdir)
    assert "unrecognized arguments: --no-such-flag" in message or "required" in message
    assert f"python -m {command} --help" in message
    assert not (workdir / "mlflow.db").exists()


def test_zero_epochs_is_reported_against_epochs():
    with pytest.raises(BenchError, match="setting 'epochs' = 0 is out of range"):
        RunConfig.from_dict({"epochs": 0, "warmup_epochs": 0.5})  # the smoke budgets' warm-up


# --- 8. checked before the first run --------------------------------------------------------------


def test_what_would_fail_inside_a_run_fails_before_any_is_recorded(workdir, capsys):
    (workdir / "a-file").write_text("not a folder")
    corrupt = workdir / "corrupt.pth"
    torch.save(torch.nn.Linear(2, 2).state_dict(), corrupt)
    corrupt.write_bytes(corrupt.read_bytes()[:200])
    foreign = workdir / "foreign.pth"
    torch.save({"weights": Path("/etc/passwd")}, foreign)  # a pickled object: loading it runs code
    other = workdir / "other.pth"
    torch.save(torch.nn.Linear(2, 2).state_dict(), other)
    cases = [
        (["--batch-size", "100000", "--subset", "1000"], "batch size 100000 is larger than the training split"),
        (["--checkpoint-root", "a-file/checkpoints"], "--checkpoint-root a-file/checkpoints is not a writable folder"),
        (["--pretrained", str(corrupt)], "corrupt.pth is not a readable pretrained state_dict (corrupt"),
        (["--pretrained", str(foreign)], "re-save it with torch.save(model.state_dict(), path)"),
        (["--pretrained", str(other)], "does not fit this architecture"),
        (["--pretrained", "missing.pth"], "pretrained file missing.pth does not exist"),
    ]
    for argv, message in cases:
        err = main_error(ablation.main, [*ONE, *argv], capsys)
        assert message in err and "weights_only=False" not in err, err
    err = main_error(
        search.main, ["--study", "lr-wd", "--budget", "smoke", "--batch-size", "5000", "--subset", "512"], capsys
    )
    assert "batch size 5000 is larger" in err
    assert not (workdir / "mlflow.db").exists() and not (workdir / ".bench" / "optuna.journal").exists()


# --- 9. study files -------------------------------------------------------------------------------


def test_a_bad_study_file_is_named_and_the_others_still_listed(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "studies"
    shutil.copytree(studies.STUDIES_DIR, folder)
    (folder / "latin1.toml").write_bytes('description = "caf\xe9"\n'.encode("latin-1"))
    (folder / "broken.toml").write_text("[variants\n")
    monkeypatch.setattr(studies, "STUDIES_DIR", folder)

    assert "latin1.toml: not UTF-8 text" in main_error(ablation.main, ["--study", "latin1"], capsys)
    assert ablation.main(["--list"]) == 0
    listed = capsys.readouterr()
    assert "depth" in listed.out and "bn" in listed.out
    assert "latin1.toml: not UTF-8" in listed.err and "broken.toml: malformed TOML" in listed.err
    assert search.main(["--list"]) == 0
    listed = capsys.readouterr()
    assert "lr-wd" in listed.out and "optimizer" in listed.out
    assert "latin1.toml" in listed.err and "broken.toml" in listed.err


def test_a_study_without_a_smoke_budget_has_the_shared_one(tmp_path, monkeypatch, capsys):
    shared = studies.shared_budgets()["smoke"]
    assert studies.load("depth").budgets["smoke"] == shared  # depth.toml writes none
    own = studies.load("scale").budgets["smoke"]  # its own replaces the shared one whole
    assert own.settings["dataset"].startswith("synthetic-images") and "subset" not in own.settings

    folder = tmp_path / "studies"
    shutil.copytree(studies.STUDIES_DIR, folder)
    monkeypatch.setattr(studies, "STUDIES_DIR", folder)
    assert "_defaults" not in studies.names()
    (folder / studies.SHARED_FILE).write_text("[budgets.smoke]\nwidth = 9\n")
    err = main_error(ablation.main, ["--study", "depth", "--budget", "smoke"], capsys)
    assert "depth.toml: budget 'smoke' (shared: " in err and "'width' = 9.0 is out of range" in err
    (folder / studies.SHARED_FILE).write_text("[budgets.smoke\n")
    assert ablation.main(["--list"]) == 0
    assert capsys.readouterr().err.count("_defaults.toml: malformed TOML") == 1  # once, not once a study


# --- 10. a database that does not exist -----------------------------------------------------------


def test_a_missing_tracking_database_fails_in_seconds(postgres):
    url = make_url(postgres.database()).set(database="bench_no_such_db", password="Secret-9")
    started = time.monotonic()
    with pytest.raises(BenchError) as error:
        Tracker(url.render_as_string(hide_password=False))
    assert time.monotonic() - started < 15
    message = str(error.value)
    assert "bench_no_such_db" in message and "does not exist" in message
    assert "Secret-9" not in redact(message) and "\n" not in message


# --- 12. Ctrl-C while a helper starts -------------------------------------------------------------


def _ctrl_c_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_while_a_helper_imports_leaves_no_traceback(workdir):
    log = workdir / ".bench" / "logs" / "ablation-worker-1.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    parent = subprocess.Popen(
        [sys.executable, "-m", "bench.ablation", *ONE, "--epochs", "30", "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # its own process group, Ctrl-C at its default, as a terminal gives them (a
        # pytest started in the background, `cmd &`, would pass SIGINT on ignored)
        start_new_session=True,
        preexec_fn=_ctrl_c_default,
    )
    try:
        deadline = time.monotonic() + 120
        while not log.exists():
            assert parent.poll() is None and time.monotonic() < deadline, parent.stderr.read()[-2000:]
            time.sleep(0.05)
        time.sleep(0.5)  # the helper is importing torch and MLflow (several seconds)
        os.killpg(parent.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group
        parent.wait(timeout=120)
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
            parent.wait()
    text = log.read_text()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    assert parent.returncode == 130


# --- issue 25: a lost journal ---------------------------------------------------------------------


def test_a_lost_journal_closes_the_old_parent_with_a_note(workdir, capsys):
    assert ablation.main(ONE) == 0
    client = local_client(workdir)
    [old] = study_runs(client, "depth", "study")
    client.update_run(old.info.run_id, status="RUNNING")  # what a worker killed mid-study leaves
    (workdir / ".bench" / "optuna.journal").unlink()
    capsys.readouterr()

    assert ablation.main(ONE) == 0
    parents = {r.info.run_id: r for r in study_runs(client, "depth", "study")}
    [new] = [r for key, r in parents.items() if key != old.info.run_id]
    closed = parents[old.info.run_id]
    assert closed.info.status == "KILLED" and new.info.status == "FINISHED"
    assert closed.data.tags["bench.superseded_by"] == new.info.run_id
    assert "was lost" in closed.data.tags["bench.note"] and new.info.run_id in closed.data.tags["bench.note"]
    assert f"parent run {old.info.run_id} closed" in capsys.readouterr().err


def test_a_search_whose_store_was_deleted_is_filled_again(workdir):
    # In processes of their own: this one's MLflow would keep the deleted file open.
    command = [sys.executable, "-m", "bench.search", "--study", "lr-wd", "--budget", "smoke", "--trials", "3"]
    env = {**os.environ, "COLUMNS": "300"}
    first = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    (workdir / "mlflow.db").unlink()
    shutil.rmtree(workdir / "mlruns")

    again = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    trials = optuna.load_study(
        study_name="lr-wd-search-smoke",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(workdir / ".bench" / "optuna.journal"))
        ),
    ).trials
    complete = [
        t for t in trials[:3] if t.state == optuna.trial.TrialState.COMPLETE and "repeat_of" not in t.user_attrs
    ]
    assert complete and f"{len(complete)} trial(s) complete in Optuna" in again.stderr
    refills = {t.user_attrs["refill_of"]: t for t in trials[3:]}
    assert sorted(refills) == [t.number for t in complete]
    for trial in complete:  # the same value, not pruned, each in the new store
        assert refills[trial.number].state == optuna.trial.TrialState.COMPLETE
        assert refills[trial.number].value == trial.value
    client = local_client(workdir)
    children = study_runs(client, "lr-wd")
    assert sorted(r.info.run_name for r in children) == sorted(f"trial {t.number}" for t in refills.values())
    assert all(r.info.status == "FINISHED" for r in children)
    [parent] = study_runs(client, "lr-wd", "study")
    assert parent.info.status == "FINISHED" and "best.value" in parent.data.metrics
    assert client.get_model_version_by_alias("lr-wd-search-smoke", "best").run_id in {r.info.run_id for r in children}


def test_a_killed_worker_takes_its_torchrun_with_it(workdir):
    client = local_client(workdir)
    client.search_experiments()  # the store exists before the worker opens it
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.ablation",
            *ONE,
            "--gpus-per-run",
            "2",
            "--quiet",
            "--epochs",
            "40",
            "--dataset",
            "synthetic:size=6000",
            "--subset",
            "6000",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_epochs(client, "depth", 1, [worker], timeout=240, output=lambda p: "")
        group = psutil.Process(worker.pid).children(recursive=True)  # torchrun and its two ranks
        assert len(group) >= 3
        worker.kill()
        worker.wait()
        _, left = psutil.wait_procs(group, timeout=90)
        assert not left, [p.cmdline() for p in left]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)  # the old code's orphans, not to slow later tests
        worker.wait()


# --- issue 25: a store gone, a disk full: one line, and a rerun resumes ------------------------------


def ablation_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "bench.ablation", *args]


QUIET_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "300"}
EPOCHS = ["--epochs", "6", "--dataset", "synthetic:size=3000", "--subset", "3000"]


def finished_whole(client: MlflowClient, epochs: int) -> None:
    """Both runs FINISHED, each epoch logged once, the parent FINISHED: recovery was right."""
    children = study_runs(client, "depth")
    assert sorted(r.info.run_name for r in children) == ["vgg-a seed=0", "vgg-b seed=0"]
    for run in children:
        assert run.info.status == "FINISHED"
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_acc"))
        assert steps == list(range(1, epochs + 1))
    assert [r.info.status for r in study_runs(client, "depth", "study")] == ["FINISHED"]


def test_a_tracking_database_outage_is_one_line_and_a_rerun_resumes(postgres, workdir):
    uri = postgres.database()
    name = make_url(uri).database
    args = [*TWO, *EPOCHS, "--tracking-uri", uri, "--quiet"]
    client = MlflowClient(uri)
    client.search_experiments()  # the store exists before the worker opens it
    worker = subprocess.Popen(
        ablation_command(*args), env=QUIET_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for_epochs(client, "depth", 1, [worker], timeout=240)
        cursor = postgres.connection.cursor()
        cursor.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')  # the database goes away
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        _, err = worker.communicate(timeout=300)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        postgres.connection.cursor().execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    line = error_line(worker.returncode, err)
    assert "a store stopped answering mid-study" in line and name in line
    assert "run the same command again to resume" in line

    again = subprocess.run(ablation_command(*args), env=QUIET_ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    finished_whole(client, 6)


@pytest.fixture
def small_disk(workdir):
    """A 600 kB tmpfs: room for about one smoke run's checkpoints (root only)."""
    disk = workdir / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(disk)]).returncode:
        pytest.skip("mounting a small tmpfs needs root")
    yield disk
    subprocess.run(["umount", "--lazy", str(disk)], check=True)


def test_a_full_disk_is_one_line_and_a_rerun_resumes(small_disk, workdir):
    args = [*TWO, *EPOCHS, "--checkpoint-root", str(small_disk), "--quiet"]
    done = subprocess.run(ablation_command(*args), env=QUIET_ENV, capture_output=True, text=True, timeout=300)
    line = error_line(done.returncode, done.stderr)
    assert "the disk is full" in line and "No space left on device" in line
    assert "run the same command again to resume" in line

    subprocess.run(["mount", "-o", "remount,size=64m", "tmpfs", str(small_disk)], check=True)  # space freed
    again = subprocess.run(ablation_command(*args), env=QUIET_ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    finished_whole(local_client(workdir), 6)
