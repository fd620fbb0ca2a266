"""Placeholder: being written (issue 14)."""

from __future__ import annotations

from typing import ClassVar

from mlflow_xai.plugin_api import Check, CheckContext


class ImportanceTest(Check):
    name: ClassVar[str] = "importance_test"
    description: ClassVar[str] = "being written"

    def supports(self, ctx: CheckContext) -> str | None:
        return "not written yet"
