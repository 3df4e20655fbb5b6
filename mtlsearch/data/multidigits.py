"""MultiDigits: two scikit-learn digits side by side, three related tasks.

Each input is a 1x8x16 image made of two 8x8 digits from scikit-learn's ``load_digits()`` (1,797
images, UCI optical recognition of handwritten digits; ships with scikit-learn, so no download).
Tasks: ``left`` and ``right`` classify each digit (10 classes); ``sum`` regresses the sum of the
two labels, centred (left + right - 9, so -9..9). The tasks are related in a useful way: ``left``
and ``right`` need the same digit features on different halves of the image, and ``sum`` needs
both, so sharing layers should help while the two classifiers compete for where they look.

The base images are partitioned 60/20/20 into train / val / test *pools* before any pair is drawn,
and each split pairs images of its own pool only, so no base image is seen in two splits.
"""

from __future__ import annotations

import numbers

import torch

from ..errors import ConfigError, show
from ..limits import check_bound
from ..tasks import TaskSpec
from .base import BENCHMARKS, MTLData, TensorMTLDataset, split_indices
from .folders import check_seed

NUM_BASE_IMAGES = 1797  # len(sklearn.datasets.load_digits().images)
POOL_FRACTIONS = (0.6, 0.2, 0.2)
SPLITS = ("train", "val", "test")


def _check_int(name: str, value: object, minimum: int) -> None:
    # bool is an int subclass, but `n_train: true` in a config is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(name, f"expected an integer >= {minimum}, found {show(value)}")
    check_bound(int(value), "n_samples", name, minimum)  # before anything is allocated


def digit_pools(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices into ``load_digits()`` of the train / val / test pools (60/20/20) for ``seed``."""
    return split_indices(NUM_BASE_IMAGES, POOL_FRACTIONS, int(seed))


def _load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digit images as float32 in [0, 1], shape (1797, 8, 8), and their int64 labels."""
    # Imported here so that importing mtlsearch.data does not pay for scikit-learn.
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32) / 16.0  # pixel values are 0..16
    labels = torch.as_tensor(digits.target, dtype=torch.int64)
    return images, labels


def _pairs(
    images: torch.Tensor, labels: torch.Tensor, pool: torch.Tensor, n: int, generator: torch.Generator
) -> TensorMTLDataset:
    """``n`` side-by-side pairs drawn uniformly (with replacement) from the images of ``pool``."""
    picks = pool[torch.randint(len(pool), (n, 2), generator=generator)]
    left, right = picks[:, 0], picks[:, 1]
    inputs = torch.cat([images[left], images[right]], dim=-1).unsqueeze(1)  # (n, 1, 8, 16)
    y_left, y_right = labels[left], labels[right]
    targets = {"left": y_left, "right": y_right, "sum": (y_left + y_right - SUM_CENTRE).to(torch.float32)}
    return TensorMTLDataset(inputs.contiguous(), targets)


# `sum` is centred (left + right - 9) so that a fresh head (output near 0) starts at the mean;
# MAE is unchanged by the shift and stays in digit units.
SUM_CENTRE = 9


@BENCHMARKS.register("multidigits")
def make_multidigits(seed: int = 0, n_train: int = 3000, n_val: int = 600, n_test: int = 600) -> MTLData:
    """The MultiDigits benchmark (see the module docstring): deterministic given ``seed``."""
    check_seed(seed)
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    for split, n in sizes.items():
        _check_int(f"n_{split}", n, 1)
    seed = int(seed)
    sizes = {k: int(v) for k, v in sizes.items()}

    images, labels = _load_digits()
    pools = dict(zip(SPLITS, digit_pools(seed)))
    datasets = {}
    for k, split in enumerate(SPLITS):
        # A distinct stream per (seed, split): seed * 3 + k never repeats across seeds and splits,
        # so changing one split's size leaves the other splits' samples unchanged.
        generator = torch.Generator().manual_seed(seed * len(SPLITS) + k)
        datasets[split] = _pairs(images, labels, pools[split], sizes[split], generator)

    tasks = [
        TaskSpec("left", "classification", num_classes=10),
        TaskSpec("right", "classification", num_classes=10),
        TaskSpec("sum", "regression", metrics=("mae",)),
    ]
    info = {
        "benchmark": "multidigits",
        "seed": seed,
        "sizes": sizes,
        "pool_sizes": {split: len(pools[split]) for split in SPLITS},
        "input_shape": [1, 8, 16],
    }
    return MTLData(datasets["train"], datasets["val"], datasets["test"], tasks, info)
