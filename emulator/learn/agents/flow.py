"""Value-guided flow agent (docs/method.md#flow-agent): CrossQ critics, a tanh-Gaussian source
policy, and a velocity field trained by flow matching towards Q-gradient-ascent targets.

Acting: a₀ ~ source(s); N Euler steps x ← x + v(s, x, k/N)/N; clip to [-1, 1]. Exploration comes
from the source's σ carried through the flow; acting needs no critic gradients.

One `learn` call inserts the step's transitions into the device replay and, after warm-up, runs
`updates_per_step` updates, each: critics (CrossQ: batch renormalization, no target network, Q on
the joint batch [(s, a); (s', a')]), source policy (reparameterized min-Q maximization with an
entropy term whose temperature is tuned to a target entropy, SAC-style, so σ never collapses to
zero early), flow (K steps of gradient ascent on min Q from a₀ give a*, then flow matching of
x_t = (1 − t)a₀ + t·a* against the velocity a* − a₀).

Critic target: the plain min Q(s′, a′). `soft_target=True` adds −α·log π_source(a₀′|s′),
the source's log-density of the sample the flow moved, as the ablation does (the flow's own
volume change left out: intractable). Off by default, because it is not a consistent gain on the
learning benchmark (benchmarks/RESULTS.md).

`flow=False` (see gaussian.py) is the ablation: the same learner acting with the source alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from msconvert.emulator.learn.agents.common import (
    MLP,
    Replay,
    TanhGaussian,
    Transition,
    finite_rows,
    replay_add,
    replay_init,
    replay_sample,
    split_mlp,
    tanh_gaussian_sample,
)


@dataclass(frozen=True)
class Config:
    """Defaults sized for CPU tests and demos; `Config.gpu()` for thousands of environments."""

    flow: bool = True  # False: act with the tanh-Gaussian source only (the ablation)
    critic_hidden: tuple[int, ...] = (256, 256)
    policy_hidden: tuple[int, ...] = (256, 256)
    flow_hidden: tuple[int, ...] = (256, 256)
    lr: float = 3e-4
    gamma: float = 0.99
    batch_size: int = 256
    replay_size: int = 100_000
    warmup_steps: int = 1_000  # transitions in the replay before updates start
    # Gradient updates per env step (of all environments). More is not better on the learning
    # benchmark (benchmarks/RESULTS.md).
    updates_per_step: int = 1
    euler_steps: int = 10  # N: integration steps of the flow when acting
    ascent_steps: int = 10  # K: Q-gradient-ascent steps for the flow targets
    ascent_lr: float = 1e-2  # η
    ascent_clip: float = 0.1  # c: step at most c·√d / ‖∇‖
    init_alpha: float = 0.1
    target_entropy_per_dim: float = -0.5  # target entropy = this · act_dim
    # Flow: add the source's entropy bonus −α·log π(a₀′|s′) to the critic target too (the
    # ablation always has it, SAC-style). See the module docstring.
    soft_target: bool = False
    bc_lr: float = 1e-3
    bc_batch: int = 256

    @classmethod
    def gpu(cls) -> Config:
        """Thousands of environments: bigger networks and batches (docs/method.md#flow-agent)."""
        return cls(
            critic_hidden=(1024, 1024, 1024),
            policy_hidden=(512, 512, 512),
            flow_hidden=(512, 512, 512),
            batch_size=4_096,
            replay_size=4_000_000,
            warmup_steps=50_000,
            updates_per_step=8,
            euler_steps=16,
            ascent_steps=16,
        )


class DoubleQ(nn.Module):
    """Two Q networks with batch renormalization (CrossQ)."""

    hidden: tuple[int, ...]

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array, train: bool) -> jax.Array:
        x = jnp.concatenate([obs, action], axis=-1)
        q1 = MLP(self.hidden, 1, renorm=True)(x, train)[..., 0]
        q2 = MLP(self.hidden, 1, renorm=True)(x, train)[..., 0]
        return jnp.stack([q1, q2])  # (2, batch)


class VelocityField(nn.Module):
    """v(s, x, t): where to move an action x at flow time t."""

    hidden: tuple[int, ...]
    act_dim: int

    @nn.compact
    def __call__(self, obs: jax.Array, x: jax.Array, t: jax.Array) -> jax.Array:
        features = jnp.concatenate([obs, _moving(x, t)], -1)
        return MLP(self.hidden, self.act_dim, out_scale=0.1)(features)


def _moving(x: jax.Array, t: jax.Array) -> jax.Array:
    """The velocity field's inputs after the observation: the action and the flow time."""
    t = jnp.broadcast_to(jnp.asarray(t, x.dtype).reshape(-1, 1), (x.shape[0], 1))
    return jnp.concatenate([x, t, jnp.sin(jnp.pi * t), jnp.cos(jnp.pi * t)], -1)


