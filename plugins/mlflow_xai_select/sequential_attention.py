"""``sequential_attention``: greedy forward selection by attention (Yasuda et al., ICLR 2023).

One small MLP is trained on the data (standardised features; cross-entropy for classes, squared
error for continuous targets) in ``n_select`` phases. Inputs are multiplied by a mask: 1 for the
features selected so far, and for the others a softmax over learnable logits (not rescaled:
the small weights make attending to a useful feature the cheapest way to use it, which is what
keeps the logits informative once the network has fitted). At the end of each
phase the unselected feature with the largest weight joins the selection: its weight stands in
for its marginal value given the features already chosen. The ranking is the selection order,
then the remaining features by their final weight. Runs on ``task.device`` (CUDA when asked).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from mlflow_xai.plugin_api import (
    SUBSET_DEFAULTS,
    ConfigError,
    ExplainTask,
    Selection,
    Selector,
    choose_subset,
)

from ._common import check_positive_int, standardized, targets_of

#: Learning rate of the attention logits relative to the network's.
ATTENTION_LR_FACTOR = 10.0


class SequentialAttention(Selector):
    name: ClassVar[str] = "sequential_attention"
    description: ClassVar[str] = (
        "Sequential Attention: trains a small torch MLP with softmax attention on the unselected "
        "features and adds the most attended one per phase (greedy forward selection)."
    )
    requires: ClassVar[tuple[str, ...]] = ("targets",)
    stochastic: ClassVar[bool] = True
    #: n_select: features chosen greedily (default: k when given, else min(10, d));
    #: epochs_per_step: passes over the rows per phase; hidden: MLP width; batch_size,
    #: learning_rate: Adam's; max_rows: rows used for training (sampled with the seed).
    defaults: ClassVar[dict[str, Any]] = {
        **SUBSET_DEFAULTS, "n_select": None, "epochs_per_step": 5, "hidden": 64,
        "batch_size": 256, "learning_rate": 0.003, "max_rows": 20000,
    }
    param_types: ClassVar[dict[str, str]] = {
        "n_select": "int > 0 | None", "epochs_per_step": "int >= 1", "hidden": "int >= 1",
        "batch_size": "int >= 1", "learning_rate": "float > 0", "max_rows": "int >= 1",
    }

    def select(self, task: ExplainTask) -> Selection:
        import torch

        params = self.validate_params()
        d = task.n_features
        n_select = params["n_select"] if params["n_select"] is not None else \
            (params["k"] if params["k"] is not None else min(10, d))
        n_select = min(check_positive_int(n_select, self.name, "n_select"), d)
        epochs = check_positive_int(params["epochs_per_step"], self.name, "epochs_per_step")
        hidden = check_positive_int(params["hidden"], self.name, "hidden")
        batch = check_positive_int(params["batch_size"], self.name, "batch_size")
        max_rows = check_positive_int(params["max_rows"], self.name, "max_rows")
        lr = params["learning_rate"]
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0:
            raise ConfigError(f"{self.name}: learning_rate must be a positive number, got {lr!r}.")
        y, discrete = targets_of(task, self.name)
        rng = np.random.default_rng(task.seed)
        X = task.X
        if len(X) > max_rows:
            rows = rng.choice(len(X), max_rows, replace=False)
            X, y = X[rows], y[rows]
        device = torch.device(task.device)
        with torch.random.fork_rng(devices=[] if device.type != "cuda" else None):
            torch.manual_seed(task.seed)
            order, weights = _train(torch, standardized(X), y, discrete, n_select, epochs,
                                    hidden, batch, float(lr), device, rng)
        chosen = set(order)
        rest = [j for j in np.argsort(-weights, kind="stable") if j not in chosen]
        ranking = np.array(order + rest)
        scores = np.empty(d)
        # Selected features outrank every weight (< 1) by construction; then the weights.
        scores[order] = 1.0 + (n_select - np.arange(n_select)) / n_select
        scores[rest] = weights[rest]
        return Selection(scores=scores, ranking=ranking,
                         selected=choose_subset(scores, params, own=np.array(order),
                                                ranking=ranking),
                         info={"selection_order": [task.feature_names[j] for j in order],
                               "rows": int(len(X))})


def _train(torch: Any, X: np.ndarray, y: np.ndarray, discrete: bool, n_select: int, epochs: int,
           hidden: int, batch: int, lr: float, device: Any, rng: np.random.Generator
           ) -> tuple[list[int], np.ndarray]:
    n, d = X.shape
    inputs = torch.as_tensor(X, dtype=torch.float32, device=device)
    if discrete:
        target = torch.as_tensor(y, dtype=torch.long, device=device)
        outputs, loss_fn = int(y.max()) + 1, torch.nn.functional.cross_entropy
    else:
        scale = float(y.std()) or 1.0
        target = torch.as_tensor((y - y.mean()) / scale, dtype=torch.float32, device=device)
        outputs = 1

        def loss_fn(pred: Any, t: Any) -> Any:
            return torch.nn.functional.mse_loss(pred[:, 0], t)

    net = torch.nn.Sequential(torch.nn.Linear(d, hidden), torch.nn.ReLU(),
                              torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
                              torch.nn.Linear(hidden, outputs)).to(device)
    logits = torch.zeros(d, device=device, requires_grad=True)
    # The attention logits learn faster than the network: with one shared rate they barely move
    # within a phase and the argmax is decided by noise.
    optimizer = torch.optim.Adam([{"params": net.parameters(), "lr": lr},
                                  {"params": [logits], "lr": lr * ATTENTION_LR_FACTOR}])
    selected = torch.zeros(d, dtype=torch.bool, device=device)
    order: list[int] = []

    def attention() -> Any:
        masked = logits.masked_fill(selected, float("-inf"))
        free = int((~selected).sum())
        weights = torch.softmax(masked, dim=0) if free else torch.zeros_like(logits)
        return torch.where(selected, torch.ones_like(logits), weights)

    for _ in range(n_select):
        for _ in range(epochs):
            for idx in np.array_split(rng.permutation(n), max(1, n // batch)):
                index = torch.as_tensor(idx, device=device)
                optimizer.zero_grad()
                loss = loss_fn(net(inputs[index] * attention()), target[index])
                loss.backward()
                optimizer.step()
        with torch.no_grad():
            weights = attention().masked_fill(selected, float("-inf"))
            best = int(torch.argmax(weights))
        order.append(best)
        selected[best] = True
    with torch.no_grad():
        free = ~selected
        final = torch.zeros(d, device=device)
        if bool(free.any()):
            final[free] = torch.softmax(logits[free], dim=0)
    return order, final.cpu().numpy().astype(float)
