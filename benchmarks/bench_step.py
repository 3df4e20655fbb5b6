#!/usr/bin/env python
"""Overhead of mtlsearch's models and training step against hand-written PyTorch.

Measured in one run, per configuration (a CNN and an MLP of realistic size):

1. ``step``: one training step of a candidate built by mtlsearch (``family.build`` ->
   ``PathNetwork``; the trainer's own step, ``training.make_step``, with losses from
   ``TaskSpec.kind.loss``, ``Equal`` weighting and Adam from ``training.make_optimizer``) against a hand-written
   ``nn.Module`` of the same architecture (a trunk ``nn.Sequential``, one ``nn.Linear`` per head,
   the three losses summed, ``torch.optim.Adam``), for (a) hard sharing and (b) a 2-branch tree
   (tasks a, b share every block; task c shares block0 only and has its own block1..blockN).
   Both sides hold the same weights (copied) and must give the same outputs: this is checked.
2. ``forward``: the forward pass of the T-task hard-sharing model against a single-task model
   (same backbone, one head), both built by mtlsearch; in training mode with autograd recording
   (as inside a step) and in inference mode (``eval()`` + ``torch.no_grad()``).
3. Diagnostics (no goal): the forward pass alone, mtlsearch vs hand-written; an A/A control; and
   an overhead-bound small configuration (the size ``search_spaces/multidigits.yaml`` uses), where
   the step is also split: mtlsearch model + hand-written loss, and hand-written model + the
   trainer's loss code, each against the hand-written step.

Method: fixed in-memory batches (no data loading), warm-up, then many timed samples taken in
interleaved, alternating order (A B, B A, A B, ...) so that drift and order effects cancel; each
sample times ``inner`` consecutive calls (chosen so a sample lasts >= ~20 ms). A pair during which
other processes used the CPU (Linux ``/proc/stat``) is dropped and retaken after the machine is
quiet again, for the first ``--max-seconds``. Reported: the median time per call of each side, the
judged ratio = the median of the paired per-sample ratios A_i / B_i with a 95 % bootstrap
interval, the 25-75 % range of those ratios, and the ratio of the two medians. An A/A control
(hand-written vs an identical hand-written step) shows the noise floor.

Run: ``make bench`` (= ``.venv/bin/python benchmarks/bench_step.py``); ``--quick`` for a
smoke run (< 30 s), ``--device cuda`` on a GPU, ``--repeats N`` for more samples.
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from optuna.trial import FixedTrial
from torch import nn

import mtlsearch
from mtlsearch.families.paths import HardSharing, Tree
from mtlsearch.models.backbones import CNN, MLP, Backbone
from mtlsearch.tasks import TaskSpec
from mtlsearch.training import make_optimizer, make_step, resolve_device
from mtlsearch.weighting.static import Equal

TASKS = [
    TaskSpec("a", "classification", num_classes=10),
    TaskSpec("b", "binary"),
    TaskSpec("c", "regression"),
]
NAMES = [t.name for t in TASKS]
LR = 1e-3

STEP_GOAL = 1.05  # mtlsearch step / hand-written step
FORWARD_GOAL = 1.15  # T-task hard-sharing forward / single-task forward


# --------------------------------------------------------------------------------------------
# Configurations
# --------------------------------------------------------------------------------------------


@dataclass
class Config:
    label: str
    kind: str  # "cnn" | "mlp"
    input_shape: tuple[int, ...]
    size: int  # channels (cnn) or width (mlp)
    depth: int
    batch: int
    judged: bool = True  # compared against the goals (False: diagnostic only)

    def backbone(self) -> Backbone:
        if self.kind == "cnn":
            return CNN(self.input_shape, channels=self.size, depth=self.depth)
        return MLP(self.input_shape, width=self.size, depth=self.depth)

    def describe(self) -> str:
        what = f"channels {self.size}" if self.kind == "cnn" else f"width {self.size}"
        shape = "x".join(map(str, self.input_shape))
        return f"{self.kind.upper()} {what}, depth {self.depth}, input {shape}, batch {self.batch}"


CONFIGS = [
    Config("cnn", "cnn", (3, 32, 32), 64, 4, 64),
    Config("mlp", "mlp", (3, 32, 32), 512, 4, 256),
    Config("small-cnn", "cnn", (1, 8, 16), 16, 3, 64, judged=False),
]


# --------------------------------------------------------------------------------------------
# Hand-written models: plain PyTorch, as a person would write them for this config
# --------------------------------------------------------------------------------------------


def cnn_layers(cfg: Config, first: int, last: int) -> list[nn.Module]:
    """Conv3x3-BN-ReLU[-MaxPool2] for blocks first..last-1 (pool while the image is >= 4 px)."""
    h, w = cfg.input_shape[1:]
    layers: list[nn.Module] = []
    for b in range(cfg.depth):
        pool = min(h, w) >= 4
        if first <= b < last:
            c_in = cfg.input_shape[0] if b == 0 else cfg.size
            layers += [nn.Conv2d(c_in, cfg.size, 3, padding=1, bias=False), nn.BatchNorm2d(cfg.size), nn.ReLU()]
            if pool:
                layers.append(nn.MaxPool2d(2))
        if pool:
            h, w = h // 2, w // 2
    return layers


def mlp_layers(cfg: Config, first: int, last: int) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for b in range(first, last):
        if b == 0:
            n_in = 1
            for s in cfg.input_shape:
                n_in *= s
            layers += [nn.Flatten(), nn.Linear(n_in, cfg.size), nn.ReLU()]
        else:
            layers += [nn.Linear(cfg.size, cfg.size), nn.ReLU()]
    return layers


def layers_for(cfg: Config, first: int, last: int) -> list[nn.Module]:
    return (cnn_layers if cfg.kind == "cnn" else mlp_layers)(cfg, first, last)


class HandHardSharing(nn.Module):
    """One trunk, three linear heads (global average pooling first for a CNN)."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.trunk = nn.Sequential(*layers_for(cfg, 0, cfg.depth))
        self.pool = cfg.kind == "cnn"
        self.head_a = nn.Linear(cfg.size, 10)
        self.head_b = nn.Linear(cfg.size, 1)
        self.head_c = nn.Linear(cfg.size, 1)

    def forward(self, x):
        f = self.trunk(x)
        if self.pool:
            f = f.mean((2, 3))
        return self.head_a(f), self.head_b(f), self.head_c(f)


