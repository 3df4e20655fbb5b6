"""Helpers shared by the tests of weightings and aggregators: seeded matrices, the degenerate
gradient matrices every aggregator must survive, and a small float64 two-task network."""

from __future__ import annotations

import torch
from torch import nn

from mtlsearch.weighting import StepContext

F64 = torch.float64


def rand(rows: int, cols: int, seed: int, dtype=F64) -> torch.Tensor:
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def close(a: torch.Tensor, b, tol: float = 1e-12) -> bool:
    return torch.allclose(a, torch.as_tensor(b, dtype=a.dtype), rtol=tol, atol=tol)


def degenerate(dtype, seed: int = 10) -> dict[str, torch.Tensor]:
    """Opposite, zero, equal and tiny rows: matrices where a solver divides by zero if it can."""
    v = rand(1, 6, seed, dtype)[0]
    zero = torch.zeros(6, dtype=dtype)
    return {
        "opposite": torch.stack([v, -v]),
        "opposite T=3": torch.stack([v, -v, v]),
        "zero row": torch.stack([v, zero]),
        "zero row T=3": torch.stack([zero, v, -0.5 * v]),
        "all zero": torch.zeros(3, 6, dtype=dtype),
        "equal": torch.stack([v, v]),
        "tiny": 1e-30 * torch.stack([v, -v + 1e-3]) if dtype == F64 else 1e-15 * torch.stack([v, -v + 1e-3]),
    }


class TwoHeads(nn.Module):
    """A shared linear layer and one linear head per task (float64)."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.shared = nn.Linear(3, 4).double()
        self.heads = nn.ModuleList([nn.Linear(4, 1).double() for _ in range(2)])

    def losses(self, x, ys):
        h = torch.tanh(self.shared(x))
        return torch.stack([((head(h).squeeze(-1) - y) ** 2).mean() for head, y in zip(self.heads, ys)])

    def context(self, shared=True):
        per_task = {t: list(self.shared.parameters()) + list(h.parameters()) for t, h in zip("ab", self.heads)}
        return StepContext(per_task, list(self.shared.parameters()) if shared else [])


def check_resume_equals_uninterrupted(
    candidate, folder, *, epochs=3, stop_after=2, seed=5, training=None, strategy=None
):
    """Train ``candidate`` straight through; train it again, stopped after ``stop_after`` epochs
    with per-epoch checkpoints in ``folder``; continue from them in a model initialised otherwise.
    Assert both end with the same weights, and return the straight model and the checkpoint store.
    Every run gets a fresh weighting, schedule and strategy (``strategy()`` when given, e.g. one
    given its teachers, else the candidate's)."""
    from mtlsearch.checkpoints import CheckpointStore
    from mtlsearch.training import train

    class Stop(Exception):
        pass

    def stop(end):
        if end.epoch == stop_after:
            raise Stop

    settings = {**candidate.training, "epochs": epochs, **(training or {})}

    def run(model, **kwargs):
        return train(
            model, candidate.tasks, candidate.new_weighting(), candidate.problem.data.train, settings,
            torch.device("cpu"), seed=seed, strategy=strategy() if strategy else candidate.new_strategy(),
            schedule=candidate.new_schedule(), **kwargs,
        )  # fmt: skip

    straight = candidate.build_model(seed=seed)
    run(straight)
    store = CheckpointStore(folder)
    try:
        run(candidate.build_model(seed=seed), on_epoch=stop, checkpoints=store)
    except Stop:
        pass
    else:
        raise AssertionError(f"training was not stopped after epoch {stop_after}")
    resumed = candidate.build_model(seed=seed + 94)
    assert run(resumed, checkpoints=store).resumed_from == stop_after
    for key, value in straight.state_dict().items():
        assert torch.allclose(value, resumed.state_dict()[key], atol=1e-6), key
    return straight, store
