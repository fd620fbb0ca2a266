"""What a user sees in the MLflow UI, in headless Chromium: the report in the artifact view,
and the run's "Model metrics" charts.

A real ``mlflow server`` serves the UI; the run's ``xai/report.html`` opens in its artifact
viewer (an iframe). The screenshots are kept under ``.ci/artifacts/`` (see README).
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
CHARTS_SCREENSHOT = SCREENSHOT.with_name("metrics-in-mlflow-ui.png")


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


def _chart_sections(browser, url: str) -> list[tuple[str, int]]:
    """``[(section name, number of charts)]`` of a run's "Model metrics" tab, in page order."""
    from selenium.webdriver.common.by import By

    browser.get(url)

    def sections():
        found = []
        for header in browser.find_elements(
                By.CSS_SELECTOR, "[data-testid='experiment-view-compare-runs-section-header']"):
            name, count = header.text.split("\n")[:2]  # "xai.check ..." / "(21)"
            found.append((name.strip(), int(count.strip("()"))))
        return found

    _wait_for(lambda: sections() and browser.find_elements(
        By.CSS_SELECTOR, "[data-testid='experiment-view-compare-runs-card'] h4"), 90,
        "the run's metric charts")
    time.sleep(2)  # the section list settles once every metric is known
    return sections()


def test_model_metrics_come_first_and_xai_metrics_take_few_sections(server, browser, logreg,
                                                                   cancer_small, monkeypatch):
    """MLflow 3.17 charts a metric in a section named after the part of its name before the
    last '/', sorts those sections by name and puts "Model metrics" (names without '/') after
    all of them. The headline metrics have no '/': they join the model's own section, after
    ``accuracy_score`` and ``f1_score``; ``log_metrics="all"`` still makes many sections."""
    import mlflow
    from selenium.webdriver.common.by import By
    from sklearn.metrics import accuracy_score, f1_score

    X, y = cancer_small
    previous = mlflow.get_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    mlflow.set_tracking_uri(server)
    runs = {}
    try:
        experiment_id = mlflow.set_experiment("ui-metrics").experiment_id
        for mode in ("headline", "all"):
            mlflow_xai.autolog(data=X, targets=y, explainers=FAST, max_rows=40,
                               log_metrics=mode)
            try:
                with mlflow.start_run(run_name=f"logreg-{mode}") as run:
                    predicted = logreg.predict(X)
                    mlflow.log_metrics({"accuracy_score": accuracy_score(y, predicted),
                                        "f1_score": f1_score(y, predicted)})
                    mlflow.sklearn.log_model(logreg, name="model", input_example=X.head(2),
                                             pip_requirements=SKLEARN_REQS)
            finally:
                mlflow_xai.autolog(disable=True)
            runs[mode] = run.info.run_id
        logged = mlflow.MlflowClient().get_run(runs["headline"]).data.metrics
    finally:
        mlflow.set_tracking_uri(previous)
    xai = [k for k in logged if k.startswith("xai")]
    assert 15 <= len(xai) <= 30, sorted(logged)

    page = f"{server}/#/experiments/{experiment_id}/runs/{{}}/model-metrics"
    sections = _chart_sections(browser, page.format(runs["headline"]))
    titles = [h.get_attribute("title") for h in browser.find_elements(
        By.CSS_SELECTOR, "[data-testid='experiment-view-compare-runs-card'] h4")]
    CHARTS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(CHARTS_SCREENSHOT))
    xai_sections = [name for name, _ in sections if name.startswith("xai")]
    assert len(xai_sections) <= 3, sections
    assert sections[0] == ("Model metrics", 2 + len(xai)), sections
    assert titles[:2] == ["accuracy_score", "f1_score"], titles  # the model's own first
    assert all(t.startswith("xai.") for t in titles[2:]), titles

    # Every figure as a metric (the old default): ~40 sections, the model's own last.
    sections = _chart_sections(browser, page.format(runs["all"]))
    assert len([name for name, _ in sections if name.startswith("xai/")]) > 3, sections
    assert sections[-1] == ("Model metrics", 2), sections
