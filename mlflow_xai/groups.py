"""Feature groups: explain groups of columns as single players (``feature_groups=``).

On wide data (hundreds to thousands of columns) one Shapley value per column is neither
affordable nor readable: Kernel SHAP cannot identify d values from fewer than d coalitions and
its solve grows as d**3, permutation SHAP spends d - 1 model calls per permutation, and
correlated columns split their credit arbitrarily. Grouping makes the *groups* the players of
the game: v(S) = E_b f(x_S, b_rest) with S a set of groups, whose Shapley values add up to
f(x) - E f(b) over the groups (efficiency holds over groups) and cost what a game with as many
players as groups costs, whatever the number of columns.

Groups come from the user (``{"name": [columns]}``; unlisted columns stay single) or from the
data (``"auto"``): average-linkage hierarchical clustering of the columns on 1 - |Spearman|
over the explained and background rows, cut to at most ``max_groups`` clusters. Each auto group
is named after its most central column (the largest summed |Spearman| to the other members)
and its size: ``"mean radius (+4)"``.

How methods explain groups: a method whose class sets ``explains_groups = True`` receives a
:class:`GroupedTask` (``n_features`` and ``feature_names`` describe the groups; ``X`` and
``background`` keep every column; ``feature_groups`` gives each column's group) and passes
``groups=task.feature_groups`` to :func:`mlflow_xai.engine.coalition_values`. Any other method
explains single columns and its attributions are summed over each group's columns.
"""

from __future__ import annotations

import dataclasses
import difflib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlflow_xai.base import Attribution, ExplainTask
from mlflow_xai.errors import ConfigError

#: ``feature_groups="auto"``: correlation clusters of the columns.
AUTO = "auto"
#: The most groups ``"auto"`` makes (and the wide-data plan asks for) unless ``max_groups``.
DEFAULT_MAX_GROUPS = 64
#: Above this many columns ``"auto"`` clusters this many anchor columns (evenly spaced) and
#: assigns every other column to its most correlated anchor: the full d x d correlation matrix
#: and linkage (O(d**2) memory) stay under ~50 MB.
MAX_CLUSTERED_COLUMNS = 2500
#: Columns whose average |Spearman| correlation is at least this always share a group (the
#: cut never splits them to make more groups); below it groups are merged only as far as
#: ``max_groups`` needs.
MERGE_CORRELATION = 0.8
#: Rows the correlations are computed on at most (evenly spaced over explained + background).
MAX_CLUSTER_ROWS = 2000
#: Candidates scored when naming a large group by its most central column.
_MAX_CENTRAL_CANDIDATES = 500
#: Columns per block when correlating many columns with the anchors (bounds memory).
_BLOCK = 1024


@dataclass(frozen=True)
class FeatureGroups:
    """Groups of columns, the players of a grouped explanation.

    ``index[j]`` is the group (player) of column ``j``; ``names[g]`` the name of group ``g``,
    in player order (the order of each group's first column).
    """

    names: tuple[str, ...]
    index: np.ndarray
    columns: tuple[Any, ...]
    #: "given" (the user's dict) or "auto" (correlation clusters)
    how: str
    #: How the groups were made (method, rows, max_groups, seconds, ...), for summary.json.
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def n_groups(self) -> int:
        return len(self.names)

    def members(self) -> dict[str, list[str]]:
        """Group name -> its columns (as text), in column order."""
        out: dict[str, list[str]] = {name: [] for name in self.names}
        for column, g in zip(self.columns, self.index, strict=True):
            out[self.names[int(g)]].append(str(column))
        return out

    def record(self) -> dict[str, Any]:
        """``summary.json``'s ``feature_groups``: how the groups were made and their members."""
        return {"how": self.how, "groups": len(self.names), "columns": len(self.columns),
                **self.details, "members": self.members()}

    def sum_columns(self, values: np.ndarray) -> np.ndarray:
        """(..., M) per-column numbers -> (..., G) sums over each group's columns."""
        values = np.asarray(values, dtype=float)
        onehot = np.zeros((len(self.columns), len(self.names)))
        onehot[np.arange(len(self.columns)), self.index] = 1.0
        return values @ onehot


# ----------------------------------------------------------------------------------------
# The option
# ----------------------------------------------------------------------------------------

