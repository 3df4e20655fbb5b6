"""A data factory's module is found as `python -m` would find it: on the Python path, in the
current folder, or beside the space file; the error lists the folders searched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import mtlsearch
from mtlsearch.errors import ConfigError
from mtlsearch.problem import FACTORY_FOLDERS

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


@pytest.fixture
def clean_imports(monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr("mtlsearch.problem.FACTORY_FOLDERS", [])
    yield
    sys.modules.pop("custom_data", None)


def test_a_factory_beside_the_space_file_is_found_from_another_folder(tmp_path, monkeypatch, clean_imports):
    monkeypatch.chdir(tmp_path)
    sys.modules.pop("custom_data", None)
    problem, _ = mtlsearch.load(EXAMPLES / "custom_space.yaml")
    assert [t.name for t in problem.tasks] == ["positive", "energy"]
    assert mtlsearch.problem.FACTORY_FOLDERS == [str(EXAMPLES)]  # worker processes inherit it


def test_a_missing_factory_module_names_the_folders_searched(tmp_path, monkeypatch, clean_imports):
    monkeypatch.chdir(tmp_path)
    space = tmp_path / "space.yaml"
    space.write_text((EXAMPLES / "custom_space.yaml").read_text().replace("custom_data:", "my_missing_data:"))
    with pytest.raises(ConfigError) as info:
        mtlsearch.load(space)
    assert str(info.value) == (
        f"data.factory: cannot import module `my_missing_data`: no `my_missing_data.py` or `my_missing_data/` on "
        f"the Python path or in {tmp_path}; run from the folder that holds it, or add that folder to PYTHONPATH"
    )


@pytest.mark.slow
@pytest.mark.process
def test_the_readme_example_runs_from_the_examples_folder(tmp_path):
    # README: cd examples && mtlsearch run custom_space.yaml (a console script: the current folder
    # is not on its Python path)
    script = Path(sys.executable).parent / "mtlsearch"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [str(script), "run", "custom_space.yaml", "--n-trials", "1", "--storage", f"sqlite:///{tmp_path}/c.db",
         "--artifacts", str(tmp_path / "art"), "--quiet"],
        cwd=EXAMPLES, capture_output=True, text=True, timeout=300, env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "cannot import" not in done.stderr
    assert FACTORY_FOLDERS == []  # this process was not touched