class HandTree(nn.Module):
    """A stem (block0) shared by all; a, b share block1.. ; c has its own copy of block1.."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.stem = nn.Sequential(*layers_for(cfg, 0, 1))
        self.branch_ab = nn.Sequential(*layers_for(cfg, 1, cfg.depth))
        self.branch_c = nn.Sequential(*layers_for(cfg, 1, cfg.depth))
        self.pool = cfg.kind == "cnn"
        self.head_a = nn.Linear(cfg.size, 10)
        self.head_b = nn.Linear(cfg.size, 1)
        self.head_c = nn.Linear(cfg.size, 1)

    def forward(self, x):
        s = self.stem(x)
        f_ab, f_c = self.branch_ab(s), self.branch_c(s)
        if self.pool:
            f_ab, f_c = f_ab.mean((2, 3)), f_c.mean((2, 3))
        return self.head_a(f_ab), self.head_b(f_ab), self.head_c(f_c)


# --------------------------------------------------------------------------------------------
# mtlsearch models, and the correspondence of their weights with the hand-written ones
# --------------------------------------------------------------------------------------------


def tree_params(blocks: list[str]) -> dict[str, int]:
    """The tree family's trial parameters: b follows a everywhere; c follows a at block0 only."""
    return {
        **{f"tree.b.{bn}": 0 for bn in blocks},
        **{f"tree.c.{bn}": (0 if i == 0 else 1) for i, bn in enumerate(blocks)},
    }


def build_mtl(cfg: Config, family: str, tasks: list[TaskSpec] = TASKS) -> nn.Module:
    backbone = cfg.backbone()
    names = [t.name for t in tasks]
    if family == "hard_sharing":
        fam, trial = HardSharing(), FixedTrial({})
    else:
        fam, trial = Tree(max_groups=2), FixedTrial(tree_params(backbone.block_names))
    arch = fam.sample(trial, names, backbone)
    return fam.build(arch, backbone, tasks)


