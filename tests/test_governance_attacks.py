"""The governance gate, tried as an attacker: each test is one way to make a biased or unexplained
model pass. Every one must be refused (exit 1 or 2) and no `passed` tag may be written."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

import mlflow_xai
from mlflow_xai.cli import cli
from tests.conftest import SKLEARN_REQS, fit_logreg

EXPLAINERS = {"exact_shap": {}}
PASSING = "rules:\n  - name: shap-present\n    require_methods: [exact_shap]\n"
NO_SEX_ON_TOP = ("rules:\n  - name: no-sex-on-top\n"
                 "    forbid_top_k: {features: [sex], k: 2, method: exact_shap}\n")


def _gate(*args: str):
    result = CliRunner().invoke(cli, ["check", *args])
    return result.exit_code, result.output


def _policy(tmp_path, text: str, name: str = "policy.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _log(X, y, *, explain: bool, run=None, name: str = "model", registered=None, **options):
    """Log a fitted model (explained by autolog when ``explain``) in ``run`` or a new run."""
    import mlflow

    if explain:
        mlflow_xai.autolog(data=X, explainers=EXPLAINERS, max_rows=40, checks=[], **options)
    try:
        context = mlflow.start_run(run_id=run) if run else mlflow.start_run()
        with context as active:
            info = mlflow.sklearn.log_model(fit_logreg(X, y), name=name, input_example=X.head(2),
                                            pip_requirements=SKLEARN_REQS,
                                            registered_model_name=registered)
    finally:
        mlflow_xai.autolog(disable=True)
    return active.info.run_id, info


def _no_passed_tag(run_id: str, model_id: str | None = None) -> None:
    from mlflow import MlflowClient

    client = MlflowClient()
    assert client.get_run(run_id).data.tags.get("mlflow_xai.governance") != "passed"
    if model_id:
        assert (client.get_logged_model(model_id).tags or {}).get(
            "mlflow_xai.governance") != "passed"


def test_an_unexplained_model_cannot_borrow_the_facts_of_its_runs_other_model(
        experiment, people, tmp_path):
    X, fair, biased = people
    run_id, fair_info = _log(X, fair, explain=True, name="fair")
    _, biased_info = _log(X, biased, explain=False, run=run_id, name="biased")
    policy = _policy(tmp_path, PASSING)

    code, out = _gate("--model-uri", f"models:/{biased_info.model_id}", "--policy", policy)
    assert code == 2, out
    assert biased_info.model_id in out and fair_info.model_id in out
    code, out = _gate("--run-id", run_id, "--policy", policy)
    assert code == 2 and "holds 2 models" in out, out
    _no_passed_tag(run_id, biased_info.model_id)
    # The explained model of the same run still passes, judged by model.
    code, out = _gate("--model-uri", f"models:/{fair_info.model_id}", "--policy", policy)
    assert code == 0, out


def test_a_run_pointer_tag_cannot_lend_another_models_facts(experiment, people, tmp_path):
    from mlflow import MlflowClient

    X, fair, biased = people
    fair_run, fair_info = _log(X, fair, explain=True)
    biased_run, biased_info = _log(X, biased, explain=False)
    MlflowClient().set_logged_model_tags(biased_info.model_id, {"mlflow_xai.run_id": fair_run})
    code, out = _gate("--model-uri", f"models:/{biased_info.model_id}", "--policy",
                      _policy(tmp_path, PASSING))
    assert code == 2 and biased_info.model_id in out and fair_info.model_id in out, out
    _no_passed_tag(biased_run, biased_info.model_id)


def test_a_failed_explanation_cannot_pass_require_methods(experiment, people, tmp_path):
    from mlflow import MlflowClient

    X, fair, _ = people
    run_id, info = _log(X, fair, explain=True)
    # A later step failed (the recorder tags the failure): require_methods alone must not pass.
    MlflowClient().set_tag(run_id, "mlflow_xai.status", "failed")
    code, out = _gate("--model-uri", f"models:/{info.model_id}", "--policy",
                      _policy(tmp_path, PASSING))
    assert code == 1 and "explanation-status" in out and "failed" in out, out
    _no_passed_tag(run_id, info.model_id)


@pytest.fixture(scope="module")
def explained_fair(tracking_uri, people, tmp_path_factory):
    """One explained fair model for the policy tests (each only reads it)."""
    import mlflow

    exp_id = mlflow.create_experiment(
        "attacks-policies", artifact_location=tmp_path_factory.mktemp("a").as_uri())
    mlflow.set_experiment(experiment_id=exp_id)
    X, fair, _ = people
    return _log(X, fair, explain=True)


@pytest.mark.parametrize("text, message", [
    ("rules: []\n", "field 'rules' must be a non-empty list"),
    ("rules:\n  - name: a\n    metric: methods_ok\n    mni: 0.9\n",
     "unknown field 'mni' (did you mean 'min'?)"),
    ("rules:\n  - name: a\n    require_methods: [exact_shap]\n    severity: high\n",
     "unknown field 'severity'"),
    ("rules:\n  - name: a\n    metric: methods_ok\n    max: yes\n",
     "field 'max' must be a number, got True"),
    ("rules:\n  - name: a\n    metric: methods_ok\n    min: '1'\n",
     "field 'min' must be a number, got '1'"),
    ("rules:\n  - name: a\n    metric: seed_stabilty/exact_shap/spearman\n    min: 0.8\n",
     "no check or method produces 'seed_stabilty/exact_shap/spearman'. Did you mean "
     "'seed_stability'?"),
    ("rules:\n  - name: a\n    require_methods: [kernelshap]\n",
     "names 'kernelshap', which is not an explainer. Did you mean 'kernel_shap'?"),
    ("rules:\n  - name: a\n    forbid_top_k: {features: [sex], k: 2, method: exact_shap, "
     "kk: 1}\n", "unknown field 'forbid_top_k.kk'"),
    ("rules:\n  - name: a\n    require_methods: [exact_shap]\n  - name: a\n"
     "    require_methods: [exact_shap]\n", "rule names must be unique"),
    ("rules:\n  - name: a\n    metric: methods_ok\n    min: 1\n    min: 0\n",
     "repeats the key 'min'"),
    ("rules:\n  - name: a\n    metric: methods_ok\n    min: 2\n    max: 1\n",
     "'min' (2) is above 'max' (1)"),
])
def test_a_policy_that_cannot_be_read_exactly_exits_2(explained_fair, tmp_path, text, message):
    run_id, info = explained_fair
    code, out = _gate("--model-uri", f"models:/{info.model_id}", "--policy",
                      _policy(tmp_path, text))
    assert code == 2, out
    assert message in " ".join(out.split()), out
    _no_passed_tag(run_id, info.model_id)


@pytest.mark.parametrize("feature", ["Sex", "gender"])
def test_forbidding_a_feature_the_model_does_not_have_exits_2(experiment, people, tmp_path,
                                                              feature):
    X, _, biased = people
    run_id, info = _log(X, biased, explain=True)
    code, out = _gate("--model-uri", f"models:/{info.model_id}", "--policy", _policy(
        tmp_path, NO_SEX_ON_TOP.replace("[sex]", f"[{feature}]")))
    assert code == 2 and f"names feature '{feature}', which the model does not have" in out
    if feature == "Sex":
        assert "Did you mean 'sex'?" in out
    _no_passed_tag(run_id, info.model_id)


def test_a_hand_logged_metric_is_not_a_fact(experiment, people, tmp_path):
    import mlflow

    X, fair, _ = people
    run_id, info = _log(X, fair, explain=True)
    mlflow.MlflowClient().log_metric(run_id, "xai/check/seed_stability/exact_shap/spearman", 1.0)
    code, out = _gate("--model-uri", f"models:/{info.model_id}", "--policy", _policy(
        tmp_path, "rules:\n  - name: stable\n    metric: seed_stability/exact_shap/spearman\n"
                  "    min: 0.8\n"))
    assert code == 1 and "was not computed" in out, out
    _no_passed_tag(run_id, info.model_id)


def _forge_stability(run_id: str, tmp_path, *, fix_digest: bool) -> None:
    """Upload a stability.json claiming a check that never ran (and, with ``fix_digest``, a
    summary whose manifest and digest tags agree with it, as a careful forger would)."""
    from mlflow import MlflowClient

    from mlflow_xai.artifacts import json_text
    from mlflow_xai.provenance import sha256_bytes

    client = MlflowClient()
    root = client.get_run(run_id).info.artifact_uri
    forged = {"seed_stability": {"status": "ok", "figures": {"exact_shap/spearman": 1.0}}}
    folder = tmp_path / "forged"
    folder.mkdir(exist_ok=True)
    (folder / "stability.json").write_text(json_text(forged))
    client.log_artifact(run_id, str(folder / "stability.json"), "xai")
    if fix_digest:
        import mlflow

        summary = mlflow.artifacts.load_dict(f"{root}/xai/summary.json")
        summary["artifacts"]["sha256"]["stability.json"] = sha256_bytes(
            (folder / "stability.json").read_bytes())
        (folder / "summary.json").write_text(json_text(summary))
        client.log_artifact(run_id, str(folder / "summary.json"), "xai")
        digest = sha256_bytes((folder / "summary.json").read_bytes())
        client.set_tag(run_id, "mlflow_xai.digest", digest)
        client.set_logged_model_tags(summary["model"]["model_id"], {"mlflow_xai.digest": digest})


STABLE = ("rules:\n  - name: stable\n    metric: seed_stability/exact_shap/spearman\n"
          "    min: 0.8\n")


def test_an_edited_stability_json_is_refused(experiment, people, tmp_path):
    X, fair, _ = people
    run_id, info = _log(X, fair, explain=True)
    _forge_stability(run_id, tmp_path, fix_digest=False)
    code, out = _gate("--model-uri", f"models:/{info.model_id}", "--policy",
                      _policy(tmp_path, STABLE))
    assert code == 2 and "xai/stability.json was changed after mlflow-xai wrote it" in out, out
    _no_passed_tag(run_id, info.model_id)


def test_a_consistent_forgery_is_refused_when_explanations_are_signed(experiment, people,
                                                                      tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_XAI_SIGNING_KEY", "recorder-and-gate-secret")
    X, fair, _ = people
    run_id, info = _log(X, fair, explain=True)
    assert _gate("--model-uri", f"models:/{info.model_id}", "--policy",
                 _policy(tmp_path, PASSING, "ok.yaml"), "--no-tags")[0] == 0  # genuine: signed
    _forge_stability(run_id, tmp_path, fix_digest=True)
    code, out = _gate("--model-uri", f"models:/{info.model_id}", "--policy",
                      _policy(tmp_path, STABLE))
    assert code == 2 and "not signed with this gate's MLFLOW_XAI_SIGNING_KEY" in out, out
    _no_passed_tag(run_id, info.model_id)
    # Without the key the same forgery is consistent, which is what --recompute is for.
    monkeypatch.delenv("MLFLOW_XAI_SIGNING_KEY")
    code, out = _gate("--model-uri", f"models:/{info.model_id}", "--policy",
                      _policy(tmp_path, STABLE), "--recompute")
    assert code == 2 and "add 'data:" in out


def test_recompute_judges_the_model_not_the_server(experiment, people, tmp_path):
    """A biased model whose recorded facts were forged to look fair fails --recompute."""
    from mlflow import MlflowClient

    X, fair, biased = people
    fair_run, fair_info = _log(X, fair, explain=True)
    biased_run, biased_info = _log(X, biased, explain=False)
    # Copy the fair model's whole explanation into the biased model's run and rebind it.
    client = MlflowClient()
    local = tmp_path / "copied"
    client.download_artifacts(fair_run, "xai", str(local))
    summary = json.loads((local / "xai" / "summary.json").read_text())
    summary["model"].update(model_id=biased_info.model_id, run_id=biased_run)
    from mlflow_xai.artifacts import json_text
    from mlflow_xai.provenance import sha256_bytes

    (local / "xai" / "summary.json").write_text(json_text(summary))
    client.log_artifacts(biased_run, str(local / "xai"), "xai")
    digest = sha256_bytes((local / "xai" / "summary.json").read_bytes())
    client.set_logged_model_tags(biased_info.model_id, {"mlflow_xai.digest": digest})
    policy_text = NO_SEX_ON_TOP + "data: reference.parquet\n"
    X.assign(label=biased.to_numpy()).to_parquet(tmp_path / "reference.parquet")
    policy = _policy(tmp_path, policy_text + "targets: label\n")

    # Without a signing key the careful forgery is consistent: recorded mode is fooled...
    code, _ = _gate("--model-uri", f"models:/{biased_info.model_id}", "--policy", policy,
                    "--no-tags")
    assert code == 0
    # ...and --recompute, which trusts only the model, is not.
    code, out = _gate("--model-uri", f"models:/{biased_info.model_id}", "--policy", policy,
                      "--recompute", "--json")
    assert code == 1, out
    outcome = json.loads(out)
    assert outcome["mode"] == "recompute" and outcome["verdict"] == "failed"
    assert "sex" in outcome["rules"][0]["message"]
    _no_passed_tag(biased_run, biased_info.model_id)


def test_a_verdict_is_not_written_onto_another_models_version(experiment, people, tmp_path):
    from mlflow import MlflowClient

    X, fair, biased = people
    _, fair_info = _log(X, fair, explain=True)
    _, biased_info = _log(X, biased, explain=False, registered="attack-credit")
    code, out = _gate("--model-uri", f"models:/{fair_info.model_id}", "--policy",
                      _policy(tmp_path, PASSING), "--registered-model", "attack-credit",
                      "--model-version", "1")
    assert code == 2 and "not the judged model" in out, out
    assert MlflowClient().get_model_version("attack-credit", "1").tags.get(
        "mlflow_xai.governance") is None


def test_an_unexplained_registered_version_cannot_pass(experiment, people, tmp_path):
    X, _, biased = people
    run_id, info = _log(X, biased, explain=False, registered="attack-unexplained")
    code, out = _gate("--model-uri", "models:/attack-unexplained/1", "--policy",
                      _policy(tmp_path, PASSING))
    assert code == 2 and re.search(r"has no xai/summary\.json", out), out
    _no_passed_tag(run_id, info.model_id)


def test_a_manifest_naming_paths_outside_xai_is_refused(experiment, people, tmp_path):
    """The summary's file list is data from the run: it must not steer the gate's downloads."""
    import mlflow
    from mlflow import MlflowClient

    from mlflow_xai.artifacts import json_text
    from mlflow_xai.provenance import sha256_bytes

    X, fair, _ = people
    run_id, info = _log(X, fair, explain=True)
    client = MlflowClient()
    root = client.get_run(run_id).info.artifact_uri
    summary = mlflow.artifacts.load_dict(f"{root}/xai/summary.json")
    summary["artifacts"]["sha256"]["selection/../../../elsewhere.json"] = "0" * 64
    (tmp_path / "summary.json").write_text(json_text(summary))
    client.log_artifact(run_id, str(tmp_path / "summary.json"), "xai")
    client.set_logged_model_tags(info.model_id, {"mlflow_xai.digest": sha256_bytes(
        (tmp_path / "summary.json").read_bytes())})
    code, out = _gate("--model-uri", f"models:/{info.model_id}", "--policy",
                      _policy(tmp_path, PASSING))
    assert code == 2 and "unexpected file" in out, out
    _no_passed_tag(run_id, info.model_id)


NO_SEX_EFFECT = ("rules:\n  - name: sex-flips-nothing\n"
                 "    max_flip_rate: {feature: sex, max: 0.02}\n"
                 "  - name: sex-not-significant\n"
                 "    forbid_significant: {features: [sex], min_rows: 200}\n")


def test_end_task_rules_cannot_be_passed_on_thin_or_missing_evidence(experiment, people,
                                                                      tmp_path):
    """The author of a biased model runs the end-task checks on 40 rows, or not on sex: the
    recorded facts cannot pass; --recompute runs the checks on sex itself and fails it, and
    passes the fair model."""
    X, fair, biased = people
    runs = {}
    for name, labels, checks in (
            ("thin", biased, {"flip_test": {"features": ["sex"]},
                              "importance_test": {"features": ["sex"]}}),
            ("elsewhere", biased, {"flip_test": {"features": ["age"], "shift": {"age": 5.0}},
                                   "importance_test": {"features": ["age"]}})):
        mlflow_xai.autolog(data=X, explainers=EXPLAINERS, max_rows=40, checks=checks)
        try:
            runs[name] = _log(X, labels, explain=False)
        finally:
            mlflow_xai.autolog(disable=True)
    policy = _policy(tmp_path, NO_SEX_EFFECT)
    code, out = _gate("--run-id", runs["thin"][0], "--policy", policy, "--json")
    assert code == 1, out
    rules = {r["name"]: r for r in json.loads(out)["rules"]}
    # 40 rows: the upper bound of even a zero flip rate is above 2 %, and 40 < min_rows.
    assert rules["sex-not-significant"]["verdict"] == "fail"
    assert "flip" in rules["sex-flips-nothing"]["figure"]
    assert rules["sex-flips-nothing"]["verdict"] == "fail"
    code, out = _gate("--run-id", runs["elsewhere"][0], "--policy", policy, "--json")
    assert code == 1, out
    messages = " ".join(r["message"] for r in json.loads(out)["rules"])
    assert "did not flip 'sex'" in messages and "did not test 'sex'" in messages
    for name in runs:
        _no_passed_tag(runs[name][0], runs[name][1].model_id)

    X.assign(label=biased.to_numpy()).to_parquet(tmp_path / "reference.parquet")
    recompute = _policy(tmp_path, NO_SEX_EFFECT + "data: reference.parquet\ntargets: label\n",
                        "recompute.yaml")
    code, out = _gate("--model-uri", f"models:/{runs['thin'][1].model_id}", "--policy",
                      recompute, "--recompute", "--json", "--no-tags")
    assert code == 1, out
    rules = {r["name"]: r for r in json.loads(out)["rules"]}
    assert "the output depends on sex" in rules["sex-not-significant"]["message"]
    assert rules["sex-flips-nothing"]["value"] > 0.1
    # A fair model that does not read sex (the logistic regression of _log does, a little:
    # its fair labels are separable, and 1.7 % of its decisions flip with sex, which the
    # flip test's upper bound does not let pass).
    import mlflow
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    unaware = make_pipeline(ColumnTransformer([("scale", StandardScaler(),
                                                [c for c in X.columns if c != "sex"])]),
                            LogisticRegression(max_iter=2000)).fit(X, fair)
    with mlflow.start_run():
        fair_info = mlflow.sklearn.log_model(unaware, name="model", input_example=X.head(2),
                                             pip_requirements=SKLEARN_REQS)
    code, out = _gate("--model-uri", f"models:/{fair_info.model_id}", "--policy", recompute,
                      "--recompute", "--json", "--no-tags")
    assert code == 0, out
    rules = {r["name"]: r for r in json.loads(out)["rules"]}
    assert rules["sex-flips-nothing"]["value"] == pytest.approx(1 - 0.025 ** (1 / 300))
