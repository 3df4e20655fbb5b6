"""Task grouping from an affinity matrix: exact against brute force, hand-computed tables, the
trees the groupings become, and the errors."""

from __future__ import annotations

import itertools
import math
import random

import pytest
import torch

from mtlsearch.errors import ConfigError
from mtlsearch.grouping import (
    MAX_PROPOSALS,
    PARTITION_EXACT_LIMIT,
    Grouping,
    best_cover,
    best_partition,
    cover_score,
    group_score,
    partition_score,
    proposals,
    split_depths,
    tree_params,
)


def partitions(items: list[int]):
    """Every set partition of ``items`` (as lists of lists)."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for p in partitions(rest):
        for i in range(len(p)):
            yield p[:i] + [[first, *p[i]]] + p[i + 1 :]
        yield [[first], *p]


def brute_partition(A, k: int, min_groups: int = 1) -> float:
    n = len(A)
    return max(partition_score(A, p) for p in partitions(list(range(n))) if min_groups <= len(p) <= k)


def brute_cover(A, k: int) -> float:
    n = len(A)
    subsets = [[i for i in range(n) if m >> i & 1] for m in range(1, 1 << n)]
    best = -math.inf
    for r in range(1, k + 1):
        for combo in itertools.combinations(subsets, r):
            best = max(best, cover_score(A, combo, n)[0])
    return best


def random_matrix(n: int, seed: int, mean: float = 0.0) -> list[list[float]]:
    rng = random.Random(seed)
    return [[rng.gauss(mean, 1.0) for _ in range(n)] for _ in range(n)]


CASES = [(n, k, seed) for seed in range(4) for n in (2, 3, 4, 5, 6) for k in range(1, min(n, 3) + 1)]


@pytest.mark.parametrize(("n", "k", "seed"), CASES)
def test_branch_and_bound_finds_the_best_partition(n, k, seed):
    A = random_matrix(n, seed, mean=0.2 * (seed % 2))
    found = best_partition(A, k)
    assert found.exact and found.method == "partition: branch and bound"
    assert found.score == pytest.approx(brute_partition(A, k), abs=1e-9)
    assert 1 <= len(found.groups) <= k
    assert sorted(t for g in found.groups for t in g) == sorted(str(i) for i in range(n))  # disjoint, covering
    index = [[int(t) for t in g] for g in found.groups]
    assert partition_score(A, index) == pytest.approx(found.score)
    if k >= 2:
        exactly = best_partition(A, k, min_groups=k)
        assert len(exactly.groups) == k
        assert exactly.score == pytest.approx(brute_partition(A, k, min_groups=k), abs=1e-9)


@pytest.mark.parametrize(("n", "k", "seed"), [c for c in CASES if c[0] <= 5 or c[1] <= 2])
def test_the_exact_cover_is_the_best_cover(n, k, seed):
    A = random_matrix(n, seed, mean=0.2 * (seed % 2))
    found = best_cover(A, k)
    assert found.exact
    assert found.score == pytest.approx(brute_cover(A, k), abs=1e-9)
    assert len(found.groups) <= k
    assert found.score >= best_partition(A, k).score - 1e-9  # a partition is a cover
    index = [[int(t) for t in g] for g in found.groups]
    score, served = cover_score(A, index, n)
    assert score == pytest.approx(found.score)
    assert [found.served[str(i)] for i in range(n)] == served


def test_hand_table_partition():
    # a and b help each other, c hurts and is hurt. Row = effect of that task on the column task.
    A = [
        [0.0, 0.8, -0.5],  # a on a, b, c
        [0.6, 0.0, -0.4],  # b
        [-0.3, -0.2, 0.0],  # c
    ]
    # {a,b}{c}: a gets A[b][a] = 0.6, b gets A[a][b] = 0.8, c alone 0 -> 1.4.
    # {a,b,c}: a (0.6 - 0.3)/2, b (0.8 - 0.2)/2, c (-0.5 - 0.4)/2 -> 0.15 + 0.3 - 0.45 = 0.
    # {a,c}{b}: -0.3 - 0.5 = -0.8; {b,c}{a}: -0.2 - 0.4 = -0.6.
    found = best_partition(A, 2, ["a", "b", "c"])
    assert found.groups == (("a", "b"), ("c",))
    assert found.score == pytest.approx(1.4)
    assert best_partition(A, 1, ["a", "b", "c"]).score == pytest.approx(0.0)
    assert group_score(A, [0, 1, 2], 2) == pytest.approx(-0.45)
    assert group_score(A, [2], 2) == 0.0  # alone: 0


def test_hand_table_cover_beats_partition():
    # a helps b and c by 1 each; b and c hurt each other by 1; nothing helps a.
    A = [
        [0.0, 1.0, 1.0],
        [0.0, 0.0, -1.0],
        [0.0, -1.0, 0.0],
    ]
    # partitions into 2: {a,b}{c} = 1 and {a,c}{b} = 1 (tie: the lexicographically smaller one);
    # {a,b,c} = 0 (b and c get (1 - 1)/2). The cover {a,b},{a,c} serves b and c by a: 2.
    part = best_partition(A, 2, ["a", "b", "c"])
    assert part.groups == (("a", "b"), ("c",)) and part.score == pytest.approx(1.0)
    cover = best_cover(A, 2, ["a", "b", "c"])
    assert cover.groups == (("a", "b"), ("a", "c")) and cover.score == pytest.approx(2.0)
    assert cover.overlapping and cover.served == {"a": 0, "b": 0, "c": 1}
    # as a tree, each task keeps its best group only
    tree = cover.as_partition(A, ["a", "b", "c"])
    assert tree.groups == (("a", "b"), ("c",)) and tree.score == pytest.approx(1.0)
    assert "served from its best group" in tree.note


def test_hand_table_all_negative_splits_into_singletons():
    # every pair hurts: alone (score 0) is best whenever there are enough groups
    A = [[-1.0] * 4 for _ in range(4)]
    assert best_partition(A, 4).groups == (("0",), ("1",), ("2",), ("3",))
    assert best_partition(A, 4).score == 0.0
    assert best_partition(A, 1).score == pytest.approx(-4.0)
    assert best_cover(A, 4).score == 0.0


def test_ties_are_broken_the_same_way_and_tensors_are_accepted():
    A = torch.zeros(4, 4)
    first = best_partition(A, 3)
    assert first.groups == (("0", "1", "2", "3"),)  # all equal: the fewest groups
    assert best_partition(A.tolist(), 3) == first
    assert best_cover(A, 3).groups == (("0", "1", "2", "3"),)


def test_above_the_exact_limit_a_local_search_runs():
    n = PARTITION_EXACT_LIMIT + 2
    A = random_matrix(n, 7, mean=0.1)
    part = best_partition(A, 3)
    assert not part.exact and part.method == "partition: local search"
    assert len(part.groups) <= 3
    assert part.score >= best_partition(A, 1).score - 1e-9  # at least the one-group partition
    assert best_partition(A, 3) == part  # deterministic
    cover = best_cover(A, 3)
    assert not cover.exact and cover.method == "cover: local search"
    assert cover.score >= part.score - 1e-9


def test_tree_params_give_the_intended_tree(tiny_problem):
    tasks, blocks = tiny_problem.task_names, tiny_problem.backbone.block_names
    assert tasks == ["left", "right", "sum"] and len(blocks) == 3
    # the first task's group is listed second: labels still give it 0
    grouping = Grouping((("right",), ("left", "sum")), 1.0, "hand", True)
    params = tree_params(grouping, tasks, blocks, 1, max_groups=2)
    assert params == {
        "tree.right.block0": 0,
        "tree.right.block1": 1,
        "tree.right.block2": 1,
        "tree.sum.block0": 0,
        "tree.sum.block1": 0,
        "tree.sum.block2": 0,
    }
    candidate = tiny_problem.replay({"family": "tree", **params, "weighting": "equal", "training.lr": 0.005})
    sharing = candidate.architecture.sharing(blocks)
    assert sharing == [[["left", "right", "sum"]], [["left", "sum"], ["right"]], [["left", "sum"], ["right"]]]
    assert tree_params(grouping, tasks, blocks, "block2") == {**params, "tree.right.block1": 0}
    # an overlapping cover becomes the partition of its serving groups
    cover = Grouping((("left", "right"), ("left", "sum")), 2.0, "hand", True, {"left": 0, "right": 0, "sum": 1})
    arch = tiny_problem.replay(
        {"family": "tree", **tree_params(cover, tasks, blocks, 0), "weighting": "equal", "training.lr": 0.005}
    ).architecture
    assert arch.sharing(blocks)[0] == [["left", "right"], ["sum"]]


def test_tree_params_errors():
    tasks, blocks = ["a", "b", "c"], ["b0", "b1"]
    g = Grouping((("a",), ("b",), ("c",)), 0.0, "hand", True)
    too_many = r"grouping: 3 groups \(\{a\} \{b\} \{c\}\) do not fit the tree's max_groups 2"
    with pytest.raises(ConfigError, match=too_many):
        tree_params(g, tasks, blocks, 1, max_groups=2)
    with pytest.raises(ConfigError, match="split_block: unknown block `b9`; choose one of: b0, b1"):
        tree_params(g, tasks, blocks, "b9")
    with pytest.raises(ConfigError, match=r"split_block: expected a block index in \[0, 1\], found 5"):
        tree_params(g, tasks, blocks, 5)
    with pytest.raises(ConfigError, match="do not cover the tasks a, b, c, d exactly"):
        tree_params(g, [*tasks, "d"], blocks, 1)
    assert tree_params(Grouping((("a", "b", "c"),), 0.0, "hand", True), tasks, blocks, 1, max_groups=1) == {}


def test_proposals_are_labelled_deduplicated_and_best_first():
    A = random_matrix(4, 3, mean=0.3)
    names = ["a", "b", "c", "d"]
    found = proposals(A, names, 3, ["b0", "b1", "b2", "b3"], source="lookahead")
    assert 1 <= len(found) <= MAX_PROPOSALS
    assert [p.score for p in found] == sorted((p.score for p in found), reverse=True)
    assert len({tuple(sorted(p.params.items())) for p in found}) == len(found)
    for p in found:
        k = len(p.grouping.groups)
        assert p.label == f"affinity lookahead k={k} split@{p.split_block}: {p.grouping.describe()}"
        assert p.split_block in split_depths(4)
        assert p.grouping.score == pytest.approx(best_partition(A, k, names, min_groups=k).score)
    # two tasks, one block: the only tree splits at block 0
    two = proposals([[0.0, 1.0], [1.0, 0.0]], ["x", "y"], 2, ["only"])
    assert [p.params for p in two] == [{"tree.y.only": 1}]
    assert proposals(A, names, 1, ["b0", "b1"]) == []  # max_groups 1: every tree is hard sharing


def test_bad_matrices_and_budgets_are_refused():
    with pytest.raises(ConfigError, match="affinity: expected a non-empty square matrix"):
        best_partition([[1.0, 2.0]], 2)
    with pytest.raises(ConfigError, match=r"affinity\[0\]\[1\]: expected a finite number, found nan"):
        best_partition([[0.0, float("nan")], [0.0, 0.0]], 2)
    with pytest.raises(ConfigError, match="max_groups: expected an integer >= 1, found 0"):
        best_cover([[0.0]], 0)
    with pytest.raises(ConfigError, match="tasks: expected 2 distinct task names"):
        best_partition([[0.0, 1.0], [1.0, 0.0]], 2, ["a", "a"])
