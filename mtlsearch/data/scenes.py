"""Scenes: procedural 3-D scenes with per-pixel segmentation, depth, surface normals and edges.

The NYUv2 task set (Silberman et al., ECCV 2012) in miniature, offline: each sample is a random
scene of a few spheres and boxes resting on a checkered ground plane under a sky, ray-cast in
vectorised numpy from a pinhole camera pitched down a little. For the same RGB image
(``3 x S x S`` float32 in [0, 1]; Lambertian shading of a colour per class, plus pixel noise) it
gives, per pixel:

* ``seg``: the class (:data:`CLASSES`: background (sky), floor, red/blue sphere, red/blue box);
  two classes share each colour, so shape matters as well as colour;
* ``depth``: the camera-space z-depth of the visible surface, 0 for the sky (invalid);
* ``normals``: the unit surface normal in camera coordinates (x right, y up, z forward; a
  visible surface faces the camera: ``n . ray < 0``), zeros for the sky (invalid);
* ``edges``: 1 where a 4-neighbour shows another surface (another object, the floor or the sky),
  which covers the segmentation boundaries and the depth discontinuities between objects.

Scene ``i`` of split ``k`` (train 0, val 1, test 2) is drawn from its own generator, seeded by
``(seed, k, i)``: the first scenes of a split do not change with its size, and the splits never
share a scene. Rendered splits are cached as ``.npz`` files under ``$MTLSEARCH_CACHE/scenes``
(default ``~/.cache/mtlsearch/scenes``), one per (seed, split, size, n); a file is written to a
temporary name and renamed, so a reader never sees half of one. See docs/data.md#scenes.
"""

from __future__ import annotations

import os
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, show
from ..tasks import TaskSpec
from .base import BENCHMARKS, MTLData, TensorMTLDataset
from .folders import check_seed
from .multidigits import _check_int

CLASSES = ("background", "floor", "red_sphere", "blue_sphere", "red_box", "blue_box")
SPLITS = ("train", "val", "test")
CACHE_VERSION = "v1"  # bump when the renderer changes: old files are then not read
CACHE_ENV = "MTLSEARCH_CACHE"
MAX_SIZE = 1024

FOV = np.deg2rad(60.0)
PITCH = np.deg2rad(18.0)  # the camera looks down by this much
CAMERA_HEIGHT = 1.2  # above the floor (y = -CAMERA_HEIGHT; the camera is at the origin)
MAX_DEPTH = 14.0  # the floor ends here (then sky)
AMBIENT = 0.3
NOISE_STD = 0.02
COLOURS = {"red": (0.80, 0.22, 0.18), "blue": (0.20, 0.35, 0.85)}
FLOOR_COLOUR = (0.62, 0.56, 0.46)
SKY_COLOUR = ((0.75, 0.84, 0.95), (0.45, 0.62, 0.90))  # at the horizon, at the top


def cache_dir() -> Path:
    """Where rendered splits are cached: ``$MTLSEARCH_CACHE/scenes``, else ``~/.cache/mtlsearch/scenes``."""
    root = os.environ.get(CACHE_ENV)
    return (Path(root) if root else Path.home() / ".cache" / "mtlsearch") / "scenes"


class Camera:
    """Per-pixel ray directions of an ``size x size`` pinhole camera at the origin.

    Directions are not normalised: their component along the camera's forward axis is 1, so a
    hit at ray parameter ``t`` has z-depth ``t``.
    """

    def __init__(self, size: int):
        half = np.tan(FOV / 2)
        coords = (np.arange(size) + 0.5) / size * 2 - 1
        x = np.tile(coords * half, size)  # column -> right
        y = np.repeat(-coords * half, size)  # row -> up
        self.right = np.array([1.0, 0.0, 0.0])
        self.up = np.array([0.0, np.cos(PITCH), np.sin(PITCH)])
        self.forward = np.array([0.0, -np.sin(PITCH), np.cos(PITCH)])
        self.rays = x[:, None] * self.right + y[:, None] * self.up + self.forward  # (P, 3), world frame
        self.row_height = np.repeat((1 - coords) / 2, size)  # 0 at the bottom row, 1 at the top

    def to_camera(self, vectors: np.ndarray) -> np.ndarray:
        """World-frame vectors ``(P, 3)`` in camera coordinates (x right, y up, z forward)."""
        return np.stack([vectors @ self.right, vectors @ self.up, vectors @ self.forward], axis=1)


