"""PPO with a Gaussian policy: the standard recipe our method is measured against
(docs/method.md#ppo-baseline).

The policy is a diagonal Gaussian with a state-independent log-std; the executed action is the
sample clipped to [-1, 1], and the log-probability is that of the unclipped sample (the usual
PPO convention: the clip belongs to the environment). GAE(λ) advantages, bootstrapped through
truncations from the value of the pre-reset next state, and not through terminations; clipped
surrogate, value loss, entropy bonus, global gradient clipping, minibatch epochs.

`learn` fills a device rollout storage one env step at a time; when it holds `rollout_length`
steps, the same jitted call runs the update epochs and empties it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from msconvert.emulator.learn.agents.common import MLP, Transition, finite_rows


@dataclass(frozen=True)
class Config:
    """Defaults sized for CPU tests and demos; `Config.gpu()` for thousands of environments."""

    hidden: tuple[int, ...] = (256, 256)
    lr: float = 3e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    rollout_length: int = 64  # env steps per environment between updates
    epochs: int = 4
    minibatches: int = 4
    clip_eps: float = 0.2
    value_coef: float = 0.5
    entropy_coef: float = 0.0
    max_grad_norm: float = 0.5
    init_log_std: float = -0.5
    bc_lr: float = 1e-3
    bc_batch: int = 256

    @classmethod
    def gpu(cls) -> Config:
        return cls(hidden=(512, 512, 256), rollout_length=32, epochs=5, minibatches=32)


class ActorCritic(nn.Module):
    act_dim: int
    hidden: tuple[int, ...]

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        mu = MLP(self.hidden, self.act_dim, out_scale=0.01)(obs)
        value = MLP(self.hidden, 1)(obs)[..., 0]
        log_std = self.param("log_std", nn.initializers.zeros, (self.act_dim,))
        return mu, log_std, value


class Rollout(NamedTuple):
    obs: jax.Array  # (L, n, obs_dim)
    action: jax.Array  # (L, n, act_dim) the unclipped sample
    log_prob: jax.Array
    value: jax.Array
    reward: jax.Array
    next_value: jax.Array  # V(s') before reset (used when truncated)
    terminated: jax.Array
    done: jax.Array  # terminated or truncated: the episode ends here
    valid: jax.Array


class AgentState(NamedTuple):
    params: Any
    opt: Any
    rollout: Rollout
    cursor: jax.Array
    updates: jax.Array


def _net(act_dim: int, config: Config) -> ActorCritic:
    return ActorCritic(act_dim, config.hidden)


def _optimizer(config: Config) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(config.lr))


def init(key: jax.Array, obs_dim: int, act_dim: int, n_envs: int, config: Config) -> AgentState:
    params = _net(act_dim, config).init(key, jnp.zeros((1, obs_dim)))
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: jnp.full_like(x, config.init_log_std) if "log_std" in str(p) else x, params
    )
    length = config.rollout_length
    z = lambda *s: jnp.zeros((length, n_envs, *s))  # noqa: E731
    rollout = Rollout(z(obs_dim), z(act_dim), z(), z(), z(), z(), z(), z(), z())
    return AgentState(
        params,
        _optimizer(config).init(params),
        rollout,
        jnp.zeros((), jnp.int32),
        jnp.zeros((), jnp.int32),
    )


def gaussian_log_prob(x: jax.Array, mu: jax.Array, log_std: jax.Array) -> jax.Array:
    return (-0.5 * ((x - mu) / jnp.exp(log_std)) ** 2 - log_std - 0.5 * jnp.log(2 * jnp.pi)).sum(-1)


@partial(jax.jit, static_argnames=("deterministic", "config"))
def act(
    state: AgentState, obs: jax.Array, key: jax.Array, deterministic: bool, config: Config
) -> tuple[jax.Array, dict]:
    """Clipped actions, and the unclipped sample's log-prob and the value for the rollout."""
    mu, log_std, value = _net(state.rollout.action.shape[-1], config).apply(state.params, obs)
    sample = mu if deterministic else mu + jnp.exp(log_std) * jax.random.normal(key, mu.shape)
    extras = {"log_prob": gaussian_log_prob(sample, mu, log_std), "value": value, "sample": sample}
    return jnp.clip(jnp.nan_to_num(sample), -1.0, 1.0), extras


def gae(rollout: Rollout, last_value: jax.Array, config: Config) -> tuple[jax.Array, jax.Array]:
    """Advantages and returns. A terminated step bootstraps nothing; a truncated one bootstraps
    from V(s') of its own pre-reset next state; the chain of λ-returns is cut at every end."""
    del last_value  # every step stores its own V(s'), so the last one needs nothing extra

    def back(carry: jax.Array, t: tuple) -> tuple[jax.Array, jax.Array]:
        reward, value, next_value, terminated, done = t
        delta = reward + config.gamma * (1.0 - terminated) * next_value - value
        adv = delta + config.gamma * config.gae_lambda * (1.0 - done) * carry
        return adv, adv

    r = rollout
    _, adv = jax.lax.scan(
        back,
        jnp.zeros_like(r.value[0]),
        (r.reward, r.value, r.next_value, r.terminated, r.done),
        reverse=True,
    )
    return adv, adv + r.value


