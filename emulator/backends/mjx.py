"""MJX: the same physics in JAX, one jitted, vmapped control step (MuJoCo Warp on a GPU)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from jax import lax
from mujoco import mjx

from msconvert.emulator.backends.base import (
    MAX_ABS_STATE,
    Backend,
    Layout,
    Recording,
    Step,
    broadcast_state,
    decode,
    recording_model,
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
    mx: mjx.Model, layout: Layout, frame_skip: int, record_physics_steps: bool = False
) -> Callable[[mjx.Data, jax.Array], tuple[mjx.Data, Recording, jax.Array]]:
    """A pure batched control step `(data, ctrl) -> (data, recording, diverged)` to jit or nest."""

    def rows(d: mjx.Data):
        return d.qpos, d.qvel, d.act, d.sensordata

    def one(d: mjx.Data, ctrl: jax.Array):
        finite_ctrl = jnp.isfinite(ctrl)
        start = d
        d = d.replace(ctrl=jnp.where(finite_ctrl, ctrl, 0.0))
        if record_physics_steps:

            def body(d, _):
                d = mjx.step(mx, d)
                return d, rows(d)

            d, (qpos, qvel, act, sens) = lax.scan(body, d, None, length=frame_skip)
        else:
            d = lax.fori_loop(0, frame_skip, lambda _, d: mjx.step(mx, d), d)
            qpos, qvel, act, sens = (x[None] for x in rows(d))
        rec = decode(
            layout, qpos, qvel, act, jnp.broadcast_to(d.ctrl, (qpos.shape[0], ctrl.size)), sens, jnp
        )
        state = jnp.concatenate([d.qpos, d.qvel, d.act])
        diverged = (
            ~finite_ctrl.all()
            | ~jnp.isfinite(state).all()
            | (jnp.abs(state) > MAX_ABS_STATE).any()
            | ~jnp.isfinite(sens).all()
        )
        # Keep the batch finite: a diverged env keeps its pre-step state, its rows are NaN.
        d = jax.tree.map(lambda new, old: jnp.where(diverged, old, new), d, start)
        rec = jax.tree.map(lambda x: jnp.where(diverged, jnp.nan, x), rec)
        return d, rec, diverged

    return jax.vmap(one)


class MjxBackend(Backend):
    """Batched environments as one vmapped `mjx.Data`; `step_fn` is the pure jitted step."""

    kind = "mjx"

    def __init__(
        self,
        model: mujoco.MjModel,
        n_envs: int,
        frame_skip: int,
        record_physics_steps: bool = False,
        impl: str | None = None,
    ):
        if n_envs < 1 or frame_skip < 1:
            raise ValueError("n_envs and frame_skip must be at least 1")
        self.model, self.n_envs, self.frame_skip = model, n_envs, frame_skip
        self.record_physics_steps = record_physics_steps
        self.recording, self.layout = recording_model(model)
        self.impl = impl or default_impl()
        self.mx = mjx.put_model(self.recording, impl=self.impl)
        self._data0 = mjx.make_data(self.mx, impl=self.impl)
        self.step_fn = jax.jit(make_step(self.mx, self.layout, frame_skip, record_physics_steps))
        self._diverged = jnp.zeros((), jnp.int32)  # summed on device: no sync per step

        def init(qpos, qvel, act):
            one = lambda q, v, a: self._data0.replace(qpos=q, qvel=v, act=a)  # noqa: E731
            return jax.vmap(one)(qpos, qvel, act)

        def reset(state, mask, qpos, qvel, act):
            fresh = init(qpos, qvel, act)
            pick = lambda new, old: jnp.where(  # noqa: E731
                mask.reshape(mask.shape + (1,) * (old.ndim - 1)), new, old
            )
            return jax.tree.map(pick, fresh, state)

        self._init, self._reset = jax.jit(init), jax.jit(reset)

    @property
    def n_diverged(self) -> int:  # type: ignore[override]
        return int(self._diverged)

    def _rows(self, qpos, qvel, act):
        dtype = self._data0.qpos.dtype
        q, v, a = broadcast_state(self.model, self.n_envs, qpos, qvel, act)
        return jnp.asarray(q, dtype), jnp.asarray(v, dtype), jnp.asarray(a, dtype)

    def init(self, qpos, qvel, act=None) -> mjx.Data:
        return self._init(*self._rows(qpos, qvel, act))

    def reset(self, state: mjx.Data, mask, qpos, qvel, act=None) -> mjx.Data:
        return self._reset(state, jnp.asarray(mask, bool), *self._rows(qpos, qvel, act))

    def step(self, state: mjx.Data, ctrl) -> Step:
        ctrl = jnp.asarray(ctrl, self._data0.ctrl.dtype).reshape(self.n_envs, self.model.nu)
        data, rec, diverged = self.step_fn(state, ctrl)
        self._diverged = self._diverged + diverged.sum()
        return Step(data, rec, diverged)

    def arrays(self, state: mjx.Data) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return np.asarray(state.qpos), np.asarray(state.qvel), np.asarray(state.act)
