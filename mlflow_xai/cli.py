"""The ``mlflow-xai`` command line, in MLflow's click style."""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

from mlflow_xai.reachability import health_problem, safe_uri

#: Seconds a command waits for the tracking server to answer (--timeout) by default.
DEFAULT_SERVER_TIMEOUT = 10.0
_TIMEOUT_KEY = "mlflow_xai.server_timeout"


class InputError(click.ClickException):
    """Bad input: one line ``error: ...`` on stderr and exit code 2 (no usage block)."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _one_line(ctx: click.Context, exc: click.UsageError) -> InputError:
    message = " ".join(exc.format_message().split())
    if not message.endswith((".", "?", "!")):
        message += "."
    return InputError(f"{message} See '{ctx.command_path} --help'.")


class _OneLineUsage:
    """Usage mistakes (a missing option, a bad value) in one line, as every other input error."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as exc:
            raise _one_line(ctx, exc) from exc


class _Command(_OneLineUsage, click.Command):
    pass


class _Group(_OneLineUsage, click.Group):
    command_class = _Command

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            raise _one_line(ctx, exc) from exc


def _server_timeout_option(help_text: str) -> Callable[[Any], Any]:
    """``--timeout SECONDS``: how long :func:`_require_server` waits (kept in ``ctx.meta``)."""

    def store(ctx: click.Context, _param: click.Parameter, value: float) -> float:
        ctx.meta[_TIMEOUT_KEY] = value
        return value

    return click.option("--timeout", "server_timeout", type=click.FloatRange(min=0, min_open=True),
                        default=DEFAULT_SERVER_TIMEOUT, show_default=True, metavar="SECONDS",
                        expose_value=False, callback=store, help=help_text)


def _require_server(tracking_uri: str | None = None, *, exit_code: int = 2) -> None:
    """Exit at once, with one line, when the tracking server does not answer.

    MLflow retries a server that does not answer with back-off, for minutes, in silence. An
    http(s) tracking URI (default: MLflow's current one) is probed instead (GET <uri>/health)
    for at most --timeout seconds; any HTTP answer will do. MLflow's own requests of this
    process then wait at most as long, with one retry, unless MLFLOW_HTTP_REQUEST_TIMEOUT /
    MLFLOW_HTTP_REQUEST_MAX_RETRIES / MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR are set. Stores
    without a server (sqlite, file, ...) are not probed.
    """
    import os
    from urllib.parse import urlsplit

    ctx = click.get_current_context(silent=True)
    timeout = float(ctx.meta.get(_TIMEOUT_KEY, DEFAULT_SERVER_TIMEOUT) if ctx
                    else DEFAULT_SERVER_TIMEOUT)
    if tracking_uri is None:
        import mlflow

        tracking_uri = mlflow.get_tracking_uri()
    uri = str(tracking_uri)
    if urlsplit(uri).scheme.lower() not in ("http", "https"):
        return
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, math.ceil(timeout))))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    problem = health_problem(uri, timeout)
    if problem is None:
        return
    if problem.startswith("no answer"):
        reason = f"{problem}; give a slow server longer with --timeout"
    elif problem.startswith("a proxy"):
        reason = f"{problem}: is it running?"
    else:
        reason = f"{problem}: is it running, and is the URI right?"
    click.echo(f"error: tracking server {safe_uri(uri)} did not answer ({reason})", err=True)
    sys.exit(exit_code)


def _debug() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.find_root().params.get("debug"))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mlflow-xai", prog_name="mlflow-xai")
@click.option("--debug", is_flag=True, envvar="MLFLOW_XAI_DEBUG",
              help="Print the full traceback of an error, not just its one-line message "
                   "(or set MLFLOW_XAI_DEBUG=1).")
def cli(debug: bool) -> None:
    """Explanations for MLflow models: attributions, importance and plots.

    \b
    Examples:
      mlflow-xai methods                       # what can explain my model?
      mlflow-xai explain --model-uri models:/m-123 --data eval.parquet --targets label
      mlflow-xai check --run-id <run id> --policy policy.yaml

    Bad input exits with code 2 and one line, "error: ...". Commands that talk to the tracking
    server (MLFLOW_TRACKING_URI) give up after --timeout seconds when it does not answer.
    """
    import os

    # Reading a run's artifacts is a step of ours, not a download the user asked to watch.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@cli.command("methods")
@click.option("--kind", type=click.Choice(["explainer", "selector", "check"]), default=None,
              help="Only list methods of this kind.")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON instead of a table, with each method's parameters: default and "
                   "accepted values.")
