"""Compile times of the MJX training path: the env step, the whole training chunk, a warm start.

    python benchmarks/compile.py --json                      # MyoFullBody: long, several GB
    python benchmarks/compile.py --model path/to/model.xml   # another MJCF
    python benchmarks/compile.py --quick --json              # a small MjSpec muscle model
    python benchmarks/compile.py --json --no-execute         # to the compiled chunk only

Two processes with the same settings and one persistent compilation cache (a fresh folder unless
--cache is given): the first, cold, times XLA compiling the env step with auto-reset (2
environments, one jitted function) and then the whole jitted training chunk with the flow agent;
the second is a new run starting with that cache, timed from its start to its first training
chunk done (`warm_start_s`). The references are synthetic (the model's default pose held still):
compile time does not depend on their values, only on the model and the settings.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STARTED = time.perf_counter()
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the toy models


def _model(path: str | None, quick: bool):
    import mujoco

    if quick:
        from toy_models import muscle_pendulum

        model = muscle_pendulum()
        return model, tuple(model.body(i).name for i in range(1, model.nbody))
    from msconvert.emulator.model import load_model
    from msconvert.emulator.retarget.correspondence import (
        default_correspondence_path,
        load_correspondence,
    )

    model = load_model(path)
    try:  # the key bodies a retargeted clip of this model has
        entries = load_correspondence(default_correspondence_path(model)).entries
        bodies = tuple(dict.fromkeys(e.body for e in entries))
    except Exception:  # a model without a packaged correspondence: every body
        bodies = tuple(model.body(i).name for i in range(1, model.nbody))
    mujoco.mj_forward(model, mujoco.MjData(model))
    return model, bodies


def _reference(model, bodies: tuple[str, ...], frames: int = 100, hz: float = 50.0):
    import mujoco
    import numpy as np

    from msconvert.emulator.retarget.reference import Reference

    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    ids = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, b) for b in bodies]
    return Reference.from_trajectory(
        "still",
        hz,
        np.repeat(model.qpos0[None], frames, 0),
        np.zeros((frames, model.nv)),
        body_names=bodies,
        body_pos=np.repeat(data.xpos[ids][None], frames, 0),
    )


def _config(quick: bool, n_envs: int):
    from msconvert.emulator.learn.agents import flow
    from msconvert.emulator.learn.env import EnvConfig
    from msconvert.emulator.learn.train import TrainConfig

    agent = flow.Config()
    if quick:
        from toy_tasks import tiny_flow

        agent = tiny_flow()
    return TrainConfig(
        warm_start=False,
        backend="mjx",
        n_envs=n_envs,
        budget_steps=10 * n_envs,
        chunk_steps=2 if quick else 25,
        evaluations=0,
        agent_config=agent,
        env=EnvConfig(episode_steps=50) if quick else EnvConfig(),
    )


def child(args: argparse.Namespace) -> dict[str, float]:
    """One process: cold (times each compile) or warm (a run's start with the cache)."""
    import jax
    import jax.numpy as jnp

    from msconvert.emulator.learn import compiling
    from msconvert.emulator.learn.train import make_trainer

    compiling.use_cache(args.cache)
    out: dict[str, float] = {}
    with compiling.watch() as compiles:
        model, bodies = _model(args.model, args.quick)
        out["model_load_s"] = time.perf_counter() - STARTED
        trainer = make_trainer(model, [_reference(model, bodies)], _config(args.quick, args.envs))
        ts = trainer.init()
        out["init_s"] = time.perf_counter() - STARTED - out["model_load_s"]
        if args.child == "cold":
            env, task = trainer.env, trainer.env.unwrapped.task
            action = jnp.zeros((args.envs, model.nu))
            t = time.perf_counter()
            step = jax.jit(lambda s, a: env.step(s, a, task)).lower(ts.env, action)
            out["mjx_env_step_lower_s"] = time.perf_counter() - t
            t = time.perf_counter()
            step.compile()
            out["mjx_env_step_compile_s"] = time.perf_counter() - t
            t = time.perf_counter()
            chunk = trainer.lower_chunk(ts)
            out["mjx_train_chunk_lower_s"] = time.perf_counter() - t
            cost = chunk.cost_analysis() or {}
            out["mjx_train_chunk_flops"] = float(cost.get("flops", float("nan")))
            t = time.perf_counter()
            chunk.compile()
            out["mjx_train_chunk_compile_s"] = time.perf_counter() - t
        if args.no_execute:  # to the compiled chunk only (the warm process: from the cache)
            if args.child == "warm":
                t = time.perf_counter()
                trainer.lower_chunk(ts).compile()
                out["chunk_ready_s"] = time.perf_counter() - t
        else:
            t = time.perf_counter()
            ts, _ = trainer.run_chunk(ts)
            jax.block_until_ready(ts)
            out["first_chunk_s"] = time.perf_counter() - t
    out["start_to_first_chunk_s"] = time.perf_counter() - STARTED
    out["compiles"] = float(len(compiles))
    out["cache_hits"] = float(sum(c.cache_hit for c in compiles))
    out["compile_s_total"] = sum(c.seconds for c in compiles)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="MJCF (default: MyoFullBody)")
    parser.add_argument("--quick", action="store_true", help="a small MjSpec muscle model")
    parser.add_argument("--envs", type=int, default=2)
    parser.add_argument("--cache", default=None, help="the compilation cache (default: fresh)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--no-execute",
        action="store_true",
        help="stop at the compiled chunk: warm_start_s is then a new process to its compiled "
        "chunk from the cache, not to its first chunk done (on a CPU, MyoFullBody's first chunk "
        "of 2 environments executes in ~12 s)",
    )
    parser.add_argument("--child", choices=("cold", "warm"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    with tempfile.TemporaryDirectory(prefix="msconvert-jax-cache-") as fresh:
        cache = args.cache or fresh
        runs = {}
        for mode in ("cold", "warm"):
            cmd = [sys.executable, __file__, "--child", mode, "--cache", cache]
            cmd += ["--envs", str(args.envs)] + (["--quick"] if args.quick else [])
            cmd += ["--no-execute"] if args.no_execute else []
            cmd += ["--model", args.model] if args.model else []
            t = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            wall = time.perf_counter() - t
            if done.returncode != 0:
                sys.exit(f"the {mode} process failed:\n{done.stderr[-3000:]}")
            runs[mode] = {**json.loads(done.stdout.strip().splitlines()[-1]), "wall_s": wall}
        entries = len(list(Path(cache).glob("*-cache")))
    cold, warm = runs["cold"], runs["warm"]
    result = {
        "model": "muscle_pendulum (MjSpec)" if args.quick else (args.model or "MyoFullBody"),
        "envs": args.envs,
        "mjx_env_step_compile_s": cold["mjx_env_step_compile_s"],
        "mjx_train_chunk_compile_s": cold["mjx_train_chunk_compile_s"],
        "warm_start_s": warm["wall_s"],
        "cold_start_s": cold["wall_s"],
        "cache_entries": entries,
        "cold": cold,
        "warm": warm,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key in ("mjx_env_step_compile_s", "mjx_train_chunk_compile_s", "warm_start_s"):
            print(f"{key:28s} {result[key]:8.1f}")


if __name__ == "__main__":
    main()
