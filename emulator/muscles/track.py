"""The tracking controller (`--method track`): a forward simulation of the muscle model over the
whole clip, driven at every control step by one muscle problem (computed muscle control, with
the floor forces predicted from stance). See docs/method.md#tracking-controller.

At each control step (200 Hz by default, the reference interpolated between its frames), from
the simulated state (q, v, a):
1. desired accelerations: the reference's qacc plus PD feedback on its qpos and qvel;
2. static optimization's frame problem at that state and acceleration: the activations
   reachable within the step, the stance points' floor forces, and the root's unmet force: the
   assist, heavily penalised. A joint limit's push is left out of its inverse dynamics while the
   plan drives the joint out of the limit (a plan that counted on the push would cancel it and
   hold the joint at its limit), and only a foot's main segment may push (TrackConfig.toe_push);
3. the excitations that reach those activations go to the simulator, the assist is applied on
   the root DoFs (`qfrc_applied`), and the step is simulated;
4. what the simulator did is recorded (its own contacts give the floor forces), never the plan.
The run never resets. With the assist off, a fall is recorded as in `emulate`: NaN after it.
"""

from __future__ import annotations

import numbers
import time
from dataclasses import dataclass, field

import mujoco
import numpy as np
import xarray as xr

from msconvert.dims import DIM_TIME, DIM_XYZ, select_solution
from msconvert.emulator.backends.base import FEET, decode, recording_model
from msconvert.emulator.emulation import (
    Emulation,
    EmulationFormatError,
    empty_recording,
    solution_prefix,
    tracking_metrics,
)
from msconvert.emulator.model import ModelError, collides_with, control_frame_skip
from msconvert.emulator.muscles.activation import held_excitation
from msconvert.emulator.muscles.contacts import ContactError, ContactPoints, StanceRule, stance
from msconvert.emulator.muscles.static_opt import (
    FrameSolver,
    MuscleCost,
    StaticOptError,
    equality_jacobian,
    frame_problem,
    reference_arrays,
    weight_of,
)
from msconvert.emulator.retarget.reference import Reference

ASSIST = ("on", "off")
METHOD_LABEL = "tracking controller (computed muscle control, forward simulation)"


class TrackError(ValueError):
    """The tracking controller cannot run on this input or with these settings; one line."""


@dataclass(frozen=True)
class TrackConfig:
    """The controller's settings; the defaults work on the demo corpus."""

    kp: float = 100.0  # 1/s²: PD stiffness on the reference's joint positions (ωn = 10 rad/s)
    kd: float = 20.0  # 1/s: PD damping on its velocities (critically damped with kp = 100)
    assist: str = "on"  # 'off': the same controller with no root assist
    contacts: str = (
        "stance"  # floor forces in the problem: 'stance' (predicted) or 'soft' (MuJoCo's)
    )
    contact_gap_m: float = 0.01  # a stance point pushes only while the simulated one is this near
    # ... and only while the step's desired motion keeps it this near: a point the plan lifts
    # cannot push (at toe-off the toe's planned push would otherwise fling the lifted foot).
    contact_lift_m: float = 0.005
    # cost per (N or N m)² of root assist (vs Σ act²). At 100 the plan took the assist where the
    # legs could push: on the walk 2.3°, 33 mm, 13 % BW against 1.6°, 17 mm, 10.5 % at 1e4.
    assist_weight: float = 1e4
    contact_weight: float = 1e-3  # cost per N² of predicted floor force
    termination_body_error_m: float = 0.3  # a fall: key bodies this far off (as in training)
    termination_root_error_m: float = 0.5
    initial_activation: float = 0.05  # tone of actuators outside the muscle problem
    # Hz: how often the plan is made; the reference is interpolated between its frames and the
    # recording stays at them. At a 50-Hz frame rate the legs lag the push-off (the ankle turns
    # 30° in ~0.1 s) and the swing toe catches the floor. 0: once per frame.
    control_hz: float = 200.0
    # Whether stance points on the toe segments may push in the plan. Only the toe flexors can
    # hold a toe push; they saturate in late stance and, slow to let go, whip the swing ankle
    # into its limit at toe-off.
    toe_push: bool = False
    # Whether the plan counts on a joint limit's push while it drives the joint out of the
    # limit. Counted, a plan spends muscle force against the push and holds the joint at its
    # limit (the walk's ankles stuck at -45°); a limit the motion presses into counts either way.
    limit_push: bool = False
    stance: StanceRule = field(default_factory=StanceRule)

    def __post_init__(self) -> None:
        for name in ("kp", "kd", "assist_weight", "contact_weight", "contact_lift_m", "control_hz"):
            value = getattr(self, name)
            if not (isinstance(value, numbers.Real) and np.isfinite(value) and value >= 0):
                raise TrackError(f"track {name} must be a number >= 0, not {value!r}")
        if self.assist not in ASSIST:
            raise TrackError(f"assist must be one of {', '.join(ASSIST)}, not {self.assist!r}")
        if self.assist_weight <= 0 or self.contact_weight <= 0 or self.contact_lift_m <= 0:
            raise TrackError("track assist_weight, contact_weight, contact_lift_m must be positive")


