"""Placeholder: being written (issue 14)."""

from __future__ import annotations

from typing import ClassVar

from mlflow_xai.plugin_api import Check, CheckContext


class FlipTest(Check):
    name: ClassVar[str] = "flip_test"
    description: ClassVar[str] = "being written"

    def supports(self, ctx: CheckContext) -> str | None:
        return "not written yet"


class Responsiveness(Check):
    name: ClassVar[str] = "responsiveness"
    description: ClassVar[str] = "being written"

    def supports(self, ctx: CheckContext) -> str | None:
        return "not written yet"
