"""Stage 5: roll a trained policy out over a whole clip and record everything.

The rollout is deterministic (the policy's mean action; sampled actions on request), starts at
the clip's first reference frame and never resets. It steps the environment's public one-env
`step` on MuJoCo's C engine (the CPU backend), whose recording gives every muscle quantity, joint
torques, ground reaction forces and centres of pressure per foot, and the centre of mass. When
the body falls (the environment's termination test), the frame is recorded and the rest of the
arrays stay NaN: nothing is invented after it (docs/method.md#emulation).

A policy whose action holds a root assist is emulated at a stated assist scale, never a silent
default: its metrics record the scale and the assist force it applied (`policy.assist_*`).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from msconvert.emulator.backends import FEET, make_backend
from msconvert.emulator.emulation import Emulation, empty_recording, tracking_metrics
from msconvert.emulator.learn.agents.common import norm_apply
from msconvert.emulator.learn.env import Env, applied_action, excitation


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
    times: np.ndarray | None = None,
    assist_scale: float | None = None,
) -> Emulation:
    """Rollout of the policy over clip `clip` of the environment's reference set.

    env: the environment or a wrapper of it (the trainer's); its task runs through `Env.step` on
    a recording C-engine backend of one env. deterministic: the policy's mean action (the
    catalog's emulation); else actions sampled from the policy with `seed` (the same seed gives
    the same rollout). times: the reference's time axis (default: frames at the control rate).
    assist_scale: the scale of the root assist in the policy's action (0: off); required for
    a policy with an assist, refused for one without.
    """
    base = env.unwrapped
    if base.config.assist and assist_scale is None:
        raise ValueError(
            "this policy's action holds a root assist: state its assist_scale (0: off)"
        )
    if not base.config.assist and assist_scale not in (None, 0.0):
        raise ValueError("this policy has no root assist to scale")
    if assist_scale is not None and not 0.0 <= assist_scale <= 1.0:
        raise ValueError(f"assist_scale must be within [0, 1], not {assist_scale}")
    nu = base.model.nu
    scale = np.ones(base.act_dim)
    scale[nu:] = assist_scale or 0.0
    assist_bw = np.full(int(base.refs.length[clip]), np.nan)
    physics = make_backend("cpu", base.model, 1, base.frame_skip, nthread=1)
    env = base.with_physics(physics)
    model, refs, cfg = env.model, env.refs, env.config
    length = int(refs.length[clip])
    layout = physics.layout
    m = model
    rec = empty_recording(length, m.nq, m.nv, m.nu, m.na, len(layout.joint_names))

    def put_view(row: int, view: Any) -> None:
        rec["qpos"][row], rec["qvel"][row] = np.asarray(view.qpos), np.asarray(view.qvel)
        rec["activation"][row] = np.asarray(view.act)
        rec["force"][row] = np.asarray(view.force)
        rec["length"][row] = np.asarray(view.length)
        rec["velocity"][row] = np.asarray(view.velocity)

    def put_errors(row: int, joint_rad: Any, body_m: Any, root_m: Any) -> None:
        rec["joint_error_deg"][row] = float(np.rad2deg(joint_rad))
        rec["body_error_mm"][row] = 1000.0 * float(body_m)
        rec["root_error_mm"][row] = 1000.0 * float(root_m)

    key = jax.random.PRNGKey(seed)
    tracked, fell = 1, False
    try:
        state = env.reset_at(clip, 0)
        put_view(0, state.view)
        track = env.track(state.view, state.clip, state.frame)
        put_errors(0, track["joint_error_rad"], track["body_error_m"], track["root_error_m"])
        for f in range(length - 1):
            obs = norm_apply(obs_norm, state.obs[None])
            key, act_key = jax.random.split(key)
            action, _ = agent.act(agent_state, obs, act_key, deterministic, agent_config)
            action = np.asarray(applied_action(env.task, clip, f, action[0]), np.float64)
            rec["excitation"][f] = excitation(action[:nu])
            state, info = env.step(state, action * scale)
            assist_bw[f] = float(info.assist_force_bw)
            row = f + 1
            put_view(row, state.view)
            r = info.recording
            rec["joint_torque"][row] = r.joint_torque[-1]
            rec["grf"][row], rec["cop"][row] = r.grf[-1], r.cop[-1]
            rec["com"][row], rec["com_vel"][row] = r.com[-1], r.com_vel[-1]
            put_errors(row, info.joint_error_rad, info.body_error_m, info.root_error_m)
            tracked = row + 1
            if bool(info.terminated):  # the environment's termination test: the body fell
                fell = True
                break
    finally:
        physics.close()
    if not fell:  # the last command is held over the last interval: repeat it for the last row
        rec["excitation"][length - 1] = rec["excitation"][length - 2]
    task = env.task
    metrics = tracking_metrics(
        rec,
        tracked,
        np.asarray(task.qpos[clip, :length]),
        (np.asarray(task.joint_qpos), np.asarray(task.joint_is_hinge)),
    )
    if base.config.assist:
        applied = assist_bw[: max(tracked - 1, 1)]
        metrics["policy.assist_scale"] = float(assist_scale)
        metrics["policy.assist_force_pct_bw"] = 100.0 * float(np.nanmean(applied))
        metrics["policy.assist_force_pct_bw_max"] = 100.0 * float(np.nanmax(applied))
    return Emulation(
        clip_id=refs.clip_ids[clip],
        fps=float(cfg.control_hz),
        times=np.arange(length) / float(cfg.control_hz) if times is None else np.asarray(times),
        qpos_names=tuple(qpos_names) or tuple(layout.qpos_names),
        qvel_names=tuple(qvel_names) or tuple(layout.qvel_names),
        muscle_names=env.muscle_names,
        joint_names=tuple(layout.joint_names),
        foot_names=FEET,
        tracked_frames=tracked,
        fell=fell,
        metrics=metrics,
        **rec,
    )
