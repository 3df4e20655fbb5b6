"""Distillation (strategy `distill`) and the kept single-task networks it learns from: the term
on hand numbers, pinned errors, the baselines' artifacts rebuilt as networks, a study with a
distill trial, and resume from a checkpoint."""

from __future__ import annotations

import copy
import math

import optuna
import pytest
import torch
from method_helpers import check_resume_equals_uninterrupted
from torch import nn

import mtlsearch
from mtlsearch.errors import ConfigError, MTLSearchError
from mtlsearch.search._baselines import ensure_baselines, single_task_networks, train_single_task
from mtlsearch.search._optuna_backend import Objective
from mtlsearch.search._records import study_record
from mtlsearch.search._study import write_record
from mtlsearch.search._trial import run_trial
from mtlsearch.tasks import TaskSpec
from mtlsearch.training import make_optimizer, make_step
from mtlsearch.weighting import METHODS, STRATEGIES, StrategyError
from mtlsearch.weighting.distill import Distill, distillation_term

CPU = torch.device("cpu")
F64 = torch.float64
LN3 = math.log(3.0)
# T = 2, teacher logits (0, 2 ln 3) -> (1/4, 3/4), student (0, 0) -> (1/2, 1/2):
# T^2 * KL = 4 * (1/4 ln(1/2) + 3/4 ln(3/2)) = ln(1/2) + 3 ln(3/2)
KL_BY_HAND = math.log(0.5) + 3 * math.log(1.5)
DISTILL_PARAMS = {"family": "hard_sharing", "weighting": "equal", "strategy": "distill", "training.lr": 3e-3}


class Fixed(nn.Module):
    """A teacher whose output for ``task`` is a fixed tensor."""

    def __init__(self, task: str, output: torch.Tensor):
        super().__init__()
        self.task = task
        self.register_buffer("output", output)

    def forward(self, x):
        return {self.task: self.output}


