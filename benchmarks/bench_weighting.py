#!/usr/bin/env python
"""Cost of mtlsearch's loss weightings and gradient aggregators, against equal weighting and
against the same methods in torchjd 0.18 and LibMTL 1.1.5; and how closely their results agree
with torchjd 0.18 and LibMTL's GitHub source.

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

4. ``agreement`` (no timing; float64 throughout; about 1.5 minutes): the update (or the weights)
   of each method that a peer also has, against the peer's, as the max relative difference
   ``||mtlsearch - c x peer|| / ||c x peer||`` and the min cosine over the cases, where ``c`` puts
   both on one convention (mtlsearch's updates are sum-scale: T x a mean-scale peer's; the other
   conventions are named per row, see :func:`torchjd_pairs` and :func:`libmtl_model_cases`).
   Verdict: agree when <= 1e-6, else the design difference that explains the gap.

   * torchjd: aggregators on 12 random and 12 conflicting matrices (T = 2, 3, 5; rows of norms
     spread over e^(+-2)), stateful ones on 8 sequences of 10 drifting matrices;
   * LibMTL from GitHub (commit ``LIBMTL_GIT_COMMIT``, which has FAMO, DB-MTL, STCH, ExcessMTL,
     SDMGrad, MoCo, MoDo, FairGrad, UPGrad; the PyPI 1.1.5 does not): its source tree is read from
     ``--libmtl-git`` (``make bench-weighting`` extracts ``LibMTL/`` of that commit from git into
     ``benchmarks/.peers/libmtl_git``) and imported under the name ``LibMTL`` while 1.1.5's modules
     are set aside (:func:`load_libmtl_git`). FAMO, STCH and GLS get 6 sequences of 40 random
     positive loss vectors (the weights are ``d objective / d losses`` of a leaf loss vector); the
     others drive a tiny hard-sharing MLP (360 shared parameters, float64, parameters fixed) over
     8 batches, mtlsearch through ``training.make_step`` and LibMTL through its HPS architecture
     and ``backward``, and the shared parameters' gradients (or the returned weights) are compared.

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
``--repeats N``, ``--section methods|aggregate|jacobian|tree|agreement``, ``--libmtl-git PATH``, ``--out FILE`` to
also write the tables.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import importlib.util
import io
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
from bench_step import TASKS, Config, CpuMonitor, clock, cpu_model, make_batch, n_params, tree_params  # noqa: E402
from mtlsearch.families.paths import HardSharing, Tree  # noqa: E402
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
    _torchvision_shim()
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


def _torchvision_shim() -> None:
    try:
        import torchvision.models.utils  # noqa: F401
    except ImportError:
        import torchvision.models

        shim = types.ModuleType("torchvision.models.utils")
        shim.load_state_dict_from_url = torch.hub.load_state_dict_from_url
        sys.modules["torchvision.models.utils"] = shim
        torchvision.models.utils = shim


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


def build_mtl(cfg: Config, family: str) -> nn.Module:
    """``bench_step.build_mtl`` for the families' ``sample(trial, tasks, backbone)`` (bench_step
    still passes ``backbone.block_names``)."""
    from optuna.trial import FixedTrial

    backbone = cfg.backbone()
    if family == "hard_sharing":
        fam, trial = HardSharing(), FixedTrial({})
    else:
        fam, trial = Tree(max_groups=2), FixedTrial(tree_params(backbone.block_names))
    return fam.build(fam.sample(trial, NAMES, backbone), backbone, TASKS)


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


def libmtl_model(lm, cls, names, encoder: nn.Module, decoders: nn.ModuleDict, device, rep_grad: bool = False):
    """LibMTL's ``HPS`` architecture with the weighting class ``cls`` mixed in, as
    ``LibMTL.Trainer._prepare_model`` builds it, on ``device``."""

    class MTLmodel(lm.HPS, cls):
        def __init__(self):
            super().__init__(task_name=names, encoder_class=lambda: encoder, decoders=decoders, rep_grad=rep_grad,
                             multi_input=False, device=device)
            self.init_param()

    return MTLmodel().to(device)


def libmtl_side(lm, base, name: str, x, y, device, probe: bool = False):
    spec = libmtl_spec(lm, name, build_method(name))
    if spec is None:
        return None
    cls, kwargs, rep_grad = spec
    key = base.paths[NAMES[0]]
    encoder = nn.Sequential(*[copy.deepcopy(base.blocks[bn][key[b]]) for b, bn in enumerate(base._block_names)], Pool())
    decoders = nn.ModuleDict({t: copy.deepcopy(base.heads[t]) for t in NAMES})

    model = libmtl_model(lm, cls, NAMES, encoder, decoders, device, rep_grad)
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
# Section 4: agreement with the peers (numbers, not times)
# --------------------------------------------------------------------------------------------

LIBMTL_GIT_COMMIT = "4336804847eaa5e0b924b743d76beec7ac3fdc97"  # LibMTL on GitHub, 2025-05-14
LIBMTL_GIT = PEERS / "libmtl_git"  # `make bench-weighting` extracts LibMTL/ of that commit here
AGREE = 1e-6  # "agree": max relative difference of the updates (or weights) at most this
TINY = Config("tiny", "mlp", (1, 4, 4), 12, 2, 24)  # trunk 16-12-12: 360 shared parameters
MEAN = "x T (the peer averages: mean scale)"


@dataclass
class Agreement:
    peer: str
    method: str  # mtlsearch's method, with the hyperparameters used on both sides
    peer_method: str
    cases: str
    convention: str  # what was applied to put both on one convention
    why: str = ""  # non-empty: the two differ by design, and why
    rel: float = 0.0  # max over the cases of ||mtlsearch - peer|| / ||peer||
    cos: float = 1.0  # min over the cases of the cosine
    n: int = 0
    failed: str = ""

    def add(self, a: torch.Tensor, b: torch.Tensor) -> None:
        a, b = a.detach().double().reshape(-1).cpu(), b.detach().double().reshape(-1).cpu()
        na, nb = float(a.norm()), float(b.norm())
        if nb > 0:
            rel = float((a - b).norm()) / nb
        else:
            rel = 0.0 if na == 0 else float("inf")
        if na > 0 and nb > 0:
            cos = float(a @ b) / (na * nb)
        else:
            cos = 1.0 if na == nb else 0.0
        self.rel, self.cos, self.n = max(self.rel, rel), min(self.cos, cos), self.n + 1

    @property
    def verdict(self) -> str:
        if self.failed:
            return f"not compared: {self.failed}"
        if self.rel <= AGREE:
            return f"agree (<= {AGREE:.0e})"
        return f"differs by design: {self.why}" if self.why else "DIFFERS (no known convention explains it)"


def agreement_markdown(rows: list[Agreement]) -> str:
    out = []
    for peer in dict.fromkeys(r.peer for r in rows):
        out += [f"#### {peer}", "", "| mtlsearch | peer | cases | max rel. diff | min cos | convention applied | verdict |",
                "|---|---|---|---:|---:|---|---|"]
        for r in rows:
            if r.peer == peer:
                cells = [r.method, r.peer_method, r.cases, f"{r.rel:.1e}", f"{r.cos:.6f}", r.convention, r.verdict]
                out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        out.append("")
    return "\n".join(out)


def _conflicting(g: torch.Generator, t: int, p: int) -> torch.Tensor:
    """Rows ``s_t (+-u + 0.5 n_t)``: a common direction with alternating signs (cosines near -0.8
    between rows of opposite sign), norms spread over e^(+-2), full rank."""
    u = torch.randn(p, generator=g, dtype=torch.float64)
    u = u / u.norm() * p**0.5
    signs = torch.tensor([1.0 if i % 2 == 0 else -1.0 for i in range(t)], dtype=torch.float64)
    noise = torch.randn(t, p, generator=g, dtype=torch.float64)
    scales = torch.exp(torch.empty(t, 1, dtype=torch.float64).uniform_(-2, 2, generator=g))
    return scales * (signs[:, None] * u + 0.5 * noise)


def _random(g: torch.Generator, t: int, p: int) -> torch.Tensor:
    scales = torch.exp(torch.empty(t, 1, dtype=torch.float64).uniform_(-2, 2, generator=g))
    return scales * torch.randn(t, p, generator=g, dtype=torch.float64)


SHAPES = ((2, 8), (3, 30), (5, 100), (3, 400))


def agreement_cases(seed: int = 0, per_kind: int = 12) -> list[torch.Tensor]:
    """``per_kind`` random and ``per_kind`` conflicting float64 matrices over :data:`SHAPES`."""
    g = torch.Generator().manual_seed(seed)
    cases = []
    for make in (_random, _conflicting):
        cases += [make(g, *SHAPES[k % len(SHAPES)]) for k in range(per_kind)]
    return cases


def agreement_sequences(seed: int = 1, count: int = 8, steps: int = 10) -> list[list[torch.Tensor]]:
    """``count`` sequences of ``steps`` matrices of one shape each (half random, half conflicting),
    each step the first matrix plus fresh noise of 0.3 its size, as minibatch gradients drift."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for k in range(count):
        t, p = SHAPES[k % len(SHAPES)]
        base = (_random if k % 2 == 0 else _conflicting)(g, t, p)
        out.append([base + 0.3 * base.norm(dim=1, keepdim=True) / p**0.5 * torch.randn(t, p, generator=g, dtype=torch.float64)
                    for _ in range(steps)])
    return out


