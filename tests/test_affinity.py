"""Task affinity (`mtlsearch affinity`, mtlsearch.affinity): the measures on hand-computed tiny
cases, the estimator on real tiny data, the stored record, and the command end to end."""

from __future__ import annotations

import copy
import json
import math

import optuna
import pytest
import torch
import yaml
from conftest import TINY_SPACE

import mtlsearch
from mtlsearch.affinity import (
    CKA_NEEDS,
    CONVENTION,
    AffinityResult,
    describe_stored,
    estimate_affinity,
    format_affinity,
    gradient_cosine,
    linear_cka,
    lookahead_affinity,
    rank_auxiliary,
)
from mtlsearch.cli import main
from mtlsearch.errors import ConfigError
from mtlsearch.search._records import StudyRecord

# -- the measures, by hand ------------------------------------------------------------------------


def close(found, expected) -> bool:
    return torch.allclose(torch.as_tensor(found, dtype=torch.float64), torch.tensor(expected, dtype=torch.float64))


def shared_gradients(sign_b: float) -> torch.Tensor:
    """Per-task gradients of a shared linear layer ``h = W x`` (W = 0, 1 x 3) under two regression
    heads ``out = h`` with targets ``y`` and ``sign_b * y`` (mean squared error).

    By hand: dL/dW = 2 mean((W x - t) x^T) = -2 mean(t x^T) at W = 0, so the second task's gradient
    is ``sign_b`` times the first's."""
    x = torch.tensor([[1.0, 2.0, 0.5], [-1.0, 0.0, 3.0], [2.0, 1.0, -1.0], [0.0, -2.0, 1.0]])
    y = torch.tensor([1.0, -2.0, 0.5, 3.0])
    w = torch.zeros(1, 3, requires_grad=True)
    rows = []
    for target in (y, sign_b * y):
        loss = ((x @ w.T).squeeze(1) - target).pow(2).mean()
        (g,) = torch.autograd.grad(loss, w)
        rows.append(g.reshape(-1))
    expected = -2 * (y[:, None] * x).mean(0)
    assert torch.allclose(rows[0], expected) and torch.allclose(rows[1], sign_b * expected)
    return torch.stack(rows)


def test_identical_tasks_have_cosine_1_and_opposite_tasks_minus_1():
    assert close(gradient_cosine(shared_gradients(1.0)), [[1.0, 1.0], [1.0, 1.0]])
    assert close(gradient_cosine(shared_gradients(-1.0)), [[1.0, -1.0], [-1.0, 1.0]])


def test_cosine_of_a_zero_gradient_is_0_not_nan():
    grads = torch.tensor([[3.0, 4.0], [0.0, 0.0], [4.0, -3.0]])
    assert gradient_cosine(grads).tolist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]


def test_lookahead_affinity_on_hand_numbers():
    before = torch.tensor([2.0, 4.0])
    after = torch.tensor([[1.0, 5.0], [3.0, 2.0]])  # after[i, j]: task j's loss after a step on task i
    # Z[i, j] = 1 - after[i, j] / before[j]
    assert close(lookahead_affinity(before, after), [[0.5, -0.25], [-0.5, 0.5]])
    zero = lookahead_affinity(torch.tensor([0.0, 4.0]), after)  # nothing to lower: 0, not inf
    assert close(zero, [[0.0, -0.25], [0.0, 0.5]])
    with pytest.raises(ValueError, match=r"expected before \(T,\) and after \(T, T\)"):
        lookahead_affinity(before, torch.ones(2, 3))


def test_linear_cka_by_hand_and_its_invariances():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 5, generator=g)
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=g))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, x @ q) == pytest.approx(1.0)  # an orthogonal transform
    assert linear_cka(x, 3.0 * x + 1.0) == pytest.approx(1.0)  # isotropic scaling and a shift
    # By hand: one feature each, x = (1, 2, 3), y = (1, 0, 0). Centred: (-1, 0, 1), (2/3, -1/3, -1/3);
    # (y.x)^2 = 1, |x|^2 = 2, |y|^2 = 2/3: CKA = 1 / (2 * 2/3) = 0.75 (the squared correlation).
    assert linear_cka(torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor([[1.0], [0.0], [0.0]])) == pytest.approx(0.75)
    assert linear_cka(x, torch.ones(20, 3)) == 0.0  # a constant representation
    wide = torch.randn(6, 40, generator=g)  # more features than inputs: the Gram form
    narrow = torch.randn(6, 2, generator=g)
    xc, yc = wide - wide.mean(0), narrow - narrow.mean(0)
    by_features = float((yc.T @ xc).pow(2).sum() / ((xc.T @ xc).norm() * (yc.T @ yc).norm()))
    assert linear_cka(wide, narrow) == pytest.approx(by_features)


