"""mlflow-xai: explanations for every model logged to MLflow.

Public API: :func:`explain`, :func:`autolog`, :func:`wait`, :func:`list_methods`,
:data:`hookimpl` (for method packs) and ``__version__``. Heavy modules (mlflow, shap, torch)
are imported only when used, so importing this package is cheap.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from mlflow_xai.hookspecs import hookimpl

if TYPE_CHECKING:
    from mlflow_xai.explanations import Explanations

try:
    __version__ = version("mlflow-xai")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "Explanations",
    "__version__",
    "autolog",
    "explain",
    "hookimpl",
    "list_methods",
    "wait",
]


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562): ``Explanations`` pulls in pandas, so it loads on first use, which keeps
    # ``import mlflow_xai`` cheap and still lets ``from mlflow_xai import *`` find every name.
    if name == "Explanations":
        from mlflow_xai.explanations import Explanations

        return Explanations
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def explain(
    model: Any,
    data: Any,
    *,
    targets: Any = None,
    explainers: list[str] | dict[str, dict[str, Any] | None] | None = None,
    checks: list[str] | dict[str, dict[str, Any] | None] | None = None,
    selectors: list[str] | dict[str, dict[str, Any] | None] | None = None,
    policy: Any = None,
    background: Any = None,
    background_rows: int = 100,
    max_rows: int = 1000,
    device: str = "auto",
    seed: int = 0,
    output: Any = None,
    output_dir: Any = None,
    strict: bool = True,
    progress: bool | None = None,
    model_type: str | None = None,
    selection_rows: int = 10_000,
    selection_bootstrap: int = 5,
    retrain: Any = None,
    timeout: float | None = None,
    budget_s: float | None = None,
    log_metrics: str = "headline",
    feature_groups: Any = None,
    max_groups: int = 64,
) -> Explanations:
    """Explain ``model`` on ``data`` with every requested (or applicable) explainer.

    Args:
        model: a model URI (``models:/<id>``, ``runs:/<run>/<path>``), a loaded MLflow model, a
            scikit-learn style estimator (XGBoost, LightGBM too), a torch ``nn.Module``, or a
            function ``f(ndarray) -> ndarray``.
        data: the rows to explain (DataFrame or 2-D array).
        targets: labels, one per row, or the name of a column of ``data`` holding them.
        explainers: method names, or a dict ``name -> parameters``; default every registered
            explainer that applies to the model (see :func:`list_methods`); ``"auto"`` lets
            the planner choose (what ``autolog`` and the evaluator do: Tree SHAP for tree
            models, Integrated Gradients for torch modules, else one Shapley estimator, plus
            permutation importance with targets); ``[]`` runs none (for example to run
            selectors only).
        checks: check names or a dict ``name -> parameters``; default the cheap checks
            (agreement, bootstrap_importance, completeness, deletion_insertion, infidelity,
            faithfulness_correlation, rank_uncertainty); ``[]`` runs none.
        selectors: feature-selection method names or a dict ``name -> parameters`` (for
            example ``{"mutual_info": {"k": 10}}``); default none. Results are in
            ``.selection[name]`` (``.scores``, ``.ranking``, ``.selected``).
        policy: a governance policy (YAML path or dict) to apply; the verdict is in
            ``.governance`` and is logged as ``xai/governance.json`` and tags.
        background: reference rows for "feature absent"; default ``background_rows`` rows sampled
            from ``data`` with ``seed``.
        max_rows: explain at most this many rows (a seeded sample; recorded in the summary).
        device: ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        output: which model output to explain. Default: the positive class (index 1) of a binary
            classifier; for more than two classes, each row's predicted class
            (``"predicted"``). A class label or an output index picks one output for every row.
        output_dir: also write the ``xai/`` artifact folder here (no MLflow run needed).
        strict: raise when a method fails (default); ``False`` records the failure and goes on.
        progress: show a progress bar; default only on an interactive terminal outside CI.
        model_type: ``"classifier"`` or ``"regressor"`` when it cannot be inferred.
        selection_rows: selectors see up to this many rows (a seeded sample of ``data``).
        selection_bootstrap: bootstrap resamples for the stability of each selection
            (Kuncheva index, Jaccard, score rank correlation); 0 turns it off.
        retrain: a scikit-learn estimator (cloned, 3-fold cross-validated) or a function
            ``score(X_subset, y) -> float``: retrain on the selected features and on random
            subsets of the same size and report the gain (ROAR-style). Default: skipped.
        timeout: seconds the explanation may take; the work then runs in a worker process,
            which is stopped when the time is up (:class:`~mlflow_xai.errors.ExplainTimeout`),
            so a model whose predict hangs cannot stall the caller. The worker's start-up
            (1 to 3 s) is not counted. Default: no limit, run in this process.
        budget_s: seconds of explanation work (explainers and checks) to plan for: rows,
            Kernel SHAP samples and background rows are reduced until the estimate fits (the
            plan is ``summary["plan"]``). Default: no budget (``autolog`` and the evaluator
            use 30).
        log_metrics: ``"headline"`` (default): at most 30 ``xai.*`` metrics when
            logged; ``"all"``: every figure. The artifacts always hold every figure.
        feature_groups: explain groups of columns as single players: ``"auto"``
            (correlation clusters: hierarchical clustering on 1 - |Spearman|, at most
            ``max_groups``, each named after its most central column, e.g.
            ``"mean radius (+4)"``) or a dict ``{group name: [columns]}`` (columns left out
            stay single). The attributions then have one column per group and add up over
            the groups; ``summary["feature_groups"]`` lists the members. ``False`` never
            groups; None (default) explains single columns, except that
            ``explainers="auto"`` groups wide data (more than 200 columns) itself.
        max_groups: the most groups ``feature_groups="auto"`` makes (default 64).

    Returns:
        :class:`~mlflow_xai.explanations.Explanations`; call ``.log()`` to upload to MLflow.
    """
    from mlflow_xai.config import XaiConfig
    from mlflow_xai.pipeline import run

    config = XaiConfig(targets=targets, explainers=explainers, checks=checks,
                       selectors=selectors, selection_rows=selection_rows,
                       selection_bootstrap=selection_bootstrap, retrain=retrain, policy=policy,
                       background=background,
                       background_rows=background_rows, max_rows=max_rows, device=device,
                       seed=seed, output=output, strict=strict, progress=progress,
                       model_type=model_type, timeout=timeout, budget_s=budget_s,
                       log_metrics=log_metrics, feature_groups=feature_groups,
                       max_groups=max_groups)
    result = run(model, data, config)
    if output_dir is not None:
        from mlflow_xai.artifacts import write_artifacts

        write_artifacts(result, output_dir)
    return result


def list_methods(kind: str | None = None) -> list[dict[str, Any]]:
    """Every registered method (``kind``: 'explainer', 'selector', 'check' or all)."""
    from mlflow_xai.plugins import list_methods as _list

    return _list(kind)


def autolog(data: Any = None, *, targets: Any = None, asynchronous: bool = False,
            disable: bool = False, **options: Any) -> None:
    """Explain every model logged with ``mlflow.<flavor>.log_model`` from now on.

    See :func:`mlflow_xai.autologging.autolog` for the details.
    """
    from mlflow_xai.autologging import autolog as _autolog

    _autolog(data, targets=targets, asynchronous=asynchronous, disable=disable, **options)


def wait(timeout: float | None = None) -> None:
    """Block until every asynchronous explanation started by :func:`autolog` has finished."""
    from mlflow_xai.autologging import wait as _wait

    _wait(timeout)
