"""Resampling: slerp on rotations (never linear on axis-angle), linear translation, frame times."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from msconvert.datasets import Motion, Provenance, resample

PROV = Provenance(path="/x/a_poses.npz", relpath="a_poses.npz", size=1, sha256="0" * 64)


def make_motion(
    body: np.ndarray, fps: float, trans: np.ndarray | None = None, hands: np.ndarray | None = None
) -> Motion:
    """A Motion around the given (T, 22, 3) body pose; zero translation unless given."""
    t = body.shape[0]
    return Motion(
        clip_id="S/a",
        fps=fps,
        root_translation=np.zeros((t, 3)) if trans is None else trans,
        body_pose=body,
        hand_pose=hands,
        betas=np.arange(4.0),
        gender="female",
        body_model="smplh",
        provenance=PROV,
        extra={"note": "kept"},
    )


def random_motion(t: int, fps: float, seed: int = 0, hands: bool = True) -> Motion:
    rng = np.random.default_rng(seed)
    return make_motion(
        rng.normal(scale=0.5, size=(t, 22, 3)),
        fps,
        trans=rng.normal(size=(t, 3)),
        hands=rng.normal(scale=0.5, size=(t, 30, 3)) if hands else None,
    )


def angle_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Geodesic angle between rotations given as axis-angle arrays (..., 3)."""
    ra, rb = Rotation.from_rotvec(a.reshape(-1, 3)), Rotation.from_rotvec(b.reshape(-1, 3))
    return (ra.inv() * rb).magnitude().reshape(a.shape[:-1])


def test_constant_angular_speed_is_preserved() -> None:
    # Every joint turns about one fixed axis at 5 rad/s for 1 s: past pi, where axis-angle wraps.
    axis = np.array([1.0, 2.0, 3.0]) / np.sqrt(14.0)
    omega, src_fps, dst_fps = 5.0, 120.0, 50.0
    times = np.arange(121) / src_fps
    body = np.broadcast_to((omega * times)[:, None, None] * axis, (121, 22, 3)).copy()
    hands = np.broadcast_to((omega * times)[:, None, None] * axis, (121, 30, 3)).copy()
    out = resample(make_motion(body, src_fps, hands=hands), dst_fps)
    assert out.n_frames == 51 and out.fps == dst_fps
    new_times = np.arange(51) / dst_fps
    expected = np.broadcast_to((omega * new_times)[:, None, None] * axis, (51, 22, 3))
    assert angle_between(out.body_pose, expected).max() < 1e-9
    assert angle_between(out.hand_pose, expected[:, :1].repeat(30, axis=1)).max() < 1e-9
    steps = angle_between(out.body_pose[:-1], out.body_pose[1:])
    np.testing.assert_allclose(steps, omega / dst_fps, atol=1e-9)


def test_midpoint_is_geodesic_not_axis_angle_average() -> None:
    # 3 rad about +z and 3 rad about -z: the axis-angle average is the identity, yet the short
    # way between them runs through a half turn about z. Also a pair on different axes.
    starts = np.array([[0.0, 0.0, 3.0], [np.pi / 2, 0.0, 0.0], [0.3, -1.2, 0.4]])
    ends = np.array([[0.0, 0.0, -3.0], [0.0, np.pi / 2, 0.0], [-2.0, 0.5, 1.5]])
    body = np.zeros((2, 22, 3))
    body[0, :3], body[1, :3] = starts, ends
    out = resample(make_motion(body, fps=1.0), 2.0)
    assert out.n_frames == 3
    q0 = Rotation.from_rotvec(starts).as_quat()
    q1 = Rotation.from_rotvec(ends).as_quat()
    q1 *= np.sign(np.sum(q0 * q1, axis=1))[:, None]  # same hemisphere: the shorter arc
    mid = q0 + q1
    geodesic = Rotation.from_quat(mid / np.linalg.norm(mid, axis=1)[:, None]).as_rotvec()
    assert angle_between(out.body_pose[1, :3], geodesic).max() < 1e-9
    linear = (starts + ends) / 2
    assert angle_between(linear, geodesic).min() > 0.05  # the premise: linear would be wrong
    assert angle_between(linear[:1], geodesic[:1])[0] == pytest.approx(np.pi)
    np.testing.assert_array_equal(out.body_pose[:, 3:], 0.0)


def test_translation_is_linear() -> None:
    motion = random_motion(30, 30.0)
    out = resample(motion, 100.0)
    new_times = np.arange(out.n_frames) / 100.0
    for k in range(3):
        expected = np.interp(new_times, motion.times, motion.root_translation[:, k])
        np.testing.assert_allclose(out.root_translation[:, k], expected, atol=1e-12)


@pytest.mark.parametrize(
    ("frames", "src", "dst", "expected"),
    [(120, 120.0, 30.0, 30), (121, 120.0, 30.0, 31), (30, 30.0, 100.0, 97), (2, 1.0, 3.0, 4)],
)
def test_frame_counts(frames: int, src: float, dst: float, expected: int) -> None:
    out = resample(random_motion(frames, src), dst)
    assert out.n_frames == expected
    assert out.body_pose.shape == (expected, 22, 3) and out.hand_pose.shape == (expected, 30, 3)
    assert out.duration_s <= (frames - 1) / src + 1e-9


def test_last_frame_included_when_exact() -> None:
    # 69 / 30 * 100 is 229.99999999999997 in floats: the 1e-9 s tolerance keeps frame 230.
    motion = random_motion(70, 30.0)
    out = resample(motion, 100.0)
    assert out.n_frames == 231
    np.testing.assert_array_equal(out.root_translation[-1], motion.root_translation[-1])
    np.testing.assert_array_equal(out.body_pose[-1], motion.body_pose[-1])


def test_downsample_by_integer_ratio_keeps_source_frames() -> None:
    motion = random_motion(120, 120.0)
    out = resample(motion, 30.0)
    np.testing.assert_array_equal(out.body_pose, motion.body_pose[::4])
    np.testing.assert_array_equal(out.hand_pose, motion.hand_pose[::4])
    np.testing.assert_array_equal(out.root_translation, motion.root_translation[::4])


def test_same_fps_is_identity() -> None:
    motion = random_motion(10, 60.0)
    assert resample(motion, 60.0) is motion
    assert resample(motion, 60) is motion


@pytest.mark.parametrize("fps", [0.0, -30.0, float("nan"), float("inf")])
def test_bad_fps(fps: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        resample(random_motion(10, 60.0), fps)


def test_other_fields_kept() -> None:
    motion = random_motion(20, 60.0, hands=False)
    out = resample(motion, 25.0)
    assert out.hand_pose is None
    assert out.fps == 25.0 and isinstance(out.fps, float)
    for name in ("clip_id", "gender", "body_model", "provenance", "extra", "filled_frames"):
        assert getattr(out, name) == getattr(motion, name)
    np.testing.assert_array_equal(out.betas, motion.betas)
    assert out.body_pose.dtype == np.float64 and out.root_translation.dtype == np.float64
