"""The governance gate: which model is judged, and the facts about *that* model it may trust.

Two modes:

* **recorded** (default): facts come from the ``xai/`` documents mlflow-xai wrote into the
  model's source run. They are used only if (1) ``summary.json`` names the judged model
  (``summary.model.model_id``; a run holding several models must be judged by model), (2) the
  explanation finished ``ok`` (summary status, and no ``failed`` status tag), (3) the SHA-256 of
  ``summary.json`` equals the ``mlflow_xai.digest`` tag and every document the gate reads matches
  the summary's manifest, and (4) with ``MLFLOW_XAI_SIGNING_KEY`` set, the digest carries a
  valid ``mlflow_xai.signature``. Metrics and other tags are never read as facts.
* **recompute** (``--recompute``): trusts nothing on the server but the model itself. The gate
  loads the model, explains it on the policy's reference ``data:``/``targets:`` and judges what
  it computed.

Anything that cannot be verified is a :class:`GateError` (exit 2): the gate fails closed.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow_xai import tags as tag
from mlflow_xai.errors import ConfigError, XaiError
from mlflow_xai.governance import Facts, Policy, facts_from_documents, interaction_documents
from mlflow_xai.provenance import check_manifest, load_json, sha256_bytes, signature_ok, signing_key

_MODEL_SOURCE = re.compile(r"^models:/(m-[0-9a-f]+)/?$")
#: What a selector's document may be called (the manifest must not name paths outside xai/).
_SELECTION_FILE = re.compile(r"^selection/[\w.\-]+\.json$")


class GateError(Exception):
    """Bad usage, a missing run/artifact, or facts that cannot be trusted: exit code 2."""


@dataclass
class Target:
    """The model being judged and the run that holds its explanation."""

    run_id: str
    model_id: str | None = None
    registered_name: str | None = None
    registered_version: str | None = None

    @property
    def uri(self) -> str:
        if self.model_id:
            return f"models:/{self.model_id}"
        if self.registered_name:
            return f"models:/{self.registered_name}/{self.registered_version}"
        raise GateError(f"run {self.run_id} holds no LoggedModel to load; judge a model with "
                        "--model-uri.")

    def describe(self) -> str:
        if self.registered_name:
            return (f"model version {self.registered_name}/{self.registered_version}"
                    + (f" (model {self.model_id})" if self.model_id else ""))
        return f"model {self.model_id}" if self.model_id else f"run {self.run_id}"


def resolve_target(run_id: str | None, model_uri: str | None) -> Target:
    """The judged model for ``--run-id`` / ``--model-uri``.

    The run is the one the model's ``mlflow_xai.run_id`` tag points to, else its source run.
    The tag is only a pointer (anyone can write it): :func:`recorded_facts` refuses a summary
    that does not name the judged model or does not match the model's digest.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if bool(run_id) == bool(model_uri):
        raise GateError("give exactly one of --run-id and --model-uri.")
    client = MlflowClient()
    try:
        if run_id:
            return _target_of_run(client, run_id)
        if not model_uri.startswith("models:/"):
            raise GateError(f"--model-uri must look like models:/<model_id> or "
                            f"models:/<name>/<version>, got '{model_uri}'.")
        path = model_uri[len("models:/"):].strip("/")
        if "/" in path:
            name, version = path.split("/", 1)
            mv = client.get_model_version(name, version)
            model_id = model_id_of_version(mv)
            run = _run_of_model(client, model_id) if model_id else mv.run_id
            if not run:
                raise GateError(f"model version {name}/{version} has no source run holding "
                                "explanations.")
            return Target(run, model_id, name, str(version))
        return Target(_run_of_model(client, path), path)
    except MlflowException as exc:
        import mlflow

        what = f"run '{run_id}'" if run_id else f"model '{model_uri}'"
        raise GateError(f"{what} was not found on {mlflow.get_tracking_uri()}: "
                        f"{exc.message}") from exc


def _run_of_model(client: Any, model_id: str) -> str:
    """The run holding the model's explanation: where the recorder said it put it (the tag is
    only a pointer: the summary found there must name this model and match its digest), else
    the model's source run."""
    model = client.get_logged_model(model_id)
    run_id = (model.tags or {}).get(tag.RUN_ID) or model.source_run_id
    if not run_id:
        raise GateError(f"model {model_id} has no run holding an explanation of it; use "
                        "--recompute.")
    return run_id


