"""Compilation: one compile per model and settings, not per clip; the persistent cache serves a
second process; MuJoCo Warp where it can run."""

from __future__ import annotations

import numpy as np
from arm_reference import arm_reference
from toy_models import muscle_pendulum

from msconvert.emulator.learn import compiling
from msconvert.emulator.learn.agents import flow
from msconvert.emulator.learn.env import EnvConfig, frame_bucket
from msconvert.emulator.learn.train import TrainConfig, make_trainer

# What is compiled is the subject here, not learning: the smallest networks and model.
TINY_FLOW = flow.Config(
    warmup_steps=4,
    batch_size=8,
    replay_size=256,
    critic_hidden=(16,),
    policy_hidden=(16,),
    flow_hidden=(16,),
    euler_steps=2,
    ascent_steps=2,
)


def tiny_config(backend: str) -> TrainConfig:
    return TrainConfig(
        warm_start=False,
        backend=backend,
        n_envs=2,
        budget_steps=8,
        chunk_steps=2,
        evaluations=0,
        agent_config=TINY_FLOW,
        env=EnvConfig(episode_steps=50, future_steps=(1,)),
    )


def test_frame_buckets():
    assert frame_bucket(2) == frame_bucket(512) == 512
    assert frame_bucket(513) == frame_bucket(1024) == 1024
    assert frame_bucket(7500) == 8192


def _two_clips():
    model = muscle_pendulum()
    refs = [arm_reference(model, seconds=s, seed=k, clip_id=f"c{k}") for k, s in enumerate((1, 3))]
    assert refs[0].qpos.shape[0] != refs[1].qpos.shape[0]
    return model, refs


def test_two_clips_of_different_lengths_share_one_compile():
    """Per-clip trainings in one process (the C engine's path): the learner and the task are
    compiled once, and each trainer still runs on its own clip (the references are an argument
    of the compiled functions, not a constant in them)."""
    model, refs = _two_clips()
    compiling.clear_shared()
    with compiling.watch() as compiles:
        for ref in refs:
            trainer = make_trainer(model, [ref], tiny_config("cpu"))
            ts = trainer.init()
            # Reset states are this clip's reference states.
            frames = np.asarray(ts.env.frame)
            np.testing.assert_allclose(np.asarray(ts.env.view.qpos), ref.qpos[frames], atol=1e-5)
            ts, metrics = trainer.run_chunk(ts)
            assert np.isfinite(float(metrics["reward"]))
    names = [c.name for c in compiles]
    for name in ("jit(learn_part)", "jit(act_only)", "jit(advance)", "jit(start)"):
        assert names.count(name) == 1, (name, names)


def test_mjx_chunk_is_one_graph_for_clips_of_different_lengths():
    """On MJX the whole training chunk is one jitted function shared by the trainers of a model
    and settings; for two clips of different lengths it lowers to the same program (so XLA
    compiles it once), and the clips' values are nowhere in it."""
    model, refs = _two_clips()
    compiling.clear_shared()
    trainers = [make_trainer(model, [ref], tiny_config("mjx")) for ref in refs]
    states = [t.init() for t in trainers]
    for ts, ref in zip(states, refs, strict=True):
        frames = np.asarray(ts.env.frame)
        np.testing.assert_allclose(np.asarray(ts.env.view.qpos), ref.qpos[frames], atol=1e-5)
    assert trainers[0].chunk_fn is trainers[1].chunk_fn
    texts = [t.lower_chunk(ts).as_text() for t, ts in zip(trainers, states, strict=True)]
    assert texts[0] == texts[1]
    assert trainers[0].env.task.qpos.shape == trainers[1].env.task.qpos.shape