def hit_sphere(rays: np.ndarray, centre: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Ray parameters of the nearest hit in front of the camera (``inf`` where missed), and normals."""
    a = np.einsum("pi,pi->p", rays, rays)
    b = -2.0 * (rays @ centre)
    c = centre @ centre - radius * radius
    disc = b * b - 4 * a * c
    with np.errstate(invalid="ignore"):
        t = (-b - np.sqrt(disc)) / (2 * a)
    t = np.where((disc >= 0) & (t > 0), t, np.inf)
    normals = (np.where(np.isfinite(t), t, 0.0)[:, None] * rays - centre) / radius
    return t, normals


def hit_box(rays: np.ndarray, centre: np.ndarray, half: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit of a box (half-extents ``half``, turned by ``angle`` about the vertical axis)
    by the slab method in the box's frame, and the outward normals of the faces hit."""
    c, s = np.cos(angle), np.sin(angle)
    rotation = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])  # box frame -> world
    origin = rotation.T @ (-centre)  # the camera in the box frame
    d = rays @ rotation  # directions in the box frame
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
        t1, t2 = (-half - origin) * inv, (half - origin) * inv
    near, far = np.minimum(t1, t2), np.maximum(t1, t2)
    near = np.where(np.isnan(near), -np.inf, near)  # a ray parallel to a slab, inside it
    far = np.where(np.isnan(far), np.inf, far)
    axis = near.argmax(1)
    t_near, t_far = near.max(1), far.min(1)
    t = np.where((t_near <= t_far) & (t_near > 0), t_near, np.inf)
    local = np.zeros_like(d)
    rows = np.arange(len(d))
    local[rows, axis] = -np.sign(d[rows, axis])
    return t, local @ rotation.T


def draw_scene(rng: np.random.Generator) -> list[tuple[str, str, tuple]]:
    """2 to 4 objects ``(kind, colour, geometry)`` resting on the floor, inside the view."""
    objects: list[tuple[str, str, tuple]] = []
    for _ in range(int(rng.integers(2, 5))):
        kind = "sphere" if rng.random() < 0.5 else "box"
        colour = "red" if rng.random() < 0.5 else "blue"
        z = rng.uniform(2.5, 7.0)
        x = rng.uniform(-0.4, 0.4) * z
        if kind == "sphere":
            r = rng.uniform(0.4, 0.9)
            objects.append((kind, colour, (np.array([x, -CAMERA_HEIGHT + r, z]), r)))
        else:
            half = rng.uniform(0.3, 0.8, size=3)
            objects.append(
                (kind, colour, (np.array([x, -CAMERA_HEIGHT + half[1], z]), half, rng.uniform(0, np.pi / 2)))
            )
    return objects