def model_id_of_version(mv: Any) -> str | None:
    """The LoggedModel a registered version points at. Over REST ``ModelVersion.model_id``
    comes back empty (MLflow 3.17); the version's ``source`` (``models:/m-...``) names it."""
    model_id = getattr(mv, "model_id", None)
    if model_id:
        return model_id
    match = _MODEL_SOURCE.match(str(getattr(mv, "source", None) or ""))
    return match.group(1) if match else None


def _target_of_run(client: Any, run_id: str) -> Target:
    run = client.get_run(run_id)
    models = _models_of_run(client, run)
    if len(models) > 1:
        raise GateError(f"run {run_id} holds {len(models)} models ({', '.join(models)}); say "
                        "which one to judge with --model-uri models:/<model_id>.")
    return Target(run_id, models[0] if models else None)


def _models_of_run(client: Any, run: Any) -> list[str]:
    try:
        page = client.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id = '{run.info.run_id}'", max_results=50)
    except Exception:  # a store without LoggedModels (MLflow 2 server)
        return []
    return [m.model_id for m in page]


# --------------------------------------------------------------------------- recorded facts


def recorded_facts(target: Target) -> tuple[Facts, dict[str, Any]]:
    """Verified facts about ``target`` from its run's ``xai/`` documents, and the summary."""
    from mlflow import MlflowClient

    client = MlflowClient()
    run = client.get_run(target.run_id)
    with tempfile.TemporaryDirectory(prefix="mlflow-xai-gate-") as tmp:
        summary_bytes = _download(run, "summary.json", tmp)
        if summary_bytes is None:
            raise GateError(f"run '{target.run_id}' has no xai/summary.json: explain the model "
                            "first (mlflow_xai.autolog, the xai evaluator or `mlflow-xai "
                            "explain`), or judge it with --recompute.")
        summary = _json(summary_bytes, "summary.json")
        _check_binding(target, summary)
        _check_digest(client, run, target, summary_bytes)
        documents: dict[str, Any] = {}
        for name in ("importance.json", "stability.json"):
            data = _download(run, name, tmp)
            if data is None:
                raise GateError(f"run '{target.run_id}' has no xai/{name}, which its summary "
                                "lists: the explanation was not recorded completely.")
            _verify_file(summary, name, data)
            documents[name] = _json(data, name)
        selection = {}
        for name in sorted((summary.get("artifacts") or {}).get("sha256") or {}):
            if name.startswith("selection/") and name.endswith(".json"):
                if not _SELECTION_FILE.match(name):  # the manifest is data: no path tricks
                    raise GateError(f"xai/summary.json lists an unexpected file {name[:80]!r}.")
                data = _download(run, name, tmp)
                if data is None:
                    raise GateError(f"xai/{name} is listed in the summary but missing.")
                _verify_file(summary, name, data)
                selection[Path(name).stem] = _json(data, name)
        interactions = {}
        for name, method in interaction_documents(summary).items():
            data = _download(run, name, tmp)
            if data is None:
                raise GateError(f"xai/{name} is listed in the summary but missing.")
            _verify_file(summary, name, data)
            interactions[method] = _json(data, name)
    facts = facts_from_documents(summary, documents["importance.json"],
                                 documents["stability.json"], selection, interactions)
    failed = [where for where, tags in _status_tags(client, run, target).items()
              if tags.get(tag.STATUS) == "failed"]
    if failed:
        facts.blockers.append(f"{tag.STATUS}=failed on the {' and the '.join(failed)}: a later "
                              "step of the explanation failed")
    return facts, summary


def _download(run: Any, name: str, tmp: str) -> bytes | None:
    import mlflow

    uri = f"{run.info.artifact_uri.rstrip('/')}/xai/{name}"
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)
    except Exception:
        return None
    path = Path(local)
    return path.read_bytes() if path.is_file() else None


def _json(data: bytes, name: str) -> Any:
    try:
        value = load_json(data, name)
    except ValueError as exc:
        raise GateError(str(exc)) from exc
    if not isinstance(value, dict):
        raise GateError(f"xai/{name} is not a JSON object.")
    return value


