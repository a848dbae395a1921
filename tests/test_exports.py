"""Exports (csv, OpenSim .sto/.mot, npz) and the overview plot of catalog clips."""

from __future__ import annotations

import csv
from pathlib import Path

import mujoco
import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner
from scipy.spatial.transform import Rotation

from msconvert.catalog import Catalog
from msconvert.catalog.plot import choose_muscles, muscle_order, muscle_sides, plot_clip
from msconvert.convert.exports import MUJOCO_TO_OPENSIM, export_clip, read_sto, write_sto
from msconvert.emulator.model import qpos_names

CLIP = "Lab/s1/walk01"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FPS = 50.0
T = 60

# A free root, hinges, a slide and a ball joint: every kind of joint a .mot column can come from.
TINY_MJCF = """
<mujoco model="tiny">
  <worldbody>
    <body name="pelvis" pos="0 0 1">
      <freejoint name="root"/>
      <geom type="sphere" size="0.1" mass="5"/>
      <body name="thigh_r" pos="-0.1 0 0">
        <joint name="hip_flexion_r" type="hinge" axis="1 0 0"/>
        <geom type="capsule" fromto="0 0 0 0 0 -0.4" size="0.05" mass="3"/>
        <body name="shank_r" pos="0 0 -0.4">
          <joint name="knee_translation_r" type="slide" axis="0 0 1"/>
          <joint name="knee_angle_r" type="hinge" axis="1 0 0"/>
          <geom type="capsule" fromto="0 0 0 0 0 -0.4" size="0.04" mass="2"/>
        </body>
      </body>
      <body name="head" pos="0 0 0.6">
        <joint name="neck" type="ball"/>
        <geom type="sphere" size="0.1" mass="2"/>
      </body>
    </body>
  </worldbody>
</mujoco>
"""