class Nets(NamedTuple):
    critic: DoubleQ
    source: TanhGaussian
    field: VelocityField


class AgentState(NamedTuple):
    critic: dict  # {'params', 'batch_stats'}
    source: Any
    field: Any
    log_alpha: jax.Array
    critic_opt: Any
    source_opt: Any
    field_opt: Any
    alpha_opt: Any
    replay: Replay
    updates: jax.Array


def _nets(act_dim: int, config: Config) -> Nets:
    return Nets(
        DoubleQ(config.critic_hidden),
        TanhGaussian(config.policy_hidden, act_dim),
        VelocityField(config.flow_hidden, act_dim),
    )


def _opt(config: Config) -> optax.GradientTransformation:
    return optax.adam(config.lr)


def init(key: jax.Array, obs_dim: int, act_dim: int, n_envs: int, config: Config) -> AgentState:
    """Networks, optimizers and an empty replay."""
    del n_envs  # the replay is sized by config, not by the number of environments
    nets = _nets(act_dim, config)
    k1, k2, k3 = jax.random.split(key, 3)
    obs, act = jnp.zeros((2, obs_dim)), jnp.zeros((2, act_dim))
    critic = dict(nets.critic.init(k1, obs, act, train=True))
    source = nets.source.init(k2, obs)
    field = nets.field.init(k3, obs, act, jnp.zeros(2))
    log_alpha = jnp.log(jnp.asarray(config.init_alpha))
    example = {
        "obs": obs,
        "action": act,
        "reward": jnp.zeros(2),
        "next_obs": obs,
        "terminated": jnp.zeros(2),
        "valid": jnp.zeros(2),
    }
    opt = _opt(config)
    return AgentState(
        critic=critic,
        source=source,
        field=field,
        log_alpha=log_alpha,
        critic_opt=opt.init(critic["params"]),
        source_opt=opt.init(source),
        field_opt=opt.init(field),
        alpha_opt=opt.init(log_alpha),
        replay=replay_init(config.replay_size, example),
        updates=jnp.zeros((), jnp.int32),
    )


def _q_at(critic: dict, obs: jax.Array) -> Any:
    """min over the two critics (evaluation mode: running statistics) at these observations, as
    a function of the action. The observations' share of each critic's first layer is computed
    once (most of its work: 2,277 inputs against 354 on MyoFullBody), for the source's loss,
    the Q ascent and the target's repeated calls."""
    nets = [
        split_mlp(critic["params"][name], critic["batch_stats"][name], obs)
        for name in ("MLP_0", "MLP_1")
    ]
    return lambda action: jnp.minimum(*(q(action)[..., 0] for q in nets))


def _flow_action(field: Any, obs: jax.Array, a0: jax.Array, steps: int) -> jax.Array:
    velocity = split_mlp(field["params"]["MLP_0"], None, obs)  # the obs' share once, not per step

    def euler(k: int, x: jax.Array) -> jax.Array:
        v = velocity(_moving(x, jnp.full((obs.shape[0],), k / steps)))
        return jnp.clip(x + v / steps, -1.0, 1.0)

    return jax.lax.fori_loop(0, steps, euler, a0)


def _policy(
    state: AgentState, obs: jax.Array, key: jax.Array, deterministic: bool, config: Config
) -> jax.Array:
    nets = _nets(state.replay.data["action"].shape[1], config)
    mu, log_std = nets.source.apply(state.source, obs)
    a0 = jnp.tanh(mu) if deterministic else tanh_gaussian_sample(mu, log_std, key)[0]
    if not config.flow:
        return a0
    return _flow_action(state.field, obs, a0, config.euler_steps)


@partial(jax.jit, static_argnames=("deterministic", "config"))
def act(
    state: AgentState, obs: jax.Array, key: jax.Array, deterministic: bool, config: Config
) -> tuple[jax.Array, dict]:
    """Actions in [-1, 1] for a batch of normalized observations."""
    action = _policy(state, obs, key, deterministic, config)
    return jnp.nan_to_num(jnp.clip(action, -1.0, 1.0)), {}


def _ascent_targets(q: Any, a0: jax.Array, config: Config):
    """a*: K steps of normalized gradient ascent on min Q (`q`: `_q_at` the batch's
    observations) from a₀, within the bounds."""
    d = a0.shape[-1]
    grad_q = jax.grad(lambda a: q(a).sum())

    def step(_: int, a: jax.Array) -> jax.Array:
        g = grad_q(a)
        norm = jnp.linalg.norm(g, axis=-1, keepdims=True)
        eta = jnp.minimum(config.ascent_lr, config.ascent_clip * jnp.sqrt(d) / (norm + 1e-8))
        return jnp.clip(a + eta * g, -1.0, 1.0)

    return jax.lax.stop_gradient(jax.lax.fori_loop(0, config.ascent_steps, step, a0))


