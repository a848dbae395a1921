"""The simulation-backend interface, the `Recording` of one control step, and the sensors behind it.

Every backend simulates the same *recording model*: the user's model compiled again from its spec
with sensors added (muscle force, length and velocity; joint torques from actuators; whole-body
centre of mass and its velocity; foot-floor contacts) and MuJoCo's automatic reset disabled, so a
diverging environment shows up as non-finite values instead of silently restarting. Sensors do not
change the physics. Both backends decode the sensor data with the same function (`decode`), so the
recorded set is identical. A backend made with `record=False` (training) simulates the model
without sensors and records nothing; `view` gives what a task reads of a state either way.

Timing convention (MuJoCo's): a recorded row holds the state after a physics step, and the forces,
lengths, torques and contacts computed during that step, i.e. at the state before it.
"""

from __future__ import annotations

import abc
import copy
import weakref
from dataclasses import dataclass
from typing import Any, NamedTuple

import mujoco
import numpy as np

from msconvert.emulator.model import (
    floor_geom,
    model_spec,
    muscle_actuators,
)
from msconvert.emulator.model_info import describe_model

FEET = ("left", "right")
# Largest number of contacts MuJoCo makes between a plane and a geom of each type.
_PLANE_CONTACTS = {
    int(mujoco.mjtGeom.mjGEOM_SPHERE): 1,
    int(mujoco.mjtGeom.mjGEOM_CAPSULE): 2,
    int(mujoco.mjtGeom.mjGEOM_ELLIPSOID): 1,
}
_DEFAULT_PLANE_CONTACTS = 4  # boxes, cylinders and meshes
_CONTACT_FIELDS = ("force", "pos", "normal", "tangent")  # 12 numbers per contact slot
_REDUCE_MAXFORCE = 2  # contact sensor reduction: keep the strongest contacts if slots run out
# Beyond this a state is treated as diverged (MuJoCo's own bad-state bound is 1e10).
MAX_ABS_STATE = 1e8


class Recording(NamedTuple):
    """Recorded quantities, each (n_envs, n_rows, ...); n_rows is 1, or frame_skip when every
    physics step is recorded. Forces in N, torques in N m, lengths in m, world frame."""

    qpos: Any  # (.., nq)
    qvel: Any  # (.., nv)
    excitation: Any  # (.., M) muscle control u in [0, 1]
    activation: Any  # (.., M)
    force: Any  # (.., M) actuator_force: MuJoCo's sign, negative when the muscle pulls
    length: Any  # (.., M) actuator (musculotendon) length
    velocity: Any  # (.., M) actuator velocity
    joint_torque: Any  # (.., J) qfrc_actuator at the hinge and slide joints (`joint_names`)
    grf: Any  # (.., 2, 3) floor reaction force on each foot (left, right)
    cop: Any  # (.., 2, 3) centre of pressure of each foot; NaN without contact
    com: Any  # (.., 3) whole-model centre of mass
    com_vel: Any  # (.., 3) its linear velocity


# Dimension names of each recorded field, for labelled storage (xarray / Zarr).
DIMS: dict[str, tuple[str, ...]] = {
    "qpos": ("env", "step", "qpos"),
    "qvel": ("env", "step", "qvel"),
    "excitation": ("env", "step", "muscle"),
    "activation": ("env", "step", "muscle"),
    "force": ("env", "step", "muscle"),
    "length": ("env", "step", "muscle"),
    "velocity": ("env", "step", "muscle"),
    "joint_torque": ("env", "step", "joint"),
    "grf": ("env", "step", "foot", "xyz"),
    "cop": ("env", "step", "foot", "xyz"),
    "com": ("env", "step", "xyz"),
    "com_vel": ("env", "step", "xyz"),
}


class Step(NamedTuple):
    """What one control step returns: the new state, its recording and the diverged envs."""

    state: Any  # backend-specific state (batched, or one env's from `step_one`)
    recording: Recording | None  # None when the backend does not record
    diverged: Any  # (n_envs,) bool: non-finite or runaway state, or non-finite control


class View(NamedTuple):
    """What a task reads of each env's state, all at that state with the control held (forward
    kinematics and dynamics, no step): (n_envs, ...) from `view`, one env's from `view_one`."""

    qpos: Any
    qvel: Any
    act: Any
    length: Any  # actuator lengths
    velocity: Any  # actuator velocities
    force: Any  # actuator forces (MuJoCo's sign)
    body_pos: Any  # (.., B, 3) world positions of the requested bodies


