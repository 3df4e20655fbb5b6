"""Bad input gets a clear error naming the field, the value and what is allowed (mtlsearch.config,
mtlsearch.problem, mtlsearch.load).

Each case starts from a valid space (:data:`BASE`), changes one thing and pins the full message of
the :class:`~mtlsearch.ConfigError` that ``mtlsearch.load`` raises: never a traceback from deep
inside torch, never silent acceptance.
"""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path

import pytest
import yaml

import mtlsearch
from mtlsearch import ConfigError, RunConfig, SearchSpace
from mtlsearch.config import ParamSpec, parse_document, read_yaml
from mtlsearch.data import multidigits

ROOT = Path(__file__).resolve().parents[1]

# A small, valid space: MultiDigits loads in about 0.1 s at these sizes.
BASE = {
    "name": "unit",
    "data": {"benchmark": "multidigits", "seed": 0, "n_train": 200, "n_val": 50, "n_test": 50},
    "backbone": {"name": "cnn", "channels": 4, "depth": 2},
    "search_space": {
        "families": ["single_task", "hard_sharing", "tree"],
        "tree": {"max_groups": 2},
        "weightings": ["equal", "static"],
        "static": {"weight": {"low": 0.25, "high": 4.0, "log": True}},
        "training": {"epochs": 1, "batch_size": 64, "optimizer": "adam", "lr": {"low": 3.0e-4, "high": 1.0e-2, "log": True}},
    },
    "objectives": ["delta_mtl", "params"],
    "baselines": "auto",
    "run": {"study": "unit", "storage": "sqlite:///unit.db", "sampler": "tpe", "seed": 0, "n_trials": 2, "device": "cpu"},
}

DELETE = object()
GIVEN_BASELINES = {"left": {"accuracy": 0.9}, "right": {"accuracy": 0.9}, "sum": {"mae": 1.0}}
SECTION_RULE = (
    "unknown key; a section must name a family listed in search_space.families, a weighting listed "
    "in search_space.weightings, a strategy listed in search_space.strategies or a schedule listed in "
    "search_space.schedules; allowed keys are: "
    "families, weightings, strategies, schedules, training, auxiliary, "
)
STORAGE_CHOICES = "choose one of: sqlite://..., postgresql://..., mysql://..., journal://... (e.g. sqlite:///mtlsearch.db)"
OBJECTIVE_CHOICES = "choose from: delta_mtl, params, macs, latency_ms, or TASK.METRIC (e.g. left.accuracy)"


@pytest.fixture(autouse=True, scope="module")
def _digits_read_once():
    """Most cases load MultiDigits; reading scikit-learn's digits once keeps the module fast."""
    original = multidigits._load_digits
    multidigits._load_digits = functools.cache(original)
    yield
    multidigits._load_digits = original


def variant(*changes: tuple[str, object]) -> dict:
    """A deep copy of BASE with ``(dotted.path, value)`` changes applied (DELETE removes a key)."""
    raw = copy.deepcopy(BASE)
    for path, value in changes:
        *parents, last = path.split(".")
        node = raw
        for key in parents:
            node = node[key]
        if value is DELETE:
            del node[last]
        else:
            node[last] = copy.deepcopy(value)
    return raw


def load_error(raw: object) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        mtlsearch.load(raw)
    return e.value


