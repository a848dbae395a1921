"""The adversarial reward aggregation and the DeepMimic baseline."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from msconvert.emulator.learn.env import StepInfo
from msconvert.emulator.learn.reward import (
    AdversarialConfig,
    adversarial_init,
    adversarial_reward,
    adversarial_update,
    deepmimic_reward,
    discriminator,
    normalize,
)

CFG = AdversarialConfig(hidden=(64, 64), negatives=128, replay_size=1024)


def test_normalizer_scales_by_running_mean_abs_without_centring():
    state = adversarial_init(jax.random.PRNGKey(0), 3, CFG)
    error = jnp.array([[2.0, -0.5, 0.0], [-2.0, 0.5, 0.0]])
    state, _ = adversarial_update(state, error, jax.random.PRNGKey(1), CFG)
    np.testing.assert_allclose(np.asarray(state.norm.mean_abs), [2.0, 0.5, 0.0], atol=1e-6)
    z = normalize(state, jnp.zeros((1, 3)), CFG)
    assert np.all(np.asarray(z) == 0)  # Δ = 0 stays the origin
    z = normalize(state, error, CFG)
    np.testing.assert_allclose(np.abs(np.asarray(z))[:, :2], 1.0, atol=1e-6)
    big = normalize(state, jnp.array([[jnp.nan, 1e9, 1.0]]), CFG)
    assert np.isfinite(np.asarray(big)).all() and float(big.max()) <= CFG.clip_normalized


def test_discriminator_learns_to_prefer_small_errors():
    key = jax.random.PRNGKey(0)
    state = adversarial_init(key, 6, CFG)
    update = jax.jit(lambda s, e, k: adversarial_update(s, e, k, CFG))
    for _ in range(300):
        key, k1, k2 = jax.random.split(key, 3)
        errors = 0.5 + jax.random.uniform(k1, (32, 6))  # the policy's errors: far from zero
        state, metrics = update(state, errors, k2)
    small = jnp.full((1, 6), 0.05)
    large = jnp.full((1, 6), 1.0)
    d_zero = float(discriminator(state, jnp.zeros((1, 6)), CFG)[0])
    d_large = float(discriminator(state, large, CFG)[0])
    assert d_zero > 0.5 > d_large
    r_small = float(adversarial_reward(state, small, CFG)[0])
    r_large = float(adversarial_reward(state, large, CFG)[0])
    r_zero = float(adversarial_reward(state, jnp.zeros((1, 6)), CFG)[0])
    assert r_zero >= r_small > r_large >= 0.0
    assert np.isfinite(r_zero) and r_zero <= -np.log(1e-4) + 1e-6
    assert all(np.isfinite(float(v)) for v in metrics.values())
    # A step whose errors are all NaN changes nothing but the replay pointer.
    nan_state, _ = update(state, jnp.full((4, 6), jnp.nan), key)
    np.testing.assert_array_equal(nan_state.norm.mean_abs, state.norm.mean_abs)


def _info(**sq) -> StepInfo:
    zeros = jnp.zeros(3)
    fields = {f: zeros for f in StepInfo._fields}
    fields.update({k: jnp.asarray(v, jnp.float32) for k, v in sq.items()})
    return StepInfo(**fields)


def test_deepmimic_is_one_at_zero_error_and_falls():
    perfect = deepmimic_reward(_info())
    np.testing.assert_allclose(np.asarray(perfect), 1.0, atol=1e-6)
    worse = deepmimic_reward(_info(pose_sq=[0.1, 1.0, 10.0], body_sq=[0.0, 0.01, 0.1]))
    r = np.asarray(worse)
    assert (0 <= r).all() and (r <= 1).all() and r[0] > r[1] > r[2]
    assert float(deepmimic_reward(_info(pose_sq=[np.nan, 0, 0]))[0]) >= 0.0
