"""`retarget`: Motion + model → Reference, composing the stage's pieces in order."""

from __future__ import annotations

import hashlib
import weakref
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

from msconvert.datasets.kinematics import Skeleton, forward_kinematics, mean_skeleton
from msconvert.datasets.motion import Motion
from msconvert.emulator.model import (
    floor_height,
    model_name,
    model_sha256,
    muscle_actuators,
    qpos_names,
    qvel_names,
)
from msconvert.emulator.retarget.config import RetargetConfig
from msconvert.emulator.retarget.correspondence import (
    Binding,
    bind,
    default_correspondence_path,
    load_correspondence,
)
from msconvert.emulator.retarget.derivatives import savgol_derivatives
from msconvert.emulator.retarget.exceptions import CorrespondenceError, RetargetError
from msconvert.emulator.retarget.ground import (
    FloorContact,
    detect_stance,
    floor_estimate,
    ground_shift,
    lowest_points,
    sole_depths,
    vertical_direction,
)
from msconvert.emulator.retarget.ik import solve_ik
from msconvert.emulator.retarget.metrics import (
    TENDON_JUMP_TOLERANCE_M,
    clip_metrics,
    explained_change,
    limit_violations,
    moment_times,
    tendon_jumps,
    unexplained_change,
)
from msconvert.emulator.retarget.reference import Reference
from msconvert.emulator.retarget.repair import repair_motion
from msconvert.emulator.retarget.rotations import quat_angle, quat_conj, quat_mul
from msconvert.emulator.retarget.scaling import scale_points, source_points, target_orientations

# Bindings per model, per (correspondence file, skeleton): calibration is done once per worker.
_BINDINGS: weakref.WeakKeyDictionary[mujoco.MjModel, dict[tuple, Binding]] = (
    weakref.WeakKeyDictionary()
)
_SOLE_DEPTHS: weakref.WeakKeyDictionary[Binding, np.ndarray] = weakref.WeakKeyDictionary()


def binding_for(model: mujoco.MjModel, config: RetargetConfig, skeleton: Skeleton) -> Binding:
    """The correspondence set of `config` (or the model's own) bound to model and skeleton."""
    path = config.correspondence or str(default_correspondence_path(model))
    try:  # keyed by content, so an edited file is bound afresh
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as exc:
        raise CorrespondenceError(f"{path}: cannot read correspondence file ({exc})") from exc
    key = (digest, skeleton.rest_joints.tobytes())
    cache = _BINDINGS.setdefault(model, {})
    if key not in cache:
        cache[key] = bind(load_correspondence(path), model, skeleton)
    return cache[key]


def _sole_depths(model: mujoco.MjModel, binding: Binding) -> np.ndarray:
    """How far below each foot point the model's flat sole lies (once per binding)."""
    if binding not in _SOLE_DEPTHS:
        _SOLE_DEPTHS[binding] = sole_depths(
            model,
            binding.calibration_qpos,
            binding.body,
            binding.offset,
            binding.foot_points,
            binding.foot_geoms,
        )
    return _SOLE_DEPTHS[binding]


def _to_control_rate(motion: Motion, fps: float | None) -> tuple[Motion, str]:
    """The motion resampled to fps (slerp), and a note when that could not be done."""
    if fps is None or abs(fps - motion.fps) < 1e-9:
        return motion, ""
    try:
        from msconvert.datasets.resample import resample
    except ImportError:  # datasets.resample not in this checkout: keep the source rate, say so
        return motion, f"not resampled to {fps:g} fps (datasets.resample unavailable)"
    return resample(motion, fps), ""


