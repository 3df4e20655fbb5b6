"""MultiMNIST (Sener & Koltun, NeurIPS 2018, arXiv:1810.04650), built from the user's MNIST files.

Each input overlays two MNIST digits on a 36x36 canvas: the *left* one at the top left (rows and
columns 0..27), the *right* one shifted by 6 pixels down and right (6..33); where they overlap the
brighter pixel wins (pixel max). The canvas is resized to 28x28 by nearest neighbour (PIL's
convention: output pixel ``i`` reads input ``floor((i + 0.5) * 36 / 28)``). Tasks ``left`` and
``right`` classify the two digits (10 classes each).

.. note:: As in the reference, every image of a pool is the left digit once (in a seeded order)
   and its partner is drawn uniformly, with replacement, from the same pool (it may be the image
   itself). The paper has no validation split: here a seeded ``val_fraction`` of MNIST's training
   images forms a val *pool* before any pair is drawn, so no image is in two splits; the test split
   pairs MNIST's own test images (``t10k``).

MNIST's IDX files are read here (``struct`` + ``torch``), not downloaded: ``root`` holds
``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
``t10k-labels-idx1-ubyte``, each possibly gzipped (``.gz``), directly or in torchvision's
``MNIST/raw/``.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import torch

from ..errors import ConfigError
from ..tasks import TaskSpec
from .base import BENCHMARKS, MTLData, TensorMTLDataset
from .folders import check_fraction, check_max_images, check_root, check_seed, first_folder, listing

SPLITS = ("train", "val", "test")
SUBFOLDERS = ("", "MNIST/raw", "raw")  # root itself, torchvision's layout (root or root/MNIST given)
FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("t10k", "images"): "t10k-images-idx3-ubyte",
    ("t10k", "labels"): "t10k-labels-idx1-ubyte",
}
DIGIT = 28  # MNIST's side
CANVAS = 36  # the recipe's canvas side
SHIFT = 6  # the right digit's offset, in rows and columns
IDX_UBYTE = 0x08  # IDX type code of unsigned bytes


def _expected() -> str:
    return "MNIST's IDX files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-...)"


def _find_folder(root: Path) -> Path:
    for name in (FILES["train", "images"], FILES["train", "images"] + ".gz"):
        folder = first_folder(root, SUBFOLDERS, name)
        if folder is not None:
            return folder
    raise ConfigError(
        "root",
        f"no `{FILES['train', 'images']}[.gz]` in `{root}` or `{root / 'MNIST' / 'raw'}`; expected {_expected()}; "
        f"`{root}` holds: {listing(root)}",
    )


def _read_bytes(folder: Path, name: str) -> tuple[Path, bytes]:
    plain, packed = folder / name, folder / (name + ".gz")
    path = plain if plain.is_file() else packed
    if not path.is_file():
        raise ConfigError(
            "root", f"missing MNIST file `{name}[.gz]` in `{folder}`; expected {_expected()}; found: {listing(folder)}"
        )
    try:
        raw = path.read_bytes()
        return path, gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError, zlib.error) as err:  # gzip raises all three on damaged files
        raise ConfigError("root", f"cannot read `{path}`: {err}") from None


def read_idx(folder: Path, name: str, ndim: int) -> torch.Tensor:
    """The unsigned-byte array of the IDX file ``name`` (or ``name.gz``) in ``folder``, checked:
    magic number ``0x000008{ndim:02x}`` and as many bytes as its header announces."""
    path, data = _read_bytes(folder, name)
    expected = (IDX_UBYTE << 8) | ndim
    header = 4 + 4 * ndim
    magic = struct.unpack(">I", data[:4])[0] if len(data) >= 4 else None
    if magic != expected:
        found = f"0x{magic:08x}" if magic is not None else f"a file of {len(data)} bytes"
        raise ConfigError(
            "root",
            f"`{path}` is not an MNIST IDX file of {ndim} dimension(s): expected magic number 0x{expected:08x}, "
            f"found {found}",
        )
    if len(data) < header:
        raise ConfigError("root", f"`{path}` is truncated: {len(data)} bytes, shorter than its {header}-byte header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    size = math.prod(shape)
    if len(data) - header != size:
        raise ConfigError(
            "root",
            f"`{path}` is damaged: its header announces {'x'.join(map(str, shape))} = {size:,} bytes of data, "
            f"found {len(data) - header:,}",
        )
    return torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8).reshape(shape)


def read_mnist(folder: Path, part: str) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST's ``part`` (``train`` or ``t10k``): images ``(N, 28, 28)`` uint8 and labels ``(N,)`` int64."""
    images = read_idx(folder, FILES[part, "images"], 3)
    labels = read_idx(folder, FILES[part, "labels"], 1)
    where = folder / FILES[part, "images"]
    if tuple(images.shape[1:]) != (DIGIT, DIGIT):
        raise ConfigError(
            "root", f"`{where}` holds images of {images.shape[1]}x{images.shape[2]}; MultiMNIST needs MNIST's 28x28"
        )
    if len(images) != len(labels):
        raise ConfigError(
            "root",
            f"`{where}` holds {len(images):,} images but `{folder / FILES[part, 'labels']}` {len(labels):,} labels",
        )
    if len(labels) and int(labels.max()) > 9:
        raise ConfigError("root", f"`{folder / FILES[part, 'labels']}` holds label {int(labels.max())}; expected 0..9")
    return images, labels.to(torch.int64)