@dataclass(frozen=True, eq=False)
class Layout:
    """Where each recorded quantity sits in the recording model's qpos/act/ctrl and sensordata."""

    muscle_names: tuple[str, ...]
    joint_names: tuple[str, ...]  # hinge and slide joints: the columns of `joint_torque`
    qpos_names: tuple[str, ...]
    qvel_names: tuple[str, ...]
    muscle_ctrl: np.ndarray  # (M,) actuator index of each muscle
    muscle_act: np.ndarray  # (M,) index into act of each muscle's activation
    force: np.ndarray  # (M,) sensordata addresses
    length: np.ndarray
    velocity: np.ndarray
    joint_torque: np.ndarray  # (J,)
    com: np.ndarray  # (3,)
    com_vel: np.ndarray  # (3,)
    contacts: np.ndarray  # (2, S, 12) addresses of each foot's contact slots; -1 = padding
    nsensordata: int


def sensorless_copy(model: mujoco.MjModel) -> mujoco.MjModel:
    """A copy of the model with its sensors and automatic reset switched off: the same physics,
    bit for bit, at no sensor cost (MJX reads the flag when it traces). A copy, not a recompile:
    deleting MyoFullBody's 110 sensors from its spec one by one took ~3.7 s, a tenth of a warm
    MJX start."""
    quiet = copy.copy(model)
    quiet.opt.disableflags |= int(mujoco.mjtDisableBit.mjDSBL_SENSOR) | int(
        mujoco.mjtDisableBit.mjDSBL_AUTORESET
    )
    return quiet


# Each model's recording model, compiled once (~0.6 s for MyoFullBody; an emulation, a trainer
# and every evaluation ask for it): callers get a copy, which they may change.
_RECORDING: weakref.WeakKeyDictionary[mujoco.MjModel, tuple[mujoco.MjModel, Layout]] = (
    weakref.WeakKeyDictionary()
)


def recording_model(model: mujoco.MjModel) -> tuple[mujoco.MjModel, Layout]:
    """The model recompiled with the recording sensors and no automatic reset, and its layout."""
    if model not in _RECORDING:
        _RECORDING[model] = _compile_recording_model(model)
    rec, layout = _RECORDING[model]
    return copy.copy(rec), layout


def _compile_recording_model(model: mujoco.MjModel) -> tuple[mujoco.MjModel, Layout]:
    spec = model_spec(model)
    spec.option.disableflags |= int(mujoco.mjtDisableBit.mjDSBL_AUTORESET)
    for i, act in enumerate(spec.actuators):  # sensors refer to their objects by name
        act.name = act.name or f"msconvert_actuator{i}"
    for i, geom in enumerate(spec.geoms):
        geom.name = geom.name or f"msconvert_geom{i}"
    muscles = muscle_actuators(model)
    names = [spec.actuators[int(i)].name for i in muscles]
    sensor = mujoco.mjtSensor
    obj = mujoco.mjtObj

    def add(name: str, kind: mujoco.mjtSensor, objtype: mujoco.mjtObj, objname: str) -> None:
        spec.add_sensor(name=f"msconvert:{name}", type=kind, objtype=objtype, objname=objname)

    for n in names:
        add(f"force:{n}", sensor.mjSENS_ACTUATORFRC, obj.mjOBJ_ACTUATOR, n)
        add(f"length:{n}", sensor.mjSENS_ACTUATORPOS, obj.mjOBJ_ACTUATOR, n)
        add(f"velocity:{n}", sensor.mjSENS_ACTUATORVEL, obj.mjOBJ_ACTUATOR, n)
    scalar = (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE))
    joints = [j for j in range(model.njnt) if int(model.jnt_type[j]) in scalar]
    joint_names = [model.joint(j).name for j in joints]
    for n in joint_names:
        add(f"torque:{n}", sensor.mjSENS_JOINTACTFRC, obj.mjOBJ_JOINT, n)
    world = model.body(0).name
    add("com", sensor.mjSENS_SUBTREECOM, obj.mjOBJ_BODY, world)
    add("com_vel", sensor.mjSENS_SUBTREELINVEL, obj.mjOBJ_BODY, world)

    info = describe_model(model)
    has_floor = any(g.size for g in info.foot_geoms.values())
    field = mujoco.mjtConDataField
    dataspec = sum(1 << int(getattr(field, f"mjCONDATA_{f.upper()}")) for f in _CONTACT_FIELDS)
    feet_sensors: dict[str, list[tuple[str, int]]] = {side: [] for side in FEET}
    if has_floor:
        floor = spec.geoms[floor_geom(model)].name
        for side in FEET:
            for g in info.foot_geoms[side]:
                slots = _PLANE_CONTACTS.get(int(model.geom_type[g]), _DEFAULT_PLANE_CONTACTS)
                name = f"msconvert:contact:{side}:{spec.geoms[int(g)].name}"
                s = spec.add_sensor(
                    name=name,
                    type=sensor.mjSENS_CONTACT,
                    objtype=obj.mjOBJ_GEOM,
                    objname=spec.geoms[int(g)].name,
                    reftype=obj.mjOBJ_GEOM,
                    refname=floor,
                )
                s.intprm = [dataspec, _REDUCE_MAXFORCE, slots]
                feet_sensors[side].append((name, slots))
    rec = spec.compile()

    def adr(name: str) -> np.ndarray:
        s = rec.sensor(name)
        return np.arange(s.adr[0], s.adr[0] + s.dim[0])

    width = 3 * len(_CONTACT_FIELDS)
    n_slots = max([sum(n for _, n in feet_sensors[s]) for s in FEET] + [1])
    contacts = -np.ones((len(FEET), n_slots, width), dtype=np.int64)
    for f, side in enumerate(FEET):
        rows = [adr(name).reshape(n, width) for name, n in feet_sensors[side]]
        if rows:
            block = np.concatenate(rows)
            contacts[f, : len(block)] = block
    layout = Layout(
        muscle_names=tuple(names),
        joint_names=tuple(joint_names),
        qpos_names=info.qpos_names,
        qvel_names=info.qvel_names,
        muscle_ctrl=muscles,
        muscle_act=rec.actuator_actadr[muscles] + rec.actuator_actnum[muscles] - 1,
        force=np.array([adr(f"msconvert:force:{n}")[0] for n in names], dtype=np.int64),
        length=np.array([adr(f"msconvert:length:{n}")[0] for n in names], dtype=np.int64),
        velocity=np.array([adr(f"msconvert:velocity:{n}")[0] for n in names], dtype=np.int64),
        joint_torque=np.array(
            [adr(f"msconvert:torque:{n}")[0] for n in joint_names], dtype=np.int64
        ),
        com=adr("msconvert:com"),
        com_vel=adr("msconvert:com_vel"),
        contacts=contacts,
        nsensordata=int(rec.nsensordata),
    )
    return rec, layout