def mtl_modules_in_hand_order(model: nn.Module, family: str) -> list[nn.Module]:
    """The mtlsearch submodules in the order the hand-written model registers its weights."""
    blocks = model._block_names
    if family == "hard_sharing":
        path = model.paths["a"]
        mods = [model.blocks[bn][path[b]] for b, bn in enumerate(blocks)]
    else:
        pa, pc = model.paths["a"], model.paths["c"]
        assert pa[0] == pc[0] and all(x != y for x, y in zip(pa[1:], pc[1:])) and model.paths["b"] == pa, model.paths
        mods = [model.blocks[blocks[0]][pa[0]]]
        mods += [model.blocks[bn][pa[b]] for b, bn in enumerate(blocks) if b > 0]
        mods += [model.blocks[bn][pc[b]] for b, bn in enumerate(blocks) if b > 0]
    return mods + [model.heads[n] for n in NAMES]


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def tie(mtl: nn.Module, hand: nn.Module, family: str, x: torch.Tensor) -> None:
    """Assert the same architecture: equal parameter counts, shapes in the same order; copy the
    weights (and BN buffers) into the hand-written model and check both compute the same outputs."""
    assert n_params(mtl) == n_params(hand), (n_params(mtl), n_params(hand))
    src = [t for m in mtl_modules_in_hand_order(mtl, family) for t in m.state_dict().values()]
    dst = list(hand.state_dict().values())
    assert len(src) == len(dst), (len(src), len(dst))
    assert len(list(mtl.state_dict())) == len(dst)
    with torch.no_grad():
        for s, d in zip(src, dst):
            assert s.shape == d.shape and s.dtype == d.dtype, (s.shape, d.shape)
            d.copy_(s)
    mtl.eval(), hand.eval()
    with torch.no_grad():
        out_m, out_h = mtl(x), hand(x)
    for n, h in zip(NAMES, out_h):
        torch.testing.assert_close(out_m[n], h, rtol=1e-4, atol=1e-5)
    mtl.train(), hand.train()


# --------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------


def mtl_step_fn(model: nn.Module, tasks: list[TaskSpec], x, y, device) -> Callable[[], None]:
    """The trainer's own step (``mtlsearch.training.make_step``: Equal weighting, Adam)."""
    model.to(device).train()
    weighting = Equal([t.name for t in tasks]).to(device)
    optimizer = make_optimizer("adam", list(model.parameters()) + list(weighting.parameters()), LR, 0.0)
    train_step = make_step(model, tasks, weighting, optimizer)
    running = torch.zeros(len(tasks), device=device)

    def step():
        nonlocal running
        running += train_step(x, y)

    return step


