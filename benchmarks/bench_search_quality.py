#!/usr/bin/env python
"""Search quality: does the search find better multi-task networks than random search and than
plain hard sharing? Evidence for issue 11, on the built-in spaces ``search_spaces/multidigits.yaml``
and ``search_spaces/mmoe_synthetic.yaml`` (no real dataset has landed yet).

Each cell (space, sampler, study seed) is its own study: a fresh SQLite file in a temporary
folder, run through the public API (``mtlsearch.load``, ``RunConfig.replace``,
``mtlsearch.run_search``), with the space's own epochs, ``baselines`` section (tuned single-task
networks, trained once per study with the study's seed and sampler) and ``run.confirm``
(mmoe_synthetic has none: it gets multidigits' ``{top: 2, seeds: 2}``), so the pick is a
confirmed one. Only the sampler, the study seed and the budget differ between cells.

1. ``tpe`` against ``random`` at an equal budget (``--n-trials``, default 20, the spaces' own;
   TPE's first 8 trials are random draws, its ``n_startup_trials``) over study seeds 0, 1, 2: the
   validation Delta-MTL of the pick (``results.pick(study, "delta")``), pooled over every seed the
   study trained for it (its own trial and its confirmation trials: 3 seeds with the default
   confirm), as ``report`` shows it. Mean ± std over the study seeds, per (space, sampler), and
   whether the TPE - random difference is larger than the spreads (and its ratio to the standard
   error of the difference, ``sqrt(s_tpe^2/n + s_random^2/n)``), on validation and on test.
2. The exported pick (``results.export_config``), retrained from scratch on the train split and
   scored on the test split on 3 new seeds (``--retrain-seeds``, default 100 101 102) by
   ``results.retrain``, which also retrains each task's single-task network with the study's
   tuned baseline settings: its test Delta-MTL is against tuned single-task networks. Against it,
   two references, each retrained the same way on the same seeds (so all three are scored against
   the same single-task networks; the script checks that they are identical):

   - ``HS default``: hard sharing with equal weighting and the space's default training settings
     (each searched training parameter at its default: the geometric middle of a log range, the
     first choice of a list). One trial queued with fixed parameters into the study after the
     search, pick and curves were read (``study.enqueue_trial`` and
     ``mtlsearch.Objective(..., seeds_per_trial=3)``, so it has a 3-seed validation value).
   - ``HS tuned``: hard sharing with equal weighting, its training settings tuned the way each
     single-task baseline is (``baselines.tune_trials`` = 8 runs: the defaults first, then random
     draws over ``search_space.training``, one seed each, best validation Delta-MTL kept), also as
     trials queued into the study after everything else was read.

   Nothing is selected on the test split: the pick and the tuned reference are chosen on
   validation, and the test split is read only by ``retrain``.
3. Anytime curves per (space, sampler), mean over the study seeds, against the number of finished
   budget trials k and against cumulative CPU-seconds. For each k, the incumbent is the candidate
   with the highest validation Delta-MTL among the first k trials (pooled over the seeds those k
   trials trained; what a search stopped at k would pick without a confirmation stage). Two values
   are recorded: ``seen``, that pooled value (optimistic: the maximum of noisy values), and
   ``confirmed``, the same candidate's validation Delta-MTL pooled over every seed the whole study
   trained for it, confirmation trials included. The confirmed value is a 3-seed mean only where
   the study confirmed that candidate (always the case at k = n, whose incumbent is one of the
   confirmed top candidates) and a 1-seed value otherwise. The point ``+confirm`` is the final
   pick after the confirmation stage. CPU-seconds are the study process's own CPU time
   (``time.process_time()``, user + system of all its threads; one torch thread) read at the end
   of each trial through a ``Progress`` that records it, counted from just before
   ``mtlsearch.load`` (data, tuned baselines and trials; imports excluded). Each cell runs in its
   own spawned process (one per cell, ``--jobs`` at a time, default 2), whose ``getrusage`` total
   is also reported.

Run: ``.venv/bin/python benchmarks/bench_search_quality.py`` (about 20-30 minutes on 2 cores);
``--quick`` for a smoke run (1 study seed, 3 trials, 2 retrain seeds; numbers meaningless; 3-5
minutes here, mostly the tuned single-task baselines that every study trains). ``--n-trials``,
``--seeds``, ``--retrain-seeds``, ``--spaces``, ``--samplers``, ``--jobs`` change the budget;
``--json PATH`` writes every number (default ``benchmarks/results/search_quality.json`` for a full
run, nothing for ``--quick``); ``--from-json PATH`` prints the tables of such a file again.
Results and method: BENCHMARKS.md, section 5.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"  # before torch is imported, here and in every spawned cell

import argparse
import json
import math
import multiprocessing
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SPACES = {
    "multidigits": ROOT / "search_spaces" / "multidigits.yaml",
    "mmoe_synthetic": ROOT / "search_spaces" / "mmoe_synthetic.yaml",
}
DEFAULT_CONFIRM = {"top": 2, "seeds": 2}  # multidigits' own, given to a space without one
REFERENCE = "hard_sharing/equal, default training"
TUNED = "hard_sharing/equal, training tuned like the baselines"
SHORT = {"multidigits": "md", "mmoe_synthetic": "mmoe"}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- one cell, in its own process -------------------------------------------------------------


def make_recorder(tag: str):
    """A ``Progress`` that prints a cell's main lines with its tag and records the process CPU
    time and wall time at the end of each trial (``trial`` event) and of the baselines."""
    from mtlsearch.search import Progress

    class Recorder(Progress):
        def __init__(self) -> None:
            super().__init__("normal", stream=sys.stderr)
            self.trial_end: dict[int, tuple[float, float]] = {}
            self.baselines_end: tuple[float, float] | None = None

        def event(self, kind: str, message: str = "", transient: bool = False, **data: Any) -> None:
            now = (time.process_time(), time.perf_counter())
            if kind == "trial" and isinstance(data.get("trial"), int):
                self.trial_end[data["trial"]] = now
            if kind == "baseline_done":
                self.baselines_end = now
            if transient or not message or kind in ("epoch", "baseline_tune", "single_task"):
                return
            log(f"[{tag}] {message}")

    return Recorder()


def reference_params(problem) -> dict[str, Any]:
    """Trial parameters of hard sharing, equal weighting, every searched training setting at its
    default (``Problem.baseline_training``)."""
    params: dict[str, Any] = {"family": "hard_sharing", "weighting": "equal"}
    for key, value in problem.baseline_training().items():
        if getattr(problem.training_space, key).kind != "fixed":
            params[f"training.{key}"] = value
    return params


def run_cell(space: str, sampler: str, seed: int, n_trials: int, retrain_seeds: list[int]) -> dict[str, Any]:
    import optuna
    import torch

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from optuna.trial import TrialState

    import mtlsearch
    from mtlsearch.search import results

    tag = f"{SHORT.get(space, space)}/{sampler}/s{seed}"
    folder = Path(tempfile.mkdtemp(prefix=f"mtlsearch-bench-quality-{space}-{sampler}-{seed}-"))
    cpu0, wall0 = time.process_time(), time.perf_counter()
    try:
        problem, run = mtlsearch.load(SPACES[space])
        confirm = run.confirm or dict(DEFAULT_CONFIRM)
        storage = f"sqlite:///{folder}/study.db"
        run = run.replace(
            study=f"quality-{space}-{sampler}-{seed}",
            storage=storage,
            n_trials=n_trials,
            sampler=sampler,
            seed=seed,
            device="cpu",
            confirm=confirm,
            artifacts=str(folder / "artifacts"),
            save_weights=False,
            **({"threads": 1} if "threads" in type(run).KEYS else {}),  # newer mtlsearch sets threads itself
        )
        recorder = make_recorder(tag)
        log(
            f"[{tag}] study started: {n_trials} trials, confirm {confirm}, baselines {problem.space.baselines}, "
            f"mtlsearch from {Path(mtlsearch.__file__).parent}"
        )
        study = mtlsearch.run_search(problem, run, recorder)
        search_cpu, search_wall = time.process_time() - cpu0, time.perf_counter() - wall0

        # 1. the pick (validation only), pooled over its seeds
        pick = results.pick(study, "delta")
        pooled = results.pool_of(study)
        by_trial = {n: p for p in pooled for n in p.trials}
        chosen = by_trial[pick.number]
        pick_record = results.trial_record(study, pick, chosen)

        # 3. anytime curve, from the study as the search left it
        budget = sorted(
            (
                t
                for t in study.get_trials(deepcopy=False)
                if "confirm_of" not in t.user_attrs
                and not t.user_attrs.get("surplus")
                and t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
            ),
            key=lambda t: t.number,
        )
        complete = {t.number: t for t in results.complete_trials(study)}
        curve = []
        for k in range(1, len(budget) + 1):
            first = [complete[t.number] for t in budget[:k] if t.number in complete]
            end = recorder.trial_end.get(budget[k - 1].number)
            point: dict[str, Any] = {
                "k": k,
                "cpu_s": None if end is None else end[0] - cpu0,
                "wall_s": None if end is None else end[1] - wall0,
            }
            if first:
                best = max(results.pool(first), key=lambda p: p.delta_mtl)
                whole = by_trial[best.trial.number]
                point.update(
                    incumbent=best.trial.number,
                    seen=best.delta_mtl,
                    seen_seeds=len(best.runs),
                    confirmed=whole.delta_mtl,
                    confirmed_seeds=len(whole.runs),
                )
            curve.append(point)
        confirm_trials = [t for t in study.get_trials(deepcopy=False) if "confirm_of" in t.user_attrs]
        last_confirm = max((recorder.trial_end.get(t.number, (None,))[0] or 0.0 for t in confirm_trials), default=None)
        baselines = study.user_attrs.get("mtlsearch.baselines") or {}

        # 2. the reference: hard sharing, equal weighting, default training; one trial, 3 seeds
        params = reference_params(problem)
        problem.replay(params)  # checks the parameters against the space
        study.enqueue_trial(params, user_attrs={"bench_reference": REFERENCE})
        objective = mtlsearch.Objective(problem, seed=seed, device="cpu", sampler=sampler, seeds_per_trial=3)
        study.optimize(objective, n_trials=1)
        ref_trial = max(study.get_trials(deepcopy=False), key=lambda t: t.number)
        if ref_trial.state != TrialState.COMPLETE:
            raise RuntimeError(f"reference trial #{ref_trial.number} ended {ref_trial.state.name}")
        ref_val = results.seed_runs(ref_trial)
        tuned_trial, tuned_tried = tune_reference(study, problem, params, seed, sampler)

        log(
            f"[{tag}] search done in {search_wall:.0f} s; pick #{pick.number} {describe(pick_record)}: "
            f"val Delta-MTL {chosen.delta_mtl:+.2f} over {len(chosen.runs)} seeds; retraining pick and reference on test ..."
        )
        cpu1 = time.process_time()
        pick_test = results.retrain(results.export_config(study, pick, storage), retrain_seeds, device="cpu")
        ref_test = results.retrain(results.export_config(study, ref_trial, storage), retrain_seeds, device="cpu")
        tuned_test = results.retrain(results.export_config(study, tuned_trial, storage), retrain_seeds, device="cpu")
        retrain_cpu = time.process_time() - cpu1
        paired = [a["delta_mtl"] - b["delta_mtl"] for a, b in zip(pick_test["runs"], ref_test["runs"])]
        paired_tuned = [a["delta_mtl"] - b["delta_mtl"] for a, b in zip(pick_test["runs"], tuned_test["runs"])]
        same_single = max(
            abs(a["single_task_test_metrics"][t][m] - b["single_task_test_metrics"][t][m])
            for other in (ref_test, tuned_test)
            for a, b in zip(pick_test["runs"], other["runs"])
            for t, ms in a["single_task_test_metrics"].items()
            for m in ms
        )
        usage = resource.getrusage(resource.RUSAGE_SELF)
        out = {
            "space": space,
            "sampler": sampler,
            "seed": seed,
            "n_trials": n_trials,
            "confirm": confirm,
            "study_trials": len(study.trials),
            "pick": {
                "trial": pick.number,
                "trials": list(chosen.trials),
                "family": pick_record["family"],
                "weighting": (pick_record["architecture"] or {}).get("weighting", {}).get("name"),
                "description": (pick_record["architecture"] or {}).get("description"),
                "training": (pick_record["architecture"] or {}).get("training"),
                "params": pick_record["params"],
                "confirmed": chosen.confirmed,
                "val_delta_mtl": chosen.delta_mtl,
                "val_delta_std": chosen.delta_std,
                "val_runs": list(chosen.runs),
                "val_metrics": chosen.val_metrics,
            },
            "reference": {
                "what": REFERENCE,
                "params": params,
                "trial": ref_trial.number,
                "val_delta_mtl": statistics.fmean(ref_val),
                "val_runs": ref_val,
                "val_metrics": ref_trial.user_attrs.get("val_metrics"),
            },
            "reference_tuned": {
                "what": TUNED,
                "params": dict(tuned_trial.params),
                "trial": tuned_trial.number,
                "val_delta_mtl": tuned_trial.user_attrs.get("delta_mtl"),
                "val_metrics": tuned_trial.user_attrs.get("val_metrics"),
                "tried": tuned_tried,
            },
            "baselines": {k: baselines.get(k) for k in ("source", "values", "spread", "training", "seeds", "seconds")},
            "test": {"pick": strip(pick_test), "reference": strip(ref_test), "reference_tuned": strip(tuned_test)},
            "test_paired_delta": {"runs": paired, **mean_interval(paired)},
            "test_paired_delta_tuned": {"runs": paired_tuned, **mean_interval(paired_tuned)},
            "single_task_max_abs_diff": same_single,
            "curve": curve,
            "trials": [
                {
                    "number": t.number,
                    "params": dict(t.params),
                    "state": t.state.name,
                    "candidate": t.user_attrs.get("candidate"),
                    "delta_mtl": t.user_attrs.get("delta_mtl"),
                    "confirm_of": t.user_attrs.get("confirm_of"),
                    "train_seconds": t.user_attrs.get("train_seconds"),
                }
                for t in study.get_trials(deepcopy=False)
                if "bench_reference" not in t.user_attrs
            ],
            "after_confirm": {
                "cpu_s": None if last_confirm is None else last_confirm - cpu0,
                "value": chosen.delta_mtl,
            },
            "cpu_s": {
                "search": search_cpu,
                "baselines": None if recorder.baselines_end is None else recorder.baselines_end[0] - cpu0,
                "retrain": retrain_cpu,
                "getrusage_total": usage.ru_utime + usage.ru_stime,
            },
            "wall_s": {"search": search_wall, "total": time.perf_counter() - wall0},
        }
        log(
            f"[{tag}] done in {out['wall_s']['total']:.0f} s: test Delta-MTL pick {fmt_interval(out['test']['pick']['delta_mtl'])}, "
            f"reference {fmt_interval(out['test']['reference']['delta_mtl'])}, "
            f"tuned reference {fmt_interval(out['test']['reference_tuned']['delta_mtl'])}"
        )
        return out
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def tune_reference(study, problem, default: dict[str, Any], seed: int, sampler: str):
    """Hard sharing with equal weighting, its training settings tuned as each single-task baseline
    is (``baselines.tune_trials`` runs, default settings first, then random draws over the training
    space, one seed each, best validation Delta-MTL kept; ties keep the first). The runs are trials
    queued into the study after everything else was read from it. Returns the best trial and
    every run's settings and value."""
    import optuna
    from optuna.trial import TrialState

    import mtlsearch

    n = problem.space.baselines.tune_trials if problem.training_is_searched else 1
    tuner = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed))
    tuner.enqueue_trial({k: v for k, v in default.items() if k.startswith("training.")})
    objective = mtlsearch.Objective(problem, seed=seed, device="cpu", sampler=sampler)
    best, tried = None, []
    for _ in range(n):
        ask = tuner.ask()
        problem.suggest_training(ask)
        study.enqueue_trial({**default, **ask.params}, user_attrs={"bench_reference": TUNED})
        study.optimize(objective, n_trials=1)
        trial = max(study.get_trials(deepcopy=False), key=lambda t: t.number)
        value = trial.user_attrs.get("delta_mtl") if trial.state == TrialState.COMPLETE else None
        tuner.tell(ask, value, state=TrialState.COMPLETE if value is not None else TrialState.FAIL)
        tried.append({"trial": trial.number, "params": dict(ask.params), "val_delta_mtl": value})
        if value is not None and (best is None or value > best.user_attrs["delta_mtl"]):
            best = trial
    if best is None:
        raise RuntimeError("every tuning run of the hard-sharing reference failed")
    return best, tried


