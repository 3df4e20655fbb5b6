"""Metrics of binary, classification and count tasks against scikit-learn on small hand-made
arrays, accumulated over batches; the count task type; pos_weight and class_weights; a user's
metric and loss named by import path (checked, stored, rebuilt, trained with)."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn import metrics as skm

import mtlsearch
from mtlsearch.errors import ConfigError
from mtlsearch.problem import read_signature
from mtlsearch.search._hypervolume import study_reference
from mtlsearch.tasks import METRICS, TASK_TYPES, TaskSpec

# -- built-in metrics vs scikit-learn ---------------------------------------------------------------

LOGITS = torch.tensor([2.0, -1.0, 0.5, 0.5, -3.0, 1.5, -0.2, 0.5, 4.0, -2.5], dtype=torch.float64)
BINARY = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0], dtype=torch.float64)
MULTI_LOGITS = torch.tensor(
    [[2, 1, 0], [0, 3, 1], [1, 0, 2], [0, 2, 1], [3, 0, 0], [0, 0, 1], [1, 2, 0], [2, 0, 1]], dtype=torch.float64
)
MULTI = torch.tensor([0, 1, 2, 2, 0, 2, 0, 1])  # class 2 is predicted where it is not, and missed


def accumulate(name: str, output: torch.Tensor, target: torch.Tensor, spec: TaskSpec | None = None) -> float:
    """The metric fed in batches of 3 (the last one shorter)."""
    metric = (spec.metric_class(name) if spec else METRICS.get(name))()
    for i in range(0, len(target), 3):
        metric.update(output[i : i + 3], target[i : i + 3])
    return metric.compute()


def test_binary_metrics_match_sklearn():
    out = LOGITS.unsqueeze(-1)
    pred = (LOGITS > 0).long().numpy()
    y = BINARY.long().numpy()
    assert accumulate("auroc", out, BINARY) == pytest.approx(skm.roc_auc_score(y, LOGITS.numpy()), abs=1e-12)
    assert accumulate("f1", out, BINARY) == pytest.approx(skm.f1_score(y, pred), abs=1e-12)
    assert accumulate("f1_macro", out, BINARY) == pytest.approx(skm.f1_score(y, pred, average="macro"), abs=1e-12)
    assert accumulate("balanced_accuracy", out, BINARY) == pytest.approx(
        skm.balanced_accuracy_score(y, pred), abs=1e-12
    )


def test_auroc_by_hand_with_ties_and_one_class():
    # positives score 0.5 and 2, negatives 0.5 and -1: pairs (0.5 vs 0.5) tie -> 1/2, the rest win
    out = torch.tensor([[0.5], [2.0], [0.5], [-1.0]])
    y = torch.tensor([1.0, 1.0, 0.0, 0.0])
    assert accumulate("auroc", out, y) == pytest.approx(3.5 / 4, abs=1e-12)
    assert math.isnan(accumulate("auroc", out, torch.ones(4)))  # one class only: undefined
    assert METRICS.get("auroc").direction == "max"


def test_multiclass_metrics_match_sklearn():
    pred = MULTI_LOGITS.argmax(-1).numpy()
    y = MULTI.numpy()
    assert accumulate("f1_macro", MULTI_LOGITS, MULTI) == pytest.approx(
        skm.f1_score(y, pred, average="macro"), abs=1e-12
    )
    assert accumulate("balanced_accuracy", MULTI_LOGITS, MULTI) == pytest.approx(
        skm.balanced_accuracy_score(y, pred), abs=1e-12
    )


def test_f1_without_positives_is_zero_as_in_sklearn():
    out, y = torch.full((4, 1), -1.0), torch.zeros(4)
    assert accumulate("f1", out, y) == 0.0 == skm.f1_score([0] * 4, [0] * 4, zero_division=0.0)


def test_count_metrics_match_sklearn():
    mu = np.array([0.5, 1.2, 0.01, 3.0, 0.3, 2.2, 0.7])
    y = np.array([0.0, 2.0, 0.0, 4.0, 1.0, 2.0, 0.0])
    spec = TaskSpec("flares", "count")
    assert spec.metrics == ("poisson_deviance", "mae") and spec.kind.output_dim(spec) == 1
    out, target = torch.tensor(np.log(mu)).unsqueeze(-1), torch.tensor(y)
    assert accumulate("poisson_deviance", out, target, spec) == pytest.approx(
        skm.mean_poisson_deviance(y, mu), abs=1e-12
    )
    assert accumulate("mae", out, target, spec) == pytest.approx(skm.mean_absolute_error(y, mu), abs=1e-12)
    assert spec.metric_directions() == {"poisson_deviance": "min", "mae": "min"}
    expected = F.poisson_nll_loss(out.squeeze(-1), target, log_input=True)
    assert torch.equal(spec.kind.loss(out, target), expected)


def test_count_targets_are_checked():
    spec = TaskSpec("c", "count")
    with pytest.raises(ConfigError, match=r"^data.train: task `c` \(count\) needs integer targets >= 0, found"):
        spec.kind.check_targets(spec, torch.tensor([0.0, 1.5]), "data.train")
    spec.kind.check_targets(spec, torch.tensor([0.0, 3.0]), "data.train")


def test_new_metrics_are_allowed_where_they_apply():
    assert {"auroc", "f1", "f1_macro", "balanced_accuracy"} <= set(TASK_TYPES.get("binary").allowed_metrics)
    assert {"f1_macro", "balanced_accuracy"} <= set(TASK_TYPES.get("classification").allowed_metrics)
    with pytest.raises(ConfigError, match="^metrics\\[0\\]: metric `auroc` does not apply to a classification"):
        TaskSpec("c", "classification", num_classes=3, metrics=("auroc",))


# -- pos_weight and class_weights -------------------------------------------------------------------


def test_pos_weight_and_class_weights_reach_the_loss():
    out, y = LOGITS.unsqueeze(-1).float(), BINARY.float()
    spec = TaskSpec("b", "binary", pos_weight=3)
    assert spec.pos_weight == 3.0
    expected = F.binary_cross_entropy_with_logits(out.squeeze(-1), y, pos_weight=torch.tensor(3.0))
    assert torch.allclose(spec.kind.loss(out, y), expected)
    assert not torch.allclose(TaskSpec("b", "binary").kind.loss(out, y), expected)

    weights = (1.0, 2.0, 0.5)
    spec = TaskSpec("c", "classification", num_classes=3, class_weights=weights)
    logits = MULTI_LOGITS.float()
    expected = F.cross_entropy(logits, MULTI, weight=torch.tensor(weights))
    assert torch.allclose(spec.kind.loss(logits, MULTI), expected)


BAD_OPTIONS = [
    ({"type": "binary", "pos_weight": -1}, "pos_weight: expected a finite number > 0, found -1"),
    ({"type": "binary", "pos_weight": True}, "pos_weight: expected a finite number > 0, found True"),
    ({"type": "regression", "pos_weight": 2.0},
     "pos_weight: only binary tasks take pos_weight; task `t` is regression"),
    ({"type": "classification", "num_classes": 3, "class_weights": [1, 2]},
     "class_weights: expected a list of 3 finite numbers > 0 (one per class, num_classes = 3), found `[1, 2]`"),
    ({"type": "classification", "num_classes": 2, "class_weights": [1, 0]},
     "class_weights: expected a list of 2 finite numbers > 0 (one per class, num_classes = 2), found `[1, 0]`"),
    ({"type": "binary", "class_weights": [1, 2]},
     "class_weights: only classification tasks take class_weights; task `t` is binary (weight its positive targets "
     "with pos_weight)"),
    ({"type": "binary", "loss": "not a path"},
     "loss: expected an import path `module:function` of a loss(output, target), found `not a path`"),
    ({"type": "binary", "loss": "m:f", "pos_weight": 2.0},
     "loss: task `t` has its own loss, which pos_weight and class_weights do not reach; drop them"),
    ({"type": "binary", "metrics": ("my_metrics.Recall",)},
     "metrics[0]: expected a metric name or an import path `module:Class`, found `my_metrics.Recall`"),
]  # fmt: skip


@pytest.mark.parametrize("kwargs, message", BAD_OPTIONS)
def test_bad_task_options_are_named(kwargs, message):
    with pytest.raises(ConfigError) as info:
        TaskSpec("t", **kwargs)
    assert str(info.value) == message


SPACE_ERRORS = [
    ({"name": "left", "pos_weight": 0}, "tasks[0].pos_weight: expected a number > 0, found 0"),
    ({"name": "left", "class_weights": "heavy"},
     "tasks[0].class_weights: expected a list of numbers > 0, one per class, found `heavy`"),
    ({"name": "left", "class_weights": [1, -2]}, "tasks[0].class_weights[1]: expected a number > 0, found -2"),
    ({"name": "left", "pos_weight": 2.0},  # `left` of multidigits is a classification task
     "tasks[0].pos_weight: only binary tasks take pos_weight; task `left` is classification"),
    ({"name": "left", "class_weights": [1.0] * 9},
     "tasks[0].class_weights: expected a list of 10 finite numbers > 0 (one per class, num_classes = 10), found "
     "`[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]`"),
]  # fmt: skip


@pytest.mark.parametrize("entry, message", SPACE_ERRORS)
def test_task_options_in_a_space_are_checked(tiny_space, entry, message):
    tiny_space["tasks"] = [entry, "right"]
    with pytest.raises(ConfigError) as info:
        mtlsearch.load(tiny_space)
    assert str(info.value) == message


def test_task_options_survive_storage_and_rebuild(tiny_space):
    weights = [1.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5]
    tiny_space["tasks"] = [{"name": "left", "class_weights": weights, "metrics": ["accuracy", "f1_macro"]}, "right"]
    problem, _ = mtlsearch.load(tiny_space)
    left = problem.tasks[0]
    assert left.class_weights == tuple(weights) and left.kind.class_weights == tuple(weights)
    tasks, _ = read_signature(problem.signature())
    assert tasks == problem.tasks and tasks[0].class_weights == tuple(weights)
    binary = TaskSpec("b", "binary", metrics=("auroc", "balanced_accuracy"), pos_weight=4.0)
    assert TaskSpec(**binary.to_dict()) == binary and binary.to_dict()["pos_weight"] == 4.0


# -- a user's metric and loss, by import path -------------------------------------------------------

USER_CODE = """
import torch
import torch.nn.functional as F
from mtlsearch.tasks import Metric


