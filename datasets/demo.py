"""The demo corpus: synthetic AMASS-layout clips made by msconvert's own code, stress clips for
the retargeting (run, jump, turn, cartwheel, minutes, 30 and 250 fps; not in the default corpus),
and broken files.

Every clip is generated here from joint-angle curves on the packaged mean SMPL skeleton; no SMPL
model file and no AMASS data are used. Clips are returned as AMASS SMPL-H arrays: `trans` (T, 3)
in the z-up world, metres, and `poses` (T, 156) axis-angle (joint 0 the root orientation, 1..21
the body joints in `BODY_JOINT_NAMES` order, 22..51 the fingers, left as zeros).

Facing: every clip starts facing world +x. The root orientation is `SMPL_TO_WORLD` (SMPL's
native frame, x = left, y = up, z = forward, stood in the z-up world facing +x, so native x ->
world +y, native y -> world +z, native z -> world +x) composed with the clip's own pelvis motion.

Sign conventions, checked numerically with `forward_kinematics_arrays` (and in tests): about the
native x axis (the subject's left), hip flexion is negative, knee flexion positive, ankle
dorsiflexion negative and a positive rotation of the pelvis tilts the trunk forward; an arm
hangs down from SMPL's T-pose by rotating the left shoulder by a negative angle about z (the
right by a positive one), and the elbow flexes about -y (left) / +y (right).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.typing import DTypeLike
from scipy.integrate import cumulative_trapezoid
from scipy.interpolate import CubicSpline
from scipy.ndimage import gaussian_filter1d, maximum_filter1d
from scipy.spatial.transform import Rotation

from msconvert.datasets.kinematics import forward_kinematics_arrays, mean_skeleton
from msconvert.datasets.motion import N_BODY_JOINTS, N_HAND_JOINTS

# The demo's assumption of how far SMPL's ankle/foot joint centres sit above the sole: the lowest
# of them is kept this high above the floor (z = 0) whenever the foot is on the ground. Not a
# measured figure, only a plausible one for the mean body.
FOOT_JOINT_CLEARANCE_M = 0.04

# SMPL native frame (x left, y up, z forward) -> AMASS z-up world, facing +x.
SMPL_TO_WORLD = Rotation.from_matrix([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])

N_POSE_VALUES = 3 * (N_BODY_JOINTS + N_HAND_JOINTS)  # 156: the width of SMPL-H 'poses'
N_BETAS = 16
N_DMPLS = 8
FOOT_JOINTS = (7, 8, 10, 11)  # left/right ankle, left/right foot (ball of the foot)

SMPLH_KEYS = frozenset({"trans", "poses", "betas", "gender", "mocap_framerate", "dmpls"})
SMPLX_KEYS = frozenset(
    {
        "trans",
        "root_orient",
        "pose_body",
        "pose_hand",
        "pose_jaw",
        "pose_eye",
        "poses",
        "betas",
        "num_betas",
        "gender",
        "mocap_frame_rate",
        "surface_model_type",
    }
)

_PELVIS, _L_HIP, _R_HIP, _SPINE1, _L_KNEE, _R_KNEE, _SPINE2 = 0, 1, 2, 3, 4, 5, 6
_L_ANKLE, _R_ANKLE, _SPINE3, _L_FOOT, _R_FOOT, _NECK = 7, 8, 9, 10, 11, 12
_L_COLLAR, _R_COLLAR, _HEAD, _L_SHOULDER, _R_SHOULDER = 13, 14, 15, 16, 17
_L_ELBOW, _R_ELBOW, _L_WRIST, _R_WRIST = 18, 19, 20, 21

_ARM_DOWN_DEG = 78.0  # from SMPL's T-pose to hanging beside the body, leaving ~12° of abduction
_SWAY_SEED = 20240611  # fixed: the standing clip's postural sway is the same on every run

# Sagittal joint angles of one gait cycle of normal walking, from heel strike (0 %) to the next
# heel strike of the same leg (100 %; toe-off near 60 %). Curve shapes follow the typical
# normal-cadence values in D. A. Winter, "Biomechanics and Motor Control of Human Movement"
# (Wiley), and the textbook gait curves derived from it; the keypoints are our own approximate
# reading of those shapes, joined by a periodic cubic spline. Degrees; flexion and ankle
# dorsiflexion positive.
#
# The hip is given as the thigh's inclination to the vertical. The textbook hip curve (about +30°
# at heel strike, -10° at its most extended) is set about 10° lower here and peaks in extension
# at 50 %, flexing through pre-swing: with the published shape as it was, the leading foot was
# still ~7 cm above its stance height at heel strike on this skeleton, and the trailing leg's
# push-off carried the pelvis at twice the walking speed. The curve is then scaled as a whole
# to fit the requested step length (see `_gait`).
_THIGH_ANGLE = ((0, 20), (10, 18), (20, 11), (30, 2), (40, -7), (50, -13), (55, -12), (60, -8),
                (70, 3), (80, 17), (88, 22), (95, 21))  # fmt: skip
_KNEE_FLEXION = ((0, 5), (6, 12), (15, 18), (25, 12), (35, 5), (42, 4), (50, 10), (60, 38),
                 (66, 53), (72, 60), (80, 52), (88, 30), (95, 10))  # fmt: skip
_ANKLE_DORSIFLEXION = ((0, 0), (6, -7), (12, -3), (25, 5), (40, 10), (48, 8), (55, -5),
                       (62, -18), (70, -9), (80, 1), (90, 3))  # fmt: skip
_STANCE_END = 0.60  # toe-off, as a fraction of the cycle
_DOUBLE_SUPPORT = 0.10  # each double-support period, as a fraction of the cycle
_CYCLE_SAMPLES = 1000  # phase samples over one cycle when working out the root's travel
_SETTLE_ITERATIONS = 60  # of the walk's re-timing; it settles to 1e-7 cycles in 8-15


# --- Small helpers -------------------------------------------------------------------------------


def _periodic(keypoints: tuple[tuple[float, float], ...]) -> CubicSpline:
    """A smooth 1-periodic curve (radians) through (percent of cycle, degrees) keypoints."""
    x = np.array([p for p, _ in keypoints] + [100.0]) / 100.0
    y = np.radians([v for _, v in keypoints] + [keypoints[0][1]])
    return CubicSpline(x, y, bc_type="periodic")


def _smoothstep(x: np.ndarray) -> np.ndarray:
    """Minimum-jerk ramp from 0 to 1 over x in [0, 1] (clipped outside)."""
    x = np.clip(x, 0.0, 1.0)
    return x**3 * (10.0 - 15.0 * x + 6.0 * x**2)


def _rx(angle: np.ndarray) -> Rotation:
    return Rotation.from_rotvec(np.asarray(angle)[:, None] * [1.0, 0.0, 0.0])


def _ry(angle: np.ndarray) -> Rotation:
    return Rotation.from_rotvec(np.asarray(angle)[:, None] * [0.0, 1.0, 0.0])


def _rz(angle: np.ndarray) -> Rotation:
    return Rotation.from_rotvec(np.asarray(angle)[:, None] * [0.0, 0.0, 1.0])


def _root(r: Rotation) -> Rotation:
    """Root orientation for a pelvis motion expressed in SMPL's native frame."""
    return SMPL_TO_WORLD * r


def _frames(duration_s: float, fps: float) -> np.ndarray:
    """Frame times covering `duration_s` at `fps` (first and last frame included)."""
    if not (fps > 0 and duration_s > 0):
        raise ValueError(f"duration_s and fps must be positive, got {duration_s}, {fps}")
    return np.arange(int(round(duration_s * fps)) + 1) / fps


def _body_pose(n: int, joints: dict[int, Rotation]) -> np.ndarray:
    """(T, 22, 3) axis-angle from per-joint rotations (absent joints stay at rest)."""
    pose = np.zeros((n, N_BODY_JOINTS, 3))
    for j, r in joints.items():
        pose[:, j] = r.as_rotvec()
    return pose


