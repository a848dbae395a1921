"""Bad input: fill short runs of non-finite source frames, refuse clips broken beyond repair."""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from msconvert.datasets.motion import Motion
from msconvert.emulator.retarget.exceptions import RetargetError

_MAX_ABS_TRANSLATION_M = 1e4  # a root farther than 10 km is a corrupt value, not a place


def bad_frames(motion: Motion) -> np.ndarray:
    """(T,) True where any root, body or hand value is non-finite (or absurdly far away)."""
    bad = ~np.isfinite(motion.root_translation).all(1) | ~np.isfinite(motion.body_pose).all((1, 2))
    bad |= np.abs(np.nan_to_num(motion.root_translation)).max(1) > _MAX_ABS_TRANSLATION_M
    if motion.hand_pose is not None:
        bad |= ~np.isfinite(motion.hand_pose).all((1, 2))
    return bad


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of each run of True."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


def _fill_rotations(rotvecs: np.ndarray, runs: list[tuple[int, int]]) -> None:
    """Slerp each joint's rotation across interior runs; hold the nearest good frame at the ends."""
    t = rotvecs.shape[0]
    joints = rotvecs.shape[1]
    for a, b in runs:
        if a == 0 or b == t:
            rotvecs[a:b] = rotvecs[b if a == 0 else a - 1]
            continue
        ra = Rotation.from_rotvec(rotvecs[a - 1])
        rel = (ra.inv() * Rotation.from_rotvec(rotvecs[b])).as_rotvec()
        alpha = (np.arange(a, b) - (a - 1)) / (b - (a - 1))
        for k, al in enumerate(alpha):
            rotvecs[a + k] = (ra * Rotation.from_rotvec(al * rel)).as_rotvec().reshape(joints, 3)


def repair_motion(motion: Motion, max_gap_s: float, max_bad_fraction: float) -> Motion:
    """The clip with non-finite frames interpolated, counted in filled_frames; or RetargetError."""
    t = motion.n_frames
    if not np.isfinite(motion.fps) or motion.fps <= 0:
        raise RetargetError(f"{motion.clip_id}: frame rate {motion.fps} is not a positive number")
    if t < 2:
        raise RetargetError(f"{motion.clip_id}: {t} frame(s); retargeting needs at least 2")
    bad = bad_frames(motion)
    if not bad.any():
        return motion
    n_bad = int(bad.sum())
    if n_bad == t:
        raise RetargetError(f"{motion.clip_id}: no frame has finite values")
    if n_bad > max_bad_fraction * t:
        raise RetargetError(
            f"{motion.clip_id}: {n_bad} of {t} frames have non-finite values "
            f"(more than {100 * max_bad_fraction:.0f}%)"
        )
    runs = _runs(bad)
    longest = max(b - a for a, b in runs)
    if longest / motion.fps > max_gap_s:
        a = next(a for a, b in runs if b - a == longest)
        raise RetargetError(
            f"{motion.clip_id}: {longest} consecutive non-finite frames from "
            f"t={a / motion.fps:.2f} s (longer than the {max_gap_s:g} s that can be interpolated)"
        )
    frames = np.arange(t)
    good = ~bad
    trans = motion.root_translation.copy()
    for k in range(3):  # linear inside gaps, held at the ends (np.interp clamps)
        trans[bad, k] = np.interp(frames[bad], frames[good], trans[good, k])
    body = motion.body_pose.copy()
    _fill_rotations(body, runs)
    hands = None
    if motion.hand_pose is not None:
        hands = motion.hand_pose.copy()
        _fill_rotations(hands, runs)
    return motion.replace(
        root_translation=trans,
        body_pose=body,
        hand_pose=hands,
        filled_frames=motion.filled_frames + n_bad,
    )
