"""Synthetic two-task regression with a controllable task relatedness (Ma et al., KDD 2018, MMoE).

Recipe of the MMoE paper's synthetic experiment: draw orthonormal ``u1, u2`` in R^d and set
``w1 = c*u1`` and ``w2 = c*(p*u1 + sqrt(1 - p^2)*u2)``, so the cosine of the two tasks' weight
vectors is ``p``. Inputs are ``x ~ N(0, I)`` and each label is

    y_k = w_k.x + sum_{i=1..m} sin(alpha_i * w_k.x + beta_i) + eps,   eps ~ N(0, noise_std^2)

with ``alpha_i = i`` and ``beta_i = i^2`` as in the reference. Tasks ``y1`` and ``y2`` are scored by
mean squared error (``mse``), the paper's loss and metric.

``p`` is not the correlation of the labels: the sine terms decorrelate them, and the measured
Pearson correlation is much lower (with the defaults about 0.0, 0.1 and 0.3 for p = 0, 0.5 and 0.9;
only p = 1 gives 1). ``info`` therefore records both ``correlation`` (p) and ``label_correlation``
(the Pearson correlation of y1 and y2 measured on the train split).
"""

from __future__ import annotations

import math
import numbers

import torch

from ..errors import ConfigError, show
from ..limits import check_bound
from ..tasks import TaskSpec
from .base import BENCHMARKS, MTLData, TensorMTLDataset


def _is_number(value: object) -> bool:
    # bool is a numbers.Real, but `correlation: true` in a config is a mistake, not 1.0.
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_int(name: str, value: object, minimum: int, bound: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(name, f"expected an integer >= {minimum}, found {show(value)}")
    check_bound(int(value), bound, name, minimum)  # before anything is allocated


def _check_arguments(seed, correlation, input_dim, sizes, num_sines, noise_std, scale) -> None:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ConfigError("seed", f"expected an integer, found {show(seed)}")
    # `not -1 <= p <= 1` is also true for NaN, which must be refused too.
    if not _is_number(correlation) or not -1.0 <= correlation <= 1.0:
        raise ConfigError("correlation", f"expected a number in [-1, 1], found {show(correlation)}")
    _check_int("input_dim", input_dim, 2, "input_dim")  # two orthonormal directions need two dimensions
    for name, n in sizes.items():
        _check_int(f"n_{name}", n, 1, "n_samples")
    _check_int("num_sines", num_sines, 0, "num_sines")
    if not _is_number(noise_std) or not math.isfinite(noise_std) or noise_std < 0:
        raise ConfigError("noise_std", f"expected a finite number >= 0, found {show(noise_std)}")
    if not _is_number(scale) or not math.isfinite(scale) or scale <= 0:
        raise ConfigError("scale", f"expected a finite number > 0, found {show(scale)}")


def _labels(z: torch.Tensor, num_sines: int) -> torch.Tensor:
    """``z + sum_{i=1..m} sin(i*z + i^2)`` for projections ``z = w.x`` (any shape)."""
    i = torch.arange(1, num_sines + 1, dtype=z.dtype)
    return z + torch.sin(z.unsqueeze(-1) * i + i * i).sum(-1)


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    denom = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum()) / denom if denom > 0 else float("nan")


@BENCHMARKS.register("mmoe_synthetic")
def make_mmoe_synthetic(
    seed: int = 0,
    correlation: float = 0.5,
    input_dim: int = 100,
    n_train: int = 6000,
    n_val: int = 2000,
    n_test: int = 2000,
    num_sines: int = 10,
    noise_std: float = 0.01,
    scale: float = 1.0,
) -> MTLData:
    """The MMoE synthetic benchmark (see the module docstring): deterministic given ``seed``."""
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    _check_arguments(seed, correlation, input_dim, sizes, num_sines, noise_std, scale)
    seed, input_dim, num_sines = int(seed), int(input_dim), int(num_sines)
    p, noise_std, scale = float(correlation), float(noise_std), float(scale)
    sizes = {k: int(v) for k, v in sizes.items()}
    n = sum(sizes.values())

    # Everything in float64 (labels are cast at the end): the sine terms at alpha = 10 amplify
    # rounding of w.x, and one generator in a fixed order makes the data a function of `seed`.
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(input_dim, 2, generator=g, dtype=torch.float64))
    u1, u2 = q[:, 0], q[:, 1]
    w = torch.stack([scale * u1, scale * (p * u1 + math.sqrt(1.0 - p * p) * u2)], dim=1)  # (d, 2)
    x = torch.randn(n, input_dim, generator=g, dtype=torch.float64)
    noise = noise_std * torch.randn(n, 2, generator=g, dtype=torch.float64)
    y = _labels(x @ w, num_sines) + noise  # (n, 2)

    x, y = x.to(torch.float32), y.to(torch.float32)
    splits = {}
    start = 0
    for name, size in sizes.items():
        part = slice(start, start + size)
        splits[name] = TensorMTLDataset(x[part], {"y1": y[part, 0], "y2": y[part, 1]})
        start += size

    train_targets = splits["train"].targets
    label_corr = _pearson(train_targets["y1"], train_targets["y2"])
    tasks = [TaskSpec("y1", "regression", metrics=("mse",)), TaskSpec("y2", "regression", metrics=("mse",))]
    info = {
        "benchmark": "mmoe_synthetic",
        "seed": seed,
        "correlation": p,
        # None (JSON null) rather than NaN when n_train = 1 leaves the correlation undefined.
        "label_correlation": round(label_corr, 4) if math.isfinite(label_corr) else None,
        "sizes": sizes,
        "input_shape": [input_dim],
    }
    return MTLData(splits["train"], splits["val"], splits["test"], tasks, info)