@dataclass
class Pair:
    """One comparison on matrices: ``mtl(T)`` and ``peer(T)`` build callables ``G -> vector``;
    the check is ``mtl(G) == factor(G) * peer(G)``."""

    method: str
    peer_method: str
    mtl: Callable[[int], Callable[[torch.Tensor], torch.Tensor]]
    peer: Callable[[int], Callable[[torch.Tensor], torch.Tensor]]
    convention: str
    factor: Callable[[torch.Tensor], float] = lambda G: float(G.shape[0])
    why: str = ""
    stateful: bool = False
    seeded: bool = False  # random: both sides get the same torch seed before each call
    only_t: int | None = None  # compare on matrices of this many rows only


def _mtl(name: str, **kw) -> Callable[[int], Callable]:
    return lambda t: METHODS.get(name)(**kw)


def _gram_weighting(w) -> Callable[[torch.Tensor], torch.Tensor]:
    """torchjd's matrix weightings that take ``G1 G2^T`` (MoDo, SDMGrad), fed ``G G^T``; update ``w @ G``."""
    return lambda G: w(G @ G.T) @ G


def _linear_losses(G: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Losses ``1 + G theta`` at ``theta = 0``: their gradients are exactly the rows of ``G``."""
    return 1.0 + G @ theta


class _PatchedEps(nn.Module):
    """mtlsearch's ExcessMTL with another eps in ``sqrt(s + eps)``, for one comparison."""

    def __init__(self, tasks, step_size: float, eps: float):
        super().__init__()
        from mtlsearch.weighting import excess_mtl

        self.module, self.eps = excess_mtl, eps
        self.inner = excess_mtl.ExcessMTL(tasks, step_size=step_size)

    def __call__(self, losses, context=None):
        original = self.module.excess_risk
        self.module.excess_risk = lambda g, s: original(g, s, eps=self.eps)
        try:
            return self.inner(losses, context)
        finally:
            self.module.excess_risk = original


class _EpsExcess:
    """:class:`_PatchedEps` on a matrix: its rows become the loss gradients (:func:`_linear_losses`)."""

    def __init__(self, t: int, step_size: float, eps: float):
        self.method = _PatchedEps([f"t{i}" for i in range(t)], step_size, eps)

    def __call__(self, G: torch.Tensor) -> torch.Tensor:
        from mtlsearch.weighting import StepContext

        theta = torch.zeros(G.shape[1], dtype=G.dtype, requires_grad=True)
        ctx = StepContext({t: [theta] for t in self.method.inner.tasks}, [theta], None)
        return self.method(_linear_losses(G, theta), ctx)


def torchjd_pairs(tj) -> list[Pair]:
    A = tj.A
    from torchjd.linalg import QuadprogProjector

    def exact():
        return QuadprogProjector(norm_eps=0.0, reg_eps=0.0)

    exact_txt = "exact projector `QuadprogProjector(norm_eps=0, reg_eps=0)` (default adds a 1e-4 ridge)"
    pairs = [
        Pair("upgrad", "UPGrad(projector=exact)", _mtl("upgrad"), lambda t: A.UPGrad(projector=exact()), f"{MEAN}; {exact_txt}"),
        Pair("upgrad", "UPGrad() (defaults)", _mtl("upgrad"), lambda t: A.UPGrad(), f"{MEAN}; torchjd's default projector",
             why="torchjd's default projector adds `1e-4 I` to the normalised Gram matrix (docs/weighting.md#upgrad)"),
        Pair("dualproj", "DualProj(projector=exact)", _mtl("dualproj"), lambda t: A.DualProj(projector=exact()), f"{MEAN}; {exact_txt}"),
        Pair("mgda", "MGDA() (epsilon 1e-3, 100 iterations)", _mtl("mgda"), lambda t: A.MGDA(), MEAN,
             why="torchjd's Frank-Wolfe loop stops at epsilon = 1e-3; mtlsearch solves the QP exactly"),
        Pair("mgda", "MGDA(epsilon=1e-12, max_iters=2000)", _mtl("mgda"), lambda t: A.MGDA(epsilon=1e-12, max_iters=2000), MEAN,
             why="Frank-Wolfe converges sublinearly: not at rounding after 2,000 iterations either"),
        Pair("cagrad (c = 0.4)", "CAGrad(c=0.4)", _mtl("cagrad", c=0.4), lambda t: A.CAGrad(c=0.4), "x T / (1 + c^2) (mean scale, no `1 / (1 + c^2)`)",
             factor=lambda G: G.shape[0] / (1 + 0.4**2),
             why="torchjd solves the dual with cvxpy/Clarabel (tolerance ~1e-8 on the weights); mtlsearch exactly"),
        Pair("imtl_g", "IMTLG()", _mtl("imtl_g"), lambda t: A.IMTLG(), MEAN),
        Pair("aligned_mtl", "AlignedMTL() (scale_mode min)", _mtl("aligned_mtl"), lambda t: A.AlignedMTL(), MEAN),
        Pair("config", "ConFIG()", _mtl("config"), lambda t: A.ConFIG(), "none (both: sum of the projections)", factor=lambda G: 1.0),
        Pair("fairgrad (alpha = 0.5)", "FairGrad(alpha=0.5)", _mtl("fairgrad", alpha=0.5), lambda t: A.FairGrad(alpha=0.5),
             "x ||G G^T||_F^(alpha / (1 + alpha)) (mtlsearch normalises the Gram matrix)",
             factor=lambda G: float(torch.linalg.norm(G @ G.T)) ** (0.5 / 1.5),
             why="torchjd solves with `scipy.optimize.least_squares` to its default tolerances (~1e-8); mtlsearch by Newton to rounding"),
        Pair("fairgrad (alpha = 1)", "FairGrad(alpha=1)", _mtl("fairgrad", alpha=1.0), lambda t: A.FairGrad(alpha=1.0),
             "x ||G G^T||_F^(1/2) (mtlsearch normalises the Gram matrix)",
             factor=lambda G: float(torch.linalg.norm(G @ G.T)) ** 0.5,
             why="torchjd solves with `scipy.optimize.least_squares` to its default tolerances (~1e-8); mtlsearch by Newton to rounding"),
        Pair("fairgrad (alpha = 2)", "FairGrad(alpha=2)", _mtl("fairgrad", alpha=2.0), lambda t: A.FairGrad(alpha=2.0),
             "x ||G G^T||_F^(2/3) (mtlsearch normalises the Gram matrix)",
             factor=lambda G: float(torch.linalg.norm(G @ G.T)) ** (2.0 / 3.0),
             why="torchjd solves with `scipy.optimize.least_squares` to its default tolerances (~1e-8); mtlsearch by Newton to rounding"),
        Pair("pcgrad", "PCGrad()", _mtl("pcgrad"), lambda t: A.PCGrad(), "none (both sum the projected rows); same torch seed before each call",
             factor=lambda G: 1.0, seeded=True),
        Pair("gradvac (beta = 0.01)", "GradVac(beta=0.01)", _mtl("gradvac", beta=0.01), lambda t: A.GradVac(beta=0.01),
             "none (both sum); T = 2 only (the visiting orders draw `randperm(T)` here, `randperm(T - 1)` in torchjd)",
             factor=lambda G: 1.0, stateful=True, only_t=2),
        Pair("graddrop", "GradDrop()", _mtl("graddrop"), lambda t: A.GradDrop(), "none (both sum); same torch seed before each call",
             factor=lambda G: 1.0, seeded=True),
        Pair("nash_mtl (20 iterations)", "NashMTL(max_norm=0, optim_niter=20)", _mtl("nash_mtl", max_iter=20),
             lambda t: A.NashMTL(n_tasks=t, max_norm=0.0, optim_niter=20),
             "x ||G G^T||_F^(1/2): torchjd (as the authors' code) solves `alpha_t (Q alpha)_t = 1` on the raw Gram matrix "
             "(update norm sqrt(T)), mtlsearch on `Q / ||Q||_F`; no clipping (max_norm 0)",
             factor=lambda G: float(torch.linalg.norm(G @ G.T)) ** 0.5, stateful=True,
             why="torchjd's at most 20 ECOS solves of a linearised problem are not converged; mtlsearch's damped Newton is "
                 "(next row: the same equation solved by torchjd's FairGrad(alpha = 1))"),
        Pair("nash_mtl (20 iterations)", "FairGrad(alpha=1): the same equation", _mtl("nash_mtl", max_iter=20),
             lambda t: A.FairGrad(alpha=1.0), "x ||G G^T||_F^(1/2) (as the row above)",
             factor=lambda G: float(torch.linalg.norm(G @ G.T)) ** 0.5, stateful=True,
             why="`scipy.optimize.least_squares` tolerances (as FairGrad above)"),
        Pair("modo (gamma 0.1, rho 0.1)", "MoDoWeighting(0.1, 0.1) fed G G^T", _mtl("modo", gamma=0.1, rho=0.1),
             lambda t: _gram_weighting(A.MoDoWeighting(gamma=0.1, rho=0.1)), f"{MEAN}; G1 G2^T := G G^T (one batch)", stateful=True),
        Pair("pcd (tau 0.02, beta 0.999)", "PCD(0.02, 0.999)", _mtl("pcd"), lambda t: A.PCD(), "x T (torchjd rescales to ||g_1||, mtlsearch to T ||g_1||)",
             stateful=True),
        Pair("cr_mogm (base upgrad, alpha 0.9)", "CRMOGMWeighting(UPGradWeighting(exact), 0.9)", _mtl("cr_mogm", base="upgrad", alpha=0.9),
             lambda t: A.GramianWeightedAggregator(A.CRMOGMWeighting(A.UPGradWeighting(projector=exact()), alpha=0.9)),
             f"{MEAN}; {exact_txt}", stateful=True),
        Pair("sdmgrad (lam 0.3)", "SDMGradWeighting(lambda_=0.3) fed G G^T (20 SGD steps)", _mtl("sdmgrad", lam=0.3),
             lambda t: _gram_weighting(A.SDMGradWeighting(lambda_=0.3)), f"{MEAN}; the three batches := one",
             stateful=True, why="torchjd estimates w* by 20 warm-started projected SGD steps (lr 10, momentum 0.5); mtlsearch solves exactly"),
        Pair("sdmgrad (lam 0.3)", "SDMGradWeighting(lambda_=0.3, lr=0.3, n_iter=500)", _mtl("sdmgrad", lam=0.3),
             lambda t: _gram_weighting(A.SDMGradWeighting(lambda_=0.3, lr=0.3, n_iter=500)), f"{MEAN}; the three batches := one",
             why="with a smaller step torchjd's iterates approach mtlsearch's exact w* (lr 10 overshoots: its iterates jump "
                 "between vertices of the simplex), but are not at rounding after 500 steps"),
        Pair("excess_mtl (step 0.01), weights", "ExcessMTLWeighting(0.01, n_warmup_steps=1)",
             lambda t: _EpsExcess(t, 0.01, 1e-7), lambda t: A.ExcessMTLWeighting(robust_step_size=0.01, n_warmup_steps=1),
             "weights x T (simplex vs sum T); gradients fed as losses `1 + G theta`; mtlsearch's eps 1e-8 set to torchjd's 1e-7; "
             "torchjd's `n_warmup_steps=1` = mtlsearch's first-estimate baseline", stateful=True,
             why="torchjd divides by `baseline + 1e-7`, mtlsearch by the baseline"),
        Pair("excess_mtl (step 0.01), weights", "ExcessMTLWeighting(0.01) (defaults: no warm-up)",
             lambda t: _EpsExcess(t, 0.01, 1e-8), lambda t: A.ExcessMTLWeighting(robust_step_size=0.01),
             "weights x T; gradients fed as losses `1 + G theta`", stateful=True,
             why="torchjd's first call already steps with the raw (unnormalised) estimate; mtlsearch and LibMTL keep it as the baseline"),
    ]
    return pairs


def run_pair(pair: Pair, cases: list[torch.Tensor], sequences: list[list[torch.Tensor]]) -> Agreement:
    if pair.stateful:
        label = f"{len(sequences)} sequences x {len(sequences[0])} steps (random, conflicting)"
    else:
        label = f"{len(cases)} matrices ({len(cases) // 2} random, {len(cases) // 2} conflicting)"
    runs = sequences if pair.stateful else [[G] for G in cases]
    if pair.only_t is not None:
        runs = [run for run in runs if run[0].shape[0] == pair.only_t]
        label = f"{len(runs)} sequences x {len(runs[0])} steps, T = {pair.only_t}" if pair.stateful else f"{len(runs)} matrices, T = {pair.only_t}"
    row = Agreement("torchjd 0.18", pair.method, pair.peer_method, label, pair.convention, pair.why)
    try:
        for k, run in enumerate(runs):
            t = run[0].shape[0]
            mtl, peer = pair.mtl(t), pair.peer(t)
            for s, G in enumerate(run):
                if pair.seeded:
                    torch.manual_seed(1000 * k + s)
                a = mtl(G)
                if pair.seeded:
                    torch.manual_seed(1000 * k + s)
                b = peer(G)
                row.add(a, pair.factor(G) * b)
    except Exception as err:  # a peer API that changed, a solver that failed
        row.failed = f"{type(err).__name__}: {str(err)[:120]}"
    return row


# LibMTL (GitHub): loss vectors for the loss-only weightings, a tiny model for the others


def load_libmtl_git(path: Path):
    """Import the LibMTL source tree at ``path`` (its ``LibMTL/`` folder) under the name ``LibMTL``,
    then put LibMTL 1.1.5's modules back: both are used in one process. The classes keep their
    own modules."""
    saved = {k: v for k, v in sys.modules.items() if k == "LibMTL" or k.startswith("LibMTL.")}
    for k in saved:
        del sys.modules[k]
    sys.path.insert(0, str(path))
    stub = types.ModuleType("torch_geometric")
    try:
        add_peers_to_path()
        _torchvision_shim()
        if importlib.util.find_spec("torch_geometric") is None:  # LibMTL.trainer imports it (graph data loaders only)
            sys.modules["torch_geometric"] = stub
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import LibMTL
            from LibMTL import weighting
            from LibMTL.architecture import HPS
        if not str(Path(LibMTL.__file__).resolve()).startswith(str(Path(path).resolve())):
            raise ImportError(f"LibMTL imported from {LibMTL.__file__}, not from {path}")
        return types.SimpleNamespace(W=weighting, HPS=HPS, module=LibMTL, version=f"GitHub {LIBMTL_GIT_COMMIT[:12]}")
    finally:
        sys.path.remove(str(path))
        for k in [k for k in sys.modules if k == "LibMTL" or k.startswith("LibMTL.")]:
            del sys.modules[k]
        sys.modules.update(saved)
        if sys.modules.get("torch_geometric") is stub:
            del sys.modules["torch_geometric"]


def _loss_sequences(seed: int = 2, count: int = 6, steps: int = 40) -> list[torch.Tensor]:
    """``count`` sequences of ``steps`` positive loss vectors (T = 3), each a decaying trend per
    task times log-normal noise, as training losses fall."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        start = torch.exp(torch.empty(T, dtype=torch.float64).uniform_(-2, 2, generator=g))
        rate = torch.empty(T, dtype=torch.float64).uniform_(0.0, 0.05, generator=g)
        k = torch.arange(steps, dtype=torch.float64)[:, None]
        noise = torch.exp(0.2 * torch.randn(steps, T, generator=g, dtype=torch.float64))
        out.append(start * torch.exp(-rate * k) * noise)
    return out


class _LossOnly:
    """A LibMTL weighting driven without a model: ``weights(losses)`` runs its ``backward`` on a
    leaf loss vector and returns ``d(objective)/d(losses)``, the weights it puts on each loss."""

    def __init__(self, cls, **attrs):
        class Peer(cls):
            pass

        self.peer = Peer()
        self.peer.task_num, self.peer.device, self.peer.rep_grad = T, torch.device("cpu"), False
        for k, v in attrs.items():
            setattr(self.peer, k, v)
        self.peer.init_param()

    def weights(self, losses: torch.Tensor, **kwargs) -> torch.Tensor:
        leaf = losses.detach().clone().requires_grad_(True)
        self.peer.backward(leaf, **kwargs)
        return leaf.grad


def libmtl_loss_rows(lmg) -> list[Agreement]:
    rows = []
    seqs = _loss_sequences()
    label = f"{len(seqs)} sequences x {len(seqs[0])} positive loss vectors (T = 3)"
    W = lmg.W

    # FAMO: the peer's update_w(next losses) before the next backward = mtlsearch's consecutive-batch convention
    famo = Agreement("LibMTL (GitHub)", "famo (lr 0.025, decay 0.001)", "FAMO(FAMO_w_lr=0.025, FAMO_w_gamma=0.001)", label,
                     "weights / T (LibMTL's sum to 1); `update_w(L_k+1)` called before step k+1's `backward` "
                     "(mtlsearch's convention; LibMTL's trainer passes the same batch's losses after the step)")
    for seq in seqs:
        mtl = METHODS.get("famo")(NAMES, lr=0.025, decay=0.001).double()
        peer = _LossOnly(W.FAMO)
        for k, losses in enumerate(seq):
            if k:
                peer.peer.update_w(losses)
            b = peer.weights(losses, FAMO_w_lr=0.025, FAMO_w_gamma=0.001)
            famo.add(mtl(losses) / T, b)
    rows.append(famo)

    # STCH: all of mtlsearch's warm-up steps are LibMTL's epoch == warmup_epoch (the one it averages)
    warm = 10
    stch = Agreement("LibMTL (GitHub)", f"stch (mu 1.0, warmup {warm} steps)", "STCH(STCH_mu=1.0, STCH_warmup_epoch=1)", label,
                     f"LibMTL's `epoch` set to 1 (= warmup_epoch: the losses it averages) for the first {warm} steps, then 2; "
                     "both multiply by T; shift 1e-8 (LibMTL 1e-20) kept",
                     why="the shift: mtlsearch `log(L + 1e-8)`, LibMTL `log(L / n + 1e-20)`")
    for seq in seqs:
        mtl = METHODS.get("stch")(NAMES, mu=1.0, warmup=warm).double()
        peer = _LossOnly(W.STCH, epoch=1)
        for k, losses in enumerate(seq):
            peer.peer.epoch = 1 if k < warm else 2
            with contextlib.redirect_stdout(io.StringIO()):  # it prints its nadir vector
                b = peer.weights(losses, STCH_mu=1.0, STCH_warmup_epoch=1)
            stch.add(mtl(losses), b)
    rows.append(stch)

    gls = Agreement("LibMTL (GitHub)", "gls", "GLS()", label,
                    "weights / T (LibMTL minimises the geometric mean, mtlsearch T x it); shift 1e-8 (LibMTL none) kept",
                    why="the shift 1e-8 on the losses (LibMTL has none)")
    for seq in seqs:
        mtl = METHODS.get("gls")(NAMES)
        peer = _LossOnly(W.GLS)
        for losses in seq:
            gls.add(mtl(losses) / T, peer.weights(losses))
    rows.append(gls)
    return rows


def _tiny_batches(count: int, seed: int = 3):
    out = []
    for k in range(count):
        x, y = make_batch(TINY, torch.device("cpu"), seed=seed + k)
        out.append((x.double(), {n: (v.double() if v.is_floating_point() else v) for n, v in y.items()}))
    return out


def _libmtl_tiny(lmg, cls, base):
    key = base.paths[NAMES[0]]
    encoder = nn.Sequential(*[copy.deepcopy(base.blocks[bn][key[b]]) for b, bn in enumerate(base._block_names)], Pool())
    decoders = nn.ModuleDict({t: copy.deepcopy(base.heads[t]) for t in NAMES})

    class MTLmodel(lmg.HPS, cls):  # as LibMTL.Trainer._prepare_model builds it
        def __init__(self):
            super().__init__(task_name=NAMES, encoder_class=lambda: encoder, decoders=decoders, rep_grad=False,
                             multi_input=False, device=torch.device("cpu"))
            self.init_param()

    model = MTLmodel()
    model.train()
    model.epoch = 0
    return model


@dataclass
class ModelCase:
    """mtlsearch's ``method`` through the trainer's step vs LibMTL's ``cls`` through ``backward``,
    on the tiny model (float64, parameters fixed), ``steps`` batches in a row."""

    method: str
    peer_method: str
    build: Callable[[], Any]  # -> mtlsearch Weighting or Aggregator
    cls: str
    kwargs: dict
    convention: str
    factor: float = 1.0  # mtlsearch = factor x LibMTL
    thrice: bool = False  # the peer's backward takes 3 loss vectors (MoDo, SDMGrad): the same batch thrice
    why: str = ""
    compare: str = "update"  # or "weights": mtlsearch's weights vs the peer's returned ones
    after_first: Callable[[Any], None] | None = None  # sets mtlsearch's state to the peer's convention
    first_factor: float = 1.0  # the first step compared as first_factor x mtlsearch's
    patch: Callable[[], Any] | None = None  # a context manager the peer runs under (torch 2.x shims)


def libmtl_model_cases() -> list[ModelCase]:
    db_beta = 0.9

    def db_zero_start(method):  # LibMTL's buffer starts at 0: its first average is (1 - beta) g_1
        method.averages = {k: (1 - db_beta) * v for k, v in method.averages.items()}

    return [
        ModelCase("db_mtl (beta 0.9, sigma 0.5)", "DB_MTL(0.9, 0.5)", lambda: METHODS.get("db_mtl")(NAMES, beta=db_beta, sigma=0.5),
                  "DB_MTL", {"DB_beta": db_beta, "DB_beta_sigma": 0.5}, "none (both sum the rescaled rows)",
                  why="LibMTL's moving average starts at 0 (its first is (1 - beta) g_1, 0.1 x here), so every later one differs"),
        ModelCase("db_mtl (beta 0.9, sigma 0.5)", "DB_MTL(0.9, 0.5)", lambda: METHODS.get("db_mtl")(NAMES, beta=db_beta, sigma=0.5),
                  "DB_MTL", {"DB_beta": db_beta, "DB_beta_sigma": 0.5},
                  "mtlsearch's first moving average set to (1 - beta) g_1 after step 1 (LibMTL's zero start); step 1 compared x (1 - beta)",
                  why="LibMTL's `max / (norm + 1e-8)`", after_first=db_zero_start, first_factor=1 - db_beta),
        ModelCase("excess_mtl (step 0.01)", "ExcessMTL(robust_step_size=0.01)", lambda: _PatchedEps(NAMES, 0.01, 1e-7),
                  "ExcessMTL", {"robust_step_size": 0.01}, "mtlsearch's eps 1e-8 in sqrt(s + eps) set to LibMTL's 1e-7; both sum to T",
                  compare="weights"),
        ModelCase("excess_mtl (step 0.01)", "ExcessMTL(robust_step_size=0.01)", lambda: _PatchedEps(NAMES, 0.01, 1e-8),
                  "ExcessMTL", {"robust_step_size": 0.01}, "none (mtlsearch's eps 1e-8 kept)", compare="weights",
                  why="eps in `sqrt(s + eps)`: LibMTL 1e-7, mtlsearch 1e-8 (the running sums of squared gradients are small "
                      "on this model, so eps counts)"),
        ModelCase("modo (gamma 0.1, rho 0.1)", "MoDo(MoDo_gamma=0.1, MoDo_rho=0.1)", lambda: METHODS.get("modo")(gamma=0.1, rho=0.1),
                  "MoDo", {"MoDo_gamma": 0.1, "MoDo_rho": 0.1}, f"{MEAN}; the same batch thrice", factor=T, thrice=True),
        ModelCase("sdmgrad (lam 0.3)", "SDMGrad(lamda=0.3, niter=20)", lambda: METHODS.get("sdmgrad")(lam=0.3),
                  "SDMGrad", {"SDMGrad_lamda": 0.3, "SDMGrad_niter": 20}, f"{MEAN}; the same batch thrice", factor=T, thrice=True,
                  why="LibMTL estimates w* by 20 warm-started projected SGD steps (lr 5, momentum 0.5); mtlsearch solves exactly"),
        ModelCase("sdmgrad (lam 0.3)", "SDMGrad(lamda=0.3, niter=2000)", lambda: METHODS.get("sdmgrad")(lam=0.3),
                  "SDMGrad", {"SDMGrad_lamda": 0.3, "SDMGrad_niter": 2000}, f"{MEAN}; the same batch thrice", factor=T, thrice=True,
                  why="LibMTL's fixed step (lr 5, hard-coded) overshoots and its iterates cycle: 2,000 steps give the update of 20"),
        ModelCase("fairgrad (alpha 1)", "FairGrad(FairGrad_alpha=1)", lambda: METHODS.get("fairgrad")(alpha=1.0),
                  "FairGrad", {"FairGrad_alpha": 1.0}, "direction only (mtlsearch normalises the Gram matrix: another step length)",
                  factor=float("nan"),
                  why="LibMTL solves with `scipy.optimize.least_squares` (default tolerances); mtlsearch by Newton to rounding"),
        ModelCase("moco (beta 0.5, gamma 0.1, rho 0)", "MoCo(beta 0.5, gamma 0.1, rho 0, sigmas 0)",
                  lambda: METHODS.get("moco")(beta=0.5, gamma=0.1, rho=0.0), "MoCo",
                  {"MoCo_beta": 0.5, "MoCo_beta_sigma": 0.0, "MoCo_gamma": 0.1, "MoCo_gamma_sigma": 0.0, "MoCo_rho": 0.0},
                  f"{MEAN}; LibMTL's step decays switched off (sigma 0)", factor=T,
                  why="LibMTL rescales each gradient to its loss (`g / ||g|| * L`), replaces the simplex projection by a softmax "
                      "and does not scale the Gram matrix (docs/weighting.md#moco)"),
        ModelCase("upgrad", "UPGrad(norm_eps=0, reg_eps=0)", lambda: METHODS.get("upgrad")(), "UPGrad",
                  {"UPGrad_norm_eps": 0.0, "UPGrad_reg_eps": 0.0}, f"{MEAN}; no ridge (reg_eps 0)", factor=T),
        ModelCase("mgda", "MGDA(mgda_gn='none')", lambda: METHODS.get("mgda")(), "MGDA", {"mgda_gn": "none"}, MEAN, factor=T,
                  why="LibMTL's Frank-Wolfe loop (at most 250 steps, stops at a 1e-5 change); mtlsearch solves the QP exactly"),
        ModelCase("cagrad (c = 0.4)", "CAGrad(calpha=0.4, rescale=1)", lambda: METHODS.get("cagrad")(c=0.4), "CAGrad",
                  {"calpha": 0.4, "rescale": 1}, f"{MEAN} (rescale 1: both divide by 1 + c^2)", factor=T,
                  why="LibMTL solves the dual with `scipy.optimize.minimize` (SLSQP, default tolerance) and adds 1e-8 terms"),
        ModelCase("aligned_mtl", "Aligned_MTL()", lambda: METHODS.get("aligned_mtl")(), "Aligned_MTL", {},
                  "none (both sum the aligned rows); `torch.symeig` (removed in torch 2) given as `torch.linalg.eigh` for this row",
                  patch=_symeig_shim),
    ]


@contextlib.contextmanager
def _symeig_shim():
    """``torch.symeig(M, eigenvectors=True)``, removed in torch 2, as ``torch.linalg.eigh(M)`` (same
    ascending eigenvalues; LibMTL's Aligned_MTL sorts them itself)."""
    original = getattr(torch, "symeig", None)
    torch.symeig = lambda M, eigenvectors=True: torch.linalg.eigh(M)
    try:
        yield
    finally:
        if original is None:
            del torch.symeig
        else:
            torch.symeig = original


def _trunk_grad(params) -> torch.Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])


