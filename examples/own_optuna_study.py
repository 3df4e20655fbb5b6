"""mtlsearch as a plugin: its objective inside an Optuna study you create and drive yourself.

    python examples/own_optuna_study.py
"""

from __future__ import annotations

from pathlib import Path

import optuna

import mtlsearch


def main() -> None:
    problem, _ = mtlsearch.load(Path(__file__).parents[1] / "search_spaces" / "multidigits.yaml")
    # directions and metric names from the space's objectives: [maximize delta_mtl, minimize params]
    study = problem.create_study(sampler=optuna.samplers.NSGAIISampler(seed=0, population_size=4))
    progress = mtlsearch.Progress("normal")
    mtlsearch.ensure_baselines(study, problem, seed=0, progress=progress)  # single-task baselines, stored with the study
    objective = mtlsearch.Objective(problem, seed=0, device="auto", progress=progress)
    study.optimize(objective, n_trials=6)  # a NaN loss fails its trial (fail_reason) and the study goes on
    for t in study.best_trials:
        print(f"trial #{t.number}: {t.params['family']:>12}  Delta-MTL {t.values[0]:+.2f}%  params {int(t.values[1]):,}")
    model = mtlsearch.build_model(problem, study.best_trials[0])  # the model of a trial, untrained
    print(type(model).__name__, sum(p.numel() for p in model.parameters()))


if __name__ == "__main__":
    main()
