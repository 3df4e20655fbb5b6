"""What a person sees in a terminal: the trial progress bar on a TTY (plain lines elsewhere), the
report table, and `--quiet` printing the result alone."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from mtlsearch.search._progress import Progress
from mtlsearch.search.results import format_table

from conftest import write_process_space


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def events(progress: Progress) -> None:
    progress.event("study", "study `s`: 0 finished trials, target 2", study="s", finished=0, target=2)
    progress.event("epoch", "  trial #0 [tree] epoch 1/1 loss 1.0 [/x", transient=True)
    progress.event("trial", "trial #0 tree/equal: Delta-MTL +1.00%  (1/2 finished)", finished=1, target=2)
    progress.event("trial", "trial #1 tree/equal: Delta-MTL +2.00%  (2/2 finished)", finished=2, target=2)
    progress.event("done", "the study has 2 finished trials (target 2)", finished=2)


def test_a_terminal_gets_a_progress_bar_with_elapsed_time_and_eta():
    out = Terminal()
    events(Progress("normal", stream=out))
    text = out.getvalue()
    assert "2/2" in text and "ETA" in text and "0:00:0" in text  # finished/target, elapsed, remaining
    assert "trial #0 [tree] epoch 1/1 loss 1.0 [/x" in text  # the epoch caption, shown as text
    for line in ("trial #0 tree/equal: Delta-MTL +1.00%", "the study has 2 finished trials (target 2)"):
        assert line in text


def test_a_file_gets_plain_lines():
    out = io.StringIO()
    events(Progress("normal", stream=out))
    assert out.getvalue().splitlines() == [
        "study `s`: 0 finished trials, target 2",
        "  trial #0 [tree] epoch 1/1 loss 1.0 [/x",
        "trial #0 tree/equal: Delta-MTL +1.00%  (1/2 finished)",
        "trial #1 tree/equal: Delta-MTL +2.00%  (2/2 finished)",
        "the study has 2 finished trials (target 2)",
    ]


def test_table_is_plain_text_aligned_and_not_markup():
    text = format_table(
        [["#1 *", "tree", "[red]x[/red]", "1.00"], ["#22", "hard", "b", "-10.5"]], ["trial", "f", "w", "d"]
    )
    lines = text.splitlines()
    assert lines[0].split() == ["trial", "f", "w", "d"] and set(lines[1]) <= {"─", " "}
    assert "[red]x[/red]" in lines[2]  # a cell is text, not rich markup
    assert len({len(line) for line in lines}) == 1  # right-aligned columns: every line as wide
    assert "\x1b" not in text


@pytest.mark.slow
@pytest.mark.process
def test_quiet_prints_only_the_result(tmp_path):
    space = write_process_space(tmp_path, "quiet")
    env = {**os.environ, "PYTHONWARNINGS": "default", "OMP_NUM_THREADS": "1"}  # any warning would show
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mtlsearch",
            "run",
            space,
            "--quiet",
            "--n-trials",
            "1",
            "--storage",
            f"sqlite:///{tmp_path}/q.db",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no ExperimentalWarning, no Optuna log line, no progress
    assert result.stdout.startswith("study `quiet`: 1 complete")
