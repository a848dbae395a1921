"""The synthetic demo corpus: plausible kinematics, exact AMASS layouts, and broken files."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from msconvert.datasets import demo
from msconvert.datasets.kinematics import forward_kinematics_arrays, mean_skeleton

CLEAR = demo.FOOT_JOINT_CLEARANCE_M
LEFT_FOOT, RIGHT_FOOT = [7, 10], [8, 11]  # ankle and ball of each foot
HIP, KNEE, ANKLE = {"L": 1, "R": 2}, {"L": 4, "R": 5}, {"L": 7, "R": 8}
CLIPS = ("walking", "slow_walking", "standing", "squat", "arm_raise")


def fk(trans: np.ndarray, poses: np.ndarray):
    return forward_kinematics_arrays(trans, poses[:, :66].reshape(-1, 22, 3), mean_skeleton())


@pytest.fixture(scope="module")
def clips() -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    return {name: getattr(demo, name)() for name in CLIPS}


def lowest(pos: np.ndarray, foot: list[int]) -> np.ndarray:
    """Height of a foot's lowest joint per frame."""
    return pos[:, foot, 2].min(axis=1)


def sole_points(traj, foot: list[int]) -> np.ndarray:
    """(T, 2, 3) a foot's heel (under the ankle at the ball's rest height, moving with the foot)
    and ball: where the walks' feet meet the floor."""
    ankle, ball = foot
    heel = np.array([0.0, mean_skeleton().offsets[ball][1], 0.0])  # native y is up
    heel_pos = traj.positions[:, ankle] + traj.rotations[:, ankle] @ heel
    return np.stack((heel_pos, traj.positions[:, ball]), axis=1)


def facing(rotations: np.ndarray) -> np.ndarray:
    """Unit horizontal direction the pelvis faces (SMPL's native +z), per frame."""
    f = (rotations[:, 0] @ np.array([0.0, 0.0, 1.0]))[:, :2]
    return f / np.linalg.norm(f, axis=1, keepdims=True)


# --- Skeleton and conventions --------------------------------------------------------------------


def test_zero_pose_gives_the_rest_skeleton():
    skeleton = mean_skeleton()
    traj = forward_kinematics_arrays(np.zeros((1, 3)), np.zeros((1, 22, 3)), skeleton)
    np.testing.assert_allclose(traj.positions[0, 0], skeleton.rest_joints[0], atol=1e-12)
    np.testing.assert_allclose(traj.positions[0], skeleton.rest_joints, atol=1e-12)


def test_root_orientation_stands_smpl_up_facing_plus_x():
    skeleton = mean_skeleton()
    pose = np.zeros((1, 22, 3))
    pose[0, 0] = demo.SMPL_TO_WORLD.as_rotvec()
    pos = forward_kinematics_arrays(np.zeros((1, 3)), pose, skeleton).positions[0]
    assert pos[15, 2] - pos[0, 2] > 0.5  # head above pelvis: z is up
    assert pos[1, 1] > pos[2, 1]  # the left hip is on +y, so the body faces +x
    assert pos[10, 0] > pos[7, 0] + 0.1  # toes ahead of the ankle along +x


@pytest.mark.parametrize(
    ("joint", "axis", "angle", "child", "moves"),
    [
        (1, 0, -0.5, 4, +1),  # hip flexion is negative about x: the knee goes forward (+z)
        (4, 0, +0.5, 7, -1),  # knee flexion is positive about x: the ankle goes back
        (7, 0, -0.3, 10, +1),  # ankle dorsiflexion is negative about x: the toes go up
    ],
)
def test_documented_sign_conventions(joint, axis, angle, child, moves):
    skeleton = mean_skeleton()
    pose = np.zeros((1, 22, 3))
    pose[0, joint, axis] = angle
    pos = forward_kinematics_arrays(np.zeros((1, 3)), pose, skeleton).positions[0]
    delta = pos[child] - skeleton.rest_joints[child]
    coord = 1 if joint == 7 else 2  # toes: height (y); knee and ankle: forward (z)
    assert moves * delta[coord] > 0.02


