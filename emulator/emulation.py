"""`Emulation`: a rollout of one clip on the model, and its labelled dataset in the catalog.

Arrays after a fall are NaN: nothing is invented after the last tracked frame.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from msconvert.dims import DIM_TIME, DIM_XYZ, XYZ, select_solution

_STORED = (
    "emulated_qpos",
    "emulated_qvel",
    "excitation",
    "activation",
    "muscle_force",
    "muscle_length",
    "muscle_velocity",
    "joint_torque",
    "grf",
    "cop",
    "com",
    "com_vel",
    "tracking_joint_error_deg",
    "tracking_body_error_mm",
    "tracking_root_error_mm",
)


def floor_force_variables(grf: np.ndarray, cop: np.ndarray) -> dict[str, tuple]:
    """`grf` and `cop` (time, foot, xyz): the floor's force on each foot and its centre of
    pressure, as every method records them."""
    dims = (DIM_TIME, "foot", DIM_XYZ)
    return {
        "grf": (
            dims,
            grf.astype(np.float32),
            {"units": "N", "description": "floor reaction force on each foot, world frame"},
        ),
        "cop": (
            dims,
            cop.astype(np.float32),
            {"units": "m", "description": "centre of pressure per foot; NaN when unloaded"},
        ),
    }


def empty_recording(
    n: int, nq: int, nv: int, nu: int, na: int, n_joints: int
) -> dict[str, np.ndarray]:
    """NaN arrays for every recorded quantity of an `Emulation` of n frames: what a rollout
    fills frame by frame; what it never reaches (after a fall) stays NaN."""

    def nan(*shape: int) -> np.ndarray:
        return np.full((n, *shape), np.nan)

    return {
        "qpos": nan(nq),
        "qvel": nan(nv),
        "excitation": nan(nu),
        "activation": nan(na),
        "force": nan(nu),
        "length": nan(nu),
        "velocity": nan(nu),
        "joint_torque": nan(n_joints),
        "grf": nan(2, 3),
        "cop": nan(2, 3),
        "com": nan(3),
        "com_vel": nan(3),
        "joint_error_deg": nan(),
        "body_error_mm": nan(),
        "root_error_mm": nan(),
    }


def solution_prefix(solution: int) -> str:
    """Where muscle solution `solution`'s own metrics sit in a clip's metrics: solution 0's (the
    single answer) under the plain keys ('tracking.*'), solution j's under 'solution<j>.'."""
    return "" if solution == 0 else f"solution{solution}."


def tracking_metrics(
    recording: dict[str, np.ndarray],
    tracked: int,
    reference_qpos: np.ndarray | None = None,
    joints: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, float]:
    """`tracking.*` of a rollout: errors over its tracked frames, the fraction tracked, effort.

    Given the reference's qpos and `joints` (the errors' qpos columns, and which are hinges),
    also `tracking.joint_error_deg_worst`: the largest time-mean error of any one joint. The
    mean over a whole body's joints (fingers and spine included) can look small while one leg
    joint is tens of degrees off."""
    ok = slice(0, tracked)
    n = recording["qpos"].shape[0]
    metrics = {
        "tracking.joint_error_deg_mean": float(np.nanmean(recording["joint_error_deg"][ok])),
        "tracking.joint_error_deg_max": float(np.nanmax(recording["joint_error_deg"][ok])),
        "tracking.body_error_mm_mean": float(np.nanmean(recording["body_error_mm"][ok])),
        "tracking.root_error_mm_mean": float(np.nanmean(recording["root_error_mm"][ok])),
        "tracking.fraction_tracked": tracked / n,
        "tracking.effort": float(np.nanmean(recording["activation"][ok] ** 2)),
    }
    if reference_qpos is not None and joints is not None:
        per_joint = joint_errors_deg(recording["qpos"][ok], reference_qpos[ok], *joints)
        metrics["tracking.joint_error_deg_worst"] = (
            float(np.nanmax(np.nanmean(per_joint, axis=0))) if per_joint.size else 0.0
        )
    return metrics