def write(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------------
# Bad values in a space given as a dict: (id, changes, the exact message).

CASES = [
    # -- top level and structure
    ("unknown-top-key", [("serch_space", {"families": ["tree"]})],
     "serch_space: unknown key; allowed keys are: name, data, tasks, backbone, search_space, objectives, "
     "constraints, baselines, delta_mtl, run (did you mean `search_space`?)"),
    ("string-for-search-space", [("search_space", "tree")],
     "search_space: expected a mapping (key: value), found `tree`"),
    ("string-for-training", [("search_space.training", "fast")],
     "search_space.training: expected a mapping (key: value), found `fast`"),
    ("string-for-backbone", [("backbone", "cnn")],
     "backbone: expected a mapping (key: value), found `cnn`"),
    ("list-for-family-section", [("search_space.tree", [2])],
     "search_space.tree: expected a mapping (key: value), found `[2]`"),
    ("string-for-run", [("run", "fast")],
     "run: expected a mapping (key: value), found `fast`"),
    ("bad-name", [("name", "my study")],
     "name: expected letters, digits, '_', '-' or '.', found `my study`"),
    ("empty-name", [("name", "")],
     "name: expected a non-empty string, found ``"),
    # -- choice lists
    ("empty-families", [("search_space.families", [])],
     "search_space.families: expected a non-empty list of choices, found `[]`"),
    ("empty-weightings", [("search_space.weightings", [])],
     "search_space.weightings: expected a non-empty list of choices, found `[]`"),
    ("empty-batch-size-choices", [("search_space.training.batch_size", [])],
     "search_space.training.batch_size: expected a non-empty list of choices, found `[]`"),
    ("mapping-for-families", [("search_space.families", {"tree": 1})],
     "search_space.families: expected a non-empty list of choices, found `{'tree': 1}`"),
    ("family-not-a-string", [("search_space.families", ["tree", 1])],
     "search_space.families[1]: expected a non-empty string, found 1"),
    ("duplicate-family", [("search_space.families", ["tree", "hard_sharing", "tree"])],
     "search_space.families[2]: `tree` is listed twice"),
    ("duplicate-batch-size", [("search_space.training.batch_size", [64, 128, 64])],
     "search_space.training.batch_size[2]: 64 is listed twice"),
    ("duplicate-objective", [("objectives", ["left.accuracy", "left.accuracy"])],
     "objectives[1]: `left.accuracy` is listed twice"),
    # -- families, weightings and their sections
    ("unknown-family", [("search_space.families", ["single_task", "hard_sharing", "tre"])],
     "search_space.families[2]: unknown family `tre`; choose one of: adapters, adashare, adashare_learned, cgc, cross_stitch, dselect_k, hard_sharing, learn_to_branch, mmoe, mtan, ple, routing, single_task, tree "
     "(did you mean `tree`?)"),
    ("unknown-weighting", [("search_space.weightings", ["equal", "statc"])],
     "search_space.weightings[1]: unknown weighting or aggregation method `statc`; choose one of: aligned_mtl, cagrad, config, cr_mogm, db_mtl, dualproj, dwa, equal, excess_mtl, fairgrad, famo, gls, graddrop, gradnorm, gradvac, imtl_g, imtl_l, mgda, mgda_ub, moco, modo, nash_mtl, pcd, pcgrad, rlw, sdmgrad, static, stch, uncertainty, upgrad (did you mean `static`?)"),
    ("misspelt-family-section", [("search_space.tree", DELETE), ("search_space.tre", {"max_groups": 2})],
     "search_space.tre: " + SECTION_RULE + "single_task, hard_sharing, tree, equal, static, none, all (did you mean `tree`?)"),
    ("section-of-unlisted-family", [("search_space.families", ["single_task", "hard_sharing"])],
     "search_space.tree: " + SECTION_RULE + "single_task, hard_sharing, equal, static, none, all"),
    ("section-of-unlisted-weighting", [("search_space.weightings", ["equal"])],
     "search_space.static: " + SECTION_RULE + "single_task, hard_sharing, tree, equal, none, all (did you mean `strategies`?)"),
    ("misspelt-training", [("search_space.trainig", {"epochs": 1})],
     "search_space.trainig: " + SECTION_RULE + "single_task, hard_sharing, tree, equal, static, none, all (did you mean `training`?)"),
    ("unknown-section-lists-strategies-and-schedules",
     [("search_space.strategies", ["none", "distill"]), ("search_space.schedules", ["all", "round_robin"]),
      ("search_space.robin", {"k": 1})],
     "search_space.robin: " + SECTION_RULE + "single_task, hard_sharing, tree, equal, static, none, distill, all, "
     "round_robin (did you mean `round_robin`?)"),
    ("max-groups-zero", [("search_space.tree.max_groups", 0)],
     "search_space.tree.max_groups: expected an integer >= 1, found 0"),
    ("max-groups-bool", [("search_space.tree.max_groups", True)],
     "search_space.tree.max_groups: expected an integer >= 1, found True"),
    ("unknown-family-parameter", [("search_space.tree.max_group", 2)],
     "search_space.tree.max_group: unknown parameter of `tree`; allowed: max_groups (did you mean `max_groups`?)"),
    ("parameter-of-family-without-any", [("search_space.hard_sharing", {"width": 2})],
     "search_space.hard_sharing.width: unknown parameter of `hard_sharing`; allowed: none"),
    ("parameter-of-weighting-without-any", [("search_space.equal", {"weight": 2})],
     "search_space.equal.weight: unknown key; allowed keys are: none"),
    ("unknown-weighting-key", [("search_space.static", {"weigth": 1.0})],
     "search_space.static.weigth: unknown key; allowed keys are: weight (did you mean `weight`?)"),
    ("static-weight-zero", [("search_space.static.weight", 0)],
     "search_space.static.weight: expected a number > 0, found 0"),
    # -- training space and ranges
    ("negative-epochs", [("search_space.training.epochs", -1)],
     "search_space.training.epochs: expected an integer >= 1, found -1"),
    ("float-epochs", [("search_space.training.epochs", 2.5)],
     "search_space.training.epochs: expected an integer >= 1, found 2.5"),
    ("zero-epoch-choice", [("search_space.training.epochs", [1, 0])],
     "search_space.training.epochs[1]: expected an integer >= 1, found 0"),
    ("non-integer-epoch-step", [("search_space.training.epochs", {"low": 1, "high": 3, "step": 0.5})],
     "search_space.training.epochs.step: expected an integer step, found 0.5"),
    # -- found by tests/test_fuzz.py: values that overflowed a float, Optuna's floats, torch
    ("huge-int-lr", [("search_space.training.lr", 10**400)],
     "search_space.training.lr: expected a finite number > 0, found an integer of 401 digits, too large for a float"),
    ("huge-int-range-end", [("search_space.training.batch_size", {"low": 1, "high": 10**400})],
     "search_space.training.batch_size.high: expected an integer in [-9007199254740992, 9007199254740992] (2**53), "
     "found 10000000000000000000000000000000000000...000000000000000000000000000000000000000"),
    ("huge-int-range-step", [("search_space.training.batch_size", {"low": 1, "high": 64, "step": 1e300})],
     "search_space.training.batch_size.step: expected an integer step <= 2**53, found 1e+300"),
    ("huge-data-seed", [("data.seed", 2**32)],
     "data.seed: expected an integer in [0, 4294967295], found 4294967296"),
    ("float32-lr", [("search_space.training.lr", {"low": 1e-3, "high": 1e39})],
     "search_space.training.lr.high: expected a number <= 3.4e+38 (float32's largest), found 1e+39"),
    ("negative-lr", [("search_space.training.lr", -0.001)],
     "search_space.training.lr: expected a number > 0, found -0.001"),
    ("lr-not-a-number", [("search_space.training.lr", "fast")],
     "search_space.training.lr: expected a number > 0, found `fast`"),
    ("lr-nan", [("search_space.training.lr", float("nan"))],
     "search_space.training.lr: expected a number > 0, found nan"),
    ("negative-weight-decay", [("search_space.training.weight_decay", -1)],
     "search_space.training.weight_decay: expected a number >= 0, found -1"),
    ("log-range-low-zero", [("search_space.training.weight_decay", {"low": 0, "high": 0.1, "log": True})],
     "search_space.training.weight_decay.low: a log range needs low > 0, found 0"),
    ("lr-range-low-zero", [("search_space.training.lr", {"low": 0, "high": 0.1, "log": True})],
     "search_space.training.lr.low: expected a number > 0, found 0"),
    ("range-high-below-low", [("search_space.training.lr", {"low": 0.1, "high": 0.01})],
     "search_space.training.lr.high: expected a number >= low (0.1), found 0.01"),
    ("range-without-high", [("search_space.training.lr", {"low": 0.1})],
     "search_space.training.lr.high: required key is missing"),
    ("range-unknown-key", [("search_space.training.lr", {"low": 0.001, "high": 0.1, "stp": 0.01})],
     "search_space.training.lr.stp: unknown key; allowed keys are: low, high, log, step (did you mean `step`?)"),
    ("range-log-not-bool", [("search_space.training.lr", {"low": 0.001, "high": 0.1, "log": "yes"})],
     "search_space.training.lr.log: expected true or false, found `yes`"),
    ("range-log-and-step", [("search_space.training.lr", {"low": 0.001, "high": 0.1, "log": True, "step": 0.01})],
     "search_space.training.lr.step: step cannot be combined with log: true"),
    ("range-of-names", [("search_space.training.optimizer", {"low": "adam", "high": "sgd"})],
     "search_space.training.optimizer: a range needs numeric low and high, found `{'low': 'adam', 'high': 'sgd'}`"),
    ("unknown-optimizer", [("search_space.training.optimizer", "adma")],
     "search_space.training.optimizer: unknown optimizer `adma`; choose one of: adam, adamw, sgd (did you mean `adam`?)"),
    ("unknown-optimizer-choice", [("search_space.training.optimizer", ["adam", "rmsprop"])],
     "search_space.training.optimizer[1]: unknown optimizer `rmsprop`; choose one of: adam, adamw, sgd"),
    ("unknown-training-key", [("search_space.training.momentum", 0.9)],
     "search_space.training.momentum: unknown key; allowed keys are: epochs, batch_size, optimizer, lr, weight_decay"),
    # -- backbone
    ("unknown-backbone", [("backbone.name", "resnet")],
     "backbone.name: unknown backbone `resnet`; choose one of: cnn, efficientnet_b0, mlp, mobilenet_v3_large, "
     "mobilenet_v3_small, resnet18, resnet34, resnet50 (did you mean `resnet50`?)"),
    ("backbone-without-name", [("backbone.name", DELETE)],
     "backbone.name: required key is missing (e.g. `mlp` or `cnn`)"),
    ("unknown-backbone-parameter", [("backbone.chanels", 8)],
     "backbone.chanels: unknown parameter of `cnn`; allowed: channels, depth, min_size (did you mean `channels`?)"),
    ("backbone-channels-zero", [("backbone.channels", 0)],
     "backbone.channels: expected an integer >= 1, found 0"),
    ("mlp-dropout-one", [("backbone", {"name": "mlp", "dropout": 1.5})],
     "backbone.dropout: expected a number in [0, 1), found 1.5"),
    ("cnn-on-vectors", [("data", {"benchmark": "mmoe_synthetic", "input_dim": 4, "n_train": 40, "n_val": 10, "n_test": 10})],
     "backbone.name: backbone `cnn` needs image inputs of shape (C, H, W), found input shape (4,); use `mlp` for vectors"),
    # -- data
    ("unknown-benchmark", [("data.benchmark", "mnist")],
     "data.benchmark: unknown benchmark `mnist`; choose one of: adult, celeba, cityscapes, mmoe_synthetic, multidigits, "
     "multimnist, nyuv2, penguins, scenes, solar_flare, yeast (did you mean `multimnist`?)"),
    ("unknown-data-parameter", [("data.n_trian", 100)],
     "data.n_trian: unknown parameter of benchmark `multidigits`; allowed: seed, n_train, n_val, n_test (did you mean `n_train`?)"),
    ("bad-data-parameter", [("data.n_train", 0)],
     "data.n_train: expected an integer >= 1, found 0"),
    ("negative-data-seed", [("data.seed", -1)],
     "data.seed: expected an integer >= 0, found -1"),
    ("no-data-source", [("data", {"seed": 0})],
     "data: expected `benchmark: NAME` (a built-in benchmark) or `factory: package.module:function`"),
    ("benchmark-and-factory", [("data.factory", "pkg.mod:make")],
     "data: give either `benchmark` (a built-in) or `factory` (an import path), not both"),
    ("factory-not-an-import-path", [("data", {"factory": "mtlsearch.data.multidigits"})],
     "data.factory: expected an import path `package.module:function`, found `mtlsearch.data.multidigits`"),
    ("factory-module-missing", [("data", {"factory": "no_such_package.data:make"})],
     "data.factory: cannot import module `no_such_package.data`: no `no_such_package.py` or `no_such_package/` on "
     f"the Python path or in {os.getcwd()}; run from the folder that holds it, or add that folder to PYTHONPATH"),
    ("factory-attribute-missing", [("data", {"factory": "mtlsearch.data.multidigits:make_digits"})],
     "data.factory: module `mtlsearch.data.multidigits` has no attribute `make_digits`"),
    ("factory-not-callable", [("data", {"factory": "mtlsearch:__version__"})],
     "data.factory: `mtlsearch:__version__` is a str, not a function; expected a function "
     "`factory(seed, **params)` returning mtlsearch.data.MTLData"),
    ("factory-wrong-signature", [("data", {"factory": "json:dumps"})],
     "data.factory: factory `json:dumps` cannot be called as `factory(seed, **params)`: missing a required argument: 'obj'"),
    ("factory-returns-no-data", [("data", {"factory": "builtins:dict"})],
     "data: factory `builtins:dict` returned dict; expected mtlsearch.data.MTLData"),
    # -- tasks
    ("unknown-task-type", [("tasks", [{"name": "mask", "type": "segmentaton"}, "left"])],
     "tasks[0].type: unknown task type `segmentaton`; choose one of: binary, classification, count, depth, edges, "
     "normals, regression, segmentation (did you mean `segmentation`?)"),
    ("unknown-task-of-data", [("tasks", ["left", "rigth"])],
     "tasks[1].name: unknown task `rigth` of the data; choose one of: left, right, sum (did you mean `right`?)"),
    ("duplicate-task", [("tasks", ["left", "right", "left"])],
     "tasks[2].name: task `left` is listed twice"),
    ("one-task", [("tasks", ["left"])],
     "tasks: expected at least 2 tasks for a multi-task search, found 1"),
    ("string-for-tasks", [("tasks", "left")],
     "tasks: expected a list of task names or task specs, found `left`"),
    ("number-for-task", [("tasks", ["left", 3])],
     "tasks[1]: expected a task name or a mapping with name (and type, ...), found 3"),
    ("task-without-name", [("tasks", [{"type": "regression"}, "left"])],
     "tasks[0].name: required key is missing"),
    ("unknown-task-key", [("tasks", [{"name": "left", "metric": ["accuracy"]}, "right"])],
     "tasks[0].metric: unknown key; allowed keys are: name, type, num_classes, output_dim, metrics, loss, pos_weight, "
     "class_weights, role (did you mean `metrics`?)"),
    ("metric-not-for-task-type", [("tasks", [{"name": "sum", "metrics": ["accuracy"]}, "left"])],
     "tasks[0].metrics[0]: metric `accuracy` does not apply to a regression task; choose from: mae, mse, rmse"),
    ("metric-not-for-declared-type", [("tasks", [{"name": "y", "type": "binary", "metrics": ["mae"]}, "left"])],
     "tasks[0].metrics[0]: metric `mae` does not apply to a binary task; choose from: accuracy, auroc, balanced_accuracy, "
     "cross_entropy, f1, f1_macro"),
    ("classification-without-classes", [("tasks", [{"name": "y", "type": "classification"}, "left"])],
     "tasks[0].num_classes: expected an integer >= 2 for a classification task, found None"),
    ("classes-on-regression", [("tasks", [{"name": "y", "type": "regression", "num_classes": 3}, "left"])],
     "tasks[0].num_classes: only classification and segmentation tasks take num_classes; task `y` is regression"),
    ("output-dim-on-classification", [("tasks", [{"name": "left", "type": "classification", "num_classes": 10, "output_dim": 7}, "right"])],
     "tasks[0].output_dim: only regression tasks take output_dim; task `left` is classification"),
    ("size-without-type", [("tasks", [{"name": "y", "num_classes": 3}, "left"])],
     "tasks[0].type: required when a task gives num_classes or output_dim"),
    ("task-type-differs-from-data", [("tasks", [{"name": "left", "type": "regression"}, "right"])],
     "tasks[0]: task `left` is classification in the data ({'name': 'left', 'type': 'classification', "
     "'num_classes': 10, 'metrics': ['accuracy']}); the space says {'name': 'left', 'type': 'regression', "
     "'output_dim': 1, 'metrics': ['mae']}"),
    ("declared-task-without-targets", [("tasks", [{"name": "y", "type": "regression"}, "left"])],
     "data: the train split has no targets for task `y`; it has: left, right, sum"),
    # -- objectives
    ("bad-objective-string", [("objectives", ["delta-mtl"])],
     f"objectives[0]: unknown objective `delta-mtl`; {OBJECTIVE_CHOICES} (did you mean `delta_mtl`?)"),
    ("objective-with-two-dots", [("objectives", ["left.accuracy.top1"])],
     f"objectives[0]: unknown objective `left.accuracy.top1`; {OBJECTIVE_CHOICES}"),
    ("objective-unknown-task", [("objectives", ["delta_mtl", "lefft.accuracy"])],
     "objectives[1]: unknown task `lefft`; choose one of: left, right, sum (did you mean `left`?)"),
    ("objective-metric-task-lacks", [("objectives", ["left.mae"])],
     "objectives[0]: task `left` is not scored by `mae`; its metrics are: accuracy"),
    ("empty-objectives", [("objectives", [])],
     "objectives: expected a non-empty list of choices, found `[]`"),
    # -- baselines
    ("baselines-missing-task", [("baselines", {"left": {"accuracy": 0.9}, "right": {"accuracy": 0.9}})],
     "baselines.sum: missing: given baselines need every task (left, right, sum)"),
    ("baselines-missing-metric", [("baselines", {**GIVEN_BASELINES, "sum": {}})],
     "baselines.sum.mae: missing: Delta-MTL counts mae for task `sum`"),
    ("baselines-unknown-metric", [("baselines", {**GIVEN_BASELINES, "left": {"accuracy": 0.9, "acuracy": 0.8}})],
     "baselines.left.acuracy: task `left` is not scored by `acuracy`; its metrics are: accuracy (did you mean `accuracy`?)"),
    ("baselines-unknown-task", [("baselines", {**GIVEN_BASELINES, "total": {"mae": 1.0}})],
     "baselines.total: unknown task; choose from: left, right, sum"),
    ("baselines-zero", [("baselines", {**GIVEN_BASELINES, "sum": {"mae": 0}})],
     "baselines.sum.mae: expected a non-zero number (Delta-MTL divides by it), found 0"),
    ("baselines-not-a-number", [("baselines", {**GIVEN_BASELINES, "left": {"accuracy": "high"}})],
     "baselines.left.accuracy: expected a number, found `high`"),
    ("baselines-word", [("baselines", "manual")],
     "baselines: unknown baselines `manual`; choose one of: auto, tuned, default, "
     "or a mapping {kind, tune_trials, seeds, values}"),
    ("baselines-empty", [("baselines", {})],
     "baselines: expected `auto`, `tuned`, `default` or a mapping {kind, tune_trials, seeds, values}, found `{}`"),
    ("baselines-kind", [("baselines", {"kind": "tunned"})],
     "baselines.kind: unknown kind `tunned`; choose one of: tuned, default, given"),
    ("baselines-tune-trials", [("baselines", {"kind": "tuned", "tune_trials": 0})],
     "baselines.tune_trials: expected an integer >= 1, found 0"),
    ("baselines-tune-trials-huge", [("baselines", {"tune_trials": 5000})],
     "baselines.tune_trials: expected at most 1000, found 5000"),
    ("baselines-seeds", [("baselines", {"seeds": 1.5})],
     "baselines.seeds: expected an integer >= 1, found 1.5"),
    ("baselines-default-tuned", [("baselines", {"kind": "default", "tune_trials": 4})],
     "baselines.tune_trials: default baselines are not tuned; use kind: tuned"),
    ("baselines-given-no-values", [("baselines", {"kind": "given"})],
     "baselines.values: given baselines need `values: {task: {metric: value}}`"),
    ("baselines-values-not-given", [("baselines", {"kind": "tuned", "values": GIVEN_BASELINES})],
     "baselines.kind: `values` are given baselines; use kind: given, not `tuned`"),
    ("baselines-given-seeds", [("baselines", {"kind": "given", "values": GIVEN_BASELINES, "seeds": 2})],
     "baselines.seeds: given baselines are not trained; remove it"),
    ("baselines-given-long-form", [("baselines", {"values": {**GIVEN_BASELINES, "left": {"accuracy": "x"}}})],
     "baselines.values.left.accuracy: expected a number, found `x`"),
    # -- delta_mtl
    ("delta-average", [("delta_mtl", {"average": "tasks"})],
     "delta_mtl.average: unknown average `tasks`; choose one of: task (per task first), metric (every metric equally)"),
    ("delta-unknown-key", [("delta_mtl", {"averge": "task"})],
     "delta_mtl.averge: unknown key; allowed keys are: average, metrics (did you mean `average`?)"),
    ("delta-metrics-task", [("delta_mtl", {"metrics": {"lft": ["accuracy"]}})],
     "delta_mtl.metrics.lft: unknown task; choose from: left, right, sum (did you mean `left`?)"),
    ("delta-metrics-unrecorded", [("delta_mtl", {"metrics": {"left": ["cross_entropy"]}})],
     "delta_mtl.metrics.left[0]: task `left` does not record `cross_entropy`; its metrics are: accuracy "
     "(add it to the task's metrics)"),
    # -- run
    ("unknown-storage-scheme", [("run.storage", "redis://x")],
     f"run.storage: unknown storage scheme in `redis://x`; {STORAGE_CHOICES}"),
    ("storage-without-slashes", [("run.storage", "sqlite:x.db")],
     f"run.storage: unknown storage scheme in `sqlite:x.db`; {STORAGE_CHOICES}"),
    ("unknown-sampler", [("run.sampler", "tpee")],
     "run.sampler: unknown sampler `tpee`; choose one of: tpe, nsga2, random (did you mean `tpe`?)"),
    ("bad-device", [("run.device", "gpu")],
     "run.device: expected `auto`, `cpu`, `cuda`, `cuda:N` or `mps`, found `gpu`"),
    ("zero-trials", [("run.n_trials", 0)],
     "run.n_trials: expected an integer >= 1, found 0"),
    ("trials-as-string", [("run.n_trials", "10")],
     'run.n_trials: expected an integer >= 1, found the string "10"'),
    ("zero-timeout", [("run.timeout", 0)],
     "run.timeout: expected a number > 0, found 0"),
    ("save-weights-word", [("run.save_weights", "yes")],
     "run.save_weights: expected true or false, found `yes`"),
    ("unknown-run-key", [("run.trials", 5)],
     "run.trials: unknown key; allowed keys are: study, storage, sampler, seed, n_trials, timeout, device, "
     "artifacts, save_weights, workers, heartbeat_interval, grace_period, early_stopping, min_trials, min_epochs, "
     "seeds_per_trial, confirm, threads, warm_start "
     "(did you mean `n_trials`?)"),
    ("run-grace-too-short", [("run.heartbeat_interval", 10), ("run.grace_period", 5)],
     "run.grace_period: expected more than heartbeat_interval (10 s), found 5"),
    ("run-early-stopping", [("run.early_stopping", "hyperband")],
     "run.early_stopping: unknown rule `hyperband`; choose one of: none, median, asha"),
    ("run-workers-zero", [("run.workers", 0)], "run.workers: expected an integer >= 1, found 0"),
]


@pytest.mark.parametrize("changes, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_value_is_named(changes, message):
    err = load_error(variant(*changes))
    assert str(err) == message
    assert isinstance(err, ValueError)  # ConfigError is a ValueError for callers that catch those
    assert message.startswith(f"{err.path}: ")  # the path is the field's, not a prefix of it


def test_case_ids_are_unique():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids)) and len(CASES) >= 25


