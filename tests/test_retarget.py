"""Stage 2: retargeting a Motion onto MyoFullBody (and MS-Human-700 when it is at hand)."""

from __future__ import annotations

import json
from pathlib import Path

import mujoco
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from msconvert.datasets.kinematics import forward_kinematics_arrays, mean_skeleton
from msconvert.datasets.motion import Motion, Provenance
from msconvert.emulator.model import (
    foot_contact_geoms,
    load_model,
    model_sha256,
    muscle_names,
    qpos_names,
    qvel_names,
)
from msconvert.emulator.qp import solve_box_qp_dense
from msconvert.emulator.retarget import (
    CorrespondenceError,
    IKOptions,
    RetargetConfig,
    RetargetError,
    bind,
    default_correspondence_path,
    load_correspondence,
    retarget,
    solve_ik,
)
from msconvert.emulator.retarget.derivatives import savgol_coeffs, savgol_derivatives
from msconvert.emulator.retarget.metrics import (
    TENDON_JUMP_TOLERANCE_M,
    limit_violations,
    tendon_jumps,
    unexplained_change,
)
from msconvert.emulator.retarget.rotations import quat_to_matrix

MS_HUMAN_700 = Path(__file__).resolve().parents[2] / "shared" / "models" / "ms_human_700"
METRIC_KEYS = {
    "retarget.position_error_mm",
    "retarget.position_error_mm_max",
    "retarget.orientation_error_deg",
    "retarget.joint_limit_violation_pct",
    "retarget.penetration_pct",
    "retarget.penetration_mm_max",
    "retarget.float_mm",
    "retarget.tendon_jump_pct",
    "retarget.tendon_unexplained_mm_max",
    "retarget.fps",
}
CONFIG = RetargetConfig(fps=None)  # keep the source rate: these tests do not exercise resampling


def walking(seconds: float = 2.0, fps: float = 30.0, cadence: float = 0.9) -> Motion:
    """A smooth SMPL walk: sinusoidal legs and arms, the root carried by the stance foot."""
    t = np.arange(int(round(seconds * fps))) / fps
    n = t.size
    phase = 2 * np.pi * cadence * t
    pose = np.zeros((n, 22, 3))
    pose[:, 0] = [np.pi / 2, 0.0, 0.0]  # SMPL's y-up rest frame stood in AMASS's z-up world
    for hip, knee, ankle, offset in ((1, 4, 7, 0.0), (2, 5, 8, np.pi)):
        p = phase + offset
        pose[:, hip, 0] = -0.4 * np.sin(p)  # hip flexion: negative about SMPL x (the left)
        pose[:, knee, 0] = 0.1 + 0.9 * ((1 + np.cos(p - 0.3)) / 2) ** 3
        pose[:, ankle, 0] = 0.1 * np.sin(p - 0.5)
    pose[:, 16, 2], pose[:, 17, 2] = -1.2, 1.2  # arms down from the T-pose
    pose[:, 16, 1] = pose[:, 17, 1] = 0.3 * np.sin(phase)
    pose[:, 18, 1], pose[:, 19, 1] = -0.3, 0.3  # elbows flexed (about -y left, +y right)
    skeleton = mean_skeleton()
    fk = forward_kinematics_arrays(np.zeros((n, 3)), pose, skeleton)
    for ankle, toe in ((7, 10), (8, 11)):  # toes stay level while the heel rises
        fwd = fk.rotations[:, ankle] @ np.array([0.0, 0.0, 1.0])
        pitch = np.arctan2(-fwd[:, 2], np.linalg.norm(fwd[:, :2], axis=1))
        pose[:, toe, 0] = -np.clip(pitch, 0, None)
    rel = forward_kinematics_arrays(np.zeros((n, 3)), pose, skeleton).positions
    feet = rel[:, [[7, 10], [8, 11]]].mean(2)  # (T, foot, 3) relative to the root
    # A leg is in stance while its hip extends (cos(phase) < 0); the root moves so that foot stays.
    left = 0.5 * (1 - np.tanh(np.cos(phase) / 0.15))
    w = np.stack((left, 1 - left), axis=1)
    trans = -np.cumsum((w[..., None] * np.gradient(feet, 1 / fps, axis=0)).sum(1), axis=0) / fps
    low = rel[:, [7, 8, 10, 11], 2].min(1)
    trans[:, 2] = 0.05 - low  # the lowest foot joint 5 cm above the floor, as SMPL's feet are
    prov = Provenance(path="synthetic", relpath="synthetic/walk", size=0, sha256="0" * 64)
    return Motion(
        clip_id="synthetic/walk",
        fps=fps,
        root_translation=trans,
        body_pose=pose,
        hand_pose=None,
        betas=np.zeros(16),
        gender="neutral",
        body_model="smplh",
        provenance=prov,
    )


