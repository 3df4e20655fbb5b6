"""The study-wide budget, outcome and requeue rules (search/budget.py) on in-memory studies:
which trials count, when the budget is met, which trial is surplus, how a trial is queued again,
and the line that ends a trial. Milliseconds each: no training, no files."""

from __future__ import annotations

import io
import json
import math

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from mtlsearch.search._budget import (
    TrialEnd,
    best_delta,
    budget_met,
    counts,
    finished_trials,
    requeue,
    surplus_reason,
)
from mtlsearch.search._progress import Progress

DIRECTIONS = ["maximize", "minimize"]  # delta_mtl, params: what mtlsearch studies optimise
DISTRIBUTIONS = {
    "family": CategoricalDistribution(["hard_sharing", "tree"]),
    "training.lr": FloatDistribution(1.0e-3, 1.0e-2, log=True),
}


def new_study() -> optuna.Study:
    return optuna.create_study(directions=DIRECTIONS)


def add(study: optuna.Study, state: TrialState, trial_params: dict | None = None, **user_attrs) -> int:
    """Add a finished trial in ``state`` with ``trial_params`` (Optuna parameters) and
    ``user_attrs`` (the trial record), and return its number."""
    params = trial_params or {"family": "tree", "training.lr": 0.003}
    values = [user_attrs.get("delta_mtl", 0.0), float(user_attrs.get("params", 1000))] if state == TrialState.COMPLETE else None
    study.add_trial(create_trial(state=state, values=values, params=params,
                                 distributions={k: DISTRIBUTIONS[k] for k in params}, user_attrs=user_attrs))
    return study.trials[-1].number


def added(study: optuna.Study, state: TrialState, **user_attrs) -> optuna.trial.FrozenTrial:
    """Add a finished trial like :func:`add` and return it."""
    number = add(study, state, **user_attrs)
    return study.trials[number]


def numbers(trials) -> list[int]:
    return [t.number for t in trials]


# -- which trials count ---------------------------------------------------------------------------


def test_complete_pruned_and_failed_trials_count():
    study = new_study()
    add(study, TrialState.COMPLETE)
    add(study, TrialState.PRUNED)
    add(study, TrialState.FAIL)
    assert numbers(finished_trials(study)) == [0, 1, 2]
    assert counts(study) == (3, 0, 0)


def test_running_and_waiting_trials_are_not_finished():
    study = new_study()
    add(study, TrialState.COMPLETE)
    study.ask()  # trial 1, RUNNING
    study.enqueue_trial({"family": "tree", "training.lr": 0.005})  # trial 2, WAITING
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING]
    assert numbers(finished_trials(study)) == [0]
    assert counts(study) == (1, 1, 1)


def test_a_failed_trial_that_a_later_trial_retries_does_not_count():
    study = new_study()
    add(study, TrialState.FAIL)
    add(study, TrialState.FAIL)
    add(study, TrialState.COMPLETE, retry_of=0)
    assert numbers(finished_trials(study)) == [1, 2]  # #1 failed too but nothing retries it
    assert counts(study) == (2, 0, 0)


def test_a_retry_that_is_still_queued_already_replaces_the_failed_trial():
    study = new_study()
    add(study, TrialState.FAIL)
    study.enqueue_trial({"family": "tree", "training.lr": 0.003}, user_attrs={"retry_of": 0})
    assert numbers(finished_trials(study)) == []
    assert counts(study) == (0, 0, 1)


def test_retry_of_only_discounts_a_failed_trial():
    study = new_study()
    add(study, TrialState.COMPLETE)
    add(study, TrialState.PRUNED)
    add(study, TrialState.COMPLETE, retry_of=0)
    add(study, TrialState.COMPLETE, retry_of=1)
    assert numbers(finished_trials(study)) == [0, 1, 2, 3]


def test_a_failed_trial_in_optunas_retry_history_does_not_count():
    study = new_study()
    add(study, TrialState.FAIL)
    study.add_trial(create_trial(state=TrialState.COMPLETE, values=[1.0, 10.0], system_attrs={"retry_history": [0]}))
    assert numbers(finished_trials(study)) == [1]


def test_a_surplus_trial_does_not_count():
    study = new_study()
    add(study, TrialState.COMPLETE)
    add(study, TrialState.PRUNED, surplus=True, pruned_reason="not run")
    add(study, TrialState.COMPLETE)
    assert numbers(finished_trials(study)) == [0, 2]
    assert counts(study) == (2, 0, 0)