# The controller as a policy's teacher (DAgger's labels, the residual's feedforward, the warm
# start's activations): it plans once per frame, as the environment acts, and counts on the
# limits' push: a command that jumps as a joint's desired motion turns to leave its limit is
# harder to imitate (on the test arm, whose reference rests on its limits, DAgger's students
# reached 2-12° against the teacher's 1.0° without it, 1.3-2.2° with it).
TEACHER = TrackConfig(control_hz=0.0, limit_push=True)


@dataclass(frozen=True, eq=False)
class TrackResult:
    """The controller's emulation of a clip, and the root assist it applied per frame."""

    emulation: Emulation
    assist_force: np.ndarray  # (T, 3) world force on the root, N (NaN after a fall)
    assist_moment: np.ndarray  # (T, 3) world moment about the root origin, N m
    assist: str  # 'on' or 'off'
    body_weight: float  # N
    metrics: dict[str, float]

    def to_dataset(self) -> xr.Dataset:
        """The emulation's arrays, plus `assist_force` and `assist_moment` on `time`."""
        ds = self.emulation.to_dataset()
        f32 = np.float32
        ds["assist_force"] = (
            (DIM_TIME, DIM_XYZ),
            self.assist_force.astype(f32),
            {"units": "N", "description": "root assist force applied, world frame"},
        )
        ds["assist_moment"] = (
            (DIM_TIME, DIM_XYZ),
            self.assist_moment.astype(f32),
            {"units": "N m", "description": "root assist moment applied, world frame"},
        )
        ds.attrs.update(
            method_label=METHOD_LABEL, track_assist=self.assist, body_weight_n=self.body_weight
        )
        return ds

    @classmethod
    def from_dataset(cls, ds: xr.Dataset, solution: int | None = None) -> TrackResult:
        """The controller's result a clip's dataset holds (as `to_dataset` wrote it); of a clip
        with distinct muscle solutions (`solution` dim), solution `solution` (None: 0)."""
        clip = str(ds.attrs.get("clip_id", ""))
        missing = [v for v in ("assist_force", "assist_moment") if v not in ds]
        if missing or "track_assist" not in ds.attrs:
            raise EmulationFormatError(
                f"clip {clip!r} holds no tracking-controller result "
                f"({', '.join(missing) or 'track_assist'} missing)"
            )
        metrics = ds.attrs.get("metrics") or {}
        index = 0 if solution is None else solution
        emulation = Emulation.from_dataset(ds, solution=index)
        ds, prefix = select_solution(ds, index), solution_prefix(index)
        return cls(
            emulation=emulation,
            assist_force=np.asarray(ds["assist_force"].values, np.float64),
            assist_moment=np.asarray(ds["assist_moment"].values, np.float64),
            assist=str(ds.attrs["track_assist"]),
            body_weight=float(ds.attrs.get("body_weight_n", np.nan)),
            metrics={
                k.removeprefix(prefix): float("nan") if v is None else float(v)
                for k, v in metrics.items()
                if k.startswith((prefix + "track.", prefix + "tracking."))
            },
        )