@pytest.fixture(scope="module")
def model() -> mujoco.MjModel:
    return load_model()


@pytest.fixture(scope="module")
def binding(model: mujoco.MjModel):
    return bind(load_correspondence(default_correspondence_path(model)), model, mean_skeleton())


@pytest.fixture(scope="module")
def walk_reference(model: mujoco.MjModel):
    return retarget(walking(), model, CONFIG)


def model_targets(
    model: mujoco.MjModel, binding, qpos: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The model's own correspondence points and body orientations along a qpos trajectory."""
    data = mujoco.MjData(model)
    pos = np.empty((len(qpos), binding.body.size, 3))
    quat = np.empty((len(qpos), binding.body.size, 4))
    for i, q in enumerate(qpos):
        data.qpos[:] = q
        mujoco.mj_kinematics(model, data)
        xmat = data.xmat[binding.body].reshape(-1, 3, 3)
        pos[i] = data.xpos[binding.body] + np.einsum("cij,cj->ci", xmat, binding.offset)
        quat[i] = data.xquat[binding.body]
    return pos, quat


def random_trajectory(
    model, binding, frames: int, fps: float, reach: float, seed: int
) -> np.ndarray:
    """Smooth random motion of every driven joint around its mid-range, root walking and turning.

    reach is the amplitude as a fraction of half the range; above 1 the joints leave their ranges.
    """
    space = binding.space
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / fps
    qpos = np.repeat(space.neutral[None], frames, axis=0)
    for c in np.flatnonzero((space.qadr >= 0) & ~space.is_root):
        lo, hi = space.lower[c], space.upper[c]
        wave = np.sin(2 * np.pi * rng.uniform(0.2, 1.0) * t + rng.uniform(0, 2 * np.pi))
        qpos[:, space.qadr[c]] = (lo + hi) / 2 + reach * (hi - lo) / 2 * wave
    qpos[:, 0] += 0.8 * t
    qpos[:, 2] += 0.02 * np.sin(3 * t)
    yaw = 0.5 * np.sin(t)
    qpos[:, 3:7] = np.stack((np.cos(yaw / 2), 0 * yaw, 0 * yaw, np.sin(yaw / 2)), axis=1)
    space.couplings.apply(qpos)
    return qpos


def coupling_residual(binding, qpos: np.ndarray) -> float:
    coupled = qpos.copy()
    binding.space.couplings.apply(coupled)
    return float(np.abs(coupled - qpos).max())


# --- the solver on the model's own motion ------------------------------------------------------


def test_known_answer_recovers_points_with_limits_and_couplings(model, binding):
    qpos = random_trajectory(model, binding, frames=40, fps=30.0, reach=0.8, seed=0)
    pos, quat = model_targets(model, binding, qpos)
    # The solver's own accuracy: the default smoothness and posture pulls are a deliberate bias
    # (lag of a few mm at these speeds), so they are turned down here.
    result = solve_ik(model, binding, pos, quat, IKOptions(smooth_weight=1e-5, posture_weight=1e-6))
    got, _ = model_targets(model, binding, result.qpos)
    err_mm = np.linalg.norm(got - pos, axis=-1) * 1000
    assert err_mm.max() < 2.0, err_mm.max()
    assert not limit_violations(model, result.qpos).any()
    assert coupling_residual(binding, result.qpos) < 1e-12
    # Fingers and every other undriven joint stay at the neutral pose.
    driven = set(binding.space.qadr.tolist()) | set(
        binding.space.couplings.slave_qadr[binding.space.coupled].tolist()
    )
    free = [model.jnt_qposadr[0] + k for k in range(7)]
    undriven = sorted(set(range(model.nq)) - driven - set(free))
    assert np.abs(result.qpos[:, undriven] - binding.space.neutral[undriven]).max() < 1e-12
    finger = qpos_names(model).index("mcp2_flexion_r")
    assert finger in undriven


def test_out_of_range_source_is_clamped_without_violations(model, binding):
    qpos = random_trajectory(model, binding, frames=30, fps=30.0, reach=1.6, seed=1)
    assert limit_violations(model, qpos).mean() > 0.5  # the source itself leaves the ranges
    pos, quat = model_targets(model, binding, qpos)
    result = solve_ik(model, binding, pos, quat)
    assert not limit_violations(model, result.qpos).any()
    assert coupling_residual(binding, result.qpos) < 1e-12
    assert np.isfinite(result.qpos).all()


def test_box_qp_meets_the_optimality_conditions():
    rng = np.random.default_rng(3)
    for _ in range(50):
        a = rng.normal(size=(12, 8))
        h = a.T @ a + 1e-3 * np.eye(8)
        g = rng.normal(size=8) * 3
        lower, upper = -rng.uniform(0, 0.5, 8), rng.uniform(0, 0.5, 8)
        lower[:2] = 0.0  # variables sitting on a bound
        x = solve_box_qp_dense(h, g, lower, upper)
        grad = h @ x + g
        assert np.all(x >= lower - 1e-12) and np.all(x <= upper + 1e-12)
        inside = (x > lower + 1e-9) & (x < upper - 1e-9)
        assert np.abs(grad[inside]).max(initial=0) < 1e-8
        assert np.all(grad[x <= lower + 1e-9] >= -1e-8) and np.all(grad[x >= upper - 1e-9] <= 1e-8)


def test_coupling_derivatives_match_finite_differences(model, binding):
    space = binding.space
    qpos = random_trajectory(model, binding, frames=5, fps=30.0, reach=0.7, seed=2)[3]
    cmap = space.coupling_map(qpos)
    eps = 1e-6
    for col in np.flatnonzero(space.qadr >= 0):
        plus, minus = qpos.copy(), qpos.copy()
        plus[space.qadr[col]] += eps
        minus[space.qadr[col]] -= eps
        space.couplings.apply(plus)
        space.couplings.apply(minus)
        slaves = space.couplings.slave_qadr[space.coupled]
        numeric = (plus[slaves] - minus[slaves]) / (2 * eps)
        np.testing.assert_allclose(cmap[space.size :, col], numeric, atol=1e-6)


# --- the whole stage on a source clip ----------------------------------------------------------


def test_walking_reference_fields_and_metrics(model, walk_reference):
    ref = walk_reference
    t = walking().n_frames
    assert ref.qpos.shape == (t, model.nq) and ref.qvel.shape == (t, model.nv)
    assert ref.qacc.shape == (t, model.nv)
    assert len(ref.qpos_names) == model.nq and len(ref.qvel_names) == model.nv
    assert ref.qpos_names[:3] == ("root:x", "root:y", "root:z")
    assert ref.body_pos.shape == (t, len(ref.body_names), 3)
    assert ref.position_error_m.shape == (t, len(ref.correspondence_names))
    assert set(ref.metrics) == METRIC_KEYS
    assert all(np.isfinite(v) for v in ref.metrics.values())
    assert ref.metrics["retarget.position_error_mm"] <= 20.0
    assert ref.metrics["retarget.joint_limit_violation_pct"] == 0.0
    assert ref.metrics["retarget.penetration_pct"] <= 0.2
    assert ref.metrics["retarget.tendon_jump_pct"] <= 1.0
    assert ref.metrics["retarget.float_mm"] < 10.0
    assert ref.filled_frames == 0
    assert ref.model_name == "myofullbody" and ref.model_sha256 == model_sha256(model)
    assert ref.stance.any(axis=0).all()  # each foot is found in stance somewhere
    # qvel agrees with central differences of qpos (smoothing aside).
    fd = np.zeros((t - 2, model.nv))
    for i in range(1, t - 1):
        mujoco.mj_differentiatePos(model, fd[i - 1], 2 / ref.fps, ref.qpos[i - 1], ref.qpos[i + 1])
    assert np.linalg.norm(ref.qvel[1:-1] - fd) < 0.1 * np.linalg.norm(fd)


def test_limb_lengths_match_the_model(binding, walk_reference):
    ref = walk_reference
    names = ref.correspondence_names
    for child, parent in (("knee_l", "hip_l"), ("ankle_r", "knee_r"), ("wrist_l", "elbow_l")):
        c, p = names.index(child), names.index(parent)
        source = np.linalg.norm(ref.target_pos[:, c] - ref.target_pos[:, p], axis=-1)
        model_len = np.linalg.norm(binding.model_rest[c] - binding.model_rest[p])
        np.testing.assert_allclose(source, model_len, rtol=1e-9)


def test_uniform_scaling_and_config_checks(model, walk_reference):
    ref = retarget(walking(), model, RetargetConfig(fps=None, scaling="uniform"))
    # Same clip, but limbs at the source's proportions: reachable only approximately.
    segment = walk_reference.metrics["retarget.position_error_mm"]
    assert segment < ref.metrics["retarget.position_error_mm"] <= 25.0
    with pytest.raises(ValueError, match="scaling must be one of"):
        RetargetConfig(scaling="bogus")
    with pytest.raises(ValueError, match="fps"):
        RetargetConfig(fps=0.0)


def test_ground_correction_undoes_a_clip_sunk_5cm(model, walk_reference):
    motion = walking()
    sunk = motion.replace(root_translation=motion.root_translation - [0.0, 0.0, 0.05])
    ref = retarget(sunk, model, CONFIG)
    assert ref.metrics["retarget.penetration_pct"] <= 0.2
    assert ref.metrics["retarget.penetration_mm_max"] <= 1.0
    assert ref.metrics["retarget.float_mm"] < 10.0
    # The shift lifts the sunk clip back by the uniformly scaled 5 cm, frame by frame.
    lift = ref.ground_shift_m - walk_reference.ground_shift_m
    np.testing.assert_allclose(lift, lift.mean(), atol=1e-3)
    assert 0.045 < lift.mean() < 0.06
    np.testing.assert_allclose(ref.qpos[:, 2], walk_reference.qpos[:, 2], atol=1e-3)


def test_short_nan_gaps_are_filled_and_counted(model):
    motion = walking()
    pose = motion.body_pose.copy()
    trans = motion.root_translation.copy()
    pose[10:13, 4] = np.nan
    trans[30] = np.inf
    ref = retarget(motion.replace(body_pose=pose, root_translation=trans), model, CONFIG)
    assert ref.filled_frames == 4
    assert np.isfinite(ref.qpos).all() and np.isfinite(ref.qvel).all()
    assert ref.metrics["retarget.position_error_mm"] <= 20.0


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        (slice(5, 16), "consecutive non-finite frames"),
        (slice(None), "no frame has finite values"),
    ],
)
def test_broken_sources_fail_with_one_line(model, frames, reason):
    motion = walking()
    pose = motion.body_pose.copy()
    pose[frames] = np.nan
    with pytest.raises(RetargetError, match=reason) as info:
        retarget(motion.replace(body_pose=pose), model, CONFIG)
    assert "\n" not in str(info.value)


