"""The three agents on a small pure-JAX reaching task: each learns; the pieces behave."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import toy_tasks

from msconvert.emulator.learn.agents import flow, gaussian, ppo
from msconvert.emulator.learn.agents.common import (
    Transition,
    norm_apply,
    norm_init,
    norm_update,
    replay_add,
    replay_init,
)

SMALL = dict(warmup_steps=256, batch_size=128, critic_hidden=(128, 128), policy_hidden=(128, 128))
CASES = {
    "flow": (flow, flow.Config(flow_hidden=(128, 128), **SMALL), 1500),
    "gaussian": (gaussian, gaussian.Config(**SMALL), 1500),
    "ppo": (ppo, ppo.Config(hidden=(64, 64), rollout_length=40), 4000),
}


@pytest.mark.parametrize("name", list(CASES))
def test_agent_learns_to_reach(name):
    agent, config, steps = CASES[name]
    before, after = toy_tasks.train_and_score(agent, config, steps)
    # Mean per-step reward is minus the distance to the target: untrained ~ -1.
    assert before < -0.6 and after > -0.3, (before, after)


@pytest.mark.parametrize("name", list(CASES))
def test_act_is_bounded_deterministic_and_reproducible(name):
    agent, config, _ = CASES[name]
    state = agent.init(jax.random.PRNGKey(0), 4, 4, 8, config)
    again = agent.init(jax.random.PRNGKey(0), 4, 4, 8, config)
    obs = jax.random.normal(jax.random.PRNGKey(1), (8, 4)) * 5
    a, _ = agent.act(state, obs, jax.random.PRNGKey(2), False, config)
    assert (np.abs(np.asarray(a)) <= 1).all() and np.isfinite(np.asarray(a)).all()
    d1, _ = agent.act(state, obs, jax.random.PRNGKey(3), True, config)
    d2, _ = agent.act(again, obs, jax.random.PRNGKey(4), True, config)
    np.testing.assert_array_equal(np.asarray(d1), np.asarray(d2))


@pytest.mark.parametrize("name", list(CASES))
def test_behaviour_clone_fits_targets(name):
    agent, config, _ = CASES[name]
    state = agent.init(jax.random.PRNGKey(0), 4, 4, 8, config)
    obs = jax.random.normal(jax.random.PRNGKey(1), (512, 4))
    target = jnp.tanh(obs @ jnp.array([[0.5, -0.3, 0.2, 0.1]] * 4))
    state, metrics = agent.behaviour_clone(state, obs, target, jax.random.PRNGKey(2), config, 300)
    assert float(metrics["mse_after"]) < 0.2 * float(metrics["mse_before"])
    a, _ = agent.act(state, obs, jax.random.PRNGKey(3), True, config)
    assert float(((np.asarray(a) - np.asarray(target)) ** 2).mean()) < 0.05


@pytest.mark.parametrize("name", list(CASES))
def test_nan_transitions_never_poison_the_parameters(name):
    agent, config, _ = CASES[name]
    state = agent.init(jax.random.PRNGKey(0), 4, 4, 16, config)
    key = jax.random.PRNGKey(1)
    for _ in range(300):
        key, k1, k2, k3 = jax.random.split(key, 4)
        obs = jax.random.normal(k1, (16, 4))
        action, extras = agent.act(state, obs, k2, False, config)
        reward = -jnp.abs(obs).sum(1).at[0].set(jnp.nan)
        batch = Transition(
            obs,
            action,
            reward,
            obs.at[1].set(jnp.inf),
            jnp.zeros(16, bool),
            jnp.zeros(16, bool),
            extras,
        )
        state, _ = agent.learn(state, batch, k3, config)
    leaves = jax.tree.leaves(agent.policy_params(state))
    assert all(np.isfinite(np.asarray(x)).all() for x in leaves)


def test_ppo_gae_bootstraps_truncations_not_terminations():
    config = ppo.Config(gamma=0.9, gae_lambda=1.0)
    z = jnp.zeros((3, 1))
    rollout = ppo.Rollout(
        obs=z,
        action=z,
        log_prob=z,
        value=jnp.zeros((3, 1)),
        reward=jnp.ones((3, 1)),
        next_value=jnp.full((3, 1), 10.0),
        terminated=jnp.array([[0.0], [1.0], [0.0]]),
        done=jnp.array([[0.0], [1.0], [1.0]]),
        valid=jnp.ones((3, 1)),
    )
    adv, _ = ppo.gae(rollout, jnp.zeros(1), config)
    # Step 2 is truncated: 1 + 0.9·V(s') = 10. Step 1 terminates: 1, no bootstrap.
    # Step 0: δ = 1 + 0.9·10 = 10, plus 0.9 times step 1's advantage (1).
    np.testing.assert_allclose(np.asarray(adv)[:, 0], [10 + 0.9 * 1, 1, 10], rtol=1e-6)


def test_running_norm_matches_numpy_and_replay_wraps():
    x = np.random.default_rng(0).normal(3.0, 2.0, (1000, 3)).astype(np.float32)
    norm = norm_init(3)
    for chunk in np.split(x, 10):
        norm = norm_update(norm, chunk)
    np.testing.assert_allclose(np.asarray(norm.mean), x.mean(0), rtol=1e-3)
    np.testing.assert_allclose(np.asarray(norm.var), x.var(0), rtol=1e-2)
    assert np.abs(np.asarray(norm_apply(norm, jnp.asarray(x))).mean(0)).max() < 0.05
    replay = replay_init(5, {"v": jnp.zeros((1, 2))})
    for i in range(3):
        replay = replay_add(replay, {"v": jnp.full((2, 2), float(i))})
    assert int(replay.size) == 5 and int(replay.pointer) == 1
    np.testing.assert_array_equal(
        np.asarray(replay.data["v"])[:, 0],
        [2, 0, 1, 1, 2],  # the sixth row overwrote slot 0
    )


def test_the_split_networks_equal_the_modules():
    """`split_mlp` (the observation's share of the first layer computed once) gives what the
    critic and the velocity field modules give, renormalization statistics included."""
    import jax
    import jax.numpy as jnp

    from msconvert.emulator.learn.agents import flow

    cfg = flow.Config(critic_hidden=(32, 16), flow_hidden=(24, 24))
    nets = flow._nets(5, cfg)
    keys = jax.random.split(jax.random.PRNGKey(3), 6)
    obs = jax.random.normal(keys[0], (9, 11))
    action = jax.random.uniform(keys[1], (9, 5), minval=-1.0, maxval=1.0)
    critic = dict(nets.critic.init(keys[2], obs, action, train=True))
    # running statistics away from their initial 0 and 1, as after training
    for _ in range(3):
        _, updated = nets.critic.apply(
            critic, 3.0 * obs + 1.0, action, train=True, mutable=["batch_stats"]
        )
        critic["batch_stats"] = updated["batch_stats"]
    assert float(jnp.abs(critic["batch_stats"]["MLP_0"]["BatchRenorm_0"]["mean"]).max()) > 0.01
    whole = nets.critic.apply(critic, obs, action, train=False).min(0)
    np.testing.assert_allclose(flow._q_at(critic, obs)(action), whole, rtol=1e-5, atol=1e-5)
    field = nets.field.init(keys[3], obs, action, jnp.zeros(9))
    t = jax.random.uniform(keys[4], (9,))
    split = flow.split_mlp(field["params"]["MLP_0"], None, obs)(flow._moving(action, t))
    np.testing.assert_allclose(split, nets.field.apply(field, obs, action, t), rtol=1e-5, atol=1e-6)
