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
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="row", disable=not progress_enabled(progress),
                leave=False, dynamic_ncols=True)
