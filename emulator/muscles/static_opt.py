"""Static optimization: inverse dynamics, then each frame's muscle activations and excitations.

The classic biomechanics answer to "which activations made this motion"
(docs/method.md#static-optimization): a baseline for the learned policies and their warm
start. Per frame of a `Reference`:

1. `mj_inverse` gives the generalized forces the motion needs. It runs every constraint through
   MuJoCo's soft constraint model, inverted analytically: each contact, joint-limit and equality
   row gets the force the forward model would produce at that penetration, velocity and
   acceleration (no constraint is disabled). What we rely on, and why contacts have two modes:
   - contacts="soft" keeps the floor forces exactly as MuJoCo's inverse computes them. They are
     right for states MuJoCo itself simulated, but a retargeted clip whose feet only touch the
     floor (< 1 mm penetration) gets almost no ground force from them: the root residual then
     carries the body weight in stance, and the stance leg's joints never see it.
   - contacts="estimate" (the default, ours, as in residual reduction) takes the floor's soft
     forces back out and makes the force at every floor contact within `contact_distance` an
     unknown instead (a four-edge friction pyramid; a small quadratic cost that grows with the
     gap to the floor), solved together with the activations, so the ground force that best
     explains the root's motion is found. Contacts between body parts are dropped unless
     self_contacts=True (retargeted poses interpenetrate; their soft forces are spurious and
     large). Joint limits keep their soft-model forces (limit_forces=False takes out those of the
     limits the desired motion leaves: the tracking controller's plan, see track.py).
   Equality constraints (MyoFullBody's 51 joint couplings) transmit whatever force they need:
   their multipliers are free, so the muscles meet only the torques in the couplings' null space.
2. Muscle force is affine in activation at a state, force = gain·act + bias, both read from
   MuJoCo's own curves by `mj_fwdActuation` at act = 0 and 1; moment arms come from the sparse
   actuator Jacobian.
3. minimize Σ act² (or Σ act³) + w·‖root residual‖², act within bounds, with every non-root DoF
   met exactly. "Exactly" is a `strict_weight` penalty on non-root residuals, which leaves them
   far below 1e-3 N·m where the muscles can meet the torques; where they cannot, the same problem
   is the least-squares fallback, and the frame is reported infeasible. The bounds are [0, 1],
   narrowed (activation_dynamics=True) to what the previous frame's activation can reach in one
   control interval, so the excitations below reproduce the activations without clipping. Solved
   in the constraint space (~80 DoF prices after the couplings are projected out, against ~420
   variables) by a primal active-set method warm-started from the previous frame.
4. MuJoCo's muscle activation dynamics are inverted: the excitation held over a control interval
   that takes the activation from one frame's value to the next's, clipped to [0, 1].

This module holds the per-frame problem (`frame_problem`, `FrameSolver`, `_CouplingSpace`), the
driver `static_optimization` and its metrics. The QP solver is
`emulator.qp.solve_box_qp_lowrank`, the activation dynamics are `muscles.activation`, and
`emulator.parallel` runs the frames in chunks.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import numbers
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import mujoco
import numpy as np

from msconvert.emulator.model import ModelError, floor_geom, foot_contact_geoms, muscle_actuators
from msconvert.emulator.muscles.activation import ActivationReach, invert_activation_dynamics
from msconvert.emulator.muscles.contacts import (
    ContactError,
    ContactPoints,
    StanceRule,
    contact_points,
    floor_work_bodies,
    stance,
)
from msconvert.emulator.muscles.result import FEASIBILITY_TOL, StaticOptResult
from msconvert.emulator.parallel import Workers, balanced_spans, single_threaded_blas
from msconvert.emulator.qp import solve_box_qp_lowrank
from msconvert.emulator.retarget.correspondence import (
    CorrespondenceSet,
    default_correspondence_path,
    load_correspondence,
)
from msconvert.emulator.retarget.exceptions import CorrespondenceError
from msconvert.emulator.retarget.reference import Reference

COSTS = ("act2", "act3")
CONTACT_MODES = ("stance", "estimate", "soft")
_ACT3_FLOOR = 0.01  # keeps Σ act³'s reweighting from making idle muscles free (see _solve_act3)
_ACT3_ITERATIONS = 8
_QP_MAX_ITER = 300
_CONTACT_GAP_SCALE = 0.005  # m: a candidate's force cost doubles at this gap to the floor
_EQUALITY = int(mujoco.mjtConstraint.mjCNSTR_EQUALITY)
_MUSCLE_DYN = int(mujoco.mjtDyn.mjDYN_MUSCLE)
_LIMIT_JOINT = int(mujoco.mjtConstraint.mjCNSTR_LIMIT_JOINT)
_FREE = int(mujoco.mjtJoint.mjJNT_FREE)
_ONE_DOF = (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE))


class StaticOptError(ValueError):
    """Static optimization cannot run on this input; the message is one line naming the reason."""


def muscle_gain_bias(
    model: mujoco.MjModel, data: mujoco.MjData, muscles: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gain, bias, moment (M, nv)) of the muscles at data's state; force = gain·act + bias.

    The state's transmission must be computed (mj_forward, mj_inverse or mj_fwdPosition and
    mj_fwdVelocity). data.act, data.ctrl and actuator outputs are left changed.
    """
    muscles = muscle_actuators(model) if muscles is None else muscles
    _set_input(model, data, muscles, 0.0)
    mujoco.mj_fwdActuation(model, data)
    bias = data.actuator_force[muscles].copy()
    _set_input(model, data, muscles, 1.0)
    mujoco.mj_fwdActuation(model, data)
    gain = data.actuator_force[muscles] - bias
    moment = np.zeros((model.nu, model.nv))
    mujoco.mju_sparse2dense(
        moment, data.actuator_moment, data.moment_rownnz, data.moment_rowadr, data.moment_colind
    )
    return gain, bias, moment[muscles]