def _update(state: AgentState, key: jax.Array, config: Config) -> tuple[AgentState, dict]:
    r = state.rollout
    net, opt = _net(r.action.shape[-1], config), _optimizer(config)
    adv, ret = gae(r, jnp.zeros_like(r.value[0]), config)
    flat = lambda x: x.reshape((-1, *x.shape[2:]))  # noqa: E731
    data = {
        "obs": flat(r.obs),
        "action": flat(r.action),
        "log_prob": flat(r.log_prob),
        "adv": flat(adv),
        "ret": flat(ret),
        "valid": flat(r.valid),
    }
    n = data["obs"].shape[0]
    mb = n // config.minibatches

    def loss_fn(params: Any, b: dict) -> tuple[jax.Array, dict]:
        mu, log_std, value = net.apply(params, b["obs"])
        logp = gaussian_log_prob(b["action"], mu, log_std)
        w = b["valid"] / jnp.maximum(b["valid"].sum(), 1.0)
        a = b["adv"]
        a = (a - (a * w).sum()) / jnp.sqrt(((a - (a * w).sum()) ** 2 * w).sum() + 1e-8)
        ratio = jnp.exp(logp - b["log_prob"])
        surrogate = jnp.minimum(
            ratio * a, jnp.clip(ratio, 1 - config.clip_eps, 1 + config.clip_eps) * a
        )
        policy_loss = -(surrogate * w).sum()
        value_loss = (((value - b["ret"]) ** 2) * w).sum()
        entropy = (log_std + 0.5 * jnp.log(2 * jnp.pi * jnp.e)).sum()
        total = policy_loss + config.value_coef * value_loss - config.entropy_coef * entropy
        return total, {"actor_loss": policy_loss, "critic_loss": value_loss, "entropy": entropy}

    def epoch(carry: tuple, k: jax.Array):
        params, opt_state = carry
        perm = jax.random.permutation(k, n)[: mb * config.minibatches].reshape(
            config.minibatches, mb
        )

        def minibatch(carry: tuple, idx: jax.Array):
            params, opt_state = carry
            b = {key_: v[idx] for key_, v in data.items()}
            (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, b)
            updates, opt_state = opt.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), metrics

        (params, opt_state), metrics = jax.lax.scan(minibatch, (params, opt_state), perm)
        return (params, opt_state), metrics

    (params, opt_state), metrics = jax.lax.scan(
        epoch, (state.params, state.opt), jax.random.split(key, config.epochs)
    )
    metrics = jax.tree.map(jnp.mean, metrics)
    new = state._replace(
        params=params, opt=opt_state, cursor=jnp.zeros((), jnp.int32), updates=state.updates + 1
    )
    return new, metrics


def _zero_metrics() -> dict:
    return {k: jnp.zeros(()) for k in ("actor_loss", "critic_loss", "entropy")}


@partial(jax.jit, static_argnames=("config",))
def learn(
    state: AgentState, batch: Transition, key: jax.Array, config: Config
) -> tuple[AgentState, dict]:
    """Store the step; when the rollout is full, run the update epochs and start a new one."""
    net = _net(state.rollout.action.shape[-1], config)
    ok = finite_rows(batch)
    clean = lambda x: jnp.where(ok.reshape((-1,) + (1,) * (x.ndim - 1)), x, 0.0)  # noqa: E731
    next_value = net.apply(state.params, clean(batch.next_obs))[2]
    term = batch.terminated.astype(jnp.float32)
    done = jnp.maximum(term, batch.truncated.astype(jnp.float32))
    row = Rollout(
        obs=clean(batch.obs),
        action=clean(batch.extras.get("sample", batch.action)),
        log_prob=clean(batch.extras["log_prob"]),
        value=clean(batch.extras["value"]),
        reward=clean(batch.reward),
        next_value=clean(next_value),
        terminated=term,
        done=done,
        valid=ok.astype(jnp.float32),
    )
    i = state.cursor
    rollout = jax.tree.map(lambda store, x: store.at[i].set(x), state.rollout, row)
    state = state._replace(rollout=rollout, cursor=i + 1)
    full = state.cursor >= config.rollout_length
    state, metrics = jax.lax.cond(
        full, lambda s: _update(s, key, config), lambda s: (s, _zero_metrics()), state
    )
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
    """Warm start: regress the policy mean onto target actions."""
    net = _net(target_action.shape[-1], config)
    opt = optax.adam(config.bc_lr)
    n = obs.shape[0]

    def mse(params: Any, idx: jax.Array) -> jax.Array:
        return ((net.apply(params, obs[idx])[0] - target_action[idx]) ** 2).mean()

    def step(carry: tuple, k: jax.Array):
        params, opt_state = carry
        idx = jax.random.randint(k, (min(config.bc_batch, n),), 0, n)
        loss, grads = jax.value_and_grad(mse)(params, idx)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    before = mse(state.params, jnp.arange(n))
    (params, _), _ = jax.lax.scan(
        step, (state.params, opt.init(state.params)), jax.random.split(key, steps)
    )
    return state._replace(params=params), {
        "mse_before": before,
        "mse_after": mse(params, jnp.arange(n)),
    }


def policy_params(state: AgentState) -> Any:
    return state.params


def with_policy_params(state: AgentState, params: Any) -> AgentState:
    """state acting with `params` (from policy_params) instead of its own."""
    return state._replace(params=params)