# ---------------------------------------------------------------------------------------------
# Files.


def test_malformed_yaml_names_line_and_column(tmp_path):
    path = write(tmp_path, "name: unit\ndata:\n  benchmark: multidigits\n  seed: [0\nbackbone: {name: cnn}\n")
    err = load_error(path)
    assert str(err) == (
        f"{path}: malformed YAML at line 5, column 9: expected ',' or ']', but got ':' "
        "(while parsing a flow sequence started at line 4, column 9)"
    )


def test_tab_indentation_is_malformed(tmp_path):
    path = write(tmp_path, "name: unit\n\tdata: 1\n")
    assert str(load_error(path)) == f"{path}: malformed YAML at line 2, column 1: found character '\\t' that cannot start any token"


def test_duplicate_key_is_refused_not_overwritten(tmp_path):
    path = write(tmp_path, "name: unit\nrun:\n  n_trials: 3\n  n_trials: 30\n")
    assert str(load_error(path)) == f"{path}: malformed YAML at line 4, column 3: duplicate key `n_trials` (first given at line 3)"


def test_merge_keys_may_be_overridden(tmp_path):
    path = write(tmp_path, "base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  x: 3\n")
    assert read_yaml(path) == {"base": {"x": 1, "y": 2}, "other": {"x": 3, "y": 2}}


