"""`Reference`: the retargeted clip on the model (stage 2 output)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, eq=False)
class Reference:
    """Model joint trajectories at the control rate, with the fit's per-frame errors and metrics."""

    clip_id: str
    fps: float  # control rate
    qpos: np.ndarray  # (T, nq)
    qvel: np.ndarray  # (T, nv) Savitzky-Golay, MuJoCo tangent space (local angular velocities)
    qacc: np.ndarray  # (T, nv)
    qpos_names: tuple[str, ...]  # a label per qpos column, e.g. 'root:qw', 'knee_angle_r'
    qvel_names: tuple[str, ...]  # a label per qvel column, e.g. 'root:wx'
    body_names: tuple[str, ...]  # the key bodies (those with a correspondence)
    body_pos: np.ndarray  # (T, nbody, 3) world positions of the key bodies
    body_quat: np.ndarray  # (T, nbody, 4) their world orientations (w, x, y, z)
    correspondence_names: tuple[str, ...]
    target_pos: np.ndarray  # (T, C, 3) the scaled, ground-placed source points the IK fitted
    position_error_m: np.ndarray  # (T, C) distance from each model point to its target
    orientation_error_rad: np.ndarray  # (T, C) angle between each body and its target
    stance: np.ndarray  # (T, 2) bool, left and right foot in stance
    ground_shift_m: np.ndarray  # (T,) vertical root shift applied to put the feet on the floor
    filled_frames: int  # source frames repaired by interpolation (non-finite values)
    metrics: dict[str, float]
    model_name: str
    model_sha256: str
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return int(self.qpos.shape[0])

    @property
    def times(self) -> np.ndarray:
        return np.arange(self.n_frames, dtype=np.float64) / self.fps