def methods(kind: str | None, as_json: bool) -> None:
    """List every registered method: name, kind, provider package and version, what it needs
    from the model and the data it accepts.

    Methods come from packages registered under the "mlflow_xai" entry-point group; skip a
    plugin with MLFLOW_XAI_DISABLE_PLUGINS=name1,name2.
    """
    from mlflow_xai.plugins import get_registry, list_methods

    rows = list_methods(kind)
    if as_json:
        from mlflow_xai.base import describe_param_type

        for row in rows:
            cls = get_registry().get(row["name"]).cls
            types = cls.all_param_types()
            row["params"] = {
                name: {"default": default,
                       "accepts": describe_param_type(types[name]) if name in types else None}
                for name, default in cls.defaults.items()}
        click.echo(json.dumps(rows, indent=2, default=repr))
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


#: ``--budget`` when the planner chooses the explainers (no --explainer), as in autolog.
DEFAULT_AUTO_BUDGET_S = 30.0


class _Seconds(click.ParamType):
    """``--budget``: a positive number of seconds, or ``none`` for no budget."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float | None:
        if value is None or (isinstance(value, float) and value > 0):
            return value
        text = str(value).strip().lower()
        if text in ("none", "off"):
            return None
        try:
            seconds = float(text)
        except ValueError:
            self.fail(f"{value!r} is neither a number of seconds nor 'none'.", param, ctx)
        if not math.isfinite(seconds) or seconds <= 0:
            self.fail(f"{value!r} is not a positive number of seconds (or 'none' for no budget).",
                      param, ctx)
        return seconds


@cli.command("explain")
@click.option("--model-uri", required=True,
              help="Model to explain, e.g. models:/<model_id>, models:/<name>/<version>, "
                   "runs:/<run_id>/model or a local model directory.")
@click.option("--data", "data_path", default=None,
              type=click.Path(exists=True, dir_okay=False),
              help="Rows to explain: a .csv (or .csv.gz, .csv.zip, ...) or .parquet file with "
                   "a header and at least one row. Default: 'data' of --config.")
@click.option("--targets", default=None, help="Name of the label column in --data, if any.")
@click.option("--config", "config_path", default=None, metavar="FILE",
              type=click.Path(exists=True, dir_okay=False),
              help="Options YAML, the same file as `mlflow-xai watch --config`: 'data' "
                   "(relative to the file), 'targets' and any explain() option (explainers "
                   "with parameters, checks, max_rows, budget_s, log_metrics, ...). Flags "
                   "given on the command line override it.")
@click.option("--explainer", "explainers", multiple=True, metavar="NAME",
              help="Explainer to run (repeatable; see `mlflow-xai methods --kind explainer`). "
                   "Default (or 'auto'): the planner chooses within --budget (Tree SHAP for "
                   "trees, one Shapley estimator otherwise, permutation importance with "
                   "--targets).")
@click.option("--param", "params", multiple=True, metavar="METHOD.KEY=VALUE",
              help="A parameter of an explainer, check or selector that runs (repeatable), "
                   "e.g. kernel_shap.n_samples=256. VALUE is read as YAML: 256 an integer, 0.5 "
                   "a number, true a boolean, [a, b] a list. The method must be named with "
                   "--explainer / --checks (or in --config): the planner's choice takes none.")
@click.option("--checks", "checks_spec", default=None, metavar="NAMES|none",
              help="Checks to run, comma-separated (see `mlflow-xai methods --kind check`), "
                   "or 'none'. Default: every cheap one that applies.")
@click.option("--policy", "policy_path", default=None, metavar="FILE",
              type=click.Path(exists=True, dir_okay=False),
              help="Governance policy YAML (as for `mlflow-xai check`) judged on the "
                   "explanation: the verdict is printed and logged; exit code 1 when it fails.")
@click.option("--max-rows", default=1000, show_default=True, type=click.IntRange(min=1),
              help="Explain at most this many rows (a seeded sample).")
@click.option("--background-rows", default=100, show_default=True, type=click.IntRange(min=1),
              help="Reference rows sampled from --data.")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")
@click.option("--device", default="auto", show_default=True,
              help="auto, cpu, cuda or cuda:N.")
@click.option("--budget", default=None, type=_Seconds(), metavar="SECONDS|none",
              help="Seconds of explanation work to plan for: rows and samples are reduced to "
                   f"fit. Default: {DEFAULT_AUTO_BUDGET_S:g} without --explainer, else none.")
@click.option("--log-metrics", default="headline", show_default=True,
              type=click.Choice(["headline", "all"]),
              help="headline: at most about 30 xai/* metrics; all: every figure. The xai/ "
                   "artifacts always hold every figure.")
@click.option("--experiment", default=None, metavar="NAME",
              help="Log into a new run of this experiment (created if missing). Default: the "
                   "current experiment (MLFLOW_EXPERIMENT_NAME, else Default).")
@click.option("--run-id", default=None,
              help="Log into this run. Default: a new run (see --experiment).")
@click.option("--output-dir", default=None, type=click.Path(file_okay=False),
              help="Also write the xai/ folder here.")
@click.option("--no-log", is_flag=True, help="Do not log to MLflow (use with --output-dir).")
@_server_timeout_option("Seconds to wait for the tracking server to answer (when logging, or "
                        "loading a models:/ or runs:/ URI) before giving up with exit code 2.")
def explain_command(model_uri: str, data_path: str | None, targets: str | None,
                    config_path: str | None, explainers: tuple[str, ...],
                    params: tuple[str, ...], checks_spec: str | None, policy_path: str | None,
                    max_rows: int, background_rows: int, seed: int, device: str,
                    budget: float | None, log_metrics: str, experiment: str | None,
                    run_id: str | None, output_dir: str | None, no_log: bool) -> None:
    """Explain a logged model on a data file and log the xai/ artifacts to a run.

    The tracking server comes from MLFLOW_TRACKING_URI, as for every MLflow command. A method
    that does not apply is skipped, and one that fails is reported, while the others go on;
    the summary printed names the methods that ran with their top features, the plan, the
    policy's verdict and the run logged to.

    \b
    Examples:
      # the planner chooses the methods and sizes them to 30 s (the default)
      mlflow-xai explain --model-uri models:/m-123 --data eval.parquet --targets label
      # exactly these methods, one parameter set, no time budget
      mlflow-xai explain --model-uri models:/m-123 --data eval.parquet \\
          --explainer kernel_shap --param kernel_shap.n_samples=256 --budget none
      # checks with a parameter; every figure as a metric
      mlflow-xai explain --model-uri models:/m-123 --data eval.parquet \\
          --checks agreement,completeness --param completeness.tolerance=0.05 \\
          --log-metrics all
      # the options of a file (as for watch --config); flags win
      mlflow-xai explain --model-uri models:/m-123 --config explain.yaml --max-rows 200
      # judge the explanation, log it into an experiment (created if missing)
      mlflow-xai explain --model-uri models:/m-123 --data eval.parquet \\
          --policy policy.yaml --experiment fraud-xai
    \b
      # explain.yaml (an unknown key, method or parameter exits 2)
      data: eval.parquet               # relative to this file; --data wins
      targets: label
      explainers: {kernel_shap: {n_samples: 256}, permutation_importance: null}
      checks: [agreement, completeness]
      max_rows: 200
      budget_s: 60                     # 'budget_s: null': no budget

    \b
    Exit codes: 0 at least one explainer ran (and the --policy passed); 1 no explainer ran
    (each one skipped or failed: the reasons in one line "error: no explainer ran: ..."), the
    --policy failed, or an unexpected error (mlflow-xai --debug explain ... prints the
    traceback); 2 bad input, in one line "error: ..." (a data file that cannot be read, is
    empty or of another type, an unknown --targets column, explainer, check, --param method or
    parameter, a bad --config or --policy file, a model URI that cannot be loaded, a bad option
    value, a tracking server that does not answer within --timeout).
    """
    from mlflow_xai.errors import XaiError

    ctx = click.get_current_context()
    config, file_data = _explain_options(ctx, config_path=config_path, explainers=explainers,
                                         params=params, checks_spec=checks_spec,
                                         policy_path=policy_path, targets=targets,
                                         budget=budget)
    if no_log and experiment is not None:
        raise InputError("--experiment names where the explanation is logged: leave it out "
                         "with --no-log (or leave --no-log out).")
    data_path = data_path or file_data
    if data_path is None:
        raise InputError("Missing option '--data' (or 'data' in --config): give the rows to "
                         f"explain. See '{ctx.command_path} --help'.")
    data = _read_data(data_path, config.targets if isinstance(config.targets, str) else None)
    if not no_log or model_uri.startswith(("models:/", "runs:/")):
        _require_server()
    if experiment is not None:
        _check_experiment(experiment, run_id)
    try:
        from mlflow_xai.pipeline import run

        model = _load_model(model_uri, config.device)
        expl = run(model, data, config)
    except click.ClickException:
        raise
    except XaiError as exc:
        _input_error(_short(exc))
    except Exception as exc:  # noqa: BLE001 - one line (exit 1), or the traceback with --debug
        _unexpected(exc)
    nothing = _nothing_ran(expl, config)
    if nothing is not None:
        click.echo(f"error: {nothing}", err=True)
        sys.exit(1)
    _print_summary(expl)
    if output_dir is not None:
        from mlflow_xai.artifacts import write_artifacts

        try:
            write_artifacts(expl, output_dir)
        except Exception as exc:  # noqa: BLE001 - as above
            _unexpected(exc, doing=f"writing {output_dir}")
        click.echo(f"wrote the xai/ folder to {output_dir}")
    if not no_log:
        logged, experiment_name = _log_explanation(expl, run_id, experiment)
        where = f" in experiment '{experiment_name}'" if experiment_name else ""
        click.echo(f"logged to run {logged}{where} (artifacts under xai/)")
    elif output_dir is None:
        click.echo("not logged (--no-log)")
    sys.exit(1 if (expl.governance or {}).get("verdict") == "failed" else 0)


def _explain_options(ctx: click.Context, *, config_path: str | None,
                     explainers: tuple[str, ...], params: tuple[str, ...],
                     checks_spec: str | None, policy_path: str | None, targets: str | None,
                     budget: float | None) -> tuple[Any, str | None]:
    """The validated XaiConfig of ``explain``: CLI defaults, then --config, then the flags given
    on the command line, then --param; and the 'data' of --config (or None)."""
    from click.core import ParameterSource

    from mlflow_xai.config import AUTO
    from mlflow_xai.config_file import load_config_file, validate_options
    from mlflow_xai.errors import ConfigError

    def given(name: str) -> bool:
        return ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE

    try:
        loaded = load_config_file(config_path, label="config") if config_path else None
    except ConfigError as exc:
        message = _short(exc, 600)
        _input_error(message if str(config_path) in message else
                     f"--config {config_path}: {message}")
    options: dict[str, Any] = {"explainers": AUTO, "strict": False}  # as autolog and watch
    options.update(loaded.file_options if loaded else {})
    if explainers:
        names = list(dict.fromkeys(explainers))
        options["explainers"] = AUTO if names == [AUTO] else _keep_params(
            names, options.get("explainers"))
    if checks_spec is not None:
        names = [] if checks_spec.strip().lower() == "none" else [
            c.strip() for c in checks_spec.split(",") if c.strip()]
        options["checks"] = _keep_params(list(dict.fromkeys(names)), options.get("checks"))
    for name in ("max_rows", "background_rows", "seed", "device", "log_metrics"):
        if given(name):
            options[name] = ctx.params[name]
    if targets is not None:
        options["targets"] = targets
    if policy_path is not None:
        options["policy"] = policy_path
    if given("budget"):
        options["budget_s"] = budget
    elif "budget_s" not in options and options.get("explainers") in (AUTO, None):
        options["budget_s"] = DEFAULT_AUTO_BUDGET_S
    _apply_params(options, params)
    try:
        config = validate_options(options, where="option")
    except ConfigError as exc:
        _input_error(_short(exc, 600))
    return config, loaded.data_path if loaded else None


def _keep_params(names: list[str], previous: Any) -> list[str] | dict[str, Any]:
    """The methods named on the command line, with the parameters --config gave them."""
    if isinstance(previous, dict):
        return {name: previous.get(name) for name in names}
    return names


#: --param METHOD's kind -> the option that lists the methods of that kind.
_KIND_OPTION = {"explainer": "explainers", "check": "checks", "selector": "selectors"}
_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def parse_param(spec: str) -> tuple[str, str, Any]:
    """``METHOD.KEY=VALUE`` -> (method, key, value); VALUE is read as a YAML scalar or list
    (``256`` an int, ``0.5`` and ``1e-3`` floats, ``true`` a bool, ``[a, b]`` a list)."""
    import yaml

    target, equals, text = spec.partition("=")
    method, dot, key = target.strip().partition(".")
    if not equals or not dot or not method or not key.strip():
        raise InputError(f"--param {spec!r} is not METHOD.KEY=VALUE, e.g. "
                         "kernel_shap.n_samples=256.")
    text = text.strip()
    if _SCIENTIFIC.fullmatch(text):  # YAML 1.1 reads 1e-3 as a string
        return method, key.strip(), float(text)
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise InputError(f"--param {spec}: VALUE {text!r} is not valid YAML ({problem}); "
                         "quote a string, e.g. key='a: b'.") from exc
    return method, key.strip(), value


def _apply_params(options: dict[str, Any], specs: tuple[str, ...]) -> None:
    """Each --param into the parameters of its method, which must be one that runs."""
    if not specs:
        return
    import difflib

    from mlflow_xai.plugins import get_registry

    registry = get_registry()
    for spec in specs:
        method, key, value = parse_param(spec)
        names = registry.names()
        if method not in names:
            close = difflib.get_close_matches(method, names, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise InputError(f"--param {spec}: unknown method '{method}'.{hint} "
                             "`mlflow-xai methods` lists them.")
        info = registry.get(method)
        option = _KIND_OPTION.get(info.kind)
        methods = _method_dict(options.get(option)) if option else None
        if methods is None or method not in methods:
            raise InputError(_not_requested(spec, method, info.kind, methods))
        defaults = info.cls.defaults
        if key not in defaults:
            close = difflib.get_close_matches(key, list(defaults), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise InputError(f"--param {spec}: {info.kind} {method} has no parameter '{key}'."
                             f"{hint} Its parameters: {', '.join(sorted(defaults)) or '(none)'}.")
        methods[method] = {**methods[method], key: value}
        options[option] = methods


def _method_dict(spec: Any) -> dict[str, dict[str, Any]] | None:
    """Methods named explicitly (name -> params, copied); None when the choice is left to the
    planner or the defaults."""
    from mlflow_xai.config import AUTO

    if spec is None or spec == AUTO:
        return None
    if isinstance(spec, str):
        spec = [s.strip() for s in spec.split(",") if s.strip()]
    if isinstance(spec, dict):
        return {str(name): dict(p) if isinstance(p, dict) else {} for name, p in spec.items()}
    return {str(name): {} for name in spec}


def _not_requested(spec: str, method: str, kind: str,
                   methods: dict[str, dict[str, Any]] | None) -> str:
    how = {"explainer": f"add --explainer {method}",
           "check": f"add it to --checks ({', '.join([*(methods or {}), method])})",
           "selector": "list it under 'selectors' in --config"}.get(kind, "name it in --config")
    if methods is None:
        why = ("no --explainer was given, so the planner chooses the explainers and their "
               "parameters" if kind == "explainer" else
               f"the {kind}s are not named, so the defaults run" if kind == "check" else
               f"no {kind}s run")
    else:
        why = f"the {kind}s to run are {', '.join(methods) or 'none'}"
    return (f"--param {spec}: {kind} {method} does not run ({why}); {how} to set its "
            "parameters.")


def _check_experiment(name: str, run_id: str | None) -> None:
    """--experiment must not be deleted and must hold --run-id when both are given."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        client = MlflowClient()
        found = client.get_experiment_by_name(name)
        if found is not None and found.lifecycle_stage == "deleted":
            raise InputError(f"--experiment '{name}' is deleted: restore it (mlflow experiments "
                             f"restore --experiment-id {found.experiment_id}) or give another "
                             "name.")
        if run_id is not None:
            try:
                run_experiment = client.get_run(run_id).info.experiment_id
            except MlflowException as exc:
                raise InputError(f"--run-id {run_id} was not found ({_short(exc.message, 200)})."
                                 ) from exc
            if found is None or run_experiment != found.experiment_id:
                other = client.get_experiment(run_experiment).name
                raise InputError(f"--run-id {run_id} is in experiment '{other}', not "
                                 f"--experiment '{name}': give one of them.")
    except click.ClickException:
        raise
    except Exception as exc:  # noqa: BLE001 - as in explain_command
        _unexpected(exc, doing="logging")


