"""A search run by Ray Tune, on this machine or on a Ray cluster; the Optuna study is the record.

    pip install 'mtlsearch[ray]'
    python examples/ray_cluster.py                          # a local Ray instance
    ray start --head --port 6379                            # or: a cluster (one head, any workers)
    python examples/ray_cluster.py --address 127.0.0.1:6379 --gpus-per-trial 0.5

The same from the command line::

    mtlsearch run search_spaces/multidigits.yaml --backend ray --address HOST:PORT \\
        --cpus-per-trial 1 --gpus-per-trial 0.5 --max-concurrent 8 --storage sqlite:///ray.db
    mtlsearch resume multidigits --backend ray --address HOST:PORT --storage sqlite:///ray.db

On several machines, the Optuna storage must be reachable from the driver only (the driver
records every trial), but the data factory must be importable on every node, and Tune's storage
path (``<artifacts>/ray``) must be a folder every node shares for checkpoints to move between
nodes. Trials ASHA stops early are PRUNED in the study and never on the front.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import mtlsearch
from mtlsearch.search import results
from mtlsearch.search import run_ray


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", help="a Ray cluster (auto or HOST:PORT); default: a local Ray instance")
    parser.add_argument("--gpus-per-trial", type=float, default=0.0)
    parser.add_argument("--n-trials", type=int, default=12)
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="mtlsearch-ray-"))
    problem, run = mtlsearch.load(Path(__file__).parents[1] / "search_spaces" / "multidigits.yaml")
    run = run.replace(study="ray-example", storage=f"sqlite:///{workdir}/ray.db", n_trials=args.n_trials)
    study = run_ray(problem, run, mtlsearch.Progress("normal"), address=args.address,
                    cpus_per_trial=1, gpus_per_trial=args.gpus_per_trial)
    states = [t.state.name for t in study.trials]
    print(f"{states.count('COMPLETE')} complete, {states.count('PRUNED')} stopped early by ASHA (PRUNED)")
    print(results.format_report(results.report(study)))


if __name__ == "__main__":
    main()