class Recall(Metric):
    name = "recall"
    direction = "max"

    def update(self, output, target):
        pred = output.reshape(target.shape) > 0
        self.total += (pred & (target == 1)).sum().item()
        self.count += (target == 1).sum().item()


class NoDirection(Metric):
    name = "nodir"

    def update(self, output, target):
        pass


class Accuracy(Recall):
    name = "accuracy"


CALLS = []


def focal(output, target, gamma=2.0):
    CALLS.append(len(target))
    logit = output.reshape(target.shape)
    p = torch.sigmoid(logit)
    pt = torch.where(target == 1, p, 1 - p)
    return ((1 - pt) ** gamma * F.binary_cross_entropy_with_logits(logit, target, reduction="none")).mean()


def vector(output, target):
    return (output.reshape(target.shape) - target) ** 2


NOT_A_CLASS = 3
"""
MODULE = "mtls_user_metrics"


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / f"{MODULE}.py").write_text(USER_CODE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("mtlsearch.problem.FACTORY_FOLDERS", [])
    sys.modules.pop(MODULE, None)
    yield sys.modules
    sys.modules.pop(MODULE, None)


def penguins_space(tasks, **run) -> dict:
    return {
        "name": "user",
        "data": {"benchmark": "penguins", "seed": 0},
        "tasks": tasks,
        "backbone": {"name": "mlp", "width": 8, "depth": 2},
        "search_space": {
            "families": ["hard_sharing"],
            "weightings": ["equal"],
            "training": {"epochs": 1, "batch_size": 64, "optimizer": "adam", "lr": 1.0e-2},
        },
        "objectives": ["delta_mtl", "params"],
        "baselines": {"kind": "default", "seeds": 1},
        "run": {"study": "user", "device": "cpu", "n_trials": 1, "seed": 0, **run},
    }


USER_ERRORS = [
    ({"metrics": ["accuracy", f"{MODULE}:Missing"]},
     f"tasks[0].metrics[1]: module `{MODULE}` has no attribute `Missing`"),
    ({"metrics": ["nowhere_pkg_xyz:Recall"]},
     "tasks[0].metrics[0]: cannot import module `nowhere_pkg_xyz`: no `nowhere_pkg_xyz.py` or `nowhere_pkg_xyz/` on"),
    ({"metrics": [f"{MODULE}:focal"]},
     f"tasks[0].metrics[0]: `{MODULE}:focal` is a function, not a metric; expected a subclass of "
     "mtlsearch.tasks.Metric with class attributes `name` and `direction` and a method `update`"),
    ({"metrics": [f"{MODULE}:NoDirection"]},
     f'tasks[0].metrics[0]: `{MODULE}:NoDirection` needs a class attribute `direction`, "max" (higher is better) '
     'or "min" (lower is better); it has none'),
    ({"metrics": [f"{MODULE}:Accuracy"]},
     f"tasks[0].metrics[0]: `{MODULE}:Accuracy` is named `accuracy`, as a built-in metric; give the class another "
     "name"),
    ({"loss": f"{MODULE}:Recall"},
     f"tasks[0].loss: `{MODULE}:Recall` is the class Recall; expected a function loss(output, target) returning a "
     "scalar tensor (for an nn.Module loss, name an instance of it)"),
    ({"loss": f"{MODULE}:NOT_A_CLASS"},
     f"tasks[0].loss: `{MODULE}:NOT_A_CLASS` is a int; expected a function loss(output, target) returning a scalar "
     "tensor (for an nn.Module loss, name an instance of it)"),
]  # fmt: skip


@pytest.mark.parametrize("fields, message", USER_ERRORS)
def test_bad_user_metrics_and_losses_are_named(user_module, fields, message):
    with pytest.raises(ConfigError) as info:
        mtlsearch.load(penguins_space([{"name": "sex", **fields}, "species"]))
    assert str(info.value).startswith(message)


def test_a_user_loss_must_return_a_scalar(user_module):
    problem, _ = mtlsearch.load(penguins_space([{"name": "sex", "loss": f"{MODULE}:vector"}, "species"]))
    with pytest.raises(ConfigError, match=r"^loss: `mtls_user_metrics:vector` returned a tensor of shape \(4,\);"):
        problem.tasks[0].kind.loss(torch.zeros(4, 1), torch.ones(4))


@pytest.mark.slow
def test_a_user_metric_and_loss_are_recorded_stored_and_rebuilt(user_module, tmp_path):
    tasks = [{"name": "sex", "metrics": ["accuracy", f"{MODULE}:Recall"], "loss": f"{MODULE}:focal"}, "species"]
    space = penguins_space(tasks, storage=f"sqlite:///{tmp_path}/u.db")
    space["delta_mtl"] = {"metrics": {"sex": ["recall"], "species": ["accuracy"]}}
    space["objectives"] = ["delta_mtl", "sex.recall"]
    problem, run = mtlsearch.load(space)
    sex = problem.tasks[0]
    assert sex.metrics == ("accuracy", "recall") and sex.metric_directions() == {"accuracy": "max", "recall": "max"}
    assert sex.to_dict()["metrics"] == ["accuracy", f"{MODULE}:Recall"] and sex.to_dict()["loss"] == f"{MODULE}:focal"

    calls = user_module[MODULE].CALLS
    study = mtlsearch.run_search(problem, run)
    assert calls, "the user's loss trained the task"
    trial = study.trials[0]
    recall = trial.user_attrs["val_metrics"]["sex"]["recall"]
    assert 0.0 <= recall <= 1.0 and trial.values[1] == recall

    # the stored study rebuilds the task with its user code (what a worker process does)
    rebuilt = mtlsearch.resume("user", run.storage, n_trials=2)
    assert len(rebuilt.trials) == 2 and rebuilt.trials[1].user_attrs["val_metrics"]["sex"]["recall"] >= 0.0

    # the hypervolume's reference point takes the user metric's direction (recall: higher is better)
    reference = study_reference(rebuilt)
    assert reference is not None and reference["objectives"] == ["delta_mtl", "sex.recall"]
    assert reference["point"] == [-100.0, 0.0] and reference["scale"][1] > 0

    # the report's chart of it says which way is better, as the study stored it
    from mtlsearch.search._html import metric_figures
    from mtlsearch.search.results import report

    data = report(rebuilt)
    assert data["metric_directions"]["sex"] == {"accuracy": "max", "recall": "max"}
    assert metric_figures(data)["sex.recall"]["layout"]["title"]["text"].startswith("sex.recall (higher is better)")
