"""Exact small quadratic programs on a ``T x T`` Gram matrix, in plain ``torch``.

:func:`simplex_qp` (the min-norm point of a convex hull: MGDA, MGDA-UB, CAGrad) and
:func:`nonneg_qp` (the projection onto a dual cone: UPGrad) are solved exactly up to rounding, by
enumerating the supports for small problems, by a batched primal-dual active-set strategy for
larger ones and batches, and by a primal active-set method for what those leave.
:func:`gram_matrix` forms the Gram matrix, in float32 where that can be trusted.

See docs/weighting.md#solvers.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch

_F64 = torch.float64
_RCOND = 1e-13  # relative singular-value cut-off of the least-squares solves
_TOL = 1e-13  # multiplier / step tolerance, relative to the normalised problem

#: Problems with at most this many variables are first solved by enumerating their supports
#: (``2^n`` small systems in one batch); larger ones go straight to the active-set method.
ENUMERATE_MAX = 8
_ENUM_PD = 1e-10  # smallest eigenvalue of the unit-diagonal quadratic for the enumeration
_ENUM_TOL = 1e-12  # largest KKT violation (relative, normalised problem) accepted from it
#: Batches of ``z >= 0`` problems with at least this many variables go to :func:`_pdas` instead of
#: the enumeration (measured: at 4 variables the 16 supports are still the faster path).
PDAS_MIN = 5
#: Most support updates :func:`_pdas` makes before leaving a problem to the active-set method.
_PDAS_ITER = 12

#: Smallest eigenvalue of the rows' correlation matrix (their Gram matrix scaled to a unit
#: diagonal) for which :func:`gram_matrix` trusts a float32 Gram matrix; below it (two rows with
#: ``|cos| > 0.999``, or rows close to linear dependence, where the min-norm and projection
#: problems amplify rounding) the Gram matrix is recomputed in float64.
GRAM_RECHECK = 1e-3
_F32_MIN_NORM = torch.finfo(torch.float32).tiny / torch.finfo(torch.float32).eps


def _tf32_possible(device: torch.device) -> bool:
    """Whether float32 matmuls on ``device`` may run in reduced precision (TF32 on CUDA)."""
    if device.type != "cuda":
        return False
    try:
        mode = getattr(torch.backends.cuda.matmul, "fp32_precision", None)  # torch >= 2.9
        if isinstance(mode, str) and mode not in ("none", ""):
            return mode != "ieee"
        return bool(torch.backends.cuda.matmul.allow_tf32)
    except RuntimeError:  # legacy and new precision settings mixed: assume the worst
        return True


def _trusted_float32_gram(rows: list[list[float]]) -> bool:
    """Whether a float32 Gram matrix (rows of Python floats) can be trusted.

    See docs/weighting.md#the-gram-matrix-and-the-float32-trust-rule.
    """
    n = len(rows)
    if not all(math.isfinite(v) for row in rows for v in row):
        return False
    diag = [rows[i][i] for i in range(n)]
    if not min(diag) >= _F32_MIN_NORM:
        return False
    scale = [1.0 / math.sqrt(v) for v in diag]
    if n > 16:
        s = torch.tensor(scale, dtype=_F64)
        corr = torch.tensor(rows, dtype=_F64) * s[:, None] * s[None, :]
        corr.diagonal().sub_(GRAM_RECHECK)
        return int(torch.linalg.cholesky_ex(corr).info) == 0
    unit = [[1.0 if i == j else rows[i][j] * scale[i] * scale[j] for j in range(n)] for i in range(n)]
    return _cholesky(unit, range(n), GRAM_RECHECK) is not None


def gram_matrix(matrix: torch.Tensor) -> torch.Tensor:
    """The ``(T, T)`` Gram matrix ``G G^T`` of a ``(T, P)`` matrix, as float64 on the CPU.

    Formed in float32 on the input's device when the input is float32 and the result can be
    trusted, else from a float64 copy of ``G``. See
    docs/weighting.md#the-gram-matrix-and-the-float32-trust-rule.
    """
    return gram_and_precision(matrix)[0]


def gram_and_precision(matrix: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """:func:`gram_matrix`, and whether it was formed in float32 (then the weights can be applied
    in float32 too; otherwise in float64)."""
    g = matrix.detach()
    if g.dtype == torch.float64:
        return (g @ g.T).cpu(), False
    if g.dtype == torch.float32 and not _tf32_possible(g.device):
        rows = (g @ g.T).tolist()
        if _trusted_float32_gram(rows):
            return torch.tensor(rows, dtype=_F64), True
    g = g.to(_F64)
    return (g @ g.T).cpu(), False


def _matrix(quad: torch.Tensor) -> torch.Tensor:
    q = torch.as_tensor(quad).detach().to(device="cpu", dtype=_F64)
    if q.dim() != 2 or q.shape[0] != q.shape[1]:
        raise ValueError(f"expected a square matrix, found shape {tuple(q.shape)}")
    return (q + q.T) / 2


def _small_rows(quad: torch.Tensor) -> list[list[float]] | None:
    """``_matrix(quad)`` as rows of Python floats when it has at most :data:`_PY_MAX` rows (the
    same symmetrisation, in the same float64 arithmetic), else None."""
    q = torch.as_tensor(quad)
    if q.dim() != 2 or q.shape[0] != q.shape[1] or not 0 < q.shape[0] <= _PY_MAX:
        return None
    rows = q.detach().tolist()
    n = len(rows)
    return [[(rows[i][j] + rows[j][i]) / 2 for j in range(n)] for i in range(n)]


def _vector(vec: torch.Tensor | None, n: int) -> torch.Tensor:
    if vec is None:
        return torch.zeros(n, dtype=_F64)
    v = torch.as_tensor(vec).detach().to(device="cpu", dtype=_F64).reshape(-1)
    if v.numel() != n:
        raise ValueError(f"expected a vector of length {n}, found {v.numel()}")
    return v


def _lstsq(matrix: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Minimum-norm least-squares solution (SVD based, so rank-deficient systems are fine)."""
    return torch.linalg.lstsq(matrix, rhs.unsqueeze(1), rcond=_RCOND, driver="gelsd").solution.squeeze(1)


