"""The ``mtlsearch`` command: run, resume, worker, report, check, export, train and affinity."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from .config import EARLY_STOPPING, SAMPLERS
from .storage_url import ENV, redact, resolve, scrub
from .version import __version__

DEFAULT_STORAGE = "sqlite:///mtlsearch.db"
DEBUG_HELP = "show the traceback of an exception raised by user code (a data factory)"

EPILOG = """examples:
  mtlsearch run search_spaces/multidigits.yaml --study demo --storage sqlite:///mtlsearch.db --n-trials 20
  mtlsearch resume demo --storage sqlite:///mtlsearch.db --n-trials 30
  mtlsearch report demo --storage sqlite:///mtlsearch.db [--json] [--html report.html]
  mtlsearch compare demo-tpe demo-random --storage sqlite:///mtlsearch.db [--html compare.html]
  mtlsearch check demo --storage journal:///study.log [--repair]          # exit 1: problems left
  mtlsearch export demo --storage sqlite:///mtlsearch.db --pick delta -o best.yaml
  mtlsearch train best.yaml --seeds 3
  mtlsearch affinity search_spaces/multidigits.yaml --storage sqlite:///mtlsearch.db   # which tasks help which
  mtlsearch run space.yaml --storage journal:///study.log --workers 2      # 2 local worker processes
  MTLSEARCH_STORAGE=postgresql://user:pw@host/db mtlsearch worker demo     # join from another machine

The storage URL comes from --storage, else $MTLSEARCH_STORAGE, else the space's run.storage, else
sqlite:///mtlsearch.db. Put a password in $MTLSEARCH_STORAGE, not on the command line (ps shows
it); mtlsearch prints it as *** and never writes it into an export.
"""


def _output_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quiet", action="store_true", help="print no progress, only the result")
    g.add_argument("--json", action="store_true", help="print progress events and the result as JSON lines on stdout")


THREADS_HELP = (
    "torch threads per process: auto (1 for small models, whose steps more threads only slow down; else the "
    "cores shared out among the workers) or N (default: the space's run.threads, else auto)"
)


def _threads(value: str):
    """``--threads``: ``auto`` or an integer >= 1 (checked with the space's rule)."""
    return value if value == "auto" else int(value) if value.lstrip("-").isdigit() else value


def _storage_flag(p: argparse.ArgumentParser, from_space: bool = False) -> None:
    p.add_argument(
        "--storage",
        metavar="URL",
        help="Optuna storage: sqlite:///file.db, journal:///file.log, postgresql://user@host/db, mysql://... "
        + f"(default: ${ENV}, else "
        + ("the space's run.storage, else " if from_space else "")
        + f"{DEFAULT_STORAGE})",
    )


def _run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--n-trials",
        type=int,
        metavar="N",
        help="study-wide number of finished trials to reach (counts earlier ones too)",
    )
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="stop starting new trials after this many seconds")
    p.add_argument(
        "--device",
        metavar="DEV",
        help="auto (CUDA when present, else CPU), cpu, cuda, cuda:N (default: the space's run.device)",
    )
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="local worker processes sharing the study (default 1; use a journal:/// or "
        "postgresql:// storage for several)",
    )
    p.add_argument("--threads", type=_threads, metavar="N", help=THREADS_HELP)
    p.add_argument(
        "--early-stopping",
        choices=EARLY_STOPPING,
        help="stop trials on their validation Delta-MTL after an "
        "epoch: below the median of complete trials at that epoch (median), or outside the top third at "
        "epochs 1, 3, 9... "
        "(asha); recorded as PRUNED (default: none)",
    )
    p.add_argument(
        "--seeds-per-trial",
        type=int,
        metavar="K",
        help="train each candidate on K seeds and score the mean; the spread is stored (default 1)",
    )
    p.add_argument(
        "--heartbeat-interval", type=int, metavar="S", help="seconds between a running trial's heartbeats (default 10)"
    )
    p.add_argument(
        "--grace-period",
        type=int,
        metavar="S",
        help="a trial without heartbeat for S seconds is failed and retried "
        "from its last epoch checkpoint (default 30)",
    )