def _update(state: AgentState, key: jax.Array, config: Config) -> tuple[AgentState, dict]:
    """One update of the critics, the source policy, the flow and the temperature."""
    act_dim = state.replay.data["action"].shape[1]
    nets, opt = _nets(act_dim, config), _opt(config)
    k_batch, k_next, k_src, k_flow_t, k_flow_a = jax.random.split(key, 5)
    b = replay_sample(state.replay, k_batch, config.batch_size)
    valid = b["valid"]
    weight = valid / jnp.maximum(valid.sum(), 1.0)
    alpha = jnp.exp(state.log_alpha)

    # Critic: a' from the source and from the flow, whichever the critics value more.
    mu_n, ls_n = nets.source.apply(state.source, b["next_obs"])
    a_src, logp_n = tanh_gaussian_sample(mu_n, ls_n, k_next)
    a_next = a_src
    if config.flow:
        a_flow = _flow_action(state.field, b["next_obs"], a_src, config.euler_steps)
        q_next = _q_at(state.critic, b["next_obs"])
        better = q_next(a_flow) > q_next(a_src)
        a_next = jnp.where(better[:, None], a_flow, a_src)
    a_next = jax.lax.stop_gradient(a_next)

    def critic_loss(params: Any) -> tuple[jax.Array, tuple[dict, jax.Array]]:
        obs = jnp.concatenate([b["obs"], b["next_obs"]])
        action = jnp.concatenate([b["action"], a_next])
        variables = {"params": params, "batch_stats": state.critic["batch_stats"]}
        q, updated = nets.critic.apply(variables, obs, action, train=True, mutable=["batch_stats"])
        n = b["obs"].shape[0]
        q_now, q_next = q[:, :n], q[:, n:]
        soft_next = q_next.min(0) - alpha * logp_n * ((not config.flow) or config.soft_target)
        target = b["reward"] + config.gamma * (1.0 - b["terminated"]) * soft_next
        target = jax.lax.stop_gradient(target)
        loss = (((q_now - target) ** 2) * weight).sum()
        return loss, (updated["batch_stats"], q_now.mean())

    (c_loss, (stats, q_mean)), grads = jax.value_and_grad(critic_loss, has_aux=True)(
        state.critic["params"]
    )
    updates, critic_opt = opt.update(grads, state.critic_opt, state.critic["params"])
    critic = {"params": optax.apply_updates(state.critic["params"], updates), "batch_stats": stats}

    # The updated critics at the batch's observations: the source's loss, the ascent and its
    # gain all ask them about other actions.
    q_now = _q_at(critic, b["obs"])

    # Source policy: maximize min Q + entropy.
    def source_loss(params: Any) -> tuple[jax.Array, jax.Array]:
        mu, log_std = nets.source.apply(params, b["obs"])
        a0, logp = tanh_gaussian_sample(mu, log_std, k_src)
        loss = ((alpha * logp - q_now(a0)) * weight).sum()
        return loss, (logp * weight).sum()

    (s_loss, logp_mean), grads = jax.value_and_grad(source_loss, has_aux=True)(state.source)
    updates, source_opt = opt.update(grads, state.source_opt, state.source)
    source = optax.apply_updates(state.source, updates)

    # Temperature: towards the target entropy.
    target_entropy = config.target_entropy_per_dim * act_dim
    a_grad = jax.grad(lambda la: -la * jax.lax.stop_gradient(logp_mean + target_entropy))(
        state.log_alpha
    )
    updates, alpha_opt = opt.update(a_grad, state.alpha_opt, state.log_alpha)
    log_alpha = jnp.clip(optax.apply_updates(state.log_alpha, updates), -12.0, 2.0)

    # Flow: match the transport from source samples to their Q-ascent targets.
    field, field_opt, f_loss, gain = state.field, state.field_opt, jnp.zeros(()), jnp.zeros(())
    if config.flow:
        mu, log_std = nets.source.apply(source, b["obs"])
        a0 = jax.lax.stop_gradient(tanh_gaussian_sample(mu, log_std, k_flow_a)[0])
        a_star = _ascent_targets(q_now, a0, config)
        gain = ((q_now(a_star) - q_now(a0)) * weight).sum()
        t = jax.random.uniform(k_flow_t, (a0.shape[0],))
        x_t = (1 - t[:, None]) * a0 + t[:, None] * a_star

        def flow_loss(params: Any) -> jax.Array:
            v = nets.field.apply(params, b["obs"], x_t, t)
            return ((((v - (a_star - a0)) ** 2).sum(-1)) * weight).sum()

        f_loss, grads = jax.value_and_grad(flow_loss)(state.field)
        updates, field_opt = opt.update(grads, state.field_opt, state.field)
        field = optax.apply_updates(state.field, updates)

    new = state._replace(
        critic=critic,
        source=source,
        field=field,
        log_alpha=log_alpha,
        critic_opt=critic_opt,
        source_opt=source_opt,
        field_opt=field_opt,
        alpha_opt=alpha_opt,
        updates=state.updates + 1,
    )
    metrics = {
        "critic_loss": c_loss,
        "actor_loss": s_loss,
        "flow_loss": f_loss,
        "q_mean": q_mean,
        "q_ascent_gain": gain,
        "alpha": jnp.exp(log_alpha),
    }
    return new, metrics