def test_scattered_bad_frames_beyond_the_fraction_fail(model):
    motion = walking()
    trans = motion.root_translation.copy()
    trans[::3] = np.nan  # single frames, but a third of the clip
    with pytest.raises(RetargetError, match="frames have non-finite values"):
        retarget(motion.replace(root_translation=trans), model, CONFIG)


def test_resampling_to_the_control_rate(model):
    pytest.importorskip("msconvert.datasets.resample")
    motion = walking(fps=60.0)
    ref = retarget(motion, model, RetargetConfig(fps=30.0))
    assert ref.fps == 30.0 and not ref.notes
    assert abs(ref.n_frames - (round(motion.duration_s * 30.0) + 1)) <= 1


def test_a_clip_facing_away_from_the_model(model, walk_reference):
    motion = walking()
    turn = Rotation.from_euler("z", 180, degrees=True)
    pose = motion.body_pose.copy()
    pose[:, 0] = (turn * Rotation.from_rotvec(pose[:, 0])).as_rotvec()
    rest = mean_skeleton().rest_joints[0]  # the root rotates about the root joint
    trans = turn.apply(motion.root_translation + rest) - rest + [3.0, -2.0, 0.0]
    ref = retarget(motion.replace(body_pose=pose, root_translation=trans), model, CONFIG)
    np.testing.assert_allclose(ref.position_error_m, walk_reference.position_error_m, atol=1e-4)


