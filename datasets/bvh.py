"""BVH corpora (CMU's BVH conversion, LAFAN1, any standard hierarchy) read into `Motion`s.

A joint map (JSON, `datasets/data/bvh_map_*.json` or the user's own) names the file's joint for
each of the 22 SMPL body joints. The clip becomes a `Motion` that carries its own skeleton: the
file's bone lengths, re-posed into SMPL's rest T-pose, with each joint's rotation written
relative to that rest pose. SMPL forward kinematics of the pair then gives back the file's joint
positions (exactly where the joints between two mapped ones do not move, as CMU's hip joints;
a moving unmapped joint, CMU's Neck1, is folded into its mapped parent) and orientations that
follow the file's joints, so the later stages run unchanged. Y-up files are stood in the z-up
world; units are the map's, or found from the skeleton's size (metres, cm, mm, inches, CMU's).

Every problem with a file surfaces as one `MotionError`, a single line starting with the file's
corpus-relative path.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from msconvert.datasets.amass import (
    MAX_FILE_BYTES,
    MAX_FPS,
    MIN_FPS,
    CorpusScan,
    clip_id_for,
    scan_corpus,
)
from msconvert.datasets.kinematics import mean_skeleton
from msconvert.datasets.motion import (
    BODY_JOINT_NAMES,
    N_BODY_JOINTS,
    Motion,
    MotionError,
    Provenance,
)

BVH_FORMAT = "bvh"
AUTO_MAP = "auto"
# Metres per file unit, by name; a map may also give a number.
UNITS: dict[str, float] = {"m": 1.0, "cm": 0.01, "mm": 0.001, "inch": 0.0254, "cmu": 0.056444}
# Ankle to head along the skeleton (legs and spine), metres: how big a person is, for telling
# a file's units. The mean SMPL body measures about 1.5 m.
_BODY_SPAN_M = 1.5
_SPAN_RANGE_M = (0.7, 3.0)
_CHAIN = ("left_ankle", "left_knee", "left_hip", "pelvis", "spine1", "spine2", "spine3", "neck")
_CHANNELS = {f"{a}{kind}": (kind, a.lower()) for a in "XYZ" for kind in ("position", "rotation")}


class JointMapError(ValueError):
    """A joint-map file is missing or malformed; one line naming the file."""


@dataclass(frozen=True)
class JointMap:
    """Which BVH joint stands for each SMPL body joint, and how to read the file's numbers."""

    name: str  # recorded as the clip's source format, 'bvh:<name>'
    path: str
    joints: Mapping[str, tuple[str, ...]]  # SMPL joint -> candidate BVH names, first present wins
    unit: float | None  # metres per file unit; None: found from the skeleton's size
    up: str | None  # 'x', 'y', 'z' (or '-y', ...): the file's up axis; None: found from the motion


def packaged_joint_maps() -> dict[str, Path]:
    """The joint maps shipped with msconvert, by name."""
    root = resources.files("msconvert.datasets").joinpath("data")
    out = {}
    for item in root.iterdir():
        m = re.fullmatch(r"bvh_map_(.+)\.json", item.name)
        if m:
            out[m.group(1)] = Path(str(item))
    return out


