"""Governance: a YAML policy of rules over the explanation figures, and its verdict.

Rule kinds (each rule has a ``name``):

* threshold:   ``metric: <figure>`` with ``min:`` and/or ``max:``. A figure is a key of
  ``stability.json`` (``<check>/<figure>``, e.g. ``seed_stability/kernel_shap/spearman``) or
  an xai metric name (``xai/kernel_shap/seconds``).
* forbidden features in the top k: ``forbid_top_k: {features: [...], k: 3, method: name}``.
* required methods: ``require_methods: [kernel_shap, ...]`` (each must have run successfully).
* maximum disagreement: ``max_disagreement: {methods: [a, b], max: 0.5}``: 1 - the Spearman
  correlation of the two methods' global importance (``figure:`` may name another agreement
  figure such as ``feature_agreement``, in which case disagreement is 1 - that figure).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow_xai.errors import ConfigError

RULE_KINDS = ("metric", "forbid_top_k", "require_methods", "max_disagreement")


@dataclass
class Facts:
    """What a policy is judged on: metrics/figures, per-method importance ranks, methods run."""

    metrics: dict[str, float]
    ranks: dict[str, dict[str, int]]
    methods_ok: list[str]

    def figure(self, name: str) -> float | None:
        for key in (name, f"xai/check/{name}", f"xai/{name}"):
            if key in self.metrics:
                return self.metrics[key]
        return None


def load_policy(policy: Any) -> dict[str, Any]:
    """Read and validate a policy (path to YAML, YAML text, or dict)."""
    if isinstance(policy, (str, Path)) and Path(str(policy)).suffix in (".yaml", ".yml", ".json"):
        path = Path(policy)
        if not path.exists():
            raise ConfigError(f"policy file {path} does not exist.")
        policy = path.read_text()
    if isinstance(policy, str):
        import yaml

        try:
            policy = yaml.safe_load(policy)
        except yaml.YAMLError as exc:
            raise ConfigError(f"the policy is not valid YAML: {exc}") from exc
    if not isinstance(policy, dict) or not isinstance(policy.get("rules"), list):
        raise ConfigError("a policy is a mapping with a 'rules' list, e.g. "
                          "rules: [{name: stable, metric: seed_stability/kernel_shap/spearman, "
                          "min: 0.8}]")
    for i, rule in enumerate(policy["rules"]):
        _validate_rule(rule, i)
    return policy


def _validate_rule(rule: Any, index: int) -> None:
    where = f"rule #{index + 1}"
    if not isinstance(rule, dict) or not rule.get("name"):
        raise ConfigError(f"{where}: every rule needs a 'name'.")
    where = f"rule '{rule['name']}'"
    kinds = [k for k in RULE_KINDS if k in rule]
    if len(kinds) != 1:
        raise ConfigError(f"{where}: give exactly one of {', '.join(RULE_KINDS)}; got "
                          f"{kinds or 'none'}.")
    kind = kinds[0]
    if kind == "metric":
        if not isinstance(rule["metric"], str):
            raise ConfigError(f"{where}: field 'metric' must be a figure name.")
        if "min" not in rule and "max" not in rule:
            raise ConfigError(f"{where}: a metric rule needs 'min' and/or 'max'.")
        for bound in ("min", "max"):
            if bound in rule and not isinstance(rule[bound], (int, float)):
                raise ConfigError(f"{where}: field '{bound}' must be a number, got "
                                  f"{rule[bound]!r}.")
    elif kind == "forbid_top_k":
        spec = rule["forbid_top_k"]
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: forbid_top_k must be a mapping with features, k, method.")
        if not isinstance(spec.get("features"), list) or not spec["features"]:
            raise ConfigError(f"{where}: field 'forbid_top_k.features' must be a non-empty list.")
        if not isinstance(spec.get("k"), int) or spec["k"] < 1:
            raise ConfigError(f"{where}: field 'forbid_top_k.k' must be a positive integer.")
        if not isinstance(spec.get("method"), str):
            raise ConfigError(f"{where}: field 'forbid_top_k.method' must name an explainer.")
    elif kind == "require_methods":
        if not isinstance(rule["require_methods"], list) or not rule["require_methods"]:
            raise ConfigError(f"{where}: field 'require_methods' must be a non-empty list.")
    else:
        spec = rule["max_disagreement"]
        if not isinstance(spec, dict) or not (isinstance(spec.get("methods"), list)
                                              and len(spec["methods"]) == 2):
            raise ConfigError(f"{where}: field 'max_disagreement.methods' must list two "
                              "explainers.")
        if not isinstance(spec.get("max"), (int, float)):
            raise ConfigError(f"{where}: field 'max_disagreement.max' must be a number.")


def facts_from_explanations(expl: Any) -> Facts:
    from mlflow_xai.artifacts import metrics_for

    ranks = {m: {str(f): int(r) for f, r in col.items()} for m, col in expl.ranks().items()}
    ok = [m for m, e in expl.summary["methods"].items() if e["status"] == "ok"]
    return Facts(metrics=metrics_for(expl), ranks=ranks, methods_ok=ok)


def evaluate_policy(policy: dict[str, Any], expl_or_facts: Any) -> dict[str, Any]:
    """Judge every rule; the verdict is 'passed' only when every rule passes."""
    facts = expl_or_facts if isinstance(expl_or_facts, Facts) else facts_from_explanations(
        expl_or_facts)
    outcomes = [_judge(rule, facts) for rule in policy["rules"]]
    verdict = "passed" if all(o["verdict"] == "pass" for o in outcomes) else "failed"
    return {"verdict": verdict, "rules": outcomes}


def _judge(rule: dict[str, Any], facts: Facts) -> dict[str, Any]:
    name = rule["name"]
    if "metric" in rule:
        value = facts.figure(rule["metric"])
        bound = {k: rule[k] for k in ("min", "max") if k in rule}
        if value is None:
            return _outcome(name, "metric", rule["metric"], None, bound, False,
                            f"figure '{rule['metric']}' was not computed (is the check or "
                            "method enabled?)")
        ok = ("min" not in bound or value >= bound["min"]) and (
            "max" not in bound or value <= bound["max"])
        return _outcome(name, "metric", rule["metric"], value, bound, ok,
                        _bound_text(value, bound))
    if "forbid_top_k" in rule:
        spec = rule["forbid_top_k"]
        ranks = facts.ranks.get(spec["method"])
        label = f"top {spec['k']} of {spec['method']}"
        if ranks is None:
            return _outcome(name, "forbid_top_k", label, None, spec, False,
                            f"method '{spec['method']}' did not run")
        hits = [f for f in spec["features"] if ranks.get(str(f), 10**9) <= spec["k"]]
        return _outcome(name, "forbid_top_k", label, ", ".join(hits) or "none", spec, not hits,
                        f"forbidden feature(s) {hits} in the {label}" if hits else
                        f"none of {spec['features']} in the {label}")
    if "require_methods" in rule:
        missing = [m for m in rule["require_methods"] if m not in facts.methods_ok]
        return _outcome(name, "require_methods", ", ".join(rule["require_methods"]),
                        ", ".join(missing) or "all present", {}, not missing,
                        f"missing or failed: {missing}" if missing else "all ran")
    spec = rule["max_disagreement"]
    a, b = spec["methods"]
    figure = spec.get("figure", "rank_correlation")
    value = None
    for pair in (f"{a}__{b}", f"{b}__{a}"):
        value = facts.figure(f"agreement/{pair}/{figure}")
        if value is not None:
            break
    label = f"disagreement {a} vs {b} (1 - {figure})"
    if value is None:
        return _outcome(name, "max_disagreement", label, None, {"max": spec["max"]}, False,
                        f"no agreement figure for {a} and {b} (did both run, and the agreement "
                        "check?)")
    disagreement = 1.0 - value
    return _outcome(name, "max_disagreement", label, disagreement, {"max": spec["max"]},
                    disagreement <= spec["max"], _bound_text(disagreement, {"max": spec["max"]}))


def _bound_text(value: float, bound: dict[str, float]) -> str:
    parts = []
    if "min" in bound:
        parts.append(f">= {bound['min']}")
    if "max" in bound:
        parts.append(f"<= {bound['max']}")
    return f"{value:.4g} (needs {' and '.join(parts)})"


def _outcome(name: str, kind: str, figure: str, value: Any, bound: dict, ok: bool,
             message: str) -> dict[str, Any]:
    return {"name": name, "kind": kind, "figure": figure, "value": value, "bound": bound,
            "verdict": "pass" if ok else "fail", "message": message}


def set_governance_tags(verdict: str, *, run_id: str | None = None, model_id: str | None = None,
                        registered_model: str | None = None,
                        model_version: str | None = None) -> None:
    """Write ``mlflow_xai.governance=passed|failed`` on the run, LoggedModel and model version."""
    from mlflow import MlflowClient

    client = MlflowClient()
    if run_id:
        client.set_tag(run_id, "mlflow_xai.governance", verdict)
    if model_id:
        try:
            client.set_logged_model_tags(model_id, {"mlflow_xai.governance": verdict})
        except Exception:  # not a LoggedModel id (older store): the run tag is still there
            pass
    if registered_model and model_version:
        client.set_model_version_tag(registered_model, str(model_version),
                                     "mlflow_xai.governance", verdict)


class GateError(Exception):
    """Bad usage or a missing run/artifact: the gate exits with code 2."""


def facts_from_run(run_id: str) -> tuple[Facts, dict[str, Any]]:
    """Facts from a logged run: its xai metrics, ``importance.json`` and ``summary.json``."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise GateError(f"run '{run_id}' was not found on {mlflow.get_tracking_uri()}: "
                        f"{exc.message}") from exc
    root = run.info.artifact_uri.rstrip("/") + "/xai"
    try:
        summary = mlflow.artifacts.load_dict(f"{root}/summary.json")
        importance = mlflow.artifacts.load_dict(f"{root}/importance.json")
    except Exception as exc:
        raise GateError(f"run '{run_id}' has no xai/summary.json or xai/importance.json: explain "
                        "the model first (mlflow_xai.autolog, the xai evaluator or "
                        "`mlflow-xai explain`).") from exc
    ranks = {m: {f: int(v["rank"]) for f, v in feats.items()} for m, feats in importance.items()}
    ok = [m for m, e in summary.get("methods", {}).items() if e.get("status") == "ok"]
    metrics = {k: float(v) for k, v in run.data.metrics.items()}
    return Facts(metrics=metrics, ranks=ranks, methods_ok=ok), summary


