"""Loaders of the standard benchmarks that users bring as local folders (mtlsearch.data).

Each test writes a few tiny files in exactly the layout the loader reads (MNIST's IDX files,
CelebA's official files, the MTAN/LibMTL ``.npy`` folders of NYUv2 and Cityscapes), then checks
the loader (shapes, dtypes, splits, determinism), its errors on a missing or malformed folder
(pinned text), and a one-trial, one-epoch search of the ready space in search_spaces/ with its
``root`` pointed at the tiny folder.
"""

from __future__ import annotations

import copy
import gzip
import json
import math
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import mtlsearch
from mtlsearch.data import BENCHMARKS, MTLData
from mtlsearch.data.celeba import make_celeba
from mtlsearch.data.multimnist import make_multimnist, overlay
from mtlsearch.errors import ConfigError

SPACES = Path(__file__).resolve().parent.parent / "search_spaces"
SPLITS = ("train", "val", "test")
# given single-task baselines of the ready spaces' tasks (what Delta-MTL divides by)
DIGITS = {"left": {"accuracy": 0.5}, "right": {"accuracy": 0.5}}
FACES = {"Smiling": {"accuracy": 0.5}, "Male": {"accuracy": 0.5}, "Young": {"accuracy": 0.5}}
STREET = {"segmentation": {"miou": 0.1}, "depth": {"abs_err": 2.0}}
INDOOR = {**STREET, "normals": {"mean_angle": 60.0}}


def _assert_same(a: MTLData, b: MTLData) -> None:
    for split in SPLITS:
        sa, sb = getattr(a, split), getattr(b, split)
        assert torch.equal(sa.inputs, sb.inputs)
        assert sa.targets.keys() == sb.targets.keys()
        assert all(torch.equal(sa.targets[k], sb.targets[k]) for k in sa.targets)


def _assert_targets_fit(data: MTLData) -> None:
    for split in SPLITS:
        targets = getattr(data, split).targets
        assert set(targets) == {t.name for t in data.tasks}
        for spec in data.tasks:
            spec.kind.check_targets(spec, targets[spec.name], f"{split}.{spec.name}")


def _search(space_file: str, root: Path, tmp_path: Path, baselines: dict, **data) -> object:
    """One trial of one epoch of the ready space ``space_file``, its ``root`` set to ``root``:
    the space as shipped, made small only in what costs time (epochs, channels, budget). The
    single-task baselines are given (a baseline trained on 2 val images may score exactly 0)."""
    raw = yaml.safe_load((SPACES / space_file).read_text())
    assert "root" in raw["data"], "a ready space names its folder in data.root"
    raw["data"].update(root=str(root), **data)
    raw["backbone"]["channels"] = 8
    raw["search_space"]["training"].update(epochs=1, batch_size=4)
    raw["baselines"] = baselines
    raw["run"].update(
        n_trials=1, storage=f"sqlite:///{tmp_path}/study.db", device="cpu", sampler="random", confirm=None
    )
    problem, run = mtlsearch.load(copy.deepcopy(raw))
    study = mtlsearch.run_search(problem, run)
    [trial] = study.trials
    assert trial.state.name == "COMPLETE", trial.user_attrs.get("fail_reason")
    assert all(math.isfinite(v) for v in trial.values)
    return problem


# --- MultiMNIST ------------------------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray, packed: bool = False) -> None:
    """An IDX file of unsigned bytes, as MNIST's (``packed``: gzipped, with ``.gz`` added)."""
    data = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data += array.astype(np.uint8).tobytes()
    if packed:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


