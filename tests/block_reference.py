"""A feasible reference for the standing block (tests/toy_models.py): a slow sway about the
ankles, feet planted."""

from __future__ import annotations

import mujoco
import numpy as np

from msconvert.emulator.retarget.reference import Reference


def sway_reference(model: mujoco.MjModel, seconds: float = 2.0) -> Reference:
    """The block swaying forward and back about its ankles (±0.15 rad at 0.5 Hz), feet flat
    and torso level (hips opposite the ankles), at 50 Hz: the ankles' torque follows the sway."""
    n, fps = int(seconds * 50), 50.0
    theta = 0.15 * np.sin(2 * np.pi * 0.5 * np.arange(n) / fps)
    data = mujoco.MjData(model)
    data.qpos[:] = model.qpos0
    mujoco.mj_kinematics(model, data)
    foot = model.body("foot_r").id
    planted = data.xpos[foot].copy()
    bodies = ("torso", "foot_l", "foot_r")
    qpos = np.tile(model.qpos0, (n, 1))
    body_pos = np.zeros((n, len(bodies), 3))
    for k in range(n):
        for side in "rl":
            qpos[k, model.joint(f"hip_{side}").qposadr[0]] = -theta[k]
            qpos[k, model.joint(f"ankle_{side}").qposadr[0]] = theta[k]
        data.qpos[:] = qpos[k]
        mujoco.mj_kinematics(model, data)
        qpos[k, :3] += planted - data.xpos[foot]  # the feet stay where they stood
        data.qpos[:] = qpos[k]
        mujoco.mj_kinematics(model, data)
        body_pos[k] = [data.xpos[model.body(b).id] for b in bodies]
    qvel = np.zeros((n, model.nv))
    for k in range(n):  # central differences (one-sided at the ends)
        before, after = max(k - 1, 0), min(k + 1, n - 1)
        mujoco.mj_differentiatePos(
            model, qvel[k], (after - before) / fps, qpos[before], qpos[after]
        )
    return Reference.from_trajectory("sway", fps, qpos, qvel, body_names=bodies, body_pos=body_pos)