# --- pieces ------------------------------------------------------------------------------------


def test_free_joint_velocity_from_quaternions(model):
    fps, w = 50.0, np.array([0.3, -0.5, 0.8])
    t = np.arange(40) / fps
    qpos = np.repeat(model.qpos0[None], t.size, axis=0)
    qpos[:, 3:7] = Rotation.from_rotvec(np.outer(t, w)).as_quat(scalar_first=True)
    qpos[:, 3:7] *= np.where(np.arange(t.size) % 2, -1.0, 1.0)[:, None]  # sign flips change nothing
    qpos[:, 0] = 0.5 * t**2
    qvel, qacc = savgol_derivatives(model, qpos, fps, 0.15, 3)
    np.testing.assert_allclose(qvel[:, 3:6], np.broadcast_to(w, (t.size, 3)), atol=1e-9)
    np.testing.assert_allclose(qvel[:, 0], t, atol=1e-9)
    np.testing.assert_allclose(qacc[:, 0], 1.0, atol=1e-6)
    np.testing.assert_allclose(qacc[:, 3:6], 0.0, atol=1e-6)


def test_savgol_weights_are_scipys():
    from scipy.signal import savgol_coeffs as scipy_savgol_coeffs

    for w, order in [(3, 1), (5, 2), (7, 3), (9, 3), (11, 4), (15, 3)]:
        for deriv in (0, 1, 2):
            for pos in range(w):
                expected = scipy_savgol_coeffs(
                    w, order, deriv=deriv, delta=0.02, pos=pos, use="dot"
                )
                np.testing.assert_array_equal(savgol_coeffs(w, order, deriv, 0.02, pos), expected)
    np.testing.assert_array_equal(savgol_coeffs(5, 1, 2, 0.02, 2), np.zeros(5))


