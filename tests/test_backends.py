"""Simulation backends (CPU rollout, MJX), their recordings, and the model description they use."""

from __future__ import annotations

import warnings

import mujoco
import numpy as np
import pytest
from toy_models import planar_arm, standing_block

from msconvert.emulator.backends import DIMS, FEET, Recording, make_backend
from msconvert.emulator.model import (
    ModelError,
    compile_spec,
    control_frame_skip,
    load_model,
    muscle_fmax,
    muscle_moment_arms,
    muscle_names,
)
from msconvert.emulator.model_info import describe_model

N_ENVS, FRAME_SKIP, CONTROL_STEPS = 4, 5, 200

# CPU (float64) against MJX (JAX float32 here) after 200 control steps; measured maxima are about
# ten times smaller (qpos 1.3e-5 rad, act 1.6e-7, force 0.009 N, torque 0.0018 N m).
TOLERANCE = {
    "qpos": 2e-4,
    "qvel": 5e-3,
    "excitation": 1e-6,
    "activation": 2e-6,
    "force": 0.1,
    "length": 5e-5,
    "velocity": 5e-4,
    "joint_torque": 0.02,
    "com": 2e-5,
    "com_vel": 5e-4,
}


def smooth_excitations(rng: np.random.Generator, steps: int, nu: int) -> np.ndarray:
    knots = rng.uniform(0.0, 1.0, (N_ENVS, steps // 20 + 2, nu))
    t = np.arange(steps) / 20.0
    i = np.floor(t).astype(int)
    w = (t - i)[None, :, None]
    return knots[:, i] * (1 - w) + knots[:, i + 1] * w


@pytest.fixture(scope="module")
def arm() -> mujoco.MjModel:
    return planar_arm()


@pytest.fixture(scope="module")
def backends(arm):
    """Both backends on the arm; MJX compiles its step once for the whole module."""
    cpu = make_backend("cpu", arm, N_ENVS, FRAME_SKIP)
    mjx = make_backend("mjx", arm, N_ENVS, FRAME_SKIP)
    yield cpu, mjx
    cpu.close()


def start_state(model: mujoco.MjModel, seed: int = 0):
    rng = np.random.default_rng(seed)
    qpos = rng.uniform(-0.3, 0.3, (N_ENVS, model.nq)) + [0.0, 0.8]
    return qpos, np.zeros((N_ENVS, model.nv)), np.full((N_ENVS, model.na), 0.05)


def test_cpu_and_mjx_agree(arm, backends):
    cpu, mjx = backends
    ctrl = smooth_excitations(np.random.default_rng(1), CONTROL_STEPS, arm.nu)
    a, b = cpu.init(*start_state(arm)), mjx.init(*start_state(arm))
    err = dict.fromkeys(TOLERANCE, 0.0)
    for k in range(CONTROL_STEPS):
        sa, sb = cpu.step(a, ctrl[:, k]), mjx.step(b, ctrl[:, k])
        a, b = sa.state, sb.state
        assert not sa.diverged.any() and not np.asarray(sb.diverged).any()
        for name in TOLERANCE:
            x, y = getattr(sa.recording, name), np.asarray(getattr(sb.recording, name))
            err[name] = max(err[name], float(np.abs(x - y).max()))
    print("max |cpu - mjx| over 200 control steps:", err)
    assert all(err[n] <= TOLERANCE[n] for n in TOLERANCE), err
    # The arm has no floor: no contact force and no centre of pressure, on both backends.
    for rec in (sa.recording, sb.recording):
        assert np.all(np.asarray(rec.grf) == 0) and np.all(np.isnan(np.asarray(rec.cop)))


def test_recording_shapes_and_names(arm, backends):
    cpu, mjx = backends
    for backend in backends:
        layout = backend.layout
        assert layout.muscle_names == tuple(muscle_names(arm))
        assert layout.joint_names == ("shoulder", "elbow")
        assert layout.qpos_names == ("shoulder", "elbow")
        state = backend.init(arm.qpos0, np.zeros(arm.nv))
        rec = backend.step(state, np.full((N_ENVS, arm.nu), 0.2)).recording
        assert set(DIMS) == set(Recording._fields)
        sizes = {"env": N_ENVS, "step": 1, "muscle": 6, "joint": 2, "foot": len(FEET), "xyz": 3}
        sizes |= {"qpos": arm.nq, "qvel": arm.nv}
        for name, dims in DIMS.items():
            assert np.shape(getattr(rec, name)) == tuple(sizes[d] for d in dims), name
    # Every physics step on request.
    every = make_backend("cpu", arm, N_ENVS, FRAME_SKIP, record_physics_steps=True)
    rec = every.step(every.init(arm.qpos0, np.zeros(arm.nv)), np.zeros((N_ENVS, arm.nu)))
    assert rec.recording.force.shape == (N_ENVS, FRAME_SKIP, 6)
    every.close()


def test_the_last_recorded_physics_step_is_the_control_step(arm):
    """Recording every physics step changes nothing but the number of rows."""
    ctrl = np.random.default_rng(3).uniform(0, 1, (N_ENVS, arm.nu))
    out = []
    for every in (False, True):
        backend = make_backend("cpu", arm, N_ENVS, FRAME_SKIP, record_physics_steps=every)
        out.append(backend.step(backend.init(*start_state(arm)), ctrl).recording)
        backend.close()
    for x, y in zip(*out, strict=True):
        np.testing.assert_array_equal(x[:, -1], y[:, -1])


def test_without_recording_the_physics_is_the_same(arm):
    """record=False steps the sensor-free model: bit-identical states, no recording."""
    ctrl = smooth_excitations(np.random.default_rng(6), 10, arm.nu)
    states = []
    for record in (True, False):
        backend = make_backend("cpu", arm, N_ENVS, FRAME_SKIP, record=record)
        state = backend.init(*start_state(arm))
        for k in range(10):
            step = backend.step(state, ctrl[:, k])
            state = step.state
            assert (step.recording is None) == (not record)
        states.append(backend.arrays(state))
        backend.close()
    for x, y in zip(*states, strict=True):
        np.testing.assert_array_equal(x, y)


def test_views_agree_and_one_env_calls_match_the_batch(arm, backends):
    cpu, mjx = backends
    ctrl = np.random.default_rng(7).uniform(0, 1, (N_ENVS, arm.nu))
    bodies = np.arange(1, arm.nbody)
    a, b = cpu.step(cpu.init(*start_state(arm)), ctrl), mjx.step(mjx.init(*start_state(arm)), ctrl)
    va, vb = cpu.view(a.state, ctrl, bodies), mjx.view(b.state, ctrl, bodies)
    for name, x, y in zip(va._fields, va, vb, strict=True):
        np.testing.assert_allclose(x, np.asarray(y), atol=0.1 if name == "force" else 2e-4)
    # The view is the state after the step: MuJoCo's recording holds the state before it.
    assert np.abs(va.force - a.recording.force[:, -1]).max() > 1e-6
    # One env, without the env axis: the C engine as a batch of one.
    one = make_backend("cpu", arm, 1, FRAME_SKIP)
    q, v, act = (x[2] for x in start_state(arm))
    step = one.step_one(one.init_one(q, v, act), ctrl[2])
    for x, y in zip(step.recording, a.recording, strict=True):
        np.testing.assert_array_equal(x, y[2])
    view = one.view_one(step.state, ctrl[2], bodies)
    np.testing.assert_array_equal(view.body_pos, va.body_pos[2])
    one.close()
    with pytest.raises(ValueError, match="1 env"):
        cpu.step_one(a.state, ctrl[0])


@pytest.mark.parametrize("kind", ["cpu", "mjx"])
def test_divergence_is_flagged_not_raised(arm, backends, kind):
    backend = backends[0] if kind == "cpu" else backends[1]
    qpos, qvel, act = start_state(arm, seed=4)
    qvel[2] = 1e12  # a runaway state
    state = backend.init(qpos, qvel, act)
    ctrl = np.full((N_ENVS, arm.nu), 0.3)
    ctrl[1, 2] = np.nan  # a broken policy output
    before = backend.n_diverged
    step = backend.step(state, ctrl)
    diverged = np.asarray(step.diverged)
    np.testing.assert_array_equal(diverged, [False, True, True, False])
    assert backend.n_diverged == before + 2
    rec = step.recording
    assert np.all(np.isnan(np.asarray(rec.qpos)[1:3])) and np.all(np.isfinite(rec.qpos)[[0, 3]])
    # Diverged envs keep their (finite) pre-step state; the caller resets them.
    q, v, _ = backend.arrays(step.state)
    np.testing.assert_allclose(q[1:3], qpos[1:3], rtol=1e-6)
    fresh = backend.reset(step.state, diverged, *start_state(arm))
    q2, v2, a2 = backend.arrays(fresh)
    assert np.all(np.isfinite(v2)) and np.all(np.abs(v2) < 1e3)
    np.testing.assert_array_equal(q2[[0, 3]], q[[0, 3]])
    assert not np.asarray(backend.step(fresh, np.full((N_ENVS, arm.nu), 0.3)).diverged).any()


def test_joint_torque_is_the_sum_of_muscle_moments(arm):
    """qfrc_actuator = sum over muscles of moment arm x force, at the state the force acted at."""
    backend = make_backend("cpu", arm, N_ENVS, FRAME_SKIP, record_physics_steps=True)
    ctrl = np.random.default_rng(5).uniform(0, 1, (N_ENVS, arm.nu))
    rec = backend.step(backend.init(*start_state(arm)), ctrl).recording
    backend.close()
    data = mujoco.MjData(arm)
    for env in range(N_ENVS):
        for k in range(1, FRAME_SKIP):  # row k's forces act at row k-1's state
            data.qpos[:] = rec.qpos[env, k - 1]
            mujoco.mj_forward(arm, data)
            moments = muscle_moment_arms(arm, data)  # (muscle, dof)
            expected = moments.T @ rec.force[env, k]
            np.testing.assert_allclose(rec.joint_torque[env, k], expected, rtol=1e-9, atol=1e-9)
            assert np.abs(moments).max() > 0.01  # the muscles really cross the joints


def test_ground_reaction_force_balances_momentum():
    """sum((GRF - m g) dt) = m dv of the centre of mass: the GRF's sign, size and timing."""
    model = standing_block()
    backend = make_backend("cpu", model, 2, 10, record_physics_steps=True)
    state = backend.init(model.qpos0, np.zeros(model.nv))
    mass, dt = mujoco.mj_getTotalmass(model), model.opt.timestep
    rows = []
    for _ in range(30):
        step = backend.step(state, np.full((2, model.nu), 0.1))
        state = step.state
        rows.append(step.recording)
    backend.close()
    grf = np.concatenate([r.grf for r in rows], axis=1)  # (env, step, foot, xyz)
    com_vel = np.concatenate([r.com_vel for r in rows], axis=1)
    cop = np.concatenate([r.cop for r in rows], axis=1)
    gravity = mass * model.opt.gravity
    # Row k holds the force acting during step k and the COM velocity at its start.
    impulse = ((grf.sum(axis=2) + gravity)[:, 1:-1] * dt).sum(axis=1)
    momentum = mass * (com_vel[:, -1] - com_vel[:, 1])
    # Exact but for the O(dt) drift of semi-implicit Euler in joint coordinates (the COM Jacobian
    # changes within a step): measured 1.5e-4 of the weight's impulse; a lost foot would be 0.5.
    weight_impulse = -gravity[2] * dt * (grf.shape[1] - 2)
    np.testing.assert_allclose(impulse, momentum, atol=1e-3 * weight_impulse)
    assert np.all(grf[..., 2] >= -1e-9)  # the floor only pushes
    assert np.all((grf[..., 2] > 1.0).any(axis=1))  # both feet touch down in every env
    assert 0.5 < grf[..., 2].sum(axis=2).mean() / -gravity[2] < 1.5  # they carry the weight
    on_floor = ~np.isnan(cop[..., 0])
    assert on_floor.any() and np.allclose(cop[..., 2][on_floor], 0.0, atol=2e-3)


def test_mjx_contacts_match_cpu():
    """Foot-floor contacts on MJX (its own collision and contact sensors) against the C engine,
    recording every physics step (the scan path)."""
    model = standing_block()
    backends = [make_backend(k, model, 2, 5, record_physics_steps=True) for k in ("cpu", "mjx")]
    states = [b.init(model.qpos0, np.zeros(model.nv)) for b in backends]
    ctrl = np.full((2, model.nu), 0.1)
    grf_err = cop_err = qpos_err = 0.0
    for _ in range(20):
        steps = [b.step(s, ctrl) for b, s in zip(backends, states, strict=True)]
        states = [s.state for s in steps]
        (a, b) = (s.recording for s in steps)
        assert a.grf.shape == np.shape(b.grf) == (2, 5, 2, 3)
        grf_err = max(grf_err, float(np.abs(a.grf - np.asarray(b.grf)).max()))
        assert np.array_equal(np.isnan(a.cop), np.isnan(np.asarray(b.cop)))
        cop_err = max(cop_err, float(np.nan_to_num(np.abs(a.cop - np.asarray(b.cop))).max()))
        qpos_err = max(qpos_err, float(np.abs(a.qpos - np.asarray(b.qpos)).max()))
    backends[0].close()
    print(f"mjx vs cpu on contact: grf {grf_err:.3g} N, cop {cop_err:.3g} m, qpos {qpos_err:.3g}")
    assert a.grf[..., 2].sum(axis=-1).max() > 100.0  # the feet are loaded
    assert grf_err < 1.0 and cop_err < 2e-3 and qpos_err < 2e-4


def test_make_backend_kinds(arm):
    backend = make_backend("auto", arm, 2, 1)
    assert backend.kind == "cpu"  # no accelerator here
    backend.close()
    with pytest.raises(ValueError, match="unknown backend"):
        make_backend("gpu", arm, 2, 1)


def test_describe_toy_models():
    info = describe_model(standing_block())
    assert info.n_muscles == 8 and set(info.muscle_region) == {"leg"}
    assert info.group(side="r") == tuple(n for n in info.muscle_names if n.endswith("_r"))
    assert info.foot_bodies == {"left": ("foot_l",), "right": ("foot_r",)}
    assert [len(info.foot_geoms[s]) for s in FEET] == [1, 1]
    assert info.total_mass == pytest.approx(30.0)
    np.testing.assert_allclose(info.fmax, 1500.0)
    arm = describe_model(planar_arm(8))
    assert set(arm.muscle_region) == {"arm"} and set(arm.muscle_side) == {"center"}
    assert arm.foot_bodies == {"left": (), "right": ()}


def test_automatic_muscle_force_is_resolved():
    """force=-1 means F_max = scale / acc0, resolved by MuJoCo at run time (not in gainprm)."""
    spec = mujoco.MjSpec()
    spec.compiler.degree = False
    body = spec.worldbody.add_body(name="link")
    body.add_joint(name="hinge", type=mujoco.mjtJoint.mjJNT_HINGE, axis=[0, 1, 0])
    body.add_geom(size=[0.1, 0, 0], mass=1.0)
    act = spec.add_actuator(name="m", target="hinge", trntype=mujoco.mjtTrn.mjTRN_JOINT)
    act.set_to_muscle(tausmooth=0.0, force=-1, scale=200, range=[0.75, 1.05])
    act.lengthrange = [-1.0, 1.0]
    model = spec.compile()
    assert model.actuator_gainprm[0, 2] < 0
    fmax = muscle_fmax(model)[0]
    assert fmax == pytest.approx(200 / model.actuator_acc0[0])
    # At optimal length (the middle of `range`), zero velocity and full activation: -F_max.
    data = mujoco.MjData(model)
    data.qpos[0] = -1.0 + 2.0 * (1.0 - 0.75) / (1.05 - 0.75)
    data.act[0] = 1.0
    mujoco.mj_forward(model, data)
    assert -data.actuator_force[0] == pytest.approx(fmax, rel=1e-6)


def test_control_frame_skip(arm):
    assert control_frame_skip(arm, 100.0) == 5  # 2 ms physics
    assert control_frame_skip(arm, 500.0) == 1
    for bad in (0.0, -5.0, float("nan"), 1000.0, 60.0):  # 60 Hz is 8.33 physics steps
        with pytest.raises(ModelError):
            control_frame_skip(arm, bad)


def test_myofullbody_description_and_locked_fingers():
    info = describe_model(load_model())
    assert info.n_muscles == 416 and info.total_mass == pytest.approx(84.27, abs=0.01)
    assert info.foot_bodies["right"] == ("calcn_r", "toes_r") and info.foot_geoms["right"].size
    assert np.all(info.fmax > 0)
    assert set(info.muscle_side) == {"r", "l"}  # 'DELT1' is found right from the joints it crosses
    assert {"leg", "arm", "hand", "trunk"} <= set(info.muscle_region)
    assert info.muscle_region[info.muscle_names.index("DELT1")] == "arm"
    locked = load_model(lock_fingers=True)
    linfo = describe_model(locked)
    assert linfo.n_muscles == 354 and len(linfo.removed_muscles) == 62
    assert len(linfo.locked_joints) == 40 and locked.nq == 129 - 40
    assert "mcp2_flexion_r" in linfo.locked_joints and "flexion_r" not in linfo.locked_joints
    assert load_model(timestep=0.002).opt.timestep == 0.002


def test_phantom_inertia_is_shrunk_unless_kept():
    # MyoFullBody's massless shoulder phantoms carry 1 kg m² each: the plane-of-elevation DoF
    # then has ~2 kg m² of inertia, which a 3.8 kg arm hanging below it cannot have.
    model, kept = load_model(), load_model(keep_phantom_inertia=True)
    info = describe_model(model)
    assert {"humphant_r", "humphant1_l", "clavphant_r", "scapphant_l"} <= set(info.phantom_bodies)
    assert describe_model(kept).phantom_bodies == () and info.sha256 != describe_model(kept).sha256
    assert mujoco.mj_getTotalmass(model) == pytest.approx(mujoco.mj_getTotalmass(kept))
    gyration = np.sqrt(model.body_inertia.max(axis=1) / np.maximum(model.body_mass, 1e-12))
    assert gyration[model.body_mass > 0].max() < 1.0
    dof = model.jnt_dofadr[model.joint("elv_angle_r").id]
    inertia = []
    for m in (model, kept):
        data = mujoco.MjData(m)
        mujoco.mj_forward(m, data)
        full = np.zeros((m.nv, m.nv))
        mujoco.mj_fullM(m, data, full)
        inertia.append(full[dof, dof])
    assert inertia[0] < 0.2 < 1.5 < inertia[1]  # arm about a near-vertical axis vs 2 phantoms


def test_the_mjx_view_skips_contacts_and_changes_nothing():
    """The view's partial forward (kinematics, tendons, actuation; no collision or constraint
    solve) gives what a full `mjx.forward` gives, on a block standing on the floor."""
    import jax
    import jax.numpy as jnp
    from mujoco import mjx as mujoco_mjx

    from msconvert.emulator.backends.mjx import make_view

    block = standing_block(timestep=0.002)
    mx = mujoco_mjx.put_model(block)
    rng = np.random.default_rng(3)
    d = mujoco_mjx.make_data(mx).replace(
        qpos=jnp.asarray(block.qpos0, jnp.float32),
        qvel=jnp.asarray(0.2 * rng.standard_normal(block.nv), jnp.float32),
        act=jnp.asarray(rng.uniform(0, 1, block.na), jnp.float32),
    )
    ctrl = jnp.asarray(rng.uniform(0, 1, block.nu), jnp.float32)
    bodies = jnp.arange(1, block.nbody)
    view = jax.jit(make_view(mx))(d, ctrl, bodies)
    full = jax.jit(lambda d, c: mujoco_mjx.forward(mx, d.replace(ctrl=c)))(d, ctrl)
    assert float(full._impl.contact.dist.min()) < 0.01  # the feet touch the floor

    def get(name):
        return getattr(full._impl, name) if hasattr(full._impl, name) else getattr(full, name)

    expected = {
        "length": get("actuator_length"),
        "velocity": get("actuator_velocity"),
        "force": full.actuator_force,
        "body_pos": full.xpos[bodies],
    }
    for name, value in expected.items():
        got = np.asarray(getattr(view, name))
        np.testing.assert_allclose(got, np.asarray(value), rtol=1e-6, atol=1e-7, err_msg=name)
        assert np.abs(got).max() > 0, name


def _mesh_on_a_floor(margin: float) -> mujoco.MjModel:
    """A muscle-free box mesh resting on a floor, both with a contact margin (MS-Human-700's
    pelvis and skull meshes carry 1 mm)."""
    spec = mujoco.MjSpec()
    corners = [[x, y, z] for x in (-0.1, 0.1) for y in (-0.1, 0.1) for z in (-0.1, 0.1)]
    spec.add_mesh(name="box", uservert=np.ravel(corners).tolist())
    spec.worldbody.add_geom(
        name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[1, 1, 0.1], margin=margin
    )
    body = spec.worldbody.add_body(name="block", pos=[0, 0, 0.1])
    body.add_freejoint()
    body.add_geom(name="block", type=mujoco.mjtGeom.mjGEOM_MESH, meshname="box", margin=margin)
    return compile_spec(spec, "mesh_on_a_floor")


def test_mjx_collides_meshes_that_carry_a_margin_without_it_and_says_so():
    """MJX's JAX implementation has no mesh collision with a margin: the MJX backend drops the
    margins it would meet (with a warning naming the geoms), the block still rests on the floor,
    and the C engine's model keeps them."""
    model = _mesh_on_a_floor(0.001)
    with pytest.warns(UserWarning, match="block, floor"):
        mjx_backend = make_backend("mjx", model, 1, 10, record=False)
    assert model.geom_margin.tolist() == [0.001, 0.001]
    state = mjx_backend.init(model.qpos0[None], np.zeros((1, model.nv)))
    for _ in range(20):
        state = mjx_backend.step(state, np.zeros((1, 0))).state
    z = float(np.asarray(mjx_backend.arrays(state)[0])[0, 2])
    assert 0.095 < z < 0.101, z  # resting, neither sunk nor fallen through
    quiet = _mesh_on_a_floor(0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_backend("mjx", quiet, 1, 10, record=False)
