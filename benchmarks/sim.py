"""Simulation backends: our CPU backend against raw `mujoco.rollout`, MJX on CPU, CPU-MJX parity.

1. MyoFullBody, 100 Hz control: our CPU backend (every recorded quantity, per control step)
   against raw `mujoco.rollout` on the same model, the same envs, controls and physics steps,
   the same thread count and a persistent pool, measured alternately in one run. The raw rollout
   returns states only (and evaluates the model's own sensors every step); ours runs the
   intermediate physics steps on a sensor-free copy and the recording sensors on the last.
2. The planar arm on MJX (JAX on this CPU): compile time and physics steps per second.
3. The planar arm on both backends from the same state with the same smooth random excitations:
   the largest absolute differences of the recorded quantities.

Prints one line per measurement and a JSON summary as the last line.

    .venv/bin/python benchmarks/sim.py [--json] [--envs N] [--control-steps K] [--repeats R]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import mujoco
import numpy as np
from mujoco import rollout

from msconvert.emulator.backends import make_backend
from msconvert.emulator.backends.cpu import available_cores
from msconvert.emulator.model import control_frame_skip, load_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the toy models
from toy_models import planar_arm  # noqa: E402


def smooth_excitations(rng: np.random.Generator, n_envs: int, steps: int, nu: int) -> np.ndarray:
    """(n_envs, steps, nu) excitations in [0, 1]: random knots every 20 steps, linearly joined."""
    knots = rng.uniform(0.0, 1.0, (n_envs, steps // 20 + 2, nu))
    t = np.arange(steps) / 20.0
    i = np.floor(t).astype(int)
    w = (t - i)[None, :, None]
    return knots[:, i] * (1 - w) + knots[:, i + 1] * w


def cpu_overhead(n_envs: int, control_steps: int, repeats: int) -> dict[str, float]:
    """Control-step throughput of the CPU backend with full recording vs raw rollout."""
    model = load_model()
    frame_skip = control_frame_skip(model, 100.0)
    nthread = available_cores()
    backend = make_backend("cpu", model, n_envs, frame_skip)
    rng = np.random.default_rng(0)
    ctrl = 0.2 * smooth_excitations(rng, n_envs, control_steps, model.nu)
    qvel = np.zeros(model.nv)

    full = mujoco.mjtState.mjSTATE_FULLPHYSICS
    data = mujoco.MjData(model)
    row = np.zeros(mujoco.mj_stateSize(model, full))
    mujoco.mj_getState(model, data, row, full)
    start = np.tile(row, (n_envs, 1))
    nstep = frame_skip * control_steps
    raw_ctrl = np.repeat(ctrl, frame_skip, axis=1)
    raw_state = np.zeros((n_envs, nstep, row.size))
    raw_sens = np.zeros((n_envs, nstep, model.nsensordata))
    pool = rollout.Rollout(nthread=nthread)
    datas = [mujoco.MjData(model) for _ in range(nthread)]

    def raw() -> float:
        t = time.perf_counter()
        pool.rollout(
            [model] * n_envs,
            datas,
            start,
            raw_ctrl,
            skip_checks=True,
            nstep=nstep,
            state=raw_state,
            sensordata=raw_sens,
            chunk_size=max(1, n_envs // (nthread * 4)),
        )
        return time.perf_counter() - t

    def ours() -> float:
        state = backend.init(model.qpos0, qvel)
        t = time.perf_counter()
        for k in range(control_steps):
            state = backend.step(state, ctrl[:, k]).state
        return time.perf_counter() - t

    raw(), ours()  # warm up both (pages, thread pools)
    raw_t, ours_t = [], []
    for _ in range(repeats):  # alternate, so both see the same machine load
        raw_t.append(raw())
        ours_t.append(ours())
    steps = n_envs * nstep
    raw_rate, ours_rate = steps / min(raw_t), steps / min(ours_t)
    print(f"raw rollout      {raw_rate:9.0f} physics steps/s ({nthread} threads, {n_envs} envs)")
    print(f"cpu backend      {ours_rate:9.0f} physics steps/s, full recording every control step")
    control_rate = ours_rate / frame_skip
    print(f"                 {control_rate:9.0f} env control steps/s (frame_skip {frame_skip})")
    pool.close()
    backend.close()
    return {
        "cpu_overhead_ratio": ours_rate / raw_rate,
        "cpu_backend_physics_steps_per_s": ours_rate,
        "raw_rollout_physics_steps_per_s": raw_rate,
        "cpu_threads": nthread,
        "cpu_envs": n_envs,
    }


def mjx_speed(n_envs: int = 256, control_steps: int = 20, frame_skip: int = 5) -> dict:
    """MJX (JAX impl on this CPU) on the planar arm: compile time and physics steps per second."""
    model = planar_arm()
    backend = make_backend("mjx", model, n_envs, frame_skip)
    rng = np.random.default_rng(1)
    ctrl = smooth_excitations(rng, n_envs, control_steps, model.nu)
    state = backend.init(model.qpos0, np.zeros(model.nv))
    t = time.perf_counter()
    state = backend.step(state, ctrl[:, 0]).state
    state.qpos.block_until_ready()
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    for k in range(control_steps):
        state = backend.step(state, ctrl[:, k]).state
    state.qpos.block_until_ready()
    rate = n_envs * frame_skip * control_steps / (time.perf_counter() - t)
    print(f"mjx (cpu)        {rate:9.0f} physics steps/s, planar arm, {n_envs} envs")
    print(f"                 {compile_s:9.1f} s to compile the control step")
    return {"mjx_cpu_steps_per_s": rate, "mjx_cpu_compile_s": compile_s}


def parity(n_envs: int = 4, control_steps: int = 200, frame_skip: int = 5) -> dict:
    """Largest |cpu - mjx| of each recorded quantity on the planar arm over the control steps."""
    model = planar_arm()
    cpu = make_backend("cpu", model, n_envs, frame_skip)
    mjx = make_backend("mjx", model, n_envs, frame_skip)
    rng = np.random.default_rng(2)
    qpos = model.qpos0 + rng.uniform(-0.3, 0.3, (n_envs, model.nq)) + [0.0, 0.8]
    qvel = np.zeros((n_envs, model.nv))
    act = np.full((n_envs, model.na), 0.05)
    ctrl = smooth_excitations(rng, n_envs, control_steps, model.nu)
    a, b = cpu.init(qpos, qvel, act), mjx.init(qpos, qvel, act)
    err: dict[str, float] = {}
    for k in range(control_steps):
        sa, sb = cpu.step(a, ctrl[:, k]), mjx.step(b, ctrl[:, k])
        a, b = sa.state, sb.state
        for name, x, y in zip(sa.recording._fields, sa.recording, sb.recording, strict=True):
            x, y = np.asarray(x), np.asarray(y)
            # NaN on both sides (no centre of pressure without contact) agrees; on one, it does not.
            diff = np.where(np.isnan(x) & np.isnan(y), 0.0, np.abs(x - y))
            err[name] = max(err.get(name, 0.0), float(diff.max()) if diff.size else 0.0)
    cpu.close()
    for name, e in err.items():
        print(f"parity {name:13s} max |cpu - mjx| = {e:.3g}")
    return {"parity_max_abs_err": err["qpos"], "parity_max_abs_err_by_field": err}


def static_opt_speed(seconds: float = 4.0, repeats: int = 3) -> dict:
    """4. Static optimization on MyoFullBody: the demo walk, retargeted at 50 Hz, on 2 cores."""
    import tempfile
    from pathlib import Path

    from msconvert.datasets.amass import read_amass
    from msconvert.datasets.demo import walking, write_smplh_npz
    from msconvert.emulator.muscles.static_opt import static_optimization
    from msconvert.emulator.retarget import RetargetConfig, retarget

    model = load_model()
    with tempfile.TemporaryDirectory() as tmp:
        path = write_smplh_npz(Path(tmp, "walk_poses.npz"), *walking(duration_s=seconds))
        motion = read_amass(path, relpath=path.name, clip_id="walk")
    reference = retarget(motion, model, RetargetConfig(fps=50.0))
    out = {}
    for processes in (1, 2):
        rates = []
        for _ in range(repeats):  # this VM's speed drifts by ±20 % between runs: the median
            t0 = time.perf_counter()
            result = static_optimization(reference, model, processes=processes)
            rates.append(reference.n_frames / (time.perf_counter() - t0))
        fps = float(np.median(rates))
        runs = ", ".join(f"{r:.1f}" for r in rates)
        print(f"static-opt MyoFullBody, {processes} process(es): {fps:.1f} frames/s ({runs})")
        out[f"static_opt_fps_{processes}proc"] = round(fps, 1)
    out["static_opt_fps"] = out["static_opt_fps_2proc"]
    for key in ("residual_force_pct_bw", "residual_moment_nm", "infeasible_pct"):
        out[f"static_opt_{key}"] = round(result.metrics[f"static_opt.{key}"], 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON summary")
    parser.add_argument("--envs", type=int, default=16)
    parser.add_argument("--control-steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.json:
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            out = run(args)
    else:
        out = run(args)
    print(json.dumps(out))


def run(args: argparse.Namespace) -> dict:
    out: dict = {}
    # Static optimization forks its workers: first, before any thread pool or JAX has started
    # (the pipeline, too, never forks once JAX runs).
    out.update(static_opt_speed(repeats=args.repeats))
    out.update(cpu_overhead(args.envs, args.control_steps, args.repeats))
    out.update(mjx_speed())
    out.update(parity())
    return out


if __name__ == "__main__":
    main()
