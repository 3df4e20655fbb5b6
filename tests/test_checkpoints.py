"""Per-epoch checkpoints: atomic files, safe loading, and training that continues exactly."""

from __future__ import annotations

import pytest
import torch

from mtlsearch.checkpoints import CheckpointStore
from mtlsearch.training import train


class Stop(Exception):
    """Stands in for a killed process: raised after an epoch's checkpoint is written."""


def stop_after_two(e):
    if e.epoch == 2:
        raise Stop


WEIGHTINGS = ["equal", "uncertainty", "dwa", "gradnorm", "pcgrad", "gradvac", "nash_mtl", "rlw"]


@pytest.fixture(scope="module")
def problem():
    import mtlsearch
    from conftest import TINY_SPACE

    space = {**TINY_SPACE, "search_space": {**TINY_SPACE["search_space"], "weightings": WEIGHTINGS}}
    return mtlsearch.load(space)[0]


def candidate_of(problem, weighting: str):
    """A tree (left+right share every block, sum has its own branch) with ``weighting``."""
    params = {"family": "tree", "weighting": weighting, "training.lr": 3e-3}
    params.update({f"tree.right.block{b}": 0 for b in range(3)} | {f"tree.sum.block{b}": 1 for b in range(3)})
    return problem.replay(params)


@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_a_run_stopped_after_an_epoch_continues_to_the_same_weights(problem, tmp_path, weighting):
    candidate = candidate_of(problem, weighting)
    training = {**candidate.training, "epochs": 3}
    device = torch.device("cpu")

    straight = candidate.build_model(seed=5)
    train(straight, problem.tasks, candidate.new_weighting(), problem.data.train, training, device, seed=5)

    store = CheckpointStore(tmp_path / "run")
    first = candidate.build_model(seed=5)
    with pytest.raises(Stop):
        train(first, problem.tasks, candidate.new_weighting(), problem.data.train, training, device, seed=5, on_epoch=stop_after_two, checkpoints=store)
    assert [p.name for p in store.files()] == ["epoch-0002.pt", "epoch-0001.pt"]

    torch.manual_seed(12345)  # a new process: other global random state
    resumed = candidate.build_model(seed=99)  # other initial weights: the checkpoint must replace them
    result = train(resumed, problem.tasks, candidate.new_weighting(), problem.data.train, training, device, seed=5, checkpoints=store)
    assert result.resumed_from == 2 and [e.epoch for e in result.history] == [1, 2, 3]
    for key, value in straight.state_dict().items():
        assert torch.allclose(value, resumed.state_dict()[key], atol=1e-6), key


def test_truncated_checkpoint_falls_back_to_the_previous_one_with_a_warning(problem, tmp_path):
    candidate = candidate_of(problem, "equal")
    training = {**candidate.training, "epochs": 3}
    store = CheckpointStore(tmp_path / "run")
    model = candidate.build_model(seed=1)
    with pytest.raises(Stop):
        train(model, problem.tasks, candidate.new_weighting(), problem.data.train, training, torch.device("cpu"), 1, stop_after_two, store)
    newest = store.files()[0]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # a crash mid-write of a non-atomic writer

    warnings: list[str] = []
    store = CheckpointStore(tmp_path / "run", warn=warnings.append)
    result = train(candidate.build_model(seed=1), problem.tasks, candidate.new_weighting(), problem.data.train, training, torch.device("cpu"), 1, checkpoints=store)
    assert result.resumed_from == 1
    assert len(warnings) == 1 and warnings[0].startswith(f"checkpoint {newest} is unreadable (")
    assert warnings[0].endswith("continuing from the previous one")


def test_no_readable_checkpoint_trains_from_scratch(tmp_path):
    store_dir = tmp_path / "run"
    store_dir.mkdir()
    (store_dir / "epoch-0001.pt").write_bytes(b"not a checkpoint")
    warnings: list[str] = []
    assert CheckpointStore(store_dir, warn=warnings.append).load() is None
    assert warnings[0].endswith("continuing from scratch")


def test_checkpoints_hold_no_code_and_load_weights_only(tmp_path):
    store = CheckpointStore(tmp_path / "run", keep=1)
    store.save({"epoch": 1, "model": {"w": torch.ones(2)}})
    store.save({"epoch": 2, "model": {"w": torch.zeros(2)}})
    assert [p.name for p in store.files()] == ["epoch-0002.pt"]
    assert not list((tmp_path / "run").glob(".tmp-*"))
    state = store.load()
    assert state["epoch"] == 2 and torch.equal(state["model"]["w"], torch.zeros(2))

    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))

    torch.save({"format": 1, "epoch": 3, "payload": Evil()}, tmp_path / "run" / "epoch-0003.pt")
    warnings: list[str] = []
    assert CheckpointStore(tmp_path / "run", warn=warnings.append).load()["epoch"] == 2
    assert "epoch-0003.pt is unreadable (UnpicklingError" in warnings[0]


def test_ctrl_c_mid_write_stays_a_keyboard_interrupt_and_leaves_no_file(tmp_path, monkeypatch):
    """torch's zip writer, interrupted mid-write, fails in its __exit__ (RuntimeError "unexpected
    pos"); the store raises the interrupt itself, so the trial is queued again, not failed."""
    store = CheckpointStore(tmp_path / "run")
    store.save({"epoch": 1})

    def interrupted(obj, f):
        try:
            raise KeyboardInterrupt("signal SIGINT")
        finally:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 98752 vs 98640")

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt, match="signal SIGINT"):
        store.save({"epoch": 2})
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["epoch-0001.pt"]
