"""Resampling a `Motion` to another frame rate: slerp for rotations, linear for translation."""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial.transform import Rotation

from msconvert.datasets.motion import Motion

# A new frame time k / fps within this many seconds past the last source frame still counts.
TIME_TOLERANCE_S = 1e-9


def _slerp(rotvecs: np.ndarray, i0: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """(K, J, 3) axis-angle slerped between source frames i0 and i0 + 1 at fractions alpha.

    Per joint, R = R0 · exp(alpha · log(R0⁻¹ R1)): the geodesic on SO(3), which is what scipy's
    `Slerp` computes, done here for all joints and frames at once. The relative rotation's
    angle is at most π, so the shorter way round is always taken.
    """
    k, j = i0.size, rotvecs.shape[1]
    r0 = Rotation.from_rotvec(rotvecs[i0].reshape(-1, 3))
    r1 = Rotation.from_rotvec(rotvecs[i0 + 1].reshape(-1, 3))
    step = (r0.inv() * r1).as_rotvec() * np.repeat(alpha, j)[:, None]
    out = (r0 * Rotation.from_rotvec(step)).as_rotvec().reshape(k, j, 3)
    # Frames that land on a source frame keep its exact axis-angle vector (no round trip).
    on0, on1 = alpha == 0.0, alpha == 1.0
    out[on0] = rotvecs[i0[on0]]
    out[on1] = rotvecs[i0[on1] + 1]
    return out


def resample(motion: Motion, fps: float) -> Motion:
    """The motion at `fps`: frames at k / fps up to the last source frame time."""
    fps = float(fps)
    if not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"target frame rate must be a positive number, got {fps}")
    if abs(fps - motion.fps) < 1e-9:  # the same rate: nothing to do, not even a copy
        return motion
    t = motion.n_frames
    if t < 2:  # nothing to interpolate between: the single frame stays at time 0
        return motion.replace(fps=fps)
    last = (t - 1) / motion.fps
    n_new = math.floor((last + TIME_TOLERANCE_S) * fps) + 1
    # Fractional source index of each new frame, computed as k * src / dst so exact ratios
    # (120 → 30) land exactly on source frames; clipped so tolerance never reads past the end.
    pos = np.minimum(np.arange(n_new, dtype=np.float64) * (motion.fps / fps), t - 1.0)
    i0 = np.minimum(np.floor(pos).astype(np.int64), t - 2)
    alpha = pos - i0
    # Linear for translation: exact at source frames, never overshoots mocap noise the way a
    # cubic spline can, and pairs with slerp (each is the constant-speed path between frames).
    a = alpha[:, None]
    trans = (1.0 - a) * motion.root_translation[i0] + a * motion.root_translation[i0 + 1]
    body = _slerp(motion.body_pose, i0, alpha)
    hands = None if motion.hand_pose is None else _slerp(motion.hand_pose, i0, alpha)
    return motion.replace(fps=fps, root_translation=trans, body_pose=body, hand_pose=hands)
