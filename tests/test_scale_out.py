"""Beyond one machine, for real: workers sharing an Optuna study on PostgreSQL and an MLflow tracking
server (itself on PostgreSQL, artifacts proxied to a folder it owns), a worker SIGKILLed mid-run,
the heartbeat path for a worker that went silent on another host, one-line errors, and a storage
password that appears nowhere. Skipped only where $BENCH_TEST_POSTGRES_URL is unset (never in CI)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import optuna
import pytest
import sqlalchemy
import torch
from conftest import error_line, free_port, study_runs, wait_for, wait_for_epochs
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from bench.run.launch import stop_group

PASSWORD = f"s3cr3t-{secrets.token_hex(6)}"
EPOCHS = 20  # long enough for a kill to land mid-run
ABLATION = [
    "--study",
    "depth",
    "--budget",
    "smoke",
    "--variants",
    "vgg-a,vgg-b",
    "--seeds",
    "2",
    "--epochs",
    str(EPOCHS),
]
SEARCH = ["--study", "lr-wd", "--budget", "smoke", "--trials", "4"]
WAIT_S = 420  # for a worker to finish; CI has two cores for five workers and the server


def with_password(url: str, password: str = PASSWORD) -> str:
    return make_url(url).set(password=password).render_as_string(hide_password=False)


@dataclass
class Worker:
    proc: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text()

    def poll(self) -> int | None:
        return self.proc.poll()

    def finished_ok(self) -> bool:
        return self.proc.returncode == 0


def start(module: str, args: list[str], cwd: Path, name: str) -> Worker:
    log = cwd / f"{name}.log"
    # One thread each: five workers on two cores would spin against each other. Wide lines, so a
    # URL printed by rich is never folded (a folded password would escape the checks below).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "400"}
    with open(log, "w") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=cwd,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return Worker(proc, log)


def finish(workers: list[Worker]) -> None:
    """Wait for every worker; on a timeout, kill the rest so that nothing outlives the test."""
    deadline = time.monotonic() + WAIT_S
    try:
        for worker in workers:
            worker.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for worker in workers:
            if worker.proc.poll() is None:
                worker.proc.kill()
                worker.proc.wait()


def training(client: MlflowClient, workers: list[Worker]) -> tuple[str, int]:
    """A depth run in training by one of `workers` with 2 epochs logged, and the pid of its worker."""
    run = wait_for_epochs(
        client,
        "depth",
        2,
        workers,
        WAIT_S,
        pids={w.proc.pid for w in workers},
        output=lambda worker: worker.output()[-3000:],
    )
    return run.info.run_id, int(run.data.tags["bench.pid"])


def steps(client: MlflowClient, run_id: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, "val_acc"))


def load_study(storage: str | optuna.storages.RDBStorage, prefix: str) -> optuna.Study:
    """The one Optuna study whose name starts with `prefix` (its budget label follows)."""
    if isinstance(storage, str):
        storage = optuna.storages.RDBStorage(storage)  # reading only: no heartbeat of our own
    [name] = [n for n in optuna.study.get_all_study_names(storage) if n.startswith(prefix)]
    return optuna.load_study(study_name=name, storage=storage)


# --- the MLflow tracking server -------------------------------------------------------------------


@dataclass
class Server:
    uri: str
    artifacts: Path


@pytest.fixture(scope="module")
def server(postgres, tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = root / "server.log"
    with open(log, "w") as handle:
        # Its own session: `mlflow server` runs uvicorn as a child, and both must stop at the end.
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                postgres.database(),
                "--artifacts-destination",
                str(root / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            cwd=root,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    uri = f"http://127.0.0.1:{port}"
    try:
        # A fresh database runs all of MLflow's migrations first.
        wait_for(f"{uri}/health", proc, timeout=180, output=lambda _: log.read_text()[-3000:])
        yield Server(uri, root / "artifacts")
    finally:
        stop_group(proc, grace=10)


# --- the scenario: 3 ablation workers and 2 search workers at once, one of them killed ------------


@dataclass
class Scenario:
    storage: str  # with the password
    workdir: Path
    ablation: list[Worker]
    search: list[Worker]
    killed: Worker
    killed_run: str


@pytest.fixture(scope="module")
def scenario(postgres, server, tmp_path_factory) -> Scenario:
    role = postgres.role(PASSWORD)
    storage = with_password(postgres.database(owner=role))
    # The workers' shared working directory: on one host they share the checkpoint root, so the
    # run taken over from the killed worker resumes from its last epoch.
    workdir = tmp_path_factory.mktemp("workers")
    shared = ["--storage", storage, "--tracking-uri", server.uri]
    started = time.monotonic()
    ablation = [
        start("bench.ablation", [*ABLATION, *shared, *(["--quiet"] if i else [])], workdir, f"ablation-{i}")
        for i in range(3)
    ]
    search = [start("bench.search", [*SEARCH, *shared], workdir, f"search-{i}") for i in range(2)]
    try:
        run_id, pid = training(MlflowClient(server.uri), ablation)
        os.kill(pid, signal.SIGKILL)
    finally:
        finish(ablation + search)
    killed = next(w for w in ablation if w.proc.pid == pid)
    print(f"\nscale-out scenario: {time.monotonic() - started:.1f} s for 3 ablation + 2 search workers")
    return Scenario(storage, workdir, ablation, search, killed, run_id)


def test_ablation_grid_runs_once_and_the_killed_run_is_redone(scenario, server, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    assert scenario.killed.proc.returncode == -signal.SIGKILL
    for worker in scenario.ablation:
        if worker is not scenario.killed:
            assert worker.finished_ok(), worker.output()[-3000:]

    # Optuna: each of the 2 x 2 points complete exactly once; the killed worker's trial failed and
    # its retry, a new trial of the same point, completed.
    study = load_study(scenario.storage, "depth-")
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    points = [t.user_attrs["point"] for t in complete]
    assert len(points) == len(set(points)) == 4
    [failed] = study.get_trials(states=(TrialState.FAIL,))
    assert len(study.trials) == 5
    assert failed.user_attrs["worker"].endswith(f":{scenario.killed.proc.pid}")
    [retry] = [t for t in complete if t.user_attrs["point"] == failed.user_attrs["point"]]
    assert retry.system_attrs["failed_trial"] == failed.number
    assert not retry.user_attrs["worker"].endswith(f":{scenario.killed.proc.pid}")

    # MLflow, through the server: one run per point, the killed one resumed rather than duplicated.
    client = MlflowClient(server.uri)
    runs = {r.info.run_id: r for r in study_runs(client, "depth")}
    assert {r.data.tags["bench.config_hash"] for r in runs.values()} == set(points)
    assert len(runs) == 4
    assert {t.user_attrs["mlflow_run_id"] for t in complete} == set(runs)
    assert failed.user_attrs["mlflow_run_id"] == retry.user_attrs["mlflow_run_id"] == scenario.killed_run
    for run in runs.values():
        assert run.info.status == "FINISHED"
        assert steps(client, run.info.run_id) == list(range(1, EPOCHS + 1))  # no epoch lost or repeated
        assert {"test_acc", "best_val_acc", "flops"} <= set(run.data.metrics)
        assert {a.path for a in client.list_artifacts(run.info.run_id, "plots")} == {
            "plots/learning_curves.png",
            "plots/confusion_matrix.png",
        }
    redone = runs[scenario.killed_run]
    assert "died" in redone.data.tags["bench.recovered"] and redone.data.tags["bench.resumed"] == "true"
    [parent] = study_runs(client, "depth", "study")
    assert parent.info.status == "FINISHED"

    # Artifacts went through the server to its destination, not to the workers' disk.
    png = mlflow.artifacts.download_artifacts(
        run_id=scenario.killed_run,
        artifact_path="plots/learning_curves.png",
        dst_path=str(tmp_path),
        tracking_uri=server.uri,
    )
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(server.uri)  # runs:/ URIs resolve against the global tracking URI
    try:
        model = mlflow.pytorch.load_model(f"runs:/{scenario.killed_run}/module", dst_path=str(tmp_path))
    finally:
        mlflow.set_tracking_uri(previous)
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
    assert len(list(server.artifacts.rglob("learning_curves.png"))) >= 4
    assert len(list(server.artifacts.rglob("MLmodel"))) >= 4
    assert not any((scenario.workdir / name).exists() for name in ("mlruns", "mlartifacts", "mlflow.db"))


def test_search_trials_run_once_split_between_workers(scenario, server):
    for worker in scenario.search:
        assert worker.finished_ok(), worker.output()[-3000:]
    study = load_study(scenario.storage, "lr-wd-search-")
    trials = study.trials
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    workers = {int(t.user_attrs["worker"].rsplit(":", 1)[1]) for t in trials}
    assert workers == {w.proc.pid for w in scenario.search}  # both took trials

    client = MlflowClient(server.uri)
    runs = study_runs(client, "lr-wd")
    by_trial = {int(r.data.tags["bench.trial"]): r for r in runs}
    with_runs = [t for t in trials if "repeat_of" not in t.user_attrs]
    assert len(runs) == len(by_trial) == len(with_runs)
    for trial in with_runs:
        run = by_trial[trial.number]
        assert run.info.run_id == trial.user_attrs["mlflow_run_id"]
        assert run.info.status == ("FINISHED" if trial.state == TrialState.COMPLETE else "KILLED")
        assert steps(client, run.info.run_id) == sorted(trial.intermediate_values)
    [parent] = study_runs(client, "lr-wd", "study")
    assert "search/optimization_history.png" in {a.path for a in client.list_artifacts(parent.info.run_id, "search")}


def test_storage_password_appears_nowhere(scenario, server):
    client = MlflowClient(server.uri)
    experiments = client.search_experiments(view_type=ViewType.ALL)
    runs = client.search_runs([e.experiment_id for e in experiments], run_view_type=ViewType.ALL, max_results=1000)
    assert len(runs) >= 4 + 4 + 2  # the children and parents of both studies
    for run in runs:
        recorded = json.dumps([run.info.run_name, run.data.params, run.data.tags])
        assert PASSWORD not in recorded, run.info.run_name
    storage_tags = {r.data.tags["bench.storage"] for r in runs if r.data.tags.get("bench.role") == "study"}
    assert storage_tags == {make_url(scenario.storage).render_as_string(hide_password=True)}  # user:***@

    for prefix in ("depth-", "lr-wd-search-"):
        study = load_study(scenario.storage, prefix)
        recorded = json.dumps(
            [
                study.user_attrs,
                study._storage.get_study_system_attrs(study._study_id),
                [(t.user_attrs, t.system_attrs) for t in study.trials],
            ],
            default=str,
        )
        assert PASSWORD not in recorded

    for worker in scenario.ablation + scenario.search:
        assert PASSWORD not in worker.output().replace("\n", "")
    assert "***@" in scenario.search[0].output()  # the storage is printed, redacted


def test_heartbeat_fails_a_silent_worker_on_another_host(postgres, tmp_path):
    """A worker on another machine cannot be checked by pid: its trial is failed by Optuna's heartbeat
    after the grace period, retried once, and its MLflow run resumed. Here its silence is simulated by
    moving its last heartbeat back past the grace period, rather than waiting for it."""
    role = postgres.role(PASSWORD)
    storage = with_password(postgres.database(owner=role))
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking)
    client.search_experiments()  # the store exists before the workers open it
    args = [
        "--study",
        "depth",
        "--budget",
        "smoke",
        "--variants",
        "vgg-a",
        "--epochs",
        str(EPOCHS),
        "--storage",
        storage,
        "--tracking-uri",
        tracking,
        "--quiet",
    ]

    first = start("bench.ablation", args, tmp_path, "first")
    try:
        run_id, _ = training(client, [first])
        first.proc.kill()
    finally:
        finish([first])
    rdb = optuna.storages.RDBStorage(storage)
    [trial] = load_study(rdb, "depth-").trials
    assert trial.state == TrialState.RUNNING
    rdb.set_trial_user_attr(trial._trial_id, "worker", "elsewhere:4242")
    with rdb.engine.begin() as connection:
        moved = connection.execute(
            sqlalchemy.text(
                "UPDATE trial_heartbeats SET heartbeat = heartbeat - interval '10 minutes' WHERE trial_id = :id"
            ),
            {"id": trial._trial_id},
        ).rowcount
    assert moved == 1  # the worker did beat while it trained

    second = start("bench.ablation", args, tmp_path, "second")
    finish([second])
    assert second.finished_ok(), second.output()[-3000:]
    failed, retry = load_study(storage, "depth-").trials
    assert failed.state == TrialState.FAIL and failed.user_attrs["worker"] == "elsewhere:4242"
    assert retry.state == TrialState.COMPLETE and retry.system_attrs["failed_trial"] == failed.number
    [run] = study_runs(client, "depth")
    assert run.info.run_id == run_id == retry.user_attrs["mlflow_run_id"]
    assert run.info.status == "FINISHED" and run.data.tags["bench.resumed"] == "true"
    # Marked by the resume, not by the local check of pids (which cannot see another host).
    assert run.data.tags["bench.recovered"].startswith("worker died while running")
    assert steps(client, run_id) == list(range(1, EPOCHS + 1))
    for worker in (first, second):
        assert PASSWORD not in worker.output().replace("\n", "")


def test_unreachable_storage_or_server_fails_in_one_line(postgres, tmp_path):
    role = postgres.role(PASSWORD)
    missing = with_password(postgres.url.set(username=role, database="bench_no_such_db").render_as_string())
    closed = f"http://127.0.0.1:{free_port()}"
    cases = [
        ("bench.ablation", ["--storage", missing], "cannot open Optuna storage postgresql://"),
        ("bench.search", ["--storage", missing], "cannot open Optuna storage postgresql://"),
        ("bench.ablation", ["--storage", "postgresql://postgres@127.0.0.1:1/test"], "cannot open Optuna storage"),
        (
            "bench.search",
            ["--tracking-uri", closed.replace("//", f"//bench:{PASSWORD}@")],
            "cannot reach the MLflow tracking server at http://bench:***@",
        ),
    ]
    procs = []
    for i, (module, args, _) in enumerate(cases):  # at once: each pays Python's start-up
        folder = tmp_path / str(i)
        folder.mkdir()
        study = ABLATION[:4] if module == "bench.ablation" else SEARCH[:4]
        tracking = [] if "--tracking-uri" in args else ["--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}"]
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", module, *study, *tracking, *args],
                cwd=folder,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for (module, args, fragment), proc in zip(cases, procs):
        out, err = proc.communicate(timeout=WAIT_S)
        assert fragment in error_line(proc.returncode, err), (module, args, fragment)
        assert PASSWORD not in out + err


def test_two_runs_logging_the_same_new_dataset_at_once_both_record_it(postgres):
    """The race CI once met: a worker's run inserts the dataset while another's insert of it is in
    flight. Held open here: a transaction inserts the same (experiment, name, digest) row, the run's
    log_inputs blocks on the unique key, and the commit makes its insert fail; the run records the
    dataset anyway, linked to the one row."""
    import threading

    import psycopg2

    from bench.tracking import Tracker

    url = postgres.database()
    tracker = Tracker(url)
    experiment_id = tracker.experiment_id("race")
    run_id = tracker.client.create_run(experiment_id).info.run_id
    info = {"dataset": "synthetic:classes=2", "source": "generated", "split_hash": "eb351dbe1bf3a127"}
    info |= {"n_train": 288, "n_val": 96, "n_test": 500, "split_seed": 0, "image_size": 32}

    other = psycopg2.connect(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False))
    with other.cursor() as cursor:  # the other worker's insert, not yet committed
        cursor.execute(
            "INSERT INTO datasets (dataset_uuid, experiment_id, name, digest, dataset_source_type, dataset_source)"
            " VALUES (%s, %s, %s, %s, 'local', '{}')",
            (secrets.token_hex(16), int(experiment_id), info["dataset"], info["split_hash"]),
        )
    failures: list[BaseException] = []

    def log() -> None:
        try:
            tracker.log_dataset(run_id, info)
        except BaseException as error:  # noqa: BLE001 - the test reports it
            failures.append(error)

    logging = threading.Thread(target=log)
    logging.start()
    with other.cursor() as cursor:  # until the run's insert waits on the uncommitted key
        deadline = time.monotonic() + 60
        while not _waits_on_a_lock(cursor) and time.monotonic() < deadline:
            time.sleep(0.1)
    other.commit()
    logging.join(timeout=60)
    other.close()
    assert not logging.is_alive() and failures == []
    [dataset_input] = tracker.client.get_run(run_id).inputs.dataset_inputs
    assert (dataset_input.dataset.name, dataset_input.dataset.digest) == (info["dataset"], info["split_hash"])


def _waits_on_a_lock(cursor) -> bool:
    cursor.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
    )
    return cursor.fetchone()[0] > 0