def decode(layout: Layout, qpos, qvel, act, ctrl, sensordata, xp=np) -> Recording:
    """Assemble a `Recording` from states, controls and sensor data (any leading shape);
    `xp` is numpy or jax.numpy, so both backends share this code."""
    mask = layout.contacts >= 0
    slots = xp.where(mask, sensordata[..., np.maximum(layout.contacts, 0)], 0.0)
    f, pos, normal, tangent = (slots[..., 3 * i : 3 * i + 3] for i in range(4))
    # Contact-frame force -> world; the sensor's frame points from the foot into the floor, so the
    # floor's reaction on the foot is the negative.
    world = -(f[..., :1] * normal + f[..., 1:2] * tangent + f[..., 2:3] * xp.cross(normal, tangent))
    grf = world.sum(axis=-2)
    fz = world[..., 2:3]
    total = fz.sum(axis=-2)
    has_contact = total > 1e-9
    cop = xp.where(has_contact, (pos * fz).sum(axis=-2) / xp.where(has_contact, total, 1.0), xp.nan)
    return Recording(
        qpos=qpos,
        qvel=qvel,
        excitation=ctrl[..., layout.muscle_ctrl],
        activation=act[..., layout.muscle_act],
        force=sensordata[..., layout.force],
        length=sensordata[..., layout.length],
        velocity=sensordata[..., layout.velocity],
        joint_torque=sensordata[..., layout.joint_torque],
        grf=grf,
        cop=cop,
        com=sensordata[..., layout.com],
        com_vel=sensordata[..., layout.com_vel],
    )


