"""Governance: policies, the `mlflow-xai check` gate, tags, MLflow's own validation, report."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import mlflow_xai
from mlflow_xai.cli import cli
from mlflow_xai.errors import ConfigError
from mlflow_xai.governance import evaluate_policy, load_policy
from tests.conftest import SKLEARN_REQS
from tests.conftest import fit_logreg as _fit

POLICY = """
rules:
  - name: stable-ranking
    metric: agreement/exact_shap__permutation_shap/rank_correlation
    min: 0.8
  - name: no-protected-attribute-on-top
    forbid_top_k: {features: [sex, age], k: 2, method: exact_shap}
  - name: shap-present
    require_methods: [exact_shap]
  - name: methods-agree
    max_disagreement: {methods: [exact_shap, permutation_shap], max: 0.3}
"""


@pytest.mark.parametrize("text, message", [
    ("rules: 3", "a 'rules' list"),
    ("rules:\n  - metric: x\n    min: 1", "rule #1: every rule needs a 'name'"),
    ("rules:\n  - name: a\n    metric: x", "rule 'a': a metric rule needs 'min' and/or 'max'"),
    ("rules:\n  - name: a\n    metric: x\n    min: high", "rule 'a': field 'min' must be a number"),
    ("rules:\n  - name: b\n    forbid_top_k: {features: [sex], k: 0, method: m}",
     "rule 'b': field 'forbid_top_k.k'"),
    ("rules:\n  - name: c\n    require_methods: kernel_shap",
     "rule 'c': field 'require_methods' must be a non-empty list"),
    ("rules:\n  - name: d\n    metric: x\n    min: 1\n    require_methods: [a]",
     "rule 'd': give exactly one of"),
    ("rules: [", "not valid YAML"),
])
def test_malformed_policies_name_the_rule_and_field(text, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_policy(text)


def test_policy_verdicts_fair_and_biased(people):
    X, fair, biased = people
    policy = load_policy(POLICY)
    for y, expected in ((fair, "passed"), (biased, "failed")):
        expl = mlflow_xai.explain(_fit(X, y), X, explainers={"exact_shap": {},
                                  "permutation_shap": {"n_samples": 200}},
                                  max_rows=60, policy=policy)
        assert expl.governance["verdict"] == expected
    failed = {r["name"]: r for r in expl.governance["rules"]}
    assert failed["no-protected-attribute-on-top"]["verdict"] == "fail"
    assert "sex" in failed["no-protected-attribute-on-top"]["message"]
    assert failed["shap-present"]["verdict"] == "pass"


def test_missing_figure_fails_with_a_reason(people):
    X, fair, _ = people
    expl = mlflow_xai.explain(_fit(X, fair), X, explainers=["exact_shap"], max_rows=20,
                              checks=[])
    outcome = evaluate_policy(load_policy(
        "rules:\n  - name: s\n    metric: seed_stability/exact_shap/spearman\n    min: 0.8\n"
        "  - name: k\n    require_methods: [kernel_shap]"), expl)
    assert outcome["verdict"] == "failed"
    assert "was not computed" in outcome["rules"][0]["message"]
    assert "missing or failed: ['kernel_shap']" in outcome["rules"][1]["message"]


def _log_model(X, y, policy=None, registered=None):
    import mlflow

    mlflow_xai.autolog(data=X, explainers={"exact_shap": {}, "permutation_shap":
                                           {"n_samples": 200}}, max_rows=60, policy=policy)
    with mlflow.start_run() as run:
        info = mlflow.sklearn.log_model(_fit(X, y), name="model", input_example=X.head(2),
                                        pip_requirements=SKLEARN_REQS,
                                        registered_model_name=registered)
    mlflow_xai.autolog(disable=True)
    return run.info.run_id, info


def test_gate_exit_codes_tags_and_governance_json(experiment, people, tmp_path):
    import mlflow

    X, fair, biased = people
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    fair_run, fair_info = _log_model(X, fair)
    biased_run, biased_info = _log_model(X, biased, registered="credit-model")

    ok = CliRunner().invoke(cli, ["check", "--run-id", fair_run, "--policy", str(policy)])
    assert ok.exit_code == 0, ok.output
    assert "governance: PASSED" in ok.output and "stable-ranking" in ok.output
    bad = CliRunner().invoke(cli, ["check", "--model-uri", "models:/credit-model/1",
                                   "--policy", str(policy)])
    assert bad.exit_code == 1, bad.output
    assert re.search(r"no-protected-attribute-on-top\s+forbid_top_k.*FAIL", bad.output)

    client = mlflow.MlflowClient()
    assert client.get_run(fair_run).data.tags["mlflow_xai.governance"] == "passed"
    assert client.get_run(biased_run).data.tags["mlflow_xai.governance"] == "failed"
    assert client.get_logged_model(biased_info.model_id).tags["mlflow_xai.governance"] == \
        "failed"
    assert client.get_model_version("credit-model", "1").tags["mlflow_xai.governance"] == \
        "failed"
    outcome = mlflow.artifacts.load_dict(
        f"{client.get_run(biased_run).info.artifact_uri}/xai/governance.json")
    assert outcome["verdict"] == "failed"

    # By LoggedModel id, as JSON.
    as_json = CliRunner().invoke(cli, ["check", "--model-uri", fair_info.model_uri, "--policy",
                                       str(policy), "--json", "--no-tags"])
    assert as_json.exit_code == 0 and json.loads(as_json.output)["run_id"] == fair_run


def test_gate_usage_errors_exit_2(experiment, people, tmp_path):
    import mlflow

    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    missing = CliRunner().invoke(cli, ["check", "--run-id", "0" * 32, "--policy", str(policy)])
    assert missing.exit_code == 2 and "was not found" in missing.output
    with mlflow.start_run() as run:
        mlflow.log_param("nothing", "explained")
    bare = CliRunner().invoke(cli, ["check", "--run-id", run.info.run_id, "--policy",
                                    str(policy)])
    assert bare.exit_code == 2 and "has no xai/summary.json" in bare.output
    neither = CliRunner().invoke(cli, ["check", "--policy", str(policy)])
    assert neither.exit_code == 2 and "exactly one of --run-id and --model-uri" in neither.output
    broken = tmp_path / "broken.yaml"
    broken.write_text("rules:\n  - name: x\n    metric: y\n")
    bad_policy = CliRunner().invoke(cli, ["check", "--run-id", run.info.run_id, "--policy",
                                          str(broken)])
    assert bad_policy.exit_code == 2 and "rule 'x'" in bad_policy.output


def test_policy_through_autolog_tags_the_run(experiment, people):
    import mlflow

    X, _, biased = people
    run_id, info = _log_model(X, biased, policy=POLICY)
    tags = mlflow.MlflowClient().get_run(run_id).data.tags
    assert tags["mlflow_xai.governance"] == "failed"
    assert mlflow.MlflowClient().get_logged_model(info.model_id).tags[
        "mlflow_xai.governance"] == "failed"


def test_our_metrics_work_with_mlflow_validate_evaluation_results(experiment, people):
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.models import MetricThreshold

    X, fair, _ = people
    model = _fit(X, fair)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(model, name="model", input_example=X.head(2),
                                        pip_requirements=SKLEARN_REQS)
        result = mlflow.models.evaluate(
            info.model_uri, X.assign(label=fair.to_numpy()), targets="label",
            model_type="classifier", evaluators=["xai"],
            evaluator_config={"xai": {"explainers": {"exact_shap": {}, "permutation_shap":
                                                     {"n_samples": 200}}, "max_rows": 40}})
    key = "xai.check.agreement.exact_shap__permutation_shap.rank_correlation"
    mlflow.validate_evaluation_results({key: MetricThreshold(threshold=0.8,
                                                             greater_is_better=True)}, result)
    with pytest.raises(MlflowException, match="rank_correlation"):
        mlflow.validate_evaluation_results({key: MetricThreshold(threshold=1.5,
                                                                 greater_is_better=True)}, result)


def test_report_escapes_user_strings_and_is_self_contained(tmp_path):
    rng = np.random.default_rng(0)
    evil = "<script>alert(1)</script>"
    X = pd.DataFrame(rng.normal(size=(40, 3)), columns=[evil, "ok & fine", "plain"])
    mlflow_xai.explain(lambda a: a @ np.array([3.0, 1.0, 0.5]), X, explainers=["exact_shap"],
                       output_dir=tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert "<script>" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "ok &amp; fine" in page
    assert not re.search(r"(src|href)\s*=\s*['\"]?(https?:)?//", page)
    assert page.count("data:image/png;base64,") >= 3