@functools.lru_cache(maxsize=32)
def load_joint_map(spec: str) -> JointMap:
    """A packaged map by name ('cmu', 'lafan1') or a JSON file by path; checked for shape."""
    path = packaged_joint_maps().get(spec) or Path(spec)
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        known = ", ".join(sorted(packaged_joint_maps()))
        raise JointMapError(
            f"{spec}: cannot read joint map ({exc}); packaged maps: {known}"
        ) from exc
    where = Path(path).name
    if not isinstance(doc, dict) or not isinstance(doc.get("joints"), dict):
        raise JointMapError(f"{where}: expected an object with a 'joints' object")
    unknown = set(doc) - {"name", "description", "unit", "up", "joints"}
    if unknown:
        raise JointMapError(f"{where}: unknown keys {sorted(unknown)}")
    joints: dict[str, tuple[str, ...]] = {}
    for smpl, names in doc["joints"].items():
        if smpl not in BODY_JOINT_NAMES:
            raise JointMapError(f"{where}: '{smpl}' is not an SMPL body joint")
        names = [names] if isinstance(names, str) else names
        if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
            raise JointMapError(f"{where}: '{smpl}' must name a BVH joint or a list of them")
        joints[smpl] = tuple(names)
    missing = [j for j in BODY_JOINT_NAMES if j not in joints]
    if missing:
        raise JointMapError(f"{where}: no BVH joint for {', '.join(missing)}")
    unit = doc.get("unit")
    if isinstance(unit, str):
        if unit not in UNITS:
            raise JointMapError(f"{where}: unit must be one of {', '.join(UNITS)} or a number")
        unit = UNITS[unit]
    elif unit is not None:
        if not isinstance(unit, (int, float)) or not math.isfinite(unit) or unit <= 0:
            raise JointMapError(f"{where}: unit must be a positive number of metres")
        unit = float(unit)
    up = doc.get("up")
    if up not in (None, "auto", "x", "y", "z", "-x", "-y", "-z"):
        raise JointMapError(f"{where}: up must be x, y, z (optionally negated) or auto")
    name = str(doc.get("name") or Path(path).stem.removeprefix("bvh_map_"))
    return JointMap(
        name=name, path=str(path), joints=joints, unit=unit, up=None if up == "auto" else up
    )


# --- parsing -------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class BvhFile:
    """A parsed BVH: the hierarchy (joints in file order, parents first) and the motion."""

    names: tuple[str, ...]
    parents: np.ndarray  # (J,) -1 for the root
    offsets: np.ndarray  # (J, 3) in the parent's frame, file units
    channels: tuple[tuple[str, ...], ...]  # per joint, e.g. ('Xposition', ..., 'Zrotation')
    column: np.ndarray  # (J,) first column of each joint's channels in a frame
    frame_time: float
    frames: np.ndarray  # (T, C) float64

    @property
    def fps(self) -> float:
        fps = 1.0 / self.frame_time
        near = round(fps)  # 0.0083333 s is 120 fps, not 120.0048
        return float(near) if near and abs(fps - near) <= 1e-3 * near else fps


class _Problem(Exception):
    """A one-line description of what is wrong with a file (without its name)."""


def _tokens(text: str) -> list[str]:
    return text.replace("{", " { ").replace("}", " } ").split()


def _number(tok: str, what: str) -> float:
    try:
        value = float(tok)
    except ValueError:
        raise _Problem(f"{what}: '{tok[:20]}' is not a number") from None
    if not math.isfinite(value):
        raise _Problem(f"{what} is not finite")
    return value


