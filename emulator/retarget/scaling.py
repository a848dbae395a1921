"""Source joints → model-proportioned targets: per-segment lengths, uniform stride, planted feet.

Per-segment scaling rebuilds the source skeleton from the root outward with every segment at the
model's length and the source's direction, so every limb length matches the model and all targets
are reachable. On its own it would make feet skate: a planted source foot moves once its leg is
scaled differently from the root's travel. So the whole frame is then shifted, smoothly, by the
amount that puts each stance foot where the uniformly scaled source foot is (the uniform scale is
the least-squares ratio of model to source segment lengths), which keeps planted feet still.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

from msconvert.datasets.kinematics import JointTrajectory
from msconvert.emulator.retarget.correspondence import Binding
from msconvert.emulator.retarget.rotations import matrix_to_quat, quat_mul

SCALING_MODES = ("segment", "uniform", "none")
_ANCHOR_SMOOTH_S = 0.05  # blur of the stance-foot shift, so switching feet does not jerk the body
_FLIGHT_WEIGHT = 1e-3  # with no foot in stance, the feet share the shift equally


def source_points(traj: JointTrajectory, binding: Binding) -> np.ndarray:
    """(T, C, 3) world positions of the source points (joints plus their offsets)."""
    j = binding.source_joint
    return traj.positions[:, j] + np.einsum(
        "tcij,cj->tci", traj.rotations[:, j], binding.source_offset
    )


def target_orientations(traj: JointTrajectory, binding: Binding) -> np.ndarray:
    """(T, C, 4) target world orientations of the model bodies (source joint ⊗ fixed offset)."""
    q = matrix_to_quat(traj.rotations[:, binding.source_joint])
    return quat_mul(q, binding.rotation_offset[None])


def tree_order(parent: np.ndarray) -> np.ndarray:
    """Correspondence indices with every parent before its children."""
    depth = np.zeros(parent.size, dtype=int)
    for i in range(parent.size):
        k = i
        while parent[k] >= 0:
            depth[i] += 1
            k = parent[k]
    return np.argsort(depth, kind="stable")


def scale_points(
    points: np.ndarray, binding: Binding, mode: str, stance: np.ndarray, fps: float
) -> np.ndarray:
    """Model-proportioned target points (T, C, 3) from source points, per `mode`."""
    if mode not in SCALING_MODES:
        raise ValueError(f"scaling must be one of {', '.join(SCALING_MODES)}, not {mode!r}")
    if mode == "none":
        return points.copy()
    uniform = binding.uniform_scale * points
    if mode == "uniform":
        return uniform
    out = np.empty_like(points)
    for c in tree_order(binding.parent):
        p = binding.parent[c]
        if p < 0:
            out[:, c] = uniform[:, c]
        else:
            out[:, c] = out[:, p] + binding.segment_scale[c] * (points[:, c] - points[:, p])
    # Shift each frame so the stance feet sit where the uniformly scaled source puts them.
    shifts = np.stack([(uniform[:, f] - out[:, f]).mean(axis=1) for f in binding.foot_points], 1)
    w = stance.astype(float) + _FLIGHT_WEIGHT
    shift = (w[:, :, None] * shifts).sum(1) / w.sum(1)[:, None]
    shift = gaussian_filter1d(shift, sigma=_ANCHOR_SMOOTH_S * fps, axis=0, mode="nearest")
    return out + shift[:, None, :]