class TwoHeads(nn.Module):
    """A trunk shared by a 3-class head `c` and a regression head `r`."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.input_shape = (3,)
        self.trunk = nn.Linear(3, 4)
        self.heads = nn.ModuleDict({"c": nn.Linear(4, 3), "r": nn.Linear(4, 1)})
        self.shared_feature = None

    def forward(self, x):
        h = torch.tanh(self.trunk(x))
        self.shared_feature = h
        return {t: head(h) for t, head in self.heads.items()}


TYPES = {"c": "classification", "r": "regression"}


def distill_space(space: dict, **section) -> dict:
    space["search_space"].update(families=["hard_sharing"], weightings=["equal"], strategies=["none", "distill"])
    if section:
        space["search_space"]["distill"] = section
    del space["search_space"]["tree"]
    return space


def test_registered_with_defaults_in_repr():
    assert STRATEGIES.get("distill") is Distill and Distill.needs_teachers and Distill.acts
    assert not STRATEGIES.get("none").needs_teachers and not STRATEGIES.get("great").needs_teachers
    assert repr(Distill(["a"])) == "Distill(weight=0.5, temperature=2.0, target='outputs')"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weight": 0}, "Parameter `weight` of Distill should be a number > 0. Found `weight = 0.0`."),
        ({"weight": -1}, "Parameter `weight` of Distill should be a number > 0. Found `weight = -1.0`."),
        ({"temperature": 0}, "Parameter `temperature` of Distill should be a number > 0. Found `temperature = 0.0`."),
        (
            {"target": "logits"},
            "Parameter `target` of Distill should be one of: outputs, features. Found `target = 'logits'`.",
        ),
    ],
)
def test_bad_hyperparameters_get_exact_errors(kwargs, message):
    with pytest.raises(ConfigError) as info:
        Distill(["a"], **kwargs)
    assert str(info.value) == message


def test_the_terms_on_hand_numbers():
    teacher = torch.tensor([[0.0, 2 * LN3]], dtype=F64)
    student = torch.zeros(1, 2, dtype=F64)
    assert float(distillation_term(student, teacher, "classification", 2.0)) == pytest.approx(KL_BY_HAND, rel=1e-12)
    # a binary task's one logit z is the two-class distribution of logits (0, z)
    one = torch.tensor([[2 * LN3]], dtype=F64)
    assert float(distillation_term(torch.zeros(1, 1, dtype=F64), one, "binary", 2.0)) == pytest.approx(KL_BY_HAND)
    # dense: per pixel, every pixel counts (two pixels of the same pair: the same mean)
    dense_t, dense_s = teacher.view(1, 2, 1, 1).expand(1, 2, 1, 2), student.view(1, 2, 1, 1).expand(1, 2, 1, 2)
    assert float(distillation_term(dense_s, dense_t, "segmentation", 2.0)) == pytest.approx(KL_BY_HAND)
    # regression, count, depth: the mean squared error to the teacher's output
    reg = distillation_term(torch.tensor([[1.0], [2.0]]), torch.zeros(2, 1), "regression", 2.0)
    assert float(reg) == pytest.approx(2.5)

    strategy = Distill(["c", "r"], weight=0.5, temperature=2.0)
    strategy.set_teachers({"c": Fixed("c", teacher), "r": Fixed("r", torch.zeros(2, 1, dtype=F64))}, TYPES)
    strategy.setup(None, CPU)
    strategy.batch(torch.zeros(1, 3), {"c": student, "r": torch.tensor([[1.0], [2.0]], dtype=F64)})
    assert float(strategy.loss(torch.zeros(2), None)) == pytest.approx(0.5 * (KL_BY_HAND + 2.5))
    assert strategy.loss(torch.zeros(2), None) == 0.0  # the batch's outputs are used once


def test_zero_when_the_student_is_its_teachers():
    student = TwoHeads()
    twin = copy.deepcopy(student)
    strategy = Distill(["c", "r"], weight=2.0, temperature=3.0)
    strategy.set_teachers({"c": twin, "r": twin}, TYPES)
    strategy.setup((4,), CPU)
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    strategy.batch(x, student(x))
    assert float(strategy.loss(torch.zeros(2), student.shared_feature).detach()) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("method", ["equal", "pcgrad"])
def test_the_step_gets_the_term_and_none_leaves_it_as_it_was(method):
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(1))
    y = {"c": torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]), "r": torch.randn(8, generator=torch.Generator().manual_seed(2))}
    tasks = [TaskSpec("c", "classification", num_classes=3), TaskSpec("r", "regression")]

    def grads(strategy):
        model = TwoHeads()
        opt = make_optimizer("sgd", list(model.parameters()), 0.0, 0.0)
        instance = METHODS.get(method)(["c", "r"]) if method == "equal" else METHODS.get(method)()
        torch.manual_seed(0)
        step = make_step(model, tasks, instance, opt, strategy)
        step(x, y)
        return [p.grad.clone() for p in model.parameters()]

    def distill(weight):
        s = Distill(["c", "r"], weight=weight)
        s.set_teachers({"c": TwoHeads(seed=7), "r": TwoHeads(seed=7)}, TYPES)
        return s

    plain = grads(None)
    assert all(torch.equal(a, b) for a, b in zip(plain, grads(STRATEGIES.get("none")(["c", "r"]))))
    weak, strong = grads(distill(1e-3)), grads(distill(1.0))
    assert any(not torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, strong))
    # the term's gradient is linear in its weight
    for p, w, s in zip(plain, weak, strong):
        assert torch.allclose((s - p) * 1e-3, w - p, atol=1e-6)


def test_without_teachers_or_with_unlike_features_it_refuses_to_train(tiny_problem):
    strategy = Distill(["left", "right"])
    with pytest.raises(StrategyError) as info:
        strategy.setup(None, CPU)
    assert str(info.value) == (
        "strategy `distill` has no teachers: the study's single-task networks were not given "
        "(baselines.keep_weights stores them)"
    )
    nets = {t.name: tiny_problem.single_task_model(t, 0) for t in tiny_problem.tasks}
    strategy.set_teachers({"sum": nets["sum"]}, {})
    with pytest.raises(StrategyError) as info:
        strategy.setup(None, CPU)
    assert str(info.value) == "strategy `distill` has no single-task network of any of its tasks (left, right)"
    features = Distill(["left", "right"], target="features")
    features.set_teachers(nets, {})
    features.setup((24,), CPU)  # the MLP's blocks are 24 wide: the shapes match
    with pytest.raises(StrategyError) as info:
        features.setup((5,), CPU)
    assert str(info.value) == (
        "strategy `distill` with target: features compares the student's shared feature (shape (5,)) with the "
        "single-task network's of task `left` (shape (24,)); they differ. Use target: outputs"
    )


def test_a_distill_trial_without_teachers_fails_with_its_reason(tiny_space):
    problem, _ = mtlsearch.load(distill_space(tiny_space))
    outcome = run_trial(problem, DISTILL_PARAMS, seed=0, device=CPU, baselines={})
    assert outcome.state.name == "FAIL"
    assert outcome.record.fail_reason.startswith("strategy `distill` has no teachers")


def test_given_baselines_cannot_teach(tiny_space):
    problem, _ = mtlsearch.load(tiny_space)
    tiny_space["baselines"] = {t: {m: 0.5 for m in ms} for t, ms in problem.delta_directions.items()}
    mtlsearch.load(tiny_space)  # fine without distill
    with pytest.raises(ConfigError) as info:
        mtlsearch.load(distill_space(tiny_space))
    assert str(info.value) == (
        "baselines: given baselines have no single-task networks, and strategy `distill` (search_space.strategies) "
        "distils from them; use kind: tuned or default, or remove the strategy"
    )
    tiny_space["baselines"] = {"kind": "given", "values": {"left": {"accuracy": 0.5}}, "keep_weights": True}
    with pytest.raises(ConfigError, match=r"^baselines\.keep_weights: given baselines are not trained; remove it$"):
        mtlsearch.load(tiny_space)
    tiny_space["baselines"] = {"kind": "default", "keep_weights": "yes"}
    with pytest.raises(ConfigError, match=r"^baselines\.keep_weights: expected true or false, found `yes`$"):
        mtlsearch.load(tiny_space)


def test_keep_weights_is_in_the_space_only_when_on(tiny_space):
    from mtlsearch.config import SearchSpace

    raw = {k: v for k, v in tiny_space.items() if k != "run"}
    plain = SearchSpace.parse(raw)
    assert "keep_weights" not in plain.to_raw()["baselines"]  # older spaces keep their fingerprint
    kept = SearchSpace.parse({**raw, "baselines": {"kind": "default", "seeds": 1, "keep_weights": True}})
    assert kept.to_raw()["baselines"]["keep_weights"] is True and SearchSpace.parse(kept.to_raw()) == kept
    assert kept.fingerprint() != plain.fingerprint()
    problem, _ = mtlsearch.load(distill_space(copy.deepcopy(tiny_space)))
    assert problem.keeps_baseline_weights and not problem.space.baselines.keep_weights  # on because of distill
    # written out as false, it is neither dropped silently nor overridden: distill needs the networks
    said_no = distill_space(copy.deepcopy(tiny_space))
    said_no["baselines"] = {"kind": "default", "seeds": 1, "keep_weights": False}
    with pytest.raises(ConfigError) as info:
        mtlsearch.load(said_no)
    assert str(info.value) == (
        "baselines.keep_weights: false, but strategy `distill` (search_space.strategies) distils from the kept "
        "single-task networks; remove `keep_weights: false` (it is on whenever such a strategy is listed), or "
        "remove the strategy"
    )
    off = SearchSpace.parse({**raw, "baselines": {"kind": "default", "seeds": 1, "keep_weights": False}})
    assert off == SearchSpace.parse({**raw, "baselines": {"kind": "default", "seeds": 1}})  # same space, same print


def new_study(problem, tmp_path, name="s"):
    study = problem.create_study(storage=f"sqlite:///{tmp_path}/s.db", study_name=name)
    write_record(study, problem.space, 0, "tpe", str(tmp_path / "artifacts"))
    return study


def first_batch(problem):
    return problem.data.val.inputs[:16]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["default", "tuned"])
def test_kept_weights_rebuild_the_trained_baselines(tiny_space, tmp_path, kind):
    tiny_space["baselines"] = {"kind": kind, "seeds": 1, "keep_weights": True}
    if kind == "tuned":
        tiny_space["baselines"]["tune_trials"] = 2
    problem, _ = mtlsearch.load(tiny_space)
    study = new_study(problem, tmp_path)
    ensure_baselines(study, problem, seed=3, device=CPU)
    record = study_record(study).baselines
    assert record["weights_seed"] == 3 and set(record["weights"]) == set(problem.task_names)
    assert sorted(p.name for p in (tmp_path / "artifacts").iterdir()) == sorted(record["weights"].values())
    nets = single_task_networks(study, problem, CPU)
    assert set(nets) == set(problem.task_names) and not any(n.training for n in nets.values())
    x = first_batch(problem)
    for task in problem.tasks:
        # the kept network is the first seed of the chosen settings (for tuned: their tuning run)
        again = train_single_task(problem, task, 3, CPU, record["training"][task.name]).eval()
        with torch.no_grad():
            assert torch.equal(nets[task.name](x)[task.name], again(x)[task.name])


def test_without_keep_weights_nothing_is_kept(tiny_space, tmp_path):
    problem, _ = mtlsearch.load(tiny_space)
    study = new_study(problem, tmp_path)
    ensure_baselines(study, problem, seed=0, device=CPU)
    assert "weights" not in study_record(study).baselines
    assert not (tmp_path / "artifacts").exists() or not any((tmp_path / "artifacts").iterdir())
    assert single_task_networks(study, problem, CPU) is None


@pytest.mark.slow
def test_a_missing_damaged_or_forged_artifact_is_a_clear_error(tiny_space, tmp_path):
    tiny_space["baselines"] = {"kind": "default", "seeds": 1, "keep_weights": True}
    problem, _ = mtlsearch.load(tiny_space)
    study = new_study(problem, tmp_path, "kept")
    ensure_baselines(study, problem, seed=0, device=CPU)
    record = study_record(study).baselines
    folder = tmp_path / "artifacts"
    right = folder / record["weights"]["right"]
    right.write_bytes(b"not a checkpoint")
    with pytest.raises(MTLSearchError) as info:
        single_task_networks(study, problem, CPU)
    assert str(info.value).startswith(
        f"study `kept`: the single-task network of task `right` in {right} cannot be read ("
    )
    right.unlink()
    with pytest.raises(MTLSearchError) as info:
        single_task_networks(study, problem, CPU)
    assert str(info.value) == (
        f"study `kept`: the single-task network of task `right` is missing: no file {right} "
        "(the artifacts folder moved or was cleaned)"
    )
    forged = {**record, "weights": {**record["weights"], "left": "../../etc/passwd"}}
    study.set_user_attr("mtlsearch.baselines", forged)
    with pytest.raises(MTLSearchError) as info:
        single_task_networks(study, problem, CPU)
    assert str(info.value) == (
        "study `kept`: the stored single-task network of task `left` has artifact id '../../etc/passwd', "
        "not an artifact id (a UUID); refused"
    )
    study.set_user_attr("mtlsearch.baselines", {**record, "weights_seed": -1})
    with pytest.raises(MTLSearchError, match=r"weights_seed -1 is not an integer in \[0, 2\*\*63\); refused$"):
        single_task_networks(study, problem, CPU)


@pytest.mark.slow
def test_a_study_with_a_distill_trial_completes(tiny_space, tmp_path):
    problem, _ = mtlsearch.load(distill_space(tiny_space, weight={"low": 0.1, "high": 2.0, "log": True}))
    study = problem.create_study(storage=f"sqlite:///{tmp_path}/s.db", study_name="d")
    study.enqueue_trial({**DISTILL_PARAMS, "distill.weight": 0.7})
    study.enqueue_trial({**DISTILL_PARAMS, "strategy": "none"})
    objective = Objective(problem, seed=0, device="cpu", artifacts=tmp_path / "artifacts")
    study.optimize(objective, n_trials=2)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert study.trials[0].user_attrs["architecture"]["strategy"] == {
        "name": "distill",
        "weight": 0.7,
        "temperature": 2.0,
        "target": "outputs",
    }
    assert "strategy" not in study.trials[1].user_attrs["architecture"]
    assert study.trials[0].values != study.trials[1].values  # the term changed the training
    assert set(study_record(study).baselines["weights"]) == set(problem.task_names)
    # `mtlsearch train` of the export: each seed's single-task networks teach, and are its baselines
    from mtlsearch.search import results

    config = results.export_config(study, study.trials[0])
    retrained = results.retrain(config, seeds=[1], device="cpu")
    assert set(retrained["runs"][0]["single_task_test_metrics"]) == set(problem.task_names)
    assert math.isfinite(retrained["runs"][0]["delta_mtl"])


@pytest.mark.slow
def test_training_resumed_from_a_checkpoint_equals_uninterrupted(tiny_space, tmp_path):
    from mtlsearch.training import train

    problem, _ = mtlsearch.load(distill_space(tiny_space, temperature=[4.0]))
    study = new_study(problem, tmp_path)
    ensure_baselines(study, problem, seed=0, device=CPU)
    teachers = single_task_networks(study, problem, CPU)
    candidate = problem.replay({**DISTILL_PARAMS, "distill.temperature": 4.0})

    def taught():
        strategy = candidate.new_strategy()
        strategy.set_teachers(teachers, {t.name: t.type for t in problem.tasks})
        return strategy

    straight, store = check_resume_equals_uninterrupted(candidate, tmp_path / "run", strategy=taught)
    assert store.load()["strategy"] == {"weight": 0.5, "temperature": 4.0}  # not the teachers
    # and the term mattered: without it the same run ends elsewhere
    plain = candidate.build_model(seed=5)
    training = {**candidate.training, "epochs": 3}
    train(plain, problem.tasks, candidate.new_weighting(), problem.data.train, training, CPU, seed=5)
    assert any(not torch.allclose(v, plain.state_dict()[k], atol=1e-6) for k, v in straight.state_dict().items())


def test_optuna_artifacts_api_is_public():
    assert callable(optuna.artifacts.upload_artifact) and hasattr(optuna.artifacts, "FileSystemArtifactStore")


@pytest.mark.slow
@pytest.mark.process
def test_the_ray_trainable_gets_the_teachers(tmp_path, ray_address):
    """On the Ray backend the driver sends the kept networks to the trainable: a distill trial
    completes (without teachers it would fail at setup)."""
    import yaml
    from conftest import write_process_space

    from mtlsearch.search import _ray_backend

    path = write_process_space(tmp_path, "rd", epochs=1, n_train=128, n_trials=1, sampler="random")
    raw = yaml.safe_load(open(path))
    raw["search_space"].update(families=["hard_sharing"], strategies=["distill"])
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(raw))
    problem, run = mtlsearch.load(path)
    run = run.replace(storage=f"sqlite:///{tmp_path}/rd.db", artifacts=str(tmp_path / "art"))
    study = _ray_backend.run_ray(problem, run, address=ray_address)
    (trial,) = study.trials
    assert trial.state.name == "COMPLETE", trial.user_attrs.get("fail_reason")
    assert trial.user_attrs["architecture"]["strategy"]["name"] == "distill"