def test_tendon_jumps_flag_unexplained_changes_not_speed():
    fps = 50.0
    t = np.arange(200) / fps
    # Two muscles over one joint with constant moment arms; the joint speeds up tenfold at
    # frame 100, which the old running-mean test called a jump. Speed is not a jump.
    q = np.where(t < 2.0, 0.1 * t, 0.2 + 2.0 * (t - 2.0))
    arms = np.array([0.03, -0.02])
    lengths = 0.3 + q[:, None] * arms
    explained = np.diff(q)[:, None] * arms
    assert not tendon_jumps(lengths, explained).any()
    flipped = lengths.copy()  # a wrapping flip: 1 cm more with no joint change
    flipped[120:, 1] += 0.01
    assert np.flatnonzero(tendon_jumps(flipped, explained)).tolist() == [120]
    assert unexplained_change(flipped, explained).max() == pytest.approx(0.01)
    small = lengths.copy()  # below the stated tolerance
    small[120:, 0] += 0.5 * TENDON_JUMP_TOLERANCE_M
    assert not tendon_jumps(small, explained).any()


def test_moment_arms_explain_the_walks_muscle_lengths(model, walk_reference):
    # Smooth paths: the trapezoidal R̄·Δq matches every step far inside the tolerance.
    assert walk_reference.metrics["retarget.tendon_unexplained_mm_max"] < 0.1
    assert walk_reference.metrics["retarget.tendon_jump_pct"] == 0.0


def test_model_helpers(model):
    names = muscle_names(model)
    assert len(names) == 416
    geoms = foot_contact_geoms(model, ["calcn_r", "toes_r"])
    assert geoms.size > 0 and set(model.geom_bodyid[geoms]) <= {
        model.body("calcn_r").id,
        model.body("toes_r").id,
    }
    assert len(model_sha256(model)) == 64
    assert len(qvel_names(model)) == model.nv


def test_correspondence_file_from_any_path(model, tmp_path):
    doc = json.loads(default_correspondence_path(model).read_text())
    doc["correspondences"] = [c for c in doc["correspondences"] if c["name"] != "head"]
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(doc))
    ref = retarget(walking(seconds=1.0), model, RetargetConfig(fps=None, correspondence=str(path)))
    assert "head" not in ref.correspondence_names
    doc["correspondences"][0]["source"] = "tail"
    path.write_text(json.dumps(doc))
    with pytest.raises(CorrespondenceError, match="SMPL body joint"):
        load_correspondence(path)


