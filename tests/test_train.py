"""The trainer on the planar arm: it learns, the discriminator follows, resume is exact."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
from arm_reference import arm_reference, arm_reference_with_excitation
from toy_models import planar_arm

from msconvert.emulator.learn.agents import flow
from msconvert.emulator.learn.checkpoint import CheckpointError, latest_step, read_meta
from msconvert.emulator.learn.emulate import emulate
from msconvert.emulator.learn.env import EnvConfig
from msconvert.emulator.learn.train import TrainConfig, TrainError, make_trainer, train

SMALL_FLOW = flow.Config(
    warmup_steps=500,
    batch_size=128,
    critic_hidden=(128, 128),
    policy_hidden=(128, 128),
    flow_hidden=(128, 128),
)


@pytest.fixture(scope="module")
def arm():
    model = planar_arm(6)
    return model, arm_reference(model)


def config(**changes) -> TrainConfig:
    base = dict(
        agent="flow",
        reward="adversarial",
        warm_start=False,
        backend="cpu",
        n_envs=16,
        budget_steps=8000,
        chunk_steps=25,
        agent_config=SMALL_FLOW,
        env=EnvConfig(episode_steps=100),
    )
    base.update(changes)
    return TrainConfig(**base)


def evaluate(trainer, agent_state, obs_norm) -> dict[str, float]:
    return emulate(
        trainer.env, trainer.agent, agent_state, obs_norm, trainer.config.agent_config
    ).metrics


def test_flow_with_adversarial_reward_learns_to_track(arm, tmp_path):
    model, ref = arm
    trainer = make_trainer(model, [ref], config())
    fresh = trainer.init()
    before = evaluate(trainer, fresh.agent, fresh.obs_norm)["tracking.joint_error_deg_mean"]
    policy = train(trainer, tmp_path / "ckpt")
    after = evaluate(trainer, *policy.params)["tracking.joint_error_deg_mean"]
    assert before > 20.0, before  # the untrained policy misses by a wide margin
    assert after < 12.0, (before, after)
    curve = [r for r in policy.curve if "joint_error_deg" in r]
    q = len(curve) // 4
    early, late = curve[:q], curve[-q:]
    # The discriminator's reward rises as the tracking error falls.
    assert np.mean([r["reward"] for r in late]) > np.mean([r["reward"] for r in early]) + 0.1
    assert np.mean([r["joint_error_deg"] for r in late]) < np.mean(
        [r["joint_error_deg"] for r in early]
    )
    assert policy.step == 8000 and latest_step(tmp_path / "ckpt") == 8000
    # Policy selection: the starting policy and 8 snapshots were emulated; the exported policy
    # is the best of them, and emulating it again gives exactly its recorded figures.
    evals = [r for r in policy.curve if "eval_score" in r]
    assert len(evals) == 1 + trainer.config.evaluations
    assert evals[0]["env_steps"] == 0.0 and evals[-1]["env_steps"] == 8000.0
    best = min(evals, key=lambda r: r["eval_score"])
    assert after == pytest.approx(best["eval_joint_error_deg"], abs=1e-6)
    assert best["eval_score"] <= evals[-1]["eval_score"]
    meta, _ = read_meta(tmp_path / "ckpt")
    assert meta["clip_ids"] == ["arm"] and meta["config"]["agent"] == "flow"
    assert meta["muscles"] == list(trainer.env.muscle_names)


class Interrupt(Exception):
    pass


def test_resume_after_interruption_matches_uninterrupted_run(arm, tmp_path):
    model, ref = arm
    cfg = config(budget_steps=2400, checkpoint_every_s=0.0, agent_config=SMALL_FLOW)
    whole = train(make_trainer(model, [ref], cfg), tmp_path / "whole")

    chunks = []

    def kill_after_three(row):
        chunks.append(row)
        if len(chunks) == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(make_trainer(model, [ref], cfg), tmp_path / "cut", progress=kill_after_three)
    # Checkpoints are written after each chunk's progress report: two chunks are on disk.
    assert latest_step(tmp_path / "cut") == 2 * 16 * 25
    with pytest.raises(TrainError, match="resume"):
        train(make_trainer(model, [ref], cfg), tmp_path / "cut")
    resumed = train(make_trainer(model, [ref], cfg), tmp_path / "cut", resume=True)
    assert resumed.step == whole.step == 2400
    a, b = whole.params[0].source, resumed.params[0].source
    for x, y in zip(
        np.concatenate([np.ravel(v) for v in jax_leaves(a)]),
        np.concatenate([np.ravel(v) for v in jax_leaves(b)]),
        strict=True,
    ):
        assert abs(x - y) <= 1e-4 * (1 + abs(x))
    # Another setup refuses the checkpoint instead of silently mixing runs.
    with pytest.raises(TrainError, match="other settings"):
        train(make_trainer(model, [ref], config(n_envs=8)), tmp_path / "cut", resume=True)


def jax_leaves(tree):
    import jax

    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_without_evaluations_the_last_snapshot_is_exported(arm, tmp_path):
    from msconvert.emulator.learn.checkpoint import restore
    from msconvert.emulator.learn.train import selected

    model, ref = arm
    trainer = make_trainer(model, [ref], config(budget_steps=800, evaluations=0))
    policy = train(trainer, tmp_path / "last")
    assert not [r for r in policy.curve if "eval_score" in r]
    state = restore(tmp_path / "last", trainer.init())[0]
    assert not np.isfinite(float(state.best.score)) and selected(trainer, state) is state
    exported, last = jax_leaves(policy.params[0].source), jax_leaves(state.agent.source)
    for x, y in zip(exported, last, strict=True):
        np.testing.assert_array_equal(x, y)


def test_warm_start_clones_the_known_excitations(arm, tmp_path):
    model, ref = arm
    excitation = arm_reference_with_excitation(model)[1]
    activations = [np.clip(excitation, 0, 1)]
    cfg = config(warm_start=True, bc_steps=400, budget_steps=16 * 25)
    trainer = make_trainer(model, [ref], cfg, activations=activations, excitations=[excitation])
    cold = trainer.init()
    warm, bc = trainer.warm_start(cold)
    assert bc["bc_mse_after"] < 0.25 * bc["bc_mse_before"]
    cold_error = evaluate(trainer, cold.agent, cold.obs_norm)["tracking.joint_error_deg_mean"]
    warm_error = evaluate(trainer, warm.agent, warm.obs_norm)["tracking.joint_error_deg_mean"]
    assert warm_error < 0.6 * cold_error, (cold_error, warm_error)
    with pytest.raises(TrainError, match="excitations"):
        make_trainer(model, [ref], cfg)


def test_bad_settings_are_clear_errors(arm, tmp_path):
    model, ref = arm
    with pytest.raises(TrainError, match="agent"):
        make_trainer(model, [ref], config(agent="dqn"))
    with pytest.raises(TrainError, match="reward"):
        make_trainer(model, [ref], config(reward="sparse"))
    with pytest.raises(TrainError, match="no references"):
        make_trainer(model, [], config())
    with pytest.raises(TrainError, match="evaluations"):
        make_trainer(model, [ref], config(evaluations=-1))
    bad = dataclasses.replace(ref, qpos=ref.qpos[:, :1])
    with pytest.raises(ValueError, match="qpos"):
        make_trainer(model, [bad], config())
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError):
        from msconvert.emulator.learn.checkpoint import restore

        restore(tmp_path / "empty", {"x": np.zeros(2)})
    shutil.rmtree(tmp_path / "empty")


def test_stochastic_rollouts_are_seeded_and_differ(arm):
    model, ref = arm
    trainer = make_trainer(model, [ref], config())
    ts = trainer.init()

    def rollout(**kw):
        return emulate(
            trainer.env, trainer.agent, ts.agent, ts.obs_norm, trainer.config.agent_config, **kw
        )

    one, again, two = (rollout(deterministic=False, seed=s) for s in (1, 1, 2))
    mean = rollout()
    np.testing.assert_array_equal(one.activation, again.activation)  # a seed is a rollout
    assert np.nanmax(np.abs(one.activation - two.activation)) > 1e-3
    assert np.nanmax(np.abs(one.excitation - mean.excitation)) > 1e-3
    # The deterministic emulation ignores the seed.
    np.testing.assert_array_equal(mean.activation, rollout(seed=7).activation)


def test_initial_state_starts_a_fresh_run_from_another_runs_networks(arm, tmp_path):
    import jax
    import jax.numpy as jnp

    model, ref = arm
    base = train(make_trainer(model, [ref], config(budget_steps=1200)), tmp_path / "base")
    tuned_trainer = make_trainer(model, [ref], config(budget_steps=400, seed=5))
    start = np.concatenate([np.ravel(x) for x in jax_leaves(base.params[0].source)])
    fresh = np.concatenate([np.ravel(x) for x in jax_leaves(tuned_trainer.init().agent.source)])
    calls = []

    def initial(ts):
        calls.append(1)  # (copies: training donates the state's buffers)
        agent, norm = jax.tree.map(jnp.copy, base.params)
        return ts._replace(agent=agent, obs_norm=norm)

    tuned = train(tuned_trainer, tmp_path / "tuned", initial=initial)
    after = np.concatenate([np.ravel(x) for x in jax_leaves(tuned.params[0].source)])
    assert calls == [1] and tuned.step == 400
    assert np.linalg.norm(after - start) < 0.25 * np.linalg.norm(fresh - start)
    # A resumed run continues from its own checkpoint: `initial` is not applied again.
    again = train(tuned_trainer, tmp_path / "tuned", resume=True, initial=initial)
    assert calls == [1] and again.step == 400


def test_a_checkpoint_without_the_newer_settings_resumes_at_their_defaults(arm):
    """A run started by an msconvert without distinct solutions resumes (its teacher was
    solution 0); another solution's run does not."""
    import dataclasses

    from msconvert.emulator.learn.train import _check_compatible

    model, ref = arm
    trainer = make_trainer(model, [ref], config())
    old = trainer.config.to_json()
    del old["solution"], old["solutions"]
    meta = {"config": old, "clip_ids": ["arm"], "model_sha256": trainer.model_sha256}
    _check_compatible(meta, trainer)  # resumes
    other = dataclasses.replace(trainer.config, solution=1)
    with pytest.raises(TrainError, match=r"other settings \(solution\)"):
        _check_compatible({**meta, "config": other.to_json()}, trainer)
