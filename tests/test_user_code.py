"""User code and hand-edited files at the boundary (issue 17): a data factory's result is checked
before anything trains, its own exception is one line (``--debug`` shows the traceback), a stored
or exported space says which factory it imports, and an exported config's ``params`` and ``seed``
are checked. Each case also checks that nothing stored was lost or changed."""

from __future__ import annotations

import shutil
import subprocess
import sys

import optuna
import pytest
import yaml

import mtlsearch
from mtlsearch.cli import main
from mtlsearch.errors import ConfigError, UserCodeError
from mtlsearch.search._records import StudyRecord

MODULE = "user_data"

FACTORIES = '''
import sys

import torch

from mtlsearch.data import MTLData, TensorMTLDataset
from mtlsearch.tasks import TaskSpec

TASKS = [TaskSpec("a", "classification", num_classes=2), TaskSpec("b", "regression")]


def split(n, width=8, bad=None, at=0):
    x = torch.randn(n, width, generator=torch.Generator().manual_seed(n))
    b = x[:, 0].clone()
    if bad is not None:
        b[at] = bad
    return TensorMTLDataset(x, {"a": (x[:, 1] > 0).long(), "b": b})


def items(n, width=lambda i: 8, target=lambda i: torch.tensor(0.5)):
    return [(torch.zeros(width(i)), {"a": torch.tensor(i % 2), "b": target(i)}) for i in range(n)]


class Broken(torch.utils.data.Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        if i == 5:
            raise OSError("disk unplugged")
        return torch.zeros(8), {"a": torch.tensor(0), "b": torch.tensor(0.5)}


def good(seed=0):
    return MTLData(split(64), split(16), split(16), TASKS, info={"n": 64})


def raises(seed=0):
    raise ValueError("cannot read /data/train.csv:\\n  permission denied")


def exits(seed=0):
    sys.exit(0)


def interrupted(seed=0):
    raise KeyboardInterrupt


def ragged(seed=0):
    return MTLData(items(10, width=lambda i: 7 if i == 2 else 8), split(16), split(16), TASKS)


def ragged_targets(seed=0):
    target = lambda i: torch.tensor([0.5, 0.5]) if i == 3 else torch.tensor(0.5)
    return MTLData(items(10, target=target), split(16), split(16), TASKS)


def val_shape(seed=0):
    return MTLData(split(64), split(16, width=6), split(16), TASKS)


def short_targets(seed=0):
    train = split(64)
    train.targets["b"] = train.targets["b"][:10]
    return MTLData(train, split(16), split(16), TASKS)


def doubles(seed=0):
    train = split(64)
    train.inputs = train.inputs.double()
    return MTLData(train, split(16), split(16), TASKS)


def no_split(seed=0):
    return MTLData(None, split(16), split(16), TASKS)


def bare_items(seed=0):
    return MTLData([torch.zeros(8)] * 4, split(16), split(16), TASKS)


def broken_dataset(seed=0):
    return MTLData(Broken(), split(16), split(16), TASKS)


def empty_val(seed=0):
    return MTLData(split(64), [], split(16), TASKS)


def bad_info(seed=0):
    return MTLData(split(64), split(16), split(16), TASKS, info={"n": 64, "opened": object()})


def str_tasks(seed=0):
    return MTLData(split(64), split(16), split(16), ["a", "b"])


def nan_train(seed=0):
    return MTLData(split(64, bad=float("nan"), at=5), split(16), split(16), TASKS)


def inf_val(seed=0):
    return MTLData(split(64), split(16, bad=float("-inf"), at=2), split(16), TASKS)


def nan_test(seed=0):
    return MTLData(split(64), split(16), split(16, bad=float("nan"), at=3), TASKS)


def nan_inputs(seed=0):
    train = split(64)
    train.inputs[2, 4] = float("nan")
    return MTLData(train, split(16), split(16), TASKS)
'''

NOISY = 'import sys\nprint("user_data imported", file=sys.stderr)\n' + FACTORIES  # says when it is imported

RAISING = '''
def good(seed=0):
    raise ValueError("the data moved")
'''
NOTICE = "importing data factory `user_data:good` named by the {} (user code runs with your permissions)"