# -- when the budget is met ------------------------------------------------------------------------


@pytest.mark.parametrize(("finished", "running", "waiting", "n_trials", "met"), [
    (3, 0, 0, 3, True),   # exactly the budget
    (4, 0, 0, 3, True),   # over it (a budget lowered on resume)
    (2, 0, 0, 3, False),  # one trial still to start
    (2, 1, 0, 3, True),   # the last one runs elsewhere: start nothing more
    (0, 3, 0, 3, True),
    (1, 1, 0, 3, False),
    (3, 0, 1, 3, False),  # a retry waits: it must run although the count is reached
    (2, 1, 1, 3, False),
])
def test_budget_met(finished, running, waiting, n_trials, met):
    assert budget_met(finished, running, waiting, n_trials) is met


def test_budget_met_on_a_study_with_running_and_waiting_trials():
    study = new_study()
    add(study, TrialState.COMPLETE)
    add(study, TrialState.COMPLETE)
    assert not budget_met(*counts(study), 3)
    study.ask()  # the third trial runs in another worker
    assert counts(study) == (2, 1, 0)
    assert budget_met(*counts(study), 3)
    # a failed trial is queued again: its retry must run, the budget is not met
    failed = added(study, TrialState.FAIL)
    requeue(study, failed)
    assert counts(study) == (2, 1, 1)
    assert not budget_met(*counts(study), 3)


# -- surplus trials --------------------------------------------------------------------------------


BUDGET_MET = "not run: the study-wide budget of {} trials was met by other workers"


def test_surplus_reason_when_the_trials_before_make_up_the_budget():
    study = new_study()
    add(study, TrialState.COMPLETE)
    add(study, TrialState.PRUNED)
    add(study, TrialState.FAIL)
    last = study.ask().number
    assert last == 3
    assert surplus_reason(study, last, 3) == BUDGET_MET.format(3)
    assert surplus_reason(study, last, 2) == BUDGET_MET.format(2)
    assert surplus_reason(study, last, 4) is None


def test_no_surplus_reason_while_the_budget_is_not_met_before_the_trial():
    study = new_study()
    add(study, TrialState.COMPLETE)
    add(study, TrialState.COMPLETE)
    add(study, TrialState.COMPLETE)  # a later trial: only those before #1 matter for #1
    assert surplus_reason(study, 1, 2) is None
    assert surplus_reason(study, 2, 2) == BUDGET_MET.format(2)
    assert surplus_reason(study, 0, 1) is None


def test_two_workers_start_the_last_trial_at_once_and_the_later_one_yields():
    study = new_study()
    add(study, TrialState.COMPLETE)
    add(study, TrialState.COMPLETE)
    first, second = study.ask().number, study.ask().number  # both RUNNING, budget 3
    assert surplus_reason(study, first, 3) is None
    assert surplus_reason(study, second, 3) == BUDGET_MET.format(3)


def test_retried_failures_and_earlier_surplus_trials_do_not_fill_the_budget():
    study = new_study()
    add(study, TrialState.FAIL)                                         # 0: retried by #1
    add(study, TrialState.COMPLETE, retry_of=0)                         # 1
    add(study, TrialState.PRUNED, surplus=True, pruned_reason="not run")  # 2
    add(study, TrialState.COMPLETE)                                     # 3
    assert surplus_reason(study, 4, 3) is None  # only #1 and #3 count
    assert surplus_reason(study, 4, 2) == BUDGET_MET.format(2)


def test_a_waiting_trial_before_counts_toward_the_budget():
    study = new_study()
    add(study, TrialState.COMPLETE)
    study.enqueue_trial({"family": "tree", "training.lr": 0.003})  # 1: queued, will run
    assert surplus_reason(study, 2, 2) == BUDGET_MET.format(2)


# -- requeue ---------------------------------------------------------------------------------------


def test_requeue_copies_params_and_user_attrs_and_sets_retry_of():
    study = new_study()
    params = {"family": "hard_sharing", "training.lr": 0.0042}
    number = add(study, TrialState.FAIL, trial_params=params, run_id="0123456789abcdef", seed=7,
                 worker="host:1", fail_reason="worker died")
    requeue(study, study.trials[number])
    waiting = study.trials[-1]
    assert waiting.state == TrialState.WAITING and waiting.number == number + 1
    assert waiting.user_attrs == {"run_id": "0123456789abcdef", "seed": 7, "worker": "host:1",
                                  "fail_reason": "worker died", "retry_of": number}
    retry = study.ask(DISTRIBUTIONS)  # the queued retry runs first, with the stored parameters
    assert retry.number == waiting.number
    assert retry.params == params
    # the failed trial is now replaced by its retry
    assert numbers(finished_trials(study)) == []


