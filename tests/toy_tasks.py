"""A tiny pure-JAX control task for agent tests: drive a 2-D point towards a target."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

ACT_DIM = 4  # two redundant actuators per axis: (a0 - a1, a2 - a3) is the push
OBS_DIM = 4
EPISODE = 40


class PointState(NamedTuple):
    pos: jax.Array  # (n, 2)
    target: jax.Array  # (n, 2)
    t: jax.Array  # (n,)


def reset(key: jax.Array, n: int) -> PointState:
    k1, k2 = jax.random.split(key)
    return PointState(
        jax.random.uniform(k1, (n, 2), minval=-1, maxval=1),
        jax.random.uniform(k2, (n, 2), minval=-1, maxval=1),
        jnp.zeros(n, jnp.int32),
    )


def observe(s: PointState) -> jax.Array:
    return jnp.concatenate([s.pos, s.target - s.pos], axis=1)


def step(s: PointState, action: jax.Array, key: jax.Array):
    push = jnp.stack([action[:, 0] - action[:, 1], action[:, 2] - action[:, 3]], axis=1)
    pos = jnp.clip(s.pos + 0.1 * push, -1.5, 1.5)
    dist = jnp.linalg.norm(s.target - pos, axis=1)
    reward = -dist - 0.01 * (action**2).sum(1)
    t = s.t + 1
    truncated = t >= EPISODE
    nxt = PointState(pos, s.target, t)
    fresh = reset(key, s.pos.shape[0])
    after = jax.tree.map(
        lambda a, b: jnp.where(truncated.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), fresh, nxt
    )
    return after, observe(nxt), reward, jnp.zeros_like(truncated), truncated


def train_and_score(agent, config, steps: int, seed: int = 0, n: int = 16) -> tuple[float, float]:
    """Mean per-step reward of the deterministic policy before and after `steps` env steps."""
    from msconvert.emulator.learn.agents.common import Transition

    key = jax.random.PRNGKey(seed)
    key, k_init, k_env = jax.random.split(key, 3)
    state = agent.init(k_init, OBS_DIM, ACT_DIM, n, config)
    env = reset(k_env, n)

    def score(state, key) -> float:
        def body(carry, k):
            env = carry
            a, _ = agent.act(state, observe(env), k, True, config)
            env, _, r, _, _ = step(env, a, k)
            return env, r.mean()

        _, rs = jax.lax.scan(body, reset(key, 64), jax.random.split(key, EPISODE))
        return float(rs.mean())

    before = score(state, jax.random.PRNGKey(99))

    @jax.jit
    def one(carry, k):
        state, env = carry
        k1, k2, k3 = jax.random.split(k, 3)
        obs = observe(env)
        a, extras = agent.act(state, obs, k1, False, config)
        env, next_obs, r, term, trunc = step(env, a, k2)
        batch = Transition(obs, a, r, next_obs, term, trunc, extras)
        state, m = agent.learn(state, batch, k3, config)
        return (state, env), m

    keys = jax.random.split(key, steps)
    carry = (state, env)
    carry, _ = jax.lax.scan(one, carry, keys)
    after = score(carry[0], jax.random.PRNGKey(99))
    return before, after


def tiny_flow():
    """The flow agent at its smallest: for tests and benchmarks of compiling, not learning."""
    from msconvert.emulator.learn.agents import flow

    return flow.Config(
        warmup_steps=4,
        batch_size=8,
        replay_size=256,
        critic_hidden=(16,),
        policy_hidden=(16,),
        flow_hidden=(16,),
        euler_steps=2,
        ascent_steps=2,
    )