def test_python_tags_are_refused(tmp_path):
    path = write(tmp_path, 'name: !!python/object/apply:os.system ["echo hi"]\n')
    assert str(load_error(path)) == (
        f"{path}: malformed YAML at line 1, column 7: could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/object/apply:os.system'"
    )


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    err = load_error(path)
    assert str(err) == f"{path}: no such file"
    assert str(load_error(str(path))) == f"{path}: no such file"


def test_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: café\n".encode("latin-1"))
    assert str(load_error(path)) == f"{path}: not a UTF-8 text file (invalid continuation byte at byte 9)"


@pytest.mark.parametrize("text, found", [("", "None"), ("- name: unit\n", "`[{'name': 'unit'}]`"), ("unit\n", "`unit`")])
def test_document_that_is_not_a_mapping(tmp_path, text, found):
    path = write(tmp_path, text)
    assert str(load_error(path)) == f"expected a YAML mapping at the top of the file, found {found}"


def test_unknown_key_in_a_file(tmp_path):
    text = yaml.safe_dump(variant()).replace("search_space:", "serch_space:")
    err = load_error(write(tmp_path, text))
    assert str(err).startswith("serch_space: unknown key; allowed keys are: ")
    assert str(err).endswith(" (did you mean `search_space`?)")


# ---------------------------------------------------------------------------------------------
# Valid forms.


