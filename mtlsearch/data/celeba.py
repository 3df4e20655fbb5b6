"""CelebA (Liu et al., ICCV 2015, arXiv:1411.7766): 40 binary face attributes, from the user's files.

``root`` holds the official files: ``img_align_celeba/*.jpg`` (the aligned and cropped faces,
178x218), ``list_attr_celeba.txt`` (the 40 attributes of every image, -1 or 1) and
``list_eval_partition.txt`` (each image's split: 0 train, 1 val, 2 test). They may sit directly in
``root``, in torchvision's ``root/celeba/``, or in the official archive's ``Img/``, ``Anno/`` and
``Eval/`` subfolders. Every attribute is a ``binary`` task (labels -1/1 become 0/1) named as in the
attribute file, except ``5_o_Clock_Shadow``, which is not an identifier and becomes
``Five_o_Clock_Shadow``; a space picks its tasks with its ``tasks:`` list.

Images are resized (bilinear, PIL) to ``size`` without cropping, as in the MGDA code of Sener &
Koltun (2018), and scaled to [0, 1] (no mean subtraction). The splits are the official ones;
``max_images`` keeps a seeded random subset of each split, in file order, for quick runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, show
from ..tasks import TaskSpec
from .base import BENCHMARKS, MTLData, TensorMTLDataset
from .folders import check_max_images, check_root, check_seed, check_size, listing

SPLITS = ("train", "val", "test")
PARTITION = {"0": "train", "1": "val", "2": "test"}
IMAGES = "img_align_celeba"
ATTRIBUTES = "list_attr_celeba.txt"
PARTITIONS = "list_eval_partition.txt"
# Where each file may be under the dataset folder: directly, or in the official archive's subfolders.
PLACES = {IMAGES: ("", "Img"), ATTRIBUTES: ("", "Anno"), PARTITIONS: ("", "Eval")}
RENAMED = {"5_o_Clock_Shadow": "Five_o_Clock_Shadow"}  # a task name must be an identifier
EXPECTED = f"CelebA's `{IMAGES}/`, `{ATTRIBUTES}` and `{PARTITIONS}`"


def task_name(attribute: str) -> str:
    """The task name of a CelebA attribute (the attribute itself when it is an identifier)."""
    return RENAMED.get(attribute, attribute)


def _find(root: Path) -> dict[str, Path]:
    """The path of each of the three official entries under ``root`` (or ``root/celeba``)."""
    for folder in (root, root / "celeba"):
        found = {}
        for name, places in PLACES.items():
            path = next((folder / p / name for p in places if (folder / p / name).exists()), None)
            if path is not None:
                found[name] = path
        if found:
            missing = [n + ("/" if n == IMAGES else "") for n in PLACES if n not in found]
            if missing:
                raise ConfigError(
                    "root",
                    f"missing {', '.join(f'`{m}`' for m in missing)} in `{folder}`; expected {EXPECTED}; "
                    f"found: {listing(folder)}",
                )
            if not found[IMAGES].is_dir():
                raise ConfigError(
                    "root", f"`{found[IMAGES]}` is not a folder; expected the folder of CelebA's jpg files"
                )
            return found
    raise ConfigError(
        "root", f"no CelebA files in `{root}` or `{root / 'celeba'}`; expected {EXPECTED}; found: {listing(root)}"
    )


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError("root", f"cannot read `{path}`: {err}") from None


def read_attributes(path: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """The attribute names and, per image file name, its 0/1 labels (uint8) of ``list_attr_celeba.txt``:
    a count line, a line of names, then ``NAME v1 ... vK`` with each value -1 or 1."""
    lines = _lines(path)
    if len(lines) < 2 or not lines[0].strip().isdigit():
        first = show(lines[0]) if lines else "an empty file"
        raise ConfigError(
            "root", f"`{path}` does not start with the image count (a line with one integer); found {first}"
        )
    names = lines[1].split()
    for name in names:
        if not task_name(name).isidentifier():
            raise ConfigError("root", f"`{path}` line 2 names attribute {show(name)}, which cannot be a task name")
    rows: dict[str, np.ndarray] = {}
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        values = fields[1:]
        if len(values) != len(names) or any(v not in ("-1", "1") for v in values):
            raise ConfigError(
                "root",
                f"`{path}` line {number}: expected an image name and {len(names)} values, each -1 or 1; "
                f"found {show(line)}",
            )
        rows[fields[0]] = (np.array(values, dtype=np.int8) > 0).astype(np.uint8)
    if int(lines[0]) != len(rows):
        raise ConfigError("root", f"`{path}` announces {int(lines[0]):,} images on line 1 but lists {len(rows):,}")
    return names, rows


def read_partition(path: Path) -> dict[str, list[str]]:
    """The image file names of each split in ``list_eval_partition.txt`` (``NAME 0|1|2`` per line)."""
    splits: dict[str, list[str]] = {s: [] for s in SPLITS}
    for number, line in enumerate(_lines(path), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in PARTITION:
            raise ConfigError(
                "root", f"`{path}` line {number}: expected an image name and 0, 1 or 2 (its split); found {show(line)}"
            )
        splits[PARTITION[fields[1]]].append(fields[0])
    for split in SPLITS:
        if not splits[split]:
            code = next(c for c, s in PARTITION.items() if s == split)
            raise ConfigError("root", f"`{path}` puts no image in the {split} split (code {code})")
    return splits


def load_images(folder: Path, names: Sequence[str], size: tuple[int, int]) -> torch.Tensor:
    """The images ``folder/name`` as ``(N, 3, H, W)`` float32 in [0, 1], resized to ``size``."""
    from PIL import Image, UnidentifiedImageError  # torchvision's dependency; imported when used

    out = torch.empty(len(names), 3, *size, dtype=torch.float32)
    for i, name in enumerate(names):
        path = folder / name
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB").resize((size[1], size[0]), Image.Resampling.BILINEAR)
        except FileNotFoundError:
            raise ConfigError(
                "root",
                f"missing image `{path}` (listed in {PARTITIONS}); `{folder}` holds: {listing(folder)}",
            ) from None
        except (OSError, UnidentifiedImageError) as err:
            raise ConfigError("root", f"cannot read image `{path}`: {err}") from None
        out[i] = torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1)
    return out.div_(255.0)


@BENCHMARKS.register("celeba")
def make_celeba(
    seed: int = 0, root: str | None = None, size: int | Sequence[int] = 64, max_images: int | None = None
) -> MTLData:
    """CelebA from the official files in ``root`` (see the module docstring).

    Args:
        root: the folder of ``img_align_celeba/``, ``list_attr_celeba.txt`` and ``list_eval_partition.txt``.
        size: the side of the square images (or ``[height, width]``).
        max_images: at most this many images per split (a seeded random subset), for quick runs.
    """
    seed = check_seed(seed)
    shape = check_size(size)
    cap = check_max_images(max_images)
    files = _find(check_root(root, EXPECTED))
    attributes, rows = read_attributes(files[ATTRIBUTES])
    names_of = read_partition(files[PARTITIONS])
    tasks = [TaskSpec(task_name(a), "binary") for a in attributes]
    datasets = {}
    for k, split in enumerate(SPLITS):
        names = names_of[split]
        if cap is not None and cap < len(names):
            keep = torch.randperm(len(names), generator=torch.Generator().manual_seed(seed * len(SPLITS) + k))[:cap]
            names = [names[i] for i in sorted(keep.tolist())]
        missing = next((n for n in names if n not in rows), None)
        if missing is not None:
            raise ConfigError("root", f"image `{missing}` of `{files[PARTITIONS]}` has no row in `{files[ATTRIBUTES]}`")
        labels = torch.from_numpy(np.stack([rows[n] for n in names])).to(torch.float32)
        x = load_images(files[IMAGES], names, shape)
        datasets[split] = TensorMTLDataset(x, {t.name: labels[:, j].contiguous() for j, t in enumerate(tasks)})
    info = {
        "benchmark": "celeba",
        "seed": seed,
        "folder": str(files[IMAGES].parent),
        "sizes": {split: len(ds) for split, ds in datasets.items()},
        "input_shape": [3, *shape],
    }
    return MTLData(datasets["train"], datasets["val"], datasets["test"], tasks, info)
