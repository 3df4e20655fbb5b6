"""Cityscapes (Cordts et al., CVPR 2016) in the preprocessed layout of MTAN (Liu et al., CVPR 2019)
and LibMTL: semantic segmentation (7 or 19 classes) and depth of street scenes.

``root`` holds ``{train,val}/{image,label_7,label_19,depth}/N.npy`` (2,975 train and 500 val
files): ``image`` 128x256x3 (RGB in [0, 1]), ``label_7`` / ``label_19`` 128x256 (7 or 19
classes, -1 = ignored), ``depth`` 128x256x1 (MTAN's inverse depth, 0 = no measurement). LibMTL's
copy names the 7-class folder ``label/``; it is read when ``label_7/`` is absent. See
:mod:`mtlsearch.data.npy_folders` for the checks and the resizing.

.. note:: The layout has no test split: ``val/`` becomes the test split and a seeded
   ``val_fraction`` of ``train/`` the val split.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import ConfigError, show
from ..tasks import TaskSpec
from .base import BENCHMARKS, MTLData
from .folders import check_root, check_split_arguments
from .npy_folders import Target, make_splits

CLASSES = (7, 19)
LIBMTL_LABELS = "label"  # LibMTL's name of the 7-class folder


def label_folder(root: Path, classes: int) -> str:
    """``label_{classes}``, or LibMTL's ``label`` for 7 classes when only that one exists."""
    own = f"label_{classes}"
    if classes == 7 and not (root / "train" / own).exists() and (root / "train" / LIBMTL_LABELS).is_dir():
        return LIBMTL_LABELS
    return own


@BENCHMARKS.register("cityscapes")
def make_cityscapes(
    seed: int = 0,
    root: str | None = None,
    classes: int = 7,
    size: int | Sequence[int] | None = None,
    val_fraction: float = 0.1,
    max_images: int | None = None,
) -> MTLData:
    """Cityscapes from the ``.npy`` files in ``root`` (see the module docstring): deterministic given ``seed``.

    Args:
        root: the folder that holds ``train/`` and ``val/``.
        classes: 7 or 19, the segmentation labels read (``label_7/`` or ``label_19/``).
        size: ``[height, width]`` (or one integer, a square) to resize to; ``None`` keeps 128x256.
        val_fraction: the part of ``train/`` that becomes the val split.
        max_images: at most this many images per split, for quick runs.
    """
    seed, shape, fraction, cap = check_split_arguments(seed, size, val_fraction, max_images)
    if isinstance(classes, bool) or not isinstance(classes, int) or classes not in CLASSES:
        raise ConfigError("classes", f"expected 7 or 19 (the label_7/ or label_19/ folders), found {show(classes)}")
    folder = check_root(root, "Cityscapes' `train/` and `val/` folders of .npy files (the MTAN/LibMTL layout)")
    targets = (
        Target(label_folder(folder, classes), "segmentation", "label", 0, classes),
        Target("depth", "depth", "depth", 1),
    )
    datasets, files = make_splits(folder, targets, seed, fraction, cap, shape)
    tasks = [TaskSpec("segmentation", "segmentation", num_classes=classes), TaskSpec("depth", "depth")]
    info = {
        "benchmark": "cityscapes",
        "seed": seed,
        "folder": str(folder),
        "classes": classes,
        "labels": targets[0].folder,
        "val_fraction": fraction,
        "val_files": files["val"],  # the files of train/ that form the val split
        "sizes": {split: len(ds) for split, ds in datasets.items()},
        "input_shape": list(datasets["train"].inputs.shape[1:]),
    }
    return MTLData(datasets["train"], datasets["val"], datasets["test"], tasks, info)
