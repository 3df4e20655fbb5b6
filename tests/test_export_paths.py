"""`mtlsearch export` writes only where it may: parent folders are created, a folder or an existing
file is refused (unless --force), files are written atomically, and a missing weights artifact is
reported before anything is written."""

from __future__ import annotations

import shutil

import pytest
import yaml
from conftest import write_process_space

from mtlsearch.cli import main

pytestmark = pytest.mark.slow  # one real study for the module


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    space = write_process_space(tmp, "ex", n_train=128)
    storage = f"sqlite:///{tmp}/ex.db"
    assert main(["run", space, "--storage", storage, "--n-trials", "1", "--quiet", "--artifacts", str(tmp / "art")]) == 0
    return storage, tmp / "art"


def export(storage, *args):
    return main(["export", "ex", "--storage", storage, "--trial", "0", *args])


def test_missing_folders_are_created(study, tmp_path):
    storage, _ = study
    out, weights = tmp_path / "new" / "deeper" / "best.yaml", tmp_path / "w" / "best.pt"
    assert export(storage, "-o", str(out), "--weights", str(weights)) == 0
    assert yaml.safe_load(out.read_text())["format"] == "mtlsearch-export/1" and weights.stat().st_size > 0
    assert not list(out.parent.glob(".*.tmp")) and not list(weights.parent.glob(".*.tmp"))


def test_a_folder_or_an_existing_file_is_refused(study, tmp_path, capsys):
    storage, _ = study
    assert export(storage, "-o", str(tmp_path)) == 2
    assert capsys.readouterr().err.strip() == (
        f"mtlsearch export: error: --output: `{tmp_path}` is a folder; give a file name, e.g. {tmp_path / 'best.yaml'}"
    )
    keep = tmp_path / "notes.pt"
    keep.write_text("my own file")
    out = tmp_path / "b.yaml"
    assert export(storage, "-o", str(out), "--weights", str(keep)) == 2
    assert capsys.readouterr().err.strip() == f"mtlsearch export: error: --weights: `{keep}` exists; pass --force to replace it"
    assert keep.read_text() == "my own file" and not out.exists()  # nothing written
    assert export(storage, "-o", str(out), "--weights", str(keep), "--force") == 0
    assert keep.read_bytes() != b"my own file"
    assert export(storage, "-o", str(out), "--weights", str(out), "--force") == 2
    assert "--weights: names the same file as --output" in capsys.readouterr().err


def test_a_missing_weights_artifact_is_reported_before_writing(study, tmp_path, capsys):
    storage, artifacts = study
    moved = tmp_path / "moved"
    shutil.move(str(artifacts), moved)
    try:
        out = tmp_path / "b.yaml"
        assert export(storage, "-o", str(out), "--weights", str(tmp_path / "w.pt")) == 2
        err = capsys.readouterr().err
        assert "error: trial #0: its weights artifact " in err and f"is not in {artifacts} (moved or deleted)" in err
        assert not out.exists() and not (tmp_path / "w.pt").exists()
        assert export(storage, "-o", str(out)) == 0  # without weights the config still exports
    finally:
        shutil.move(str(moved), artifacts)
