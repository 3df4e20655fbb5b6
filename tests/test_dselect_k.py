"""DSelect-k (Hazimeh et al., NeurIPS 2021): the smooth-step and the selectors by hand, a gate that
becomes exactly sparse, and the family in a space."""

from __future__ import annotations

import pytest
import torch

import mtlsearch
from mtlsearch.errors import ConfigError
from mtlsearch.models.soft import DSelectGate, selector_weights, smooth_step

F64 = torch.float64


def test_smooth_step_by_hand():
    t = torch.tensor([-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 2.0], dtype=F64)
    # gamma = 1: -2 t^3 + 1.5 t + 0.5 inside [-0.5, 0.5]; -0.25 -> 0.03125 - 0.375 + 0.5 = 0.15625
    expected = torch.tensor([0.0, 0.0, 0.15625, 0.5, 0.84375, 1.0, 1.0], dtype=F64)
    assert torch.allclose(smooth_step(t, 1.0), expected, atol=1e-15)


def test_selector_weights_by_hand():
    # 4 experts, m = 2 bits; S(z) = [0.84375, 0] for z = [0.25, -1]: expert i = b0 + 2 b1 gets
    #   S0^b0 (1 - S0)^(1 - b0) * S1^b1 (1 - S1)^(1 - b1) = [0.15625, 0.84375, 0, 0]
    z = torch.tensor([0.25, -1.0], dtype=F64)
    assert torch.allclose(selector_weights(z, 4, 1.0), torch.tensor([0.15625, 0.84375, 0.0, 0.0], dtype=F64))
    # 3 experts: the 4th code is dropped and the rest renormalised; z = [0, 0] gives 1/4 each, so 1/3
    assert torch.allclose(selector_weights(torch.zeros(2, dtype=F64), 3, 1.0), torch.full((3,), 1 / 3, dtype=F64))


def test_gate_rows_sum_to_one_and_saturated_codes_select_exactly():
    torch.manual_seed(0)
    gate = DSelectGate((6,), experts=8, k=2).double()
    x = torch.randn(5, 6, dtype=F64)
    w = gate(x)
    assert w.shape == (5, 8) and torch.allclose(w.sum(1), torch.ones(5, dtype=F64))
    with torch.no_grad():  # saturated codes: selector 0 -> expert 5 (101), selector 1 -> expert 2 (010)
        gate.codes.weight.zero_()
        gate.codes.bias.copy_(torch.tensor([9.0, -9.0, 9.0, -9.0, 9.0, -9.0], dtype=F64))
        gate.mixture.weight.zero_()
        gate.mixture.bias.copy_(torch.tensor([0.0, 0.0], dtype=F64))
    w = gate(x)
    expected = torch.zeros(8, dtype=F64)
    expected[5] = expected[2] = 0.5
    assert torch.equal(w, expected.expand(5, 8))  # exactly sparse: 6 of 8 experts get 0


def test_the_family_samples_builds_and_checks_its_settings(tiny_space):
    tiny_space["search_space"].update(families=["dselect_k"], dselect_k={"experts": [3], "k": [2]})
    del tiny_space["search_space"]["tree"]
    problem, _ = mtlsearch.load(tiny_space)
    c = problem.replay(
        {"family": "dselect_k", "dselect_k.experts": 3, "dselect_k.k": 2, "dselect_k.split": "block1",
         "weighting": "equal", "training.lr": 3e-3}
    )
    model = c.build_model(0)
    assert len(model.experts) == 3 and model.gates["left"].bits == 2
    out = model(problem.data.val.inputs[:4])
    assert out["left"].shape == (4, 10)
    assert c.describe().splitlines()[-1] == "experts: 3 towers over block1..block2, each task's gate selects 2 of them (DSelect-k) from block0's output"
    tiny_space["search_space"]["dselect_k"] = {"gamma": 0}
    with pytest.raises(ConfigError, match=r"search_space\.dselect_k\.gamma: expected a number > 0, found 0"):
        mtlsearch.load(tiny_space)