def test_base_space_loads():
    problem, run = mtlsearch.load(variant())
    assert problem.task_names == ["left", "right", "sum"]
    assert run == RunConfig(study="unit", storage="sqlite:///unit.db", seed=0, n_trials=2, device="cpu")


def test_fixed_list_and_range_forms():
    problem, _ = mtlsearch.load(variant(
        ("search_space.training.epochs", {"low": 1, "high": 3}),
        ("search_space.training.batch_size", [32, 64]),
        ("search_space.training.optimizer", "sgd"),
        ("search_space.training.weight_decay", {"low": 0.0, "high": 0.1, "step": 0.05}),
    ))
    t = problem.training_space
    assert t.epochs == ParamSpec("int", low=1, high=3)
    assert t.batch_size == ParamSpec("choice", choices=(32, 64))
    assert t.optimizer == ParamSpec("fixed", choices=("sgd",))
    assert t.lr == ParamSpec("float", low=3.0e-4, high=1.0e-2, log=True)
    assert t.weight_decay == ParamSpec("float", low=0.0, high=0.1, step=0.05)
    assert (t.epochs.default(), t.batch_size.default(), t.optimizer.default()) == (2, 32, "sgd")


def test_single_names_stand_for_one_element_lists():
    problem, _ = mtlsearch.load(variant(
        ("search_space.families", "tree"), ("search_space.weightings", "static"), ("objectives", "delta_mtl"),
    ))
    assert list(problem.families) == ["tree"] and list(problem.weighting_spaces) == ["static"]
    assert problem.objectives == ["delta_mtl"]


