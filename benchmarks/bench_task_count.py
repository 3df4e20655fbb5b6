#!/usr/bin/env python
"""The full training step of every Gramian-based aggregator at T = 3, 8 and 16 tasks: mtlsearch's
trainer against torchjd 0.18's two paths and LibMTL (issue 15, "the step").

Sides, each on an identical copy of the model, with the same batch and Adam (lr = 0, so every
step sees the same weights and iterative solvers do the same work):

* ``mtlsearch``: ``training.make_step`` (one ``autograd.grad`` per task over that task's
  parameters, the ``(T, P)`` matrix of the shared parameters, the aggregator, one optimizer step);
* ``autojac``: ``torchjd.autojac.mtl_backward(losses, features)`` then
  ``jac_to_grad(shared, aggregator)`` (the Jacobian of the trunk by ``vmap`` over the stacked
  feature gradients);
* ``autogram``: ``Engine(trunk modules)``, ``compute_gramian(losses)``, the method's Gramian
  ``Weighting``, then ``losses.backward(weights)`` (no ``(T, P)`` matrix; heads get the weighted
  gradient too, as in torchjd's documented usage);
* ``gramian path`` (not a peer: what a Gramian path would cost in mtlsearch's trainer, with its
  semantics): per group of parameters shared by two or more tasks, torchjd's ``Engine`` over the
  group's modules gives the Gramian of its tasks' gradients, the method's Gramian ``Weighting``
  the weights, and one ``autograd.grad`` of ``sum_t w_t L_t`` over the group's tasks gives the
  group's update; parameters of one task get their own gradient (one more pass). On hard sharing
  that is autogram with unweighted heads; on a tree, each branch is aggregated among its own tasks,
  as mtlsearch does, where ``autogram`` aggregates only the trunk
  (docs/weighting.md#how-the-trainer-gets-the-per-task-gradients);
* ``LibMTL`` (GitHub, the commit of bench_weighting.py; hard sharing only): its ``HPS``
  architecture with the method's weighting class mixed in, ``model.backward(losses, **kwargs)``
  (one ``backward`` per task into a ``(T, P)`` matrix of the encoder's gradients), for the
  methods it has: UPGrad, MGDA, PCGrad, CAGrad, FairGrad, Aligned-MTL and Nash-MTL.

Models: hard sharing with the 4 x 512 MLP (input 64, batch 256) at T = 3, 8, 16; a CNN (4 x 32
channels, 1 x 32 x 32, batch 64) and a tree (tasks split in two groups after block 1) at T = 8.
Method: warm-up, then ``--rounds`` rounds; in each the sides run in a fresh random order, each
timing ``inner`` consecutive steps. Reported per cell: the median step time of each side and the
median paired ratio mtlsearch / side with a 95 % bootstrap interval. Memory: on CUDA, the peak of
the caching allocator over one step per side (``torch.cuda.max_memory_allocated`` minus the
memory held before the step); on CPU, torch's allocations are outside ``tracemalloc``, so the
peak is read from ``torch.profiler`` (``profile_memory``: the largest cumulative allocation).

Run: ``.venv/bin/python benchmarks/bench_task_count.py`` (needs the peers of ``make
bench-weighting`` in benchmarks/.peers); ``--quick``; ``--device cuda``; ``--methods upgrad,mgda``;
``--tasks 3,8,16``; ``--cells mlp/tree/8,cnn/hard_sharing/8`` (instead of ``--tasks``);
``--json FILE``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / ".peers"))

import mtlsearch  # noqa: E402
from mtlsearch.training import make_optimizer, make_step, resolve_device  # noqa: E402
from mtlsearch.weighting import AGGREGATORS  # noqa: E402

METHODS = ["upgrad", "mgda", "pcgrad", "imtl_g", "cagrad", "dualproj", "fairgrad", "aligned_mtl", "nash_mtl"]


def torchjd_pair(name: str, t: int):
    """(aggregator for autojac, Gramian weighting for autogram or None) in torchjd 0.18."""
    import torchjd.aggregation as A
    from torchjd._linalg._dual_cone import QuadprogProjector

    exact = QuadprogProjector(norm_eps=0.0, reg_eps=0.0)
    table: dict[str, Callable[[], tuple]] = {
        "upgrad": lambda: (A.UPGrad(projector=exact), A.UPGradWeighting(projector=exact)),
        "mgda": lambda: (A.MGDA(), A.MGDAWeighting()),
        "pcgrad": lambda: (A.PCGrad(), A.PCGradWeighting()),
        "imtl_g": lambda: (A.IMTLG(), A.IMTLGWeighting()),
        "cagrad": lambda: (A.CAGrad(c=0.4), A.CAGradWeighting(c=0.4)),
        "dualproj": lambda: (A.DualProj(projector=exact), A.DualProjWeighting(projector=exact)),
        "fairgrad": lambda: (A.FairGrad(alpha=1.0), A.FairGradWeighting(alpha=1.0)),
        "aligned_mtl": lambda: (A.AlignedMTL(), A.AlignedMTLWeighting()),
        "nash_mtl": lambda: (A.NashMTL(n_tasks=t, optim_niter=20), None),
    }
    return table[name]()


def space(t: int, backbone: dict, input_shape: tuple[int, ...]) -> dict:
    """A mtlsearch space of T regression tasks on a factory-free tensor problem."""
    tasks = [{"name": f"t{i}", "type": "regression"} for i in range(t)]
    return {
        "name": f"bench{t}",
        "data": {"factory": "bench_task_count:make_data", "seed": 0, "t": t, "shape": list(input_shape)},
        "backbone": backbone,
        "tasks": tasks,
        "search_space": {"families": ["hard_sharing", "tree"], "weightings": ["equal"],
                         "training": {"epochs": 1, "batch_size": 64, "optimizer": "adam", "lr": 1e-3}},
        "objectives": ["delta_mtl"],
    }


def make_data(seed: int = 0, t: int = 3, shape=(64,)):
    from mtlsearch.data import MTLData, TensorMTLDataset
    from mtlsearch.tasks import TaskSpec

    g = torch.Generator().manual_seed(seed)
    split = TensorMTLDataset(torch.randn(8, *shape, generator=g), {f"t{i}": torch.randn(8, generator=g) for i in range(t)})
    return MTLData(split, split, split, [TaskSpec(f"t{i}", "regression") for i in range(t)])


class Side:
    def __init__(self, label: str, step: Callable[[], None], model: nn.Module):
        self.label, self.step, self.model = label, step, model
        self.shared: list[int] = []  # positions in model.parameters() of the parameters every task uses


#: LibMTL (GitHub) counterparts: class and ``backward`` arguments, set as in bench_weighting.py's
#: agreement section. Not IMTL-G (LibMTL's IMTL is its hybrid with IMTL-L) nor DualProj (absent).
LIBMTL = {
    "upgrad": ("UPGrad", {"UPGrad_norm_eps": 0.0, "UPGrad_reg_eps": 0.0}),
    "mgda": ("MGDA", {"mgda_gn": "none"}),
    "pcgrad": ("PCGrad", {}),
    "cagrad": ("CAGrad", {"calpha": 0.4, "rescale": 1}),
    "fairgrad": ("FairGrad", {"FairGrad_alpha": 1.0}),
    "aligned_mtl": ("Aligned_MTL", {}),
    "nash_mtl": ("Nash_MTL", {"update_weights_every": 1, "optim_niter": 20, "max_norm": 0.0}),
}
_LIBMTL: list = []  # the GitHub LibMTL, imported once


def libmtl_side(base, tasks, name: str, x, y, device) -> Side | None:
    """LibMTL's step: its ``HPS`` architecture (the candidate's trunk and heads, copied) mixed with
    the method's weighting class, as ``LibMTL.Trainer`` builds it; hard sharing only."""
    if name not in LIBMTL or not (HERE / ".peers" / "libmtl_git").is_dir():
        return None
    from bench_weighting import LIBMTL_GIT, Pool, _symeig_shim, libmtl_model, load_libmtl_git

    if not _LIBMTL:
        _LIBMTL.append(load_libmtl_git(LIBMTL_GIT))
    lm = _LIBMTL[0]
    cls_name, kwargs = LIBMTL[name]
    names = [t.name for t in tasks]
    kinds = [t.kind for t in tasks]
    key = base.paths[names[0]]
    encoder = nn.Sequential(*[copy.deepcopy(base.blocks[b][key[i]]) for i, b in enumerate(base._block_names)], Pool())
    decoders = nn.ModuleDict({t: copy.deepcopy(base.heads[t]) for t in names})

    model = libmtl_model(lm, getattr(lm.W, cls_name), names, encoder, decoders, device)
    model.train()
    opt = make_optimizer("adam", list(model.parameters()), 0.0, 0.0)

    def step():
        with _symeig_shim() if name == "aligned_mtl" else contextlib.nullcontext():
            opt.zero_grad()
            preds = model(x)
            losses = torch.stack([k.loss(preds[n], y[n]) for k, n in zip(kinds, names)])
            model.backward(losses, **kwargs)
            opt.step()

    side = Side("LibMTL", step, model)
    shared = {id(p) for p in model.encoder.parameters()}
    side.shared = [i for i, p in enumerate(model.parameters()) if id(p) in shared]
    return side


