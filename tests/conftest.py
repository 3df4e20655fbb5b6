"""Shared fixtures: a tiny, fast space on the built-in MultiDigits benchmark."""

from __future__ import annotations

import copy

import pytest

TINY_SPACE = {
    "name": "tiny",
    "data": {"benchmark": "multidigits", "seed": 0, "n_train": 256, "n_val": 64, "n_test": 64},
    "backbone": {"name": "mlp", "width": 24, "depth": 3},
    "search_space": {
        "families": ["single_task", "hard_sharing", "tree"],
        "tree": {"max_groups": 2},
        "weightings": ["equal", "static"],
        "training": {"epochs": 1, "batch_size": 64, "optimizer": "adam", "lr": {"low": 1.0e-3, "high": 1.0e-2, "log": True}},
    },
    "objectives": ["delta_mtl", "params"],
    "run": {"study": "tiny", "n_trials": 4, "seed": 0, "device": "cpu"},
}


@pytest.fixture
def tiny_space() -> dict:
    """A deep copy of :data:`TINY_SPACE` to mutate freely."""
    return copy.deepcopy(TINY_SPACE)


@pytest.fixture
def tiny_problem(tiny_space):
    import mtlsearch

    problem, _ = mtlsearch.load(tiny_space)
    return problem
