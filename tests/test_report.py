"""Reports: the table against the MLflow runs it summarises, Welch's test on known cases, the
published figures, the files and their provenance, and bad input.

One small real study (depth at the smoke budget, vgg-a and vgg-b, 2 seeds) and a one-variant,
one-seed BN study beside it are trained once for the module, in a temporary folder with their own stores.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from conftest import command_error, study_runs
from mlflow.tracking import MlflowClient
from PIL import Image
from scipy import stats

from bench.errors import BenchError
from bench.report import command, published_figures, read, reference, render, variant_rows
from bench.report import stats as report_stats

SMOKE = """
[budgets.smoke]
dataset = "synthetic"
width = 0.0625
subset = 512
epochs = 2
batch_size = 64
lr = 0.02
warmup_epochs = 0.5
seeds = [0, 1]
"""
BN_STUDY = (
    'name = "bnmini"\nreference = "vgg-a-bn"\n[variants]\nvgg-a-bn = { model = "vgg-a", batch_norm = true }\n' + SMOKE
)
SEARCH_STUDY = 'name = "searchonly"\n[search]\nlr = [0.01, 0.1]\n' + SMOKE


def ablation(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.ablation",
            *args,
            "--budget",
            "smoke",
            "--tracking-uri",
            f"sqlite:///{folder}/mlflow.db",
            "--storage",
            str(folder / "optuna.journal"),
        ],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("report")
    (folder / "bnmini.toml").write_text(BN_STUDY)
    for args in (
        ("--study", "depth", "--variants", "vgg-a,vgg-b", "--seeds", "2"),
        ("--study", str(folder / "bnmini.toml"), "--seeds", "1"),
        ("--study", "depth-equal-flops", "--variants", "vgg-a,vgg-e"),
    ):
        done = ablation(folder, *args)
        assert done.returncode == 0, done.stderr[-2000:]
    return folder


def run_report(folder: Path, monkeypatch, capsys, *args: str) -> dict:
    monkeypatch.chdir(folder)
    capsys.readouterr()
    assert (
        command.main(
            [
                *args,
                "--tracking-uri",
                f"sqlite:///{folder}/mlflow.db",
                "--out",
                str(folder / "results"),
                "--format",
                "json",
            ]
        )
        == 0
    )
    return json.loads(capsys.readouterr().out)


def finished_runs(folder: Path, experiment: str) -> pd.DataFrame:
    runs = study_runs(MlflowClient(f"sqlite:///{folder}/mlflow.db"), experiment, where="attributes.status = 'FINISHED'")
    return pd.DataFrame(
        [{"variant": r.data.tags["bench.variant"], "seed": r.data.tags["bench.seed"], **r.data.metrics} for r in runs]
    ).sort_values("seed", kind="stable")


def test_table_matches_the_mlflow_runs(store, monkeypatch, capsys):
    out = run_report(store, monkeypatch, capsys, "--study", "depth")
    assert (out["budget"], out["dataset"]) == ("smoke", "synthetic")
    rows = {r["variant"]: r for r in out["variants"]}
    assert list(rows) == ["vgg-a", "vgg-b"]
    runs = finished_runs(store, "depth")
    for variant, group in runs.groupby("variant"):
        row = rows[variant]
        assert row["runs"] == len(group) == 2
        assert row["test_acc_pct"] == pytest.approx(100 * group["test_acc"].mean())
        assert row["test_acc_pct_std"] == pytest.approx(100 * group["test_acc"].std(ddof=1))
        assert row["best_val_acc_pct"] == pytest.approx(100 * group["best_val_acc"].mean())
        assert row["best_val_acc_pct_std"] == pytest.approx(100 * group["best_val_acc"].std(ddof=1))
        assert row["top1_err_pct"] == pytest.approx(100 - 100 * group["test_acc"].mean())
        assert row["params"] == group["params"].iloc[0] and row["flops"] == group["flops"].iloc[0]
        assert row["train_seconds"] == pytest.approx(group["train_seconds"].mean())
    a, b = (100 * runs.loc[runs["variant"] == v, "test_acc"].to_numpy() for v in ("vgg-a", "vgg-b"))
    assert rows["vgg-a"]["verdict"] == "reference"
    assert rows["vgg-b"]["diff_pts"] == pytest.approx(b.mean() - a.mean())
    # Both have seeds 0 and 1 (same split, same batch order): the paired test on per-seed differences.
    assert rows["vgg-b"]["analysis"] == "paired" and "paired over seeds" in rows["vgg-b"]["verdict"]
    if np.ptp(b - a):
        assert rows["vgg-b"]["p_value"] == pytest.approx(stats.ttest_rel(b, a).pvalue)
    # The paper's figures sit beside ours, labelled as other data.
    assert (rows["vgg-b"]["paper_config"], rows["vgg-b"]["paper_top1_err_pct"]) == ("B", 28.7)
    assert {p["label"] for p in out["published"]} == {"ImageNet, different data"}


def test_files_carry_their_provenance_and_are_logged_to_the_parent_run(store, monkeypatch, capsys):
    out = run_report(store, monkeypatch, capsys, "--study", "depth", "--budget", "smoke")
    stem = store / "results" / "depth-synthetic-smoke"
    md, csv, png = (Path(f"{stem}.{ext}") for ext in ("md", "csv", "png"))
    command = "python -m bench.report --study depth --budget smoke"
    text = md.read_text()
    assert text.startswith("# depth [smoke] on synthetic")
    for needle in (
        "- date: ",
        f"- command: {command}",
        "- machine: ",
        "- project commit: ",
        "- runs trained on: cpu",
        "- runs torch: ",
        "vgg-b vs vgg-a: ",
        "](depth-synthetic-smoke.png)",
    ):
        assert needle in text
    header = [line for line in csv.read_text().splitlines() if line.startswith("# ")]
    assert any(line.startswith(f"# command: {command}") for line in header)
    assert any(line.startswith("# runs trained on: cpu") for line in header)
    table = pd.read_csv(csv, comment="#")  # a row per run
    assert list(zip(table["variant"], table["seed"])) == [("vgg-a", 0), ("vgg-a", 1), ("vgg-b", 0), ("vgg-b", 1)]
    assert matplotlib.image.imread(png).shape[1] > 1000
    assert command in Image.open(png).text["Source"]

    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    (parent,) = study_runs(client, "depth", "study")
    logged = {Path(f.path).name for f in client.list_artifacts(parent.info.run_id, "report")}
    assert logged == {md.name, csv.name, png.name}

    # Each variant's convergence, in the md report and as the parent run's tags.
    table = pd.DataFrame(out["variants"]).set_index("variant")
    assert f"Convergence ({report_stats.CONVERGENCE_RULE}):" in text
    tags = client.get_run(parent.info.run_id).data.tags
    for variant in ("vgg-a", "vgg-b"):
        assert f"- {variant}: {table.loc[variant, 'convergence']}" in text
        assert tags[f"{variant}.convergence"] == table.loc[variant, "convergence"]
    failing = [v for v in ("vgg-a", "vgg-b") if table.loc[v, "converged"] == "no"]
    assert tags["bench.not_converged"] == (", ".join(failing) or "none")
    for variant in failing:
        assert tags[f"{variant}.convergence"].startswith(report_stats.NOT_CONVERGED)


def test_compare_puts_several_studies_in_one_table(store, monkeypatch, capsys):
    out = run_report(store, monkeypatch, capsys, "--compare", "depth", str(store / "bnmini.toml"))
    assert out["studies"] == ["depth", "bnmini"]
    assert [(r["study"], r["variant"], r["runs"]) for r in out["variants"]] == [
        ("depth", "vgg-a", 2),
        ("depth", "vgg-b", 2),
        ("bnmini", "vgg-a-bn", 1),
    ]
    bn = out["variants"][2]
    assert bn["verdict"] == "reference" and bn["paper_config"] is None  # the paper had no BN
    assert bn["test_acc_pct"] == pytest.approx(100 * finished_runs(store, "bnmini")["test_acc"].item())
    assert bn["test_acc_pct_std"] is None  # one seed: no spread to show
    assert (store / "results" / "compare-depth-bnmini-synthetic-smoke.md").is_file()


def test_equal_flops_study_is_labelled_and_trains_fewer_epochs_of_the_costlier_net(store, monkeypatch, capsys):
    out = run_report(store, monkeypatch, capsys, "--study", "depth-equal-flops")
    assert out["title"] == "depth-equal-flops [smoke] on synthetic at equal training FLOPs as the reference"
    rows = {r["variant"]: r for r in out["variants"]}
    assert {r["compute"] for r in rows.values()} == {"flops"}
    ratio = rows["vgg-e"]["flops"] / rows["vgg-a"]["flops"]
    assert rows["vgg-a"]["epochs_trained"] == 2
    assert rows["vgg-e"]["epochs_trained"] == pytest.approx(2 / ratio)
    text = (store / "results" / "depth-equal-flops-synthetic-smoke.md").read_text()
    assert text.startswith(f"# {out['title']}") and "Compute: equal training FLOPs" in text
    assert rows["vgg-a"]["target_val_acc_pct"] == 50  # the smoke budget's own target


def test_terminal_table_says_which_variants_did_not_converge(store, monkeypatch, capsys):
    monkeypatch.chdir(store)
    uri = ["--tracking-uri", f"sqlite:///{store}/mlflow.db", "--out", str(store / "results")]
    capsys.readouterr()
    assert command.main(["--study", "depth", "--target-val-acc", "20", *uri]) == 0
    shown = " ".join(capsys.readouterr().out.split())  # tables and verdicts on stdout; rich wraps long lines
    summary = run_report(store, monkeypatch, capsys, "--study", "depth", "--target-val-acc", "20")["variants"]
    assert "each variant against the reference" in shown
    for row in summary:
        assert row["target_val_acc_pct"] == 20
        if row["verdict"] == "reference":
            if row["converged"] == "no":
                assert " ".join(f"{row['variant']} (reference): {row['convergence']}".split()) in shown
        else:
            assert " ".join(row["verdict"].split()) in shown
            ref_converged = summary[0]["converged"]
            assert row["verdict"].endswith(report_stats.NOT_CONVERGED) == (
                row["converged"] == "no" or ref_converged == "no"
            )
    with pytest.raises(BenchError, match=r"--target-val-acc: a validation accuracy target is a percentage"):
        command.main(["--study", "depth", "--target-val-acc", "nan", *uri])


# --- statistics on cases with known answers ---------------------------------------------------------


def frame(samples: dict[str, list[float]]) -> pd.DataFrame:
    """Runs of each variant at seeds of their own (no pairs), so the two-sample test applies."""
    rows = [
        {
            "variant": v,
            "seed": 100 * k + i,
            "model": v,
            "batch_norm": False,
            "params": 1.0,
            "flops": 1.0,
            "test_acc": acc,
            "best_val_acc": acc,
            "train_seconds": 1.0,
            "images_per_s": 1.0,
        }
        for k, (v, accs) in enumerate(samples.items())
        for i, acc in enumerate(accs)
    ]
    return pd.DataFrame(rows)


def welch_by_hand(a, b, confidence=0.95):
    a, b = np.asarray(a, float), np.asarray(b, float)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    se, diff = np.sqrt(va + vb), a.mean() - b.mean()
    half = stats.t.ppf((1 + confidence) / 2, df) * se
    return diff, diff - half, diff + half, 2 * stats.t.sf(abs(diff) / se, df)


def test_welch_interval_and_p_value_on_a_known_case():
    summary = variant_rows.summarize(
        frame({"ref": [0.90, 0.92, 0.94], "worse": [0.80, 0.82, 0.84]}), reference_name="ref"
    )
    row = summary.set_index("variant").loc["worse"]
    # Equal variances and n = 3: se = sqrt(4/3 + 4/3), df = 4, t = 6.124, t(0.975, 4) = 2.7764.
    assert row["diff_pts"] == pytest.approx(-10.0)
    assert (row["ci_low_pts"], row["ci_high_pts"]) == pytest.approx((-14.5339, -5.4661), abs=1e-3)
    assert row["p_value"] == pytest.approx(0.0036022, abs=1e-6)
    assert row["verdict"] == "worse worse than ref by 10.00 points (95% CI -14.53 to -5.47, p=0.004, n=3)"


def test_welch_uses_unequal_variances_and_sizes():
    a, ref = [0.70, 0.75, 0.90, 0.95], [0.80, 0.81, 0.82]
    row = variant_rows.summarize(frame({"ref": ref, "a": a}), reference_name="ref").set_index("variant").loc["a"]
    diff, low, high, p = welch_by_hand(np.multiply(a, 100), np.multiply(ref, 100))
    assert (row["diff_pts"], row["ci_low_pts"], row["ci_high_pts"], row["p_value"]) == pytest.approx(
        (diff, low, high, p)
    )
    pooled = stats.ttest_ind(a, ref).pvalue  # Student's test would give another answer
    assert abs(pooled - p) > 0.01
    assert row["verdict"].startswith("a vs ref: no significant difference at n=4 vs 3 (")


def test_one_seed_or_no_spread_gives_no_interval():
    summary = variant_rows.summarize(
        frame({"ref": [0.90, 0.90], "single": [0.93], "flat": [0.90, 0.90]}), reference_name="ref"
    ).set_index("variant")
    assert np.isnan(summary.loc["single", "ci_low_pts"]) and np.isnan(summary.loc["single", "p_value"])
    assert summary.loc["single", "diff_pts"] == pytest.approx(3.0)
    assert "no interval can be given (one seed, n=1 vs 2)" in summary.loc["single", "verdict"]
    assert "every seed gave the same accuracy" in summary.loc["flat", "verdict"]
    headers, rows = render.display_rows(summary.reset_index())
    assert "+3.00 (no interval)" in rows[1]


# --- published figures ------------------------------------------------------------------------------


def test_published_figures_match_the_paper_and_peers():
    assert reference.paper_errors("vgg-a-lrn", False) == ("A-LRN", 29.7, 10.5)
    assert reference.paper_errors("vgg-e", False) == ("E", 27.3, 9.0)
    assert reference.paper_errors("vgg-d", True) is None and reference.paper_errors("resnet18", False) is None
    no_bn = {p.source: p.test_acc_pct for p in reference.peer_figures("vgg-d", False, "cifar10")}
    assert no_bn == {reference.CHENGYANGFU: 92.63, reference.GIUNG2: 92.23}  # kuangliu's VGG has BN
    bn = {p.source: p.test_acc_pct for p in reference.peer_figures("vgg-d", True, "cifar10")}
    assert bn == {reference.KUANGLIU: 92.64, reference.CHENGYANGFU: 93.86, reference.GIUNG2: 93.50}
    assert reference.peer_figures("vgg-d", True, "synthetic") == []

    summary = variant_rows.summarize(frame({"vgg-b": [0.9, 0.91]}))
    table = published_figures.published(summary, "cifar10")
    assert set(table["label"]) == {"ImageNet, different data", reference.CHENGYANGFU_RECIPE, reference.GIUNG2_RECIPE}
    assert all(label.startswith("CIFAR-10, their recipe") for label in table["label"][1:])
    assert table.loc[table["source"] == reference.CHENGYANGFU, "theirs"].item() == "92.79"


# --- bad input --------------------------------------------------------------------------------------


def test_unknown_study_lists_the_studies(store):
    message = command_error(
        "bench.report", "--study", "nope", "--tracking-uri", f"sqlite:///{store}/mlflow.db", cwd=store
    )
    assert "unknown study 'nope'; choose one of: " in message and "depth" in message


def test_missing_store_is_an_error_not_created(tmp_path, monkeypatch):
    assert "does not exist" in command_error(
        "bench.report", "--study", "depth", "--tracking-uri", f"sqlite:///{tmp_path}/nonexistent/x.db", cwd=tmp_path
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for uri in (f"sqlite:///{tmp_path}/x.db", str(tmp_path / "x.db"), None):  # None: sqlite:///mlflow.db here
        with pytest.raises(BenchError, match="does not exist"):
            read.open_store(uri)
    assert list(tmp_path.iterdir()) == []


def test_study_without_finished_runs_says_how_to_run_it(store):
    study = store / "unrun.toml"
    study.write_text('name = "unrun"\n[variants]\nvgg-a = { model = "vgg-a" }\n' + SMOKE)
    uri = f"sqlite:///{store}/mlflow.db"
    message = command_error("bench.report", "--study", str(study), "--tracking-uri", uri, cwd=store)
    assert (
        f"no finished runs in {uri}; run it with: python -m bench.ablation --study {study} --tracking-uri {uri}"
        in message
    )


def test_other_bad_input(store, monkeypatch):
    monkeypatch.chdir(store)
    uri = ["--tracking-uri", f"sqlite:///{store}/mlflow.db", "--out", str(store / "results")]
    with pytest.raises(
        BenchError,
        match=r"no finished runs at budget full \(it has smoke on synthetic \(4 runs\)\); "
        r"run it with: python -m bench\.ablation --study depth --budget full",
    ):
        command.main(["--study", "depth", "--budget", "full", *uri])
    with pytest.raises(BenchError, match="share no budget and dataset"):
        command.main(["--compare", "depth", str(store / "bnmini.toml"), "--dataset", "cifar10", *uri])
    (store / "searchonly.toml").write_text(SEARCH_STUDY)
    with pytest.raises(BenchError, match="has no variants to report"):
        command.main(["--study", str(store / "searchonly.toml"), *uri])
    with pytest.raises(BenchError, match="names a study twice"):
        command.main(["--compare", "depth", "depth", *uri])
    with pytest.raises(BenchError, match="say what to report"):
        command.main(uri)


# --- issue 26 item 2, issue 28 item 5 ------------------------------------------------------------------


def test_the_terminal_table_fits_100_columns_and_never_cuts_a_number(store, monkeypatch, capsys):
    summary = run_report(store, monkeypatch, capsys, "--study", "depth", "--target-val-acc", "20")["variants"]
    monkeypatch.setenv("COLUMNS", "100")
    assert (
        command.main(
            [
                "--study",
                "depth",
                "--target-val-acc",
                "20",
                "--tracking-uri",
                f"sqlite:///{store}/mlflow.db",
                "--out",
                str(store / "results"),
            ]
        )
        == 0
    )
    shown = capsys.readouterr()
    lines = shown.out.splitlines()
    assert max(map(len, lines)) <= 100 and "…" not in shown.out
    for row in summary:  # the variant and its test accuracy whole, on one line
        assert any(row["variant"] in line and f"{row['test_acc_pct']:.2f}" in line for line in lines)
    assert "not shown at 100 columns, in the .md and .csv: " in shown.err  # the rest is left to the files


def test_a_reader_recomputes_the_tests_from_the_csv_alone(store, monkeypatch, capsys):
    out = run_report(store, monkeypatch, capsys, "--study", "depth", "--budget", "smoke")
    runs = pd.read_csv(store / "results" / "depth-synthetic-smoke.csv", comment="#")
    tested = [c for c in out["comparisons"] if c["analysis"] is not None]  # vgg-d, vgg-e: no runs here
    assert [(c["variant"], c["reference"]) for c in tested] == [("vgg-b", "vgg-a")]
    for c in tested:
        x, y = (
            runs[runs["variant"] == v].set_index("seed")["test_acc_pct"].sort_index()
            for v in (c["variant"], c["reference"])
        )
        assert c["diff_pts"] == pytest.approx(x.mean() - y.mean(), abs=1e-9)
        if c["p_value"] is not None:  # smoke runs near chance may differ by the same at every seed
            result = stats.ttest_rel(x, y)
            interval = result.confidence_interval(0.95)
            assert (c["ci_low_pts"], c["ci_high_pts"], c["p_value"]) == pytest.approx(
                (interval.low, interval.high, result.pvalue), abs=1e-9
            )
    assert runs["convergence_slope"].notna().all()
    assert {"test_acc_pct", "best_val_acc_pct", "params"} <= set(runs)
