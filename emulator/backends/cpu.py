"""MuJoCo's C engine on all CPU cores, through `mujoco.rollout` and one persistent thread pool."""

from __future__ import annotations

import os
from typing import NamedTuple

import mujoco
import numpy as np
from mujoco import rollout

from msconvert.emulator.backends.base import (
    MAX_ABS_STATE,
    Backend,
    Step,
    View,
    broadcast_state,
    decode,
    sensorless_copy,
)

_FULL = mujoco.mjtState.mjSTATE_FULLPHYSICS
# Every rollout sets the applied generalized forces too (zeros without an assist): a thread's
# MjData never carries one env's forces into another's step.
_CONTROL = int(mujoco.mjtState.mjSTATE_CTRL) | int(mujoco.mjtState.mjSTATE_QFRC_APPLIED)


class CpuState(NamedTuple):
    """A batch of MuJoCo full-physics state vectors (time, qpos, qvel, act, ...)."""

    physics: np.ndarray  # (n_envs, nstate)


def _offsets(model: mujoco.MjModel) -> dict[int, slice]:
    """Where each component of the full-physics state vector lies (components in bit order)."""
    out, start = {}, 0
    for bit in range(int(mujoco.mjtState.mjNSTATE)):
        if int(_FULL) & (1 << bit):
            size = mujoco.mj_stateSize(model, 1 << bit)
            out[1 << bit] = slice(start, start + size)
            start += size
    return out


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class CpuBackend(Backend):
    """Batched environments on MuJoCo's C engine; one `rollout` call per control step (two when
    only the last physics step is recorded: sensors run on that step alone). Its states are host
    arrays (float64), stepped outside JAX: nothing here is jittable."""

    kind = "cpu"

    def __init__(
        self,
        model: mujoco.MjModel,
        n_envs: int,
        frame_skip: int,
        record_physics_steps: bool = False,
        nthread: int | None = None,
        record: bool = True,
    ):
        self._configure(model, n_envs, frame_skip, record_physics_steps, record)
        # The intermediate steps run a sensor-free copy: same physics, no sensor cost.
        self.plain = sensorless_copy(self.recording)
        self.nthread = min(nthread or available_cores(), n_envs)
        self._pool = rollout.Rollout(nthread=self.nthread)
        self._data_rec = [mujoco.MjData(self.recording) for _ in range(max(1, self.nthread))]
        self._data_plain = [mujoco.MjData(self.plain) for _ in range(max(1, self.nthread))]
        off = _offsets(self.recording)
        self._time = off[int(mujoco.mjtState.mjSTATE_TIME)]
        self._qpos = off[int(mujoco.mjtState.mjSTATE_QPOS)]
        self._qvel = off[int(mujoco.mjtState.mjSTATE_QVEL)]
        self._act = off[int(mujoco.mjtState.mjSTATE_ACT)]
        self.nstate = mujoco.mj_stateSize(self.recording, _FULL)
        rec_rows = (frame_skip if record_physics_steps else 1) if record else 0
        plain_rows = frame_skip - rec_rows
        # Output buffers reused across calls (rollout writes into them in place).
        width = model.nu + model.nv  # ctrl, then qfrc_applied (mjtState bit order)
        self._ctrl_rec = np.zeros((n_envs, rec_rows, width))
        self._state_rec = np.zeros((n_envs, rec_rows, self.nstate))
        self._sens_rec = np.zeros((n_envs, rec_rows, self.recording.nsensordata))
        self._ctrl_plain = np.zeros((n_envs, plain_rows, width))
        self._state_plain = np.zeros((n_envs, plain_rows, self.nstate))
        # rollout writes every row's sensordata (zeros here) without checking the width
        self._sens_plain = np.zeros((n_envs, plain_rows, self.plain.nsensordata))
        self.n_diverged = 0
        self._data_view: list[mujoco.MjData] = []  # for `view`, one per env

    def close(self) -> None:
        """Stop the thread pool."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def init(self, qpos, qvel, act=None) -> CpuState:
        qpos, qvel, act = broadcast_state(self.model, self.n_envs, qpos, qvel, act)
        data = mujoco.MjData(self.recording)
        row = np.zeros(self.nstate)
        mujoco.mj_getState(self.recording, data, row, _FULL)  # mocap and plugin defaults
        physics = np.tile(row, (self.n_envs, 1))
        physics[:, self._qpos], physics[:, self._qvel], physics[:, self._act] = qpos, qvel, act
        return CpuState(physics)

    def reset(self, state: CpuState, mask, qpos, qvel, act=None) -> CpuState:
        fresh = self.init(qpos, qvel, act).physics
        mask = np.asarray(mask, dtype=bool)
        return CpuState(np.where(mask[:, None], fresh, state.physics))

    def arrays(self, state: CpuState) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p = state.physics
        return p[:, self._qpos].copy(), p[:, self._qvel].copy(), p[:, self._act].copy()

    def _rollout(self, model, data, start, ctrl, out_state, out_sens) -> None:
        self._pool.rollout(
            model,
            data,
            start,
            ctrl,
            control_spec=_CONTROL,
            skip_checks=True,
            nstep=ctrl.shape[1],
            state=out_state,
            sensordata=out_sens,
            chunk_size=max(1, self.n_envs // (self.nthread * 4)),
        )

    def step(self, state: CpuState, ctrl, qfrc_applied=None) -> Step:
        n, nu, nv = self.n_envs, self.model.nu, self.model.nv
        ctrl = np.asarray(ctrl, dtype=np.float64).reshape(n, nu)
        qfrc = np.zeros((n, nv)) if qfrc_applied is None else qfrc_applied
        both = np.concatenate([ctrl, np.asarray(qfrc, np.float64).reshape(n, nv)], axis=1)
        bad_ctrl = ~np.isfinite(both).all(axis=1)
        both = np.where(np.isfinite(both), both, 0.0)  # MuJoCo would zero it silently
        ctrl = both[:, :nu]
        start = np.ascontiguousarray(state.physics)
        if self._ctrl_plain.shape[1]:
            self._ctrl_plain[:] = both[:, None, :]
            self._rollout(
                [self.plain] * self.n_envs,
                self._data_plain,
                start,
                self._ctrl_plain,
                self._state_plain,
                self._sens_plain,
            )
            start = np.ascontiguousarray(self._state_plain[:, -1])
        if not self.record:
            final = start
            diverged = (
                bad_ctrl
                | ~np.isfinite(final).all(axis=1)
                | (np.abs(final) > MAX_ABS_STATE).any(axis=1)
            )
            new = final.copy()
            if diverged.any():
                new[diverged] = state.physics[diverged]
                self.n_diverged += int(diverged.sum())
            return Step(CpuState(new), None, diverged)
        self._ctrl_rec[:] = both[:, None, :]
        self._rollout(
            [self.recording] * self.n_envs,
            self._data_rec,
            start,
            self._ctrl_rec,
            self._state_rec,
            self._sens_rec,
        )
        rows = self._state_rec
        # Copies: the buffers are overwritten by the next step.
        qpos, qvel, act = (rows[..., s].copy() for s in (self._qpos, self._qvel, self._act))
        final = rows[:, -1]
        diverged = (
            bad_ctrl
            | ~np.isfinite(final).all(axis=1)
            | (np.abs(final) > MAX_ABS_STATE).any(axis=1)
            | ~np.isfinite(self._sens_rec).all(axis=(1, 2))
        )
        ctrl_rows = np.broadcast_to(ctrl[:, None, :], (*rows.shape[:2], self.model.nu))
        rec = decode(self.layout, qpos, qvel, act, ctrl_rows, self._sens_rec)
        new = final.copy()
        if diverged.any():
            # Keep the batch finite: a diverged env keeps its pre-step state, its rows are NaN.
            new[diverged] = state.physics[diverged]
            rec = type(rec)(*(np.where(_rows(diverged, x), np.nan, x) for x in rec))
            self.n_diverged += int(diverged.sum())
        return Step(CpuState(new), rec, diverged)

    def view(self, state: CpuState, ctrl, bodies) -> View:
        """`mj_forward` of each env's state on the user's model, one env after the other."""
        m, p = self.model, np.asarray(state.physics)
        n, nu = p.shape[0], m.nu
        ctrl = np.asarray(ctrl, np.float64).reshape(n, nu)
        bodies = np.asarray(bodies, np.int64)
        while len(self._data_view) < n:
            self._data_view.append(mujoco.MjData(m))
        length, velocity, force = np.zeros((n, nu)), np.zeros((n, nu)), np.zeros((n, nu))
        body_pos = np.zeros((n, bodies.size, 3))
        for i in range(n):
            d = self._data_view[i]
            d.qpos[:], d.qvel[:], d.act[:] = p[i, self._qpos], p[i, self._qvel], p[i, self._act]
            d.ctrl[:] = ctrl[i]
            mujoco.mj_forward(m, d)
            length[i], velocity[i], force[i] = (
                d.actuator_length,
                d.actuator_velocity,
                d.actuator_force,
            )
            body_pos[i] = d.xpos[bodies]
        q, v, a = self.arrays(state)
        return View(q, v, a, length, velocity, force, body_pos)


def _rows(mask: np.ndarray, x: np.ndarray) -> np.ndarray:
    return mask.reshape(mask.shape + (1,) * (x.ndim - 1))
