"""The tracking controller against a raw physics rollout of the same clip, in one process.

For each demo clip: retarget it onto MyoFullBody, run `--method track` (assist on, then off),
and time plain MuJoCo physics of the same clip: from each state the controller's run recorded,
its excitations held for a control step (the same physics steps and contacts, no controller).
Pinned to one core. Prints a line per clip, then a JSON summary as the last line with
`track_overhead_vs_physics`: the controller's wall time over the raw physics' (target <= 2.0).

    .venv/bin/python benchmarks/track.py [--json] [--clips standing,walking] [--seconds S]
        [--control-hz HZ]   (the controller's rate, 200 by default; 0: once per 50-Hz frame)
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import mujoco
import numpy as np

from msconvert.datasets.amass import read_amass
from msconvert.datasets.demo import slow_walking, squat, standing, walking, write_smplh_npz
from msconvert.emulator.model import control_frame_skip, load_model
from msconvert.emulator.muscles.track import TrackConfig, track
from msconvert.emulator.retarget import RetargetConfig, retarget

CLIPS = {
    "standing": standing,
    "walking": walking,
    "walking_slow": slow_walking,
    "squat": squat,
}


def raw_rollout_s(model: mujoco.MjModel, emulation, steps: int) -> float:
    """Seconds for the plain physics of the same clip: from each recorded state, the recorded
    excitations held for `steps` steps (so the physics meets the same contacts as the
    controller's run, not a fallen body's)."""
    data = mujoco.MjData(model)
    rows = emulation.tracked_frames - 1
    elapsed = 0.0
    for k in range(rows):
        data.qpos[:], data.qvel[:] = emulation.qpos[k], emulation.qvel[k]
        data.act[:] = emulation.activation[k]
        data.ctrl[:] = np.nan_to_num(emulation.excitation[k])
        start = time.perf_counter()
        for _ in range(steps):
            mujoco.mj_step(model, data)
        elapsed += time.perf_counter() - start
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="only the JSON summary")
    parser.add_argument("--clips", default=",".join(CLIPS), help="comma-separated demo clips")
    parser.add_argument("--seconds", type=float, default=3.0, help="clip length")
    parser.add_argument("--control-hz", type=float, default=TrackConfig().control_hz)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    model = load_model()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.clips.split(","):
            make = CLIPS[name]
            trans, poses, fps = make(duration_s=args.seconds)
            path = Path(tmp) / f"{name}_poses.npz"
            write_smplh_npz(path, trans, poses, fps)
            ref = retarget(read_amass(path), model, RetargetConfig(fps=50.0))
            row = {"clip": name, "frames": ref.n_frames}
            for assist in ("on", "off"):
                start = time.perf_counter()
                result = track(ref, model, TrackConfig(assist=assist, control_hz=args.control_hz))
                wall = time.perf_counter() - start
                m = result.metrics
                row[f"assist_{assist}"] = {
                    "fraction_tracked": m["tracking.fraction_tracked"],
                    "joint_error_deg": m["tracking.joint_error_deg_mean"],
                    "joint_error_deg_worst": m["tracking.joint_error_deg_worst"],
                    "body_error_mm": m["tracking.body_error_mm_mean"],
                    "assist_force_pct_bw": m["track.assist_force_pct_bw"],
                    "assist_force_pct_bw_max": m["track.assist_force_pct_bw_max"],
                    "wall_s": wall,
                    "control_hz": m["track.control_hz"],
                }
                if assist == "on":
                    steps = control_frame_skip(model, ref.fps)
                    raw = raw_rollout_s(model, result.emulation, steps)
                    row["raw_physics_s"] = raw
                    row["track_overhead_vs_physics"] = wall / raw  # over the same frames
            rows.append(row)
            if not args.json:
                on, off = row["assist_on"], row["assist_off"]
                print(
                    f"{name:13s} assist on: tracked {on['fraction_tracked']:.2f}, "
                    f"{on['joint_error_deg']:.2f} deg "
                    f"(worst joint {on['joint_error_deg_worst']:.1f}), "
                    f"{on['body_error_mm']:.1f} mm, assist "
                    f"{on['assist_force_pct_bw']:.2f} % BW "
                    f"(max {on['assist_force_pct_bw_max']:.1f})"
                    f" | off: tracked {off['fraction_tracked']:.2f} | overhead vs physics "
                    f"{row['track_overhead_vs_physics']:.2f}"
                )
    summary = {
        "machine": f"{os.uname().machine} 1 core",
        "clips": rows,
        "track_overhead_vs_physics": float(
            np.median([r["track_overhead_vs_physics"] for r in rows])
        ),
        "target_overhead": 2.0,
        "control_hz": rows[0]["assist_on"]["control_hz"] if rows else None,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
