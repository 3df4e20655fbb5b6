#!/usr/bin/env python
"""Cost of mtlsearch's loss weightings and gradient aggregators, against equal weighting and
against the same methods in torchjd 0.18 and LibMTL 1.1.5.

Measured in one run, on one model and one batch (hard sharing, 3 tasks, an MLP whose shared trunk
has about 0.52 M parameters, batch 128), with the trainer's own step (``training.make_step``):

1. ``methods``: for every method registered in ``mtlsearch.weighting.METHODS`` (looked up at run
   time), the training step with that method against the step with ``equal``, and against the
   same method done the way each peer library does it, on an identical copy of the model:

   * torchjd: aggregators through ``torchjd.autojac.mtl_backward`` (per-task gradients of the
     heads and of the shared feature, then the Jacobian of the trunk by ``torch.vmap`` over the
     stacked feature gradients) and ``torchjd.autojac.jac_to_grad(shared, aggregator)``; loss
     weightings through ``torchjd.scalarization`` (one backward of the scalarized loss);
   * LibMTL: the weighting class mixed into LibMTL's ``HPS`` architecture exactly as LibMTL's
     ``Trainer`` builds its model, then ``model.backward(losses, **weight_args)`` (its per-task
     ``loss.backward`` loop over the shared parameters, or over the representation for GradDrop).

   The judged ratio is mtlsearch / the faster peer (goal: <= 1.0). Before timing, one step of each
   side from identical weights is compared: the cosine between mtlsearch's and the peer's update
   of the shared parameters (1.000 = the same direction) tells whether like is compared with like.
2. ``jacobian``: ways to get the (T, P) matrix of per-task gradients of the shared parameters,
   each timed as forward + Jacobian against forward + one summed backward: (a) one
   ``autograd.grad`` per task over that task's parameters (what ``make_step`` does), (b) one
   ``autograd.grad(losses, params, grad_outputs=eye(T), is_grads_batched=True)``, (c) torchjd's
   ``mtl_backward`` and (c') its ``autojac.backward`` over every parameter, (d) the whole-model
   Jacobian (every task, every parameter) by a loop and (d') batched.
3. ``tree``: the same on a 2-branch tree (tasks a and b share every block; c shares ``block0``
   only), where "shared parameters only, grouped by the tasks that use them" and "the whole-model
   Jacobian" differ; plus the full step with one aggregator both ways.

Method (as ``bench_step.py``): fixed in-memory batch, Adam with lr = 0 on every side (each side
sees the same weights and the same batch at every step, so iterative solvers do the same work;
the optimizer still runs), warm-up, then interleaved samples (the functions of a group in
forward, then reverse order, alternately), each sample lasting >= ~20 ms; samples taken while
another process used the CPU are retaken during the first ``--max-seconds``. Reported: median
time per step of each side and median paired ratios with a 95 % bootstrap interval.

Peers are installed apart from mtlsearch, in ``benchmarks/.peers`` (``make bench-weighting``
does it: ``pip install --target benchmarks/.peers --no-deps torchjd==0.18.0 LibMTL==1.1.5 ...``);
this script puts that folder on ``sys.path`` and patches LibMTL at run time for torch 2.x (see
:func:`load_libmtl`). Without the peers it still runs the mtlsearch-only columns.

Run: ``make bench-weighting``; ``--quick`` for a smoke run (about 1 minute), ``--methods pcgrad,mgda``,
``--repeats N``, ``--section methods|jacobian|tree``, ``--out FILE`` to also write the tables.
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
import traceback
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PEERS = HERE / ".peers"
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import mtlsearch  # noqa: E402
from bench_step import TASKS, Config, CpuMonitor, build_mtl, clock, cpu_model, make_batch, n_params  # noqa: E402
from mtlsearch.models.heads import pool  # noqa: E402
from mtlsearch.training import make_optimizer, make_step, parameter_groups, resolve_device, task_parameters  # noqa: E402
from mtlsearch.weighting import METHODS, Aggregator, Weighting  # noqa: E402

NAMES = [t.name for t in TASKS]
T = len(TASKS)
CONFIG = Config("mlp", "mlp", (1, 28, 28), 352, 3, 128)  # trunk 784-352-352-352: 0.52 M parameters
GOAL = 1.0  # mtlsearch step / the faster peer's step
LR = 0.0  # see the module docstring: every step sees the same weights

# Methods the peers implement (mtlsearch name -> peer class name). Used to say which registered
# methods have a peer and which peer methods mtlsearch has not registered (yet).
TORCHJD_NAMES = {
    "equal": "scalarization.Sum", "static": "scalarization.Constant", "uncertainty": "scalarization.UW",
    "dwa": "scalarization.DWA", "rlw": "scalarization.Random", "imtl_l": "scalarization.IMTLL",
    "pcgrad": "PCGrad", "gradvac": "GradVac", "graddrop": "GradDrop", "imtl_g": "IMTLG",
    "aligned_mtl": "AlignedMTL", "mgda": "MGDA", "cagrad": "CAGrad", "upgrad": "UPGrad", "nash_mtl": "NashMTL",
}
LIBMTL_NAMES = {
    "equal": "EW", "uncertainty": "UW", "gradnorm": "GradNorm", "dwa": "DWA", "rlw": "RLW", "mgda": "MGDA",
    "pcgrad": "PCGrad", "gradvac": "GradVac", "graddrop": "GradDrop", "cagrad": "CAGrad", "imtl_g": "IMTL",
    "mgda_ub": "MGDA, rep_grad",
}


# --------------------------------------------------------------------------------------------
# Peers: torchjd and LibMTL from benchmarks/.peers, LibMTL patched for torch 2.x at run time
# --------------------------------------------------------------------------------------------


def add_peers_to_path() -> None:
    if PEERS.is_dir() and str(PEERS) not in sys.path:
        sys.path.append(str(PEERS))  # after the venv: torch, numpy, scipy stay the venv's


def load_torchjd():
    add_peers_to_path()
    import torchjd  # noqa: F401
    from torchjd import aggregation, autojac, scalarization

    return types.SimpleNamespace(A=aggregation, J=autojac, S=scalarization, version=_dist_version("torchjd"))


def load_libmtl():
    """Import LibMTL 1.1.5 with its two torch 2.x incompatibilities patched in memory (no file edited):

    1. ``LibMTL.model.resnet`` imports ``torchvision.models.utils``, removed from torchvision: a
       shim module with ``load_state_dict_from_url = torch.hub.load_state_dict_from_url`` is put in
       ``sys.modules`` first (``import LibMTL`` imports its models).
    2. ``AbsArchitecture.zero_grad_share_params`` calls ``encoder.zero_grad()``, which sets the
       gradients to ``None`` since torch 2.0; ``AbsWeighting._reset_grad`` then writes
       ``param.grad.data`` and fails. Patched to ``encoder.zero_grad(set_to_none=False)``.
    """
    add_peers_to_path()
    try:
        import torchvision.models.utils  # noqa: F401
    except ImportError:
        import torchvision.models

        shim = types.ModuleType("torchvision.models.utils")
        shim.load_state_dict_from_url = torch.hub.load_state_dict_from_url
        sys.modules["torchvision.models.utils"] = shim
        torchvision.models.utils = shim
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import LibMTL
    from LibMTL import weighting
    from LibMTL.architecture import HPS
    from LibMTL.architecture.abstract_arch import AbsArchitecture

    def zero_grad_share_params(self):
        self.encoder.zero_grad(set_to_none=False)

    AbsArchitecture.zero_grad_share_params = zero_grad_share_params
    return types.SimpleNamespace(W=weighting, HPS=HPS, module=LibMTL, version=_dist_version("LibMTL"))


def _dist_version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return "?"


# --------------------------------------------------------------------------------------------
# Building the three sides of a comparison from one mtlsearch model
# --------------------------------------------------------------------------------------------


class NoStep:
    """An optimizer that only clears gradients: one step then leaves the update in ``.grad``."""

    def __init__(self, params):
        self.params = list(params)

    def zero_grad(self, set_to_none: bool = True):
        for p in self.params:
            p.grad = None

    def step(self):
        pass


def optimizer_for(params, probe: bool):
    params = list(params)
    return NoStep(params) if probe else make_optimizer("adam", params, LR, 0.0)


def hyper(method) -> dict[str, Any]:
    try:
        return dict(method.hyperparameters())
    except Exception:
        return {}


def first(h: dict, keys: tuple[str, ...], default):
    for k in keys:
        if k in h and h[k] is not None:
            return h[k]
    return default


def losses_of(model, x, y):
    out = model(x)
    return [t.kind.loss(out[t.name], y[t.name]) for t in TASKS]


def shared_and_specific(model) -> tuple[list[nn.Parameter], list[list[nn.Parameter]]]:
    """Parameters used by every task, and each task's parameters used by it alone (hard sharing)."""
    per_task = task_parameters(model, NAMES)
    groups = parameter_groups(per_task)
    shared = [p for users, ps in groups if len(users) == T for p in ps]
    specific = [[p for users, ps in groups if users == (t,) for p in ps] for t in NAMES]
    return shared, specific