def test_calibration_facing_the_wrong_way_is_refused(model, tmp_path):
    doc = json.loads(default_correspondence_path(model).read_text())
    swap = {"left": "right", "right": "left"}
    for c in doc["correspondences"]:  # left and right swapped: the source faces the other way
        side, _, rest = c["source"].partition("_")
        c["source"] = f"{swap[side]}_{rest}" if side in swap else c["source"]
    path = tmp_path / "mirrored.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(CorrespondenceError, match="calibration pose"):
        bind(load_correspondence(path), model, mean_skeleton())


@pytest.mark.skipif(not (MS_HUMAN_700 / "MS-Human-700.xml").is_file(), reason="MS-Human-700 absent")
def test_ms_human_700_retargets_a_short_walk():
    model = load_model(MS_HUMAN_700 / "MS-Human-700.xml")
    assert default_correspondence_path(model).name == "retarget_ms_human_700.json"
    ref = retarget(walking(seconds=1.0), model, CONFIG)
    assert ref.qpos.shape == (30, model.nq)
    assert set(ref.metrics) == METRIC_KEYS
    assert ref.metrics["retarget.position_error_mm"] <= 25.0
    assert ref.metrics["retarget.joint_limit_violation_pct"] == 0.0
    assert ref.metrics["retarget.penetration_pct"] <= 0.2
    # Its root is three slides and three hinges, not a free joint; the ground still lifts it.
    assert ref.qpos_names[:3] == ("pelvis_tz", "pelvis_ty", "pelvis_tx")


# --- the floor, fast motion and the stress clips ------------------------------------------------


def test_lowest_surface_points_lie_on_the_geoms_and_lowest():
    from msconvert.emulator.retarget.ground import lowest_points, lowest_surface_points

    xml = """<mujoco><worldbody><body><freejoint/>
      <geom type="sphere" size="0.03"/>
      <geom type="capsule" size="0.02 0.08" pos="0.1 0 0" euler="30 40 10"/>
      <geom type="ellipsoid" size="0.08 0.03 0.04" pos="0 0.1 0" euler="-20 10 60"/>
      <geom type="box" size="0.05 0.02 0.03" pos="0 0 0.1" euler="15 -35 5"/>
      <geom type="cylinder" size="0.03 0.05" pos="0.1 0.1 0" euler="70 20 0"/>
    </body></worldbody></mujoco>"""
    toy = mujoco.MjModel.from_xml_string(xml)
    data = mujoco.MjData(toy)
    geoms = np.arange(toy.ngeom)
    rng = np.random.default_rng(3)
    for _ in range(5):
        data.qpos[3:7] = Rotation.random(random_state=rng).as_quat(scalar_first=True)
        mujoco.mj_kinematics(toy, data)
        pos, mat = data.geom_xpos[geoms], data.geom_xmat[geoms].reshape(-1, 3, 3)
        low = lowest_surface_points(toy, geoms, pos, mat)
        np.testing.assert_allclose(low[:, 2], lowest_points(toy, geoms, pos[None], mat[None])[0])
        for g in geoms:  # no point of the surface is lower; the point is on the surface
            local = mat[g].T @ (low[g] - pos[g])
            s = toy.geom_size[g]
            kind = toy.geom_type[g]
            if kind == mujoco.mjtGeom.mjGEOM_SPHERE:
                assert np.linalg.norm(local) == pytest.approx(s[0])
            elif kind == mujoco.mjtGeom.mjGEOM_ELLIPSOID:
                assert np.sum((local / s) ** 2) == pytest.approx(1.0)
            elif kind == mujoco.mjtGeom.mjGEOM_BOX:
                assert np.max(np.abs(local) / s) == pytest.approx(1.0)
            # Sampled surface points of the geom are never below the lowest point.
            dirs = rng.normal(size=(4000, 3))
            dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
            if kind == mujoco.mjtGeom.mjGEOM_CAPSULE:
                ends = np.where(dirs[:, 2:] >= 0, 1.0, -1.0) * [0, 0, s[1]]
                pts = ends + s[0] * dirs
            elif kind == mujoco.mjtGeom.mjGEOM_CYLINDER:
                rim = dirs * [1, 1, 0] / np.linalg.norm(dirs[:, :2], axis=1)[:, None]
                pts = s[0] * rim + rng.uniform(-1, 1, (4000, 1)) * [0, 0, s[1]]
            elif kind == mujoco.mjtGeom.mjGEOM_BOX:
                pts = np.clip(dirs * 10, -1, 1) * s
            elif kind == mujoco.mjtGeom.mjGEOM_ELLIPSOID:
                pts = dirs * s
            else:
                pts = dirs * s[0]
            world = pos[g] + pts @ mat[g].T
            assert world[:, 2].min() >= low[g, 2] - 1e-9


