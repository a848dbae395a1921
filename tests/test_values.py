"""Each stage's value turns into its labelled dataset and back, through a real catalog, as the
same type; a dataset that lacks the value is refused in one line that says what is missing."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import xarray as xr
from toy_models import standing_block

from msconvert.catalog import Catalog
from msconvert.datasets.amass import read_amass
from msconvert.datasets.demo import standing, write_smplh_npz
from msconvert.datasets.kinematics import forward_kinematics, mean_skeleton
from msconvert.datasets.motion import Motion, MotionError
from msconvert.emulator.emulation import Emulation, EmulationFormatError
from msconvert.emulator.muscles.result import StaticOptFormatError, StaticOptResult
from msconvert.emulator.muscles.static_opt import static_optimization
from msconvert.emulator.retarget.reference import Reference, ReferenceFormatError


def _through_catalog(tmp_path, clip: str, data: xr.Dataset, metrics: dict) -> xr.Dataset:
    with Catalog.create(tmp_path / "c.zarr") as cat:
        cat.write_clip(clip, data, attrs={}, metrics=metrics)
    return Catalog.open(tmp_path / "c.zarr")[clip]


def _assert_same(a, b, rtol: float = 0.0, atol: float = 0.0) -> None:
    assert type(a) is type(b)
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            assert x.shape == y.shape, f.name
            if x.dtype == bool:
                np.testing.assert_array_equal(x, y, err_msg=f.name)
            else:
                np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, err_msg=f.name)
        elif isinstance(x, float):
            assert x == pytest.approx(y, rel=1e-9, nan_ok=True), f.name
        elif isinstance(x, dict) and f.name == "metrics":
            assert x.keys() == y.keys(), f.name
            for k in x:
                assert x[k] == pytest.approx(y[k], nan_ok=True), k
        else:
            assert x == y, f.name


@pytest.fixture
def motion(tmp_path) -> Motion:
    trans, poses, fps = standing(duration_s=1.0, fps=60.0)
    path = tmp_path / "stand_poses.npz"
    write_smplh_npz(path, trans, poses, fps)
    return read_amass(path, relpath="stand_poses.npz", clip_id="Lab/stand")


def test_motion_round_trips_through_the_catalog(tmp_path, motion):
    joints = forward_kinematics(motion, mean_skeleton())
    ds = _through_catalog(tmp_path, "Lab/stand", motion.to_dataset(joints), {})
    back = Motion.from_dataset(ds)
    # The pose is stored as float32: back to within its rounding; the rest exactly.
    _assert_same(motion, back, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ds["source_joints"].values, joints.positions, atol=1e-6)


def _reference(n: int = 40, seed: int = 0) -> Reference:
    rng = np.random.default_rng(seed)
    ref = Reference.from_trajectory(
        "Lab/walk",
        50.0,
        rng.normal(size=(n, 5)),
        rng.normal(size=(n, 4)),
        body_names=("pelvis", "foot"),
        body_pos=rng.normal(size=(n, 2, 3)),
        model_name="toy",
        model_sha256="ab" * 32,
    )
    return dataclasses.replace(
        ref,
        correspondence_names=("hip", "knee", "ankle"),
        target_pos=rng.normal(size=(n, 3, 3)).astype(np.float32).astype(float),
        position_error_m=rng.random((n, 3)).astype(np.float32).astype(float),
        orientation_error_rad=rng.random((n, 3)).astype(np.float32).astype(float),
        body_pos=ref.body_pos.astype(np.float32).astype(float),
        qacc=ref.qacc.astype(np.float32).astype(float),
        stance=rng.random((n, 2)) > 0.5,
        ground_shift_m=rng.random(n).astype(np.float32).astype(float),
        filled_frames=3,
        metrics={"retarget.position_error_mm_mean": 12.5, "retarget.float_mm": float("nan")},
        notes={"hands": "not retargeted"},
    )


def test_reference_round_trips_through_the_catalog(tmp_path):
    ref = _reference()
    ds = _through_catalog(tmp_path, ref.clip_id, ref.to_dataset(), ref.metrics)
    _assert_same(ref, Reference.from_dataset(ds))


def test_static_opt_result_round_trips_through_the_catalog(tmp_path):
    model = standing_block()
    qpos = np.tile(model.qpos0, (12, 1))
    ref = Reference.from_trajectory("Lab/block", 50.0, qpos, np.zeros((12, model.nv)))
    result = static_optimization(ref, model)
    f32 = lambda a: a.astype(np.float32).astype(np.float64)  # noqa: E731
    stored = dataclasses.replace(
        result,
        **{
            f.name: f32(getattr(result, f.name))
            for f in dataclasses.fields(result)
            if isinstance(getattr(result, f.name), np.ndarray)
            and result.activation.dtype != bool
            and getattr(result, f.name).dtype != bool
        },
    )
    ds = _through_catalog(tmp_path, "Lab/block", result.to_dataset(), result.metrics)
    _assert_same(stored, StaticOptResult.from_dataset(ds), atol=1e-12)


def _emulation(fell_at: int | None = 25, n: int = 40) -> Emulation:
    rng = np.random.default_rng(1)
    f = lambda *shape: rng.normal(size=(n, *shape)).astype(np.float32).astype(float)  # noqa: E731
    arrays = {
        "qpos": f(5), "qvel": f(4), "excitation": f(3), "activation": f(3), "force": f(3),
        "length": f(3), "velocity": f(3), "joint_torque": f(2), "grf": f(2, 3), "cop": f(2, 3),
        "com": f(3), "com_vel": f(3), "joint_error_deg": f(), "body_error_mm": f(),
        "root_error_mm": f(),
    }  # fmt: skip
    tracked = n if fell_at is None else fell_at
    for a in arrays.values():
        a[tracked:] = np.nan  # nothing is invented after a fall
    return Emulation(
        clip_id="Lab/walk",
        fps=50.0,
        times=np.arange(n) / 50.0,
        qpos_names=tuple("abcde"),
        qvel_names=tuple("abcd"),
        muscle_names=("m0", "m1", "m2"),
        joint_names=("hip", "knee"),
        foot_names=("left", "right"),
        tracked_frames=tracked,
        fell=fell_at is not None,
        metrics={"tracking.fraction_tracked": tracked / n, "tracking.joint_error_deg_mean": 2.0},
        **arrays,
    )


@pytest.mark.parametrize("fell_at", [None, 25])
def test_emulation_round_trips_through_the_catalog(tmp_path, fell_at):
    emu = _emulation(fell_at)
    ds = _through_catalog(tmp_path, emu.clip_id, emu.to_dataset(), emu.metrics)
    back = Emulation.from_dataset(ds)
    _assert_same(emu, back)
    assert np.isnan(back.qpos[emu.tracked_frames :]).all()


def test_values_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        _reference().fps = 1.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        _emulation().times = np.zeros(3)  # type: ignore[misc]


@pytest.mark.parametrize(
    "reader,error,missing",
    [
        (Reference.from_dataset, ReferenceFormatError, "reference_qpos"),
        (StaticOptResult.from_dataset, StaticOptFormatError, "activation"),
        (Emulation.from_dataset, EmulationFormatError, "emulated_qpos"),
        (Motion.from_dataset, MotionError, "source_body_pose"),
    ],
)
def test_a_dataset_without_the_value_is_refused_in_one_line(reader, error, missing):
    ds = xr.Dataset(
        {"other": (("time",), np.zeros(3))},
        coords={"time": np.arange(3) / 50.0},
        attrs={"clip_id": "Lab/x", "software_version": "0.1.0"},
    )
    with pytest.raises(error, match=missing) as info:
        reader(ds)
    assert "\n" not in str(info.value) and "Lab/x" in str(info.value)


def test_a_static_opt_clip_from_an_older_version_is_refused_naming_it(tmp_path):
    model = standing_block()
    ref = Reference.from_trajectory(
        "Lab/block", 50.0, np.tile(model.qpos0, (6, 1)), np.zeros((6, model.nv))
    )
    old = (
        static_optimization(ref, model)
        .to_dataset()
        .drop_vars(["static_opt_muscle_torque", "grf_total"])
        .assign_attrs(software_version="0.1.0")
    )
    with pytest.raises(StaticOptFormatError, match=r"msconvert 0\.1\.0.*--method static-opt"):
        StaticOptResult.from_dataset(old)
