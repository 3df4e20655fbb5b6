"""Dynamic Weight Average: weights from how fast each task's loss has been falling."""

from __future__ import annotations

import math
import operator
from array import array
from typing import Any, cast

import torch

from .base import Weighting, register
from .hyper import check_number

# Buffer dtypes whose rounding Python's ``array`` reproduces (the Python-float path of DWA).
_ARRAY_CODES = {torch.float32: "f", torch.float64: "d"}


@register("dwa")
class DWA(Weighting):
    """DWA: ``T * softmax(r / temperature)`` with ``r_t`` the ratio of task t's last two mean losses.

    DWA (Liu, Johns & Davison, 2019, arXiv:1803.10704). The mean losses are taken over windows of
    ``window`` steps; every weight is 1 during the first two windows. The weights are detached
    and sum to T.

    Args:
        temperature: softmax temperature, > 0 (default 2.0, the paper's; searchable).
        window: steps per window, an integer >= 1 (default 1: step-wise; searchable).

    Returns T weights. See docs/weighting.md#dwa.

    .. note::
        The paper averages over epochs; ``window`` = the number of batches per epoch recovers it.
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
        """The last step of a window with the buffers on the CPU: the tensor path's arithmetic on
        Python floats, with the same results (see docs/weighting.md#dwa)."""
        buffers = cast("dict[str, torch.Tensor]", self._buffers)  # all three registered in __init__
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