def test_clips_are_deterministic_and_in_amass_layout(clips):
    for name, (trans, poses, fps) in clips.items():
        assert trans.dtype == poses.dtype == np.float64
        assert trans.shape == (poses.shape[0], 3) and poses.shape[1] == 156, name
        assert np.all(poses[:, 66:] == 0.0), "fingers stay at rest"
        assert np.isfinite(trans).all() and np.isfinite(poses).all()
        assert 2.0 <= (poses.shape[0] - 1) / fps <= 5.0
    again = demo.standing()  # the seeded sway
    np.testing.assert_array_equal(again[1], clips["standing"][1])


# --- Feet on the floor ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["standing", "squat", "arm_raise"])
def test_feet_stay_flat_on_the_floor(clips, name):
    trans, poses, _ = clips[name]
    pos = fk(trans, poses).positions
    for foot in (LEFT_FOOT, RIGHT_FOOT):
        low = lowest(pos, foot)
        assert low.min() >= CLEAR - 1e-9 and low.max() < 0.08, (name, low.min(), low.max())
        slide = np.linalg.norm(pos[:, foot, :2] - pos[:1, foot, :2], axis=2).max()
        assert slide < 0.01, (name, slide)


def test_standing_sways_by_millimetres(clips):
    trans, poses, _ = clips["standing"]
    pos = fk(trans, poses).positions
    sway = np.ptp(pos[:, 0, :2], axis=0)
    assert 0.002 < sway[0] < 0.015 and sway[1] < 0.01


def test_squat_reaches_ninety_degrees_with_the_mass_over_the_feet(clips):
    trans, poses, _ = clips["squat"]
    pos = fk(trans, poses).positions
    bottom = int(np.argmin(pos[:, 0, 2]))
    assert 0.2 < pos[0, 0, 2] - pos[bottom, 0, 2] < 0.35, "the pelvis descends"
    assert 85.0 < knee_flexion_deg(pos, fk(trans, poses).rotations, "L")[bottom] < 95.0
    com = demo.centre_of_mass(pos)[:, 0]
    heel, toe = pos[:, [7, 8], 0].mean(1) - 0.05, pos[:, [10, 11], 0].mean(1)
    assert np.all((com > heel) & (com < toe)), "the centre of mass stays over the feet"
    wrist_ahead = pos[bottom, [20, 21], 0] - pos[bottom, [16, 17], 0]
    assert np.all(wrist_ahead > 0.35), "arms reach forward"


# --- Walking -------------------------------------------------------------------------------------


def knee_flexion_deg(pos: np.ndarray, rot: np.ndarray, side: str) -> np.ndarray:
    """Sagittal knee flexion from positions: thigh-shank angle in the plane normal to the thigh's
    lateral axis, relative to the same angle in the rest pose."""

    def angle(p: np.ndarray, normal: np.ndarray) -> np.ndarray:
        thigh = p[:, KNEE[side]] - p[:, HIP[side]]
        shank = p[:, ANKLE[side]] - p[:, KNEE[side]]
        cross = np.einsum("ti,ti->t", np.cross(thigh, shank), normal)
        return np.degrees(np.arctan2(cross, np.einsum("ti,ti->t", thigh, shank)))

    rest = mean_skeleton().rest_joints[None]
    rest_angle = angle(rest, np.array([[1.0, 0.0, 0.0]]))
    return angle(pos, rot[:, HIP[side]] @ np.array([1.0, 0.0, 0.0])) - rest_angle


# The walks land softly: their pelvis height is smoothed over ~50 ms at each heel strike, so a
# landing foot can float up to about a centimetre before it carries the body.
SOFT_LANDING = 0.012


def stance_runs(low: np.ndarray, tolerance: float = 0.002) -> list[np.ndarray]:
    """Frame ranges where a foot is on the floor, excluding runs cut by the clip's ends."""
    on = low < CLEAR + tolerance
    runs = np.split(np.arange(on.size), np.flatnonzero(np.diff(on.astype(int))) + 1)
    return [r for r in runs if on[r[0]] and r[0] > 0 and r[-1] < on.size - 1]


