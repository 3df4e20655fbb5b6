"""Shared fixtures: a tiny, fast space on the built-in MultiDigits benchmark."""

from __future__ import annotations

import copy
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# The suite's models are tiny: one intra-op thread per process trains them 2x faster on a
# 2-core machine than torch's default (measured on tests/test_checkpoints.py), and keeps parallel
# worker processes of a test from fighting over cores. Set before torch is imported; a value
# given in the environment wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

TINY_SPACE = {
    "name": "tiny",
    "data": {"benchmark": "multidigits", "seed": 0, "n_train": 256, "n_val": 64, "n_test": 64},
    "backbone": {"name": "mlp", "width": 24, "depth": 3},
    "search_space": {
        "families": ["single_task", "hard_sharing", "tree"],
        "tree": {"max_groups": 2},
        "weightings": ["equal", "static"],
        "training": {"epochs": 1, "batch_size": 64, "optimizer": "adam", "lr": {"low": 1.0e-3, "high": 1.0e-2, "log": True}},
    },
    "objectives": ["delta_mtl", "params"],
    "baselines": {"kind": "default", "seeds": 1},  # fast; tuned baselines are tested in test_baselines.py
    "run": {"study": "tiny", "n_trials": 4, "seed": 0, "device": "cpu"},
}


def write_process_space(tmp_path, name: str, epochs: int = 1, n_train: int = 256, **run) -> str:
    """A YAML space file for tests that run mtlsearch in separate processes: the tiny data with
    ``n_train`` samples, a 3-block MLP, hard sharing or a tree, ``epochs`` per trial, batches of
    32; the study is ``name``; ``run`` adds to the space's run section."""
    import yaml

    space = {
        "name": name,
        "data": {**TINY_SPACE["data"], "n_train": n_train},
        "backbone": {"name": "mlp", "width": 16, "depth": 3},
        "search_space": {
            "families": ["hard_sharing", "tree"],
            "weightings": ["equal"],
            "training": {"epochs": epochs, "batch_size": 32, "optimizer": "adam", "lr": {"low": 1.0e-3, "high": 1.0e-2, "log": True}},
        },
        "objectives": ["delta_mtl", "params"],
        "baselines": {"kind": "default", "seeds": 1},
        "run": {"study": name, "device": "cpu", **run},
    }
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return str(path)


@pytest.fixture
def tiny_space() -> dict:
    """A deep copy of :data:`TINY_SPACE` to mutate freely."""
    return copy.deepcopy(TINY_SPACE)


@pytest.fixture
def tiny_problem(tiny_space):
    import mtlsearch

    problem, _ = mtlsearch.load(tiny_space)
    return problem


def pytest_collection_modifyitems(config, items):
    """Tests that start processes or train studies run first (in file order otherwise): with
    one pytest process per core (``make test``), the long ones then do not end up last on one
    core while the other waits."""
    items.sort(key=lambda item: (item.get_closest_marker("process") is None, item.get_closest_marker("slow") is None))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_address():
    """A local Ray head with 2 CPUs and no GPU, in its own temp dir, for the whole session (every
    test that runs Ray uses it: a second, `local` Ray instance beside it made actors die under
    ``pytest -n 2``).

    Token authentication is off for this throw-away cluster, so that drivers connect with just
    the address. ``ray start --block`` stops the processes it started when terminated; nothing
    else on the machine is touched (no ``ray stop``).
    """
    port = free_port()
    temp = tempfile.mkdtemp(prefix="mtlray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    ray_cli = str(Path(sys.executable).parent / "ray")
    head = subprocess.Popen(
        [ray_cli, "start", "--head", f"--port={port}", "--num-cpus=2", "--num-gpus=0", "--include-dashboard=false",
         "--disable-usage-stats", "--node-ip-address=127.0.0.1", f"--temp-dir={temp}", "--block"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env={**os.environ, "RAY_AUTH_MODE": "disabled"},
    )
    lines: list[str] = []
    started = threading.Event()

    def drain():  # keeps the pipe from filling while the head runs
        for line in head.stdout:
            lines.append(line)
            if "Ray runtime started" in line:
                started.set()

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + 60
    while not started.wait(0.2):
        assert head.poll() is None and time.monotonic() < deadline, "ray start --head failed:\n" + "".join(lines)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        head.terminate()
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(temp, ignore_errors=True)
