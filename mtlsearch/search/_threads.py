"""Torch threads per process (``run.threads``, ``--threads``): ``auto`` gives small models one
thread per process (see :func:`mtlsearch.training.auto_threads`), a number is used as given."""

from __future__ import annotations

import torch

from ..problem import Problem
from ..scoring import count_macs
from ..training import auto_threads


def macs_per_batch(problem: Problem) -> int:
    """Forward MACs of one training batch of the problem's single-task networks, all tasks
    together: what a candidate of the space costs, roughly."""
    batch = int(problem.baseline_training()["batch_size"])
    macs = sum(count_macs(problem.single_task_model(task, 0), problem.input_shape) for task in problem.tasks)
    return macs * batch


def threads_for(problem: Problem, setting: int | str, workers: int = 1) -> int:
    """The torch threads of each of ``workers`` processes training ``problem``'s candidates."""
    return setting if isinstance(setting, int) else auto_threads(macs_per_batch(problem), workers)


def use_threads(threads: int) -> None:
    """Set this process's intra-op torch threads (inter-op threads are left to torch)."""
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