@pytest.mark.parametrize(
    ("name", "speed", "cadence"), [("walking", 1.3, 110.0), ("slow_walking", 0.8, 85.0)]
)
def test_walking_gait(clips, name, speed, cadence):
    trans, poses, fps = clips[name]
    traj = fk(trans, poses)
    pos, rot = traj.positions, traj.rotations
    duration = (pos.shape[0] - 1) / fps

    # The pelvis advances at the requested speed, in the direction it faces.
    advance = pos[-1, 0, :2] - pos[0, 0, :2]
    assert abs(np.linalg.norm(advance) / duration - speed) < 0.1 * speed
    heading = facing(rot).mean(axis=0)
    cos = advance @ heading / np.linalg.norm(advance) / np.linalg.norm(heading)
    assert cos > np.cos(np.radians(5.0)), "walking direction = facing direction"

    touchdowns = []
    for foot in (LEFT_FOOT, RIGHT_FOOT):
        points = sole_points(traj, foot)
        low = points[..., 2].min(axis=1)
        assert low.min() >= CLEAR - 1e-9, "no heel or ball below the floor"
        # (a landing foot hovering at the tolerance can flicker in and out for a frame or two)
        runs = [r for r in stance_runs(low, SOFT_LANDING) if r.size > 0.1 * fps]
        stance = np.concatenate(runs)
        assert np.mean(low[stance] - CLEAR) < 0.004, "stance feet are on the floor, not above it"
        assert len(runs) >= 2, "each foot alternates stance and swing"
        assert low.max() > CLEAR + 0.08, "the swing foot is raised by several cm"
        for run in runs:  # stance: heel and ball nearly still while on the floor
            for p in range(2):
                down = run[points[run, p, 2] < CLEAR + 0.002]
                path = np.linalg.norm(np.diff(points[down, p, :2], axis=0), axis=1).sum()
                assert path < 0.02, (name, p, path)
        touchdowns += [r[0] / fps for r in runs]
        # Feet move forward along the facing direction, over the clip and in every swing.
        ankle_v = np.gradient(pos[:, foot[0], :2], 1.0 / fps, axis=0) @ heading
        assert ankle_v.min() > -0.1 and ankle_v.max() > 2.0 * speed
    steps = np.diff(np.sort(touchdowns))
    assert abs(60.0 / steps.mean() - cadence) < 0.03 * cadence, "step frequency = cadence"
    assert steps.min() > 0.8 * steps.mean(), "left and right alternate evenly"

    # Knees flex to ~60° in swing and always bend forward-convex.
    for side in ("L", "R"):
        flexion = knee_flexion_deg(pos, rot, side)
        assert 55.0 < flexion.max() < 66.0, flexion.max()
        assert flexion.min() > -3.0
        hip, knee, ankle = pos[:, HIP[side]], pos[:, KNEE[side]], pos[:, ANKLE[side]]
        ahead = np.einsum("ti,ti->t", (knee - 0.5 * (hip + ankle))[:, :2], facing(rot))
        bent = flexion > 10.0
        assert np.all(ahead[bent] > 0.0), "knees bend forward, not backward"


@pytest.mark.parametrize("name", ["walking", "slow_walking"])
def test_walking_pelvis_accelerates_like_a_human_one(clips, name):
    """Vertical ground force = m·(g + a_z): a walk's peaks are 1.1-1.3 body weights, so the
    pelvis's vertical acceleration stays within about ±0.5 g (a rigid heel strike gave ~5 g)."""
    trans, _, fps = clips[name]
    az = np.gradient(np.gradient(trans[:, 2], 1.0 / fps), 1.0 / fps) / 9.81
    assert np.abs(az).max() < 0.5, (name, az.min(), az.max())


