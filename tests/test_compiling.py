"""Compilation: one compile per model and settings, not per clip; the persistent cache serves a
second process; MuJoCo Warp where it can run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from arm_reference import arm_reference
from toy_models import muscle_pendulum
from toy_tasks import tiny_flow

from msconvert.emulator.backends import make_backend
from msconvert.emulator.learn import compiling
from msconvert.emulator.learn.env import EnvConfig, frame_bucket
from msconvert.emulator.learn.train import TrainConfig, make_trainer


def tiny_config(backend: str) -> TrainConfig:
    return TrainConfig(
        warm_start=False,
        backend=backend,
        n_envs=2,
        budget_steps=8,
        chunk_steps=2,
        evaluations=0,
        agent_config=tiny_flow(),
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
            # The C engine's state never goes through JAX: float64 NumPy, as it steps.
            sim = jax.tree.leaves(ts.env.sim)
            assert sim and all(isinstance(x, np.ndarray) for x in sim)
            assert {x.dtype for x in sim if x.dtype.kind == "f"} == {np.dtype(np.float64)}
    names = [c.name for c in compiles]
    for name in ("jit(learn_part)", "jit(act_only)", "jit(advance)", "jit(start)", "jit(learner)"):
        assert names.count(name) == 1, (name, names)


def test_mjx_chunk_is_one_graph_for_clips_of_different_lengths():
    """On MJX the whole training chunk is one jitted function shared by the trainers of a model
    and settings; for two clips of different lengths it lowers to the same program (so XLA
    compiles it once), and the clips' values are nowhere in it."""
    model, refs = _two_clips()
    compiling.clear_shared()
    trainers = [make_trainer(model, [ref], tiny_config("mjx")) for ref in refs]
    with compiling.watch() as compiles:
        states = [t.init() for t in trainers]
    # A fresh state is one compiled call (not an executable per op), shared by both trainers.
    assert [c.name for c in compiles] == ["jit(fresh_state)"]
    for ts, ref in zip(states, refs, strict=True):
        frames = np.asarray(ts.env.frame)
        np.testing.assert_allclose(np.asarray(ts.env.view.qpos), ref.qpos[frames], atol=1e-5)
    assert trainers[0].chunk_fn is trainers[1].chunk_fn
    texts = [t.lower_chunk(ts).as_text() for t, ts in zip(trainers, states, strict=True)]
    assert texts[0] == texts[1]
    assert trainers[0].env.task.qpos.shape == trainers[1].env.task.qpos.shape


_PROCESS = """
import json, sys
sys.path.insert(0, {tests!r})
from arm_reference import arm_reference
from toy_models import muscle_pendulum
from toy_tasks import tiny_flow
import jax, jax.numpy as jnp
from msconvert.emulator.backends import make_backend
from msconvert.emulator.learn import compiling
from msconvert.emulator.learn.env import EnvConfig, make_env, make_reference_set, training_env

compiling.use_cache({cache!r})
model = muscle_pendulum()
ref = arm_reference(model, seconds={seconds}, seed={seed})
refs = make_reference_set([ref], model, ref.body_names)
with compiling.watch() as compiles:
    envs = training_env(make_env(model, refs, EnvConfig(episode_steps=5), "cpu"), 2)
    state = envs.reset(jax.random.PRNGKey(0))
    for _ in range(6):  # past an episode's end: the auto-reset runs too
        state, info = envs.step(state, jnp.zeros((2, model.nu)))
print(json.dumps([[c.name, c.seconds, c.cache_hit] for c in compiles]))
"""