def trunk_and_heads(model) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """A hard-sharing model's parameters in one canonical order: trunk (block order), heads (task order)."""
    key = model.paths[NAMES[0]]
    trunk = [p for b, bn in enumerate(model._block_names) for p in model.blocks[bn][key[b]].parameters()]
    heads = [p for t in NAMES for p in model.heads[t].parameters()]
    return trunk, heads


def clone(model: nn.Module) -> nn.Module:
    """A deep copy; ``shared_feature`` (a non-leaf tensor left by the last forward) is dropped first."""
    if getattr(model, "shared_feature", None) is not None:
        model.shared_feature = None
    return copy.deepcopy(model)


MACHINERY = "(mean of rows)"  # not a method: the aggregation path with a trivial aggregator


def method_class(name: str):
    return MeanRows if name == MACHINERY else METHODS.get(name)


def build_method(name: str):
    cls = method_class(name)
    return cls(NAMES) if issubclass(cls, Weighting) else cls()


def mtl_side(base, name: str, x, y, probe: bool = False):
    model = clone(base)
    method = build_method(name)
    params = list(model.parameters()) + (list(method.parameters()) if isinstance(method, nn.Module) else [])
    step = make_step(model, TASKS, method, optimizer_for(params, probe))
    return (lambda: step(x, y)), model, lambda: trunk_and_heads(model)