def test_requeue_drops_the_given_keys():
    study = new_study()
    number = add(study, TrialState.FAIL, run_id="0123456789abcdef", seed=7, worker="host:1", fail_reason="interrupted")
    requeue(study, study.trials[number], drop=("worker", "fail_reason"))
    assert study.trials[-1].user_attrs == {"run_id": "0123456789abcdef", "seed": 7, "retry_of": number}


def test_requeue_of_a_retry_points_at_the_latest_trial():
    study = new_study()
    add(study, TrialState.FAIL, run_id="0123456789abcdef")
    add(study, TrialState.FAIL, run_id="0123456789abcdef", retry_of=0)
    requeue(study, study.trials[1])
    assert study.trials[-1].user_attrs == {"run_id": "0123456789abcdef", "retry_of": 1}


def test_requeue_queues_the_same_params_again_each_time():
    study = new_study()
    add(study, TrialState.FAIL)
    add(study, TrialState.FAIL)
    requeue(study, study.trials[0])
    requeue(study, study.trials[1])  # same params: still queued (no skip_if_exists)
    assert [t.state for t in study.trials[2:]] == [TrialState.WAITING, TrialState.WAITING]
    assert [t.user_attrs["retry_of"] for t in study.trials[2:]] == [0, 1]
    assert counts(study) == (0, 0, 2)


def test_requeue_leaves_the_original_trial_unchanged():
    study = new_study()
    number = add(study, TrialState.FAIL, seed=3)
    requeue(study, study.trials[number], drop=("seed",))
    assert study.trials[number].state == TrialState.FAIL
    assert study.trials[number].user_attrs == {"seed": 3}


# -- best Delta-MTL ----------------------------------------------------------------------------------


def test_best_delta_without_complete_trials_is_minus_infinity():
    study = new_study()
    assert best_delta(study) == -math.inf
    add(study, TrialState.PRUNED, delta_mtl=50.0)
    add(study, TrialState.FAIL, delta_mtl=60.0)
    study.ask().set_user_attr("delta_mtl", 70.0)
    assert best_delta(study) == -math.inf


def test_best_delta_is_the_highest_of_the_complete_trials():
    study = new_study()
    add(study, TrialState.COMPLETE, delta_mtl=-3.5)
    add(study, TrialState.COMPLETE, delta_mtl=2.25)
    add(study, TrialState.COMPLETE, delta_mtl=1.0)
    add(study, TrialState.PRUNED, delta_mtl=9.0)  # not complete: ignored
    assert best_delta(study) == 2.25


def test_best_delta_ignores_complete_trials_without_delta_mtl():
    study = new_study()
    add(study, TrialState.COMPLETE)
    assert best_delta(study) == -math.inf
    add(study, TrialState.COMPLETE, delta_mtl=-7.0)
    assert best_delta(study) == -7.0


# -- the line that ends a trial ------------------------------------------------------------------


def architecture(family: str = "tree", weighting: str = "equal") -> dict:
    return {"family": family, "weighting": {"name": weighting}, "description": "..."}


def capture(mode: str = "normal") -> tuple[Progress, io.StringIO]:
    out = io.StringIO()
    return Progress(mode, stream=out), out


def test_trial_end_line_of_a_complete_trial():
    study = new_study()
    progress, out = capture()
    end = TrialEnd(study, 8, progress)
    number = add(study, TrialState.COMPLETE, architecture=architecture("tree", "equal"), delta_mtl=1.234,
                 params=12345, train_seconds=3.21)
    end(study.trials[number], 1)
    assert out.getvalue() == "trial #0 tree/equal: Delta-MTL +1.23%  params 12,345  (3.2s)  best Delta-MTL +1.23%  (1/8 finished)\n"


