"""SMPL-family forward kinematics of the 22 body joints (mean-shape skeleton or model files)."""

from __future__ import annotations

import functools
import json
import pickle
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from msconvert.datasets.motion import BODY_JOINT_NAMES, N_BODY_JOINTS, Motion

# AMASS pose vectors live in a z-up world, but SMPL's rest skeleton is y-up (x left, z forward);
# the root orientation in AMASS already carries that change of frame, so nothing is converted here.
MEAN_SKELETON_MODE = "mean-skeleton"
BODY_MODEL_MODE = "body-model"
SOURCE_SKELETON_MODE = "source-skeleton"  # the file's own skeleton (BVH)


class BodyModelError(ValueError):
    """A body-model directory or file is missing or unusable; one line naming the file."""


@dataclass(frozen=True, eq=False)
class Skeleton:
    """Rest-pose joint positions (SMPL native frame, metres) and the kinematic tree."""

    name: str
    mode: str  # MEAN_SKELETON_MODE, BODY_MODEL_MODE or SOURCE_SKELETON_MODE
    rest_joints: np.ndarray  # (22, 3) absolute rest positions
    parents: np.ndarray  # (22,) int, -1 for the root

    @property
    def offsets(self) -> np.ndarray:
        """Each joint's rest offset from its parent (the root's is its absolute rest position)."""
        off = self.rest_joints.copy()
        off[1:] -= self.rest_joints[self.parents[1:]]
        return off


@dataclass(frozen=True, eq=False)
class JointTrajectory:
    """World positions and orientations of the 22 body joints over time."""

    positions: np.ndarray  # (T, 22, 3) metres, z-up world
    rotations: np.ndarray  # (T, 22, 3, 3) world orientation of each joint's frame
    joint_names: tuple[str, ...] = BODY_JOINT_NAMES

    def quaternions_wxyz(self) -> np.ndarray:
        """(T, 22, 4) unit quaternions, scalar first, sign fixed so w >= 0."""
        t, j = self.rotations.shape[:2]
        q = Rotation.from_matrix(self.rotations.reshape(-1, 3, 3)).as_quat(scalar_first=True)
        q = q * np.where(q[:, :1] < 0, -1.0, 1.0)
        return q.reshape(t, j, 4)


@functools.cache
def mean_skeleton() -> Skeleton:
    """The built-in mean-shape (betas = 0, gender-neutral) SMPL skeleton; ignores betas."""
    text = (
        resources.files("msconvert.datasets").joinpath("data/smpl_mean_skeleton.json").read_text()
    )
    fig = json.loads(text)
    parents = np.asarray(fig["parents"][:N_BODY_JOINTS], dtype=np.int64)
    offsets = np.asarray(fig["offsets_from_parent"][:N_BODY_JOINTS], dtype=np.float64)
    rest = np.zeros((N_BODY_JOINTS, 3))
    rest[0] = fig["root_joint_rest_position"]
    for j in range(1, N_BODY_JOINTS):
        rest[j] = rest[parents[j]] + offsets[j]
    if tuple(fig["joint_names"][:N_BODY_JOINTS]) != BODY_JOINT_NAMES:
        raise RuntimeError("packaged mean skeleton does not list the SMPL body joints in order")
    return Skeleton(name="smpl-mean", mode=MEAN_SKELETON_MODE, rest_joints=rest, parents=parents)


def source_skeleton(motion: Motion) -> Skeleton | None:
    """The skeleton a clip brought with it (a BVH file's), or None for an SMPL body."""
    if motion.source_skeleton is None:
        return None
    return Skeleton(
        name=motion.format,
        mode=SOURCE_SKELETON_MODE,
        rest_joints=np.asarray(motion.source_skeleton, np.float64),
        parents=mean_skeleton().parents,
    )


def forward_kinematics(motion: Motion, skeleton: Skeleton) -> JointTrajectory:
    """World joint positions/orientations: pelvis = trans + rest root; children by FK."""
    return forward_kinematics_arrays(motion.root_translation, motion.body_pose, skeleton)


def forward_kinematics_arrays(
    root_translation: np.ndarray, body_pose: np.ndarray, skeleton: Skeleton
) -> JointTrajectory:
    """FK on bare arrays: (T, 3) translation and (T, 22, 3) axis-angle rotations."""
    t = body_pose.shape[0]
    local = (
        Rotation.from_rotvec(body_pose.reshape(-1, 3)).as_matrix().reshape(t, N_BODY_JOINTS, 3, 3)
    )
    offsets = skeleton.offsets
    rot = np.empty_like(local)
    pos = np.empty((t, N_BODY_JOINTS, 3))
    rot[:, 0] = local[:, 0]
    # The root rotation pivots about the root joint, so its rest position is added unrotated.
    pos[:, 0] = root_translation + skeleton.rest_joints[0]
    for j in range(1, N_BODY_JOINTS):
        p = skeleton.parents[j]
        rot[:, j] = rot[:, p] @ local[:, j]
        pos[:, j] = pos[:, p] + rot[:, p] @ offsets[j]
    return JointTrajectory(positions=pos, rotations=rot)


