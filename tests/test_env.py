"""The imitation environment: shapes, zero error on the reference, termination, divergence,
multi-clip padding, failure-weighted sampling, the wrappers, and the C engine agreeing with MJX."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from arm_reference import arm_reference
from toy_models import planar_arm

from msconvert.emulator.backends import make_backend
from msconvert.emulator.learn.env import (
    EnvConfig,
    VecEnv,
    make_env,
    make_reference_set,
    observe,
    sample_reset,
    tracking,
    training_env,
)


@pytest.fixture(scope="module")
def arm():
    model = planar_arm(6)
    short = arm_reference(model, seconds=1.0, seed=1, clip_id="short")
    long = arm_reference(model, seconds=3.0, seed=2, clip_id="long")
    refs = make_reference_set([short, long], model, long.body_names)
    return model, refs, short, long


def test_reference_set_pads_and_masks(arm):
    model, refs, short, long = arm
    assert refs.qpos.shape == (2, len(long.qpos), model.nq)
    assert list(refs.length) == [len(short.qpos), len(long.qpos)]
    # Padding repeats the last frame: a short clip never reads beyond its end.
    pad = refs.qpos[0, len(short.qpos) :]
    np.testing.assert_array_equal(pad, np.broadcast_to(short.qpos[-1], pad.shape))


def test_state_on_the_reference_has_zero_error(arm):
    model, refs, *_ = arm
    env = make_env(model, refs, EnvConfig(), backend="cpu")
    for seed in range(4):
        state = env.reset(jax.random.PRNGKey(seed))
        track = env.track(state.view, state.clip, state.frame)
        assert np.abs(np.asarray(track["error"])).max() < 1e-5
        assert state.obs.shape == (env.obs_dim,) and np.isfinite(np.asarray(state.obs)).all()
    envs = training_env(env, 8)
    state = envs.reset(jax.random.PRNGKey(0))
    assert state.obs.shape == (8, env.obs_dim) and np.isfinite(np.asarray(state.obs)).all()
    assert (np.asarray(state.frame) < np.asarray(refs.length)[np.asarray(state.clip)] - 1).all()
    envs.close()


def test_steps_terminate_truncate_and_reset(arm):
    model, refs, *_ = arm
    env = training_env(make_env(model, refs, EnvConfig(episode_steps=3), backend="cpu"), 4)
    state = env.reset(jax.random.PRNGKey(1))
    seen_trunc = False
    for _ in range(3):
        state, info = env.step(state, jnp.zeros((4, model.nu)))
        seen_trunc |= bool(np.asarray(info.truncated).any())
    assert seen_trunc and (np.asarray(state.steps) < 3).all()
    assert info.error.shape == (4, env.error_dim)
    # A NaN action is a diverged, terminated environment, never an exception; it is reset.
    bad = jnp.zeros((4, model.nu)).at[0].set(jnp.nan)
    state, info = env.step(state, bad)
    assert bool(info.terminated[0]) and bool(info.diverged[0]) and int(state.steps[0]) == 0
    assert np.isfinite(np.asarray(state.obs)).all()


def test_large_error_terminates(arm):
    model, refs, *_ = arm
    ended = {}
    for threshold in (1e-5, 0.3):
        cfg = EnvConfig(termination_body_error_m=threshold)
        env = training_env(make_env(model, refs, cfg, backend="cpu"), 4)
        state = env.reset(jax.random.PRNGKey(2))
        ended[threshold] = np.zeros(4, bool)
        for _ in range(10):  # all muscles on: the arm leaves the reference
            state, info = env.step(state, jnp.ones((4, model.nu)))
            ended[threshold] |= np.asarray(info.terminated)
            assert not np.asarray(info.terminated & info.truncated).any()
    assert ended[1e-5].all() and not ended[0.3].any()


def test_failure_weighted_sampling_prefers_failing_clips(arm):
    model, refs, *_ = arm
    env = make_env(model, refs, EnvConfig(sample_by_failure=True, failure_weight=50.0), "cpu")
    clip, _ = sample_reset(env.task, env.config, jax.random.PRNGKey(0), jnp.array([1.0, 0.0]), 2000)
    assert np.mean(np.asarray(clip) == 0) > 0.9
    env = make_env(model, refs, EnvConfig(), "cpu")
    clip, _ = sample_reset(env.task, env.config, jax.random.PRNGKey(0), jnp.array([1.0, 0.0]), 2000)
    assert 0.4 < np.mean(np.asarray(clip) == 0) < 0.6


def _visits(env, clip_index: int, n: int = 20_000) -> np.ndarray:
    """How often each frame of a clip is visited by episodes from sampled resets (no falls)."""
    clip, frame = sample_reset(env.task, env.config, jax.random.PRNGKey(3), jnp.zeros(2), n)
    length = int(env.refs.length[clip_index])
    visits = np.zeros(length)
    for start in np.asarray(frame)[np.asarray(clip) == clip_index]:
        visits[start : min(start + env.config.episode_steps, length - 1) + 1] += 1
    return visits / visits.max()


def test_reset_frames_visit_the_first_frames_as_often_as_the_rest(arm):
    model, refs, *_ = arm
    horizon = 60  # the long clip has 150 frames
    even = make_env(model, refs, EnvConfig(episode_steps=horizon), "cpu")
    uniform = make_env(model, refs, EnvConfig(episode_steps=horizon, even_visitation=False), "cpu")
    v_even, v_uniform = _visits(even, 1), _visits(uniform, 1)
    plateau = lambda v: np.median(v[horizon:-1])  # noqa: E731  frames every start can reach
    # Uniform starts: frame 0 is seen only by the episodes that start there (~1/60 of the rest).
    assert v_uniform[0] / plateau(v_uniform) < 0.05
    # Even visitation: every frame at least about as often as the plateau; the first H frames at
    # most twice as often (the clamped starts run from frame 0 through them).
    ratio = v_even[:-1] / plateau(v_even)
    assert ratio.min() > 0.85 and ratio[0] > 0.85 and ratio.max() < 2.2
    # Frames stay valid starts: never the last frame, never negative, within each clip.
    for env in (even, uniform):
        clip, frame = sample_reset(env.task, env.config, jax.random.PRNGKey(4), jnp.zeros(2), 4000)
        last = np.asarray(refs.length)[np.asarray(clip)] - 1
        assert (np.asarray(frame) >= 0).all() and (np.asarray(frame) < last).all()


def test_bad_references_are_clear_errors(arm):
    model, _, short, _ = arm
    names = short.body_names
    replace = dataclasses.replace
    with pytest.raises(ValueError, match="qpos has shape"):
        make_reference_set([replace(short, qpos=short.qpos[:, :1])], model, names)
    nan = short.qvel.copy()
    nan[3, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        make_reference_set([replace(short, qvel=nan)], model, names)
    one_frame = replace(
        short, qpos=short.qpos[:1], qvel=short.qvel[:1], body_pos=short.body_pos[:1]
    )
    with pytest.raises(ValueError, match="at least 2 frames"):
        make_reference_set([one_frame], model, names)
    with pytest.raises(ValueError, match="not in the model"):
        make_reference_set([short], model, ("no_such_body",))


def test_mjx_and_c_engine_agree_and_mjx_runs_in_scan(arm):
    model, refs, *_ = arm
    cpu = training_env(make_env(model, refs, EnvConfig(), backend="cpu"), 4)
    mjx = training_env(make_env(model, refs, EnvConfig(), backend="mjx"), 4)
    a, b = cpu.reset(jax.random.PRNGKey(3)), mjx.reset(jax.random.PRNGKey(3))
    np.testing.assert_allclose(np.asarray(a.obs), np.asarray(b.obs), atol=1e-4)
    actions = jax.random.uniform(jax.random.PRNGKey(4), (5, 4, model.nu), minval=-1, maxval=1)
    for k in range(5):
        a, ia = cpu.step(a, actions[k])
        b, ib = mjx.step(b, actions[k])
        np.testing.assert_allclose(np.asarray(ia.error), np.asarray(ib.error), atol=2e-3)
        np.testing.assert_allclose(np.asarray(ia.next_obs), np.asarray(ib.next_obs), atol=2e-2)

    def body(state, action):
        state, info = mjx.step(state, action)
        return state, info.joint_error_rad

    _, errors = jax.jit(lambda s, acts: jax.lax.scan(body, s, acts))(b, actions)
    assert errors.shape == (5, 4) and np.isfinite(np.asarray(errors)).all()
    # The pure functions of one environment are also usable directly.
    env, one = mjx.unwrapped, jax.tree.map(lambda x: x[0], b.envs)
    assert observe(env.task, env.layout, env.config, one.view, one.clip, one.frame).shape == (
        env.obs_dim,
    )
    assert tracking(env.task, env.layout, one.view, one.clip, one.frame)["error"].shape == (
        env.error_dim,
    )
    cpu.close()


def test_one_environment_is_pure_on_mjx_and_never_resets(arm):
    """Env.reset_at / Env.step of one environment: jit, vmap and scan them on MJX; the C engine
    gives the same numbers through the same calls; a finished episode is only reported."""
    model, refs, *_ = arm
    cfg = EnvConfig(episode_steps=3)
    mjx, cpu = make_env(model, refs, cfg, "mjx"), make_env(model, refs, cfg, "cpu")
    clip, frame = 0, int(refs.length[0]) - 4
    actions = jax.random.uniform(jax.random.PRNGKey(5), (7, model.nu), minval=-1, maxval=1)
    actions = actions.at[6, 2].set(jnp.nan)  # a broken policy output, last

    @jax.jit
    def rollout(acts):
        return jax.lax.scan(lambda s, a: mjx.step(s, a), mjx.reset_at(clip, frame), acts)[1]

    infos, state, rows = rollout(actions), cpu.reset_at(clip, frame), []
    for a in actions:
        state, info = cpu.step(state, a)
        rows.append(info)
    # No reset inside step: frames run on to the clip's end, truncation is only reported.
    np.testing.assert_array_equal(np.asarray(infos.frame), frame + np.arange(1, 8))
    np.testing.assert_array_equal([int(i.frame) for i in rows], frame + np.arange(1, 8))
    assert [bool(i.truncated) for i in rows] == list(np.asarray(infos.truncated))
    assert bool(rows[2].truncated) and int(state.steps) == 7  # episode limit, then the clip end
    np.testing.assert_allclose(
        np.stack([np.asarray(i.error) for i in rows[:6]]), np.asarray(infos.error[:6]), atol=2e-3
    )
    # A NaN action: diverged and terminated, reported, never raised, on both backends.
    assert bool(rows[6].diverged) and bool(rows[6].terminated)
    assert bool(infos.diverged[6]) and bool(infos.terminated[6])
    assert not np.asarray(infos.terminated[:6]).any()
    # vmap of the one-env functions is a batch; the C engine batches through VecEnv.
    keys = jax.random.split(jax.random.PRNGKey(6), 3)
    batch = jax.eval_shape(jax.vmap(mjx.reset), keys)
    assert batch.obs.shape == (3, mjx.obs_dim) and batch.clip.shape == (3,)
    vec = VecEnv(cpu, 3)
    many = vec.reset_at(jnp.array([0, 1, 1]), jnp.array([frame, 5, 6]))
    many, info = vec.step(many, jnp.stack([actions[0]] * 3))
    np.testing.assert_array_equal(np.asarray(info.error[0]), np.asarray(rows[0].error))
    assert info.recording is None  # training envs do not record
    vec.close()


def test_mjx_resets_read_their_view_from_tables_the_c_engine_computed(arm):
    """A reset on MJX takes the actuators' lengths, velocities and forces and the body positions
    of its start state from the task's tables: the same as MJX and the C engine compute, and no
    kinematics in the reset's graph."""
    model, refs, *_ = arm
    mjx, cpu = make_env(model, refs, EnvConfig(), "mjx"), make_env(model, refs, EnvConfig(), "cpu")
    assert cpu.task.start_length is None and mjx.task.start_length is not None
    clips, frames = np.array([0, 1, 1]), np.array([0, 7, int(refs.length[1]) - 1])
    states = jax.jit(jax.vmap(mjx.reset_at))(clips, frames)
    zero, bodies = jnp.zeros(model.nu), jnp.asarray(mjx.layout.body_ids)
    computed = jax.vmap(mjx.physics.view_one, in_axes=(0, None, None))(states.sim, zero, bodies)
    for name, got, want in zip(states.view._fields, states.view, computed, strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), 1e-5, 1e-5, err_msg=name)
    for i, (c, f) in enumerate(zip(clips, frames, strict=True)):
        host = cpu.reset_at(int(c), int(f))
        np.testing.assert_allclose(np.asarray(host.obs), np.asarray(states.obs[i]), atol=1e-5)
    # A C-engine copy of the MJX task (DAgger's controller runs) computes its resets again.
    copy = mjx.with_physics(make_backend("cpu", model, 1, mjx.frame_skip, nthread=1))
    assert copy.task.start_length is None and mjx.task.start_length is not None
    np.testing.assert_allclose(
        np.asarray(copy.reset_at(1, 7).obs), np.asarray(states.obs[1]), 0, 1e-5
    )
    sim = jax.tree.map(lambda x: x[0], states.sim)
    reset_graph = jax.jit(mjx.reset_at).lower(0, 0).as_text()
    view_graph = jax.jit(mjx.physics.view_one).lower(sim, zero, bodies).as_text()
    assert len(reset_graph) < len(view_graph)
