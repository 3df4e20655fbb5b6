"""Dynamic Weight Average: weights from how fast each task's loss has been falling."""

from __future__ import annotations

import math
import operator
from array import array
from typing import Any

import torch

from .base import Weighting, register
from .hyper import check_number

# Buffer dtypes whose rounding Python's ``array`` reproduces (the Python-float path of DWA).
_ARRAY_CODES = {torch.float32: "f", torch.float64: "d"}


@register("dwa")
class DWA(Weighting):
    """Dynamic Weight Average of Liu, Johns & Davison, "End-to-End Multi-Task Learning with
    Attention" (MTAN), CVPR 2019 (arXiv:1803.10704)::

        w_t(k) = T * exp(r_t(k-1) / temperature) / sum_j exp(r_j(k-1) / temperature)
        r_t(k-1) = L_t(k-1) / L_t(k-2)

    The paper's ``L_t(k)`` is task t's average loss over *epoch* k, and ``w_t(1) = w_t(2) = 1``.
    A weighting only sees steps, so here ``k`` counts *windows* of ``window`` consecutive steps:

    * the losses of each completed window are averaged, and the last two window means are kept;
    * the weights used during window k are computed from windows k-1 and k-2, and stay constant
      within the window; during the first two windows every weight is 1;
    * ``window = 1`` (the default) is the step-wise variant: step k uses ``L(k-1) / L(k-2)`` of the
      two previous steps; ``window`` = the number of batches per epoch recovers the paper exactly
      (when the epoch length divides evenly), and the count runs on across epochs.

    A task whose previous window mean is 0 gets ratio 1. The weights are detached and sum to T.
    ``temperature`` (> 0, default 2.0 as in the paper) and ``window`` (an integer >= 1) are
    searchable. The step count is kept in the module's state (``state_dict``).
    """

    label = "DWA"
    searchable = ("temperature", "window")

    def __init__(self, tasks, temperature: float = 2.0, window: int = 1):
        super().__init__(tasks)
        self.temperature = check_number(self.label, "temperature", temperature, low=0, low_open=True)
        self.window = check_number(self.label, "window", window, low=1, integer=True)
        count = len(self.tasks)
        self.steps = 0
        self.register_buffer("window_sum", torch.zeros(count))
        self.register_buffer("window_means", torch.zeros(2, count))  # [window k-2, window k-1]
        self.register_buffer("current_weights", torch.ones(count))

    def forward(self, losses, context=None):
        weights = self.current_weights.to(device=losses.device, dtype=losses.dtype, copy=True)
        closing = (self.steps + 1) % self.window == 0
        buffer = self.window_sum
        code = _ARRAY_CODES.get(buffer.dtype) if buffer.device.type == "cpu" else None
        if closing and code is not None and losses.shape == buffer.shape:
            self.steps += 1
            self._close_window_floats(losses, code)
            return weights
        with torch.no_grad():
            self.window_sum += losses.detach().to(self.window_sum)
            self.steps += 1
            if closing:  # as tensor ops: on an accelerator, no host synchronisation
                mean = self.window_sum / self.window
                self.window_means.copy_(torch.stack([self.window_means[1], mean]))
                self.window_sum.zero_()
                if self.steps // self.window >= 2:
                    self.current_weights.copy_(self._weights(*self.window_means))
        return weights

    def _close_window_floats(self, losses: torch.Tensor, code: str) -> None:
        """The last step of a window with the buffers on the CPU: the arithmetic of the tensor
        path on Python floats, rounded to the buffers' dtype where the tensor path stores (a dozen
        ``torch`` calls on T-element tensors cost more than the arithmetic, about 0.1 ms a step).
        The buffers are read and written once each and end with the same values."""
        buffers = self._buffers
        window_sum, window_means, current = buffers["window_sum"], buffers["window_means"], buffers["current_weights"]
        previous = window_sum.tolist()
        # window_sum + losses, each loss first cast to the buffers' dtype, as `+=` does.
        sums = array(code, map(operator.add, previous, array(code, losses.detach().tolist())))
        newer = window_means.tolist()[1]
        mean = array(code, [v / self.window for v in sums]).tolist()
        if any(previous):
            window_sum.zero_()
        if self.steps // self.window < 2:
            window_means.copy_(torch.tensor([newer, mean], dtype=torch.float64))
            return
        info = torch.finfo(window_means.dtype)
        # ratio = newer / older (1 where older <= 0), logits clamped to the dtype's range, then
        # T * softmax, as in _weights.
        logits = [
            min((n / max(o, info.tiny) if o > 0 else 1.0) / self.temperature, info.max) for o, n in zip(newer, mean)
        ]
        top = max(logits)
        exps = [math.exp(v - top) for v in logits]
        total = sum(exps)
        count = len(exps)
        flat = torch.tensor(newer + mean + [count * v / total for v in exps], dtype=torch.float64)
        window_means.copy_(flat[: 2 * count].view(2, count))
        current.copy_(flat[2 * count :])

    def _weights(self, older: torch.Tensor, newer: torch.Tensor) -> torch.Tensor:
        ratio = torch.where(older > 0, newer / older.clamp(min=torch.finfo(older.dtype).tiny), torch.ones_like(newer))
        logits = (ratio / self.temperature).clamp(max=torch.finfo(ratio.dtype).max)
        return ratio.shape[0] * torch.softmax(logits, dim=0)

    def get_extra_state(self) -> Any:
        return {"steps": self.steps}

    def set_extra_state(self, state: Any) -> None:
        self.steps = int(state["steps"])
