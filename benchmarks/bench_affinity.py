#!/usr/bin/env python
"""Task affinity evidence (issue 16): does mtlsearch's affinity follow the tasks' relatedness, and
what does it buy a search?

Sections (``--section``, default ``all``):

* ``correlation``: the MMoE synthetic benchmark (Ma et al., KDD 2018; ``search_spaces/
  mmoe_synthetic.yaml``: 100 inputs, MLP 3 x 64, Adam at the space's default lr) at task
  correlations p = 0, 0.5, 0.9, 1 (the cosine of the two tasks' weight vectors). For each p and
  seed s (the data's seed and the affinity run's seed), ``estimate_affinity`` on a short run; the
  table gives the off-diagonal affinity (mean of the two entries, then mean ± std over seeds) of
  ``cosine`` and ``lookahead``, the measured label correlation (``data.info``) and the cost ratio
  to one candidate's training. The claim to check: affinity rises with p.
* ``warmstart``: a tree search warm-started from affinity (``run --warm-start affinity``) against a
  cold one at an equal budget, with the ``tree`` family alone, on ``search_spaces/multidigits.yaml``
  (``max_groups`` 2; ``--ws-n-train`` 1500 and ``--ws-epochs`` 2 by default, to fit a small
  machine; the space has 3000 and 3) and ``search_spaces/yeast.yaml`` (14 tasks, ``max_groups``
  3; ``--ws-yeast-epochs``, default the space's 3), chosen by ``--ws-space`` (default both), TPE,
  ``--ws-trials`` 20 per study, study seeds ``--seeds``, against baselines trained once per space
  and given to every study. For k = 5, 10, 20: the best validation Delta-MTL among the first k
  trials (one seed), and that trial confirmed (the mean over its seed and 2 more, run as the
  confirmation stage's trials), mean ± std over seeds, and warm - cold paired by seed.

Run: ``.venv/bin/python benchmarks/bench_affinity.py [--section correlation] [--seeds 0,1,2]
[--epochs 2] [--n-train 6000] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import mtlsearch  # noqa: E402
from mtlsearch.affinity import estimate_affinity  # noqa: E402
from mtlsearch.config import read_yaml  # noqa: E402

SPACE = HERE.parent / "search_spaces" / "mmoe_synthetic.yaml"


def off_diagonal(matrix: list[list[float]]) -> float:
    """The mean of the two off-diagonal entries of a 2 x 2 matrix (the effect each way)."""
    return (matrix[0][1] + matrix[1][0]) / 2


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def correlation(args: argparse.Namespace) -> dict[str, Any]:
    base = read_yaml(str(SPACE))
    rows = []
    for p in args.correlations:
        runs = []
        for seed in args.seeds:
            raw = copy.deepcopy(base)
            raw["data"].update(seed=seed, correlation=p, n_train=args.n_train, n_val=200, n_test=200)
            problem, _ = mtlsearch.load(raw)
            result = estimate_affinity(problem, epochs=args.epochs, seed=seed, device=args.device)
            runs.append(
                {
                    "seed": seed,
                    "label_correlation": problem.data.info["label_correlation"],
                    "cosine": off_diagonal(result.matrices["cosine"]),
                    "lookahead": off_diagonal(result.matrices["lookahead"]),
                    "steps": result.steps,
                    "seconds": result.seconds,
                    "candidate_seconds": result.candidate_seconds,
                    "cost_ratio": result.cost_ratio,
                }
            )
        rows.append({"correlation": p, "runs": runs, **{k: mean_std([r[k] for r in runs]) for k in KEYS}})
        print(f"  p = {p}: done ({len(runs)} seeds)", file=sys.stderr)
    print_correlation(rows, args)
    claims = {m: all(a[m][0] < b[m][0] for a, b in zip(rows, rows[1:])) for m in ("cosine", "lookahead")}
    for m, ok in claims.items():
        print(f"claim: the mean off-diagonal {m} affinity rises with p at every step: {'yes' if ok else 'no'}")
    return {"rows": rows, "claims": claims}


KEYS = ("label_correlation", "cosine", "lookahead", "cost_ratio", "seconds", "candidate_seconds")


def print_correlation(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        f"\nmmoe_synthetic (input 100, MLP 3 x 64, n_train {args.n_train}), {args.epochs} epoch(s) of hard sharing, "
        f"seeds {', '.join(map(str, args.seeds))}; off-diagonal affinity, mean ± std over seeds"
    )
    header = ["p", "label corr.", "cosine", "lookahead (TAG)", "cost ratio", "affinity s", "candidate s"]
    table = [
        [
            f"{r['correlation']:.1f}",
            f"{r['label_correlation'][0]:.3f}",
            f"{r['cosine'][0]:+.3f} ± {r['cosine'][1]:.3f}",
            f"{r['lookahead'][0]:+.2e} ± {r['lookahead'][1]:.1e}",
            f"{r['cost_ratio'][0]:.2f}",
            f"{r['seconds'][0]:.2f}",
            f"{r['candidate_seconds'][0]:.2f}",
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for row in table:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))


# -- warmstart (the grouping work) --------------------------------------------------------------

WS_SPACES = {
    "multidigits": HERE.parent / "search_spaces" / "multidigits.yaml",
    "yeast": HERE.parent / "search_spaces" / "yeast.yaml",
}
WS_MAX_GROUPS = {"multidigits": 2, "yeast": 3}  # tree.max_groups of the warmstart spaces
CHECKPOINTS = (5, 10, 20)  # best validation Delta-MTL among the first k finished trials
CONFIRM_SEEDS = 2  # more seeds each best-at-k trial trains (the confirmation stage's trials)


def warm_space(name: str, epochs: int | None, n_train: int | None) -> dict[str, Any]:
    """The space ``name`` (its tasks, backbone, weightings, lr range) with the tree family alone
    (``WS_MAX_GROUPS``), ``epochs`` per trial and ``n_train`` training samples where given (None:
    the space's own; Yeast has a fixed split, so no ``n_train``)."""
    raw = read_yaml(str(WS_SPACES[name]))
    raw.pop("run", None)
    raw["name"] = f"warmstart-{name}"
    if n_train is not None:
        raw["data"]["n_train"] = n_train
    raw["search_space"]["families"] = ["tree"]
    raw["search_space"]["tree"] = {"max_groups": WS_MAX_GROUPS[name]}
    if epochs is not None:
        raw["search_space"]["training"]["epochs"] = epochs
    raw["baselines"] = {"kind": "default", "seeds": 1}
    return raw


def best_trial(deltas: list[float | None], k: int) -> int | None:
    """The number of the trial with the best validation Delta-MTL among the first ``k``."""
    values = [(d, i) for i, d in enumerate(deltas[:k]) if d is not None]
    return max(values)[1] if values else None


def warm_cell(
    raw: dict[str, Any], arm: str, seed: int, n_trials: int, device: str, affinity_epochs: int = 1
) -> dict[str, Any]:
    """One study (in its own process): ``arm`` is ``warm`` (run.warm_start affinity) or ``cold``.
    With ``affinity_epochs`` other than the warm start's 1, the warm arm's affinity is measured
    over that many epochs first and stored with the study, where the warm start reads it.
    Then the best trial among the first k (each k of ``CHECKPOINTS``) trains ``CONFIRM_SEEDS``
    more seeds as confirmation trials (the confirmation stage's trials: ``confirm_of``, queued
    after the budget and run by ``run_search``), once per trial however many k it is best at."""
    import tempfile
    import warnings

    from mtlsearch.config import RunConfig
    from mtlsearch.search import Progress
    from mtlsearch.search._confirm import confirm_attrs

    torch.set_num_threads(1)
    tag = f"{raw['name']} {arm} seed {seed}"

    class Recorder(Progress):
        def __init__(self) -> None:
            super().__init__("quiet")
            self.warm: dict[str, Any] = {}

        def event(self, kind: str, message: str = "", transient: bool = False, **data: Any) -> None:
            if kind == "warm_start":
                self.warm = dict(data)
                print(f"  [{tag}] {message}", file=sys.stderr, flush=True)

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        problem, _ = mtlsearch.load(raw)
        run = RunConfig(
            study=f"{arm}-{seed}",
            storage=f"sqlite:///{tmp}/s.db",
            seed=seed,
            n_trials=n_trials,
            device=device,
            save_weights=False,
            artifacts=tmp,
            threads=1,
            warm_start="affinity" if arm == "warm" else "none",
        )
        recorder = Recorder()
        if arm == "warm" and affinity_epochs != 1:
            from mtlsearch.search._records import write_study
            from mtlsearch.search._study import open_study

            measured = estimate_affinity(problem, epochs=affinity_epochs, seed=seed, device=device)
            write_study(open_study(problem.space, run, problem.directions), affinity=measured.to_record())
        study = mtlsearch.run_search(problem, run, recorder)
        trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
        deltas = [t.user_attrs.get("delta_mtl") if t.state.name == "COMPLETE" else None for t in trials]
        warm = [isinstance(t.user_attrs.get("warm_start"), str) for t in trials]
        search_wall = time.perf_counter() - start
        best = {k: best_trial(deltas, k) for k in CHECKPOINTS if k <= n_trials}
        chosen = sorted({n for n in best.values() if n is not None})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for n in chosen:
                for _ in range(CONFIRM_SEEDS):
                    study.enqueue_trial(dict(trials[n].params), user_attrs=confirm_attrs(trials[n]))
        study = mtlsearch.run_search(problem, run, recorder)  # runs the queued confirmation trials
        confirmations: dict[int, list[float | None]] = {n: [] for n in chosen}
        for t in study.get_trials(deepcopy=False):
            of = t.user_attrs.get("confirm_of")
            if of in confirmations:
                confirmations[of].append(t.user_attrs.get("delta_mtl") if t.state.name == "COMPLETE" else None)
        confirmed = {}
        for n in chosen:
            runs = [d for d in [deltas[n], *confirmations[n]] if d is not None]
            confirmed[n] = statistics.fmean(runs) if runs else None
    wall = time.perf_counter() - start
    print(f"  [{tag}] {len(deltas)} trials in {search_wall:.0f} s, {wall:.0f} s with confirmation", file=sys.stderr)
    return {
        "arm": arm,
        "seed": seed,
        "deltas": deltas,
        "warm": warm,
        "best": {str(k): n for k, n in best.items()},
        "confirm_runs": {str(n): v for n, v in confirmations.items()},
        "confirmed": {str(n): v for n, v in confirmed.items()},
        "search_wall": search_wall,
        "wall": wall,
        "warm_start": recorder.warm,
    }


def best_after(cell: dict[str, Any], k: int, confirmed: bool) -> float | None:
    """A study's best trial among the first ``k``: its validation Delta-MTL, or with ``confirmed``
    the mean over its own seed and the confirmation seeds."""
    n = cell["best"].get(str(k))
    if n is None:
        return None
    return cell["confirmed"][str(n)] if confirmed else cell["deltas"][n]


def fmt(values: list[float]) -> str:
    m, sd = mean_std(values)
    return f"{m:+.2f} ± {sd:.2f}" if values else "-"


def warmstart_space(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """The warm-started and cold tree studies of one space (see :func:`warmstart`)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from mtlsearch.search import ensure_baselines

    n_train = args.ws_n_train if name == "multidigits" else None
    raw = warm_space(name, args.ws_epochs if name == "multidigits" else args.ws_yeast_epochs, n_train)
    t0 = time.perf_counter()
    problem, _ = mtlsearch.load(raw)
    raw["baselines"] = {"kind": "given", "values": ensure_baselines(None, problem, seed=0, device=args.device)}
    baseline_seconds = time.perf_counter() - t0
    print(f"  [{name}] baselines in {baseline_seconds:.0f} s", file=sys.stderr)
    cells = [
        (raw, arm, seed, args.ws_trials, args.device, args.ws_affinity_epochs)
        for seed in args.seeds
        for arm in ("cold", "warm")
    ]
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(warm_cell, *zip(*cells)))
    ks = [k for k in CHECKPOINTS if k <= args.ws_trials]
    training = raw["search_space"]["training"]
    data = f"n_train {n_train}, " if n_train else ""
    print(
        f"\n{name}: {len(problem.task_names)} tasks, {raw['backbone']['name']} backbone, tree family only "
        f"(max_groups {WS_MAX_GROUPS[name]}), {data}{training['epochs']} epochs per trial, TPE, {args.ws_trials} "
        f"trials per study, seeds {', '.join(map(str, args.seeds))}; baselines given (default settings, seed 0, "
        f"{baseline_seconds:.0f} s), the same for every study. best@k: the best validation Delta-MTL % among the "
        f"first k trials (one seed); conf@k: that trial's mean over 3 seeds (its own + {CONFIRM_SEEDS} "
        "confirmation trials). Mean ± std over the study seeds; warm - cold paired by seed."
    )
    header = ["arm", *(f"best@{k}" for k in ks), *(f"conf@{k}" for k in ks), "wall s"]
    table = []
    summary: dict[str, Any] = {}
    by = {(r["arm"], r["seed"]): r for r in results}
    for arm in ("cold", "warm", "warm - cold"):
        row = [arm]
        for confirmed in (False, True):
            for k in ks:
                key = f"{'conf' if confirmed else 'best'}@{k}"
                if arm == "warm - cold":
                    pairs = [
                        (best_after(by["warm", s], k, confirmed), best_after(by["cold", s], k, confirmed))
                        for s in args.seeds
                    ]
                    values = [w - c for w, c in pairs if w is not None and c is not None]
                else:
                    values = [b for s in args.seeds if (b := best_after(by[arm, s], k, confirmed)) is not None]
                summary[f"{arm}:{key}"] = {"values": values, "mean_std": mean_std(values) if values else None}
                row.append(fmt(values))
        if arm == "warm - cold":
            row.append("")
        else:
            walls = mean_std([by[arm, s]["wall"] for s in args.seeds])
            row.append(f"{walls[0]:.0f} ± {walls[1]:.0f}")
        table.append(row)
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for row in table:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))
    for r in results:
        w = r["warm_start"]
        extra = (
            f"; affinity {w['seconds']:.1f} s ({w['cost_ratio']:.2f}x one candidate; grouping "
            f"{', '.join(w['searches'])}): {w['proposals']}"
            if w
            else ""
        )
        shown = " ".join("x" if d is None else f"{d:+.1f}" for d in r["deltas"])
        confirms = ", ".join(
            f"#{n} {r['deltas'][int(n)]:+.1f} -> {v:+.1f}" for n, v in r["confirmed"].items() if v is not None
        )
        print(
            f"{r['arm']} seed {r['seed']}: {r['search_wall']:.0f} s search, {r['wall']:.0f} s in all{extra}\n"
            f"  Delta-MTL by trial: {shown}\n  confirmed (best at some k: own seed -> mean of 3): {confirms}"
        )
    return {"space": raw, "baseline_seconds": baseline_seconds, "cells": results, "summary": summary}


def warmstart(args: argparse.Namespace) -> dict[str, Any]:
    """A tree search warm-started from affinity against a cold one at an equal budget, on
    multidigits (``--ws-n-train``, ``--ws-epochs``) and Yeast (``--ws-yeast-epochs``), chosen by
    ``--ws-space``, tree family alone, ``--ws-trials`` per study, study seeds ``--seeds``;
    baselines trained once per space (default settings, seed 0) and given to every study. The
    best trial among the first 5, 10 and 20 is confirmed on 2 more seeds."""
    names = list(WS_SPACES) if args.ws_space == "both" else [args.ws_space]
    return {name: warmstart_space(name, args) for name in names}


SECTIONS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "correlation": correlation,
    "warmstart": warmstart,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--section", choices=[*SECTIONS, "all"], default="all")
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    parser.add_argument("--correlations", type=lambda s: [float(x) for x in s.split(",")], default=[0.0, 0.5, 0.9, 1.0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--n-train", type=int, default=6000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--ws-space", choices=[*WS_SPACES, "both"], default="both", help="warmstart: the space(s)")
    parser.add_argument("--ws-trials", type=int, default=20, help="warmstart: trials per study")
    parser.add_argument(
        "--ws-affinity-epochs",
        type=int,
        default=1,
        help="warmstart: epochs of the warm arm's affinity (the warm start's 1)",
    )
    parser.add_argument(
        "--ws-epochs", type=int, default=2, help="warmstart: multidigits epochs per trial (the space has 3)"
    )
    parser.add_argument(
        "--ws-n-train", type=int, default=1500, help="warmstart: multidigits training samples (the space has 3000)"
    )
    parser.add_argument(
        "--ws-yeast-epochs", type=int, default=None, help="warmstart: Yeast epochs per trial (default: the space's 3)"
    )
    parser.add_argument("--jobs", type=int, default=2, help="warmstart: studies run side by side")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    out: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor()},
        "threads": args.threads,
        "device": args.device,
    }
    for name, section in SECTIONS.items():
        if args.section in (name, "all"):
            out[name] = section(args)
    print(f"\n{time.perf_counter() - started:.0f} s in all")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
