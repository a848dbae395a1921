"""Stage values → labelled datasets for one clip group (what each stage adds to the catalog).

Source kinematics keep the file's own rate on `source_time`; everything on the model (reference,
and later emulation) is at the control rate on `time`.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from msconvert.catalog.schema import DIM_JOINT, DIM_QUAT, DIM_SOURCE_TIME, DIM_TIME, DIM_XYZ
from msconvert.datasets.kinematics import JointTrajectory
from msconvert.datasets.motion import Motion
from msconvert.emulator.emulate import Emulation
from msconvert.emulator.muscles.static_opt import StaticOptResult
from msconvert.emulator.retarget.reference import Reference

XYZ = ("x", "y", "z")
WXYZ = ("w", "x", "y", "z")
DIM_HAND_JOINT = "hand_joint"
# SMPL-H / SMPL-X finger order: five fingers of three joints, left hand then right.
HAND_JOINT_NAMES: tuple[str, ...] = tuple(
    f"{side}_{finger}{k}"
    for side in ("left", "right")
    for finger in ("index", "middle", "pinky", "ring", "thumb")
    for k in (1, 2, 3)
)


def source_dataset(motion: Motion, joints: JointTrajectory) -> xr.Dataset:
    """The source kinematics of a clip: world joints, orientations and the pose it came from."""
    coords = {
        DIM_SOURCE_TIME: (DIM_SOURCE_TIME, motion.times, {"units": "s"}),
        DIM_JOINT: (DIM_JOINT, np.asarray(joints.joint_names)),
        DIM_XYZ: (DIM_XYZ, np.asarray(XYZ)),
        DIM_QUAT: (DIM_QUAT, np.asarray(WXYZ)),
    }
    data = {
        "source_joints": (
            (DIM_SOURCE_TIME, DIM_JOINT, DIM_XYZ),
            joints.positions.astype(np.float32),
            {"units": "m", "description": "world joint positions (z up)"},
        ),
        "source_joint_orientation": (
            (DIM_SOURCE_TIME, DIM_JOINT, DIM_QUAT),
            joints.quaternions_wxyz().astype(np.float32),
            {"units": "1", "description": "world joint orientations, unit quaternions w >= 0"},
        ),
        "source_root_translation": (
            (DIM_SOURCE_TIME, DIM_XYZ),
            motion.root_translation.astype(np.float64),
            {"units": "m", "description": "the file's root translation (AMASS 'trans')"},
        ),
        "source_body_pose": (
            (DIM_SOURCE_TIME, DIM_JOINT, DIM_XYZ),
            motion.body_pose.astype(np.float32),
            {
                "units": "rad",
                "description": "axis-angle rotation of each joint relative to its parent",
            },
        ),
    }
    if motion.hand_pose is not None:
        coords[DIM_HAND_JOINT] = (DIM_HAND_JOINT, np.asarray(HAND_JOINT_NAMES))
        data["source_hand_pose"] = (
            (DIM_SOURCE_TIME, DIM_HAND_JOINT, DIM_XYZ),
            motion.hand_pose.astype(np.float32),
            {
                "units": "rad",
                "description": "axis-angle finger rotations relative to their parents",
            },
        )
    return xr.Dataset(data_vars=data, coords=coords)


def reference_dataset(ref: Reference) -> xr.Dataset:
    """The retargeted clip: model joint trajectories, key bodies, and the fit's per-frame errors."""
    coords = {
        DIM_TIME: (DIM_TIME, ref.times, {"units": "s"}),
        "qpos": ("qpos", np.asarray(ref.qpos_names)),
        "qvel": ("qvel", np.asarray(ref.qvel_names)),
        "body": ("body", np.asarray(ref.body_names)),
        "correspondence": ("correspondence", np.asarray(ref.correspondence_names)),
        "foot": ("foot", np.asarray(("left", "right"))),
        DIM_XYZ: (DIM_XYZ, np.asarray(XYZ)),
        DIM_QUAT: (DIM_QUAT, np.asarray(WXYZ)),
    }
    t = DIM_TIME
    data = {
        "reference_qpos": ((t, "qpos"), ref.qpos, {"units": "m or rad; root quaternion w,x,y,z"}),
        "reference_qvel": ((t, "qvel"), ref.qvel, {"units": "m/s or rad/s (MuJoCo tangent space)"}),
        "reference_qacc": ((t, "qvel"), ref.qacc.astype(np.float32), {"units": "m/s2 or rad/s2"}),
        "reference_body_pos": (
            (t, "body", DIM_XYZ),
            ref.body_pos.astype(np.float32),
            {"units": "m", "description": "world positions of the key bodies"},
        ),
        "reference_body_quat": (
            (t, "body", DIM_QUAT),
            ref.body_quat.astype(np.float32),
            {"units": "1", "description": "world orientations of the key bodies"},
        ),
        "retarget_target_pos": (
            (t, "correspondence", DIM_XYZ),
            ref.target_pos.astype(np.float32),
            {"units": "m", "description": "scaled, grounded source points the IK fitted"},
        ),
        "retarget_position_error": (
            (t, "correspondence"),
            ref.position_error_m.astype(np.float32),
            {"units": "m", "description": "distance from each model point to its target"},
        ),
        "retarget_orientation_error": (
            (t, "correspondence"),
            ref.orientation_error_rad.astype(np.float32),
            {"units": "rad", "description": "angle between each model frame and its target"},
        ),
        "stance": ((t, "foot"), ref.stance.astype(bool), {"description": "foot in stance"}),
        "ground_shift": (
            (t,),
            ref.ground_shift_m.astype(np.float32),
            {"units": "m", "description": "vertical root shift that put the feet on the floor"},
        ),
    }
    return xr.Dataset(data_vars=data, coords=coords)