def check_option(spec: Any, max_groups: Any) -> None:
    """Validate ``feature_groups`` and ``max_groups`` as options (before any data is read):
    None, False, ``"auto"`` or a dict ``{group name: [columns]}``."""
    if isinstance(max_groups, bool) or not isinstance(max_groups, (int, np.integer)) \
            or max_groups < 2:
        raise ConfigError(f"max_groups must be an integer >= 2 (the most groups "
                          f"feature_groups='auto' makes), got {max_groups!r}.")
    if spec is None or spec is False or (isinstance(spec, str) and spec == AUTO):
        return
    if not isinstance(spec, Mapping):
        raise ConfigError(
            f"feature_groups must be 'auto' (correlation clusters), a dict {{group name: "
            f"[columns]}}, False (never group) or None, got {type(spec).__name__} "
            f"{spec!r:.80}.")
    if not spec:
        raise ConfigError("feature_groups is an empty dict: name at least one group "
                          "{'name': ['column', ...]}, or pass None.")
    for name, columns in spec.items():
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"feature_groups: group names must be non-empty strings, got "
                              f"{name!r}.")
        if name.startswith("xai."):
            raise ConfigError(f"feature_groups: group name {name!r} starts with 'xai.', "
                              "which mlflow-xai reserves for its own columns; rename it.")
        if isinstance(columns, (str, bytes)) or not isinstance(columns, Sequence) \
                or isinstance(columns, Mapping):
            raise ConfigError(f"feature_groups[{name!r}] must be a list of column names, got "
                              f"{columns!r:.80}.")
        if len(columns) == 0:
            raise ConfigError(f"feature_groups[{name!r}] is empty: a group needs at least one "
                              "column.")


def resolve(spec: Any, columns: Sequence[Any], rows: np.ndarray | None, *,
            max_groups: int = DEFAULT_MAX_GROUPS) -> FeatureGroups | None:
    """The groups of a run: None (``spec`` None or False: single columns), the user's dict
    checked against ``columns``, or correlation clusters of ``rows`` (``"auto"``)."""
    if spec is None or spec is False:
        return None
    if isinstance(spec, str) and spec == AUTO:
        if rows is None:
            raise ConfigError("feature_groups='auto' needs the data's rows.")
        return auto_groups(rows, columns, max_groups=max_groups)
    return given_groups(spec, columns)


def for_data(spec: Any, prepared: Any, *, max_groups: int = DEFAULT_MAX_GROUPS
             ) -> FeatureGroups | None:
    """:func:`resolve` for prepared data (``.X``, ``.background``, ``.feature_names``,
    ``.facts``): auto groups are computed on the explained and the background rows."""
    if spec is None or spec is False:
        return None
    kind = (getattr(prepared, "facts", None) or {}).get("data_type", "tabular")
    if kind != "tabular":
        raise ConfigError(f"feature_groups groups the columns of tabular data; this data is "
                          f"{kind}. Leave feature_groups unset.")
    rows = np.concatenate([prepared.X, prepared.background], axis=0) \
        if isinstance(spec, str) else None
    return resolve(spec, prepared.feature_names, rows, max_groups=max_groups)


