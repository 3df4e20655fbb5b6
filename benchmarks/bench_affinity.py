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
  cold one at an equal budget, on ``search_spaces/multidigits.yaml`` with the ``tree`` family alone
  (``--ws-n-train`` 1500 and ``--ws-epochs`` 2 by default, to fit a small machine; the space has
  3000 and 3), TPE, ``--ws-trials`` 20 per study, study seeds ``--seeds``: the best validation
  Delta-MTL among the first 5, 10 and 20 trials, mean ± std over seeds (one seed per trial, no
  confirmation stage), against baselines trained once and given to every study.

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

MULTIDIGITS = HERE.parent / "search_spaces" / "multidigits.yaml"
CHECKPOINTS = (5, 10, 20)  # best validation Delta-MTL among the first k finished trials


def warm_space(epochs: int, n_train: int) -> dict[str, Any]:
    """multidigits.yaml (its tasks, backbone, weightings, lr range) with the tree family alone,
    ``epochs`` per trial and ``n_train`` training samples."""
    raw = read_yaml(str(MULTIDIGITS))
    raw.pop("run", None)
    raw["name"] = "warmstart"
    raw["data"]["n_train"] = n_train
    raw["search_space"]["families"] = ["tree"]
    raw["search_space"]["training"]["epochs"] = epochs
    raw["baselines"] = {"kind": "default", "seeds": 1}
    return raw


def warm_cell(raw: dict[str, Any], arm: str, seed: int, n_trials: int, device: str) -> dict[str, Any]:
    """One study (in its own process): ``arm`` is ``warm`` (run.warm_start affinity) or ``cold``."""
    import tempfile

    from mtlsearch.config import RunConfig
    from mtlsearch.search import Progress

    torch.set_num_threads(1)

    class Recorder(Progress):
        def __init__(self) -> None:
            super().__init__("quiet")
            self.warm: dict[str, Any] = {}

        def event(self, kind: str, message: str = "", transient: bool = False, **data: Any) -> None:
            if kind == "warm_start":
                self.warm = dict(data)
                print(f"  [{arm} seed {seed}] {message}", file=sys.stderr, flush=True)

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
        study = mtlsearch.run_search(problem, run, recorder)
        trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
        deltas = [t.user_attrs.get("delta_mtl") if t.state.name == "COMPLETE" else None for t in trials]
        warm = [isinstance(t.user_attrs.get("warm_start"), str) for t in trials]
    wall = time.perf_counter() - start
    print(f"  [{arm} seed {seed}] {len(deltas)} trials in {wall:.0f} s", file=sys.stderr, flush=True)
    return {"arm": arm, "seed": seed, "deltas": deltas, "warm": warm, "wall": wall, "warm_start": recorder.warm}


def best_after(deltas: list[float | None], k: int) -> float | None:
    values = [d for d in deltas[:k] if d is not None]
    return max(values) if values else None


def warmstart(args: argparse.Namespace) -> dict[str, Any]:
    """A tree search warm-started from affinity against a cold one at an equal budget, on
    multidigits (tree family alone; ``--ws-n-train``, ``--ws-epochs``, ``--ws-trials``), study seeds
    ``--seeds``; baselines trained once (default settings, seed 0) and given to every study."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from mtlsearch.search import ensure_baselines

    raw = warm_space(args.ws_epochs, args.ws_n_train)
    t0 = time.perf_counter()
    problem, _ = mtlsearch.load(raw)
    raw["baselines"] = {"kind": "given", "values": ensure_baselines(None, problem, seed=0, device=args.device)}
    print(f"  baselines {raw['baselines']['values']} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    cells = [(raw, arm, seed, args.ws_trials, args.device) for seed in args.seeds for arm in ("cold", "warm")]
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(warm_cell, *zip(*cells)))
    ks = [k for k in CHECKPOINTS if k <= args.ws_trials]
    print(
        f"\nmultidigits tasks and CNN backbone, tree family only (max_groups 2), n_train {args.ws_n_train}, "
        f"{args.ws_epochs} epochs per trial, TPE, {args.ws_trials} trials per study, seeds "
        f"{', '.join(map(str, args.seeds))}; best validation Delta-MTL % among the first k trials (one seed per "
        "trial, no confirmation), mean ± std over seeds; baselines given (default settings, seed 0), the same "
        "for every study"
    )
    header = ["arm", *(f"best@{k}" for k in ks), "wall s"]
    table = []
    summary: dict[str, Any] = {}
    for arm in ("cold", "warm"):
        mine = [r for r in results if r["arm"] == arm]
        row = [arm]
        for k in ks:
            values = [b for r in mine if (b := best_after(r["deltas"], k)) is not None]
            m, sd = mean_std(values)
            summary[f"{arm}@{k}"] = (m, sd)
            row.append(f"{m:+.2f} ± {sd:.2f}")
        walls = mean_std([r["wall"] for r in mine])
        row.append(f"{walls[0]:.0f} ± {walls[1]:.0f}")
        table.append(row)
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for row in table:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))
    for r in results:
        w = r["warm_start"]
        extra = f"; affinity {w['seconds']:.1f} s ({w['cost_ratio']:.2f}x one candidate): {w['proposals']}" if w else ""
        shown = " ".join("x" if d is None else f"{d:+.1f}" for d in r["deltas"])
        print(f"{r['arm']} seed {r['seed']}: {r['wall']:.0f} s{extra}\n  Delta-MTL by trial: {shown}")
    return {"cells": results, "summary": summary}


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
    parser.add_argument("--ws-trials", type=int, default=20, help="warmstart: trials per study")
    parser.add_argument("--ws-epochs", type=int, default=2, help="warmstart: epochs per trial (the space has 3)")
    parser.add_argument("--ws-n-train", type=int, default=1500, help="warmstart: training samples (the space has 3000)")
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