def _log_explanation(expl: Any, run_id: str | None, experiment: str | None
                     ) -> tuple[str, str | None]:
    """Record into --run-id, a new run of --experiment, or the active/new run as before:
    (run id, experiment name)."""
    import mlflow
    from mlflow import MlflowClient

    from mlflow_xai.recording import Destination, record

    started = False
    try:
        if experiment is not None and run_id is None:
            client = MlflowClient()
            found = client.get_experiment_by_name(experiment)
            experiment_id = (found.experiment_id if found is not None
                             else client.create_experiment(experiment))
            run_id = mlflow.start_run(experiment_id=experiment_id).info.run_id
            started = True
        logged = record(expl, Destination(run_id, expl.model_id, source="cli"))
    except Exception as exc:  # noqa: BLE001 - one line (exit 1 or 2), or the traceback
        _unexpected(exc, doing="logging")
    finally:
        if started:
            mlflow.end_run()
    if experiment is not None:
        return logged, experiment
    try:
        client = MlflowClient()
        return logged, client.get_experiment(client.get_run(logged).info.experiment_id).name
    except Exception:  # noqa: BLE001 - the name is only for the message
        return logged, None


def _nothing_ran(expl: Any, config: Any) -> str | None:
    """Why no explainer ran, in one line, or None when one did (or none was asked for)."""
    if isinstance(config.explainers, (list, tuple, dict)) and not config.explainers:
        return None  # explainers: [] (selectors only, for example)
    methods = expl.summary.get("methods") or {}
    if any(entry.get("status") == "ok" for entry in methods.values()):
        return None
    reasons = "; ".join(f"{name}: {_why_not(name, entry, 160)}"
                        for name, entry in methods.items()) or "the planner chose none"
    from mlflow_xai.config import AUTO

    auto = config.explainers in (AUTO, None)
    alternative = _agnostic_explainer(expl, tried=set(methods))
    if auto:
        hint = (f"Try --explainer {alternative} or another one that applies "
                "(`mlflow-xai methods`)." if alternative else
                "`mlflow-xai methods` lists what each method needs.")
    else:
        hint = (f"Try --explainer {alternative}, or " if alternative else "Try ") + \
            "leave --explainer out to let the planner choose."
    return f"no explainer ran: {reasons}. {hint} Nothing was logged."