def _free_step(
    quad: torch.Tensor, grad: torch.Tensor, free: torch.Tensor, border: torch.Tensor | None, size: float
) -> tuple[torch.Tensor, bool]:
    """The step ``p_F`` to the minimiser over the free coordinates (``border . x`` kept fixed
    when given), and whether it is a descent *ray* instead (no minimum on that face).

    See docs/weighting.md#the-primal-active-set-method.
    """
    sub = quad[free][:, free]
    k = sub.shape[0]
    if border is not None:
        a = border[free]
        a = a / a.max()  # balance the border with the unit-diagonal block
        kkt = torch.zeros(k + 1, k + 1, dtype=_F64)
        kkt[:k, :k] = sub
        kkt[:k, k] = a
        kkt[k, :k] = a
        rhs = torch.cat([-grad[free], torch.zeros(1, dtype=_F64)])
    else:
        kkt, rhs = sub, -grad[free]
    sol = _lstsq(kkt, rhs)
    resid = rhs - kkt @ sol
    # ``size`` (the largest |x_i|) scales the rounding error of ``grad`` (``quad`` is normalised).
    if float(resid.norm()) > 1e-9 * max(1.0, float(rhs.norm()), size):
        return resid[:k], True
    return sol[:k], False


_MASKS: dict[tuple[int, bool], tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def _support_masks(n: int, nonempty: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every support of n variables (the empty one unless ``nonempty``), smallest first: the 0/1
    masks ``(K, n)``, their outer products ``(K, n, n)``, the identity on the coordinates held at
    zero ``(K, n, n)`` and the boolean masks. Cached per ``n``."""
    key = (n, nonempty)
    found = _MASKS.get(key)
    if found is None:
        sets = [s for k in range(1 if nonempty else 0, n + 1) for s in itertools.combinations(range(n), k)]
        mask = torch.zeros(len(sets), n, dtype=_F64)
        for r, s in enumerate(sets):
            mask[r, list(s)] = 1.0
        found = (mask, mask[:, :, None] * mask[:, None, :], torch.diag_embed(1.0 - mask), mask > 0)
        _MASKS[key] = found
    return found


def _enumerate(quad: torch.Tensor, lin: torch.Tensor, simplex: bool) -> tuple[torch.Tensor, list[bool]] | None:
    """Solve by enumerating the supports, for the ``R`` linear terms in the columns of ``lin``
    (``(n, R)``; ``R = 1`` for the simplex) at once.

    Returns ``(x, ok)``: the minimisers ``(n, R)`` and, per column, whether the point passed the
    KKT check; ``None`` when the problem is too large or not clearly positive definite. See
    docs/weighting.md#enumeration-of-the-supports.
    """
    n = quad.shape[0]
    if not 0 < n <= ENUMERATE_MAX:
        return None
    if n <= _PY_MAX:
        found = _enumerate_py(quad.tolist(), lin.T.tolist(), simplex)
        if found is None:
            return None
        x, ok = found
        return torch.tensor(x, dtype=_F64).T, ok
    return _enumerate_torch(quad, lin, simplex)


def _unit_scaled(quad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float] | None:
    """Jacobi scaling as in _active_set: ``(a, d, top)`` with ``x = d * y`` and the unit-diagonal
    quadratic ``a = D Q D / top``; None unless ``a`` is clearly positive definite (its smallest
    eigenvalue above ``_ENUM_PD``), which makes the minimiser unique."""
    diag = quad.diagonal()
    top = float(diag.max())
    if not (math.isfinite(top) and float(diag.min()) > 0.0):
        return None
    d = (top / diag).sqrt()
    a = quad * (d[:, None] * d[None, :]) / top
    a.diagonal().fill_(1.0)
    shifted = a.clone()
    shifted.diagonal().sub_(_ENUM_PD)
    if int(torch.linalg.cholesky_ex(shifted).info) != 0:
        return None
    return a, d, top


def _by_support(
    quad: torch.Tensor, lin: torch.Tensor, simplex: bool, hints: torch.Tensor | None = None
) -> tuple[torch.Tensor, list[bool]] | None:
    """The exact search over supports that runs before the active-set method, with
    :func:`_enumerate`'s arguments and result. By measurement (BENCHMARKS.md section 8): on the
    simplex, the enumeration up to :data:`ENUMERATE_MAX` variables and :func:`_pdas` above; for
    ``z >= 0``, the enumeration up to 3 variables, then None for a single problem (the active-set
    method from its first guess is faster), the enumeration for several below :data:`PDAS_MIN`
    variables, else the batched :func:`_pdas` (``hints`` its first guesses)."""
    n, problems = lin.shape
    if simplex and n > ENUMERATE_MAX:
        return _pdas(quad, lin, hints, simplex=True)
    if simplex or n <= _PY_MAX or (problems > 1 and n < PDAS_MIN):
        return _enumerate(quad, lin, simplex)
    if problems == 1:
        return None
    return _pdas(quad, lin, hints)


def _enumerate_torch(quad: torch.Tensor, lin: torch.Tensor, simplex: bool) -> tuple[torch.Tensor, list[bool]] | None:
    """:func:`_enumerate` as one batch of ``2^n`` ``torch`` solves."""
    scaled = _unit_scaled(quad)
    if scaled is None:
        return None
    a, d, top = scaled
    n = a.shape[0]
    b = lin * (d / top)[:, None]
    mask, outer, held, inside = _support_masks(n, simplex)
    system = a * outer + held  # the support's block of the quadratic, the identity elsewhere
    if simplex:
        # On S: a_SS y_S + b_S = mu d_S and d . y = 1, so y = mu x1 - x2 with a_SS x1 = d_S,
        # a_SS x2 = b_S; the multipliers of the held bounds are (a y + b - mu d)_j.
        sol = torch.linalg.solve_ex(system, torch.stack([mask * d, mask * b[:, 0]], dim=2))[0]
        x1, x2 = sol[..., 0], sol[..., 1]
        mu = (1.0 + x2 @ d) / (x1 @ d)
        y = mu[:, None] * x1 - x2
        mult = (y @ a + b[:, 0] - mu[:, None] * d).unsqueeze(2)
        y = y.unsqueeze(2)
    else:
        y = torch.linalg.solve_ex(system, -(mask[:, :, None] * b))[0]  # (K, n, R), 0 off S
        mult = a @ y + b
    # KKT violation of each support's point: negative coordinates on S, negative multipliers off S.
    viol = torch.where(inside[:, :, None], -y, -mult).amax(dim=1)  # (K, R)
    best = viol.argmin(dim=0)  # the smallest support among equals
    cols = torch.arange(b.shape[1])
    y = y[best, :, cols]  # (R, n)
    scale = torch.maximum(b.abs().amax(dim=0), y.abs().amax(dim=1)).clamp(min=1.0)
    ok = viol[best, cols] <= _ENUM_TOL * scale
    x = (y.clamp(min=0.0) * d).T
    if simplex:
        x = x / x.sum(dim=0)
    return x, ok.tolist()


def _pdas(
    quad: torch.Tensor, lin: torch.Tensor, hint: torch.Tensor | None = None, simplex: bool = False
) -> tuple[torch.Tensor, list[bool]] | None:
    """``argmin_{z >= 0} 1/2 z^T quad z + b^T z`` (on the simplex: ``sum(z) = 1`` too) for every
    column ``b`` of ``lin`` (``(n, R)``) at once, by the primal-dual active-set strategy
    (Hintermüller, Ito & Kunisch 2002).

    Each round solves every problem on its guessed support in one batch, then frees the held
    coordinates with a negative multiplier and holds the free ones that went negative; the
    first guess is ``hint`` (``(R, n)``), else ``b < 0`` (every coordinate on the simplex). Returns
    ``(x, ok)`` as :func:`_enumerate`: the same KKT check, so a problem that cycles or stops early
    is not ``ok``; None when the quadratic is not clearly positive definite.
    See docs/weighting.md#the-primal-dual-active-set-strategy.
    """
    scaled = _unit_scaled(quad)
    if scaled is None:
        return None
    a, d, top = scaled
    n = a.shape[0]
    b = (lin * (d / top)[:, None]).T  # (R, n)
    if hint is not None:
        free = hint.to(device="cpu", dtype=torch.bool).reshape(b.shape).clone()
    else:
        free = torch.ones_like(b, dtype=torch.bool) if simplex else b < 0
    b_max = b.abs().amax(dim=1)
    border = d / d.max()  # the simplex row d . y = 1, balanced with the unit-diagonal block
    for _ in range(_PDAS_ITER):
        if simplex:  # a support is never empty: keep the coordinate the linear term favours most
            empty = ~free.any(dim=1)
            free[empty, b[empty].argmin(dim=1)] = True
        m = free.to(_F64)
        block = a * (m[:, :, None] * m[:, None, :])
        block.diagonal(dim1=1, dim2=2).fill_(1.0)  # the identity off the support (a has a unit diagonal)
        if not simplex:
            y = torch.linalg.solve_ex(block, (-(m * b)).unsqueeze(2))[0].squeeze(2)  # 0 off the support
            mult = y @ a + b
        else:  # a_SS y_S + nu e_S = -b_S, e_S . y_S = 1 with e = border: mu = -nu / max(d)
            system = torch.zeros(b.shape[0], n + 1, n + 1, dtype=_F64)
            system[:, :n, :n] = block
            system[:, :n, n] = system[:, n, :n] = m * border
            rhs = torch.cat([-(m * b), torch.full((b.shape[0], 1), 1.0 / float(d.max()), dtype=_F64)], dim=1)
            sol = torch.linalg.solve_ex(system, rhs.unsqueeze(2))[0].squeeze(2)
            y, nu = sol[:, :n], sol[:, n:]
            mult = y @ a + b + nu * border
        # Rounding must not move a coordinate back and forth: only clear signs change the guess.
        scale = torch.maximum(b_max, y.abs().amax(dim=1)).clamp(min=1.0)
        tol = (_TOL * scale)[:, None]
        guess = torch.where(free, y >= -tol, mult < -tol)
        if torch.equal(guess, free):
            break
        used, free = free, guess
    else:
        free = used
    viol = torch.where(free, -y, -mult).amax(dim=1)
    ok = viol <= _ENUM_TOL * scale
    x = (y.clamp(min=0.0) * d).T
    if simplex:
        x = x / x.sum(dim=0)
    return x, ok.tolist()


#: Up to this many variables :func:`_enumerate` works on Python floats.
_PY_MAX = 3
_SUPPORTS: dict[tuple[int, bool], list[tuple[tuple[int, ...], tuple[int, ...]]]] = {}


def _supports(n: int, nonempty: bool) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Every support of n variables as ``(support, held)`` index tuples, in the order of
    :func:`_support_masks` (smallest first). Cached per ``n``."""
    key = (n, nonempty)
    found = _SUPPORTS.get(key)
    if found is None:
        found = [
            (sup, tuple(j for j in range(n) if j not in sup))
            for k in range(1 if nonempty else 0, n + 1)
            for sup in itertools.combinations(range(n), k)
        ]
        _SUPPORTS[key] = found
    return found


def _cholesky(a: list[list[float]], idx: Sequence[int], shift: float = 0.0) -> list[list[float]] | None:
    """Lower Cholesky factor of ``a[idx][idx] - shift * I`` (lists of floats, lower triangle of
    ``a`` read), or None when that matrix is not positive definite."""
    k = len(idx)
    low = [[0.0] * k for _ in range(k)]
    for j in range(k):
        lj = low[j]
        aj = a[idx[j]]
        pivot = aj[idx[j]] - shift
        for p in range(j):
            pivot -= lj[p] * lj[p]
        if not pivot > 0.0:
            return None
        root = math.sqrt(pivot)
        lj[j] = root
        for i in range(j + 1, k):
            li = low[i]
            v = a[idx[i]][idx[j]]
            for p in range(j):
                v -= li[p] * lj[p]
            li[j] = v / root
    return low


def _cholesky_solve(low: list[list[float]], rhs: list[float]) -> list[float]:
    """``x`` with ``L L^T x = rhs``."""
    k = len(low)
    z = list(rhs)
    for i in range(k):
        li = low[i]
        v = z[i]
        for p in range(i):
            v -= li[p] * z[p]
        z[i] = v / li[i]
    for i in range(k - 1, -1, -1):
        v = z[i]
        for p in range(i + 1, k):
            v -= low[p][i] * z[p]
        z[i] = v / low[i][i]
    return z


def _enumerate_py(
    q: list[list[float]], lins: list[list[float]], simplex: bool
) -> tuple[list[list[float]], list[bool]] | None:
    """:func:`_enumerate` on Python floats: ``q`` the symmetric quadratic as rows, ``lins`` the R
    linear terms; returns the R minimisers (lists) and their KKT flags, or None."""
    n = len(q)
    if not all(math.isfinite(v) for row in q for v in row) or not all(math.isfinite(v) for lin in lins for v in lin):
        return None
    diag = [q[i][i] for i in range(n)]
    top = max(diag)
    if not min(diag) > 0.0:
        return None
    # Jacobi scaling as in _active_set: x = d * y, quadratic D Q D / top (unit diagonal).
    d = [math.sqrt(top / v) for v in diag]
    a = [[1.0 if i == j else q[i][j] * (d[i] * d[j]) / top for j in range(n)] for i in range(n)]
    if _cholesky(a, range(n), _ENUM_PD) is None:
        return None
    bs = [[lin[i] * (d[i] / top) for i in range(n)] for lin in lins]
    best: list[tuple[float, tuple[int, ...], list[float]]] = [(math.inf, (), [])] * len(bs)
    for sup, held in _supports(n, simplex):
        low = _cholesky(a, sup) if sup else []
        if low is None:  # not reached: a is positive definite
            continue
        if simplex:
            # On S: a_SS y_S + b_S = mu d_S and d . y = 1, so y = mu x1 - x2 with a_SS x1 = d_S,
            # a_SS x2 = b_S; the multipliers of the held bounds are (a y + b - mu d)_j.
            b = bs[0]
            x1 = _cholesky_solve(low, [d[i] for i in sup])
            x2 = _cholesky_solve(low, [b[i] for i in sup])
            mu = (1.0 + sum(v * d[i] for v, i in zip(x2, sup))) / sum(v * d[i] for v, i in zip(x1, sup))
            ys = [mu * u - v for u, v in zip(x1, x2)]
            viol = max(-v for v in ys)
            for j in held:
                aj = a[j]
                m = b[j] - mu * d[j]
                for v, i in zip(ys, sup):
                    m += aj[i] * v
                viol = max(viol, -m)
            if viol < best[0][0]:
                best[0] = (viol, sup, ys)
            continue
        for r, b in enumerate(bs):
            ys = _cholesky_solve(low, [-b[i] for i in sup]) if sup else []
            viol = max((-v for v in ys), default=-math.inf)
            for j in held:
                aj = a[j]
                m = b[j]
                for v, i in zip(ys, sup):
                    m += aj[i] * v
                viol = max(viol, -m)
            if viol < best[r][0]:
                best[r] = (viol, sup, ys)
    xs, ok = [], []
    for (viol, sup, ys), b in zip(best, bs):
        scale = max(1.0, max(abs(v) for v in b), max((abs(v) for v in ys), default=0.0))
        ok.append(viol <= _ENUM_TOL * scale)
        x = [0.0] * n
        for v, i in zip(ys, sup):
            x[i] = max(v, 0.0) * d[i]
        if simplex:
            total = sum(x)
            x = [v / total for v in x] if total > 0 else x
        xs.append(x)
    return xs, ok


def _active_set(
    quad: torch.Tensor,
    lin: torch.Tensor,
    simplex: bool,
    max_iter: int | None,
    hint: torch.Tensor | None = None,
    bounded: bool = True,
    enumerate_first: bool = True,
) -> torch.Tensor:
    """The active-set loop, after the enumeration of the supports for small problems (unless
    ``enumerate_first`` is false, or a ``max_iter`` is given).

    ``bounded``: the problem is known to be bounded below, so an unblocked ray ends the moves on
    that face instead of raising. See docs/weighting.md#the-primal-active-set-method.
    """
    n = quad.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=_F64)
    if enumerate_first and max_iter is None:
        found = _by_support(quad, lin[:, None], simplex, None if hint is None else hint.reshape(1, n))
        if found is not None and found[1][0]:
            return found[0][:, 0]
    # Jacobi scaling x = D y, D = diag(sqrt(m / A_ii)) (m = max_i A_ii; 1 where A_ii = 0), and the
    # objective divided by m: the quadratic in y has a unit diagonal, so rows of very different
    # norms are resolved alike; the simplex becomes {y >= 0, d . y = 1}.
    diag = quad.diagonal().clamp(min=0.0)
    top = float(diag.max())
    d = torch.where(diag > 0, (top / diag).sqrt(), torch.ones_like(diag)) if top > 0 else torch.ones_like(diag)
    quad = quad * d[:, None] * d[None, :]
    lin = lin * d
    # Divide by the quadratic's scale only (a dominant linear term must not make the quadratic
    # block look singular to the least-squares solves).
    scale = float(quad.abs().max()) or float(lin.abs().max())
    border = d if simplex else None
    if simplex:
        y = torch.full((n,), 1.0 / n, dtype=_F64) / d
        free = torch.ones(n, dtype=torch.bool)
        at_min = n == 1
    else:
        y = torch.zeros(n, dtype=_F64)
        # A guess of the optimal free set (``hint``) only changes the first step: from y = 0
        # towards the minimiser over that set, as far as feasibility allows.
        free = (
            torch.zeros(n, dtype=torch.bool) if hint is None else hint.detach().to("cpu", torch.bool).reshape(n).clone()
        )
        at_min = not bool(free.any())
    if scale == 0.0:
        return y * d  # every feasible point is optimal
    quad, lin = quad / scale, lin / scale
    limit = max_iter if max_iter is not None else 50 + 20 * n
    for _ in range(limit):
        grad = quad @ y + lin
        if not at_min:
            idx = free.nonzero().squeeze(1)
            p, ray = _free_step(quad, grad, free, border, float(y.abs().max()))
            # Ratio test; components that are negative only by rounding are ignored (clamped below).
            cut = -_TOL * max(1.0, float(p.abs().max()))
            neg = p < cut
            alpha, block = 1.0, None
            if bool(neg.any()):
                ratios = y[idx][neg] / -p[neg]
                j = int(torch.argmin(ratios))
                if ray or float(ratios[j]) < 1.0:
                    alpha, block = float(ratios[j]), int(idx[neg][j])
            elif ray:
                if not bounded:
                    raise ValueError("the quadratic program is unbounded below")
                at_min = True
                continue
            y[idx] = y[idx] + alpha * p
            y.clamp_(min=0.0)
            if block is None:
                at_min = True
            else:
                y[block] = 0.0
                free[block] = False
                at_min = not bool(free.any())
            if simplex:
                y /= d @ y
            continue
        held = ~free
        if not bool(held.any()):
            break
        if simplex:  # at a minimiser over F: grad_F = -nu d_F
            nu = -float(grad[free] @ d[free]) / float(d[free] @ d[free])
            mult = grad + nu * d
        else:
            mult = grad
        mult = torch.where(held, mult, torch.full_like(mult, float("inf")))
        j = int(torch.argmin(mult))
        if float(mult[j]) >= -_TOL * max(1.0, float(y.abs().max()), float(lin.abs().max())):
            break
        free[j] = True
        at_min = False
    # Polish: one more exact solve on the final support, kept when it stays feasible.
    if bool(free.any()):
        idx = free.nonzero().squeeze(1)
        p, ray = _free_step(quad, quad @ y + lin, free, border, float(y.abs().max()))
        if not ray and bool((y[idx] + p >= 0).all()):
            y[idx] = y[idx] + p
    x = y * d
    if simplex:
        x /= x.sum()
    return x


def simplex_qp(quad: torch.Tensor, linear: torch.Tensor | None = None, max_iter: int | None = None) -> torch.Tensor:
    """``argmin_{w >= 0, sum(w) = 1} 1/2 w^T quad w + linear^T w`` for a symmetric PSD ``quad``.

    Returns a float64 CPU vector. Ties (singular ``quad``) go to the point reached from the
    barycentre, see docs/weighting.md#tie-breaking.
    """
    if max_iter is None:
        rows = _small_rows(quad)
        if rows is not None:  # tiny problem: straight to the enumeration on Python floats
            lin = [0.0] * len(rows) if linear is None else _vector(linear, len(rows)).tolist()
            found = _enumerate_py(rows, [lin], simplex=True)
            if found is not None and found[1][0]:
                return torch.tensor(found[0][0], dtype=_F64)
    q = _matrix(quad)
    return _active_set(q, _vector(linear, q.shape[0]), simplex=True, max_iter=max_iter)


def nonneg_qp(
    quad: torch.Tensor,
    linear: torch.Tensor,
    max_iter: int | None = None,
    hint: torch.Tensor | None = None,
    bounded: bool = False,
) -> torch.Tensor:
    """``argmin_{z >= 0} 1/2 z^T quad z + linear^T z`` for a symmetric PSD ``quad``.

    Args:
        quad: the ``(n, n)`` quadratic term.
        linear: the ``(n,)`` linear term; the problem must be bounded below (else ``ValueError``).
        max_iter: cap on the active-set iterations (default: none, enumeration first).
        hint: optional boolean mask guessing the coordinates positive at the optimum.
        bounded: the problem is known to be bounded; an unblocked ray is then rounding noise.

    Returns a float64 CPU vector. See docs/weighting.md#the-problems.
    """
    q = _matrix(quad)
    return _active_set(q, _vector(linear, q.shape[0]), simplex=False, max_iter=max_iter, hint=hint, bounded=bounded)


def min_norm_weights(gram: torch.Tensor) -> torch.Tensor:
    """Weights ``w*`` of the min-norm point of the convex hull of the rows of ``G``:
    ``w* = argmin_{w in simplex} w^T Q w`` with ``Q = G G^T`` (the point is ``G^T w*``)."""
    return simplex_qp(gram)


def min_quadratic_above(gram: torch.Tensor, lower: torch.Tensor, hint: torch.Tensor | None = None) -> torch.Tensor:
    """``argmin_{v >= lower} v^T Q v``, solved as :func:`nonneg_qp` in ``z = v - lower``.

    ``hint`` as in :func:`nonneg_qp`. See docs/weighting.md#the-problems.
    """
    q = _matrix(gram)
    low = _vector(lower, q.shape[0])
    return low + nonneg_qp(q, q @ low, hint=hint, bounded=True)


def min_quadratic_above_rows(
    gram: torch.Tensor, lowers: torch.Tensor, hints: torch.Tensor | None = None
) -> torch.Tensor:
    """:func:`min_quadratic_above` for every row ``l_r`` of ``lowers`` (``(R, T)``).

    Returns ``(R, T)``: row r is ``argmin_{v >= l_r} v^T Q v``; ``hints[r]`` is row r's hint.
    Small problems are solved together, see docs/weighting.md#the-problems.
    """
    rows = _small_rows(gram)
    if rows is not None:  # tiny problem: straight to the enumeration on Python floats
        n = len(rows)
        lows = torch.as_tensor(lowers).detach().to(device="cpu", dtype=_F64).reshape(-1, n).tolist()
        lins = [[sum(qj[k] * low[k] for k in range(n)) for qj in rows] for low in lows]
        found = _enumerate_py(rows, lins, simplex=False)
        if found is not None and all(found[1]):
            return torch.tensor([[v + z for v, z in zip(low, x)] for low, x in zip(lows, found[0])], dtype=_F64)
    q = _matrix(gram)
    n = q.shape[0]
    low = torch.as_tensor(lowers).detach().to(device="cpu", dtype=_F64).reshape(-1, n)
    batch = _by_support(q, q @ low.T, simplex=False, hints=hints)
    if batch is not None and all(batch[1]):
        return low + batch[0].T
    out = low.clone()
    for r in range(low.shape[0]):
        if batch is not None and batch[1][r]:
            out[r] += batch[0][:, r]
        else:
            hint = None if hints is None else hints[r]
            out[r] += _active_set(
                q, q @ low[r], simplex=False, max_iter=None, hint=hint, bounded=True, enumerate_first=False
            )
    return out


def project_simplex(y: torch.Tensor) -> torch.Tensor:
    """Euclidean projection onto the probability simplex (Held, Wolfe & Crowder 1974; Michelot
    1986): ``max(y - theta, 0)`` with ``theta`` chosen so the result sums to 1."""
    u, _ = torch.sort(y, descending=True)
    css = torch.cumsum(u, 0) - 1.0
    k = torch.arange(1, y.numel() + 1, dtype=y.dtype)
    rho = int((u - css / k > 0).nonzero().max())
    return (y - css[rho] / (rho + 1)).clamp(min=0.0)


def _normalised(quad: torch.Tensor, linear: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    q = _matrix(quad)
    b = _vector(linear, q.shape[0])
    scale = max(float(q.abs().max()), float(b.abs().max()))
    return (q / scale, b / scale) if scale > 0 else (q, b)


def simplex_kkt_residual(quad: torch.Tensor, linear: torch.Tensor | None, w: torch.Tensor) -> float:
    """Natural residual ``|| w - proj_simplex(w - grad) ||_inf`` of :func:`simplex_qp` (on the
    problem divided by its largest coefficient); 0 exactly at a minimiser."""
    q, b = _normalised(quad, linear)
    w = _vector(w, q.shape[0])
    return float((w - project_simplex(w - (q @ w + b))).abs().max())


def nonneg_kkt_residual(quad: torch.Tensor, linear: torch.Tensor, z: torch.Tensor) -> float:
    """Natural residual ``|| min(z, grad) ||_inf`` of :func:`nonneg_qp` (normalised problem);
    0 exactly at a minimiser."""
    q, b = _normalised(quad, linear)
    z = _vector(z, q.shape[0])
    return float(torch.minimum(z, q @ z + b).abs().max())
