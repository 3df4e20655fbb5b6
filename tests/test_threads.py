"""Issue 12: torch threads per process (`run.threads`, `--threads`), one trial numbering on every
progress line, and the settings a resume keeps."""

from __future__ import annotations

import io
import json

import optuna
import pytest
import torch
import yaml

import mtlsearch
from mtlsearch.cli import main
from mtlsearch.config import RunConfig
from mtlsearch.errors import ConfigError
from mtlsearch.scoring import count_macs
from mtlsearch.search import Progress, resume, run_search
from mtlsearch.search._study import resumed_run
from mtlsearch.search._threads import macs_per_batch, threads_for
from mtlsearch.training import SMALL_MACS, auto_threads


@pytest.fixture(autouse=True)
def one_thread_after():
    yield
    torch.set_num_threads(1)  # conftest's setting: a test that asked for more must not slow the rest


def test_auto_gives_small_models_one_thread_and_shares_the_cores_out_for_big_ones():
    assert auto_threads(SMALL_MACS - 1, workers=1, cores=16) == 1
    assert auto_threads(SMALL_MACS - 1, workers=4, cores=16) == 1
    assert auto_threads(SMALL_MACS, workers=1, cores=16) == 16
    assert auto_threads(SMALL_MACS, workers=4, cores=16) == 4
    assert auto_threads(10 * SMALL_MACS, workers=3, cores=2) == 1  # never below one


def test_the_rule_reads_the_single_task_networks_per_batch(tiny_problem):
    per_sample = sum(count_macs(tiny_problem.single_task_model(t, 0), tiny_problem.input_shape) for t in tiny_problem.tasks)
    assert macs_per_batch(tiny_problem) == per_sample * 64 > 0
    assert threads_for(tiny_problem, "auto") == 1  # the tiny MLP is small
    assert threads_for(tiny_problem, 3, workers=2) == 3  # a number is used as given


@pytest.mark.parametrize(
    "value, message",
    [
        (0, "run.threads: expected an integer >= 1, found 0"),
        ("two", "run.threads: expected `auto` or an integer >= 1, found `two`"),
        (True, "run.threads: expected `auto` or an integer >= 1, found True"),
        (1.5, "run.threads: expected `auto` or an integer >= 1, found 1.5"),
    ],
)
def test_bad_threads_are_refused_with_the_field_and_what_is_allowed(value, message):
    with pytest.raises(ConfigError) as err:
        RunConfig(threads=value)
    assert str(err.value) == message


@pytest.mark.parametrize("verb", ["run", "resume", "train"])
def test_bad_threads_flag_names_the_flag(verb, tmp_path, capsys, tiny_space):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(tiny_space))
    target = {"run": str(space), "resume": "tiny", "train": str(space)}[verb]
    assert main([verb, target, "--threads", "0"]) == 2
    err = capsys.readouterr().err
    assert "--threads: expected an integer >= 1, found 0" in err, err


def events(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_one_numbering_on_epoch_and_result_lines_across_a_resume(tmp_path, tiny_space):
    """Every line names a trial by its number in the study (#N, as report and export --trial);
    the result line adds the budget's counter (k/N finished), which a resume carries on."""
    tiny_space["search_space"]["training"]["epochs"] = 2
    problem, run = mtlsearch.load(tiny_space)
    run = run.replace(storage=f"sqlite:///{tmp_path}/s.db", n_trials=2, threads=1)
    first = io.StringIO()
    run_search(problem, run, Progress("json", stream=first))
    second = io.StringIO()
    resume("tiny", run.storage, n_trials=3, progress=Progress("json", stream=second))
    seen = events(first) + events(second)
    trials = [e for e in seen if e["event"] == "trial"]
    assert [(e["trial"], e["finished"]) for e in trials] == [(0, 1), (1, 2), (2, 3)]
    epochs = [e for e in seen if e["event"] == "epoch"]
    assert {e["trial"] for e in epochs} == {0, 1, 2}
    start = next(e for e in seen if e["event"] == "study")
    assert start["threads"] == 1
    assert len(optuna.load_study(study_name="tiny", storage=run.storage).trials) == 3


def test_the_lines_a_user_reads_use_the_same_number(tmp_path, tiny_space, capsys):
    tiny_space["search_space"]["training"]["epochs"] = 2
    tiny_space["run"]["n_trials"] = 1
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(tiny_space))
    assert main(["run", str(space), "--storage", f"sqlite:///{tmp_path}/s.db", "--threads", "1"]) == 0
    err = capsys.readouterr().err
    assert "  trial #0 [" in err and "epoch 1/2 loss" in err
    assert any(line.startswith("trial #0 ") and line.endswith("(1/1 finished)") for line in err.splitlines()), err
    assert "1 torch thread(s)" in err


def test_a_resume_keeps_the_stored_workers_and_threads(tmp_path, tiny_space):
    problem, run = mtlsearch.load(tiny_space)
    run = run.replace(storage=f"sqlite:///{tmp_path}/s.db", n_trials=1, threads=1)
    study = run_search(problem, run)
    study.set_user_attr("mtlsearch.run", {**study.user_attrs["mtlsearch.run"], "workers": 3, "threads": 2})
    kept = resumed_run(study, run.storage)
    assert (kept.workers, kept.threads) == (3, 2)
    assert resumed_run(study, run.storage, workers=1, threads="auto").workers == 1


def test_train_takes_threads(tmp_path, capsys):
    from test_first_use import write_export

    assert main(["train", write_export(tmp_path), "--seeds", "1", "--device", "cpu", "--threads", "auto",
                 "--no-baselines", "--quiet"]) == 0
    assert torch.get_num_threads() == 1  # auto, for the tiny MLP
    assert "left.accuracy" in capsys.readouterr().out


def test_a_worker_takes_its_flag_over_the_stored_threads(tmp_path, tiny_space):
    from mtlsearch.search._optuna_backend import join_study

    problem, run = mtlsearch.load(tiny_space)
    run = run.replace(storage=f"sqlite:///{tmp_path}/s.db", n_trials=1, threads=2)
    run_search(problem, run)  # the budget is met: a joining worker only sets up and leaves
    join_study("tiny", run.storage, device="cpu")
    assert torch.get_num_threads() == 2  # the study's run.threads
    join_study("tiny", run.storage, device="cpu", threads="auto")
    assert torch.get_num_threads() == 1  # `--threads auto`: the rule, for the tiny MLP