RESIDUAL_COMPONENTS = ("fx", "fy", "fz", "mx", "my", "mz")


def static_opt_dataset(result: StaticOptResult, times: np.ndarray) -> xr.Dataset:
    """Static optimization's muscle solution per reference frame (the `static-opt` method)."""
    t, m = DIM_TIME, "muscle"
    feet = result.foot_names or tuple(f"foot{i}" for i in range(result.grf.shape[1]))
    coords = {
        DIM_TIME: (DIM_TIME, np.asarray(times, np.float64), {"units": "s"}),
        m: (m, np.asarray(result.muscle_names)),
        "foot": ("foot", np.asarray(feet)),
        DIM_XYZ: (DIM_XYZ, np.asarray(XYZ)),
        "residual_component": ("residual_component", np.asarray(RESIDUAL_COMPONENTS)),
    }
    residual = np.concatenate([result.residual_force, result.residual_moment], axis=1)
    data = {
        "activation": (
            (t, m),
            result.activation.astype(np.float32),
            {"units": "1", "range": "0..1"},
        ),
        "excitation": (
            (t, m),
            result.excitation.astype(np.float32),
            {"units": "1", "range": "0..1", "description": "neural input held after each frame"},
        ),
        "muscle_force": (
            (t, m),
            (-result.force).astype(np.float32),
            {"units": "N", "description": "muscle tension, >= 0 (MuJoCo's actuator_force negated)"},
        ),
        "grf": (
            (t, "foot", DIM_XYZ),
            result.grf.astype(np.float32),
            {"units": "N", "description": "floor reaction force on each foot, world frame"},
        ),
        "cop": (
            (t, "foot", DIM_XYZ),
            result.cop.astype(np.float32),
            {"units": "m", "description": "centre of pressure per foot; NaN when unloaded"},
        ),
        "residual": (
            (t, "residual_component"),
            residual.astype(np.float32),
            {"units": "N and N m", "description": "root residual force and moment, world frame"},
        ),
        "static_opt_feasible": (
            (t,),
            result.feasible.astype(bool),
            {"description": "every non-root DoF's torque met by the muscles"},
        ),
    }
    return xr.Dataset(data_vars=data, coords=coords)


def reference_mapping(ds: xr.Dataset, clip_id: str) -> dict:
    """A clip's stored reference as the mapping the trainer and static optimization accept."""
    missing = [v for v in ("reference_qpos", "reference_qvel", "reference_body_pos") if v not in ds]
    if missing:
        raise KeyError(
            f"clip {clip_id!r} has no retargeted reference ({', '.join(missing)} missing): "
            "convert it with --until retarget first"
        )
    times = ds[DIM_TIME].values
    fps = float(ds.attrs.get("control_fps") or (1.0 / np.median(np.diff(times))))
    return {
        "clip_id": clip_id,
        "fps": fps,
        "qpos": ds["reference_qpos"].values.astype(np.float64),
        "qvel": ds["reference_qvel"].values.astype(np.float64),
        "qacc": ds["reference_qacc"].values.astype(np.float64),
        "body_names": tuple(str(b) for b in ds["body"].values),
        "body_pos": ds["reference_body_pos"].values.astype(np.float64),
        "model_sha256": str(ds.attrs.get("model_sha256", "")),
        "model_name": str(ds.attrs.get("model_name", "")),
    }