def torchjd_spec(tj, name: str, method):
    """(kind, object) for the torchjd counterpart of mtlsearch's ``name``, or None."""
    A, S = tj.A, tj.S
    h = hyper(method)
    if name == MACHINERY:
        return "aggregator", A.Mean()
    if name == "equal":
        return "scalarizer", S.Sum()
    if name == "static":
        w = getattr(method, "weights", None) or {t: 1.0 for t in NAMES}
        return "scalarizer", S.Constant(torch.tensor([float(w[t]) for t in NAMES]))
    if name == "uncertainty":
        return "scalarizer", S.UW(T)
    if name == "dwa":
        return "scalarizer", S.DWA(temperature=float(first(h, ("temperature", "T"), 2.0)))
    if name == "rlw":
        return "scalarizer", S.Random()
    if name == "imtl_l":
        return "scalarizer", S.IMTLL(T)
    if name == "pcgrad":
        return "aggregator", A.PCGrad()
    if name == "gradvac":
        return "aggregator", A.GradVac(beta=float(first(h, ("beta",), 0.5)))
    if name == "graddrop":
        leak = first(h, ("leak",), None)
        if leak is not None and not isinstance(leak, torch.Tensor):
            leak = torch.full((T,), float(leak)) if np.isscalar(leak) else torch.tensor(leak, dtype=torch.float32)
        return "aggregator", A.GradDrop(leak=leak)
    if name == "imtl_g":
        return "aggregator", A.IMTLG()
    if name == "aligned_mtl":
        return "aggregator", A.AlignedMTL()
    if name == "mgda":
        return "aggregator", A.MGDA()
    if name == "cagrad":
        return "aggregator", A.CAGrad(c=float(first(h, ("c", "alpha"), 0.5)))
    if name == "upgrad":
        return "aggregator", A.UPGrad()
    if name == "nash_mtl":
        kw = {"optim_niter": int(first(h, ("max_iter", "optim_niter"), 20)),
              "update_weights_every": int(first(h, ("update_weights_every",), 1))}
        return "aggregator", A.NashMTL(n_tasks=T, **kw)
    return None


def torchjd_side(tj, base, name: str, x, y, probe: bool = False):
    spec = torchjd_spec(tj, name, build_method(name))
    if spec is None:
        return None
    kind, obj = spec
    model = clone(base)
    shared, specific = shared_and_specific(model)
    extra = list(obj.parameters()) if isinstance(obj, nn.Module) else []
    opt = optimizer_for(list(model.parameters()) + extra, probe)
    J = tj.J

    if kind == "scalarizer":
        if hasattr(obj, "step"):  # DWA: two finished epochs, so that its weights are computed (not its warm-up ones)
            for _ in range(2):
                obj(torch.ones(T, device=x.device))
                obj.step()

        def step():
            opt.zero_grad(set_to_none=True)
            obj(torch.stack(losses_of(model, x, y))).backward()
            opt.step()
    else:
        def step():
            opt.zero_grad(set_to_none=True)
            losses = losses_of(model, x, y)
            J.mtl_backward(losses, features=model.shared_feature, tasks_params=specific, shared_params=shared)
            J.jac_to_grad(shared, obj)
            opt.step()

    return step, model, lambda: trunk_and_heads(model)


class Pool(nn.Module):
    def forward(self, x):
        return pool(x)


def libmtl_spec(lm, name: str, method):
    """(class, weight_args, rep_grad) for LibMTL's counterpart of ``name``, or None."""
    W = lm.W
    h = hyper(method)
    if name == "equal":
        return W.EW, {}, False
    if name == "uncertainty":
        return W.UW, {}, False
    if name == "gradnorm":
        return W.GradNorm, {"alpha": float(first(h, ("alpha",), 1.5))}, False
    if name == "dwa":
        return W.DWA, {"T": float(first(h, ("temperature", "T"), 2.0))}, False
    if name == "rlw":
        dist = str(first(h, ("distribution", "dist"), "Normal"))
        dist = {"normal": "Normal", "uniform": "Uniform", "dirichlet": "Dirichlet", "bernoulli": "Bernoulli"}.get(dist.lower(), "Normal")
        return W.RLW, {"dist": dist}, False
    if name in ("mgda", "mgda_ub"):  # LibMTL's MGDA on representation gradients is MGDA-UB
        gn = "l2" if first(h, ("normalize",), False) is True else "none"
        return W.MGDA, {"mgda_gn": gn}, name == "mgda_ub"
    if name == "pcgrad":
        return W.PCGrad, {}, False
    if name == "gradvac":
        return W.GradVac, {"beta": float(first(h, ("beta",), 0.5))}, False
    if name == "graddrop":
        leak = first(h, ("leak",), 0.0)
        return W.GradDrop, {"leak": float(leak) if np.isscalar(leak) else 0.0}, True
    if name == "cagrad":
        return W.CAGrad, {"calpha": float(first(h, ("c", "alpha"), 0.5)), "rescale": 1}, False
    if name == "imtl_g":  # LibMTL's IMTL is the hybrid: IMTL-L loss scales + IMTL-G on the Jacobian
        return W.IMTL, {}, False
    return None


