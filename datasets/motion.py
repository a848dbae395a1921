"""`Motion`: the source-agnostic kinematics that every corpus reader produces (stage 1 output),
and its labelled dataset in the catalog (the file's own rate, on `source_time`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from msconvert.dims import DIM_JOINT, DIM_QUAT, DIM_SOURCE_TIME, DIM_XYZ, WXYZ, XYZ

if TYPE_CHECKING:
    from msconvert.datasets.kinematics import JointTrajectory

# The 22 body joints shared by SMPL, SMPL-H and SMPL-X (indices 0..21), in pose-vector order.
BODY_JOINT_NAMES: tuple[str, ...] = (
    "pelvis",
    "left_hip",
    "right_hip",
    "spine1",
    "left_knee",
    "right_knee",
    "spine2",
    "left_ankle",
    "right_ankle",
    "spine3",
    "left_foot",
    "right_foot",
    "neck",
    "left_collar",
    "right_collar",
    "head",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
)
N_BODY_JOINTS = len(BODY_JOINT_NAMES)
N_HAND_JOINTS = 30  # 15 per hand, left first, as in SMPL-H 'poses' and SMPL-X 'pose_hand'
DIM_HAND_JOINT = "hand_joint"
# SMPL-H / SMPL-X finger order: five fingers of three joints, left hand then right.
HAND_JOINT_NAMES: tuple[str, ...] = tuple(
    f"{side}_{finger}{k}"
    for side in ("left", "right")
    for finger in ("index", "middle", "pinky", "ring", "thumb")
    for k in (1, 2, 3)
)
GENDERS = ("neutral", "male", "female")
BODY_MODELS = ("smplh", "smplx")


class MotionError(ValueError):
    """A source file cannot become a valid `Motion`; the message is one line naming the problem."""


@dataclass(frozen=True)
class Provenance:
    """Where a clip came from, so every catalog entry can be traced to the exact bytes read."""

    path: str  # the file as read
    relpath: str  # path relative to the corpus root, '/'-separated
    size: int  # bytes
    sha256: str


@dataclass(frozen=True, eq=False)
class Motion:
    """One clip of body motion: root translation and per-joint rotations over time.

    Rotations are axis-angle, each relative to its parent joint (SMPL convention); joint 0 is the
    root orientation in the world. The world is AMASS's: z up, metres.
    """

    clip_id: str
    fps: float
    root_translation: np.ndarray  # (T, 3) float64
    body_pose: np.ndarray  # (T, 22, 3) float64 axis-angle
    hand_pose: np.ndarray | None  # (T, 30, 3) float64 axis-angle, or None when the source has none
    betas: np.ndarray  # (B,) float64 body-shape coefficients
    gender: str  # one of GENDERS
    body_model: str  # one of BODY_MODELS
    provenance: Provenance
    filled_frames: int = 0  # frames repaired by interpolation (none at ingest)
    extra: dict[str, str] = field(default_factory=dict)  # small free-form notes kept as attributes
    # What was read: '' for an AMASS body (then `body_model` says it), else e.g. 'bvh:cmu'.
    source_format: str = ""
    # (22, 3) rest joints of the skeleton the source brought (SMPL's native frame and joint
    # order, metres; BVH files), or None when the body is an SMPL one (mean or model file).
    source_skeleton: np.ndarray | None = None

    @property
    def format(self) -> str:
        """The source format and skeleton: 'smplh', 'smplx' or 'bvh:<joint map>'."""
        return self.source_format or self.body_model

    @property
    def n_frames(self) -> int:
        return int(self.root_translation.shape[0])

    @property
    def duration_s(self) -> float:
        return (self.n_frames - 1) / self.fps

    @property
    def times(self) -> np.ndarray:
        return np.arange(self.n_frames, dtype=np.float64) / self.fps

    @property
    def has_hand_data(self) -> bool:
        """True when the source carries finger motion (not only a constant hand pose)."""
        if self.hand_pose is None:
            return False
        return bool(np.ptp(self.hand_pose, axis=0).max() > 1e-6)

    def replace(self, **changes: object) -> Motion:
        return replace(self, **changes)

    def to_dataset(self, joints: JointTrajectory | None = None) -> xr.Dataset:
        """The source kinematics: the pose the file gave and, when computed, world joints and
        their orientations; provenance and body model in the attributes."""
        coords: dict[str, Any] = {
            DIM_SOURCE_TIME: (DIM_SOURCE_TIME, self.times, {"units": "s"}),
            DIM_JOINT: (DIM_JOINT, np.asarray(BODY_JOINT_NAMES)),
            DIM_XYZ: (DIM_XYZ, np.asarray(XYZ)),
        }
        st = DIM_SOURCE_TIME
        data: dict[str, Any] = {
            "source_root_translation": (
                (st, DIM_XYZ),
                self.root_translation.astype(np.float64),
                {"units": "m", "description": "the file's root translation (AMASS 'trans')"},
            ),
            "source_body_pose": (
                (st, DIM_JOINT, DIM_XYZ),
                self.body_pose.astype(np.float32),
                {
                    "units": "rad",
                    "description": "axis-angle rotation of each joint relative to its parent",
                },
            ),
        }
        if joints is not None:
            if tuple(joints.joint_names) != BODY_JOINT_NAMES:
                raise ValueError("joint trajectory is not in SMPL body-joint order")
            coords[DIM_QUAT] = (DIM_QUAT, np.asarray(WXYZ))
            data["source_joints"] = (
                (st, DIM_JOINT, DIM_XYZ),
                joints.positions.astype(np.float32),
                {"units": "m", "description": "world joint positions (z up)"},
            )
            data["source_joint_orientation"] = (
                (st, DIM_JOINT, DIM_QUAT),
                joints.quaternions_wxyz().astype(np.float32),
                {"units": "1", "description": "world joint orientations, unit quaternions w >= 0"},
            )
        if self.hand_pose is not None:
            coords[DIM_HAND_JOINT] = (DIM_HAND_JOINT, np.asarray(HAND_JOINT_NAMES))
            data["source_hand_pose"] = (
                (st, DIM_HAND_JOINT, DIM_XYZ),
                self.hand_pose.astype(np.float32),
                {
                    "units": "rad",
                    "description": "axis-angle finger rotations relative to their parents",
                },
            )
        prov = self.provenance
        attrs = {
            "source_path": prov.path,
            "source_relpath": prov.relpath,
            "source_size": int(prov.size),
            "source_sha256": prov.sha256,
            "source_fps": float(self.fps),
            "source_filled_frames": int(self.filled_frames),
            "source_notes": dict(self.extra),
            "body_model": self.body_model,
            "source_format": self.format,
            "gender": self.gender,
            "betas": [float(b) for b in self.betas],
            "has_hand_data": self.has_hand_data,
        }
        if self.source_skeleton is not None:
            attrs["source_skeleton"] = np.asarray(self.source_skeleton, float).round(6).tolist()
        return xr.Dataset(data_vars=data, coords=coords, attrs=attrs)

    @classmethod
    def from_dataset(cls, ds: xr.Dataset, clip_id: str | None = None) -> Motion:
        """The motion a clip's dataset holds (as `to_dataset` wrote it). The pose was stored as
        float32, so it comes back to within float32 rounding."""
        clip = clip_id or str(ds.attrs.get("clip_id", ""))
        missing = [v for v in ("source_root_translation", "source_body_pose") if v not in ds]
        missing += [a for a in ("source_fps", "gender", "body_model") if a not in ds.attrs]
        if missing:
            raise MotionError(
                f"clip {clip!r} holds no source motion ({', '.join(missing)} missing)"
            )
        a: Mapping[str, Any] = ds.attrs
        hand = ds["source_hand_pose"].values if "source_hand_pose" in ds else None
        return cls(
            clip_id=clip,
            fps=float(a["source_fps"]),
            root_translation=np.asarray(ds["source_root_translation"].values, np.float64),
            body_pose=np.asarray(ds["source_body_pose"].values, np.float64),
            hand_pose=None if hand is None else np.asarray(hand, np.float64),
            betas=np.asarray(a.get("betas", ()), np.float64),
            gender=str(a["gender"]),
            body_model=str(a["body_model"]),
            provenance=Provenance(
                path=str(a.get("source_path", "")),
                relpath=str(a.get("source_relpath", "")),
                size=int(a.get("source_size", 0)),
                sha256=str(a.get("source_sha256", "")),
            ),
            filled_frames=int(a.get("source_filled_frames", 0)),
            extra={str(k): str(v) for k, v in (a.get("source_notes") or {}).items()},
            source_format=""
            if a.get("source_format", a["body_model"]) == a["body_model"]
            else str(a["source_format"]),
            source_skeleton=None
            if a.get("source_skeleton") is None
            else np.asarray(a["source_skeleton"], np.float64),
        )