def joint_errors_deg(
    qpos: np.ndarray, reference_qpos: np.ndarray, columns: np.ndarray, is_hinge: np.ndarray
) -> np.ndarray:
    """(T, J) |error| of each one-DoF joint in degrees (slides: in metres x 180/pi, as the
    joint error's mean counts them); hinge angles wrap."""
    cols = np.asarray(columns, int)
    d = np.asarray(reference_qpos, np.float64)[:, cols] - np.asarray(qpos, np.float64)[:, cols]
    d = np.where(np.asarray(is_hinge, bool), (d + np.pi) % (2 * np.pi) - np.pi, d)
    return np.rad2deg(np.abs(d))


class EmulationFormatError(ValueError):
    """A dataset that does not hold an emulation; the message is one line."""


@dataclass(frozen=True, eq=False)
class Emulation:
    """A rollout of one clip, at the control rate, on the reference's time axis."""

    clip_id: str
    fps: float
    times: np.ndarray  # (T,)
    qpos_names: tuple[str, ...]
    qvel_names: tuple[str, ...]
    muscle_names: tuple[str, ...]
    joint_names: tuple[str, ...]
    foot_names: tuple[str, ...]
    qpos: np.ndarray  # (T, nq)
    qvel: np.ndarray
    excitation: np.ndarray  # (T, M)
    activation: np.ndarray
    force: np.ndarray  # MuJoCo's sign (negative when pulling)
    length: np.ndarray
    velocity: np.ndarray
    joint_torque: np.ndarray  # (T, J)
    grf: np.ndarray  # (T, 2, 3)
    cop: np.ndarray
    com: np.ndarray  # (T, 3)
    com_vel: np.ndarray
    joint_error_deg: np.ndarray  # (T,)
    body_error_mm: np.ndarray
    root_error_mm: np.ndarray
    tracked_frames: int  # frames recorded before the end or the fall
    fell: bool
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dataset(self) -> xr.Dataset:
        """Emulated kinematics, every muscle quantity, contacts and tracking errors on `time`."""
        t, m = DIM_TIME, "muscle"
        coords = {
            DIM_TIME: (DIM_TIME, np.asarray(self.times, np.float64), {"units": "s"}),
            "qpos": ("qpos", np.asarray(self.qpos_names)),
            "qvel": ("qvel", np.asarray(self.qvel_names)),
            m: (m, np.asarray(self.muscle_names)),
            "model_joint": ("model_joint", np.asarray(self.joint_names)),
            "foot": ("foot", np.asarray(self.foot_names)),
            DIM_XYZ: (DIM_XYZ, np.asarray(XYZ)),
        }
        f32 = np.float32
        tension = {
            "units": "N",
            "description": "muscle tension, >= 0 (MuJoCo's actuator_force negated)",
        }
        data = {
            "emulated_qpos": (
                (t, "qpos"),
                self.qpos,
                {"units": "m or rad; root quaternion w,x,y,z"},
            ),
            "emulated_qvel": (
                (t, "qvel"),
                self.qvel,
                {"units": "m/s or rad/s (MuJoCo tangent space)"},
            ),
            "excitation": ((t, m), self.excitation.astype(f32), {"units": "1", "range": "0..1"}),
            "activation": ((t, m), self.activation.astype(f32), {"units": "1", "range": "0..1"}),
            "muscle_force": ((t, m), (-self.force).astype(f32), tension),
            "muscle_length": (
                (t, m),
                self.length.astype(f32),
                {"units": "m", "description": "musculotendon length"},
            ),
            "muscle_velocity": ((t, m), self.velocity.astype(f32), {"units": "m/s"}),
            "joint_torque": (
                (t, "model_joint"),
                self.joint_torque.astype(f32),
                {
                    "units": "N m or N",
                    "description": "generalized force of all muscles at each joint",
                },
            ),
            **floor_force_variables(self.grf, self.cop),
            "com": (
                (t, DIM_XYZ),
                self.com.astype(f32),
                {"units": "m", "description": "centre of mass"},
            ),
            "com_vel": ((t, DIM_XYZ), self.com_vel.astype(f32), {"units": "m/s"}),
            "tracking_joint_error_deg": (
                (t,),
                self.joint_error_deg.astype(f32),
                {"units": "deg", "description": "mean |joint-angle error| over non-root DoFs"},
            ),
            "tracking_body_error_mm": (
                (t,),
                self.body_error_mm.astype(f32),
                {"units": "mm", "description": "mean key-body position error"},
            ),
            "tracking_root_error_mm": (
                (t,),
                self.root_error_mm.astype(f32),
                {"units": "mm", "description": "root position error"},
            ),
        }
        attrs = {"tracked_frames": int(self.tracked_frames), "fell": bool(self.fell)}
        return xr.Dataset(data_vars=data, coords=coords, attrs=attrs)

    @classmethod
    def from_dataset(
        cls, ds: xr.Dataset, clip_id: str | None = None, solution: int | None = None
    ) -> Emulation:
        """The emulation a clip's dataset holds (as `to_dataset` wrote it, with the catalog's
        attributes); its `tracking.*` metrics come from the clip's `metrics` attribute. Of a
        clip with distinct muscle solutions (`solution` dim), solution `solution` (None: 0)."""
        clip = clip_id or str(ds.attrs.get("clip_id", ""))
        index = 0 if solution is None else solution
        ds = select_solution(ds, index, clip)
        prefix = solution_prefix(index)
        missing = [v for v in _STORED if v not in ds]
        missing += [a for a in ("tracked_frames", "fell") if a not in ds.attrs]
        if missing:
            raise EmulationFormatError(
                f"clip {clip!r} holds no emulation ({', '.join(missing)} missing)"
            )
        times = np.asarray(ds[DIM_TIME].values, np.float64)
        fps = ds.attrs.get("control_fps") or (1.0 / float(np.median(np.diff(times))))
        names = lambda dim: tuple(str(x) for x in ds[dim].values)  # noqa: E731
        value = lambda name: np.asarray(ds[name].values, np.float64)  # noqa: E731
        metrics: Mapping[str, Any] = ds.attrs.get("metrics") or {}
        return cls(
            clip_id=clip,
            fps=float(fps),
            times=times,
            qpos_names=names("qpos"),
            qvel_names=names("qvel"),
            muscle_names=names("muscle"),
            joint_names=names("model_joint"),
            foot_names=names("foot"),
            qpos=value("emulated_qpos"),
            qvel=value("emulated_qvel"),
            excitation=value("excitation"),
            activation=value("activation"),
            force=-value("muscle_force"),
            length=value("muscle_length"),
            velocity=value("muscle_velocity"),
            joint_torque=value("joint_torque"),
            grf=value("grf"),
            cop=value("cop"),
            com=value("com"),
            com_vel=value("com_vel"),
            joint_error_deg=value("tracking_joint_error_deg"),
            body_error_mm=value("tracking_body_error_mm"),
            root_error_mm=value("tracking_root_error_mm"),
            # each solution's own (solution_* variables), else the clip's one emulation's
            tracked_frames=int(ds.get("solution_tracked_frames", ds.attrs["tracked_frames"])),
            fell=bool(ds.get("solution_fell", ds.attrs["fell"])),
            metrics={
                k.removeprefix(prefix): float("nan") if v is None else float(v)
                for k, v in metrics.items()
                if k.startswith(prefix + "tracking.")
                and not k.startswith(prefix + "tracking.stochastic_")
            },
        )


def stochastic_dataset(rollouts: Sequence[Emulation]) -> xr.Dataset:
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

    def stack(name: str) -> np.ndarray:
        return np.stack([getattr(r, name) for r in rollouts])

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


def stochastic_metrics(rollouts: Sequence[Emulation]) -> dict[str, float]:
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
