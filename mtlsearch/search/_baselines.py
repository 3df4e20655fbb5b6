"""Single-task baselines: given by the space, or trained once per study on the train split,
scored on the validation split and stored with the study (Delta-MTL divides by them)."""

from __future__ import annotations

import time
from typing import Any

import optuna
import torch

from ..errors import MTLSearchError
from ..problem import Problem
from ..tasks import TaskSpec
from ..training import evaluate, train
from ._progress import QUIET, Progress
from ._records import study_record, write_study


def ensure_baselines(
    study: optuna.Study | None,
    problem: Problem,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: Progress = QUIET,
) -> dict[str, dict[str, float]]:
    """The single-task baselines of ``study``: given by the space, already stored in the study,
    or trained now (once per study: train split, validation scores) and stored with it.

    Call it once before ``study.optimize(Objective(problem))`` to train them as an explicit
    step (the objective otherwise calls it before its first trial). Returns
    ``{task: {metric: value}}``.
    """
    from ..training import resolve_device

    device = device if isinstance(device, torch.device) else resolve_device(device)
    if problem.given_baselines is not None:
        record: dict[str, Any] = {"source": "given", "values": problem.given_baselines}
    elif study is not None and (stored := study_record(study).baselines) is not None:
        return stored["values"]
    else:
        record = train_baselines(problem, seed, device, progress)
    if study is not None:
        data = {"seed": problem.space.data.seed, "sizes": problem.data.sizes(), **problem.data.info}
        write_study(study, baselines=record, data=data)
    return record["values"]


def check_nonzero(values: dict[str, dict[str, float]], problem: Problem) -> None:
    """Delta-MTL divides by each baseline metric that it scores: a trained baseline of exactly 0
    would fail every trial after its training, so the study stops here, before any trial."""
    for task, directions in problem.metric_directions.items():
        for metric in directions:
            if values[task][metric] == 0:
                raise MTLSearchError(
                    f"baselines.{task}.{metric}: the trained single-task baseline scores exactly 0 on the validation "
                    "split, and Delta-MTL divides by it; no trial was run. Give the baseline in the space "
                    f"(baselines: {{{task}: {{{metric}: VALUE}}}}), score the task with another metric "
                    "(tasks[].metrics), or give it more training (search_space.training.epochs)"
                )


def train_single_task(problem: Problem, task: TaskSpec, seed: int, device: torch.device) -> torch.nn.Module:
    """The single-task baseline network of ``task``, trained on the train split with the
    baseline settings (:meth:`Problem.baseline_training`) and equal weighting."""
    from ..weighting import WEIGHTINGS

    model = problem.single_task_model(task, seed)
    train(
        model,
        [task],
        WEIGHTINGS.get("equal")([task.name]),
        problem.data.train,
        problem.baseline_training(),
        device,
        seed,
    )
    return model


def train_baselines(problem: Problem, seed: int, device: torch.device, progress: Progress = QUIET) -> dict[str, Any]:
    """One single-task network per task, same backbone and budget (each training parameter at
    its default), scored on the validation split."""
    settings = problem.baseline_training()
    values = {}
    start = time.perf_counter()
    for i, task in enumerate(problem.tasks, 1):
        progress.event("baseline", f"baseline {i}/{len(problem.tasks)}: single-task `{task.name}` ...", task=task.name)
        model = train_single_task(problem, task, seed, device)
        values[task.name] = evaluate(model, [task], problem.data.val, device)[task.name]
        shown = ", ".join(f"{m} {v:.4g}" for m, v in values[task.name].items())
        progress.event(
            "baseline_done",
            f"baseline {i}/{len(problem.tasks)}: `{task.name}` val {shown}",
            task=task.name,
            metrics=values[task.name],
        )
    check_nonzero(values, problem)
    return {
        "source": "trained",
        "values": values,
        "training": settings,
        "seed": seed,
        "seconds": round(time.perf_counter() - start, 2),
    }