def _why_not(name: str, entry: dict[str, Any], limit: int = 300) -> str:
    """A skipped or failed method's reason, without its own name in front."""
    if entry.get("status") == "failed":
        text = f"failed: {entry.get('error') or 'no reason recorded'}"
    else:
        text = str(entry.get("reason") or entry.get("status") or "did not run")
        if text.startswith(f"{name} "):
            text = text[len(name) + 1:]
    return _short(text, limit)


def _agnostic_explainer(expl: Any, tried: set[str]) -> str | None:
    """A model-agnostic explainer for this data that was not tried (kernel_shap first)."""
    from mlflow_xai.plugins import get_registry

    data_type = (expl.summary.get("data") or {}).get("data_type", "tabular")
    registry = get_registry()
    names = [n for n in registry.names("explainer") if n not in tried
             and set(registry.get(n).cls.requires) <= {"predict"}
             and data_type in registry.get(n).cls.data_types]
    for preferred in ("kernel_shap", "rise"):
        if preferred in names:
            return preferred
    return names[0] if names else None


def _print_summary(expl: Any) -> None:
    """What ran (top features), what did not and why, the plan, the checks and the verdict."""
    summary = expl.summary
    if summary.get("plan"):
        for line in _plan_lines(summary["plan"]):
            click.echo(line)
    columns = set(getattr(expl.importance, "columns", []))
    for name, entry in (summary.get("methods") or {}).items():
        if entry.get("status") != "ok":
            click.echo(f"{name}: {entry.get('status')} ({_why_not(name, entry, 200)})")
        elif name in columns:
            click.echo(f"{name}: top features {', '.join(map(str, expl.top_features(name)))}")
        else:
            click.echo(f"{name}: ran")
    checks = summary.get("checks") or {}
    if checks:
        click.echo("checks: " + ", ".join(f"{name} {entry.get('status', '?')}"
                                          for name, entry in checks.items()))
    if expl.governance:
        _print_rules(expl.governance.get("rules") or [])
        click.echo(f"governance: {expl.governance['verdict'].upper()}")


