"""Box-constrained convex QPs, solved by active sets: one solver per shape of problem.

- `solve_box_qp_dense`: ½xᵀHx + gᵀx with a dense H, for a few dozen variables and a cold start.
  The IK's joint limits: one QP per Gauss-Newton iteration, 37 variables on MyoFullBody.
- `solve_box_qp_lowrank`: ½Σh·x² + ½‖A·x − b‖²_W with a diagonal h and fewer rows in A than
  variables, for hundreds of variables and a warm start. Static optimization: ~420 muscle and
  contact-force variables priced by ~80 DoFs; every linear solve is one in the rows of A.

Each is the faster one on its own problem, so they stay two: the IK's H (JᵀJ plus a diagonal)
has the second one's form, but its J has more rows than columns (93 against 37), so its linear
solves would grow; static optimization's dense H would make the first one's grow to ~420.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg.lapack import dposv as _posv


def solve_box_qp_dense(
    h: np.ndarray, g: np.ndarray, lower: np.ndarray, upper: np.ndarray, max_sweeps: int = 8
) -> np.ndarray:
    """argmin ½ xᵀHx + gᵀx subject to lower ≤ x ≤ upper, for H positive definite, lower ≤ 0 ≤ upper.

    Variables at a bound that the gradient pushes outward are fixed there; the others are solved
    for; variables that overshoot join the fixed set, and fixed ones whose multiplier changes
    sign are freed again. A handful of sweeps suffices: few limits change between IK iterations.
    """
    n = g.size
    at_lower = (lower >= 0) & (g > 0)
    at_upper = (upper <= 0) & (g < 0)
    x = np.zeros(n)
    for _ in range(max_sweeps):
        fixed = at_lower | at_upper
        x[at_lower] = lower[at_lower]
        x[at_upper] = upper[at_upper]
        if fixed.any():
            free = ~fixed
            rhs = -(g[free] + h[np.ix_(free, fixed)] @ x[fixed])
            x[free] = np.linalg.solve(h[np.ix_(free, free)], rhs)
        else:
            free = np.ones(n, dtype=bool)
            x = np.linalg.solve(h, -g)
        low = free & (x < lower)
        high = free & (x > upper)
        if low.any() or high.any():
            at_lower |= low
            at_upper |= high
            continue
        grad = h @ x + g
        release = (at_lower & (grad < 0)) | (at_upper & (grad > 0))
        if not release.any():
            break
        at_lower &= ~release
        at_upper &= ~release
    return np.clip(x, lower, upper)


def solve_box_qp_lowrank(
    at: np.ndarray,
    rhs: np.ndarray,
    winv: np.ndarray,
    h: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    x0: np.ndarray,
    max_iter: int = 300,
    linear: np.ndarray | None = None,
) -> tuple[np.ndarray, int]:
    """argmin ½Σh·x² + linearᵀx + ½‖at·x − rhs‖²_W over lo ≤ x ≤ hi, W = winv⁻¹; (x, iterations).

    iterations == max_iter: not converged (x is feasible, but not optimal). linear=None is the
    problem without a linear term, computed exactly as before it existed.

    A primal active-set method started from x0 (e.g. the previous frame's answer). Every linear
    solve happens in the small constraint space (Woodbury: one k × k system, k = rows of at,
    instead of one in the variables): with a set of variables fixed at their bounds, the price of
    each row is z = W(rhs − at·x) and the free variables are (atᵀz)/h. A move to that subspace
    optimum that leaves the box is projected back when that still lowers the objective (so many
    bounds are taken at once), else stopped at the first bound; at a subspace optimum, fixed
    variables whose multiplier has the wrong sign are released. The k × k matrix is updated by the
    columns that change rather than rebuilt. (A line-searched Newton method on the dual, block
    pivoting and projected Newton all stall or cycle on static optimization's problem when
    non-root torques are out of the muscles' reach: its strict weight makes it stiff.)
    """
    hinv = 1.0 / h
    w = np.linalg.inv(winv)
    at_t = at.T
    # Written for few NumPy calls per iteration: at ~60 iterations a frame of a ~80 × ~440
    # problem, call overhead, not arithmetic, is what costs.

    def objective(x: np.ndarray) -> float:
        r = at @ x - rhs
        value = 0.5 * float(np.dot(h * x, x) + np.dot(r, w @ r))
        return value if linear is None else value + float(np.dot(linear, x))

    x = np.clip(x0, lo, hi)
    fixed = (x <= lo) | (x >= hi)
    value = objective(x)
    built_for = fixed.copy()  # the fixed set that k was last built for
    k = winv + (at * np.where(fixed, 0.0, hinv)) @ at_t
    updates = 0
    for it in range(1, max_iter + 1):
        changed = np.flatnonzero(fixed ^ built_for)
        if changed.size:
            if changed.size > 20 or updates > 50:  # rebuild now and then: cheaper, and no drift
                k = winv + (at * np.where(fixed, 0.0, hinv)) @ at_t
                updates = 0
            else:
                sign = np.where(fixed[changed], -hinv[changed], hinv[changed])
                k += (at[:, changed] * sign) @ at_t[changed]
                updates += 1
            built_for = fixed.copy()
        fixed_part = rhs - at @ np.where(fixed, x, 0.0)
        if linear is not None:
            # Free variables are x = (atᵀz − linear)/h, so their linear cost shifts the prices:
            # (winv + at·diag(1/h)·atᵀ)·z = rhs − at·x_fixed + at·(linear/h)_free.
            fixed_part = fixed_part + at @ np.where(fixed, 0.0, hinv * linear)
        _, z, info = _posv(k, fixed_part)
        if info != 0:
            z = np.linalg.lstsq(k, fixed_part, rcond=None)[0]
        q = at_t @ z
        if linear is not None:  # the pull of all but ½h·x² on each variable: free x = pull/h
            q = q - linear
        target = np.where(fixed, x, hinv * q)  # the subspace optimum (fixed ones stay)
        bounded = np.clip(target, lo, hi)
        out = bounded != target  # free variables the optimum takes out of the box
        if out.any():
            trial_value = objective(bounded)
            if trial_value < value:  # the projected step: several bounds at once
                x, value = bounded, trial_value
                fixed |= out
                continue
            idx = np.flatnonzero(out)
            x_out = x[idx]
            reach = (bounded[idx] - x_out) / (target[idx] - x_out)  # > 0 or = 0: never < 0
            alpha = max(float(reach.min()), 0.0)
            block = idx[reach <= alpha + 1e-12]
            x = x + alpha * (target - x)
            x[block] = bounded[block]
            value = objective(x)
            fixed[block] = True
            continue
        x = target
        value = objective(x)
        tol = 1e-12 * (1.0 + np.abs(q))
        wrong = np.where(x <= lo, q - h * lo - tol, h * hi - q - tol)
        wrong = np.where(fixed & (lo < hi), wrong, -1.0)  # a pinned variable stays
        release = wrong > 0
        if not release.any():
            return x, it
        fixed &= ~release
    return x, max_iter
