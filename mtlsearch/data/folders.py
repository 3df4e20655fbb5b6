"""Reading a dataset that the user brings as a local folder: the shared checks of the loaders.

The standard-benchmark loaders (``multimnist``, ``celeba``, ``nyuv2``, ``cityscapes``) read files in
the layout of the code bases that made them common; nothing is downloaded. Every problem with the
folder is a :class:`~mtlsearch.errors.ConfigError` at ``root`` (reported as ``data.root``) that
names the path expected and what is there instead, so a wrong ``root`` is fixed from the message
alone.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from ..errors import ConfigError, show
from ..limits import check_bound

SHOWN_ENTRIES = 8  # entries of a folder listed in an error


def check_seed(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError("seed", f"expected an integer, found {show(value)}")
    return int(value)


def check_max_images(value: object) -> int | None:
    """``max_images``: ``None`` (every image) or an integer >= 1, the cap per split."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError("max_images", f"expected an integer >= 1 or null (every image), found {show(value)}")
    check_bound(int(value), "n_samples", "max_images", 1)
    return int(value)


def check_fraction(name: str, value: object) -> float:
    """A fraction strictly between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 < float(value) < 1.0:
        raise ConfigError(name, f"expected a number in (0, 1), found {show(value)}")
    return float(value)


def check_split_arguments(
    seed: object, size: object, val_fraction: object, max_images: object
) -> tuple[int, tuple[int, int] | None, float, int | None]:
    """The common arguments of a loader of ``.npy`` folders, checked: the seed, ``size`` (``None``
    keeps the files' size), ``val_fraction`` and ``max_images``."""
    checked_seed = check_seed(seed)
    shape = None if size is None else check_size(size, optional=True)
    return checked_seed, shape, check_fraction("val_fraction", val_fraction), check_max_images(max_images)


def check_size(value: object, optional: bool = False) -> tuple[int, int]:
    """``size``: an integer (a square) or ``[height, width]``, each side in [1, 4096]. ``optional``
    only changes the message: the caller accepts ``null`` (keep the files' size) too."""
    sides = [value, value] if isinstance(value, int) and not isinstance(value, bool) else value
    if (
        isinstance(sides, (list, tuple))
        and len(sides) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= 4096 for s in sides)
    ):
        return int(sides[0]), int(sides[1])
    allowed = "an integer (a square) or [height, width]" + (", or null (keep the files' size)" if optional else "")
    raise ConfigError("size", f"expected {allowed}, each side in [1, 4096], found {show(value)}")


def check_root(value: object, what: str) -> Path:
    """The folder ``root`` names (``~`` expanded; a relative path is read from the current folder)."""
    if value is None:
        raise ConfigError("root", f"missing: set it to the folder that holds {what}")
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise ConfigError("root", f"expected the path of the folder that holds {what}, found {show(value)}")
    root = Path(os.path.expanduser(str(value)))
    if not root.is_dir():
        parent = next((p for p in root.parents if p.is_dir()), None)
        there = f"; `{parent}` exists and holds: {listing(parent)}" if parent is not None and parent != root else ""
        kind = "a file, not a folder" if root.exists() else "no such folder"
        raise ConfigError("root", f"`{root}` is {kind}; expected the folder that holds {what}{there}")
    return root


def listing(folder: Path, limit: int = SHOWN_ENTRIES) -> str:
    """What ``folder`` holds, for an error: up to ``limit`` names (folders end in ``/``)."""
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError as err:
        return f"nothing readable ({err.strerror or err})"
    if not entries:
        return "nothing (it is empty)"
    names = [p.name + ("/" if p.is_dir() else "") for p in entries[:limit]]
    more = f" and {len(entries) - limit:,} more" if len(entries) > limit else ""
    return ", ".join(names) + more


def first_folder(root: Path, candidates: Sequence[str], marker: str) -> Path | None:
    """The first of ``root / c`` for ``c`` in ``candidates`` that holds ``marker``."""
    for c in candidates:
        folder = root / c if c else root
        if (folder / marker).exists():
            return folder
    return None


def resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """``(N, C, H, W)`` resized to ``size``: ``area`` (averaging, for images), ``nearest-exact``
    (labels and masked maps: no value is invented) or ``bilinear``. A tensor already of that size
    is returned as it is."""
    if tuple(x.shape[-2:]) == size:
        return x
    dtype = x.dtype
    out = torch.nn.functional.interpolate(x.to(torch.float32), size=size, mode=mode)
    return out.to(dtype) if not dtype.is_floating_point else out
