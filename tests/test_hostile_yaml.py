"""Hostile input and huge values end in one clear, one-line error within moments (issue 17, item 6).

Each case reproduces a report: an alias bomb, nesting hundreds deep, huge lists and sizes, quoted
numbers and control characters in names. The bounds live in :mod:`mtlsearch.limits` and can be
raised on purpose with ``MTLSEARCH_LIMITS``.
"""

from __future__ import annotations

import copy
import functools
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY_SPACE

import mtlsearch
from mtlsearch import ConfigError
from mtlsearch.config import SearchSpace, TrainingSpace, read_yaml
from mtlsearch.data import multidigits
from mtlsearch.limits import LIMITS

ROOT = Path(__file__).resolve().parents[1]
FAST = 5.0  # seconds: every refusal here takes milliseconds; the reports took 50-60 s or hung

SPACE = """\
name: hostile
data: {benchmark: multidigits, seed: 0, n_train: 64, n_val: 32, n_test: 32}
tasks: TASKS
backbone: {name: mlp, width: WIDTH, depth: DEPTH}
search_space:
  families: [hard_sharing]
  weightings: [equal]
  training: {epochs: EPOCHS, batch_size: 32}
objectives: OBJECTIVES
baselines: BASELINES
run: {study: hostile, seed: SEED, n_trials: 1, device: cpu}
"""
FIELDS = {
    "TASKS": "[left, right, sum]",
    "WIDTH": "8",
    "DEPTH": "2",
    "EPOCHS": "1",
    "OBJECTIVES": "[delta_mtl, params]",
    "BASELINES": "auto",
    "SEED": "0",
}


def bound_note(name: str) -> str:
    return f"(a bound against mistakes; set MTLSEARCH_LIMITS={name}=N to raise it on purpose)"


@pytest.fixture(autouse=True, scope="module")
def _digits_read_once():
    original = multidigits._load_digits
    multidigits._load_digits = functools.cache(original)
    multidigits._load_digits()  # importing scikit-learn takes seconds here; the timings are of the checks
    yield
    multidigits._load_digits = original


@pytest.fixture(autouse=True)
def _default_limits(monkeypatch):
    monkeypatch.delenv("MTLSEARCH_LIMITS", raising=False)


def write_space(tmp_path: Path, **fields: str) -> Path:
    """The small space above with some fields replaced by raw YAML text."""
    text = SPACE
    for key, value in {**FIELDS, **fields}.items():
        text = text.replace(key, value)
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def refusal(source: object) -> tuple[str, float]:
    """The message of the ConfigError that ``mtlsearch.load(source)`` raises, and the seconds it took."""
    start = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        mtlsearch.load(source)
    return str(err.value), time.perf_counter() - start


def variant(path: str, value: object) -> dict:
    """A copy of the tiny space with the value at dotted ``path`` replaced."""
    raw = copy.deepcopy(TINY_SPACE)
    *parents, last = path.split(".")
    node = raw
    for key in parents:
        node = node[key]
    node[last] = value
    return raw


def alias_bomb(levels: int = 9) -> str:
    """A flow list of nine-fold aliases: a few hundred bytes that stand for 9**levels values."""
    items = ["&a0 [" + ",".join(["lol"] * 9) + "]"]
    items += [f"&a{k} [" + ",".join([f"*a{k - 1}"] * 9) + "]" for k in range(1, levels)]
    return "[" + ",".join(items) + "]"


# ---------------------------------------------------------------------------------------------
# Alias bombs.


@pytest.mark.parametrize("field", ["WIDTH", "OBJECTIVES", "TASKS", "BASELINES", "SEED"])
def test_alias_bomb_is_refused_while_reading(tmp_path, field):
    path = write_space(tmp_path, **{field: alias_bomb()})
    assert path.stat().st_size < 800  # the report's bomb had 737 bytes
    message, seconds = refusal(path)
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "&a5" in text)
    column = path.read_text().splitlines()[line - 1].index("&a5") + 1
    assert message == (
        f"{path}: at line {line}, column {column}: more than 100000 values once aliases (*name) are expanded "
        + bound_note("yaml_values")
    )
    assert seconds < FAST