# -- the estimator --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    problem, _ = mtlsearch.load(copy.deepcopy(TINY_SPACE))
    return problem


@pytest.fixture(scope="module")
def tiny_result(tiny):
    return estimate_affinity(tiny, seed=0)


def check_matrices(result: AffinityResult, tasks: list[str]) -> None:
    assert result.tasks == tasks
    for method, matrix in result.matrices.items():
        assert len(matrix) == len(tasks) and all(len(row) == len(tasks) for row in matrix), method
        assert all(math.isfinite(v) for row in matrix for v in row), method
    assert [result.matrices["cosine"][i][i] for i in range(len(tasks))] == pytest.approx([1.0] * len(tasks))


def test_estimate_on_tiny_multidigits(tiny, tiny_result):
    r = tiny_result
    check_matrices(r, ["left", "right", "sum"])
    assert list(r.matrices) == ["cosine", "lookahead"]
    cosine = torch.tensor(r.matrices["cosine"])
    assert torch.allclose(cosine, cosine.T) and bool((cosine.abs() <= 1).all())
    assert all(r.matrices["lookahead"][i][i] > 0 for i in range(3))  # a step on a task's own gradient helps it
    assert r.steps == 4 and r.epochs == 1 and r.seed == 0  # 256 samples in batches of 64
    assert r.seconds > 0 and r.candidate_seconds > 0 and r.cost_ratio == pytest.approx(r.seconds / r.candidate_seconds)


def test_the_lookahead_leaves_the_run_as_it_was(tiny, tiny_result):
    """The lookahead never touches the weights or the random streams: the cosine of a run without
    it is the same, and the same seed gives the same matrices."""
    state = torch.get_rng_state()
    alone = estimate_affinity(tiny, methods=("cosine",), seed=0)
    assert alone.matrices["cosine"] == tiny_result.matrices["cosine"]
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random state is left as it was
    other = estimate_affinity(tiny, methods=("cosine",), seed=1)
    assert other.matrices["cosine"] != tiny_result.matrices["cosine"]


def test_estimate_on_mmoe_synthetic():
    raw = {
        "name": "mmoe",
        "data": {
            "benchmark": "mmoe_synthetic",
            "seed": 0,
            "correlation": 0.5,
            "input_dim": 8,
            "n_train": 128,
            "n_val": 32,
            "n_test": 32,
        },
        "backbone": {"name": "mlp", "width": 16, "depth": 2},
        "search_space": {
            "families": ["hard_sharing"],
            "weightings": ["equal"],
            "training": {"epochs": 1, "batch_size": 32, "optimizer": "adam", "lr": 0.003},
        },
        "objectives": ["delta_mtl", "params"],
        "baselines": {"kind": "default", "seeds": 1},
    }
    problem, _ = mtlsearch.load(raw)
    result = estimate_affinity(problem, epochs=2, seed=3)
    check_matrices(result, ["y1", "y2"])
    assert result.steps == 8 and result.epochs == 2


def test_cka_of_single_task_networks(tiny):
    teachers = {t.name: tiny.single_task_model(t, seed=i) for i, t in enumerate(tiny.tasks)}
    result = estimate_affinity(tiny, methods=("cka",), teachers=teachers)
    cka = torch.tensor(result.matrices["cka"])
    assert torch.allclose(cka, cka.T) and cka.diagonal().tolist() == [1.0, 1.0, 1.0]
    assert bool(((cka > 0) & (cka <= 1)).all()) and result.steps == 0
    assert result.epochs == 0 and result.to_record()["epochs"] == 0  # nothing trained
    assert format_affinity(result).splitlines()[0] == (
        f"task affinity ({CONVENTION}; no training: cka compares the study's single-task networks)"
    )
    assert AffinityResult.from_record(result.to_record()) == result
    with pytest.raises(
        ConfigError, match="teachers: no network for task `sum`; expected one per task: left, right, sum"
    ):
        estimate_affinity(tiny, methods=("cka",), teachers={"left": teachers["left"], "right": teachers["right"]})


def test_bad_arguments_are_refused(tiny):
    with pytest.raises(ConfigError) as err:
        estimate_affinity(tiny, methods=("cka",))
    assert str(err.value) == f"methods: {CKA_NEEDS}"
    assert "keep_weights: true" in CKA_NEEDS
    with pytest.raises(ConfigError, match=r"methods: unknown method `cosin`; choose one of: cosine, lookahead, cka"):
        estimate_affinity(tiny, methods=("cosin",))
    with pytest.raises(ConfigError, match="epochs: expected an integer >= 1, found 0"):
        estimate_affinity(tiny, epochs=0)