def run_model_case(lmg, case: ModelCase, base, batches) -> Agreement:
    label = f"tiny MLP (360 shared parameters, 3 tasks), {len(batches)} batches in a row"
    row = Agreement("LibMTL (GitHub)", case.method, case.peer_method, label, case.convention, case.why)
    try:
        model = clone(base)
        method = case.build()
        weighting = method.inner if isinstance(method, _PatchedEps) else method
        seen = {}
        if isinstance(method, nn.Module):

            class Spy(Weighting):  # records the weights the trainer gets
                def __init__(self):
                    super().__init__(NAMES)
                    self.inner = method

                def forward(self, losses, context=None):
                    seen["w"] = self.inner(losses, context)
                    return seen["w"]

                def regularizer(self):
                    return weighting.regularizer()

            method_used = Spy()
        else:
            method_used = method
        step = make_step(model, TASKS, method_used, NoStep(model.parameters()))
        peer = _libmtl_tiny(lmg, getattr(lmg.W, case.cls), base)
        trunk = trunk_and_heads(model)[0]
        peer_trunk = list(peer.encoder.parameters())
        for k, (x, y) in enumerate(batches):
            step(x, y)
            for p in peer.parameters():
                p.grad = torch.zeros_like(p)
            n_fw = 3 if case.thrice else 1
            losses = []
            for _ in range(n_fw):
                preds = peer(x)
                losses.append(torch.stack([t.kind.loss(preds[t.name], y[t.name]) for t in TASKS]))
            with case.patch() if case.patch is not None else contextlib.nullcontext():
                returned = peer.backward(losses if case.thrice else losses[0], **case.kwargs)
            if case.compare == "weights":
                row.add(seen["w"], torch.as_tensor(np.asarray(returned, dtype=np.float64)))
            else:
                a, b = _trunk_grad(trunk), _trunk_grad(peer_trunk)
                if k == 0:
                    a = case.first_factor * a
                if case.factor == case.factor:  # not NaN: compare values
                    row.add(a, case.factor * b)
                else:  # direction only
                    row.add(a / a.norm(), b / b.norm())
            if case.after_first is not None and k == 0:
                case.after_first(weighting)
    except Exception as err:
        row.failed = f"{type(err).__name__}: {str(err)[:160]}"
        traceback.print_exc(limit=4)
    return row


