"""AMASS ingestion: every accepted file variant, every refusal, discovery, and fuzzed bytes."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msconvert.catalog.schema import sanitize_clip_id
from msconvert.datasets import ClipSource, Motion, MotionError, discover, read_amass
from msconvert.datasets.amass import scan_corpus

T = 12  # frames in the synthetic clips


# --- synthetic files ----------------------------------------------------------------------------


def smplh_arrays(n: int = T, width: int = 156, dtype: type = np.float64, seed: int = 0) -> dict:
    """The keys of an AMASS SMPL-H `_poses.npz` file, with random values."""
    rng = np.random.default_rng(seed)
    return {
        "poses": rng.normal(scale=0.3, size=(n, width)).astype(dtype),
        "trans": rng.normal(size=(n, 3)).astype(dtype),
        "betas": rng.normal(size=16),
        "dmpls": rng.normal(size=(n, 8)),
        "gender": np.array("female"),
        "mocap_framerate": np.array(120.0),
    }


def smplx_arrays(n: int = T, hands: bool = True, dtype: type = np.float64, seed: int = 1) -> dict:
    """The keys of an AMASS SMPL-X `_stageii.npz` file (split pose keys and 'poses')."""
    rng = np.random.default_rng(seed)
    root = rng.normal(scale=0.3, size=(n, 3))
    body = rng.normal(scale=0.3, size=(n, 63))
    jaw_eyes = rng.normal(scale=0.1, size=(n, 9))
    hand = rng.normal(scale=0.3, size=(n, 90))
    arrays = {
        "trans": rng.normal(size=(n, 3)).astype(dtype),
        "root_orient": root.astype(dtype),
        "pose_body": body.astype(dtype),
        "pose_jaw": jaw_eyes[:, :3],
        "pose_eye": jaw_eyes[:, 3:],
        "poses": np.concatenate([root, body, jaw_eyes, hand], axis=1).astype(dtype),
        "betas": rng.normal(size=16),
        "gender": np.array("male"),
        "mocap_frame_rate": np.array(60.0),
        "surface_model_type": np.array("smplx"),
    }
    if hands:
        arrays["pose_hand"] = hand.astype(dtype)
    return arrays


def write_npz(path: Path, arrays: dict, compressed: bool = False) -> Path:
    """Write arrays as an .npz (object arrays allowed: np.savez pickles them, like real files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


def without(arrays: dict, *keys: str) -> dict:
    return {k: v for k, v in arrays.items() if k not in keys}


def npz_bytes(arrays: dict, compressed: bool = False) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def expect_error(path: Path, *fragments: str, relpath: str | None = None) -> str:
    """Read a bad file: one MotionError, one line, naming the file and every fragment."""
    with pytest.raises(MotionError) as info:
        read_amass(path, relpath=relpath)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message
    assert message.startswith(f"{relpath or path.name}: ")
    for fragment in fragments:
        assert fragment in message, message
    return message


# --- accepted variants --------------------------------------------------------------------------


def test_smplh_156(tmp_path: Path) -> None:
    arrays = smplh_arrays()
    path = write_npz(tmp_path / "walk_poses.npz", arrays)
    motion = read_amass(path)
    assert isinstance(motion, Motion)
    assert motion.clip_id == "walk" and motion.body_model == "smplh"
    assert motion.fps == 120.0 and motion.gender == "female" and motion.n_frames == T
    np.testing.assert_array_equal(motion.root_translation, arrays["trans"])
    np.testing.assert_array_equal(motion.body_pose, arrays["poses"][:, :66].reshape(T, 22, 3))
    np.testing.assert_array_equal(motion.hand_pose, arrays["poses"][:, 66:].reshape(T, 30, 3))
    np.testing.assert_array_equal(motion.betas, arrays["betas"])
    data = path.read_bytes()
    assert motion.provenance.sha256 == hashlib.sha256(data).hexdigest()
    assert motion.provenance.size == len(data)
    assert motion.provenance.relpath == "walk_poses.npz"
    assert motion.provenance.path == str(path)


def test_relpath_and_clip_id_passed_through(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "a_poses.npz", smplh_arrays())
    motion = read_amass(path, relpath="KIT/3/walking slow08_poses.npz")
    assert motion.clip_id == "KIT/3/walking_slow08"
    assert motion.provenance.relpath == "KIT/3/walking slow08_poses.npz"
    assert read_amass(path, relpath="x/y_poses.npz", clip_id="given").clip_id == "given"


def test_smplh_52x3_equals_156(tmp_path: Path) -> None:
    arrays = smplh_arrays()
    flat = read_amass(write_npz(tmp_path / "a_poses.npz", arrays))
    arrays["poses"] = arrays["poses"].reshape(T, 52, 3)
    shaped = read_amass(write_npz(tmp_path / "b_poses.npz", arrays))
    np.testing.assert_array_equal(flat.body_pose, shaped.body_pose)
    np.testing.assert_array_equal(flat.hand_pose, shaped.hand_pose)


def test_smplh_body_only_66(tmp_path: Path) -> None:
    arrays = smplh_arrays(width=66)
    motion = read_amass(write_npz(tmp_path / "a_poses.npz", arrays))
    assert motion.hand_pose is None and not motion.has_hand_data
    np.testing.assert_array_equal(motion.body_pose, arrays["poses"].reshape(T, 22, 3))


def test_smpl_72_drops_smpl_hands(tmp_path: Path) -> None:
    arrays = smplh_arrays(width=72)
    motion = read_amass(write_npz(tmp_path / "a_poses.npz", arrays))
    assert motion.hand_pose is None
    np.testing.assert_array_equal(motion.body_pose, arrays["poses"][:, :66].reshape(T, 22, 3))


def test_smplx_split_keys(tmp_path: Path) -> None:
    arrays = smplx_arrays()
    motion = read_amass(write_npz(tmp_path / "S1/walk_stageii.npz", arrays))
    assert motion.body_model == "smplx" and motion.fps == 60.0 and motion.gender == "male"
    body = np.concatenate([arrays["root_orient"], arrays["pose_body"]], axis=1)
    np.testing.assert_array_equal(motion.body_pose, body.reshape(T, 22, 3))
    np.testing.assert_array_equal(motion.hand_pose, arrays["pose_hand"].reshape(T, 30, 3))


def test_smplx_split_without_hands(tmp_path: Path) -> None:
    arrays = without(smplx_arrays(hands=False), "poses")
    arrays["pose_body"] = arrays["pose_body"].reshape(T, 21, 3)
    motion = read_amass(write_npz(tmp_path / "walk_stageii.npz", arrays))
    assert motion.hand_pose is None and motion.body_model == "smplx"
    np.testing.assert_array_equal(motion.body_pose[:, 1:], arrays["pose_body"])


def test_smplx_poses_165_fallback(tmp_path: Path) -> None:
    arrays = smplx_arrays()
    split = read_amass(write_npz(tmp_path / "a_stageii.npz", arrays))
    fallback = without(arrays, "root_orient", "pose_body", "pose_hand")
    motion = read_amass(write_npz(tmp_path / "b_stageii.npz", fallback))
    assert motion.body_model == "smplx"
    np.testing.assert_array_equal(motion.body_pose, arrays["poses"][:, :66].reshape(T, 22, 3))
    np.testing.assert_array_equal(motion.hand_pose, arrays["poses"][:, 75:].reshape(T, 30, 3))
    np.testing.assert_array_equal(motion.body_pose, split.body_pose)
    np.testing.assert_array_equal(motion.hand_pose, split.hand_pose)


def test_unrelated_object_arrays_are_not_loaded(tmp_path: Path) -> None:
    # Real SMPL-X files carry pickled marker metadata; only the keys a Motion needs are read.
    arrays = smplx_arrays() | {"marker_meta": np.array([{"labels": ["C7"]}], dtype=object)}
    assert read_amass(write_npz(tmp_path / "a_stageii.npz", arrays)).n_frames == T


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("kind", ["smplh", "smplx"])
def test_float_dtypes_become_float64(tmp_path: Path, dtype: type, kind: str) -> None:
    if kind == "smplh":
        arrays = smplh_arrays(dtype=dtype)
        expected_body = arrays["poses"][:, :66]
    else:
        arrays = smplx_arrays(dtype=dtype)
        expected_body = np.concatenate([arrays["root_orient"], arrays["pose_body"]], axis=1)
    motion = read_amass(
        write_npz(tmp_path / f"a_{'poses' if kind == 'smplh' else 'stageii'}.npz", arrays)
    )
    for arr in (motion.root_translation, motion.body_pose, motion.hand_pose, motion.betas):
        assert arr.dtype == np.float64
    np.testing.assert_array_equal(motion.body_pose.reshape(T, 66), expected_body.astype(np.float64))


@pytest.mark.parametrize("key", ["mocap_framerate", "mocap_frame_rate", "fps"])
@pytest.mark.parametrize(
    "value",
    [np.array(59.94), np.array([59.94]), 60, np.float32(59.94), np.array(60, dtype=np.int32)],
    ids=["0d", "1elem", "int", "float32", "int32"],
)
@pytest.mark.parametrize("suffix", ["_poses.npz", "_stageii.npz"])
def test_framerate_spellings_and_forms(
    tmp_path: Path, key: str, value: object, suffix: str
) -> None:
    arrays = smplh_arrays() if suffix == "_poses.npz" else smplx_arrays()
    arrays = without(arrays, "mocap_framerate", "mocap_frame_rate") | {key: value}
    motion = read_amass(write_npz(tmp_path / f"a{suffix}", arrays))
    assert motion.fps == pytest.approx(float(np.asarray(value).reshape(())), rel=1e-6)
    assert isinstance(motion.fps, float)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("male", "male"),
        (b"female", "female"),
        (np.array(["Female"]), "female"),
        (np.array([b"NEUTRAL"]), "neutral"),
        ("  Male \n", "male"),
        ("b'male'", "male"),
        (np.bytes_(b"male"), "male"),
        (np.str_("neutral"), "neutral"),
    ],
)
def test_gender_forms(tmp_path: Path, value: object, expected: str) -> None:
    arrays = smplh_arrays() | {"gender": value}
    assert read_amass(write_npz(tmp_path / "a_poses.npz", arrays)).gender == expected