def _plan_lines(plan: Any) -> list[str]:
    """summary['plan'] in a few lines (what the planner chose, on how many rows, and why)."""
    if not isinstance(plan, dict):
        return [f"plan: {_short(plan)}"]
    head = [f"{plan['mode']}" if plan.get("mode") else None,
            f"budget {plan['budget_s']:g} s" if isinstance(plan.get("budget_s"), (int, float))
            else "no budget" if "budget_s" in plan else None,
            f"{plan['rows']} of {plan['rows_available']} rows"
            if plan.get("rows") is not None and plan.get("rows_available") is not None else None,
            f"{plan['background_rows']} background rows"
            if plan.get("background_rows") is not None else None,
            f"spent {plan['spent_s']:g} s" if isinstance(plan.get("spent_s"), (int, float))
            else None,
            "cut to fit" if plan.get("cut") else None]
    lines = [f"plan: {', '.join(h for h in head if h)}"]
    for item in plan.get("chosen") or []:
        if isinstance(item, dict):
            lines.append(f"  chose {item.get('method')}: {_short(item.get('why', ''), 160)}")
    not_applicable = []
    for item in plan.get("left_out") or []:
        if not isinstance(item, dict):
            continue
        why = str(item.get("why", ""))
        if why.startswith("not applicable"):
            not_applicable.append(str(item.get("method")))
        else:
            lines.append(f"  left out {item.get('method')}: {_short(why, 160)}")
    if not_applicable:
        lines.append(f"  not applicable: {', '.join(not_applicable)}")
    return lines


