"""AdaShare with the policy learned inside a trial: regularisers, supernet, learning loop, family."""

from __future__ import annotations

import math

import optuna
import pytest
import torch
from optuna.trial import FixedTrial

import mtlsearch
from mtlsearch.errors import ConfigError, NonFiniteLossError
from mtlsearch.families.adashare_learning import learn_architecture
from mtlsearch.models import MLP
from mtlsearch.models.gated import GatedSupernet, sharing_loss, sparsity_loss
from mtlsearch.models.heads import pool
from mtlsearch.tasks import TaskSpec

CPU = torch.device("cpu")
GATING = {"warmup_epochs": 1, "policy_epochs": 2, "sparsity_weight": 0.05, "sharing_weight": 0.01}
PARAMS = {"family": "adashare_learned", "weighting": "equal", "training.lr": 0.003}


@pytest.fixture
def space(tiny_space):
    """The tiny space searching adashare_learned only (mlp depth 3: block1 and block2 gateable)."""
    s = tiny_space["search_space"]
    del s["tree"]
    s.update(families=["adashare_learned"], weightings=["equal"], adashare_learned=dict(GATING))
    return tiny_space


@pytest.fixture
def problem(space):
    return mtlsearch.load(space)[0]


def learned_candidate(problem, seed=0):
    candidate = problem.sample(FixedTrial(PARAMS))
    candidate.architecture = learn_architecture(candidate, CPU, seed)
    return candidate


# -- the regularisers ---------------------------------------------------------------------------


def test_sparsity_loss_is_the_sum_of_log_select_probabilities():
    probs = torch.tensor([[0.5, 0.25], [1.0, 0.5]])
    assert sparsity_loss(probs).item() == pytest.approx(math.log(0.5) + math.log(0.25) + 0.0 + math.log(0.5))


def test_sharing_loss_weighs_task_pair_gaps_by_depth():
    probs = torch.tensor([[0.9, 0.2], [0.5, 0.6], [0.1, 0.2]])
    # depths 2 and 3 of L = 4 blocks weigh (4-2)/4 = 0.5 and (4-3)/4 = 0.25:
    # a-b 0.4*0.5 + 0.4*0.25 = 0.3; a-c 0.8*0.5 + 0 = 0.4; b-c 0.4*0.5 + 0.4*0.25 = 0.3
    assert sharing_loss(probs, [2, 3], 4).item() == pytest.approx(1.0)
    assert sharing_loss(probs[:1], [2, 3], 4).item() == 0.0
    assert sharing_loss(probs, [4, 4], 4).item() == 0.0  # the top block is free to differ


# -- the supernet -------------------------------------------------------------------------------

TASKS = [TaskSpec("a", "classification", num_classes=3), TaskSpec("b", "binary"), TaskSpec("c", "regression")]


def reference_forward(net: GatedSupernet, x, policy):
    """Task by task, no sharing: ``p * block(f) + (1 - p) * f`` at gated blocks."""
    out = {}
    for t, name in enumerate(net.task_names):
        f = x
        for b, block_name in enumerate(net.block_names):
            y = net.blocks[block_name]["shared"](f)
            g = net.gate_column.get(b)
            f = y if g is None else policy[t, g] * y + (1 - policy[t, g]) * f
        out[name] = net.heads[name](pool(f))
    return out


def count_calls(net: GatedSupernet) -> dict[str, int]:
    calls = {n: 0 for n in net.block_names}
    for n in net.block_names:
        net.blocks[n]["shared"].register_forward_hook(lambda *_, n=n: calls.__setitem__(n, calls[n] + 1))
    return calls


def test_supernet_gates_blocks_and_shares_computation():
    torch.manual_seed(0)
    net = GatedSupernet(MLP((6,), width=4, depth=4), TASKS, ["block1", "block2", "block3"])
    assert net.logits.shape == (3, 3, 2) and torch.allclose(net.select_probabilities(), torch.full((3, 3), 0.5))
    x = torch.randn(5, 6)
    calls = count_calls(net)
    everything = net(x)  # no policy: every block runs once for all tasks
    assert calls == {"block0": 1, "block1": 1, "block2": 1, "block3": 1}
    ones = torch.ones(3, 3)
    for t, out in reference_forward(net, x, ones).items():
        assert torch.allclose(everything[t], out)

    hard = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 1.0]])
    calls.update(dict.fromkeys(calls, 0))
    out = net(x, hard)
    # a+b share block1 and block2; c skips block1 and runs block2 alone; block3 only b and c, apart
    assert calls == {"block0": 1, "block1": 1, "block2": 2, "block3": 2}
    relaxed = torch.tensor([[0.3, 0.9, 0.1], [1.0, 0.5, 0.2], [0.0, 0.7, 1.0]])
    for policy in (hard, relaxed, hard.clone().requires_grad_()):
        got, want = net(x, policy), reference_forward(net, x, policy)
        for t in net.task_names:
            assert torch.allclose(got[t], want[t], atol=1e-6)
    # with a policy that needs a gradient, every task's run/skip choice gets one
    policy = hard.clone().requires_grad_()
    sum(o.sum() for o in net(x, policy).values()).backward()
    assert policy.grad.abs().sum(dim=0).gt(0).all()
    assert torch.equal(out["a"], net(x, hard)["a"])


