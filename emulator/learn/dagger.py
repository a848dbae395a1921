"""The warm start by DAgger from the tracking controller (docs/method.md#warm-start).

Behaviour cloning at reference states teaches a policy what to do where the reference is, and
nothing about the states it drifts into: the clone falls within a second. The tracking
controller (`emulator/muscles/track.py`) can be asked what to do at any state, so the policy
learns from the states it reaches itself (Ross et al. 2011):

    data = {}
    for round r = 0 .. R-1:
        β = mix^r                                  round 0: the controller alone drives
        roll out the environments for S control steps, each step's action the controller's
            with probability β, else the policy's
        label every visited state with the controller's excitations; data += (obs, label)
        fit the policy to all of data                behaviour cloning (the agent's own)

The environments reset as in training (auto-reset at a random clip and frame). Each clip has its
own controller; the excitations it commands are the labels, in the policy's action space, and,
where the action holds a root assist, the root assist it applies (in units of the assist limit).
A residual policy (`TrainConfig.residual`) adds its action to the controller's own run over the
clip (`controller_run`), and is taught the label minus that run's action at the same frame.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from msconvert.emulator.backends import make_backend
from msconvert.emulator.learn.agents.common import norm_apply, norm_update
from msconvert.emulator.learn.env import Env, applied_action
from msconvert.emulator.muscles.track import Controller


@dataclass(frozen=True)
class DaggerConfig:
    """The warm start's rounds; the defaults fit the demo budget (minutes per clip)."""

    rounds: int = 4
    steps: int = 40  # control steps per round, every environment
    mix: float = 0.5  # the controller drives a step with probability mix^round
    # The controller answers on the CPU in tens of ms a state (MyoFullBody): with thousands of
    # environments only the first `labelled_envs` are labelled (and mixed); the rest run the
    # policy alone. None: all.
    labelled_envs: int | None = None
    # Gradient steps of the fit after each round (None: the trainer's bc_steps); each round's
    # fit continues from the last one's networks.
    fit_steps: int | None = None
    # Gaussian noise (std, in action units) on the controller's executed actions, never on its
    # labels (DART, Laskey et al. 2017): the rollouts then visit the states around its own
    # trajectory, where the student must learn the controller's feedback.
    noise: float = 0.0

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.steps < 1 or not 0.0 <= self.mix <= 1.0:
            raise ValueError("dagger rounds and steps must be >= 1 and mix within [0, 1]")
        if self.labelled_envs is not None and self.labelled_envs < 1:
            raise ValueError("dagger labelled_envs must be >= 1 (or None: all)")
        if self.fit_steps is not None and self.fit_steps < 1:
            raise ValueError("dagger fit_steps must be >= 1 (or None: bc_steps)")
        if not self.noise >= 0.0:
            raise ValueError("dagger noise must be >= 0")


def labels(
    teachers: Sequence[Controller],
    env: Env,
    clip: np.ndarray,
    frame: np.ndarray,
    qpos: np.ndarray,
    qvel: np.ndarray,
    act: np.ndarray,
) -> np.ndarray:
    """The controllers' actions (n, act_dim) in [-1, 1] at a batch of states: a = 2u − 1 for
    the excitations, then (with an assist) a = ∛(root assist / the env's assist limit)."""
    nu = env.model.nu
    out = np.empty((len(clip), env.act_dim), np.float32)
    for i, (c, f) in enumerate(zip(clip, frame, strict=True)):
        command = teachers[int(c)].command(int(f), qpos[i], qvel[i], act[i])
        out[i, :nu] = 2.0 * command.excitation - 1.0
        if env.act_dim > nu:
            root = command.root_force[env.layout.root_dofs] / env.assist_limit
            out[i, nu:] = np.cbrt(np.clip(root, -1.0, 1.0))
    return out


class ControllerRun(NamedTuple):
    """One clip's controller driving the environment from the first frame to the end: per
    frame, the state it was in and the action it gave there."""

    action: np.ndarray  # (T, act_dim)
    qpos: np.ndarray  # (T, nq)
    qvel: np.ndarray  # (T, nv)
    act: np.ndarray  # (T, na)
    tracked: int  # frames before a fall (T without one)


def controller_run(
    teachers: Sequence[Controller], env: Env, clips: Sequence[int] | None = None
) -> list[ControllerRun]:
    """Each clip's controller driving one C-engine copy of the environment from the clip's
    first frame to its end, for `clips` (default: all). After a fall the last action is held
    and the states are the reference's with the last activations. The feedforward of a residual
    policy: the C engine is deterministic, so a policy whose residual is zero replays this very
    run."""
    env = env.unwrapped
    physics = make_backend("cpu", env.model, 1, env.frame_skip, nthread=1)
    runs = []
    try:
        one = env.with_physics(physics)
        for c in range(len(teachers)) if clips is None else clips:
            length = int(env.refs.length[c])
            action = np.zeros((length, env.act_dim), np.float32)
            qpos, qvel = env.refs.qpos[c, :length].copy(), env.refs.qvel[c, :length].copy()
            act = np.zeros((length, env.model.na))
            state, frames = one.reset_at(c, 0), length
            for f in range(length):
                qpos[f], qvel[f], act[f] = physics.arrays_one(state.sim)
                if f == length - 1:
                    break
                action[f] = labels(
                    [teachers[c]],
                    one,
                    np.array([0]),
                    np.array([f]),
                    qpos[f : f + 1],
                    qvel[f : f + 1],
                    act[f : f + 1],
                )[0]
                state, info = one.step(state, action[f])
                if bool(info.terminated):
                    frames = f + 2
                    break
            action[frames - 1 :] = action[frames - 2]
            qpos[frames:] = env.refs.qpos[c, frames:length]
            qvel[frames:] = env.refs.qvel[c, frames:length]
            act[frames:] = act[frames - 1]
            runs.append(ControllerRun(action, qpos, qvel, act, frames))
    finally:
        physics.close()
    return runs


