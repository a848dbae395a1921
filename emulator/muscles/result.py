"""`StaticOptResult`: static optimization's muscle solution of a clip, and its labelled dataset."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from msconvert.dims import DIM_TIME, DIM_XYZ, XYZ
from msconvert.emulator.emulation import floor_force_variables

FEASIBILITY_TOL = 1e-3  # N or N·m on a non-root DoF: above it a frame counts as infeasible
RESIDUAL_COMPONENTS = ("fx", "fy", "fz", "mx", "my", "mz")
METHOD_LABEL = "inverse dynamics + static optimization (no policy; per-frame solution)"
_STORED = (
    "activation",
    "excitation",
    "muscle_force",
    "grf",
    "cop",
    "residual",
    "static_opt_feasible",
    "static_opt_excitation_clipped",
    "static_opt_muscle_torque",
    "static_opt_joint_residual",
    "grf_total",
)


class StaticOptFormatError(ValueError):
    """A dataset that does not hold a static-optimization solution; the message is one line."""


@dataclass(frozen=True, eq=False)
class StaticOptResult:
    """Per-frame activations, excitations, forces, root residuals and ground forces of a clip."""

    fps: float
    muscle_names: tuple[str, ...]
    foot_names: tuple[str, ...]  # e.g. ('left', 'right'); empty when the feet are unknown
    activation: np.ndarray  # (T, M) in [0, 1]
    excitation: np.ndarray  # (T, M) in [0, 1], held over the control interval after each frame
    excitation_clipped: np.ndarray  # (T, M) bool: the next activation was out of reach
    force: np.ndarray  # (T, M) actuator force, N (MuJoCo's sign: muscles pull, so it is <= 0)
    muscle_torque: np.ndarray  # (T, nv) generalized force of all muscles
    residual_force: np.ndarray  # (T, 3) root residual force, world frame, N
    residual_moment: np.ndarray  # (T, 3) root residual moment about the root origin, world, N·m
    joint_residual: np.ndarray  # (T, nv) unmet generalized force on non-root DoFs (root: 0)
    feasible: np.ndarray  # (T,) bool: every non-root DoF met within FEASIBILITY_TOL
    grf: np.ndarray  # (T, F, 3) floor force on each foot, world frame, N
    cop: np.ndarray  # (T, F, 3) centre of pressure of each foot on the floor (NaN when unloaded)
    grf_total: np.ndarray  # (T, 3) floor force on the whole body, N
    body_weight: float  # N
    cost: str
    contacts: str
    metrics: dict[str, float]
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return int(self.activation.shape[0])

    @property
    def times(self) -> np.ndarray:
        """Time of each frame, s."""
        return np.arange(self.n_frames, dtype=np.float64) / self.fps

    def to_dataset(self) -> xr.Dataset:
        """The muscle solution per reference frame, on `time` (the `static-opt` method)."""
        t, m = DIM_TIME, "muscle"
        feet = self.foot_names or tuple(f"foot{i}" for i in range(self.grf.shape[1]))
        coords = {
            DIM_TIME: (DIM_TIME, self.times, {"units": "s"}),
            m: (m, np.asarray(self.muscle_names)),
            "foot": ("foot", np.asarray(feet)),
            DIM_XYZ: (DIM_XYZ, np.asarray(XYZ)),
            "residual_component": ("residual_component", np.asarray(RESIDUAL_COMPONENTS)),
        }
        f32 = np.float32
        residual = np.concatenate([self.residual_force, self.residual_moment], axis=1)
        data = {
            "activation": ((t, m), self.activation.astype(f32), {"units": "1", "range": "0..1"}),
            "excitation": (
                (t, m),
                self.excitation.astype(f32),
                {
                    "units": "1",
                    "range": "0..1",
                    "description": "neural input held after each frame",
                },
            ),
            "muscle_force": (
                (t, m),
                (-self.force).astype(f32),
                {
                    "units": "N",
                    "description": "muscle tension, >= 0 (MuJoCo's actuator_force negated)",
                },
            ),
            **floor_force_variables(self.grf, self.cop),
            "grf_total": (
                (t, DIM_XYZ),
                self.grf_total.astype(f32),
                {
                    "units": "N",
                    "description": "floor reaction force on the whole body, world frame",
                },
            ),
            "residual": (
                (t, "residual_component"),
                residual.astype(f32),
                {
                    "units": "N and N m",
                    "description": "root residual force and moment, world frame",
                },
            ),
            "static_opt_feasible": (
                (t,),
                self.feasible.astype(bool),
                {"description": "every non-root DoF's torque met by the muscles"},
            ),
            "static_opt_excitation_clipped": (
                (t, m),
                self.excitation_clipped.astype(bool),
                {"description": "the next frame's activation was out of the excitation's reach"},
            ),
            "static_opt_muscle_torque": (
                (t, "qvel"),
                self.muscle_torque.astype(f32),
                {"units": "N m or N", "description": "generalized force of all muscles per DoF"},
            ),
            "static_opt_joint_residual": (
                (t, "qvel"),
                self.joint_residual.astype(f32),
                {"units": "N m or N", "description": "generalized force the muscles left unmet"},
            ),
        }
        attrs = {
            "method_label": METHOD_LABEL,
            "static_opt_cost": self.cost,
            "static_opt_contacts": self.contacts,
            "static_opt_notes": dict(self.notes),
            "static_opt_foot_names": list(self.foot_names),
            "body_weight_n": float(self.body_weight),
        }
        return xr.Dataset(data_vars=data, coords=coords, attrs=attrs)

    @classmethod
    def from_dataset(cls, ds: xr.Dataset) -> StaticOptResult:
        """The solution a clip's dataset holds (as `to_dataset` wrote it, with the catalog's
        attributes); its `static_opt.*` metrics come from the clip's `metrics` attribute."""
        clip = str(ds.attrs.get("clip_id", ""))
        missing = [v for v in _STORED if v not in ds]
        if missing or "static_opt_cost" not in ds.attrs:
            version = ds.attrs.get("software_version", "unknown")
            raise StaticOptFormatError(
                f"clip {clip!r} holds no complete static-optimization solution "
                f"({', '.join(missing) or 'static_opt_cost'} missing; written by msconvert "
                f"{version}): convert it again with --method static-opt"
            )
        times = np.asarray(ds[DIM_TIME].values, np.float64)
        fps = float(ds.attrs.get("control_fps") or 1.0 / float(np.median(np.diff(times))))
        residual = np.asarray(ds["residual"].values, np.float64)
        metrics: Mapping[str, Any] = ds.attrs.get("metrics") or {}
        value = lambda name, dtype=np.float64: np.asarray(ds[name].values, dtype)  # noqa: E731
        return cls(
            fps=fps,
            muscle_names=tuple(str(x) for x in ds["muscle"].values),
            foot_names=tuple(str(x) for x in ds.attrs.get("static_opt_foot_names", ())),
            activation=value("activation"),
            excitation=value("excitation"),
            excitation_clipped=value("static_opt_excitation_clipped", bool),
            force=-value("muscle_force"),
            muscle_torque=value("static_opt_muscle_torque"),
            residual_force=residual[:, :3],
            residual_moment=residual[:, 3:],
            joint_residual=value("static_opt_joint_residual"),
            feasible=value("static_opt_feasible", bool),
            grf=value("grf"),
            cop=value("cop"),
            grf_total=value("grf_total"),
            body_weight=float(ds.attrs.get("body_weight_n", np.nan)),
            cost=str(ds.attrs["static_opt_cost"]),
            contacts=str(ds.attrs.get("static_opt_contacts", "")),
            metrics={
                k: float("nan") if v is None else float(v)
                for k, v in metrics.items()
                if k.startswith(("static_opt.", "grf."))
            },
            notes={str(k): str(v) for k, v in (ds.attrs.get("static_opt_notes") or {}).items()},
        )