def test_exponent_without_dot_is_a_number(tmp_path):
    # PyYAML (YAML 1.1) reads `1e-4` as a string; mtlsearch reads it as the number it plainly is,
    # everywhere in the file (data parameters and backbone parameters included).
    text = (
        "name: unit\n"
        "data: {benchmark: mmoe_synthetic, input_dim: 4, n_train: 40, n_val: 10, n_test: 10, noise_std: 1e-2}\n"
        "backbone: {name: mlp, width: 8, dropout: 1e-1}\n"
        "search_space:\n"
        "  training: {epochs: 1, lr: 1e-4, weight_decay: {low: 1e-6, high: 1E-3, log: true}}\n"
        "run: {timeout: 3e2}\n"
    )
    problem, run = mtlsearch.load(write(tmp_path, text))
    t = problem.training_space
    assert t.lr == ParamSpec("fixed", choices=(1e-4,))
    assert t.weight_decay == ParamSpec("float", low=1e-6, high=1e-3, log=True)
    assert problem.space.data.params["noise_std"] == 0.01
    assert problem.backbone.dropout == 0.1
    assert run.timeout == 300.0
    # a quoted string stays a string; in a dict (no YAML involved) the string is accepted too
    assert read_yaml(write(tmp_path, 'lr: "1e-4"\n', "q.yaml")) == {"lr": "1e-4"}
    problem, _ = mtlsearch.load(variant(("search_space.training.lr", {"low": "1e-4", "high": "1e-2", "log": True})))
    assert problem.training_space.lr == ParamSpec("float", low=1e-4, high=1e-2, log=True)


