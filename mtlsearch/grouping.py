"""Task grouping under a budget of networks, from a task affinity matrix.

Pure functions on a T x T affinity matrix ``A`` in the convention of :mod:`mtlsearch.affinity`:
**row i, column j is the effect of task i on task j** (lists or a tensor).

* The score of a group for one of its tasks i is the mean of ``A[j][i]`` over the group's other
  members j: TAG's "total inter-task affinity" onto i, normalised by the group size (Fifty et al.,
  NeurIPS 2021, arXiv:2109.04617), which is also how Standley et al. (ICML 2020,
  arXiv:1905.07553) approximate a higher-order group from its pairs. A task alone in its group
  scores 0 (nothing is transferred to it, neither good nor bad).
* :func:`best_partition`: disjoint groups, at most ``max_groups`` of them (a tree can realise it).
* :func:`best_cover`: Standley et al.'s network selection, which TAG also uses: at most
  ``max_groups`` groups that may overlap, each task served by its best chosen group.
* :func:`tree_params` turns a grouping into the ``tree`` family's trial parameters, and
  :func:`proposals` gives the handful of trees that ``run --warm-start affinity`` enqueues.

Both searches are exact branch and bound up to :data:`PARTITION_EXACT_LIMIT` /
:data:`COVER_EXACT_LIMIT` tasks, and a deterministic local search above (the result says which
ran). See docs/tasks.md#grouping-and-the-warm-start.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError, show

PARTITION_EXACT_LIMIT = 12  # tasks: branch and bound over partitions is exact up to here
COVER_EXACT_LIMIT = 12  # tasks: the exact cover search visits 3^T (group, subset) pairs
MAX_PROPOSALS = 4  # trees that proposals() returns at most
TOL = 1e-12  # scores this close are equal (then the tie-break decides)


@dataclass(frozen=True)
class Grouping:
    """Groups of tasks and their total score (the sum over tasks of their serving group's score).

    Attributes:
        groups: tuples of task names; disjoint for a partition, possibly overlapping for a cover.
        score: the objective the search maximised.
        method: which search ran: ``partition: branch and bound``, ``cover: local search``, ...
        exact: whether the search is exact (branch and bound) or a heuristic (local search).
        served: ``{task: index of the group that serves it}`` (its best group; for a partition,
            the group it is in).
        note: how the grouping was derived when it is not the search's own result.
    """

    groups: tuple[tuple[str, ...], ...]
    score: float
    method: str
    exact: bool
    served: Mapping[str, int] = field(default_factory=dict)
    note: str = ""

    @property
    def overlapping(self) -> bool:
        """Some task is in two groups (a cover, not a partition)."""
        names = [t for g in self.groups for t in g]
        return len(names) != len(set(names))

    def as_partition(self, A: Any = None, tasks: Sequence[str] | None = None) -> Grouping:
        """The partition in which every task is in its serving group only (itself for a
        partition). An overlapping cover is not a tree; with ``A`` (and its ``tasks``) the
        partition's own score is computed, else the cover's is kept."""
        if not self.overlapping:
            return self
        kept: dict[int, list[str]] = {}
        for g, members in enumerate(self.groups):
            for t in members:
                if self.served.get(t, g) == g and all(t not in m for m in kept.values()):
                    kept.setdefault(g, []).append(t)
        groups = tuple(tuple(m) for _, m in sorted(kept.items()))
        score = self.score
        if A is not None:
            matrix, names = _matrix(A, tasks)
            index = {t: i for i, t in enumerate(names)}
            score = partition_score(matrix, [[index[t] for t in g] for g in groups])
        return Grouping(
            groups,
            score,
            self.method,
            self.exact,
            {t: g for g, members in enumerate(groups) for t in members},
            note="an overlapping cover, each task served from its best group only (a tree cannot share a task's "
            "branch between groups)",
        )

    def describe(self) -> str:
        """``{a,b} {c}``."""
        return " ".join("{" + ",".join(g) + "}" for g in self.groups)


@dataclass(frozen=True)
class Proposal:
    """A tree to try: a grouping, the block where its groups part, and the ``tree`` parameters."""

    label: str
    grouping: Grouping
    split_block: int
    params: dict[str, int]

    @property
    def score(self) -> float:
        return self.grouping.score


# -- scores -------------------------------------------------------------------------------------


def _matrix(A: Any, tasks: Sequence[str] | None = None) -> tuple[list[list[float]], list[str]]:
    """``A`` as a list of float rows, checked square and finite, with task names (default ``0..T-1``)."""
    if hasattr(A, "tolist"):
        A = A.tolist()
    if not isinstance(A, Sequence) or not A or not all(isinstance(r, Sequence) and len(r) == len(A) for r in A):
        raise ConfigError(
            "affinity", f"expected a non-empty square matrix (a list of T rows of T numbers), found {show(A)}"
        )
    rows = []
    for i, row in enumerate(A):
        out = []
        for j, v in enumerate(row):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"affinity[{i}][{j}]", f"expected a finite number, found {show(v)}")
            out.append(float(v))
        rows.append(out)
    names = [str(i) for i in range(len(rows))] if tasks is None else [str(t) for t in tasks]
    if len(names) != len(rows) or len(set(names)) != len(names):
        raise ConfigError(
            "tasks", f"expected {len(rows)} distinct task names (one per row of the matrix), found {show(list(names))}"
        )
    return rows, names


def group_score(A: Sequence[Sequence[float]], group: Sequence[int], task: int) -> float:
    """The score of ``group`` (task indices) for its member ``task``: the mean of ``A[j][task]``
    over the other members j; 0 for a task alone."""
    others = [A[j][task] for j in group if j != task]
    return math.fsum(others) / len(others) if others else 0.0


def partition_score(A: Sequence[Sequence[float]], groups: Sequence[Sequence[int]]) -> float:
    """The sum over every task of its group's score (disjoint ``groups`` of task indices)."""
    return math.fsum(group_score(A, g, i) for g in groups for i in g)


def cover_score(A: Sequence[Sequence[float]], groups: Sequence[Sequence[int]], n: int) -> tuple[float, list[int]]:
    """The sum over tasks ``0..n-1`` of their best group's score, and which group serves each
    (the first of equal ones); ``-inf`` when a task is in no group."""
    served, total = [], []
    for i in range(n):
        best, where = -math.inf, -1
        for g, members in enumerate(groups):
            if i in members and (s := group_score(A, members, i)) > best + TOL:
                best, where = s, g
        served.append(where)
        total.append(best)
    return (math.fsum(total) if all(w >= 0 for w in served) else -math.inf), served


def _check_groups(max_groups: Any, n: int, min_groups: int = 1) -> int:
    if isinstance(max_groups, bool) or not isinstance(max_groups, int) or max_groups < 1:
        raise ConfigError("max_groups", f"expected an integer >= 1, found {show(max_groups)}")
    if isinstance(min_groups, bool) or not isinstance(min_groups, int) or not 1 <= min_groups <= min(max_groups, n):
        raise ConfigError(
            "min_groups",
            f"expected an integer in [1, {min(max_groups, n)}] (max_groups and the tasks), found {show(min_groups)}",
        )
    return min(max_groups, n)


def _key(groups: Sequence[Sequence[int]]) -> tuple:
    """The tie-break: fewer groups first, then the lexicographically smallest sorted groups."""
    canon = sorted(tuple(sorted(g)) for g in groups)
    return (len(canon), tuple(canon))


def _better(score: float, key: tuple, best: float, best_key: tuple | None) -> bool:
    return score > best + TOL or (abs(score - best) <= TOL and best_key is not None and key < best_key)


# -- partitions ---------------------------------------------------------------------------------


def best_partition(A: Any, max_groups: int, tasks: Sequence[str] | None = None, *, min_groups: int = 1) -> Grouping:
    """The best partition of the tasks into between ``min_groups`` and ``max_groups`` disjoint
    groups: the one maximising the sum over tasks of their group's score (:func:`group_score`).

    Exact branch and bound for T <= :data:`PARTITION_EXACT_LIMIT` tasks: tasks are assigned one by
    one (to a group so far or a new one); a branch is cut when the score it can still reach is
    below the best found. That optimistic bound gives each placed task the best mean its group can
    reach by adding unplaced tasks with its largest incoming affinities, and each unplaced task
    ``max(0, its largest incoming affinity)``. Above the limit: a local search (greedy placement,
    then single-task moves while one improves; ``exact`` is then ``False``). Ties go to fewer
    groups, then to the lexicographically smallest groups (by task index).

    Args:
        A: T x T affinity, ``A[i][j]`` the effect of task i on task j.
        tasks: the names of the rows (default ``"0"``, ``"1"``, ...).
    """
    matrix, names = _matrix(A, tasks)
    n = len(matrix)
    k = _check_groups(max_groups, n, min_groups)
    if n <= PARTITION_EXACT_LIMIT:
        groups, score = _partition_bnb(matrix, k, min_groups)
        method, exact = "partition: branch and bound", True
    else:
        groups, score = _partition_local(matrix, k, min_groups)
        method, exact = "partition: local search", False
    named = tuple(tuple(names[i] for i in g) for g in groups)
    return Grouping(named, score, method, exact, {names[i]: g for g, members in enumerate(groups) for i in members})


def _partition_bnb(A: list[list[float]], k: int, min_groups: int) -> tuple[list[list[int]], float]:
    n = len(A)

    def by_effect(i: int) -> list[int]:
        return sorted((j for j in range(n) if j != i), key=lambda j: (-A[j][i], j))

    incoming = [by_effect(i) for i in range(n)]  # incoming[i]: the other tasks j by A[j][i], largest first
    free_bound = [max(0.0, max((A[j][i] for j in range(n) if j != i), default=0.0)) for i in range(n)]
    best: list = [-math.inf, None, None]  # score, key, groups

    def member_bound(i: int, group: list[int], nxt: int) -> float:
        total = math.fsum(A[j][i] for j in group if j != i)
        count = len(group) - 1
        top = total / count if count else 0.0
        for j in incoming[i]:
            if j >= nxt:  # unplaced: it may still join
                total += A[j][i]
                count += 1
                top = max(top, total / count)
        return top

    def bound(groups: list[list[int]], nxt: int) -> float:
        placed = sum(member_bound(i, g, nxt) for g in groups for i in g)
        return placed + sum(free_bound[nxt:])

    def visit(groups: list[list[int]], nxt: int) -> None:
        if nxt == n:
            if len(groups) >= min_groups:
                score = partition_score(A, groups)
                key = _key(groups)
                if _better(score, key, best[0], best[1]):
                    best[:] = [score, key, [list(g) for g in groups]]
            return
        if len(groups) + (n - nxt) < min_groups or bound(groups, nxt) < best[0] - TOL:
            return
        for g in groups:  # join a group so far (groups stay in order of their first task)
            g.append(nxt)
            visit(groups, nxt + 1)
            g.pop()
        if len(groups) < k:
            groups.append([nxt])
            visit(groups, nxt + 1)
            groups.pop()

    visit([], 0)
    return best[2], best[0]


def _partition_local(A: list[list[float]], k: int, min_groups: int) -> tuple[list[list[int]], float]:
    """Greedy placement in task order, then the best single-task move while one improves."""
    n = len(A)
    groups: list[list[int]] = []
    for i in range(n):
        options = [g for g in range(len(groups))] + ([len(groups)] if len(groups) < k else [])
        must_open = n - i <= min_groups - len(groups)  # the groups still to open need the tasks left
        scored = []
        for g in options:
            if must_open and g < len(groups):
                continue
            trial = [list(m) for m in groups] + ([[]] if g == len(groups) else [])
            trial[g].append(i)
            scored.append((partition_score(A, trial), -g, trial))
        groups = max(scored, key=lambda s: (s[0], s[1]))[2]
    score = partition_score(A, groups)
    for _ in range(100 * n):
        best_move = None
        for i in range(n):
            src = next(g for g, m in enumerate(groups) if i in m)
            targets = [g for g in range(len(groups)) if g != src] + ([len(groups)] if len(groups) < k else [])
            for dst in targets:
                trial = [list(m) for m in groups] + ([[]] if dst == len(groups) else [])
                trial[src].remove(i)
                trial[dst].append(i)
                trial = [sorted(m) for m in trial if m]
                if len(trial) < min_groups:
                    continue
                s = partition_score(A, trial)
                if s > score + TOL and (best_move is None or s > best_move[0] + TOL):
                    best_move = (s, trial)
        if best_move is None:
            break
        score, groups = best_move
    groups = sorted((sorted(g) for g in groups), key=lambda g: g[0])
    return groups, partition_score(A, groups)


# -- covers -------------------------------------------------------------------------------------


def best_cover(A: Any, max_groups: int, tasks: Sequence[str] | None = None) -> Grouping:
    """Standley et al.'s network selection (ICML 2020, arXiv:1905.07553), as TAG uses it: choose
    at most ``max_groups`` groups of tasks, which may overlap, covering every task; each task is
    served by its best chosen group containing it; maximise the sum over tasks of that score.

    Exact for T <= :data:`COVER_EXACT_LIMIT` tasks. The tasks a group serves form disjoint "served
    sets" that cover every task, so the optimum is the best split of the tasks into at most
    ``max_groups`` served sets P, each worth ``w(P)``: the most its tasks score together in one
    group that contains P (and may hold other tasks that help them). ``w`` is computed for every P
    over every (group, subset) pair (3^T of them), and the split by dynamic programming over
    subsets (this replaces Standley et al.'s branch and bound over networks with the same optimum).
    Above the limit: a local search from the local-search partition (add or drop one task of a
    chosen group, or open a group of two tasks, while one improves; ``exact`` is then ``False``).
    Groups that serve no task are dropped; ties go to fewer groups.
    """
    matrix, names = _matrix(A, tasks)
    n = len(matrix)
    k = _check_groups(max_groups, n)
    if n <= COVER_EXACT_LIMIT:
        groups, score = _cover_exact(matrix, k)
        method, exact = "cover: exact (served sets)", True
    else:
        groups, score = _cover_local(matrix, k)
        method, exact = "cover: local search", False
    groups = _drop_idle(matrix, groups, n)
    score, served = cover_score(matrix, groups, n)
    named = tuple(tuple(names[i] for i in g) for g in groups)
    return Grouping(named, score, method, exact, {names[i]: g for i, g in enumerate(served)})


def _drop_idle(A: list[list[float]], groups: list[list[int]], n: int) -> list[list[int]]:
    """Without the groups that serve no task, in the order of the tie-break."""
    _, served = cover_score(A, groups, n)
    used = sorted(sorted(groups[g]) for g in set(served))
    return used


def _cover_exact(A: list[list[float]], k: int) -> tuple[list[list[int]], float]:
    """Exact network selection over served sets (see :func:`best_cover`), by dynamic programming
    over subsets (bitmasks of task indices)."""
    n = len(A)
    full = (1 << n) - 1
    # s[c][i]: the score of group c (a bitmask) for its member i, from column sums
    size = [bin(c).count("1") for c in range(full + 1)]
    colsum = [[0.0] * n for _ in range(full + 1)]
    for c in range(1, full + 1):
        low = (c & -c).bit_length() - 1
        prev = colsum[c & (c - 1)]
        colsum[c] = [prev[i] + A[low][i] for i in range(n)]
    # w[P]: the most the tasks of P can score served together by one group c that contains P
    w = [-math.inf] * (full + 1)
    arg = [0] * (full + 1)
    for c in range(1, full + 1):
        m = size[c] - 1
        s = [(colsum[c][i] - A[i][i]) / m if m else 0.0 for i in range(n)]
        scored = {0: 0.0}
        sub = c
        subs = []
        while sub:  # the submasks of c, each scored from the one without its lowest task
            subs.append(sub)
            sub = (sub - 1) & c
        for p in reversed(subs):  # increasing, so p & (p - 1) is scored before p
            low = (p & -p).bit_length() - 1
            scored[p] = scored[p & (p - 1)] + s[low]
            if scored[p] > w[p] + TOL:
                w[p], arg[p] = scored[p], c
    # f[j][mask]: the best split of mask into at most j served sets
    f = [[-math.inf] * (full + 1) for _ in range(k + 1)]
    pick = [[0] * (full + 1) for _ in range(k + 1)]
    f[0][0] = 0.0
    for j in range(1, k + 1):
        f[j][0] = 0.0
        for mask in range(1, full + 1):
            best, choice = f[j - 1][mask], -1  # fewer sets first: only a strictly better split replaces it
            low = mask & -mask
            rest = mask ^ low
            sub = rest
            while True:
                p = sub | low
                value = w[p] + f[j - 1][mask ^ p]
                if value > best + TOL:
                    best, choice = value, p
                if sub == 0:
                    break
                sub = (sub - 1) & rest
            f[j][mask], pick[j][mask] = best, choice
    groups, mask, j = [], full, k
    while mask:
        p = pick[j][mask]
        if p == -1:
            j -= 1
            continue
        groups.append(arg[p])
        mask ^= p
        j -= 1
    chosen = sorted({tuple(i for i in range(n) if c >> i & 1) for c in groups})
    return [list(g) for g in chosen], f[k][full]


def _cover_local(A: list[list[float]], k: int) -> tuple[list[list[int]], float]:
    n = len(A)
    groups, _ = _partition_local(A, k, 1)
    score, _ = cover_score(A, groups, n)
    for _ in range(100 * n):
        moves: list[list[list[int]]] = []
        for g, m in enumerate(groups):
            for i in range(n):
                trial = [list(x) for x in groups]
                if i in m:
                    if len(m) == 1:
                        continue
                    trial[g].remove(i)
                else:
                    trial[g] = sorted(m + [i])
                moves.append(trial)
        if len(groups) < k:
            for i in range(n):
                for j in range(i + 1, n):
                    moves.append([list(x) for x in groups] + [[i, j]])
        best_move = None
        for trial in moves:
            s, _ = cover_score(A, trial, n)
            if s > score + TOL and (best_move is None or s > best_move[0] + TOL):
                best_move = (s, trial)
        if best_move is None:
            break
        score, groups = best_move
    return groups, score


# -- trees --------------------------------------------------------------------------------------


def tree_params(
    grouping: Grouping,
    tasks: Sequence[str],
    block_names: Sequence[str],
    split_block: int | str,
    max_groups: int | None = None,
) -> dict[str, int]:
    """The ``tree`` family's trial parameters (``tree.<task>.<block>``) of the tree in which every
    task shares the blocks before ``split_block`` (an index or a block name) and each group has
    its own branch from there on.

    Group labels follow the order of ``tasks``: the group of the first task is 0 (the family fixes
    that task's labels to 0 and takes no parameter for it), the next group met is 1, and so on.
    An overlapping cover is not a tree: it is turned into a partition first, each task served from
    its best group only (:meth:`Grouping.as_partition`). ``max_groups``: the family's; the groups
    must fit in it, and with 1 the family takes no parameter at all (an empty dict).
    """
    partition = grouping.as_partition()
    tasks = list(tasks)
    where = {t: g for g, members in enumerate(partition.groups) for t in members}
    missing = [t for t in tasks if t not in where]
    extra = sorted(set(where) - set(tasks))
    if missing or extra:
        raise ConfigError(
            "grouping",
            f"the groups {partition.describe()} do not cover the tasks {', '.join(tasks)} exactly "
            f"(missing: {', '.join(missing) or 'none'}; unknown: {', '.join(extra) or 'none'})",
        )
    blocks = list(block_names)
    if isinstance(split_block, str):
        if split_block not in blocks:
            raise ConfigError("split_block", f"unknown block `{split_block}`; choose one of: {', '.join(blocks)}")
        split = blocks.index(split_block)
    elif isinstance(split_block, bool) or not isinstance(split_block, int) or not 0 <= split_block < len(blocks):
        raise ConfigError("split_block", f"expected a block index in [0, {len(blocks) - 1}], found {show(split_block)}")
    else:
        split = split_block
    labels: dict[int, int] = {}
    for t in tasks:
        labels.setdefault(where[t], len(labels))
    if max_groups is not None and len(labels) > max_groups:
        raise ConfigError(
            "grouping", f"{len(labels)} groups ({partition.describe()}) do not fit the tree's max_groups {max_groups}"
        )
    if max_groups == 1 or len(tasks) == 1:
        return {}
    return {f"tree.{t}.{b}": 0 if i < split else labels[where[t]] for t in tasks[1:] for i, b in enumerate(blocks)}


def split_depths(num_blocks: int) -> list[int]:
    """Where proposals part their groups: after the first block, half-way and before the last
    block (distinct, in that order of preference: the middle first); block 0 for a 1-block backbone."""
    if num_blocks <= 1:
        return [0]
    middle = (num_blocks + 1) // 2
    return list(dict.fromkeys(d for d in (middle, num_blocks - 1, 1) if 1 <= d <= num_blocks - 1))


def proposals(
    A: Any,
    tasks: Sequence[str],
    max_groups: int,
    block_names: Sequence[str],
    *,
    source: str = "",
    limit: int = MAX_PROPOSALS,
) -> list[Proposal]:
    """Trees worth trying first: for each ``k`` in ``2..min(max_groups, T)`` the best partition
    into exactly ``k`` groups (:func:`best_partition`), each split at the depths of
    :func:`split_depths`; deduplicated, best score first (then fewer groups, then the middle
    split), at most ``limit`` (:data:`MAX_PROPOSALS`, 4). ``source`` names the affinity in the
    labels: ``affinity lookahead k=2 split@2: {a,b} {c}``.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError("limit", f"expected an integer >= 1, found {show(limit)}")
    matrix, names = _matrix(A, tasks)
    top = _check_groups(max_groups, len(names))
    depths = split_depths(len(block_names))
    found: list[tuple[tuple, Proposal]] = []
    seen: set[tuple] = set()
    for k in range(2, top + 1):
        grouping = best_partition(matrix, k, names, min_groups=k)
        for rank, depth in enumerate(depths):
            params = tree_params(grouping, names, block_names, depth, max_groups)
            key = tuple(sorted(params.items()))
            if key in seen:
                continue
            seen.add(key)
            label = f"affinity {source + ' ' if source else ''}k={k} split@{depth}: {grouping.describe()}"
            found.append(((-grouping.score, k, rank), Proposal(label, grouping, depth, params)))
    found.sort(key=lambda item: item[0])
    return [p for _, p in found[:limit]]