@dataclass(frozen=True, eq=False)
class Command:
    """What the controller commands for one control step."""

    excitation: np.ndarray  # (nu,) held over the step; 0 for actuators outside the muscle problem
    root_force: np.ndarray  # (nv,) generalized assist force on the root DoFs (zero elsewhere)
    root_wrench: np.ndarray  # (6,) the same assist as a world force (N) and moment (N m)


class Controller:
    """The tracking controller of one clip: at any simulated state of frame k, the muscle
    excitations and root assist of one control step. `track` runs it over the whole clip; the
    policies' warm start (DAgger) asks it at the states a student reaches."""

    def __init__(
        self,
        reference: Reference,
        model: mujoco.MjModel,
        config: TrackConfig | None = None,
        *,
        feet: dict[str, list[str]] | None = None,
        floor_work: bool = True,
        muscle_cost: MuscleCost | None = None,
    ) -> None:
        config = config or TrackConfig()
        try:
            qpos_ref, qvel_ref, qacc_ref, fps = reference_arrays(reference, model)
            substeps = _substeps(control_frame_skip(model, fps), fps, config.control_hz)
            steps = control_frame_skip(model, fps) // substeps
            plan = _interpolated(model, qpos_ref, qvel_ref, qacc_ref, fps, substeps)
            setup, _ = frame_problem(
                model,
                feet,
                "act2",
                config.contacts,
                config.assist_weight,
                1e6,
                config.contact_weight,
                config.contact_gap_m,
                True,
                False,
                fps * substeps,
                floor_work,
                limit_forces=config.limit_push,
            )
            # A model fixed to the world (an arm on a bench) has nothing to stand on and no
            # root to assist; a free one needs its 6-DoF root, a floor and feet.
            floating = _has_free_root(model) or setup.root_dofs.size > 0
            if floating and setup.root_dofs.size != 6:
                raise TrackError(
                    "the model's root is not a 6-DoF chain (free joint or 3 slides + 3 hinges)"
                )
            if floating and setup.floor < 0:
                raise TrackError("the model has no floor: the controller needs one to stand on")
            if floating and setup.points is None and config.contacts == "stance":
                raise TrackError(
                    "the model has no feet to stand on (no correspondence file's feet)"
                )
            if setup.points is not None:
                active = stance(model, setup.points, plan[0], fps * substeps, config.stance)
                if not config.toe_push:
                    active &= ~_toe_points(model, setup.points)
            else:
                active = np.zeros((plan[0].shape[0], 0), bool)
        except (StaticOptError, ContactError, ModelError) as exc:
            raise TrackError(str(exc)) from exc
        self.config, self.model, self.setup = config, model, setup
        self.qpos_ref, self.qvel_ref, self.qacc_ref, self.fps = qpos_ref, qvel_ref, qacc_ref, fps
        # physics steps per control step, control steps per frame; the plan's reference
        # (qpos, qvel, qacc) and its pushing points at every control step
        self.steps, self.substeps, self.plan, self.active = steps, substeps, plan, active
        # muscle_cost: Σ w·act² and a push away from other solutions (None: Σ act²)
        self.muscle_cost = muscle_cost or MuscleCost()
        per_frame = (self.n_frames, setup.muscles.size)
        for name in ("away_from", "weight"):
            value = getattr(self.muscle_cost, name)
            if value is not None and np.ndim(value) == 2 and np.shape(value) != per_frame:
                raise TrackError(
                    f"{name} is {np.shape(value)}, not (frames, muscles) = {per_frame}"
                )
        weight = self.muscle_cost.weight
        if weight is not None and not (
            np.isfinite(weight).all() and (np.asarray(weight) > 0).all()
        ):
            raise TrackError("muscle weights must be finite and positive")
        try:
            # built with frame 0's weights; command() sets each step's
            self.solver = FrameSolver(setup, self.muscle_cost.weight_at(0))
        except StaticOptError as exc:
            raise TrackError(str(exc)) from exc
        self.solver.at_bound = np.zeros(setup.muscles.size, int)  # asked before any solve
        self._kinematics = mujoco.MjData(model)  # where the stance points are, at a state
        muscles = setup.muscles
        self._prm = model.actuator_dynprm[muscles, :3]
        self._act_adr = model.actuator_actadr[muscles]
        self._dq = np.zeros(model.nv)

    @property
    def n_frames(self) -> int:
        return self.qpos_ref.shape[0]

    @property
    def body_weight(self) -> float:
        """N: the whole model's (a fixed model's moving bodies, for the % BW figures)."""
        return weight_of(self.model, max(self.setup.root_body, 0))

    def first_activation(self, act: np.ndarray) -> np.ndarray:
        """act with the muscles set to the first frame's own solution (no reach bounds): the
        body starts loaded as the reference's first frame needs, not from a uniform tone that
        the assist must make up for."""
        self.solver.act = None
        self.solver.muscle_weight = self.muscle_cost.weight_at(0)
        first = self.solver.solve(
            self.qpos_ref[0],
            self.qvel_ref[0],
            self.qacc_ref[0],
            self.active[0],
            self.muscle_cost.linear(0),
        )
        act = np.array(act, np.float64)
        adr = self._act_adr
        act[adr[adr >= 0]] = first.activation[adr >= 0]
        return act

    def _point_heights(self, qpos: np.ndarray) -> np.ndarray:
        """Each stance point's height above the floor at pose qpos."""
        kin, points = self._kinematics, self.setup.points
        kin.qpos[:] = qpos
        mujoco.mj_kinematics(self.model, kin)
        return points.world(self.model, kin)[0][:, 2] - points.floor_z

    def command(
        self, k: int, qpos: np.ndarray, qvel: np.ndarray, act: np.ndarray, sub: int = 0
    ) -> Command:
        """Control step `sub` (0 <= sub < substeps) of the interval from frame k
        (0 <= k < n_frames - 1), at the simulated state."""
        config, model, setup = self.config, self.model, self.setup
        k = int(np.clip(k, 0, self.n_frames - 1))
        j = min(k * self.substeps + int(sub), self.plan[0].shape[0] - 1)
        q_ref, v_ref, a_ref = (x[j] for x in self.plan)
        # 1. desired accelerations: feedforward + PD towards the reference at this step
        mujoco.mj_differentiatePos(model, self._dq, 1.0, qpos, q_ref)
        qacc = a_ref + config.kp * self._dq + config.kd * (v_ref - qvel)
        # 2. the muscle problem at the simulated state, from its activations
        act_now = np.asarray(act, np.float64)[self._act_adr]
        self.solver.act = act_now
        pushing = self.active[j]
        if setup.points is not None:
            # Only points the simulated body has on the floor and that the desired motion keeps
            # there at the end of the step (q ⊕ (v + ½·qacc·dt)·dt).
            dt = model.opt.timestep * self.steps
            pushing = pushing & (self._point_heights(qpos) < config.contact_gap_m)
            ahead = np.array(qpos, np.float64)
            mujoco.mj_integratePos(model, ahead, qvel + 0.5 * dt * qacc, dt)
            pushing = pushing & (self._point_heights(ahead) < config.contact_lift_m)
        # the push and weights are on the activations this step reaches: those of frame k + 1
        linear = self.muscle_cost.linear(k + 1)
        self.solver.muscle_weight = self.muscle_cost.weight_at(k + 1)
        frame = self.solver.solve(np.array(qpos), np.array(qvel), qacc, pushing, linear)
        # 3. excitations that take the activations there within the step, and the assist
        excitation = np.zeros(model.nu)
        excitation[setup.muscles] = held_excitation(
            act_now, frame.activation, self._prm, model.opt.timestep, self.steps
        )
        root_force = np.zeros(model.nv)
        if config.assist == "on":
            root_force[setup.root_dofs] = frame.residual[setup.root_dofs]
            wrench = np.asarray(frame.root_wrench, np.float64)
        else:
            wrench = np.zeros(6)
        return Command(excitation, root_force, wrench)


