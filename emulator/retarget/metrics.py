"""Per-clip quality figures of a retargeted clip, each from arrays the stage already holds."""

from __future__ import annotations

import mujoco
import numpy as np

LIMIT_TOLERANCE = 1e-3  # rad or m beyond a joint's range before a frame counts as violating
PENETRATION_MM = 1.0  # a foot deeper than this counts as penetrating
# A muscle "jumps" between two frames when its length changes by more than this beyond what its
# moment arms times the joint change explain: the signature of a wrapping flip, not of speed.
TENDON_JUMP_TOLERANCE_M = 0.002
TENDON_PATH_INTERVALS = 8  # Simpson intervals along a step the trapezoid does not explain


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


def tendon_jumps(lengths: np.ndarray, explained: np.ndarray) -> np.ndarray:
    """(T,) True where some muscle's length change is not explained by its moment arms.

    lengths (T, M); explained (T - 1, M): the change from frame i to i + 1 that the moment arms
    account for, ∫R(q)·dq along the step (`explained_change`). A change that differs from it by
    more than TENDON_JUMP_TOLERANCE_M marks frame i + 1, however fast the muscle moves.
    """
    out = np.zeros(lengths.shape[0], dtype=bool)
    out[1:] = np.any(unexplained_change(lengths, explained) > TENDON_JUMP_TOLERANCE_M, axis=1)
    return out


def moment_times(data: mujoco.MjData, actuators: np.ndarray, dq: np.ndarray) -> np.ndarray:
    """R(q)·dq of these actuators from MuJoCo's sparse moment arms (after mj_transmission)."""
    nnz = data.moment_rownnz
    cols = data.moment_colind[: int(nnz.sum())]
    vals = data.actuator_moment[: cols.size] * dq[cols]
    rows = np.repeat(np.arange(nnz.size), nnz)
    return np.bincount(rows, weights=vals, minlength=nnz.size)[actuators]


def explained_change(
    model: mujoco.MjModel,
    qpos_a: np.ndarray,
    qpos_b: np.ndarray,
    actuators: np.ndarray,
    intervals: int = TENDON_PATH_INTERVALS,
) -> np.ndarray:
    """∫R(q)·dq along the step from qpos_a to qpos_b (Simpson's rule): the length change of
    each actuator that its moment arms account for, exact while its path is smooth."""
    data = mujoco.MjData(model)
    dq = np.zeros(model.nv)
    mujoco.mj_differentiatePos(model, dq, 1.0, qpos_a, qpos_b)
    weights = np.ones(intervals + 1)
    weights[1:-1:2], weights[2:-1:2] = 4.0, 2.0
    total = np.zeros(actuators.size)
    for k, w in enumerate(weights):
        data.qpos[:] = qpos_a
        mujoco.mj_integratePos(model, data.qpos, dq, k / intervals)
        mujoco.mj_kinematics(model, data)
        mujoco.mj_comPos(model, data)
        mujoco.mj_tendon(model, data)
        mujoco.mj_transmission(model, data)
        total += w * moment_times(data, actuators, dq)
    return total / (3.0 * intervals)


def unexplained_change(lengths: np.ndarray, explained: np.ndarray) -> np.ndarray:
    """(T - 1, M) |Δl − R̄·Δq| per frame step and muscle, in metres."""
    return np.abs(np.diff(lengths, axis=0) - explained)


def clip_metrics(
    position_error: np.ndarray,
    orientation_error: np.ndarray,
    position_weight: np.ndarray,
    orientation_weight: np.ndarray,
    violations: np.ndarray,
    penetration: np.ndarray,
    stance_height: np.ndarray,
    jumps: np.ndarray,
    unexplained_max_m: float,
    ik_fps: float,
) -> dict[str, float]:
    """The retarget.* metrics: errors over weighted correspondences, rates in % of frames.

    penetration (T,): deepest foot below the floor in metres (0 when above);
    stance_height (T,): lowest foot's height in metres where a foot is in stance, inf elsewhere;
    jumps (T,): frames with a muscle-length change its moment arms do not explain (tendon_jumps),
    unexplained_max_m: the largest such unexplained change in the clip.
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
        "retarget.tendon_unexplained_mm_max": float(unexplained_max_m * 1000.0),
        "retarget.fps": float(ik_fps),
    }