def _replay(model: mujoco.MjModel, qpos: np.ndarray, binding: Binding, geoms: np.ndarray) -> dict:
    """Per-frame kinematics of the solution: body poses, foot geom poses, muscle lengths, and
    the muscle-length change each step's moment arms explain (R̄·Δq, frame i to i + 1)."""
    t = qpos.shape[0]
    data = mujoco.MjData(model)
    muscles = muscle_actuators(model)
    out = {
        "xpos": np.empty((t, binding.body.size, 3)),
        "xquat": np.empty((t, binding.body.size, 4)),
        "xmat": np.empty((t, binding.body.size, 3, 3)),
        "geom_pos": np.empty((t, geoms.size, 3)),
        "geom_mat": np.empty((t, geoms.size, 3, 3)),
        "muscle_length": np.empty((t, muscles.size)),
        "muscle_explained": np.zeros((max(t - 1, 0), muscles.size)),
    }
    dq = np.zeros((max(t - 1, 0), model.nv))
    for i in range(t - 1):
        mujoco.mj_differentiatePos(model, dq[i], 1.0, qpos[i], qpos[i + 1])
    for i in range(t):
        data.qpos[:] = qpos[i]
        mujoco.mj_kinematics(model, data)
        mujoco.mj_comPos(model, data)
        mujoco.mj_tendon(model, data)
        mujoco.mj_transmission(model, data)
        out["xpos"][i] = data.xpos[binding.body]
        out["xquat"][i] = data.xquat[binding.body]
        out["xmat"][i] = data.xmat[binding.body].reshape(-1, 3, 3)
        out["geom_pos"][i] = data.geom_xpos[geoms]
        out["geom_mat"][i] = data.geom_xmat[geoms].reshape(-1, 3, 3)
        out["muscle_length"][i] = data.actuator_length[muscles]
        # Trapezoid: half of each step's change from the moment arms at either end.
        explained = out["muscle_explained"]
        if i > 0:
            explained[i - 1] += 0.5 * moment_times(data, muscles, dq[i - 1])
        if i < t - 1:
            explained[i] += 0.5 * moment_times(data, muscles, dq[i])
    # Where the trapezoid is not close enough (a joint turning fast through a curved stretch of
    # a muscle's path), integrate the moment arms along the step instead.
    rough = unexplained_change(out["muscle_length"], out["muscle_explained"]).max(1, initial=0.0)
    for i in np.flatnonzero(rough > 0.5 * TENDON_JUMP_TOLERANCE_M):
        out["muscle_explained"][i] = explained_change(model, qpos[i], qpos[i + 1], muscles)
    return out


@dataclass(frozen=True, eq=False)
class Targets:
    """What the IK fits: the clip at the control rate as model-proportioned points and frames."""

    motion: Motion  # repaired and resampled
    binding: Binding
    positions: np.ndarray  # (T, C, 3) scaled source points
    quats: np.ndarray  # (T, C, 4) target body orientations
    stance: np.ndarray  # (T, 2) left, right
    floor: np.ndarray  # (T,) floor height under the targets (where the model's soles belong)
    notes: dict[str, str]

    def floor_contact(self, config: RetargetConfig) -> FloorContact | None:
        """The IK's floor task, when the clip is grounded."""
        if not config.ground:
            return None
        return FloorContact(self.binding.foot_geoms, self.floor, self.stance, config.floor_weight)


def prepare_targets(
    motion: Motion, model: mujoco.MjModel, config: RetargetConfig, skeleton: Skeleton
) -> Targets:
    """Repair, resample, run SMPL kinematics, detect stance and scale to the model."""
    binding = binding_for(model, config, skeleton)
    motion = repair_motion(motion, config.max_gap_s, config.max_bad_fraction)
    motion, note = _to_control_rate(motion, config.fps)
    notes = {"resampling": note} if note else {}
    if motion.has_hand_data:
        notes["hands"] = "source hand pose not retargeted; fingers held at the neutral pose"
    traj = forward_kinematics(motion, skeleton)
    points = source_points(traj, binding)
    stance = np.stack(
        [
            detect_stance(
                binding.uniform_scale * points[:, f],
                motion.fps,
                config.stance_speed,
                config.stance_height,
            )
            for f in binding.foot_points
        ],
        axis=1,
    )
    positions = scale_points(points, binding, config.scaling, stance, motion.fps)
    quats = target_orientations(traj, binding)
    if not (np.isfinite(positions).all() and np.isfinite(quats).all()):
        raise RetargetError(f"{motion.clip_id}: source kinematics are not finite after repair")
    floor = floor_estimate(
        positions,
        stance,
        binding.foot_points,
        _sole_depths(model, binding),
        motion.fps,
        config.ground_smooth_s,
    )
    return Targets(motion, binding, positions, quats, stance, floor, notes)