def test_walking_has_a_vertical_bob_and_swinging_arms(clips):
    trans, poses, fps = clips["walking"]
    pos = fk(trans, poses).positions
    stride = int(round(fps * 120.0 / 110.0))
    bob = np.ptp(pos[stride : 2 * stride, 0, 2])
    assert 0.015 < bob < 0.06
    # Each arm swings opposite to the leg on its side.
    arm = pos[:, 20, 0] - pos[:, 16, 0]
    leg = pos[:, 7, 0] - pos[:, 1, 0]
    assert np.corrcoef(arm, leg)[0, 1] < -0.8
    assert np.ptp(arm) > 0.15


# --- Posture of every clip -----------------------------------------------------------------------


@pytest.mark.parametrize("name", CLIPS)
def test_head_stays_above_the_pelvis(clips, name):
    trans, poses, _ = clips[name]
    pos = fk(trans, poses).positions
    up = pos[:, 15] - pos[:, 0]
    assert np.all(up[:, 2] > 0.4), "no clip is lying down or upside down"
    assert np.all(up[:, 2] > np.cos(np.radians(45.0)) * np.linalg.norm(up, axis=1))
    assert np.all(pos[:, 0, 2] > 0.5), "the pelvis stays well above the floor"


# --- Writers -------------------------------------------------------------------------------------


