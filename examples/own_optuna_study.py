"""mtlsearch as a plugin: its objective inside an Optuna study you create and drive yourself.

    python examples/own_optuna_study.py
"""

from __future__ import annotations

from pathlib import Path

import optuna

import mtlsearch


def main() -> None:
    problem, _ = mtlsearch.load(Path(__file__).parents[1] / "search_spaces" / "multidigits.yaml")
    study = optuna.create_study(
        directions=problem.directions,  # from the space's objectives: [maximize, minimize]
        sampler=optuna.samplers.NSGAIISampler(seed=0, population_size=4),
    )
    objective = mtlsearch.Objective(problem, seed=0, device="auto", progress=mtlsearch.Progress("normal"))
    study.optimize(objective, n_trials=6, catch=(mtlsearch.NonFiniteLossError,))
    for t in study.best_trials:
        print(f"trial #{t.number}: {t.params['family']:>12}  Delta-MTL {t.values[0]:+.2f}%  params {int(t.values[1]):,}")
    model = mtlsearch.build_model(problem, study.best_trials[0])  # the model of a trial, untrained
    print(type(model).__name__, sum(p.numel() for p in model.parameters()))


if __name__ == "__main__":
    main()