def stress_motion(name: str) -> Motion:
    """A stress clip of the demo generator, read back like a file (clip id = its path)."""
    from msconvert.datasets import demo

    rel = next(r for r in demo.STRESS_CLIPS if r.rsplit("/", 1)[-1] == f"{name}_poses.npz")
    make = demo.STRESS_CLIPS[rel][0]
    trans, poses, fps = make(duration_s=20.0) if name == "long_walk" else make()
    n = trans.shape[0]
    return Motion(
        clip_id=rel,
        fps=fps,
        root_translation=trans,
        body_pose=poses[:, :66].reshape(n, 22, 3),
        hand_pose=None,
        betas=np.zeros(16),
        gender="neutral",
        body_model="smplh",
        provenance=Provenance(path="synthetic", relpath=rel, size=0, sha256="0" * 64),
    )


# The targets every stress clip must meet (benchmarks/retarget.py STRESS_TARGETS, but frames/s,
# which belongs to the benchmark's pinned core).
STRESS_TARGETS = {
    "retarget.position_error_mm": 15.0,
    "retarget.position_error_mm_max": 60.0,
    "retarget.orientation_error_deg": 8.0,
    "retarget.joint_limit_violation_pct": 0.0,
    "retarget.penetration_pct": 0.2,
    "retarget.tendon_jump_pct": 0.5,
}


@pytest.mark.parametrize(
    "name",
    ["running", "jump", "turning", "cartwheel", "long_walk", "running_30fps", "running_250fps"],
)
def test_stress_clips_meet_their_targets(model, name):
    ref = retarget(stress_motion(name), model, RetargetConfig())
    for key, bound in STRESS_TARGETS.items():
        assert ref.metrics[key] <= bound, (name, key, ref.metrics[key])
    assert ref.metrics["retarget.float_mm"] <= 3.0
    if name == "cartwheel":  # really upside down: the pelvis's up axis points at the floor
        up = np.array([quat_to_matrix(q)[:, 2] for q in ref.qpos[:, 3:7]])
        assert up[:, 2].min() < -0.9


def test_stance_feet_touch_the_floor_on_the_demo_walks(model):
    from msconvert.datasets import demo

    for make in (demo.walking, demo.slow_walking):
        trans, poses, fps = make()
        n = trans.shape[0]
        motion = walking().replace(
            fps=fps, root_translation=trans, body_pose=poses[:, :66].reshape(n, 22, 3)
        )
        ref = retarget(motion, model, RetargetConfig())
        # 10.3 and 5.8 mm before the floor joined the IK (blur-and-lift of a root shift only).
        assert ref.metrics["retarget.float_mm"] < 2.5
        assert ref.metrics["retarget.penetration_pct"] <= 0.2
        assert ref.metrics["retarget.position_error_mm"] <= 10.0


def test_fast_frames_iterate_until_they_settle(model, binding):
    # The sprint outruns a warm start with two steps a frame: extra steps keep it on target.
    from msconvert.datasets import demo

    trans, poses, fps = demo.running(duration_s=2.0, speed_m_s=5.0, cadence_steps_min=190.0)
    n = trans.shape[0]
    motion = walking().replace(
        fps=fps, root_translation=trans, body_pose=poses[:, :66].reshape(n, 22, 3)
    )
    two = retarget(motion, model, RetargetConfig(ik=IKOptions(max_iterations=2)))
    settled = retarget(motion, model, RetargetConfig())
    assert settled.metrics["retarget.position_error_mm_max"] < 40.0
    assert (
        two.metrics["retarget.position_error_mm_max"]
        > settled.metrics["retarget.position_error_mm_max"]
    )