def _check_binding(target: Target, summary: dict[str, Any]) -> None:
    """The summary must describe the judged model, not another model of the same run."""
    described = summary.get("model") or {}
    named = described.get("model_id")
    if target.model_id:
        if named != target.model_id:
            raise GateError(f"the explanation in run {target.run_id} describes "
                            f"{'model ' + str(named) if named else 'no model id'}, not the "
                            f"judged model {target.model_id}: these facts are about another "
                            "model. Explain the judged model (or use --recompute).")
    elif target.registered_name:
        registered = described.get("registered_model") or {}
        if (registered.get("name"), str(registered.get("version"))) != (
                target.registered_name, target.registered_version):
            raise GateError(f"the explanation in run {target.run_id} does not name model "
                            f"version {target.registered_name}/{target.registered_version}.")
    elif named:
        raise GateError(f"the explanation in run {target.run_id} describes model {named}, but "
                        "the run holds no such model; judge it with --model-uri "
                        f"models:/{named}.")
    recorded_run = described.get("run_id")
    if recorded_run and recorded_run != target.run_id:
        raise GateError(f"xai/summary.json in run {target.run_id} says it was recorded in run "
                        f"{recorded_run}: it was copied from another run.")


def _status_tags(client: Any, run: Any, target: Target) -> dict[str, dict[str, str]]:
    out = {"run": dict(run.data.tags)}
    if target.model_id:
        try:
            out["model"] = dict(client.get_logged_model(target.model_id).tags or {})
        except Exception:
            out["model"] = {}
    if target.registered_name:
        out["model version"] = dict(client.get_model_version(
            target.registered_name, target.registered_version).tags or {})
    return out


def _check_digest(client: Any, run: Any, target: Target, summary_bytes: bytes) -> None:
    holder = "run"
    tags = dict(run.data.tags)
    if target.model_id:
        holder = f"model {target.model_id}"
        tags = dict(client.get_logged_model(target.model_id).tags or {})
    recorded = tags.get(tag.DIGEST)
    if not recorded:
        raise GateError(f"{holder} has no {tag.DIGEST} tag, so its xai/ documents cannot be "
                        "verified (recorded by an older mlflow-xai, or the tag was removed). "
                        "Explain the model again, or judge it with --recompute.")
    actual = sha256_bytes(summary_bytes)
    if actual != recorded:
        raise GateError(f"xai/summary.json of run {target.run_id} was changed after mlflow-xai "
                        f"wrote it (sha256 {actual[:12]}... but {holder} records "
                        f"{recorded[:12]}...).")
    if signing_key() is not None and not signature_ok(recorded, tags.get(tag.SIGNATURE)):
        raise GateError(f"{holder}'s explanation is not signed with this gate's "
                        "MLFLOW_XAI_SIGNING_KEY: it was not recorded by a trusted mlflow-xai "
                        "(or the keys differ). Use --recompute to judge it anyway.")


def _verify_file(summary: dict[str, Any], name: str, data: bytes) -> None:
    problem = check_manifest(summary, name, data)
    if problem:
        raise GateError(problem + ".")


# --------------------------------------------------------------------------- recompute


def recomputed_facts(target: Target, policy: Policy) -> tuple[Facts, dict[str, Any]]:
    """Load the model, explain it on the policy's reference data and return those facts."""
    from mlflow_xai.config import XaiConfig, check_methods
    from mlflow_xai.governance import facts_from_explanations, methods_named
    from mlflow_xai.pipeline import run

    if policy.data is None:
        raise ConfigError("--recompute explains the model on reference data: add 'data: "
                          "<file.parquet|file.csv>' (and 'targets: <label column>' if the "
                          "rules need labels) to the policy.")
    path = Path(policy.data)
    if not path.is_absolute() and policy.base_dir:
        path = Path(policy.base_dir) / path
    data = _read_table(path)
    options = dict(policy.explain or {})
    explainers, checks = methods_named(policy)
    options.setdefault("explainers", explainers or None)
    options.setdefault("checks", checks or [])
    options.setdefault("strict", False)
    options.setdefault("progress", False)
    if policy.targets is not None:
        if policy.targets not in data.columns:
            raise ConfigError(f"policy targets column '{policy.targets}' is not in {path}.")
        options["targets"] = policy.targets
    config = XaiConfig.from_mapping(options, where="policy 'explain'")
    check_methods(config)
    try:
        expl = run(target.uri, data, config)
    except XaiError as exc:
        raise GateError(f"--recompute could not explain {target.describe()}: {exc}") from exc
    return facts_from_explanations(expl), expl.summary


def _read_table(path: Path) -> Any:
    import pandas as pd

    if not path.exists():
        raise ConfigError(f"the policy's reference data {path} does not exist.")
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        if path.suffix == ".csv":
            return pd.read_csv(path)
    except Exception as exc:
        raise ConfigError(f"cannot read the policy's reference data {path}: "
                          f"{type(exc).__name__}: {exc}") from exc
    raise ConfigError(f"the policy's reference data must be .parquet or .csv, got {path}.")
