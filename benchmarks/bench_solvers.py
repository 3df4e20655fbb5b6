#!/usr/bin/env python
"""The dual-cone projections of UPGrad and DualProj alone, on the Gram matrix, at T = 3..32 tasks:
mtlsearch's solver against torchjd 0.18's quadprog projector (issue 15, "the step").

Sides, on the same float64 Gram matrix ``Q = G G^T`` of a random ``(T, 2000)`` matrix ``G``:

* ``mtlsearch``: ``upgrad_weights(Q)`` (the enumeration up to T = 4, the batched primal-dual
  active-set strategy above, the active-set method for what it leaves) / ``dualproj_weights(Q)``
  (one problem: the enumeration up to T = 3, the active-set method from its first guess above);
* ``mtlsearch (active set)``: the previous path, measured in the same run: the batched
  enumeration of the supports up to T = 8, the primal active-set method per problem above;
* ``torchjd``: ``UPGradWeighting`` / ``DualProjWeighting`` with ``QuadprogProjector(norm_eps=0,
  reg_eps=0)`` (Goldfarb-Idnani in C, no ridge: the exact problem).

torchjd averages where mtlsearch sums, so its weights are compared after multiplying by T; the
largest relative difference is printed per cell. Matrices: ``kind`` ``random`` (rows i.i.d.
normal) and ``conflict`` (the mean subtracted 1.5 times: every pair of rows tends to conflict).
Each cell takes ``--rounds`` rounds of ``inner`` calls per side, in a fresh random order per
round; reported: median time per call and the median paired ratio with a 95 % bootstrap interval.

Run: ``.venv/bin/python benchmarks/bench_solvers.py`` (needs torchjd and quadprog in
benchmarks/.peers, see ``make bench-weighting``); ``--tasks 3,8,16,32``; ``--rounds 30``.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / ".peers"))
sys.path.insert(0, str(HERE))

from bench_task_count import ratio  # noqa: E402

from mtlsearch.weighting import solvers  # noqa: E402
from mtlsearch.weighting.dualproj import dualproj_weights  # noqa: E402
from mtlsearch.weighting.upgrad import upgrad_weights  # noqa: E402

F64 = torch.float64


def rows_before(q: torch.Tensor, lowers: torch.Tensor, hints: torch.Tensor) -> torch.Tensor:
    """``min_quadratic_above_rows`` as it was before the primal-dual strategy: one batched
    enumeration of the supports up to ``ENUMERATE_MAX`` variables, else one active-set run per row."""
    qs = solvers._matrix(q)
    batch = solvers._enumerate(qs, qs @ lowers.T, simplex=False)
    out = lowers.clone()
    for r in range(lowers.shape[0]):
        if batch is not None and batch[1][r]:
            out[r] += batch[0][:, r]
        else:
            out[r] += solvers._active_set(
                qs, qs @ lowers[r], simplex=False, max_iter=None, hint=hints[r], bounded=True, enumerate_first=False
            )
    return out


def sides(method: str, q: torch.Tensor) -> dict:
    import torchjd.aggregation as A
    from torchjd._linalg._dual_cone import QuadprogProjector

    t = q.shape[0]
    exact = QuadprogProjector(norm_eps=0.0, reg_eps=0.0)
    if method == "upgrad":
        theirs = A.UPGradWeighting(projector=exact)
        eye = torch.eye(t, dtype=F64)
        return {
            "mtlsearch": lambda: upgrad_weights(q),
            "mtlsearch (active set)": lambda: rows_before(q, eye, q < 0).sum(dim=0),
            "torchjd": lambda: t * theirs(q),
        }
    theirs = A.DualProjWeighting(projector=exact)
    ones = torch.ones(1, t, dtype=F64)
    return {
        "mtlsearch": lambda: dualproj_weights(q),
        "mtlsearch (active set)": lambda: rows_before(q, ones, (q.sum(dim=1) < 0)[None])[0],
        "torchjd": lambda: t * theirs(q),
    }


def gram(t: int, kind: str, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(t, 2000, generator=gen, dtype=F64)
    if kind == "conflict":
        g = g - 1.5 * g.mean(dim=0)
    return g @ g.T


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="3,4,8,16,32")
    ap.add_argument("--methods", default="upgrad,dualproj")
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args(argv)
    print(f"# bench_solvers: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, rounds {args.rounds}")
    print("| method | T | Gram | mtlsearch | mtlsearch (active set) | torchjd (quadprog) "
          "| mtlsearch / active set | mtlsearch / torchjd | max rel. diff to torchjd |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    rng = random.Random(0)
    for method in args.methods.split(","):
        for t in (int(v) for v in args.tasks.split(",")):
            for kind in ("random", "conflict"):
                q = gram(t, kind, seed=t)
                fns = sides(method, q)
                ref = fns["mtlsearch"]()
                diff = max(float((fn() - ref).abs().max()) / float(ref.abs().max()) for fn in fns.values())
                inner = max(1, int(0.02 / max(1e-6, _once(fns["mtlsearch (active set)"]))))
                times: dict[str, list[float]] = {k: [] for k in fns}
                for _ in range(args.rounds):
                    order = list(fns)
                    rng.shuffle(order)
                    for k in order:
                        t0 = time.perf_counter()
                        for _ in range(inner):
                            fns[k]()
                        times[k].append((time.perf_counter() - t0) / inner)
                ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
                r_old = ratio(times["mtlsearch"], times["mtlsearch (active set)"])
                r_tj = ratio(times["mtlsearch"], times["torchjd"])
                print(f"| {method} | {t} | {kind} | {ms['mtlsearch']:.3f} ms | {ms['mtlsearch (active set)']:.3f} ms "
                      f"| {ms['torchjd']:.3f} ms | **{r_old[0]:.2f}** [{r_old[1]:.2f}-{r_old[2]:.2f}] "
                      f"| **{r_tj[0]:.2f}** [{r_tj[1]:.2f}-{r_tj[2]:.2f}] | {diff:.1e} |", flush=True)
    return 0


def _once(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    sys.exit(main())