def build_sides(problem, params, name: str, x, y, device) -> list[Side]:
    candidate = problem.replay(params)
    base = candidate.build_model(0).to(device)
    tasks = problem.tasks
    names = [t.name for t in tasks]
    sides = []

    m = copy.deepcopy(base)
    opt = make_optimizer("adam", list(m.parameters()), 0.0, 0.0)
    step = make_step(m, tasks, AGGREGATORS.get(name)(), opt)
    sides.append(Side("mtlsearch", lambda: step(x, y), m))
    if device.type == "cuda":  # the default there is the batched Jacobian: the per-task loop for comparison
        m1 = copy.deepcopy(base)
        opt1 = make_optimizer("adam", list(m1.parameters()), 0.0, 0.0)
        step1 = make_step(m1, tasks, AGGREGATORS.get(name)(), opt1, jacobian="loop")
        sides.append(Side("mtlsearch-loop", lambda: step1(x, y), m1))

    agg, weighting = torchjd_pair(name, len(tasks))
    from torchjd.autojac import jac_to_grad, mtl_backward

    def losses_of(model):
        out = model(x)
        return [k.loss(out[n], y[n]) for k, n in zip([t.kind for t in tasks], names)]

    def shared_params(model):
        per_task = model.task_parameters()
        ids = [{id(p) for p in per_task[n]} for n in names]
        common = set.intersection(*ids)
        return [p for p in model.parameters() if id(p) in common]

    m2 = copy.deepcopy(base)
    opt2 = make_optimizer("adam", list(m2.parameters()), 0.0, 0.0)
    shared2 = shared_params(m2)

    def autojac_step():
        opt2.zero_grad(set_to_none=True)
        losses = losses_of(m2)
        mtl_backward(losses, features=m2.shared_feature)
        jac_to_grad(shared2, agg)
        opt2.step()

    if m2.shared_feature is None and False:
        pass
    sides.append(Side("autojac", autojac_step, m2))

    if weighting is not None:
        from torchjd.autogram import Engine

        m3 = copy.deepcopy(base)
        opt3 = make_optimizer("adam", list(m3.parameters()), 0.0, 0.0)
        shared_ids = {id(p) for p in shared_params(m3)}
        trunk = [mod for mod in m3.modules() if list(mod.parameters(recurse=False)) and
                 all(id(p) in shared_ids for p in mod.parameters(recurse=False))]
        engine = Engine(*trunk, batch_dim=None)

        def autogram_step():
            opt3.zero_grad(set_to_none=True)
            losses = torch.stack(losses_of(m3))
            gramian = engine.compute_gramian(losses)
            losses.backward(weighting(gramian))
            opt3.step()

        sides.append(Side("autogram", autogram_step, m3))
        sides.append(gramian_side(base, tasks, weighting, x, y))
    per_task = base.task_parameters()
    common = set.intersection(*({id(p) for p in per_task[n]} for n in names))
    shared = [i for i, p in enumerate(base.parameters()) if id(p) in common]
    for side in sides:
        side.shared = shared
    if params["family"] == "hard_sharing":
        try:
            peer = libmtl_side(base, tasks, name, x, y, device)
        except ImportError as err:  # LibMTL's own needs (scipy, cvxpy...) missing, e.g. on a bare GPU machine
            print(f"LibMTL side skipped: {err}", flush=True)
            peer = None
        if peer is not None:
            sides.append(peer)
    return sides