def track(
    reference: Reference,
    model: mujoco.MjModel,
    config: TrackConfig | None = None,
    *,
    feet: dict[str, list[str]] | None = None,
    floor_work: bool = True,
    muscle_cost: MuscleCost | None = None,
) -> TrackResult:
    """Simulate the muscle model tracking the whole reference from its first frame.

    muscle_cost: per-muscle weights and a push away from earlier solutions' activations in
    place of Σ act² (`muscles.solutions`); None: Σ act², the single answer."""
    config = config or TrackConfig()
    started = time.perf_counter()
    controller = Controller(
        reference, model, config, feet=feet, floor_work=floor_work, muscle_cost=muscle_cost
    )
    qpos_ref, qvel_ref, fps = controller.qpos_ref, controller.qvel_ref, controller.fps
    sim_model, layout = recording_model(model)
    if controller.setup.floor >= 0:
        _floor_contacts_only(sim_model, controller.setup.floor)
    sim = mujoco.MjData(sim_model)
    body_ids = np.array(
        [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, b) for b in reference.body_names]
    )
    joints = _one_dof_joints(model)
    n = qpos_ref.shape[0]
    rec = empty_recording(n, model.nq, model.nv, model.nu, model.na, len(layout.joint_names))
    assist = np.full((n, 6), np.nan)
    sim.qpos[:] = qpos_ref[0]
    mujoco.mj_forward(sim_model, sim)
    sim.qvel[:] = _coupled_velocity(sim_model, sim, qvel_ref[0])
    sim.act[:] = controller.first_activation(np.full(model.na, config.initial_activation))
    mujoco.mj_forward(sim_model, sim)
    physics_s = 0.0

    def record(row: int) -> bool:
        """Record the simulated state at frame `row`; True when the body fell."""
        out = decode(layout, sim.qpos, sim.qvel, sim.act, sim.ctrl, sim.sensordata)
        for key in ("qpos", "qvel", "activation", "force", "length", "velocity"):
            rec[key][row] = getattr(out, key)
        if row > 0:
            for key in ("joint_torque", "grf", "cop", "com", "com_vel"):
                rec[key][row] = getattr(out, key)
        joint, body, root = _errors(
            model, sim, qpos_ref[row], reference.body_pos[row], body_ids, joints
        )
        rec["joint_error_deg"][row] = np.rad2deg(joint)
        rec["body_error_mm"][row], rec["root_error_mm"][row] = 1000.0 * body, 1000.0 * root
        return bool(
            body > config.termination_body_error_m or root > config.termination_root_error_m
        )

    fell = record(0)
    tracked = 1
    sub = controller.substeps
    wrenches = np.full((n - 1, sub, 6), np.nan)  # every control step's assist
    for k in range(n - 1):
        if fell:
            break
        excitations = np.full((sub, model.nu), np.nan)
        for i in range(sub):
            command = controller.command(k, sim.qpos, sim.qvel, sim.act, i)
            sim.ctrl[:] = excitations[i] = command.excitation
            sim.qfrc_applied[:] = command.root_force
            wrenches[k, i] = command.root_wrench
            t0 = time.perf_counter()
            for _ in range(controller.steps):
                mujoco.mj_step(sim_model, sim)
            physics_s += time.perf_counter() - t0
            if _diverged(sim):  # the step blew up: its state is no pose, so frame k is the last
                fell = True
                break
        # the frame's excitation and assist: their means over its control steps (those run)
        rec["excitation"][k] = np.nanmean(excitations, axis=0)
        assist[k] = np.nanmean(wrenches[k], axis=0)
        if fell:
            break
        mujoco.mj_forward(sim_model, sim)  # sensors at the new state, control held
        fell = record(k + 1)
        tracked = k + 2
    if not fell:  # the last command is held over the last interval
        rec["excitation"][n - 1] = rec["excitation"][n - 2]
        assist[n - 1] = assist[n - 2]
    elapsed = time.perf_counter() - started
    body_weight = controller.body_weight
    metrics = tracking_metrics(rec, tracked, qpos_ref, joints)
    applied = wrenches[:tracked].reshape(-1, 6)  # every control step run (NaN: not run)
    applied = applied[np.isfinite(applied).all(axis=1)]
    if applied.shape[0] == 0:  # nothing simulated: the held first command is all there is
        applied = assist[:1]
    force_pct = np.linalg.norm(applied[:, :3], axis=1) / body_weight * 100
    metrics.update(
        {
            "track.assist_force_pct_bw": float(np.nanmean(force_pct)),
            "track.assist_force_pct_bw_max": float(np.nanmax(force_pct)),
            "track.assist_moment_nm": float(np.nanmean(np.linalg.norm(applied[:, 3:], axis=1))),
            "track.realtime_factor": (tracked - 1) / fps / elapsed,  # simulated s per wall s
            "track.physics_fraction": physics_s / elapsed,
            "track.kp": float(config.kp),
            "track.kd": float(config.kd),
            "track.contact_lift_m": float(config.contact_lift_m),
            "track.control_hz": float(fps * sub),
            "track.toe_push": float(config.toe_push),
            "track.limit_push": float(config.limit_push),
        }
    )
    emulation = Emulation(
        clip_id=reference.clip_id,
        fps=fps,
        times=reference.times,
        qpos_names=reference.qpos_names,
        qvel_names=reference.qvel_names,
        muscle_names=tuple(layout.muscle_names),
        joint_names=tuple(layout.joint_names),
        foot_names=FEET,
        tracked_frames=tracked,
        fell=fell,
        metrics={k: v for k, v in metrics.items() if k.startswith("tracking.")},
        **rec,
    )
    return TrackResult(
        emulation=emulation,
        assist_force=assist[:, :3],
        assist_moment=assist[:, 3:],
        assist=config.assist,
        body_weight=body_weight,
        metrics=metrics,
    )