@pytest.mark.parametrize("shape", [(16,), (1, 16), (T, 16), (0,)])
def test_betas_forms(tmp_path: Path, shape: tuple[int, ...]) -> None:
    betas = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    motion = read_amass(write_npz(tmp_path / "a_poses.npz", smplh_arrays() | {"betas": betas}))
    assert motion.betas.dtype == np.float64 and motion.betas.shape == (shape[-1],)
    np.testing.assert_array_equal(
        motion.betas, betas.reshape(-1, shape[-1])[0] if betas.size else []
    )


def test_compressed_npz(tmp_path: Path) -> None:
    motion = read_amass(write_npz(tmp_path / "a_poses.npz", smplh_arrays(), compressed=True))
    assert motion.n_frames == T


# --- refusals -----------------------------------------------------------------------------------


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "a_poses.npz").write_bytes(b"")
    expect_error(tmp_path / "a_poses.npz", "empty file")


def test_not_npz_bytes(tmp_path: Path) -> None:
    (tmp_path / "a_poses.npz").write_text("poses,trans\n1,2\n")
    expect_error(tmp_path / "a_poses.npz", "not an .npz", "zip")


def test_single_npy_is_not_npz(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.zeros(3))
    os.replace(tmp_path / "a.npy", tmp_path / "a_poses.npz")
    expect_error(tmp_path / "a_poses.npz", ".npy array", "not an .npz")