#: sides that are mtlsearch's own alternatives, not peers: the goal is judged against the others
OWN = ("mtlsearch-loop", "gramian path")


def gramian_side(base, tasks, weighting, x, y) -> Side:
    """A Gramian path with mtlsearch's semantics (see the module docstring), built on torchjd's
    ``Engine``: one engine per parameter group shared by two or more tasks."""
    from torchjd.autogram import Engine

    from mtlsearch.training import parameter_groups

    model = copy.deepcopy(base)
    opt = make_optimizer("adam", list(model.parameters()), 0.0, 0.0)
    names = [t.name for t in tasks]
    kinds = [t.kind for t in tasks]
    plan, own = [], []
    for users, params in parameter_groups(model.task_parameters()):
        if len(users) == 1:
            own += params
            continue
        ids = {id(p) for p in params}
        modules = [mod for mod in model.modules() if list(mod.parameters(recurse=False))
                   and all(id(p) in ids for p in mod.parameters(recurse=False))]
        plan.append((Engine(*modules, batch_dim=None), [names.index(u) for u in users], params))

    def step():  # every pass starts from its own tasks' losses, as mtlsearch's loop does
        opt.zero_grad(set_to_none=True)
        out = model(x)
        parts = [k.loss(out[n], y[n]) for k, n in zip(kinds, names)]
        weights = [weighting(engine.compute_gramian(torch.stack([parts[r] for r in rows]))) for engine, rows, _ in plan]
        for (_, rows, params), w in zip(plan, weights):
            total = sum(w[j] * parts[r] for j, r in enumerate(rows))
            for p, g in zip(params, torch.autograd.grad(total, params, retain_graph=True)):
                p.grad = g
        if own:
            for p, g in zip(own, torch.autograd.grad(sum(parts), own)):
                p.grad = g
        opt.step()

    return Side("gramian path", step, model)