def _floor_contacts_only(model: mujoco.MjModel, floor: int) -> None:
    """Keep the floor's contacts and drop those between body parts, as the muscle problem does:
    retargeted poses interpenetrate (an arm through the thorax), and the simulator would push
    such parts apart with forces no plan knows of."""
    touches = collides_with(model, floor) & (np.arange(model.ngeom) != floor)
    bit = 1 << 30  # a collision bit of its own: set on the floor, sought only by those geoms
    model.geom_contype[:] = np.where(np.arange(model.ngeom) == floor, bit, 0)
    model.geom_conaffinity[:] = np.where(touches, bit, 0)


def _coupled_velocity(model: mujoco.MjModel, data: mujoco.MjData, qvel: np.ndarray) -> np.ndarray:
    """qvel made to meet the joint couplings at data's pose, with the least change: a
    reference's finite differences break them a little, and the simulator would snap them back
    with a jolt on its first step."""
    jac = equality_jacobian(model, data)
    if jac.shape[0] == 0:
        return qvel
    return qvel - np.linalg.lstsq(jac, jac @ qvel, rcond=None)[0]


def _substeps(frame_skip: int, fps: float, control_hz: float) -> int:
    """Control steps per frame: the most that control_hz asks for (at least one) that splits
    the frame's physics steps evenly."""
    want = max(1, int(round(control_hz / fps))) if control_hz > 0 else 1
    return max(d for d in range(1, min(want, frame_skip) + 1) if frame_skip % d == 0)


