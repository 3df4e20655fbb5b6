#!/usr/bin/env python
"""Training-step time of a ResNet-18 candidate built by mtlsearch against hand-written torchvision.

Measured in one run, for (a) hard sharing and (b) a tree (tasks a and b share every block; task c
shares ``stem`` .. ``layer2_1`` and has its own ``layer3`` and ``layer4``):

* mtlsearch side: the ``resnet18`` backbone (``mtlsearch.models.torchvision_backbones``), the
  family's ``build`` (a ``PathNetwork``), and the trainer's own step (``training.make_step``,
  Equal weighting, Adam), as a trial trains it;
* hand-written side: ``torchvision.models.resnet18()`` without ``avgpool``/``fc``, its layers
  called in a hand-written ``forward`` (for the tree: one torchvision trunk for stem..layer2 and
  two ``Sequential(layer3, layer4)`` branches), the same heads, the losses summed, ``torch.optim.Adam``.

Heads: when mtlsearch has dense task types (``segmentation``, ``depth``, ``normals``) and
``models.heads.DenseHead``, the tasks are those three (NYUv2-like, 13 classes) with a
``DenseHead`` per task on both sides; otherwise 10-class classification, binary and regression
with linear heads on the pooled feature (``--heads`` forces one). Both sides hold the same
weights (copied by name) and must give the same outputs: this is checked before timing.

Method (``bench_step.compare``): fixed in-memory batches, warm-up, then ``--rounds`` pairs of
samples in alternating AB/BA order; the ratio is the median of the paired ratios with a 95 %
bootstrap interval. On CUDA every sample is synchronised, and the peak memory a step adds
(``torch.cuda.max_memory_allocated`` over what the models and optimiser state hold) is reported.
Goal: the mtlsearch step at most 1.05x the hand-written one.

Run: ``.venv/bin/python benchmarks/bench_backbones.py`` (CPU: batch 8, 64x64, 15 rounds, one
torch thread; 2-3 minutes on 2 shared cores); ``--device cuda`` (batch 64, 224x224, 50 rounds).
Needs only mtlsearch (and its dependencies), torch and torchvision; no data is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402
from optuna.trial import FixedTrial  # noqa: E402
from torch import nn  # noqa: E402

import mtlsearch  # noqa: E402
from bench_step import CpuMonitor, compare, cpu_model, mtl_step_fn, summarize  # noqa: E402
from mtlsearch.families.paths import HardSharing, Tree  # noqa: E402
from mtlsearch.models import BACKBONES  # noqa: E402
from mtlsearch.models.heads import build_head  # noqa: E402
from mtlsearch.tasks import TASK_TYPES, TaskSpec  # noqa: E402
from mtlsearch.training import resolve_device  # noqa: E402

GOAL = 1.05
LR = 1e-3
SPLIT_AFTER = "layer2_1"  # the tree's task c leaves the shared trunk after this block
CLASSES = 13


def dense_available() -> bool:
    try:
        from mtlsearch.models.heads import DenseHead  # noqa: F401
    except ImportError:
        return False
    return all(name in TASK_TYPES for name in ("segmentation", "depth", "normals"))


def make_tasks(dense: bool) -> list[TaskSpec]:
    if dense:
        return [
            TaskSpec("a", "segmentation", num_classes=CLASSES),
            TaskSpec("b", "depth"),
            TaskSpec("c", "normals"),
        ]
    return [TaskSpec("a", "classification", num_classes=10), TaskSpec("b", "binary"), TaskSpec("c", "regression")]


def make_batch(dense: bool, batch: int, size: int, device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, size, size, generator=g)
    if dense:
        normals = F.normalize(torch.randn(batch, 3, size, size, generator=g), dim=1)
        y = {
            "a": torch.randint(0, CLASSES, (batch, size, size), generator=g),
            "b": torch.rand(batch, 1, size, size, generator=g) * 10 + 0.1,
            "c": normals,
        }
    else:
        y = {
            "a": torch.randint(0, 10, (batch,), generator=g),
            "b": torch.randint(0, 2, (batch,), generator=g).float(),
            "c": torch.randn(batch, generator=g),
        }
    return x.to(device), {k: v.to(device) for k, v in y.items()}


# --------------------------------------------------------------------------------------------
# mtlsearch side
# --------------------------------------------------------------------------------------------


def build_mtl(family: str, tasks: list[TaskSpec], size: int) -> nn.Module:
    backbone = BACKBONES.get("resnet18")((3, size, size))
    names = [t.name for t in tasks]
    if family == "hard_sharing":
        fam, trial = HardSharing(), FixedTrial({})
    else:
        split = backbone.block_names.index(SPLIT_AFTER)
        params = {f"tree.b.{bn}": 0 for bn in backbone.block_names}
        params.update({f"tree.c.{bn}": int(i > split) for i, bn in enumerate(backbone.block_names)})
        fam, trial = Tree(max_groups=2), FixedTrial(params)
    return fam.build(fam.sample(trial, names, backbone), backbone, tasks)


# --------------------------------------------------------------------------------------------
# Hand-written side: torchvision's ResNet-18, its layers called by hand
# --------------------------------------------------------------------------------------------


def trunk() -> nn.Module:
    model = torchvision.models.resnet18(weights=None)
    del model.avgpool, model.fc
    return model


class Heads(nn.Module):
    """One head per task (the same classes mtlsearch builds); vector heads read the pooled feature."""

    def __init__(self, tasks: list[TaskSpec], channels: int, size: int):
        super().__init__()
        self.dense = [getattr(t.kind, "dense", False) for t in tasks]
        self.heads = nn.ModuleDict(
            {
                t.name: build_head((channels, 1, 1), t, (3, size, size))
                if dense
                else nn.Linear(channels, t.kind.output_dim(t))
                for t, dense in zip(tasks, self.dense)
            }
        )

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        pooled = {}
        out = []
        for head, f, dense in zip(self.heads.values(), features, self.dense):
            if not dense:
                f = pooled.setdefault(id(f), f.mean((2, 3)))
            out.append(head(f))
        return tuple(out)


class HandHardSharing(nn.Module):
    def __init__(self, tasks: list[TaskSpec], size: int):
        super().__init__()
        self.trunk = trunk()
        self.heads = Heads(tasks, 512, size)

    def forward(self, x):
        t = self.trunk
        f = t.layer4(t.layer3(t.layer2(t.layer1(t.maxpool(t.relu(t.bn1(t.conv1(x))))))))
        return self.heads([f, f, f])


class HandTree(nn.Module):
    def __init__(self, tasks: list[TaskSpec], size: int):
        super().__init__()
        self.shared = trunk()
        del self.shared.layer3, self.shared.layer4
        one, two = trunk(), trunk()
        self.branch_ab = nn.Sequential(one.layer3, one.layer4)
        self.branch_c = nn.Sequential(two.layer3, two.layer4)
        self.heads = Heads(tasks, 512, size)

    def forward(self, x):
        s = self.shared
        h = s.layer2(s.layer1(s.maxpool(s.relu(s.bn1(s.conv1(x))))))
        f_ab, f_c = self.branch_ab(h), self.branch_c(h)
        return self.heads([f_ab, f_ab, f_c])


def hand_state(mtl: nn.Module, family: str) -> dict[str, torch.Tensor]:
    """The mtlsearch model's state dict under the hand-written model's names."""
    blocks = list(mtl.blocks)
    split = blocks.index(SPLIT_AFTER)
    out = {}
    for key, value in mtl.state_dict().items():
        kind, name, rest = key.split(".", 2)
        if kind == "heads":
            out[f"heads.heads.{name}.{rest}"] = value
            continue
        node, rest = rest.split(".", 1)
        layer = "" if name == "stem" else name.replace("_", ".") + "."
        if family == "hard_sharing":
            out[f"trunk.{layer}{rest}"] = value
        elif blocks.index(name) <= split:
            out[f"shared.{layer}{rest}"] = value
        else:
            branch = "branch_ab" if node == mtl.paths["a"][blocks.index(name)] else "branch_c"
            index = {"layer3": "0", "layer4": "1"}[layer.split(".")[0]]
            out[f"{branch}.{index}.{layer.split('.', 1)[1]}{rest}"] = value
    return out


def tie(mtl: nn.Module, hand: nn.Module, family: str, x: torch.Tensor) -> None:
    """Copy the weights by name (every one, strictly) and check that both give the same outputs."""
    hand.load_state_dict(hand_state(mtl, family), strict=True)
    mtl.eval(), hand.eval()
    with torch.no_grad():
        out = mtl(x)
        for name, h in zip(mtl.task_names, hand(x)):
            torch.testing.assert_close(out[name], h, rtol=1e-4, atol=1e-4)
    mtl.train(), hand.train()


def hand_losses(out: tuple[torch.Tensor, ...], y: dict[str, torch.Tensor], dense: bool) -> torch.Tensor:
    a, b, c = out
    if dense:  # NYUv2 losses as LibMTL writes them: masked CE, masked L1, 1 - cosine on valid pixels
        valid_b = (y["b"] != 0).float()
        valid_c = (y["c"] != 0).any(1).float()
        return (
            F.cross_entropy(a, y["a"], ignore_index=-1)
            + ((b - y["b"]).abs() * valid_b).sum() / valid_b.sum().clamp(min=1)
            + 1
            - (F.normalize(c, dim=1) * y["c"]).sum(1).mul(valid_c).sum() / valid_c.sum().clamp(min=1)
        )
    return (
        F.cross_entropy(a, y["a"])
        + F.binary_cross_entropy_with_logits(b.squeeze(1), y["b"])
        + F.mse_loss(c.squeeze(1), y["c"])
    )


def hand_step_fn(model: nn.Module, x, y, dense: bool) -> Callable[[], None]:
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    running = torch.zeros((), device=x.device)

    def step():
        nonlocal running
        loss = hand_losses(model(x), y, dense)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        running += loss.detach()

    return step


# --------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------


def step_memory(step: Callable[[], None], device: torch.device) -> tuple[float, float]:
    """(peak MiB allocated during 3 steps, MiB held before them): what a step adds is the difference."""
    torch.cuda.synchronize(device)
    held = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    for _ in range(3):
        step()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**20, held / 2**20


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, auto")
    p.add_argument(
        "--rounds", type=int, default=None, help="timed pairs per measurement (default 15 on CPU, 50 on CUDA)"
    )
    p.add_argument("--batch", type=int, default=None, help="batch size (default 8 on CPU, 64 on CUDA)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default 1 on CPU: a shared machine's other processes then stall no "
        "OpenMP region; torch's default on CUDA)",
    )
    p.add_argument("--size", type=int, default=None, help="image height and width (default 64 on CPU, 224 on CUDA)")
    p.add_argument("--warmup", type=int, default=3, help="warm-up steps per side (default 3)")
    p.add_argument(
        "--heads",
        choices=["auto", "dense", "vector"],
        default="auto",
        help="dense heads if mtlsearch has them (auto, default), or force one kind",
    )
    p.add_argument(
        "--max-seconds",
        type=float,
        default=30.0,
        help="retake CPU samples disturbed by other processes for this long (default 30)",
    )
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    rounds = args.rounds or (50 if cuda else 15)
    batch = args.batch or (64 if cuda else 8)
    if args.threads or not cuda:
        torch.set_num_threads(args.threads or 1)
    size = args.size or (224 if cuda else 64)
    if args.heads == "dense" and not dense_available():
        p.error("--heads dense: this mtlsearch has no dense task types / DenseHead")
    dense = dense_available() if args.heads == "auto" else args.heads == "dense"
    if cuda:
        torch.backends.cudnn.benchmark = True  # both sides alike: fastest kernels for fixed shapes

    log = lambda s="": print(s, flush=True)  # noqa: E731
    log(
        f"mtlsearch {mtlsearch.__version__}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"Python {platform.python_version()}"
    )
    log(f"device: {device}" + (f" ({torch.cuda.get_device_name(device)})" if cuda else f" ({cpu_model()})"))
    log(
        f"torch.get_num_threads() = {torch.get_num_threads()}, os.cpu_count() = {os.cpu_count()}; "
        f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    tasks = make_tasks(dense)
    log(
        f"ResNet-18, input 3x{size}x{size}, batch {batch}; tasks: {', '.join(f'{t.name} ({t.type})' for t in tasks)}; "
        f"{'DenseHead' if dense else 'linear'} heads; Equal weighting / summed losses, Adam lr {LR}; "
        f"{rounds} paired rounds, warm-up {args.warmup}"
    )
    x, y = make_batch(dense, batch, size, device)
    monitor = CpuMonitor(time.monotonic() + args.max_seconds)
    start = time.perf_counter()
    rows = []
    for family, hand_cls in (("hard_sharing", HandHardSharing), ("tree", HandTree)):
        torch.manual_seed(0)
        mtl = build_mtl(family, tasks, size)
        hand = hand_cls(tasks, size)
        n_mtl, n_hand = (sum(p.numel() for p in m.parameters()) for m in (mtl, hand))
        assert n_mtl == n_hand, (family, n_mtl, n_hand)
        tie(mtl, hand, family, make_batch(dense, 2, size, "cpu", seed=1)[0])
        mtl.to(device), hand.to(device)
        a, b = mtl_step_fn(mtl, tasks, x, y, device), hand_step_fn(hand, x, y, dense)
        r = summarize(
            types.SimpleNamespace(label="resnet18", judged=True),
            f"step {family}",
            ("mtlsearch", "hand"),
            compare(a, b, rounds, args.warmup, device, monitor),
            GOAL,
        )
        memory = None
        if cuda:
            (peak_a, held_a), (peak_b, held_b) = step_memory(a, device), step_memory(b, device)
            memory = {
                "mtlsearch_peak_mib": round(peak_a, 1),
                "hand_peak_mib": round(peak_b, 1),
                "mtlsearch_step_mib": round(peak_a - held_a, 1),
                "hand_step_mib": round(peak_b - held_b, 1),
            }
        log(
            f"  {family}: {n_mtl:,} parameters on both sides, outputs match; block computations per forward "
            f"{mtl.distinct_prefixes()}"
        )
        log(
            f"  step {family}: {r.a_ms:.2f} ms vs {r.b_ms:.2f} ms, ratio {r.ratio:.3f} [95% CI {r.ci_lo:.3f}-{r.ci_hi:.3f}; "
            f"IQR {r.q25:.3f}-{r.q75:.3f}] ({r.samples}x{r.inner}, {r.dropped} retaken, {r.disturbed} disturbed kept)  "
            f"{r.verdict}" + (f"; peak memory {memory}" if memory else "")
        )
        rows.append((family, n_mtl, r, memory))
        del mtl, hand, a, b
        if cuda:
            torch.cuda.empty_cache()

    log(
        f"\nmeasured in {time.perf_counter() - start:.0f} s; load average after "
        f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}\n"
    )
    mem_cols = " | mtlsearch peak MiB (step adds) | hand peak MiB (step adds)" if cuda else ""
    log(f"| candidate | params | mtlsearch ms | hand ms | ratio (paired median) | 95 % CI | pairs{mem_cols} |")
    log("|---|---:|---:|---:|---:|---|---|" + ("---:|---:|" if cuda else ""))
    for family, n, r, m in rows:
        mem = (
            (
                f" | {m['mtlsearch_peak_mib']:.0f} ({m['mtlsearch_step_mib']:.0f}) | {m['hand_peak_mib']:.0f} "
                f"({m['hand_step_mib']:.0f})"
            )
            if m
            else ""
        )
        log(
            f"| {family} | {n:,} | {r.a_ms:.2f} | {r.b_ms:.2f} | **{r.ratio:.3f}** | {r.ci_lo:.3f}-{r.ci_hi:.3f} | "
            f"{r.samples}x{r.inner}{mem} |"
        )
    summary = {
        "benchmark": "bench_backbones",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else cpu_model(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": batch,
        "size": size,
        "heads": "dense" if dense else "vector",
        "rounds": rounds,
        "goal": GOAL,
        "results": {
            family: {
                "params": n,
                "mtlsearch_ms": round(r.a_ms, 3),
                "hand_ms": round(r.b_ms, 3),
                "ratio": round(r.ratio, 4),
                "ci": [round(r.ci_lo, 4), round(r.ci_hi, 4)],
                "verdict": r.verdict,
                **(m or {}),
            }
            for family, n, r, m in rows
        },
    }
    log("\n" + json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
