"""The trainer: imitation environment + tracking reward + agent, run a chunk of steps at a time.

One control step of the loop (docs/method.md#training):
    obs  = normalize(raw observation)            running mean/std, part of the saved state
    a    = agent.act(obs)                        in [-1, 1]^M; excitation u = 0.5 + 0.5 a
                                                 (+ 6 root-assist components, scaled by s)
    env  = env.step(a)                           auto-resets finished environments
    r    = task reward(Δ) · exp(−effort_weight·mean(u²) − assist_weight·(applied assist, in BW))
           task reward: adversarial (discriminator on the normalized tracking error Δ) or DeepMimic,
           both >= 0; the charges discount it rather than subtract, so r >= 0 and a step
           survived never pays less than a fall
    agent.learn(transition)                      replay + updates, or PPO rollout + epochs
    discriminator update on Δ                    (adversarial reward only)

On the MJX backend a whole chunk of steps is one jitted `lax.scan`; on the C engine the physics
runs outside JAX and everything else is jitted. The training state (environments, agent, reward,
normalizer, key, counters) is one pytree, checkpointed with Orbax, so a killed run resumes from
its last checkpoint and, with a fixed seed, continues as the uninterrupted run would have.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from msconvert import __version__
from msconvert.emulator.learn import checkpoint, compiling
from msconvert.emulator.learn.agents.common import (
    RunningNorm,
    Transition,
    norm_apply,
    norm_init,
    norm_update,
)
from msconvert.emulator.learn.dagger import DaggerConfig, controller_run, dagger
from msconvert.emulator.learn.env import (
    EnvConfig,
    applied_action,
    make_env,
    make_reference_set,
    sample_reset,
    training_env,
)
from msconvert.emulator.learn.reward import (
    AdversarialConfig,
    adversarial_init,
    adversarial_reward,
    adversarial_update,
    deepmimic_reward,
)
from msconvert.emulator.muscles.solutions import SolutionsConfig, teacher_cost
from msconvert.emulator.muscles.static_opt import MuscleCost, root_chain
from msconvert.emulator.muscles.track import TEACHER, Controller, TrackError
from msconvert.emulator.retarget.reference import Reference

AGENTS = ("flow", "gaussian", "ppo")
REWARDS = ("adversarial", "deepmimic")
# track: DAgger from the tracking controller; static-opt: behaviour cloning of static
# optimization's excitations at reference states; none: random networks.
WARM_STARTS = ("track", "static-opt", "none")


class TrainError(ValueError):
    """Training cannot start: bad settings, or a checkpoint that does not fit them."""


def agent_module(name: str) -> ModuleType:
    """The module implementing an agent (`emulator/agents/<name>.py`)."""
    if name not in AGENTS:
        raise TrainError(f"unknown agent {name!r} (agents: {', '.join(AGENTS)})")
    return importlib.import_module(f"msconvert.emulator.learn.agents.{name}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; saved in every checkpoint."""

    agent: str = "flow"
    reward: str = "adversarial"
    warm_start: str = "track"  # one of WARM_STARTS
    backend: str = "auto"  # 'mjx', 'cpu' or 'auto' (mjx on an accelerator, else cpu)
    n_envs: int = 16
    budget_steps: int = 20_000  # environment steps, summed over environments
    budget_minutes: float | None = None  # wall-time budget; whichever comes first
    seed: int = 0
    chunk_steps: int = 25  # control steps per jitted chunk (and per progress update)
    checkpoint_every_s: float = 120.0
    # Policy selection: this many deterministic emulations of the clips, spread over the budget
    # (the last at the end); the exported policy is the snapshot that emulated best. Off-policy
    # snapshots swing (a 2° policy can emulate at 75° a few hundred updates later), and the
    # catalog records the emulation of the exported policy. 0: export the last snapshot.
    evaluations: int = 8
    eval_clips: int = 8  # at most this many clips per evaluation (spread over the clip list)
    bc_steps: int = 300  # warm-start gradient steps
    bc_resets: int = 16  # static-opt warm start's data: this many resets of all environments
    dagger: DaggerConfig = field(default_factory=DaggerConfig)  # the track warm start's rounds
    env: EnvConfig = field(default_factory=EnvConfig)
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)
    agent_config: Any = None  # the agent module's Config; None = its defaults
    # With a root assist in the action (env.assist), its scale s falls linearly from 1 to 0
    # over this fraction of the budget; the rest trains without assist.
    assist_anneal: float = 0.75
    # With the track warm start, the policy acts as a residual: its action is added to the
    # tracking controller's run over the clip (`dagger.controller_run`), so a policy that has
    # learned nothing beyond it replays the controller's tracking, and DAgger teaches feedback.
    residual: bool = True
    # Which distinct muscle solution's controller teaches (`muscles.solutions`; 0: the single
    # answer, Σ act²), and how solutions are made; the policy of solution j > 0 is distilled from
    # a controller with that solution's seeded muscle weights (`--method rl --solutions K`).
    solution: int = 0
    solutions: SolutionsConfig = field(default_factory=SolutionsConfig)

    def resolved(self) -> TrainConfig:
        """A copy with the agent's default config filled in and the choices checked."""
        if isinstance(self.warm_start, bool):  # checkpoints of msconvert <= 0.2 said True/False
            return dataclasses.replace(
                self, warm_start="static-opt" if self.warm_start else "none"
            ).resolved()
        if self.warm_start not in WARM_STARTS:
            raise TrainError(
                f"unknown warm start {self.warm_start!r} (warm starts: {', '.join(WARM_STARTS)})"
            )
        if self.reward not in REWARDS:
            raise TrainError(f"unknown reward {self.reward!r} (rewards: {', '.join(REWARDS)})")
        if self.backend not in ("auto", "mjx", "cpu"):
            raise TrainError(f"unknown backend {self.backend!r} (auto, mjx, cpu)")
        if self.n_envs < 1 or self.budget_steps < 1 or self.chunk_steps < 1:
            raise TrainError("n_envs, budget_steps and chunk_steps must be positive")
        if self.evaluations < 0 or self.eval_clips < 1:
            raise TrainError("evaluations must be >= 0 and eval_clips >= 1")
        if not 0.0 < self.assist_anneal <= 1.0:
            raise TrainError("assist_anneal must be within (0, 1] (a fraction of the budget)")
        solution = self.solution
        if isinstance(solution, bool) or not isinstance(solution, int) or solution < 0:
            raise TrainError(f"solution must be a whole number >= 0, not {solution!r}")
        if solution > 0 and self.warm_start != "track":
            raise TrainError(
                f"solution {solution} is taught by its tracking controller: it needs the track "
                f"warm start, not {self.warm_start!r}"
            )
        module = agent_module(self.agent)
        cfg = self.agent_config if self.agent_config is not None else module.Config()
        backend = self.backend
        if backend == "auto":
            backend = "mjx" if jax.default_backend() != "cpu" else "cpu"
        residual = self.residual and self.warm_start == "track"  # no controller run without it
        return dataclasses.replace(self, agent_config=cfg, backend=backend, residual=residual)

    def to_json(self) -> dict[str, Any]:
        return _jsonable(dataclasses.asdict(self))


