"""Stage 5: roll a trained policy out over a whole clip and record everything (product.md).

The rollout is deterministic (the policy's mean action; sampled actions on request), starts at
the clip's first reference frame and never resets. It runs on MuJoCo's C engine through the CPU
backend, whose recording gives every muscle quantity, joint torques, ground reaction forces and
centres of pressure per foot, and the centre of mass. When the body falls (the environment's
termination test), the frame is recorded and the rest of the arrays stay NaN: nothing is
invented after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from msconvert.emulator.backends.base import FEET
from msconvert.emulator.backends.cpu import CpuBackend
from msconvert.emulator.learn.agents.common import norm_apply
from msconvert.emulator.learn.env import Env, make_env


@dataclass
class Emulation:
    """The policy's rollout of one clip, at the control rate, on the reference's time axis."""

    clip_id: str
    fps: float
    times: np.ndarray  # (T,)
    qpos_names: tuple[str, ...]
    qvel_names: tuple[str, ...]
    muscle_names: tuple[str, ...]
    joint_names: tuple[str, ...]
    foot_names: tuple[str, ...]
    qpos: np.ndarray  # (T, nq)
    qvel: np.ndarray
    excitation: np.ndarray  # (T, M)
    activation: np.ndarray
    force: np.ndarray  # MuJoCo's sign (negative when pulling)
    length: np.ndarray
    velocity: np.ndarray
    joint_torque: np.ndarray  # (T, J)
    grf: np.ndarray  # (T, 2, 3)
    cop: np.ndarray
    com: np.ndarray  # (T, 3)
    com_vel: np.ndarray
    joint_error_deg: np.ndarray  # (T,)
    body_error_mm: np.ndarray
    root_error_mm: np.ndarray
    tracked_frames: int  # frames recorded before the end or the fall
    fell: bool
    metrics: dict[str, float] = field(default_factory=dict)


def _cpu_env(env: Env) -> Env:
    if env.backend == "cpu":
        return env
    return make_env(env.model, env.refs, env.config, backend="cpu")


def emulate(
    env: Env,
    agent: Any,
    agent_state: Any,
    obs_norm: Any,
    agent_config: Any,
    clip: int = 0,
    qpos_names: tuple[str, ...] = (),
    qvel_names: tuple[str, ...] = (),
    deterministic: bool = True,
    seed: int = 0,
) -> Emulation:
    """Rollout of the policy over clip `clip` of the environment's reference set.

    deterministic: the policy's mean action (the catalog's emulation); else actions sampled from
    the policy with `seed` (the same seed gives the same rollout).
    """
    env = _cpu_env(env)
    model, refs, cfg = env.model, env.refs, env.config
    length = int(refs.length[clip])
    backend = CpuBackend(model, 1, env.frame_skip, nthread=1)
    m = model
    nan = lambda *s: np.full((length, *s), np.nan)  # noqa: E731
    rec = {
        "qpos": nan(m.nq),
        "qvel": nan(m.nv),
        "excitation": nan(m.nu),
        "activation": nan(m.na),
        "force": nan(m.nu),
        "length": nan(m.nu),
        "velocity": nan(m.nu),
        "joint_torque": nan(len(backend.layout.joint_names)),
        "grf": nan(2, 3),
        "cop": nan(2, 3),
        "com": nan(3),
        "com_vel": nan(3),
        "joint_error_deg": nan(),
        "body_error_mm": nan(),
        "root_error_mm": nan(),
    }
    q0, v0, a0 = refs.qpos[clip, 0], refs.qvel[clip, 0], refs.activation[clip, 0]
    sim = backend.init(q0[None], v0[None], a0[None])
    view = env._cpu_views(q0[None], v0[None], a0[None], np.zeros((1, m.nu)))
    clip_arr = jnp.asarray([clip], jnp.int32)

    def put_view(row: int, view: Any) -> None:
        rec["qpos"][row], rec["qvel"][row] = np.asarray(view.qpos[0]), np.asarray(view.qvel[0])
        rec["activation"][row] = np.asarray(view.act[0])
        rec["force"][row] = np.asarray(view.force[0])
        rec["length"][row] = np.asarray(view.length[0])
        rec["velocity"][row] = np.asarray(view.velocity[0])

    def put_errors(row: int, track: dict) -> None:
        rec["joint_error_deg"][row] = float(np.rad2deg(track["joint_error_rad"][0]))
        rec["body_error_mm"][row] = 1000.0 * float(track["body_error_m"][0])
        rec["root_error_mm"][row] = 1000.0 * float(track["root_error_m"][0])

    put_view(0, view)
    put_errors(0, env._tracking(view, clip_arr, jnp.asarray([0])))
    key = jax.random.PRNGKey(seed)
    tracked, fell = 1, False
    try:
        for f in range(length - 1):
            frame = jnp.asarray([f], jnp.int32)
            obs = norm_apply(obs_norm, env._observe(view, clip_arr, frame))
            key, act_key = jax.random.split(key)
            action, _ = agent.act(agent_state, obs, act_key, deterministic, agent_config)
            ctrl = 0.5 + 0.5 * np.clip(np.asarray(action, np.float64), -1.0, 1.0)
            rec["excitation"][f] = ctrl[0]
            step = backend.step(sim, ctrl)
            sim = step.state
            r = step.recording
            q, v, a = backend.arrays(sim)
            view = env._cpu_views(q, v, a, ctrl)
            row = f + 1
            put_view(row, view)
            rec["joint_torque"][row] = r.joint_torque[0, -1]
            rec["grf"][row], rec["cop"][row] = r.grf[0, -1], r.cop[0, -1]
            rec["com"][row], rec["com_vel"][row] = r.com[0, -1], r.com_vel[0, -1]
            track = env._tracking(view, clip_arr, jnp.asarray([row]))
            put_errors(row, track)
            tracked = row + 1
            if (
                bool(step.diverged[0])
                or float(track["body_error_m"][0]) > cfg.termination_body_error_m
                or float(track["root_error_m"][0]) > cfg.termination_root_error_m
            ):
                fell = True
                break
    finally:
        backend.close()
    if not fell:  # the last command is held over the last interval: repeat it for the last row
        rec["excitation"][length - 1] = rec["excitation"][length - 2]
    ok = slice(0, tracked)
    metrics = {
        "tracking.joint_error_deg_mean": float(np.nanmean(rec["joint_error_deg"][ok])),
        "tracking.joint_error_deg_max": float(np.nanmax(rec["joint_error_deg"][ok])),
        "tracking.body_error_mm_mean": float(np.nanmean(rec["body_error_mm"][ok])),
        "tracking.root_error_mm_mean": float(np.nanmean(rec["root_error_mm"][ok])),
        "tracking.fraction_tracked": tracked / length,
        "tracking.effort": float(np.nanmean(rec["activation"][ok] ** 2)),
    }
    return Emulation(
        clip_id=refs.clip_ids[clip],
        fps=float(cfg.control_hz),
        times=np.arange(length) / float(cfg.control_hz),
        qpos_names=tuple(qpos_names) or tuple(backend.layout.qpos_names),
        qvel_names=tuple(qvel_names) or tuple(backend.layout.qvel_names),
        muscle_names=env.muscle_names,
        joint_names=tuple(backend.layout.joint_names),
        foot_names=FEET,
        tracked_frames=tracked,
        fell=fell,
        metrics=metrics,
        **rec,
    )
