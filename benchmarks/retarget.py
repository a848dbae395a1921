"""Retargeting: ours against a mink differential-IK baseline, and ours on the stress clips.

Both solvers get the same model-proportioned targets (`prepare_targets`) and their solutions go
through the same grounding, derivatives and metrics (`build_reference`). The baseline is mink's
recipe: a FrameTask per correspondence, a PostureTask, a DampingTask, the joint couplings as an
EqualityConstraintTask, a ConfigurationLimit, the daqp QP solver, the same base iterations per
frame (ours adds a few where a frame has not settled);
it has no floor task (ours keeps stance feet on the floor inside the IK).

Then ours on every stress clip of the demo generator (`demo.STRESS_CLIPS`: run with flight,
jump, 450° turn, cartwheel, 150 s walk, 30 and 250 fps), each checked against STRESS_TARGETS; a
missed target is printed as MISSED. Runs pinned to one core; frames/s are per CPU second of the
solve (on a shared VM wall time also counts other tenants). Prints a line per clip and solver,
and a JSON summary as the last line.

    .venv/bin/python benchmarks/retarget.py [--json] [--seconds S] [--fps F] [--model PATH]
        [--no-stress] [--mink-stress]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import mink
import mujoco
import numpy as np

from msconvert.datasets.amass import read_amass
from msconvert.datasets.demo import (
    STRESS_CLIPS,
    slow_walking,
    standing,
    walking,
    write_smplh_npz,
)
from msconvert.datasets.kinematics import mean_skeleton
from msconvert.emulator.model import load_model
from msconvert.emulator.retarget import RetargetConfig, solve_ik
from msconvert.emulator.retarget.correspondence import Binding
from msconvert.emulator.retarget.ik import IKOptions, IKResult
from msconvert.emulator.retarget.pipeline import build_reference, prepare_targets
from msconvert.emulator.retarget.rotations import quat_to_matrix

KEYS = (
    "fps",
    "position_error_mm",
    "position_error_mm_max",
    "orientation_error_deg",
    "joint_limit_violation_pct",
    "penetration_pct",
    "float_mm",
    "tendon_jump_pct",
    "tendon_unexplained_mm_max",
)
# Every stress clip, ours: (metric, bound, "max" or "min").
STRESS_TARGETS = (
    ("position_error_mm", 15.0, "max"),
    ("position_error_mm_max", 60.0, "max"),
    ("orientation_error_deg", 8.0, "max"),
    ("joint_limit_violation_pct", 0.0, "max"),
    ("penetration_pct", 0.2, "max"),
    ("tendon_jump_pct", 0.5, "max"),
    ("fps", 250.0, "min"),
)
LONG_CLIP = "Stress/long/long_walk_poses.npz"  # mink at ~20 frames/s would take minutes on it


def mink_ik(
    model: mujoco.MjModel,
    binding: Binding,
    positions: np.ndarray,
    quats: np.ndarray,
    options: IKOptions,
) -> IKResult:
    """The mink baseline: one QP per iteration over all DoFs, couplings as a soft task."""
    space = binding.space
    configuration = mink.Configuration(model, q=space.neutral.copy())
    frames = []
    for c, body in enumerate(binding.body):
        frames.append(
            mink.FrameTask(
                model.body(int(body)).name,
                "body",
                position_cost=np.sqrt(binding.position_weight[c]),
                orientation_cost=np.sqrt(binding.orientation_weight[c]),
            )
        )
    posture_cost = np.full(model.nv, np.sqrt(options.posture_weight))
    posture_cost[space.dofs[space.is_root]] = 0.0  # the root is free to go, as in ours
    posture = mink.PostureTask(model, cost=posture_cost)
    posture.set_target(space.neutral)
    damping = mink.DampingTask(model, cost=np.full(model.nv, np.sqrt(options.smooth_weight)))
    tasks = [*frames, posture, damping]
    if model.neq:
        tasks.append(mink.EqualityConstraintTask(model, cost=100.0))
    limits = [mink.ConfigurationLimit(model)]
    rot = quat_to_matrix(quats)
    out = np.empty((positions.shape[0], model.nq))
    used = np.zeros(positions.shape[0], dtype=int)
    start = time.perf_counter()
    for t in range(positions.shape[0]):
        for c, task in enumerate(frames):
            # The body frame's target: the point target moved back by the body-frame offset.
            origin = positions[t, c] - rot[t, c] @ binding.offset[c]
            task.set_target(
                mink.SE3.from_rotation_and_translation(mink.SO3(wxyz=quats[t, c]), origin)
            )
        budget = options.first_iterations if t == 0 else options.iterations
        for k in range(budget):
            v = mink.solve_ik(
                configuration, tasks, 1.0, "daqp", damping=options.damping, limits=limits
            )
            configuration.integrate_inplace(v, 1.0)
            used[t] = k + 1
            if np.abs(v).max() < options.step_tolerance:
                break
        out[t] = configuration.q
    return IKResult(qpos=out, iterations=used, seconds=time.perf_counter() - start)


def _read(tmp: str, rel: str, arrays: tuple) -> object:
    """A generated clip written as AMASS SMPL-H and read back through the AMASS reader."""
    path = write_smplh_npz(Path(tmp, rel), *arrays)
    return read_amass(path, relpath=rel, clip_id=rel.removesuffix("_poses.npz"))


def _clips(seconds: float) -> list:
    """The demo corpus's walk, slow walk and stance."""
    with tempfile.TemporaryDirectory() as tmp:
        return [
            _read(tmp, f"{name}_poses.npz", make(duration_s=seconds))
            for name, make in (
                ("walking", walking),
                ("slow_walking", slow_walking),
                ("standing", standing),
            )
        ]