def _graph_settings(config: TrainConfig) -> TrainConfig:
    """The settings a training chunk's graph depends on: budget, seed, checkpointing, policy
    selection and warm start blanked out."""
    return dataclasses.replace(
        config,
        warm_start="none",
        dagger=DaggerConfig(),
        budget_steps=1,
        budget_minutes=None,
        seed=0,
        checkpoint_every_s=0.0,
        evaluations=0,
        eval_clips=1,
        bc_steps=0,
        bc_resets=0,
        solution=0,
        solutions=SolutionsConfig(),
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


class BestPolicy(NamedTuple):
    """The snapshot that emulated best so far (what acting needs, and its normalizer); when it
    was taken is in the curve's evaluation rows."""

    policy: Any  # the agent's policy_params
    obs_norm: RunningNorm
    score: jax.Array  # selection score (`selection_score`); +inf until a snapshot is evaluated
    assist_scale: jax.Array  # the root-assist scale it is emulated at (0: none)


class TrainState(NamedTuple):
    """The whole training state: one pytree, checkpointed as is."""

    env: Any
    agent: Any
    reward: Any
    obs_norm: RunningNorm
    key: jax.Array
    steps: jax.Array  # control steps done (each is n_envs environment steps)
    best: BestPolicy
    assist_scale: jax.Array  # the scale of the action's root assist now (0 without one)


LOST_FRAME_DEG = 90.0  # what a frame after a fall counts in the selection score


ASSIST_DEG_PER_PCT_BW = 1.0  # what each % of body weight of mean root assist costs a snapshot


def selection_score(metrics: Mapping[str, float]) -> float:
    """Mean joint error (deg) of an emulation with every frame lost to a fall counted as 90°,
    so a policy that falls early never wins by tracking its few frames well; an emulation with
    a root assist is charged 1° per % of body weight of its mean assist force, so the assist
    that holds a body up never passes for tracking."""
    tracked = float(metrics["tracking.fraction_tracked"])
    error = float(metrics["tracking.joint_error_deg_mean"])
    if not np.isfinite(error):
        return float("inf")
    assist = float(metrics.get("policy.assist_force_pct_bw", 0.0))
    return tracked * error + (1.0 - tracked) * LOST_FRAME_DEG + ASSIST_DEG_PER_PCT_BW * assist


@dataclass
class Trainer:
    """A training run's static parts and its jitted functions."""

    config: TrainConfig
    env: Any
    agent: ModuleType
    clip_ids: tuple[str, ...]
    model_sha256: str
    warm_targets: np.ndarray | None  # (C, T, nu) static-optimization excitations, or None
    teachers: list[Controller] | None = None  # the track warm start's controllers, per clip
    _eval_env: Any = field(default=None, init=False, repr=False)  # C-engine env for `evaluate`
    # MJX: the jitted chunk `(ts, task) -> (ts, metrics)`, shared by every trainer of the same
    # model and settings in the process; None on the C engine.
    chunk_fn: Any = field(default=None, init=False, repr=False)

    @functools.cached_property
    def graph(self) -> tuple:
        """What this trainer's compiled functions depend on (model, key bodies, settings and
        physics; never the clips or the seed): trainers with the same graph share them."""
        return (self.env.unwrapped.signature, repr(_graph_settings(self.config)))

    def __post_init__(self) -> None:
        cfg = self.config
        agent, acfg, env = self.agent, cfg.agent_config, self.env
        effort_weight = float(cfg.env.effort_weight)
        assist_weight = float(cfg.env.assist_weight)
        adversarial = cfg.reward == "adversarial"
        rcfg = cfg.adversarial
        nu = env.unwrapped.model.nu

        def act_only(
            agent_state, obs_norm, env_state, key, assist_scale, task
        ) -> tuple[jax.Array, ...]:
            # Returns only new values: returning the whole state would copy the replay.
            key, k_act = jax.random.split(key)
            obs = norm_apply(obs_norm, env_state.obs)
            action, extras = agent.act(agent_state, obs, k_act, False, acfg)
            applied = applied_action(task, env_state.clip, env_state.frame, action)
            return key, action, extras, obs, scaled_assist(applied, nu, assist_scale)

        def act_part(
            ts: TrainState, task: Any
        ) -> tuple[TrainState, jax.Array, dict, jax.Array, jax.Array]:
            key, action, extras, obs, applied = act_only(
                ts.agent, ts.obs_norm, _task_view(ts.env), ts.key, ts.assist_scale, task
            )
            return ts._replace(key=key), action, extras, obs, applied

        def learn_part(
            ts: TrainState, obs, action, extras, env_state, info
        ) -> tuple[TrainState, dict]:
            key, k_learn, k_reward = jax.random.split(ts.key, 3)
            reward_state = ts.reward
            metrics: dict[str, jax.Array] = {}
            if adversarial:
                task = adversarial_reward(reward_state, info.error, rcfg)
                reward_state, rm = adversarial_update(reward_state, info.error, k_reward, rcfg)
                metrics.update(rm)
            else:
                task = deepmimic_reward(info)
            reward = charged_reward(task, info, effort_weight, assist_weight)
            batch = Transition(
                obs=obs,
                action=action,
                reward=reward,
                next_obs=norm_apply(ts.obs_norm, info.next_obs),
                terminated=info.terminated,
                truncated=info.truncated,
                extras=extras,
            )
            agent_state, am = agent.learn(ts.agent, batch, k_learn, acfg)
            metrics.update(am)
            metrics.update(
                reward=reward.mean(),
                task_reward=task.mean(),
                joint_error_deg=jnp.rad2deg(info.joint_error_rad.mean()),
                body_error_mm=1000.0 * info.body_error_m.mean(),
                effort=info.effort.mean(),
                terminated=info.terminated.mean(),
                diverged=info.diverged.mean(),
                assist_force_pct_bw=100.0 * jnp.mean(info.assist_force_bw),
            )
            new = TrainState(
                env=env_state,
                agent=agent_state,
                reward=reward_state,
                obs_norm=norm_update(ts.obs_norm, info.next_obs),
                key=key,
                steps=ts.steps + 1,
                best=ts.best,
                assist_scale=ts.assist_scale,
            )
            return new, metrics

        n = cfg.chunk_steps
        # Compiled once per model and settings in a process: the clips' references are an
        # argument (`task`), and every trainer of the same graph shares the jitted functions.
        graph = self.graph
        if cfg.backend == "mjx":

            def one(ts: TrainState, task: Any) -> tuple[TrainState, dict]:
                ts, action, extras, obs, applied = act_part(ts, task)
                env_state, info = env.step(ts.env, applied, task)
                return learn_part(ts, obs, action, extras, env_state, info)

            def chunk(ts: TrainState, task: Any) -> tuple[TrainState, dict]:
                ts, metrics = jax.lax.scan(lambda ts, _: one(ts, task), ts, None, length=n)
                return ts, jax.tree.map(jnp.mean, metrics)

            # Donated: the replay is updated in place. Kept on disk as well as in XLA's cache:
            # a new process then skips tracing and lowering the chunk too.
            jitted = compiling.shared(
                ("train chunk", graph),
                lambda: compiling.Persisted(
                    "train_chunk",
                    ("train chunk", graph),
                    jax.jit(chunk, donate_argnums=0),
                    out_structure=lambda args, names: jax.tree.structure(
                        (args[0], dict.fromkeys(names, 0))
                    ),
                    recorded=lambda structure: list(
                        jax.tree.unflatten(structure, range(structure.num_leaves))[1]
                    ),
                    donate_argnums=(0,),
                ),
            )
            self.chunk_fn = jitted  # (ts, task) -> (ts, metrics)
            self.run_chunk = lambda ts: jitted(ts, env.unwrapped.task)
        else:
            # Donated: the replay (often GBs) is updated in place instead of copied every step.
            act_jit, learn_jit = compiling.shared(
                ("host learner", graph),
                lambda: (jax.jit(act_only), jax.jit(learn_part, donate_argnums=0)),
            )

            def chunk(ts: TrainState) -> tuple[TrainState, dict]:
                # The C engine's state stays in float64 NumPy: it never goes through JAX (which
                # would make it float32) and is put back after each jitted part.
                rows = []
                for _ in range(n):
                    sim = ts.env.sim
                    key, action, extras, obs, applied = act_jit(
                        ts.agent,
                        ts.obs_norm,
                        _task_view(ts.env),
                        ts.key,
                        ts.assist_scale,
                        env.unwrapped.task,
                    )
                    ts = ts._replace(key=key)
                    env_state, info = env.step(ts.env._replace(sim=sim), applied)
                    sim = env_state.sim
                    ts, metrics = learn_jit(
                        ts, obs, action, extras, env_state._replace(sim=None), info
                    )
                    ts = ts._replace(env=ts.env._replace(sim=sim))
                    rows.append(metrics)
                return ts, jax.tree.map(lambda *x: jnp.mean(jnp.stack(x)), *rows)

            self.run_chunk = chunk

    def lower_chunk(self, ts: TrainState) -> jax.stages.Lowered:
        """The MJX training chunk lowered for states like ts, before XLA compiles it (its
        program text, cost analysis, or `.compile()`)."""
        if self.chunk_fn is None:
            raise TrainError("only the MJX backend compiles the training chunk whole")
        return self.chunk_fn.lower(ts, self.env.unwrapped.task)

    def init(self) -> TrainState:
        """A fresh training state from the seed (environments reset, networks initialized)."""
        seed = jnp.asarray(self.config.seed)  # an argument: one compile serves every seed
        fresh_state, keys, learner = self._start_fns
        if self.chunk_fn is not None:  # MJX: the whole start is one compiled call
            return fresh_state(seed, self.env.unwrapped.task)
        k_env, rest = keys(seed)
        env_state = self.env.reset(k_env)
        # The C engine's state stays out of JAX (float64 NumPy, see the chunk).
        return learner(env_state.obs, rest)._replace(env=env_state)

    @functools.cached_property
    def _start_fns(self) -> tuple[Callable, Callable, Callable]:
        """init's parts, jitted: each op run one by one would load its own executable from the
        compilation cache (~160 of them on a warm start). Shared by the trainers of a graph."""
        cfg, env, agent = self.config, self.env, self.agent

        def keys(seed: jax.Array) -> tuple[jax.Array, jax.Array]:
            k_env, k_agent, k_reward, key = jax.random.split(jax.random.PRNGKey(seed), 4)
            return k_env, jnp.stack([k_agent, k_reward, key])

        def learner(obs: jax.Array, rest: jax.Array) -> TrainState:  # env: None
            k_agent, k_reward, key = rest
            agent_state = agent.init(
                k_agent, env.obs_dim, env.act_dim, cfg.n_envs, cfg.agent_config
            )
            reward_state = adversarial_init(k_reward, env.error_dim, cfg.adversarial)
            obs_norm = norm_update(norm_init(env.obs_dim), obs)
            best = BestPolicy(
                jax.tree.map(jnp.copy, agent.policy_params(agent_state)),
                jax.tree.map(jnp.copy, obs_norm),
                jnp.asarray(jnp.inf, jnp.float32),
                jnp.zeros((), jnp.float32),
            )
            return TrainState(
                None,
                agent_state,
                reward_state,
                obs_norm,
                key,
                jnp.zeros((), jnp.int32),
                best,
                jnp.asarray(self.assist_scale_at(0), jnp.float32),
            )

        def fresh_state(seed: jax.Array, task: Any) -> TrainState:
            k_env, rest = keys(seed)
            env_state = env.reset(k_env, task)
            return learner(env_state.obs, rest)._replace(env=env_state)

        return compiling.shared(
            ("start", self.graph), lambda: (jax.jit(fresh_state), jax.jit(keys), jax.jit(learner))
        )

    @property
    def assisted(self) -> bool:
        """Whether the action holds a root assist."""
        return bool(self.env.unwrapped.config.assist)

    def assist_scale_at(self, env_steps: int, seconds: float = 0.0) -> float:
        """The root assist's scale at this point of the budget (steps, or time when that is
        further on): 1 falling linearly to 0 at `assist_anneal` of it; 0 without an assist."""
        if not self.assisted:
            return 0.0
        cfg = self.config
        done = env_steps / total_env_steps(cfg)
        if cfg.budget_minutes is not None:
            done = max(done, seconds / (60.0 * cfg.budget_minutes))
        return float(max(0.0, 1.0 - done / cfg.assist_anneal))

    def evaluate(self, ts: TrainState) -> dict[str, float]:
        """Deterministic emulations of (up to eval_clips of) the clips by the current policy:
        their mean joint error, fraction tracked and selection score. With a root assist, at
        the current assist scale and with the assist off (`eval_off_*`); the snapshot's score
        is the better of the two, and `eval_select_scale` the scale it was scored at. Reads ts,
        changes nothing."""
        from msconvert.emulator.learn.emulate import emulate

        if self._eval_env is None:
            env = self.env
            self._eval_env = (
                env
                if env.backend == "cpu"
                else make_env(env.model, env.refs, env.config, backend="cpu")
            )
        n = len(self.clip_ids)
        clips = sorted({int(i) for i in np.linspace(0, n - 1, min(n, self.config.eval_clips))})
        acfg = self.config.agent_config

        def emulations(scale: float | None) -> tuple[dict[str, float], float]:
            runs = [
                emulate(
                    self._eval_env, self.agent, ts.agent, ts.obs_norm, acfg, c, assist_scale=scale
                )
                for c in clips
            ]
            mean = lambda k: float(np.mean([r.metrics[k] for r in runs]))  # noqa: E731
            found = {
                "joint_error_deg": mean("tracking.joint_error_deg_mean"),
                "fraction_tracked": mean("tracking.fraction_tracked"),
            }
            if scale is not None:
                found["assist_force_pct_bw"] = mean("policy.assist_force_pct_bw")
            return found, float(np.mean([selection_score(r.metrics) for r in runs]))

        if not self.assisted:
            found, score = emulations(None)
            return {**{f"eval_{k}": v for k, v in found.items()}, "eval_score": score}
        scale = float(ts.assist_scale)
        found, score = emulations(scale)
        out = {f"eval_{k}": v for k, v in found.items()}
        out.update(eval_assist_scale=scale, eval_score=score, eval_select_scale=scale)
        off, off_score = (found, score) if scale == 0.0 else emulations(0.0)
        out.update({f"eval_off_{k}": v for k, v in off.items() if k != "assist_force_pct_bw"})
        if off_score <= score:
            out.update(eval_score=off_score, eval_select_scale=0.0)
        return out

    def keep_if_best(self, ts: TrainState, found: Mapping[str, float]) -> TrainState:
        """ts with its best snapshot replaced by the current policy if it scored better (an
        evaluation's `eval_score`, at its `eval_select_scale` of the assist)."""
        score = float(found["eval_score"])
        if not score < float(ts.best.score):
            return ts
        best = BestPolicy(
            jax.tree.map(jnp.copy, self.agent.policy_params(ts.agent)),  # training donates ts
            jax.tree.map(jnp.copy, ts.obs_norm),
            jnp.asarray(score, jnp.float32),
            jnp.asarray(found.get("eval_select_scale", 0.0), jnp.float32),
        )
        return ts._replace(best=best)

    def warm_start(self, ts: TrainState) -> tuple[TrainState, dict[str, float]]:
        """DAgger from the tracking controllers, or behaviour cloning of the static-optimization
        excitations at reference states (docs/method.md#warm-start)."""
        if self.teachers is not None:
            cfg = self.config
            return dagger(self, ts, self.teachers, cfg.dagger, cfg.bc_steps)
        if self.warm_targets is None:
            return ts, {}
        cfg = self.config
        key = ts.key
        obs_rows, target_rows = [], []
        norm = ts.obs_norm
        targets = jnp.asarray(self.warm_targets)
        # Reference states drawn uniformly over each clip (not the training resets, which favour
        # the first frames): the clone should fit the whole clip.
        uniform = dataclasses.replace(self.env.config, even_visitation=False)
        no_failures = jnp.zeros(len(self.clip_ids))
        for _ in range(cfg.bc_resets):
            key, k_frames, k_reset = jax.random.split(key, 3)
            clip, frame = sample_reset(self.env.task, uniform, k_frames, no_failures, cfg.n_envs)
            state = self.env.reset_at(clip, frame, k_reset)
            norm = norm_update(norm, state.obs)
            obs_rows.append(state.obs)
            target_rows.append(targets[state.clip, state.frame])
        raw = jnp.concatenate(obs_rows)
        target = jnp.clip(2.0 * jnp.concatenate(target_rows) - 1.0, -1.0, 1.0)
        # Static optimization has no root assist to teach: the clone starts with none.
        target = jnp.pad(target, ((0, 0), (0, self.env.act_dim - target.shape[1])))
        obs = norm_apply(norm, raw)
        key, k_bc = jax.random.split(key)
        agent_state, metrics = self.agent.behaviour_clone(
            ts.agent, obs, target, k_bc, cfg.agent_config, cfg.bc_steps
        )
        ts = ts._replace(agent=agent_state, obs_norm=norm, key=key)
        return ts, {f"bc_{k}": float(v) for k, v in metrics.items()}

    @functools.cached_property
    def feedforward_sha256(self) -> dict[str, str]:
        """Per clip, the SHA-256 of its feedforward table (float32, its frames only); fixed
        for the trainer's life, so hashed once, not at every checkpoint."""
        env = self.env.unwrapped
        table = np.asarray(env.task.feedforward, np.float32)
        return {
            clip: hashlib.sha256(table[c, : int(env.refs.length[c])].tobytes()).hexdigest()
            for c, clip in enumerate(self.clip_ids)
        }

    def meta(self, curve: list[dict[str, float]], seconds: float, ts: TrainState) -> dict[str, Any]:
        env = self.env
        action = "excitation u = 0.5 + 0.5 * a, a in [-1, 1], one per muscle in this order"
        if self.assisted:
            action += (
                "; then 6 root-assist components: generalized forces on the root's DoFs of "
                f"a**3 * {env.config.assist_limit_bw} body weight (N, N m per metre) * "
                "assist_scale"
            )
        if self.config.residual:
            action = (
                "a = clip(policy output + f_t, -1, 1), where f_t is the action of the tracking "
                "controller's run over the clip at frame t (computed again on loading); " + action
            )
        return {
            "config": self.config.to_json(),
            "clip_ids": list(self.clip_ids),
            "model_sha256": self.model_sha256,
            "software_version": __version__,
            "obs_dim": int(env.obs_dim),
            "act_dim": int(env.act_dim),
            "muscles": list(getattr(env, "muscle_names", ())),
            "action": action,
            # The scale of the root assist the exported policy is emulated at (0: none).
            "assist_scale": float(selected(self, ts).assist_scale),
            # What a loaded residual policy's recomputed controller runs must match.
            "feedforward_sha256": self.feedforward_sha256 if self.config.residual else {},
            "seconds": float(seconds),
            "curve": curve,
        }


def make_trainer(
    model: mujoco.MjModel,
    references: Sequence[Reference],
    config: TrainConfig,
    *,
    activations: Sequence[np.ndarray] | None = None,
    excitations: Sequence[np.ndarray] | None = None,
    feet: Mapping[str, list[str]] | None = None,
    muscle_costs: Sequence[MuscleCost | None] | None = None,
) -> Trainer:
    """The trainer for these references (one per clip).

    activations / excitations: the warm start's solutions per clip (the controller's run, or
    static optimization's), (T_c, na) and (T_c, nu); the first seeds the activation at reset,
    the second is the static-opt warm start's target. feet: the track warm start's feet
    (body names per side), for models that no correspondence file describes. muscle_costs:
    the track warm start's controllers' muscle costs per clip when the caller has them (from its
    own `track_solutions`); None: `teacher_cost` of config.solution (controller runs again).
    """
    config = config.resolved()
    if not references:
        raise TrainError("no references to train on")
    if config.env.assist and root_chain(model)[0].size != 6:
        # A fixed (or partial) base has no root to assist: the policy acts with muscles alone,
        # and its saved settings say so.
        config = dataclasses.replace(config, env=dataclasses.replace(config.env, assist=False))
    body_names = references[0].body_names
    # A residual policy's resets take the controller run's activations: its run must start the
    # same whatever the caller passes, or a loaded policy's run would not be the trained one.
    given = None if config.residual else activations
    refs = make_reference_set(references, model, body_names, activations=given)
    # A loaded policy's trainer repeats its clip: one controller and one run per distinct
    # reference, shared by its repeats (a controller answers each query afresh).
    first: dict[int, int] = {}  # id(reference) -> the first clip that holds it
    for c, ref in enumerate(references):
        first.setdefault(id(ref), c)
    clips = sorted(first.values())
    warm, teachers = None, None
    if config.warm_start == "track":

        def teacher(c: int) -> Controller:
            if muscle_costs is not None:
                cost = muscle_costs[c]
            else:  # solution 0: None, Σ act²; else the earlier solutions run again
                cost = teacher_cost(
                    references[c], model, config.solutions, config.solution, feet=feet
                )
            return Controller(references[c], model, TEACHER, feet=feet, muscle_cost=cost)

        try:
            made = {c: teacher(c) for c in clips}
            teachers = [made[first[id(ref)]] for ref in references]
        except TrackError as exc:
            raise TrainError(f"the track warm start cannot run: {exc}") from exc
        if any(abs(t.fps - config.env.control_hz) > 1e-6 for t in teachers):
            raise TrainError("the track warm start needs references at the control rate")
    if config.residual:
        assert teachers is not None  # resolved(): a residual needs the track warm start
        cpu = make_env(model, refs, config.env, backend="cpu")
        done = dict(zip(clips, controller_run(teachers, cpu, clips), strict=True))
        runs = [done[first[id(r)]] for r in references]
        # Resets start where the controller's run was at the frame, so that its feedforward
        # there fits the state.
        refs = refs._replace(
            feedforward=_padded([r.action for r in runs]),
            start_qpos=_padded([r.qpos for r in runs]),
            start_qvel=_padded([r.qvel for r in runs]),
            activation=_padded([r.act for r in runs]),
        )
    env = training_env(make_env(model, refs, config.env, backend=config.backend), config.n_envs)
    if config.warm_start == "static-opt":
        if excitations is None:
            raise TrainError(
                "the static-opt warm start needs static-optimization excitations "
                "(or --warm-start none)"
            )
        warm = _padded(excitations)
    return Trainer(
        config=config,
        env=env,
        agent=agent_module(config.agent),
        clip_ids=tuple(r.clip_id for r in references),
        model_sha256=references[0].model_sha256,
        warm_targets=warm,
        teachers=teachers,
    )


def _padded(rows: Sequence[np.ndarray]) -> np.ndarray:
    """Per-clip (T_c, k) arrays stacked as (C, T, k) float32, each clip's last row repeated."""
    length = max(len(r) for r in rows)
    out = np.empty((len(rows), length, rows[0].shape[1]), np.float32)
    for c, r in enumerate(rows):
        out[c, : len(r)], out[c, len(r) :] = r, r[-1]
    return out


def train(
    trainer: Trainer,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: Callable[[dict[str, float]], None] | None = None,
    initial: Callable[[TrainState], TrainState] | None = None,
) -> checkpoint.Policy:
    """Train within the budget, checkpointing to out_dir; resume from its last checkpoint.

    initial: a fresh run starts from initial(fresh state) instead of the warm start (fine-tuning
    starts from another run's networks, normalizer and discriminator this way).
    """
    cfg = trainer.config
    out_dir = Path(out_dir)
    started = time.perf_counter()
    ts = trainer.init()
    curve: list[dict[str, float]] = []
    seconds_before = 0.0
    last = checkpoint.latest_step(out_dir)
    if last is not None and not resume:
        raise TrainError(f"{out_dir} already holds a checkpoint: pass resume=True (--resume)")
    if last is not None:
        _check_compatible(checkpoint.read_meta(out_dir)[0], trainer)  # before reading arrays
        ts, meta, _ = checkpoint.restore(out_dir, ts)
        curve, seconds_before = list(meta.get("curve", [])), float(meta.get("seconds", 0.0))
    else:
        bc: dict[str, float] = {}
        if initial is not None:
            ts = initial(ts)
        elif cfg.warm_start != "none":
            ts, bc = trainer.warm_start(ts)
        if cfg.evaluations > 0:  # the starting policy is a candidate too (warm start, fine-tune)
            bc.update(trainer.evaluate(ts))
            ts = trainer.keep_if_best(ts, bc)
        if bc:
            curve.append({"env_steps": 0.0, "seconds": time.perf_counter() - started, **bc})

    total_steps = total_env_steps(cfg)
    budget_s = None if cfg.budget_minutes is None else 60.0 * cfg.budget_minutes
    last_save = time.perf_counter()

    def evaluation_due(env_steps: int, seconds: float, last_steps: int, last_s: float) -> bool:
        # The k-th of `evaluations` points of the budget (steps, or time when that is shorter)
        # has been passed since the last evaluation; the end of the budget is always one.
        k = cfg.evaluations
        if k == 0:
            return False
        due = env_steps * k // total_steps > last_steps * k // total_steps
        if budget_s is not None:
            due |= int(seconds * k // budget_s) > int(last_s * k // budget_s)
        return due or env_steps >= total_steps or (budget_s is not None and seconds >= budget_s)

    last_eval_steps, last_eval_s = int(ts.steps) * cfg.n_envs, seconds_before
    with checkpoint.manager(out_dir) as mgr:
        while int(ts.steps) * cfg.n_envs < total_steps:
            elapsed = seconds_before + time.perf_counter() - started
            if budget_s is not None and elapsed >= budget_s:
                break
            scale = trainer.assist_scale_at(int(ts.steps) * cfg.n_envs, elapsed)
            ts = ts._replace(assist_scale=jnp.asarray(scale, jnp.float32))
            ts, metrics = trainer.run_chunk(ts)
            row = {k: float(v) for k, v in metrics.items()}
            env_steps = int(ts.steps) * cfg.n_envs
            row.update(env_steps=float(env_steps))
            if trainer.assisted:
                row.update(assist_scale=scale)
            now = seconds_before + time.perf_counter() - started
            if evaluation_due(env_steps, now, last_eval_steps, last_eval_s):
                found = trainer.evaluate(ts)
                ts = trainer.keep_if_best(ts, found)
                row.update(found)
                last_eval_steps, last_eval_s = env_steps, now
            row.update(seconds=seconds_before + time.perf_counter() - started)
            curve.append(row)
            if progress is not None:
                progress(row)
            if time.perf_counter() - last_save >= cfg.checkpoint_every_s:
                checkpoint.save(
                    mgr, int(ts.steps) * cfg.n_envs, ts, trainer.meta(curve, row["seconds"], ts)
                )
                last_save = time.perf_counter()
        seconds = seconds_before + time.perf_counter() - started
        step = int(ts.steps) * cfg.n_envs
        meta = trainer.meta(curve, seconds, ts)
        if mgr.latest_step() != step:  # not saved already by the last chunk
            checkpoint.save(mgr, step, ts, meta)
    chosen = selected(trainer, ts)
    return checkpoint.Policy(
        checkpoint_dir=str(out_dir),
        step=step,
        meta=meta,
        params=(chosen.agent, chosen.obs_norm),
        curve=curve,
    )


def total_env_steps(config: TrainConfig) -> int:
    """The step budget rounded up to whole chunks: what a run trains."""
    per_chunk = config.n_envs * config.chunk_steps
    return math.ceil(config.budget_steps / per_chunk) * per_chunk


def selected(trainer: Trainer, ts: TrainState) -> TrainState:
    """ts with the policy to export: the best evaluated snapshot's, or the last one's when
    nothing was evaluated (evaluations=0)."""
    if not np.isfinite(float(ts.best.score)):
        return ts
    agent = trainer.agent.with_policy_params(ts.agent, ts.best.policy)
    return ts._replace(agent=agent, obs_norm=ts.best.obs_norm, assist_scale=ts.best.assist_scale)


def _task_view(env_state: Any) -> Any:
    """What acting reads of the environments' state (never the physics, which on the C engine
    stays in float64 NumPy outside JAX)."""
    return env_state._replace(sim=None)


def charged_reward(task: jax.Array, info: Any, effort_weight: float, assist_weight: float):
    """The task reward (>= 0) discounted by the effort and the applied assist's charges.

    A discount, not a subtraction: a charge above the task reward would make every step cost,
    and then ending an episode early (a fall) would raise the return."""
    assist = info.assist_force_bw + info.assist_moment_bwm
    return task * jnp.exp(-effort_weight * info.effort - assist_weight * assist)


def scaled_assist(action: jax.Array, nu: int, scale: jax.Array) -> jax.Array:
    """The action the environment applies: the root assist's components (after the nu
    excitations) times the assist scale; actions without them unchanged."""
    if action.shape[-1] == nu:
        return action
    return action.at[..., nu:].multiply(scale)


def _check_compatible(meta: Mapping[str, Any], trainer: Trainer) -> None:
    """A checkpoint resumes only the run it came from: same config, clips and model."""
    want = trainer.config.to_json()
    got = dict(meta.get("config", {}))
    # Settings added since: a run an older msconvert started resumes at their defaults (its
    # teacher was solution 0, the single answer).
    got.setdefault("solution", 0)
    got.setdefault("solutions", _jsonable(dataclasses.asdict(SolutionsConfig())))
    for budget_key in ("budget_steps", "budget_minutes", "checkpoint_every_s"):
        got.pop(budget_key, None)  # a resumed run may extend its budget
        want = {k: v for k, v in want.items() if k != budget_key}
    if got != want:
        diff = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
        raise TrainError(f"checkpoint was made with other settings ({', '.join(diff)})")
    if list(meta.get("clip_ids", [])) != list(trainer.clip_ids):
        raise TrainError("checkpoint was made for other clips")
    if meta.get("model_sha256") != trainer.model_sha256:
        raise TrainError("checkpoint was made for another model")
