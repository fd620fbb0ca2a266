"""Progress bars: tqdm when a person is watching, silent in CI logs or when asked."""

from __future__ import annotations

import os
import sys
from typing import Any

PROGRESS_ENV = "MLFLOW_XAI_PROGRESS"


def progress_enabled(progress: bool | None) -> bool:
    """``progress=None`` means: show a bar only on an interactive terminal outside CI."""
    if progress is not None:
        return bool(progress)
    env = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if env in ("0", "false", "no", "off"):
        return False
    if env in ("1", "true", "yes", "on"):
        return True
    return sys.stderr.isatty() and not os.environ.get("CI")


def progress_bar(total: int, desc: str, progress: bool | None) -> Any:
    if not progress_enabled(progress):
        return _NoBar()  # tqdm is not even imported (the GPU check runs without it)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="row", leave=False, dynamic_ncols=True)


class _NoBar:
    """What a silenced bar needs to answer: the calls ``pipeline`` and ``checking`` make."""

    def update(self, n: int = 1) -> None:
        pass

    def set_description(self, desc: str) -> None:
        pass

    def close(self) -> None:
        pass
