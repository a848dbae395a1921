"""Per-frame inverse kinematics: damped Gauss-Newton on the independent DoFs, with box limits.

The solver loop lives here and only here. Each frame is warm-started from the previous solution
extrapolated at constant velocity, and regularized toward the previous frame (smoothness) and
toward the neutral pose (posture). Both pulls exist for nearly redundant DoFs, such as upper-arm
rotation against forearm pronation while the elbow is straight: without them those swing from
frame to frame and muscle lengths jump. They cost a few millimetres of lag in fast motion.
A frame takes `iterations` steps, more (up to `max_iterations`) while it has not settled: fast
motion outruns the warm start. With a floor (`ground.FloorContact`), the stance feet stand on it
and no foot goes through it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import mujoco
import numpy as np
from scipy.spatial.transform import Rotation

from msconvert.emulator.qp import solve_box_qp_dense
from msconvert.emulator.retarget.correspondence import Binding
from msconvert.emulator.retarget.ground import FloorContact
from msconvert.emulator.retarget.rotations import quat_conj, quat_mul, quat_to_rotvec


@dataclass(frozen=True)
class IKOptions:
    """Solver settings; weights are relative to position errors in metres."""

    iterations: int = 2  # per frame after the first (warm-started frames converge in 1-2)
    max_iterations: int = 8  # ... more while a step still moves a coordinate by settle_step
    settle_step: float = 1e-2  # rad or m: a frame still moving this much is not yet converged
    first_iterations: int = 60
    damping: float = 1e-5  # Levenberg-Marquardt damping on every step
    smooth_weight: float = 3e-3  # pull toward the previous frame's coordinates, per rad (or m)
    posture_weight: float = 3e-4  # pull of the joints (not the root) toward the neutral pose
    step_tolerance: float = 1e-6  # stop a frame once no coordinate moves more than this


@dataclass(frozen=True, eq=False)
class IKResult:
    """Joint trajectories and what it cost to get them."""

    qpos: np.ndarray  # (T, nq)
    iterations: np.ndarray  # (T,) iterations used per frame
    seconds: float  # wall time of the solve

    @property
    def fps(self) -> float:
        return float(self.qpos.shape[0] / max(self.seconds, 1e-9))


class _Frames:
    """Positions, orientations and Jacobians of the corresponding model frames at one qpos."""

    def __init__(self, model: mujoco.MjModel, binding: Binding) -> None:
        space = binding.space
        self.model = model
        self.data = mujoco.MjData(model)
        self.body = binding.body
        self.offset = binding.offset
        self.active = space.active_dofs
        self.root_body = model.body_rootid[binding.body]
        on_path = np.zeros((binding.body.size, model.nbody), dtype=bool)
        for c, b in enumerate(binding.body):
            while b > 0:
                on_path[c, b] = True
                b = model.body_parentid[b]
        self.mask = on_path[:, None, model.dof_bodyid[self.active]]  # (C, 1, n_active)

    def evaluate(self, qpos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Update kinematics; return points (C, 3) and body quaternions (C, 4)."""
        d = self.data
        d.qpos[:] = qpos
        mujoco.mj_kinematics(self.model, d)
        xmat = d.xmat[self.body].reshape(-1, 3, 3)
        points = d.xpos[self.body] + np.einsum("cij,cj->ci", xmat, self.offset)
        return points, d.xquat[self.body]

    def jacobians(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Translational and rotational Jacobians (C, 3, n_active) over the active dofs."""
        d = self.data
        mujoco.mj_comPos(self.model, d)
        cdof = d.cdof[self.active].T  # (6, n_active): angular rows, then linear rows
        rel = (points - d.subtree_com[self.root_body])[:, :, None]  # (C, 3, 1)
        # cdof is a spatial motion about the root's subtree centre of mass; shift it to the point.
        w0, w1, w2 = cdof[0], cdof[1], cdof[2]
        r0, r1, r2 = rel[:, 0], rel[:, 1], rel[:, 2]
        jp = np.stack(
            (cdof[3] + w1 * r2 - w2 * r1, cdof[4] + w2 * r0 - w0 * r2, cdof[5] + w0 * r1 - w1 * r0),
            axis=1,
        )
        return jp * self.mask, cdof[None, :3] * self.mask


def _align_free_root(
    model: mujoco.MjModel, frames: _Frames, qpos: np.ndarray, targets: np.ndarray, w: np.ndarray
) -> None:
    """Move a free root rigidly so the model's points best match the targets (in place).

    Gauss-Newton from the neutral pose can settle in a wrong minimum when the clip starts facing
    away from the model; a rigid (Kabsch) fit of all points first removes that risk.
    """
    if model.njnt == 0 or model.jnt_type[0] != int(mujoco.mjtJoint.mjJNT_FREE):
        return
    points, _ = frames.evaluate(qpos)
    pc = np.average(points, axis=0, weights=w)
    tc = np.average(targets, axis=0, weights=w)
    rot, _ = Rotation.align_vectors(targets - tc, points - pc, weights=w)
    adr = model.jnt_qposadr[0]
    qpos[adr : adr + 3] = rot.apply(qpos[adr : adr + 3] - pc) + tc
    qpos[adr + 3 : adr + 7] = quat_mul(rot.as_quat(scalar_first=True), qpos[adr + 3 : adr + 7])


def solve_ik(
    model: mujoco.MjModel,
    binding: Binding,
    positions: np.ndarray,
    quats: np.ndarray,
    options: IKOptions = IKOptions(),
    qpos_start: np.ndarray | None = None,
    floor: FloorContact | None = None,
) -> IKResult:
    """qpos per frame fitting target points (T, C, 3) and body orientations (T, C, 4), and with
    a floor, keeping the stance feet on it and every foot above it."""
    space = binding.space
    frames = _Frames(model, binding)
    n, nv = space.size, model.nv
    pos_rows = np.flatnonzero(binding.position_weight > 0)
    ori_rows = np.flatnonzero(binding.orientation_weight > 0)
    sw_p = np.sqrt(binding.position_weight[pos_rows])[:, None, None]
    sw_o = np.sqrt(binding.orientation_weight[ori_rows])[:, None, None]
    smooth = np.full(n, options.smooth_weight)
    posture = np.where(space.is_root, 0.0, options.posture_weight)
    diag = np.arange(n)
    scalar = space.qadr >= 0
    lo_s, hi_s = space.lower[scalar], space.upper[scalar]
    lower = np.full(n, -np.inf)
    upper = np.full(n, np.inf)
    vfull = np.zeros(nv)
    vdiff = np.zeros(nv)
    jac_point = np.zeros((3, nv))
    sw_f = np.sqrt(floor.weight) if floor is not None else 0.0
    active = space.active_dofs

    def floor_rows(t: int) -> tuple[np.ndarray, np.ndarray]:
        """Residuals and Jacobian rows (over the active dofs) of the floor contacts at frame t."""
        assert floor is not None
        res, bodies, pts = floor.rows(model, frames.data, t)
        jac = np.empty((res.size, active.size))
        for k in range(res.size):
            mujoco.mj_jac(model, frames.data, jac_point, None, pts[k], int(bodies[k]))
            jac[k] = jac_point[2, active]
        return sw_f * res, sw_f * jac

    def iterate(q: np.ndarray, q_prev: np.ndarray, tp: np.ndarray, tq: np.ndarray, t: int) -> float:
        points, bq = frames.evaluate(q)
        jp, jr = frames.jacobians(points)
        cmap = space.coupling_map(q)
        res_p = ((points[pos_rows] - tp[pos_rows])[:, :, None] * sw_p).reshape(-1)
        err_q = quat_to_rotvec(quat_mul(bq[ori_rows], quat_conj(tq[ori_rows])))
        res_o = (err_q[:, :, None] * sw_o).reshape(-1)
        blocks = [
            (jp[pos_rows] * sw_p).reshape(-1, jp.shape[2]),
            (jr[ori_rows] * sw_o).reshape(-1, jr.shape[2]),
        ]
        residuals = [res_p, res_o]
        if floor is not None:
            res_f, jac_f = floor_rows(t)
            blocks.append(jac_f)
            residuals.append(res_f)
        jac = np.concatenate(blocks) @ cmap
        res = np.concatenate(residuals)
        h = jac.T @ jac
        g = jac.T @ res
        mujoco.mj_differentiatePos(model, vdiff, 1.0, q_prev, q)
        g += smooth * vdiff[space.dofs]
        mujoco.mj_differentiatePos(model, vdiff, 1.0, space.neutral, q)
        g += posture * vdiff[space.dofs]
        h[diag, diag] += smooth + posture + options.damping
        qs = q[space.qadr[scalar]]
        lower[scalar] = lo_s - qs
        upper[scalar] = hi_s - qs
        step = solve_box_qp_dense(h, g, lower, upper)
        vfull[space.dofs] = step
        mujoco.mj_integratePos(model, q, vfull, 1.0)
        space.constrain(q)
        return float(np.max(np.abs(step)))

    t_frames = positions.shape[0]
    out = np.empty((t_frames, model.nq))
    used = np.zeros(t_frames, dtype=int)
    start = time.perf_counter()
    q = space.neutral.copy() if qpos_start is None else qpos_start.copy()
    space.constrain(q)
    if qpos_start is None and t_frames:
        _align_free_root(model, frames, q, positions[0], binding.position_weight)
    q_prev = q.copy()
    vel = np.zeros(nv)
    for t in range(t_frames):
        if t > 0:  # warm start: the previous solution moved on at its last velocity
            mujoco.mj_integratePos(model, q, vel, 1.0)
            space.constrain(q)
        budget = options.first_iterations if t == 0 else options.max_iterations
        anchor = q if t == 0 else q_prev  # the first frame has no previous frame to stay near
        for k in range(budget):
            used[t] = k + 1
            step = iterate(q, anchor, positions[t], quats[t], t)
            # Fast motion outruns the warm start: such a frame iterates until it settles.
            if step < options.step_tolerance or (
                t > 0 and k + 1 >= options.iterations and step < options.settle_step
            ):
                break
        out[t] = q
        if t > 0:
            mujoco.mj_differentiatePos(model, vel, 1.0, q_prev, q)
        q_prev = q.copy()
    return IKResult(qpos=out, iterations=used, seconds=time.perf_counter() - start)