def libmtl_side(lm, base, name: str, x, y, device, probe: bool = False):
    spec = libmtl_spec(lm, name, build_method(name))
    if spec is None:
        return None
    cls, kwargs, rep_grad = spec
    key = base.paths[NAMES[0]]
    encoder = nn.Sequential(*[copy.deepcopy(base.blocks[bn][key[b]]) for b, bn in enumerate(base._block_names)], Pool())
    decoders = nn.ModuleDict({t: copy.deepcopy(base.heads[t]) for t in NAMES})

    class MTLmodel(lm.HPS, cls):  # as LibMTL.Trainer._prepare_model builds it
        def __init__(self):
            super().__init__(task_name=NAMES, encoder_class=lambda: encoder, decoders=decoders, rep_grad=rep_grad,
                             multi_input=False, device=device)
            self.init_param()

    model = MTLmodel().to(device)
    model.train()
    model.epoch = 2  # DWA and GradNorm take their real (non-warm-up) branch
    model.train_loss_buffer = np.ones((T, 3))
    opt = optimizer_for(model.parameters(), probe)

    def step():
        opt.zero_grad()
        preds = model(x)
        losses = torch.stack([t.kind.loss(preds[t.name], y[t.name]) for t in TASKS])
        model.backward(losses, **kwargs)
        opt.step()

    def order():
        return list(model.encoder.parameters()), [p for t in NAMES for p in model.decoders[t].parameters()]

    return step, model, order


def update_cosine(side_a, side_b) -> tuple[float, float]:
    """Cosine between two sides' updates (``.grad`` after one probe step) of the shared and of the
    task-specific parameters."""
    out = []
    (ta, ha), (tb, hb) = side_a(), side_b()
    for pa, pb in ((ta, tb), (ha, hb)):
        ga = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in pa])
        gb = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in pb])
        out.append(float(torch.nn.functional.cosine_similarity(ga, gb, dim=0)))
    return out[0], out[1]


# --------------------------------------------------------------------------------------------
# Timing: N functions interleaved
# --------------------------------------------------------------------------------------------


@dataclass
class Group:
    label: str
    names: list[str]
    times: dict[str, list[float]]  # seconds per call, one entry per sample
    inner: dict[str, int]
    dropped: int
    disturbed: int

    def median_ms(self, n: str) -> float:
        return 1e3 * statistics.median(self.times[n])

    def ratio(self, a: str, b: str) -> tuple[float, float, float]:
        """Median of the paired ratios a_i / b_i and its 95 % bootstrap interval."""
        paired = [x / y for x, y in zip(self.times[a], self.times[b])]
        rng = random.Random(0)
        boot = sorted(statistics.median(rng.choices(paired, k=len(paired))) for _ in range(2000))
        return statistics.median(paired), boot[49], boot[1949]


def measure(label: str, fns: dict[str, Callable[[], Any]], repeats: int, warmup: int, device, monitor: CpuMonitor,
            min_sample_s: float = 0.02) -> Group:
    monitor.wait_quiet()
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    inner = {}
    for n in names:
        est = clock(fns[n], 1, device)
        inner[n] = max(1, min(50, round(min_sample_s / max(est, 1e-6))))
    times = {n: [] for n in names}
    dropped = disturbed = 0
    gc.collect()
    k = 0
    while len(times[names[0]]) < repeats:
        order = names if k % 2 == 0 else names[::-1]
        k += 1
        s0, t0 = monitor.snapshot(), time.perf_counter()
        got = {n: clock(fns[n], inner[n], device) for n in order}
        if monitor.disturbed(s0, monitor.snapshot(), time.perf_counter() - t0):
            if monitor.active:
                dropped += 1
                monitor.wait_quiet()
                continue
            disturbed += 1
        for n in names:
            times[n].append(got[n])
    return Group(label, names, times, inner, dropped, disturbed)


def verdict(ratio: float, lo: float, hi: float, goal: float) -> str:
    if ratio > goal:
        return "MISSES" if lo > goal else "misses (within noise)"
    return "meets" if hi <= goal else "meets (within noise)"


def fmt_r(r: tuple[float, float, float]) -> str:
    return f"{r[0]:.2f} [{r[1]:.2f}-{r[2]:.2f}]"


# --------------------------------------------------------------------------------------------
# Section 1: every registered method
# --------------------------------------------------------------------------------------------


@dataclass
class MethodRow:
    name: str
    kind: str
    mtl_ms: float | None = None
    equal_ms: float | None = None
    vs_equal: tuple | None = None
    peers: dict[str, dict] = field(default_factory=dict)  # lib -> {ms, vs_equal, mtl_vs, cos_shared, cos_heads, cls}
    faster: str | None = None
    vs_faster: tuple | None = None
    verdict: str = ""
    note: str = ""


def run_methods(names, base, x, y, device, repeats, warmup, monitor, tj, lm, log) -> list[MethodRow]:
    rows = []
    for name in names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. cvxpy's "not DPP" warning at every torchjd NashMTL solve
            rows.append(one_method(name, base, x, y, device, repeats, warmup, monitor, tj, lm, log))
    return rows


