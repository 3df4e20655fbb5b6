"""A mixed-family search: which kind of sharing, and where, for the MultiDigits tasks?

Every family (hard sharing, single-task, trees, AdaShare gating searched and learned, routing,
cross-stitch, MTAN, MMoE, PLE, adapters) is one choice of the same study
(``search_spaces/mixed.yaml``). The script runs the study, prints the Pareto front, the best
trial of each family, and which family won (highest validation Delta-MTL on the front).

    python examples/mixed_search.py                    # 40 trials, about 4.5 minutes on 2 CPU cores
    python examples/mixed_search.py --n-trials 80 --storage sqlite:///mixed.db
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import mtlsearch
from mtlsearch.search import results

SPACE = Path(__file__).parents[1] / "search_spaces" / "mixed.yaml"


def best_per_family(study) -> dict[str, tuple[int, float]]:
    """Per family: (trial number, Delta-MTL) of its best complete, feasible trial."""
    best: dict[str, tuple[int, float]] = {}
    for t in results.complete_trials(study):
        family, delta = t.user_attrs["architecture"]["family"], t.user_attrs["delta_mtl"]
        if family not in best or delta > best[family][1]:
            best[family] = (t.number, delta)
    return best


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-trials", type=int, default=40)
    p.add_argument("--storage", default=None, help="default: a fresh SQLite file in a temporary folder")
    p.add_argument("--epochs", type=int, default=None, help="override the space's training epochs")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)

    problem, run = mtlsearch.load(SPACE)
    storage = args.storage or f"sqlite:///{tempfile.mkdtemp(prefix='mtlsearch-mixed-')}/mixed.db"
    run = run.replace(storage=storage, n_trials=args.n_trials, study="mixed-example")
    space = problem.space
    if args.epochs is not None:
        raw = space.to_raw()
        raw["search_space"]["training"]["epochs"] = args.epochs
        space = mtlsearch.SearchSpace.parse(raw)
        problem = mtlsearch.Problem(space)

    study = mtlsearch.run_search(problem, run, mtlsearch.Progress("quiet" if args.quiet else "normal"))
    print(results.format_report(results.report(study)))
    print("\nbest trial of each family (validation Delta-MTL %):")
    for family, (number, delta) in sorted(best_per_family(study).items(), key=lambda kv: -kv[1][1]):
        print(f"  {family:<17} #{number:<4} {delta:+.2f}")
    winner = results.pick(study, "delta")
    family = winner.user_attrs["architecture"]["family"]
    print(f"\nwinner: {family} (trial #{winner.number}, Delta-MTL {winner.user_attrs['delta_mtl']:+.2f}%)")
    print(f"export it with: mtlsearch export {run.study} --storage {storage} --family {family} -o best.yaml")
    return family


if __name__ == "__main__":
    main()