MUSCLES = [
    "soleus_r", "gasmed_r", "vaslat_r", "vasmed_r", "glmax1_r", "glmax2_r", "tibant_r",
    "soleus_l", "gasmed_l", "vaslat_l", "vasmed_l", "glmax1_l", "glmax2_l", "tibant_l",
    "MF_m1s_r", "MF_m2s_r", "MF_m1s_l", "MF_m2s_l", "IL_R9_r", "IL_R10_r", "IL_R9_l", "IL_R10_l",
    "DELT1", "DELT2", "DELT1_left", "DELT2_left", "rect_abd",
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_model() -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_string(TINY_MJCF)


def root_quaternions(n: int) -> np.ndarray:
    """Root orientations (w, x, y, z): a full turn about the vertical with some tilt and list."""
    yaw = np.linspace(0.0, np.radians(350.0), n)
    pitch = 0.2 * np.sin(np.linspace(0, 3, n))
    roll = 0.1 * np.cos(np.linspace(0, 2, n))
    xyzw = Rotation.from_euler("ZYX", np.column_stack([yaw, pitch, roll])).as_quat()
    return xyzw[:, [3, 0, 1, 2]]


def clip_dataset(model: mujoco.MjModel, seed: int = 0) -> xr.Dataset:
    """A clip with the reference and emulation arrays the catalog holds, on small sizes."""
    rng = np.random.default_rng(seed)
    t = np.arange(T) / FPS
    labels = list(qpos_names(model))
    qpos = np.zeros((T, len(labels)))
    qpos[:, :3] = np.column_stack([np.linspace(0, 1, T), 0.1 * np.sin(t), 0.95 + 0.01 * t])
    qpos[:, 3:7] = root_quaternions(T)
    qpos[:, labels.index("hip_flexion_r")] = np.linspace(-0.5, 1.0, T)
    qpos[:, labels.index("knee_translation_r")] = 0.01 * np.sin(t)
    qpos[:, labels.index("knee_angle_r")] = -np.linspace(0.0, np.pi / 2, T)
    neck = Rotation.from_euler("XYZ", np.column_stack([0.3 * t, -0.2 * t, 0.1 * t])).as_quat()
    qpos[:, labels.index("neck:qw") : labels.index("neck:qz") + 1] = neck[:, [3, 0, 1, 2]]
    m = len(MUSCLES)
    activation = rng.uniform(0, 1, (T, m)).astype(np.float32)
    activation[5, 2] = np.nan  # a gap must survive every format
    cop = rng.normal(size=(T, 2, 3)).astype(np.float32)
    cop[10:20, 0] = np.nan  # unloaded foot
    grf = np.zeros((T, 2, 3), np.float32)
    grf[..., 2] = 400 + 50 * rng.normal(size=(T, 2))
    return xr.Dataset(
        {
            "reference_qpos": (("time", "qpos"), qpos, {"units": "m or rad"}),
            "activation": (("time", "muscle"), activation, {"units": "1"}),
            "excitation": (("time", "muscle"), rng.uniform(0, 1, (T, m)).astype(np.float32)),
            "muscle_force": (("time", "muscle"), rng.uniform(0, 900, (T, m)).astype(np.float32)),
            "muscle_length": (("time", "muscle"), rng.uniform(0.1, 0.4, (T, m)).astype(np.float32)),
            "grf": (("time", "foot", "xyz"), grf, {"units": "N"}),
            "cop": (("time", "foot", "xyz"), cop, {"units": "m"}),
            "stance": (("time", "foot"), rng.uniform(size=(T, 2)) > 0.5),
            "tracking_joint_error_deg": (("time",), rng.uniform(1, 5, T).astype(np.float32)),
            "tracking_body_error_mm": (("time",), rng.uniform(10, 40, T).astype(np.float32)),
            "retarget_position_error": (
                ("time", "correspondence"),
                rng.uniform(0, 0.02, (T, 3)).astype(np.float32),
            ),
            "muscle_fmax": (("muscle",), rng.uniform(100, 3000, m)),
        },
        coords={
            "time": ("time", t, {"units": "s"}),
            "qpos": ("qpos", np.asarray(labels)),
            "muscle": ("muscle", np.asarray(MUSCLES)),
            "foot": ("foot", np.asarray(["left", "right"])),
            "xyz": ("xyz", np.asarray(["x", "y", "z"])),
            "correspondence": ("correspondence", np.asarray(["pelvis", "knee_r", "head"])),
        },
    )


def stored(tmp_path: Path, data: xr.Dataset, **attrs: object) -> xr.Dataset:
    """The clip as the catalog gives it back (what the CLI exports)."""
    path = tmp_path / "catalog.zarr"
    with Catalog.create(path) as cat:
        cat.write_clip(
            CLIP,
            data,
            attrs={"method": "rl", "model_name": "tiny", "body_weight_n": 700.0, **attrs},
            metrics={},
        )
    return Catalog.open(path)[CLIP]


@pytest.fixture(scope="module")
def clip(tiny_model: mujoco.MjModel, tmp_path_factory: pytest.TempPathFactory) -> xr.Dataset:
    return stored(tmp_path_factory.mktemp("cat"), clip_dataset(tiny_model))


def assert_same(a: np.ndarray, b: np.ndarray, **tol: float) -> None:
    """Equal within `tol`, NaN where NaN; text read back from float32 data compares as float32."""
    b = np.asarray(b)
    dtype = np.float32 if b.dtype == np.float32 else np.float64
    np.testing.assert_allclose(np.asarray(a, dtype), b.astype(dtype), equal_nan=True, **tol)


# --- .sto -----------------------------------------------------------------------------------


def test_sto_round_trip_one_file_per_muscle_field(clip: xr.Dataset, tmp_path: Path):
    files = export_clip(clip, CLIP, "sto", tmp_path / "walk.sto")
    assert [f.name for f in files] == [
        "walk_activation.sto",
        "walk_excitation.sto",
        "walk_muscle_force.sto",
    ]
    text = files[0].read_text()
    assert text.splitlines()[1:5] == ["version=1", f"nRows={T}", f"nColumns={len(MUSCLES) + 1}",
                                      "inDegrees=no"]  # fmt: skip
    assert "\tNaN\t" in text  # the gap, as OpenSim reads it
    for f, field in zip(files, ["activation", "excitation", "muscle_force"], strict=True):
        header, columns, data = read_sto(f)
        assert header["nRows"] == str(T) and header["nColumns"] == str(len(MUSCLES) + 1)
        assert header["inDegrees"] == "no" and header["version"] == "1"
        assert CLIP in header["name"] and field in header["name"]
        assert columns == ["time", *MUSCLES]
        assert data.shape == (T, len(MUSCLES) + 1)
        assert_same(data[:, 0], clip["time"].values, rtol=1e-12)
        assert_same(data[:, 1:], clip[field].values, rtol=0)  # float32 comes back exactly


def test_sto_fields_select_any_time_series(clip: xr.Dataset, tmp_path: Path):
    (length,) = export_clip(clip, CLIP, "sto", tmp_path / "x", fields=["muscle_length"])
    assert length.name == "x_muscle_length.sto"
    two = export_clip(clip, CLIP, "sto", tmp_path / "x", fields="excitation, activation")
    assert [f.name for f in two] == ["x_excitation.sto", "x_activation.sto"]
    (grf,) = export_clip(clip, CLIP, "sto", tmp_path / "x", fields="grf")
    _, columns, data = read_sto(grf)
    assert columns == ["time", "left.x", "left.y", "left.z", "right.x", "right.y", "right.z"]
    assert_same(data[:, 1:], clip["grf"].values.reshape(T, 6), rtol=0)


def test_write_sto_rejects_mismatched_shapes(tmp_path: Path):
    with pytest.raises(ValueError, match="does not match"):
        write_sto(tmp_path / "a.sto", "a", ["x", "y"], np.arange(3.0), np.zeros((3, 3)),
                  in_degrees=False)  # fmt: skip
    with pytest.raises(ValueError, match="tabs"):
        write_sto(tmp_path / "a.sto", "a", ["x\ty"], np.arange(3.0), np.zeros((3, 1)),
                  in_degrees=False)  # fmt: skip


def test_read_sto_rejects_broken_files(tmp_path: Path):
    good = "walk\nversion=1\nnRows=2\nnColumns=3\ninDegrees=no\nendheader\ntime\ta\tb\n"
    path = tmp_path / "f.sto"
    path.write_text(good + "0\t1\t2\n0.01\tnan\t-1.5e-3\n")
    header, columns, data = read_sto(path)
    assert header["name"] == "walk" and columns == ["time", "a", "b"]
    assert np.isnan(data[1, 1]) and data[1, 2] == -1.5e-3
    path.write_text(good + "0\t1\t2\n0.01\t1\n")
    with pytest.raises(ValueError, match=r"f.sto:9: 2 values for 3 columns"):
        read_sto(path)
    path.write_text(good + "0\t1\t2\n")
    with pytest.raises(ValueError, match="nRows=2 but the file has 1"):
        read_sto(path)
    path.write_text(good.replace("endheader\n", ""))
    with pytest.raises(ValueError, match="must start with 'time'|endheader"):
        read_sto(path)
    path.write_text(good + "0\t1\tabc\n0\t1\t2\n")
    with pytest.raises(ValueError, match="not a number"):
        read_sto(path)


# --- .mot -----------------------------------------------------------------------------------


def test_mot_in_degrees_with_opensim_root(clip: xr.Dataset, tiny_model, tmp_path: Path):
    (mot,) = export_clip(clip, CLIP, "mot", tmp_path / "walk", model=tiny_model)
    assert mot.name == "walk.mot"
    header, columns, data = read_sto(mot)
    lines = mot.read_text().splitlines()
    assert lines[1:5] == ["version=1", f"nRows={T}", "nColumns=13", "inDegrees=yes"]
    assert lines[lines.index("endheader") + 1].split("\t") == columns
    assert "reference_qpos" in header["name"] and "Z-X-Y" in header["description"]
    assert columns == [
        "time",
        "pelvis_tilt", "pelvis_list", "pelvis_rotation", "pelvis_tx", "pelvis_ty", "pelvis_tz",
        "hip_flexion_r", "knee_translation_r", "knee_angle_r", "neck_rx", "neck_ry", "neck_rz",
    ]  # fmt: skip
    col = {c: data[:, i] for i, c in enumerate(columns)}
    q = clip["reference_qpos"]
    # Hinges in degrees (checked against the radians stored), slides stay in metres.
    assert_same(col["hip_flexion_r"], np.degrees(q.sel(qpos="hip_flexion_r").values), rtol=1e-12)
    assert col["knee_angle_r"][-1] == pytest.approx(-90.0, abs=1e-9)
    assert_same(col["knee_translation_r"], q.sel(qpos="knee_translation_r").values, rtol=1e-12)
    # Ball joint: intrinsic X-Y-Z degrees.
    t = clip["time"].values
    expected_neck = np.degrees(np.column_stack([0.3 * t, -0.2 * t, 0.1 * t]))
    assert_same(np.column_stack([col["neck_rx"], col["neck_ry"], col["neck_rz"]]), expected_neck,
                atol=1e-9)  # fmt: skip
    # Root translation in OpenSim axes: X = -y, Y = z, Z = -x of MuJoCo's world.
    xyz = q.values[:, :3]
    assert_same(col["pelvis_tx"], -xyz[:, 1], atol=1e-12)
    assert_same(col["pelvis_ty"], xyz[:, 2], atol=1e-12)
    assert_same(col["pelvis_tz"], -xyz[:, 0], atol=1e-12)
    # Root angles: body-fixed Z-X-Y in OpenSim axes rebuild the root rotation exactly.
    angles = np.column_stack([col["pelvis_tilt"], col["pelvis_list"], col["pelvis_rotation"]])
    rebuilt = Rotation.from_euler("ZXY", angles, degrees=True).as_matrix()
    quat = q.values[:, 3:7]
    rot = Rotation.from_quat(quat[:, [1, 2, 3, 0]]).as_matrix()
    c = MUJOCO_TO_OPENSIM
    assert_same(rebuilt, c @ rot @ c.T, atol=1e-9)
    # A turn of 350° about the vertical stays continuous: rotation is unwrapped, not clipped.
    assert col["pelvis_rotation"][-1] == pytest.approx(350.0, abs=1.0)  # > 180: unwrapped
    assert np.all(np.abs(np.diff(col["pelvis_rotation"])) < 10.0)


def test_mot_known_root_angles(tiny_model, tmp_path: Path):
    """Yaw of the model (facing -y) about the vertical is pelvis_rotation; a forward tip is tilt."""
    data = clip_dataset(tiny_model).isel(time=slice(0, 3))
    qpos = data["reference_qpos"].values.copy()
    half = np.radians(30.0) / 2
    qpos[0, 3:7] = [np.cos(half), 0.0, 0.0, np.sin(half)]  # +30° about MuJoCo z (up)
    qpos[1, 3:7] = [np.cos(half), np.sin(half), 0.0, 0.0]  # +30° about MuJoCo x (model's left)
    qpos[2, 3:7] = [np.cos(half), 0.0, -np.sin(half), 0.0]  # +30° about OpenSim X (forward)
    data["reference_qpos"] = (("time", "qpos"), qpos)
    (mot,) = export_clip(data, CLIP, "mot", tmp_path / "root.mot", model=tiny_model)
    _, columns, values = read_sto(mot)
    angles = values[
        :, [columns.index(c) for c in ("pelvis_tilt", "pelvis_list", "pelvis_rotation")]
    ]
    assert_same(angles, [[0, 0, 30], [-30, 0, 0], [0, 30, 0]], atol=1e-9)


def test_mot_prefers_emulated_kinematics(tiny_model, tmp_path: Path):
    data = clip_dataset(tiny_model)
    emulated = data["reference_qpos"].values.copy()
    emulated[:, list(data["qpos"].values).index("hip_flexion_r")] = 0.25
    data["emulated_qpos"] = (("time", "qpos"), emulated)
    (mot,) = export_clip(stored(tmp_path, data), CLIP, "mot", tmp_path / "e", model=tiny_model)
    header, columns, values = read_sto(mot)
    assert "emulated kinematics (emulated_qpos)" in header["name"]
    assert_same(values[:, columns.index("hip_flexion_r")], np.degrees(0.25), rtol=1e-12)
    (ref,) = export_clip(
        data, CLIP, "mot", tmp_path / "r", fields=["reference_qpos"], model=tiny_model
    )
    assert "reference_qpos" in read_sto(ref)[0]["name"]


def test_mot_needs_the_clips_model(clip: xr.Dataset, tiny_model, tmp_path: Path):
    with pytest.raises(ValueError, match=r"model 'tiny'.*--model"):
        export_clip(clip, CLIP, "mot", tmp_path / "m")
    other = mujoco.MjModel.from_xml_string(TINY_MJCF.replace("hip_flexion_r", "hip_r"))
    with pytest.raises(ValueError, match="'hip_flexion_r' of clip .* is not a hinge or slide"):
        export_clip(clip, CLIP, "mot", tmp_path / "m", model=other)
    with pytest.raises(ValueError, match="not a kinematics variable.*reference_qpos"):
        export_clip(clip, CLIP, "mot", tmp_path / "m", fields=["activation"], model=tiny_model)
    with pytest.raises(ValueError, match="mot takes one kinematics field"):
        export_clip(clip, CLIP, "mot", tmp_path / "m", fields="reference_qpos,qpos")
    no_kinematics = clip.drop_vars("reference_qpos")
    with pytest.raises(ValueError, match="no joint kinematics"):
        export_clip(no_kinematics, CLIP, "mot", tmp_path / "m", model=tiny_model)


# --- .csv and .npz --------------------------------------------------------------------------


def read_csv(path: Path) -> tuple[list[str], np.ndarray]:
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], np.array(rows[1:], dtype=float)


