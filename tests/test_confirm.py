"""The confirmation stage (`run.confirm: {top, seeds}`): the best candidates of the front train
more seeds after the budget; report and export use the pooled, confirmed values."""

from __future__ import annotations

import io

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

import mtlsearch
from mtlsearch.config import RunConfig
from mtlsearch.errors import ConfigError
from mtlsearch.search import _confirm, results
from mtlsearch.search._budget import finished_trials


def trial(key, delta, params, state=TrialState.COMPLETE, **attrs):
    return create_trial(
        state=state,
        values=[delta, 100] if state == TrialState.COMPLETE else None,
        params={"family": params},
        distributions={"family": CategoricalDistribution(["a", "b", "c"])},
        user_attrs={"candidate": key, "delta_mtl": delta, "params": 100, "macs": 1, "architecture": {"family": params}, **attrs},
    )


@pytest.fixture
def study():
    s = optuna.create_study(directions=["maximize", "minimize"])
    s.add_trial(trial("a", 5.0, "a"))
    s.add_trial(trial("b", 9.0, "b"))
    s.add_trial(trial("c", 7.0, "c"))
    return s


def test_the_best_candidates_are_chosen_once_and_queued_with_their_parameters(study):
    # same cost: the front is the best Delta-MTL alone; widen it with two cost levels
    study.add_trial(trial("d", 1.0, "a"))
    out = io.StringIO()
    assert _confirm.queue(study, top=1, seeds=2, progress=mtlsearch.Progress("normal", out)) == 2
    assert "confirming the 1 best candidates (#1) on 2 more seed(s) each: 2 trial(s)" in out.getvalue()
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.system_attrs["fixed_params"] for t in waiting] == [{"family": "b"}] * 2
    assert [t.user_attrs["confirm_of"] for t in waiting] == [1, 1]
    assert study.user_attrs["mtlsearch.confirm"] == {"top": 1, "seeds": 2, "chosen": [1]}
    assert _confirm.queue(study, top=1, seeds=2, progress=mtlsearch.Progress("quiet")) == 0  # nothing twice
    assert _confirm.pending(study) == 2


def test_a_resumed_confirmation_keeps_its_candidates_and_queues_only_what_is_missing(study):
    study.set_user_attr("mtlsearch.confirm", {"top": 1, "seeds": 2, "chosen": [2]})  # chosen earlier
    study.add_trial(trial("c", 3.0, "c", confirm_of=2))  # one seed already confirmed
    assert _confirm.plan(study, top=1, seeds=2) == {2: 1}


def test_confirmation_trials_do_not_count_toward_the_budget(study):
    study.add_trial(trial("b", 1.0, "b", confirm_of=1))
    assert [t.number for t in finished_trials(study)] == [0, 1, 2]


def test_pick_and_report_use_confirmed_pooled_values(study):
    # b was lucky: its confirmation seeds score -3 and -3, pooled (9 - 3 - 3) / 3 = 1
    study.add_trial(trial("b", -3.0, "b", confirm_of=1))
    study.add_trial(trial("b", -3.0, "b", confirm_of=1))
    (b,) = [p for p in results.pool(results.complete_trials(study)) if p.trial.number == 1]
    assert b.confirmed and b.delta_mtl == pytest.approx(1.0)
    assert results.pick(study, "delta").number == 1  # the only confirmed candidate, though c has 7 on one seed
    study.set_user_attr("mtlsearch.confirm", {"top": 1, "seeds": 2, "chosen": [1]})
    report = results.report(study)
    rows = {r["trial"]: r for r in report["front"]}
    assert rows[2]["confirmed"] is False and rows[2]["delta_mtl"] == 7.0
    text = results.format_report(report)
    assert "#2 *" in text and "* not confirmed: one trial's seed(s) only" in text
    assert "confirmed candidates (validation, mean ± std over seeds):\n  #1 b/?: Delta-MTL +1.00 ± 6.93 over 3 seeds" in text