def parse_bvh(text: str) -> BvhFile:
    """Parse BVH text; any flaw raises `_Problem` with a one-line reason."""
    parts = re.split(r"\bMOTION\b", text, maxsplit=1)
    if len(parts) < 2:
        raise _Problem("no MOTION section (truncated, or not a BVH file)")
    head, motion = parts
    toks = _tokens(head)
    if not toks or toks[0].upper() != "HIERARCHY":
        raise _Problem("does not start with HIERARCHY (not a BVH file)")
    names: list[str] = []
    parents: list[int] = []
    offsets: list[list[float]] = []
    channels: list[tuple[str, ...]] = []
    stack: list[int] = []  # joints whose braces are open; -2 marks an End Site
    i = 1

    def take() -> str:
        nonlocal i
        if i >= len(toks):
            raise _Problem("hierarchy ends early (truncated)")
        i += 1
        return toks[i - 1]

    while i < len(toks):
        tok = take()
        word = tok.upper()
        if word in ("ROOT", "JOINT"):
            if (word == "ROOT") != (not stack):
                raise _Problem(
                    "ROOT must come first and only once" if stack else "JOINT outside ROOT"
                )
            if stack and stack[-1] == -2:
                raise _Problem("a JOINT inside an End Site")
            name = take()
            if name in names:
                raise _Problem(f"joint '{name[:40]}' appears twice")
            if take() != "{":
                raise _Problem(f"joint '{name[:40]}': expected '{{'")
            names.append(name)
            parents.append(stack[-1] if stack else -1)
            offsets.append([])
            channels.append(())
            stack.append(len(names) - 1)
        elif word == "END":
            if take().upper() != "SITE" or take() != "{":
                raise _Problem("malformed End Site")
            if not stack:
                raise _Problem("End Site outside a joint")
            stack.append(-2)
        elif word == "OFFSET":
            values = [_number(take(), "OFFSET") for _ in range(3)]
            if not stack:
                raise _Problem("OFFSET outside a joint")
            if stack[-1] >= 0:
                offsets[stack[-1]] = values
        elif word == "CHANNELS":
            if not stack or stack[-1] < 0:
                raise _Problem("CHANNELS outside a joint")
            count = take()
            if not count.isdigit() or int(count) > 6:
                raise _Problem(f"CHANNELS count '{count[:10]}' is not 0-6")
            found = []
            for _ in range(int(count)):
                ch = take()
                key = ch[0].upper() + ch[1:].lower()
                if key not in _CHANNELS:
                    raise _Problem(f"joint '{names[stack[-1]][:40]}': unknown channel '{ch[:20]}'")
                found.append(key)
            rot = [c for c in found if c.endswith("rotation")]
            if len(set(found)) != len(found) or len(rot) not in (0, 3):
                raise _Problem(
                    f"joint '{names[stack[-1]][:40]}': channels {' '.join(found)} are not a "
                    "rotation order (three distinct axes) and positions"
                )
            channels[stack[-1]] = tuple(found)
        elif tok == "}":
            if not stack:
                raise _Problem("unbalanced '}'")
            stack.pop()
        else:
            raise _Problem(f"unexpected '{tok[:20]}' in the hierarchy")
    if stack:
        raise _Problem("hierarchy ends early (truncated: braces left open)")
    if not names:
        raise _Problem("no joints")
    for j, off in enumerate(offsets):
        if len(off) != 3:
            raise _Problem(f"joint '{names[j][:40]}' has no OFFSET")

    mt = motion.split()
    try:
        at = 0
        if mt[0].upper() != "FRAMES:":
            raise _Problem("MOTION: expected 'Frames:'")
        n_frames = mt[1]
        if mt[2].upper() != "FRAME" or mt[3].upper() != "TIME:":
            raise _Problem("MOTION: expected 'Frame Time:'")
        dt = _number(mt[4], "Frame Time")
        at = 5
    except IndexError:
        raise _Problem("MOTION header ends early (truncated)") from None
    if not n_frames.isdigit():
        raise _Problem(f"Frames: '{n_frames[:20]}' is not a count")
    if not dt > 0:
        raise _Problem(f"frame rate: Frame Time {dt:g} s is not positive")
    fps = 1.0 / dt
    if not MIN_FPS <= fps <= MAX_FPS:
        raise _Problem(
            f"frame rate {fps:.6g} fps (Frame Time {dt:g} s) is outside [{MIN_FPS:g}, {MAX_FPS:g}]"
        )
    width = sum(len(c) for c in channels)
    declared = int(n_frames)
    try:
        values = np.array(mt[at:], dtype=np.float64)
    except ValueError:
        raise _Problem("motion data holds something that is not a number") from None
    if width == 0:
        raise _Problem("no channels: the file moves nothing")
    whole, rest = divmod(values.size, width)
    if rest or whole != declared:
        raise _Problem(
            f"truncated or padded: {declared} frames of {width} channels declared, "
            f"{values.size} values found ({whole} whole frames)"
        )
    if declared < 2:
        raise _Problem(f"{declared} frame(s); a clip needs at least 2")
    frames = values.reshape(declared, width)
    if not np.isfinite(frames).all():
        bad = int(np.flatnonzero(~np.isfinite(frames).all(1))[0])
        raise _Problem(f"non-finite value in frame {bad}")
    column = np.cumsum([0] + [len(c) for c in channels])[:-1]
    return BvhFile(
        names=tuple(names),
        parents=np.asarray(parents, dtype=int),
        offsets=np.asarray(offsets, dtype=np.float64),
        channels=tuple(channels),
        column=column,
        frame_time=dt,
        frames=frames,
    )