@pytest.mark.parametrize("text, value", [
    ("1e-4", 1e-4), ("-2E5", -2e5), ("1.0e5", 1e5), ("+1e3", 1e3), (".5e1", 5.0), ("1_0e2", 1e3),
    ("3", 3), ("0.5", 0.5), ("1e", "1e"), ("e5", "e5"), ("1e-4x", "1e-4x"), ('"1e-4"', "1e-4"),
])
def test_number_forms_in_yaml(tmp_path, text, value):
    loaded = read_yaml(write(tmp_path, f"x: {text}\n"))["x"]
    assert loaded == value and type(loaded) is type(value)


def test_example_space_loads():
    problem, run = mtlsearch.load(ROOT / "search_spaces" / "multidigits.yaml")
    assert problem.space.name == "multidigits"
    assert set(problem.families) == {"single_task", "hard_sharing", "tree"}
    assert problem.directions == ["maximize", "minimize"]
    assert run.sampler == "tpe" and run.n_trials == 20


# ---------------------------------------------------------------------------------------------
# Round trip and fingerprint.

RICH = variant(
    ("tasks", [{"name": "left", "metrics": ["accuracy", "cross_entropy"]}, "right", {"name": "sum", "type": "regression", "metrics": ["mae", "rmse"]}]),
    ("search_space.training.epochs", {"low": 1, "high": 3, "step": 2}),
    ("search_space.training.batch_size", [32, 64]),
    ("baselines", {"left": {"accuracy": 0.9, "cross_entropy": 0.3}, "right": {"accuracy": 0.9}, "sum": {"mae": 1.0, "rmse": 1.2}}),
    ("objectives", ["delta_mtl", "left.cross_entropy", "params"]),
)


