"""Learning: ours (flow + adversarial) against its ablations and the standard recipe, same seeds,
budget and task, each with and without the static-optimization warm start.

Runs: flow+adversarial (ours), gaussian+adversarial (no flow), flow+deepmimic (no adversarial
aggregation), ppo+deepmimic (MuscleMimic's recipe). Task:
- `--task arm` (default with --quick): the 8-muscle planar arm (MjSpec) tracking a 3-s reference
  made by forward-simulating smooth excitations. Small, but the same code path as MyoFullBody.
- `--task myofullbody`: MyoFullBody (locked fingers) tracking the demo standing clip (hours here).
Final error: the deterministic rollout over the whole clip (emulation) of the exported policy,
mean |joint-angle error| in degrees. Every run uses the product's policy selection (the starting
policy and 8 snapshots spread over the budget are emulated, the best is exported), so the
figure is what a user's catalog would hold; env steps/s include those evaluations. Prints one
line per run, writes a learning-curve PNG, and prints a JSON summary as the last line. Every run
is repeated over --seeds seeds (default 3); the headline figures are medians over seeds, with
every seed's figure and the means beside them.

`--throughput`: training speed against the environment's own, in one process, with the `cpu`
preset's settings (MyoFullBody, 32 environments, the flow agent at its defaults): env steps/s of
the training loop (acting, the C-engine step, the learner's update) and of the environment alone
(random excitations, the same observation, reward, termination and auto-reset), measured in
alternation, and `train_vs_env_steps_ratio`, their ratio of medians (target >= 0.5).

`--from-controller`: issue 14's comparison on MyoFullBody's demo walk (the product's model and
retargeting): ours (flow + adversarial), the Gaussian ablation (gaussian + adversarial) and PPO +
DeepMimic, each from the product's warm start (DAgger from the tracking controller, the policy a
residual on its run) at the `demo` preset's settings, trained for the same --steps env steps
(no time cap), --seeds seeds. Per run, the exported policy's emulation with the root assist
switched off (tracked fraction, joint error over the tracked frames), beside the warm start's.

    .venv/bin/python benchmarks/learning.py --quick --json
    .venv/bin/python benchmarks/learning.py --throughput --json [--envs 32] [--rounds 3]
    .venv/bin/python benchmarks/learning.py --from-controller --steps 6000 --seeds 3 --json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import jax  # noqa: E402

from msconvert.convert.presets import PRESETS  # noqa: E402
from msconvert.emulator.learn.agents import flow, gaussian, ppo  # noqa: E402
from msconvert.emulator.learn.emulate import emulate  # noqa: E402
from msconvert.emulator.learn.env import EnvConfig  # noqa: E402
from msconvert.emulator.learn.runs import warm_start_solutions  # noqa: E402
from msconvert.emulator.learn.train import TrainConfig, make_trainer, train  # noqa: E402

RUNS = {
    "ours": ("flow", "adversarial"),
    "gaussian": ("gaussian", "adversarial"),
    "deepmimic": ("flow", "deepmimic"),
    "ppo": ("ppo", "deepmimic"),
}


def task(name: str):
    if name == "arm":
        from arm_reference import arm_reference
        from toy_models import planar_arm

        model = planar_arm(8)
        return model, arm_reference(model, seconds=3.0, seed=3), "planar arm, 8 muscles"
    from msconvert.datasets.amass import read_amass
    from msconvert.datasets.demo import standing, write_smplh_npz
    from msconvert.emulator.model import load_model
    from msconvert.emulator.retarget import RetargetConfig, retarget

    model = load_model(lock_fingers=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_smplh_npz(Path(tmp, "stand_poses.npz"), *standing(duration_s=3.0))
        motion = read_amass(path, relpath=path.name, clip_id="standing")
    return model, retarget(motion, model, RetargetConfig(fps=50.0)), "MyoFullBody, locked fingers"


def agent_config(agent: str):
    small = dict(warmup_steps=500, batch_size=128, critic_hidden=(128, 128))
    if agent == "flow":
        return flow.Config(policy_hidden=(128, 128), flow_hidden=(128, 128), **small)
    if agent == "gaussian":
        return gaussian.Config(policy_hidden=(128, 128), **small)
    return ppo.Config(hidden=(64, 64), rollout_length=32)


def run_one(model, ref, acts, excs, agent: str, reward: str, warm: bool, steps: int, seed: int):
    """Train one run; (final emulation error, training curve, env steps/s after compile, s)."""
    cfg = TrainConfig(
        agent=agent,
        reward=reward,
        warm_start=warm,
        backend="cpu",
        n_envs=16,
        budget_steps=steps,
        seed=seed,
        agent_config=agent_config(agent),
        env=EnvConfig(episode_steps=100),
    )
    trainer = make_trainer(model, [ref], cfg, activations=acts, excitations=excs)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        policy = train(trainer, Path(tmp, "ckpt"))
    seconds = time.perf_counter() - start
    final = emulate(trainer.env, trainer.agent, *policy.params, trainer.config.agent_config)
    curve = [r for r in policy.curve if "joint_error_deg" in r]
    later = [r for r in curve if r["seconds"] > curve[0]["seconds"]]
    rate = (later[-1]["env_steps"] - later[0]["env_steps"]) / max(
        later[-1]["seconds"] - later[0]["seconds"], 1e-9
    )
    return final.metrics["tracking.joint_error_deg_mean"], curve, rate, seconds


def throughput(model, ref, n_envs: int, rounds: int, chunks: int, agent_config) -> dict:
    """Env steps/s of the CPU training loop and of its environment alone, alternated."""
    chunk_steps = 10
    cfg = TrainConfig(
        backend="cpu",
        n_envs=n_envs,
        warm_start="none",
        evaluations=0,
        chunk_steps=chunk_steps,
        agent_config=agent_config,
    )
    trainer = make_trainer(model, [ref], cfg)
    ts = trainer.init()
    env, rng = trainer.env, np.random.default_rng(0)
    ts, _ = trainer.run_chunk(ts)  # compiles the acting and learning parts
    jax.block_until_ready(ts.agent)
    env_rates, train_rates = [], []
    state = ts.env
    for _ in range(rounds):
        steps = chunks * chunk_steps
        start = time.perf_counter()
        for _ in range(steps):
            state, _ = env.step(state, rng.uniform(0.0, 1.0, (n_envs, env.act_dim)))
        env_rates.append(steps * n_envs / (time.perf_counter() - start))
        start = time.perf_counter()
        for _ in range(chunks):
            ts, _ = trainer.run_chunk(ts)
        jax.block_until_ready(ts.agent)
        train_rates.append(steps * n_envs / (time.perf_counter() - start))
    env_rate, train_rate = float(np.median(env_rates)), float(np.median(train_rates))
    return {
        "n_envs": n_envs,
        "env_steps_per_s": round(env_rate, 1),
        "train_steps_per_s": round(train_rate, 1),
        "env_steps_per_s_by_round": [round(x, 1) for x in env_rates],
        "train_steps_per_s_by_round": [round(x, 1) for x in train_rates],
        "train_vs_env_steps_ratio": round(train_rate / env_rate, 3),
        "target_ratio": 0.5,
    }


FROM_CONTROLLER = {
    "ours": ("flow", "adversarial"),
    "gaussian": ("gaussian", "adversarial"),
    "ppo": ("ppo", "deepmimic"),
}


def demo_walk():
    """MyoFullBody (as shipped) and the demo walk retargeted at 50 Hz, as `msconvert amass`
    makes them."""
    from msconvert.datasets.amass import read_amass
    from msconvert.datasets.demo import walking, write_smplh_npz
    from msconvert.emulator.model import load_model
    from msconvert.emulator.retarget import RetargetConfig, retarget

    model = load_model()
    with tempfile.TemporaryDirectory() as tmp:
        path = write_smplh_npz(Path(tmp, "walking_poses.npz"), *walking())
        motion = read_amass(path, relpath=path.name, clip_id="walking")
    return model, retarget(motion, model, RetargetConfig(fps=50.0))


def from_controller(steps: int, seeds: list[int], envs: int | None, say) -> dict:
    """Each agent from the controller's warm start, `steps` env steps, every seed: the exported
    policy's emulation with the assist off, and the warm start's (the curve's first evaluation)."""
    from msconvert.convert.pipeline import PipelineOptions

    model, ref = demo_walk()
    out: dict[str, dict] = {}
    for run, (agent, reward) in FROM_CONTROLLER.items():
        rows = []
        for seed in seeds:
            options = PipelineOptions(preset="demo", agent=agent, reward=reward, seed=seed)
            cfg = dataclasses.replace(
                options.train_config(),
                budget_steps=steps,
                budget_minutes=None,  # equal env steps, whatever each agent's speed
                n_envs=envs or options.train_config().n_envs,
            )
            trainer = make_trainer(model, [ref], cfg)
            start = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                policy = train(trainer, Path(tmp, "ckpt"))
            seconds = time.perf_counter() - start
            off = emulate(
                trainer.env, trainer.agent, *policy.params, cfg.agent_config, assist_scale=0.0
            ).metrics
            first = next(r for r in policy.curve if "eval_score" in r)
            row = {
                "seed": seed,
                "off_fraction_tracked": off["tracking.fraction_tracked"],
                "off_joint_error_deg": off["tracking.joint_error_deg_mean"],
                "warm_off_fraction_tracked": first.get("eval_off_fraction_tracked", float("nan")),
                "warm_off_joint_error_deg": first.get("eval_off_joint_error_deg", float("nan")),
                "exported_assist_scale": float(policy.assist_scale),
                "seconds": seconds,
            }
            rows.append(row)
            say(
                f"{run:9s} seed {seed}: assist off, tracked {row['off_fraction_tracked']:.3f} at "
                f"{row['off_joint_error_deg']:.2f} deg (warm start "
                f"{row['warm_off_fraction_tracked']:.3f} at {row['warm_off_joint_error_deg']:.2f}"
                f" deg), {seconds / 60:.1f} min"
            )
        out[run] = {
            "off_fraction_tracked_median": float(
                np.median([r["off_fraction_tracked"] for r in rows])
            ),
            "off_joint_error_deg_median": float(
                np.median([r["off_joint_error_deg"] for r in rows])
            ),
            "runs": rows,
        }
    return {
        "task": "MyoFullBody, demo walk (4 s, 50 Hz)",
        "env_steps_per_run": steps,
        "seeds": seeds,
        "warm_start": "DAgger from the tracking controller, residual (demo preset)",
        **out,
    }


def mean_curve(curves: list[list[dict]]) -> list[dict]:
    """Seed-averaged training curve (the runs log at the same env-step counts)."""
    n = min(len(c) for c in curves)
    return [
        {
            "env_steps": curves[0][i]["env_steps"],
            "seconds": float(np.mean([c[i]["seconds"] for c in curves])),
            "joint_error_deg": float(np.mean([c[i]["joint_error_deg"] for c in curves])),
        }
        for i in range(n)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the arm, 8k env steps per run")
    parser.add_argument("--json", action="store_true", help="only the JSON summary")
    parser.add_argument("--task", choices=("arm", "myofullbody"), default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 for every run")
    parser.add_argument("--png", default="bench_out/learning.png")
    parser.add_argument("--throughput", action="store_true", help="training vs env-only speed")
    parser.add_argument(
        "--envs", type=int, default=PRESETS["cpu"].n_envs, help="--throughput: environments"
    )
    parser.add_argument("--rounds", type=int, default=3, help="--throughput: alternations")
    parser.add_argument("--batch", type=int, default=None, help="--throughput: learner batch")
    parser.add_argument(
        "--from-controller", action="store_true", help="issue 14's comparison on the demo walk"
    )
    args = parser.parse_args()
    say = (lambda *a: None) if args.json else print
    if args.from_controller:
        seeds = list(range(args.seeds))
        envs = None if args.envs == PRESETS["cpu"].n_envs else args.envs
        row = from_controller(args.steps or 6000, seeds, envs, lambda *a: print(*a, flush=True))
        print(json.dumps({"machine": _machine(), **row}))
        return
    name = args.task or ("arm" if args.quick else "myofullbody")
    if args.throughput:
        model, ref, label = task(name)
        # The cpu preset's agent: flow at its defaults, the preset's replay, updates from the
        # first step (a warm-up without updates would flatter the training rate).
        agent = flow.Config(replay_size=PRESETS["cpu"].replay_size, warmup_steps=0)
        if args.batch:
            agent = dataclasses.replace(agent, batch_size=args.batch)
        row = throughput(model, ref, args.envs, args.rounds, 6, agent)
        say(
            f"{label}, {args.envs} envs: env alone {row['env_steps_per_s']} env steps/s, "
            f"training {row['train_steps_per_s']}: ratio {row['train_vs_env_steps_ratio']}"
        )
        print(json.dumps({"task": label, "machine": _machine(), **row}))
        return
    steps = args.steps or (8_000 if args.quick else 200_000)
    seeds = list(range(args.seeds))
    model, ref, label = task(name)
    acts, excs = warm_start_solutions([ref], model)
    results: dict[str, dict] = {}
    for run, (agent, reward) in RUNS.items():
        for warm in (False, True):
            key = f"{run}{'_warm' if warm else ''}"
            finals, curves, rates, secs = [], [], [], []
            for seed in seeds:
                final, curve, rate, seconds = run_one(
                    model, ref, acts, excs, agent, reward, warm, steps, seed
                )
                finals.append(final), curves.append(curve), rates.append(rate), secs.append(seconds)
                say(
                    f"{key:16s} {agent}+{reward} seed {seed}: final joint error {final:6.2f} deg, "
                    f"{rate:6.0f} env steps/s after compile, {seconds:5.1f} s"
                )
            results[key] = {
                # The headline is the median over seeds: one emulation that loses the clip
                # (tens of degrees) would otherwise decide the mean. Both are reported.
                "final": float(np.median(finals)),
                "final_mean": float(np.mean(finals)),
                "finals": finals,
                "curve": mean_curve(curves),
                "steps_per_s": float(np.median(rates)),
                "seconds": float(np.sum(secs)),
            }
            say(
                f"{key:16s} median {results[key]['final']:6.2f} deg, "
                f"mean {results[key]['final_mean']:6.2f} deg over seeds {seeds}"
            )
    _plot(results, args.png, f"{label}, mean of {len(seeds)} seeds")
    ppo_final = results["ppo"]["final"]
    # The target "ours reaches PPO's final error in at most a third of the env steps", measured
    # the same way as everything else: ours trained on a third of the budget, same seeds, final
    # emulation. (A crossing of training curves would mislead: training episodes start on the
    # reference, so their first frames look well tracked before anything is learned.)
    third = [
        run_one(model, ref, acts, excs, *RUNS["ours"], False, steps // 3, seed)[0] for seed in seeds
    ]
    say(f"ours, a third of the budget ({steps // 3} steps): {[round(x, 2) for x in third]} deg")
    summary = {
        "task": label,
        "env_steps_per_run": steps,
        "seeds": seeds,
        "statistic": "median over seeds of the final emulation's mean joint error",
        "ours_final_joint_error_deg": round(results["ours"]["final"], 3),
        "gaussian_final_joint_error_deg": round(results["gaussian"]["final"], 3),
        "deepmimic_final_joint_error_deg": round(results["deepmimic"]["final"], 3),
        "ppo_final_joint_error_deg": round(ppo_final, 3),
        "ours_steps_per_s": round(results["ours"]["steps_per_s"], 1),
        "final_joint_error_deg_by_seed": {
            k: [round(x, 3) for x in r["finals"]] for k, r in results.items()
        },
        "final_joint_error_deg_mean": {k: round(r["final_mean"], 3) for k, r in results.items()},
        "ours_third_budget_final_joint_error_deg": round(float(np.median(third)), 3),
        "ours_third_budget_by_seed": [round(x, 3) for x in third],
        "ours_reaches_ppo_final_in_a_third": bool(np.median(third) <= ppo_final),
        "png": args.png,
    }
    print(json.dumps(summary))


def _machine() -> str:
    import os
    import platform

    return f"{platform.machine()} {os.cpu_count()} cores, jax {jax.default_backend()}"


def _plot(results: dict, path: str, label: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.5), dpi=110)
    FigureCanvasAgg(fig)
    ax_steps, ax_time = fig.subplots(1, 2)
    for key, r in results.items():
        steps = [c["env_steps"] for c in r["curve"]]
        secs = [c["seconds"] for c in r["curve"]]
        err = [c["joint_error_deg"] for c in r["curve"]]
        style = "--" if key.endswith("_warm") else "-"
        ax_steps.plot(steps, err, style, label=key)
        ax_time.plot(secs, err, style, label=key)
    for ax, xl in ((ax_steps, "environment steps"), (ax_time, "wall time (s)")):
        ax.set_xlabel(xl)
        ax.set_ylabel("training joint-angle error (deg)")
        ax.grid(alpha=0.3)
    ax_steps.legend(fontsize=8)
    fig.suptitle(f"Tracking error while training: {label}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


if __name__ == "__main__":
    main()