def _world(bvh: BvhFile) -> tuple[np.ndarray, np.ndarray]:
    """World positions (T, J, 3) and rotations (T, J, 3, 3) of every joint, file axes and units.

    A joint's rotation channels compose in the order listed (intrinsic); its position channels,
    when it has them, replace its OFFSET, as exporters that write them intend.
    """
    t, n = bvh.frames.shape[0], len(bvh.names)
    pos = np.empty((t, n, 3))
    rot = np.empty((t, n, 3, 3))
    for j in range(n):
        ch, col = bvh.channels[j], bvh.column[j]
        local_t = np.broadcast_to(bvh.offsets[j], (t, 3)).copy()
        order = "".join(c[0] for c in ch if c.endswith("rotation"))
        angles = np.stack(
            [bvh.frames[:, col + k] for k, c in enumerate(ch) if c.endswith("rotation")], -1
        )
        for k, c in enumerate(ch):
            if c.endswith("position"):
                local_t[:, "XYZ".index(c[0])] = bvh.frames[:, col + k]
        local_r = (
            Rotation.from_euler(order, angles, degrees=True).as_matrix()
            if order
            else np.broadcast_to(np.eye(3), (t, 3, 3))
        )
        p = bvh.parents[j]
        if p < 0:
            pos[:, j], rot[:, j] = local_t, local_r
        else:
            pos[:, j] = pos[:, p] + np.einsum("tij,tj->ti", rot[:, p], local_t)
            rot[:, j] = rot[:, p] @ local_r
    return pos, rot


def _rest(bvh: BvhFile) -> np.ndarray:
    """(J, 3) joint positions in the file's rest pose (every channel zero), file units."""
    out = np.zeros((len(bvh.names), 3))
    for j, p in enumerate(bvh.parents):
        out[j] = bvh.offsets[j] + (out[p] if p >= 0 else 0.0)
    return out


# --- BVH -> Motion -------------------------------------------------------------------------------


def _resolve(bvh: BvhFile, joint_map: JointMap) -> np.ndarray:
    """(22,) file joint index of each SMPL joint; the map's tree must follow SMPL's."""
    index = {n: i for i, n in enumerate(bvh.names)}
    out = np.empty(N_BODY_JOINTS, dtype=int)
    for k, smpl in enumerate(BODY_JOINT_NAMES):
        found = next((index[n] for n in joint_map.joints[smpl] if n in index), None)
        if found is None:
            names = "/".join(joint_map.joints[smpl])
            raise _Problem(f"joint map '{joint_map.name}': the file has no joint {names} ({smpl})")
        out[k] = found
    parents = mean_skeleton().parents
    for k in range(1, N_BODY_JOINTS):
        j, want = out[k], out[parents[k]]
        while j >= 0 and j != want:
            j = bvh.parents[j]
        if j != want:
            raise _Problem(
                f"joint map '{joint_map.name}': {bvh.names[out[k]]} ({BODY_JOINT_NAMES[k]}) is "
                f"not below {bvh.names[want]} ({BODY_JOINT_NAMES[parents[k]]}) in the file"
            )
    return out


def _up_rotation(up: str) -> np.ndarray:
    """The rotation standing a file whose up axis is `up` ('y', '-z', ...) in the z-up world."""
    axis = np.zeros(3)
    axis["xyz".index(up[-1])] = -1.0 if up.startswith("-") else 1.0
    if axis[2] == 1.0:
        return np.eye(3)
    if axis[2] == -1.0:
        return Rotation.from_rotvec([np.pi, 0.0, 0.0]).as_matrix()
    rot, _ = Rotation.align_vectors([[0.0, 0.0, 1.0]], [axis])
    return rot.as_matrix()


