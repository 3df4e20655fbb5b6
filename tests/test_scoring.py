"""Delta-MTL, Pareto dominance, knee point and cost, against hand-computed values."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mtlsearch.errors import ConfigError
from mtlsearch.scoring import (
    count_macs,
    count_params,
    delta_mtl,
    hypervolume_2d,
    knee_point,
    mean_interval,
    pareto_front,
    t_quantile_975,
)


def test_delta_mtl_higher_and_lower_is_better():
    directions = {"cls": {"accuracy": "max"}, "reg": {"mae": "min"}}
    baselines = {"cls": {"accuracy": 0.80}, "reg": {"mae": 2.0}}
    metrics = {"cls": {"accuracy": 0.88}, "reg": {"mae": 2.5}}
    # cls: +(0.88-0.80)/0.80*100 = +10; reg: -(2.5-2.0)/2.0*100 = -25; mean = -7.5
    assert delta_mtl(metrics, baselines, directions) == pytest.approx(-7.5)


def test_delta_mtl_averages_metrics_within_a_task_first():
    directions = {"a": {"accuracy": "max", "cross_entropy": "min"}, "b": {"mse": "min"}}
    baselines = {"a": {"accuracy": 0.5, "cross_entropy": 1.0}, "b": {"mse": 4.0}}
    metrics = {"a": {"accuracy": 0.6, "cross_entropy": 0.9}, "b": {"mse": 5.0}}
    # a: (+20 + +10) / 2 = +15; b: -25; Delta = (15 - 25) / 2 = -5
    assert delta_mtl(metrics, baselines, directions) == pytest.approx(-5.0)


def test_delta_mtl_every_metric_equally_differs_in_sign_from_per_task():
    # a: +20 (accuracy) and +10 (cross-entropy); b: -25 (mse)
    directions = {"a": {"accuracy": "max", "cross_entropy": "min"}, "b": {"mse": "min"}}
    baselines = {"a": {"accuracy": 0.5, "cross_entropy": 1.0}, "b": {"mse": 4.0}}
    metrics = {"a": {"accuracy": 0.6, "cross_entropy": 0.9}, "b": {"mse": 5.0}}
    # per metric: (20 + 10 - 25) / 3 = +5/3, while per task gives -5: the sign flips
    assert delta_mtl(metrics, baselines, directions, average="metric") == pytest.approx(5 / 3)
    assert delta_mtl(metrics, baselines, directions, average="task") == pytest.approx(-5.0)
    with pytest.raises(ValueError, match="average must be one of"):
        delta_mtl(metrics, baselines, directions, average="tasks")


def test_delta_mtl_of_the_baselines_is_zero():
    directions = {"a": {"accuracy": "max"}, "b": {"mae": "min"}}
    baselines = {"a": {"accuracy": 0.7}, "b": {"mae": 0.3}}
    assert delta_mtl(baselines, baselines, directions) == 0.0


def test_delta_mtl_zero_baseline_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"^baselines\.a\.mae: is 0; Delta-MTL divides by the baseline$"):
        delta_mtl({"a": {"mae": 1.0}}, {"a": {"mae": 0.0}}, {"a": {"mae": "min"}})


def test_pareto_front_on_hand_made_points():
    # maximise Delta, minimise params
    points = [(10.0, 500), (5.0, 100), (10.0, 400), (2.0, 100), (12.0, 900), (5.0, 100), (-1.0, 50)]
    front = pareto_front(points, ["maximize", "minimize"])
    # (10,500) is dominated by (10,400); (2,100) by (5,100); equal points (5,100) are both kept.
    assert front == [1, 2, 4, 5, 6]


def test_pareto_front_three_objectives_and_directions():
    points = [(1, 1, 1), (0, 0, 2), (2, 2, 0), (1, 1, 2)]
    assert pareto_front(points, ["minimize"] * 3) == [0, 1, 2]
    assert pareto_front(points, ["maximize"] * 3) == [2, 3]
    with pytest.raises(ValueError):
        pareto_front(points, ["up", "down", "minimize"])


def test_knee_point_is_closest_to_ideal_after_normalisation():
    # maximise Delta in [0, 10], minimise params in [100, 1000]
    points = [(10.0, 1000), (8.0, 200), (0.0, 100)]
    # normalised distances: (0, 1) -> 1; (0.2, 0.111) -> 0.229; (1, 0) -> 1
    assert knee_point(points, ["maximize", "minimize"]) == 1
    assert knee_point([(1.0, 5)], ["maximize", "minimize"]) == 0


def test_hypervolume_2d():
    # minimise both, reference (4, 4): boxes of (1,3), (2,2), (3,1) -> 3 + 2*1 + 1*1 = 6
    assert hypervolume_2d([(1, 3), (2, 2), (3, 1), (5, 0)], ["minimize", "minimize"], (4, 4)) == pytest.approx(6.0)
    # maximise the first: flip it
    assert hypervolume_2d([(-1, 3)], ["maximize", "minimize"], (-4, 4)) == pytest.approx(3.0)


def test_params_and_macs_of_a_known_network():
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 3))
    assert count_params(model) == 10 * 20 + 20 + 20 * 3 + 3
    assert count_macs(model, (10,)) == 10 * 20 + 20 * 3
    conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False))
    assert count_macs(conv, (1, 8, 8)) == 4 * 8 * 8 * 9
    assert model.training  # the count leaves the mode as it was
    assert torch.is_grad_enabled()


def test_mean_interval_against_hand_computed_values():
    # values 1, 2, 3: mean 2, std 1, half-width t(0.975, 2) * 1 / sqrt(3) = 4.303 / 1.7320508 = 2.48434
    out = mean_interval([1.0, 2.0, 3.0])
    assert out["mean"] == pytest.approx(2.0) and out["std"] == pytest.approx(1.0)
    assert out["low"] == pytest.approx(2.0 - 2.48434, abs=1e-4) and out["high"] == pytest.approx(2.0 + 2.48434, abs=1e-4)
    single = mean_interval([5.0])
    assert single["std"] == 0.0 and single["low"] is None and single["high"] is None
    assert t_quantile_975(1) == 12.706 and t_quantile_975(1000) == 1.960