def test_csv_round_trip_every_time_series(clip: xr.Dataset, tmp_path: Path):
    files = {f.name: f for f in export_clip(clip, CLIP, "csv", tmp_path)}
    timed = sorted(n for n, v in clip.data_vars.items() if "time" in v.dims)
    assert sorted(files) == sorted(f"Lab_s1_walk01_{n}.csv" for n in timed)  # no muscle_fmax
    header, data = read_csv(files["Lab_s1_walk01_cop.csv"])
    assert header == ["time", "left.x", "left.y", "left.z", "right.x", "right.y", "right.z"]
    assert_same(data[:, 0], clip["time"].values, rtol=1e-12)
    assert_same(data[:, 1:], clip["cop"].values.reshape(T, 6), rtol=0)
    assert "NaN" in files["Lab_s1_walk01_cop.csv"].read_text()
    header, data = read_csv(files["Lab_s1_walk01_activation.csv"])
    assert header == ["time", *MUSCLES]
    assert_same(data[:, 1:], clip["activation"].values, rtol=0)
    header, data = read_csv(files["Lab_s1_walk01_tracking_joint_error_deg.csv"])
    assert header == ["time", "tracking_joint_error_deg"]
    header, data = read_csv(files["Lab_s1_walk01_stance.csv"])
    assert set(np.unique(data[:, 1:])) <= {0.0, 1.0}
    assert_same(data[:, 1:], clip["stance"].values, rtol=0)