def test_not_a_file(tmp_path: Path) -> None:
    expect_error(tmp_path / "missing_poses.npz", "cannot read file", "FileNotFoundError")
    (tmp_path / "dir_poses.npz").mkdir()
    expect_error(tmp_path / "dir_poses.npz", "cannot read file")


@pytest.mark.parametrize("compressed", [False, True])
def test_truncated_zip(tmp_path: Path, compressed: bool) -> None:
    data = npz_bytes(smplh_arrays(), compressed)
    (tmp_path / "a_poses.npz").write_bytes(data[: len(data) // 2])
    expect_error(tmp_path / "a_poses.npz", "corrupt or truncated", relpath="KIT/3/a_poses.npz")


@pytest.mark.parametrize("compressed", [False, True])
def test_corrupt_member_data(tmp_path: Path, compressed: bool) -> None:
    arrays = {"trans": np.zeros((T, 3))} | without(smplh_arrays(), "trans")
    data = bytearray(npz_bytes(arrays, compressed))
    # 'trans' is the first member: flip bytes well inside its (compressed) data.
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as z:
        info = z.getinfo("trans.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    for i in range(start + info.compress_size // 2, start + info.compress_size // 2 + 4):
        data[i] ^= 0xFF
    (tmp_path / "a_poses.npz").write_bytes(bytes(data))
    expect_error(tmp_path / "a_poses.npz", "'trans'")


def test_member_that_is_not_npy(tmp_path: Path) -> None:
    buf = io.BytesIO()
    np.savez(buf, **without(smplh_arrays(), "trans"))
    with zipfile.ZipFile(buf, "a") as z:
        z.writestr("trans", b"not an array")
    (tmp_path / "a_poses.npz").write_bytes(buf.getvalue())
    expect_error(tmp_path / "a_poses.npz", "'trans'", "not a .npy array")


def test_bad_npy_header(tmp_path: Path) -> None:
    buf = io.BytesIO()
    np.savez(buf, **without(smplh_arrays(), "trans"))
    with zipfile.ZipFile(buf, "a") as z:
        z.writestr("trans.npy", b"\x93NUMPY\x01\x00\x10\x00{'descr': nonsense}\n")
    (tmp_path / "a_poses.npz").write_bytes(buf.getvalue())
    expect_error(tmp_path / "a_poses.npz", "'trans'", "not a valid .npy")


@pytest.mark.parametrize(
    ("name", "drop", "fragments"),
    [
        ("a_poses.npz", ("trans",), ("missing key 'trans'",)),
        ("a_poses.npz", ("poses",), ("missing key 'poses'",)),
        ("a_poses.npz", ("mocap_framerate",), ("missing key 'mocap_framerate'",)),
        ("a_poses.npz", ("gender",), ("missing key 'gender'",)),
        ("a_poses.npz", ("betas",), ("missing key 'betas'",)),
        ("a_poses.npz", ("trans", "gender"), ("missing keys 'trans', 'gender'",)),
        (
            "a_stageii.npz",
            ("poses", "root_orient", "pose_body", "pose_hand"),
            ("missing key 'root_orient' and 'pose_body' (or 'poses')",),
        ),
        ("a_stageii.npz", ("poses", "pose_body"), ("'pose_body' (or 'poses')",)),
        ("a_stageii.npz", ("mocap_frame_rate",), ("missing key 'mocap_frame_rate'",)),
    ],
)
def test_missing_keys(tmp_path: Path, name: str, drop: tuple[str, ...], fragments: tuple) -> None:
    arrays = smplh_arrays() if name.endswith("_poses.npz") else smplx_arrays()
    path = write_npz(tmp_path / name, without(arrays, *drop))
    expect_error(path, *fragments, relpath=f"KIT/3/{name}")


def test_object_arrays_refused(tmp_path: Path) -> None:
    arrays = smplh_arrays() | {"gender": np.array(["male"], dtype=object)}
    path = write_npz(tmp_path / "a_poses.npz", arrays)
    expect_error(
        path, "'gender'", "contains pickled object arrays (refused; files are never unpickled)"
    )
    arrays = smplh_arrays() | {"poses": np.array([[0.0] * 156] * T, dtype=object)}
    expect_error(write_npz(tmp_path / "b_poses.npz", arrays), "'poses'", "pickled object arrays")


@pytest.mark.parametrize(
    ("kind", "key", "value", "fragments"),
    [
        ("smplh", "poses", np.zeros((T, 100)), ("'poses'", f"({T}, 100)", "(T, 156)")),
        ("smplh", "poses", np.zeros((T, 52, 4)), ("'poses'", f"({T}, 52, 4)", "(T, 156)")),
        ("smplh", "poses", np.zeros(156), ("'poses'", "(156,)")),
        ("smplh", "trans", np.zeros((T, 2)), ("'trans'", f"({T}, 2)", "(T, 3)")),
        ("smplh", "trans", np.zeros(T), ("'trans'", f"({T},)", "(T, 3)")),
        ("smplh", "betas", np.zeros((1, 2, 3)), ("'betas'", "(1, 2, 3)", "(B,)")),
        ("smplx", "root_orient", np.zeros((T, 4)), ("'root_orient'", f"({T}, 4)", "(T, 3)")),
        ("smplx", "pose_body", np.zeros((T, 60)), ("'pose_body'", f"({T}, 60)", "(T, 63)")),
        ("smplx", "pose_hand", np.zeros((T, 45)), ("'pose_hand'", f"({T}, 45)", "(T, 90)")),
    ],
)
def test_wrong_shapes(
    tmp_path: Path, kind: str, key: str, value: np.ndarray, fragments: tuple
) -> None:
    arrays = (smplh_arrays() if kind == "smplh" else smplx_arrays()) | {key: value}
    name = "a_poses.npz" if kind == "smplh" else "a_stageii.npz"
    expect_error(write_npz(tmp_path / name, arrays), *fragments)


@pytest.mark.parametrize("key", ["poses", "trans"])
def test_integer_arrays_refused(tmp_path: Path, key: str) -> None:
    arrays = smplh_arrays()
    arrays[key] = arrays[key].astype(np.int64)
    expect_error(write_npz(tmp_path / "a_poses.npz", arrays), f"'{key}'", "dtype int64", "floating")


@pytest.mark.parametrize("key", ["poses", "pose_body", "pose_hand"])
def test_frame_count_mismatch(tmp_path: Path, key: str) -> None:
    arrays = smplh_arrays() if key == "poses" else smplx_arrays()
    arrays[key] = arrays[key][:-1]
    name = "a_poses.npz" if key == "poses" else "a_stageii.npz"
    expect_error(
        write_npz(tmp_path / name, arrays), "frame count mismatch", f"'{key}'", str(T), str(T - 1)
    )


def test_non_finite_values(tmp_path: Path) -> None:
    arrays = smplh_arrays()
    arrays["poses"][3, 100] = np.nan  # a hand value
    arrays["trans"][7, 0] = np.inf
    arrays["poses"][7, 5] = -np.inf
    expect_error(
        write_npz(tmp_path / "a_poses.npz", arrays),
        "non-finite",
        f"2 of {T} frames",
        "first: frame 3",
        "'trans'",
        "'poses'",
    )


def test_non_finite_split_keys(tmp_path: Path) -> None:
    arrays = smplx_arrays()
    arrays["pose_hand"][5:9] = np.nan
    expect_error(write_npz(tmp_path / "a_stageii.npz", arrays), "4 of", "frame 5", "'pose_hand'")


@pytest.mark.parametrize(
    ("fps", "fragments"),
    [
        (0.0, ("positive", "0")),
        (-30.0, ("positive", "-30")),
        (np.nan, ("not finite",)),
        (np.inf, ("not finite",)),
        (5000.0, ("absurd", "5000")),
        (0.5, ("absurd", "0.5")),
        (np.array([30.0, 60.0]), ("one number", "(2,)")),
        (np.array("30"), ("one number",)),
    ],
)
def test_bad_framerate(tmp_path: Path, fps: object, fragments: tuple) -> None:
    arrays = smplh_arrays() | {"mocap_framerate": fps}
    expect_error(write_npz(tmp_path / "a_poses.npz", arrays), "mocap_framerate", *fragments)


@pytest.mark.parametrize("n", [0, 1])
def test_too_few_frames(tmp_path: Path, n: int) -> None:
    path = write_npz(tmp_path / "a_poses.npz", smplh_arrays(n=n))
    expect_error(path, f"has {n} frame", "at least 2")


@pytest.mark.parametrize(
    ("gender", "fragment"),
    [("alien", "unknown gender"), (np.array(1.0), "'gender'"), (np.array(["a", "b"]), "'gender'")],
)
def test_bad_gender(tmp_path: Path, gender: object, fragment: str) -> None:
    arrays = smplh_arrays() | {"gender": gender}
    expect_error(write_npz(tmp_path / "a_poses.npz", arrays), fragment)


def test_unprintable_relpath_stays_one_line(tmp_path: Path) -> None:
    (tmp_path / "a_poses.npz").write_bytes(b"")
    with pytest.raises(MotionError) as info:
        read_amass(tmp_path / "a_poses.npz", relpath="odd\nname_poses.npz")
    assert str(info.value) == "odd\\nname_poses.npz: empty file"


# --- fuzzing: no input bytes raise anything but MotionError -------------------------------------

_VALID = npz_bytes(smplh_arrays(n=4))
_VALID_COMPRESSED = npz_bytes(smplx_arrays(n=4), compressed=True)


@pytest.fixture(scope="module")
def fuzz_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "fuzz_poses.npz"


def _read_any(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    try:
        read_amass(path, relpath="fuzz/fuzz_poses.npz")
    except MotionError as exc:
        message = str(exc)
        assert "\n" not in message and message.startswith("fuzz/fuzz_poses.npz: ")


_FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(data=st.one_of(st.binary(max_size=600), st.binary(max_size=600).map(b"PK\x03\x04".__add__)))
def test_fuzz_random_bytes(fuzz_file: Path, data: bytes) -> None:
    _read_any(fuzz_file, data)


@_FUZZ
@given(valid=st.sampled_from([_VALID, _VALID_COMPRESSED]), frac=st.floats(0, 1))
def test_fuzz_truncations(fuzz_file: Path, valid: bytes, frac: float) -> None:
    _read_any(fuzz_file, valid[: int(frac * len(valid))])


@_FUZZ
@given(
    valid=st.sampled_from([_VALID, _VALID_COMPRESSED]),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), max_size=6),
)
def test_fuzz_byte_flips(fuzz_file: Path, valid: bytes, flips: list[tuple[float, int]]) -> None:
    data = bytearray(valid)
    for where, mask in flips:
        data[int(where * len(data))] ^= mask
    _read_any(fuzz_file, bytes(data))


# --- discovery ----------------------------------------------------------------------------------


def touch(root: Path, *relpaths: str) -> None:
    for rel in relpaths:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "AMASS"
    touch(
        root,
        "KIT/3/walking_slow08_poses.npz",
        "KIT/3/shape.npz",
        "KIT/3/notes.txt",
        "KIT/3/._walking_slow08_poses.npz",  # a macOS resource fork, not a clip
        "CMU/01/01_01_poses.npz",
        "CMU/01/01_02_poses.npz",
        "BMLrub/rub001/0001_treadmill_norm_stageii.npz",
        ".cache/old_poses.npz",
        "top_poses.npz",
    )
    return root


def test_discover_nested(corpus: Path) -> None:
    sources = discover(corpus)
    assert [s.clip_id for s in sources] == [
        "BMLrub/rub001/0001_treadmill_norm",
        "CMU/01/01_01",
        "CMU/01/01_02",
        "KIT/3/walking_slow08",
        "top",
    ]
    kit = sources[3]
    assert kit == ClipSource(
        path=corpus / "KIT/3/walking_slow08_poses.npz",
        relpath="KIT/3/walking_slow08_poses.npz",
        clip_id="KIT/3/walking_slow08",
        body_model="smplh",
    )
    assert sources[0].body_model == "smplx"
    assert all(s.path.is_file() for s in sources)
    assert discover(str(corpus)) == sources


@pytest.mark.parametrize(
    ("include", "exclude", "limit", "expected"),
    [
        (("KIT/*",), (), None, ["KIT/3/walking_slow08"]),
        (("*_stageii.npz",), (), None, ["BMLrub/rub001/0001_treadmill_norm"]),  # relpath match
        (("CMU/*/01_0?",), (), None, ["CMU/01/01_01", "CMU/01/01_02"]),
        ((), ("CMU/*", "top"), None, ["BMLrub/rub001/0001_treadmill_norm", "KIT/3/walking_slow08"]),
        (("CMU/*",), ("*01_01*",), None, ["CMU/01/01_02"]),
        (("*",), (), 2, ["BMLrub/rub001/0001_treadmill_norm", "CMU/01/01_01"]),
        (("CMU/*", "KIT/*"), ("*01_01*",), 1, ["CMU/01/01_02"]),
        ((), (), 0, []),
        ("KIT/*", (), None, ["KIT/3/walking_slow08"]),  # one pattern given as a bare string
    ],
)
def test_discover_filters(corpus: Path, include, exclude, limit, expected: list[str]) -> None:
    assert [s.clip_id for s in discover(corpus, include, exclude, limit)] == expected


def test_discover_negative_limit(corpus: Path) -> None:
    with pytest.raises(ValueError, match="limit"):
        discover(corpus, limit=-1)


def test_discover_sanitizes_ids(tmp_path: Path) -> None:
    touch(tmp_path, "Eyes Japan/a b (1)_poses.npz", "x/é~_poses.npz")
    ids = [s.clip_id for s in discover(tmp_path)]
    assert ids == ["Eyes_Japan/a_b__1_", "x/__"]
    assert all(sanitize_clip_id(i) == i for i in ids)


# --- symlinked corpora --------------------------------------------------------------------------

needs_symlinks = pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks here")


def link(path: Path, target: Path | str) -> Path:
    """A symlink at path (parents made) pointing at target, which may not exist."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target, target_is_directory=Path(target).is_dir())
    return path


@needs_symlinks
def test_file_links_out_of_the_root_convert_with_ids_from_the_links(tmp_path: Path) -> None:
    store, root = tmp_path / "store", tmp_path / "corpus"
    write_npz(store / "blob1.npz", smplh_arrays(seed=3))
    write_npz(store / "blob2.npz", smplx_arrays())
    write_npz(root / "Lab/s1/local_poses.npz", smplh_arrays(seed=4))
    link(root / "Lab/s1/walk_poses.npz", store / "blob1.npz")
    link(root / "Lab/s2/turn_stageii.npz", "../../../store/blob2.npz")  # a relative link
    scan = scan_corpus(root)
    assert scan.skipped == () and scan.summary() == ""
    assert [(s.clip_id, s.relpath, s.body_model) for s in scan.sources] == [
        ("Lab/s1/local", "Lab/s1/local_poses.npz", "smplh"),
        ("Lab/s1/walk", "Lab/s1/walk_poses.npz", "smplh"),
        ("Lab/s2/turn", "Lab/s2/turn_stageii.npz", "smplx"),
    ]
    assert [s.path for s in scan.sources] == [root / s.relpath for s in scan.sources]
    assert discover(root) == list(scan.sources)
    for source in scan.sources:  # every link reads, named by the link, not by its target
        motion = read_amass(source.path, relpath=source.relpath, clip_id=source.clip_id)
        assert motion.clip_id == source.clip_id
        assert motion.provenance.relpath == source.relpath
    walk = read_amass(scan.sources[1].path, relpath=scan.sources[1].relpath)
    assert walk.provenance.sha256 == hashlib.sha256((store / "blob1.npz").read_bytes()).hexdigest()


@needs_symlinks
def test_folder_links_are_followed(tmp_path: Path) -> None:
    outside, root = tmp_path / "elsewhere/session", tmp_path / "corpus"
    touch(outside, "a_poses.npz", "deep/er/b_stageii.npz", "notes.txt")
    touch(root, "Real/c_poses.npz")
    link(root / "Linked", outside)
    link(root / "Real/nested", outside / "deep")  # a second way into part of the same tree
    scan = scan_corpus(root)
    assert [s.clip_id for s in scan.sources] == [
        "Linked/a",
        "Linked/deep/er/b",
        "Real/c",
    ]
    assert all(".." not in s.relpath and "elsewhere" not in s.clip_id for s in scan.sources)
    # Folder links are followed in relpath order, each real folder once: 'Real/nested' is skipped.
    assert [(e.relpath, e.reason) for e in scan.skipped] == [
        ("Real/nested", "folder already scanned")
    ]
    assert scan.summary() == "skipped 1 entry: 1 folder already scanned"


@needs_symlinks
def test_a_real_folder_keeps_its_ids_over_a_link_to_it(tmp_path: Path) -> None:
    touch(tmp_path, "B/walk_poses.npz")
    link(tmp_path / "A", tmp_path / "B")  # sorts first, but real folders are scanned first
    scan = scan_corpus(tmp_path)
    assert [s.clip_id for s in scan.sources] == ["B/walk"]
    assert [(e.relpath, e.reason) for e in scan.skipped] == [("A", "folder already scanned")]


@needs_symlinks
def test_loops_terminate_and_are_reported(tmp_path: Path) -> None:
    root, outside = tmp_path / "in/corpus", tmp_path / "outside"
    touch(root, "A/a_poses.npz")
    touch(outside, "o_poses.npz")
    link(outside / "around", tmp_path / "in")  # above the root, though not above 'outside'
    link(root / "A/up", root)  # to the root
    link(root / "A/self", root / "A")  # to its own folder
    link(root / "A/parent", "..")  # relative, to an ancestor
    link(root / "A/above", tmp_path)  # to an ancestor of the root: would scan the root again
    link(root / "Out", outside)
    link(outside / "back", root)  # out of the root and back in
    link(root / "x_poses.npz", root / "y_poses.npz")  # a cycle of file links
    link(root / "y_poses.npz", root / "x_poses.npz")
    scan = scan_corpus(root)
    assert [s.clip_id for s in scan.sources] == ["A/a", "Out/o"]
    assert [(e.relpath, e.reason) for e in scan.skipped] == [
        ("A/above", "symlink loop"),
        ("A/parent", "symlink loop"),
        ("A/self", "symlink loop"),
        ("A/up", "symlink loop"),
        ("Out/around", "symlink loop"),
        ("Out/back", "symlink loop"),
        ("x_poses.npz", "symlink loop"),
        ("y_poses.npz", "symlink loop"),
    ]
    assert scan.summary() == "skipped 8 entries: 8 symlink loops"


@needs_symlinks
def test_broken_links_are_reported_with_a_reason(tmp_path: Path) -> None:
    touch(tmp_path, "KIT/a_poses.npz")
    link(tmp_path / "KIT/gone_poses.npz", tmp_path / "nowhere_poses.npz")
    link(tmp_path / "CMU", tmp_path / "no_such_folder")
    link(tmp_path / "KIT/loop", tmp_path / "KIT")
    link(tmp_path / ".hidden_poses.npz", tmp_path / "nowhere")  # hidden: ignored, not reported
    scan = scan_corpus(tmp_path)
    assert [s.clip_id for s in scan.sources] == ["KIT/a"]
    gone = scan.skipped[1]
    assert gone.relpath == "KIT/gone_poses.npz" and gone.reason == "broken link"
    assert "nowhere_poses.npz" in gone.detail
    assert str(gone) == f"KIT/gone_poses.npz: broken link (-> {tmp_path / 'nowhere_poses.npz'})"
    assert [(e.relpath, e.reason) for e in scan.skipped] == [
        ("CMU", "broken link"),
        ("KIT/gone_poses.npz", "broken link"),
        ("KIT/loop", "symlink loop"),
    ]
    assert scan.summary() == "skipped 3 entries: 2 broken links, 1 symlink loop"
    # A skipped file is reported when the filters would have kept it; a skipped folder always.
    kit = scan_corpus(tmp_path, include=["KIT/a*"])
    assert [e.relpath for e in kit.skipped] == ["CMU", "KIT/loop"]
    assert [e.relpath for e in scan_corpus(tmp_path, exclude=["*gone*"]).skipped] == [
        "CMU",
        "KIT/loop",
    ]
    assert scan_corpus(tmp_path, limit=0).skipped == scan.skipped  # limit cuts sources only


@needs_symlinks
def test_cli_reports_skipped_entries_in_one_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from msconvert.convert.cli import main

    store, root = tmp_path / "store", tmp_path / "corpus"
    write_npz(store / "w.npz", smplh_arrays(seed=5))
    link(root / "S/walk_poses.npz", store / "w.npz")
    link(root / "S/more", store)  # 'S/more/w.npz' is not a clip name: nothing from here
    link(root / "S/gone_poses.npz", tmp_path / "nowhere")
    link(root / "S/gone2_poses.npz", tmp_path / "nowhere2")
    link(root / "S/up", root)
    out = tmp_path / "c.zarr"
    result = CliRunner().invoke(
        main, ["amass", str(root), "--out", str(out), "--until", "ingest"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    line = "skipped 3 entries: 2 broken links, 1 symlink loop; first: S/gone2_poses.npz: broken"
    assert line in result.output
    listed = CliRunner().invoke(main, ["ls", str(out), "--format", "csv"])
    assert listed.output.splitlines()[1].startswith("S/walk,complete")
    # Nothing skipped: no line about it.
    (root / "S/gone_poses.npz").unlink()
    (root / "S/gone2_poses.npz").unlink()
    (root / "S/up").unlink()
    again = CliRunner().invoke(
        main, ["amass", str(root), "--out", str(out), "--until", "ingest", "--overwrite"]
    )
    assert again.exit_code == 0, again.output
    assert not [ln for ln in again.output.splitlines() if ln.startswith("skipped ")]


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="needs a user that permissions stop"
)
def test_unreadable_folder_is_reported(tmp_path: Path) -> None:
    touch(tmp_path, "ok/a_poses.npz", "locked/b_poses.npz")
    (tmp_path / "locked").chmod(0)
    try:
        scan = scan_corpus(tmp_path)
    finally:
        (tmp_path / "locked").chmod(0o755)
    assert [s.clip_id for s in scan.sources] == ["ok/a"]
    assert [(e.relpath, e.reason) for e in scan.skipped] == [("locked", "unreadable folder")]
    assert "Permission" in scan.skipped[0].detail


def test_discover_collisions_get_counters(tmp_path: Path) -> None:
    touch(
        tmp_path,
        "S/a b_poses.npz",  # sorts first by relpath: keeps 'S/a_b'
        "S/a_b_poses.npz",
        "S/a_b_stageii.npz",
        "S/a_b+2_poses.npz",  # a real file already holds 'S/a_b+2'
    )
    by_rel = {s.relpath: s.clip_id for s in discover(tmp_path)}
    assert by_rel == {
        "S/a b_poses.npz": "S/a_b",
        "S/a_b+2_poses.npz": "S/a_b+2",
        "S/a_b_poses.npz": "S/a_b+3",
        "S/a_b_stageii.npz": "S/a_b+4",
    }
    assert all(sanitize_clip_id(i) == i for i in by_rel.values())
    # Filters never change an id: without the first file in the result, the others keep theirs.
    assert [s.clip_id for s in discover(tmp_path, exclude=["S/a b*"])] == [
        "S/a_b+2",
        "S/a_b+3",
        "S/a_b+4",
    ]


def test_discover_clip_that_is_also_a_folder_moves_aside(tmp_path: Path) -> None:
    touch(tmp_path, "KIT/3_poses.npz", "KIT/3/walk_poses.npz", "KIT/3/run/fast_poses.npz")
    by_rel = {s.relpath: s.clip_id for s in discover(tmp_path)}
    assert by_rel == {
        "KIT/3_poses.npz": "KIT/3+2",
        "KIT/3/walk_poses.npz": "KIT/3/walk",
        "KIT/3/run/fast_poses.npz": "KIT/3/run/fast",
    }


def test_discover_collision_on_long_names_stays_valid(tmp_path: Path) -> None:
    stem = "w" * 130  # longer than a clip id part may be: both truncate to the same id
    touch(tmp_path, f"{stem}1_poses.npz", f"{stem}2_poses.npz")
    ids = [s.clip_id for s in discover(tmp_path)]
    assert len(set(ids)) == 2
    assert all(sanitize_clip_id(i) == i for i in ids)


def test_discover_bad_root(tmp_path: Path) -> None:
    with pytest.raises(MotionError, match="does not exist") as info:
        discover(tmp_path / "nope")
    assert "\n" not in str(info.value)
    touch(tmp_path, "file_poses.npz")
    with pytest.raises(MotionError, match="not a directory"):
        discover(tmp_path / "file_poses.npz")


def test_discovered_clip_reads_with_its_id(tmp_path: Path) -> None:
    write_npz(tmp_path / "KIT/3/walking_slow08_poses.npz", smplh_arrays())
    (source,) = discover(tmp_path)
    motion = read_amass(source.path, relpath=source.relpath, clip_id=source.clip_id)
    assert motion.clip_id == "KIT/3/walking_slow08"
    assert motion.provenance.relpath == "KIT/3/walking_slow08_poses.npz"
    assert motion.body_model == source.body_model