def one_method(name, base, x, y, device, repeats, warmup, monitor, tj, lm, log) -> MethodRow:
    cls = method_class(name)
    row = MethodRow(name, "aggregator" if issubclass(cls, Aggregator) else "weighting")
    fns: dict[str, Callable] = {}
    try:
        build_method(name)
        torch.manual_seed(0)
        probe_mtl = mtl_side(base, name, x, y, probe=True)
        probe_mtl[0]()
        fns["equal"] = mtl_side(base, "equal", x, y)[0]
        fns["mtlsearch"] = mtl_side(base, name, x, y)[0]
    except Exception as err:  # a method still being written, or needing arguments
        row.note = f"mtlsearch side failed: {type(err).__name__}: {err}"
        log(f"  {name:<12} skipped ({row.note})")
        traceback.print_exc(limit=3)
        return row
    for lib, loader in (("torchjd", tj), ("LibMTL", lm)):
        if loader is None:
            continue
        try:
            torch.manual_seed(0)
            if lib == "torchjd":
                probe = torchjd_side(tj, base, name, x, y, probe=True)
            else:
                probe = libmtl_side(lm, base, name, x, y, device, probe=True)
            if probe is None:
                continue
            probe[0]()
            cos = update_cosine(probe_mtl[2], probe[2])
            side = torchjd_side(tj, base, name, x, y) if lib == "torchjd" else libmtl_side(lm, base, name, x, y, device)
            fns[lib] = side[0]
            peer_cls = TORCHJD_NAMES.get(name, "Mean") if lib == "torchjd" else LIBMTL_NAMES.get(name)
            row.peers[lib] = {"cos_shared": cos[0], "cos_heads": cos[1], "cls": peer_cls}
        except Exception as err:
            row.peers[lib] = {"error": f"{type(err).__name__}: {err}"}
            log(f"  {name:<12} {lib} side failed: {type(err).__name__}: {err}")
    try:
        g = measure(name, fns, repeats, warmup, device, monitor)
    except Exception as err:
        row.note = f"timing failed: {type(err).__name__}: {err}"
        log(f"  {name:<12} {row.note}")
        traceback.print_exc(limit=4)
        return row
    row.mtl_ms, row.equal_ms = g.median_ms("mtlsearch"), g.median_ms("equal")
    row.vs_equal = g.ratio("mtlsearch", "equal")
    timed_peers = [lib for lib in ("torchjd", "LibMTL") if lib in g.times]
    for lib in timed_peers:
        row.peers[lib].update(ms=g.median_ms(lib), vs_equal=g.ratio(lib, "equal"), mtl_vs=g.ratio("mtlsearch", lib))
    if timed_peers:
        row.faster = min(timed_peers, key=g.median_ms)
        row.vs_faster = row.peers[row.faster]["mtl_vs"]
        row.verdict = verdict(*row.vs_faster, GOAL)
    noise = f", {g.dropped} retaken" if g.dropped else ""
    noise += f", {g.disturbed} DISTURBED kept" if g.disturbed else ""
    peer_txt = "; ".join(
        f"{lib} {row.peers[lib]['ms']:.2f} ms (x{row.peers[lib]['vs_equal'][0]:.2f} equal; mtl/peer {fmt_r(row.peers[lib]['mtl_vs'])}; "
        f"cos {row.peers[lib]['cos_shared']:.3f})" for lib in timed_peers)
    log(f"  {name:<12} equal {row.equal_ms:6.2f} ms  mtlsearch {row.mtl_ms:6.2f} ms (x{fmt_r(row.vs_equal)} equal)  "
        f"{peer_txt}  [{g.inner['mtlsearch']}x{len(g.times['equal'])}{noise}] {row.verdict}")
    return row