_PARQUET_SUFFIXES = (".parquet", ".pq")
_CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zip", ".csv.xz", ".csv.zst")


def _short(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line."""
    text = " ".join(str(exc).split())
    return (text[:limit] + "...") if len(text) > limit else (text or type(exc).__name__)


def _input_error(message: str) -> NoReturn:
    """Exit 2 with ``error: message``; with --debug the exception being handled propagates."""
    current = sys.exc_info()[1]
    if current is not None and _debug():
        raise current
    raise InputError(message)


def _unexpected(exc: BaseException, doing: str = "explaining") -> NoReturn:
    """Not the input's fault (or not recognised as such): one line and exit 1, or with
    --debug the traceback; a tracking server that stopped answering is exit 2."""
    if _debug():
        raise exc
    from mlflow_xai.reachability import is_unreachable, short_reason

    if doing == "logging" and is_unreachable(exc):
        import mlflow

        click.echo(f"error: tracking server {safe_uri(mlflow.get_tracking_uri())} did not "
                   f"answer while {doing} ({short_reason(exc)})", err=True)
        sys.exit(2)
    click.echo(f"error: {doing} failed: {type(exc).__name__}: {_short(exc)} (mlflow-xai "
               "--debug prints the traceback)", err=True)
    sys.exit(1)


def _read_data(path: str, targets: str | None) -> Any:
    """--data as a DataFrame, or an InputError that names what is wrong with the file."""
    from pathlib import Path

    import pandas as pd

    name = path.lower()
    if name.endswith(_PARQUET_SUFFIXES):
        kind, read = "Parquet", pd.read_parquet
    elif name.endswith(_CSV_SUFFIXES):
        kind, read = "CSV", pd.read_csv
    else:
        suffix = "".join(Path(path).suffixes[-2:]) or "no extension"
        raise InputError(f"--data {path}: unsupported file type ({suffix}); give a .csv or "
                         ".parquet file.")
    try:
        data = read(path)
    except pd.errors.EmptyDataError:
        _input_error(f"--data {path} is empty: give a CSV file with a header line and at "
                     "least one row.")
    except Exception as exc:  # noqa: BLE001 - pandas/pyarrow raise many kinds on a bad file
        _input_error(f"--data {path} could not be read as {kind} ({type(exc).__name__}: "
                     f"{_short(exc, 200)}); check that it is a complete {kind} file.")
    if len(data) == 0:
        raise InputError(f"--data {path} has no rows, only column names: give at least one "
                         "row to explain.")
    if targets is not None and targets not in data.columns:
        columns = ", ".join(map(str, data.columns[:20])) + (", ..." if data.shape[1] > 20
                                                             else "")
        raise InputError(f"--targets {targets!r} is not a column of {path} (columns: "
                         f"{columns}); give the label column, or leave --targets out.")
    return data


def _load_model(model_uri: str, device: str) -> Any:
    """The model behind --model-uri, or an InputError that says how to name one."""
    from mlflow_xai.device import resolve_device
    from mlflow_xai.errors import ConfigError
    from mlflow_xai.model import resolve_model

    resolved = resolve_device(device)
    try:
        return resolve_model(model_uri, device=resolved)
    except ConfigError as exc:
        _input_error(f"--model-uri {model_uri} could not be loaded "
                     f"({_short(exc.__cause__ or exc, 200)}); give models:/<model_id>, "
                     "models:/<name>/<version>, runs:/<run_id>/<path> or a local model "
                     "directory (the tracking server is MLFLOW_TRACKING_URI).")


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
@_server_timeout_option("Seconds to wait for the tracking server to answer (else exit 2).")
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
    _require_server()
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

    from mlflow_xai.gate import GateError, model_id_of_version

    try:
        mv = MlflowClient().get_model_version(name, version)
    except MlflowException as exc:
        raise GateError(f"model version {name}/{version} was not found: {exc.message}") from exc
    points_at = model_id_of_version(mv)
    same = points_at == target.model_id if target.model_id else mv.run_id == target.run_id
    if not same:
        raise GateError(f"model version {name}/{version} is model {points_at or mv.run_id}, "
                        f"not the judged {target.describe()}: its verdict would be about "
                        "another model.")


def _print_outcome(judged: str, outcome: dict) -> None:
    click.echo(f"{judged} (run {outcome['run_id']}, facts: {outcome['mode']})")
    _print_rules(outcome["rules"])
    click.echo(f"governance: {outcome['verdict'].upper()}")


def _print_rules(rules: list[dict]) -> None:
    """A policy's rules as a table: rule, kind, figure, value, verdict, detail."""
    rows = [[r["name"], r["kind"], r["figure"],
             "-" if r["value"] is None else (f"{r['value']:.4g}" if isinstance(r["value"], float)
                                             else str(r["value"])),
             r["verdict"].upper(), r["message"]] for r in rules]
    headers = ["RULE", "KIND", "FIGURE", "VALUE", "VERDICT", "DETAIL"]
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
              for i, h in enumerate(headers[:-1])]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths + [0])))
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths + [0])))


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
@_server_timeout_option("With --once: seconds to wait for the server to answer (else exit 1).")
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
        _require_server(tracking_uri, exit_code=1)
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