def test_npz_round_trip_without_pickle(clip: xr.Dataset, tmp_path: Path):
    (path,) = export_clip(clip, CLIP, "npz", tmp_path / "walk.npz")
    assert path.name == "walk.npz"
    with np.load(path, allow_pickle=False) as z:
        assert str(z["__clip__"]) == CLIP
        for name, var in clip.data_vars.items():
            assert_same(z[name], var.values, rtol=0)
            assert z[name].dtype == var.dtype
            assert list(z[f"{name}__dims"]) == list(var.dims)
        assert z["muscle"].dtype.kind == "U" and list(z["muscle"]) == MUSCLES
        assert list(z["xyz"]) == ["x", "y", "z"]
        assert_same(z["time"], clip["time"].values, rtol=0)
        assert str(z["grf__units"]) == "N"
    (some,) = export_clip(clip, CLIP, "npz", tmp_path / "some", fields=["grf"])
    with np.load(some, allow_pickle=False) as z:
        assert {k for k in z.files if not k.startswith("__")} == {
            "grf", "grf__dims", "grf__units", "time", "foot", "xyz"
        }  # fmt: skip


def test_bad_requests_name_what_exists(clip: xr.Dataset, tmp_path: Path):
    with pytest.raises(ValueError, match="unknown export format 'xlsx'.*csv, sto, mot, npz"):
        export_clip(clip, CLIP, "xlsx", tmp_path / "x")
    with pytest.raises(ValueError, match=r"no field nope; it has: .*activation"):
        export_clip(clip, CLIP, "csv", tmp_path / "x", fields=["nope"])
    with pytest.raises(ValueError, match="muscle_fmax .* is not a time series"):
        export_clip(clip, CLIP, "sto", tmp_path / "x", fields=["muscle_fmax"])
    with pytest.raises(ValueError, match="none of the default fields"):
        export_clip(clip[["reference_qpos"]], CLIP, "sto", tmp_path / "x")
    assert not list(tmp_path.glob("*"))  # nothing half-written by a refused request