# -- the record -----------------------------------------------------------------------------------


def test_record_round_trips_and_is_stored_under_its_field(tiny_result):
    record = tiny_result.to_record()
    assert set(record) == {
        "tasks",
        "methods",
        "convention",
        "seed",
        "epochs",
        "steps",
        "seconds",
        "candidate_seconds",
        "cost_ratio",
    }
    assert record["convention"] == CONVENTION == "row i, column j: the effect of task i on task j"
    back = AffinityResult.from_record(json.loads(json.dumps(record)))
    assert back == tiny_result
    assert StudyRecord.from_attrs({"mtlsearch.affinity": record}).affinity == record
    # neutral: a warm start may have measured it as well as `mtlsearch affinity`
    assert describe_stored(record) == "affinity: cosine, lookahead (stored with the study)"


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"methods": {"cosine": [[1.0, 0.5], [0.5, 1.0]]}},
            "mtlsearch.affinity.methods.cosine: expected a 3 x 3 matrix (one row and column per task), "
            "found `[[1.0, 0.5], [0.5, 1.0]]`",
        ),
        (
            {"methods": {"cosine": [[1.0, 0.0, 0.0], [0.0, float("nan"), 0.0], [0.0, 0.0, 1.0]]}},
            "mtlsearch.affinity.methods.cosine[1][1]: expected a finite number, found nan",
        ),
        (
            {"methods": {"cosine": [[1.0, 0.0, 0.0], [0.0, "1", 0.0], [0.0, 0.0, 1.0]]}},
            'mtlsearch.affinity.methods.cosine[1][1]: expected a finite number, found the string "1"',
        ),
        (
            {"methods": {"gradnorm": [[1.0] * 3] * 3}},
            "mtlsearch.affinity.methods.gradnorm: unknown method; choose one of: cosine, lookahead, cka",
        ),
        (
            {"tasks": ["left", "left", "sum"]},
            "mtlsearch.affinity.tasks: expected a list of 2 or more distinct task names, "
            "found `['left', 'left', 'sum']`",
        ),
        (
            {"convention": "column j, row i"},
            f"mtlsearch.affinity.convention: expected `{CONVENTION}`, found `column j, row i`",
        ),
        ({"steps": -1}, "mtlsearch.affinity.steps: expected an integer >= 0, found -1"),
        ({"cost_ratio": float("inf")}, "mtlsearch.affinity.cost_ratio: expected a finite number >= 0, found inf"),
    ],
)
def test_a_damaged_record_is_refused(tiny_result, change, message):
    record = {**tiny_result.to_record(), **change}
    with pytest.raises(ConfigError) as err:
        AffinityResult.from_record(record)
    assert str(err.value) == message
    assert (
        describe_stored(record)
        == f"affinity: the stored record is unreadable ({message}); run `mtlsearch affinity` again"
    )
    with pytest.raises(ConfigError, match="mtlsearch.affinity: expected a mapping, found `x`"):
        AffinityResult.from_record("x")


def test_cost_line_shows_the_arithmetic():
    """Seconds below 10 s get two decimals, so the ratio can be checked from the printed numbers."""
    result = AffinityResult(
        tasks=["a", "b"],
        matrices={"cosine": [[1.0, 0.5], [0.5, 1.0]]},
        seed=0,
        epochs=1,
        steps=2,
        seconds=0.07,
        candidate_seconds=0.28,
        cost_ratio=0.25,
    )
    assert format_affinity(result).splitlines()[-1] == "cost: 0.07 s, 0.25x one candidate's training (0.28 s)"
    assert format_affinity(result).splitlines()[0].endswith("; hard sharing, 1 epoch(s), 2 steps, seed 0)")
    long = AffinityResult(**{**result.__dict__, "seconds": 42.06, "candidate_seconds": 12.0, "cost_ratio": 3.505})
    assert format_affinity(long).splitlines()[-1] == "cost: 42.1 s, 3.5x one candidate's training (12.0 s)"


