"""The built-in offline benchmarks: MultiDigits and the MMoE synthetic tasks (mtlsearch.data)."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from mtlsearch.data import BENCHMARKS, MTLData
from mtlsearch.data.mmoe_synthetic import make_mmoe_synthetic
from mtlsearch.data.multidigits import NUM_BASE_IMAGES, _load_digits, digit_pools, make_multidigits
from mtlsearch.errors import ConfigError

SPLITS = ("train", "val", "test")
SMALL_DIGITS = {"n_train": 200, "n_val": 50, "n_test": 40}
SMALL_MMOE = {"input_dim": 16, "n_train": 300, "n_val": 50, "n_test": 40}


def _split(data: MTLData, name: str):
    return getattr(data, name)


def _assert_same(a: MTLData, b: MTLData) -> None:
    for name in SPLITS:
        sa, sb = _split(a, name), _split(b, name)
        assert torch.equal(sa.inputs, sb.inputs)
        assert sa.targets.keys() == sb.targets.keys()
        for task in sa.targets:
            assert torch.equal(sa.targets[task], sb.targets[task])


def _assert_targets_fit(data: MTLData) -> None:
    for name in SPLITS:
        split = _split(data, name)
        assert set(split.targets) == {t.name for t in data.tasks}
        for spec in data.tasks:
            spec.kind.check_targets(spec, split.targets[spec.name], f"{name}.{spec.name}")


@pytest.fixture(scope="module")
def digits() -> MTLData:
    return make_multidigits(seed=0, **SMALL_DIGITS)


# --- MultiDigits -----------------------------------------------------------------------------


def test_multidigits_is_registered():
    assert BENCHMARKS.get("multidigits") is make_multidigits


def test_multidigits_sizes_shapes_and_info(digits):
    assert digits.sizes() == {"train": 200, "val": 50, "test": 40}
    for name in SPLITS:
        x = _split(digits, name).inputs
        assert x.dtype == torch.float32 and tuple(x.shape[1:]) == (1, 8, 16)
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        x0, targets = _split(digits, name)[0]
        assert tuple(x0.shape) == (1, 8, 16) and set(targets) == {"left", "right", "sum"}
    assert [(t.name, t.type, t.num_classes, t.metrics) for t in digits.tasks] == [
        ("left", "classification", 10, ("accuracy",)),
        ("right", "classification", 10, ("accuracy",)),
        ("sum", "regression", None, ("mae",)),
    ]
    assert digits.info == {
        "benchmark": "multidigits",
        "seed": 0,
        "sizes": {"train": 200, "val": 50, "test": 40},
        "pool_sizes": {"train": 1078, "val": 359, "test": 360},
        "input_shape": [1, 8, 16],
    }
    json.dumps(digits.info)


def test_multidigits_targets_fit_their_tasks(digits):
    _assert_targets_fit(digits)
    for name in SPLITS:
        t = _split(digits, name).targets
        assert t["left"].dtype == t["right"].dtype == torch.int64
        assert t["sum"].dtype == torch.float32
        assert torch.equal(t["sum"], (t["left"] + t["right"] - 9).to(torch.float32))


def test_multidigits_is_deterministic_per_seed(digits):
    _assert_same(digits, make_multidigits(seed=0, **SMALL_DIGITS))
    other = make_multidigits(seed=1, **SMALL_DIGITS)
    for name in SPLITS:
        assert not torch.equal(_split(digits, name).inputs, _split(other, name).inputs)


def test_multidigits_split_streams_are_independent_of_other_sizes(digits):
    # Growing the train split must not reshuffle val and test.
    bigger = make_multidigits(seed=0, n_train=300, n_val=50, n_test=40)
    assert torch.equal(bigger.val.inputs, digits.val.inputs)
    assert torch.equal(bigger.test.inputs, digits.test.inputs)
    assert torch.equal(bigger.train.inputs[:200], digits.train.inputs)


def test_multidigits_pools_partition_the_base_images():
    pools = digit_pools(0)
    assert [len(p) for p in pools] == [1078, 359, 360]
    everything = torch.cat(pools)
    assert len(everything) == NUM_BASE_IMAGES and len(set(everything.tolist())) == NUM_BASE_IMAGES
    assert all(not set(a.tolist()) & set(b.tolist()) for i, a in enumerate(pools) for b in pools[i + 1 :])
    assert not torch.equal(digit_pools(1)[1], pools[1])


def test_multidigits_samples_come_from_their_own_pool(digits):
    images, labels = _load_digits()
    for name, pool in zip(SPLITS, digit_pools(0)):
        # Map each pool image to its label; the halves of every sample must be pool images whose
        # labels match the sample's left/right targets.
        by_bytes: dict[bytes, set[int]] = {}
        for i in pool.tolist():
            by_bytes.setdefault(images[i].numpy().tobytes(), set()).add(int(labels[i]))
        split = _split(digits, name)
        for half, task in ((slice(0, 8), "left"), (slice(8, 16), "right")):
            for x, y in zip(split.inputs[:, 0, :, half], split.targets[task]):
                assert int(y) in by_bytes.get(x.contiguous().numpy().tobytes(), set())


@pytest.mark.parametrize(
    "kwargs, path, message",
    [
        ({"n_train": 0}, "n_train", "expected an integer >= 1, found 0"),
        ({"n_val": 2.5}, "n_val", "expected an integer >= 1, found 2.5"),
        ({"n_test": True}, "n_test", "expected an integer >= 1, found True"),
        ({"n_train": "10"}, "n_train", "expected an integer >= 1, found the string \"10\""),
        ({"seed": 1.0}, "seed", "expected an integer, found 1.0"),
    ],
)
def test_multidigits_rejects_bad_arguments(kwargs, path, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(f'{path}: {message}')}$") as err:
        make_multidigits(**kwargs)
    assert err.value.path == path and err.value.message == message


# --- MMoE synthetic --------------------------------------------------------------------------


def test_mmoe_is_registered():
    assert BENCHMARKS.get("mmoe_synthetic") is make_mmoe_synthetic


def test_mmoe_sizes_shapes_tasks_and_info():
    data = make_mmoe_synthetic(seed=3, correlation=0.5, **SMALL_MMOE)
    assert data.sizes() == {"train": 300, "val": 50, "test": 40}
    for name in SPLITS:
        split = _split(data, name)
        assert split.inputs.dtype == torch.float32 and tuple(split.inputs.shape[1:]) == (16,)
        assert all(t.dtype == torch.float32 and t.dim() == 1 for t in split.targets.values())
    assert [(t.name, t.type, t.metrics) for t in data.tasks] == [("y1", "regression", ("mse",)), ("y2", "regression", ("mse",))]
    _assert_targets_fit(data)
    info = data.info
    assert {k: v for k, v in info.items() if k != "label_correlation"} == {
        "benchmark": "mmoe_synthetic",
        "seed": 3,
        "correlation": 0.5,
        "sizes": {"train": 300, "val": 50, "test": 40},
        "input_shape": [16],
    }
    measured = torch.corrcoef(torch.stack([data.train.targets["y1"], data.train.targets["y2"]]))[0, 1]
    assert isinstance(info["label_correlation"], float)
    assert info["label_correlation"] == pytest.approx(float(measured), abs=1e-4)
    json.dumps(info)


def test_mmoe_is_deterministic_per_seed():
    a = make_mmoe_synthetic(seed=0, **SMALL_MMOE)
    _assert_same(a, make_mmoe_synthetic(seed=0, **SMALL_MMOE))
    b = make_mmoe_synthetic(seed=1, **SMALL_MMOE)
    for name in SPLITS:
        assert not torch.equal(_split(a, name).inputs, _split(b, name).inputs)
        assert not torch.equal(_split(a, name).targets["y1"], _split(b, name).targets["y1"])


def test_mmoe_label_correlation_grows_with_p_but_stays_below_it():
    sizes = {"input_dim": 16, "n_train": 2000, "n_val": 10, "n_test": 10}
    measured = [make_mmoe_synthetic(seed=0, correlation=p, **sizes).info["label_correlation"] for p in (0.0, 0.5, 0.9)]
    assert measured[0] < measured[1] < measured[2]
    assert abs(measured[0]) < 0.1
    # The sine terms decorrelate the labels: p = 0.9 is far from a label correlation of 0.9.
    assert measured[2] < 0.6
    # p = 1 makes the two tasks identical up to the noise.
    assert make_mmoe_synthetic(seed=0, correlation=1.0, **sizes).info["label_correlation"] > 0.999


def test_mmoe_without_sines_or_noise_is_linear_with_weight_norm_scale():
    # With m = 0 and no noise, y_k = w_k.x and |w_k| = scale, so the label correlation is about p.
    data = make_mmoe_synthetic(seed=0, correlation=0.6, num_sines=0, noise_std=0.0, scale=2.0, input_dim=8, n_train=4000, n_val=5, n_test=5)
    x, t = data.train.inputs.double(), data.train.targets
    w1 = torch.linalg.lstsq(x, t["y1"].double().unsqueeze(1)).solution.squeeze(1)
    w2 = torch.linalg.lstsq(x, t["y2"].double().unsqueeze(1)).solution.squeeze(1)
    assert float(w1.norm()) == pytest.approx(2.0, abs=1e-4)
    assert float(w2.norm()) == pytest.approx(2.0, abs=1e-4)
    assert float(w1 @ w2) / 4.0 == pytest.approx(0.6, abs=1e-4)
    assert data.info["label_correlation"] == pytest.approx(0.6, abs=0.05)


@pytest.mark.parametrize(
    "kwargs, path, message",
    [
        ({"correlation": 1.5}, "correlation", "expected a number in [-1, 1], found 1.5"),
        ({"correlation": -1.01}, "correlation", "expected a number in [-1, 1], found -1.01"),
        ({"correlation": math.nan}, "correlation", "expected a number in [-1, 1], found nan"),
        ({"correlation": "0.5"}, "correlation", "expected a number in [-1, 1], found the string \"0.5\""),
        ({"correlation": True}, "correlation", "expected a number in [-1, 1], found True"),
        ({"input_dim": 1}, "input_dim", "expected an integer >= 2, found 1"),
        ({"n_train": 0}, "n_train", "expected an integer >= 1, found 0"),
        ({"n_val": 1.0}, "n_val", "expected an integer >= 1, found 1.0"),
        ({"n_test": False}, "n_test", "expected an integer >= 1, found False"),
        ({"num_sines": -1}, "num_sines", "expected an integer >= 0, found -1"),
        ({"noise_std": -0.1}, "noise_std", "expected a finite number >= 0, found -0.1"),
        ({"noise_std": math.inf}, "noise_std", "expected a finite number >= 0, found inf"),
        ({"scale": 0}, "scale", "expected a finite number > 0, found 0"),
        ({"seed": "0"}, "seed", "expected an integer, found the string \"0\""),
    ],
)
def test_mmoe_rejects_bad_arguments(kwargs, path, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(f'{path}: {message}')}$") as err:
        make_mmoe_synthetic(**kwargs)
    assert err.value.path == path and err.value.message == message


def test_mmoe_accepts_the_edges_of_its_ranges():
    for p in (-1, -1.0, 0, 1):
        data = make_mmoe_synthetic(correlation=p, num_sines=0, noise_std=0, input_dim=2, n_train=1, n_val=1, n_test=1)
        assert data.sizes() == {"train": 1, "val": 1, "test": 1}
        # One train sample has no correlation: recorded as null, never NaN (invalid JSON).
        assert data.info["label_correlation"] is None
        json.dumps(data.info, allow_nan=False)
