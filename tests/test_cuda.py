"""On a CUDA device (skipped elsewhere; run on a GPU machine): every aggregator keeps its input's
device and agrees with its float64 CPU result, and real training runs there end to end, with a
loss weighting, an aggregator and the GREAT strategy."""

from __future__ import annotations

import pytest
import torch
from method_helpers import rand

import mtlsearch
from mtlsearch.config import RunConfig
from mtlsearch.weighting import AGGREGATORS

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.mark.parametrize("name", AGGREGATORS.names())
def test_every_aggregator_stays_on_the_device_and_agrees_with_float64(name):
    g = rand(4, 50, 3)
    g[1] = -0.7 * g[0] + 0.1 * g[1]  # a conflict
    torch.manual_seed(0)
    out = AGGREGATORS.get(name)()(g.float().cuda())
    torch.manual_seed(0)
    reference = AGGREGATORS.get(name)()(g)
    assert out.device.type == "cuda" and out.dtype == torch.float32
    if name == "graddrop":  # draws its random signs on the input's device: CUDA's stream is not the CPU's
        return
    assert torch.allclose(out.cpu().double(), reference, atol=1e-4, rtol=1e-4), (out, reference)


@pytest.mark.slow
@pytest.mark.parametrize(("weighting", "strategy"), [("uncertainty", "none"), ("upgrad", "great"), ("famo", "great")])
def test_a_study_trains_on_cuda(tiny_space, tmp_path, weighting, strategy):
    tiny_space["search_space"].update(families=["hard_sharing"], weightings=[weighting], strategies=[strategy])
    del tiny_space["search_space"]["tree"]
    problem, _ = mtlsearch.load(tiny_space)
    run = RunConfig(study="cuda", storage=f"sqlite:///{tmp_path}/s.db", n_trials=1, seed=0, device="cuda")
    study = mtlsearch.run_search(problem, run)
    (trial,) = study.trials
    assert trial.state.name == "COMPLETE", trial.user_attrs.get("fail_reason")