def _stress_clips() -> list:
    with tempfile.TemporaryDirectory() as tmp:
        return [_read(tmp, rel, make()) for rel, (make, _) in STRESS_CLIPS.items()]


def _missed(row: dict[str, float]) -> list[str]:
    """The stress targets this clip's metrics miss, as 'metric value (target)'."""
    out = []
    for key, bound, kind in STRESS_TARGETS:
        ok = row[key] <= bound if kind == "max" else row[key] >= bound
        if not ok:
            sign = "<=" if kind == "max" else ">="
            out.append(f"{key} {row[key]:.3g} (target {sign} {bound:g})")
    return out


def _run(model, config, motion, solvers, say) -> dict[str, tuple]:
    """Each solver on one clip: (frames, seconds, metrics row)."""
    targets = prepare_targets(motion, model, config, mean_skeleton())
    b, p, q = targets.binding, targets.positions, targets.quats
    out = {}
    for name, solver in solvers:
        cpu = time.process_time()
        if name == "ours":
            ik = solve_ik(model, b, p, q, config.ik, floor=targets.floor_contact(config))
        else:
            ik = solver(model, b, p, q, config.ik)
        # CPU seconds of this (single-threaded, pinned) process: the VM's other tenants take
        # wall time from it, not CPU time.
        seconds = time.process_time() - cpu
        ref = build_reference(model, targets, ik.qpos, ik.qpos.shape[0] / seconds, config)
        row = {k: ref.metrics[f"retarget.{k}"] for k in KEYS}
        out[name] = (ref.n_frames, seconds, row)
        say(motion.clip_id, name, json.dumps({k: round(v, 3) for k, v in row.items()}))
    return out


def _summary(prefix: str, rows: list[tuple]) -> dict[str, float]:
    frames = sum(r[0] for r in rows)
    out = {f"{prefix}_fps": round(frames / sum(r[1] for r in rows), 1)}
    for k in KEYS[1:]:
        out[f"{prefix}_{k}"] = round(float(np.mean([r[2][k] for r in rows])), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="length of the walking clip")
    parser.add_argument("--fps", type=float, default=50.0, help="control rate")
    parser.add_argument("--model", default=None, help="MJCF path (default MyoFullBody)")
    parser.add_argument("--json", action="store_true", help="print only the JSON summary")
    parser.add_argument("--no-stress", action="store_true", help="skip the stress clips")
    parser.add_argument(
        "--mink-stress", action="store_true", help="mink on the stress clips too (not the long one)"
    )
    args = parser.parse_args()
    say = (lambda *a: None) if args.json else print
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, for both solvers
    logging.getLogger("mink").setLevel(logging.ERROR)  # its per-step limit warnings

    model = load_model(args.model)
    config = RetargetConfig(fps=args.fps)
    both = (("ours", solve_ik), ("mink", mink_ik))
    totals: dict[str, list] = {"ours": [], "mink": []}
    for motion in _clips(args.seconds):
        for name, result in _run(model, config, motion, both, say).items():
            totals[name].append(result)
    summary = {**_summary("ours", totals["ours"]), **_summary("mink", totals["mink"])}
    if not args.no_stress:
        stress: dict[str, list] = {"ours": [], "mink": []}
        missed = {}
        for motion in _stress_clips():
            mink_too = args.mink_stress and motion.clip_id != LONG_CLIP.removesuffix("_poses.npz")
            results = _run(model, config, motion, both if mink_too else both[:1], say)
            for name, result in results.items():
                stress[name].append(result)
            misses = _missed(results["ours"][2])
            if misses:
                missed[motion.clip_id] = misses
                say(motion.clip_id, "ours MISSED:", "; ".join(misses))
        summary.update(_summary("stress_ours", stress["ours"]))
        if stress["mink"]:
            summary.update(_summary("stress_mink", stress["mink"]))
        summary["stress_targets_missed"] = missed
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