def test_alias_that_contains_itself_is_refused(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("x: &a [1, *a]\n")
    with pytest.raises(ConfigError) as err:
        read_yaml(path)
    assert str(err.value) == f"{path}: at line 1, column 11: alias *a stands for a value that contains it"


def test_anchors_within_the_bounds_still_work(tmp_path):
    path = tmp_path / "anchors.yaml"
    path.write_text(
        "lr: &lr {low: 1.0e-4, high: 1.0e-2, log: true}\nother: *lr\nbase: &b {x: 1}\nmerged: {<<: *b, y: 2}\n"
    )
    assert read_yaml(path) == {
        "lr": {"low": 1e-4, "high": 1e-2, "log": True},
        "other": {"low": 1e-4, "high": 1e-2, "log": True},
        "base": {"x": 1},
        "merged": {"x": 1, "y": 2},
    }


def test_a_shared_value_in_a_dict_prints_a_short_message():
    # The 704-byte variant printed a 351 MB error line: the message printed the whole value.
    bomb: list = ["lol"] * 9
    for _ in range(12):
        bomb = [bomb] * 9  # 9**13 values, shared, as YAML aliases build them
    message, seconds = refusal(variant("backbone.width", bomb))
    shown = "`[[[[[...], [...], [...], [...], [...], [...], [...], [...], [...]], [[...], [...` (9 entries)"
    assert message == f"backbone.width: expected an integer >= 1, found {shown}"
    assert seconds < FAST
    message, _ = refusal(variant("objectives", bomb))
    assert message == f"objectives[0]: expected a non-empty string, found {shown}"


# ---------------------------------------------------------------------------------------------
# Nesting and length.


def test_nesting_hundreds_deep_is_refused_without_recursion_error(tmp_path):
    path = write_space(tmp_path, WIDTH="[" * 490 + "]" * 490)
    message, seconds = refusal(path)
    assert message == f"{path}: at line 4, column 92: more than 64 lists and mappings inside one another " + bound_note(
        "nesting"
    )
    assert seconds < FAST


def test_nesting_through_aliases_counts_what_they_stand_for(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("a: &d " + "[" * 60 + "]" * 60 + "\nb: [[[[[*d]]]]]\n")
    with pytest.raises(ConfigError) as err:
        read_yaml(path)
    assert str(err.value) == (
        f"{path}: at line 2, column 9: more than 64 lists and mappings inside one another once aliases are expanded "
        + bound_note("nesting")
    )


def test_nesting_at_the_bound_is_read_and_the_bound_can_be_raised(tmp_path, monkeypatch):
    path = tmp_path / "deep.yaml"
    path.write_text("x: " + "[" * 63 + "]" * 63 + "\n")  # 64 with the top mapping
    assert read_yaml(path) is not None
    path.write_text("x: " + "[" * 80 + "]" * 80 + "\n")
    with pytest.raises(ConfigError):
        read_yaml(path)
    monkeypatch.setenv("MTLSEARCH_LIMITS", "nesting=100")
    assert read_yaml(path) is not None


def test_a_64_mb_file_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "big.yaml"
    with path.open("w") as f:
        f.write("objectives: [")
        f.write("params, " * (64 * 2**20 // 8))
        f.write("]\n")
    start = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        read_yaml(path)
    assert str(err.value) == f"{path}: a file of 67,108,879 bytes, more than 1048576 " + bound_note("file_bytes")
    assert time.perf_counter() - start < FAST


def test_a_long_list_in_a_file_is_refused_at_its_first_entry_past_the_bound(tmp_path):
    path = tmp_path / "long.yaml"
    path.write_text("objectives: [" + ", ".join(f"o{i}" for i in range(100_000)) + "]\n")
    with pytest.raises(ConfigError) as err:
        read_yaml(path)
    column = path.read_text().index("o10000,") + 1
    assert str(err.value) == (
        f"{path}: at line 1, column {column}: more than 10000 entries in one list or mapping "
        + bound_note("list_items")
    )


def test_a_long_mapping_in_a_file_is_refused(tmp_path):
    path = tmp_path / "wide.yaml"
    path.write_text("data:\n" + "".join(f"  k{i}: 1\n" for i in range(10_001)))
    with pytest.raises(ConfigError) as err:
        read_yaml(path)
    assert str(err.value) == (
        f"{path}: at line 10002, column 3: more than 10000 entries in one list or mapping " + bound_note("list_items")
    )


def test_100k_objectives_in_a_dict_are_refused_at_once():
    message, seconds = refusal(variant("objectives", [f"left.m{i}" for i in range(100_000)]))
    assert message == "objectives: expected at most 10000 entries, found 100,000 " + bound_note("list_items")
    assert seconds < FAST


def test_repeats_in_10k_names_are_found_in_linear_time():
    raw = {k: v for k, v in variant("objectives", [f"left.m{i}" for i in range(10_000)]).items() if k != "run"}
    start = time.perf_counter()
    assert len(SearchSpace.parse(raw).objectives) == 10_000
    raw["objectives"][-1] = "left.m9998"
    with pytest.raises(ConfigError) as err:
        SearchSpace.parse(raw)
    assert str(err.value) == "objectives[9999]: `left.m9998` is listed twice"
    assert time.perf_counter() - start < FAST


# ---------------------------------------------------------------------------------------------
# Huge values: each refused with its field, the value, the bound and how to raise it.

HUGE = [
    (
        "epochs",
        "search_space.training.epochs",
        10**9,
        "search_space.training.epochs: expected an integer in [1, 10000], found 1000000000 " + bound_note("epochs"),
    ),
    (
        "epochs-range",
        "search_space.training.epochs",
        {"low": 1, "high": 10**9},
        "search_space.training.epochs.high: expected an integer in [1, 10000], found 1000000000 "
        + bound_note("epochs"),
    ),
    (
        "epochs-choice",
        "search_space.training.epochs",
        [1, 10**9],
        "search_space.training.epochs[1]: expected an integer in [1, 10000], found 1000000000 " + bound_note("epochs"),
    ),
    (
        "depth",
        "backbone.depth",
        10**6,
        "backbone.depth: expected an integer in [1, 1000], found 1000000 " + bound_note("depth"),
    ),
    (
        "width",
        "backbone.width",
        10**8,
        "backbone.width: expected an integer in [1, 65536], found 100000000 " + bound_note("width"),
    ),
    (
        "channels",
        "backbone",
        {"name": "cnn", "channels": 100_000},
        "backbone.channels: expected an integer in [1, 65536], found 100000 " + bound_note("channels"),
    ),
    (
        "n-train",
        "data.n_train",
        10**9,
        "data.n_train: expected an integer in [1, 10000000], found 1000000000 " + bound_note("n_samples"),
    ),
    (
        "step",
        "search_space.training.lr",
        {"low": 0.001, "high": 0.01, "step": 1e-300},
        "search_space.training.lr.step: expected a step that cuts low..high into at most 1000000000 steps, "
        "found 1e-300, which makes 9e+297 " + bound_note("range_steps"),
    ),
    (
        "mmoe-input-dim",
        "data",
        {"benchmark": "mmoe_synthetic", "input_dim": 10**7},
        "data.input_dim: expected an integer in [2, 65536], found 10000000 " + bound_note("input_dim"),
    ),
    (
        "mmoe-num-sines",
        "data",
        {"benchmark": "mmoe_synthetic", "num_sines": 10**6},
        "data.num_sines: expected an integer in [0, 1000], found 1000000 " + bound_note("num_sines"),
    ),
    (
        "mmoe-n-val",
        "data",
        {"benchmark": "mmoe_synthetic", "n_val": 10**8},
        "data.n_val: expected an integer in [1, 10000000], found 100000000 " + bound_note("n_samples"),
    ),
    (
        "num-classes",
        "tasks",
        [{"name": "y", "type": "classification", "num_classes": 10**7}, "left"],
        "tasks[0].num_classes: expected an integer in [2, 1000000], found 10000000 " + bound_note("num_classes"),
    ),
    (
        "output-dim",
        "tasks",
        [{"name": "y", "type": "regression", "output_dim": 10**6}, "left"],
        "tasks[0].output_dim: expected an integer in [1, 65536], found 1000000 " + bound_note("output_dim"),
    ),
    (
        "routing-modules",
        "search_space",
        {"families": ["routing"], "routing": {"modules": 10**9}},
        "search_space.routing.modules: expected an integer in [1, 1000], found 1000000000 " + bound_note("modules"),
    ),
    (
        "workers",
        "run.workers",
        10**6,
        "run.workers: expected an integer in [1, 1024], found 1000000 " + bound_note("workers"),
    ),
    (
        "adashare-policy-epochs",
        "search_space",
        {"families": ["adashare_learned"], "adashare_learned": {"policy_epochs": 10**9}},
        "search_space.adashare_learned.policy_epochs: expected an integer in [1, 10000], found 1000000000 "
        + bound_note("epochs"),
    ),
]


@pytest.mark.parametrize("path, value, message", [c[1:] for c in HUGE], ids=[c[0] for c in HUGE])
def test_huge_value_is_refused_before_anything_is_allocated(path, value, message):
    found, seconds = refusal(variant(path, value))
    assert found == message
    assert seconds < FAST


@pytest.mark.parametrize(
    "text, message",
    [
        ("epochs: 1e9", "search_space.training.epochs: expected an integer >= 1, found 1000000000.0"),
        (
            "epochs: 1000000000",
            "search_space.training.epochs: expected an integer in [1, 10000], found 1000000000 " + bound_note("epochs"),
        ),
        ("depth: 1e6", "backbone.depth: expected an integer >= 1, found 1000000.0"),
        ("depth: 1000000", "backbone.depth: expected an integer in [1, 1000], found 1000000 " + bound_note("depth")),
        ("width: 1e8", "backbone.width: expected an integer >= 1, found 100000000.0"),
    ],
    ids=["epochs-1e9", "epochs-int", "depth-1e6", "depth-int", "width-1e8"],
)
def test_huge_values_in_a_file(tmp_path, text, message):
    key, value = text.split(": ")
    message_found, seconds = refusal(write_space(tmp_path, **{key.upper(): value}))
    assert message_found == message
    assert seconds < FAST


def test_an_integer_too_long_for_python_is_refused(tmp_path):
    path = write_space(tmp_path, SEED="1" * 5000)
    message, _ = refusal(path)
    assert message == f"{path}: at line 11, column 29: an integer of 5,000 digits, more than Python reads (4300)"


def test_a_bound_can_be_raised_on_purpose(monkeypatch):
    with pytest.raises(ConfigError) as err:
        TrainingSpace.parse({"epochs": 15_000}, "training")
    assert str(err.value) == "training.epochs: expected an integer in [1, 10000], found 15000 " + bound_note("epochs")
    monkeypatch.setenv("MTLSEARCH_LIMITS", "epochs=20000, width=131072")
    assert TrainingSpace.parse({"epochs": 15_000}, "training").epochs.default() == 15_000
    with pytest.raises(ConfigError) as err:
        TrainingSpace.parse({"epochs": {"low": 1, "high": 25_000}}, "training")
    assert str(err.value) == "training.epochs.high: expected an integer in [1, 20000], found 25000 " + bound_note(
        "epochs"
    )


@pytest.mark.parametrize(
    "setting, message",
    [
        (
            "epoch=20000",
            "MTLSEARCH_LIMITS: unknown bound `epoch`; choose one of: "
            + ", ".join(LIMITS)
            + " (did you mean `epochs`?)",
        ),
        (
            "epochs=lots",
            "MTLSEARCH_LIMITS: expected NAME=INTEGER >= 1 (e.g. MTLSEARCH_LIMITS=epochs=20000), found `epochs=lots`",
        ),
        ("epochs", "MTLSEARCH_LIMITS: expected NAME=INTEGER >= 1 (e.g. MTLSEARCH_LIMITS=epochs=20000), found `epochs`"),
        (
            "epochs=0",
            "MTLSEARCH_LIMITS: expected NAME=INTEGER >= 1 (e.g. MTLSEARCH_LIMITS=epochs=20000), found `epochs=0`",
        ),
    ],
)
def test_a_bad_limits_variable_is_named(monkeypatch, setting, message):
    monkeypatch.setenv("MTLSEARCH_LIMITS", setting)
    with pytest.raises(ConfigError) as err:
        TrainingSpace.parse({"epochs": 3}, "training")
    assert str(err.value) == message


def test_readme_lists_every_bound():
    rows = re.findall(r"^\| `(\w+)` \| (\d+) \| ", (ROOT / "README.md").read_text(), re.M)
    assert {name: int(value) for name, value in rows if name in LIMITS} == LIMITS
    assert [name for name, _ in rows if name in LIMITS] == list(LIMITS)


# ---------------------------------------------------------------------------------------------
# Quoted numbers.


@pytest.mark.parametrize(
    "path, value, message",
    [
        (
            "search_space.training.epochs",
            "1",
            'search_space.training.epochs: expected an integer >= 1, found the string "1"',
        ),
        ("run.seed", " 7 ", 'run.seed: expected an integer >= 0, found the string " 7 "'),
        ("backbone.width", "2.5e3", 'backbone.width: expected an integer >= 1, found the string "2.5e3"'),
        ("search_space.training.epochs", "one", "search_space.training.epochs: expected an integer >= 1, found `one`"),
    ],
)
def test_a_quoted_number_is_called_a_string(path, value, message):
    assert refusal(variant(path, value))[0] == message


def test_a_quoted_number_in_a_file_is_called_a_string(tmp_path):
    message, _ = refusal(write_space(tmp_path, EPOCHS='"1"'))
    assert message == 'search_space.training.epochs: expected an integer >= 1, found the string "1"'


def test_a_long_string_is_cut_with_its_length():
    message, _ = refusal(variant("search_space.training.optimizer", "x" * 10**6))
    assert message == (
        "search_space.training.optimizer: unknown optimizer `" + "x" * 77 + "...` (1,000,000 characters); "
        "choose one of: adam, adamw, sgd"
    )


# ---------------------------------------------------------------------------------------------
# Terminal and log injection: no control characters in names.

FORGED = "demo\n[trial 9] Delta-MTL +99.00%"
FORGED_SHOWN = "`demo\\n[trial 9] Delta-MTL +99.00%`"
NAMES = [
    (
        "study",
        "run.study",
        FORGED,
        "run.study: expected no control characters, found \\n in `demo\\n[trial 9] Delta-MTL +99.00%`",
    ),
    (
        "study-ansi",
        "run.study",
        "\x1b[2Jdemo",
        "run.study: expected no control characters, found \\x1b in `\\x1b[2Jdemo`",
    ),
    (
        "study-bidi",
        "run.study",
        "demo\u202eevil",
        "run.study: expected no control characters, found \\u202e in `demo\\u202eevil`",
    ),
    ("space-name", "name", "tiny\r", "name: expected no control characters, found \\r in `tiny\\r`"),
    (
        "task",
        "tasks",
        ["left", "right\x1b[1A"],
        "tasks[1]: expected no control characters, found \\x1b in `right\\x1b[1A`",
    ),
    (
        "task-spec",
        "tasks",
        [{"name": "y\n", "type": "regression"}, "left"],
        "tasks[0].name: expected no control characters, found \\n in `y\\n`",
    ),
    (
        "metric",
        "tasks",
        [{"name": "left", "metrics": ["accuracy\n"]}, "right"],
        "tasks[0].metrics[0]: expected no control characters, found \\n in `accuracy\\n`",
    ),
    (
        "family",
        "search_space.families",
        ["tree\n"],
        "search_space.families[0]: expected no control characters, found \\n in `tree\\n`",
    ),
    (
        "weighting",
        "search_space.weightings",
        ["equal\x07"],
        "search_space.weightings[0]: expected no control characters, found \\x07 in `equal\\x07`",
    ),
    (
        "objective",
        "objectives",
        ["params\n"],
        "objectives[0]: expected no control characters, found \\n in `params\\n`",
    ),
    (
        "backbone",
        "backbone.name",
        "mlp\x1b[0m",
        "backbone.name: expected no control characters, found \\x1b in `mlp\\x1b[0m`",
    ),
    (
        "benchmark",
        "data.benchmark",
        "multidigits\n",
        "data.benchmark: expected no control characters, found \\n in `multidigits\\n`",
    ),
    ("artifacts", "run.artifacts", "runs\n", "run.artifacts: expected no control characters, found \\n in `runs\\n`"),
    (
        "storage",
        "run.storage",
        "sqlite:///a\n.db",
        "run.storage: expected no control characters, found some in `sqlite:///a\\n.db`",
    ),
    (
        "long-study",
        "run.study",
        "s" * 300,
        "run.study: expected a name of at most 256 characters, found `"
        + "s" * 77
        + "...` (300 characters) "
        + bound_note("name_chars"),
    ),
]


@pytest.mark.parametrize("path, value, message", [c[1:] for c in NAMES], ids=[c[0] for c in NAMES])
def test_a_name_with_control_characters_is_refused(path, value, message):
    assert refusal(variant(path, value))[0] == message


def test_an_unknown_key_with_a_newline_stays_on_one_line():
    message, _ = refusal(variant("search_space.training", {"epochs\n[fake] line": 1}))
    assert message.startswith("search_space.training.epochs\\n[fake] line: unknown key; allowed keys are: epochs, ")
    assert "\n" not in message


def test_a_storage_password_is_not_shown_with_control_characters():
    message, _ = refusal(variant("run.storage", "postgresql://user:hunter2@host/db\n"))
    assert "hunter2" not in message and message.startswith("run.storage: expected no control characters")


# ---------------------------------------------------------------------------------------------
# Through the command line: exit code 2, one line, no traceback, in seconds.


def _cli(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "mtlsearch", *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    return done, time.perf_counter() - start


@pytest.mark.process
@pytest.mark.slow
@pytest.mark.parametrize(
    "fields, expected",
    [
        ({"WIDTH": alias_bomb()}, "more than 100000 values once aliases (*name) are expanded"),
        ({"WIDTH": "[" * 490 + "]" * 490}, "more than 64 lists and mappings inside one another"),
        ({"EPOCHS": "1000000000"}, "search_space.training.epochs: expected an integer in [1, 10000], found 1000000000"),
        ({"DEPTH": "1000000"}, "backbone.depth: expected an integer in [1, 1000], found 1000000"),
    ],
    ids=["alias-bomb", "nesting", "epochs", "depth"],
)
def test_cli_refuses_a_hostile_file_in_one_line(tmp_path, fields, expected):
    done, seconds = _cli("run", str(write_space(tmp_path, **fields)), "--storage", f"sqlite:///{tmp_path}/s.db")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("mtlsearch run: error: ")
    assert expected in done.stderr
    assert seconds < 60  # mostly importing torch on a busy machine; the reports took 50-60 s or hung


@pytest.mark.process
@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["report", FORGED],
            "mtlsearch report: error: STUDY: expected no control characters, found \\n in " + FORGED_SHOWN + "\n",
        ),
        (
            ["resume", "\x1b[2Jdemo"],
            "mtlsearch resume: error: STUDY: expected no control characters, found \\x1b in `\\x1b[2Jdemo`\n",
        ),
        (
            ["run", "SPACE", "--study", FORGED],
            "mtlsearch run: error: --study: expected no control characters, found \\n in " + FORGED_SHOWN + "\n",
        ),
        (
            ["export", "demo", "--family", "tree\n"],
            "mtlsearch export: error: --family: expected no control characters, found \\n in `tree\\n`\n",
        ),
    ],
    ids=["report", "resume", "run-study", "export-family"],
)
def test_cli_refuses_control_characters_in_names(tmp_path, args, message):
    args = [str(write_space(tmp_path)) if a == "SPACE" else a for a in args]
    done, _ = _cli(*args, "--storage", f"sqlite:///{tmp_path}/s.db")
    assert (done.returncode, done.stdout, done.stderr) == (2, "", message)