def _no_update_metrics() -> dict:
    names = ("critic_loss", "actor_loss", "flow_loss", "q_mean", "q_ascent_gain", "alpha")
    return {k: jnp.zeros(()) for k in names}


@partial(jax.jit, static_argnames=("config",))
def learn(
    state: AgentState, batch: Transition, key: jax.Array, config: Config
) -> tuple[AgentState, dict]:
    """Insert the step's transitions; after warm-up, run `updates_per_step` updates."""
    ok = finite_rows(batch)
    clean = lambda x: jnp.where(ok.reshape((-1,) + (1,) * (x.ndim - 1)), x, 0.0)  # noqa: E731
    rows = {
        "obs": clean(batch.obs),
        "action": clean(batch.action),
        "reward": clean(batch.reward),
        "next_obs": clean(batch.next_obs),
        "terminated": batch.terminated.astype(jnp.float32),
        "valid": ok.astype(jnp.float32),
    }
    state = state._replace(replay=replay_add(state.replay, rows))

    def run(state: AgentState) -> tuple[AgentState, dict]:
        def body(carry: tuple[AgentState, dict], k: jax.Array):
            new, metrics = _update(carry[0], k, config)
            return (new, metrics), None

        keys = jax.random.split(key, config.updates_per_step)
        (state, metrics), _ = jax.lax.scan(body, (state, _no_update_metrics()), keys)
        return state, metrics

    def skip(state: AgentState) -> tuple[AgentState, dict]:
        return state, _no_update_metrics()

    ready = state.replay.size >= config.warmup_steps
    state, metrics = jax.lax.cond(ready, run, skip, state)
    metrics["updates"] = state.updates.astype(jnp.float32)
    return state, metrics


@partial(jax.jit, static_argnames=("config", "steps"))
def behaviour_clone(
    state: AgentState,
    obs: jax.Array,
    target_action: jax.Array,
    key: jax.Array,
    config: Config,
    steps: int,
) -> tuple[AgentState, dict]:
    """Warm start: regress the source mean onto the targets, and (flow) transport its samples
    onto them; the critics are untouched."""
    act_dim = target_action.shape[-1]
    nets = _nets(act_dim, config)
    opt = optax.adam(config.bc_lr)
    target = jnp.clip(target_action, -0.999, 0.999)
    n = obs.shape[0]

    def loss(params: tuple[Any, Any], idx: jax.Array, k: jax.Array) -> tuple[jax.Array, jax.Array]:
        source, field = params
        o, y = obs[idx], target[idx]
        mu, log_std = nets.source.apply(source, o)
        mean_err = ((jnp.tanh(mu) - y) ** 2).mean()
        total = mean_err
        if config.flow:
            k1, k2 = jax.random.split(k)
            a0 = jax.lax.stop_gradient(tanh_gaussian_sample(mu, log_std, k1)[0])
            t = jax.random.uniform(k2, (o.shape[0],))
            x_t = (1 - t[:, None]) * a0 + t[:, None] * y
            v = nets.field.apply(field, o, x_t, t)
            total = total + (((v - (y - a0)) ** 2).sum(-1)).mean() / act_dim
        return total, mean_err

    def step(carry: tuple[tuple[Any, Any], Any], k: jax.Array):
        params, opt_state = carry
        k_idx, k_loss = jax.random.split(k)
        idx = jax.random.randint(k_idx, (min(config.bc_batch, n),), 0, n)
        (_, err), grads = jax.value_and_grad(loss, has_aux=True)(params, idx, k_loss)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), err

    params = (state.source, state.field)
    before = loss(params, jnp.arange(n), key)[1]
    (params, _), errs = jax.lax.scan(step, (params, opt.init(params)), jax.random.split(key, steps))
    after = loss(params, jnp.arange(n), key)[1]
    new = state._replace(source=params[0], field=params[1])
    return new, {"mse_before": before, "mse_after": after}


def policy_params(state: AgentState) -> dict:
    """What acting needs: the source policy and (flow) the velocity field."""
    return {"source": state.source, "field": state.field}


def with_policy_params(state: AgentState, params: dict) -> AgentState:
    """state acting with `params` (from policy_params) instead of its own."""
    return state._replace(**params)