def render(camera: Camera, size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One scene: ``image`` (3, S, S) uint8, ``seg`` (S, S) int8, ``depth`` (1, S, S) float32,
    ``normals`` (3, S, S) float32, ``edges`` (1, S, S) uint8."""
    rays = camera.rays
    p = len(rays)
    # the floor: object id 1; the sky: id 0 (t = inf)
    with np.errstate(divide="ignore"):
        t_floor = -CAMERA_HEIGHT / rays[:, 1]
    best_t = np.where((rays[:, 1] < 0) & (t_floor <= MAX_DEPTH), t_floor, np.inf)  # t is the z-depth
    best_id = np.where(np.isfinite(best_t), 1, 0)
    normals = np.zeros((p, 3))
    normals[best_id == 1] = (0.0, 1.0, 0.0)
    objects = draw_scene(rng)
    classes, colours = [0, 1], [np.zeros(3), np.array(FLOOR_COLOUR)]
    for kind, colour, geometry in objects:
        t, n = hit_sphere(rays, *geometry) if kind == "sphere" else hit_box(rays, *geometry)
        closer = t < best_t
        best_t = np.where(closer, t, best_t)
        best_id = np.where(closer, len(classes), best_id)
        normals[closer] = n[closer]
        classes.append(CLASSES.index(f"{colour}_{kind}"))
        colours.append(np.clip(np.array(COLOURS[colour]) + rng.uniform(-0.08, 0.08, 3), 0, 1))
    hit = best_id > 0
    points = np.where(hit, best_t, 0.0)[:, None] * rays
    light = np.array([rng.uniform(-1, 1), rng.uniform(0.6, 1.5), rng.uniform(-1.2, 0.2)])
    light /= np.linalg.norm(light)
    shade = AMBIENT + (1 - AMBIENT) * np.clip(normals @ light, 0, None)
    albedo = np.asarray(colours)[best_id]
    on_floor = best_id == 1
    checker = (np.floor(points[:, 0]) + np.floor(points[:, 2])) % 2 == 0
    albedo[on_floor & checker] *= 0.8
    sky = np.outer(1 - camera.row_height, SKY_COLOUR[0]) + np.outer(camera.row_height, SKY_COLOUR[1])
    rgb = np.where(hit[:, None], albedo * shade[:, None], sky)
    rgb = np.clip(rgb + rng.normal(0.0, NOISE_STD, rgb.shape), 0, 1)
    ids = best_id.reshape(size, size)
    edges = np.zeros((size, size), dtype=bool)
    vertical, horizontal = ids[1:] != ids[:-1], ids[:, 1:] != ids[:, :-1]
    edges[1:] |= vertical
    edges[:-1] |= vertical
    edges[:, 1:] |= horizontal
    edges[:, :-1] |= horizontal
    return {
        "image": np.round(rgb * 255).astype(np.uint8).T.reshape(3, size, size),
        "seg": np.asarray(classes, dtype=np.int8)[ids],
        "depth": np.where(hit, best_t, 0.0).astype(np.float32).reshape(1, size, size),
        "normals": camera.to_camera(normals).astype(np.float32).T.reshape(3, size, size),
        "edges": edges.astype(np.uint8)[None],
    }


def render_split(seed: int, split: int, n: int, size: int) -> dict[str, np.ndarray]:
    """``n`` scenes of split ``split``, stacked; scene ``i`` is seeded by ``(seed, split, i)``."""
    camera = Camera(size)
    entropy = int(seed) % 2**64  # SeedSequence takes non-negative integers
    scenes = [render(camera, size, np.random.default_rng([entropy, split, i])) for i in range(n)]
    return {key: np.stack([s[key] for s in scenes]) for key in scenes[0]}


def cached_split(seed: int, split: int, n: int, size: int, cache: bool) -> dict[str, np.ndarray]:
    """A rendered split, read from the cache when a valid file is there, else rendered (and
    written atomically when ``cache``)."""
    path = cache_dir() / f"scenes-{CACHE_VERSION}-seed{seed}-{SPLITS[split]}-{size}px-n{n}.npz"
    if cache and path.exists():
        try:
            with np.load(path) as found:
                arrays = {key: found[key] for key in found.files}
            if arrays["image"].shape == (n, 3, size, size):
                return arrays
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass  # unreadable (damaged or foreign): render again and replace it
    arrays = render_split(seed, split, n, size)
    if cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.stem, suffix=".tmp", delete=False) as f:
                np.savez_compressed(f, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds badly
            os.chmod(f.name, 0o644)  # a temporary file is private (0600); the cache is not
            os.replace(f.name, path)
        except OSError as err:
            warnings.warn(f"scenes: could not cache {path} ({err}); rendering again next time", stacklevel=2)
    return arrays


def to_dataset(arrays: dict[str, np.ndarray]) -> TensorMTLDataset:
    targets = {
        "seg": torch.from_numpy(arrays["seg"].astype(np.int64)),
        "depth": torch.from_numpy(arrays["depth"]),
        "normals": torch.from_numpy(arrays["normals"]),
        "edges": torch.from_numpy(arrays["edges"].astype(np.float32)),
    }
    return TensorMTLDataset(torch.from_numpy(arrays["image"]).float().div_(255), targets)


@BENCHMARKS.register("scenes")
def make_scenes(
    seed: int = 0, n_train: int = 1000, n_val: int = 200, n_test: int = 200, size: int = 64, cache: bool = True
) -> MTLData:
    """The Scenes benchmark (see the module docstring): deterministic given ``seed``.

    Args:
        seed: seeds every scene (with the split and the scene's index).
        n_train, n_val, n_test: scenes per split.
        size: images are ``size x size`` (8 to 1024).
        cache: read and write rendered splits under ``$MTLSEARCH_CACHE/scenes``.
    """
    check_seed(seed)
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    for split, n in sizes.items():
        _check_int(f"n_{split}", n, 1)
    _check_int("size", size, 8)
    if int(size) > MAX_SIZE:
        raise ConfigError("size", f"expected an integer in [8, {MAX_SIZE}], found {show(size)}")
    if not isinstance(cache, bool):
        raise ConfigError("cache", f"expected true or false, found {show(cache)}")
    seed, size = int(seed), int(size)
    splits = [cached_split(seed, k, int(sizes[name]), size, cache) for k, name in enumerate(SPLITS)]
    train = splits[0]
    tasks = [
        TaskSpec("seg", "segmentation", num_classes=len(CLASSES)),
        TaskSpec("depth", "depth"),
        TaskSpec("normals", "normals"),
        TaskSpec("edges", "edges"),
    ]
    info = {
        "benchmark": "scenes",
        "seed": seed,
        "sizes": {k: int(v) for k, v in sizes.items()},
        "input_shape": [3, size, size],
        "classes": list(CLASSES),
        "edge_fraction": round(float(train["edges"].mean()), 4),
        "valid_fraction": round(float((train["depth"] > 0).mean()), 4),
    }
    train_set, val_set, test_set = (to_dataset(a) for a in splits)
    return MTLData(train_set, val_set, test_set, tasks, info)
