"""Synthetic data sets shaped like the ones teams explain first (nothing is downloaded).

:func:`adult_like` imitates the UCI "Adult" census table (income > 50K): numeric and string
columns, with a label that depends on both. :func:`adult_like_pipeline` is the model a new user
typically logs on it: a scikit-learn ``Pipeline`` of a ``ColumnTransformer`` (one-hot encoded
strings, numeric columns passed through) and a ``GradientBoostingClassifier``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

CATEGORIES: dict[str, list[str]] = {
    "workclass": ["Private", "Self-emp", "Government", "Never-worked"],
    "education": ["HS-grad", "Some-college", "Bachelors", "Masters", "Doctorate"],
    "marital_status": ["Married", "Never-married", "Divorced", "Widowed"],
    "occupation": ["Tech", "Sales", "Craft", "Admin", "Service", "Professional"],
    "sex": ["Female", "Male"],
}
NUMERIC = ["age", "hours_per_week", "capital_gain", "education_years"]


def adult_like(n_rows: int = 1000, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """``(X, y)``: 9 raw columns (4 numeric, 5 strings) and a 0/1 label, ``n_rows`` rows."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({
        "age": rng.integers(18, 80, n_rows).astype(float),
        "workclass": rng.choice(CATEGORIES["workclass"], n_rows, p=[0.6, 0.15, 0.2, 0.05]),
        "education": rng.choice(CATEGORIES["education"], n_rows, p=[0.35, 0.25, 0.25, 0.1, 0.05]),
        "marital_status": rng.choice(CATEGORIES["marital_status"], n_rows),
        "occupation": rng.choice(CATEGORIES["occupation"], n_rows),
        "sex": rng.choice(CATEGORIES["sex"], n_rows),
        "hours_per_week": np.clip(rng.normal(40, 10, n_rows), 5, 90).round(),
        "capital_gain": np.where(rng.random(n_rows) < 0.1, rng.exponential(5000, n_rows), 0.0),
    })
    years = {"HS-grad": 12, "Some-college": 14, "Bachelors": 16, "Masters": 18, "Doctorate": 21}
    X["education_years"] = X["education"].map(years).astype(float)
    score = (0.04 * (X["age"] - 40) + 0.05 * (X["hours_per_week"] - 40)
             + 0.3 * (X["education_years"] - 14) + 1.2 * (X["marital_status"] == "Married")
             + 0.8 * (X["occupation"].isin(["Tech", "Professional"]))
             + 0.0002 * X["capital_gain"] - 1.0)
    y = pd.Series((score + rng.logistic(size=n_rows) > 0).astype(int), name="income_over_50k")
    return X, y


def adult_like_pipeline(X: pd.DataFrame, y: Any, *, n_estimators: int = 100,
                        seed: int = 0) -> Any:
    """The fitted ``Pipeline(ColumnTransformer(OneHotEncoder | passthrough), GBC)``."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    strings = [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c])]
    numbers = [c for c in X.columns if c not in strings]
    prepare = ColumnTransformer([("onehot", OneHotEncoder(handle_unknown="ignore"), strings),
                                 ("numeric", "passthrough", numbers)])
    model = Pipeline([("prepare", prepare),
                      ("model", GradientBoostingClassifier(n_estimators=n_estimators,
                                                           random_state=seed))])
    return model.fit(X, y)