def strip(result: dict[str, Any]) -> dict[str, Any]:
    """What a retrain result needs to keep here (its config provenance is the study's)."""
    keep = ("seeds", "test_metrics", "single_task_test_metrics", "baseline_training", "delta_mtl", "task_delta")
    out = {k: result[k] for k in keep if k in result}
    out["runs"] = [
        {k: r[k] for k in ("seed", "test_metrics", "single_task_test_metrics", "delta_mtl", "task_delta") if k in r}
        for r in result["runs"]
    ]
    return out


# -- numbers and formatting -------------------------------------------------------------------


def mean_interval(values: list[float]) -> dict[str, Any]:
    from mtlsearch.scoring import mean_interval as interval

    return interval(values)


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt_ms(values: list[float]) -> str:
    m, s = mean_std(values)
    return f"{m:+.2f} ± {s:.2f}"


def fmt_interval(d: dict[str, Any]) -> str:
    if d.get("low") is None:
        return f"{d['mean']:+.2f}"
    return f"{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]"


def describe(record: dict[str, Any]) -> str:
    arch = record.get("architecture") or {}
    training = arch.get("training") or {}
    lr = training.get("lr")
    opt = training.get("optimizer")
    return (
        f"{record.get('family')}/{arch.get('weighting', {}).get('name', '?')} (lr {lr:.2g}, {opt})"
        if lr
        else str(record.get("family"))
    )


