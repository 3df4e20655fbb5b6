"""NYUv2 (Silberman et al., ECCV 2012) in the preprocessed layout of MTAN (Liu et al., CVPR 2019)
and LibMTL: 13-class semantic segmentation, depth and surface normals of indoor scenes.

``root`` holds ``{train,val}/{image,label,depth,normal}/N.npy`` (795 train and 654 val files):
``image`` 288x384x3 (RGB in [0, 1]), ``label`` 288x384 (13 classes, -1 = ignored),
``depth`` 288x384x1 (0 = no measurement), ``normal`` 288x384x3 (unit vectors, zeros where
invalid); see :mod:`mtlsearch.data.npy_folders` for the checks and the resizing.

.. note:: The layout has no test split: ``val/`` becomes the test split and a seeded
   ``val_fraction`` of ``train/`` the val split. MTAN and LibMTL report on ``val/`` after training
   on all of ``train/``.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..tasks import TaskSpec
from .base import BENCHMARKS, MTLData
from .folders import check_root, check_split_arguments
from .npy_folders import Target, make_splits

CLASSES = 13
TARGETS = (
    Target("label", "segmentation", "label", 0, CLASSES),
    Target("depth", "depth", "depth", 1),
    Target("normal", "normals", "normal", 3),
)


@BENCHMARKS.register("nyuv2")
def make_nyuv2(
    seed: int = 0,
    root: str | None = None,
    size: int | Sequence[int] | None = None,
    val_fraction: float = 0.1,
    max_images: int | None = None,
) -> MTLData:
    """NYUv2 from the ``.npy`` files in ``root`` (see the module docstring): deterministic given ``seed``.

    Args:
        root: the folder that holds ``train/`` and ``val/``.
        size: ``[height, width]`` (or one integer, a square) to resize to; ``None`` keeps 288x384.
        val_fraction: the part of ``train/`` that becomes the val split.
        max_images: at most this many images per split, for quick runs.
    """
    seed, shape, fraction, cap = check_split_arguments(seed, size, val_fraction, max_images)
    folder = check_root(root, "NYUv2's `train/` and `val/` folders of .npy files (the MTAN/LibMTL layout)")
    datasets, files = make_splits(folder, TARGETS, seed, fraction, cap, shape)
    tasks = [
        TaskSpec("segmentation", "segmentation", num_classes=CLASSES),
        TaskSpec("depth", "depth"),
        TaskSpec("normals", "normals"),
    ]
    info = {
        "benchmark": "nyuv2",
        "seed": seed,
        "folder": str(folder),
        "val_fraction": fraction,
        "val_files": files["val"],  # the files of train/ that form the val split
        "sizes": {split: len(ds) for split, ds in datasets.items()},
        "input_shape": list(datasets["train"].inputs.shape[1:]),
    }
    return MTLData(datasets["train"], datasets["val"], datasets["test"], tasks, info)