def run_agreement(tj, lmg, log) -> list[Agreement]:
    rows: list[Agreement] = []
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # LibMTL builds its gradient buffers in the default dtype
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if tj is not None:
                cases, sequences = agreement_cases(), agreement_sequences()
                for pair in torchjd_pairs(tj):
                    t0 = time.perf_counter()
                    r = run_pair(pair, cases, sequences)
                    rows.append(r)
                    log(f"  torchjd  {r.method:<34} vs {r.peer_method:<48} rel {r.rel:8.1e}  cos {r.cos:.9f}  "
                        f"({r.n} cases, {time.perf_counter() - t0:.1f} s) {r.verdict}")
            if lmg is not None:
                for r in libmtl_loss_rows(lmg):
                    rows.append(r)
                    log(f"  LibMTL   {r.method:<34} vs {r.peer_method:<48} rel {r.rel:8.1e}  cos {r.cos:.9f}  ({r.n} cases) {r.verdict}")
                torch.manual_seed(0)
                base = build_mtl(TINY, "hard_sharing").double()
                batches = _tiny_batches(8)
                for case in libmtl_model_cases():
                    t0 = time.perf_counter()
                    r = run_model_case(lmg, case, base, batches)
                    rows.append(r)
                    log(f"  LibMTL   {r.method:<34} vs {r.peer_method:<48} rel {r.rel:8.1e}  cos {r.cos:.9f}  "
                        f"({r.n} steps, {time.perf_counter() - t0:.1f} s) {r.verdict}")
    finally:
        torch.set_default_dtype(previous)
    return rows


