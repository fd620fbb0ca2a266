"""A pyfunc model whose predict never returns, for tests/test_timeouts.py.

In a module of its own, imported only when needed: it imports mlflow (slow to import), and
MLflow pickles the model by reference, so the worker process imports this module to load it.
"""

from __future__ import annotations

import time

import mlflow


class HangingModel(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        time.sleep(10**6)


def log_hanging_model():
    """Log it to the active run (no input example: MLflow would call predict on it)."""
    return mlflow.pyfunc.log_model(name="model", python_model=HangingModel(),
                                   pip_requirements=["numpy"])
