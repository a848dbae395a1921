"""The root assist in a policy's action (issue 14 §1): the physics it applies on both engines,
the controller's labels for it, its annealing, and that its scale is never silently dropped."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest
from block_reference import sway_reference
from test_track import FEET
from test_train import config
from toy_models import planar_arm, standing_block

from msconvert.emulator.backends import make_backend
from msconvert.emulator.learn.checkpoint import latest_step
from msconvert.emulator.learn.dagger import DaggerConfig, labels
from msconvert.emulator.learn.emulate import emulate
from msconvert.emulator.learn.env import EnvConfig, make_env, make_reference_set
from msconvert.emulator.learn.runs import emulate_policy, load_policy, warm_start_solutions
from msconvert.emulator.learn.train import charged_reward, make_trainer, train
from msconvert.emulator.model import model_sha256
from msconvert.emulator.muscles.track import TEACHER, Controller

ASSISTED = EnvConfig(episode_steps=100, assist=True)


@pytest.fixture(scope="module")
def block():
    model = standing_block()
    return model, sway_reference(model)


def _in_flight(model, ref):
    """The sway lifted 1 m: the block falls freely, so only gravity and the assist move its
    centre of mass."""
    lifted = dataclasses.replace(
        ref,
        qpos=ref.qpos + np.eye(model.nq)[2],
        body_pos=ref.body_pos + np.array([0.0, 0.0, 1.0]),
    )
    return make_reference_set([lifted], model, lifted.body_names)


def test_the_assist_pushes_the_centre_of_mass_by_its_share_of_body_weight(block):
    model, ref = block
    env = make_env(model, _in_flight(model, ref), ASSISTED, backend="cpu", record=True)
    assert env.act_dim == model.nu + 6
    # The recorded centre-of-mass velocity is the sensor's, computed at the state before the
    # step's last physics step (the recording's timing convention).
    dt = (env.frame_skip - 1) * model.opt.timestep
    relaxed = -np.ones(model.nu)  # no excitation

    def com_vz(assist_z: float) -> float:
        state = env.reset_at(0, 0)
        action = np.concatenate([relaxed, [0.0, 0.0, assist_z, 0.0, 0.0, 0.0]])
        _, info = env.step(state, np.asarray(action, np.float32))
        return float(np.asarray(info.recording.com_vel)[-1, 2])

    free_fall, g = com_vz(0.0), float(np.linalg.norm(model.opt.gravity))
    # a³ × body weight: 1 cancels gravity, 0.5 an eighth of it.
    assert com_vz(1.0) - free_fall == pytest.approx(g * dt, rel=0.02)
    assert com_vz(0.5) - free_fall == pytest.approx(g * dt / 8, rel=0.02)
    state = env.reset_at(0, 0)
    _, info = env.step(state, np.concatenate([relaxed, [0.6, 0, 0.8, 0, 0, 0]]).astype(np.float32))
    assert float(info.assist_force_bw) == pytest.approx(np.hypot(0.6**3, 0.8**3), rel=1e-5)


def _com_velocity(model, qpos, qvel) -> np.ndarray:
    data = mujoco.MjData(model)
    data.qpos[:], data.qvel[:] = qpos, qvel
    mujoco.mj_forward(model, data)
    mujoco.mj_subtreeVel(model, data)
    return data.subtree_linvel[0].copy()


def test_both_engines_apply_the_same_root_forces(block):
    """The backends' applied generalized forces, MJX against the C engine (no recording: the
    step alone compiles)."""
    model, ref = block
    lifted = _in_flight(model, ref)
    qpos, qvel = lifted.qpos[0, 0], lifted.qvel[0, 0]
    g = float(np.linalg.norm(model.opt.gravity))
    weight = float(model.body_subtreemass[0]) * g
    qfrc = np.zeros(model.nv)
    qfrc[:6] = [0.3 * weight, 0.0, weight, 0.0, 2.0, 0.0]
    ctrl = np.zeros(model.nu)
    moved = {}
    for kind in ("cpu", "mjx"):
        backend = make_backend(kind, model, 1, 10, record=False, nthread=1)
        start = backend.init(qpos[None], qvel[None])
        q1, v1, _ = backend.arrays(backend.step(start, ctrl[None], qfrc[None]).state)
        q0, v0, _ = backend.arrays(backend.step(start, ctrl[None]).state)
        moved[kind] = _com_velocity(model, q1[0], v1[0]) - _com_velocity(model, q0[0], v0[0])
        backend.close()
    dt = 10 * model.opt.timestep
    np.testing.assert_allclose(moved["cpu"], [0.3 * g * dt, 0.0, g * dt], atol=2e-3)
    np.testing.assert_allclose(moved["mjx"], moved["cpu"], atol=2e-3)


def test_an_assist_needs_a_floating_root(block):
    arm = planar_arm(6)
    from arm_reference import arm_reference

    ref = arm_reference(arm)
    with pytest.raises(ValueError, match="6-DoF root"):
        make_env(arm, make_reference_set([ref], arm, ref.body_names), ASSISTED, backend="cpu")
    # A run asked for an assist on a fixed base trains and saves without one.
    trainer = make_trainer(arm, [ref], config(env=ASSISTED, n_envs=2))
    assert not trainer.config.env.assist and trainer.env.act_dim == arm.nu
    model, sway = block
    env = make_env(model, make_reference_set([sway], model, sway.body_names), ASSISTED, "cpu")
    with pytest.raises(ValueError, match="components"):
        env.step(env.reset_at(0, 0), np.zeros(model.nu, np.float32))  # the assist left out


def test_the_labels_hold_the_controllers_root_assist_as_cube_roots(block):
    model, ref = block
    env = make_env(model, make_reference_set([ref], model, ref.body_names), ASSISTED, "cpu")
    teacher = Controller(ref, model, TEACHER, feet=FEET)
    rng = np.random.default_rng(1)
    frames = np.array([10, 40, 70])
    qpos = ref.qpos[frames].copy()
    qpos[:, 0] += 0.03 * rng.standard_normal(3)  # pushed off the reference: assist needed
    qvel = ref.qvel[frames] + 0.3 * rng.standard_normal((3, model.nv))
    act = rng.uniform(0.0, 0.3, (3, model.na))
    got = labels([teacher], env, np.zeros(3, int), frames, qpos, qvel, act)
    assert got.shape == (3, model.nu + 6) and np.all(np.abs(got) <= 1.0)
    command = Controller(ref, model, TEACHER, feet=FEET).command(40, qpos[1], qvel[1], act[1])
    want = np.cbrt(command.root_force[env.layout.root_dofs] / env.assist_limit)
    np.testing.assert_allclose(got[1, model.nu :], want, atol=1e-5)
    np.testing.assert_allclose(got[1, : model.nu], 2.0 * command.excitation - 1.0, atol=1e-5)
    assert np.abs(want).max() > 0.05  # the perturbed state needs an assist


def test_an_assisted_policy_is_never_emulated_without_its_scale(block):
    model = block[0]
    ref = sway_reference(model, seconds=0.5)  # short: the refusals need no long rollout
    trainer = make_trainer(model, [ref], config(env=ASSISTED, n_envs=2))
    ts = trainer.init()
    acfg = trainer.config.agent_config
    with pytest.raises(ValueError, match="assist_scale"):
        emulate(trainer.env, trainer.agent, ts.agent, ts.obs_norm, acfg)
    with pytest.raises(ValueError, match="within"):
        emulate(trainer.env, trainer.agent, ts.agent, ts.obs_norm, acfg, assist_scale=1.5)
    run = emulate(trainer.env, trainer.agent, ts.agent, ts.obs_norm, acfg, assist_scale=0.5)
    assert run.metrics["policy.assist_scale"] == 0.5
    assert np.isfinite(run.metrics["policy.assist_force_pct_bw"])
    arm = planar_arm(6)
    from arm_reference import arm_reference

    plain = make_trainer(arm, [arm_reference(arm)], config(n_envs=2))
    state = plain.init()
    with pytest.raises(ValueError, match="no root assist"):
        emulate(plain.env, plain.agent, state.agent, state.obs_norm, acfg, assist_scale=0.5)


@pytest.mark.slow
def test_training_anneals_the_assist_and_exports_the_scale_it_chose(block, tmp_path):
    model, ref = block
    acts, excs = warm_start_solutions([ref], model, 1, "track", feet=FEET)
    cfg = config(
        warm_start="track",
        env=ASSISTED,
        bc_steps=400,
        dagger=DaggerConfig(rounds=4, steps=25),
        budget_steps=16 * 25 * 4,
        evaluations=2,
        assist_anneal=0.5,
    )
    trainer = make_trainer(model, [ref], cfg, activations=acts, excitations=excs, feet=FEET)
    policy = train(trainer, tmp_path / "ckpt")
    warm = policy.curve[0]
    # The controller's assist taught with its excitations: the clone tracks the whole sway.
    assert warm["eval_assist_scale"] == 1.0 and warm["eval_fraction_tracked"] == 1.0, warm
    assert {"eval_off_fraction_tracked", "eval_off_joint_error_deg"} <= set(warm)
    scales = [r["assist_scale"] for r in policy.curve if "assist_scale" in r]
    assert scales == sorted(scales, reverse=True) and scales[0] == 1.0 and scales[-1] == 0.0
    evals = [r for r in policy.curve if "eval_score" in r]
    best = min(evals, key=lambda r: r["eval_score"])
    assert policy.meta["assist_scale"] == best["eval_select_scale"]
    assert "a**3" in policy.meta["action"]

    # Restored elsewhere, the policy is emulated at the scale it was chosen at.
    again, restored = load_policy(tmp_path / "ckpt", ref, model, model_sha256(model), FEET)
    assert restored.assist_scale == policy.meta["assist_scale"]
    run = emulate_policy(again, restored, ref)
    assert run.metrics["policy.assist_scale"] == restored.assist_scale
    assert latest_step(tmp_path / "ckpt") == 16 * 25 * 4
    jax.clear_caches()


def test_the_assist_charge_discounts_the_reward_and_never_makes_it_negative():
    # Subtracted, a 0.4-BW assist outweighed a 0.1 task reward: every step cost, so falling
    # early paid. Discounted, a survived step pays >= 0 and less assist pays more.
    task = jnp.array([0.0, 0.1, 0.1, 0.1, 2.0])
    force = jnp.array([5.0, 0.0, 0.2, 0.4, 0.4])
    info = SimpleNamespace(assist_force_bw=force, assist_moment_bwm=0.5 * force, effort=0.3)
    r = np.asarray(charged_reward(task, info, 1e-3, 1.0))
    assert np.all(r >= 0.0) and r[0] == 0.0
    assert r[1] > r[2] > r[3] > 0.0  # the same tracking pays less the more assist it needs
    assert r[4] > r[1]  # the charge scales with the task reward; it does not swamp it
    np.testing.assert_allclose(r[1], 0.1 * np.exp(-3e-4), rtol=1e-6)
    np.testing.assert_allclose(r[3], 0.1 * np.exp(-3e-4 - 0.6), rtol=1e-6)
