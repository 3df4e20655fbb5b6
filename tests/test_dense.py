"""Dense prediction: the `scenes` renderer (determinism, cache), the dense task types' losses and
metrics against hand-computed values, dense heads, target checks, and one real search of
search_spaces/scenes.yaml at a tiny size."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

import mtlsearch
from mtlsearch.data import BENCHMARKS, MTLData, TensorMTLDataset, scenes
from mtlsearch.data.checks import check_data
from mtlsearch.models import CNN, PathNetwork
from mtlsearch.models.heads import DenseHead, build_head
from mtlsearch.tasks import METRICS, TaskSpec

SPACE = Path(__file__).resolve().parent.parent / "search_spaces" / "scenes.yaml"
TINY = {"n_train": 4, "n_val": 2, "n_test": 2, "size": 16}


def arrays(data: MTLData, split: str = "train") -> dict[str, torch.Tensor]:
    ds = getattr(data, split)
    return {"image": ds.inputs, **ds.targets}


# -- the renderer --------------------------------------------------------------------------------


def test_scenes_are_seeded_and_stable_under_split_sizes():
    a = scenes.make_scenes(seed=3, cache=False, **TINY)
    b = scenes.make_scenes(seed=3, cache=False, **TINY)
    for split in ("train", "val", "test"):
        for key, value in arrays(a, split).items():
            assert torch.equal(value, arrays(b, split)[key]), (split, key)
    other = scenes.make_scenes(seed=4, cache=False, **TINY)
    assert not torch.equal(a.train.inputs, other.train.inputs)
    assert not torch.equal(a.train.inputs[:2], a.val.inputs)  # splits draw different scenes
    longer = scenes.make_scenes(seed=3, cache=False, **{**TINY, "n_train": 6})
    assert torch.equal(longer.train.inputs[:4], a.train.inputs)  # scene i does not depend on n
    assert a.info["input_shape"] == [3, 16, 16] and a.info["classes"][0] == "background"


def test_scene_targets_agree_with_each_other():
    data = scenes.make_scenes(seed=0, cache=False, n_train=8, n_val=1, n_test=1, size=32)
    x, t = data.train.inputs, data.train.targets
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    seg, depth, normals, edges = t["seg"], t["depth"], t["normals"], t["edges"]
    assert seg.dtype == torch.int64 and seg.shape == (8, 32, 32)
    assert depth.shape == (8, 1, 32, 32) and normals.shape == (8, 3, 32, 32) and edges.shape == (8, 1, 32, 32)
    sky = seg == 0
    assert torch.equal(depth[:, 0] == 0, sky)  # no surface: invalid depth and normals
    norm = normals.norm(dim=1)
    assert torch.equal(norm == 0, sky) and torch.allclose(norm[~sky], torch.ones(()), atol=1e-5)
    camera = scenes.Camera(32)
    rays = torch.from_numpy(camera.to_camera(camera.rays)).float().T.reshape(1, 3, 32, 32)
    assert bool(((normals * rays).sum(1)[~sky] < 1e-6).all())  # visible surfaces face the camera
    assert set(edges.unique().tolist()) <= {0.0, 1.0} and 0.01 < edges.mean() < 0.3
    assert set(seg.unique().tolist()) <= set(range(len(scenes.CLASSES)))
    for task in data.tasks:  # the benchmark's targets pass its own task types' checks
        task.kind.check_targets(task, t[task.name], "data.train")


def test_splits_are_cached_once_and_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("MTLSEARCH_CACHE", str(tmp_path))
    first = scenes.make_scenes(seed=1, **TINY)
    files = sorted(p.name for p in (tmp_path / "scenes").iterdir())
    names = (("test", 2), ("train", 4), ("val", 2))
    assert files == [f"scenes-{scenes.CACHE_VERSION}-seed1-{s}-16px-n{n}.npz" for s, n in names]

    def no_render(*args):
        raise AssertionError("rendered again")

    monkeypatch.setattr(scenes, "render_split", no_render)
    again = scenes.make_scenes(seed=1, **TINY)
    assert torch.equal(again.train.targets["normals"], first.train.targets["normals"])
    monkeypatch.undo()
    monkeypatch.setenv("MTLSEARCH_CACHE", str(tmp_path))
    damaged = tmp_path / "scenes" / files[1]
    damaged.write_bytes(b"not a zip file")
    repaired = scenes.make_scenes(seed=1, **TINY)  # a damaged file is rendered again and replaced
    assert torch.equal(repaired.train.inputs, first.train.inputs)
    assert sorted(p.name for p in (tmp_path / "scenes").iterdir()) == files  # no temporary file left


@pytest.mark.parametrize("params, message", [
    ({"size": 4}, "size: expected an integer >= 8, found 4"),
    ({"size": 2048}, "size: expected an integer in [8, 1024], found 2048"),
    ({"cache": "yes"}, "cache: expected true or false, found `yes`"),
])
def test_bad_scene_parameters_are_named(params, message):
    with pytest.raises(mtlsearch.ConfigError) as err:
        scenes.make_scenes(**{**TINY, "cache": False, **params})
    assert str(err.value) == message


# -- losses --------------------------------------------------------------------------------------


def one_hot_logits(labels: torch.Tensor, k: int) -> torch.Tensor:
    """Logits (N, k, H, W) whose arg-max is ``labels`` (N, H, W)."""
    return F.one_hot(labels.clamp(min=0), k).permute(0, 3, 1, 2).float() * 5


def test_dense_losses_by_hand():
    seg = TaskSpec("s", "segmentation", num_classes=2).kind
    logits = torch.tensor([0.0, math.log(3)]).view(1, 2, 1, 1).repeat(1, 1, 1, 2)  # p(class 1) = 3/4
    assert seg.loss(logits, torch.tensor([[[1, -1]]])).item() == pytest.approx(math.log(4 / 3))
    assert seg.loss(logits, torch.tensor([[[-1, -1]]])).item() == 0  # nothing labelled: 0, not NaN

    depth = TaskSpec("d", "depth").kind
    target = torch.tensor([[[[2.0, 0.0], [1.0, 4.0]]]])
    pred = torch.tensor([[[[3.0, 5.0], [1.0, 2.0]]]])
    assert depth.loss(pred, target).item() == pytest.approx(1.0)  # (1 + 0 + 2) / 3 valid pixels
    assert depth.loss(pred, target[:, 0]).item() == pytest.approx(1.0)  # (N, H, W) targets too

    normals = TaskSpec("n", "normals").kind
    target = torch.tensor([[1.0, 0, 0], [1, 0, 0], [0, 0, 0]]).T.reshape(1, 3, 1, 3)
    pred = torch.tensor([[2.0, 0, 0], [0, 1, 0], [0, 5, 0]]).T.reshape(1, 3, 1, 3)
    assert normals.loss(pred, target).item() == pytest.approx(0.5)  # (1 - 1 + 1 - 0) / 2; 3rd invalid

    edges = TaskSpec("e", "edges").kind
    loss = edges.loss(torch.zeros(1, 1, 1, 2), torch.tensor([[[[1.0, 0.0]]]]))
    assert loss.item() == pytest.approx((4 * math.log(2) + math.log(2)) / 2)  # the edge pixel weighs 4


# -- metrics -------------------------------------------------------------------------------------


def run_metric(name: str, batches) -> float:
    metric = METRICS.get(name)()
    for output, target in batches:
        metric.update(output, target)
    return metric.compute()


def test_segmentation_metrics_by_hand_over_batches():
    # valid (target, prediction): (0,0) (0,1) (1,1) | (2,2); class 3 appears nowhere (left out);
    # the ignored pixel's prediction (2) counts nowhere
    first = (one_hot_logits(torch.tensor([[[0, 1, 1, 2]]]), 4), torch.tensor([[[0, 0, 1, -1]]]))
    second = (one_hot_logits(torch.tensor([[[2]]]), 4), torch.tensor([[[2]]]))
    # IoU: class 0 = 1 / 2, class 1 = 1 / 2, class 2 = 1 / 1
    assert run_metric("miou", [first, second]) == pytest.approx((0.5 + 0.5 + 1) / 3)
    assert run_metric("pixel_accuracy", [first, second]) == pytest.approx(3 / 4)
    assert METRICS.get("miou").direction == "max" and METRICS.get("pixel_accuracy").direction == "max"


def test_depth_metrics_accumulate_pixels_not_batch_means():
    first = (torch.tensor([[[[2.0, 2.0, 7.0]]]]), torch.tensor([[[[1.0, 4.0, 0.0]]]]))  # errors 1, 2; 3rd invalid
    second = (torch.tensor([[[[5.0]]]]), torch.tensor([[[[2.0]]]]))  # error 3
    assert run_metric("abs_err", [first, second]) == pytest.approx(2.0)  # (1 + 2 + 3) / 3, not (1.5 + 3) / 2
    assert run_metric("rel_err", [first, second]) == pytest.approx((1 + 0.5 + 1.5) / 3)
    assert METRICS.get("abs_err").direction == "min" and METRICS.get("rel_err").direction == "min"


def normals_at(degrees: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictions at ``degrees`` from the target (0, 0, -1), plus one invalid pixel."""
    a = torch.deg2rad(torch.tensor(degrees + [90.0]))
    pred = torch.stack([a.sin(), torch.zeros_like(a), -a.cos()]).view(1, 3, 1, -1) * 3  # not unit length
    target = torch.tensor([0.0, 0.0, -1.0]).view(1, 3, 1, 1).repeat(1, 1, 1, len(degrees) + 1)
    target[..., -1] = 0
    return pred, target


