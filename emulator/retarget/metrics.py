"""Per-clip quality figures of a retargeted clip, each from arrays the stage already holds."""

from __future__ import annotations

import mujoco
import numpy as np

LIMIT_TOLERANCE = 1e-3  # rad or m beyond a joint's range before a frame counts as violating
PENETRATION_MM = 1.0  # a foot deeper than this counts as penetrating
TENDON_JUMP_FACTOR = 10.0
TENDON_WINDOW_S = 0.5  # the running mean of each muscle's length change spans this much past
TENDON_QUIET_SPEED = 0.01  # m/s: a muscle slower than this counts as this slow (no jumps from rest)


def limit_violations(model: mujoco.MjModel, qpos: np.ndarray) -> np.ndarray:
    """(T,) True where any limited joint is beyond its range by more than LIMIT_TOLERANCE."""
    out = np.zeros(qpos.shape[0], dtype=bool)
    limited = model.jnt_limited.astype(bool)
    kinds = model.jnt_type
    scalar = limited & np.isin(
        kinds, (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE))
    )
    adr = model.jnt_qposadr[scalar]
    lo, hi = model.jnt_range[scalar].T
    out |= np.any((qpos[:, adr] < lo - LIMIT_TOLERANCE) | (qpos[:, adr] > hi + LIMIT_TOLERANCE), 1)
    for j in np.flatnonzero(limited & (kinds == int(mujoco.mjtJoint.mjJNT_BALL))):
        q = qpos[:, model.jnt_qposadr[j] : model.jnt_qposadr[j] + 4]
        angle = 2 * np.arctan2(np.linalg.norm(q[:, 1:], axis=1), np.abs(q[:, 0]))
        out |= angle > model.jnt_range[j, 1] + LIMIT_TOLERANCE
    return out


def tendon_jumps(lengths: np.ndarray, fps: float) -> np.ndarray:
    """(T,) True where a muscle's length changes by > 10x its running-mean change per frame.

    The running mean covers the previous TENDON_WINDOW_S seconds and is floored at
    TENDON_QUIET_SPEED, so a muscle starting to move after rest is not a jump.
    """
    t = lengths.shape[0]
    out = np.zeros(t, dtype=bool)
    if t < 3:
        return out
    change = np.abs(np.diff(lengths, axis=0))  # change[i]: frame i -> i + 1
    w = max(int(round(TENDON_WINDOW_S * fps)), 2)
    csum = np.vstack((np.zeros((1, change.shape[1])), np.cumsum(change, axis=0)))
    idx = np.arange(1, change.shape[0])
    begin = np.maximum(idx - w, 0)
    running = (csum[idx] - csum[begin]) / (idx - begin)[:, None]
    running = np.maximum(running, TENDON_QUIET_SPEED / fps)
    out[idx + 1] = np.any(change[idx] > TENDON_JUMP_FACTOR * running, axis=1)
    return out


def clip_metrics(
    position_error: np.ndarray,
    orientation_error: np.ndarray,
    position_weight: np.ndarray,
    orientation_weight: np.ndarray,
    violations: np.ndarray,
    penetration: np.ndarray,
    stance_height: np.ndarray,
    jumps: np.ndarray,
    ik_fps: float,
) -> dict[str, float]:
    """The retarget.* metrics: errors over weighted correspondences, rates in % of frames.

    penetration (T,): deepest foot below the floor in metres (0 when above);
    stance_height (T,): lowest foot's height in metres where a foot is in stance, inf elsewhere.
    """
    pos = position_error[:, position_weight > 0] * 1000.0
    ori = np.degrees(orientation_error[:, orientation_weight > 0])
    stance = stance_height[np.isfinite(stance_height)]
    return {
        "retarget.position_error_mm": float(pos.mean()) if pos.size else 0.0,
        "retarget.position_error_mm_max": float(pos.max()) if pos.size else 0.0,
        "retarget.orientation_error_deg": float(ori.mean()) if ori.size else 0.0,
        "retarget.joint_limit_violation_pct": float(100.0 * violations.mean()),
        "retarget.penetration_pct": float(100.0 * np.mean(penetration * 1000.0 > PENETRATION_MM)),
        "retarget.penetration_mm_max": float(penetration.max() * 1000.0),
        "retarget.float_mm": float(np.maximum(stance, 0).mean() * 1000.0) if stance.size else 0.0,
        "retarget.tendon_jump_pct": float(100.0 * jumps.mean()),
        "retarget.fps": float(ik_fps),
    }