def build_reference(
    model: mujoco.MjModel,
    targets: Targets,
    qpos: np.ndarray,
    ik_fps: float,
    config: RetargetConfig,
) -> Reference:
    """Ground the IK solution, differentiate it and measure it against its targets."""
    binding, stance, fps = targets.binding, targets.stance, targets.motion.fps
    geoms = np.concatenate(binding.foot_geoms)
    rep = _replay(model, qpos, binding, geoms)

    # Ground: each foot's lowest point from its own geoms, then one smooth vertical shift.
    low = lowest_points(model, geoms, rep["geom_pos"], rep["geom_mat"]) - floor_height(model)
    bounds = np.cumsum([0] + [g.size for g in binding.foot_geoms])
    heights = np.stack(
        [low[:, a:b].min(1) for a, b in zip(bounds[:-1], bounds[1:], strict=True)], 1
    )
    contact = stance.any(1)
    if config.ground:
        shift = ground_shift(
            heights.min(1), contact, fps, config.penetration_tolerance_m, config.ground_smooth_s
        )
    else:
        shift = np.zeros(len(heights))
    qpos = qpos.copy()
    up = vertical_direction(model, binding.space.neutral)
    for i in range(len(qpos)):
        mujoco.mj_integratePos(model, qpos[i], up, shift[i])
    heights = heights + shift[:, None]
    lift = np.array([0.0, 0.0, 1.0]) * shift[:, None, None]

    # Errors are the same before and after the shift: targets move with the model.
    points_model = rep["xpos"] + np.einsum("tcij,cj->tci", rep["xmat"], binding.offset)
    position_error = np.linalg.norm(points_model - targets.positions, axis=-1)
    orientation_error = quat_angle(quat_mul(rep["xquat"], quat_conj(targets.quats)))
    qvel, qacc = savgol_derivatives(
        model, qpos, fps, config.derivative_window_s, config.derivative_polyorder
    )
    metrics = clip_metrics(
        position_error,
        orientation_error,
        binding.position_weight,
        binding.orientation_weight,
        limit_violations(model, qpos),
        np.maximum(-heights.min(1), 0.0),
        np.where(contact, heights.min(1), np.inf),
        tendon_jumps(rep["muscle_length"], rep["muscle_explained"]),
        float(unexplained_change(rep["muscle_length"], rep["muscle_explained"]).max(initial=0.0)),
        ik_fps,
    )

    bodies, first = np.unique(binding.body, return_index=True)
    order = np.argsort(first)
    keep = first[order]
    return Reference(
        clip_id=targets.motion.clip_id,
        fps=fps,
        qpos=qpos,
        qvel=qvel,
        qacc=qacc,
        qpos_names=qpos_names(model),
        qvel_names=qvel_names(model),
        body_names=tuple(model.body(int(b)).name for b in bodies[order]),
        body_pos=rep["xpos"][:, keep] + lift,
        body_quat=rep["xquat"][:, keep],
        correspondence_names=binding.names,
        target_pos=targets.positions + lift,
        position_error_m=position_error,
        orientation_error_rad=orientation_error,
        stance=stance,
        ground_shift_m=shift,
        filled_frames=targets.motion.filled_frames,
        metrics=metrics,
        model_name=model_name(model),
        model_sha256=model_sha256(model),
        notes=targets.notes,
    )


def retarget(
    motion: Motion,
    model: mujoco.MjModel,
    config: RetargetConfig | None = None,
    skeleton: Skeleton | None = None,
) -> Reference:
    """Retarget one clip onto the model: qpos/qvel/qacc at the control rate, errors and metrics."""
    config = config or RetargetConfig()
    targets = prepare_targets(motion, model, config, skeleton or mean_skeleton())
    ik = solve_ik(
        model,
        targets.binding,
        targets.positions,
        targets.quats,
        config.ik,
        floor=targets.floor_contact(config),
    )
    return build_reference(model, targets, ik.qpos, ik.fps, config)