def _backend_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backend",
        choices=["optuna", "ray"],
        default="optuna",
        help="run trials in this process and its --workers "
        "(optuna), or as Ray Tune trials on a local Ray instance or a cluster, stopped early by ASHA (ray; needs "
        "'mtlsearch[ray]') (default: optuna)",
    )
    p.add_argument(
        "--address",
        metavar="ADDR",
        help="with --backend ray: the Ray cluster, auto or HOST:PORT (default: a local Ray instance)",
    )
    p.add_argument("--cpus-per-trial", type=float, metavar="N", help="with --backend ray: CPUs per trial (default 1)")
    p.add_argument(
        "--gpus-per-trial",
        type=float,
        metavar="F",
        help="with --backend ray: GPUs per trial, fractions allowed (default 0)",
    )
    p.add_argument(
        "--max-concurrent",
        type=int,
        metavar="N",
        help="with --backend ray: at most N trials at a time (default: as many as the cluster's resources allow)",
    )


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="mtlsearch",
        description="Architecture search for multi-task learning: sharing trees, gating, routing, soft sharing, "
        "loss weighting; Optuna studies.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="version", version=f"mtlsearch {__version__}")
    top.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    verbs = top.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True

    p = verbs.add_parser(
        "run",
        help="run a search study of a YAML space (continues it if it exists)",
        description="Run a multi-objective search of SPACE; flags override the space's `run` section.",
    )
    p.add_argument("space", metavar="SPACE", help="YAML file describing tasks, data, backbone and search space")
    p.add_argument("--study", metavar="NAME", help="study name (default: run.study, else the space's name)")
    _storage_flag(p, from_space=True)
    _run_flags(p)
    _backend_flags(p)
    p.add_argument("--sampler", choices=SAMPLERS, help="Optuna sampler (default: run.sampler, else tpe)")
    p.add_argument(
        "--seed", type=int, help="seed of the sampler, the baselines and the trials (default: run.seed, else 0)"
    )
    p.add_argument("--artifacts", metavar="DIR", help="where trial weights are stored (default: beside a file storage)")
    p.add_argument("--no-save-weights", action="store_true", help="do not keep each trial's trained weights")
    p.add_argument(
        "--warm-start",
        choices=["none", "affinity"],
        help="affinity: measure task affinity (or read the study's) and enqueue the trees it proposes as the "
        "study's first trials, once per study; needs `tree` in search_space.families (default: run.warm_start, "
        "else none)",
    )
    _output_flags(p)

    p = verbs.add_parser(
        "resume",
        help="continue a stored study (its space, seed and sampler are read from storage)",
        description="Continue STUDY to a study-wide number of finished trials, with the space it was created with.",
    )
    p.add_argument("study", metavar="STUDY", help="name of the stored study to continue")
    _storage_flag(p)
    _run_flags(p)
    _backend_flags(p)
    _output_flags(p)

    p = verbs.add_parser(
        "worker",
        help="join a running study as one more worker (e.g. from another machine)",
        description="Work on STUDY until its study-wide budget is met; its space, seed, sampler, budget, "
        "early stopping and heartbeat settings are read from the storage.",
    )
    p.add_argument("study", metavar="STUDY", help="name of the stored study to work on")
    _storage_flag(p)
    p.add_argument("--device", default="auto", metavar="DEV", help="auto, cpu, cuda, cuda:N (default: auto)")
    p.add_argument(
        "--threads",
        type=_threads,
        metavar="N",
        help="torch threads of this worker: auto or N (default: the study's run.threads, else auto)",
    )
    p.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    _output_flags(p)

    p = verbs.add_parser(
        "report",
        help="print a study's Pareto front",
        description="Print the Pareto front of STUDY: per-task validation metrics, Delta-MTL and cost.",
    )
    p.add_argument("study", metavar="STUDY", help="name of the stored study")
    _storage_flag(p)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--html",
        metavar="FILE",
        help="also write one self-contained HTML page (opens offline): the front, hypervolume, per-task metrics, "
        "architecture diagrams, parameter importances (replaces FILE; its folder must exist)",
    )

    p = verbs.add_parser(
        "compare",
        help="several studies side by side: best Delta-MTL, hypervolume, trials, training time",
        description="Compare STUDY... (of the same objectives, in one storage): best Delta-MTL, hypervolume "
        "(against the first study's reference point), trials and training seconds; mean ± std over studies of "
        "the same space and sampler (seeds of one setting).",
    )
    p.add_argument("studies", nargs="+", metavar="STUDY", help="names of the stored studies (two or more)")
    _storage_flag(p)
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page (its folder must exist)")

    p = verbs.add_parser(
        "check",
        help="read a study's trials, checkpoints and artifacts; report (and repair) damage",
        description="Read every trial, checkpoint and weights artifact of STUDY; report torn journal records, "
        "a damaged SQLite file, trials stuck RUNNING with a stale heartbeat, unreadable checkpoints and missing "
        "artifacts. Without --repair nothing is written. Exit code: 0 healthy (or all repaired), 1 problems left, "
        "2 bad input.",
    )
    p.add_argument("study", metavar="STUDY", help="name of the stored study")
    _storage_flag(p)
    p.add_argument(
        "--repair",
        action="store_true",
        help="end torn journal records (dropped bytes kept in FILE.torn-OFFSET.bak), fail and requeue trials "
        "with a stale heartbeat, set unreadable checkpoints aside; never drops a finished trial",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")

    p = verbs.add_parser(
        "export",
        help="write one trial of the front as a config that rebuilds the model",
        description="Pick a trial of STUDY's Pareto front and write a YAML config that rebuilds and retrains it.",
    )
    p.add_argument("study", metavar="STUDY", help="name of the stored study")
    _storage_flag(p)
    p.add_argument(
        "--pick",
        choices=["delta", "knee", "min-cost"],
        default="delta",
        help="delta: highest Delta-MTL; knee: the front's knee point; min-cost: fewest parameters with "
        "Delta-MTL >= --min-delta (default: delta)",
    )
    p.add_argument("--trial", type=int, metavar="N", help="export trial number N instead of picking")
    p.add_argument("--family", metavar="NAME", help="pick from the front of this family's trials alone (its winner)")
    p.add_argument("--max-params", type=int, metavar="N", help="consider only trials with at most N parameters")
    p.add_argument("--max-macs", type=int, metavar="N", help="consider only trials with at most N MACs per sample")
    p.add_argument(
        "--min-delta",
        type=float,
        default=0.0,
        metavar="PCT",
        help="with --pick min-cost: the lowest acceptable Delta-MTL in %% (default: 0)",
    )
    p.add_argument(
        "-o", "--output", default="best.yaml", metavar="FILE", help="where to write the config (default: best.yaml)"
    )
    p.add_argument(
        "--weights", metavar="FILE", help="also copy the trial's trained weights to FILE (a torch state dict)"
    )
    p.add_argument("--force", action="store_true", help="replace --output and --weights files that exist")

    p = verbs.add_parser(
        "train",
        help="retrain an exported config from scratch on several seeds; report test metrics",
        description="Train CONFIG from scratch for each seed on the train split and report test-split metrics "
        "(mean ± std).",
    )
    p.add_argument("config", metavar="CONFIG", help="a YAML file written by `mtlsearch export`")
    p.add_argument("--seeds", type=int, default=3, metavar="N", help="number of seeds (default: 3)")
    p.add_argument("--seed", type=int, default=0, help="first seed; seeds are SEED..SEED+N-1 (default: 0)")
    p.add_argument("--device", default="auto", metavar="DEV", help="auto, cpu, cuda, cuda:N (default: auto)")
    p.add_argument("--threads", type=_threads, metavar="N", help=THREADS_HELP.replace("the space's", "the config's"))
    p.add_argument(
        "--no-baselines", action="store_true", help="skip retraining single-task baselines (no test Delta-MTL)"
    )
    _output_flags(p)

    p = verbs.add_parser(
        "affinity",
        help="measure which tasks help each other (task affinity) and store it in the space's study",
        description="Train a hard-sharing network of SPACE for a few epochs and measure task affinity: the "
        "cosine of the per-task gradients, TAG's lookahead loss change, or the CKA of the single-task "
        "networks; print one matrix per method (row i, column j: the effect of task i on task j) and store "
        "them in the study (study attribute mtlsearch.affinity).",
    )
    p.add_argument("space", metavar="SPACE", help="YAML file describing tasks, data, backbone and search space")
    p.add_argument(
        "--methods",
        default="cosine,lookahead",
        metavar="LIST",
        help="comma-separated, of: cosine, lookahead, cka (cka needs the study's single-task baselines kept "
        "with their weights) (default: cosine,lookahead)",
    )
    p.add_argument("--epochs", type=int, default=1, metavar="N", help="epochs of the affinity run (default: 1)")
    p.add_argument("--seed", type=int, help="seed of the network and its batches (default: run.seed, else 0)")
    p.add_argument("--device", metavar="DEV", help="auto, cpu, cuda, cuda:N (default: the space's run.device)")
    p.add_argument("--study", metavar="NAME", help="study name (default: run.study, else the space's name)")
    _storage_flag(p, from_space=True)
    _output_flags(p)
    for sub in verbs.choices.values():  # --debug also after the verb; SUPPRESS keeps a top-level one
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return top


def _progress(args):
    from .search._progress import Progress

    return Progress("json" if getattr(args, "json", False) else "quiet" if getattr(args, "quiet", False) else "normal")


def _positive(value, flag):
    from .errors import ConfigError

    if value is not None and value < 1:
        raise ConfigError(flag, f"expected an integer >= 1, found {value}")


def _check_names(args) -> None:
    """Study and family names given here pass the check a space's names pass (no control
    characters, which could forge a progress line; a bounded length)."""
    from .config import check_name

    for dest, flag in (("study", "--study" if args.verb in ("run", "affinity") else "STUDY"), ("family", "--family")):
        if getattr(args, dest, None) is not None:
            check_name(getattr(args, dest), flag)


def _print_front(study, args, progress=None) -> None:
    from .search.results import format_report, report

    data = report(study, progress)
    if args.json:
        print(json.dumps({"event": "result", **data}, default=str))
    else:
        print(format_report(data))


def cmd_run(args) -> None:
    from . import load
    from .search._optuna_backend import run_search

    _positive(args.n_trials, "--n-trials")
    problem, run = load(args.space)
    run = run.replace(
        study=args.study,
        storage=args.storage or os.environ.get(ENV),
        n_trials=args.n_trials,
        timeout=args.timeout,
        sampler=args.sampler,
        seed=args.seed,
        device=args.device,
        artifacts=args.artifacts,
        save_weights=False if args.no_save_weights else None,
        warm_start=args.warm_start,
        **_engine_overrides(args),
    )
    if args.backend == "ray":
        _check_ray_flags(args)
        from .search._ray_backend import run_ray  # Ray is imported only here

        args.study, args.storage = run.study or problem.space.name, run.storage  # for the resume hint on Ctrl-C
        study = run_ray(problem, run, _progress(args), **_ray_options(args))
    else:
        _no_ray_flags(args)
        args.study, args.storage, args.workers = run.study or problem.space.name, run.storage, run.workers
        study = run_search(problem, run, _progress(args))
    _print_front(study, args)


def cmd_resume(args) -> None:
    from .search._resume import resume

    _positive(args.n_trials, "--n-trials")
    if args.backend == "ray":
        _check_ray_flags(args)
        ray = _ray_options(args)
    else:
        _no_ray_flags(args)
        ray = None
    study = resume(
        args.study,
        args.storage,
        n_trials=args.n_trials,
        backend=args.backend,
        progress=_progress(args),
        ray=ray,
        timeout=args.timeout,
        device=args.device,
        **_engine_overrides(args),
    )
    _print_front(study, args)


def _engine_overrides(args) -> dict:
    _positive(args.workers, "--workers")
    _positive(args.seeds_per_trial, "--seeds-per-trial")
    return {
        "workers": args.workers,
        "threads": _checked_threads(args.threads),
        "seeds_per_trial": args.seeds_per_trial,
        "early_stopping": args.early_stopping,
        "heartbeat_interval": args.heartbeat_interval,
        "grace_period": args.grace_period,
    }


def _checked_threads(value):
    from .config import check_threads

    return None if value is None else check_threads(value, "--threads")


def _check_ray_flags(args) -> None:
    from .errors import ConfigError

    for flag, value in (("--workers", args.workers), ("--early-stopping", args.early_stopping)):
        if value is not None:
            raise ConfigError(
                flag,
                "not used with --backend ray (Ray runs trials side by side up to --max-concurrent, and ASHA stops "
                "them early)",
            )
    _positive(args.max_concurrent, "--max-concurrent")


def _ray_options(args) -> dict:
    return {
        "address": args.address,
        "cpus_per_trial": 1.0 if args.cpus_per_trial is None else args.cpus_per_trial,
        "gpus_per_trial": 0.0 if args.gpus_per_trial is None else args.gpus_per_trial,
        "max_concurrent": args.max_concurrent,
    }


def _no_ray_flags(args) -> None:
    from .errors import ConfigError

    for flag in ("address", "cpus_per_trial", "gpus_per_trial", "max_concurrent"):
        if getattr(args, flag) is not None:
            raise ConfigError("--" + flag.replace("_", "-"), "only used with --backend ray")


def cmd_worker(args) -> None:
    from .search._optuna_backend import join_study
    from .search._progress import Progress

    mode = "json" if args.json else "quiet" if args.quiet else "normal"
    join_study(
        args.study,
        args.storage,
        Progress(mode, worker=args.worker_index or None),
        args.device,
        args.worker_index,
        threads=_checked_threads(args.threads),
    )


def cmd_report(args) -> None:
    from .errors import MTLSearchError
    from .search._progress import Progress
    from .search.results import complete_trials, load

    if args.html:
        from .search._html import check_html_path

        check_html_path(args.html)  # before the study is read
    study = load(args.study, args.storage)
    announcer = Progress("normal")  # on stderr: user code the stored space names is imported (a notice)
    if not complete_trials(study):
        raise MTLSearchError(f"study `{args.study}` has no complete feasible trial yet: nothing to report")
    if args.html:
        from .search._html import write_html

        write_html(study, args.html, progress=announcer)
    _print_front(study, args, announcer)
    if args.html:
        print(f"HTML report: {args.html}", file=sys.stderr)


def cmd_compare(args) -> None:
    from .search._compare import check_names, compare, format_compare
    from .search.results import load

    check_names(args.studies)
    if args.html:
        from .search._html import check_html_path

        check_html_path(args.html)
    studies = [load(name, args.storage) for name in args.studies]
    data = compare(studies)
    if args.html:
        from .search._html import write_compare_html

        write_compare_html(studies, data, args.html)
    if args.json:
        print(json.dumps({"event": "result", **data}, default=str))
    else:
        print(format_compare(data))
    if args.html:
        print(f"HTML comparison: {args.html}", file=sys.stderr)


def cmd_check(args) -> int:
    from .search._check import check_study, format_check

    result = check_study(args.study, args.storage, repair=args.repair)
    print(json.dumps(result.to_dict()) if args.json else format_check(result))
    return 0 if result.healthy else 1


def cmd_export(args) -> None:
    from pathlib import Path

    from .errors import ConfigError
    from .search.results import check_output, export_config, load, pick, save_weights, weights_file, write_yaml

    check_output(args.output, "--output", args.force)  # before anything is read or written
    if args.weights:
        check_output(args.weights, "--weights", args.force)
        if Path(args.weights).resolve() == Path(args.output).resolve():
            raise ConfigError("--weights", "names the same file as --output")
    study = load(args.study, args.storage)
    trial = pick(study, args.pick, args.max_params, args.max_macs, args.min_delta, args.trial, args.family)
    if args.weights:
        weights_file(study, trial)  # the artifact exists: nothing is written otherwise
    config = export_config(study, trial, args.storage, _progress(args))
    write_yaml(config, args.output)
    if args.weights:
        save_weights(study, trial, args.weights)
    how = f"trial #{trial.number}" if args.trial is not None else f"--pick {args.pick}: trial #{trial.number}"
    pooled = config["provenance"].get("candidate")
    delta = (
        f"Delta-MTL {pooled['delta_mtl']:+.2f}% ± {pooled['delta_mtl_std']:.2f} over {pooled['seeds']} seeds "
        f"of trials {', '.join(f'#{n}' for n in pooled['trials'])}"
        if pooled
        else f"Delta-MTL {config['provenance']['delta_mtl']:+.2f}%"
    )
    print(
        f"exported {how} ({config['architecture']['family']}, {delta}, "
        f"{config['provenance']['params']:,} params) to {args.output}"
        + (f"; weights to {args.weights}" if args.weights else "")
    )
    print("\n".join("  " + line for line in config["architecture"]["description"]))


def cmd_train(args) -> None:
    from .config import MAX_SEED
    from .errors import ConfigError
    from .search.results import check_seed, format_retrain, retrain

    _positive(args.seeds, "--seeds")
    check_seed(args.seed, "--seed")
    if args.seed + args.seeds - 1 > MAX_SEED:
        last = args.seed + args.seeds - 1
        raise ConfigError("--seeds", f"seeds {args.seed}..{last} go past the largest seed, {MAX_SEED}")
    seeds = list(range(args.seed, args.seed + args.seeds))
    result = retrain(
        args.config,
        seeds,
        args.device,
        baselines=not args.no_baselines,
        progress=_progress(args),
        threads=_checked_threads(args.threads),
    )
    if args.json:
        print(json.dumps({"event": "result", **result}, default=str))
    else:
        print(format_retrain(result))


def cmd_affinity(args) -> None:
    import optuna

    from . import load
    from .affinity import check_cka, estimate_affinity, format_affinity, rank_auxiliary, task_roles
    from .errors import ConfigError
    from .search import _baselines
    from .search._records import study_record, write_study
    from .search._storage import open_storage
    from .search._study import open_study
    from .search.results import check_seed
    from .training import resolve_device

    methods = _affinity_methods(args.methods)
    _positive(args.epochs, "--epochs")
    if args.seed is not None:
        check_seed(args.seed, "--seed")
    problem, run = load(args.space)
    run = run.replace(study=args.study, storage=args.storage or os.environ.get(ENV), seed=args.seed, device=args.device)
    name = run.study or problem.space.name
    storage = open_storage(run.storage)
    study, teachers = None, None
    if "cka" in methods:  # the study's single-task networks (a study that does not exist yet is not created)
        check_cka(problem.tasks, "--methods")  # auxiliary tasks have none: said before keep_weights
        networks = getattr(_baselines, "single_task_networks", None)
        if name in {s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}:
            study = open_study(problem.space, run, problem.directions, storage)
            teachers = networks(study, problem, resolve_device(run.device)) if networks is not None else None
        if teachers is None:
            raise ConfigError(
                "--methods",
                f"`cka` needs the single-task baselines of study `{name}` kept with their weights (in the space: "
                "`baselines: {keep_weights: true}`, then `mtlsearch run`); use cosine or lookahead otherwise",
            )
    if study is None:
        study = open_study(problem.space, run, problem.directions, storage)
    progress = _progress(args)
    progress.event(
        "affinity_start",
        f"affinity of study `{name}` ({redact(run.storage)}): {', '.join(methods)}"
        + (f"; {args.epochs} epoch(s) of a hard-sharing network, seed {run.seed}" if methods != ("cka",) else ""),
        study=name,
        methods=list(methods),
        epochs=args.epochs,
        seed=run.seed,
    )
    result = estimate_affinity(
        problem,
        methods=methods,
        epochs=args.epochs,
        seed=run.seed,
        device=resolve_device(run.device),
        teachers=teachers,
        progress=progress,
    )
    record = result.to_record()
    replaced = _stored_affinity(study_record(study).affinity)
    write_study(study, affinity=record)
    if replaced:
        progress.event("affinity_replaced", f"replacing the stored affinity ({replaced})", replaced=replaced)
    primary, auxiliary = task_roles(problem.tasks)
    ranking = {m: rank_auxiliary(result, m, primary, auxiliary) for m in result.matrices} if auxiliary else {}
    if args.json:
        out = {"event": "affinity", "study": name, "storage": redact(run.storage), **record}
        if ranking:
            out["auxiliary_ranking"] = {
                m: {p: [list(pair) for pair in r] for p, r in rs.items()} for m, rs in ranking.items()
            }
        print(json.dumps(out))
    else:
        print(format_affinity(result, ranking))
        print(f"stored in study `{name}` ({redact(run.storage)}) as mtlsearch.affinity")


def _stored_affinity(raw) -> str:
    """What the study's stored affinity record holds (``cosine, lookahead; seed 0``), ``""`` when it
    has none; a damaged one is named as such."""
    from .affinity import AffinityResult
    from .errors import ConfigError

    if raw is None:
        return ""
    try:
        stored = AffinityResult.from_record(raw)
    except ConfigError:
        return "an unreadable record"
    return f"{', '.join(stored.matrices)}; seed {stored.seed}"


def _affinity_methods(value: str) -> tuple[str, ...]:
    """``--methods``: known, distinct names separated by commas."""
    from .affinity import METHODS
    from .errors import ConfigError

    names = [m.strip() for m in value.split(",")]
    for m in names:
        if m not in METHODS:
            raise ConfigError("--methods", f"unknown method `{m}`; choose one of: {', '.join(METHODS)}")
    if len(set(names)) != len(names):
        raise ConfigError("--methods", f"a method is named twice in `{value}`")
    return tuple(names)


COMMANDS = {
    "run": cmd_run,
    "resume": cmd_resume,
    "worker": cmd_worker,
    "report": cmd_report,
    "compare": cmd_compare,
    "check": cmd_check,
    "export": cmd_export,
    "train": cmd_train,
    "affinity": cmd_affinity,
}


def main(argv: Sequence[str] | None = None) -> int:
    import traceback

    from .errors import MTLSearchError, UserCodeError

    args = parser().parse_args(argv)
    import optuna  # imported by mtlsearch already

    # Optuna's INFO lines ("A new study created...") would come before our own output and errors
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from_env = getattr(args, "storage", None) is None and bool(os.environ.get(ENV))
    source = "--storage" if getattr(args, "storage", None) else f"${ENV}" if from_env else None
    if hasattr(args, "storage") and args.verb not in ("run", "affinity"):  # the space's run.storage comes first
        args.storage = resolve(args.storage, None, DEFAULT_STORAGE)
    if args.verb in ("run", "resume", "worker"):
        from .search._signals import terminate_as_interrupt

        terminate_as_interrupt()
    try:
        _check_names(args)
        if source is not None:
            from .config import check_storage_url

            check_storage_url(args.storage or os.environ.get(ENV), source)  # run: args.storage is the flag
        if args.verb in READ_ONLY:
            _check_storage_exists(args.storage, source or f"the default {DEFAULT_STORAGE}")
        status = COMMANDS[args.verb](args)  # check: 1 when problems are left
    except MTLSearchError as err:
        message = str(err)
        if isinstance(err, UserCodeError) and err.__cause__ is not None:
            if args.debug:
                traceback.print_exception(err.__cause__)
            else:
                message += " (run with --debug for the traceback)"
        print(f"mtlsearch {args.verb}: error: {scrub(message, getattr(args, 'storage', None))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        from .search._signals import ignored

        if args.verb == "worker" and args.worker_index:  # started by `run --workers N`: the run says it, once
            return 130
        with ignored():  # a second Ctrl-C, 1 ms after the first, must not cut the hint short
            print(f"\nmtlsearch {args.verb}: interrupted{_resume_hint(args, from_env)}", file=sys.stderr)
        return 130
    return status or 0


READ_ONLY = ("report", "compare", "export", "check")  # verbs that never create a storage


def _check_storage_exists(url: str, source: str) -> None:
    """A sqlite or journal file that a read-only verb would open exists (opening creates it)."""
    from pathlib import Path

    from .errors import ConfigError, cut
    from .search._storage import journal_path

    if url.startswith("journal://"):
        file = journal_path(url)
    elif url.startswith("sqlite:///"):
        file = url[len("sqlite:///") :].split("?", 1)[0]
        if not file or file == ":memory:":
            return
    else:
        return
    try:
        exists = Path(file).is_file()
    except OSError as err:  # a name too long for the system...
        raise ConfigError("", f"cannot read the storage {cut(file)} (from {source}): {err.strerror or err}") from None
    if not exists:
        raise ConfigError(
            "",
            f"no storage at {cut(file)} (from {source}): no such file; name an existing one with --storage, "
            "or create it with `mtlsearch run`",
        )


def _resume_hint(args, from_env: bool) -> str:
    """How to continue after Ctrl-C; the storage URL without its password (``$MTLSEARCH_STORAGE``
    still names it when it came from there)."""
    if args.verb not in ("run", "resume", "worker"):
        return ""
    url = args.storage or DEFAULT_STORAGE
    storage = "" if from_env else f" --storage {redact(url)}"
    backend = " --backend ray" if getattr(args, "backend", "optuna") == "ray" else ""
    workers = getattr(args, "workers", None)
    backend += f" --workers {workers}" if workers and workers > 1 else ""
    secret = (
        f" (with the password in place of ***, or the URL in ${ENV})" if redact(url) != url and not from_env else ""
    )
    return f"; continue with `mtlsearch resume {args.study or '<study>'}{storage}{backend}`{secret}"


if __name__ == "__main__":
    sys.exit(main())
