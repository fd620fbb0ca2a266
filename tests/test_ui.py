"""What a user sees: the report in the MLflow UI's artifact view, in headless Chromium.

A real ``mlflow server`` serves the UI; the run's ``xai/report.html`` opens in its artifact
viewer (an iframe). The screenshot is kept under ``.ci/artifacts/`` (see README).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

import mlflow_xai
from tests.conftest import FAST, SKLEARN_REQS

pytestmark = pytest.mark.server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
SCREENSHOT = Path(__file__).resolve().parents[1] / ".ci" / "artifacts" / "report-in-mlflow-ui.png"


@pytest.fixture()
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.fail("headless Chromium is needed: apt-get install -y chromium chromium-driver "
                    "(scripts/test.sh does this)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--window-size=1400,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            value = predicate()
        except Exception as exc:  # the single-page app is still rendering
            last, value = exc, None
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} ({last!r})")


def test_report_is_displayed_in_the_mlflow_ui(server, browser, logreg, cancer_small,
                                              monkeypatch):
    import mlflow
    from selenium.webdriver.common.by import By

    X, y = cancer_small
    previous = mlflow.get_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    mlflow.set_tracking_uri(server)
    try:
        experiment_id = mlflow.set_experiment("ui-report").experiment_id
        mlflow_xai.autolog(data=X, targets=y, explainers=FAST, max_rows=40)
        with mlflow.start_run(run_name="breast-cancer-logreg") as run:
            mlflow.sklearn.log_model(logreg, name="model", input_example=X.head(2),
                                     pip_requirements=SKLEARN_REQS)
    finally:
        mlflow.set_tracking_uri(previous)
    expl = mlflow_xai.explain(logreg, X, targets=y, explainers=FAST, max_rows=40, checks=[])
    top = expl.top_features("kernel_shap", 1)[0]

    url = (f"{server}/#/experiments/{experiment_id}/runs/{run.info.run_id}"
           "/artifacts/xai/report.html")
    browser.get(url)
    frame = _wait_for(lambda: browser.find_elements(By.TAG_NAME, "iframe"), 90,
                      "the artifact viewer's iframe")
    browser.switch_to.frame(frame[0])
    heading = _wait_for(lambda: browser.find_element(By.TAG_NAME, "h1").text, 60,
                        "the report's heading")
    text = browser.find_element(By.TAG_NAME, "body").text
    browser.switch_to.default_content()
    time.sleep(1)  # let the page settle so the screenshot shows the rendered report
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOT))

    assert heading.startswith("Explanation report")
    for section in ("Data and model", "Top 10 features per method", "Methods and timings"):
        assert section in text
    assert "kernel_shap" in text and top in text
    # The artifact tree around the viewer shows the other artifacts too.
    page = browser.find_element(By.TAG_NAME, "body").text
    assert "report.html" in page and "summary.json" in page
    assert SCREENSHOT.stat().st_size > 20_000