# --- plot -----------------------------------------------------------------------------------


def test_muscle_sides_order_and_default_traces(clip: xr.Dataset):
    sides = dict(zip(MUSCLES, muscle_sides(MUSCLES), strict=True))
    assert sides["soleus_r"] == "right" and sides["IL_R10_l"] == "left"
    assert sides["DELT1"] == "right" and sides["DELT1_left"] == "left"  # left-only suffixes
    assert sides["rect_abd"] == "unsided"
    order, groups = muscle_order(MUSCLES)
    assert sorted(order) == list(range(len(MUSCLES)))
    names = [MUSCLES[i] for i in order]
    assert names.index("IL_R9_r") + 1 == names.index("IL_R10_r")  # natural order
    assert [g.side for g in groups] == sorted((g.side for g in groups),
                                              key=["right", "left", "unsided"].index)  # fmt: skip
    glmax = next(g for g in groups if g.prefix == "glmax" and g.side == "left")
    assert names[glmax.start : glmax.stop] == ["glmax1_l", "glmax2_l"]
    assert choose_muscles(clip, CLIP) == ["soleus_r", "gasmed_r", "vaslat_r", "glmax1_r",
                                          "tibant_r"]  # fmt: skip
    assert choose_muscles(clip, CLIP, ["DELT1_left"]) == ["DELT1_left"]
    with pytest.raises(KeyError, match="no muscle solues_r; did you mean soleus_r"):
        choose_muscles(clip, CLIP, ["solues_r"])


