"""BVH corpora: a generator of our own writes BVH files (rotation orders, offsets, units, frame
times, extra joints), the reader turns them into `Motion`s, the CLI converts a corpus of them."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.spatial.transform import Rotation

from msconvert.convert.cli import main
from msconvert.datasets import demo
from msconvert.datasets.bvh import (
    JointMapError,
    load_joint_map,
    packaged_joint_maps,
    read_bvh,
    scan_bvh_corpus,
)
from msconvert.datasets.kinematics import (
    forward_kinematics,
    forward_kinematics_arrays,
    mean_skeleton,
    source_skeleton,
)
from msconvert.datasets.motion import BODY_JOINT_NAMES, Motion, MotionError
from msconvert.datasets.readers import read_clip

Y_UP = Rotation.from_rotvec([np.pi / 2, 0.0, 0.0]).as_matrix()  # file (y up) -> world (z up)
# The generator's own joint names (the 'test' map), and where CMU-style extra joints go.
NAMES = {j: f"J_{j}" for j in BODY_JOINT_NAMES}
ORDERS = ("ZXY", "XYZ", "YZX", "ZYX", "XZY", "YXZ")


def smpl_clip(make=demo.walking, **kwargs) -> tuple[np.ndarray, np.ndarray, float]:
    """An SMPL clip of the demo generator: pelvis world positions (T, 3), body pose (T, 22, 3)."""
    trans, poses, fps = make(**kwargs)
    body = poses[:, :66].reshape(-1, 22, 3)
    pelvis = trans + mean_skeleton().rest_joints[0]
    return pelvis, body, fps


def write_bvh(
    path: Path,
    pelvis: np.ndarray,
    body: np.ndarray,
    fps: float,
    *,
    names: dict[str, str] = NAMES,
    unit: float = 0.01,
    up: str = "y",
    orders: tuple[str, ...] = ORDERS,
    extra: dict[str, str] | None = None,
    frame_time: float | None = None,
    end_sites: bool = True,
    digits: int = 6,
    rest_turn: dict[int, np.ndarray] | None = None,
) -> Path:
    """Write an SMPL clip as BVH: the mean SMPL skeleton in its T-pose (file axes = SMPL's
    native ones, y up; or z up), `unit` metres per file unit, each joint its own rotation order
    (cycling through `orders`), and `extra` joints (name -> SMPL joint they sit above, at zero
    offset and zero rotation, as CMU's LHipJoint). `rest_turn` (y-up files) re-poses the rest:
    joint -> rotation (native frame) of the bones below it, the motion unchanged."""
    smpl = mean_skeleton()
    parents = smpl.parents
    stand = np.eye(3) if up == "y" else Y_UP  # z-up files: the native frame stood up
    world_rot = forward_kinematics_arrays(np.zeros_like(pelvis), body, smpl).rotations
    extra = extra or {}
    turn = [np.eye(3)] * len(parents)
    for j, q in (rest_turn or {}).items():
        assert up == "y"
        turn[j] = q
    above = {v: k for k, v in extra.items()}  # SMPL joint -> the extra joint above it
    lines = ["HIERARCHY"]
    columns: list[np.ndarray] = []
    count = 0

    def joint(j: int, depth: int) -> None:
        nonlocal count
        pad = "  " * depth
        name = names[BODY_JOINT_NAMES[j]]
        offset = (stand @ turn[parents[j]] @ smpl.offsets[j]) / unit if j else np.zeros(3)
        if j in above:  # the extra joint carries the offset; the joint sits on it
            lines.append(f"{pad}JOINT {above[j]}")
            lines.append(pad + "{")
            lines.append(f"{pad}  OFFSET {' '.join(f'{v:.{digits}f}' for v in offset)}")
            lines.append(f"{pad}  CHANNELS 3 Zrotation Xrotation Yrotation")
            columns.append(np.zeros((body.shape[0], 3)))
            offset = np.zeros(3)
            pad += "  "
        lines.append(f"{pad}{'ROOT' if j == 0 else 'JOINT'} {name}")
        lines.append(pad + "{")
        lines.append(f"{pad}  OFFSET {' '.join(f'{v:.{digits}f}' for v in offset)}")
        order = orders[count % len(orders)]
        count += 1
        rot_names = " ".join(f"{a}rotation" for a in order)
        if j == 0:
            lines.append(f"{pad}  CHANNELS 6 Xposition Yposition Zposition {rot_names}")
            # The file's world is the z-up world turned back to the file's axes.
            to_file = Y_UP.T if up == "y" else np.eye(3)
            columns.append(pelvis @ to_file.T / unit)
            local = to_file @ world_rot[:, 0] @ turn[0].T @ stand.T
        else:
            lines.append(f"{pad}  CHANNELS 3 {rot_names}")
            p = parents[j]
            rel = np.swapaxes(world_rot[:, p], -1, -2) @ world_rot[:, j]
            local = stand @ turn[p] @ rel @ turn[j].T @ stand.T
        with warnings.catch_warnings():  # gimbal lock: still the same rotation
            warnings.simplefilter("ignore", UserWarning)
            columns.append(Rotation.from_matrix(local).as_euler(order, degrees=True))
        children = np.flatnonzero(parents == j)
        for c in children:
            joint(int(c), depth + 1 + (j in above))
        if children.size == 0 and end_sites:
            lines.append(f"{pad}  End Site")
            lines.append(pad + "  {")
            lines.append(f"{pad}    OFFSET 0.0 {-2.0 if j in (7, 8) else 5.0} 1.0")
            lines.append(pad + "  }")
        lines.append(pad + "}")
        if j in above:
            lines.append("  " * depth + "}")

    joint(0, 0)
    data = np.concatenate(columns, axis=1)
    lines += ["MOTION", f"Frames: {data.shape[0]}", f"Frame Time: {frame_time or 1.0 / fps:.7f}"]
    lines += [" ".join(f"{v:.{digits}f}" for v in row) for row in data]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def map_file(tmp_path: Path, **changes: object) -> str:
    doc = {"name": "test", "joints": dict(NAMES), **changes}
    path = tmp_path / "test_map.json"
    path.write_text(json.dumps(doc))
    return str(path)


def truth(pelvis: np.ndarray, body: np.ndarray):
    """World joints of the SMPL clip the generator wrote."""
    return forward_kinematics_arrays(pelvis - mean_skeleton().rest_joints[0], body, mean_skeleton())


def joints_of(motion: Motion):
    skeleton = source_skeleton(motion)
    assert skeleton is not None
    return forward_kinematics(motion, skeleton)


# --- reading ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("unit", "up", "orders"),
    [
        (0.01, "y", ORDERS),
        (1.0, "z", ("XYZ",)),
        (0.0254, "y", ("ZYX", "YZX")),
        (0.001, "z", ORDERS),
    ],
)
def test_a_bvh_walk_gives_back_its_joints(tmp_path, unit, up, orders):
    pelvis, body, fps = smpl_clip(duration_s=1.0)
    path = write_bvh(tmp_path / "walk.bvh", pelvis, body, fps, unit=unit, up=up, orders=orders)
    motion = read_bvh(path, relpath="Lab/walk.bvh", joint_map=map_file(tmp_path))
    assert motion.clip_id == "Lab/walk" and motion.fps == fps
    assert motion.format == "bvh:test" and motion.body_model == "bvh"
    want, got = truth(pelvis, body), joints_of(motion)
    # Units found from the skeleton's size; y-up files stood up; rest pose = SMPL's T-pose.
    np.testing.assert_allclose(got.positions, want.positions, atol=2e-5)
    np.testing.assert_allclose(got.rotations, want.rotations, atol=1e-5)


def test_frame_times_give_the_rate(tmp_path):
    for fps, frame_time in ((120.0, 0.0083333), (30.0, 1 / 30), (250.0, 0.004), (59.94, 1 / 59.94)):
        pelvis, body, _ = smpl_clip(duration_s=0.5, fps=fps)
        path = write_bvh(tmp_path / f"r{fps}.bvh", pelvis, body, fps, frame_time=frame_time)
        motion = read_bvh(path, joint_map=map_file(tmp_path))
        assert motion.fps == pytest.approx(fps, rel=1e-4)
        assert motion.n_frames == pelvis.shape[0]


def test_extra_joints_between_mapped_ones_are_folded(tmp_path):
    # CMU-style: hip and collar joints at zero offset with zero rotations, a bone carried on.
    pelvis, body, fps = smpl_clip(duration_s=0.5)
    extra = {"LHipJoint": "left_hip", "RHipJoint": "right_hip", "Chest2": "spine3"}
    extra_idx = {k: BODY_JOINT_NAMES.index(v) for k, v in extra.items()}
    path = write_bvh(tmp_path / "x.bvh", pelvis, body, fps, extra=extra_idx)
    motion = read_bvh(path, joint_map=map_file(tmp_path))
    np.testing.assert_allclose(
        joints_of(motion).positions, truth(pelvis, body).positions, atol=2e-5
    )


def test_a_rest_pose_that_is_not_a_t_pose(tmp_path):
    # Arms hanging 80° down and the legs spread at rest: the joints still come back, and the
    # skeleton still stands in SMPL's T-pose with the file's bone lengths.
    pelvis, body, fps = smpl_clip(duration_s=0.5)
    down = np.radians(80.0)
    left, right = (Rotation.from_rotvec([0, 0, a]).as_matrix() for a in (-down, down))
    # The whole arm hangs, hand included (a limb's end turns with the limb).
    turn = {16: left, 18: left, 20: left, 17: right, 19: right, 21: right}
    turn[1] = Rotation.from_rotvec([0, 0, 0.3]).as_matrix()
    path = write_bvh(tmp_path / "t.bvh", pelvis, body, fps, rest_turn=turn)
    motion = read_bvh(path, joint_map=map_file(tmp_path))
    want, got = truth(pelvis, body), joints_of(motion)
    np.testing.assert_allclose(got.positions, want.positions, atol=2e-5)
    np.testing.assert_allclose(
        source_skeleton(motion).offsets[1:], mean_skeleton().offsets[1:], atol=1e-6
    )
    # Orientations follow the file's joints up to a twist about the re-posed bones: a bone's
    # direction does not say how far it turned about itself (here up to 10° at the wrists).
    rel = np.swapaxes(got.rotations, -1, -2) @ want.rotations
    angle = np.degrees(Rotation.from_matrix(rel.reshape(-1, 3, 3)).magnitude()).reshape(
        rel.shape[:2]
    )
    assert angle.max() < 12.0


def test_packaged_maps_and_auto(tmp_path):
    assert {"cmu", "lafan1"} <= set(packaged_joint_maps())
    for name in ("cmu", "lafan1"):
        m = load_joint_map(name)
        assert set(m.joints) == set(BODY_JOINT_NAMES) and m.up == "y" and m.unit
    pelvis, body, fps = smpl_clip(duration_s=0.5)
    cmu = load_joint_map("cmu")
    names = {j: cmu.joints[j][0] for j in BODY_JOINT_NAMES}
    extra = {"LHipJoint": 1, "RHipJoint": 2}
    path = write_bvh(
        tmp_path / "cmu.bvh", pelvis, body, fps, names=names, unit=cmu.unit, extra=extra
    )
    motion = read_bvh(path)  # auto: the first packaged map whose joints the file has
    assert motion.format == "bvh:cmu"
    np.testing.assert_allclose(
        joints_of(motion).positions, truth(pelvis, body).positions, atol=1e-4
    )
    lafan = load_joint_map("lafan1")
    names = {j: lafan.joints[j][-1] for j in BODY_JOINT_NAMES}  # the LeftToeBase spelling
    path = write_bvh(tmp_path / "lafan.bvh", pelvis, body, fps, names=names, unit=0.01)
    assert read_bvh(path, joint_map="lafan1").format == "bvh:lafan1"


def test_a_bvh_walk_retargets_like_the_amass_one(tmp_path):
    from msconvert.datasets.amass import read_amass
    from msconvert.emulator.model import load_model
    from msconvert.emulator.retarget import RetargetConfig, retarget

    model = load_model()
    trans, poses, fps = demo.walking(duration_s=2.0)
    amass = read_amass(demo.write_smplh_npz(tmp_path / "w_poses.npz", trans, poses, fps))
    pelvis, body, _ = smpl_clip(duration_s=2.0)
    motion = read_bvh(
        write_bvh(tmp_path / "w.bvh", pelvis, body, fps), joint_map=map_file(tmp_path)
    )
    a = retarget(amass, model, RetargetConfig())
    b = retarget(motion, model, RetargetConfig(), source_skeleton(motion))
    for key in ("retarget.position_error_mm", "retarget.orientation_error_deg"):
        assert b.metrics[key] == pytest.approx(a.metrics[key], abs=0.5), key
    np.testing.assert_allclose(b.qpos[:, 7:], a.qpos[:, 7:], atol=0.02)


# --- failures: one line each ---------------------------------------------------------------------


def _good(tmp_path: Path) -> str:
    pelvis, body, fps = smpl_clip(duration_s=0.3)
    return write_bvh(tmp_path / "good.bvh", pelvis, body, fps).read_text()


BREAKS = {
    "truncated_motion": (lambda t: t[: len(t) - 40], "truncated"),
    "truncated_hierarchy": (lambda t: t[: t.index("MOTION") // 2], "motion"),
    "no_motion_numbers": (lambda t: t[: t.index("Frame Time")], "truncated"),
    "bad_channel": (lambda t: t.replace("Xrotation", "Wrotation", 1), "unknown channel"),
    "two_rotations": (lambda t: _first(t, "CHANNELS 3", "CHANNELS 2 Xrotation Yrotation"), "order"),
    "zero_frame_time": (lambda t: _set(t, "Frame Time:", "0"), "frame rate"),
    "megahertz": (lambda t: _set(t, "Frame Time:", "0.000001"), "frame rate"),
    "not_a_number": (lambda t: t[:-20] + " abc" + t[-16:], "not a number"),
    "nan": (lambda t: t.rstrip()[: t.rstrip().rfind(" ")] + " nan\n", "non-finite"),
    "one_frame": (lambda t: _one_frame(t), "at least 2"),
    "empty": (lambda t: "", "empty"),
    "not_bvh": (lambda t: "hello world", "motion"),
    "missing_joint": (lambda t: t.replace("J_left_wrist", "Wrist_L"), "no joint J_left_wrist"),
    "duplicate_joint": (lambda t: t.replace("J_left_wrist", "J_left_elbow"), "twice"),
    "braces": (lambda t: t.replace("}", "", 1), "braces"),
}


def _first(text: str, key: str, line: str) -> str:
    """The text with the first line containing `key` replaced by `line`."""
    lines = text.splitlines()
    k = next(i for i, x in enumerate(lines) if key in x)
    lines[k] = line
    return "\n".join(lines) + "\n"


def _set(text: str, key: str, value: str) -> str:
    lines = text.splitlines()
    k = next(i for i, line in enumerate(lines) if line.startswith(key))
    lines[k] = f"{key} {value}"
    return "\n".join(lines) + "\n"


def _one_frame(text: str) -> str:
    lines = _set(text, "Frames:", "1").splitlines()
    k = next(i for i, line in enumerate(lines) if line.startswith("Frame Time"))
    return "\n".join(lines[: k + 2]) + "\n"


@pytest.mark.parametrize("name", sorted(BREAKS))
def test_broken_files_fail_with_one_line(tmp_path, name):
    good = _good(tmp_path)
    make, fragment = BREAKS[name]
    path = tmp_path / "Lab" / f"{name}.bvh"
    path.parent.mkdir(exist_ok=True)
    path.write_text(make(good))
    with pytest.raises(MotionError) as info:
        read_bvh(path, relpath=f"Lab/{name}.bvh", joint_map=map_file(tmp_path))
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"Lab/{name}.bvh: ")
    assert fragment.lower() in message.lower(), message


def test_a_map_whose_tree_is_not_smpls_is_refused(tmp_path):
    pelvis, body, fps = smpl_clip(duration_s=0.3)
    path = write_bvh(tmp_path / "w.bvh", pelvis, body, fps)
    swapped = dict(NAMES, left_elbow="J_left_wrist", left_wrist="J_left_elbow")
    with pytest.raises(MotionError, match="is not below"):
        read_bvh(path, joint_map=map_file(tmp_path, joints=swapped))


def test_bad_maps_are_refused(tmp_path):
    with pytest.raises(JointMapError, match="packaged maps"):
        load_joint_map(str(tmp_path / "nowhere.json"))
    short = {k: v for k, v in NAMES.items() if k != "head"}
    with pytest.raises(JointMapError, match="no BVH joint for head"):
        load_joint_map(map_file(tmp_path, joints=short))
    with pytest.raises(JointMapError, match="unit"):
        load_joint_map(map_file(tmp_path, unit="furlong"))
    pelvis, body, fps = smpl_clip(duration_s=0.3)
    path = write_bvh(tmp_path / "w.bvh", pelvis, body, fps)
    with pytest.raises(MotionError, match="no packaged joint map fits"):
        read_bvh(path)  # the generator's names are in no packaged map


# --- the corpus, the CLI, provenance --------------------------------------------------------------


@pytest.fixture(scope="module")
def bvh_corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bvh")
    cmu = load_joint_map("cmu")
    names = {j: cmu.joints[j][0] for j in BODY_JOINT_NAMES}
    for sub, make in (("walk", demo.walking), ("squat", demo.squat)):
        pelvis, body, fps = smpl_clip(make, duration_s=1.0)
        write_bvh(root / "CMU" / f"{sub}.bvh", pelvis, body, fps, names=names, unit=cmu.unit)
    (root / "CMU" / "broken.bvh").write_text("HIERARCHY\nROOT Hips\n{\n  OFFSET 0 0")
    demo.write_smplh_npz(root / "npz" / "stand_poses.npz", *demo.standing(duration_s=1.0))
    return root


def test_scan_finds_bvh_files_only(bvh_corpus):
    scan = scan_bvh_corpus(bvh_corpus, "cmu")
    assert [s.clip_id for s in scan.sources] == ["CMU/broken", "CMU/squat", "CMU/walk"]
    assert {s.body_model for s in scan.sources} == {"bvh:cmu"}
    assert read_clip(scan.sources[2]).format == "bvh:cmu"


def test_bvh_command_converts_and_ls_filters_by_format(bvh_corpus, tmp_path):
    runner = CliRunner()
    out = str(tmp_path / "c.zarr")
    r = runner.invoke(main, ["bvh", str(bvh_corpus), "--out", out, "--until", "retarget"])
    assert r.exit_code == 1, r.output  # the broken file fails, alone
    r = runner.invoke(
        main, ["amass", str(bvh_corpus), "--out", out, "--until", "retarget", "--resume"]
    )
    assert r.exit_code == 0, r.output
    rows = json.loads(runner.invoke(main, ["ls", out, "--format", "json"]).output)
    by_clip = {row["clip"]: row for row in rows}
    assert by_clip["CMU/broken"]["status"] == "failed"
    assert "truncated" in by_clip["CMU/broken"]["reason"]
    walk = by_clip["CMU/walk"]
    assert walk["status"] == "complete" and walk["source_format"] == "bvh:cmu"
    assert walk["metrics"]["retarget.position_error_mm"] < 15.0
    assert by_clip["npz/stand"]["source_format"] == "smplh"
    for wanted, clips in (
        ("bvh", {"CMU/broken", "CMU/squat", "CMU/walk"}),
        ("bvh:cmu", {"CMU/squat", "CMU/walk"}),  # the broken one's map was never found
        ("bvh:auto", {"CMU/broken"}),
        ("bvh:lafan1", set()),
        ("smplh", {"npz/stand"}),
    ):
        r = runner.invoke(main, ["ls", out, "--source-format", wanted, "--format", "json"])
        assert {row["clip"] for row in json.loads(r.output)} == clips, wanted
    info = json.loads(runner.invoke(main, ["info", out, "CMU/walk", "--format", "json"]).output)
    assert info["attrs"]["source_format"] == "bvh:cmu"
    assert info["attrs"]["body_model_mode"] == "source-skeleton"


def test_bvh_command_refuses_a_bad_map(bvh_corpus, tmp_path):
    r = CliRunner().invoke(
        main, ["bvh", str(bvh_corpus), "--out", str(tmp_path / "c.zarr"), "--map", "nope"]
    )
    assert r.exit_code == 2 and "--map" in r.output


def test_the_source_format_and_skeleton_round_trip_through_a_dataset(tmp_path):
    pelvis, body, fps = smpl_clip(duration_s=0.3)
    motion = read_bvh(
        write_bvh(tmp_path / "w.bvh", pelvis, body, fps), joint_map=map_file(tmp_path)
    )
    back = Motion.from_dataset(motion.to_dataset(joints_of(motion)), motion.clip_id)
    assert back.format == "bvh:test" and back.body_model == "bvh"
    np.testing.assert_allclose(back.source_skeleton, motion.source_skeleton, atol=1e-6)
    np.testing.assert_allclose(joints_of(back).positions, joints_of(motion).positions, atol=1e-5)