@pytest.mark.slow
@pytest.mark.process
def test_timings_exclude_the_first_optimizer_steps_start_up(tmp_path):
    """In a fresh process the first optimizer step imports parts of torch (about 2 s); the warm-up
    step pays it, so neither the run nor the candidate is charged (the tiny candidate takes
    hundredths of a second; 1 s leaves room for a loaded machine)."""
    import subprocess
    import sys

    code = (
        "import copy, json, sys; sys.path.insert(0, 'tests'); from conftest import TINY_SPACE; import mtlsearch; "
        "p, _ = mtlsearch.load(copy.deepcopy(TINY_SPACE)); r = mtlsearch.estimate_affinity(p, methods=('cosine',)); "
        "print(json.dumps([r.seconds, r.candidate_seconds]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    seconds, candidate = json.loads(out.stdout.splitlines()[-1])
    assert 0 < seconds < 1.0 and 0 < candidate < 1.0, (seconds, candidate)


def test_cka_is_refused_first_for_a_space_with_auxiliary_tasks():
    """Auxiliary tasks have no single-task network: that is said before any advice on keep_weights."""
    space = copy.deepcopy(TINY_SPACE)
    space["tasks"] = ["left", "right", {"name": "sum", "role": "auxiliary"}]
    problem, _ = mtlsearch.load(space)
    with pytest.raises(ConfigError) as err:
        estimate_affinity(problem, methods=("cosine", "cka"))
    assert str(err.value) == (
        "methods: `cka` is not possible in a space with auxiliary tasks: it compares every task's single-task "
        "network, and auxiliary tasks (sum) have none (they get no baseline); use cosine or lookahead"
    )


def test_rank_auxiliary_reads_the_primary_tasks_columns():
    result = AffinityResult(
        tasks=["a", "b", "c", "d"],
        # row i, column j: the effect of task i on task j
        matrices={
            "lookahead": [[0.9, 0.1, 0.0, 0.0], [0.1, 0.8, 0.0, 0.0], [0.3, -0.2, 0.7, 0.0], [0.5, 0.4, 0.0, 0.6]]
        },
        seed=0,
        epochs=1,
        steps=1,
        seconds=1.0,
        candidate_seconds=2.0,
        cost_ratio=0.5,
    )
    ranked = rank_auxiliary(result, "lookahead", ["a", "b"], ["c", "d"])
    assert ranked == {"a": [("d", 0.5), ("c", 0.3)], "b": [("d", 0.4), ("c", -0.2)]}
    with pytest.raises(ConfigError, match="method: `cosine` was not measured; choose one of: lookahead"):
        rank_auxiliary(result, "cosine", ["a"], ["c"])
    with pytest.raises(ConfigError, match="auxiliary: unknown task `e`; choose one of: a, b, c, d"):
        rank_auxiliary(result, "lookahead", ["a"], ["e"])


# -- the command ----------------------------------------------------------------------------------


def space_file(tmp_path) -> str:
    space = copy.deepcopy(TINY_SPACE)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return str(path)


@pytest.mark.slow
def test_command_prints_json_and_stores_the_record(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path}/a.db"
    args = ["affinity", space_file(tmp_path), "--storage", storage, "--json", "--seed", "1"]
    assert main(args) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["event"] for e in lines] == ["affinity_start", "affinity_epoch", "affinity_timing", "affinity"]
    out = lines[-1]
    assert out["study"] == "tiny" and out["tasks"] == ["left", "right", "sum"] and out["seed"] == 1
    study = optuna.load_study(study_name="tiny", storage=storage)
    stored = study.user_attrs["mtlsearch.affinity"]
    assert stored == {k: v for k, v in out.items() if k not in ("event", "study", "storage")}
    assert AffinityResult.from_record(stored).matrices["cosine"][0][0] == pytest.approx(1.0)
    assert "mtlsearch.fingerprint" in study.user_attrs  # a study `run` continues

    assert main(["affinity", space_file(tmp_path), "--storage", storage, "--methods", "cosine", "--epochs", "2"]) == 0
    captured = capsys.readouterr()
    text = captured.out
    # the record of the first call is replaced, and the command says so
    assert "replacing the stored affinity (cosine, lookahead; seed 1)\n" in captured.err
    assert "cosine (gradient cosine on the shared parameters, mean over steps):" in text
    assert "cost: " in text and "x one candidate's training (" in text
    assert "stored in study `tiny` (sqlite:///" in text
    stored = optuna.load_study(study_name="tiny", storage=storage).user_attrs["mtlsearch.affinity"]
    assert list(stored["methods"]) == ["cosine"] and stored["epochs"] == 2 and stored["steps"] == 8

    # the study exists now, but keeps no single-task weights: cka is refused, the record stays
    assert main(["affinity", space_file(tmp_path), "--storage", storage, "--methods", "cka"]) == 2
    assert "`cka` needs the single-task baselines of study `tiny` kept with their weights" in capsys.readouterr().err
    assert optuna.load_study(study_name="tiny", storage=storage).user_attrs["mtlsearch.affinity"] == stored


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--methods", "cosine,tag"], "--methods: unknown method `tag`; choose one of: cosine, lookahead, cka"),
        (["--methods", "cosine,cosine"], "--methods: a method is named twice in `cosine,cosine`"),
        (["--epochs", "0"], "--epochs: expected an integer >= 1, found 0"),
        (
            ["--methods", "cka"],
            "--methods: `cka` needs the single-task baselines of study `tiny` kept with their weights (in the space: "
            "`baselines: {keep_weights: true}`, then `mtlsearch run`); use cosine or lookahead otherwise",
        ),
    ],
)
def test_command_errors(tmp_path, capsys, flags, message):
    storage = f"sqlite:///{tmp_path}/a.db"
    assert main(["affinity", space_file(tmp_path), "--storage", storage, *flags]) == 2
    assert capsys.readouterr().err.strip() == f"mtlsearch affinity: error: {message}"
    assert optuna.get_all_study_summaries(storage) == []  # nothing was created


