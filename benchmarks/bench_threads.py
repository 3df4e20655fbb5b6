#!/usr/bin/env python
"""Torch threads per process: the measurement behind ``run.threads: auto`` (issue 12).

Two parts, measured in one run, on this machine's cores:

1. ``crossover``: training steps (Adam, batch 64, forward + backward + step) of plain PyTorch MLPs
   (3 hidden layers) and small CNNs of growing width, with 1 thread and with every core. Printed:
   MACs per batch (forward), milliseconds per step each way, and the speed-up of all cores over 1
   thread. Below the size where the speed-up passes 1.2x, extra intra-op threads cost more than they
   give; ``mtlsearch.training.SMALL_MACS`` is set from this table.
2. ``spaces``: whole searches of the built-in spaces (random sampler, same seed, so the same
   candidates in the same order; default baselines on one seed) with ``--threads 1``,
   ``--threads`` = every core, the default (``auto``), and ``--workers`` = every core (``auto``
   threads, a journal file), each its own ``mtlsearch run`` process from start to exit (imports,
   data and baselines included); wall time and the ratios.

Run: ``.venv/bin/python benchmarks/bench_threads.py`` (``--quick`` for a smoke run). Needs a quiet
machine: other work on the cores distorts both parts.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
CORES = os.cpu_count() or 1


def mlp(width: int, features: int = 128) -> tuple[nn.Module, tuple[int, ...], int]:
    dims = [features, width, width, width]
    layers: list[nn.Module] = []
    for a, b in zip(dims, dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(width, 10))
    macs = sum(a * b for a, b in zip(dims, dims[1:])) + width * 10
    return nn.Sequential(*layers), (features,), macs


def cnn(width: int, size: int = 16) -> tuple[nn.Module, tuple[int, ...], int]:
    model = nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10),
    )
    macs = size * size * 9 * (width + width * width) + width * 10
    return model, (1, size, size), macs


def step_ms(model: nn.Module, shape: tuple[int, ...], threads: int, batch: int, steps: int) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    for _ in range(max(3, steps // 10)):  # warm-up
        step()
    best = float("inf")
    for _ in range(3):  # best of 3 repeats: the least disturbed by other work
        start = time.perf_counter()
        for _ in range(steps):
            step()
        best = min(best, (time.perf_counter() - start) / steps * 1000)
    return best


def crossover(quick: bool, batch: int = 64) -> list[dict]:
    rows = []
    shapes = [("mlp", w) for w in ((32, 256) if quick else (32, 64, 128, 256, 512, 1024, 2048))]
    shapes += [("cnn", w) for w in ((8, 32) if quick else (8, 16, 32, 64))]
    for kind, width in shapes:
        model, shape, macs = (mlp if kind == "mlp" else cnn)(width)
        per_batch = macs * batch
        steps = 20 if quick else max(20, min(400, int(4e9 / max(per_batch, 1))))
        one = step_ms(model, shape, 1, batch, steps)
        every = step_ms(model, shape, CORES, batch, steps)
        rows.append({"model": f"{kind} width {width}", "macs_per_batch": per_batch, "ms_1": one, "ms_all": every})
        print(
            f"{kind:>3} width {width:>5}  MACs/batch {per_batch:>13,}  1 thread {one:8.3f} ms  "
            f"{CORES} threads {every:8.3f} ms  speed-up {one / every:5.2f}x",
            flush=True,
        )
    torch.set_num_threads(CORES)
    return rows


def space_file(folder: Path, name: str, trials: int, quick: bool) -> tuple[Path, str]:
    """The built-in space with given baselines (only trials are timed) and a random sampler."""
    raw = yaml.safe_load((ROOT / "search_spaces" / f"{name}.yaml").read_text())
    raw["baselines"] = {"kind": "default", "seeds": 1}
    raw.setdefault("run", {}).update({"sampler": "random", "seed": 0, "n_trials": trials})
    raw["run"].pop("confirm", None)
    if quick:
        raw["search_space"].setdefault("training", {})["epochs"] = 1
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, f"sqlite:///{folder}/{name}.db"


def timed_run(space: Path, storage: str, study: str, threads: str, workers: int = 1) -> float:
    cmd = [sys.executable, "-m", "mtlsearch", "run", str(space), "--study", study, "--storage", storage,
           "--quiet", "--device", "cpu", "--no-save-weights", "--workers", str(workers)]
    if threads != "auto":
        cmd += ["--threads", threads]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def spaces(quick: bool) -> list[dict]:
    rows = []
    trials = 2 if quick else 8
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("multidigits", "mmoe_synthetic"):
            path, storage = space_file(Path(tmp), name, trials, quick)
            times = {}
            for threads in ("1", str(CORES), "auto"):
                times[threads] = timed_run(path, storage, f"{name}-t{threads}", threads)
            journal = f"journal:///{tmp}/{name}.log"  # several writers
            times["workers"] = timed_run(path, journal, f"{name}-w{CORES}", "auto", workers=CORES)
            rows.append({"space": name, "trials": trials, **{f"s_{k}": v for k, v in times.items()}})
            print(
                f"{name:>15}: {trials} trials  1 thread {times['1']:6.1f} s  {CORES} threads {times[str(CORES)]:6.1f} s"
                f"  auto {times['auto']:6.1f} s  --workers {CORES} (auto) {times['workers']:6.1f} s  "
                f"({CORES} threads / auto = {times[str(CORES)] / times['auto']:.2f}x, "
                f"auto / --workers {CORES} = {times['auto'] / times['workers']:.2f}x)",
                flush=True,
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run (seconds)")
    parser.add_argument("--part", choices=["crossover", "spaces", "all"], default="all")
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {CORES} cores, torch {torch.__version__}", flush=True)
    start = time.perf_counter()
    if args.part in ("crossover", "all"):
        print("1. crossover: one training step (batch 64), 1 thread vs every core", flush=True)
        crossover(args.quick)
    if args.part in ("spaces", "all"):
        print("2. spaces: whole searches of the built-in spaces (same candidates in each run)", flush=True)
        spaces(args.quick)
    print(f"total {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
