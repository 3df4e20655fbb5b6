"""CGC (Tang et al., RecSys 2020): the single-level form of PLE. With one-block experts (the split
at the last block) it is exactly PLE's last extraction layer: same outputs from the same weights."""

from __future__ import annotations

import re

import pytest
import torch

import mtlsearch


@pytest.fixture
def problem(tiny_space):
    tiny_space["search_space"].update(families=["cgc", "ple"], cgc={"shared_experts": [1, 2], "task_experts": [1]})
    del tiny_space["search_space"]["tree"]
    return mtlsearch.load(tiny_space)[0]


def candidate(problem, family, split, shared=2, own=1):
    return problem.replay(
        {
            "family": family,
            f"{family}.shared_experts": shared,
            f"{family}.task_experts": own,
            f"{family}.split": split,
            "weighting": "equal",
            "training.lr": 3e-3,
        }
    )


def test_cgc_with_one_block_experts_is_ples_last_extraction_layer(problem):
    last = problem.backbone.block_names[-1]
    cgc = candidate(problem, "cgc", last).build_model(0)
    ple = candidate(problem, "ple", last).build_model(1)
    own = {  # PLE name -> CGC name
        rf"layers\.{last}\.shared_experts\.(\d+)\.": rf"shared_experts.\1.{last}.",
        rf"layers\.{last}\.task_experts\.(\w+)\.(\d+)\.": rf"task_experts.\1.\2.{last}.",
        rf"layers\.{last}\.task_gates\.": "gates.",
    }
    mapped = {}
    for name, value in ple.state_dict().items():
        for pattern, repl in own.items():
            name = re.sub(pattern, repl, name)
        mapped[name] = value
    assert set(mapped) == set(cgc.state_dict())
    cgc.load_state_dict(mapped)
    x = problem.data.val.inputs[:16]
    cgc.eval(), ple.eval()
    out_c, out_p = cgc(x), ple(x)
    for task in out_p:
        assert torch.allclose(out_c[task], out_p[task], atol=1e-6)


def test_cgc_experts_are_towers_and_describe_says_so(problem):
    first = problem.backbone.block_names[0]
    c = candidate(problem, "cgc", first, shared=1)
    model = c.build_model(0)
    assert len(model.shared_experts) == 1 and set(model.shared_experts[0]) == set(problem.backbone.block_names)
    assert c.describe().splitlines() == [
        "shared bottom: none",
        "experts: 1 shared + 1 per-task towers over block0..block2, gated per task from the input",
    ]