@pytest.mark.slow
def test_cka_of_the_study_kept_single_task_networks(tmp_path, capsys):
    """`run` with baselines.keep_weights, then `affinity --methods cka`: the study's own single-task
    networks (mtlsearch.search._baselines.single_task_networks) are compared."""
    space = copy.deepcopy(TINY_SPACE)
    space["search_space"] = {**space["search_space"], "families": ["hard_sharing"], "weightings": ["equal"]}
    del space["search_space"]["tree"]
    space["baselines"]["keep_weights"] = True
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    storage = f"sqlite:///{tmp_path}/a.db"
    assert main(["run", str(path), "--storage", storage, "--n-trials", "1", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["affinity", str(path), "--storage", storage, "--methods", "cka,cosine", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.splitlines()[-1])
    cka = torch.tensor(out["methods"]["cka"])
    assert list(out["methods"]) == ["cka", "cosine"] and out["steps"] == 4
    assert torch.allclose(cka, cka.T) and cka.diagonal().tolist() == [1.0, 1.0, 1.0]
    off = cka[~torch.eye(3, dtype=torch.bool)]
    assert bool(((off > 0) & (off < 1)).all())  # three different networks
    stored = optuna.load_study(study_name="tiny", storage=storage).user_attrs["mtlsearch.affinity"]
    assert stored["methods"]["cka"] == out["methods"]["cka"]

    # the same in Python, as docs/tasks.md shows it: the public single_task_networks
    assert "single_task_networks" in mtlsearch.__all__
    problem, _ = mtlsearch.load(str(path))
    study = optuna.load_study(study_name="tiny", storage=storage)
    teachers = mtlsearch.single_task_networks(study, problem, "cpu")
    result = mtlsearch.estimate_affinity(problem, methods=("cka",), teachers=teachers)
    assert torch.allclose(torch.tensor(result.matrices["cka"]), cka) and result.epochs == 0


@pytest.mark.slow
def test_auxiliary_tasks_are_ranked_for_each_primary_task(tmp_path, capsys):
    space = copy.deepcopy(TINY_SPACE)
    space["tasks"] = [{"name": "left"}, {"name": "right"}, {"name": "sum", "role": "auxiliary"}]
    space["search_space"]["families"] = ["hard_sharing"]
    del space["search_space"]["tree"]
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    storage = f"sqlite:///{tmp_path}/a.db"
    assert main(["affinity", str(path), "--storage", storage, "--json"]) == 0
    out = json.loads(capsys.readouterr().out.splitlines()[-1])
    ranking = out["auxiliary_ranking"]
    assert set(ranking) == {"cosine", "lookahead"} and set(ranking["cosine"]) == {"left", "right"}
    sum_row = out["tasks"].index("sum")
    for method, per_primary in ranking.items():
        for primary, ranked in per_primary.items():
            assert ranked == [["sum", out["methods"][method][sum_row][out["tasks"].index(primary)]]]
    assert main(["affinity", str(path), "--storage", storage, "--methods", "cosine"]) == 0
    assert "  auxiliary tasks for `left`, most helpful first: sum " in capsys.readouterr().out
    assert main(["affinity", str(path), "--storage", storage, "--methods", "cka"]) == 2
    assert capsys.readouterr().err.strip() == (
        "mtlsearch affinity: error: --methods: `cka` is not possible in a space with auxiliary tasks: it compares "
        "every task's single-task network, and auxiliary tasks (sum) have none (they get no baseline); use cosine "
        "or lookahead"
    )