def test_normal_metrics_by_hand_over_batches():
    batches = [normals_at([5.0, 60.0]), normals_at([15.0, 25.0, 35.0])]
    assert run_metric("mean_angle", batches) == pytest.approx((5 + 15 + 25 + 35 + 60) / 5, abs=1e-3)
    assert run_metric("median_angle", batches) == pytest.approx(25.0, abs=0.01)
    assert run_metric("within_11_25", batches) == pytest.approx(1 / 5)
    assert run_metric("within_22_5", batches) == pytest.approx(2 / 5)
    assert run_metric("within_30", batches) == pytest.approx(3 / 5)
    directions = {m: METRICS.get(m).direction for m in ("mean_angle", "median_angle", "within_11_25", "within_30")}
    assert directions == {"mean_angle": "min", "median_angle": "min", "within_11_25": "max", "within_30": "max"}


def test_edge_f_measure_at_fixed_threshold():
    first = (torch.tensor([[[[3.0, 2.0, -1.0]]]]), torch.tensor([[[[1.0, 0.0, 1.0]]]]))  # TP, FP, FN
    second = (torch.tensor([[[[0.5, -4.0]]]]), torch.tensor([[[[1.0, 0.0]]]]))  # TP, TN
    assert run_metric("edge_f_at_0_5", [first, second]) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert run_metric("edge_f_at_0_5", [(torch.full((1, 1, 2, 2), -1.0), torch.zeros(1, 1, 2, 2))]) == 1.0