def dagger(
    trainer: Any, ts: Any, teachers: Sequence[Controller], config: DaggerConfig, bc_steps: int
) -> tuple[Any, dict[str, float]]:
    """ts with its policy fitted by DAgger from `teachers` (one controller per clip), and what
    each round saw: `dagger_r{r}_terminated` (the share of steps that ended in a fall) and the
    final fit's `bc_mse_before`/`bc_mse_after`."""
    env, agent, acfg = trainer.env, trainer.agent, trainer.config.agent_config
    physics = env.physics  # the batch's backend: host arrays of its states
    act_jit = jax.jit(lambda a, norm, obs, k: agent.act(a, norm_apply(norm, obs), k, True, acfg)[0])
    key, k_reset = jax.random.split(ts.key)
    state = env.reset(k_reset)
    norm, agent_state = ts.obs_norm, ts.agent
    rng = np.random.default_rng(int(jax.random.randint(key, (), 0, 2**31 - 1)))
    obs_rows: list[np.ndarray] = []
    label_rows: list[np.ndarray] = []
    report: dict[str, float] = {}
    seconds = {"label": 0.0, "fit": 0.0, "rollout": 0.0}
    n = min(config.labelled_envs or trainer.config.n_envs, trainer.config.n_envs)
    task = env.unwrapped.task
    zero = np.zeros((trainer.config.n_envs, env.act_dim), np.float32)
    for r in range(config.rounds):
        beta = config.mix**r
        falls = 0
        for _ in range(config.steps):
            qpos, qvel, act = (x[:n] for x in physics.arrays(state.sim))
            clip, frame = np.asarray(state.clip)[:n], np.asarray(state.frame)[:n]
            t0 = time.perf_counter()
            label = labels(teachers, env.unwrapped, clip, frame, qpos, qvel, act)
            t1 = time.perf_counter()
            obs = np.asarray(state.obs)
            obs_rows.append(obs[:n])
            # A residual policy learns what the controller does beyond its own run's action.
            feedforward = np.asarray(applied_action(task, state.clip, state.frame, zero))
            label_rows.append(np.clip(label - feedforward[:n], -1.0, 1.0))
            action = zero
            if beta < 1.0 or n < len(obs):
                key, k_act = jax.random.split(key)
                action = act_jit(agent_state, norm, jnp.asarray(obs), k_act)
            action = np.array(applied_action(task, state.clip, state.frame, action))
            teach = rng.random(n) < beta
            executed = label
            if config.noise > 0.0:
                jitter = config.noise * rng.standard_normal(label.shape).astype(np.float32)
                executed = np.clip(label + jitter, -1.0, 1.0)
            action[:n][teach] = executed[teach]
            state, info = env.step(state, jnp.asarray(action))
            falls += int(np.asarray(info.terminated).sum())
            seconds["label"] += t1 - t0
            seconds["rollout"] += time.perf_counter() - t1
        report[f"dagger_r{r}_terminated"] = falls / (config.steps * trainer.config.n_envs)
        # The round's labels: for a residual policy, what the controller adds to its own run's
        # action (zero where the controller alone drives from the run's states).
        this_round = np.square(label_rows[-config.steps :])
        report[f"dagger_r{r}_label_rms"] = float(np.sqrt(np.mean(this_round)))
        raw = jnp.asarray(np.concatenate(obs_rows))
        target = jnp.asarray(np.concatenate(label_rows))
        norm = norm_update(norm, raw[-config.steps * n :])
        key, k_bc = jax.random.split(key)
        t0 = time.perf_counter()
        agent_state, fit = agent.behaviour_clone(
            agent_state,
            norm_apply(norm, raw),
            target,
            k_bc,
            acfg,
            config.fit_steps or bc_steps,
        )
        fit = {k: float(v) for k, v in fit.items()}  # waits for the fit
        seconds["fit"] += time.perf_counter() - t0
    report.update({f"bc_{k}": float(v) for k, v in fit.items()})
    # What the fitted policy does on the data (the agent's deterministic action: for the flow
    # agent, the flow's transport of the source mean, which the fit's MSE does not cover).
    acted = act_jit(agent_state, norm, raw, key)
    report["dagger_action_mse"] = float(jnp.mean((acted - target) ** 2))
    nu = env.unwrapped.model.nu
    if target.shape[1] > nu:  # the root assist's six components, which the mean above hides
        report["dagger_assist_action_mse"] = float(jnp.mean((acted[:, nu:] - target[:, nu:]) ** 2))
        report["dagger_assist_label_rms"] = float(jnp.sqrt(jnp.mean(target[:, nu:] ** 2)))
    report["dagger_label_rms"] = float(jnp.sqrt(jnp.mean(target**2)))
    report["dagger_labels"] = float(len(target))
    report.update({f"dagger_{k}_s": v for k, v in seconds.items()})
    return ts._replace(agent=agent_state, obs_norm=norm, key=key), report