def _detect_up(pos: np.ndarray, idx: np.ndarray) -> str:
    """The file axis along which the head sits above the pelvis, on average over the clip."""
    lift = (pos[:, idx[BODY_JOINT_NAMES.index("head")]] - pos[:, idx[0]]).mean(0)
    k = int(np.argmax(np.abs(lift)))
    return ("-" if lift[k] < 0 else "") + "xyz"[k]


def _detect_unit(rest: np.ndarray, idx: np.ndarray) -> float:
    """Metres per file unit that make the skeleton a person's size (ankle to head ~1.5 m)."""
    chain = [idx[BODY_JOINT_NAMES.index(n)] for n in (*_CHAIN, "head")]
    span = float(np.linalg.norm(np.diff(rest[chain], axis=0), axis=1).sum())
    if not span > 0:
        raise _Problem("the skeleton has no size (every offset is zero)")
    best = min(UNITS.values(), key=lambda u: abs(math.log(span * u / _BODY_SPAN_M)))
    if not _SPAN_RANGE_M[0] <= span * best <= _SPAN_RANGE_M[1]:
        raise _Problem(
            f"cannot tell the units: ankle to head is {span:.4g} file units; "
            "give 'unit' in the joint map"
        )
    return best


def _alignment(rest_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per SMPL joint, the world rotation (22, 3, 3) of its SMPL-style frame in the file's rest
    pose, and the rest offsets (22, 3) of the SMPL skeleton in SMPL's native frame.

    A joint with several children (pelvis, thorax) takes the rotation that best lays SMPL's
    T-pose bones onto the file's; a joint with one child turns its parent's frame the least
    that lays its bone onto the file's; a limb's end, or a joint whose children sit on it
    (CMU's LowerBack on the Hips), keeps its parent's frame. The skeleton then stands in
    SMPL's T-pose with the file's bone lengths, whatever the file's rest pose.
    """
    smpl = mean_skeleton()
    parents = smpl.parents
    frames = np.empty((N_BODY_JOINTS, 3, 3))
    for j in range(N_BODY_JOINTS):
        children = np.flatnonzero(parents == j)
        want = rest_world[children] - rest_world[j]
        lengths = np.linalg.norm(want, axis=1)
        keep = lengths > 1e-4 * lengths.max(initial=0.0) + 1e-9
        bones = smpl.offsets[children[keep]]
        unit = want[keep] / lengths[keep, None]
        if keep.sum() >= 2:
            turn, _ = Rotation.align_vectors(unit, bones)
            frames[j] = turn.as_matrix()
        elif j == 0:
            raise _Problem("the pelvis has fewer than two bones to set its rest orientation")
        elif keep.sum() == 1:
            have = frames[parents[j]] @ bones[0]
            turn, _ = Rotation.align_vectors(unit, have[None] / np.linalg.norm(have))
            frames[j] = turn.as_matrix() @ frames[parents[j]]
        else:
            frames[j] = frames[parents[j]]
    offsets = np.zeros((N_BODY_JOINTS, 3))
    for c in range(1, N_BODY_JOINTS):
        offsets[c] = frames[parents[c]].T @ (rest_world[c] - rest_world[parents[c]])
    return frames, offsets


def bvh_to_motion(
    bvh: BvhFile, joint_map: JointMap, clip_id: str, provenance: Provenance
) -> Motion:
    """The clip as a `Motion` in the z-up world, metres, with its own SMPL-posed skeleton."""
    idx = _resolve(bvh, joint_map)
    pos, rot = _world(bvh)
    unit = joint_map.unit or _detect_unit(_rest(bvh), idx)
    stand = _up_rotation(joint_map.up or _detect_up(pos, idx))
    pos = unit * pos[:, idx] @ stand.T
    rot = stand @ rot[:, idx]
    rest_world = unit * _rest(bvh)[idx] @ stand.T
    frames, offsets = _alignment(rest_world)
    # A joint's SMPL-style world rotation: its file rotation (which is the identity at rest),
    # then the fixed turn from the SMPL-style frame to its rest frame, stood in the z-up world.
    to_file = np.einsum("ij,njk->nik", stand.T, frames)  # native -> file joint frame, at rest
    world = rot @ to_file[None]  # (T, 22, 3, 3): native -> z-up world
    parents = mean_skeleton().parents
    local = world.copy()
    local[:, 1:] = np.swapaxes(world[:, parents[1:]], -1, -2) @ world[:, 1:]
    t = world.shape[0]
    body_pose = Rotation.from_matrix(local.reshape(-1, 3, 3)).as_rotvec().reshape(t, -1, 3)
    rest_joints = np.zeros((N_BODY_JOINTS, 3))
    for c in range(1, N_BODY_JOINTS):
        rest_joints[c] = rest_joints[parents[c]] + offsets[c]
    return Motion(
        clip_id=clip_id,
        fps=bvh.fps,
        root_translation=pos[:, 0].copy(),
        body_pose=body_pose,
        hand_pose=None,
        betas=np.zeros(0),
        gender="neutral",
        body_model=BVH_FORMAT,
        provenance=provenance,
        source_format=f"{BVH_FORMAT}:{joint_map.name}",
        source_skeleton=rest_joints,
    )


def _auto_map(bvh: BvhFile) -> JointMap:
    """The first packaged map whose every SMPL joint the file has."""
    have = set(bvh.names)
    for name in sorted(packaged_joint_maps()):
        joint_map = load_joint_map(name)
        if all(any(n in have for n in names) for names in joint_map.joints.values()):
            return joint_map
    raise _Problem(
        f"no packaged joint map fits its joints ({', '.join(sorted(packaged_joint_maps()))}); "
        "write one (see the README) and pass it with --map"
    )


def read_bvh(
    path: str | os.PathLike[str],
    *,
    relpath: str | None = None,
    clip_id: str | None = None,
    joint_map: str = AUTO_MAP,
) -> Motion:
    """Read and validate one BVH clip with a joint map (a packaged name, a path, or 'auto').

    Any failure, whatever the bytes, is a `MotionError` with a one-line message starting with
    the relpath (default: the file name). A broken map file is a `JointMapError`.
    """
    path = Path(path)
    relpath = relpath if relpath is not None else (path.name or str(path))
    label = " ".join(relpath.split())[:200]
    the_map = None if joint_map == AUTO_MAP else load_joint_map(joint_map)
    try:
        try:
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                raise _Problem(f"file of {size} bytes is larger than {MAX_FILE_BYTES}")
            raw = path.read_bytes()
        except OSError as exc:
            raise _Problem(f"cannot read file ({type(exc).__name__}: {exc.strerror})") from exc
        if not raw:
            raise _Problem("empty file")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        bvh = parse_bvh(text)
        the_map = the_map or _auto_map(bvh)
        if clip_id is None:
            try:
                clip_id = clip_id_for(relpath)
            except ValueError as exc:
                raise _Problem(f"no valid clip id ({exc})") from exc
        provenance = Provenance(
            path=str(path), relpath=relpath, size=len(raw), sha256=hashlib.sha256(raw).hexdigest()
        )
        return bvh_to_motion(bvh, the_map, clip_id, provenance)
    except _Problem as exc:
        raise MotionError(f"{label}: {' '.join(str(exc).split())}") from exc.__cause__
    except MotionError:
        raise
    except Exception as exc:  # any other failure still names the file, on one line
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        raise MotionError(f"{label}: cannot read ({detail})") from exc


def scan_bvh_corpus(
    root: str | os.PathLike[str],
    joint_map: str = AUTO_MAP,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    limit: int | None = None,
) -> CorpusScan:
    """All *.bvh files under root, as `scan_corpus` finds AMASS files (links, loops, filters,
    ids); each source's format is 'bvh:<joint_map>'."""
    return scan_corpus(
        root, include, exclude, limit, suffixes={".bvh": f"{BVH_FORMAT}:{joint_map}"}
    )
