"""The options YAML file of ``mlflow-xai watch --config`` and ``mlflow-xai explain --config``.

One loader, so that both commands accept and refuse the same keys with the same messages::

    data: reference.parquet          # rows to explain with; relative to this file
    allowed_sources: [/shared/eval]  # watch only: where a run's data sets may be read
    targets: label
    explainers: {kernel_shap: {n_samples: 256}}
    checks: [agreement, completeness]
    max_rows: 200
    budget_s: 60

Every key but ``data`` and ``allowed_sources`` is an :class:`~mlflow_xai.config.XaiConfig`
option (a keyword argument of :func:`mlflow_xai.explain`); an unknown key, method or parameter
is refused with a :class:`~mlflow_xai.errors.ConfigError` that names it (and the closest valid
name), before any model is loaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow_xai.config import XaiConfig, check_methods
from mlflow_xai.errors import ConfigError

#: Keys of the file that are not explain() options.
OWN_CONFIG_KEYS = frozenset({"data", "allowed_sources"})
#: File types the ``data`` key may name.
DATA_SUFFIXES = (".parquet", ".csv")


@dataclass
class ConfigFile:
    """A loaded options file.

    Attributes:
        options: the explain() options: ``defaults``, then the file's, then ``overrides``.
        config: ``options`` validated (names, parameters and the policy checked).
        file_options: the explain() options exactly as the file wrote them.
        path: the file (``None``: no file, only defaults and overrides).
        data_path: the file's ``data``, made absolute against the file's folder.
        allowed_sources: the file's ``allowed_sources`` (folders made absolute likewise).
    """

    options: dict[str, Any]
    config: XaiConfig
    file_options: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    data_path: str | None = None
    allowed_sources: list[str] = field(default_factory=list)


def load_config_file(path: str | os.PathLike | None, *, label: str = "config",
                     defaults: dict[str, Any] | None = None,
                     overrides: dict[str, Any] | None = None) -> ConfigFile:
    """Read and validate an options file; ``label`` names it in messages ("watch config").

    ``defaults`` go under the file's options and ``overrides`` over them. Unknown keys, methods
    and parameters, a bad value, a ``data`` file that does not exist or is neither .parquet nor
    .csv, and a malformed ``allowed_sources`` raise :class:`ConfigError`.
    """
    mapping = read_mapping(path, label=label)
    file_options = {k: v for k, v in mapping.items() if k not in OWN_CONFIG_KEYS}
    options = {**(defaults or {}), **file_options, **(overrides or {})}
    config = validate_options(options, where=label)
    data_path = None
    if mapping.get("data") is not None:
        # A relative path is relative to the config file, not to the command's cwd.
        data_path = str((Path(path).parent / str(mapping["data"])).resolve())
        _check_data_path(data_path)
    allowed = _allowed_sources(mapping.get("allowed_sources"), path)
    return ConfigFile(options=options, config=config, file_options=file_options,
                      path=None if path is None else Path(path), data_path=data_path,
                      allowed_sources=allowed)


def read_mapping(path: str | os.PathLike | None, *, label: str = "config") -> dict[str, Any]:
    """The file's YAML mapping, unvalidated (``{}`` without a file)."""
    import yaml

    if path is None:
        return {}
    path = Path(path)
    try:
        mapping = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {label} {path}: {exc}") from exc
    if not isinstance(mapping, dict):
        raise ConfigError(f"{label} {path} must be a mapping, e.g. "
                          "{data: eval.parquet, targets: label, max_rows: 200}.")
    return mapping


def validate_options(options: dict[str, Any], *, where: str = "options") -> XaiConfig:
    """``options`` as a validated :class:`XaiConfig`; unknown keys, method names and
    parameters (and an unreadable policy) raise :class:`ConfigError`."""
    config = XaiConfig.from_mapping(options, ignore=OWN_CONFIG_KEYS, where=where)
    check_methods(config)
    return config


def read_reference(path: str, targets: Any = None) -> Any:
    """The ``data`` file as a DataFrame; a string ``targets`` must be one of its columns."""
    import pandas as pd

    _check_data_path(path)
    data = pd.read_parquet(path) if path.endswith(".parquet") else pd.read_csv(path)
    if isinstance(targets, str) and targets not in data.columns:
        raise ConfigError(f"targets column '{targets}' is not in {path} "
                          f"(columns: {', '.join(map(str, data.columns))}).")
    return data


def _check_data_path(path: str) -> None:
    if not Path(path).exists():
        raise ConfigError(f"reference data {path} does not exist.")
    if not path.endswith(DATA_SUFFIXES):
        raise ConfigError(f"reference data must be a .parquet or .csv file, got {path}.")


def _allowed_sources(value: Any, config_path: Any) -> list[str]:
    """``allowed_sources``: a list of URL prefixes or folders (relative to the config file)."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError("allowed_sources must be a list of folders or URL prefixes, e.g. "
                          "[/data/reference, s3://team-bucket/eval/].")
    out = []
    for entry in value:
        if "://" in entry or entry.startswith("/") or config_path is None:
            out.append(entry)
        else:
            out.append(str((Path(config_path).parent / entry).resolve()))
    return out
