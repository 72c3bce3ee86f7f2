"""The study as a person sees it: `mlflow ui` in a real headless Chromium (Debian's chromium and
chromium-driver, driven by selenium; .ci/run installs them)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import free_port, server
from mlflow.tracking import MlflowClient

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# MLflow 3 opens every experiment on its GenAI view unless this is in the URL (or the
# "Model training" toggle at the top left was pressed once: the browser remembers it).
MODEL_TRAINING = "workflowType=machine_learning"


@pytest.fixture
def browser():
    if not (Path(CHROMIUM).exists() and shutil.which(DRIVER)):
        pytest.skip("apt-get install chromium chromium-driver (.ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,6000"):
        options.add_argument(flag)
    options.binary_location = CHROMIUM
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture
def mlflow_ui(tiny_study):
    port = free_port()
    with server(
        [
            "mlflow",
            "ui",
            "--backend-store-uri",
            tiny_study.uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        f"http://127.0.0.1:{port}/health",
        tiny_study.root,
    ):
        yield f"http://127.0.0.1:{port}"


def test_the_study_reads_in_the_mlflow_ui(tiny_study, mlflow_ui, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    client = MlflowClient(tiny_study.uri)
    experiment = client.get_experiment_by_name("tiny")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    text = lambda: browser.find_element(By.TAG_NAME, "body").text  # noqa: E731
    browser.get(f"{mlflow_ui}/#/experiments/{experiment.experiment_id}/runs?{MODEL_TRAINING}")
    WebDriverWait(browser, 60).until(lambda _: "tiny-cpu" in text())
    assert "seed=" not in text()  # the children are folded under their parent...
    expander = browser.find_element(
        By.XPATH, "//a[normalize-space()='tiny-cpu']/ancestor::div[@role='gridcell'][1]//button"
    )
    expander.click()
    WebDriverWait(browser, 30).until(lambda _: "seed=" in text())
    page = text()
    for name in ("vgg-a seed=0", "vgg-a seed=1", "vgg-a-bn seed=0", "vgg-a-bn seed=1"):
        assert name in page  # ...and unfold with their variant names
    assert "fashion-mnist (" in page  # the Dataset column, with the split's digest

    child = client.search_runs([experiment.experiment_id], "attributes.run_name = 'vgg-a seed=0'")[0]
    browser.get(
        f"{mlflow_ui}/#/experiments/{experiment.experiment_id}/runs/{child.info.run_id}/model-metrics?{MODEL_TRAINING}"
    )
    # The per-epoch history chart (a chart of steps is titled "<run> (<metric>)"), not only the last
    # value; the window is tall because the page draws only the charts in view.
    WebDriverWait(browser, 90).until(lambda _: "vgg-a seed=0 (val_acc)" in text())


def test_the_ui_shows_sources_datasets_models_descriptions_and_final_summaries(tiny_study, mlflow_ui, browser):
    """Issue 26, items 4 and 10, as a person sees them in the MLflow UI."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    client = MlflowClient(tiny_study.uri)
    experiment = client.get_experiment_by_name("tiny")
    text = lambda: browser.find_element(By.TAG_NAME, "body").text  # noqa: E731
    wait = lambda seconds, *wanted: WebDriverWait(browser, seconds).until(  # noqa: E731
        lambda _: all(w in text() for w in wanted)
    )
    runs = f"{mlflow_ui}/#/experiments/{experiment.experiment_id}/runs"
    browser.get(f"{runs}?{MODEL_TRAINING}")
    # The experiment's description, and the Source column (not "—"): the command that made the runs.
    wait(60, "tiny-cpu", "Group by bench.variant", "python -m bench.ablation")
    browser.find_element(
        By.XPATH, "//a[normalize-space()='tiny-cpu']/ancestor::div[@role='gridcell'][1]//button"
    ).click()
    wait(30, "vgg-a seed=0")
    # The Models column names the servable `model`, with the bare `module` behind "+1".
    models = browser.find_elements(By.XPATH, "//*[normalize-space()='model']")
    assert models and not browser.find_elements(By.XPATH, "//a[normalize-space()='module']")

    # The Dataset drawer gives the split's sizes, not the one row of its record.
    child = client.search_runs([experiment.experiment_id], "attributes.run_name = 'vgg-a seed=0'")[0]
    n_train = child.data.tags["bench.data.n_train"]
    browser.find_elements(By.XPATH, "//*[starts-with(normalize-space(), 'fashion-mnist (')]")[-1].click()
    wait(30, f"num rows: {n_train}", f"n val: {child.data.tags['bench.data.n_val']}", "n test: ")

    # A child run's page carries its description.
    browser.get(f"{runs}/{child.info.run_id}?{MODEL_TRAINING}")
    wait(60, "vgg-a (seed 0) of study")

    # The parent's per-variant summaries chart their final value (one point), not a curve over steps.
    parent = client.search_runs([experiment.experiment_id], "tags.`bench.role` = 'study'")[0]
    browser.get(f"{runs}/{parent.info.run_id}/model-metrics?{MODEL_TRAINING}")
    wait(90, "n.vgg-a", "test_acc_mean.vgg-a-bn")
    assert "tiny-cpu (n.vgg-a)" not in text()  # the title MLflow gives a chart of a metric over steps

    # The registered model and its version are described.
    browser.get(f"{mlflow_ui}/#/models/tiny-cpu")
    wait(60, "The best run of study-budget")
    version = client.get_model_version_by_alias("tiny-cpu", "best").version
    browser.get(f"{mlflow_ui}/#/models/tiny-cpu/versions/{version}")
    wait(60, "best validation accuracy")