@cli.command("flush")
@click.option("--tracking-uri", default=None,
              help="Only upload the items meant for this tracking server. Default: every item, "
                   "each to the server it was meant for.")
@click.option("--spool-dir", default=None, type=click.Path(file_okay=False),
              help="The spool folder. Default: $MLFLOW_XAI_SPOOL_DIR, else "
                   "$XDG_CACHE_HOME/mlflow-xai/spool (~/.cache/mlflow-xai/spool).")
@click.option("--list", "list_only", is_flag=True,
              help="Only list the spooled items (exit 1 when there are any); upload nothing.")
def flush_command(tracking_uri: str | None, spool_dir: str | None, list_only: bool) -> None:
    """Upload explanations spooled while the tracking server did not answer.

    Asynchronous autolog (autolog(asynchronous=True)) does not wait out a tracking server that
    is down: it keeps what it could not upload in a local spool folder, either a computed
    explanation (the xai/ folder, its metrics and tags) or a job whose model could not be
    loaded from the server (its inputs). This command uploads every item to the tracking
    server it was meant for, oldest first, in the recorder's order (artifacts, metrics,
    summary.json, tags last; a spooled job is explained first), and removes each item once it
    is recorded. mlflow_xai.wait() and the next autolog() do the same for the current server.

    \b
    Exit status: 0 when everything was uploaded (or nothing was spooled); 1 when items remain,
    each on one line on stderr with why: the server still does not answer (try again later),
    or the replay failed (the item is then kept under failed/ with error.txt).
    """
    import os
    from pathlib import Path

    import mlflow

    from mlflow_xai import spool
    from mlflow_xai.autologging import replay_item

    root = Path(spool_dir).expanduser() if spool_dir else spool.spool_dir()
    pending = spool.items(tracking_uri, root=root)
    given_up = spool.failed_items(tracking_uri, root=root)
    if list_only:
        for item in pending + given_up:
            click.echo(item.line())
        if not pending and not given_up:
            click.echo(f"the spool {root} is empty")
        sys.exit(1 if pending or given_up else 0)
    # This process only: a server that dies mid-flush is not retried for minutes.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    uploaded: list[Any] = []
    remaining = [item for item in pending if not item.manifest or not item.tracking_uri]
    previous = mlflow.get_tracking_uri()
    try:
        for uri in dict.fromkeys(i.tracking_uri for i in pending if i.manifest and i.tracking_uri):
            mlflow.set_tracking_uri(uri)  # the recorder uploads to the current tracking URI
            result = spool.flush(uri, root=root, replay=replay_item)
            uploaded += result.uploaded
            remaining += result.remaining
    finally:
        mlflow.set_tracking_uri(previous)
    for item in uploaded:
        click.echo(f"uploaded {item.path.name}: {item.kind} for run {item.manifest.get('run_id')}")
    for item in remaining + given_up:
        click.echo(f"not uploaded: {item.line()}", err=True)
    left = len(remaining) + len(given_up)
    click.echo(f"{len(uploaded)} uploaded, {left} remain in {root}", err=bool(left))
    sys.exit(1 if left else 0)


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