def given_groups(spec: Mapping[str, Sequence[Any]], columns: Sequence[Any]) -> FeatureGroups:
    """The user's groups; every column in exactly one group, unlisted columns single."""
    check_option(spec, DEFAULT_MAX_GROUPS)
    columns = list(columns)
    position: dict[Any, int] = {}
    for j, column in enumerate(columns):
        position.setdefault(column, j)
        position.setdefault(str(column), j)
    group_of = np.full(len(columns), -1)
    unknown: list[tuple[Any, str]] = []
    repeated: list[str] = []
    for g, (name, members) in enumerate(spec.items()):
        for column in members:
            j = _position(position, column)
            if j is None:
                unknown.append((column, name))
            elif group_of[j] >= 0:
                first = list(spec)[group_of[j]]
                repeated.append(f"{column!r} (in {first!r}" +
                                (" twice)" if first == name else f" and {name!r})"))
            else:
                group_of[j] = g
    if unknown:
        text = [str(c) for c in columns]
        listed = ", ".join(f"{c!r} (in {n!r})" for c, n in unknown[:10])
        hints = [f"{c!r}: did you mean {m[0]!r}?" for c, _ in unknown
                 if (m := difflib.get_close_matches(str(c), text, n=1))]
        raise ConfigError(
            f"feature_groups names {len(unknown)} column(s) the data does not have: "
            f"{listed}{' ...' if len(unknown) > 10 else ''}."
            f"{' ' + '; '.join(hints[:5]) if hints else ''} "
            f"The data's columns: {_short(text)}.")
    if repeated:
        raise ConfigError(
            f"feature_groups puts {len(repeated)} column(s) in more than one place: "
            f"{', '.join(repeated[:10])}. Each column belongs to exactly one group.")
    names = list(spec)
    singles = [j for j in range(len(columns)) if group_of[j] < 0]
    clash = sorted({str(columns[j]) for j in singles} & set(names))
    if clash:
        raise ConfigError(
            f"feature_groups: group name(s) {clash} are also column(s) left out of every "
            "group (which stay single, named by the column); rename the group(s) or list "
            "those columns in them.")
    # Player order: by each group's first column.
    for j in singles:
        group_of[j] = len(names)
        names.append(str(columns[j]))
    order = _order_by_first_column(group_of, len(names))
    return FeatureGroups(names=tuple(names[g] for g in order),
                         index=np.argsort(order)[group_of], columns=tuple(columns),
                         how="given",
                         details={"single_columns": len(singles)})


def _position(position: dict[Any, int], column: Any) -> int | None:
    try:
        found = position.get(column)
        return found if found is not None else position.get(str(column))
    except TypeError:  # unhashable: not a column name
        return None


def _order_by_first_column(group_of: np.ndarray, n_groups: int) -> np.ndarray:
    """Group ids ordered by the position of their first column."""
    first = np.full(n_groups, len(group_of))
    for j, g in enumerate(group_of):
        first[g] = min(first[g], j)
    return np.argsort(first, kind="stable")


# ----------------------------------------------------------------------------------------
# Correlation clusters
# ----------------------------------------------------------------------------------------

def auto_groups(rows: np.ndarray, columns: Sequence[Any], *,
                max_groups: int = DEFAULT_MAX_GROUPS) -> FeatureGroups:
    """Correlation clusters: average-linkage hierarchical clustering on 1 - |Spearman| of
    ``rows`` (at most :data:`MAX_CLUSTER_ROWS`, evenly spaced), cut to at most ``max_groups``
    clusters, never splitting columns correlated above :data:`MERGE_CORRELATION` (so fewer
    groups when the data has fewer such clusters). Columns constant on those rows form one
    group of their own. Deterministic: no randomness; above :data:`MAX_CLUSTERED_COLUMNS`
    columns, evenly spaced anchor columns are clustered and every other column joins its most
    correlated anchor."""
    t0 = time.perf_counter()
    columns = list(columns)
    rows = np.asarray(rows, dtype=np.float64)
    d = rows.shape[1]
    if len(rows) > MAX_CLUSTER_ROWS:
        rows = rows[np.linspace(0, len(rows) - 1, MAX_CLUSTER_ROWS).round().astype(int)]
    Z = _standardised_ranks(rows)                      # (n, d), unit-norm columns or 0
    constant = ~np.any(Z != 0, axis=0)
    varying = np.flatnonzero(~constant)
    label = np.full(d, -1)
    details: dict[str, Any] = {
        "method": "average-linkage hierarchical clustering on 1 - |Spearman correlation|",
        "rows": len(rows), "max_groups": int(max_groups),
        "merge_correlation": MERGE_CORRELATION}
    budget = max_groups - (1 if constant.any() else 0)
    if len(varying):
        if len(varying) <= MAX_CLUSTERED_COLUMNS:
            label[varying] = _cluster(Z[:, varying], max(budget, 1))
        else:
            anchors = varying[np.linspace(0, len(varying) - 1,
                                          MAX_CLUSTERED_COLUMNS).round().astype(int)]
            anchor_label = _cluster(Z[:, anchors], max(budget, 1))
            label[varying] = anchor_label[_nearest(Z, varying, anchors)]
            details["anchors"] = len(anchors)
            details["method"] += (f" of {len(anchors)} evenly spaced anchor columns; every "
                                  "other column joins its most correlated anchor")
    if constant.any():
        label[constant] = label.max() + 1
        details["constant_columns"] = int(constant.sum())
    # Dense ids in order of first column, then names from the most central member.
    _, label = np.unique(label, return_inverse=True)
    order = _order_by_first_column(label, int(label.max()) + 1)
    index = np.argsort(order)[label]
    names = _names(Z, index, columns, constant)
    details["seconds"] = round(time.perf_counter() - t0, 3)
    return FeatureGroups(names=tuple(names), index=index, columns=tuple(columns), how="auto",
                         details=details)


