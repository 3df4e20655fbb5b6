"""The preprocessed ``.npy`` layout of MTAN (Liu et al., CVPR 2019, arXiv:1803.10704) and LibMTL,
in which NYUv2 and Cityscapes are commonly shared: one file per image and per target.

::

    root/train/image/0.npy ... root/train/<target>/0.npy ...
    root/val/image/0.npy   ... root/val/<target>/0.npy   ...

Every folder of a split holds ``0.npy`` to ``{N-1}.npy`` for the same ``N``. Arrays are
height x width (x channels): ``image`` ``(H, W, 3)``, a segmentation label ``(H, W)`` (class
indices, ``-1`` = ignored pixel, possibly stored as floats), ``depth`` ``(H, W, 1)`` (0 = no
measurement), ``normal`` ``(H, W, 3)`` (unit vectors, zeros where invalid). The reference loaders
(MTAN's ``create_dataset.py``, LibMTL's ``examples/{nyu,cityscapes}/create_dataset.py``) move the
channel axis first and cast every array with ``.float()``, so no dtype is fixed: any real dtype
is read.

The layout has no test split: the files of ``val`` become the *test* split, and a seeded
``val_fraction`` of the files of ``train`` becomes the *val* split (the rest trains).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from .base import TensorMTLDataset
from .folders import listing, resize

FOLDER_SPLITS = ("train", "val")  # the layout's folders; val becomes the test split
NORMAL_TOLERANCE = 1e-2  # how far from length 1 a stored normal may be (it is renormalised)
_NPY = re.compile(r"(0|[1-9][0-9]*)\.npy")


@dataclass(frozen=True)
class Target:
    """One target folder of the layout and how its arrays become a task's targets.

    ``channels``: the trailing channels of a stored array (0: an ``(H, W)`` map); ``kind``:
    ``label`` (class indices in ``[-1, classes)``), ``depth`` (``>= 0``) or ``normal`` (unit
    vectors or zeros).
    """

    folder: str
    task: str
    kind: str
    channels: int
    classes: int = 0


def layout(root: Path, targets: tuple[Target, ...]) -> str:
    """The expected tree, for an error."""
    folders = ", ".join(["image", *(t.folder for t in targets)])
    return f"`{root}/{{train,val}}/{{{folders}}}/N.npy` (the MTAN/LibMTL .npy layout)"


def check_layout(root: Path, targets: tuple[Target, ...]) -> dict[str, int]:
    """The number of files of each split folder, after checking that every folder exists and
    holds ``0.npy`` .. ``{N-1}.npy`` for one ``N`` per split."""
    counts = {}
    for split in FOLDER_SPLITS:
        base = root / split
        if not base.is_dir():
            raise ConfigError(
                "root", f"missing folder `{base}`; expected {layout(root, targets)}; `{root}` holds: {listing(root)}"
            )
        found: dict[str, set[int]] = {}
        for name in ["image", *(t.folder for t in targets)]:
            folder = base / name
            if not folder.is_dir():
                raise ConfigError(
                    "root",
                    f"missing folder `{folder}`; expected {layout(root, targets)}; `{base}` holds: {listing(base)}",
                )
            found[name] = {int(m.group(1)) for p in folder.iterdir() if (m := _NPY.fullmatch(p.name))}
        n = len(found["image"])
        if n == 0:
            raise ConfigError("root", f"`{base / 'image'}` holds no N.npy file; found: {listing(base / 'image')}")
        expected = set(range(n))
        for name, indices in found.items():
            if indices != expected:
                gap = min(expected - indices, default=None)
                what = f"lacks {gap}.npy" if gap is not None else f"holds {max(indices - expected)}.npy"
                raise ConfigError(
                    "root",
                    f"`{base / name}` {what}; every folder of `{base}` needs 0.npy to {n - 1}.npy "
                    f"(`{base / 'image'}` holds {n} files)",
                )
        counts[split] = n
    return counts


def _load(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise ConfigError("root", f"cannot read `{path}`: {err}") from None
    if not isinstance(array, np.ndarray):  # an .npz archive under a .npy name
        raise ConfigError("root", f"`{path}` is an .npz archive; expected one array saved by numpy.save")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ConfigError("root", f"`{path}` holds an array of dtype {array.dtype}; expected a numeric array")
    return array


def _shape_error(path: Path, array: np.ndarray, expected: str) -> ConfigError:
    return ConfigError("root", f"`{path}` has shape {tuple(array.shape)}; expected {expected}")


def _map(path: Path, array: np.ndarray, hw: tuple[int, int], channels: int) -> np.ndarray:
    """A stored ``(H, W[, channels])`` array, shape checked, as ``(channels or 1, H, W)``."""
    ok_shapes: list[tuple[int, ...]] = [(*hw, channels)] if channels else [hw]
    if channels == 1:
        ok_shapes.append(hw)  # a depth map stored without its channel axis
    if tuple(array.shape) not in ok_shapes:
        raise _shape_error(path, array, " or ".join(str(s) for s in ok_shapes) + " (as the split's first image)")
    return np.moveaxis(array, -1, 0) if array.ndim == 3 else array[None]


def _floats(path: Path, array: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if not bool(torch.isfinite(t).all()):
        raise ConfigError("root", f"`{path}` holds NaN or infinite values")
    return t


def _convert(target: Target, path: Path, array: np.ndarray, hw: tuple[int, int]) -> torch.Tensor:
    """One stored target as the task's ``(C, H, W)`` tensor (a label: ``(1, H, W)`` int64)."""
    a = _map(path, array, hw, target.channels)
    if target.kind == "label":
        if np.issubdtype(a.dtype, np.floating) and not bool((a == np.round(a)).all()):
            raise ConfigError("root", f"`{path}` holds non-integer class labels; expected integers (-1 = ignored)")
        t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))
        low, high = int(t.min()), int(t.max())
        if low < -1 or high >= target.classes:
            raise ConfigError(
                "root",
                f"`{path}` holds labels in [{low}, {high}]; expected [-1, {target.classes - 1}] "
                f"({target.classes} classes, -1 = ignored)",
            )
        return t
    t = _floats(path, a)
    if target.kind == "depth" and bool((t < 0).any()):
        raise ConfigError("root", f"`{path}` holds negative depths; expected >= 0 (0 = no measurement)")
    if target.kind == "normal":
        norm = t.norm(dim=0, keepdim=True)
        valid = norm > 0
        if bool(((norm - 1).abs() > NORMAL_TOLERANCE)[valid].any()):
            raise ConfigError(
                "root", f"`{path}` holds normals whose length is not 1; expected unit vectors (zeros where invalid)"
            )
        t = torch.where(valid, t / norm.clamp(min=1e-12), torch.zeros_like(t))  # exactly unit length
    return t


