"""Distillation of the study's single-task networks into the multi-task one, as a training strategy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .hyper import check_number, hyperparameter_error
from .strategy import STRATEGIES, StrategyError, TrainingStrategy

TARGETS = ("outputs", "features")
# task types whose outputs are logits: softened distributions are compared (KL); every other type
# (regression, count, depth, normals, a user's type) is compared by mean squared error
SOFTMAX_TYPES = ("classification", "segmentation")  # logits over dim 1, per sample or per pixel
SIGMOID_TYPES = ("binary", "edges")  # one logit: a Bernoulli distribution


def soft_term(student: torch.Tensor, teacher: torch.Tensor, temperature: float, one_logit: bool) -> torch.Tensor:
    """``T^2 * KL(softmax(t / T) || softmax(s / T))`` over dim 1, averaged over the samples (and
    pixels) (Hinton, Vinyals & Dean, 2015, arXiv:1503.02531: the ``T^2`` keeps the soft term's
    gradient on the scale of the hard loss's). A one-logit output ``z`` is the two-class
    distribution of logits ``(0, z)``, i.e. ``sigmoid(z / T)``."""
    if one_logit:
        student = torch.cat([torch.zeros_like(student), student], dim=1)
        teacher = torch.cat([torch.zeros_like(teacher), teacher], dim=1)
    log_s = F.log_softmax(student / temperature, dim=1)
    log_t = F.log_softmax(teacher / temperature, dim=1)
    return F.kl_div(log_s, log_t, log_target=True, reduction="none").sum(dim=1).mean() * temperature**2


def distillation_term(student: torch.Tensor, teacher: torch.Tensor, task_type: str, temperature: float) -> torch.Tensor:
    """The distillation term of one task's output: :func:`soft_term` for classification-like
    types (per pixel for dense ones), else the mean squared error to the teacher's output (every
    element, every pixel: nothing is ignored)."""
    if task_type in SOFTMAX_TYPES or task_type in SIGMOID_TYPES:
        return soft_term(student, teacher, temperature, one_logit=task_type in SIGMOID_TYPES)
    return F.mse_loss(student, teacher)


@STRATEGIES.register("distill")
class Distill(TrainingStrategy):
    """Distillation: the multi-task student also learns each task's single-task network's output.

    Born-again multi-task networks (Clark, Luong, Khandelwal, Manning & Le, ACL 2019,
    arXiv:1907.04829) and knowledge distillation for multi-task learning (Li & Bilen, ECCV
    Workshops 2020, arXiv:2007.06889). The teachers are the study's stored single-task baselines
    (``baselines.keep_weights``), run under ``no_grad`` in eval mode on each batch. The term added
    to the network's objective is ``weight * sum_t D_t``, over the candidate's tasks that have a
    teacher (the primary ones: an auxiliary task has no baseline), with
    ``D_t`` (``target: outputs``) :func:`distillation_term` of the student's and the teacher's
    outputs of task ``t``, or (``target: features``) the mean squared error between the
    student's shared feature and teacher ``t``'s backbone feature.

    Args:
        weight: the term's weight, > 0 (default 0.5: with equal weighting each task's distillation
            term counts half its own loss; searchable, e.g. ``{low: 0.1, high: 2, log: true}``).
        temperature: the softening of classification outputs, > 0 (default 2.0; searchable).
        target: ``outputs`` (default) or ``features`` (needs a shared feature of the teachers'
            shape; else the trial fails at setup).

    See docs/tasks.md#distillation.

    .. note::
        BAM! anneals from the teacher's targets to the gold labels over training, and Li & Bilen
        learn a task-specific adaptor before comparing features; here the weight is constant and
        features are compared as they are.
    """

    label = "Distill"
    searchable = ("weight", "temperature", "target")
    needs_teachers = True

    def __init__(self, tasks: Sequence[str], weight: float = 0.5, temperature: float = 2.0, target: str = "outputs"):
        super().__init__(tasks)
        self.weight = check_number(self.label, "weight", weight, low=0.0, low_open=True)
        self.temperature = check_number(self.label, "temperature", temperature, low=0.0, low_open=True)
        if target not in TARGETS:
            raise hyperparameter_error(self.label, "target", f"one of: {', '.join(TARGETS)}", target)
        self.target = target
        # plain attributes, not submodules: the teachers come from the study, not from a checkpoint
        self.teachers: dict[str, nn.Module] | None = None
        self.task_types: dict[str, str] = {}
        self._pairs: list[tuple[str, torch.Tensor, torch.Tensor]] = []

    def set_teachers(self, teachers: Mapping[str, nn.Module], task_types: Mapping[str, str]) -> None:
        """Give the single-task networks ``{task: network}`` and each task's type
        (:attr:`TaskSpec.type`), before training."""
        self.teachers = dict(teachers)
        self.task_types = dict(task_types)

    def setup(self, feature_shape: tuple[int, ...] | None, device: torch.device) -> None:
        if self.teachers is None:
            raise StrategyError(
                "strategy `distill` has no teachers: the study's single-task networks were not given "
                "(baselines.keep_weights stores them)"
            )
        if not any(t in self.teachers for t in self.tasks):
            raise StrategyError(
                f"strategy `distill` has no single-task network of any of its tasks ({', '.join(self.tasks)})"
            )
        for teacher in self.teachers.values():
            teacher.to(device).eval()
        if self.target == "features":
            for task in self._taught():
                found = self._teacher_feature_shape(self.teachers[task])
                if feature_shape is None or found is None or tuple(found) != tuple(feature_shape):
                    raise StrategyError(
                        f"strategy `distill` with target: features compares the student's shared feature "
                        f"(shape {feature_shape}) with the single-task network's of task `{task}` (shape {found}); "
                        "they differ. Use target: outputs"
                    )

    def _taught(self) -> list[str]:
        """The strategy's tasks that have a teacher (an auxiliary task has no baseline, so none)."""
        return [t for t in self.tasks if self.teachers is not None and t in self.teachers]

    @staticmethod
    def _teacher_feature_shape(teacher: nn.Module) -> tuple[int, ...] | None:
        shape = getattr(teacher, "input_shape", None)
        if shape is None:
            return None
        param = next(teacher.parameters(), None)
        with torch.no_grad():
            teacher(torch.zeros(2, *shape, device=param.device if param is not None else None))
        feature = getattr(teacher, "shared_feature", None)
        return tuple(feature.shape[1:]) if feature is not None else None

    def batch(self, inputs: torch.Tensor, outputs: Mapping[str, torch.Tensor]) -> None:
        if self.teachers is None:
            return
        self._pairs = []
        with torch.no_grad():
            for task in self._taught():
                if task not in outputs:
                    continue
                teacher = self.teachers[task].eval()
                out = teacher(inputs)[task]
                if self.target == "features":
                    out = teacher.shared_feature
                self._pairs.append((task, outputs[task], out.detach()))

    def loss(self, losses: torch.Tensor, feature: torch.Tensor | None) -> torch.Tensor | float:
        pairs, self._pairs = self._pairs, []
        if not pairs:
            return 0.0
        if self.target == "features":
            if feature is None:
                return 0.0
            terms = [F.mse_loss(feature, teacher) for _, _, teacher in pairs]
        else:
            terms = [
                distillation_term(student, teacher, self.task_types.get(task, ""), self.temperature)
                for task, student, teacher in pairs
            ]
        return self.weight * torch.stack(terms).sum()

    def checkpoint_state(self) -> dict[str, Any]:
        # the teachers are the study's, not the run's: only the hyperparameters go into a checkpoint
        return {"weight": self.weight, "temperature": self.temperature}
