#!/usr/bin/env python
"""Training-step time of every search family on one backbone, and the compute that sharing saves.

Measured in one run, on one backbone and batch (a CNN of realistic size, 3 tasks):

1. ``step``: one training step (``training.make_step``, Equal weighting, Adam) of a candidate of
   each registered family against the hard-sharing step on the same backbone (paired,
   interleaved samples as in ``bench_step.py``; the ratio is the median of per-sample ratios with
   a 95 % bootstrap interval). Each family's candidate is the first one a seeded random sampler
   draws (its structure is printed), so the numbers describe that candidate, not the family's
   best or worst case. ``adashare_learned`` is timed on its retrained network (a gating network
   like ``adashare``'s, with the policy drawn at random here; the learning phase inside a trial
   costs roughly ``warmup + 2 x policy`` epochs of the supernet on top).
2. ``sharing``: for the families whose candidates are task paths (``tree``, ``routing``,
   ``adashare``...), block computations per forward with de-duplication (each distinct path
   prefix once, what ``PathNetwork`` does) and without (each task runs its own path), averaged
   over ``--samples`` random candidates; the same for MACs (``count_macs`` of the network against
   the sum over tasks of one-task networks on the same paths). For one candidate per family the
   step time without de-duplication (a network that runs each task's path separately, with the
   same modules and weights) is measured against the de-duplicated one.

Run: ``make bench-families`` (= ``.venv/bin/python benchmarks/bench_families.py``); ``--quick``
for a smoke run (< 1 min), ``--device cuda`` on a GPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import optuna  # noqa: E402
import torch  # noqa: E402

import mtlsearch  # noqa: E402
from bench_step import TASKS, Config, CpuMonitor, compare, cpu_model, make_batch, mtl_step_fn, summarize  # noqa: E402
from mtlsearch.families import FAMILIES  # noqa: E402
from mtlsearch.models import PathNetwork  # noqa: E402
from mtlsearch.models.heads import pool  # noqa: E402
from mtlsearch.scoring import count_macs, count_params  # noqa: E402
from mtlsearch.training import resolve_device  # noqa: E402

NAMES = [t.name for t in TASKS]
# 32x32 input, pooling while both sides are >= 8: blocks 0-1 halve it to 8x8, blocks 2-4 keep
# their shape, so gating families have three skippable blocks.
CONFIG = Config("cnn", "cnn", (3, 32, 32), 32, 5, 64)
MIN_SIZE = 8


def backbone():
    return mtlsearch.models.CNN(CONFIG.input_shape, channels=CONFIG.size, depth=CONFIG.depth, min_size=MIN_SIZE)


def architecture(family_name: str, seed: int):
    """A candidate of ``family_name`` drawn by a seeded random sampler (learned families: with a
    random policy in place of a learned one)."""
    family = FAMILIES.get(family_name)()
    bb = backbone()
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed)).ask()
    arch = family.sample(trial, NAMES, bb)
    if family.learned:
        gen = torch.Generator().manual_seed(seed)
        gated = set(arch.settings.get("gated", []))
        policy = {t: ["skip" if b in gated and torch.rand((), generator=gen) < 0.5 else "run" for b in bb.block_names] for t in NAMES}
        arch = family.with_learned(arch, {"policy": policy, "select_probability": {t: [1.0] * len(bb.block_names) for t in NAMES}, "epochs": {"warmup": 0, "policy": 0}})
    return family, bb, arch


class PerTaskPaths(PathNetwork):
    """The same modules and weights as a :class:`PathNetwork`, but every task runs its own path:
    what the network would cost without de-duplicating shared prefixes."""

    def forward(self, x):
        out = {}
        for t in self.task_names:
            h = x
            for block_name, key in zip(self._block_names, self.paths[t]):
                if key is not None:
                    h = self.blocks[block_name][key](h)
            out[t] = self.heads[t](pool(h))
        return out


def block_calls(paths) -> tuple[int, int]:
    """(with de-duplication, without) block computations per forward of a path architecture."""
    blocks = len(next(iter(paths.values())))
    dedup = sum(len({p[: b + 1] for p in paths.values() if p[b] is not None}) for b in range(blocks))
    naive = sum(1 for p in paths.values() for key in p if key is not None)
    return dedup, naive


def sharing_stats(family_name: str, samples: int) -> dict | None:
    rows = []
    for seed in range(samples):
        family, bb, arch = architecture(family_name, seed)
        if arch.paths is None:
            return None
        torch.manual_seed(0)
        model = family.build(arch, bb, TASKS)
        macs = count_macs(model, bb.input_shape)
        alone = sum(count_macs(PathNetwork(bb, [t], {t.name: arch.paths[t.name]}), bb.input_shape) for t in TASKS)
        rows.append((*block_calls(arch.paths), macs, alone))
    dedup, naive, macs, alone = (statistics.fmean(c) for c in zip(*rows))
    return {"calls": dedup, "naive_calls": naive, "macs": macs, "naive_macs": alone}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, auto")
    p.add_argument("--repeats", type=int, default=None, help="timed samples per side (default 40; 5 with --quick)")
    p.add_argument("--samples", type=int, default=None, help="random candidates per family for the sharing counts (default 50; 5 with --quick)")
    p.add_argument("--quick", action="store_true", help="smoke run (< 1 min)")
    p.add_argument("--max-seconds", type=float, default=None, help="retake samples disturbed by other processes for this long (default 90; 10 with --quick)")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    repeats = args.repeats or (5 if args.quick else 40)
    samples = args.samples or (5 if args.quick else 50)
    warmup = 1 if args.quick else 5
    log = lambda s="": print(s, flush=True)  # noqa: E731
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    log(f"mtlsearch {mtlsearch.__version__}, torch {torch.__version__}, Python {platform.python_version()}")
    log(f"device: {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else f" ({cpu_model()})"))
    log(f"torch.get_num_threads() = {torch.get_num_threads()}, os.cpu_count() = {os.cpu_count()}; "
        f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    bb = backbone()
    log(f"backbone: {CONFIG.describe()}, min_size {MIN_SIZE}; block shapes "
        + ", ".join(f"{n} {i}->{o}" for n, (i, o) in zip(bb.block_names, bb.shapes)))
    log(f"tasks: {', '.join(f'{t.name} ({t.type})' for t in TASKS)}; Equal weighting, Adam; {repeats} paired samples per side")
    start = time.perf_counter()
    monitor = CpuMonitor(time.monotonic() + (args.max_seconds if args.max_seconds is not None else (10.0 if args.quick else 90.0)))
    x, y = make_batch(CONFIG, device)

    def step_of(model) -> Callable[[], None]:
        return mtl_step_fn(model.to(device), TASKS, x, y, device)

    def hard_sharing():
        family, hbb, arch = architecture("hard_sharing", 0)
        torch.manual_seed(0)
        return family.build(arch, hbb, TASKS)

    step_rows, dedup_rows = [], []
    for name in FAMILIES.names():
        family, fbb, arch = architecture(name, 0)
        torch.manual_seed(0)
        model = family.build(arch, fbb, TASKS)
        log(f"\n[{name}] {count_params(model):,} params, {count_macs(model, fbb.input_shape):,} MACs/sample; candidate:")
        log("\n".join("    " + line for line in family.describe(arch, fbb.block_names)))
        r = summarize(CONFIG, f"step {name} / hard_sharing", (name, "hard_sharing"),
                      compare(step_of(model), step_of(hard_sharing()), repeats, warmup, device, monitor), None)
        log(f"  step {r.a_ms:.2f} ms vs hard sharing {r.b_ms:.2f} ms: ratio {r.ratio:.3f} [95% CI {r.ci_lo:.3f}-{r.ci_hi:.3f}]")
        step_rows.append((name, count_params(model), r))
        stats = sharing_stats(name, samples)
        if stats is None:
            continue
        torch.manual_seed(0)
        naive = PerTaskPaths(fbb, TASKS, arch.paths)
        naive.load_state_dict(model.state_dict())
        t = summarize(CONFIG, f"step without / with de-duplication ({name})", ("per-task", "dedup"),
                      compare(step_of(naive), step_of(model), repeats, warmup, device, monitor), None)
        calls = block_calls(arch.paths)
        log(f"  sharing over {samples} random candidates: {stats['calls']:.2f} vs {stats['naive_calls']:.2f} block calls per forward "
            f"(saved {1 - stats['calls'] / stats['naive_calls']:.1%}), MACs saved {1 - stats['macs'] / stats['naive_macs']:.1%}")
        log(f"  this candidate: {calls[0]} vs {calls[1]} block calls; step without de-duplication {t.a_ms:.2f} ms vs {t.b_ms:.2f} ms: "
            f"ratio {t.ratio:.3f} [95% CI {t.ci_lo:.3f}-{t.ci_hi:.3f}]")
        dedup_rows.append((name, samples, stats, calls, t))

    log(f"\nmeasured in {time.perf_counter() - start:.0f} s; load average after {' '.join(f'{v:.2f}' for v in os.getloadavg())}\n")
    log("| family | params | step ms | hard sharing ms | ratio (paired median) | 95 % CI |")
    log("|---|---:|---:|---:|---:|---|")
    for name, n, r in step_rows:
        log(f"| {name} | {n:,} | {r.a_ms:.2f} | {r.b_ms:.2f} | **{r.ratio:.3f}** | {r.ci_lo:.3f}-{r.ci_hi:.3f} |")
    log("\n| family | block calls / forward, dedup vs per-task (mean of N) | calls saved | MACs saved | one candidate: calls | step per-task / dedup | 95 % CI |")
    log("|---|---|---:|---:|---|---:|---|")
    for name, n, s, calls, t in dedup_rows:
        log(f"| {name} | {s['calls']:.2f} vs {s['naive_calls']:.2f} (N = {n}) | {1 - s['calls'] / s['naive_calls']:.1%} | "
            f"{1 - s['macs'] / s['naive_macs']:.1%} | {calls[0]} vs {calls[1]} | **{t.ratio:.3f}** | {t.ci_lo:.3f}-{t.ci_hi:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
