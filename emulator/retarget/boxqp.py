"""A small dense box-constrained QP, solved by active sets (the IK's limit handling)."""

from __future__ import annotations

import numpy as np


def solve_box_qp(
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