def emulation_dataset(emu: Emulation) -> xr.Dataset:
    """The policy's rollout: emulated kinematics, every muscle quantity, contacts, errors.

    Arrays stop at the last tracked frame when the body fell: nothing is invented after it.
    """
    t, m = DIM_TIME, "muscle"
    coords = {
        DIM_TIME: (DIM_TIME, np.asarray(emu.times, np.float64), {"units": "s"}),
        "qpos": ("qpos", np.asarray(emu.qpos_names)),
        "qvel": ("qvel", np.asarray(emu.qvel_names)),
        m: (m, np.asarray(emu.muscle_names)),
        "model_joint": ("model_joint", np.asarray(emu.joint_names)),
        "foot": ("foot", np.asarray(emu.foot_names)),
        DIM_XYZ: (DIM_XYZ, np.asarray(XYZ)),
    }
    f32 = np.float32
    data = {
        "emulated_qpos": ((t, "qpos"), emu.qpos, {"units": "m or rad; root quaternion w,x,y,z"}),
        "emulated_qvel": ((t, "qvel"), emu.qvel, {"units": "m/s or rad/s (MuJoCo tangent space)"}),
        "excitation": ((t, m), emu.excitation.astype(f32), {"units": "1", "range": "0..1"}),
        "activation": ((t, m), emu.activation.astype(f32), {"units": "1", "range": "0..1"}),
        "muscle_force": (
            (t, m),
            (-emu.force).astype(f32),
            {"units": "N", "description": "muscle tension, >= 0 (MuJoCo's actuator_force negated)"},
        ),
        "muscle_length": (
            (t, m),
            emu.length.astype(f32),
            {"units": "m", "description": "musculotendon length"},
        ),
        "muscle_velocity": ((t, m), emu.velocity.astype(f32), {"units": "m/s"}),
        "joint_torque": (
            (t, "model_joint"),
            emu.joint_torque.astype(f32),
            {"units": "N m or N", "description": "generalized force of all muscles at each joint"},
        ),
        "grf": (
            (t, "foot", DIM_XYZ),
            emu.grf.astype(f32),
            {"units": "N", "description": "floor reaction force on each foot, world frame"},
        ),
        "cop": (
            (t, "foot", DIM_XYZ),
            emu.cop.astype(f32),
            {"units": "m", "description": "centre of pressure per foot; NaN when unloaded"},
        ),
        "com": ((t, DIM_XYZ), emu.com.astype(f32), {"units": "m", "description": "centre of mass"}),
        "com_vel": ((t, DIM_XYZ), emu.com_vel.astype(f32), {"units": "m/s"}),
        "tracking_joint_error_deg": (
            (t,),
            emu.joint_error_deg.astype(f32),
            {"units": "deg", "description": "mean |joint-angle error| over non-root DoFs"},
        ),
        "tracking_body_error_mm": (
            (t,),
            emu.body_error_mm.astype(f32),
            {"units": "mm", "description": "mean key-body position error"},
        ),
        "tracking_root_error_mm": (
            (t,),
            emu.root_error_mm.astype(f32),
            {"units": "mm", "description": "root position error"},
        ),
    }
    return xr.Dataset(data_vars=data, coords=coords)


def stochastic_dataset(rollouts: list[Emulation]) -> xr.Dataset:
    """K rollouts with actions sampled from the policy (`--stochastic K`), dim 'rollout'.

    The kinematics, activations and floor forces of each, with its tracking error, on the
    deterministic emulation's time axis: how much the muscle solution varies while the motion
    is tracked. A rollout that falls is NaN from its fall on, like the emulation.
    """
    t, m = DIM_TIME, "muscle"
    first = rollouts[0]
    coords = {
        "rollout": ("rollout", np.arange(1, len(rollouts) + 1), {"description": "sampling seed"}),
        DIM_TIME: (DIM_TIME, np.asarray(first.times, np.float64), {"units": "s"}),
        "qpos": ("qpos", np.asarray(first.qpos_names)),
        m: (m, np.asarray(first.muscle_names)),
        "foot": ("foot", np.asarray(first.foot_names)),
        DIM_XYZ: (DIM_XYZ, np.asarray(XYZ)),
    }
    stack = lambda name: np.stack([getattr(r, name) for r in rollouts])  # noqa: E731
    f32 = np.float32
    data = {
        "stochastic_emulated_qpos": (
            ("rollout", t, "qpos"),
            stack("qpos"),
            {"units": "m or rad; root quaternion w,x,y,z"},
        ),
        "stochastic_activation": (
            ("rollout", t, m),
            stack("activation").astype(f32),
            {"units": "1", "range": "0..1"},
        ),
        "stochastic_grf": (
            ("rollout", t, "foot", DIM_XYZ),
            stack("grf").astype(f32),
            {"units": "N", "description": "floor reaction force on each foot, world frame"},
        ),
        "stochastic_tracking_joint_error_deg": (
            ("rollout", t),
            stack("joint_error_deg").astype(f32),
            {"units": "deg", "description": "mean |joint-angle error| over non-root DoFs"},
        ),
        "stochastic_tracked_frames": (
            ("rollout",),
            np.asarray([r.tracked_frames for r in rollouts], np.int32),
            {"description": "frames tracked before the end of the clip or a fall"},
        ),
    }
    return xr.Dataset(data_vars=data, coords=coords)


def stochastic_metrics(rollouts: list[Emulation]) -> dict[str, float]:
    """`tracking.stochastic_*`: the sampled rollouts' tracking, and how far their muscles differ."""
    act = np.stack([r.activation for r in rollouts])  # (K, T, M)
    common = min(r.tracked_frames for r in rollouts)
    spread = float(np.mean(np.std(act[:, :common], axis=0))) if len(rollouts) > 1 else 0.0
    return {
        "tracking.stochastic_rollouts": float(len(rollouts)),
        "tracking.stochastic_joint_error_deg_mean": float(
            np.mean([r.metrics["tracking.joint_error_deg_mean"] for r in rollouts])
        ),
        "tracking.stochastic_fraction_tracked_mean": float(
            np.mean([r.metrics["tracking.fraction_tracked"] for r in rollouts])
        ),
        "tracking.stochastic_activation_sd": spread,
    }