def clock(device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def peak_memory(side: Side, device) -> float:
    """MiB allocated at the peak of one step, above what was held before it."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        side.step()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    from torch.profiler import ProfilerActivity, profile

    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)  # kineto prints start/stop lines on fd 2
    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            side.step()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    events = sorted((e for e in prof.events() if e.cpu_memory_usage), key=lambda e: e.time_range.start)
    level = top = 0
    for e in events:  # allocations (+) and frees (-) of the step, in time order
        level += e.cpu_memory_usage
        top = max(top, level)
    return top / 2**20


def measure(sides: list[Side], rounds: int, device, min_sample: float = 0.02) -> dict[str, list[float]]:
    for s in sides:  # warm-up, and the number of steps per sample
        for _ in range(3):
            s.step()
    start = clock(device)
    sides[0].step()
    inner = max(1, int(min_sample / max(clock(device) - start, 1e-6)))
    times: dict[str, list[float]] = {s.label: [] for s in sides}
    order = list(sides)
    rng = random.Random(0)
    for _ in range(rounds):
        rng.shuffle(order)
        for s in order:
            t0 = clock(device)
            for _ in range(inner):
                s.step()
            times[s.label].append((clock(device) - t0) / inner)
    return times


def cosine(a: Side, b: Side) -> float:
    """Cosine between the two sides' last updates of the parameters every task shares: 1.000 means
    the same direction (every side's weights stay fixed, lr = 0; torchjd's mean scale does not
    matter)."""
    pa, pb = list(a.model.parameters()), list(b.model.parameters())
    va = torch.cat([pa[i].grad.flatten() for i in a.shared]).double()
    vb = torch.cat([pb[i].grad.flatten() for i in b.shared]).double()
    return float(va @ vb / (va.norm() * vb.norm()).clamp_min(1e-300))


def ratio(a: list[float], b: list[float]) -> tuple[float, float, float]:
    rs = [x / y for x, y in zip(a, b)]
    rng = random.Random(1)
    boots = sorted(statistics.median(rng.choices(rs, k=len(rs))) for _ in range(1000))
    return statistics.median(rs), boots[25], boots[974]


CONFIGS = {
    "mlp": ({"name": "mlp", "width": 512, "depth": 4}, (64,), 256),
    "cnn": ({"name": "cnn", "channels": 32, "depth": 4}, (1, 32, 32), 64),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--tasks", default="3,8,16")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--cells", help="model/family/T cells, comma-separated (replaces --tasks and the CNN and tree)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", help="also write the rows as JSON to this file")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    torch.set_num_threads(torch.get_num_threads())
    sys.path.insert(0, str(HERE))  # the factory of the spaces above
    methods = args.methods.split(",")
    rounds = 3 if args.quick else args.rounds
    cells = [("mlp", "hard_sharing", int(t)) for t in args.tasks.split(",")]
    if not args.quick:
        cells += [("cnn", "hard_sharing", 8), ("mlp", "tree", 8)]
    if args.cells:
        cells = [(m, f, int(t)) for m, f, t in (c.split("/") for c in args.cells.split(","))]
    print(f"# bench_task_count: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"device {device}, threads {torch.get_num_threads()}, rounds {rounds}")
    rows = []
    for backbone, family, t in cells:
        spec, shape, batch = CONFIGS[backbone]
        problem, _ = mtlsearch.load(space(t, spec, shape))
        params = {"family": family, "weighting": "equal"}
        if family == "tree":
            blocks = len(problem.backbone.block_names)
            params.update({f"tree.t{i}.block{b}": 0 if b < 2 or i < t // 2 else 1 for i in range(1, t) for b in range(blocks)})
        g = torch.Generator().manual_seed(2)
        x = torch.randn(batch, *shape, generator=g).to(device)
        y = {f"t{i}": torch.randn(batch, generator=g).to(device) for i in range(t)}
        for name in methods:
            try:
                sides = build_sides(problem, params, name, x, y, device)
            except ImportError as err:  # a peer's optional solver is missing (e.g. cvxpy on a bare GPU machine)
                print(f"{backbone}/{family} T={t:<2} {name:<11} skipped: {err}", flush=True)
                continue
            for side in list(sides[1:]):
                try:
                    side.step()
                except RuntimeError as err:  # e.g. a path that cannot take this model
                    print(f"{backbone}/{family} T={t:<2} {name:<11} {side.label} fails: {str(err)[:120]}", flush=True)
                    sides.remove(side)
            times = measure(sides, rounds, device)
            mem = {s.label: peak_memory(s, device) for s in sides}
            cos = {s.label: cosine(sides[0], s) for s in sides[1:]}
            ours = times["mtlsearch"]
            row = {"model": f"{backbone}/{family}", "T": t, "method": name,
                   "median_ms": {k: 1e3 * statistics.median(v) for k, v in times.items()},
                   "ratio": {k: ratio(ours, v) for k, v in times.items() if k != "mtlsearch"},
                   "peak_mib": mem, "cosine": cos}
            fastest = min(row["ratio"].values(), key=lambda r: -r[0]) if row["ratio"] else (1.0, 1.0, 1.0)
            peers_only = [r[0] for k, r in row["ratio"].items() if k not in OWN]
            row["vs_fastest_peer"] = max(peers_only) if peers_only else None
            rows.append(row)
            peers = "  ".join(f"{k} {v[0]:.2f}x [{v[1]:.2f}, {v[2]:.2f}]" for k, v in row["ratio"].items())
            ms = " ".join(f"{k} {v:.2f}" for k, v in row["median_ms"].items())
            mib = " ".join(f"{k} {v:.1f}" for k, v in mem.items())
            peers += "  cos " + " ".join(f"{v:.3f}" for v in cos.values())
            print(f"{backbone}/{family} T={t:<2} {name:<11} ms: {ms} | mtlsearch/peer: {peers} | peak MiB: {mib}",
                  flush=True)
            del fastest
    worst = max((r["vs_fastest_peer"] for r in rows if r["vs_fastest_peer"] is not None), default=None)
    print(f"# worst ratio mtlsearch / fastest peer over every cell: {worst:.2f}x (goal <= 1.0)")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": str(device), "rounds": rounds, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
