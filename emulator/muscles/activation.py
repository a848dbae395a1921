"""MuJoCo's muscle activation dynamics: run forward, bounded over an interval, and inverted.

Mirrors mju_muscleDynamics for muscles driven by an excitation held over a control interval of
`steps` physics steps: the activation it reaches (`advance_activation`), the range reachable from
any activation (`ActivationReach`), and the excitations that carry one frame's activations to
the next (`invert_activation_dynamics`).
"""

from __future__ import annotations

import mujoco
import numpy as np


def advance_activation(
    act: np.ndarray, excitation: np.ndarray, dynprm: np.ndarray, timestep: float, steps: int
) -> np.ndarray:
    """Activation after `steps` Euler steps of MuJoCo's muscle dynamics with excitation held.

    Mirrors mju_muscleDynamics: time constants tau_act·(0.5 + 1.5a) and tau_deact/(0.5 + 1.5a)
    (a clamped to [0, 1]), a hard switch on sign(u − a) or, with dynprm[2] > 0, a quintic blend
    over that width; the excitation is clamped to [0, 1]; Euler is how MuJoCo's Euler and
    implicit integrators advance act.
    """
    a = np.array(act, dtype=np.float64)
    u = np.clip(excitation, 0.0, 1.0)
    t_act, t_deact, width = (np.broadcast_to(dynprm[..., i], a.shape) for i in range(3))
    smooth = width > 0
    for _ in range(steps):
        ac = np.clip(a, 0.0, 1.0)
        tau_a = t_act * (0.5 + 1.5 * ac)
        tau_d = t_deact / (0.5 + 1.5 * ac)
        du = u - a
        tau = np.where(du > 0, tau_a, tau_d)
        if smooth.any():
            x = np.clip(du / np.where(smooth, width, 1.0) + 0.5, 0.0, 1.0)
            blend = x**3 * (3 * x * (2 * x - 5) + 10)
            tau = np.where(smooth, tau_d + (tau_a - tau_d) * blend, tau)
        a = a + timestep * du / np.maximum(tau, mujoco.mjMINVAL)
    return a


def held_excitation(
    start: np.ndarray, target: np.ndarray, dynprm: np.ndarray, timestep: float, steps: int
) -> np.ndarray:
    """The excitation held over `steps` that takes `start` to about `target`, in closed form:
    exact for a constant time constant, within a few per cent of the change otherwise (what a
    feedback controller needs; `invert_activation_dynamics` refines it)."""
    return _constant_tau(start, target, np.asarray(dynprm, np.float64), timestep, steps)[0]


def _constant_tau(
    start: np.ndarray, target: np.ndarray, prm: np.ndarray, timestep: float, steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """(u, d a_end / d u): with a constant time constant the end activation is u + (a0 − u)·r,
    r = (1 − h/τ)^steps, solved for u with τ at the mean activation."""
    mean = np.clip(0.5 * (start + target), 0.0, 1.0)
    tau = np.where(
        target > start, prm[..., 0] * (0.5 + 1.5 * mean), prm[..., 1] / (0.5 + 1.5 * mean)
    )
    slope = 1.0 - (1.0 - timestep / np.maximum(tau, timestep)) ** steps
    return np.clip(start + (target - start) / slope, 0.0, 1.0), slope


def invert_activation_dynamics(
    activation: np.ndarray, dynprm: np.ndarray, timestep: float, steps: int, tol: float = 1e-10
) -> tuple[np.ndarray, np.ndarray]:
    """Excitations (T, M) that carry each frame's activation to the next one, and where it clipped.

    The excitation is held for `steps` physics steps per frame; the last frame, which has no
    successor, gets its steady state (excitation = activation).
    """
    a0, a1 = activation[:-1], activation[1:]
    reach_lo, reach_hi = ActivationReach(dynprm, timestep, steps).bounds(a0)
    u = np.where(a1 <= reach_lo, 0.0, np.where(a1 >= reach_hi, 1.0, np.nan))
    clipped = (a1 < reach_lo - 1e-6) | (a1 > reach_hi + 1e-6)
    rows, cols = np.nonzero(np.isnan(u))
    start, target = a0[rows, cols], a1[rows, cols]
    prm = np.asarray(dynprm, dtype=np.float64)[cols]
    # The first guess is `held_excitation`; then secant steps
    # (inside a bisection bracket) on the frames not yet done, the first one through the end of
    # the bracket on the other side (u = 0 or 1, whose end activation is known).
    x, slope = _constant_tau(start, target, prm, timestep, steps)
    lo, hi = np.zeros_like(x), np.ones_like(x)
    f_lo, f_hi = reach_lo[rows, cols] - target, reach_hi[rows, cols] - target
    x_old = f_old = None
    solved = np.empty_like(x)
    todo = np.arange(x.size)
    for _ in range(60):
        f = advance_activation(start, x, prm, timestep, steps) - target
        done = np.abs(f) <= tol
        solved[todo[done]] = x[done]
        keep = ~done
        if not keep.any():
            break
        if x_old is None:
            x_old, f_old = np.where(f < 0, 1.0, 0.0), np.where(f < 0, f_hi, f_lo)
        dx = x - x_old
        secant = (f - f_old) / np.where(dx != 0, dx, 1.0)
        slope = np.where((dx != 0) & (secant > 0), secant, slope)  # the end rises with u
        todo, x, f, slope = todo[keep], x[keep], f[keep], slope[keep]
        start, target, prm = start[keep], target[keep], prm[keep]
        lo, hi = np.where(f < 0, x, lo[keep]), np.where(f > 0, x, hi[keep])
        x_old, f_old = x, f
        x = x - f / slope
        x = np.where((x > lo) & (x < hi), x, 0.5 * (lo + hi))
    else:
        solved[todo] = x
    u[rows, cols] = solved
    excitation = np.concatenate([u, activation[-1:]], axis=0)
    clipped = np.concatenate([clipped, np.zeros_like(clipped[-1:])], axis=0)
    return np.clip(excitation, 0.0, 1.0), clipped


class ActivationReach:
    """The activations reachable within one control interval, from any activation.

    Tabulated once per distinct dynprm (both ends: excitation 0 and 1 held for the interval) and
    interpolated, so bounding each frame's activations by what the previous frame's can reach
    costs microseconds.
    """

    def __init__(self, dynprm: np.ndarray, timestep: float, steps: int, size: int = 4097) -> None:
        self.grid = np.linspace(0.0, 1.0, size)
        prm, group = np.unique(np.asarray(dynprm, dtype=np.float64), axis=0, return_inverse=True)
        self.prm, self.group = prm, group.ravel()
        prm = np.repeat(self.prm[:, None, :], size, axis=1)
        grid = np.broadcast_to(self.grid, prm.shape[:2])
        self.low = advance_activation(grid, np.zeros_like(grid), prm, timestep, steps)
        self.high = advance_activation(grid, np.ones_like(grid), prm, timestep, steps)

    def bounds(self, act: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(lowest, highest) activation reachable from act (..., M) after one interval."""
        act = np.asarray(act, dtype=np.float64)
        lo, hi = np.empty_like(act), np.empty_like(act)
        for g in range(self.prm.shape[0]):
            sel = self.group == g
            lo[..., sel] = np.interp(act[..., sel], self.grid, self.low[g])
            hi[..., sel] = np.interp(act[..., sel], self.grid, self.high[g])
        return np.clip(lo, 0.0, 1.0), np.clip(hi, 0.0, 1.0)
