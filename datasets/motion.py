"""`Motion`: the source-agnostic kinematics that every corpus reader produces (stage 1 output)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

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