def space(factory: str, study: str = "uc") -> dict:
    return {
        "name": study,
        "data": {"factory": f"{MODULE}:{factory}", "seed": 0},
        "backbone": {"name": "mlp", "width": 8, "depth": 2},
        "search_space": {
            "families": ["hard_sharing"],
            "weightings": ["equal"],
            "training": {"epochs": 1, "batch_size": 32, "optimizer": "adam", "lr": 1.0e-3},
        },
        "objectives": ["delta_mtl", "params"],
        "run": {"study": study, "device": "cpu", "n_trials": 1},
    }


def write_space(tmp_path, factory: str) -> str:
    path = tmp_path / f"{factory}.yaml"
    path.write_text(yaml.safe_dump(space(factory)))
    return str(path)


def use_module(folder, source: str = FACTORIES) -> None:
    """Write ``user_data.py`` into ``folder`` and make it the one a fresh import finds."""
    (folder / f"{MODULE}.py").write_text(source)
    sys.modules.pop(MODULE, None)


@pytest.fixture
def factories(tmp_path, monkeypatch):
    use_module(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop(MODULE, None)


def studies(storage: str) -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]


def snapshot(storage: str, name: str) -> tuple:
    """What a study stores: its attributes and every trial's number, state, values, params and attributes."""
    study = optuna.load_study(study_name=name, storage=storage)
    trials = [(t.number, t.state, t.values, t.params, t.user_attrs) for t in study.trials]
    return study.user_attrs, trials


# -- the factory's result, checked at the boundary --------------------------------------------------

CHECKED = [
    ("raises", "data.factory: `user_data:raises` raised ValueError: cannot read /data/train.csv: permission denied"),
    ("exits", "data.factory: `user_data:exits` raised SystemExit(0); it must return or raise an exception, not end "
     "the program"),
    ("ragged", "data.train: factory `user_data:ragged` returned inputs of shape (7,) at item 2 and (8,) at item 0; "
     "every input of a split needs the same shape"),
    ("ragged_targets", "data.train: factory `user_data:ragged_targets` returned a target of shape (2,) for task `b` at "
     "item 3 and () at item 0; every target of a task needs the same shape"),
    ("val_shape", "data.val: factory `user_data:val_shape` returned inputs of shape (6,); the train split's are (8,), "
     "and every split needs the same input shape"),
    ("short_targets", "data.train: factory `user_data:short_targets` returned 10 targets for task `b` and 64 inputs; "
     "each task needs a tensor with one target per input"),
    ("doubles", "data.train: factory `user_data:doubles` returned inputs of dtype torch.float64; expected "
     "torch.float32 (the model's dtype)"),
    ("no_split", "data.train: factory `user_data:no_split` returned NoneType as the train split; expected a torch "
     "Dataset with a length, whose items are (inputs, {task: target})"),
    ("bare_items", "data.train: factory `user_data:bare_items` returned Tensor as item 0; expected a pair "
     "(inputs, {task: target})"),
    ("broken_dataset", "data.train: factory `user_data:broken_dataset`'s train split at item 5 raised OSError: "
     "disk unplugged"),
    ("empty_val", "data: factory `user_data:empty_val` returned an empty val split"),
    ("bad_info", "data.info.opened: factory `user_data:bad_info` returned a value that is not JSON-serialisable "
     "(Object of type object is not JSON serializable); info is stored with the study"),
    ("str_tasks", "data.tasks[0]: factory `user_data:str_tasks` returned str; expected mtlsearch.tasks.TaskSpec"),
    ("nan_train", "data.train: factory `user_data:nan_train` returned nan as the target of task `b` at item 5; "
     "targets must be finite (a NaN or infinite target makes the loss NaN)"),
    ("inf_val", "data.val: factory `user_data:inf_val` returned -inf as the target of task `b` at item 2; "
     "targets must be finite (a NaN or infinite target makes the loss NaN)"),
    ("nan_test", "data.test: factory `user_data:nan_test` returned nan as the target of task `b` at item 3; "
     "targets must be finite (a NaN or infinite target makes the loss NaN)"),
    ("nan_inputs", "data.train: factory `user_data:nan_inputs` returned nan in the inputs at item 2; "
     "inputs must be finite"),
]


