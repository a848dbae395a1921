"""Tracking rewards: the adversarial aggregation and DeepMimic's baseline (docs/method.md#reward).

Adversarial: the tracking-error vector Δ (every joint angle, velocity, key-body and root error;
built by the environment) is scaled by a running mean of |Δ| per component (no centring: Δ = 0
stays the origin). A discriminator D(Δ̂) = sigmoid(f(Δ̂)) learns to tell the ideal, Δ̂ = 0, from
the errors the policy makes (this step's and a replay of older ones). The reward
−c·log(max(1 − D(Δ̂), 1e-4)) is high where D cannot tell the policy from perfect tracking; as the
discriminator keeps finding whatever error separates them best, the weighting follows the worst
error of the moment, and maximizing it drives every component to zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from msconvert.emulator.learn.agents.common import (
    MLP,
    Replay,
    replay_add,
    replay_init,
    replay_sample,
)


@dataclass(frozen=True)
class AdversarialConfig:
    hidden: tuple[int, ...] = (256, 256)
    lr: float = 3e-4
    gp_weight: float = 5.0  # λ_gp
    weight_decay_out: float = 1e-4  # λ_w on the output layer
    replay_size: int = 16_384  # older negatives
    negatives: int = 256  # negatives per update (half fresh, half replayed)
    norm_floor: float = 1e-4
    norm_momentum: float = 0.999  # running mean of |Δ| per component
    scale: float = 1.0  # c
    clip_normalized: float = 100.0  # |Δ̂| beyond this is clipped (a diverged step is huge)


class ErrorNorm(NamedTuple):
    mean_abs: jax.Array  # (E,)
    count: jax.Array


class RewardState(NamedTuple):
    norm: ErrorNorm
    params: Any
    opt: Any
    replay: Replay


def _disc(config: AdversarialConfig) -> MLP:
    return MLP(config.hidden, 1)


def adversarial_init(key: jax.Array, error_dim: int, config: AdversarialConfig) -> RewardState:
    params = _disc(config).init(key, jnp.zeros((1, error_dim)))
    opt = optax.adam(config.lr)
    norm = ErrorNorm(jnp.ones(error_dim), jnp.zeros(()))
    replay = replay_init(config.replay_size, {"error": jnp.zeros((1, error_dim))})
    return RewardState(norm, params, opt.init(params), replay)


def normalize(
    state: RewardState, error: jax.Array, config: AdversarialConfig | None = None
) -> jax.Array:
    """Δ̂ = Δ / max(running mean |Δ|, floor), clipped; non-finite entries count as the clip."""
    floor = 1e-4 if config is None else config.norm_floor
    clip = 100.0 if config is None else config.clip_normalized
    z = error / jnp.maximum(state.norm.mean_abs, floor)
    return jnp.clip(jnp.nan_to_num(z, nan=clip, posinf=clip, neginf=-clip), -clip, clip)


def _logit(params: Any, x: jax.Array, config: AdversarialConfig) -> jax.Array:
    return _disc(config).apply(params, x)[..., 0]


@partial(jax.jit, static_argnames=("config",))
def adversarial_reward(
    state: RewardState, error: jax.Array, config: AdversarialConfig
) -> jax.Array:
    """(n,) −c·log(max(1 − D(Δ̂), 1e-4)): large when D takes the error for perfect tracking."""
    d = jax.nn.sigmoid(_logit(state.params, normalize(state, error, config), config))
    return -config.scale * jnp.log(jnp.maximum(1.0 - d, 1e-4))


def discriminator(state: RewardState, error: jax.Array, config: AdversarialConfig) -> jax.Array:
    """D(Δ̂) in (0, 1) for raw errors."""
    return jax.nn.sigmoid(_logit(state.params, normalize(state, error, config), config))


@partial(jax.jit, static_argnames=("config",))
def adversarial_update(
    state: RewardState, error: jax.Array, key: jax.Array, config: AdversarialConfig
) -> tuple[RewardState, dict]:
    """Fold this step's errors into the normalizer and the replay; one discriminator step.

    Loss: ½[−log D(0) − E log(1 − D(Δ̂))] + λ_gp·½(E‖∇f(Δ̂)‖² + ‖∇f(0)‖²) + λ_w‖W_out‖².
    """
    finite = jnp.isfinite(error).all(axis=1)
    n_ok = finite.sum()
    batch_abs = jnp.where(finite[:, None], jnp.abs(error), 0.0).sum(0) / jnp.maximum(n_ok, 1)
    m = jnp.where(state.norm.count > 0, config.norm_momentum, 0.0)
    mean_abs = jnp.where(
        n_ok > 0, m * state.norm.mean_abs + (1 - m) * batch_abs, state.norm.mean_abs
    )
    norm = ErrorNorm(mean_abs, state.norm.count + n_ok)
    state = state._replace(norm=norm)

    fresh = jnp.where(finite[:, None], error, 0.0)
    k_old, k_fresh = jax.random.split(key)
    half = config.negatives // 2
    old = replay_sample(state.replay, k_old, half)["error"]
    idx = jax.random.randint(k_fresh, (config.negatives - half,), 0, error.shape[0])
    negatives = normalize(state, jnp.concatenate([fresh[idx], old]), config)
    have_old = (state.replay.size > 0).astype(jnp.float32)
    weights = jnp.concatenate([jnp.ones(config.negatives - half), jnp.full((half,), have_old)])
    weights = weights / weights.sum()
    zero = jnp.zeros((1, error.shape[1]))

    def loss_fn(params: Any) -> tuple[jax.Array, dict]:
        f = lambda x: _logit(params, x, config)  # noqa: E731
        logit_zero, logit_neg = f(zero)[0], f(negatives)
        bce = 0.5 * (
            -jax.nn.log_sigmoid(logit_zero) - (weights * jax.nn.log_sigmoid(-logit_neg)).sum()
        )
        grad_f = jax.vmap(jax.grad(lambda x: f(x[None])[0]))
        gp_neg = (weights * (grad_f(negatives) ** 2).sum(-1)).sum()
        gp_zero = (grad_f(zero) ** 2).sum()
        out_kernel = params["params"][f"Dense_{len(config.hidden)}"]["kernel"]
        loss = (
            bce
            + config.gp_weight * 0.5 * (gp_neg + gp_zero)
            + config.weight_decay_out * (out_kernel**2).sum()
        )
        metrics = {
            "disc_loss": bce,
            "gp": gp_neg + gp_zero,
            "d_zero": jax.nn.sigmoid(logit_zero),
            "d_policy": (weights * jax.nn.sigmoid(logit_neg)).sum(),
        }
        return loss, metrics

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = optax.adam(config.lr).update(grads, state.opt, state.params)
    params = optax.apply_updates(state.params, updates)
    keep = fresh[jnp.argsort(~finite)][: min(error.shape[0], 64)]  # a few fresh rows per step
    replay = replay_add(state.replay, {"error": keep})
    return RewardState(norm, params, opt_state, replay), metrics


# DeepMimic's hand-weighted sum (Peng et al. 2018), the baseline the adversarial reward replaces.
DEEPMIMIC_WEIGHTS = {"pose": 0.65, "velocity": 0.1, "end_effector": 0.15, "com": 0.1}
DEEPMIMIC_SCALES = {"pose": 2.0, "velocity": 0.1, "end_effector": 40.0, "com": 10.0}


def deepmimic_reward(info: Any) -> jax.Array:
    """0.65·exp(−2Σ joint err²) + 0.1·exp(−0.1Σ vel err²) + 0.15·exp(−40Σ body err²) +
    0.1·exp(−10 com err²), from the environment's squared-error sums (StepInfo)."""
    w, s = DEEPMIMIC_WEIGHTS, DEEPMIMIC_SCALES
    terms = (
        w["pose"] * jnp.exp(-s["pose"] * info.pose_sq)
        + w["velocity"] * jnp.exp(-s["velocity"] * info.velocity_sq)
        + w["end_effector"] * jnp.exp(-s["end_effector"] * info.body_sq)
        + w["com"] * jnp.exp(-s["com"] * info.com_sq)
    )
    return jnp.nan_to_num(terms, nan=0.0)