# --- Licensed SMPL-H / SMPL-X model files -------------------------------------------------------

_MODEL_KEYS = ("v_template", "shapedirs", "J_regressor", "kintree_table")


@dataclass(frozen=True, eq=False)
class BodyModel:
    """The parts of an SMPL-family model file that determine the rest skeleton for given betas."""

    path: str
    v_template: np.ndarray  # (V, 3)
    shapedirs: np.ndarray  # (V, 3, S)
    j_regressor: np.ndarray  # (J, V)
    parents: np.ndarray  # (22,) int

    def skeleton(self, betas: np.ndarray) -> Skeleton:
        """Rest joints for these betas: J_regressor @ (v_template + shapedirs @ betas)."""
        n = min(len(betas), self.shapedirs.shape[2])
        verts = self.v_template + self.shapedirs[:, :, :n] @ np.asarray(betas[:n], dtype=np.float64)
        joints = self.j_regressor[:N_BODY_JOINTS] @ verts
        return Skeleton(
            name=Path(self.path).name,
            mode=BODY_MODEL_MODE,
            rest_joints=joints,
            parents=self.parents,
        )


# Layouts in which people keep their model files: AMASS's 'smplh/male/model.npz' and the
# smplx package's 'smplx/SMPLX_MALE.npz', with or without the model-type folder.
_CANDIDATES = (
    "{model}/{gender}/model.{ext}",
    "{model}/{MODEL}_{GENDER}.{ext}",
    "{MODEL}_{GENDER}.{ext}",
    "{gender}/model.{ext}",
)


def find_body_model_file(
    directory: str | Path, body_model: str, gender: str, allow_pickle: bool
) -> Path:
    """Locate the model file for a body model ('smplh'/'smplx') and gender in a user's directory."""
    root = Path(directory)
    exts = ("npz", "pkl") if allow_pickle else ("npz",)
    for ext in exts:
        for pattern in _CANDIDATES:
            for g in (gender, "neutral") if gender != "neutral" else ("neutral",):
                p = root / pattern.format(
                    model=body_model, MODEL=body_model.upper(), gender=g, GENDER=g.upper(), ext=ext
                )
                if p.is_file():
                    return p
    hint = "" if allow_pickle else " (.pkl files are read only with --allow-pickle-body-models)"
    raise BodyModelError(f"{root}: no {body_model} model file for gender '{gender}'{hint}")


@functools.lru_cache(maxsize=8)
def load_body_model(path: str | Path, allow_pickle: bool = False) -> BodyModel:
    """Read an official SMPL-H/SMPL-X model file with NumPy (.npz), or a .pkl only when allowed."""
    path = Path(path)
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                missing = [k for k in _MODEL_KEYS if k not in z.files]
                if missing:
                    raise BodyModelError(f"{path}: model file lacks {', '.join(missing)}")
                parts = {k: np.asarray(z[k]) for k in _MODEL_KEYS}
        elif path.suffix == ".pkl":
            if not allow_pickle:
                raise BodyModelError(f"{path}: .pkl model files need --allow-pickle-body-models")
            with open(path, "rb") as f:
                raw = pickle.load(f, encoding="latin1")  # noqa: S301 - explicit user opt-in
            parts = {k: _dense(raw[k]) for k in _MODEL_KEYS}
        else:
            raise BodyModelError(f"{path}: not a .npz or .pkl body-model file")
    except BodyModelError:
        raise
    except Exception as exc:  # corrupt zip, object arrays, missing chumpy, ...
        raise BodyModelError(
            f"{path}: cannot read body model ({type(exc).__name__}: {exc})"
        ) from exc
    v = parts["v_template"].astype(np.float64)
    sd = parts["shapedirs"].astype(np.float64)
    jr = parts["J_regressor"].astype(np.float64)
    kin = parts["kintree_table"].astype(np.int64)
    if v.ndim != 2 or v.shape[1] != 3 or sd.ndim != 3 or sd.shape[:2] != v.shape:
        raise BodyModelError(f"{path}: v_template/shapedirs have inconsistent shapes")
    if jr.ndim != 2 or jr.shape[1] != v.shape[0] or jr.shape[0] < N_BODY_JOINTS:
        raise BodyModelError(
            f"{path}: J_regressor shape {jr.shape} does not fit {v.shape[0]} vertices"
        )
    parents = kin[0, :N_BODY_JOINTS].copy()
    parents[0] = -1  # stored as 2**32 - 1 in the official files
    if np.any(parents[1:] < 0) or np.any(parents[1:] >= np.arange(1, N_BODY_JOINTS)):
        raise BodyModelError(f"{path}: kintree_table is not a tree in joint order")
    return BodyModel(path=str(path), v_template=v, shapedirs=sd, j_regressor=jr, parents=parents)


def _dense(x: object) -> np.ndarray:
    """Sparse or chumpy arrays from legacy .pkl files as plain dense ndarrays."""
    if hasattr(x, "toarray"):
        return np.asarray(x.toarray())
    if hasattr(x, "r"):  # chumpy
        return np.asarray(x.r)
    return np.asarray(x)
