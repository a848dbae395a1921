"""Distinct muscle solutions of the tracking controller on MyoFullBody (issue 14 §2).

For each demo clip: retarget it onto MyoFullBody and run `--method track --solutions K`
(`emulator/muscles/solutions.py`). Reports each solution's tracking (fraction tracked, joint
error, assist % BW) and the diversity metrics. Targets from the issue: every solution within
1 deg joint error of the others (`diversity.joint_error_spread_deg` <= 1) and
`diversity.activation_corr_mean` < 0.5, each still within the controller's assist. Pinned to one
core. Prints a line per clip, then a JSON summary as the last line.

    .venv/bin/python benchmarks/solutions.py [--json] [--clips walking,squat,standing]
        [--seconds 3] [--solutions 3] [--sigma S] [--push P] [--period S] [--seed N]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from msconvert.datasets.amass import read_amass
from msconvert.datasets.demo import (
    arm_raise,
    slow_walking,
    squat,
    standing,
    walking,
    write_smplh_npz,
)
from msconvert.emulator.model import load_model
from msconvert.emulator.muscles.solutions import SolutionsConfig, track_solutions
from msconvert.emulator.retarget import RetargetConfig, retarget

CLIPS = {
    "standing": standing,
    "walking": walking,
    "walking_slow": slow_walking,
    "squat": squat,
    "arm_raise": arm_raise,
}
DIVERSITY = (
    "diversity.activation_corr_mean",
    "diversity.joint_error_spread_deg",
    "diversity.effort_spread_pct",
)


def main() -> None:
    defaults = SolutionsConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="only the JSON summary")
    parser.add_argument("--clips", default="walking,squat,standing", help="demo clips")
    parser.add_argument("--seconds", type=float, default=3.0, help="clip length")
    parser.add_argument("--solutions", type=int, default=3, help="K")
    parser.add_argument("--sigma", type=float, default=defaults.weight_sigma)
    parser.add_argument("--push", type=float, default=defaults.push)
    parser.add_argument("--period", type=float, default=defaults.weight_period_s)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    config = SolutionsConfig(args.solutions, args.sigma, args.push, args.period, args.seed)
    model = load_model()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.clips.split(","):
            trans, poses, fps = CLIPS[name](duration_s=args.seconds)
            path = Path(tmp) / f"{name}_poses.npz"
            write_smplh_npz(path, trans, poses, fps)
            ref = retarget(read_amass(path), model, RetargetConfig(fps=50.0))
            start = time.perf_counter()
            found = track_solutions(ref, model, solutions=config)
            wall = time.perf_counter() - start
            solutions = [
                {
                    "fraction_tracked": r.metrics["tracking.fraction_tracked"],
                    "joint_error_deg": r.metrics["tracking.joint_error_deg_mean"],
                    "body_error_mm": r.metrics["tracking.body_error_mm_mean"],
                    "assist_force_pct_bw": r.metrics["track.assist_force_pct_bw"],
                    "assist_force_pct_bw_max": r.metrics["track.assist_force_pct_bw_max"],
                }
                for r in found.results
            ]
            row = {
                "clip": name,
                "frames": ref.n_frames,
                "wall_s": wall,
                "solutions": solutions,
                **{k: found.metrics[k] for k in DIVERSITY},
            }
            rows.append(row)
            if not args.json:
                each = "; ".join(
                    f"{j}: {s['fraction_tracked']:.2f} tracked, {s['joint_error_deg']:.2f} deg, "
                    f"{s['assist_force_pct_bw']:.1f} % BW"
                    for j, s in enumerate(solutions)
                )
                print(
                    f"{name:13s} {each} | corr {row['diversity.activation_corr_mean']:.3f}, "
                    f"error spread {row['diversity.joint_error_spread_deg']:.2f} deg, effort "
                    f"spread {row['diversity.effort_spread_pct']:.0f} % | {wall:.0f} s"
                )
    summary = {
        "machine": f"{os.uname().machine} 1 core",
        "solutions": config.count,
        "weight_sigma": config.weight_sigma,
        "push": config.push,
        "weight_period_s": config.weight_period_s,
        "seed": config.seed,
        "clips": rows,
        "targets": {"joint_error_spread_deg": 1.0, "activation_corr_mean": 0.5},
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