def test_dense_task_specs():
    seg = TaskSpec("seg", "segmentation", num_classes=6)
    assert seg.metrics == ("miou", "pixel_accuracy") and seg.delta_metrics() == ("miou",)
    assert TaskSpec("d", "depth").delta_metrics() == ("abs_err",)
    assert TaskSpec("n", "normals").delta_metrics() == ("mean_angle",)
    assert TaskSpec("e", "edges").delta_metrics() == ("edge_f_at_0_5",)
    with pytest.raises(mtlsearch.ConfigError, match="num_classes: expected an integer >= 2 for a segmentation task"):
        TaskSpec("seg", "segmentation")
    with pytest.raises(mtlsearch.ConfigError) as err:
        TaskSpec("d", "depth", metrics=("miou",))
    assert str(err.value) == "metrics[0]: metric `miou` does not apply to a depth task; choose from: abs_err, rel_err"


# -- heads ---------------------------------------------------------------------------------------


def test_dense_head_shapes_and_vector_heads_unchanged():
    head = DenseHead(8, 5, size=(16, 12))
    assert head(torch.randn(2, 8, 4, 3)).shape == (2, 5, 16, 12)
    built = build_head((8, 4, 4), TaskSpec("n", "normals"), input_shape=(3, 16, 16))
    assert isinstance(built, DenseHead) and built(torch.randn(2, 8, 4, 4)).shape == (2, 3, 16, 16)
    linear = build_head((8, 4, 4), TaskSpec("c", "classification", num_classes=3))
    assert type(linear) is nn.Linear and (linear.in_features, linear.out_features) == (8, 3)
    with pytest.raises(mtlsearch.ConfigError) as err:
        build_head((64,), TaskSpec("seg", "segmentation", num_classes=6), input_shape=(3, 16, 16))
    assert str(err.value) == (
        "backbone: task `seg` (segmentation) needs image features (C, H, W) from the backbone, found (64,); "
        "use a convolutional backbone such as `cnn`"
    )


def test_vector_heads_keep_their_parameter_names():
    """Old studies' exported weights load: a vector task's head is still the Linear ``heads.<task>``."""
    tasks = [TaskSpec("left", "classification", num_classes=10), TaskSpec("sum", "regression")]
    backbone = CNN((1, 8, 16), channels=4, depth=2)
    model = PathNetwork(backbone, tasks, {t.name: ("shared", "shared") for t in tasks})
    assert {k: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith("heads.")} == {
        "heads.left.weight": (10, 4), "heads.left.bias": (10,), "heads.sum.weight": (1, 4), "heads.sum.bias": (1,)
    }