def table(rows: list[list[str]], header: list[str]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    import optuna
    import torch

    import mtlsearch

    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "optuna": optuna.__version__,
        "mtlsearch": mtlsearch.__version__,
        "mtlsearch_path": str(Path(mtlsearch.__file__).parent),
        "torch_threads_per_cell": 1,
        "load_average_at_start": list(os.getloadavg()),
    }


def summarize(cells: list[dict[str, Any]], samplers: list[str], spaces: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for space in spaces:
        out[space] = {}
        for sampler in samplers:
            cs = sorted((c for c in cells if c["space"] == space and c["sampler"] == sampler), key=lambda c: c["seed"])
            if not cs:
                continue
            val = [c["pick"]["val_delta_mtl"] for c in cs]
            test = [c["test"]["pick"]["delta_mtl"]["mean"] for c in cs]
            ref = [c["test"]["reference"]["delta_mtl"]["mean"] for c in cs]
            tuned = [c["test"]["reference_tuned"]["delta_mtl"]["mean"] for c in cs]
            ks = min(len(c["curve"]) for c in cs)
            curve = []
            for i in range(ks):
                pts = [c["curve"][i] for c in cs]
                if any("confirmed" not in p for p in pts) or any(p["cpu_s"] is None for p in pts):
                    continue
                curve.append(
                    {
                        "k": pts[0]["k"],
                        "seen": statistics.fmean(p["seen"] for p in pts),
                        "confirmed": statistics.fmean(p["confirmed"] for p in pts),
                        "confirmed_seeds": statistics.fmean(p["confirmed_seeds"] for p in pts),
                        "cpu_s": statistics.fmean(p["cpu_s"] for p in pts),
                    }
                )
            after = [c["after_confirm"] for c in cs]
            out[space][sampler] = {
                "seeds": [c["seed"] for c in cs],
                "val_pick": {"runs": val, "mean": mean_std(val)[0], "std": mean_std(val)[1]},
                "val_reference": {"runs": [c["reference"]["val_delta_mtl"] for c in cs]},
                "test_pick": {"runs": test, "mean": mean_std(test)[0], "std": mean_std(test)[1]},
                "test_reference": {"runs": ref, "mean": mean_std(ref)[0], "std": mean_std(ref)[1]},
                "val_reference_tuned": {"runs": [c["reference_tuned"]["val_delta_mtl"] for c in cs]},
                "test_reference_tuned": {"runs": tuned, "mean": mean_std(tuned)[0], "std": mean_std(tuned)[1]},
                "curve": curve,
                "after_confirm": {
                    "value": statistics.fmean(a["value"] for a in after),
                    "cpu_s": statistics.fmean(a["cpu_s"] for a in after) if all(a["cpu_s"] for a in after) else None,
                },
                "cpu_s_total": statistics.fmean(c["cpu_s"]["getrusage_total"] for c in cs),
            }
    return out


def report(cells: list[dict[str, Any]], summary: dict[str, Any], samplers: list[str]) -> str:
    parts = []
    # 1. sampler comparison on validation
    rows = []
    for space, by_sampler in summary.items():
        for sampler, s in by_sampler.items():
            picks = ", ".join(
                f"s{c['seed']}: {c['pick']['val_delta_mtl']:+.2f} {c['pick']['family']}/{c['pick']['weighting']}"
                for c in sorted(cells, key=lambda c: c["seed"])
                if c["space"] == space and c["sampler"] == sampler
            )
            rows.append(
                [
                    space,
                    sampler,
                    f"**{fmt_ms(s['val_pick']['runs'])}**",
                    picks,
                    fmt_ms(s["val_reference"]["runs"]),
                    fmt_ms(s["val_reference_tuned"]["runs"]),
                ]
            )
    parts.append(
        "1. Validation Delta-MTL % of the confirmed pick (pooled over its seeds), mean ± std over study seeds; "
        f"references: HS default = {REFERENCE} (3 seeds), HS tuned = {TUNED} (best of the tuning runs, 1 seed)\n"
        + table(
            rows,
            ["space", "sampler", "pick, val", "per study seed (pick)", "HS default, val", "HS tuned, val (optimistic)"],
        )
    )
    verdicts = []
    if {"tpe", "random"} <= set(samplers):
        for space, by_sampler in summary.items():
            if "tpe" in by_sampler and "random" in by_sampler:
                for split in ("val", "test"):
                    t, r = by_sampler["tpe"][f"{split}_pick"], by_sampler["random"][f"{split}_pick"]
                    d = t["mean"] - r["mean"]
                    bigger = abs(d) > max(t["std"], r["std"])
                    se = math.sqrt(t["std"] ** 2 / len(t["runs"]) + r["std"] ** 2 / len(r["runs"]))
                    ratio = f"{abs(d) / se:.2f}" if se > 0 else "inf"
                    verdicts.append(
                        f"{space}, {split}: TPE - random = {d:+.2f} points; spreads (std over study seeds) "
                        f"TPE {t['std']:.2f}, random {r['std']:.2f}: the difference is "
                        + ("larger than both spreads" if bigger else "within the spreads")
                        + f"; standard error of the difference {se:.2f} (|d|/se = {ratio} with "
                        f"{len(t['runs'])} + {len(r['runs'])} study seeds)"
                    )
    for space in summary:
        for seed in sorted({c["seed"] for c in cells}):
            pair = {c["sampler"]: c for c in cells if c["space"] == space and c["seed"] == seed}
            if "tpe" in pair and "random" in pair:
                a = [t for t in pair["tpe"]["trials"] if t["confirm_of"] is None]
                b = [t for t in pair["random"]["trials"] if t["confirm_of"] is None]
                same = next(
                    (i for i, (x, y) in enumerate(zip(a, b)) if x["params"] != y["params"]), min(len(a), len(b))
                )
                base = pair["tpe"]["baselines"]["values"] == pair["random"]["baselines"]["values"]
                verdicts.append(
                    f"{space} study seed {seed}: TPE and random drew the same first {same} trials; "
                    f"baselines {'identical' if base else 'different'}"
                )
    parts.append("\n".join(verdicts))
    # 2. test split
    rows, task_rows = [], []
    for c in sorted(cells, key=lambda c: (c["space"], c["sampler"], c["seed"])):
        p, r, u = c["test"]["pick"], c["test"]["reference"], c["test"]["reference_tuned"]
        lr = (c["reference_tuned"]["params"] or {}).get("training.lr")
        rows.append(
            [
                c["space"],
                c["sampler"],
                c["seed"],
                f"#{c['pick']['trial']} {c['pick']['family']}/{c['pick']['weighting']}",
                f"{c['pick']['val_delta_mtl']:+.2f}",
                f"**{fmt_interval(p['delta_mtl'])}**",
                fmt_interval(r["delta_mtl"]),
                fmt_interval(u["delta_mtl"]) + ("" if lr is None else f" (lr {lr:.2g})"),
                fmt_interval(c["test_paired_delta"]),
                fmt_interval(c["test_paired_delta_tuned"]),
            ]
        )
        task_rows.append(
            [
                c["space"],
                c["sampler"],
                c["seed"],
                "; ".join(
                    f"{t}.{m} {v['mean']:.4f} / {r['test_metrics'][t][m]['mean']:.4f} / "
                    f"{u['test_metrics'][t][m]['mean']:.4f} / {p['single_task_test_metrics'][t][m]['mean']:.4f}"
                    for t, ms in p["test_metrics"].items()
                    for m, v in ms.items()
                ),
                ", ".join(f"{t} {d['mean']:+.2f}" for t, d in p["task_delta"].items()),
            ]
        )
    seeds = cells[0]["test"]["pick"]["seeds"] if cells else []
    parts.append(
        f"2. Test split, retrained from scratch on seeds {seeds}: Delta-MTL % against the study's tuned single-task "
        "networks retrained on the same seeds, mean [95 % interval over the retrain seeds]\n"
        + table(
            rows,
            [
                "space",
                "sampler",
                "study seed",
                "pick",
                "pick val",
                "pick test",
                "HS default test",
                "HS tuned test",
                "pick - HS default (paired)",
                "pick - HS tuned (paired)",
            ],
        )
    )
    parts.append(
        "2b. Per-task test metrics, mean over the retrain seeds: pick / HS default / HS tuned / single-task; "
        "the pick's per-task delta %\n"
        + table(
            task_rows,
            [
                "space",
                "sampler",
                "study seed",
                "metric: pick / HS default / HS tuned / single-task",
                "pick's task deltas",
            ],
        )
    )
    rows = []
    for space, by_sampler in summary.items():
        for sampler, s in by_sampler.items():
            rows.append(
                [
                    space,
                    sampler,
                    f"**{fmt_ms(s['test_pick']['runs'])}**",
                    fmt_ms(s["test_reference"]["runs"]),
                    fmt_ms(s["test_reference_tuned"]["runs"]),
                    f"{s['test_pick']['mean'] - s['test_reference']['mean']:+.2f}",
                    f"{s['test_pick']['mean'] - s['test_reference_tuned']['mean']:+.2f}",
                ]
            )
    parts.append(
        "2c. Test Delta-MTL %, mean ± std over study seeds (each a mean over the retrain seeds)\n"
        + table(
            rows,
            [
                "space",
                "sampler",
                "pick, test",
                "HS default, test",
                "HS tuned, test",
                "pick - HS default",
                "pick - HS tuned",
            ],
        )
    )
    # 3. anytime
    rows = []
    for space, by_sampler in summary.items():
        for sampler, s in by_sampler.items():
            n = len(s["curve"])
            marks = sorted({1, 2, 4, 8, 9, 12, 16, 20, 24, 32, n} & set(range(1, n + 1)))
            for pt in s["curve"]:
                if pt["k"] in marks:
                    rows.append(
                        [
                            space,
                            sampler,
                            pt["k"],
                            f"{pt['cpu_s']:.0f}",
                            f"{pt['seen']:+.2f}",
                            f"{pt['confirmed']:+.2f}",
                            f"{pt['confirmed_seeds']:.1f}",
                        ]
                    )
            a = s["after_confirm"]
            rows.append(
                [
                    space,
                    sampler,
                    "+confirm",
                    "?" if a["cpu_s"] is None else f"{a['cpu_s']:.0f}",
                    "",
                    f"{a['value']:+.2f}",
                    "",
                ]
            )
    parts.append(
        "3. Anytime: best validation Delta-MTL % after k finished trials, mean over study seeds "
        "(seen: pooled over the first k trials' seeds; confirmed: the same candidate over every seed the study "
        "trained for it); CPU-s: the cell process's CPU time from loading the space (baselines included)\n"
        + table(rows, ["space", "sampler", "k", "CPU-s", "seen", "confirmed", "seeds"])
    )
    return "\n\n".join(parts)


# -- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: study seed 0, 3 trials, 2 retrain seeds")
    p.add_argument("--n-trials", type=int, default=None, help="budget per study (default 20; --quick 3)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="study seeds (default 0 1 2; --quick 0)")
    p.add_argument(
        "--retrain-seeds", type=int, nargs="+", default=None, help="test retrain seeds (default 100 101 102)"
    )
    p.add_argument("--spaces", nargs="+", default=list(SPACES), choices=list(SPACES))
    p.add_argument("--samplers", nargs="+", default=["tpe", "random"], choices=["tpe", "random", "nsga2"])
    p.add_argument("--jobs", type=int, default=2, help="cells run at once, one process and one torch thread each")
    p.add_argument(
        "--json",
        default=None,
        help="write every number here (default benchmarks/results/search_quality.json; --quick: none)",
    )
    p.add_argument(
        "--from-json", default=None, help="print the tables of a JSON written by an earlier run; run nothing"
    )
    args = p.parse_args(argv)
    if args.from_json:
        data = json.loads(Path(args.from_json).read_text())
        a = data["args"]
        print(report(data["cells"], summarize(data["cells"], a["samplers"], a["spaces"]), a["samplers"]))
        m = data["machine"]
        print(
            f"\n{len(data['cells'])} studies, {a['n_trials']} trials each (+ confirmation), study seeds {a['seeds']}, "
            f"retrain seeds {a['retrain_seeds']}; total wall {data['wall_s']:.0f} s ({data['wall_s'] / 60:.1f} min); "
            f"{m['cpus']} CPUs ({m['cpu']}), torch {m['torch']}, 1 torch thread per cell, {a['jobs']} cells at a time"
        )
        return 0
    n_trials = args.n_trials or (3 if args.quick else 20)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    retrain_seeds = args.retrain_seeds or ([100, 101] if args.quick else [100, 101, 102])
    json_path = args.json or (None if args.quick else str(ROOT / "benchmarks" / "results" / "search_quality.json"))

    info = machine()
    log(
        f"mtlsearch {info['mtlsearch']}, torch {info['torch']}, optuna {info['optuna']}, Python {info['python']}, "
        f"{info['cpus']} CPUs ({info['cpu']}); load average {' '.join(f'{v:.2f}' for v in info['load_average_at_start'])}"
    )
    jobs = [(space, sampler, seed) for space in args.spaces for seed in seeds for sampler in args.samplers]
    jobs.sort(key=lambda j: j[0] != "multidigits")  # the longer cells first
    log(
        f"{len(jobs)} studies of {n_trials} trials (+ confirmation), {args.jobs} at a time; retrain seeds {retrain_seeds}"
    )
    start = time.perf_counter()
    cells = []
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=context, max_tasks_per_child=1) as pool:
        futures = {pool.submit(run_cell, *job, n_trials, retrain_seeds): job for job in jobs}
        for future in as_completed(futures):
            cells.append(future.result())
            log(f"-- {len(cells)}/{len(jobs)} studies done, {time.perf_counter() - start:.0f} s elapsed")
    wall = time.perf_counter() - start
    summary = summarize(cells, args.samplers, [s for s in args.spaces])
    print(report(cells, summary, args.samplers))
    cpu = sum(c["cpu_s"]["getrusage_total"] for c in cells)
    print(
        f"\n{len(cells)} studies, {n_trials} trials each (+ confirmation), study seeds {seeds}, retrain seeds {retrain_seeds}; "
        f"total wall {wall:.0f} s ({wall / 60:.1f} min), CPU of the cells {cpu:.0f} s; {info['cpus']} CPUs ({info['cpu']}), "
        f"torch {info['torch']}, 1 torch thread per cell, {args.jobs} cells at a time; "
        f"load average at the end {' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        data = {
            "machine": info,
            "args": {
                "n_trials": n_trials,
                "seeds": seeds,
                "retrain_seeds": retrain_seeds,
                "spaces": args.spaces,
                "samplers": args.samplers,
                "jobs": args.jobs,
            },
            "wall_s": wall,
            "load_average_at_end": list(os.getloadavg()),
            "summary": summary,
            "cells": sorted(cells, key=lambda c: (c["space"], c["sampler"], c["seed"])),
        }
        Path(json_path).write_text(json.dumps(data, indent=1, default=str) + "\n")
        print(f"every number: {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