def test_trial_end_keeps_the_best_delta_so_far():
    study = new_study()
    add(study, TrialState.COMPLETE, architecture=architecture(), delta_mtl=5.0, params=1)
    progress, out = capture()
    end = TrialEnd(study, 4, progress)  # the study's best so far: +5.00%
    worse = add(study, TrialState.COMPLETE, architecture=architecture("hard_sharing", "pcgrad"), delta_mtl=-0.5,
                params=1234567, train_seconds=12.06)
    end(study.trials[worse], 2)
    better = add(study, TrialState.COMPLETE, architecture=architecture("single_task", "static"), delta_mtl=7.125,
                 params=900, train_seconds=0.04)
    end(study.trials[better], 3)
    assert out.getvalue().splitlines() == [
        "trial #1 hard_sharing/pcgrad: Delta-MTL -0.50%  params 1,234,567  (12.1s)  best Delta-MTL +5.00%  (2/4 finished)",
        "trial #2 single_task/static: Delta-MTL +7.12%  params 900  (0.0s)  best Delta-MTL +7.12%  (3/4 finished)",
    ]
    assert end.best == 7.125


def test_trial_end_line_of_a_complete_trial_without_architecture_or_costs():
    study = new_study()
    progress, out = capture()
    end = TrialEnd(study, 2, progress)
    end(added(study, TrialState.COMPLETE, delta_mtl=0.0), 1)
    assert out.getvalue() == "trial #0 ?/?: Delta-MTL +0.00%  params 0  (0.0s)  best Delta-MTL +0.00%  (1/2 finished)\n"


def test_trial_end_line_of_a_failed_trial():
    study = new_study()
    add(study, TrialState.COMPLETE, architecture=architecture(), delta_mtl=2.0, params=10)
    progress, out = capture()
    end = TrialEnd(study, 5, progress)
    reason = "loss of task `left` is nan in epoch 1 (lr = 1e+30, optimizer = sgd)"
    end(added(study, TrialState.FAIL, fail_reason=reason), 2)
    end(added(study, TrialState.FAIL), 3)
    assert out.getvalue().splitlines() == [f"trial #1 FAIL: {reason}  (2/5 finished)", "trial #2 FAIL: see the log above  (3/5 finished)"]
    assert end.best == 2.0  # a failed trial does not change the best


def test_trial_end_line_of_a_pruned_trial():
    study = new_study()
    progress, out = capture()
    end = TrialEnd(study, 3, progress)
    number = add(study, TrialState.PRUNED, pruned_reason="infeasible: params 5000 > max_params 4000", delta_mtl=9.0)
    end(study.trials[number], 1)
    assert out.getvalue() == "trial #0 PRUNED: infeasible: params 5000 > max_params 4000  (1/3 finished)\n"
    assert end.best == -math.inf  # a pruned trial's Delta-MTL is not a result


def test_trial_end_shows_the_studys_best_over_every_worker():
    study = new_study()
    progress, out = capture()
    end = TrialEnd(study, 4, progress)  # this worker starts with no trial
    add(study, TrialState.COMPLETE, architecture=architecture(), delta_mtl=1.66, params=1)  # another worker's
    mine = add(study, TrialState.COMPLETE, architecture=architecture(), delta_mtl=0.97, params=1, train_seconds=1.0)
    end(study.trials[mine], 2)
    assert out.getvalue() == "trial #1 tree/equal: Delta-MTL +0.97%  params 1  (1.0s)  best Delta-MTL +1.66%  (2/4 finished)\n"


def test_trial_end_event_data_in_json_mode():
    study = new_study()
    progress, out = capture("json")
    end = TrialEnd(study, 4, progress)
    end(added(study, TrialState.PRUNED, pruned_reason="stopped early"), 1)
    end(added(study, TrialState.COMPLETE, architecture=architecture(), delta_mtl=1.5, params=10), 2)
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first == {"event": "trial", "trial": 0, "finished": 1, "target": 4, "state": "PRUNED", "values": None,
                     "delta_mtl": None, "best_delta_mtl": None, "fail_reason": None, "pruned_reason": "stopped early"}
    assert second == {"event": "trial", "trial": 1, "finished": 2, "target": 4, "state": "COMPLETE", "values": [1.5, 10.0],
                      "delta_mtl": 1.5, "best_delta_mtl": 1.5, "fail_reason": None, "pruned_reason": None}


def test_trial_end_in_quiet_mode_prints_nothing_but_tracks_the_best():
    study = new_study()
    out = io.StringIO()
    end = TrialEnd(study, 1, Progress("quiet", stream=out))
    end(added(study, TrialState.COMPLETE, architecture=architecture(), delta_mtl=3.0, params=10), 1)
    assert out.getvalue() == "" and end.best == 3.0
