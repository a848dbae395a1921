"""How far RL removes the root assist (issue 14 §1): one demo clip's policy trained with the `cpu`
preset for a wall-time (or env-step) budget through the shipped CLI, then, per evaluation, the
assist scale, the assist force it applied, and the tracked fraction and joint error with the
assist off.

    .venv/bin/python benchmarks/assist_curve.py --clip squat --minutes 60 --out bench_out/squat
    .venv/bin/python benchmarks/assist_curve.py --clip squat --steps 217600 --out bench_out/sq
    .venv/bin/python benchmarks/assist_curve.py --out bench_out/squat --plot-only [--compare B]

With --steps the budget is env steps (the assist anneals by steps, and load on the machine only
slows the run): two runs compare at equal env steps.

Writes OUT/catalog.zarr (retargeted), OUT/policy (the checkpoint) and OUT/assist_curve.png;
prints one line per evaluation and a JSON summary as the last line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from msconvert.emulator.learn.checkpoint import read_meta

COLUMNS = (
    "eval_assist_scale",
    "eval_assist_force_pct_bw",
    "eval_fraction_tracked",
    "eval_joint_error_deg",
    "eval_off_fraction_tracked",
    "eval_off_joint_error_deg",
)


def msconvert(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "msconvert", *args], check=True, capture_output=True, text=True
    )
    return done.stdout


def train(
    out: Path, clip: str, minutes: float, steps: int | None, evaluations: int, envs: int | None
) -> None:
    corpus, catalog = out / "corpus", out / "catalog.zarr"
    msconvert("demo-corpus", str(corpus))
    msconvert(
        "amass", str(corpus), "--out", str(catalog), "--include", f"*/{clip}",
        "--until", "retarget", "--overwrite",
    )  # fmt: skip
    (row,) = json.loads(msconvert("ls", str(catalog), "--format", "json"))
    more = ["--envs", str(envs)] if envs else []
    if steps:  # steps bind; the preset's 4-h cap stays as a guard
        more += ["--budget-steps", str(steps)]
    else:
        more += ["--budget-minutes", str(minutes)]
    msconvert(
        "train", str(catalog), row["clip"], "--out", str(out / "policy"), "--preset", "cpu",
        "--evaluations", str(evaluations), *more,
    )  # fmt: skip


def evaluations(out: Path) -> tuple[dict, int, list[dict]]:
    meta, step = read_meta(out / "policy")
    return meta, step, [r for r in meta["curve"] if "eval_score" in r]


def report(out: Path, compare: Path | None = None) -> dict:
    meta, step, rows = evaluations(out)
    for r in rows:
        cells = "  ".join(
            f"{k.removeprefix('eval_')} {r.get(k, float('nan')):.3f}" for k in COLUMNS
        )
        print(f"{r['seconds'] / 60:6.1f} min  {r['env_steps']:9,.0f} steps  {cells}")
    other = (compare.name, evaluations(compare)[2]) if compare else None
    plot(rows, out / "assist_curve.png", other)
    best = min(rows, key=lambda r: r["eval_score"])
    return {
        "env_steps": step,
        "minutes": meta["seconds"] / 60,
        "exported_assist_scale": meta.get("assist_scale"),
        "exported_at_env_steps": best["env_steps"],
        "evaluations": [{k: r.get(k) for k in ("seconds", "env_steps", *COLUMNS)} for r in rows],
        "final_off_fraction_tracked": rows[-1].get("eval_off_fraction_tracked"),
        "best_off_fraction_tracked": max(r.get("eval_off_fraction_tracked", 0.0) for r in rows),
    }


def plot(rows: list[dict], path: Path, other: tuple[str, list[dict]] | None = None) -> None:
    """The curve against env steps (comparable between runs, whatever the machine's load); with
    `other` (its label and evaluations), that run's assist-off tracked fraction beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["env_steps"] / 1000 for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    top.plot(steps, [r["eval_assist_scale"] for r in rows], "k--", label="assist scale")
    top.plot(steps, [r["eval_off_fraction_tracked"] for r in rows], "o-", label="tracked, off")
    top.plot(steps, [r["eval_fraction_tracked"] for r in rows], "s:", label="tracked, at scale")
    if other is not None:
        label, theirs = other
        top.plot(
            [r["env_steps"] / 1000 for r in theirs],
            [r["eval_off_fraction_tracked"] for r in theirs],
            "^-",
            color="grey",
            label=f"tracked, off ({label})",
        )
    top.set_ylim(-0.05, 1.05)
    top.legend(loc="best", fontsize=8)
    top.set_ylabel("fraction / scale")
    bottom.plot(steps, [r["eval_assist_force_pct_bw"] for r in rows], "o-", label="assist, % BW")
    bottom.plot(
        steps, [r["eval_off_joint_error_deg"] for r in rows], "s-", label="joint error, off (deg)"
    )
    bottom.legend(loc="best", fontsize=8)
    bottom.set_xlabel("env steps after the warm start (thousands)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", default="squat", help="demo clip name (squat, walking, ...)")
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--steps", type=int, default=None, help="an env-step budget instead")
    parser.add_argument("--evaluations", type=int, default=12)
    parser.add_argument("--envs", type=int, default=None, help="override the preset's 32")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--plot-only", action="store_true", help="report a finished run")
    parser.add_argument("--compare", type=Path, help="another run's OUT, drawn beside this one")
    args = parser.parse_args()
    if not args.plot_only:
        args.out.mkdir(parents=True, exist_ok=True)
        train(args.out, args.clip, args.minutes, args.steps, args.evaluations, args.envs)
    print(json.dumps(report(args.out, args.compare)))


if __name__ == "__main__":
    main()