def test_sampled_policy_is_hard_forces_blocks_below_the_curriculum_and_reaches_the_logits():
    net = GatedSupernet(MLP((6,), width=4, depth=4), TASKS, ["block1", "block2", "block3"])
    torch.manual_seed(0)
    policy = net.sample_policy(5.0, first_learnable=2)
    assert policy.shape == (3, 3) and set(policy.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(policy[:, :2], torch.ones(3, 2))
    (policy * torch.arange(1.0, 4.0)).sum().backward()
    assert net.logits.grad[:, :2].abs().sum() == 0 and net.logits.grad[:, 2].abs().sum() > 0


# -- learning inside a trial --------------------------------------------------------------------


@pytest.mark.slow
def test_learning_moves_the_logits_and_returns_a_run_skip_architecture(problem):
    candidate = problem.sample(FixedTrial(PARAMS))
    assert candidate.needs_learning and candidate.architecture.paths is None
    epochs = []
    arch = learn_architecture(candidate, CPU, 0, epochs.append)
    assert [(e.epoch, e.epochs) for e in epochs] == [(1, 3), (2, 3), (3, 3)]
    learned = arch.learned
    assert learned["epochs"] == {"warmup": 1, "policy": 2}
    for t in problem.task_names:
        policy, probs = learned["policy"][t], learned["select_probability"][t]
        assert policy[0] == "run" and set(policy) <= {"run", "skip"} and len(policy) == 3
        assert probs[0] == 1.0 and all(p != 0.5 for p in probs[1:])  # the logits started at 0.5 and moved
        assert arch.paths[t] == tuple("shared" if v == "run" else None for v in policy)
    assert arch.settings["gated"] == ["block1", "block2"]
    assert learn_architecture(candidate, CPU, 0).learned == learned  # deterministic under a seed


def test_learned_record_replays_to_the_same_architecture_and_model(problem):
    candidate = learned_candidate(problem)
    replayed = problem.replay(candidate.params, candidate.architecture.learned)
    assert replayed.architecture == candidate.architecture
    assert list(replayed.build_model(0).state_dict()) == list(candidate.build_model(0).state_dict())
    text = replayed.describe()
    assert "per task, each block run or skipped:" in text and "learned select probability:" in text
    with pytest.raises(ConfigError, match="^learned: family `adashare_learned` learns its architecture inside a trial; the learned record is missing$"):
        problem.replay(candidate.params)


def test_a_block_every_task_skips_is_not_built(problem):
    candidate = problem.sample(FixedTrial(PARAMS))
    runs = ["run", "skip", "run"]
    learned = {"policy": {t: runs for t in problem.task_names}, "select_probability": {t: [1.0, 0.1, 0.9] for t in problem.task_names}}
    arch = candidate.family.with_learned(candidate.architecture, learned)
    names = list(candidate.family.build(arch, problem.backbone, problem.tasks).state_dict())
    assert not any(n.startswith("blocks.block1.") for n in names) and any(n.startswith("blocks.block2.") for n in names)


def test_unlearned_architecture_describes_its_learning_and_cannot_be_built(problem):
    candidate = problem.sample(FixedTrial(PARAMS))
    assert candidate.describe() == (
        "run/skip policy of block1, block2 learned inside the trial (Gumbel-softmax): sparsity_weight 0.05, "
        "sharing_weight 0.01, temperature 5, warmup_epochs 1, policy_epochs 2"
    )
    with pytest.raises(ValueError, match="^family `adashare_learned`: the architecture's policy has not been learned yet"):
        candidate.build_model(0)


def test_non_finite_loss_is_reported(problem):
    candidate = problem.sample(FixedTrial(PARAMS))
    candidate.training = dict(candidate.training, lr=1e30)
    with pytest.raises(NonFiniteLossError, match=r"^adashare_learned: loss of task `\w+` became (nan|inf) in warm-up of learning epoch 1/3 \(lr = 1e\+30, optimizer = adam\)$"):
        learn_architecture(candidate, CPU, 0)


# -- the family's settings ----------------------------------------------------------------------


def test_gating_hyperparameters_are_fixed_chosen_or_ranged(space):
    space["search_space"]["adashare_learned"] = {"temperature": [1.0, 5.0], "policy_epochs": {"low": 1, "high": 3}}
    problem = mtlsearch.load(space)[0]
    family = problem.families["adashare_learned"]
    assert repr(family) == (
        "AdaShareLearned(blocks=None, sparsity_weight={'low': 0.001, 'high': 0.1, 'log': True}, "
        "sharing_weight={'low': 0.001, 'high': 0.1, 'log': True}, temperature=[1.0, 5.0], warmup_epochs=2, "
        "policy_epochs={'low': 1, 'high': 3})"
    )
    trial = optuna.create_study().ask()
    arch = family.sample(trial, problem.task_names, problem.backbone)
    assert set(trial.params) == {f"adashare_learned.{k}" for k in ("sparsity_weight", "sharing_weight", "temperature", "policy_epochs")}
    assert isinstance(arch.settings["policy_epochs"], int) and arch.settings["warmup_epochs"] == 2


@pytest.mark.parametrize("section, message", [
    ({"blocks": ["block0"]}, "search_space.adashare_learned.blocks[0]: block `block0` cannot be skipped: its input shape (1, 8, 16) "
                             "differs from its output shape (24,); skippable blocks: block1, block2"),
    ({"temperature": -1}, "search_space.adashare_learned.temperature: expected a number > 0, found -1"),
    ({"sparsity_weight": {"low": 0, "high": 1, "log": True}}, "search_space.adashare_learned.sparsity_weight.low: a log range needs low > 0, found 0"),
    ({"policy_epochs": 0}, "search_space.adashare_learned.policy_epochs: expected an integer >= 1, found 0"),
    ({"warmup_epochs": [1, 1.5]}, "search_space.adashare_learned.warmup_epochs[1]: expected an integer >= 0, found 1.5"),
])
def test_bad_settings_are_named(space, section, message):
    space["search_space"]["adashare_learned"] = section
    with pytest.raises(ConfigError) as err:
        mtlsearch.load(space)
    assert str(err.value) == message


GOOD = {"policy": {t: ["run", "skip", "run"] for t in ("left", "right", "sum")},
        "select_probability": {t: [1.0, 0.2, 0.7] for t in ("left", "right", "sum")}}


@pytest.mark.parametrize("change, message", [
    (lambda r: "nonsense", "learned.policy: expected a mapping {task: [run|skip per block]}, found `nonsense`"),
    (lambda r: r["policy"].pop("sum"), "learned.policy: expected one entry per task (left, right, sum), found `['left', 'right']`"),
    (lambda r: r["policy"].__setitem__("left", ["run", "skip"]), "learned.policy.left: expected a list of 3 entries (one per block: block0, block1, block2), found `['run', 'skip']`"),
    (lambda r: r["policy"].__setitem__("left", ["run", "maybe", "run"]), "learned.policy.left[1]: expected `run` or `skip`, found `maybe`"),
    (lambda r: r["policy"].__setitem__("left", ["skip", "run", "run"]), "learned.policy.left[0]: block `block0` is not gated and always runs, found `skip`; gated blocks: block1, block2"),
    (lambda r: r["select_probability"].__setitem__("sum", [1.0, 2.0, 0.5]), "learned.select_probability.sum[1]: expected a number in [0, 1], found 2.0"),
])
def test_bad_learned_records_are_named(problem, change, message):
    record = {k: {t: list(v) for t, v in rows.items()} for k, rows in GOOD.items()}
    replaced = change(record)  # edits the record in place, or returns a whole new one
    record = replaced if isinstance(replaced, str) else record
    with pytest.raises(ConfigError) as err:
        problem.replay(PARAMS, record)
    assert str(err.value) == message


# -- in a study ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_study_learns_each_trials_policy_and_stores_it(space, tmp_path):
    from mtlsearch.config import RunConfig
    from mtlsearch.search._optuna_backend import run_search

    del space["search_space"]["adashare_learned"]["sparsity_weight"]  # searched by default
    problem = mtlsearch.load(space)[0]
    run = RunConfig(study="learned", storage=f"sqlite:///{tmp_path}/s.db", n_trials=2, seed=0, device="cpu")
    study = run_search(problem, run)
    trials = study.get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    for t in trials:
        learned, arch = t.user_attrs["learned"], t.user_attrs["architecture"]
        assert set(learned["policy"]) == {"left", "right", "sum"}
        assert arch["learned"] == learned
        assert arch["paths"] == {k: ["shared" if v == "run" else None for v in p] for k, p in learned["policy"].items()}
        assert 1e-3 <= t.params["adashare_learned.sparsity_weight"] <= 1e-1
        model = problem.replay(t.params, learned).build_model(0)
        assert sum(p.numel() for p in model.parameters()) == t.user_attrs["params"]