def test_plot_writes_png(clip: xr.Dataset, tmp_path: Path):
    path = plot_clip(clip, CLIP, tmp_path / "walk.png", muscles=["soleus_l", "DELT1"])
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 10_000
    assert not list(tmp_path.glob("*.part*"))
    # A retarget-only clip: missing panels say so, the figure is still drawn.
    bare = clip[["reference_qpos", "retarget_position_error"]]
    path = plot_clip(bare, CLIP, tmp_path / "bare")
    assert path.suffix == ".png" and path.read_bytes()[:8] == PNG_SIGNATURE
    with pytest.raises(KeyError, match="no muscle soleus_r"):
        plot_clip(bare, CLIP, tmp_path / "bare", muscles="soleus_r")
    with pytest.raises(ValueError, match="must end in .png"):
        plot_clip(clip, CLIP, tmp_path / "x.jpg")
    with pytest.raises(KeyError, match="no muscle nope"):
        plot_clip(clip, CLIP, tmp_path / "x.png", muscles=["nope"])


# --- a real catalog, through the CLI --------------------------------------------------------


def test_real_static_opt_clip_exports_and_plot(demo_corpus: Path, tmp_path: Path):
    from msconvert.convert.cli import main

    out = tmp_path / "catalog.zarr"
    args = ["amass", str(demo_corpus), "--out", str(out), "--method", "static-opt",
            "--include", "*stand*"]  # fmt: skip
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    cat = Catalog.open(out)
    (entry,) = cat.clips(status="complete")
    ds = cat[entry.clip]
    export_dir = tmp_path / "exports"
    export_dir.mkdir()
    written = {fmt: export_clip(ds, entry.clip, fmt, export_dir) for fmt in ("csv", "sto", "npz")}
    written["mot"] = export_clip(ds, entry.clip, "mot", export_dir)  # loads MyoFullBody
    stem = entry.clip.replace("/", "_")
    assert {p.name for p in written["sto"]} == {
        f"{stem}_{f}.sto" for f in ("activation", "excitation", "muscle_force")
    }
    _, columns, data = read_sto(export_dir / f"{stem}_muscle_force.sto")
    assert columns[1:] == [str(m) for m in ds["muscle"].values]
    assert_same(data[:, 1:], ds["muscle_force"].values, rtol=0)
    assert (data[:, 1:] >= 0).all()
    header, columns, data = read_sto(written["mot"][0])
    n_qpos = ds.sizes["qpos"]
    assert header["inDegrees"] == "yes" and len(columns) == n_qpos - 7 + 6 + 1
    col = {c: data[:, i] for i, c in enumerate(columns)}
    # Quiet standing: pelvis about 0.95 m up, upright (small tilt and list), knees within ±20°.
    assert 0.8 < np.median(col["pelvis_ty"]) < 1.1
    assert np.abs(col["pelvis_tilt"]).max() < 15 and np.abs(col["pelvis_list"]).max() < 15
    knee = ds["reference_qpos"].sel(qpos="knee_angle_r").values
    assert_same(col["knee_angle_r"], np.degrees(knee), rtol=1e-12)
    assert np.abs(col["knee_angle_r"]).max() < 20
    with np.load(written["npz"][0], allow_pickle=False) as z:
        assert_same(z["activation"], ds["activation"].values, rtol=0)
    png = plot_clip(ds, entry.clip, tmp_path / "standing.png")
    assert png.read_bytes()[:8] == PNG_SIGNATURE and png.stat().st_size > 10_000
