"""A physically trackable reference for the planar arm: forward-simulated smooth excitations."""

from __future__ import annotations

import mujoco
import numpy as np

from msconvert.emulator.retarget.reference import Reference


def arm_reference_with_excitation(
    model: mujoco.MjModel,
    seconds: float = 3.0,
    hz: float = 50.0,
    seed: int = 0,
    clip_id: str = "arm",
) -> tuple[Reference, np.ndarray]:
    """The reference (qpos, qvel, key-body positions at `hz`) and the excitations (T, nu) that
    made it."""
    rng = np.random.default_rng(seed)
    data = mujoco.MjData(model)
    skip = int(round(1.0 / (hz * model.opt.timestep)))
    n = int(seconds * hz)
    freqs = rng.uniform(0.3, 1.0, model.nu)
    phase = rng.uniform(0, 2 * np.pi, model.nu)
    bodies = tuple(model.body(i).name for i in range(1, model.nbody))
    qpos, qvel, body_pos, excitation = [], [], [], []
    for k in range(n * skip):
        data.ctrl[:] = 0.3 + 0.25 * np.sin(2 * np.pi * freqs * k * model.opt.timestep + phase)
        if k % skip == 0:
            mujoco.mj_forward(model, data)
            qpos.append(data.qpos.copy())
            qvel.append(data.qvel.copy())
            body_pos.append(data.xpos[1:].copy())
            excitation.append(data.ctrl.copy())
        mujoco.mj_step(model, data)
    qvel_arr = np.array(qvel)
    reference = Reference.from_trajectory(
        clip_id,
        hz,
        np.array(qpos),
        qvel_arr,
        np.gradient(qvel_arr, 1.0 / hz, axis=0),  # for static optimization
        body_names=bodies,
        body_pos=np.array(body_pos),
    )
    return reference, np.array(excitation)


def arm_reference(
    model: mujoco.MjModel,
    seconds: float = 3.0,
    hz: float = 50.0,
    seed: int = 0,
    clip_id: str = "arm",
) -> Reference:
    """The reference of `arm_reference_with_excitation`, without the excitations."""
    return arm_reference_with_excitation(model, seconds, hz, seed, clip_id)[0]