def _standardised_ranks(rows: np.ndarray) -> np.ndarray:
    """Column ranks (average ties; a missing value gets the column's mean rank), centred and
    scaled to unit norm, so that Z[:, i] @ Z[:, j] is Spearman's correlation; 0 for a
    column constant on these rows."""
    import pandas as pd

    ranks = pd.DataFrame(rows).rank(axis=0, method="average").to_numpy(dtype=np.float64,
                                                                    copy=True)
    missing = np.isnan(ranks)
    if missing.any():
        mean_rank = np.where(missing, 0.0, ranks).sum(0) / np.maximum((~missing).sum(0), 1)
        ranks = np.where(missing, mean_rank, ranks)
    ranks = ranks - ranks.mean(axis=0)
    norm = np.sqrt((ranks**2).sum(axis=0))
    varying = norm > 1e-9
    return np.where(varying, ranks / np.where(varying, norm, 1.0), 0.0)


def _cluster(Z: np.ndarray, max_groups: int) -> np.ndarray:
    """Average-linkage clusters of Z's columns on 1 - |correlation|: at most ``max_groups``,
    and never splitting columns that merge within :data:`MERGE_CORRELATION`."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    if Z.shape[1] < 2:
        return np.zeros(Z.shape[1], dtype=int)
    distance = 1.0 - np.abs(Z.T @ Z)
    np.fill_diagonal(distance, 0.0)
    np.clip(distance, 0.0, 1.0, out=distance)
    tree = linkage(squareform(distance, checks=False), method="average")
    tight = fcluster(tree, t=1.0 - MERGE_CORRELATION, criterion="distance")
    clusters = min(max_groups, int(tight.max()))
    if clusters == int(tight.max()):
        return tight - 1
    return fcluster(tree, t=clusters, criterion="maxclust") - 1


def _nearest(Z: np.ndarray, columns: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """For each of ``columns``: the position (in ``anchors``) of its most |correlated| anchor,
    computed a block of columns at a time."""
    out = np.empty(len(columns), dtype=int)
    A = Z[:, anchors]
    for start in range(0, len(columns), _BLOCK):
        block = columns[start:start + _BLOCK]
        out[start:start + len(block)] = np.abs(Z[:, block].T @ A).argmax(axis=1)
    is_anchor = {int(a): i for i, a in enumerate(anchors)}
    for i, j in enumerate(columns):  # an anchor is its own nearest (ties cannot move it)
        if int(j) in is_anchor:
            out[i] = is_anchor[int(j)]
    return out


def _names(Z: np.ndarray, index: np.ndarray, columns: list[Any], constant: np.ndarray
           ) -> list[str]:
    """Each group's name: its most central column (largest summed |Spearman| to the other
    members; the first column on ties) and, for several members, ``(+k)``."""
    names: list[str] = []
    used: set[str] = set()
    for g in range(int(index.max()) + 1):
        members = np.flatnonzero(index == g)
        central = members[0]
        if len(members) > 2 and not constant[members].all():
            candidates = members if len(members) <= _MAX_CENTRAL_CANDIDATES else \
                members[np.linspace(0, len(members) - 1,
                                    _MAX_CENTRAL_CANDIDATES).round().astype(int)]
            score = np.zeros(len(candidates))
            for start in range(0, len(members), _BLOCK):
                block = members[start:start + _BLOCK]
                score += np.abs(Z[:, candidates].T @ Z[:, block]).sum(axis=1)
            central = candidates[int(np.argmax(score))]
        name = str(columns[central])
        if len(members) > 1:
            name = f"{name} (+{len(members) - 1})"
        base, k = name, 2
        while name in used:
            name, k = f"{base} #{k}", k + 1
        used.add(name)
        names.append(name)
    return names


# ----------------------------------------------------------------------------------------
# Explaining groups
# ----------------------------------------------------------------------------------------

@dataclass
class GroupedTask(ExplainTask):
    """An :class:`ExplainTask` whose players are groups of columns.

    ``n_features`` and ``feature_names`` describe the groups (the players); ``X`` and
    ``background`` keep every column; ``feature_groups[j]`` is column j's group. A method
    that sets ``explains_groups = True`` draws its coalitions over ``n_features`` players
    and passes ``groups=task.feature_groups`` to ``coalition_values``.
    """

    feature_groups: np.ndarray | None = None
    column_names: list[str] = field(default_factory=list)

    @property
    def n_features(self) -> int:
        return len(self.feature_names)


def explains_groups(explainer: Any) -> bool:
    """True when the method (class or instance) explains groups itself."""
    cls = explainer if isinstance(explainer, type) else type(explainer)
    return bool(getattr(cls, "explains_groups", False))


def grouped_task(task: ExplainTask, groups: FeatureGroups) -> GroupedTask:
    """``task`` with the groups as its players."""
    values = {f.name: getattr(task, f.name) for f in dataclasses.fields(ExplainTask)}
    values["feature_names"] = list(groups.names)
    return GroupedTask(**values, feature_groups=np.asarray(groups.index, dtype=np.int64),
                       column_names=[str(c) for c in task.feature_names])


def task_for(explainer: Any, task: ExplainTask, groups: FeatureGroups | None) -> ExplainTask:
    """The task ``explainer`` receives: grouped when it explains groups itself."""
    if groups is not None and explains_groups(explainer):
        return grouped_task(task, groups)
    return task


def explain(explainer: Any, task: ExplainTask, groups: FeatureGroups | None) -> Attribution:
    """Run ``explainer`` on ``task``: over the groups when ``groups`` is given (natively, or
    by summing its per-column attributions over each group's columns)."""
    if groups is None:
        return explainer.explain(task)
    if explains_groups(explainer):
        return explainer.explain(grouped_task(task, groups))
    return summed(explainer.explain(task), groups)


def summed(attribution: Attribution, groups: FeatureGroups) -> Attribution:
    """A per-column attribution summed over each group's columns. Standard errors and
    interaction values are dropped: neither is the sum of its columns'."""
    values = None if attribution.values is None else groups.sum_columns(attribution.values)
    importance = None
    if attribution.importance is not None:
        importance = groups.sum_columns(attribution.importance)
    return dataclasses.replace(attribution, values=values, importance=importance,
                               standard_errors=None, interactions=None,
                               info={**attribution.info, "grouping": "summed"})


def grouping_of(explainer: Any) -> str:
    """How ``explainer`` explains groups: ``native`` (groups are its players) or ``summed``
    (its per-column attributions summed over each group)."""
    return "native" if explains_groups(explainer) else "summed"


# ----------------------------------------------------------------------------------------
# The checks' view of a grouped explanation
# ----------------------------------------------------------------------------------------

def removal_values(background: np.ndarray) -> np.ndarray:
    """Per-column mean of the background over observed values: what "removing" a column
    sets it to in the checks (NaN for a column missing in every background row)."""
    background = np.asarray(background, dtype=np.float64)
    observed = ~np.isnan(background)
    counts = observed.sum(axis=0)
    sums = np.where(observed, background, 0.0).sum(axis=0)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def expand_presence(presence: np.ndarray, X: np.ndarray, removal: np.ndarray,
                    groups: FeatureGroups) -> np.ndarray:
    """Group presences -> columns. ``presence`` (n, ..., G): 1 keeps a group's columns as in
    the row ``X`` (n, M), 0 sets them to ``removal`` (their background mean), values in
    between interpolate. The checks of a grouped explanation perturb presences."""
    z = np.asarray(presence, dtype=np.float64)[..., groups.index]       # (n, ..., M)
    x = np.asarray(X, dtype=np.float64).reshape((len(X),) + (1,) * (z.ndim - 2) + (-1,))
    with np.errstate(invalid="ignore"):
        between = removal + z * (x - removal)
    return np.where(z == 1.0, x, np.where(z == 0.0, removal, between))


def _short(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return f"[{shown}{', ...' if len(names) > limit else ''}] ({len(names)} columns)"