def _to_amass(trans: np.ndarray, body_pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SMPL-H arrays: trans (T, 3) and poses (T, 156) with zero finger rotations.

    The translation is shifted horizontally so that the pelvis starts above the world origin
    (AMASS adds SMPL's root rest position to `trans` unrotated, which would start it off-centre).
    """
    trans = np.array(trans, dtype=np.float64)
    trans[:, :2] -= trans[0, :2] + mean_skeleton().rest_joints[0, :2]
    poses = np.zeros((body_pose.shape[0], N_POSE_VALUES))
    poses[:, : 3 * N_BODY_JOINTS] = body_pose.reshape(-1, 3 * N_BODY_JOINTS)
    return trans, poses


def _positions(trans: np.ndarray, body_pose: np.ndarray) -> np.ndarray:
    return forward_kinematics_arrays(trans, body_pose, mean_skeleton()).positions


def _sole_heights(body_pose: np.ndarray) -> np.ndarray:
    """(T, 4) heights of each foot's heel and ball (left heel, left ball, right heel, right
    ball) at zero root translation. The heel is the point under the ankle at the ball's height
    in the rest pose, carried with the foot: a heel strike lands on it, not on the ankle joint
    56 mm above (which would make the body drop onto the ball and jolt up by ~5 g)."""
    traj = forward_kinematics_arrays(np.zeros((body_pose.shape[0], 3)), body_pose, mean_skeleton())
    offsets = mean_skeleton().offsets
    out = []
    for ankle, ball in ((_L_ANKLE, _L_FOOT), (_R_ANKLE, _R_FOOT)):
        heel = np.array([0.0, offsets[ball][1], 0.0])  # native y is up
        out.append(traj.positions[:, ankle, 2] + traj.rotations[:, ankle, 2] @ heel)
        out.append(traj.positions[:, ball, 2])
    return np.stack(out, axis=1)


def _floor_height(body_pose: np.ndarray, fps: float | None = None) -> np.ndarray:
    """trans z putting the lowest heel or ball of either foot at the clearance, per frame.

    fps: also smooth it over ~40 ms, lifting it smoothly wherever that would put a foot below
    the clearance. A rigid heel strike stops the body within a frame; a real heel pad and knee
    spread that over tens of ms, and the vertical ground force peaks near 1.2-1.3 body weights
    (as measured in walking), not at several. The feet float a few mm at heel strike instead.
    """
    z = FOOT_JOINT_CLEARANCE_M - _sole_heights(body_pose).min(axis=1)
    if fps is None:
        return z
    sigma = 0.04 * fps
    smooth = gaussian_filter1d(z, sigma, mode="nearest")
    width = 2 * int(round(2 * sigma)) + 1
    for _ in range(20):
        deficit = np.maximum(z - smooth, 0.0)
        if deficit.max() < 1e-5:
            break
        smooth += gaussian_filter1d(maximum_filter1d(deficit, width), sigma, mode="nearest")
    return np.maximum(smooth, z)


def _planted(body_pose: np.ndarray) -> np.ndarray:
    """Root translation keeping the feet where they are at frame 0, for a symmetric stance."""
    rel = _positions(np.zeros((body_pose.shape[0], 3)), body_pose)
    feet = rel[:, FOOT_JOINTS, :2].mean(axis=1)
    trans = np.zeros((body_pose.shape[0], 3))
    trans[:, :2] = -(feet - feet[0])
    trans[:, 2] = _floor_height(body_pose)
    return trans


def _arms(
    flex_l: np.ndarray, flex_r: np.ndarray, elbow_l: np.ndarray, elbow_r: np.ndarray
) -> dict[int, Rotation]:
    """Arms lowered from the T-pose, then flexed forward at the shoulder and at the elbow (rad)."""
    down = np.full_like(flex_l, np.radians(_ARM_DOWN_DEG))
    return {
        _L_SHOULDER: _rx(-flex_l) * _rz(-down),
        _R_SHOULDER: _rx(-flex_r) * _rz(down),
        _L_ELBOW: _ry(-elbow_l),
        _R_ELBOW: _ry(elbow_r),
    }


def _spine(total: Rotation) -> dict[int, Rotation]:
    """Spread a trunk rotation evenly over the three spine joints (their product is `total`)."""
    third = Rotation.from_rotvec(total.as_rotvec() / 3.0)
    return {_SPINE1: third, _SPINE2: third, _SPINE3: third}


# --- Walking -------------------------------------------------------------------------------------


def _stance_weight(phase: np.ndarray) -> np.ndarray:
    """1 while a foot carries the body, 0 in swing; blended over the double-support periods."""
    phase = np.mod(phase, 1.0)
    rise = _smoothstep(phase / _DOUBLE_SUPPORT)
    fall = 1.0 - _smoothstep((phase - (_STANCE_END - _DOUBLE_SUPPORT)) / _DOUBLE_SUPPORT)
    return np.minimum(rise, fall)


def _gait_pose(
    phase_l: np.ndarray, hip_scale: float, leg_lean: np.ndarray | None = None
) -> np.ndarray:
    """(T, 22, 3) body pose of a gait whose left leg is at `phase_l` (cycles) and faces +x.

    leg_lean: (T, 2) frontal-plane lean of the left and right leg (rad, about the walking
    direction), the foot kept level: the pelvis sways sideways over feet that stay put."""
    hip_c, knee_c, ankle_c = (
        _periodic(_THIGH_ANGLE),
        _periodic(_KNEE_FLEXION),
        _periodic(_ANKLE_DORSIFLEXION),
    )
    phase_l = np.mod(phase_l, 1.0)
    phase_r = np.mod(phase_l + 0.5, 1.0)
    hip_l = hip_scale * hip_c(phase_l)
    hip_r = hip_scale * hip_c(phase_r)
    cycle = 2.0 * np.pi * phase_l

    # Pelvis (native frame): transverse rotation forward on the side of the swinging leg (±4°,
    # scaled with the step like the hip), obliquity dropping the swing side most in loading
    # response (±4°), anterior tilt 3° ± 1.5° at twice the stride frequency.
    yaw = -np.radians(4.0) * hip_scale * np.cos(cycle)
    oblique = np.radians(4.0) * np.cos(cycle - 2.0 * np.pi * 0.15)
    tilt = np.radians(3.0) + np.radians(1.5) * np.cos(2.0 * cycle)
    pelvis = _ry(yaw) * _rz(oblique) * _rx(tilt)

    # The hip absorbs the pelvis motion so each thigh swings in the sagittal plane (feet do not
    # twist on the floor), leaned sideways by `leg_lean`; the hip curve is read as the thigh's
    # angle to the vertical.
    joints: dict[int, Rotation] = {_PELVIS: _root(pelvis)}
    legs = (
        (_L_HIP, _L_KNEE, _L_ANKLE, hip_l, phase_l),
        (_R_HIP, _R_KNEE, _R_ANKLE, hip_r, phase_r),
    )
    for side, (hip_j, knee_j, ankle_j, hip, phase) in enumerate(legs):
        thigh, knee, ankle = _rx(-hip), _rx(knee_c(phase)), _rx(-ankle_c(phase))
        lean = _rz(np.zeros_like(hip) if leg_lean is None else leg_lean[:, side])
        # The leaning leg's foot keeps the orientation the upright leg gives it.
        joints[hip_j] = pelvis.inv() * lean * thigh
        joints[knee_j] = knee
        joints[ankle_j] = (lean * thigh * knee).inv() * thigh * knee * ankle
    # Trunk: thorax counter-rotates against the pelvis (70 % of its yaw the other way) and stays
    # upright in the frontal and sagittal planes; the neck turns the head back to face forward.
    thorax = _ry(-0.7 * yaw)
    joints.update(_spine(pelvis.inv() * thorax))
    joints[_NECK] = _ry(0.4 * yaw)
    joints[_HEAD] = _ry(0.3 * yaw)
    # Arms swing opposite to the leg on the same side, half the hip's excursion; elbows stay
    # flexed and flex further as the arm swings forward.
    flex_l = -0.5 * hip_l
    flex_r = -0.5 * hip_r
    joints.update(
        _arms(
            flex_l,
            flex_r,
            np.radians(20.0) + 0.5 * np.clip(flex_l, 0, None),
            np.radians(20.0) + 0.5 * np.clip(flex_r, 0, None),
        )
    )
    return _body_pose(phase_l.shape[0], joints)


def _contact_rate(rel: np.ndarray) -> np.ndarray:
    """(N, 2, 3) rate of change over one periodic cycle (per unit phase) of the point each foot
    rolls over: the ankle (standing in for the heel) until the heel rises, then the ball.

    Rates are blended, not points: as the contact moves from heel to ball the foot rolls forward
    over the ground, it does not drag the body back by a foot length.
    """
    n = rel.shape[0]
    rate = (np.roll(rel, -1, axis=0) - np.roll(rel, 1, axis=0)) * (n / 2.0)
    b = _on_ball(rel)[:, :, None]
    feet = ((_L_ANKLE, _L_FOOT), (_R_ANKLE, _R_FOOT))
    return np.stack(
        [(1.0 - b[:, i]) * rate[:, a] + b[:, i] * rate[:, f] for i, (a, f) in enumerate(feet)],
        axis=1,
    )


def _on_ball(rel: np.ndarray) -> np.ndarray:
    """(N, 2) how far each foot has rolled from its heel (0) onto its ball (1): the heel rises."""
    out = np.empty((rel.shape[0], 2))
    for i, (ankle, ball) in enumerate(((_L_ANKLE, _L_FOOT), (_R_ANKLE, _R_FOOT))):
        rest = SMPL_TO_WORLD.apply(mean_skeleton().offsets[ball])
        d = rel[:, ball] - rel[:, ankle]
        toe_down = np.arctan2(-d[:, 2], np.linalg.norm(d[:, :2], axis=1)) - np.arctan2(
            -rest[2], np.linalg.norm(rest[:2])
        )
        out[:, i] = _smoothstep(toe_down / np.radians(1.5))
    return out


def _gait_cycle(hip_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Phase grid over one cycle (N + 1,) and the root's horizontal travel (N + 1, 2) along it.

    The travel is what keeps the stance foot still: the root moves opposite to the rolling
    contact of the foot carrying the body, blended over the double-support periods.
    """
    phase = np.arange(_CYCLE_SAMPLES) / _CYCLE_SAMPLES
    rel = _positions(np.zeros((phase.size, 3)), _gait_pose(phase, hip_scale))
    w_l = _stance_weight(phase)
    weights = np.stack((w_l, 1.0 - w_l), axis=1)[:, :, None]
    rate = -(weights * _contact_rate(rel)).sum(axis=1)[:, :2]
    rate = np.concatenate((rate, rate[:1]))  # periodic: phase 1 is phase 0
    travel = cumulative_trapezoid(rate, dx=1.0 / _CYCLE_SAMPLES, axis=0, initial=0.0)
    return np.append(phase, 1.0), travel


def _along(phase: np.ndarray, travel: np.ndarray, values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """(len(at), 2) horizontal `values` given over one cycle's phase grid (N + 1, with the root's
    `travel` over it) at any phases `at` (cycles): periodic once each cycle's travel is added."""
    stride = travel[-1]
    periodic = values[:-1] - phase[:-1, None] * stride
    # a periodic spline, not a linear interpolation: its kinks would be spikes in acceleration
    spline = CubicSpline(phase, np.concatenate([periodic, periodic[:1]]), bc_type="periodic")
    return at[:, None] * stride + spline(np.mod(at, 1.0))


def _leg_heights(ph: np.ndarray, hip_scale: float) -> np.ndarray:
    """(T, 2) hip-to-ankle height of the left and right leg, upright, at phases `ph`."""
    rel = _positions(np.zeros((ph.size, 3)), _gait_pose(ph, hip_scale))
    return np.stack(
        [rel[:, h, 2] - rel[:, a, 2] for h, a in ((_L_HIP, _L_ANKLE), (_R_HIP, _R_ANKLE))], axis=1
    )


def _leg_tilt(heights: np.ndarray, sway: np.ndarray) -> np.ndarray:
    """(T, 2) frontal lean of each leg that keeps its foot where it was while the pelvis moves
    `sway` (m) sideways: a parallelogram, each leg leaning by its own hip-to-ankle height."""
    # a lean about the walking direction moves the foot towards the body's left (+y): opposite
    return -np.arcsin(np.clip(sway[:, None] / heights, -0.5, 0.5))


def _balanced_cycle(
    hip_scale: float, phase: np.ndarray, travel: np.ndarray, speed_m_s: float
) -> tuple[float, np.ndarray, np.ndarray]:
    """One cycle's duration (s), and over it, at N even times, the phase's lag behind steady
    progress (cycles) and the pelvis's sideways sway (m).

    A kinematic walk at steady speed over legs in the sagittal plane asks the floor for what it
    cannot give: the centre of mass stays on the midline while the single foot under it is
    ~9 cm to the side, and it does not slow or speed up as it passes over that foot, so inverse
    dynamics needs a root force of up to ~7 % body weight, mostly sideways, and a roll moment of
    30-70 N m in every single stance. A real walker's centre of mass moves as an inverted
    pendulum over the centre of pressure p (the rolling contact of the feet on the floor, shared
    in double support): c'' = g / h (c - p), h its height. Its periodic solution is, harmonic by
    harmonic, C_k = P_k g/h / (g/h + Ω_k²): the mass sways 2-4 cm towards each stance foot and
    the pace wobbles within each step (by up to ~15 % here), as in human gait. Forward, the phase
    is re-timed (the legs keep their shapes, the pace changes within the step); sideways, the
    pelvis sways over leaning legs.
    """
    n = _CYCLE_SAMPLES
    stride = travel[-1]
    cycle_s = float(stride[0] / speed_m_s)
    pose = _gait_pose(phase[:-1], hip_scale)
    rel = _positions(np.zeros((n, 3)), pose)
    com = centre_of_mass(rel)
    w_l = _stance_weight(phase[:-1])
    on_ball = _on_ball(rel)
    cop = np.zeros((n, 3))
    for i, (weight, ankle, ball) in enumerate(
        ((w_l, _L_ANKLE, _L_FOOT), (1.0 - w_l, _R_ANKLE, _R_FOOT))
    ):
        b = on_ball[:, i : i + 1]
        cop += weight[:, None] * ((1.0 - b) * rel[:, ankle] + b * rel[:, ball])
    com_along = np.concatenate([travel[:-1] + com[:, :2], travel[-1:] + com[:1, :2]])
    cop_along = np.concatenate([travel[:-1] + cop[:, :2], travel[-1:] + cop[:1, :2]])
    height = float(np.mean(_floor_height(pose) + com[:, 2]))
    w0_sq = 9.81 / height
    omega = 2.0 * np.pi * np.fft.rfftfreq(n, d=cycle_s / n)
    gain = w0_sq / (w0_sq + omega**2)

    def pendulum(p: np.ndarray) -> np.ndarray:  # the periodic c of c'' = g/h (c - p)
        return np.fft.irfft(np.fft.rfft(p) * gain, n)

    steady = np.arange(n) / n  # the phase at N even times over the cycle, at a steady pace
    ext = np.linspace(-1.0, 2.0, 3 * n + 1)
    com_x = _along(phase, travel, com_along, ext)[:, 0]
    if not np.all(np.diff(com_x) > 0):
        raise ValueError("the walk's centre of mass does not advance steadily")
    ph = steady.copy()
    for _ in range(_SETTLE_ITERATIONS):  # the phase whose mass is where the pendulum has it
        # Any time shift of a solution is one too, so the mean offset stays the current one
        # (the mean of c - p is the pose's own; re-timing changes only the harmonics).
        mean = np.mean(_along(phase, travel, com_along, ph)[:, 0] - steady * stride[0])
        ahead = pendulum(_along(phase, travel, cop_along, ph)[:, 0] - steady * stride[0])
        new = np.interp(steady * stride[0] + ahead - np.mean(ahead) + mean, com_x, ext)
        change, ph = np.max(np.abs(new - ph)), new
        if change < 1e-7:
            break
    else:
        raise ValueError(f"the walk's timing did not settle (last change {change:.1e} cycles)")
    drift = ph * stride[1]  # any sideways travel per cycle: the sway is about it, periodic
    want = pendulum(_along(phase, travel, cop_along, ph)[:, 1] - drift)
    sway = want - (_along(phase, travel, com_along, ph)[:, 1] - drift)
    heights = _leg_heights(ph, hip_scale)
    for _ in range(3):  # leaning legs carry part of the mass less far than the pelvis
        lean = _gait_pose(ph, hip_scale, _leg_tilt(heights, sway))
        moved = _along(phase, travel, travel, ph)[:, 1] - drift + sway
        moved += centre_of_mass(_positions(np.zeros((n, 3)), lean))[:, 1]
        sway += want - moved
    return cycle_s, ph - steady, sway


def _cyclic(samples: np.ndarray, at: np.ndarray) -> np.ndarray:
    """A 1-periodic signal given by N even samples over one period, at phases `at`: a periodic
    spline, smooth in acceleration where a linear interpolation's kinks would put spikes."""
    grid = np.arange(samples.size + 1) / samples.size
    spline = CubicSpline(grid, np.append(samples, samples[0]), bc_type="periodic")
    return spline(np.mod(at, 1.0))


def _gait(
    duration_s: float, fps: float, speed_m_s: float, cadence_steps_min: float
) -> tuple[np.ndarray, np.ndarray]:
    """A straight walk along +x at the given speed and cadence (steps per minute)."""
    if not (speed_m_s > 0 and cadence_steps_min > 0):
        raise ValueError(
            f"speed and cadence must be positive, got {speed_m_s}, {cadence_steps_min}"
        )
    times = _frames(duration_s, fps)
    stride = speed_m_s * 120.0 / cadence_steps_min  # two steps per stride

    # The step length follows from the leg angles, so the hip excursion is scaled until one
    # cycle covers the stride (secant iterations; the length is nearly linear in the scale).
    def length(k: float) -> float:
        return float(_gait_cycle(k)[1][-1, 0])

    k0, k1 = 1.0, 1.2
    s0, s1 = length(k0), length(k1)
    for _ in range(10):
        if abs(s1 - stride) < 1e-5 * stride or s1 == s0:
            break
        k0, k1, s0 = k1, k1 + (stride - s1) * (k1 - k0) / (s1 - s0), s1
        s1 = length(k1)
    phase, travel = _gait_cycle(k1)
    if not (
        0.3 < k1 < 1.6 and abs(s1 - stride) < 1e-3 * stride and np.all(np.diff(travel[:, 0]) > 0)
    ):
        raise ValueError(
            f"{speed_m_s} m/s at {cadence_steps_min} steps/min needs an implausible step length"
        )

    # The phase and the pelvis's sideways sway over one cycle make the centre of mass move as an
    # inverted pendulum over the feet (`_balanced_cycle`); the root travels with the phase, so
    # every foot on the floor stays put.
    cycle_s, lag, sway = _balanced_cycle(k1, phase, travel, speed_m_s)
    ph = times / cycle_s + _cyclic(lag, times / cycle_s)
    sway = _cyclic(sway, times / cycle_s)
    body_pose = _gait_pose(ph, k1, _leg_tilt(_leg_heights(ph, k1), sway))
    trans = np.zeros((times.size, 3))
    trans[:, :2] = _along(phase, travel, travel, ph)
    trans[:, 1] += sway
    trans[:, 2] = _floor_height(body_pose, fps)
    return _to_amass(trans, body_pose)


def walking(
    duration_s: float = 4.0,
    fps: float = 120.0,
    speed_m_s: float = 1.3,
    cadence_steps_min: float = 110.0,
) -> tuple[np.ndarray, np.ndarray, float]:
    """A straight-line walk along +x: (trans (T, 3), poses (T, 156), fps) in AMASS layout."""
    trans, poses = _gait(duration_s, fps, speed_m_s, cadence_steps_min)
    return trans, poses, float(fps)


def slow_walking(
    duration_s: float = 4.0,
    fps: float = 60.0,
    speed_m_s: float = 0.8,
    cadence_steps_min: float = 85.0,
) -> tuple[np.ndarray, np.ndarray, float]:
    """A slow straight-line walk along +x: (trans, poses, fps) in AMASS layout."""
    return walking(duration_s, fps, speed_m_s, cadence_steps_min)


# --- Standing, squat, arm raise ------------------------------------------------------------------


def _sway(times: np.ndarray, rng: np.random.Generator, peak: float) -> np.ndarray:
    """A smooth random sway signal (sum of slow sines, 0.1-0.6 Hz) with the given peak."""
    freqs = rng.uniform(0.1, 0.6, size=5)
    phases = rng.uniform(0.0, 2.0 * np.pi, size=5)
    amps = rng.uniform(0.5, 1.0, size=5) / freqs
    s = (amps * np.sin(2.0 * np.pi * freqs * times[:, None] + phases)).sum(axis=1)
    s -= s.mean()
    return peak * s / np.abs(s).max()


def standing(duration_s: float = 3.0, fps: float = 60.0) -> tuple[np.ndarray, np.ndarray, float]:
    """Quiet standing with millimetre postural sway and breathing: (trans, poses, fps)."""
    times = _frames(duration_s, fps)
    n = times.size
    rng = np.random.default_rng(_SWAY_SEED)
    reach = 0.87  # ankle to pelvis height, the inverted pendulum's length (m)
    pitch = _sway(times, rng, 0.004) / reach  # forward-backward sway, ±4 mm at the pelvis
    roll = _sway(times, rng, 0.002) / reach  # side to side, ±2 mm
    breath = np.sin(2.0 * np.pi * times / 4.0)  # 15 breaths a minute
    # The body sways as a rigid pendulum over flat feet: the legs tilt, the ankles take it back.
    pelvis = _rx(pitch)
    thigh = pelvis * _rz(roll)  # legs lean sideways like a parallelogram, pelvis kept level
    ankle = thigh.inv()
    zero, elbow = np.zeros(n), np.full(n, np.radians(10.0))
    joints: dict[int, Rotation] = {
        _PELVIS: _root(pelvis),
        _L_HIP: _rz(roll),
        _R_HIP: _rz(roll),
        _L_ANKLE: ankle,
        _R_ANKLE: ankle,
        _SPINE3: _rx(-np.radians(0.6) * breath),  # the thorax extends a little on inhaling
        _L_COLLAR: _rz(np.radians(0.5) * breath),  # and the shoulders rise
        _R_COLLAR: _rz(-np.radians(0.5) * breath),
    }
    joints.update(_arms(zero, zero, elbow, elbow))
    body_pose = _body_pose(n, joints)
    trans, poses = _to_amass(_planted(body_pose), body_pose)
    return trans, poses, float(fps)


# Segment masses (fractions of body mass) and centre-of-mass positions along each segment
# (proximal joint -> distal joint), after Winter's anthropometric table; head and trunk are lumped.
_SEGMENTS = (
    (_PELVIS, _NECK, 0.497, 0.5),  # trunk
    (_NECK, _HEAD, 0.081, 1.0),  # head and neck
    (_L_SHOULDER, _L_ELBOW, 0.028, 0.436),
    (_R_SHOULDER, _R_ELBOW, 0.028, 0.436),
    (_L_ELBOW, _L_WRIST, 0.022, 0.682),  # forearm and hand
    (_R_ELBOW, _R_WRIST, 0.022, 0.682),
    (_L_HIP, _L_KNEE, 0.100, 0.433),
    (_R_HIP, _R_KNEE, 0.100, 0.433),
    (_L_KNEE, _L_ANKLE, 0.0465, 0.433),
    (_R_KNEE, _R_ANKLE, 0.0465, 0.433),
    (_L_ANKLE, _L_FOOT, 0.0145, 0.5),
    (_R_ANKLE, _R_FOOT, 0.0145, 0.5),
)


def centre_of_mass(positions: np.ndarray) -> np.ndarray:
    """Approximate whole-body centre of mass (T, 3) from the 22 joint positions (T, 22, 3)."""
    com = np.zeros(positions.shape[:1] + (3,))
    for a, b, mass, along in _SEGMENTS:
        com += mass * (positions[:, a] + along * (positions[:, b] - positions[:, a]))
    return com


def _squat_pose(depth: np.ndarray, lean: np.ndarray) -> np.ndarray:
    """Body pose at squat depth 0..1 with this forward trunk lean (rad); feet stay flat."""
    knee = np.radians(90.0) * depth
    dorsi = np.radians(25.0) * depth
    # Segment pitches about native x: pelvis `lean` forward, thigh forward by knee - dorsiflexion,
    # shank forward by the dorsiflexion, foot level; each joint takes the difference.
    pelvis = _rx(lean)
    flex = np.radians(85.0) * depth  # arms reach forward for balance
    joints: dict[int, Rotation] = {
        _PELVIS: _root(pelvis),
        _L_HIP: _rx(-(lean + knee - dorsi)),
        _R_HIP: _rx(-(lean + knee - dorsi)),
        _L_KNEE: _rx(knee),
        _R_KNEE: _rx(knee),
        _L_ANKLE: _rx(-dorsi),
        _R_ANKLE: _rx(-dorsi),
        _NECK: _rx(-0.4 * lean),  # the head comes partly back up to look ahead
        _HEAD: _rx(-0.2 * lean),
    }
    elbow = np.full_like(flex, np.radians(8.0))
    joints.update(_arms(flex, flex, elbow, elbow))
    return _body_pose(depth.shape[0], joints)


def squat(duration_s: float = 4.0, fps: float = 100.0) -> tuple[np.ndarray, np.ndarray, float]:
    """A controlled squat to ~90° knee flexion and back up, feet flat: (trans, poses, fps)."""
    times = _frames(duration_s, fps)
    u = times / times[-1]
    # Stand 10 %, descend 35 %, hold 10 %, rise 35 %, stand 10 %.
    depth = _smoothstep((u - 0.10) / 0.35) - _smoothstep((u - 0.55) / 0.35)
    # Trunk lean per frame that keeps the centre of mass over the feet as in standing
    # (bisection: the centre of mass moves forward monotonically with the lean).
    target = _com_ahead_of_ankles(_squat_pose(np.zeros(1), np.zeros(1)))[0]
    lo, hi = np.zeros_like(depth), np.full_like(depth, np.radians(80.0))
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        ahead = _com_ahead_of_ankles(_squat_pose(depth, mid)) > target
        hi = np.where(ahead, mid, hi)
        lo = np.where(ahead, lo, mid)
    body_pose = _squat_pose(depth, 0.5 * (lo + hi))
    trans, poses = _to_amass(_planted(body_pose), body_pose)
    return trans, poses, float(fps)


def _com_ahead_of_ankles(body_pose: np.ndarray) -> np.ndarray:
    """How far (m, along +x) the centre of mass lies ahead of the mid-ankle point."""
    rel = _positions(np.zeros((body_pose.shape[0], 3)), body_pose)
    return centre_of_mass(rel)[:, 0] - rel[:, [_L_ANKLE, _R_ANKLE], 0].mean(axis=1)


def arm_raise(duration_s: float = 3.0, fps: float = 60.0) -> tuple[np.ndarray, np.ndarray, float]:
    """Standing; both arms raised forward to overhead and lowered again: (trans, poses, fps)."""
    times = _frames(duration_s, fps)
    u = times / times[-1]
    # Rest 10 %, raise 37 %, hold 6 %, lower 37 %, rest 10 %.
    lift = _smoothstep((u - 0.10) / 0.37) - _smoothstep((u - 0.53) / 0.37)
    flex = np.radians(170.0) * lift
    elbow = np.radians(10.0) - np.radians(5.0) * lift
    joints: dict[int, Rotation] = {
        _PELVIS: _root(Rotation.identity(times.size)),
        _SPINE3: _rx(-np.radians(6.0) * lift),  # the upper back extends as the arms go overhead
        _L_COLLAR: _rz(np.radians(10.0) * lift),  # and the shoulder girdle elevates
        _R_COLLAR: _rz(-np.radians(10.0) * lift),
    }
    joints.update(_arms(flex, flex, elbow, elbow))
    body_pose = _body_pose(times.size, joints)
    trans, poses = _to_amass(_planted(body_pose), body_pose)
    return trans, poses, float(fps)


# --- Stress clips: flight, inversion, yaw wrap, length and frame rate ----------------------------
#
# Not in the default corpus (`make demo` converts that, with training): `write_stress_corpus`, or
# `msconvert demo-corpus DIR --stress`, writes them under Stress/. The run's and the jump's legs
# are placed by planar two-link IK on the mean skeleton, so a foot on the floor stays put.

_GRAVITY = 9.81


def _leg_angles(
    root: Rotation, pelvis: np.ndarray, side: int, ankle: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Hip and knee angles about native x (T,) putting a leg's ankle at world points (T, 3).

    The leg flexes in the pelvis's sagittal plane (native y-z); the target's sideways position is
    the rest leg's. A target out of reach is pulled in along the hip-ankle line."""
    off = mean_skeleton().offsets
    hip_j, knee_j, ankle_j = ((_L_HIP, _L_KNEE, _L_ANKLE), (_R_HIP, _R_KNEE, _R_ANKLE))[side]
    d = root.inv().apply(ankle - pelvis)[:, 1:] - off[hip_j, 1:]
    v1, v2 = off[knee_j, 1:], off[ankle_j, 1:]
    l1, l2 = np.linalg.norm(v1), np.linalg.norm(v2)
    reach = np.clip(np.linalg.norm(d, axis=1), 1.05 * abs(l1 - l2), 0.995 * (l1 + l2))
    # A rotation by +θ about x turns (y, z) by +θ; the knee's +θ bends the shank back.
    bend = np.arccos(np.clip((reach**2 - l1**2 - l2**2) / (2 * l1 * l2), -1.0, 1.0))
    knee = bend - (np.arctan2(v2[1], v2[0]) - np.arctan2(v1[1], v1[0]))
    c, s = np.cos(knee), np.sin(knee)
    leg = np.stack((v1[0] + c * v2[0] - s * v2[1], v1[1] + s * v2[0] + c * v2[1]), axis=1)
    hip = np.arctan2(d[:, 1], d[:, 0]) - np.arctan2(leg[:, 1], leg[:, 0])
    return np.angle(np.exp(1j * hip)), knee


def _legs(
    root: Rotation,
    pelvis: np.ndarray,
    tilt: np.ndarray,
    ankles: tuple[np.ndarray, np.ndarray],
    pitches: tuple[np.ndarray, np.ndarray],
) -> dict[int, Rotation]:
    """Hip, knee and ankle rotations putting each ankle on its world track (T, 3) with its foot
    pitched toes-down by its angle (rad) from the rest pose; `tilt`: the pelvis's own pitch."""
    out: dict[int, Rotation] = {}
    for side, (hip_j, knee_j, ankle_j) in enumerate(
        ((_L_HIP, _L_KNEE, _L_ANKLE), (_R_HIP, _R_KNEE, _R_ANKLE))
    ):
        hip, knee = _leg_angles(root, pelvis, side, ankles[side])
        out[hip_j], out[knee_j] = _rx(hip), _rx(knee)
        out[ankle_j] = _rx(pitches[side] - tilt - hip - knee)
    return out


def _foot(side: int) -> np.ndarray:
    """Ankle -> ball of one foot (0 left, 1 right), world frame, standing facing +x."""
    return SMPL_TO_WORLD.apply(mean_skeleton().offsets[(_L_FOOT, _R_FOOT)[side]])


def _ankle_over_ball(
    ball_x: np.ndarray, pitch: np.ndarray, side: int
) -> tuple[np.ndarray, np.ndarray]:
    """(x, z) of the ankle of a foot facing +x whose ball is on the floor at ball_x, pitched
    toes-down by `pitch` (rad): the heel rises as the foot turns about its ball."""
    f = _foot(side)
    c, s = np.cos(pitch), np.sin(pitch)
    fx, fz = c * f[0] + s * f[2], -s * f[0] + c * f[2]  # turned about world +y (the left)
    return ball_x - fx, FOOT_JOINT_CLEARANCE_M - fz


def _ball_ahead(side: int) -> float:
    """How far the ball of a level foot lies ahead of its ankle."""
    return float(_foot(side)[0])


def _ankle_rest_height(side: int) -> float:
    """Height of the ankle joint with the foot flat and its ball at the clearance."""
    return FOOT_JOINT_CLEARANCE_M - float(_foot(side)[2])


def _leg_length() -> float:
    off = mean_skeleton().offsets
    return float(np.linalg.norm(off[_L_KNEE, 1:]) + np.linalg.norm(off[_L_ANKLE, 1:]))


def _hip_drop() -> float:
    """How far the hips sit below the pelvis joint (world z, standing)."""
    return float(-SMPL_TO_WORLD.apply(mean_skeleton().offsets[_L_HIP])[2])


def _assemble(
    times: np.ndarray,
    pelvis: np.ndarray,
    pelvis_rot: Rotation,
    joints: dict[int, Rotation],
) -> tuple[np.ndarray, np.ndarray]:
    """AMASS arrays from a world pelvis track (T, 3), the pelvis's own rotation (native frame)
    and the other joints' rotations."""
    joints = {**joints, _PELVIS: _root(pelvis_rot)}
    body_pose = _body_pose(times.size, joints)
    return _to_amass(pelvis - mean_skeleton().rest_joints[0], body_pose)


def running(
    duration_s: float = 4.0,
    fps: float = 120.0,
    speed_m_s: float = 3.0,
    cadence_steps_min: float = 170.0,
) -> tuple[np.ndarray, np.ndarray, float]:
    """A run along +x with flight phases (each foot on the floor 35 % of its cycle, both feet
    off it 30 % of the time), landing on the midfoot and pushing off from the ball."""
    times = _frames(duration_s, fps)
    cycle = 120.0 / cadence_steps_min
    duty = 0.35
    tilt = np.radians(10.0)
    root = _root(Rotation.from_rotvec([tilt, 0.0, 0.0]))
    base = _ankle_rest_height(0) + _hip_drop() + 0.9 * _leg_length()

    def layout(t: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Pelvis (T, 3), one ankle's track (T, 3) and its world pitch (T,) at times t; and the
        leg's swing fraction (T,), -1 in stance."""
        u = t / cycle
        # The pelvis travels at constant speed and bobs 3 cm either way, lowest in mid-stance.
        pelvis = np.zeros((t.size, 3))
        pelvis[:, 0] = speed_m_s * t
        pelvis[:, 2] = base - 0.03 * np.cos(2 * np.pi * 2 * (u - duty / 2))
        k = np.floor(u - 0.5 * side)
        s = u - 0.5 * side - k  # 0..1 within this leg's cycle; stance first
        # The foot lands flat with the ankle a little ahead of the pelvis (the ball under it
        # at mid-stance), then turns about its ball as the heel rises.
        ahead, flat = _ball_ahead(side), _ankle_rest_height(side)
        land = speed_m_s * (k + 0.5 * side + 0.5 * duty) * cycle - 0.5 * ahead
        ball = land + ahead
        pitch = np.where(s < duty, np.radians(30.0) * _smoothstep(2 * s / duty - 1), 0.0)
        ax, az = _ankle_over_ball(ball, pitch, side)
        # Swing: from push-off to the next landing, the heel swept up behind the body.
        w = np.clip((s - duty) / (1.0 - duty), 0.0, 1.0)
        x_off, z_off = _ankle_over_ball(ball, np.full_like(s, np.radians(30.0)), side)
        swing_x = x_off + (land + speed_m_s * cycle - x_off) * _smoothstep(w)
        swing_z = z_off + (flat - z_off) * _smoothstep(w)
        swing_z += 0.28 * np.sin(np.pi * w) ** 2 * (1.0 - 0.6 * w)
        in_swing = s >= duty
        x = np.where(in_swing, swing_x, ax)
        z = np.where(in_swing, swing_z, az)
        ankle = np.stack((x, np.zeros_like(x), z), axis=1)
        return pelvis, ankle, pitch, np.where(in_swing, w, -1.0)

    def ankle_angle(t: np.ndarray, side: int) -> np.ndarray:
        pelvis, ankle, pitch, _ = layout(t, side)
        hip, knee = _leg_angles(root, pelvis, side, ankle)
        return pitch - tilt - hip - knee

    joints: dict[int, Rotation] = {}
    for side, (hip_j, knee_j, ankle_j) in enumerate(
        ((_L_HIP, _L_KNEE, _L_ANKLE), (_R_HIP, _R_KNEE, _R_ANKLE))
    ):
        pelvis, ankle, _, w = layout(times, side)
        hip, knee = _leg_angles(root, pelvis, side, ankle)
        joints[hip_j], joints[knee_j] = _rx(hip), _rx(knee)
        # In swing the ankle turns from its push-off angle to its landing angle (relative to
        # the shank, as a real ankle does), not held level in the world.
        k = np.floor(times / cycle - 0.5 * side)
        t_off = (k + 0.5 * side + duty) * cycle
        t_land = (k + 0.5 * side + 1.0) * cycle
        blend = _smoothstep(w / 0.7)
        swing = (1 - blend) * ankle_angle(t_off, side) + blend * ankle_angle(t_land, side)
        joints[ankle_j] = _rx(np.where(w >= 0, swing, ankle_angle(times, side)))
    hip_l, hip_r = (joints[j].as_rotvec()[:, 0] for j in (_L_HIP, _R_HIP))
    elbow = np.full(times.size, np.radians(85.0))
    joints.update(_arms(-0.8 * (hip_r + tilt), -0.8 * (hip_l + tilt), elbow, elbow))
    tilts = np.full(times.size, tilt)
    joints.update(_spine(_rx(-0.5 * tilts)))  # the trunk leans a little less than the pelvis
    joints[_NECK] = _rx(-0.3 * tilts)
    trans, poses = _assemble(times, pelvis, _rx(tilts), joints)
    return trans, poses, float(fps)


def _hermite(knots: tuple[tuple[float, float, float], ...], times: np.ndarray) -> np.ndarray:
    """A C1 curve through (time, value, slope) knots, held flat outside them."""
    from scipy.interpolate import CubicHermiteSpline

    t, y, dy = (np.array(k, dtype=float) for k in zip(*knots, strict=True))
    return CubicHermiteSpline(t, y, dy)(np.clip(times, t[0], t[-1]))


def jump(
    duration_s: float = 3.0, fps: float = 120.0, distance_m: float = 0.8, flight_s: float = 0.45
) -> tuple[np.ndarray, np.ndarray, float]:
    """A standing broad jump along +x: crouch, push off from the balls of the feet, a ballistic
    flight of `flight_s`, land on the balls, absorb, stand up. Both feet move together."""
    times = _frames(duration_s, fps)
    k = duration_s / 3.0  # the phases stretch with the clip
    t_down, t_off, t_land, t_low, t_up = 1.0 * k, 1.25 * k, 1.25 * k + flight_s, 2.0 * k, 2.6 * k
    t_land = min(t_land, t_low - 0.1)
    flight = t_land - t_off
    leg, hip_drop, ankle0 = _leg_length(), _hip_drop(), _ankle_rest_height(0)
    stand = ankle0 + hip_drop + 0.985 * leg
    # Vertical: crouch 25 cm, push off with the heels up, fly, land 3 cm higher (on the balls).
    z_off, z_land = stand + 0.04, stand + 0.02
    vz0 = (z_land - z_off + 0.5 * _GRAVITY * flight**2) / flight
    vz1 = vz0 - _GRAVITY * flight
    vx = distance_m / flight
    x_land = 0.12 + distance_m  # the pelvis at touch-down; the feet land 12 cm ahead of it
    x_feet = x_land + 0.12
    z = _hermite(
        (
            (0.0, stand, 0.0),
            (0.5 * k, stand, 0.0),
            (t_down, stand - 0.25, 0.0),
            (t_off, z_off, vz0),
        ),
        times,
    )
    z_after = _hermite(
        (
            (t_land, z_land, vz1),
            (t_low, stand - 0.2, 0.0),
            (t_up, stand, 0.0),
            (duration_s, stand, 0.0),
        ),
        times,
    )
    x = _hermite(
        ((0.0, 0.0, 0.0), (0.5 * k, 0.0, 0.0), (t_down, 0.02, 0.1), (t_off, 0.12, vx)), times
    )
    x_after = _hermite(
        ((t_land, x_land, vx), (t_low, x_land + 0.12, 0.0), (duration_s, x_land + 0.12, 0.0)), times
    )
    tf = np.clip(times - t_off, 0.0, flight)
    z_fly = z_off + vz0 * tf - 0.5 * _GRAVITY * tf**2
    x_fly = 0.12 + vx * tf
    before, after = times <= t_off, times >= t_land
    pelvis = np.zeros((times.size, 3))
    pelvis[:, 0] = np.where(before, x, np.where(after, x_after, x_fly))
    pelvis[:, 2] = np.where(before, z, np.where(after, z_after, z_fly))
    # Trunk lean with the crouch (up to 35°), arms swinging back in the crouch and up in flight.
    depth = np.clip((stand - pelvis[:, 2]) / 0.25, 0.0, 1.0)
    tilt = np.radians(35.0) * depth
    pelvis_rot = _rx(tilt)
    root = _root(pelvis_rot)
    # Feet: flat at the start, heels rising in the push-off, pitched in flight, landing on the
    # balls and rolling flat. Ankles planted before take-off and after landing.
    heel = np.radians(30.0)
    w = np.clip((times - t_off) / flight, 0.0, 1.0)
    pitch = np.where(
        before,
        heel * _smoothstep((times - (t_off - 0.15 * k)) / (0.15 * k)),
        np.where(
            after,
            heel * 0.5 * (1 - _smoothstep((times - t_land) / (0.12 * k))),
            heel * (1.0 - 0.5 * _smoothstep(w)),
        ),
    )
    fly = ~before & ~after
    ankles = []
    for side in (0, 1):
        ahead = _ball_ahead(side)
        ball_x = np.where(times < t_land, ahead, x_feet + ahead)
        ax, az = _ankle_over_ball(ball_x, pitch, side)
        # In flight the ankles follow the pelvis from where they left to where they land,
        # drawn up by the knees on the way.
        ax_off, az_off = _ankle_over_ball(
            np.full_like(times, ahead), np.full_like(times, heel), side
        )
        ax_on, az_on = _ankle_over_ball(
            np.full_like(times, x_feet + ahead), np.full_like(times, 0.5 * heel), side
        )
        rel_off = np.stack((ax_off - 0.12, az_off - z_off), axis=1)
        rel_on = np.stack((ax_on - x_land, az_on - z_land), axis=1)
        s = _smoothstep(w)[:, None]
        rel = (1 - s) * rel_off + s * rel_on
        rel[:, 1] += 0.15 * np.sin(np.pi * w) ** 2
        ax = np.where(fly, pelvis[:, 0] + rel[:, 0], ax)
        az = np.where(fly, pelvis[:, 2] + rel[:, 1], az)
        ankles.append(np.stack((ax, np.zeros_like(ax), az), axis=1))
    joints = _legs(root, pelvis, tilt, (ankles[0], ankles[1]), (pitch, pitch))
    swing = np.where(
        times < t_off, -np.radians(50.0) * depth, np.radians(120.0) * np.sin(np.pi * w)
    )
    swing = np.where(after, -np.radians(30.0) * np.clip((stand - pelvis[:, 2]) / 0.2, 0, 1), swing)
    elbow = np.full(times.size, np.radians(20.0))
    joints.update(_arms(swing - tilt, swing - tilt, elbow, elbow))
    joints.update(_spine(_rx(-0.3 * tilt)))
    joints[_NECK] = _rx(-0.4 * tilt)
    trans, poses = _assemble(times, pelvis, pelvis_rot, joints)
    return trans, poses, float(fps)


def _contact_weights(z: np.ndarray, width: float = 0.002) -> np.ndarray:
    """(T, K) weights of K contact points by height (T, K): the lowest carry the body, blended
    over `width` metres so that a change of support does not jerk it."""
    w = np.exp(-(z - z.min(1, keepdims=True)) / width)
    return w / w.sum(1, keepdims=True)


def _steer(
    trans: np.ndarray, poses: np.ndarray, heading: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A straight clip turned to the world heading (T,) rad, pivoting about its feet: the body
    turns about whichever foot carries it, so a planted foot stays planted while the path bends."""
    n = trans.shape[0]
    body = poses[:, : 3 * N_BODY_JOINTS].reshape(n, N_BODY_JOINTS, 3)
    pos = _positions(trans, body)
    feet = list(FOOT_JOINTS)
    w = _contact_weights(pos[:, feet, 2])
    pivot = (w[:, :, None] * pos[:, feet, :2]).sum(1)  # (T, 2) in the straight clip
    c, s = np.cos(heading), np.sin(heading)
    rot = np.stack((np.stack((c, -s), -1), np.stack((s, c), -1)), -2)  # (T, 2, 2)
    # World = offset + R(heading) · straight; the offset moves by -ΔR · pivot, so the point the
    # body turns about does not move when the heading changes.
    mid = 0.5 * (pivot[1:] + pivot[:-1])
    step = -np.einsum("tij,tj->ti", rot[1:] - rot[:-1], mid)
    offset = np.concatenate((np.zeros((1, 2)), np.cumsum(step, axis=0)))
    pelvis = trans + mean_skeleton().rest_joints[0]
    out = pelvis.copy()
    out[:, :2] = offset + np.einsum("tij,tj->ti", rot, pelvis[:, :2])
    yaw = Rotation.from_rotvec(heading[:, None] * [0.0, 0.0, 1.0])
    poses = poses.copy()
    poses[:, :3] = (yaw * Rotation.from_rotvec(poses[:, :3])).as_rotvec()
    return out - mean_skeleton().rest_joints[0], poses


def turning(
    duration_s: float = 6.0, fps: float = 60.0, speed_m_s: float = 1.0
) -> tuple[np.ndarray, np.ndarray, float]:
    """A walk that turns left through 450° over the clip (the heading wraps past ±180° and
    past 360°), pivoting on the stance foot; the turn builds up over the first 0.75 s."""
    trans, poses = _gait(duration_s, fps, speed_m_s, 105.0)
    times = _frames(duration_s, fps)
    rate = _smoothstep(times / 0.75)
    heading = cumulative_trapezoid(rate, times, initial=0.0)
    heading *= 2.5 * np.pi / heading[-1]
    return (*_steer(trans, poses, heading), float(fps))


def long_walk(
    duration_s: float = 150.0, fps: float = 60.0, speed_m_s: float = 1.3
) -> tuple[np.ndarray, np.ndarray, float]:
    """Minutes of walking round a large circle (one lap a minute)."""
    trans, poses = _gait(duration_s, fps, speed_m_s, 110.0)
    heading = 2.0 * np.pi * _frames(duration_s, fps) / 60.0
    return (*_steer(trans, poses, heading), float(fps))


def cartwheel(
    duration_s: float = 4.0, fps: float = 120.0, turn_s: float = 2.0
) -> tuple[np.ndarray, np.ndarray, float]:
    """A cartwheel to the left: stand in a star (arms up 45° from vertical, legs 40° apart),
    roll over left foot, left hand, right hand, right foot, stand. The root is upside down
    half-way; each limb on the floor stays put while the body turns over it."""
    times = _frames(duration_s, fps)
    n = times.size
    start = 0.5 * (duration_s - turn_s)
    roll = 2.0 * np.pi * _smoothstep((times - start) / turn_s)  # one full turn
    spread = _smoothstep(times / max(start, 1e-9)) * _smoothstep(
        (duration_s - times) / max(start, 1e-9)
    )
    arm = np.radians(45.0) * spread - np.radians(_ARM_DOWN_DEG) * (1.0 - spread)
    leg = np.radians(20.0) * spread
    joints: dict[int, Rotation] = {
        _L_SHOULDER: _rz(arm),  # up from the T-pose by 45° (down by 78° before the star)
        _R_SHOULDER: _rz(-arm),
        _L_HIP: _rz(leg),
        _R_HIP: _rz(-leg),
        _L_ANKLE: _rz(-leg),  # soles stay parallel to the floor while standing
        _R_ANKLE: _rz(leg),
    }
    # Rolling to the left (world +y) turns the body about its forward axis (world +x).
    pelvis_rot = _rz(-roll)  # native z is forward: the left side goes down first
    body_pose = _body_pose(n, {**joints, _PELVIS: _root(pelvis_rot)})
    rel = _positions(np.zeros((n, 3)), body_pose)
    contacts = [_L_ANKLE, _L_FOOT, _L_WRIST, _R_WRIST, _R_FOOT, _R_ANKLE]
    z = rel[:, contacts, 2]
    low = z.min(1)
    w = _contact_weights(z)
    rate = np.gradient(rel[:, contacts, :2], times, axis=0)
    travel = -cumulative_trapezoid((w[:, :, None] * rate).sum(1), times, axis=0, initial=0.0)
    trans = np.zeros((n, 3))
    trans[:, :2] = travel
    trans[:, 2] = FOOT_JOINT_CLEARANCE_M - low
    trans, poses = _to_amass(trans, body_pose)
    return trans, poses, float(fps)


def _retimed(
    make: Callable[..., tuple[np.ndarray, np.ndarray, float]], fps: float
) -> Callable[[], tuple[np.ndarray, np.ndarray, float]]:
    return lambda: make(fps=fps)


STRESS_DIR = "Stress"
# Relative path -> (clip maker, what it stresses). Every clip is AMASS SMPL-H, faces +x at first.
STRESS_CLIPS: dict[str, tuple[Callable[[], tuple[np.ndarray, np.ndarray, float]], str]] = {
    "Stress/flight/running_poses.npz": (running, "run at 3 m/s with flight phases, 120 fps"),
    "Stress/flight/jump_poses.npz": (jump, "standing broad jump of 0.8 m, 120 fps"),
    "Stress/turn/turning_poses.npz": (turning, "walk turning 450°, heading past ±180°, 60 fps"),
    "Stress/inversion/cartwheel_poses.npz": (cartwheel, "cartwheel, root upside down, 120 fps"),
    "Stress/long/long_walk_poses.npz": (long_walk, "150 s of walking round a circle, 60 fps"),
    "Stress/rate/running_30fps_poses.npz": (_retimed(running, 30.0), "the run at 30 fps"),
    "Stress/rate/running_250fps_poses.npz": (_retimed(running, 250.0), "the run at 250 fps"),
}


# --- Writers -------------------------------------------------------------------------------------


def _betas(betas: np.ndarray | None) -> np.ndarray:
    return np.zeros(N_BETAS) if betas is None else np.asarray(betas, dtype=np.float64)


def _write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write an uncompressed .npz at exactly `path` (np.savez would append '.npz' otherwise)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def write_smplh_npz(
    path: str | Path,
    trans: np.ndarray,
    poses: np.ndarray,
    fps: float,
    gender: str = "neutral",
    betas: np.ndarray | None = None,
    dtype: DTypeLike = np.float64,
) -> Path:
    """Write a clip in AMASS SMPL-H `_poses.npz` layout."""
    n = trans.shape[0]
    return _write_npz(
        path,
        {
            "trans": np.asarray(trans, dtype=dtype),
            "gender": np.array(gender),
            "mocap_framerate": np.array(float(fps)),
            "betas": _betas(betas).astype(dtype),
            "dmpls": np.zeros((n, N_DMPLS), dtype=dtype),
            "poses": np.asarray(poses, dtype=dtype),
        },
    )


def write_smplx_npz(
    path: str | Path,
    trans: np.ndarray,
    poses: np.ndarray,
    fps: float,
    gender: str = "neutral",
    betas: np.ndarray | None = None,
    dtype: DTypeLike = np.float32,
    gender_as_bytes: bool = True,
) -> Path:
    """Write a clip (SMPL-H `poses`, T x 156) in AMASS SMPL-X `_stageii.npz` layout."""
    poses = np.asarray(poses, dtype=np.float64)
    n = poses.shape[0]
    root, body, hands = poses[:, :3], poses[:, 3:66], poses[:, 66:156]
    jaw, eyes = np.zeros((n, 3)), np.zeros((n, 6))
    b = _betas(betas)
    return _write_npz(
        path,
        {
            "gender": np.array(gender.encode()) if gender_as_bytes else np.array(gender),
            "surface_model_type": np.array("smplx"),
            "mocap_frame_rate": np.array(float(fps)),
            "trans": np.asarray(trans, dtype=dtype),
            # SMPL-X order: root, body, jaw, left eye, right eye, left hand, right hand.
            "poses": np.concatenate((root, body, jaw, eyes, hands), axis=1).astype(dtype),
            "betas": b.astype(dtype),
            "num_betas": np.array(b.size),
            "root_orient": root.astype(dtype),
            "pose_body": body.astype(dtype),
            "pose_hand": hands.astype(dtype),
            "pose_jaw": jaw.astype(dtype),
            "pose_eye": eyes.astype(dtype),
        },
    )


_README = """\
Synthetic demo corpus, generated by msconvert (msconvert.datasets.demo).

Every clip here was computed by msconvert's own code from joint-angle curves on a mean SMPL
skeleton. None of it is motion capture, none of it comes from AMASS, and no SMPL model file was
used. The files only copy AMASS's layout: *_poses.npz (SMPL-H), *_stageii.npz (SMPL-X) and a
per-subject shape.npz, z-up world, metres, axis-angle rotations; every subject faces +x.
"""


def write_demo_corpus(root: str | Path) -> list[Path]:
    """Write the synthetic AMASS-like demo tree under `root`; returns the clip files written."""
    root = Path(root)
    lab = root / "DemoLab"
    s1, s2 = lab / "subject1", lab / "subject2"
    paths = [
        write_smplh_npz(s1 / "walking_poses.npz", *walking(fps=120.0)),
        write_smplx_npz(s1 / "walking_slow_stageii.npz", *slow_walking(fps=60.0)),
        write_smplh_npz(s1 / "standing_poses.npz", *standing(fps=60.0), dtype=np.float32),
        write_smplh_npz(s2 / "squat_poses.npz", *squat(fps=100.0)),
        write_smplh_npz(s2 / "arm_raise_poses.npz", *arm_raise(fps=30.0)),
    ]
    for subject in (s1, s2):  # AMASS keeps each subject's body shape beside its clips
        _write_npz(
            subject / "shape.npz", {"betas": np.zeros(N_BETAS), "gender": np.array("neutral")}
        )
    (root / "README.txt").write_text(_README)
    return paths


_STRESS_README = """\
Synthetic stress clips, generated by msconvert (msconvert.datasets.demo.STRESS_CLIPS).

Made by msconvert's own code on a mean SMPL skeleton, like the demo corpus, in AMASS SMPL-H
layout: a run with flight phases, a broad jump, a walk turning 450° (the heading wraps), a
cartwheel (the root upside down), 150 s of walking, and the run at 30 and 250 fps. They test the
retargeting (benchmarks/retarget.py states the targets); they are not in the default demo.
"""


def write_stress_corpus(root: str | Path) -> list[Path]:
    """Write the stress clips (`STRESS_CLIPS`) under `root`/Stress; returns the files written."""
    root = Path(root)
    paths = [write_smplh_npz(root / rel, *make()) for rel, (make, _) in STRESS_CLIPS.items()]
    (root / STRESS_DIR / "README.txt").write_text(_STRESS_README)
    return paths


# --- Broken files --------------------------------------------------------------------------------

BROKEN_DIR = "BrokenLab"
GOOD_CLIP_IN_BROKEN = f"{BROKEN_DIR}/control/standing_poses.npz"

BROKEN_REASONS: dict[str, str] = {
    f"{BROKEN_DIR}/archive/truncated_poses.npz": "zip",
    f"{BROKEN_DIR}/archive/random_bytes_poses.npz": "zip",
    f"{BROKEN_DIR}/archive/zero_length_poses.npz": "empty",
    f"{BROKEN_DIR}/archive/object_array_poses.npz": "pickle",
    f"{BROKEN_DIR}/keys/missing_key_poses.npz": "missing key 'trans'",
    f"{BROKEN_DIR}/layout/width_150_poses.npz": "shape",
    f"{BROKEN_DIR}/layout/three_dims_poses.npz": "shape",
    f"{BROKEN_DIR}/layout/length_mismatch_poses.npz": "frame",
    f"{BROKEN_DIR}/layout/one_sample_poses.npz": "frame",
    f"{BROKEN_DIR}/values/nan_rotation_poses.npz": "non-finite",
    f"{BROKEN_DIR}/values/inf_position_poses.npz": "non-finite",
    f"{BROKEN_DIR}/values/integer_rotation_poses.npz": "dtype",
    f"{BROKEN_DIR}/values/alien_poses.npz": "gender",
    f"{BROKEN_DIR}/rate/zero_rate_poses.npz": "frame rate",
    f"{BROKEN_DIR}/rate/negative_rate_poses.npz": "frame rate",
    f"{BROKEN_DIR}/rate/megahertz_rate_poses.npz": "frame rate",
}
"""Each broken file (relative path) -> a lowercase substring its one-line error must contain.

The reader's messages (`datasets/amass.py`) are written to these. File names avoid containing
their own substring, so that a message which merely repeats the path does not pass.
"""


def write_broken_corpus(root: str | Path) -> dict[str, str]:
    """Write deliberately broken clip files plus one good clip; returns `BROKEN_REASONS`."""
    root = Path(root)
    trans, poses, fps = standing(duration_s=1.0, fps=30.0)
    n = trans.shape[0]
    good = root / GOOD_CLIP_IN_BROKEN
    write_smplh_npz(good, trans, poses, fps)
    data = good.read_bytes()

    def smplh(rel: str, **changes: object) -> None:
        """A valid SMPL-H file with some keys replaced (None drops the key)."""
        arrays: dict[str, object] = {
            "trans": trans,
            "gender": np.array("neutral"),
            "mocap_framerate": np.array(fps),
            "betas": np.zeros(N_BETAS),
            "dmpls": np.zeros((n, N_DMPLS)),
            "poses": poses,
        }
        arrays.update(changes)
        _write_npz(root / rel, {k: v for k, v in arrays.items() if v is not None})

    def raw(rel: str, content: bytes) -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content)

    nan_poses = poses.copy()
    nan_poses[n // 2, 3 * _L_KNEE] = np.nan
    inf_trans = trans.copy()
    inf_trans[n // 3, 0] = np.inf
    object_poses = poses.astype(object)  # loading it needs pickle

    makers: dict[str, Callable[[str], None]] = {
        "truncated_poses.npz": lambda rel: raw(rel, data[: len(data) // 2]),
        "random_bytes_poses.npz": lambda rel: raw(
            rel, np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes()
        ),
        "zero_length_poses.npz": lambda rel: raw(rel, b""),
        "object_array_poses.npz": lambda rel: smplh(rel, poses=object_poses),
        "missing_key_poses.npz": lambda rel: smplh(rel, trans=None),
        "width_150_poses.npz": lambda rel: smplh(rel, poses=poses[:, :150]),
        "three_dims_poses.npz": lambda rel: smplh(rel, poses=poses.reshape(n, 52, 3)[:, :51]),
        "length_mismatch_poses.npz": lambda rel: smplh(rel, trans=trans[:-5]),
        "one_sample_poses.npz": lambda rel: smplh(
            rel, trans=trans[:1], poses=poses[:1], dmpls=np.zeros((1, N_DMPLS))
        ),
        "nan_rotation_poses.npz": lambda rel: smplh(rel, poses=nan_poses),
        "inf_position_poses.npz": lambda rel: smplh(rel, trans=inf_trans),
        "integer_rotation_poses.npz": lambda rel: smplh(rel, poses=np.rint(poses).astype(np.int64)),
        "alien_poses.npz": lambda rel: smplh(rel, gender=np.array("alien")),
        "zero_rate_poses.npz": lambda rel: smplh(rel, mocap_framerate=np.array(0.0)),
        "negative_rate_poses.npz": lambda rel: smplh(rel, mocap_framerate=np.array(-30.0)),
        "megahertz_rate_poses.npz": lambda rel: smplh(rel, mocap_framerate=np.array(1e6)),
    }
    for rel in BROKEN_REASONS:
        makers[Path(rel).name](rel)
    return dict(BROKEN_REASONS)
