"""`Reference`: the retargeted clip on the model, and its labelled dataset in the catalog."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from msconvert.dims import DIM_QUAT, DIM_TIME, DIM_XYZ, WXYZ, XYZ

FEET = ("left", "right")
# Stored arrays a dataset needs to be read back as a Reference.
_REQUIRED = ("reference_qpos", "reference_qvel", "reference_qacc", "reference_body_pos")


class ReferenceFormatError(ValueError):
    """A dataset that does not hold a retargeted reference; the message is one line."""


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

    @classmethod
    def from_trajectory(
        cls,
        clip_id: str,
        fps: float,
        qpos: np.ndarray,
        qvel: np.ndarray,
        qacc: np.ndarray | None = None,
        *,
        body_names: Sequence[str] = (),
        body_pos: np.ndarray | None = None,
        qpos_names: Sequence[str] = (),
        qvel_names: Sequence[str] = (),
        model_name: str = "",
        model_sha256: str = "",
    ) -> Reference:
        """A reference that no fit produced (a simulated or hand-made trajectory): it has no
        correspondences, so the fit's arrays are empty. qacc defaults to qvel's gradient."""
        qpos = np.asarray(qpos, np.float64)
        qvel = np.asarray(qvel, np.float64)
        n = qpos.shape[0]
        if qacc is None:
            qacc = np.gradient(qvel, 1.0 / fps, axis=0) if n > 1 else np.zeros_like(qvel)
        body_pos = np.zeros((n, 0, 3)) if body_pos is None else np.asarray(body_pos, np.float64)
        return cls(
            clip_id=clip_id,
            fps=float(fps),
            qpos=qpos,
            qvel=qvel,
            qacc=np.asarray(qacc, np.float64),
            qpos_names=tuple(qpos_names) or tuple(f"q{i}" for i in range(qpos.shape[-1])),
            qvel_names=tuple(qvel_names) or tuple(f"v{i}" for i in range(qvel.shape[-1])),
            body_names=tuple(body_names),
            body_pos=body_pos,
            body_quat=np.tile(np.array([1.0, 0, 0, 0]), (*body_pos.shape[:2], 1)),
            correspondence_names=(),
            target_pos=np.zeros((n, 0, 3)),
            position_error_m=np.zeros((n, 0)),
            orientation_error_rad=np.zeros((n, 0)),
            stance=np.zeros((n, 2), bool),
            ground_shift_m=np.zeros(n),
            filled_frames=0,
            metrics={},
            model_name=model_name,
            model_sha256=model_sha256,
        )

    def to_dataset(self) -> xr.Dataset:
        """Model joint trajectories, key bodies, and the fit's per-frame errors, on `time`."""
        coords = {
            DIM_TIME: (DIM_TIME, self.times, {"units": "s"}),
            "qpos": ("qpos", np.asarray(self.qpos_names)),
            "qvel": ("qvel", np.asarray(self.qvel_names)),
            "body": ("body", np.asarray(self.body_names, dtype=str)),
            "correspondence": ("correspondence", np.asarray(self.correspondence_names, dtype=str)),
            "foot": ("foot", np.asarray(FEET)),
            DIM_XYZ: (DIM_XYZ, np.asarray(XYZ)),
            DIM_QUAT: (DIM_QUAT, np.asarray(WXYZ)),
        }
        t, f32 = DIM_TIME, np.float32
        data = {
            "reference_qpos": (
                (t, "qpos"),
                self.qpos,
                {"units": "m or rad; root quaternion w,x,y,z"},
            ),
            "reference_qvel": (
                (t, "qvel"),
                self.qvel,
                {"units": "m/s or rad/s (MuJoCo tangent space)"},
            ),
            "reference_qacc": ((t, "qvel"), self.qacc, {"units": "m/s2 or rad/s2"}),
            "reference_body_pos": (
                (t, "body", DIM_XYZ),
                self.body_pos.astype(f32),
                {"units": "m", "description": "world positions of the key bodies"},
            ),
            "reference_body_quat": (
                (t, "body", DIM_QUAT),
                self.body_quat.astype(f32),
                {"units": "1", "description": "world orientations of the key bodies"},
            ),
            "retarget_target_pos": (
                (t, "correspondence", DIM_XYZ),
                self.target_pos.astype(f32),
                {"units": "m", "description": "scaled, grounded source points the IK fitted"},
            ),
            "retarget_position_error": (
                (t, "correspondence"),
                self.position_error_m.astype(f32),
                {"units": "m", "description": "distance from each model point to its target"},
            ),
            "retarget_orientation_error": (
                (t, "correspondence"),
                self.orientation_error_rad.astype(f32),
                {"units": "rad", "description": "angle between each model frame and its target"},
            ),
            "stance": ((t, "foot"), self.stance.astype(bool), {"description": "foot in stance"}),
            "ground_shift": (
                (t,),
                self.ground_shift_m.astype(f32),
                {"units": "m", "description": "vertical root shift that put the feet on the floor"},
            ),
        }
        attrs = {
            "model_name": self.model_name,
            "model_sha256": self.model_sha256,
            "control_fps": float(self.fps),
            "retarget_filled_frames": int(self.filled_frames),
            "retarget_notes": dict(self.notes),
        }
        return xr.Dataset(data_vars=data, coords=coords, attrs=attrs)

    @classmethod
    def from_dataset(cls, ds: xr.Dataset, clip_id: str | None = None) -> Reference:
        """The reference a clip's dataset holds (as written by `to_dataset`, catalog attributes
        included); its `retarget.*` metrics come from the clip's `metrics` attribute."""
        clip = clip_id or str(ds.attrs.get("clip_id", ""))
        missing = [v for v in _REQUIRED if v not in ds]
        if missing:
            raise ReferenceFormatError(
                f"clip {clip!r} has no retargeted reference ({', '.join(missing)} missing): "
                "convert it with --until retarget first"
            )
        times = np.asarray(ds[DIM_TIME].values, np.float64)
        fps = ds.attrs.get("control_fps")
        if not fps:
            if times.size < 2:
                raise ReferenceFormatError(f"clip {clip!r}: no control_fps and < 2 frames")
            fps = 1.0 / float(np.median(np.diff(times)))
        n = times.size

        def values(name: str, shape: tuple[int, ...], dtype: Any = np.float64) -> np.ndarray:
            if name in ds:
                return np.asarray(ds[name].values, dtype)
            return np.zeros(shape, dtype)  # absent in a --until retarget of an older layout

        names = lambda dim: tuple(str(x) for x in ds[dim].values) if dim in ds.coords else ()  # noqa: E731
        body_names, corr = names("body"), names("correspondence")
        metrics: Mapping[str, Any] = ds.attrs.get("metrics") or {}
        return cls(
            clip_id=clip,
            fps=float(fps),
            qpos=np.asarray(ds["reference_qpos"].values, np.float64),
            qvel=np.asarray(ds["reference_qvel"].values, np.float64),
            qacc=np.asarray(ds["reference_qacc"].values, np.float64),
            qpos_names=names("qpos"),
            qvel_names=names("qvel"),
            body_names=body_names,
            body_pos=np.asarray(ds["reference_body_pos"].values, np.float64),
            body_quat=values("reference_body_quat", (n, len(body_names), 4)),
            correspondence_names=corr,
            target_pos=values("retarget_target_pos", (n, len(corr), 3)),
            position_error_m=values("retarget_position_error", (n, len(corr))),
            orientation_error_rad=values("retarget_orientation_error", (n, len(corr))),
            stance=values("stance", (n, 2), bool),
            ground_shift_m=values("ground_shift", (n,)),
            filled_frames=int(ds.attrs.get("retarget_filled_frames", 0)),
            metrics={
                k: float("nan") if v is None else float(v)
                for k, v in metrics.items()
                if k.startswith("retarget.")
            },
            model_name=str(ds.attrs.get("model_name", "")),
            model_sha256=str(ds.attrs.get("model_sha256", "")),
            notes={str(k): str(v) for k, v in (ds.attrs.get("retarget_notes") or {}).items()},
        )