def _set_input(
    model: mujoco.MjModel, data: mujoco.MjData, muscles: np.ndarray, value: float
) -> None:
    # ctrl = act makes act_dot zero, so the force is gain·value + bias with or without actearly.
    data.ctrl[muscles] = value
    adr = model.actuator_actadr[muscles]
    has_act = adr >= 0
    data.act[adr[has_act] + model.actuator_actnum[muscles][has_act] - 1] = value


@dataclass(frozen=True)
class FrameProblem:
    """What every frame's solve shares: the (possibly edited) model and index sets."""

    model: mujoco.MjModel
    muscles: np.ndarray
    root_dofs: np.ndarray  # the root's six DoFs: a free joint or a 3-slide 3-hinge chain
    root_body: int
    winv: np.ndarray  # (nv,) 1 / weight of each DoF's residual
    eq_dependent: np.ndarray  # (neq,) the DoF each joint coupling fixes, -1 for other equalities
    floor: int  # floor geom, -1 when the model has none
    geom_foot: np.ndarray  # (ngeom,) index of the foot a geom belongs to, -1 if none
    n_feet: int
    contacts: str
    self_contacts: bool
    limit_forces: bool  # False: a limit's soft force is left out while q̈ leaves the limit
    contact_weight: float
    cost: str
    dynamic: np.ndarray  # (M,) bool: muscles with MuJoCo's muscle activation dynamics
    reach: ActivationReach | None  # bounds each frame's activations by the previous frame's
    points: ContactPoints | None  # contacts="stance": the candidate points


@dataclass(frozen=True, eq=False)
class MuscleCost:
    """The muscle part of the frame problems' cost over a clip, in place of Σ act²:
    Σ w_i(t)·act_i² + push·⟨ā(t), act⟩, where ā(t) is what to push away from at frame t (the
    mean activation of earlier solutions). Linear in act, so each frame stays a convex QP. See
    docs/method.md#distinct-muscle-solutions."""

    # (M,) per muscle in muscle_actuators order, or (T, M) per frame too; None: all 1
    weight: np.ndarray | None = None
    away_from: np.ndarray | None = None  # (T, M) per frame; NaN: nothing there (a fall)
    push: float = 0.0  # cost per unit activation and unit of away_from

    def __post_init__(self) -> None:
        if not (isinstance(self.push, numbers.Real) and np.isfinite(self.push) and self.push >= 0):
            raise StaticOptError(f"the push must be a number >= 0, not {self.push!r}")
        if self.away_from is not None and np.asarray(self.away_from).ndim != 2:
            raise StaticOptError("away_from holds one row of muscle activations per frame")
        if self.weight is not None and np.asarray(self.weight).ndim not in (1, 2):
            raise StaticOptError("muscle weights are one per muscle, or one row per frame")

    def weight_at(self, frame: int) -> np.ndarray | None:
        """(M,) the muscle weights at `frame` (None: all 1)."""
        if self.weight is None:
            return None
        weight = np.asarray(self.weight, np.float64)
        if weight.ndim == 1:
            return weight
        return weight[min(max(frame, 0), weight.shape[0] - 1)]

    def linear(self, frame: int) -> np.ndarray | None:
        """The linear cost per unit activation of each muscle at `frame` (None: none)."""
        if self.away_from is None or self.push == 0:
            return None
        rows = np.asarray(self.away_from)
        row = rows[min(max(frame, 0), rows.shape[0] - 1)]
        return self.push * np.nan_to_num(np.asarray(row, np.float64), nan=0.0)


@dataclass
class _Frame:
    """One frame's answer."""

    activation: np.ndarray
    force: np.ndarray
    muscle_torque: np.ndarray
    residual: np.ndarray  # (nv,) unmet generalized force (root rows: the root residual)
    root_wrench: np.ndarray  # (6,) the root residual as a world force and moment at the root
    grf: np.ndarray  # (F, 3)
    cop: np.ndarray  # (F, 3)
    grf_total: np.ndarray  # (3,)
    iterations: int
    converged: bool


