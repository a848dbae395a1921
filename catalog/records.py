"""Stage values → labelled datasets for one clip group (what each stage adds to the catalog)."""

from __future__ import annotations

import numpy as np
import xarray as xr

from msconvert.catalog.schema import DIM_JOINT, DIM_QUAT, DIM_TIME, DIM_XYZ
from msconvert.datasets.kinematics import JointTrajectory
from msconvert.datasets.motion import Motion

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
        DIM_TIME: (DIM_TIME, motion.times, {"units": "s"}),
        DIM_JOINT: (DIM_JOINT, np.asarray(joints.joint_names)),
        DIM_XYZ: (DIM_XYZ, np.asarray(XYZ)),
        DIM_QUAT: (DIM_QUAT, np.asarray(WXYZ)),
    }
    data = {
        "source_joints": (
            (DIM_TIME, DIM_JOINT, DIM_XYZ),
            joints.positions.astype(np.float32),
            {"units": "m", "description": "world joint positions (z up)"},
        ),
        "source_joint_orientation": (
            (DIM_TIME, DIM_JOINT, DIM_QUAT),
            joints.quaternions_wxyz().astype(np.float32),
            {"units": "1", "description": "world joint orientations, unit quaternions w >= 0"},
        ),
        "source_root_translation": (
            (DIM_TIME, DIM_XYZ),
            motion.root_translation.astype(np.float64),
            {"units": "m", "description": "the file's root translation (AMASS 'trans')"},
        ),
        "source_body_pose": (
            (DIM_TIME, DIM_JOINT, DIM_XYZ),
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
            (DIM_TIME, DIM_HAND_JOINT, DIM_XYZ),
            motion.hand_pose.astype(np.float32),
            {
                "units": "rad",
                "description": "axis-angle finger rotations relative to their parents",
            },
        )
    return xr.Dataset(data_vars=data, coords=coords)