def _process(cache: Path, seconds: float, seed: int) -> list[tuple[str, float, bool]]:
    code = _PROCESS.format(
        tests=str(Path(__file__).parent), cache=str(cache), seconds=seconds, seed=seed
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    return [tuple(row) for row in json.loads(done.stdout.strip().splitlines()[-1])]


def test_a_second_process_hits_the_persistent_cache(tmp_path):
    """A new process with the same model and settings, on another clip, loads every compiled
    function from the persistent cache instead of compiling it."""
    cache = tmp_path / "jax_cache"
    first = _process(cache, seconds=1.0, seed=0)
    assert first and not any(hit for _, _, hit in first)
    assert len(compiling.cache_entries(cache)) >= len({name for name, _, _ in first})
    second = _process(cache, seconds=3.0, seed=1)  # another clip: its values are no constant
    task = {"jit(start)", "jit(advance)", "jit(restart)", "jit(draw)"}
    assert task <= {name for name, _, _ in first}
    assert all(hit for name, _, hit in second if name in task), second
    assert sum(hit for _, _, hit in second) >= 0.9 * len(second)
    cold, warm = (sum(s for _, s, _ in run) for run in (first, second))
    assert warm < 0.5 * cold, (cold, warm)


def _why_no_warp() -> str | None:
    """Why MuJoCo Warp cannot run here (None: it can)."""
    if jax.default_backend() != "gpu":
        return f"MuJoCo Warp needs a GPU; JAX runs on {jax.default_backend()}"
    try:
        import mujoco_warp  # noqa: F401
    except ImportError as exc:
        return f"mujoco_warp is not installed ({exc})"
    return None


def test_the_mjx_backend_picks_its_implementation():
    """Warp where a GPU and mujoco_warp are both present, else MJX's JAX implementation; the
    Warp path stays importable either way."""
    from msconvert.emulator.backends.mjx import default_impl

    assert default_impl() == ("warp" if _why_no_warp() is None else "jax")


@pytest.mark.skipif(_why_no_warp() is not None, reason=str(_why_no_warp()))
def test_mujoco_warp_steps_like_the_c_engine():
    """On a GPU with mujoco_warp the mjx backend runs on Warp, and its control step agrees with
    MuJoCo's C engine."""
    model = muscle_pendulum()
    cpu = make_backend("cpu", model, 2, 5)
    warp = make_backend("mjx", model, 2, 5)
    assert warp.impl == "warp"
    qpos, qvel = np.array([[0.2], [-0.3]]), np.zeros((2, model.nv))
    act = np.full((2, model.na), 0.05)
    ctrl = np.array([[0.8, 0.1], [0.1, 0.8]])
    a, b = cpu.init(qpos, qvel, act), warp.init(qpos, qvel, act)
    for _ in range(20):
        a, b = cpu.step(a, ctrl).state, warp.step(b, ctrl).state
    for x, y in zip(cpu.arrays(a), warp.arrays(b), strict=True):
        np.testing.assert_allclose(np.asarray(y), x, atol=2e-3)
    cpu.close()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, "--xla_cpu_use_fusion_emitters=false"),
        (
            "--xla_force_host_platform_device_count=2",
            "--xla_force_host_platform_device_count=2 --xla_cpu_use_fusion_emitters=false",
        ),
        ("--xla_cpu_use_fusion_emitters=true", "--xla_cpu_use_fusion_emitters=true"),
    ],
)
def test_importing_msconvert_turns_off_the_cpu_fusion_emitters_unless_the_user_chose(
    given, expected
):
    """XLA:CPU's fusion emitters made one MJX MyoFullBody step take minutes (RESULTS.md): a
    fresh process that imports msconvert runs without them, and keeps a user's own choice."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if given is not None:
        env["XLA_FLAGS"] = given
    code = "import os, msconvert; print(os.environ['XLA_FLAGS'])"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert done.stdout.strip() == expected


_CHUNK_PROCESS = """
import json, sys
sys.path.insert(0, {tests!r})
from arm_reference import arm_reference
from test_compiling import tiny_config
from toy_models import muscle_pendulum
from msconvert.emulator.learn import compiling
from msconvert.emulator.learn.train import make_trainer

compiling.use_cache({cache!r})
model = muscle_pendulum()
trainer = make_trainer(model, [arm_reference(model, seconds=1.0, seed=0)], tiny_config("mjx"))
ts = trainer.init()
with compiling.watch() as compiles:
    ts, metrics = trainer.run_chunk(ts)
    ts, metrics = trainer.run_chunk(ts)
print(json.dumps({{
    "source": trainer.chunk_fn.last_source,
    "metrics": {{k: float(v) for k, v in metrics.items()}},
    "compiles": [[c.name, c.cache_hit] for c in compiles],
}}))
"""


def _chunk_process(cache: Path) -> dict:
    code = _CHUNK_PROCESS.format(tests=str(Path(__file__).parent), cache=str(cache))
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=600
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_new_process_runs_the_kept_chunk_program_without_tracing_it(tmp_path):
    """The MJX training chunk is kept on disk once traced (`compiling.Persisted`): a second
    process with the same code and settings loads it, XLA serves its executable from the cache,
    and it computes the same training step; a damaged file is traced and written again."""
    cache = tmp_path / "jax_cache"
    first = _chunk_process(cache)
    assert first["source"] == "exported"
    kept = sorted((cache / compiling.EXPORT_FOLDER).glob("train_chunk-*.jaxexport"))
    assert len(kept) == 1
    second = _chunk_process(cache)
    assert second["source"] == "disk"
    assert second["metrics"] == first["metrics"]  # the same program on the same seed
    assert second["compiles"] and all(hit for _, hit in second["compiles"]), second
    assert "jit(train_chunk)" in {name for name, _ in second["compiles"]}  # as progress says it
    kept[0].write_bytes(kept[0].read_bytes()[:100])  # truncated
    third = _chunk_process(cache)
    assert third["source"] == "exported"
    assert third["metrics"] == first["metrics"]
    assert kept[0].stat().st_size > 100


def test_importing_msconvert_after_jax_started_warns_that_the_flag_comes_too_late():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    code = "import jax; jax.devices(); import msconvert"
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    assert "import msconvert first" in done.stderr