def methods_markdown(rows: list[MethodRow]) -> str:
    lines = [
        "| method | kind | mtlsearch step | / equal (95 % CI) | torchjd step | / equal | LibMTL step | / equal | mtlsearch / faster peer (95 % CI) | verdict (<= 1.0) | cos of shared update vs torchjd, LibMTL |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        if r.mtl_ms is None:
            lines.append(f"| {r.name} | {r.kind} | - | - | - | - | - | - | - | - | {r.note} |")
            continue
        cells = []
        coss = []
        for lib in ("torchjd", "LibMTL"):
            p = r.peers.get(lib)
            if p and "ms" in p:
                cells += [f"{p['ms']:.2f} ms ({p['cls']})", f"{p['vs_equal'][0]:.2f}"]
                coss.append(f"{p['cos_shared']:.3f}")
            else:
                cells += ["-" if not p else "error", "-"]
                coss.append("-")
        faster = f"**{r.vs_faster[0]:.2f}** [{r.vs_faster[1]:.2f}-{r.vs_faster[2]:.2f}] vs {r.faster}" if r.vs_faster else "- (no peer)"
        lines.append(
            f"| {r.name} | {r.kind} | {r.mtl_ms:.2f} ms | {r.vs_equal[0]:.2f} [{r.vs_equal[1]:.2f}-{r.vs_equal[2]:.2f}] | "
            + " | ".join(cells) + f" | {faster} | {r.verdict or '-'} | {', '.join(coss)} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Section 1b: the aggregators alone, on the real (T, P) matrix of this model and batch
# --------------------------------------------------------------------------------------------


def run_aggregate(names, base, x, y, device, repeats, warmup, monitor, tj, log) -> list[tuple[str, str, Group]]:
    matrix = jacobian_fns(clone(base), x, y, None)["(a) loop, shared only"]()[0].detach()
    log(f"  matrix: {tuple(matrix.shape)} {matrix.dtype}")
    out = []
    for name in names:
        if not issubclass(method_class(name), Aggregator):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                agg = build_method(name)
                spec = torchjd_spec(tj, name, agg)
                if spec is None or spec[0] != "aggregator":
                    continue
                peer = spec[1]
                g = measure(name, {"mtlsearch": lambda: agg(matrix), "torchjd": lambda: peer(matrix)}, repeats, warmup, device, monitor,
                            min_sample_s=0.01)
            except Exception as err:
                log(f"  {name:<14} failed: {type(err).__name__}: {err}")
                continue
        label = TORCHJD_NAMES.get(name, "Mean")
        log(f"  {name:<14} mtlsearch {g.median_ms('mtlsearch'):7.2f} ms  torchjd {label} {g.median_ms('torchjd'):7.2f} ms  "
            f"ratio {fmt_r(g.ratio('mtlsearch', 'torchjd'))}")
        out.append((name, label, g))
    return out


def aggregate_markdown(rows) -> str:
    lines = ["| aggregator | mtlsearch | torchjd | mtlsearch / torchjd (95 % CI) |", "|---|---:|---:|---:|"]
    for name, label, g in rows:
        lines.append(f"| {name} | {g.median_ms('mtlsearch'):.2f} ms | {g.median_ms('torchjd'):.2f} ms ({label}) | **{g.ratio('mtlsearch', 'torchjd')[0]:.2f}** "
                     f"[{g.ratio('mtlsearch', 'torchjd')[1]:.2f}-{g.ratio('mtlsearch', 'torchjd')[2]:.2f}] |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Sections 2 and 3: Jacobian strategies
# --------------------------------------------------------------------------------------------


def flat_rows(grads: list[torch.Tensor | None], params: list[nn.Parameter], rows: int) -> torch.Tensor:
    return torch.cat([(g if g is not None else p.new_zeros((rows, *p.shape))).reshape(rows, -1) for g, p in zip(grads, params)], dim=1)


def jacobian_fns(model, x, y, tj, whole_only_extra: bool = False) -> dict[str, Callable]:
    """Each returns after building the (T, P) matrix (or matrices, one per group of tasks)."""
    per_task = task_parameters(model, NAMES)
    groups = [(users, ps) for users, ps in parameter_groups(per_task) if len(users) > 1]
    index = {t: i for i, t in enumerate(NAMES)}
    every = [p for p in model.parameters() if p.requires_grad]
    eye = torch.eye(T)

    def summed():
        losses = torch.stack(losses_of(model, x, y))
        torch.autograd.grad(losses.sum(), every)

    def loop_shared():  # what make_step does: one grad per task over its own parameters, then per group
        losses = losses_of(model, x, y)
        grads = {}
        for i, t in enumerate(NAMES):
            found = torch.autograd.grad(losses[i], per_task[t], retain_graph=i < T - 1, allow_unused=True)
            grads[t] = {id(p): torch.zeros_like(p) if g is None else g for p, g in zip(per_task[t], found)}
        return [torch.stack([torch.cat([grads[t][id(p)].reshape(-1) for p in ps]) for t in sorted(users, key=index.get)])
                for users, ps in groups]

    def batched_shared():  # one batched grad over the parameters of every group of >= 2 tasks
        losses = torch.stack(losses_of(model, x, y))
        params = [p for _, ps in groups for p in ps] + [p for t in NAMES for p in per_task[t] if all(p is not q for _, ps in groups for q in ps)]
        found = torch.autograd.grad(losses, params, grad_outputs=eye, is_grads_batched=True, allow_unused=True)
        by_id = {id(p): (g if g is not None else p.new_zeros((T, *p.shape))) for p, g in zip(params, found)}
        def rows(g, users):  # all tasks: the batched gradient as it is; else the rows of the users
            return g if len(users) == T else g[[index[t] for t in users]]

        return [torch.cat([rows(by_id[id(p)], users).reshape(len(users), -1) for p in ps], dim=1) for users, ps in groups]

    def loop_whole():  # every task, every parameter: (T, P_all), zeros where a task does not reach
        losses = losses_of(model, x, y)
        rows = []
        for i in range(T):
            found = torch.autograd.grad(losses[i], every, retain_graph=i < T - 1, allow_unused=True)
            rows.append(torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(every, found)]))
        return torch.stack(rows)

    def batched_whole():
        losses = torch.stack(losses_of(model, x, y))
        found = torch.autograd.grad(losses, every, grad_outputs=eye, is_grads_batched=True, allow_unused=True)
        return flat_rows(list(found), every, T)

    fns = {"summed backward": summed, "(a) loop, shared only": loop_shared, "(b) batched, shared only": batched_shared}
    if tj is not None:
        if len(groups) == 1 and len(groups[0][0]) == T:  # hard sharing: mtl_backward fits
            shared = groups[0][1]
            specific = [[p for p in per_task[t] if all(p is not q for q in shared)] for t in NAMES]

            def tj_mtl():
                losses = losses_of(model, x, y)
                tj.J.mtl_backward(losses, features=model.shared_feature, tasks_params=specific, shared_params=shared)
                m = torch.cat([p.jac.reshape(T, -1) for p in shared], dim=1)
                for p in every:
                    p.grad = None
                    if hasattr(p, "jac"):
                        del p.jac
                return m

            fns["(c) torchjd mtl_backward"] = tj_mtl

        def tj_all():
            losses = losses_of(model, x, y)
            tj.J.backward(losses, inputs=every)
            m = torch.cat([p.jac.reshape(T, -1) for p in every], dim=1)
            for p in every:
                del p.jac
            return m

        fns["(c') torchjd backward, all params"] = tj_all
    fns["(d) loop, whole model"] = loop_whole
    fns["(d') batched, whole model"] = batched_whole
    return fns


def run_jacobian(label, model, x, y, device, repeats, warmup, monitor, tj, log) -> Group:
    fns = jacobian_fns(model, x, y, tj)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for f in fns.values():  # check each runs before timing
            f()
    msgs = sorted({str(w.message).split("\n")[0][:160] for w in caught})
    for m in msgs:
        log(f"    warning: {m}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = measure(label, fns, repeats, warmup, device, monitor)
    base = "summed backward"
    for n in g.names:
        r = g.ratio(n, base)
        log(f"  {label:<13} {n:<34} {g.median_ms(n):7.2f} ms  x{fmt_r(r)} summed backward  [{g.inner[n]}x{len(g.times[n])}]")
    if g.dropped or g.disturbed:
        log(f"  ({g.dropped} samples retaken, {g.disturbed} disturbed kept)")
    return g


def jacobian_markdown(groups: list[Group]) -> str:
    names = []
    for g in groups:
        for n in g.names:
            if n not in names:
                names.append(n)
    head = "| strategy | " + " | ".join(f"{g.label}: forward + it | / forward + summed backward (95 % CI)" for g in groups) + " |"
    lines = [head, "|---|" + "---:|---:|" * len(groups)]
    for n in names:
        cells = []
        for g in groups:
            if n in g.times:
                r = g.ratio(n, "summed backward")
                cells += [f"{g.median_ms(n):.2f} ms", f"**{r[0]:.2f}** [{r[1]:.2f}-{r[2]:.2f}]"]
            else:
                cells += ["-", "-"]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# The tree: the full step with one aggregator, shared-only (make_step) vs the whole-model Jacobian


class MeanRows(Aggregator):
    """Fallback aggregator (not registered) when mtlsearch has none of the preferred ones yet."""

    label = "mean of rows"

    def __call__(self, matrix):
        return matrix.mean(0)


TREE_AGGREGATORS = ("upgrad", "pcgrad", "mgda", "imtl_g", "cagrad")


def tree_step_fns(base_tree, name: str, x, y, tj) -> dict[str, Callable]:
    agg = build_method(name) if name in METHODS else MeanRows()
    fns = {}
    m0 = clone(base_tree)
    eq = build_method("equal")
    s0 = make_step(m0, TASKS, eq, optimizer_for(m0.parameters(), False))
    fns["equal step"] = lambda: s0(x, y)
    m1 = clone(base_tree)
    s1 = make_step(m1, TASKS, copy.deepcopy(agg), optimizer_for(m1.parameters(), False))
    fns[f"mtlsearch {name} (shared only, per group)"] = lambda: s1(x, y)

    m2 = clone(base_tree)
    every = list(m2.parameters())
    o2 = optimizer_for(every, False)
    a2 = copy.deepcopy(agg)

    def whole():
        o2.zero_grad(set_to_none=True)
        losses = losses_of(m2, x, y)
        rows = []
        for i in range(T):
            found = torch.autograd.grad(losses[i], every, retain_graph=i < T - 1, allow_unused=True)
            rows.append(torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(every, found)]))
        update = a2(torch.stack(rows))
        offset = 0
        for p in every:
            p.grad = update[offset: offset + p.numel()].view_as(p).clone()
            offset += p.numel()
        o2.step()

    fns[f"same {name}, whole-model Jacobian"] = whole
    if tj is not None and name in TORCHJD_NAMES:
        spec = torchjd_spec(tj, name, agg)
        if spec and spec[0] == "aggregator":
            m3 = clone(base_tree)
            every3 = list(m3.parameters())
            o3 = optimizer_for(every3, False)

            def tj_whole():
                o3.zero_grad(set_to_none=True)
                tj.J.backward(losses_of(m3, x, y), inputs=every3)
                tj.J.jac_to_grad(every3, spec[1])
                o3.step()

            fns[f"torchjd {TORCHJD_NAMES[name]}: backward + jac_to_grad (whole model)"] = tj_whole
    return fns