# --------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    p.add_argument("--repeats", type=int, default=None, help="timed samples per function and group (default 40; 5 with --quick)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up calls per function (default 3; 1 with --quick)")
    p.add_argument("--quick", action="store_true", help="smoke run: 5 samples per group; too few to judge")
    p.add_argument("--methods", default=None, help="comma-separated method names (default: every registered method)")
    p.add_argument("--section", action="append", choices=["methods", "aggregate", "jacobian", "tree", "agreement"],
                   help="run only these sections")
    p.add_argument("--max-seconds", type=float, default=None, help="retake samples disturbed by other processes during the first N s (default 240; 10 with --quick)")
    p.add_argument("--no-peers", action="store_true", help="do not load torchjd / LibMTL")
    p.add_argument("--libmtl-git", default=str(LIBMTL_GIT), help="folder holding LibMTL's GitHub source as `LibMTL/` "
                   f"(for the agreement section; `make bench-weighting` extracts commit {LIBMTL_GIT_COMMIT[:12]} there)")
    p.add_argument("--out", default=None, help="also write the markdown tables to this file")
    args = p.parse_args(argv)

    device = resolve_device(args.device)
    repeats = args.repeats or (5 if args.quick else 40)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    budget = args.max_seconds if args.max_seconds is not None else (10.0 if args.quick else 240.0)
    sections = args.section or ["methods", "aggregate", "jacobian", "tree", "agreement"]
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

    if "agreement" in sections:
        lmg = None
        if not args.no_peers:
            try:
                lmg = load_libmtl_git(Path(args.libmtl_git))
            except Exception as err:
                log(f"LibMTL from GitHub not available ({type(err).__name__}: {err}); `make bench-weighting` extracts it "
                    f"into {LIBMTL_GIT}")
        log(f"\n[agreement] mtlsearch vs torchjd {tj.version if tj else '-'} and LibMTL {lmg.version if lmg else '-'} "
            f"(float64; max relative difference of the updates or weights, min cosine)")
        t0 = time.perf_counter()
        rows = run_agreement(tj, lmg, log)
        log(f"  agreement section: {time.perf_counter() - t0:.0f} s")
        report += ["### Agreement with the peers", "", agreement_markdown(rows)]
    log(f"\nload average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; measured in {time.perf_counter() - start:.0f} s, "
        f"{monitor.waited:.0f} s of it waiting for other processes to leave the CPU\n")
    text = "\n".join(report)
    log(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
