"""Retargeting: ours against a mink differential-IK baseline, same clips, targets and weights.

Both solvers get the same model-proportioned targets (`prepare_targets`) and their solutions go
through the same grounding, derivatives and metrics (`build_reference`). The baseline is mink's
recipe: a FrameTask per correspondence, a PostureTask, a DampingTask, the joint couplings as an
EqualityConstraintTask, a ConfigurationLimit, the daqp QP solver, the same iterations per frame.
Runs pinned to one core; prints a line per clip and solver, and a JSON summary as the last line.

    .venv/bin/python benchmarks/retarget.py [--json] [--seconds S] [--fps F] [--model PATH]
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
from msconvert.datasets.demo import slow_walking, standing, walking, write_smplh_npz
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
    "joint_limit_violation_pct",
    "penetration_pct",
    "tendon_jump_pct",
)


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


def _clips(seconds: float) -> list:
    """The demo corpus's walk, slow walk and stance, read back through the AMASS reader."""
    with tempfile.TemporaryDirectory() as tmp:
        motions = []
        for name, make in (
            ("walking", walking),
            ("slow_walking", slow_walking),
            ("standing", standing),
        ):
            path = write_smplh_npz(Path(tmp, f"{name}_poses.npz"), *make(duration_s=seconds))
            motions.append(read_amass(path, relpath=path.name, clip_id=name))
        return motions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="length of the walking clip")
    parser.add_argument("--fps", type=float, default=50.0, help="control rate")
    parser.add_argument("--model", default=None, help="MJCF path (default MyoFullBody)")
    parser.add_argument("--json", action="store_true", help="print only the JSON summary")
    args = parser.parse_args()
    say = (lambda *a: None) if args.json else print
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, for both solvers
    logging.getLogger("mink").setLevel(logging.ERROR)  # its per-step limit warnings

    model = load_model(args.model)
    config = RetargetConfig(fps=args.fps)
    skeleton = mean_skeleton()
    totals = {"ours": [], "mink": []}
    for motion in _clips(args.seconds):
        targets = prepare_targets(motion, model, config, skeleton)
        b, p, q = targets.binding, targets.positions, targets.quats
        for name, solver in (("ours", solve_ik), ("mink", mink_ik)):
            ik = solver(model, b, p, q, config.ik)
            ref = build_reference(model, targets, ik.qpos, ik.fps, config)
            row = {k: ref.metrics[f"retarget.{k}"] for k in KEYS}
            totals[name].append((ref.n_frames, ik.seconds, row))
            say(motion.clip_id, name, json.dumps({k: round(v, 3) for k, v in row.items()}))
    summary = {}
    for name, rows in totals.items():
        frames = sum(r[0] for r in rows)
        summary[f"{name}_fps"] = round(frames / sum(r[1] for r in rows), 1)
        for k in KEYS[1:]:
            summary[f"{name}_{k}"] = round(float(np.mean([r[2][k] for r in rows])), 3)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