class FrameSolver:
    """One thread's solver: its own MjData, buffers and warm start.

    muscle_weight: (M,) per-muscle cost weights, Σ w_i·act_i² in place of Σ act_i² (cost "act2"
    only; None: all 1). See docs/method.md#distinct-muscle-solutions.
    """

    def __init__(self, setup: FrameProblem, muscle_weight: np.ndarray | None = None) -> None:
        if muscle_weight is not None:
            muscle_weight = np.asarray(muscle_weight, dtype=np.float64)
            if muscle_weight.shape != setup.muscles.shape:
                raise StaticOptError(
                    f"{muscle_weight.size} muscle weights for {setup.muscles.size} muscles"
                )
            if not (np.isfinite(muscle_weight).all() and (muscle_weight > 0).all()):
                raise StaticOptError("muscle weights must be finite and positive")
            if setup.cost != "act2":
                raise StaticOptError("muscle weights need cost act2 (sum of activations squared)")
        self.muscle_weight = muscle_weight
        self.s = setup
        self.data = mujoco.MjData(setup.model)
        self.act: np.ndarray | None = None  # the previous frame's activations: the warm start
        self.at_bound = np.zeros(0, dtype=int)  # -1/+1: those at their lower/upper bound
        self.edge_force: dict[tuple[int, int], np.ndarray] = {}  # ... and contact forces

    def solve(
        self,
        qpos: np.ndarray,
        qvel: np.ndarray,
        qacc: np.ndarray,
        active: np.ndarray | None = None,
        muscle_linear: np.ndarray | None = None,
    ) -> _Frame:
        """The next frame: inverse dynamics, muscle and contact columns, the QP, the outputs.

        active: contacts="stance": which candidate points may push this frame.
        muscle_linear: (M,) a linear cost per unit activation added to the muscle cost (cost
        "act2" only), e.g. the push away from earlier solutions' activations."""
        s, m, d = self.s, self.s.model, self.data
        if muscle_linear is not None and s.cost != "act2":
            raise StaticOptError("a linear muscle cost needs cost act2 (activations squared)")
        d.qpos[:], d.qvel[:], d.qacc[:] = qpos, qvel, qacc
        mujoco.mj_inverse(m, d)
        need = d.qfrc_inverse.copy()
        cand, others = self._contacts()
        # Take soft contact forces back out: the floor's when they are unknowns instead, and
        # those between body parts unless asked for (qfrc_inverse = ... − Jᵀ·efc_force).
        removed = [self._rows(cand)] if s.contacts != "soft" else []
        if s.contacts == "stance":
            cand = self._active_points(active)
        if not s.self_contacts:
            removed.append(self._rows(others))
        if not s.limit_forces:
            # only the limits the desired motion leaves (J·q̈ > 0: away from the bound); one it
            # presses into or rests on still holds the joint
            leaving = np.zeros(d.nefc)
            mujoco.mj_mulJacVec(m, d, leaving, d.qacc)
            removed.append(np.flatnonzero((d.efc_type == _LIMIT_JOINT) & (leaving > 0)))
        rows = np.concatenate(removed) if removed else np.zeros(0, dtype=int)
        if rows.size:
            force = np.zeros(d.nefc)
            force[rows] = d.efc_force[rows]
            back = np.zeros(m.nv)
            mujoco.mj_mulJacTVec(m, d, back, force)
            need += back
        gain, bias, moment = muscle_gain_bias(m, d, s.muscles)
        # qfrc_actuator is left at muscle input 1: what remains after the muscles' gain is their
        # passive (bias) force plus any non-muscle actuator's force at its current control.
        rhs = need - d.qfrc_actuator + moment.T @ gain
        a_mus = moment.T * gain  # (nv, M) generalized force per unit activation
        cols, h_c, edges = self._contact_columns(cand)
        a_full = np.concatenate([a_mus, cols], axis=1) if cols.size else a_mus
        space = self._coupling_space()
        at, rhs_t, winv_t = space.project(a_full), space.project(rhs), space.weights(s.winv)
        n_mus = s.muscles.size
        lo_m, hi_m = np.zeros(n_mus), np.ones(n_mus)
        if s.reach is not None and self.act is not None:
            # Only activations the previous frame's can reach in one interval: the excitations
            # then reproduce them (no clipping), at the price of residuals where the motion asks
            # for faster changes than the muscles allow.
            lo_m[s.dynamic], hi_m[s.dynamic] = s.reach.bounds(self.act[s.dynamic])
        lo = np.concatenate([lo_m, np.zeros(h_c.size)])
        hi = np.concatenate([hi_m, np.full(h_c.size, np.inf)])
        start = np.zeros(hi.size)
        if self.act is not None:
            # The previous answer, with the muscles that sat on a bound put on the new one: the
            # set of muscles at their bounds changes little from frame to frame.
            start[:n_mus] = np.where(
                self.at_bound < 0, lo_m, np.where(self.at_bound > 0, hi_m, self.act)
            )
        keys = self._contact_keys(cand) if h_c.size else []
        for k, key in enumerate(keys):  # contact forces: the previous frame's at the same spot
            if key in self.edge_force:
                start[n_mus + 4 * k : n_mus + 4 * k + 4] = self.edge_force[key]
        if s.cost == "act2":
            h_mus = np.full(n_mus, 2.0) if self.muscle_weight is None else 2.0 * self.muscle_weight
            h = np.concatenate([h_mus, h_c])
            linear = (
                None
                if muscle_linear is None
                else np.concatenate([np.asarray(muscle_linear, np.float64), np.zeros(h_c.size)])
            )
            x, its = solve_box_qp_lowrank(at, rhs_t, winv_t, h, lo, hi, start, _QP_MAX_ITER, linear)
            converged = its < _QP_MAX_ITER
        else:
            x, its, converged = self._solve_act3(at, rhs_t, winv_t, h_c, lo, hi, start)
        act = np.clip(x[:n_mus], 0.0, 1.0)
        self.act = act
        self.at_bound = np.where(act <= lo_m, -1, np.where(act >= hi_m, 1, 0))
        self.edge_force = {key: x[n_mus + 4 * k : n_mus + 4 * k + 4] for k, key in enumerate(keys)}
        # The unmet force the couplings cannot absorb: e = W⁻¹·N·z with z = W̃⁻¹(Nᵀ(rhs − A·x)).
        unmet = s.winv * space.lift(np.linalg.solve(winv_t, rhs_t - at @ x))
        muscle_force = gain * act + bias
        grf, cop, total = self._ground_forces(cand, x[n_mus:], edges)
        return _Frame(
            activation=act,
            force=muscle_force,
            muscle_torque=moment.T @ muscle_force,
            residual=unmet,
            root_wrench=root_wrench(m, d, s.root_body, s.root_dofs, unmet[s.root_dofs]),
            grf=grf,
            cop=cop,
            grf_total=total,
            iterations=its,
            converged=converged,
        )

    def _solve_act3(
        self,
        at: np.ndarray,
        rhs: np.ndarray,
        winv: np.ndarray,
        h_c: np.ndarray,
        lo: np.ndarray,
        hi: np.ndarray,
        start: np.ndarray,
    ) -> tuple[np.ndarray, int, bool]:
        """Σ act³ in place of Σ act²: (x, QP iterations, converged)."""
        # Σ act³ by reweighted quadratics: with weights 1.5·(a + ε)·a², a fixed point meets the
        # optimality conditions of Σ act³ + 1.5·ε·Σ act²; ε keeps idle muscles from being free
        # (which makes the iteration oscillate). Weights start from the previous frame's answer.
        n_mus = self.s.muscles.size
        total, converged = 0, False
        x = start
        if self.act is None:
            h = np.concatenate([np.full(n_mus, 2.0), h_c])
            x, total = solve_box_qp_lowrank(at, rhs, winv, h, lo, hi, start, _QP_MAX_ITER)
        weight = x[:n_mus].copy()
        for _ in range(_ACT3_ITERATIONS):
            h = np.concatenate([3.0 * (weight + _ACT3_FLOOR), h_c])
            x_new, its = solve_box_qp_lowrank(at, rhs, winv, h, lo, hi, x, _QP_MAX_ITER)
            total += its
            change = float(np.max(np.abs(x_new[:n_mus] - x[:n_mus])))
            x = x_new
            weight = 0.5 * (weight + x[:n_mus])  # damped: plain reweighting can 2-cycle
            if change < 1e-4 and its < _QP_MAX_ITER:
                converged = True
                break
        return x, total, converged

    def _contacts(self) -> tuple[np.ndarray, np.ndarray]:
        """Active contacts: those with the floor, and all others (between body parts)."""
        d, floor = self.data, self.s.floor
        geom = d.contact.geom[: d.ncon]
        active = d.contact.efc_address[: d.ncon] >= 0
        on_floor = (geom[:, 0] == floor) | (geom[:, 1] == floor)
        return np.flatnonzero(active & on_floor), np.flatnonzero(active & ~on_floor)

    def _rows(self, contacts: np.ndarray) -> np.ndarray:
        """The efc rows of these contacts."""
        d = self.data
        cone = self.s.model.opt.cone == int(mujoco.mjtCone.mjCONE_ELLIPTIC)
        rows = [np.zeros(0, dtype=int)]
        for c in contacts:
            dim = int(d.contact.dim[c])
            n = dim if dim == 1 or cone else 2 * (dim - 1)  # pyramids have 2(dim-1) edges
            rows.append(np.arange(d.contact.efc_address[c], d.contact.efc_address[c] + n))
        return np.concatenate(rows)

    def _active_points(self, active: np.ndarray | None) -> np.ndarray:
        """contacts="stance": the candidate points that may push this frame."""
        points = self.s.points
        if points is None or points.n == 0:
            return np.zeros(0, int)
        if active is None:
            return np.arange(points.n)
        return np.flatnonzero(active)

    def _contact_keys(self, cand: np.ndarray) -> list[tuple[int, int]]:
        """(geom, n-th contact of that geom) per candidate: a frame-to-frame match."""
        if self.s.contacts == "stance":
            return [(-1, int(c)) for c in cand]  # points are fixed: the point itself
        seen: dict[int, int] = {}
        keys = []
        for c in cand:
            g = int(self.data.contact.geom[c].sum()) - self.s.floor  # the geom that is not floor
            seen[g] = seen.get(g, -1) + 1
            keys.append((g, seen[g]))
        return keys

    def _contact_columns(self, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Estimate mode: generalized force per unit edge force of each candidate's pyramid."""
        s, m, d = self.s, self.s.model, self.data
        if s.contacts == "soft" or cand.size == 0:
            return np.zeros((m.nv, 0)), np.zeros(0), np.zeros((0, 4, 3))
        jacp = np.zeros((3, m.nv))
        cols = np.empty((m.nv, 4 * cand.size))
        edges = np.empty((cand.size, 4, 3))
        h = np.empty(4 * cand.size)
        if s.contacts == "stance":
            assert s.points is not None
            pos, body = s.points.world(m, d)
            mu = s.points.friction
            up = np.array([0.0, 0.0, 1.0])
            pyramid = np.stack(
                [up + mu * e for e in np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]])]
            )
            for k, c in enumerate(cand):
                edges[k] = pyramid
                mujoco.mj_jac(m, d, jacp, None, pos[c], int(body[c]))
                cols[:, 4 * k : 4 * k + 4] = jacp.T @ pyramid.T
                gap = max(float(pos[c, 2]) - s.points.floor_z, 0.0) / _CONTACT_GAP_SCALE
                h[4 * k : 4 * k + 4] = 2.0 * s.contact_weight * (1.0 + gap * gap)
            return cols, h, edges
        for k, c in enumerate(cand):
            con = d.contact[int(c)]
            other = con.geom[1] if con.geom[0] == s.floor else con.geom[0]
            frame = con.frame.reshape(3, 3)
            # The frame's normal points from geom1 to geom2: up when the floor is geom1.
            up = frame[0] if con.geom[0] == s.floor else -frame[0]
            mu = float(con.friction[0])
            t1, t2 = frame[1], frame[2]
            edges[k] = np.stack([up + mu * t1, up - mu * t1, up + mu * t2, up - mu * t2])
            mujoco.mj_jac(m, d, jacp, None, con.pos, int(m.geom_bodyid[other]))
            cols[:, 4 * k : 4 * k + 4] = jacp.T @ edges[k].T
            gap = max(float(con.dist), 0.0) / _CONTACT_GAP_SCALE
            h[4 * k : 4 * k + 4] = 2.0 * s.contact_weight * (1.0 + gap * gap)
        return cols, h, edges

    def _ground_forces(
        self, cand: np.ndarray, edge_force: np.ndarray, edges: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Floor force on each foot and on the whole body, and each foot's centre of pressure."""
        s, m, d = self.s, self.s.model, self.data
        grf = np.zeros((s.n_feet, 3))
        moment_z = np.zeros((s.n_feet, 2))  # Σ p_xy·F_z, for the centre of pressure
        total = np.zeros(3)
        f6 = np.zeros(6)
        if s.contacts == "stance" and s.points is not None:
            pos = s.points.world(m, d)[0]
            n_fixed = s.points.body.size
            for k, c in enumerate(cand):
                force = edge_force[4 * k : 4 * k + 4] @ edges[k]
                total += force
                if c < n_fixed:
                    foot = s.points.foot[c]
                    grf[foot] += force
                    moment_z[foot] += pos[c, :2] * force[2]
            cand = np.zeros(0, int)  # (the loop below reads MuJoCo's contacts)
        for k, c in enumerate(cand):
            con = d.contact[int(c)]
            floor_first = con.geom[0] == s.floor
            other = con.geom[1] if floor_first else con.geom[0]
            if s.contacts == "estimate":
                force = edge_force[4 * k : 4 * k + 4] @ edges[k]
            else:
                mujoco.mj_contactForce(m, d, int(c), f6)
                force = con.frame.reshape(3, 3).T @ f6[:3]  # on geom2, world frame
                force = force if floor_first else -force
            total += force
            foot = s.geom_foot[other]
            if foot >= 0:
                grf[foot] += force
                moment_z[foot] += con.pos[:2] * force[2]
        cop = np.full((s.n_feet, 3), np.nan)
        loaded = grf[:, 2] > 1e-6
        if loaded.any():
            cop[loaded, :2] = moment_z[loaded] / grf[loaded, 2:3]
            cop[loaded, 2] = d.geom_xpos[s.floor, 2]
        return grf, cop, total

    def _coupling_space(self) -> _CouplingSpace:
        """The generalized forces the equality constraints leave to the muscles, this frame."""
        s, m, d = self.s, self.s.model, self.data
        jac = equality_jacobian(m, d)
        ne = jac.shape[0]
        if ne == 0:
            return _CouplingSpace(m.nv)
        dep = s.eq_dependent[d.efc_id[:ne]]
        if (dep >= 0).all() and np.unique(dep).size == ne:
            # Joint couplings: each row fixes one DoF from others, so those others span the
            # space (dependent = −X·independent); much cheaper than an SVD.
            indep = np.setdiff1d(np.arange(m.nv), dep)
            try:
                coupled = np.linalg.solve(jac[:, dep], jac[:, indep])
                return _CouplingSpace(m.nv, indep=indep, dep=dep, coupled=coupled)
            except np.linalg.LinAlgError:
                pass
        _, sv, vt = np.linalg.svd(jac, full_matrices=True)
        rank = int(np.count_nonzero(sv > 1e-9 * max(float(sv[0]), 1e-300)))
        return _CouplingSpace(m.nv, basis=vt[rank:].T)


class _CouplingSpace:
    """A basis N of the null space of the equality Jacobian J: forces J·y = 0 are left to muscles.

    Either structured (independent DoFs I, dependent D = −X·I, from joint couplings), a dense
    basis (an SVD, for other equality constraints), or the whole space when there are none.
    """

    def __init__(
        self,
        nv: int,
        indep: np.ndarray | None = None,
        dep: np.ndarray | None = None,
        coupled: np.ndarray | None = None,
        basis: np.ndarray | None = None,
    ) -> None:
        self.nv, self.indep, self.dep, self.coupled, self.basis = nv, indep, dep, coupled, basis

    def project(self, a: np.ndarray) -> np.ndarray:
        """Nᵀ·a for a with nv rows."""
        if self.basis is not None:
            return self.basis.T @ a
        if self.coupled is None:
            return a
        return a[self.indep] - self.coupled.T @ a[self.dep]

    def lift(self, z: np.ndarray) -> np.ndarray:
        """N·z."""
        if self.basis is not None:
            return self.basis @ z
        if self.coupled is None:
            return z
        out = np.empty(self.nv)
        out[self.indep] = z
        out[self.dep] = -self.coupled @ z
        return out

    def weights(self, winv: np.ndarray) -> np.ndarray:
        """Nᵀ·diag(winv)·N, the residual weights' inverse in the reduced space."""
        if self.basis is not None:
            return (self.basis.T * winv) @ self.basis
        if self.coupled is None:
            return np.diag(winv)
        x = self.coupled
        return np.diag(winv[self.indep]) + (x.T * winv[self.dep]) @ x


def equality_jacobian(model: mujoco.MjModel, data: mujoco.MjData) -> np.ndarray:
    """(ne, nv): the Jacobian of data's active equality constraint rows (the joint couplings)."""
    ne = int(np.count_nonzero(data.efc_type[: data.nefc] == _EQUALITY))
    jac = np.zeros((ne, model.nv))
    if ne and mujoco.mj_isSparse(model):  # equality rows come first in MuJoCo's order
        mujoco.mju_sparse2dense(
            jac, data.efc_J, data.efc_J_rownnz[:ne], data.efc_J_rowadr[:ne], data.efc_J_colind
        )
    elif ne:
        jac[:] = data.efc_J[: ne * model.nv].reshape(ne, model.nv)
    return jac


def reference_arrays(
    reference: Reference, model: mujoco.MjModel
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """qpos, qvel, qacc and fps of a reference, checked against the model."""
    if not isinstance(reference, Reference):
        raise StaticOptError(
            f"reference must be a Reference (Reference.from_trajectory makes one of plain "
            f"arrays), not {type(reference).__name__}"
        )
    try:
        fps = float(reference.fps)
        arrays = {
            k: np.asarray(getattr(reference, k), dtype=np.float64) for k in ("qpos", "qvel", "qacc")
        }
    except (TypeError, ValueError) as exc:
        raise StaticOptError(f"reference is not numeric ({exc})") from exc
    if not np.isfinite(fps) or fps <= 0:
        raise StaticOptError(f"reference fps must be a positive number, not {fps}")
    width = {"qpos": model.nq, "qvel": model.nv, "qacc": model.nv}
    for key, arr in arrays.items():
        if arr.ndim != 2 or arr.shape[1] != width[key]:
            raise StaticOptError(
                f"reference {key} has shape {arr.shape}, the model needs (T, {width[key]})"
            )
    n = arrays["qpos"].shape[0]
    if any(arr.shape[0] != n for arr in arrays.values()):
        shapes = ", ".join(f"{k} {a.shape}" for k, a in arrays.items())
        raise StaticOptError(f"reference arrays disagree on the frame count: {shapes}")
    if n < 2:
        raise StaticOptError(f"reference has {n} frame(s); static optimization needs at least 2")
    for key, arr in arrays.items():
        bad = ~np.isfinite(arr).all(axis=1)
        if bad.any():
            raise StaticOptError(
                f"reference {key} is not finite in {int(bad.sum())} frame(s), "
                f"first at frame {int(np.argmax(bad))}"
            )
    return arrays["qpos"], arrays["qvel"], arrays["qacc"], fps


def _correspondence(model: mujoco.MjModel) -> CorrespondenceSet | None:
    """The model's packaged correspondence file (its feet and key bodies), if it has one."""
    try:
        return load_correspondence(default_correspondence_path(model))
    except CorrespondenceError:
        return None


def _foot_geoms(model: mujoco.MjModel, feet: Mapping[str, Sequence[str]]) -> list[np.ndarray]:
    """Each foot's floor-contact geoms."""
    try:
        return [foot_contact_geoms(model, list(bodies)) for bodies in feet.values()]
    except ModelError as exc:
        raise StaticOptError(str(exc)) from exc


def root_chain(model: mujoco.MjModel) -> tuple[np.ndarray, int]:
    """The root's six DoFs and its body: a free joint, or three slides and three hinges on the
    world's first child (OpenSim-style pelvis); empty for a fixed or partial base."""
    free = np.flatnonzero(model.jnt_type == _FREE)
    if free.size:
        return np.arange(6) + model.jnt_dofadr[free[0]], int(model.jnt_bodyid[free[0]])
    body = next((b for b in range(1, model.nbody) if model.body_parentid[b] == 0), 0)
    joints = np.flatnonzero(model.jnt_bodyid == body)
    kinds = sorted(int(model.jnt_type[j]) for j in joints)
    slide, hinge = int(mujoco.mjtJoint.mjJNT_SLIDE), int(mujoco.mjtJoint.mjJNT_HINGE)
    if body and kinds == sorted([slide] * 3 + [hinge] * 3):
        return np.sort(model.jnt_dofadr[joints]), body
    return np.zeros(0, int), body


def weight_of(model: mujoco.MjModel, body: int) -> float:
    """The weight (N) of a body and everything below it: the whole model, from its root."""
    return float(model.body_subtreemass[body]) * float(np.linalg.norm(model.opt.gravity))


def root_wrench(
    model: mujoco.MjModel, data: mujoco.MjData, body: int, dofs: np.ndarray, force: np.ndarray
) -> np.ndarray:
    """(6,) world force and moment at the root body's origin equivalent to generalized force
    `force` on the root DoFs (τ = Jᵀ·w, solved for w); zeros without a root."""
    if dofs.size != 6:
        return np.zeros(6)
    jacp, jacr = np.zeros((3, model.nv)), np.zeros((3, model.nv))
    mujoco.mj_jacBody(model, data, jacp, jacr, body)
    jac = np.concatenate([jacp[:, dofs], jacr[:, dofs]])  # (6, 6)
    try:
        return np.linalg.solve(jac.T, force)
    except np.linalg.LinAlgError:  # a singular chain (gimbal lock): the least-squares wrench
        return np.linalg.lstsq(jac.T, force, rcond=None)[0]


def frame_problem(
    model: mujoco.MjModel,
    feet: Mapping[str, Sequence[str]] | None,
    cost: str,
    contacts: str,
    residual_weight: float,
    strict_weight: float,
    contact_weight: float,
    contact_distance: float,
    activation_dynamics: bool,
    self_contacts: bool,
    fps: float,
    floor_work: bool = False,
    limit_forces: bool = True,
) -> tuple[FrameProblem, tuple[str, ...]]:
    """Check the settings and prepare what every frame shares; also the foot names."""
    if cost not in COSTS:
        raise StaticOptError(f"cost must be one of {', '.join(COSTS)}, not {cost!r}")
    if contacts not in CONTACT_MODES:
        raise StaticOptError(
            f"contacts must be one of {', '.join(CONTACT_MODES)}, not {contacts!r}"
        )
    for name, value in (
        ("residual_weight", residual_weight),
        ("strict_weight", strict_weight),
        ("contact_weight", contact_weight),
    ):
        if not (isinstance(value, numbers.Real) and np.isfinite(value) and value > 0):
            raise StaticOptError(f"{name} must be a positive number, not {value!r}")
    if not (isinstance(contact_distance, numbers.Real) and 0 <= contact_distance < np.inf):
        raise StaticOptError(f"contact_distance must be a distance >= 0, not {contact_distance!r}")
    muscles = muscle_actuators(model)
    if muscles.size == 0:
        raise StaticOptError("model has no muscle actuators")
    try:
        floor = floor_geom(model)
    except ModelError:
        floor = -1
    packaged = _correspondence(model) if floor >= 0 and (feet is None or floor_work) else None
    if feet is None:
        feet = packaged.feet if packaged is not None else {}
    if floor < 0:
        feet = {}
    names, geoms = tuple(feet), _foot_geoms(model, feet)
    points = None
    if contacts == "stance" and names:
        extra = ()
        if floor_work and packaged is not None:
            extra = floor_work_bodies([(e.source, e.body) for e in packaged.entries])
        try:
            points = contact_points(model, feet, extra)
        except ContactError as exc:
            raise StaticOptError(str(exc)) from exc
    if contacts == "estimate" and floor >= 0:  # (without a floor there is nothing to estimate)
        # A copy whose floor contacts are detected up to contact_distance away: those are the
        # candidates whose forces become unknowns (their soft-model forces are taken back out).
        model = copy.deepcopy(model)
        model.geom_margin[floor] = float(contact_distance)
    geom_foot = np.full(model.ngeom, -1)
    for i, g in enumerate(geoms):
        geom_foot[g] = i
    root_dofs, root_body = root_chain(model)
    # The solver minimizes ½Σh·x² + ½eᵀWe: h = 2 for Σ act², W = 2·weight for weight·‖e‖².
    winv = np.full(model.nv, 0.5 / strict_weight)
    winv[root_dofs] = 0.5 / residual_weight
    dynamic = model.actuator_dyntype[muscles] == _MUSCLE_DYN
    reach = None
    if activation_dynamics and dynamic.any():
        steps = _substeps(model, fps)
        prm = model.actuator_dynprm[muscles[dynamic], :3]
        reach = ActivationReach(prm, model.opt.timestep, steps)
    eq_dependent = np.full(model.neq, -1)
    for e in range(model.neq):
        j = int(model.eq_obj1id[e])
        if model.eq_type[e] == int(mujoco.mjtEq.mjEQ_JOINT) and model.jnt_type[j] in _ONE_DOF:
            eq_dependent[e] = model.jnt_dofadr[j]
    setup = FrameProblem(
        model=model,
        eq_dependent=eq_dependent,
        muscles=muscles,
        root_dofs=root_dofs,
        root_body=root_body,
        winv=winv,
        floor=floor,
        geom_foot=geom_foot,
        n_feet=len(names),
        contacts=contacts,
        self_contacts=self_contacts,
        limit_forces=limit_forces,
        contact_weight=contact_weight,
        cost=cost,
        dynamic=dynamic,
        reach=reach,
        points=points,
    )
    return setup, names


def _substeps(model: mujoco.MjModel, fps: float) -> int:
    """Physics steps per control interval (the excitation is held over them)."""
    return max(1, int(round(1.0 / (fps * model.opt.timestep))))


_WARMUP_FRAMES = 10  # a chunk after the first starts this early, for its warm start and bounds


def _solve_range(
    setup: FrameProblem,
    qpos: np.ndarray,
    qvel: np.ndarray,
    qacc: np.ndarray,
    active: np.ndarray | None,
    span: tuple[int, int, int],
) -> list[_Frame]:
    """Frames start..stop−1, solved in order after warming up on frames first..start−1."""
    first, start, stop = span
    solver = FrameSolver(setup)
    out = []
    for k in range(first, stop):
        frame = solver.solve(qpos[k], qvel[k], qacc[k], None if active is None else active[k])
        if k >= start:
            out.append(frame)
    return out


def _invert_columns(job: tuple[np.ndarray, np.ndarray, float, int]) -> tuple[np.ndarray, ...]:
    """invert_activation_dynamics on some muscles' columns (each column is independent)."""
    return invert_activation_dynamics(*job)


def _solve_frames(
    setup: FrameProblem,
    qpos: np.ndarray,
    qvel: np.ndarray,
    qacc: np.ndarray,
    steps: int,
    threads: int,
    processes: int,
    active: np.ndarray | None = None,
) -> tuple[list[_Frame], np.ndarray, np.ndarray, str]:
    """Every frame, then the excitations: (frames, excitation, clipped, how it ran).

    The frames go in contiguous chunks to forked processes, threads or this thread; then the
    inversion of activation dynamics, split by muscles, to the same workers.
    """
    n = qpos.shape[0]
    count = max(1, min(max(threads, processes), n // (2 * _WARMUP_FRAMES) or 1))
    spans = balanced_spans(n, count, _WARMUP_FRAMES)
    prm = setup.model.actuator_dynprm[setup.muscles, :3]
    columns = [c for c in np.array_split(np.flatnonzero(setup.dynamic), count) if c.size]
    solve = functools.partial(_solve_range, setup, qpos, qvel, qacc, active)
    with (
        single_threaded_blas(),
        Workers(count, processes=processes > 1, inherit=(solve,)) as workers,
    ):
        frames = [f for chunk in workers.map(solve, spans) for f in chunk]
        activation = np.stack([f.activation for f in frames])
        excitation = activation.copy()
        clipped = np.zeros_like(activation, dtype=bool)
        jobs = [(activation[:, c], prm[c], setup.model.opt.timestep, steps) for c in columns]
        for c, (u, clip) in zip(columns, workers.map(_invert_columns, jobs), strict=True):
            excitation[:, c], clipped[:, c] = u, clip
    return frames, excitation, clipped, str(workers)


def static_optimization(
    reference: Reference,
    model: mujoco.MjModel,
    *,
    cost: str = "act2",
    residual_weight: float = 100.0,
    strict_weight: float = 1e6,
    contacts: str = "stance",
    contact_weight: float = 1e-3,
    contact_distance: float = 0.02,
    stance_rule: StanceRule | None = None,
    floor_work: bool = True,
    activation_dynamics: bool = True,
    self_contacts: bool = False,
    feet: Mapping[str, Sequence[str]] | None = None,
    threads: int | None = None,
    processes: int | None = None,
) -> StaticOptResult:
    """Activations, excitations and forces that reproduce each frame's inverse dynamics.

    reference: the clip on this model (`Reference.from_trajectory` makes one of plain arrays).
    The cost is Σ act² ('act2') or Σ act³ ('act3') + residual_weight·‖root residual‖² (N, N·m)
    + strict_weight·‖other DoFs' residual‖² + contact_weight·Σ (estimated edge force, N)².
    contacts: 'stance' (candidate points where the reference is in stance: `muscles.contacts`),
    'estimate' (MuJoCo's floor contacts within contact_distance, m) or 'soft' (module
    docstring). stance_rule: its height and speed thresholds (None: the defaults).
    floor_work: the hands, knees and pelvis are candidates too (crawling, kneeling, cartwheels).
    activation_dynamics: bound each frame's activations by
    what the previous frame's can reach. self_contacts: keep the soft forces of contacts between
    body parts (off by default: retargeted poses interpenetrate, and MyoFullBody's own default
    pose has the humeri 2 cm inside the thorax, pushed out with ~500 N·m at the shoulders).
    feet: foot name -> body names (None: the model's packaged correspondence file, if any).
    threads / processes: split the frames into this many contiguous chunks, solved in parallel
    by threads or by forked processes (None: 1). Threads barely help (each frame's many small
    NumPy steps hold the GIL); processes do.
    """
    started = time.perf_counter()
    qpos, qvel, qacc, fps = reference_arrays(reference, model)
    setup, foot_names = frame_problem(
        model,
        feet,
        cost,
        contacts,
        residual_weight,
        strict_weight,
        contact_weight,
        contact_distance,
        activation_dynamics,
        self_contacts,
        fps,
        floor_work,
    )
    m = setup.model
    steps = _substeps(m, fps)
    active = None
    if setup.points is not None:
        try:
            active = stance(m, setup.points, qpos, fps, stance_rule or StanceRule())
        except ContactError as exc:
            raise StaticOptError(str(exc)) from exc
    frames, excitation, clipped, parallel = _solve_frames(
        setup, qpos, qvel, qacc, steps, int(threads or 1), int(processes or 1), active
    )
    activation = np.stack([f.activation for f in frames])
    residual = np.stack([f.residual for f in frames])
    root = setup.root_dofs
    wrench = np.stack([f.root_wrench for f in frames])
    residual_force, residual_moment = wrench[:, :3], wrench[:, 3:]
    joint_residual = residual.copy()
    joint_residual[:, root] = 0.0
    feasible = np.max(np.abs(joint_residual), axis=1) <= FEASIBILITY_TOL
    grf_total = np.stack([f.grf_total for f in frames])
    body_weight = weight_of(m, setup.root_body)
    result = StaticOptResult(
        fps=fps,
        muscle_names=tuple(m.actuator(int(i)).name for i in setup.muscles),
        foot_names=foot_names,
        activation=activation,
        excitation=excitation,
        excitation_clipped=clipped,
        force=np.stack([f.force for f in frames]),
        muscle_torque=np.stack([f.muscle_torque for f in frames]),
        residual_force=residual_force,
        residual_moment=residual_moment,
        joint_residual=joint_residual,
        feasible=feasible,
        grf=np.stack([f.grf for f in frames]),
        cop=np.stack([f.cop for f in frames]),
        grf_total=grf_total,
        body_weight=body_weight,
        cost=cost,
        contacts=contacts,
        metrics={},
        notes=_notes(setup, contact_distance, fps, steps, parallel),
    )
    supported = active.any(axis=1) if active is not None else np.ones(len(frames), bool)
    metrics = _metrics(result, frames, time.perf_counter() - started)
    metrics.update(ground_metrics(result, supported))
    return dataclasses.replace(result, metrics=metrics)


def ground_metrics(result: StaticOptResult, supported: np.ndarray) -> dict[str, float]:
    """Residuals in stance and in flight (frames with no candidate contact), and how the floor
    forces carry the body: `grf.vertical_peak_bw` and `grf.support_pct`, the vertical floor
    force over stance frames divided by body weight + m·a_z of the centre of mass there (which
    inverse dynamics splits exactly into floor force + vertical root residual)."""
    bw = result.body_weight if result.body_weight > 0 else np.nan
    pct = np.linalg.norm(result.residual_force, axis=1) / bw * 100
    flight = ~supported

    def mean(x: np.ndarray) -> float:
        return float(np.mean(x)) if x.size else float("nan")

    floor_z = result.grf_total[supported, 2]
    needed = np.sum(floor_z + result.residual_force[supported, 2])
    support = np.sum(floor_z) / needed if needed > 0 else np.nan
    return {
        "static_opt.residual_force_pct_bw": mean(pct[supported]),
        "static_opt.residual_force_pct_bw_max": float(np.max(pct[supported]))
        if supported.any()
        else float("nan"),
        "static_opt.flight_residual_pct_bw": mean(pct[flight]),
        "static_opt.flight_pct": float(100.0 * np.mean(flight)),
        "grf.vertical_peak_bw": float(np.max(result.grf_total[:, 2]) / bw),
        "grf.support_pct": float(100.0 * support),
    }


def _metrics(result: StaticOptResult, frames: list[_Frame], seconds: float) -> dict[str, float]:
    """The clip's `static_opt.*` metrics: means over its frames."""
    bw = result.body_weight if result.body_weight > 0 else np.nan
    return {
        "static_opt.residual_moment_nm": float(
            np.mean(np.linalg.norm(result.residual_moment, axis=1))
        ),
        "static_opt.fps": result.n_frames / seconds,
        "static_opt.joint_residual_nm": float(
            np.mean(np.max(np.abs(result.joint_residual), axis=1))
        ),
        "static_opt.infeasible_pct": float(100.0 * np.mean(~result.feasible)),
        "static_opt.excitation_clip_pct": float(100.0 * np.mean(result.excitation_clipped)),
        "static_opt.activation_mean": float(np.mean(result.activation)),
        "static_opt.grf_vertical_pct_bw": float(np.mean(result.grf_total[:, 2]) / bw * 100),
        "static_opt.qp_iterations": float(np.mean([f.iterations for f in frames])),
        "static_opt.unconverged_pct": float(100.0 * np.mean([not f.converged for f in frames])),
    }


def _notes(
    setup: FrameProblem, contact_distance: float, fps: float, steps: int, parallel: str
) -> dict[str, str]:
    """How the floor forces and excitations were found, and how the frames ran."""
    if setup.floor < 0:
        floor_note = "the model has no floor"
    elif setup.contacts == "soft":
        floor_note = "floor forces from MuJoCo's soft contact model (mj_inverse)"
    elif setup.contacts == "stance":
        points = setup.points
        floor_note = (
            f"floor forces estimated at {points.body.size if points else 0} foot points"
            + (
                f" and {points.geoms.size} geoms of {', '.join(points.geom_body_names)}"
                if points is not None and points.geoms.size
                else ""
            )
            + " while the reference holds them in stance"
        )
    else:
        floor_note = f"floor forces estimated at contacts within {contact_distance} m"
    interval = 1.0 / (fps * setup.model.opt.timestep)
    held = f"held for {steps} physics steps after each frame; last frame: steady state"
    if abs(interval - steps) > 1e-6:
        held += f" (a control interval is {interval:.3g} steps)"
    return {"contacts": floor_note, "excitation": held, "parallel": parallel}