class Backend(abc.ABC):
    """A batch of environments of one model, advanced one control step (frame_skip physics
    steps at constant control) at a time; a diverged environment is flagged, never raised.

    `init`, `reset`, `step` and `view` work on all n_envs at once. `init_one`, `step_one` and
    `view_one` work on one environment, without the env axis: pure JAX functions where `pure`
    (MJX: jit, vmap and scan them), else the batched methods on a batch of one (n_envs must be
    1; host arrays, not traceable). With `record` False the backend simulates the sensor-free
    model (the same physics) and its steps return no recording.
    """

    kind: str
    pure: bool = False
    model: mujoco.MjModel  # the user's model
    layout: Layout
    n_envs: int
    frame_skip: int
    record: bool
    record_physics_steps: bool
    n_diverged: int  # environments flagged diverged so far

    def _configure(
        self,
        model: mujoco.MjModel,
        n_envs: int,
        frame_skip: int,
        record_physics_steps: bool,
        record: bool,
    ) -> None:
        """What every backend's constructor sets: sizes, recording, and the recording model."""
        if n_envs < 1 or frame_skip < 1:
            raise ValueError("n_envs and frame_skip must be at least 1")
        self.model, self.n_envs, self.frame_skip = model, n_envs, frame_skip
        self.record, self.record_physics_steps = record, record and record_physics_steps
        self.recording, self.layout = recording_model(model)

    @property
    def control_dt(self) -> float:
        return float(self.model.opt.timestep) * self.frame_skip

    @abc.abstractmethod
    def init(self, qpos, qvel, act=None) -> Any:
        """A batched state from (n_envs, nq), (n_envs, nv), (n_envs, na) arrays, or single rows
        broadcast to every env; act defaults to zeros."""

    @abc.abstractmethod
    def reset(self, state: Any, mask, qpos, qvel, act=None) -> Any:
        """The state with the envs in `mask` (n_envs,) restarted from the given rows."""

    @abc.abstractmethod
    def step(self, state: Any, ctrl, qfrc_applied=None) -> Step:
        """Advance every env by one control step with ctrl (n_envs, nu) held constant, and the
        generalized forces qfrc_applied (n_envs, nv) too (None: zero; the policies' root assist)."""

    @abc.abstractmethod
    def view(self, state: Any, ctrl, bodies) -> View:
        """What each env's state looks like with ctrl (n_envs, nu): positions of the bodies with
        ids `bodies`, actuator lengths, velocities and forces."""

    @abc.abstractmethod
    def arrays(self, state: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """qpos, qvel and act of a state as NumPy arrays."""

    def control(self, ctrl) -> Any:
        """Controls (or actions) as this backend takes them: float64 NumPy here."""
        return np.asarray(ctrl, np.float64)

    def init_one(self, qpos, qvel, act=None) -> Any:
        """One env's state from (nq,), (nv,), (na,) rows."""
        self._check_one()
        act = np.zeros(self.model.na) if act is None else act
        return _first(self.init(*(np.asarray(x)[None] for x in (qpos, qvel, act))))

    def step_one(self, state: Any, ctrl, qfrc_applied=None) -> Step:
        """One env advanced by one control step; its recording rows are (n_rows, ...)."""
        self._check_one()
        qfrc = None if qfrc_applied is None else np.asarray(qfrc_applied)[None]
        out = self.step(_batch(state), np.asarray(ctrl)[None], qfrc)
        return Step(_first(out.state), _first(out.recording), out.diverged[0])

    def arrays_one(self, state: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`arrays` of one env's state: (nq,), (nv,), (na,)."""
        self._check_one()
        qpos, qvel, act = self.arrays(_batch(state))
        return qpos[0], qvel[0], act[0]

    def view_one(self, state: Any, ctrl, bodies) -> View:
        """`view` of one env's state."""
        self._check_one()
        return _first(self.view(_batch(state), np.asarray(ctrl)[None], bodies))

    def _check_one(self) -> None:
        if self.n_envs != 1:
            raise ValueError(f"one-env calls need a backend of 1 env, this one has {self.n_envs}")

    def close(self) -> None:
        """Release what the backend holds (threads); a no-op where nothing needs it."""
        return None


def _first(tree: Any) -> Any:
    return None if tree is None else type(tree)(*(None if x is None else x[0] for x in tree))


def _batch(tree: Any) -> Any:
    return type(tree)(*(np.asarray(x)[None] for x in tree))


def broadcast_state(model: mujoco.MjModel, n_envs: int, qpos, qvel, act) -> tuple[np.ndarray, ...]:
    """(n_envs, nq), (n_envs, nv), (n_envs, na) float64 arrays from rows or batches."""
    act = np.zeros(model.na) if act is None else act
    out = []
    for name, x, n in (("qpos", qpos, model.nq), ("qvel", qvel, model.nv), ("act", act, model.na)):
        x = np.asarray(x, dtype=np.float64)
        if x.shape not in ((n,), (n_envs, n)):
            raise ValueError(f"{name} must have shape ({n},) or ({n_envs}, {n}), got {x.shape}")
        out.append(np.array(np.broadcast_to(x, (n_envs, n))))
    return tuple(out)
