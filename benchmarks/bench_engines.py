#!/usr/bin/env python
"""Search-engine throughput and overhead: workers, early stopping, Optuna path vs Ray path.

Measured in one run, on one small space (MultiDigits, MLP, single-threaded trials) and budget:

1. ``workers``: trials per hour with 1 and with 2 worker processes (``mtlsearch worker``, one
   torch thread each) on a fresh journal-file study each: steady state (trials that ended while
   every worker was running trials, over that window: the judged ratio, goal >= 1.8 on 2 cores)
   and from launch to the last worker's exit (process start-up included: about 5 s per process
   here, importing torch and loading the data).
2. ``overhead``: the engine's share of a 1-worker study's time: wall time minus the time spent
   inside trials, over wall time (sampling, storage reads and writes, the budget check between
   trials); and, inside trials, the share that is not training or evaluation (cost measurement,
   user attributes, checkpoints, heartbeats). Goal <= 2 % for the first.
3. ``early stopping``: the same 72 trials of 6 epochs (random sampler, same seed, so the same
   configurations in the same order) with ``early_stopping`` ``none``, ``median`` and ``asha``
   (``min_trials`` 4); epochs trained, wall time, and the best validation Delta-MTL of each
   (goal: >= 50 % of the epochs saved at equal best).
4. ``ray`` (when Ray Tune is installed): the same budget through ``--backend ray`` on a local Ray,
   wall time per trial against the Optuna path's.

Run: ``make bench-engines`` (= ``.venv/bin/python benchmarks/bench_engines.py``); ``--quick`` for
a smoke run. Needs a quiet machine: both cores are used.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch
import yaml
from optuna.trial import TrialState

import mtlsearch
from mtlsearch.search._baselines import ensure_baselines
from mtlsearch.search._budget import finished_trials
from mtlsearch.search._records import write_study
from mtlsearch.search._study import open_study, run_settings
from mtlsearch.search._storage import open_storage
from mtlsearch.training import resolve_device


def space(epochs: int, n_train: int, width: int = 64) -> dict:
    return {
        "name": "bench",
        "data": {"benchmark": "multidigits", "seed": 0, "n_train": n_train, "n_val": 300, "n_test": 100},
        "backbone": {"name": "mlp", "width": width, "depth": 3},
        "search_space": {
            "families": ["hard_sharing", "tree", "single_task"],
            "weightings": ["equal"],
            "training": {"epochs": epochs, "batch_size": 64, "optimizer": "adam", "lr": {"low": 3.0e-4, "high": 3.0e-2, "log": True}},
        },
        "objectives": ["delta_mtl", "params"],
        "run": {"study": "bench", "device": "cpu", "sampler": "random", "seed": 0},
    }


def prepare(folder: Path, raw: dict, n_trials: int, **run) -> tuple[str, mtlsearch.Problem]:
    """A fresh journal study with its baselines, ready for workers to join."""
    problem, cfg = mtlsearch.load(raw)
    storage = f"journal:///{folder}/study.log"
    cfg = cfg.replace(storage=storage, n_trials=n_trials, artifacts=str(folder / "artifacts"), **run)
    study = open_study(problem.space, cfg, problem.directions, open_storage(storage))
    ensure_baselines(study, problem, cfg.seed, resolve_device("cpu"))
    write_study(study, run=run_settings(cfg, None))
    study.set_user_attr("mtlsearch.n_trials", n_trials)
    return storage, problem


def run_workers(storage: str, workers: int, cwd: Path) -> float:
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "mtlsearch", "worker", "bench", "--storage", storage, "--threads", "1",
                               "--worker-index", str(i + 1), "--quiet"], cwd=cwd) for i in range(workers)]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"a worker failed: exit codes {codes}")
    return time.perf_counter() - start


def steady_state(trials) -> tuple[int, float]:
    """(trials, seconds) of the window in which every worker was running trials: from the last
    worker's first trial start to the first worker's last trial end; trials ending inside it."""
    by_worker: dict[str, list] = {}
    for t in trials:
        by_worker.setdefault(t.user_attrs["worker"], []).append(t)
    start = max(min(t.datetime_start for t in ts) for ts in by_worker.values())
    end = min(max(t.datetime_complete for t in ts) for ts in by_worker.values())
    inside = [t for t in trials if start < t.datetime_complete <= end]
    return len(inside), (end - start).total_seconds()


def trial_seconds(t: optuna.trial.FrozenTrial) -> float:
    return (t.datetime_complete - t.datetime_start).total_seconds()


def best_delta(study: optuna.Study) -> float:
    return max(t.user_attrs["delta_mtl"] for t in study.get_trials(states=(TrialState.COMPLETE,)))


def epochs_trained(study: optuna.Study) -> int:
    return sum(len(t.user_attrs.get("epoch_delta_mtl", [])) or t.user_attrs["architecture"]["training"]["epochs"]
               for t in finished_trials(study) if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and "architecture" in t.user_attrs)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: fewer trials")
    p.add_argument("--no-ray", action="store_true", help="skip the Ray measurement")
    args = p.parse_args(argv)
    n_trials = 8 if args.quick else 24
    log = lambda s="": print(s, flush=True)  # noqa: E731
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    log(f"mtlsearch {mtlsearch.__version__}, torch {torch.__version__}, optuna {optuna.__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    root = Path(tempfile.mkdtemp(prefix="mtlsearch-bench-engines-"))
    rows = []

    # 1 and 2: throughput with 1 and 2 workers; engine overhead of the 1-worker study
    raw = space(epochs=3, n_train=3000, width=128)
    walls, spans = {}, {}
    for workers in (1, 2):
        folder = root / f"w{workers}"
        folder.mkdir()
        storage, _ = prepare(folder, raw, n_trials)
        walls[workers] = run_workers(storage, workers, folder)
        study = optuna.load_study(study_name="bench", storage=open_storage(storage))
        trials = finished_trials(study)
        count, span = steady_state(trials)
        spans[workers] = span / count
        log(f"{workers} worker(s): {len(trials)} trials; steady state {count} trials in {span:.1f} s = {3600 * count / span:.0f} trials/hour; "
            f"from launch {walls[workers]:.1f} s = {3600 * len(trials) / walls[workers]:.0f} trials/hour")
        if workers == 1:
            inside = sum(trial_seconds(t) for t in trials)
            train = sum(t.user_attrs["train_seconds"] for t in trials)
            between = (span - inside) / span
            within = (inside - train) / inside
            log(f"  engine time between trials: {span - inside:.2f} s of {span:.1f} s = {between:.2%} (sampling, storage, budget check)")
            log(f"  inside trials, not training: {inside - train:.2f} s of {inside:.1f} s = {within:.2%} "
                "(latency/MAC measurement, validation, user attributes, checkpoints)")
            rows += [("engine overhead between trials (1 worker)", f"{between:.2%}", "<= 2 %"),
                     ("inside trials, not training (1 worker)", f"{within:.2%}", "-")]
    ratio, with_startup = spans[1] / spans[2], walls[1] / walls[2]  # spans: seconds per trial
    log(f"trials/hour 2 workers / 1 worker: {ratio:.2f} steady state, {with_startup:.2f} from launch")
    rows.insert(0, ("trials/hour, 2 workers / 1 worker (steady state)", f"{ratio:.2f}x", ">= 1.8x"))
    rows.insert(1, ("trials/hour, 2 workers / 1 worker (from launch, start-up included)", f"{with_startup:.2f}x", "-"))

    # 3: early stopping, same configurations
    raw = space(epochs=6, n_train=3000, width=128)
    results = {}
    for rule in ("none", "median", "asha"):
        folder = root / f"es-{rule}"
        folder.mkdir()
        storage, _ = prepare(folder, raw, 3 * n_trials, early_stopping=rule, min_trials=4)
        wall = run_workers(storage, 1, folder)
        study = optuna.load_study(study_name="bench", storage=open_storage(storage))
        pruned = sum(t.state == TrialState.PRUNED for t in study.trials)
        results[rule] = (epochs_trained(study), wall, best_delta(study), pruned)
        log(f"early stopping {rule}: {results[rule][0]} epochs trained, {wall:.1f} s, {pruned} pruned, best val Delta-MTL {results[rule][2]:+.2f}%")
    for rule in ("median", "asha"):
        saved = 1 - results[rule][0] / results["none"][0]
        log(f"{rule} early stopping saves {saved:.1%} of the epochs ({1 - results[rule][1] / results['none'][1]:.1%} of the wall time); "
            f"best val Delta-MTL {results['none'][2]:+.2f}% without, {results[rule][2]:+.2f}% with")
        rows += [(f"epochs saved by {rule} early stopping", f"{saved:.1%}", ">= 50 %"),
                 (f"best val Delta-MTL without / with {rule}", f"{results['none'][2]:+.2f} / {results[rule][2]:+.2f}", "equal")]

    # 4: Ray path
    try:
        import ray  # noqa: F401
        have_ray = not args.no_ray
    except ImportError:
        have_ray = False
        log("Ray Tune is not installed: the Ray path is not measured (pip install 'mtlsearch[ray]')")
    if have_ray:
        raw = space(epochs=3, n_train=3000, width=128)
        path = root / "ray.yaml"
        path.write_text(yaml.safe_dump(raw))
        folder = root / "ray"
        folder.mkdir()
        start = time.perf_counter()
        code = subprocess.call([sys.executable, "-m", "mtlsearch", "run", str(path), "--backend", "ray", "--storage",
                                f"sqlite:///{folder}/ray.db", "--artifacts", str(folder / "artifacts"), "--n-trials",
                                str(n_trials), "--cpus-per-trial", "1", "--quiet"], cwd=folder)
        wall = time.perf_counter() - start
        if code == 0:
            per_ray, per_optuna = wall / n_trials, walls[2] / n_trials
            log(f"ray path (local Ray, 2 trials at a time): {n_trials} trials in {wall:.1f} s ({per_ray:.2f} s/trial, Ray start-up "
                f"included) vs Optuna path with 2 workers {per_optuna:.2f} s/trial (process start-up included)")
            rows.append(("wall per trial from launch, Ray path / Optuna path (2 workers)", f"{per_ray / per_optuna:.2f}x", "-"))
        else:
            log(f"ray path failed with exit code {code}")

    log("\n| measurement | value | goal |\n|---|---:|---|")
    for what, value, goal in rows:
        log(f"| {what} | {value} | {goal} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