def resolve_run(run_id: str | None, model_uri: str | None) -> tuple[str, str | None,
                                                                     str | None, str | None]:
    """(run id, LoggedModel id, registered model name, version) for --run-id / --model-uri."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if bool(run_id) == bool(model_uri):
        raise GateError("give exactly one of --run-id and --model-uri.")
    if run_id:
        return run_id, None, None, None
    client = MlflowClient()
    if not model_uri.startswith("models:/"):
        raise GateError(f"--model-uri must look like models:/<model_id> or "
                        f"models:/<name>/<version>, got '{model_uri}'.")
    path = model_uri[len("models:/"):].strip("/")
    try:
        if "/" in path:
            name, version = path.split("/", 1)
            mv = client.get_model_version(name, version)
            model_id = getattr(mv, "model_id", None)
            return _run_of_model(client, model_id) if model_id else mv.run_id, model_id, name, \
                version
        return _run_of_model(client, path), path, None, None
    except MlflowException as exc:
        raise GateError(f"model '{model_uri}' was not found: {exc.message}") from exc


def _run_of_model(client: Any, model_id: str) -> str:
    model = client.get_logged_model(model_id)
    run_id = (model.tags or {}).get("mlflow_xai.run_id") or model.source_run_id
    if not run_id:
        raise GateError(f"model {model_id} has no run with explanations.")
    return run_id