@pytest.mark.parametrize("raw", [variant(), RICH, ROOT / "search_spaces" / "multidigits.yaml"], ids=["base", "rich", "example"])
def test_to_raw_round_trips(raw, tmp_path):
    space, _ = parse_document(read_yaml(raw) if isinstance(raw, Path) else raw)
    again = SearchSpace.parse(space.to_raw())
    assert again == space
    assert again.fingerprint() == space.fingerprint()
    # through a YAML file as well
    path = write(tmp_path, yaml.safe_dump(space.to_raw(), sort_keys=False))
    assert SearchSpace.parse(read_yaml(path)) == space


def test_rich_space_loads():
    problem, _ = mtlsearch.load(RICH)
    assert [t.metrics for t in problem.tasks] == [("accuracy", "cross_entropy"), ("accuracy",), ("mae", "rmse")]
    assert problem.directions == ["maximize", "minimize", "minimize"]


def test_fingerprint_is_stable_and_sensitive():
    space = SearchSpace.parse({k: v for k, v in BASE.items() if k != "run"})
    assert space.fingerprint() == SearchSpace.parse(copy.deepcopy(BASE) | {"run": {"n_trials": 99}}).fingerprint()
    assert len(space.fingerprint()) == 16
    # key order does not matter; any searched value does
    shuffled = dict(reversed(list(copy.deepcopy(BASE).items())))
    assert SearchSpace.parse(shuffled).fingerprint() == space.fingerprint()
    changed = SearchSpace.parse(variant(("search_space.tree.max_groups", 3)))
    assert changed.fingerprint() != space.fingerprint()
    changed = SearchSpace.parse(variant(("search_space.training.lr", {"low": 3.0e-4, "high": 2.0e-2, "log": True})))
    assert changed.fingerprint() != space.fingerprint()


# ---------------------------------------------------------------------------------------------
# RunConfig.replace re-validates.


def test_replace_applies_overrides_and_keeps_the_rest():
    run = RunConfig.parse(BASE["run"])
    other = run.replace(n_trials=5, sampler="random", device=None)
    assert (other.n_trials, other.sampler, other.device, other.storage) == (5, "random", "cpu", "sqlite:///unit.db")
    assert run.n_trials == 2  # the original is unchanged


@pytest.mark.parametrize("overrides, message", [
    ({"n_trials": 0}, "run.n_trials: expected an integer >= 1, found 0"),
    ({"storage": "redis://x"}, f"run.storage: unknown storage scheme in `redis://x`; {STORAGE_CHOICES}"),
    ({"sampler": "cmaes"}, "run.sampler: unknown sampler `cmaes`; choose one of: tpe, nsga2, random"),
    ({"device": "cuda:x"}, "run.device: expected `auto`, `cpu`, `cuda`, `cuda:N` or `mps`, found `cuda:x`"),
    ({"seed": -1}, "run.seed: expected an integer >= 0, found -1"),
    ({"timeout": -5.0}, "run.timeout: expected a number > 0, found -5"),
])
def test_replace_revalidates(overrides, message):
    with pytest.raises(ConfigError) as e:
        RunConfig.parse(BASE["run"]).replace(**overrides)
    assert str(e.value) == message


def test_run_section_may_be_left_out():
    _, run = mtlsearch.load(variant(("run", DELETE)))
    assert run == RunConfig()


def test_run_choices_match_their_implementations():
    """config lists the names a space or the CLI may choose; each is implemented once."""
    from mtlsearch import cli, config, training
    from mtlsearch.search import _early_stopping as early_stopping
    from mtlsearch.search import _sampler as sampler

    assert tuple(sampler.SAMPLERS) == config.SAMPLERS
    assert ("none", *early_stopping.RULES) == config.EARLY_STOPPING
    assert tuple(training.OPTIMIZERS) == config.OPTIMIZER_NAMES
    run = cli.parser()._subparsers._group_actions[0].choices["run"]
    choices = {a.dest: tuple(a.choices) for a in run._actions if a.choices}
    assert choices["sampler"] == config.SAMPLERS and choices["early_stopping"] == config.EARLY_STOPPING


def test_a_huge_seed_is_refused_before_anything_is_created():
    import copy

    import mtlsearch
    from conftest import TINY_SPACE

    space = copy.deepcopy(TINY_SPACE)
    space["run"]["seed"] = 2**70
    with pytest.raises(mtlsearch.ConfigError) as err:
        mtlsearch.load(space)
    assert str(err.value) == f"run.seed: expected an integer in [0, 4294967295], found {2**70}"