# -- checks of what a factory returns ------------------------------------------------------------


def bad_scenes(seed: int = 0, problem: str = "size") -> MTLData:
    """Tiny scenes with one broken target: ``size`` (a half-size depth map) or ``label`` (a
    segmentation label past num_classes)."""
    data = scenes.make_scenes(seed, cache=False, **TINY)
    targets = dict(data.train.targets)
    if problem == "size":
        targets["depth"] = targets["depth"][..., ::2, ::2].contiguous()
    else:
        targets["seg"] = targets["seg"].clone()
        targets["seg"][1, 3, 4] = 6
    data.train = TensorMTLDataset(data.train.inputs, targets)
    return data


@pytest.mark.parametrize("problem, message", [
    ("size", "data.train: factory `test_dense:bad_scenes` returned targets of shape (4, 1, 8, 8) for task `depth`, "
             "with height and width (8, 8); the inputs are (3, 16, 16), and a per-pixel target needs their height "
             "and width (16, 16)"),
    ("label", "data.train: task `seg` has labels in [0, 6], outside [-1, 6) allowed by num_classes = 6 "
              "(-1 marks an ignored pixel)"),
])
def test_bad_dense_targets_are_refused_where_they_enter(problem, message):
    space = yaml.safe_load(SPACE.read_text())
    space["data"] = {"factory": "test_dense:bad_scenes", "problem": problem}
    with pytest.raises(mtlsearch.ConfigError) as err:
        mtlsearch.load(space)
    assert str(err.value) == message


def test_output_dim_is_refused_for_dense_tasks():
    space = yaml.safe_load(SPACE.read_text())
    space["tasks"] = ["seg", {"name": "depth", "type": "depth", "output_dim": 2}]
    with pytest.raises(mtlsearch.ConfigError) as err:
        mtlsearch.load(space)
    assert str(err.value) == "tasks[1].output_dim: only regression tasks take output_dim; task `depth` is depth"


def test_dense_targets_read_item_by_item_are_checked_too():
    data = bad_scenes(problem="size")
    train = data.train

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return len(train)

        def __getitem__(self, i):
            return train[i]

    data.train = Items()
    with pytest.raises(mtlsearch.ConfigError, match=r"targets of shape \(4, 1, 8, 8\) for task `depth`"):
        check_data(data, "factory `x`")


# -- a real search ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_scenes_space_searches_end_to_end(tmp_path):
    """search_spaces/scenes.yaml, shrunk (16x16 scenes, 1 epoch), through the Python API."""
    space = yaml.safe_load(SPACE.read_text())
    space["data"].update(n_train=24, n_val=8, n_test=8, size=16, cache=False)
    space["backbone"].update(channels=6, min_size=2)  # 16 -> 8 -> 4 -> 2x2 features, then 2 skippable blocks
    space["search_space"]["training"].update(epochs=1, batch_size=12)
    space["run"].update(storage=f"sqlite:///{tmp_path}/s.db", n_trials=3, device="cpu", sampler="random")
    # given baselines: a one-epoch edge network on 24 scenes may predict no edge at all (F = 0),
    # which Delta-MTL cannot divide by; single_task trials still train each task alone
    given = {"seg": {"miou": 0.3}, "depth": {"abs_err": 1.5}, "normals": {"mean_angle": 20.0}}
    space["baselines"] = {"kind": "given", "values": {**given, "edges": {"edge_f_at_0_5": 0.3}}}
    problem, run = mtlsearch.load(space)
    assert [t.type for t in problem.tasks] == ["segmentation", "depth", "normals", "edges"]
    study = mtlsearch.run_search(problem, run)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 3
    metrics = done[0].user_attrs["val_metrics"]
    assert set(metrics) == {"seg", "depth", "normals", "edges"}
    assert set(metrics["normals"]) == {"mean_angle", "median_angle", "within_11_25", "within_22_5", "within_30"}
    assert all(math.isfinite(v) for t in done for v in t.values)
    assert 0 <= metrics["seg"]["miou"] <= 1 and metrics["depth"]["abs_err"] > 0
    # a trained model evaluates on the test split through the same metrics
    model = mtlsearch.build_model(problem, done[0], seed=0)
    from mtlsearch.training import evaluate

    scores = evaluate(model, problem.tasks, problem.data.test, torch.device("cpu"))
    assert 0 <= scores["edges"]["edge_f_at_0_5"] <= 1 and 0 <= scores["normals"]["median_angle"] <= 180


def test_scenes_is_a_registered_benchmark():
    assert "scenes" in BENCHMARKS
    assert np.isclose(scenes.FOV, np.deg2rad(60.0))
