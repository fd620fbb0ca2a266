"""The ``mlflow-xai`` command line, in MLflow's click style."""

from __future__ import annotations

import json
import sys
from typing import Any

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mlflow-xai", prog_name="mlflow-xai")
def cli() -> None:
    """Explanations for MLflow models: attributions, importance and plots.

    \b
    Examples:
      mlflow-xai methods                       # what can explain my model?
      mlflow-xai explain --model-uri models:/m-123 --data eval.parquet --targets label
      mlflow-xai check --run-id <run id> --policy policy.yaml
    """
    import os

    # Reading a run's artifacts is a step of ours, not a download the user asked to watch.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@cli.command("methods")
@click.option("--kind", type=click.Choice(["explainer", "selector", "check"]), default=None,
              help="Only list methods of this kind.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def methods(kind: str | None, as_json: bool) -> None:
    """List every registered method: name, kind, provider package and version, what it needs
    from the model and the data it accepts.

    Methods come from packages registered under the "mlflow_xai" entry-point group; skip a
    plugin with MLFLOW_XAI_DISABLE_PLUGINS=name1,name2.
    """
    from mlflow_xai.plugins import get_registry, list_methods

    rows = list_methods(kind)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    headers = ["name", "kind", "package", "version", "needs", "data"]
    table = [[r["name"], r["kind"], r["package"], r["version"], ", ".join(r["requires"]),
              ", ".join(r["data"])] for r in rows]
    widths = [max(len(h), *(len(t[i]) for t in table)) if table else len(h)
              for i, h in enumerate(headers)]
    click.echo("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths)))
    for t in table:
        click.echo("  ".join(c.ljust(w) for c, w in zip(t, widths)))
    for name, error in get_registry().failed.items():
        click.echo(f"warning: plugin '{name}' failed to load: {error}", err=True)


@cli.command("explain")
@click.option("--model-uri", required=True,
              help="Model to explain, e.g. models:/<model_id> or runs:/<run_id>/model.")
@click.option("--data", "data_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Rows to explain: a .csv or .parquet file.")
@click.option("--targets", default=None, help="Name of the label column in --data, if any.")
@click.option("--explainer", "explainers", multiple=True,
              help="Explainer to run (repeatable). Default: every one that applies.")
@click.option("--max-rows", default=1000, show_default=True, type=click.IntRange(min=1),
              help="Explain at most this many rows (a seeded sample).")
@click.option("--background-rows", default=100, show_default=True, type=click.IntRange(min=1),
              help="Reference rows sampled from --data.")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")
@click.option("--device", default="auto", show_default=True,
              help="auto, cpu, cuda or cuda:N.")
@click.option("--run-id", default=None,
              help="Log into this run. Default: a new run in the current experiment.")
@click.option("--output-dir", default=None, type=click.Path(file_okay=False),
              help="Also write the xai/ folder here.")
@click.option("--no-log", is_flag=True, help="Do not log to MLflow (use with --output-dir).")
def explain_command(model_uri: str, data_path: str, targets: str | None,
                    explainers: tuple[str, ...], max_rows: int, background_rows: int, seed: int,
                    device: str, run_id: str | None, output_dir: str | None,
                    no_log: bool) -> None:
    """Explain a logged model on a data file and log the xai/ artifacts to a run.

    The tracking server comes from MLFLOW_TRACKING_URI, as for every MLflow command.
    """
    import pandas as pd

    from mlflow_xai import explain
    from mlflow_xai.errors import XaiError

    data = pd.read_parquet(data_path) if data_path.endswith(".parquet") else pd.read_csv(
        data_path)
    try:
        expl = explain(model_uri, data, targets=targets, explainers=list(explainers) or None,
                       max_rows=max_rows, background_rows=background_rows, seed=seed,
                       device=device, output_dir=output_dir)
    except XaiError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    for method in expl.methods:
        click.echo(f"{method}: top features {', '.join(map(str, expl.top_features(method)))}")
    if not no_log:
        logged = expl.log(run_id=run_id)
        click.echo(f"logged to run {logged} (artifacts under xai/)")


@cli.command("check")
@click.option("--run-id", default=None,
              help="Judge the explanation logged in this run (the run must hold at most one "
                   "model; otherwise use --model-uri).")
@click.option("--model-uri", default=None,
              help="Or judge a model: models:/<model_id> or models:/<name>/<version>.")
@click.option("--policy", "policy_path", required=True,
              type=click.Path(exists=True, dir_okay=False), help="Policy YAML file.")
@click.option("--recompute", is_flag=True,
              help="Trust nothing on the server: load the model, explain it on the policy's "
                   "reference 'data:' (and 'targets:') and judge what was computed here.")
@click.option("--registered-model", default=None,
              help="Also tag this registered model's --model-version with the verdict (the "
                   "version must point at the judged model).")
@click.option("--model-version", default=None, help="Version to tag (with --registered-model).")
@click.option("--no-tags", is_flag=True, help="Print the verdict only; write no tags or files.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def check_command(run_id: str | None, model_uri: str | None, policy_path: str, recompute: bool,
                  registered_model: str | None, model_version: str | None, no_tags: bool,
                  as_json: bool) -> None:
    """Governance gate: judge a model's explanation against a policy.

    \b
    Exit codes: 0 every rule passes, 1 a rule fails (or the explanation did not finish ok),
    2 bad usage, a policy that cannot be read exactly as written, or facts that cannot be
    trusted. The verdict is written as the tag mlflow_xai.governance=passed|failed on the run,
    on the LoggedModel and (with --registered-model/--model-version, or a
    models:/<name>/<version> URI) on the model version, and as xai/governance.json in the run.

    \b
    What the gate trusts (default mode): only the xai/ documents mlflow-xai wrote, and only
    when xai/summary.json names the judged model, its status is ok, its SHA-256 equals the
    model's mlflow_xai.digest tag and every document matches the summary's manifest. Metrics
    and other tags are never facts. Set MLFLOW_XAI_SIGNING_KEY (the same secret where models
    are explained) to also require an HMAC signature, so that nobody without the key can forge
    a consistent folder. --recompute trusts only the model: it explains it again here.

    \b
    Example policy:
      rules:
        - name: stable-ranking
          metric: seed_stability/kernel_shap/spearman
          min: 0.8
        - name: no-protected-attribute-on-top
          forbid_top_k: {features: [sex, age], k: 3, method: kernel_shap}
        - name: shap-present
          require_methods: [kernel_shap]
      data: reference.parquet      # only for --recompute (relative to this file)
      targets: label
    """
    from mlflow_xai.errors import ConfigError
    from mlflow_xai.gate import GateError, recomputed_facts, recorded_facts, resolve_target
    from mlflow_xai.governance import evaluate_policy, load_policy, set_governance_tags

    if (registered_model is None) != (model_version is None):
        click.echo("error: --registered-model and --model-version go together.", err=True)
        sys.exit(2)
    try:
        policy = load_policy(policy_path)
        target = resolve_target(run_id, model_uri)
        if registered_model:
            _check_version_is_target(registered_model, model_version, target)
        facts, summary = (recomputed_facts(target, policy) if recompute
                          else recorded_facts(target))
        outcome = evaluate_policy(policy, facts)
    except (GateError, ConfigError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    outcome = {"mode": "recompute" if recompute else "recorded", "run_id": target.run_id,
               "model_id": target.model_id, **outcome}
    if not no_tags:
        from mlflow import MlflowClient

        set_governance_tags(outcome["verdict"], run_id=target.run_id, model_id=target.model_id,
                            registered_model=registered_model or target.registered_name,
                            model_version=model_version or target.registered_version)
        MlflowClient().log_dict(target.run_id, outcome, "xai/governance.json")
    if as_json:
        click.echo(json.dumps(outcome, indent=2, default=str))
    else:
        _print_outcome(target.describe(), outcome)
    sys.exit(0 if outcome["verdict"] == "passed" else 1)


def _check_version_is_target(name: str, version: str, target: Any) -> None:
    """A verdict about one model must not be written onto a version of another."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from mlflow_xai.gate import GateError, _model_id_from_source

    try:
        mv = MlflowClient().get_model_version(name, version)
    except MlflowException as exc:
        raise GateError(f"model version {name}/{version} was not found: {exc.message}") from exc
    points_at = getattr(mv, "model_id", None) or _model_id_from_source(mv.source)
    same = points_at == target.model_id if target.model_id else mv.run_id == target.run_id
    if not same:
        raise GateError(f"model version {name}/{version} is model {points_at or mv.run_id}, "
                        f"not the judged {target.describe()}: its verdict would be about "
                        "another model.")


def _print_outcome(judged: str, outcome: dict) -> None:
    rows = [[r["name"], r["kind"], r["figure"],
             "-" if r["value"] is None else (f"{r['value']:.4g}" if isinstance(r["value"], float)
                                             else str(r["value"])),
             r["verdict"].upper(), r["message"]] for r in outcome["rules"]]
    headers = ["RULE", "KIND", "FIGURE", "VALUE", "VERDICT", "DETAIL"]
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
              for i, h in enumerate(headers[:-1])]
    click.echo(f"{judged} (run {outcome['run_id']}, facts: {outcome['mode']})")
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths + [0])))
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths + [0])))
    click.echo(f"governance: {outcome['verdict'].upper()}")


@cli.command("watch")
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", required=True,
              help="Tracking server to watch. Default: $MLFLOW_TRACKING_URI.")
@click.option("--experiment", "experiments", multiple=True,
              help="Experiment name or id to watch (repeatable). Default: every active one, "
                   "including experiments created later.")
@click.option("--registered-model", "registered_models", multiple=True,
              help="Also explain new versions of this registered model (repeatable); the "
                   "version gets the status and governance tags too.")
@click.option("--policy", "policy_path", default=None, type=click.Path(exists=True,
              dir_okay=False), help="Governance policy YAML applied to every explained model.")
@click.option("--config", "config_path", default=None, type=click.Path(exists=True,
              dir_okay=False),
              help="YAML: 'data' (reference .parquet/.csv, used when a model's run has no data "
                   "set), 'targets' (label column) and any explain() option (explainers, "
                   "checks, max_rows, ...).")
@click.option("--interval", default=10.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds between polls.")
@click.option("--max-backoff", default=30.0, show_default=True,
              type=click.FloatRange(min=0.1),
              help="Longest wait between retries while the server is unreachable (seconds; "
                   "waits double from 1 s).")
@click.option("--since", default=None,
              type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]),
              help="Ignore models created before this local date/time (bounds the backlog on "
                   "a first start). Default: every model.")
@click.option("--min-age", default=30.0, show_default=True, type=click.FloatRange(min=0),
              help="Explain a model only once it is this many seconds old, so that a client "
                   "running mlflow_xai.autolog has tagged it first (it is then not explained "
                   "twice). Raise it above your autolog time; 0 to explain at once.")
@click.option("--claim-timeout", default=3600.0, show_default=True,
              type=click.FloatRange(min=1),
              help="A model claimed by a watcher on another host that has not finished after "
                   "this many seconds is taken over.")
@click.option("--model-timeout", default=900.0, show_default=True,
              type=click.FloatRange(min=1),
              help="Stop explaining a model after this many seconds (it runs in a worker "
                   "process that is killed) and record it as failed; the watcher goes on.")
@click.option("--once", is_flag=True, help="Poll once, handle what is new, and exit.")
@click.option("-v", "--verbose", is_flag=True, help="Also log polls that found nothing new.")
def watch_command(tracking_uri: str, experiments: tuple[str, ...],
                  registered_models: tuple[str, ...], policy_path: str | None,
                  config_path: str | None, interval: float, max_backoff: float, since: Any,
                  min_age: float, claim_timeout: float, model_timeout: float, once: bool,
                  verbose: bool) -> None:
    """Explain every new model on a tracking server, as a long-running service.

    \b
    What it polls: every --interval seconds, the LoggedModels of the watched experiments
    (MLflow 3 models: mlflow.<flavor>.log_model) and the versions of each --registered-model.
    Each READY model at least --min-age seconds old is explained once, on a CSV/parquet data
    set logged to its run (mlflow.log_input, contexts eval/validation/test first) whose source
    is inside the run's own artifacts or an 'allowed_sources' prefix of --config, else on the
    reference 'data' of --config. Artifacts (xai/...) and metrics go to the model's source run;
    tags mlflow_xai.status (ok|failed|skipped) and, with --policy, mlflow_xai.governance go on
    the run, the LoggedModel and the model version. A model that fails or runs past
    --model-timeout gets mlflow_xai.status=failed and mlflow_xai.error; the watcher goes on.

    \b
    What it trusts: nothing an author wrote. Its state tags (mlflow_xai.watch*) are sealed
    with an HMAC key (MLFLOW_XAI_SIGNING_KEY, else ~/.cache/mlflow-xai/watch.key); unsealed
    ones are ignored. A model explained by autolog is only judged, not explained again, when
    its explanation is signed with MLFLOW_XAI_SIGNING_KEY; otherwise the watcher explains it.

    \b
    Several watchers: each model is claimed by creating the experiment
    mlflow-xai-claim/<model>/<attempt> (names are unique on the server, so exactly one
    watcher wins; the experiment is deleted at once). A restart, on this or another host,
    neither repeats nor skips a model. To redo a model, delete its mlflow_xai.watch* tags.

    \b
    Outages: while the server is unreachable the watcher logs
    "tracking server unreachable (...); retrying in Ns", backs off (1, 2, 4, ... up to
    --max-backoff s) and resumes where it left off.

    \b
    How to stop: SIGTERM or Ctrl-C stops the model being explained (its worker process is
    killed and its claim released for the next watcher) and exits 0 within seconds.

    \b
    Example:
      mlflow-xai watch --tracking-uri http://mlflow:5000 --experiment fraud \\
          --registered-model fraud-model --policy policy.yaml --config watch.yaml
    \b
      # watch.yaml
      data: reference.parquet        # optional; relative to this file
      allowed_sources: [/shared/eval-data, s3://team-bucket/eval/]
      targets: label
      explainers: {kernel_shap: {n_samples: 256}}
      max_rows: 200
    """
    import logging
    import signal
    import threading

    from mlflow_xai.errors import ConfigError
    from mlflow_xai.watch import WatchConfig, Watcher, describe, is_unreachable, short_reason

    _setup_watch_logging(verbose)
    log = logging.getLogger("mlflow_xai.watch")
    try:
        config = WatchConfig.load(config_path, policy=policy_path)
        config.options.setdefault("timeout", model_timeout)
        watcher = Watcher(tracking_uri, experiments=experiments,
                          registered_models=registered_models, config=config,
                          interval=interval, max_backoff=max_backoff,
                          claim_timeout=claim_timeout, min_age=min_age,
                          since_ms=int(since.timestamp() * 1000) if since else None)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    if once:
        try:
            handled = watcher.poll_once()
        except Exception as exc:
            if not is_unreachable(exc):
                raise
            click.echo(f"error: tracking server unreachable ({short_reason(exc)})", err=True)
            sys.exit(1)
        log.info("poll: %s", describe(handled))
        return
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if stop.is_set():  # second signal: abandon at once
            log.warning("%s again: aborting", signal.Signals(signum).name)
            raise KeyboardInterrupt
        log.info("%s: stopping (a model being explained is stopped and released)",
                 signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("watching %s: experiments %s, registered models %s, every %gs; state in tags "
             "mlflow_xai.watch on the server (owner %s)", tracking_uri,
             ", ".join(experiments) or "all", ", ".join(registered_models) or "none", interval,
             watcher.owner)
    try:
        watcher.run_forever(stop)
    except KeyboardInterrupt:
        sys.exit(130)


def _setup_watch_logging(verbose: bool) -> None:
    """Timestamped lines on stderr for our logger only (MLflow keeps its own handlers)."""
    import logging

    logger = logging.getLogger("mlflow_xai.watch")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s mlflow-xai watch: "
                                               "%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


if __name__ == "__main__":  # pragma: no cover
    cli()