class AsDict(nn.Module):
    """A hand-written model's tuple of outputs as the ``{task: output}`` the trainer expects."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(x)
        return out if isinstance(out, dict) else dict(zip(NAMES, out))


def hand_step_fn(model: nn.Module, x, y, device) -> Callable[[], None]:
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    ya, yb, yc = y["a"], y["b"], y["c"]
    running = torch.zeros((), device=device)

    def step():
        nonlocal running
        out_a, out_b, out_c = model(x)
        loss = (
            F.cross_entropy(out_a, ya)
            + F.binary_cross_entropy_with_logits(out_b.squeeze(1), yb)
            + F.mse_loss(out_c.squeeze(1), yc)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        running += loss.detach()

    return step


def mixed_step_fn(model: nn.Module, x, y, device, loss: str) -> Callable[[], None]:
    """Diagnostic step that swaps one half: ``loss="trainer"``: the trainer's own step
    (``make_step``: stack, Equal weighting, sum) on any model; ``loss="hand"``: the hand-written sum
    of the three losses on any model. Outputs are read by task name either way."""
    model = AsDict(model).to(device).train()
    if loss == "trainer":
        return mtl_step_fn(model, TASKS, x, y, device)
    optimizer = torch.optim.Adam(list(model.parameters()), lr=LR)
    running = torch.zeros((), device=device)

    def step():
        nonlocal running
        out = model(x)
        total = (
            F.cross_entropy(out["a"], y["a"])
            + F.binary_cross_entropy_with_logits(out["b"].squeeze(1), y["b"])
            + F.mse_loss(out["c"].squeeze(1), y["c"])
        )
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        running += total.detach()

    return step


def forward_fn(model: nn.Module, x, train: bool) -> Callable[[], None]:
    model.train(train)
    if train:  # as inside a training step: autograd records the graph (then it is dropped)
        return lambda: model(x)

    def infer():
        with torch.no_grad():
            model(x)

    return infer


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(fn: Callable[[], None], n: int, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / n


class CpuMonitor:
    """CPU seconds used by *other* processes (Linux: ``/proc/stat`` busy time minus this process's
    ``os.times()``), so that samples taken while something else ran can be dropped and retaken.

    On a shared machine another process running on the same cores does not slow both sides of a
    pair equally (OpenMP threads that lose their core stall a whole parallel region), so such
    pairs are noise, not signal. Elsewhere (no ``/proc/stat``) nothing is filtered.
    """

    def __init__(self, deadline: float):
        self.enabled = os.path.exists("/proc/stat")
        self.hz = os.sysconf("SC_CLK_TCK") if self.enabled else 100
        self.deadline = deadline  # time.monotonic() after which nothing is dropped or waited for
        self.waited = 0.0

    def snapshot(self) -> tuple[float, float] | None:
        if not self.enabled:
            return None
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        t = os.times()
        busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]  # user nice system irq softirq steal
        return busy / self.hz, t.user + t.system

    @staticmethod
    def other(s0, s1) -> float:
        if s0 is None or s1 is None:
            return 0.0
        return max(0.0, (s1[0] - s0[0]) - (s1[1] - s0[1]))

    @property
    def active(self) -> bool:
        return self.enabled and time.monotonic() < self.deadline

    def disturbed(self, s0, s1, wall: float) -> bool:
        """More than tick noise (3 ticks) + 5 % of one core of foreign CPU during ``wall``."""
        return self.other(s0, s1) > 3 / self.hz + 0.05 * wall

    def wait_quiet(self, window: float = 0.3) -> None:
        """Sleep until a ``window`` passes with (almost) no foreign CPU, or until the deadline."""
        while self.active:
            s0 = self.snapshot()
            time.sleep(window)
            self.waited += window
            if self.other(s0, self.snapshot()) <= 2 / self.hz:
                return


@dataclass
class Result:
    config: str
    what: str
    a_name: str
    b_name: str
    a_ms: float
    b_ms: float
    ratio: float  # median of the paired per-sample ratios (judged)
    ratio_of_medians: float
    q25: float
    q75: float
    ci_lo: float  # 95 % bootstrap interval of the paired median
    ci_hi: float
    goal: float | None
    samples: int
    inner: int
    dropped: int  # pairs retaken because other processes used the CPU meanwhile
    disturbed: int  # kept pairs that were disturbed (after the deadline for retaking)

    @property
    def verdict(self) -> str:
        if self.goal is None:
            return "(diagnostic)"
        if self.ratio > self.goal:
            return "MISSES goal" if self.ci_lo > self.goal else "misses goal (within noise: interval includes it)"
        return "meets goal" if self.ci_hi <= self.goal else "meets goal (within noise: interval reaches past it)"


@dataclass
class Samples:
    a: list[float]
    b: list[float]
    inner: int
    dropped: int
    disturbed: int


def compare(a: Callable, b: Callable, repeats: int, warmup: int, device, monitor: CpuMonitor, min_sample_s: float = 0.02) -> Samples:
    """Warm both, then ``repeats`` undisturbed pairs of samples (AB, BA, AB, ...)."""
    monitor.wait_quiet()
    for _ in range(warmup):
        a(), b()
    est = max(clock(a, 1, device), clock(b, 1, device))
    inner = max(1, min(50, round(min_sample_s / max(est, 1e-6))))
    ta: list[float] = []
    tb: list[float] = []
    dropped = disturbed = 0
    gc.collect()
    while len(ta) < repeats:
        s0, t0 = monitor.snapshot(), time.perf_counter()
        if len(ta) % 2 == 0:
            xa = clock(a, inner, device)
            xb = clock(b, inner, device)
        else:
            xb = clock(b, inner, device)
            xa = clock(a, inner, device)
        if monitor.disturbed(s0, monitor.snapshot(), time.perf_counter() - t0):
            if monitor.active:
                dropped += 1
                monitor.wait_quiet()
                continue
            disturbed += 1
        ta.append(xa)
        tb.append(xb)
    return Samples(ta, tb, inner, dropped, disturbed)


def summarize(cfg: Config, what: str, names: tuple[str, str], s: Samples, goal) -> Result:
    ma, mb = statistics.median(s.a), statistics.median(s.b)
    paired = sorted(x / y for x, y in zip(s.a, s.b))
    q = statistics.quantiles(paired, n=4, method="inclusive") if len(paired) >= 2 else [paired[0]] * 3
    rng = random.Random(0)
    boot = sorted(statistics.median(rng.choices(paired, k=len(paired))) for _ in range(2000))
    return Result(
        cfg.label, what, names[0], names[1], ma * 1e3, mb * 1e3, statistics.median(paired), ma / mb,
        q[0], q[2], boot[49], boot[1949], goal if cfg.judged else None, len(s.a), s.inner, s.dropped, s.disturbed,
    )


def make_batch(cfg: Config, device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(cfg.batch, *cfg.input_shape, generator=g)
    y = {
        "a": torch.randint(0, 10, (cfg.batch,), generator=g),
        "b": torch.randint(0, 2, (cfg.batch,), generator=g).float(),
        "c": torch.randn(cfg.batch, generator=g),
    }
    return x.to(device), {k: v.to(device) for k, v in y.items()}


def run_config(cfg: Config, repeats: int, warmup: int, device, monitor: CpuMonitor, log, diagnostics: bool = True) -> list[Result]:
    x, y = make_batch(cfg, device)
    results = []

    def record(what, names, a, b, goal, reps=repeats):
        r = summarize(cfg, what, names, compare(a, b, reps, warmup, device, monitor), goal)
        noise = f", {r.dropped} retaken" if r.dropped else ""
        noise += f", {r.disturbed} DISTURBED kept" if r.disturbed else ""
        log(f"  {what:<52} {r.a_ms:9.3f} ms vs {r.b_ms:9.3f} ms  (diff {1e3 * (r.a_ms - r.b_ms):+7.0f} us)  "
            f"ratio {r.ratio:6.3f} [95% CI {r.ci_lo:.3f}-{r.ci_hi:.3f}; IQR {r.q25:.3f}-{r.q75:.3f}; of medians {r.ratio_of_medians:.3f}]  "
            f"({r.samples}x{r.inner}{noise})  {r.verdict}")
        results.append(r)

    log(f"\n[{cfg.label}] {cfg.describe()}")
    for family, hand_cls in (("hard_sharing", HandHardSharing), ("tree", HandTree)):
        torch.manual_seed(0)
        mtl = build_mtl(cfg, family)
        hand = hand_cls(cfg)
        tie(mtl, hand, family, make_batch(cfg, "cpu", seed=1)[0])
        mtl.to(device), hand.to(device)
        log(f"  {family}: {n_params(mtl):,} parameters on both sides; outputs match; "
            f"block computations per forward: {mtl.distinct_prefixes()}")
        label = "hard sharing" if family == "hard_sharing" else "tree"
        # forward alone first (diagnostic), then the step (the step changes the weights)
        if diagnostics:
            record(f"forward {label} (mtl / hand)", ("mtlsearch", "hand"), forward_fn(mtl, x, True), forward_fn(hand, x, True), None)
        record(f"step {label} (mtl / hand)", ("mtlsearch", "hand"), mtl_step_fn(mtl, TASKS, x, y, device), hand_step_fn(hand, x, y, device), STEP_GOAL)
        if diagnostics and not cfg.judged:  # which half of the step costs: the model or the loss code?
            record(f"step {label}: mtl model + hand loss / hand", ("mtl model", "hand"),
                   mixed_step_fn(mtl, x, y, device, "hand"), hand_step_fn(copy.deepcopy(hand), x, y, device), None)
            record(f"step {label}: hand model + trainer loss / hand", ("trainer loss", "hand"),
                   mixed_step_fn(copy.deepcopy(hand), x, y, device, "trainer"), hand_step_fn(hand, x, y, device), None)

    if diagnostics and cfg.label == "mlp":  # A/A control: two identical hand-written steps; should read 1.00
        h1, h2 = HandHardSharing(cfg), HandHardSharing(cfg)
        h2.load_state_dict(h1.state_dict())
        record("control step hand / hand (A/A)", ("hand", "hand"), hand_step_fn(h1.to(device), x, y, device), hand_step_fn(h2.to(device), x, y, device), None)

    torch.manual_seed(0)
    multi = build_mtl(cfg, "hard_sharing").to(device)
    single = build_mtl(cfg, "hard_sharing", TASKS[:1]).to(device)
    record(f"forward train T={len(TASKS)} / T=1", (f"T={len(TASKS)}", "T=1"), forward_fn(multi, x, True), forward_fn(single, x, True), FORWARD_GOAL)
    record(f"forward infer T={len(TASKS)} / T=1", (f"T={len(TASKS)}", "T=1"), forward_fn(multi, x, False), forward_fn(single, x, False), FORWARD_GOAL)
    return results


def markdown(results: list[Result]) -> str:
    lines = [
        "| config | measurement | A | B | A median | B median | A - B | ratio A/B (paired median) | 95 % CI | paired IQR | ratio of medians | goal | verdict | pairs (retaken, disturbed) |",
        "|---|---|---|---|---:|---:|---:|---:|---|---|---:|---:|---|---|",
    ]
    for r in results:
        goal = f"<= {r.goal:.2f}" if r.goal is not None else "-"
        lines.append(
            f"| {r.config} | {r.what.split(' (')[0]} | {r.a_name} | {r.b_name} | {r.a_ms:.2f} ms | {r.b_ms:.2f} ms "
            f"| {1e3 * (r.a_ms - r.b_ms):+.0f} us | **{r.ratio:.3f}** | {r.ci_lo:.3f}-{r.ci_hi:.3f} | {r.q25:.3f}-{r.q75:.3f} | {r.ratio_of_medians:.3f} | {goal} | {r.verdict} "
            f"| {r.samples}x{r.inner} ({r.dropped}, {r.disturbed}) |"
        )
    return "\n".join(lines)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, auto")
    p.add_argument("--repeats", type=int, default=None, help="timed samples per side and measurement (default 80; 5 with --quick)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up calls per side (default 5; 1 with --quick)")
    p.add_argument("--quick", action="store_true", help="smoke run (< 30 s): 5 samples, judged measurements only; too few samples to judge a 5 %% goal")
    p.add_argument("--max-seconds", type=float, default=None, help="after this many seconds, stop retaking samples disturbed by other processes (default 90; 10 with --quick)")
    p.add_argument("--config", action="append", choices=[c.label for c in CONFIGS], help="run only these configurations")
    args = p.parse_args(argv)

    device = resolve_device(args.device)
    repeats = args.repeats or (5 if args.quick else 80)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 5)
    configs = [c for c in CONFIGS if (args.config and c.label in args.config) or (not args.config and (c.judged or not args.quick))]

    budget = args.max_seconds if args.max_seconds is not None else (10.0 if args.quick else 90.0)
    log = lambda s="": print(s, flush=True)  # noqa: E731
    log(f"mtlsearch {getattr(mtlsearch, '__version__', '?')}, torch {torch.__version__}, Python {platform.python_version()}")
    log(f"device: {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else f" ({cpu_model()})"))
    log(f"torch.get_num_threads() = {torch.get_num_threads()} (left at default), os.cpu_count() = {os.cpu_count()}")
    log(f"tasks: {', '.join(f'{t.name} ({t.type})' for t in TASKS)}; Adam lr {LR}; Equal weighting")
    log(f"samples per side: {repeats} (interleaved AB/BA), warm-up {warmup}{' [quick]' if args.quick else ''}; "
        f"pairs disturbed by other processes are retaken during the first {budget:.0f} s")

    log(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())} (other work on these cores adds noise)")
    start = time.perf_counter()
    monitor = CpuMonitor(time.monotonic() + budget)
    results = []
    for cfg in configs:
        results += run_config(cfg, repeats, warmup, device, monitor, log, diagnostics=not args.quick)
    log(f"\nload average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; measured in {time.perf_counter() - start:.0f} s, "
        f"{monitor.waited:.0f} s of it waiting for other processes to leave the CPU\n")
    log(markdown(results))
    judged = [r for r in results if r.goal is not None]
    missed = [r for r in judged if r.ratio > r.goal]
    log(f"\n{len(judged) - len(missed)}/{len(judged)} judged measurements meet their goal"
        + (": missed " + "; ".join(f"{r.config} {r.what} {r.ratio:.3f} > {r.goal} [{r.verdict}]" for r in missed) if missed else "")
        + (" [--quick: too few samples to judge; run without --quick]" if args.quick else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
