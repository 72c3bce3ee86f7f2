"""The study as a person sees it: `mlflow ui` in a real headless Chromium (Debian's chromium and
chromium-driver, driven by selenium; .ci/run installs them)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import free_port, server

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
    with server(["mlflow", "ui", "--backend-store-uri", tiny_study.uri, "--host", "127.0.0.1", "--port", str(port),
                 "--workers", "1"], f"http://127.0.0.1:{port}/health", tiny_study.root):
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
        By.XPATH, "//a[normalize-space()='tiny-cpu']/ancestor::div[@role='gridcell'][1]//button")
    expander.click()
    WebDriverWait(browser, 30).until(lambda _: "seed=" in text())
    page = text()
    for name in ("vgg-a seed=0", "vgg-a seed=1", "vgg-a-bn seed=0", "vgg-a-bn seed=1"):
        assert name in page  # ...and unfold with their variant names
    assert "fashion-mnist (" in page  # the Dataset column, with the split's digest

    child = client.search_runs([experiment.experiment_id], "attributes.run_name = 'vgg-a seed=0'")[0]
    browser.get(f"{mlflow_ui}/#/experiments/{experiment.experiment_id}/runs/{child.info.run_id}/model-metrics?{MODEL_TRAINING}")
    # The per-epoch history chart (a chart of steps is titled "<run> (<metric>)"), not only the last
    # value; the window is tall because the page draws only the charts in view.
    WebDriverWait(browser, 90).until(lambda _: "vgg-a seed=0 (val_acc)" in text())
