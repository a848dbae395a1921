"""msconvert.datasets: corpus readers giving `Motion` (AMASS SMPL-H/SMPL-X, BVH), SMPL kinematics.

NumPy, SciPy and xarray only; of msconvert's own code it imports just the clip-id rules and
dimension names of the root package.
"""

from msconvert.datasets.amass import ClipSource, clip_id_for, discover, read_amass
from msconvert.datasets.bvh import JointMapError, load_joint_map, read_bvh, scan_bvh_corpus
from msconvert.datasets.kinematics import (
    BodyModel,
    BodyModelError,
    JointTrajectory,
    Skeleton,
    find_body_model_file,
    forward_kinematics,
    load_body_model,
    mean_skeleton,
    source_skeleton,
)
from msconvert.datasets.motion import (
    BODY_JOINT_NAMES,
    BODY_MODELS,
    GENDERS,
    N_BODY_JOINTS,
    N_HAND_JOINTS,
    Motion,
    MotionError,
    Provenance,
)
from msconvert.datasets.readers import read_clip
from msconvert.datasets.resample import resample

__all__ = [
    "BODY_JOINT_NAMES",
    "BODY_MODELS",
    "GENDERS",
    "N_BODY_JOINTS",
    "N_HAND_JOINTS",
    "BodyModel",
    "BodyModelError",
    "ClipSource",
    "JointMapError",
    "JointTrajectory",
    "Motion",
    "MotionError",
    "Provenance",
    "Skeleton",
    "clip_id_for",
    "discover",
    "find_body_model_file",
    "forward_kinematics",
    "load_body_model",
    "load_joint_map",
    "mean_skeleton",
    "read_amass",
    "read_bvh",
    "read_clip",
    "resample",
    "scan_bvh_corpus",
    "source_skeleton",
]