def read_split(
    folder: Path, indices: list[int], targets: tuple[Target, ...], size: tuple[int, int] | None
) -> TensorMTLDataset:
    """The files ``indices`` of one split folder, resized to ``size`` (``None``: as stored).

    Images are resized by area averaging; targets by nearest neighbour, so that labels stay class
    indices and invalid pixels (label -1, depth 0, normal 0) are neither blurred into valid ones
    nor made up."""
    image0 = _load(folder / "image" / f"{indices[0]}.npy")
    if image0.ndim != 3 or image0.shape[2] != 3:
        raise _shape_error(folder / "image" / f"{indices[0]}.npy", image0, "(H, W, 3)")
    hw = (int(image0.shape[0]), int(image0.shape[1]))
    out_hw = size or hw
    x = torch.empty(len(indices), 3, *out_hw, dtype=torch.float32)
    ys: dict[str, torch.Tensor] = {}
    for i, index in enumerate(indices):
        path = folder / "image" / f"{index}.npy"
        image = _floats(path, _map(path, image0 if i == 0 else _load(path), hw, 3))
        x[i] = resize(image[None], out_hw, "area")[0]
        for target in targets:
            path = folder / target.folder / f"{index}.npy"
            y = resize(_convert(target, path, _load(path), hw)[None], out_hw, "nearest-exact")[0]
            if target.task not in ys:
                ys[target.task] = torch.empty(len(indices), *y.shape, dtype=y.dtype)
            ys[target.task][i] = y
    return TensorMTLDataset(x, {t.task: ys[t.task][:, 0] if t.kind == "label" else ys[t.task] for t in targets})


def make_splits(
    root: Path,
    targets: tuple[Target, ...],
    seed: int,
    val_fraction: float,
    cap: int | None,
    size: tuple[int, int] | None,
) -> tuple[dict[str, TensorMTLDataset], dict[str, list[int]]]:
    """The train / val / test splits of a dataset in the layout, and which files each holds
    (indices of ``train/`` for train and val, of ``val/`` for test)."""
    counts = check_layout(root, targets)
    n = counts["train"]
    n_val = max(1, round(val_fraction * n))
    if n - n_val < 1:
        raise ConfigError(
            "root",
            f"`{root / 'train' / 'image'}` holds {n} file(s); at least 2 are needed (val_fraction = {val_fraction} of "
            "them becomes the val split, the rest trains)",
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    files = {
        "train": sorted(order[n_val:])[:cap],
        "val": sorted(order[:n_val])[:cap],
        "test": list(range(counts["val"]))[:cap],
    }
    source = {"train": "train", "val": "train", "test": "val"}
    return {split: read_split(root / source[split], files[split], targets, size) for split in files}, files