def run_tree_steps(base_tree, x, y, device, repeats, warmup, monitor, tj, log) -> tuple[str, Group]:
    name = next((n for n in TREE_AGGREGATORS if n in METHODS), "mean")
    fns = tree_step_fns(base_tree, name, x, y, tj)
    for f in fns.values():
        f()
    g = measure("tree steps", fns, repeats, warmup, device, monitor)
    for n in g.names:
        log(f"  tree step     {n:<58} {g.median_ms(n):7.2f} ms  x{fmt_r(g.ratio(n, 'equal step'))} equal step")
    return name, g


def tree_steps_markdown(g: Group) -> str:
    first_agg = g.names[1]
    lines = ["| step (tree) | median | / equal step (95 % CI) | / mtlsearch (95 % CI) |", "|---|---:|---:|---:|"]
    for n in g.names:
        lines.append(f"| {n} | {g.median_ms(n):.2f} ms | **{g.ratio(n, 'equal step')[0]:.2f}** [{g.ratio(n, 'equal step')[1]:.2f}-{g.ratio(n, 'equal step')[2]:.2f}] | "
                     f"{fmt_r(g.ratio(n, first_agg))} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    p.add_argument("--repeats", type=int, default=None, help="timed samples per function and group (default 40; 5 with --quick)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up calls per function (default 3; 1 with --quick)")
    p.add_argument("--quick", action="store_true", help="smoke run: 5 samples per group; too few to judge")
    p.add_argument("--methods", default=None, help="comma-separated method names (default: every registered method)")
    p.add_argument("--section", action="append", choices=["methods", "aggregate", "jacobian", "tree"], help="run only these sections")
    p.add_argument("--max-seconds", type=float, default=None, help="retake samples disturbed by other processes during the first N s (default 240; 10 with --quick)")
    p.add_argument("--no-peers", action="store_true", help="do not load torchjd / LibMTL")
    p.add_argument("--out", default=None, help="also write the markdown tables to this file")
    args = p.parse_args(argv)

    device = resolve_device(args.device)
    repeats = args.repeats or (5 if args.quick else 40)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    budget = args.max_seconds if args.max_seconds is not None else (10.0 if args.quick else 240.0)
    sections = args.section or ["methods", "aggregate", "jacobian", "tree"]
    log = lambda s="": print(s, flush=True)  # noqa: E731

    tj = lm = None
    if not args.no_peers:
        try:
            tj = load_torchjd()
        except Exception as err:
            log(f"torchjd not available ({type(err).__name__}: {err}); run `make bench-weighting` to install the peers")
        try:
            lm = load_libmtl()
        except Exception as err:
            log(f"LibMTL not available ({type(err).__name__}: {err}); run `make bench-weighting` to install the peers")

    log(f"mtlsearch {getattr(mtlsearch, '__version__', '?')}, torch {torch.__version__}, Python {platform.python_version()}, "
        f"torchjd {tj.version if tj else '-'}, LibMTL {lm.version if lm else '-'}")
    log(f"device: {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else f" ({cpu_model()})"))
    log(f"torch.get_num_threads() = {torch.get_num_threads()}, os.cpu_count() = {os.cpu_count()}")

    torch.manual_seed(0)
    base = build_mtl(CONFIG, "hard_sharing").to(device)
    trunk, heads = trunk_and_heads(base)
    x, y = make_batch(CONFIG, device)
    log(f"model: hard sharing, {CONFIG.describe()}; {sum(p.numel() for p in trunk):,} shared parameters, "
        f"{sum(p.numel() for p in heads):,} in the heads; tasks {', '.join(f'{t.name} ({t.type})' for t in TASKS)}; Adam lr {LR}")
    log(f"samples per function: {repeats} (interleaved), warm-up {warmup}{' [quick]' if args.quick else ''}; "
        f"samples disturbed by other processes retaken during the first {budget:.0f} s")
    log(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")

    registered = METHODS.names()
    wanted = [m.strip() for m in args.methods.split(",")] if args.methods else registered
    unknown = [m for m in wanted if m not in registered]
    if unknown:
        log(f"not registered in mtlsearch (skipped): {', '.join(unknown)}")
    names = [m for m in wanted if m in registered]
    if not args.methods or "mean" in wanted:
        names.append(MACHINERY)
    missing_peer = sorted((set(TORCHJD_NAMES) | set(LIBMTL_NAMES)) - set(registered))
    log(f"registered methods: {', '.join(registered)}")
    if missing_peer:
        log(f"methods a peer implements that mtlsearch has not registered: {', '.join(missing_peer)}")

    start = time.perf_counter()
    monitor = CpuMonitor(time.monotonic() + budget)
    report = []
    if "methods" in sections:
        log("\n[methods] training step per method (hard sharing)")
        rows = run_methods(names, base, x, y, device, repeats, warmup, monitor, tj, lm, log)
        report += ["### Training step per method", "", methods_markdown(rows), ""]
        judged = [r for r in rows if r.vs_faster and r.name != MACHINERY]
        missed = [r for r in judged if r.vs_faster[0] > GOAL]
        summary = f"{len(judged) - len(missed)}/{len(judged)} methods with a peer meet <= {GOAL:.1f}x the faster peer"
        if missed:
            summary += ": missed " + ", ".join(f"{r.name} {r.vs_faster[0]:.2f} ({r.verdict})" for r in missed)
        report += [summary, ""]
    if "aggregate" in sections and tj is not None:
        log("\n[aggregate] the aggregator alone on the shared-parameter gradient matrix of this model and batch")
        report += ["### Aggregators alone (same matrix)", "", aggregate_markdown(
            run_aggregate(names, base, x, y, device, repeats, warmup, monitor, tj, log)), ""]
    if "jacobian" in sections:
        log("\n[jacobian] per-task gradient matrix, hard sharing")
        jg = [run_jacobian("hard sharing", clone(base), x, y, device, repeats, warmup, monitor, tj, log)]
    if "tree" in sections:
        torch.manual_seed(0)
        tree = build_mtl(CONFIG, "tree").to(device)
        groups = parameter_groups(task_parameters(tree, NAMES))
        by_users = ", ".join("+".join(u) + f": {sum(p.numel() for p in ps):,}" for u, ps in groups)
        log(f"\n[tree] parameters by the tasks that use them: {by_users}")
        if "jacobian" in sections:
            jg.append(run_jacobian("tree", tree, x, y, device, repeats, warmup, monitor, tj, log))
        agg_name, tg = run_tree_steps(tree, x, y, device, repeats, warmup, monitor, tj, log)
    if "jacobian" in sections:
        report += ["### Jacobian strategies", "", jacobian_markdown(jg), ""]
    if "tree" in sections:
        report += [f"### Tree: full step with `{agg_name}`, shared only vs whole-model Jacobian", "", tree_steps_markdown(tg), ""]

    log(f"\nload average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; measured in {time.perf_counter() - start:.0f} s, "
        f"{monitor.waited:.0f} s of it waiting for other processes to leave the CPU\n")
    text = "\n".join(report)
    log(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