def test_smplh_writer_round_trips(tmp_path, clips):
    trans, poses, fps = clips["standing"]
    for dtype in (np.float64, np.float32):
        path = demo.write_smplh_npz(tmp_path / "a_poses.npz", trans, poses, fps, dtype=dtype)
        assert path == tmp_path / "a_poses.npz"
        with np.load(path, allow_pickle=False) as z:
            assert set(z.files) == demo.SMPLH_KEYS
            for key in ("trans", "poses", "betas", "dmpls"):
                assert z[key].dtype == dtype, key
            assert z["poses"].shape == poses.shape and z["dmpls"].shape == (len(trans), 8)
            assert z["betas"].shape == (16,) and not z["betas"].any()
            assert z["gender"].dtype.kind == "U" and str(z["gender"]) == "neutral"
            assert z["mocap_framerate"].shape == () and float(z["mocap_framerate"]) == fps
            np.testing.assert_allclose(z["poses"], poses, rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(z["trans"], trans, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("as_bytes", [True, False])
def test_smplx_writer_round_trips(tmp_path, clips, as_bytes):
    trans, poses, fps = clips["slow_walking"]
    path = demo.write_smplx_npz(
        tmp_path / "a_stageii.npz", trans, poses, fps, gender="female", gender_as_bytes=as_bytes
    )
    with np.load(path, allow_pickle=False) as z:
        assert set(z.files) == demo.SMPLX_KEYS
        shapes = {
            "trans": (len(trans), 3),
            "root_orient": (len(trans), 3),
            "pose_body": (len(trans), 63),
            "pose_hand": (len(trans), 90),
            "pose_jaw": (len(trans), 3),
            "pose_eye": (len(trans), 6),
            "poses": (len(trans), 165),
            "betas": (16,),
        }
        for key, shape in shapes.items():
            assert z[key].shape == shape and z[key].dtype == np.float32, key
        assert int(z["num_betas"]) == 16
        assert z["gender"].dtype.kind == ("S" if as_bytes else "U")
        assert z["gender"].item() == (b"female" if as_bytes else "female")
        assert str(z["surface_model_type"]) == "smplx"
        assert float(z["mocap_frame_rate"]) == fps
        full = z["poses"]
        np.testing.assert_array_equal(full[:, :3], z["root_orient"])
        np.testing.assert_array_equal(full[:, 3:66], z["pose_body"])
        np.testing.assert_array_equal(full[:, 75:165], z["pose_hand"])
        np.testing.assert_allclose(z["pose_body"], poses[:, 3:66], atol=1e-6)


def test_demo_corpus_tree(tmp_path):
    paths = demo.write_demo_corpus(tmp_path)
    rel = sorted(p.relative_to(tmp_path).as_posix() for p in paths)
    assert rel == [
        "DemoLab/subject1/standing_poses.npz",
        "DemoLab/subject1/walking_poses.npz",
        "DemoLab/subject1/walking_slow_stageii.npz",
        "DemoLab/subject2/arm_raise_poses.npz",
        "DemoLab/subject2/squat_poses.npz",
    ]
    assert "synthetic" in (tmp_path / "README.txt").read_text().lower()
    with np.load(tmp_path / "DemoLab/subject1/shape.npz", allow_pickle=False) as z:
        assert set(z.files) == {"betas", "gender"}
    expected = {
        "walking_poses.npz": (120.0, np.float64, demo.SMPLH_KEYS),
        "walking_slow_stageii.npz": (60.0, np.float32, demo.SMPLX_KEYS),
        "standing_poses.npz": (60.0, np.float32, demo.SMPLH_KEYS),
        "squat_poses.npz": (100.0, np.float64, demo.SMPLH_KEYS),
        "arm_raise_poses.npz": (30.0, np.float64, demo.SMPLH_KEYS),
    }
    for path in paths:
        fps, dtype, keys = expected[path.name]
        with np.load(path, allow_pickle=False) as z:
            assert set(z.files) == keys
            rate = z["mocap_framerate"] if "mocap_framerate" in z.files else z["mocap_frame_rate"]
            assert float(rate) == fps and z["poses"].dtype == dtype
            assert 2.0 <= (len(z["trans"]) - 1) / fps <= 5.0
    digests = [p.read_bytes() for p in paths]
    assert demo.write_demo_corpus(tmp_path) == paths, "idempotent"
    assert [p.read_bytes() for p in paths] == digests, "byte-for-byte reproducible"


# --- Stress clips --------------------------------------------------------------------------------

STRESS = {rel.rsplit("/", 1)[-1].removesuffix("_poses.npz"): rel for rel in demo.STRESS_CLIPS}


@pytest.fixture(scope="module")
def stress() -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    out = {}
    for name, rel in STRESS.items():
        make = demo.STRESS_CLIPS[rel][0]
        out[name] = make(duration_s=20.0) if name == "long_walk" else make()
    return out


def test_stress_clips_are_valid_amass_arrays(stress):
    assert set(STRESS) == {
        "running",
        "jump",
        "turning",
        "cartwheel",
        "long_walk",
        "running_30fps",
        "running_250fps",
    }
    rates = {"running_30fps": 30.0, "running_250fps": 250.0, "turning": 60.0, "long_walk": 60.0}
    for name, (trans, poses, fps) in stress.items():
        assert trans.shape == (poses.shape[0], 3) and poses.shape[1] == demo.N_POSE_VALUES
        assert np.isfinite(trans).all() and np.isfinite(poses).all()
        assert fps == rates.get(name, 120.0)
        pos = fk(trans, poses).positions
        feet = pos[:, [*LEFT_FOOT, *RIGHT_FOOT], 2]
        assert feet.min() >= CLEAR - 1e-3, (name, feet.min())  # no foot below the floor
        # Every clip touches the floor (a foot, or the hands in the cartwheel).
        assert min(feet.min(), pos[:, [20, 21], 2].min()) <= CLEAR + 1e-3


def test_long_walk_lasts_minutes():
    trans, _, fps = demo.long_walk()
    assert (len(trans) - 1) / fps >= 120.0


def flight(trans, poses) -> np.ndarray:
    """Frames with both feet more than 1 cm above their floor contact."""
    pos = fk(trans, poses).positions
    return (lowest(pos, LEFT_FOOT) > CLEAR + 0.01) & (lowest(pos, RIGHT_FOOT) > CLEAR + 0.01)


def test_the_run_and_the_jump_leave_the_ground(stress):
    run = flight(*stress["running"][:2])
    assert 0.2 < run.mean() < 0.4  # two flight phases a stride
    jump_up = flight(*stress["jump"][:2])
    runs = np.diff(np.concatenate(([0], jump_up.astype(int), [0])))
    assert (runs == 1).sum() == 1  # one flight
    flight_s = jump_up.sum() / stress["jump"][2]
    assert 0.3 < flight_s < 0.5
    trans, poses, fps = stress["jump"]
    travel = fk(trans, poses).positions[-1, 0] - fk(trans, poses).positions[0, 0]
    assert 0.7 < travel[0] < 1.3  # a broad jump along +x


@pytest.mark.parametrize("name", ["running", "turning", "long_walk"])
def test_stress_feet_do_not_skate(stress, name):
    trans, poses, fps = stress[name]
    pos = fk(trans, poses).positions
    for foot in (LEFT_FOOT, RIGHT_FOOT):
        planted = pos[:, foot, 2].max(1) < CLEAR + 0.06  # flat on the floor: ankle and ball low
        planted &= lowest(pos, foot) < CLEAR + (1e-3 if name == "running" else SOFT_LANDING)
        speed = np.linalg.norm(np.gradient(pos[:, foot[1], :2], 1 / fps, axis=0), axis=1)
        assert np.median(speed[planted]) < 0.05, name


def test_turning_wraps_the_heading(stress):
    trans, poses, _ = stress["turning"]
    heading = np.unwrap(np.arctan2(*facing(fk(trans, poses).rotations)[:, ::-1].T))
    assert np.degrees(heading[-1] - heading[0]) == pytest.approx(450.0, abs=5.0)


def test_cartwheel_turns_the_root_upside_down(stress):
    trans, poses, _ = stress["cartwheel"]
    rot = fk(trans, poses).rotations[:, 0]
    up = rot @ np.array([0.0, 1.0, 0.0])  # SMPL's native up axis in the world
    assert up[0, 2] > 0.99 and up[-1, 2] > 0.99 and up[:, 2].min() < -0.99
    pos = fk(trans, poses).positions
    assert pos[:, 15, 2].min() < 0.5  # the head comes down near the floor


def test_rate_variants_are_the_same_run(stress):
    t30, p30, _ = stress["running_30fps"]
    t250, p250, _ = stress["running_250fps"]
    t120, p120, _ = stress["running"]
    np.testing.assert_allclose(t30, t120[::4], atol=1e-9)  # 120 fps frames at every 4th
    np.testing.assert_allclose(p30, p120[::4], atol=1e-9)
    assert (len(t250) - 1) / 250.0 == pytest.approx((len(t120) - 1) / 120.0)


def test_stress_corpus_tree_is_apart_from_the_demo(tmp_path):
    paths = demo.write_stress_corpus(tmp_path)
    rel = sorted(p.relative_to(tmp_path).as_posix() for p in paths)
    assert rel == sorted(demo.STRESS_CLIPS)
    assert all(r.startswith(f"{demo.STRESS_DIR}/") for r in rel)
    assert "stress" in (tmp_path / demo.STRESS_DIR / "README.txt").read_text().lower()
    demo_paths = demo.write_demo_corpus(tmp_path / "demo")
    assert not any(demo.STRESS_DIR in p.as_posix() for p in demo_paths)


# --- Broken files --------------------------------------------------------------------------------


def test_broken_corpus_lists_every_broken_file(tmp_path):
    reasons = demo.write_broken_corpus(tmp_path)
    written = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert written == set(reasons) | {demo.GOOD_CLIP_IN_BROKEN}
    assert all(name.endswith("_poses.npz") for name in written), "every file looks like a clip"
    for rel, why in reasons.items():
        assert why and why == why.lower()
        assert why not in rel.lower(), "a message repeating the path must not pass by accident"
    assert len(set(reasons.values())) >= 9


def test_broken_files_have_the_flaws_they_claim(tmp_path):
    demo.write_broken_corpus(tmp_path)
    root = tmp_path / demo.BROKEN_DIR

    def load(rel: str) -> dict[str, np.ndarray]:
        with np.load(root / rel, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    good = load("control/standing_poses.npz")
    assert set(good) == demo.SMPLH_KEYS and len(good["trans"]) == len(good["poses"]) > 1
    assert np.isfinite(good["poses"]).all() and float(good["mocap_framerate"]) == 30.0

    for rel in ("archive/truncated_poses.npz", "archive/random_bytes_poses.npz"):
        assert not zipfile.is_zipfile(root / rel)
        with pytest.raises(Exception):  # noqa: B017 - numpy raises several kinds here
            load(rel)
    assert (root / "archive/zero_length_poses.npz").stat().st_size == 0
    with pytest.raises(ValueError, match="allow_pickle"):
        load("archive/object_array_poses.npz")
    with np.load(root / "archive/object_array_poses.npz", allow_pickle=True) as z:
        assert z["poses"].dtype == object

    assert "trans" not in load("keys/missing_key_poses.npz")
    assert load("layout/width_150_poses.npz")["poses"].shape[1] == 150
    three = load("layout/three_dims_poses.npz")["poses"]
    assert three.ndim == 3 and three.shape[1:] == (51, 3), "wrong however it is flattened"
    bad = load("layout/length_mismatch_poses.npz")
    assert len(bad["trans"]) != len(bad["poses"])
    assert len(load("layout/one_sample_poses.npz")["poses"]) == 1
    assert np.isnan(load("values/nan_rotation_poses.npz")["poses"]).any()
    assert np.isinf(load("values/inf_position_poses.npz")["trans"]).any()
    assert load("values/integer_rotation_poses.npz")["poses"].dtype.kind == "i"
    assert str(load("values/alien_poses.npz")["gender"]) == "alien"
    rates = [
        float(load(f"rate/{n}_rate_poses.npz")["mocap_framerate"])
        for n in ("zero", "negative", "megahertz")
    ]
    assert rates == [0.0, -30.0, 1e6]


def test_demo_writers_accept_str_paths(tmp_path):
    out = demo.write_demo_corpus(str(tmp_path / "x"))
    assert all(isinstance(p, Path) and p.is_file() for p in out)


@pytest.mark.parametrize("name", ["walking", "slow_walking"])
def test_walking_centre_of_mass_moves_over_the_stance_foot(clips, name):
    """Gravity and the floor move the centre of mass c: c'' = g/h·(c - p) with p the centre of
    pressure. So in single stance the p a walk's kinematics imply must lie under the foot on the
    floor, or inverse dynamics needs a root force no floor can give. A walk at steady speed on
    legs in the sagittal plane implied p 9-12 cm to the side of the stance foot on average."""
    trans, poses, fps = clips[name]
    pos = fk(trans, poses).positions
    com = demo.centre_of_mass(pos)
    accel = np.gradient(np.gradient(com, 1.0 / fps, axis=0), 1.0 / fps, axis=0)
    height = com[:, 2].mean()
    implied = com[:, :2] - height * accel[:, :2] / 9.81
    low = {side: lowest(pos, foot) for side, foot in (("L", LEFT_FOOT), ("R", RIGHT_FOOT))}
    edge = int(0.2 * fps)  # away from the clip's ends
    checked = 0
    for side, other in (("L", "R"), ("R", "L")):
        single = (low[side] < CLEAR + 0.004) & (low[other] > CLEAR + 0.03)
        single[:edge] = single[-edge:] = False
        ankle = pos[single, ANKLE[side], :2]
        ball = pos[single, (LEFT_FOOT if side == "L" else RIGHT_FOOT)[1], :2]
        sideways = np.abs(implied[single, 1] - 0.5 * (ankle[:, 1] + ball[:, 1]))
        assert np.mean(sideways) < 0.03 and np.max(sideways) < 0.06, (name, side, sideways)
        # along the walk: from the heel to the ball, within 10 cm
        assert np.all(implied[single, 0] > ankle[:, 0] - 0.1), (name, side)
        assert np.all(implied[single, 0] < ball[:, 0] + 0.1), (name, side)
        checked += single.sum()
    assert checked > fps, "the walk has single-stance frames to check"
