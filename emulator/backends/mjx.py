"""MJX: the same physics in JAX, one jitted, vmapped control step (MuJoCo Warp on a GPU)."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from jax import lax
from mujoco import mjx
from mujoco.mjx._src import collision_driver  # its candidate pairs: what put_model checks

from msconvert.emulator.backends.base import (
    MAX_ABS_STATE,
    Backend,
    Layout,
    Recording,
    Step,
    View,
    broadcast_state,
    decode,
    sensorless_copy,
)


def default_impl() -> str:
    """'warp' when JAX sees a GPU and MuJoCo Warp is installed, else 'jax'."""
    if jax.default_backend() == "gpu":
        try:
            import mujoco_warp  # noqa: F401
        except ImportError:
            return "jax"
        return "warp"
    return "jax"


def make_step(
    mx: mjx.Model, layout: Layout | None, frame_skip: int, record_physics_steps: bool = False
) -> Callable[[mjx.Data, jax.Array], tuple[mjx.Data, Recording | None, jax.Array]]:
    """A pure control step of one env `(data, ctrl, qfrc_applied) -> (data, recording,
    diverged)`: vmap it for a batch. layout None: a model without the recording sensors, and no
    recording (None)."""

    def rows(d: mjx.Data):
        return d.qpos, d.qvel, d.act, d.sensordata

    def one(d: mjx.Data, ctrl: jax.Array, qfrc_applied: jax.Array):
        finite_ctrl = jnp.concatenate([jnp.isfinite(ctrl), jnp.isfinite(qfrc_applied)])
        start = d
        d = d.replace(
            ctrl=jnp.where(jnp.isfinite(ctrl), ctrl, 0.0).astype(d.ctrl.dtype),
            qfrc_applied=jnp.where(jnp.isfinite(qfrc_applied), qfrc_applied, 0.0).astype(
                d.qfrc_applied.dtype
            ),
        )
        if layout is not None and record_physics_steps:

            def body(d, _):
                d = mjx.step(mx, d)
                return d, rows(d)

            d, (qpos, qvel, act, sens) = lax.scan(body, d, None, length=frame_skip)
        else:
            d = lax.fori_loop(0, frame_skip, lambda _, d: mjx.step(mx, d), d)
            qpos, qvel, act, sens = (x[None] for x in rows(d))
        state = jnp.concatenate([d.qpos, d.qvel, d.act])
        diverged = (
            ~finite_ctrl.all() | ~jnp.isfinite(state).all() | (jnp.abs(state) > MAX_ABS_STATE).any()
        )
        rec = None
        if layout is not None:
            diverged = diverged | ~jnp.isfinite(sens).all()
            ctrl_rows = jnp.broadcast_to(d.ctrl, (qpos.shape[0], ctrl.size))
            rec = decode(layout, qpos, qvel, act, ctrl_rows, sens, jnp)
            rec = jax.tree.map(lambda x: jnp.where(diverged, jnp.nan, x), rec)
        # Keep the batch finite: a diverged env keeps its pre-step state, its rows are NaN.
        d = jax.tree.map(lambda new, old: jnp.where(diverged, old, new), d, start)
        return d, rec, diverged

    return one


def _actuation(mx: mjx.Model, d: mjx.Data) -> mjx.Data:
    """The part of `mjx.forward` a View reads: body poses, tendon and actuator lengths, actuator
    velocities and forces. None depends on contacts, so collision and the constraint solve are
    left out: on MyoFullBody the same values bit for bit, with half the tracing and lowering of
    a full forward (benchmarks/RESULTS.md, the MJX path)."""
    d = mjx.kinematics(mx, d)
    d = mjx.com_pos(mx, d)
    d = mjx.tendon(mx, d)
    d = mjx.transmission(mx, d)
    impl = d._impl
    velocity = impl.actuator_moment @ d.qvel  # what fwd_velocity sets, without its bias forces
    d = d.replace(_impl=impl.replace(actuator_velocity=velocity))
    return mjx.fwd_actuation(mx, d)


def make_view(mx: mjx.Model) -> Callable[[mjx.Data, jax.Array, jax.Array], View]:
    """A pure `(data, ctrl, bodies) -> View` of one env (forward kinematics and actuation, no
    step); on Warp a full `mjx.forward`."""
    partial = getattr(mx, "impl", None) == mjx.Impl.JAX

    def view(d: mjx.Data, ctrl: jax.Array, bodies: jax.Array) -> View:
        d = d.replace(ctrl=jnp.asarray(ctrl).astype(d.ctrl.dtype))
        d = _actuation(mx, d) if partial else mjx.forward(mx, d)
        # Some derived fields live under `_impl` in recent MJX (direct access is deprecated).
        impl = getattr(d, "_impl", None)
        get = lambda name: getattr(impl, name) if hasattr(impl, name) else getattr(d, name)  # noqa: E731
        return View(
            d.qpos,
            d.qvel,
            d.act,
            get("actuator_length"),
            get("actuator_velocity"),
            d.actuator_force,
            d.xpos[bodies],
        )

    return view


def without_mesh_margins(model: mujoco.MjModel) -> mujoco.MjModel:
    """The model with no contact margin or gap on the geoms that can collide with a mesh or
    height field (a copy; the model itself when none has one), with a warning naming them: MJX's
    JAX implementation has no such collision with a margin (MS-Human-700's pelvis, sacrum and
    skull meshes and its floor carry 1 mm). Those contacts then act from touching, not from
    1 mm apart, so bodies rest up to 1 mm lower on this backend than on the C engine."""
    rough = {int(mujoco.mjtGeom.mjGEOM_MESH), int(mujoco.mjtGeom.mjGEOM_HFIELD)}
    geoms, pairs = set(), set()
    for g1, g2, pair in collision_driver.geom_pairs(model):
        if not rough & {int(model.geom_type[g1]), int(model.geom_type[g2])}:
            continue
        if pair != -1 and (model.pair_margin[pair] or model.pair_gap[pair]):
            pairs.add(int(pair))
        # MJX sums the two geoms' margins: both must be 0 (the floor's too).
        geoms |= {int(g) for g in (g1, g2) if model.geom_margin[g] or model.geom_gap[g]}
    if not geoms and not pairs:
        return model
    model = copy.copy(model)
    for g in geoms:
        model.geom_margin[g] = model.geom_gap[g] = 0.0
    for p in pairs:
        model.pair_margin[p] = model.pair_gap[p] = 0.0
    names = sorted(model.geom(g).name or f"geom {g}" for g in geoms)
    warnings.warn(
        f"MJX (JAX) cannot collide meshes with a margin: contact margin and gap set to 0 on "
        f"{', '.join(names)}{f' and {len(pairs)} contact pairs' if pairs else ''} for this backend",
        stacklevel=3,
    )
    return model


class MjxBackend(Backend):
    """Batched environments as one vmapped `mjx.Data`; `step_fn` is the pure jitted batched
    step, and the `*_one` methods are pure functions of one env (vmap, jit and scan them)."""

    kind = "mjx"
    pure = True

    def __init__(
        self,
        model: mujoco.MjModel,
        n_envs: int,
        frame_skip: int,
        record_physics_steps: bool = False,
        impl: str | None = None,
        record: bool = True,
    ):
        self._configure(model, n_envs, frame_skip, record_physics_steps, record)
        self.impl = impl or default_impl()
        # Without recording, the sensor-free model: the same physics, no sensor cost.
        physics = self.recording if record else sensorless_copy(model)
        if self.impl == "jax":
            physics = without_mesh_margins(physics)
        self.mx = mjx.put_model(physics, impl=self.impl)
        self._data0 = mjx.make_data(self.mx, impl=self.impl)
        self._step_one = make_step(
            self.mx, self.layout if record else None, frame_skip, self.record_physics_steps
        )
        self._view_one = make_view(self.mx)
        self.step_fn = jax.jit(jax.vmap(self._step_one))
        self._view = jax.jit(jax.vmap(self._view_one, in_axes=(0, 0, None)))
        self._diverged = jnp.zeros((), jnp.int32)  # summed on device: no sync per step

        def reset(state, mask, qpos, qvel, act):
            fresh = jax.vmap(self.init_one)(qpos, qvel, act)
            pick = lambda new, old: jnp.where(  # noqa: E731
                mask.reshape(mask.shape + (1,) * (old.ndim - 1)), new, old
            )
            return jax.tree.map(pick, fresh, state)

        self._init, self._reset = jax.jit(jax.vmap(self.init_one)), jax.jit(reset)

    @property
    def n_diverged(self) -> int:  # type: ignore[override]
        return int(self._diverged)

    def _rows(self, qpos, qvel, act):
        dtype = self._data0.qpos.dtype
        q, v, a = broadcast_state(self.model, self.n_envs, qpos, qvel, act)
        return jnp.asarray(q, dtype), jnp.asarray(v, dtype), jnp.asarray(a, dtype)

    def control(self, ctrl) -> jax.Array:
        """Controls (or actions) as JAX arrays of the model's float type (traceable)."""
        return jnp.asarray(ctrl, self._data0.ctrl.dtype)

    def init(self, qpos, qvel, act=None) -> mjx.Data:
        return self._init(*self._rows(qpos, qvel, act))

    def reset(self, state: mjx.Data, mask, qpos, qvel, act=None) -> mjx.Data:
        return self._reset(state, jnp.asarray(mask, bool), *self._rows(qpos, qvel, act))

    def _qfrc(self, qfrc_applied, batch: tuple[int, ...]) -> jax.Array:
        dtype = self._data0.qfrc_applied.dtype
        if qfrc_applied is None:
            return jnp.zeros((*batch, self.model.nv), dtype)
        return jnp.asarray(qfrc_applied, dtype).reshape(*batch, self.model.nv)

    def step(self, state: mjx.Data, ctrl, qfrc_applied=None) -> Step:
        ctrl = jnp.asarray(ctrl, self._data0.ctrl.dtype).reshape(self.n_envs, self.model.nu)
        data, rec, diverged = self.step_fn(state, ctrl, self._qfrc(qfrc_applied, (self.n_envs,)))
        self._diverged = self._diverged + diverged.sum()
        return Step(data, rec, diverged)

    def view(self, state: mjx.Data, ctrl, bodies) -> View:
        ctrl = jnp.asarray(ctrl, self._data0.ctrl.dtype).reshape(-1, self.model.nu)
        return self._view(state, ctrl, jnp.asarray(bodies, jnp.int32))

    def init_one(self, qpos, qvel, act=None) -> mjx.Data:
        d0 = self._data0
        act = jnp.zeros(self.model.na) if act is None else act
        return d0.replace(
            qpos=jnp.asarray(qpos).astype(d0.qpos.dtype),
            qvel=jnp.asarray(qvel).astype(d0.qvel.dtype),
            act=jnp.asarray(act).astype(d0.act.dtype),
        )

    def step_one(self, state: mjx.Data, ctrl, qfrc_applied=None) -> Step:
        return Step(*self._step_one(state, ctrl, self._qfrc(qfrc_applied, ())))

    def view_one(self, state: mjx.Data, ctrl, bodies) -> View:
        return self._view_one(state, ctrl, bodies)

    def arrays(self, state: mjx.Data) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return np.asarray(state.qpos), np.asarray(state.qvel), np.asarray(state.act)