def write_mnist(folder: Path, n_train: int = 8, n_test: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """Tiny MNIST files: the training files gzipped (as downloaded), the test files plain."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    write_idx(folder / "train-images-idx3-ubyte", arrays["train_images"], packed=True)
    write_idx(folder / "train-labels-idx1-ubyte", arrays["train_labels"], packed=True)
    write_idx(folder / "t10k-images-idx3-ubyte", arrays["test_images"])
    write_idx(folder / "t10k-labels-idx1-ubyte", arrays["test_labels"])
    return arrays


@pytest.fixture(scope="module")
def mnist(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path_factory.mktemp("mnist")
    return root, write_mnist(root)


def test_loaders_are_registered():
    for name in ("multimnist", "celeba", "nyuv2", "cityscapes"):
        assert name in BENCHMARKS


def test_multimnist_shapes_splits_and_labels(mnist):
    root, arrays = mnist
    data = make_multimnist(seed=0, root=str(root), val_fraction=0.25)
    assert data.sizes() == {"train": 6, "val": 2, "test": 4}
    assert [(t.name, t.type, t.num_classes) for t in data.tasks] == [
        ("left", "classification", 10),
        ("right", "classification", 10),
    ]
    for split in SPLITS:
        x = getattr(data, split).inputs
        assert x.dtype == torch.float32 and tuple(x.shape[1:]) == (1, 28, 28)
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    _assert_targets_fit(data)
    # train and val pools partition MNIST's training images; each is the left digit once
    images = torch.from_numpy(arrays["train_images"])
    lefts = {}
    for split in ("train", "val"):
        for x, y in zip(getattr(data, split).inputs, getattr(data, split).targets["left"]):
            # the top-left 6x6 block of the canvas is the left digit's alone (nearest rows 0..4 -> 0..5)
            match = [i for i in range(len(images)) if torch.equal(_top_left(x), _top_left_of(images[i]))]
            assert match and int(arrays["train_labels"][match[0]]) == int(y)
            lefts.setdefault(split, set()).update(match)
    assert not lefts["train"] & lefts["val"] and len(lefts["train"] | lefts["val"]) == 8
    assert data.info["pool_sizes"] == {"train": 6, "val": 2, "test": 4} and data.info["input_shape"] == [1, 28, 28]
    json.dumps(data.info)


def _top_left(x: torch.Tensor) -> torch.Tensor:
    return (x[0, :4, :4] * 255).round().to(torch.uint8)


def _top_left_of(digit: torch.Tensor) -> torch.Tensor:
    rows = [math.floor((i + 0.5) * 36 / 28) for i in range(4)]  # rows 0..4 of the canvas: left digit only
    return digit[rows][:, rows]


def test_multimnist_overlay_is_the_recipe_with_pils_nearest_resize():
    from PIL import Image

    rng = np.random.default_rng(1)
    left, right = rng.integers(0, 256, (2, 28, 28), dtype=np.uint8)
    canvas = np.zeros((36, 36), np.uint8)
    canvas[:28, :28] = left
    canvas[6:34, 6:34] = np.maximum(canvas[6:34, 6:34], right)
    expected = np.asarray(Image.fromarray(canvas).resize((28, 28), Image.Resampling.NEAREST))
    found = overlay(torch.from_numpy(left)[None], torch.from_numpy(right)[None])[0].numpy()
    assert found.dtype == np.uint8 and np.array_equal(found, expected)


def test_multimnist_is_deterministic_and_reads_torchvisions_layout(mnist, tmp_path):
    root, _ = mnist
    a = make_multimnist(seed=3, root=str(root), val_fraction=0.25)
    _assert_same(a, make_multimnist(seed=3, root=str(root), val_fraction=0.25))
    b = make_multimnist(seed=4, root=str(root), val_fraction=0.25)
    assert not torch.equal(a.train.inputs, b.train.inputs)
    write_mnist(tmp_path / "MNIST" / "raw")  # torchvision.datasets.MNIST(root) reads root/MNIST/raw
    _assert_same(make_multimnist(seed=0, root=str(tmp_path)), make_multimnist(seed=0, root=str(root)))
    capped = make_multimnist(seed=3, root=str(root), val_fraction=0.25, max_images=3)
    assert capped.sizes() == {"train": 3, "val": 2, "test": 3}
    assert torch.equal(capped.train.inputs, a.train.inputs[:3])  # a cap keeps a prefix


def test_multimnist_errors_name_the_path_and_what_is_there(tmp_path):
    missing = tmp_path / "nothing"
    with pytest.raises(ConfigError, match=re.escape(f"root: `{missing}` is no such folder; expected the folder")):
        make_multimnist(root=str(missing))
    with pytest.raises(ConfigError, match=r"^root: missing: set it to the folder that holds MNIST's IDX files"):
        make_multimnist()
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(
        ConfigError,
        match=re.escape(f"root: no `train-images-idx3-ubyte[.gz]` in `{tmp_path}` or `{tmp_path}/MNIST/raw`; ")
        + r".*; `.*` holds: notes\.txt$",
    ):
        make_multimnist(root=str(tmp_path))
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(
        ConfigError,
        match=re.escape(f"root: missing MNIST file `t10k-labels-idx1-ubyte[.gz]` in `{tmp_path}`; ")
        + r".*found: notes\.txt, t10k-images-idx3-ubyte, train-images-idx3-ubyte\.gz, train-labels-idx1-ubyte\.gz$",
    ):
        make_multimnist(root=str(tmp_path))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 12)
    with pytest.raises(
        ConfigError,
        match=re.escape(
            f"root: `{tmp_path}/t10k-labels-idx1-ubyte` is not an MNIST IDX file of 1 dimension(s): "
            "expected magic number 0x00000801, found 0x00000803"
        ),
    ):
        make_multimnist(root=str(tmp_path))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x0801, 4) + b"\x01\x02")
    with pytest.raises(ConfigError, match=re.escape("is damaged: its header announces 4 = 4 bytes of data, found 2")):
        make_multimnist(root=str(tmp_path))
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(ConfigError, match=re.escape(f"root: cannot read `{tmp_path}/train-images-idx3-ubyte.gz`: ")):
        make_multimnist(root=str(tmp_path))
    with pytest.raises(ConfigError, match=re.escape("val_fraction: expected a number in (0, 1), found 1.5")):
        make_multimnist(root=str(tmp_path), val_fraction=1.5)


def test_multimnist_ready_space_runs_a_search(mnist, tmp_path):
    root, _ = mnist
    problem = _search("multimnist.yaml", root, tmp_path, DIGITS, val_fraction=0.25)
    assert problem.task_names == ["left", "right"] and problem.input_shape == (1, 28, 28)


# --- CelebA ----------------------------------------------------------------------------------

ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()
CELEBA_SPLITS = [0, 0, 0, 0, 1, 1, 2, 2]  # list_eval_partition codes of the tiny set's 8 images


def write_celeba(folder: Path, seed: int = 0) -> np.ndarray:
    """Tiny CelebA files in the official layout; the 0/1 attribute matrix (images x 40)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (folder / "img_align_celeba").mkdir(parents=True, exist_ok=True)
    labels = rng.integers(0, 2, (len(CELEBA_SPLITS), len(ATTRIBUTES)))
    rows, partition = [str(len(CELEBA_SPLITS)), " ".join(ATTRIBUTES)], []
    for i, split in enumerate(CELEBA_SPLITS):
        name = f"{i + 1:06d}.jpg"
        pixels = rng.integers(0, 256, (22, 18, 3), dtype=np.uint8)  # 178x218 in the real set
        Image.fromarray(pixels).save(folder / "img_align_celeba" / name, quality=95)
        # the official file pads with two spaces before a 1, one before a -1
        rows.append(name + "".join(" -1" if v == 0 else "  1" for v in labels[i]))
        partition.append(f"{name} {split}")
    (folder / "list_attr_celeba.txt").write_text("\n".join(rows) + "\n")
    (folder / "list_eval_partition.txt").write_text("\n".join(partition) + "\n")
    return labels


@pytest.fixture(scope="module")
def celeba(tmp_path_factory) -> tuple[Path, np.ndarray]:
    root = tmp_path_factory.mktemp("celeba")
    return root, write_celeba(root)


def test_celeba_shapes_splits_and_labels(celeba):
    root, labels = celeba
    data = make_celeba(seed=0, root=str(root), size=16)
    assert data.sizes() == {"train": 4, "val": 2, "test": 2}
    names = [t.name for t in data.tasks]
    assert len(names) == 40 and names[0] == "Five_o_Clock_Shadow" and names[1:] == ATTRIBUTES[1:]
    assert {t.type for t in data.tasks} == {"binary"}
    start = 0
    for split in SPLITS:
        ds = getattr(data, split)
        assert ds.inputs.dtype == torch.float32 and tuple(ds.inputs.shape[1:]) == (3, 16, 16)
        assert 0.0 <= float(ds.inputs.min()) and float(ds.inputs.max()) <= 1.0
        n = len(ds)
        for j, name in enumerate(names):
            assert ds.targets[name].dtype == torch.float32
            assert ds.targets[name].tolist() == labels[start : start + n, j].tolist()
        start += n
    _assert_targets_fit(data)
    assert make_celeba(root=str(root), size=[12, 10]).train.inputs.shape == (4, 3, 12, 10)
    assert data.info["input_shape"] == [3, 16, 16]
    json.dumps(data.info)


def test_celeba_cap_is_a_seeded_subset_and_other_layouts_read(celeba, tmp_path):
    root, _ = celeba
    full = make_celeba(root=str(root), size=8)
    _assert_same(full, make_celeba(root=str(root), size=8))
    capped = make_celeba(root=str(root), size=8, max_images=2, seed=5)
    assert capped.sizes() == {"train": 2, "val": 2, "test": 2}
    rows = [i for i in range(4) if any(torch.equal(full.train.inputs[i], x) for x in capped.train.inputs)]
    assert len(rows) == 2 and torch.equal(full.train.inputs[rows], capped.train.inputs)  # file order kept
    _assert_same(capped, make_celeba(root=str(root), size=8, max_images=2, seed=5))
    # torchvision's root/celeba/, and the official archive's Img/, Anno/, Eval/ subfolders
    write_celeba(tmp_path / "celeba")
    _assert_same(make_celeba(root=str(tmp_path), size=8), full)
    official = tmp_path / "archive"
    for sub, name in (
        ("Img", "img_align_celeba"),
        ("Anno", "list_attr_celeba.txt"),
        ("Eval", "list_eval_partition.txt"),
    ):
        (official / sub).mkdir(parents=True)
        (tmp_path / "celeba" / name).rename(official / sub / name)
    _assert_same(make_celeba(root=str(official), size=8), full)


def test_celeba_errors_name_the_path_and_what_is_there(tmp_path):
    with pytest.raises(ConfigError, match=re.escape(f"root: no CelebA files in `{tmp_path}` or `{tmp_path}/celeba`;")):
        make_celeba(root=str(tmp_path))
    write_celeba(tmp_path)
    (tmp_path / "list_eval_partition.txt").unlink()
    with pytest.raises(
        ConfigError,
        match=re.escape(f"root: missing `list_eval_partition.txt` in `{tmp_path}`; expected CelebA's ")
        + r".*found: img_align_celeba/, list_attr_celeba\.txt$",
    ):
        make_celeba(root=str(tmp_path))
    write_celeba(tmp_path)
    attr = tmp_path / "list_attr_celeba.txt"
    lines = attr.read_text().splitlines()
    attr.write_text("\n".join([*lines[:4], lines[4].replace("-1", "0", 1), *lines[5:]]))
    with pytest.raises(
        ConfigError,
        match=re.escape(
            f"root: `{attr}` line 5: expected an image name and 40 values, each -1 or 1; found `000003.jpg"
        ),
    ):
        make_celeba(root=str(tmp_path))
    attr.write_text("\n".join(lines[:-1]))
    with pytest.raises(ConfigError, match=re.escape(f"root: `{attr}` announces 8 images on line 1 but lists 7")):
        make_celeba(root=str(tmp_path))
    attr.write_text("\n".join(lines))
    (tmp_path / "img_align_celeba" / "000007.jpg").unlink()
    with pytest.raises(
        ConfigError,
        match=re.escape(
            f"root: missing image `{tmp_path}/img_align_celeba/000007.jpg` (listed in list_eval_partition.txt)"
        ),
    ):
        make_celeba(root=str(tmp_path))
    (tmp_path / "img_align_celeba" / "000007.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(
        ConfigError, match=re.escape(f"root: cannot read image `{tmp_path}/img_align_celeba/000007.jpg`")
    ):
        make_celeba(root=str(tmp_path))
    with pytest.raises(ConfigError, match=re.escape("size: expected an integer (a square) or [height, width]")):
        make_celeba(root=str(tmp_path), size=[0, 4])


def test_celeba_ready_space_runs_a_search_on_its_chosen_attributes(celeba, tmp_path):
    root, _ = celeba
    problem = _search("celeba.yaml", root, tmp_path, FACES, size=16)
    assert problem.task_names == ["Smiling", "Male", "Young"]
    assert {t.type for t in problem.tasks} == {"binary"}


# --- NYUv2 and Cityscapes (the MTAN/LibMTL .npy layout) ----------------------------------------


def write_npy_layout(
    root: Path,
    counts: dict[str, int],
    hw: tuple[int, int],
    labels: dict[str, int],
    normals: bool,
    seed: int = 0,
    label_dtype: type = np.float32,
) -> None:
    """Tiny ``{train,val}/{image,<labels>,depth[,normal]}/N.npy`` files (real: 288x384 or 128x256):
    images (H, W, 3) float32 in [0, 1], labels (H, W) with -1 pixels, depth (H, W, 1) with zeros,
    normals (H, W, 3) unit vectors with zeros."""
    rng = np.random.default_rng(seed)
    h, w = hw
    for split, n in counts.items():
        for folder in ["image", *labels, "depth", *(["normal"] if normals else [])]:
            (root / split / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            np.save(root / split / "image" / f"{i}.npy", rng.random((h, w, 3), dtype=np.float32))
            for folder, classes in labels.items():
                label = rng.integers(-1, classes, (h, w)).astype(label_dtype)
                np.save(root / split / folder / f"{i}.npy", label)
            depth = rng.uniform(0.5, 10.0, (h, w, 1)).astype(np.float32)
            depth[0, :2] = 0.0  # no measurement
            np.save(root / split / "depth" / f"{i}.npy", depth)
            if normals:
                normal = rng.normal(size=(h, w, 3)).astype(np.float32)
                normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
                normal[-1, -2:] = 0.0  # invalid
                np.save(root / split / "normal" / f"{i}.npy", normal)


NYU_HW = (12, 16)  # 288x384 in the real files: the loader takes any size
CITY_HW = (8, 16)  # 128x256


@pytest.fixture(scope="module")
def nyu(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("nyuv2")
    write_npy_layout(root, {"train": 5, "val": 2}, NYU_HW, {"label": 13}, normals=True)
    return root


def test_nyuv2_shapes_splits_and_values(nyu):
    from mtlsearch.data.nyuv2 import make_nyuv2

    data = make_nyuv2(seed=0, root=str(nyu), val_fraction=0.4)
    assert data.sizes() == {"train": 3, "val": 2, "test": 2}
    assert [(t.name, t.type, t.num_classes) for t in data.tasks] == [
        ("segmentation", "segmentation", 13),
        ("depth", "depth", None),
        ("normals", "normals", None),
    ]
    h, w = NYU_HW
    for split in SPLITS:
        ds = getattr(data, split)
        assert ds.inputs.dtype == torch.float32 and tuple(ds.inputs.shape[1:]) == (3, h, w)
        seg, depth, normals = ds.targets["segmentation"], ds.targets["depth"], ds.targets["normals"]
        assert seg.dtype == torch.int64 and tuple(seg.shape[1:]) == (h, w) and int(seg.min()) == -1
        assert depth.dtype == torch.float32 and tuple(depth.shape[1:]) == (1, h, w)
        assert normals.dtype == torch.float32 and tuple(normals.shape[1:]) == (3, h, w)
    _assert_targets_fit(data)
    # train and val split train/ (sorted file order); test is val/ as stored
    train_files = {i for i in range(5) if any(_equal_file(nyu / "train", i, x) for x in data.train.inputs)}
    val_files = {i for i in range(5) if any(_equal_file(nyu / "train", i, x) for x in data.val.inputs)}
    assert len(train_files) == 3 and len(val_files) == 2 and not train_files & val_files
    assert data.info["val_files"] == sorted(val_files)
    assert all(_equal_file(nyu / "val", i, data.test.inputs[i]) for i in range(2))
    label = np.load(nyu / "val" / "label" / "1.npy")
    assert np.array_equal(data.test.targets["segmentation"][1].numpy(), label.astype(np.int64))
    depth = np.load(nyu / "val" / "depth" / "1.npy")
    assert np.array_equal(data.test.targets["depth"][1].numpy(), np.moveaxis(depth, -1, 0))
    assert data.info["input_shape"] == [3, h, w]
    json.dumps(data.info)


def _equal_file(folder: Path, index: int, x: torch.Tensor) -> bool:
    image = np.moveaxis(np.load(folder / "image" / f"{index}.npy"), -1, 0)
    return bool(np.array_equal(image, x.numpy()))


def test_nyuv2_downsamples_determinism_and_any_real_dtype(nyu, tmp_path):
    from mtlsearch.data.nyuv2 import make_nyuv2

    full = make_nyuv2(seed=0, root=str(nyu), val_fraction=0.4)
    _assert_same(full, make_nyuv2(seed=0, root=str(nyu), val_fraction=0.4))
    vals = {tuple(make_nyuv2(seed=s, root=str(nyu), val_fraction=0.4).info["val_files"]) for s in range(4)}
    assert len(vals) > 1  # the seed picks the val files
    small = make_nyuv2(seed=0, root=str(nyu), val_fraction=0.4, size=[6, 8])
    assert tuple(small.test.inputs.shape) == (2, 3, 6, 8)
    assert torch.allclose(small.test.inputs, torch.nn.functional.avg_pool2d(full.test.inputs, 2))  # area
    seg, small_seg = full.test.targets["segmentation"], small.test.targets["segmentation"]
    assert torch.equal(small_seg, seg[:, 1::2, 1::2])  # nearest: labels stay labels, -1 stays -1
    normals = small.test.targets["normals"].norm(dim=1)
    assert bool((((normals - 1).abs() < 1e-5) | (normals == 0)).all())
    capped = make_nyuv2(seed=0, root=str(nyu), val_fraction=0.4, max_images=1)
    assert capped.sizes() == {"train": 1, "val": 1, "test": 1}
    # labels stored as integers, images as float64: any real dtype is read
    write_npy_layout(tmp_path, {"train": 3, "val": 1}, NYU_HW, {"label": 13}, normals=True, label_dtype=np.int64)
    other = make_nyuv2(root=str(tmp_path))
    assert other.train.targets["segmentation"].dtype == torch.int64
    _assert_targets_fit(other)


def test_nyuv2_errors_name_the_path_and_what_is_there(tmp_path):
    from mtlsearch.data.nyuv2 import make_nyuv2

    (tmp_path / "nyuv2.zip").write_bytes(b"")
    with pytest.raises(
        ConfigError,
        match=re.escape(
            f"root: missing folder `{tmp_path}/train`; expected `{tmp_path}/{{train,val}}/"
            "{image, label, depth, normal}/N.npy` (the MTAN/LibMTL .npy layout); "
        )
        + re.escape(f"`{tmp_path}` holds: nyuv2.zip"),
    ):
        make_nyuv2(root=str(tmp_path))
    write_npy_layout(tmp_path, {"train": 3, "val": 1}, NYU_HW, {"label": 13}, normals=False)
    with pytest.raises(
        ConfigError,
        match=re.escape(f"root: missing folder `{tmp_path}/train/normal`; expected ")
        + r".*"
        + re.escape(f"`{tmp_path}/train` holds: depth/, image/, label/"),
    ):
        make_nyuv2(root=str(tmp_path))
    write_npy_layout(tmp_path, {"train": 3, "val": 1}, NYU_HW, {"label": 13}, normals=True)
    (tmp_path / "train" / "depth" / "1.npy").unlink()
    with pytest.raises(
        ConfigError,
        match=re.escape(
            f"root: `{tmp_path}/train/depth` lacks 1.npy; every folder of `{tmp_path}/train` needs "
            f"0.npy to 2.npy (`{tmp_path}/train/image` holds 3 files)"
        ),
    ):
        make_nyuv2(root=str(tmp_path))
    np.save(tmp_path / "train" / "depth" / "1.npy", np.ones((12, 15, 1), np.float32))
    with pytest.raises(
        ConfigError,
        match=re.escape(
            f"root: `{tmp_path}/train/depth/1.npy` has shape (12, 15, 1); expected (12, 16, 1) or (12, 16)"
        ),
    ):
        make_nyuv2(root=str(tmp_path), val_fraction=0.5)
    np.save(tmp_path / "train" / "depth" / "1.npy", np.ones((12, 16, 1), np.float32))
    np.save(tmp_path / "val" / "label" / "0.npy", np.full((12, 16), 13.0, np.float32))
    with pytest.raises(
        ConfigError,
        match=re.escape(f"root: `{tmp_path}/val/label/0.npy` holds labels in [13, 13]; expected [-1, 12] (13 classes"),
    ):
        make_nyuv2(root=str(tmp_path))
    np.save(tmp_path / "val" / "label" / "0.npy", np.full((12, 16), 0.5, np.float32))
    with pytest.raises(ConfigError, match=re.escape("0.npy` holds non-integer class labels")):
        make_nyuv2(root=str(tmp_path))
    np.save(tmp_path / "val" / "label" / "0.npy", np.zeros((12, 16), np.float32))
    np.save(tmp_path / "val" / "normal" / "0.npy", np.full((12, 16, 3), 0.5, np.float32))
    with pytest.raises(ConfigError, match=re.escape("0.npy` holds normals whose length is not 1; expected unit")):
        make_nyuv2(root=str(tmp_path))
    (tmp_path / "val" / "normal" / "0.npy").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match=re.escape(f"root: cannot read `{tmp_path}/val/normal/0.npy`: ")):
        make_nyuv2(root=str(tmp_path))
    with pytest.raises(
        ConfigError, match=re.escape("size: expected an integer (a square) or [height, width], or null")
    ):
        make_nyuv2(root=str(tmp_path), size=[1, 2, 3])


def test_nyuv2_ready_space_runs_a_search(nyu, tmp_path):
    problem = _search("nyuv2.yaml", nyu, tmp_path, INDOOR, size=None, val_fraction=0.4)
    assert problem.task_names == ["segmentation", "depth", "normals"] and problem.input_shape == (3, *NYU_HW)


@pytest.fixture(scope="module")
def city(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cityscapes")
    write_npy_layout(root, {"train": 4, "val": 2}, CITY_HW, {"label_7": 7, "label_19": 19}, normals=False)
    return root


def test_cityscapes_reads_7_or_19_classes_and_depth(city, tmp_path):
    from mtlsearch.data.cityscapes import make_cityscapes

    seven = make_cityscapes(seed=0, root=str(city), val_fraction=0.25)
    assert seven.sizes() == {"train": 3, "val": 1, "test": 2}
    assert [(t.name, t.type, t.num_classes) for t in seven.tasks] == [
        ("segmentation", "segmentation", 7),
        ("depth", "depth", None),
    ]
    assert tuple(seven.train.inputs.shape[1:]) == (3, *CITY_HW)
    assert tuple(seven.train.targets["segmentation"].shape[1:]) == CITY_HW
    assert tuple(seven.train.targets["depth"].shape[1:]) == (1, *CITY_HW)
    _assert_targets_fit(seven)
    nineteen = make_cityscapes(seed=0, root=str(city), classes=19, val_fraction=0.25)
    assert nineteen.tasks[0].num_classes == 19 and nineteen.info["labels"] == "label_19"
    assert np.array_equal(nineteen.test.targets["segmentation"][0].numpy(), np.load(city / "val/label_19/0.npy"))
    _assert_same(seven, make_cityscapes(seed=0, root=str(city), val_fraction=0.25))
    # LibMTL's copy names the 7-class folder label/
    write_npy_layout(tmp_path, {"train": 2, "val": 1}, CITY_HW, {"label": 7}, normals=False)
    libmtl = make_cityscapes(root=str(tmp_path), size=[4, 8])
    assert libmtl.info["labels"] == "label" and tuple(libmtl.test.inputs.shape) == (1, 3, 4, 8)
    with pytest.raises(
        ConfigError, match=re.escape("classes: expected 7 or 19 (the label_7/ or label_19/ folders), found 8")
    ):
        make_cityscapes(root=str(city), classes=8)
    with pytest.raises(ConfigError, match=re.escape(f"root: missing folder `{tmp_path}/train/label_19`; expected")):
        make_cityscapes(root=str(tmp_path), classes=19)


def test_cityscapes_ready_space_runs_a_search(city, tmp_path):
    problem = _search("cityscapes.yaml", city, tmp_path, STREET, size=None, val_fraction=0.25)
    assert problem.task_names == ["segmentation", "depth"] and problem.input_shape == (3, *CITY_HW)


@pytest.mark.parametrize("name", ["multimnist", "celeba", "nyuv2", "cityscapes"])
def test_ready_space_left_unedited_says_which_folder_to_set(name):
    raw = yaml.safe_load((SPACES / f"{name}.yaml").read_text())
    assert raw["data"]["benchmark"] == name and raw["data"]["root"] == f"/path/to/{name}"
    with pytest.raises(
        ConfigError, match=re.escape(f"data.root: `/path/to/{name}` is no such folder; expected the folder that holds ")
    ):
        mtlsearch.load(SPACES / f"{name}.yaml")
