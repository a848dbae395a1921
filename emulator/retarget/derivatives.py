"""qvel and qacc from qpos by Savitzky-Golay differentiation in MuJoCo's tangent space.

Each frame's neighbours are expressed as displacements from it with `mj_differentiatePos`, so
free and ball joints get angular velocities from quaternion differences (in the local frame,
as MuJoCo's qvel has them) and never from raw quaternion components. Near the clip's ends the
window stays inside the clip and the fitted polynomial is evaluated off-centre.
"""

from __future__ import annotations

import math

import mujoco
import numpy as np
from scipy.linalg import lstsq


def window_frames(fps: float, window_s: float, polyorder: int, n_frames: int) -> int:
    """An odd window length of about window_s seconds, long enough for the polynomial order."""
    w = max(int(round(window_s * fps)) | 1, polyorder + 2 | 1)
    return min(w, n_frames if n_frames % 2 else n_frames - 1)


def savgol_coeffs(w: int, order: int, deriv: int, delta: float, pos: int) -> np.ndarray:
    """Savitzky-Golay weights (to dot with the w samples) of the `deriv`-th derivative at sample
    `pos` of the order-`order` polynomial fitted to them; `scipy.signal.savgol_coeffs(...,
    use="dot")` exactly (the same least squares), without importing scipy.signal, which takes
    ~1 s (a second of every worker process's start-up)."""
    if deriv > order:
        return np.zeros(w)
    x = np.arange(-pos, w - pos, dtype=np.float64)
    vandermonde = x ** np.arange(order + 1, dtype=np.float64).reshape(-1, 1)
    y = np.zeros(order + 1)
    y[deriv] = math.factorial(deriv) / delta**deriv
    rcond = np.finfo(np.float64).eps * max(vandermonde.shape)
    return lstsq(vandermonde, y, cond=rcond)[0]


def savgol_derivatives(
    model: mujoco.MjModel, qpos: np.ndarray, fps: float, window_s: float, polyorder: int
) -> tuple[np.ndarray, np.ndarray]:
    """(qvel, qacc), each (T, nv), of a qpos trajectory sampled at fps."""
    t_frames = qpos.shape[0]
    qvel = np.zeros((t_frames, model.nv))
    qacc = np.zeros((t_frames, model.nv))
    if t_frames < 2:
        return qvel, qacc
    w = window_frames(fps, window_s, polyorder, t_frames)
    order = min(polyorder, w - 1)
    if w < 3:  # two frames: one finite difference, no curvature
        mujoco.mj_differentiatePos(model, qvel[0], 1.0 / fps, qpos[0], qpos[1])
        qvel[1] = qvel[0]
        return qvel, qacc
    dt = 1.0 / fps
    half = w // 2
    c1 = np.stack([savgol_coeffs(w, order, 1, dt, p) for p in range(w)])
    c2 = (
        np.stack([savgol_coeffs(w, order, 2, dt, p) for p in range(w)])
        if order >= 2
        else np.zeros((w, w))
    )
    disp = np.zeros((w, model.nv))
    for t in range(t_frames):
        start = min(max(t - half, 0), t_frames - w)
        for k in range(w):
            mujoco.mj_differentiatePos(model, disp[k], 1.0, qpos[t], qpos[start + k])
        qvel[t] = c1[t - start] @ disp
        qacc[t] = c2[t - start] @ disp
    return qvel, qacc
