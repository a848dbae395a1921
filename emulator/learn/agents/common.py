"""What the agents share: the transition type, the observation normalizer, networks, replay."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

LOG_STD_MIN, LOG_STD_MAX = -5.0, 1.0


class Transition(NamedTuple):
    """One environment step of every environment (leading dim n)."""

    obs: jax.Array  # (n, obs_dim) normalized observation at s
    action: jax.Array  # (n, act_dim) in [-1, 1]
    reward: jax.Array  # (n,)
    next_obs: jax.Array  # (n, obs_dim) normalized observation at s' before any auto-reset
    terminated: jax.Array  # (n,) a true terminal (fall, divergence): no bootstrap
    truncated: jax.Array  # (n,) episode cut (clip end, time limit): bootstrap from next_obs
    extras: dict  # agent-specific values from act() (PPO: log_prob, value)


# --- observation normalizer ----------------------------------------------------------------------


class RunningNorm(NamedTuple):
    """Running mean and variance (parallel Welford), saved with the policy."""

    mean: jax.Array
    var: jax.Array
    count: jax.Array


def norm_init(dim: int) -> RunningNorm:
    return RunningNorm(jnp.zeros(dim), jnp.ones(dim), jnp.asarray(1e-4))


def norm_update(norm: RunningNorm, x: jax.Array) -> RunningNorm:
    """Fold a batch (n, dim) into the statistics; non-finite rows are ignored."""
    x = jnp.asarray(x, jnp.float32).reshape(-1, norm.mean.shape[0])
    ok = jnp.isfinite(x).all(axis=1)
    n = ok.sum()
    xs = jnp.where(ok[:, None], x, 0.0)
    batch_mean = xs.sum(0) / jnp.maximum(n, 1)
    batch_var = (jnp.where(ok[:, None], (x - batch_mean) ** 2, 0.0)).sum(0) / jnp.maximum(n, 1)
    total = norm.count + n
    delta = batch_mean - norm.mean
    mean = norm.mean + delta * n / total
    m2 = norm.var * norm.count + batch_var * n + delta**2 * norm.count * n / total
    new = RunningNorm(mean, m2 / total, total)
    return jax.tree.map(lambda a, b: jnp.where(n > 0, a, b), new, norm)


def norm_apply(norm: RunningNorm, x: jax.Array, clip: float = 10.0) -> jax.Array:
    """(x − mean) / std, clipped; non-finite entries become 0."""
    z = (x - norm.mean) / jnp.sqrt(norm.var + 1e-8)
    return jnp.clip(jnp.nan_to_num(z, nan=0.0, posinf=clip, neginf=-clip), -clip, clip)


# --- networks -------------------------------------------------------------------------------------


class BatchRenorm(nn.Module):
    """Batch renormalization (Ioffe 2017), as CrossQ uses it: batch statistics while training,
    corrected towards the running ones (r, d clipped), running statistics at evaluation."""

    momentum: float = 0.99
    r_max: float = 3.0
    d_max: float = 5.0
    warmup: int = 1000  # plain batch norm for this many updates, then renormalization

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        dim = x.shape[-1]
        mean_ra = self.variable("batch_stats", "mean", jnp.zeros, (dim,))
        var_ra = self.variable("batch_stats", "var", jnp.ones, (dim,))
        steps = self.variable("batch_stats", "steps", jnp.zeros, ())
        scale = self.param("scale", nn.initializers.ones, (dim,))
        bias = self.param("bias", nn.initializers.zeros, (dim,))
        if train:
            mean = x.mean(0)
            var = x.var(0)
            std, std_ra = jnp.sqrt(var + 1e-5), jnp.sqrt(var_ra.value + 1e-5)
            r = jax.lax.stop_gradient(jnp.clip(std / std_ra, 1 / self.r_max, self.r_max))
            d = jax.lax.stop_gradient(
                jnp.clip((mean - mean_ra.value) / std_ra, -self.d_max, self.d_max)
            )
            renorm = steps.value >= self.warmup
            r, d = jnp.where(renorm, r, 1.0), jnp.where(renorm, d, 0.0)
            y = (x - mean) / std * r + d
            if not self.is_initializing():
                m = self.momentum
                mean_ra.value = m * mean_ra.value + (1 - m) * jax.lax.stop_gradient(mean)
                var_ra.value = m * var_ra.value + (1 - m) * jax.lax.stop_gradient(var)
                steps.value = steps.value + 1
            return y * scale + bias
        return batch_renorm_eval(x, scale, bias, mean_ra.value, var_ra.value)


def batch_renorm_eval(x, scale, bias, mean, var) -> jax.Array:
    """`BatchRenorm` at evaluation: per feature, so any slice of the features can be taken
    alone (`split_mlp`)."""
    return (x - mean) / jnp.sqrt(var + 1e-5) * scale + bias


class MLP(nn.Module):
    """Dense layers with ReLU; optional batch renormalization before each activation."""

    hidden: Sequence[int]
    out: int
    renorm: bool = False
    out_scale: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.renorm:
            x = BatchRenorm()(x, train)
        for width in self.hidden:
            x = nn.Dense(width)(x)
            if self.renorm:
                x = BatchRenorm()(x, train)
            x = nn.relu(x)
        init = nn.initializers.variance_scaling(self.out_scale, "fan_avg", "uniform")
        return nn.Dense(self.out, kernel_init=init)(x)


def split_mlp(
    params: Mapping[str, Any], stats: Mapping[str, Any] | None, known: jax.Array
) -> Callable[[jax.Array], jax.Array]:
    """An `MLP`'s output for inputs concat([known, rest]), evaluation mode (running statistics
    where it renormalizes: `stats`, else None), as a function of `rest`: the first layer's share
    of `known` is computed once. For the many calls on one observation with changing actions
    (the flow's Euler steps, the Q ascent), where the observation's share is most of the work."""
    k = known.shape[-1]
    layers = sum(1 for name in params if name.startswith("Dense_"))

    def renorm(x: jax.Array, i: int, part: slice = slice(None)) -> jax.Array:
        if stats is None:
            return x
        p, s = params[f"BatchRenorm_{i}"], stats[f"BatchRenorm_{i}"]
        return batch_renorm_eval(
            x, p["scale"][part], p["bias"][part], s["mean"][part], s["var"][part]
        )

    kernel = params["Dense_0"]["kernel"]
    share = renorm(known, 0, slice(0, k)) @ kernel[:k] + params["Dense_0"]["bias"]

    def rest_fn(rest: jax.Array) -> jax.Array:
        h = share + renorm(rest, 0, slice(k, None)) @ kernel[k:]
        for i in range(1, layers):  # as MLP: renormalize, ReLU, the next dense layer
            h = nn.relu(renorm(h, i))
            h = h @ params[f"Dense_{i}"]["kernel"] + params[f"Dense_{i}"]["bias"]
        return h

    return rest_fn


class TanhGaussian(nn.Module):
    """a = tanh(μ(s) + σ(s)·ε): mean and log-std heads on one trunk."""

    hidden: Sequence[int]
    act_dim: int

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        out = MLP(self.hidden, 2 * self.act_dim, out_scale=0.01)(obs)
        mu, log_std = jnp.split(out, 2, axis=-1)
        return mu, jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)


def tanh_gaussian_sample(
    mu: jax.Array, log_std: jax.Array, key: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """A reparameterized sample in (-1, 1) and its log-probability (tanh change of variables)."""
    eps = jax.random.normal(key, mu.shape)
    pre = mu + jnp.exp(log_std) * eps
    action = jnp.tanh(pre)
    log_prob = (-0.5 * eps**2 - log_std - 0.5 * jnp.log(2 * jnp.pi)).sum(-1)
    log_prob -= (2 * (jnp.log(2.0) - pre - jax.nn.softplus(-2 * pre))).sum(-1)
    return action, log_prob


# --- replay ---------------------------------------------------------------------------------------


class Replay(NamedTuple):
    """A ring buffer on the device: fixed-size arrays, an insertion pointer and a size."""

    data: dict[str, jax.Array]
    pointer: jax.Array
    size: jax.Array


def replay_init(capacity: int, example: dict[str, jax.Array]) -> Replay:
    """Storage for `capacity` rows shaped like one row of each array in `example`."""
    data = {k: jnp.zeros((capacity, *v.shape[1:]), v.dtype) for k, v in example.items()}
    return Replay(data, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def replay_add(replay: Replay, rows: dict[str, jax.Array]) -> Replay:
    """Append a batch of rows (n, ...), overwriting the oldest when full."""
    capacity = next(iter(replay.data.values())).shape[0]
    n = next(iter(rows.values())).shape[0]
    idx = (replay.pointer + jnp.arange(n)) % capacity
    data = {
        k: replay.data[k].at[idx].set(rows[k].astype(replay.data[k].dtype)) for k in replay.data
    }
    return Replay(data, (replay.pointer + n) % capacity, jnp.minimum(replay.size + n, capacity))


def replay_sample(replay: Replay, key: jax.Array, batch: int) -> dict[str, jax.Array]:
    """A uniform batch of stored rows (with replacement)."""
    idx = jax.random.randint(key, (batch,), 0, jnp.maximum(replay.size, 1))
    return {k: v[idx] for k, v in replay.data.items()}


def finite_rows(batch: Transition) -> jax.Array:
    """(n,) True where a transition is entirely finite (a NaN must never reach the networks)."""
    parts = [batch.obs, batch.action, batch.next_obs, batch.reward[:, None]]
    return jnp.stack([jnp.isfinite(p).all(axis=1) for p in parts]).all(axis=0)
