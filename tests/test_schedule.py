"""Task schedules: each rule on hand cases, `all` bit-identical to the plain step, every weighting
and aggregator under every schedule, resume from a checkpoint, a searched study, pinned errors."""

from __future__ import annotations

import copy

import optuna
import pytest
import torch
from optuna.trial import FixedTrial
from torch import nn

import mtlsearch
from mtlsearch.checkpoints import CheckpointStore
from mtlsearch.config import RunConfig
from mtlsearch.errors import ConfigError
from mtlsearch.problem import method_label
from mtlsearch.tasks import TaskSpec
from mtlsearch.training import labelled_counts, make_optimizer, make_step, train
from mtlsearch.weighting import METHODS, SCHEDULES, Aggregator
from mtlsearch.weighting.schedule import AllTasks, Progress, Proportional, RoundRobin

NAMES = ["a", "b", "c"]
TASKS = [TaskSpec(n, "regression") for n in NAMES]
SCHEDULE_NAMES = SCHEDULES.names()


def test_registered_with_reprs():
    assert SCHEDULE_NAMES == ["all", "progress", "proportional", "round_robin"]
    assert not AllTasks(NAMES).acts and all(SCHEDULES.get(n).acts for n in SCHEDULE_NAMES if n != "all")
    assert repr(Proportional(NAMES, k=2, temperature=2.0)) == "Proportional(k=2, temperature=2.0)"
    assert repr(RoundRobin(NAMES)) == "RoundRobin(k=1)"
    assert repr(Progress(NAMES)) == "Progress(k=1, temperature=0.1, window=10)"
    assert "all" not in METHODS


def masks(schedule, steps):
    return [schedule.next_mask() for _ in range(steps)]


def test_round_robin_cycles_in_task_order():
    T, F = True, False
    assert masks(RoundRobin(NAMES), 4) == [[T, F, F], [F, T, F], [F, F, T], [T, F, F]]
    assert masks(RoundRobin(NAMES, k=2), 4) == [[T, T, F], [T, F, T], [F, T, T], [T, T, F]]
    assert masks(AllTasks(NAMES), 2) == [[T, T, T]] * 2


def test_proportional_draws_in_proportion_to_the_tempered_sizes():
    schedule = Proportional(NAMES)
    schedule.setup([100, 300, 600], seed=3)
    drawn = torch.tensor(masks(schedule, 6000), dtype=torch.float64)
    assert (drawn.sum(1) == 1).all()
    assert torch.allclose(drawn.mean(0), torch.tensor([0.1, 0.3, 0.6], dtype=torch.float64), atol=0.02)
    warm = Proportional(NAMES, temperature=2.0)
    warm.setup([100, 400, 1600])
    root = torch.tensor([10.0, 20.0, 40.0], dtype=torch.float64)
    assert torch.allclose(warm.probabilities(), root / root.sum())
    hot = Proportional(NAMES, temperature=1e4)
    hot.setup([100, 400, 1600])
    assert torch.allclose(hot.probabilities(), torch.full((3,), 1 / 3, dtype=torch.float64), atol=1e-3)
    again = Proportional(NAMES)
    again.setup([100, 300, 600], seed=3)
    assert torch.equal(torch.tensor(masks(again, 6000), dtype=torch.float64), drawn)  # same seed, same draws
    two = Proportional(NAMES, k=2)
    assert all(sum(m) == 2 for m in masks(two, 50))


def test_progress_samples_the_task_whose_loss_fell_least_most():
    schedule = Progress(NAMES, temperature=0.5, window=2)
    for losses in ([2.0, 2.0, 2.0], [2.0, 2.0, 2.0], [1.0, 2.0, 3.0]):
        schedule.observe(torch.tensor(losses))
        assert torch.equal(schedule.probabilities(), torch.full((3,), 1 / 3, dtype=torch.float64))  # < 2 windows
    schedule.observe(torch.tensor([1.0, 2.0, 3.0]))
    # window means [2, 2, 2] then [1, 2, 3]: ratios [0.5, 1, 1.5]; softmax(ratio / 0.5)
    expected = torch.softmax(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), 0)
    assert torch.allclose(schedule.probabilities(), expected)
    schedule.observe(torch.tensor([float("nan"), 1.0, 1.0]))
    schedule.observe(torch.tensor([float("nan"), 1.0, 1.0]))
    # ratios [nan -> 1, 0.5, 1/3]
    expected = torch.softmax(torch.tensor([1.0, 0.5, 1 / 3], dtype=torch.float64) / 0.5, 0)
    assert torch.allclose(schedule.probabilities(), expected)
    state = copy.deepcopy(schedule.state_dict())
    first = masks(schedule, 20)
    restored = Progress(NAMES, temperature=0.5, window=2)
    restored.load_state_dict(state)
    assert masks(restored, 20) == first and restored.step == schedule.step