@pytest.mark.parametrize(
    ("confirm", "message"),
    [
        ({"top": 0, "seeds": 2}, "run.confirm.top: expected an integer >= 1, found 0"),
        ({"top": 2}, "run.confirm.seeds: required key is missing"),
        ({"top": 2, "seeds": 500}, "run.confirm.seeds: expected at most 100, found 500"),
        ({"top": 2, "seed": 3}, "run.confirm.seed: unknown key"),
        ("yes", "run.confirm: expected a mapping"),
    ],
)
def test_bad_confirm_settings_are_named(confirm, message):
    with pytest.raises(ConfigError) as info:
        RunConfig(confirm=confirm)
    assert str(info.value).startswith(message)


@pytest.mark.slow
def test_a_study_confirms_its_best_candidates_and_resume_finishes_the_stage(tmp_path, monkeypatch, capsys):
    import copy

    import yaml

    from conftest import TINY_SPACE
    from mtlsearch.cli import main

    monkeypatch.chdir(tmp_path)
    space = copy.deepcopy(TINY_SPACE)
    space["search_space"]["families"] = ["hard_sharing", "single_task"]
    del space["search_space"]["tree"]
    space["run"].update(n_trials=3, sampler="random", confirm={"top": 2, "seeds": 2})
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    storage = f"sqlite:///{tmp_path}/c.db"
    assert main(["run", "space.yaml", "--storage", storage]) == 0
    printed = capsys.readouterr().err
    assert "confirming the " in printed and "on 2 more seed(s) each" in printed
    assert "confirming #" in printed
    study = optuna.load_study(study_name="tiny", storage=storage)
    record = study.user_attrs["mtlsearch.confirm"]
    confirm = [t for t in study.trials if "confirm_of" in t.user_attrs]
    assert len(confirm) == 2 * len(record["chosen"]) and all(t.state == TrialState.COMPLETE for t in confirm)
    assert len(finished_trials(study)) == 3  # the budget is the search's alone
    for first in record["chosen"]:
        copies = [t for t in confirm if t.user_attrs["confirm_of"] == first]
        assert {t.params["family"] for t in copies} == {study.trials[first].params["family"]}
        assert len({t.user_attrs["seed"] for t in copies} | {study.trials[first].user_attrs["seed"]}) == 3
        (pooled,) = [p for p in results.pool(results.complete_trials(study)) if p.trial.number == first]
        assert pooled.confirmed and len(pooled.runs) >= 3
        own = [study.trials[n].user_attrs["delta_mtl"] for n in pooled.trials]
        assert pooled.delta_mtl == pytest.approx(sum(own) / len(own))  # the mean of every seed's value

    # an interrupted stage: the stored choice names a candidate with no confirmation yet; resume
    # finishes the stage on the stored choice and queues only what is missing
    other = next(t.number for t in study.trials[:3] if t.number not in record["chosen"])
    study.set_user_attr("mtlsearch.confirm", {**record, "chosen": [*record["chosen"], other]})
    assert main(["resume", "tiny", "--storage", storage, "--quiet"]) == 0
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert study.user_attrs["mtlsearch.confirm"]["chosen"] == [*record["chosen"], other]
    done = [t for t in study.trials if "confirm_of" in t.user_attrs]
    assert len(done) == 2 * (len(record["chosen"]) + 1) and [t.user_attrs["confirm_of"] for t in done[-2:]] == [other] * 2
    assert len(finished_trials(study)) == 3
    assert main(["export", "tiny", "--storage", storage, "-o", "best.yaml"]) == 0
    exported = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert exported["provenance"]["trial"] in record["chosen"]


@pytest.mark.slow
@pytest.mark.process
def test_workers_search_then_the_driver_confirms(tmp_path):
    import subprocess
    import sys

    from conftest import write_process_space

    space = write_process_space(tmp_path, "cw", n_train=128, n_trials=4, sampler="random", confirm={"top": 1, "seeds": 2})
    storage = f"sqlite:///{tmp_path}/cw.db"
    done = subprocess.run(
        [sys.executable, "-m", "mtlsearch", "run", space, "--storage", storage, "--workers", "2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    study = optuna.load_study(study_name="cw", storage=storage)
    (first,) = study.user_attrs["mtlsearch.confirm"]["chosen"]
    confirm = [t for t in study.trials if "confirm_of" in t.user_attrs]
    assert [t.user_attrs["confirm_of"] for t in confirm] == [first, first]
    assert all(t.state == TrialState.COMPLETE for t in confirm)
    assert len(finished_trials(study)) == 4 and "Traceback" not in done.stderr