@pytest.mark.parametrize("factory, message", CHECKED, ids=[c[0] for c in CHECKED])
def test_what_a_factory_returns_is_checked_at_the_boundary(factories, factory, message):
    with pytest.raises(ConfigError) as caught:
        mtlsearch.load(space(factory))
    assert str(caught.value) == message


@pytest.mark.parametrize("factory, cause", [("raises", ValueError), ("exits", SystemExit), ("broken_dataset", OSError)])
def test_a_factorys_own_exception_is_the_cause(factories, factory, cause):
    with pytest.raises(UserCodeError) as caught:
        mtlsearch.load(space(factory))
    assert type(caught.value.__cause__) is cause


def test_the_good_factory_loads(factories):
    problem, _ = mtlsearch.load(space("good"))
    assert problem.input_shape == (8,) and problem.task_names == ["a", "b"]


def test_an_exception_while_importing_the_module_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "broken_module.py").write_text("RATE = 1 / 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    doc = space("good")
    doc["data"]["factory"] = "broken_module:make"
    with pytest.raises(UserCodeError) as caught:
        mtlsearch.load(doc)
    assert str(caught.value) == (
        "data.factory: importing module `broken_module` raised ZeroDivisionError: division by zero"
    )
    assert isinstance(caught.value.__cause__, ZeroDivisionError)
    sys.modules.pop("broken_module", None)


# -- the command line: one line, --debug, Ctrl-C -----------------------------------------------------


def test_a_factory_exception_is_one_line_and_stores_nothing(factories, tmp_path, capsys):
    storage = f"sqlite:///{tmp_path}/uc.db"
    assert main(["run", write_space(tmp_path, "raises"), "--storage", storage]) == 2
    assert capsys.readouterr().err == (
        "mtlsearch run: error: data.factory: `user_data:raises` raised ValueError: cannot read /data/train.csv: "
        "permission denied (run with --debug for the traceback)\n"
    )
    assert studies(storage) == []


@pytest.mark.parametrize("where", ["before the verb", "after the verb"])
def test_debug_shows_the_factorys_traceback(factories, tmp_path, capsys, where):
    storage = f"sqlite:///{tmp_path}/uc.db"
    argv = ["run", write_space(tmp_path, "raises"), "--storage", storage]
    assert main(["--debug", *argv] if where == "before the verb" else [*argv, "--debug"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "Traceback (most recent call last):"
    assert '    raise ValueError("cannot read /data/train.csv:\\n  permission denied")' in err
    assert err[-1] == (
        "mtlsearch run: error: data.factory: `user_data:raises` raised ValueError: cannot read /data/train.csv: "
        "permission denied"
    )
    assert studies(storage) == []


def test_a_factory_calling_exit_is_an_error_not_a_quiet_success(factories, tmp_path, capsys):
    storage = f"sqlite:///{tmp_path}/uc.db"
    assert main(["run", write_space(tmp_path, "exits"), "--storage", storage]) == 2
    assert capsys.readouterr().err == (
        "mtlsearch run: error: data.factory: `user_data:exits` raised SystemExit(0); it must return or raise an "
        "exception, not end the program (run with --debug for the traceback)\n"
    )
    assert studies(storage) == []


def test_ctrl_c_in_a_factory_stays_a_ctrl_c(factories, tmp_path, capsys):
    storage = f"sqlite:///{tmp_path}/uc.db"
    assert main(["run", write_space(tmp_path, "interrupted"), "--storage", storage]) == 130
    assert "mtlsearch run: interrupted; continue with `mtlsearch resume" in capsys.readouterr().err
    assert studies(storage) == []


def test_nan_targets_are_named_before_training_not_blamed_on_the_learning_rate(factories, tmp_path, capsys):
    storage = f"sqlite:///{tmp_path}/uc.db"
    assert main(["run", write_space(tmp_path, "nan_train"), "--storage", storage]) == 2
    err = capsys.readouterr().err
    assert err == (
        "mtlsearch run: error: data.train: factory `user_data:nan_train` returned nan as the target of task `b` at "
        "item 5; targets must be finite (a NaN or infinite target makes the loss NaN)\n"
    )
    assert "lr" not in err and studies(storage) == []


# -- hand-edited exports ---------------------------------------------------------------------------


def write_export(folder, factory: str = "good", **changes) -> str:
    """An exported config as `mtlsearch export` writes it (without provenance), with ``changes``."""
    doc = space(factory)
    del doc["run"]
    config = {
        "format": "mtlsearch-export/1",
        "space": doc,
        "params": {"family": "hard_sharing", "weighting": "equal"},
        "seed": 0,
        **changes,
    }
    path = folder / f"export-{factory}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


TRAIN = ["--seeds", "1", "--no-baselines", "--device", "cpu"]
BAD_EXPORTS = [
    ({"params": ["family", "hard_sharing"]},
     "params: expected a mapping of names to values (as `mtlsearch export` writes it), found "
     "`['family', 'hard_sharing']`"),
    ({"params": {"family": {"name": "hard_sharing"}, "weighting": "equal"}},
     "params.family: expected a string, a number, a boolean or null, found `{'name': 'hard_sharing'}`"),
    ({"seed": -5}, "seed: expected an integer in [0, 4294967295], found -5"),
    ({"seed": "abc"}, "seed: expected an integer in [0, 4294967295], found `abc`"),
    ({"seed": 10**23}, "seed: expected an integer in [0, 4294967295], found 100000000000000000000000"),
    ({"seed": True}, "seed: expected an integer in [0, 4294967295], found True"),
]


@pytest.mark.parametrize("changes, message", BAD_EXPORTS, ids=["params-list", "params-dict", "seed-negative",
                                                              "seed-text", "seed-huge", "seed-bool"])
def test_a_hand_edited_export_is_refused_by_train_and_build_model(factories, tmp_path, capsys, changes, message):
    path = write_export(tmp_path, **changes)
    before = open(path, "rb").read()
    assert main(["train", path, *TRAIN]) == 2
    assert capsys.readouterr().err == f"mtlsearch train: error: {message}\n"
    with pytest.raises(ConfigError) as caught:
        mtlsearch.load_exported(path)
    assert str(caught.value) == message
    assert open(path, "rb").read() == before


@pytest.mark.parametrize("flags, message", [
    (["--seed", "100000000000000000000000"],
     "--seed: expected an integer in [0, 4294967295], found 100000000000000000000000"),
    (["--seed", "-1"], "--seed: expected an integer in [0, 4294967295], found -1"),
    (["--seed", "4294967295", "--seeds", "2"],
     "--seeds: seeds 4294967295..4294967296 go past the largest seed, 4294967295"),
])
def test_train_seed_flags_are_checked(factories, tmp_path, capsys, flags, message):
    path = write_export(tmp_path)
    assert main(["train", path, "--no-baselines", "--device", "cpu", *flags]) == 2
    assert capsys.readouterr().err == f"mtlsearch train: error: {message}\n"


def test_a_seed_that_is_no_integer_is_a_usage_error(factories, tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["train", write_export(tmp_path), "--seed", "1e23"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "mtlsearch train: error: argument --seed: invalid int value: '1e23'" in err and "Traceback" not in err


def test_nan_only_in_the_test_split_is_reported_before_train_trains(factories, tmp_path, capsys):
    path = write_export(tmp_path, "nan_test")
    assert main(["train", path, *TRAIN]) == 2
    assert capsys.readouterr().err.splitlines() == [
        NOTICE.format("exported config").replace("good", "nan_test"),
        "mtlsearch train: error: data.test: factory `user_data:nan_test` returned nan as the target of task `b` at "
        "item 3; targets must be finite (a NaN or infinite target makes the loss NaN)",
    ]


def test_train_names_the_exported_factory_before_importing_it(tmp_path, monkeypatch, capsys):
    use_module(tmp_path, NOISY)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = write_export(tmp_path)
    try:
        assert main(["train", path, *TRAIN]) == 0
        err = capsys.readouterr().err.splitlines()
        assert err[:2] == [NOTICE.format("exported config"), "user_data imported"]
        sys.modules.pop(MODULE)
        assert main(["train", path, *TRAIN, "--quiet"]) == 0
        assert capsys.readouterr().err == "user_data imported\n"  # --quiet: no notice
    finally:
        sys.modules.pop(MODULE, None)


# -- a stored study names user code --------------------------------------------------------------------


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A finished one-trial study whose stored space names `user_data:good` (the sqlite file)."""
    folder = tmp_path_factory.mktemp("stored")
    use_module(folder)
    sys.path.insert(0, str(folder))
    try:
        storage = f"sqlite:///{folder}/st.db"
        assert main(["run", write_space(folder, "good"), "--storage", storage, "--quiet"]) == 0
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop(MODULE, None)
    return folder / "st.db"


@pytest.fixture
def copy_of(stored, tmp_path, monkeypatch):
    """A copy of the stored study, and a fresh `user_data` module (its source given) to import."""

    def make(source: str = FACTORIES) -> str:
        shutil.copy(stored, tmp_path / "st.db")
        use_module(tmp_path, source)
        monkeypatch.syspath_prepend(str(tmp_path))
        return f"sqlite:///{tmp_path}/st.db"

    yield make
    sys.modules.pop(MODULE, None)


@pytest.mark.slow
def test_resume_names_the_stored_factory_before_importing_it(copy_of, capsys):
    storage = copy_of(NOISY)
    before = snapshot(storage, "uc")[1]
    assert main(["resume", "uc", "--storage", storage]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err.index(NOTICE.format("stored space")) + 1 == err.index("user_data imported")
    assert snapshot(storage, "uc")[1] == before
    sys.modules.pop(MODULE)
    assert main(["resume", "uc", "--storage", storage, "--quiet"]) == 0
    assert NOTICE.format("stored space") not in capsys.readouterr().err  # --quiet: no notice


@pytest.mark.slow
def test_export_with_a_stored_signature_imports_nothing(copy_of, tmp_path, capsys):
    storage = copy_of(NOISY)
    assert main(["export", "uc", "--storage", storage, "-o", str(tmp_path / "best.yaml")]) == 0
    assert "user_data" not in capsys.readouterr().err and MODULE not in sys.modules


@pytest.mark.slow
@pytest.mark.parametrize("verb", ["resume", "worker", "export"])
def test_a_failing_stored_factory_is_one_line_and_changes_nothing(copy_of, tmp_path, capsys, verb):
    storage = copy_of(RAISING)
    study = optuna.load_study(study_name="uc", storage=storage)
    if verb == "worker":  # a budget left to work on
        study.set_user_attr(StudyRecord.key("run"), {**study.user_attrs[StudyRecord.key("run")], "n_trials": 2})
    if verb == "export":  # a study without the data signature: export loads the data
        study.set_user_attr(StudyRecord.key("signature"), None)
    before = snapshot(storage, "uc")
    out = tmp_path / "best.yaml"
    argv = ["-o", str(out)] if verb == "export" else []
    assert main([verb, "uc", "--storage", storage, *argv]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-2:] == [
        NOTICE.format("stored space"),
        f"mtlsearch {verb}: error: data.factory: `user_data:good` raised ValueError: the data moved "
        "(run with --debug for the traceback)",
    ]
    assert snapshot(storage, "uc") == before and not out.exists()


# -- in a real process: exit code, one line, no traceback ------------------------------------------


def mtlsearch_process(folder, *args: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(folder), "PATH": "/usr/bin:/bin", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "mtlsearch", *args], capture_output=True, text=True, env=env,
                          cwd=folder, timeout=120)


@pytest.mark.slow
@pytest.mark.process
def test_a_factory_calling_exit_ends_the_process_with_an_error(factories, tmp_path):
    storage = f"sqlite:///{tmp_path}/uc.db"
    done = mtlsearch_process(tmp_path, "run", write_space(tmp_path, "exits"), "--storage", storage)
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        "mtlsearch run: error: data.factory: `user_data:exits` raised SystemExit(0); it must return or raise an "
        "exception, not end the program (run with --debug for the traceback)"
    ]
    assert studies(storage) == []


@pytest.mark.slow
@pytest.mark.process
def test_a_hand_edited_export_ends_the_process_in_one_line(factories, tmp_path):
    path = write_export(tmp_path, params=[1, 2])
    before = open(path, "rb").read()
    done = mtlsearch_process(tmp_path, "train", path)
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        "mtlsearch train: error: params: expected a mapping of names to values (as `mtlsearch export` writes it), "
        "found `[1, 2]`"
    ]
    assert open(path, "rb").read() == before