def test_labelled_counts_skip_the_ignore_index_and_nan():
    class Data(torch.utils.data.Dataset):
        inputs = torch.zeros(4, 2)
        targets = {
            "seg": torch.tensor([[[-1, -1]], [[0, -1]], [[-1, -1]], [[2, 1]]]),
            "depth": torch.tensor([1.0, float("nan"), 2.0, 3.0]),
            "label": torch.tensor([0, 1, 1, 0]),
        }

        def __len__(self):
            return 4

    assert labelled_counts(Data(), ["seg", "depth", "label"]) == [2, 3, 4]


class Shared(nn.Module):
    """A trunk shared by three regression heads, with ``shared_feature``, like mtlsearch's networks."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.input_shape = (3,)
        self.trunk = nn.Linear(3, 4)
        self.heads = nn.ModuleDict({t: nn.Linear(4, 1) for t in NAMES})
        self.shared_feature = None

    def forward(self, x):
        h = torch.tanh(self.trunk(x))
        self.shared_feature = h
        return {t: head(h) for t, head in self.heads.items()}

    def task_parameters(self):
        return {t: list(self.trunk.parameters()) + list(self.heads[t].parameters()) for t in NAMES}


def batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(16, 3, generator=g), {t: torch.randn(16, generator=g) for t in NAMES}


def method_named(name):
    cls = METHODS.get(name)
    return cls() if issubclass(cls, Aggregator) else cls(NAMES)


@pytest.mark.parametrize("schedule", SCHEDULE_NAMES)
@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_trains_under_every_schedule(name, schedule):
    model = Shared()
    method = method_named(name)
    params = list(model.parameters()) + (list(method.parameters()) if isinstance(method, nn.Module) else [])
    optimizer = make_optimizer("adam", params, 1e-2, 0.0)
    k = {"all": {}, "round_robin": {}, "proportional": {"k": 2}, "progress": {"k": 2, "window": 1}}[schedule]
    plan = SCHEDULES.get(schedule)(NAMES, **k)
    torch.manual_seed(0)
    step = make_step(model, TASKS, method, optimizer, schedule=plan)
    for s in range(2):
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        mask = [True] * 3 if schedule == "all" else None
        if schedule == "round_robin":
            mask = [i == s for i in range(3)]
        losses = step(*batch(s))
        assert losses.shape == (3,) and torch.isfinite(losses).all()
        assert all(torch.isfinite(p).all() for p in model.parameters())
        assert model.trunk.weight.grad is not None
        if mask is not None:  # a head not selected this step gets no gradient and keeps its weights
            for t, chosen in zip(NAMES, mask):
                head = model.heads[t]
                assert (head.weight.grad is not None) == chosen, (t, s)
                assert torch.equal(head.weight, before[f"heads.{t}.weight"]) != chosen, (t, s)


@pytest.mark.parametrize("method", ["equal", "pcgrad"])
def test_all_is_bit_identical_to_no_schedule(method, tiny_problem):
    states = []
    for schedule in (None, AllTasks(tiny_problem.task_names)):
        params = {"family": "tree", "weighting": "equal", "training.lr": 3e-3}
        params.update({f"tree.{t}.block{b}": int(t == "sum" and b > 0) for t in ("right", "sum") for b in range(3)})
        candidate = tiny_problem.sample(FixedTrial(params))
        model = candidate.build_model(0)
        weighting = METHODS.get(method)(**({} if method == "pcgrad" else {"tasks": tiny_problem.task_names}))
        training = dict(candidate.training, epochs=1, batch_size=32)
        train(
            model,
            tiny_problem.tasks,
            weighting,
            tiny_problem.data.train,
            training,
            torch.device("cpu"),
            0,
            schedule=schedule,
        )
        states.append(model.state_dict())
    for key, value in states[0].items():
        assert torch.equal(value, states[1][key]), key


@pytest.mark.parametrize("jacobian", ["loop", "batched"])
@pytest.mark.parametrize("name", ["equal", "uncertainty", "pcgrad", "gradvac"])
def test_selecting_every_task_through_the_masked_path_equals_the_plain_step(name, jacobian):
    grads = []
    for schedule in (None, RoundRobin(NAMES, k=3)):
        model = Shared()
        method = method_named(name)
        optimizer = make_optimizer("sgd", list(model.parameters()), 0.0, 0.0)  # lr 0: read the gradients
        torch.manual_seed(0)
        step = make_step(model, TASKS, method, optimizer, jacobian=jacobian, schedule=schedule)
        for s in range(2):
            step(*batch(s))
        grads.append([p.grad.clone() for p in model.parameters()])
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(*grads))


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["proportional", "progress"])
def test_resumed_from_a_checkpoint_equals_uninterrupted(schedule, tiny_space, tmp_path):
    class Stop(Exception):
        pass

    def stop_after_one(e):
        if e.epoch == 1:
            raise Stop

    tiny_space["search_space"].update(
        families=["hard_sharing"], weightings=["gradvac"], schedules=[schedule], **{schedule: {"k": 2}}
    )
    del tiny_space["search_space"]["tree"]
    problem, _ = mtlsearch.load(tiny_space)
    extra = {f"{schedule}.window": 2} if schedule == "progress" else {}
    candidate = problem.replay(
        {"family": "hard_sharing", "weighting": "gradvac", "schedule": schedule, "training.lr": 3e-3, **extra}
    )
    training = {**candidate.training, "epochs": 2, "batch_size": 32}

    def run(model, **kwargs):
        return train(
            model,
            problem.tasks,
            candidate.new_weighting(),
            problem.data.train,
            training,
            torch.device("cpu"),
            seed=5,
            schedule=candidate.new_schedule(),
            **kwargs,
        )

    straight = candidate.build_model(seed=5)
    run(straight)
    store = CheckpointStore(tmp_path / "run")
    with pytest.raises(Stop):
        run(candidate.build_model(seed=5), on_epoch=stop_after_one, checkpoints=store)
    state = store.load()
    assert any(":" in key for key in state["aggregators"])  # subsets of the trunk's group have their own
    assert state["schedule"]["step"] == 8
    resumed = candidate.build_model(seed=99)
    assert run(resumed, checkpoints=store).resumed_from == 1
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_an_old_checkpoint_fits_all_and_not_another_schedule(tiny_problem, tmp_path):
    candidate = tiny_problem.sample(FixedTrial({"family": "hard_sharing", "weighting": "equal", "training.lr": 3e-3}))
    names = tiny_problem.task_names
    store = CheckpointStore(tmp_path / "run")
    messages: list[str] = []
    store.warn = messages.append  # type: ignore[method-assign]

    def run(epochs, schedule):
        return train(
            candidate.build_model(0),
            tiny_problem.tasks,
            candidate.new_weighting(),
            tiny_problem.data.train,
            {**candidate.training, "epochs": epochs},
            torch.device("cpu"),
            0,
            checkpoints=store,
            schedule=schedule,
        )

    run(1, None)
    state = store.load()
    path = state.pop("path")
    del state["schedule"]  # as written before schedules existed
    torch.save(state, path)
    assert run(2, AllTasks(names)).resumed_from == 1 and not messages
    assert run(3, Progress(names)).resumed_from == 0
    assert "its task schedule does not match this candidate's" in messages[0]


def test_a_space_searches_schedules(tiny_space):
    tiny_space["search_space"].update(
        schedules=["all", "round_robin", "proportional"], proportional={"temperature": {"low": 1.0, "high": 5.0}}
    )
    problem, _ = mtlsearch.load(tiny_space)
    params = {"family": "hard_sharing", "weighting": "equal", "training.lr": 3e-3}
    plain = problem.sample(FixedTrial({**params, "schedule": "all"}))
    assert plain.schedule is None and "schedule" not in plain.summary()
    drawn = problem.sample(FixedTrial({**params, "schedule": "proportional", "proportional.temperature": 2.0}))
    assert repr(drawn.schedule) == "Proportional(k=1, temperature=2.0)"
    assert drawn.summary()["schedule"] == {"name": "proportional", "k": 1, "temperature": 2.0}
    assert drawn.key() != plain.key() and repr(drawn.new_schedule()) == repr(drawn.schedule)
    assert method_label(drawn.summary()) == "equal@proportional" and method_label(plain.summary()) == "equal"
    single = problem.sample(FixedTrial({"family": "single_task", "training.lr": 3e-3}))
    assert single.schedule is None  # nothing shared: no schedule drawn
    del tiny_space["search_space"]["schedules"], tiny_space["search_space"]["proportional"]
    before, _ = mtlsearch.load(tiny_space)
    assert before.sample(FixedTrial(params)).key() == plain.key()  # `all` leaves the key as it was
    raw = problem.space.search_space.to_raw()
    assert raw["schedules"] == ["all", "round_robin", "proportional"]
    assert raw["proportional"] == {"temperature": {"low": 1.0, "high": 5.0}}
    assert type(problem.space.search_space).parse(raw, "search_space") == problem.space.search_space
    assert "schedules" not in before.space.search_space.to_raw()  # stored (and fingerprinted) as before


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"schedules": ["round_robbin"]},
            "search_space.schedules[0]: unknown task schedule `round_robbin`; choose one of: all, progress, "
            "proportional, round_robin (did you mean `round_robin`?)",
        ),
        (
            {"schedules": ["round_robin"], "round_robin": {"k": 0}},
            "search_space.round_robin.k: Parameter `k` of round-robin task scheduling should be an integer >= 1. "
            "Found `k = 0`.",
        ),
        (
            {"schedules": ["round_robin"], "round_robin": {"k": 4}},
            "search_space.round_robin.k: Parameter `k` of round-robin task scheduling should be at most the number "
            "of tasks, 3. Found `k = 4`.",
        ),
        (
            {"schedules": ["proportional"], "proportional": {"k": {"low": 1, "high": 4}}},
            "search_space.proportional.k: Parameter `k` of proportional task sampling should be at most the number "
            "of tasks, 3. Found `k = 4`.",
        ),
        (
            {"schedules": ["proportional"], "proportional": {"temperature": 0}},
            "search_space.proportional.temperature: Parameter `temperature` of proportional task sampling should be "
            "a number > 0. Found `temperature = 0.0`.",
        ),
        (
            {"schedules": ["progress"], "progress": {"temperature": [1.0, -1.0]}},
            "search_space.progress.temperature[1]: Parameter `temperature` of progress-based task sampling should be "
            "a number > 0. Found `temperature = -1.0`.",
        ),
        (
            {"schedules": ["progress"], "progress": {"window": 0}},
            "search_space.progress.window: Parameter `window` of progress-based task sampling should be an integer "
            ">= 1. Found `window = 0`.",
        ),
    ],
)
def test_bad_values_get_exact_errors(changes, message, tiny_space):
    tiny_space["search_space"].update(changes)
    with pytest.raises(ConfigError) as info:
        mtlsearch.load(tiny_space)
    assert str(info.value) == message


def test_k_bound_with_searched_auxiliary_tasks_names_the_primary_tasks(tiny_space):
    """With auxiliary tasks searched a candidate may train only the primary tasks: `k` is bounded
    by them, and the error says so (not "the number of tasks")."""
    tiny_space["tasks"] = ["left", "right", {"name": "sum", "role": "auxiliary"}]
    tiny_space["search_space"].update({"schedules": ["round_robin"], "round_robin": {"k": [1, 3]}})
    with pytest.raises(ConfigError) as info:
        mtlsearch.load(tiny_space)
    assert str(info.value) == (
        "search_space.round_robin.k: Parameter `k` of round-robin task scheduling should be at most the fewest "
        "tasks a candidate trains, 2 (the primary tasks). Found `k = 3`."
    )
    tiny_space["search_space"]["auxiliary"] = "always"  # every candidate trains all 3 tasks: k = 3 is fine
    problem, _ = mtlsearch.load(tiny_space)
    assert tuple(problem.schedule_spaces["round_robin"]["k"].values()) == (1, 3)


def test_bad_hyperparameters_of_an_instance():
    with pytest.raises(ConfigError) as info:
        RoundRobin(NAMES, k=True)
    assert (
        str(info.value) == "Parameter `k` of round-robin task scheduling should be an integer >= 1. Found `k = True`."
    )
    with pytest.raises(ConfigError) as info:
        Proportional(NAMES, temperature=float("inf"))
    assert str(info.value) == (
        "Parameter `temperature` of proportional task sampling should be a number > 0. Found `temperature = inf`."
    )


@pytest.mark.slow
def test_a_study_trains_every_schedule(tiny_space, tmp_path):
    tiny_space["search_space"].update(
        families=["hard_sharing", "tree"],
        weightings=["equal", "pcgrad"],
        schedules=["all", "round_robin", "proportional", "progress"],
        progress={"window": 2},
    )
    problem, _ = mtlsearch.load(tiny_space)
    run = RunConfig(study="sched", storage=f"sqlite:///{tmp_path}/s.db", n_trials=1, seed=0, device="cpu")
    study = mtlsearch.run_search(problem, run)
    for schedule, weighting in (
        ("all", "pcgrad"),
        ("round_robin", "equal"),
        ("proportional", "pcgrad"),
        ("progress", "pcgrad"),
    ):
        study.enqueue_trial(
            {"family": "hard_sharing", "weighting": weighting, "schedule": schedule, "training.lr": 3e-3}
        )
    study = mtlsearch.run_search(problem, run.replace(n_trials=5))
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == 5
    assert {t.params.get("schedule") for t in trials[1:]} == {"all", "round_robin", "proportional", "progress"}
    by_name = {t.params["schedule"]: t for t in trials[1:]}
    assert by_name["progress"].user_attrs["architecture"]["schedule"] == {
        "name": "progress",
        "k": 1,
        "temperature": 0.1,
        "window": 2,
    }
    assert "schedule" not in by_name["all"].user_attrs["architecture"]