NEAREST_28 = [math.floor((i + 0.5) * CANVAS / DIGIT) for i in range(DIGIT)]  # PIL's nearest neighbour


def overlay(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """The recipe on ``(N, 28, 28)`` uint8 digits: the ``(N, 28, 28)`` uint8 MultiMNIST images."""
    canvas = torch.zeros(len(left), CANVAS, CANVAS, dtype=torch.uint8)
    canvas[:, :DIGIT, :DIGIT] = left
    shifted = canvas[:, SHIFT : SHIFT + DIGIT, SHIFT : SHIFT + DIGIT]
    canvas[:, SHIFT : SHIFT + DIGIT, SHIFT : SHIFT + DIGIT] = torch.maximum(shifted, right)
    rows = torch.tensor(NEAREST_28)
    return canvas[:, rows][:, :, rows]


def _pairs(
    images: torch.Tensor, labels: torch.Tensor, pool: torch.Tensor, cap: int | None, generator: torch.Generator
) -> TensorMTLDataset:
    # Partners are drawn for the whole pool before the cap, so a capped split is a prefix of the full one.
    partners = pool[torch.randint(len(pool), (len(pool),), generator=generator)]
    left, right = pool[:cap], partners[:cap]
    x = overlay(images[left], images[right]).unsqueeze(1).to(torch.float32) / 255.0
    return TensorMTLDataset(x, {"left": labels[left], "right": labels[right]})


@BENCHMARKS.register("multimnist")
def make_multimnist(
    seed: int = 0, root: str | None = None, val_fraction: float = 0.1, max_images: int | None = None
) -> MTLData:
    """MultiMNIST from the MNIST files in ``root`` (see the module docstring): deterministic given ``seed``.

    Args:
        root: the folder of MNIST's four IDX files (or torchvision's ``MNIST/raw/`` under it).
        val_fraction: the part of MNIST's training images that forms the val pool.
        max_images: at most this many images per split (the first of the seeded order), for quick runs.
    """
    seed = check_seed(seed)
    fraction = check_fraction("val_fraction", val_fraction)
    cap = check_max_images(max_images)
    folder = _find_folder(check_root(root, _expected()))
    train_images, train_labels = read_mnist(folder, "train")
    test_images, test_labels = read_mnist(folder, "t10k")
    n = len(train_images)
    n_val = max(1, round(fraction * n))
    if n - n_val < 1 or len(test_images) < 1:
        raise ConfigError(
            "root",
            f"`{folder}` holds {n} training and {len(test_images)} test images; MultiMNIST needs at least 2 "
            "training images (train and val pools) and 1 test image",
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    pools = {"train": order[n_val:], "val": order[:n_val], "test": torch.arange(len(test_images))}
    datasets = {}
    for k, split in enumerate(SPLITS):
        images, labels = (test_images, test_labels) if split == "test" else (train_images, train_labels)
        # A distinct stream per (seed, split), as in multidigits.
        generator = torch.Generator().manual_seed(seed * len(SPLITS) + k)
        datasets[split] = _pairs(images, labels, pools[split], cap, generator)
    tasks = [TaskSpec("left", "classification", num_classes=10), TaskSpec("right", "classification", num_classes=10)]
    info = {
        "benchmark": "multimnist",
        "seed": seed,
        "folder": str(folder),
        "val_fraction": fraction,
        "pool_sizes": {split: len(pool) for split, pool in pools.items()},
        "sizes": {split: len(ds) for split, ds in datasets.items()},
        "input_shape": [1, DIGIT, DIGIT],
    }
    return MTLData(datasets["train"], datasets["val"], datasets["test"], tasks, info)