def _interpolated(
    model: mujoco.MjModel,
    qpos: np.ndarray,
    qvel: np.ndarray,
    qacc: np.ndarray,
    fps: float,
    substeps: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference at `substeps` control steps per frame: qpos by cubic Hermite in the tangent
    space (through each frame with its qvel), qvel and qacc linear; the frames themselves exact."""
    n = qpos.shape[0]
    if substeps == 1:
        return qpos, qvel, qacc
    rows = (n - 1) * substeps + 1
    q, v, a = np.empty((rows, model.nq)), np.empty((rows, model.nv)), np.empty((rows, model.nv))
    q[::substeps], v[::substeps], a[::substeps] = qpos, qvel, qacc
    span, h = np.zeros(model.nv), 1.0 / fps
    for k in range(n - 1):
        mujoco.mj_differentiatePos(model, span, 1.0, qpos[k], qpos[k + 1])
        for i in range(1, substeps):
            s = i / substeps
            h10, h01, h11 = s**3 - 2 * s**2 + s, 3 * s**2 - 2 * s**3, s**3 - s**2
            row = k * substeps + i
            q[row] = qpos[k]
            step = h10 * h * qvel[k] + h01 * span + h11 * h * qvel[k + 1]
            mujoco.mj_integratePos(model, q[row], step, 1.0)
            v[row] = (1 - s) * qvel[k] + s * qvel[k + 1]
            a[row] = (1 - s) * qacc[k] + s * qacc[k + 1]
    return q, v, a


def _toe_points(model: mujoco.MjModel, points: ContactPoints) -> np.ndarray:
    """(n,) the candidate points on a foot's distal segments (the toes): those whose body hangs
    below another body of the same foot. Floor-work geoms are never toes."""
    toe = np.zeros(points.n, bool)
    for i, (body, foot) in enumerate(zip(points.body, points.foot, strict=True)):
        others = set(points.body[points.foot == foot].tolist()) - {int(body)}
        parent = int(model.body_parentid[body])
        while parent > 0 and not toe[i]:
            toe[i] = parent in others
            parent = int(model.body_parentid[parent])
    return toe


def _diverged(data: mujoco.MjData) -> bool:
    """The simulation blew up: a state out of MuJoCo's range (non-finite or beyond mjMAXVAL),
    or MuJoCo found one in a step (and reset the data to the model's default pose)."""
    bad = (mujoco.mjtWarning.mjWARN_BADQPOS, mujoco.mjtWarning.mjWARN_BADQVEL)
    bad += (mujoco.mjtWarning.mjWARN_BADQACC,)
    state = np.concatenate([data.qpos, data.qvel])
    return bool(
        not (np.abs(state) < mujoco.mjMAXVAL).all()  # (False for NaN)
        or any(data.warning[int(w)].number > 0 for w in bad)
    )


def _has_free_root(model: mujoco.MjModel) -> bool:
    return model.njnt > 0 and int(model.jnt_type[0]) == int(mujoco.mjtJoint.mjJNT_FREE)


def _one_dof_joints(model: mujoco.MjModel) -> tuple[np.ndarray, np.ndarray]:
    """qpos columns of the hinge and slide joints, and which are hinges (angles wrap)."""
    hinge, slide = int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE)
    one = [j for j in range(model.njnt) if int(model.jnt_type[j]) in (hinge, slide)]
    return (
        np.array([model.jnt_qposadr[j] for j in one], int),
        np.array([int(model.jnt_type[j]) == hinge for j in one]),
    )


def _errors(
    model: mujoco.MjModel,
    data: mujoco.MjData,
    qpos_ref: np.ndarray,
    body_ref: np.ndarray,
    body_ids: np.ndarray,
    joints: tuple[np.ndarray, np.ndarray],
) -> tuple[float, float, float]:
    """Mean |joint error| (rad) over hinge and slide joints, mean key-body distance (m) and the
    free root's distance (m): the definitions the training environment uses."""
    cols, is_hinge = joints
    d = qpos_ref[cols] - data.qpos[cols]
    d = np.where(is_hinge, (d + np.pi) % (2 * np.pi) - np.pi, d)
    joint = float(np.abs(d).mean()) if d.size else 0.0
    body = (
        float(np.linalg.norm(body_ref - data.xpos[body_ids], axis=-1).mean())
        if body_ids.size
        else 0.0
    )
    root = float(np.linalg.norm(qpos_ref[:3] - data.qpos[:3])) if _has_free_root(model) else 0.0
    return joint, body, root
