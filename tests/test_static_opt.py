"""Static optimization: inverse dynamics, muscle activations, excitations, ground forces."""

from __future__ import annotations

import dataclasses
import re

import mujoco
import numpy as np
import pytest
from toy_models import planar_arm, standing_block

from msconvert.emulator.model import floor_geom, foot_contact_geoms, load_model, muscle_actuators
from msconvert.emulator.muscles import static_opt
from msconvert.emulator.muscles.activation import (
    ActivationReach,
    advance_activation,
    invert_activation_dynamics,
)
from msconvert.emulator.muscles.static_opt import (
    StaticOptError,
    muscle_gain_bias,
    static_optimization,
)
from msconvert.emulator.parallel import balanced_spans
from msconvert.emulator.retarget.reference import Reference

BLOCK_FEET = {"left": ("foot_l",), "right": ("foot_r",)}
METRICS = {
    "static_opt.residual_force_pct_bw",
    "static_opt.residual_moment_nm",
    "static_opt.fps",
}


# A planar arm whose wrist is coupled to its elbow (wrist = 0.4·elbow + 0.05·elbow², like
# MyoFullBody's knee and shoulder couplings); dense Jacobians, one joint equality.
COUPLED_ARM = """
<mujoco model="coupled_arm">
  <option timestep="0.002"/>
  <default>
    <geom contype="0" conaffinity="0"/>
    <joint type="hinge" axis="0 -1 0" limited="true"/>
  </default>
  <worldbody>
    <site name="w0" pos="0.06 0 1.05"/><site name="w1" pos="0.06 0 0.95"/>
    <body name="upper" pos="0 0 1">
      <joint name="shoulder" range="-1.5 1.5" damping="0.5"/>
      <geom type="capsule" fromto="0 0 0 0.3 0 0" size="0.03" mass="2"/>
      <site name="u0" pos="0.1 0 0.02"/><site name="u1" pos="0.1 0 -0.02"/>
      <site name="u2" pos="0.12 0 0.03"/><site name="u3" pos="0.12 0 -0.03"/>
      <body name="fore" pos="0.3 0 0">
        <joint name="elbow" range="0 2.5" damping="0.3"/>
        <geom type="capsule" fromto="0 0 0 0.25 0 0" size="0.025" mass="1.2"/>
        <site name="f0" pos="0.05 0 0.015"/><site name="f1" pos="0.05 0 -0.015"/>
        <body name="hand" pos="0.25 0 0">
          <joint name="wrist" range="-1.2 1.2" damping="0.1"/>
          <geom type="box" size="0.04 0.02 0.01" pos="0.04 0 0" mass="0.4"/>
          <site name="h0" pos="0.03 0 0.012"/><site name="h1" pos="0.03 0 -0.012"/>
        </body>
      </body>
    </body>
  </worldbody>
  <tendon>
    <spatial name="t0"><site site="w0"/><site site="u0"/></spatial>
    <spatial name="t1"><site site="w1"/><site site="u1"/></spatial>
    <spatial name="t2"><site site="u2"/><site site="f0"/></spatial>
    <spatial name="t3"><site site="u3"/><site site="f1"/></spatial>
    <spatial name="t4"><site site="u2"/><site site="h0"/></spatial>
    <spatial name="t5"><site site="u3"/><site site="h1"/></spatial>
  </tendon>
  <equality><joint joint1="wrist" joint2="elbow" polycoef="0 0.4 0.05 0 0"/></equality>
  <actuator>
    <muscle tendon="t0" force="400"/><muscle tendon="t1" force="400"/>
    <muscle tendon="t2" force="800"/><muscle tendon="t3" force="300"/>
    <muscle tendon="t4" force="400"/><muscle tendon="t5" force="150"/>
  </actuator>
</mujoco>
"""


@pytest.fixture(scope="module")
def body() -> mujoco.MjModel:
    return load_model()


def coupled_arm() -> mujoco.MjModel:
    """COUPLED_ARM with each muscle's length range taken from the coupled joint space."""
    spec = mujoco.MjSpec.from_string(COUPLED_ARM)
    model = spec.compile()
    data = mujoco.MjData(model)
    lengths = []
    for shoulder in np.linspace(-1.5, 1.5, 7):
        for elbow in np.linspace(0.0, 2.5, 7):
            data.qpos[:] = shoulder, elbow, 0.4 * elbow + 0.05 * elbow**2
            mujoco.mj_fwdPosition(model, data)
            lengths.append(data.ten_length.copy())
    lengths = np.array(lengths)
    for i, actuator in enumerate(spec.actuators):
        actuator.lengthrange = [lengths[:, i].min(), lengths[:, i].max()]
    return spec.compile()


def simulate(
    model: mujoco.MjModel,
    excitation: np.ndarray,
    fps: float,
    qpos0: np.ndarray,
    act0: np.ndarray,
) -> tuple[Reference, np.ndarray]:
    """Forward-simulate excitations held per control interval; the reference and floor forces.

    qacc is MuJoCo's own (continuous-time) acceleration at each recorded state.
    """
    data = mujoco.MjData(model)
    data.qpos[:], data.act[:] = qpos0, act0
    steps = int(round(1 / (fps * model.opt.timestep)))
    floor = floor_geom(model) if any(model.geom_type == 0) else -1
    out: dict[str, list[np.ndarray]] = {"qpos": [], "qvel": [], "qacc": []}
    ground = []
    f6 = np.zeros(6)
    for u in excitation:
        data.ctrl[:] = u
        mujoco.mj_forward(model, data)
        for key in out:
            out[key].append(getattr(data, key).copy())
        total = np.zeros(3)
        for i in range(data.ncon):
            con = data.contact[i]
            if floor in con.geom and con.efc_address >= 0:
                mujoco.mj_contactForce(model, data, i, f6)
                total += con.frame.reshape(3, 3).T @ f6[:3] * (1 if con.geom[0] == floor else -1)
        ground.append(total)
        for _ in range(steps):
            mujoco.mj_step(model, data)
    arrays = {k: np.array(v) for k, v in out.items()}
    return Reference.from_trajectory("simulated", fps, **arrays), np.array(ground)


def replay(
    model: mujoco.MjModel, reference: Reference, act0: np.ndarray, excitation: np.ndarray
) -> np.ndarray:
    """Open-loop replay of excitations from the reference's first state; the qpos per frame."""
    data = mujoco.MjData(model)
    data.qpos[:], data.qvel[:], data.act[:] = reference.qpos[0], reference.qvel[0], act0
    steps = int(round(1 / (reference.fps * model.opt.timestep)))
    qpos = []
    for u in excitation:
        qpos.append(data.qpos.copy())
        data.ctrl[:] = u
        for _ in range(steps):
            mujoco.mj_step(model, data)
    return np.array(qpos)


def smooth_excitations(n_muscles: int, frames: int, fps: float, seed: int, base: float, amp: float):
    rng = np.random.default_rng(seed)
    t = np.arange(frames)[:, None] / fps
    phase = rng.uniform(0, 2 * np.pi, n_muscles)
    freq = rng.uniform(0.5, 1.5, n_muscles)
    return base + amp * np.sin(2 * np.pi * freq * t + phase)


def standing(model: mujoco.MjModel, depth: float, frames: int = 3) -> Reference:
    """MyoFullBody's default pose lowered until its lowest foot geom is `depth` into the floor."""
    data = mujoco.MjData(model)
    data.qpos[:] = model.qpos0
    mujoco.mj_forward(model, data)
    floor = floor_geom(model)
    feet = foot_contact_geoms(model, ["calcn_l", "toes_l", "calcn_r", "toes_r"])
    gap = min(mujoco.mj_geomDistance(model, data, int(g), floor, 1.0, None) for g in feet)
    qpos = model.qpos0.copy()
    qpos[2] -= gap + depth
    still = np.tile(qpos, (frames, 1))
    return Reference.from_trajectory(
        "standing", 50.0, still, np.zeros((frames, model.nv)), np.zeros((frames, model.nv))
    )


def test_muscle_forces_are_affine_and_sum_to_qfrc_actuator(body: mujoco.MjModel) -> None:
    rng = np.random.default_rng(0)
    data = mujoco.MjData(body)
    lo, hi = body.jnt_range[:, 0], body.jnt_range[:, 1]
    data.qpos[:] = body.qpos0
    hinge = np.flatnonzero(body.jnt_type == int(mujoco.mjtJoint.mjJNT_HINGE))
    adr = body.jnt_qposadr[hinge]
    data.qpos[adr] = rng.uniform(lo[hinge], hi[hinge]) * 0.3 + 0.7 * data.qpos[adr]
    data.qvel[:] = rng.normal(0, 0.5, body.nv)
    mujoco.mj_forward(body, data)
    muscles = muscle_actuators(body)
    gain, bias, moment = muscle_gain_bias(body, data, muscles)
    act = rng.uniform(0, 1, muscles.size)
    data.act[:] = act
    data.ctrl[:] = act
    mujoco.mj_forward(body, data)
    assert np.allclose(data.actuator_force[muscles], gain * act + bias, rtol=1e-9, atol=1e-9)
    assert np.allclose(moment.T @ data.actuator_force[muscles], data.qfrc_actuator, atol=1e-8)
    assert np.abs(moment[:, :6]).max() < 1e-12  # a tendon's length ignores the free root


@pytest.mark.parametrize("contacts", ["soft", "estimate"])
def test_standing_still_carries_body_weight(body: mujoco.MjModel, contacts: str) -> None:
    result = static_optimization(standing(body, depth=0.002), body, contacts=contacts)
    weight = result.body_weight
    assert weight == pytest.approx(84.3 * 9.81, rel=0.01)
    vertical = result.grf_total[:, 2] + result.residual_force[:, 2]
    assert np.all(np.abs(vertical - weight) < 0.02 * weight)
    assert np.allclose(result.grf.sum(axis=1), result.grf_total)  # only the feet touch
    assert result.foot_names == ("left", "right")
    assert np.all(result.grf[:, :, 2] > 0.1 * weight)  # both feet carry load
    inside = np.isfinite(result.cop).all(axis=2)
    assert inside.all() and np.all(np.abs(result.cop[..., 2]) < 1e-9)
    if contacts == "estimate":
        # The floor takes the weight; nothing is left to the root.
        assert np.all(np.linalg.norm(result.residual_force, axis=1) < 0.02 * weight)
        assert result.metrics["static_opt.residual_force_pct_bw"] < 2.0
    assert METRICS <= set(result.metrics)
    assert np.all((result.activation >= 0) & (result.activation <= 1))


def test_arm_replay_reproduces_a_simulated_motion() -> None:
    """Planar arm (fixed base), motion from known excitations; SO's excitations replayed."""
    arm = planar_arm(8)
    fps, frames = 100.0, 100
    known = smooth_excitations(arm.nu, frames, fps, seed=1, base=0.25, amp=0.2)
    reference, _ = simulate(arm, known, fps, np.array([0.2, 1.0]), known[0])
    result = static_optimization(reference, arm)
    assert result.feasible.all()
    assert np.abs(result.joint_residual).max() < 1e-3  # N·m: every joint torque met
    assert not result.excitation_clipped.any()
    for values in (result.activation, result.excitation):
        assert np.all((values >= 0) & (values <= 1))
    # Open loop, from the same state and SO's first activation: within 1 degree for 0.5 s
    # (measured 0.3 degrees; the torques are matched at frames only, and change in between).
    qpos = replay(arm, reference, result.activation[0], result.excitation[:50])
    assert np.degrees(np.abs(qpos - reference.qpos[:50]).max()) < 1.0
    # A muscle's force is what its activation makes at each frame.
    assert np.all(result.force <= 0)


def test_block_residuals_vanish_for_a_simulated_motion() -> None:
    """A free torso on two legs with box feet, landing and swaying under known excitations."""
    block = standing_block()
    fps, frames = 100.0, 50
    known = smooth_excitations(block.nu, frames, fps, seed=2, base=0.3, amp=0.1)
    reference, ground = simulate(block, known, fps, block.qpos0, known[0])
    assert ground[:, 2].max() > 0.5 * 30 * 9.81  # it does stand on the floor
    soft = static_optimization(reference, block, contacts="soft", feet=BLOCK_FEET)
    # mj_inverse inverts the forward soft contacts: the same floor forces, no residual.
    assert np.allclose(soft.grf_total, ground, atol=1e-3 * 30 * 9.81)
    assert soft.metrics["static_opt.residual_force_pct_bw"] < 0.01
    assert soft.metrics["static_opt.residual_moment_nm"] < 0.01
    estimate = static_optimization(reference, block, contacts="estimate", feet=BLOCK_FEET)
    assert estimate.metrics["static_opt.residual_force_pct_bw"] < 0.1
    assert estimate.metrics["static_opt.residual_moment_nm"] < 0.1
    # The floor's total force is fixed by the motion, however it is shared between the points.
    assert np.allclose(estimate.grf_total, ground, atol=0.01 * 30 * 9.81)
    for result in (soft, estimate):
        assert result.feasible.all()
        assert not result.excitation_clipped.any()
        assert np.all((result.activation >= 0) & (result.activation <= 1))


def test_coupled_joints_are_left_to_the_coupling(monkeypatch: pytest.MonkeyPatch) -> None:
    """The coupling's multiplier is free: same answer from the structured null space and SVD."""
    arm = coupled_arm()
    fps, frames = 100.0, 40
    known = smooth_excitations(arm.nu, frames, fps, seed=6, base=0.3, amp=0.15)
    reference, _ = simulate(arm, known, fps, np.array([0.2, 1.0, 0.45]), known[0])
    structured = static_optimization(reference, arm)
    assert structured.feasible.all() and np.abs(structured.joint_residual).max() < 1e-3
    # The muscles' torque differs from the inverse dynamics along the coupling's Jacobian only:
    # in the coupled motion (shoulder; elbow with the wrist following) the two agree.
    data = mujoco.MjData(arm)
    for k in range(frames):
        for key in ("qpos", "qvel", "qacc"):
            getattr(data, key)[:] = getattr(reference, key)[k]
        mujoco.mj_inverse(arm, data)
        gap = data.qfrc_inverse - structured.muscle_torque[k]
        slope = 0.4 + 0.1 * reference.qpos[k, 1]  # d wrist / d elbow
        assert abs(gap[0]) < 1e-3 and abs(gap[1] + slope * gap[2]) < 1e-3
    assert np.abs(gap).max() > 1e-2  # (and the coupling does carry a force)
    monkeypatch.setattr(static_opt, "_ONE_DOF", ())  # no joint is taken as dependent: SVD
    general = static_optimization(reference, arm)
    assert general.feasible.all()
    assert np.allclose(general.activation, structured.activation, atol=1e-6)
    assert np.allclose(general.muscle_torque, structured.muscle_torque, atol=1e-4)


def test_act3_lowers_the_cubic_cost() -> None:
    arm = planar_arm(8)
    fps, frames = 100.0, 30
    known = smooth_excitations(arm.nu, frames, fps, seed=3, base=0.3, amp=0.15)
    reference, _ = simulate(arm, known, fps, np.array([0.0, 1.2]), known[0])
    square = static_optimization(reference, arm, cost="act2", activation_dynamics=False)
    cube = static_optimization(reference, arm, cost="act3", activation_dynamics=False)
    assert cube.feasible.all() and np.abs(cube.joint_residual).max() < 1e-3
    assert np.all((cube.activation >= 0) & (cube.activation <= 1))
    # Cubes punish the strongest activations more: the peak drops, Σ a³ does not rise.
    assert np.sum(cube.activation**3) <= np.sum(square.activation**3) * (1 + 1e-6)
    assert cube.activation.max() <= square.activation.max() + 1e-9


def test_activation_dynamics_match_mujoco_and_invert() -> None:
    arm = planar_arm(6)
    data = mujoco.MjData(arm)
    rng = np.random.default_rng(4)
    act0, u = rng.uniform(0, 1, arm.nu), rng.uniform(0, 1, arm.nu)
    data.act[:], data.ctrl[:] = act0, u
    for _ in range(7):
        mujoco.mj_step(arm, data)
    mine = advance_activation(act0, u, arm.actuator_dynprm[:, :3], arm.opt.timestep, 7)
    assert np.allclose(mine, data.act, atol=1e-12)
    smooth = arm.actuator_dynprm[:, :3].copy()
    smooth[:, 2] = 0.3  # tausmooth: the blended time constant
    for a, v in zip(act0, u, strict=True):
        one = advance_activation(np.array([a]), np.array([v]), smooth[:1], 1e-3, 1)[0]
        rate = mujoco.mju_muscleDynamics(v, a, smooth[0])
        assert one == pytest.approx(a + 1e-3 * rate, abs=1e-12)
    # Reachable activations are reproduced exactly; unreachable ones are clipped and flagged.
    prm = arm.actuator_dynprm[:, :3]
    reach = ActivationReach(prm, arm.opt.timestep, 5)
    path = [rng.uniform(0, 1, arm.nu)]
    for _ in range(20):
        lo, hi = reach.bounds(path[-1])
        path.append(lo + rng.uniform(0, 1, arm.nu) * (hi - lo))
    path = np.array(path)
    excitation, clipped = invert_activation_dynamics(path, prm, arm.opt.timestep, 5)
    assert not clipped.any()
    assert np.all((excitation >= 0) & (excitation <= 1))
    ends = advance_activation(path[:-1], excitation[:-1], prm, arm.opt.timestep, 5)
    assert np.allclose(ends, path[1:], atol=1e-7)
    jump = np.array([[0.0] * arm.nu, [1.0] * arm.nu])  # 0 to 1 in 10 ms: out of reach
    excitation, clipped = invert_activation_dynamics(jump, prm, arm.opt.timestep, 5)
    assert clipped[0].all() and np.all(excitation[0] == 1.0)


def test_walking_body_in_parallel_processes(body: mujoco.MjModel) -> None:
    """MyoFullBody standing, then flexing hips and knees: a few dozen frames, two processes."""
    still = standing(body, depth=0.001, frames=44)
    qpos, qvel, qacc = still.qpos.copy(), still.qvel.copy(), still.qacc.copy()
    t = still.times
    for name, amp in (("hip_flexion_r", 0.3), ("knee_angle_r", 0.4), ("hip_flexion_l", -0.2)):
        j = body.joint(name)
        w = 2 * np.pi * 1.0
        qpos[:, j.qposadr[0]] += amp * np.sin(w * t)
        qvel[:, j.dofadr[0]] = amp * w * np.cos(w * t)
        qacc[:, j.dofadr[0]] = -amp * w * w * np.sin(w * t)
    reference = Reference.from_trajectory("flexing", still.fps, qpos, qvel, qacc)
    serial = static_optimization(reference, body)
    forked = static_optimization(reference, body, processes=2)
    assert forked.notes["parallel"] == "2 processes"
    assert serial.activation.shape == (44, 416) and serial.grf.shape == (44, 2, 3)
    assert len(serial.muscle_names) == 416
    for result in (serial, forked):
        assert METRICS <= set(result.metrics)
        assert result.metrics["static_opt.fps"] > 0
        assert np.all((result.activation >= 0) & (result.activation <= 1))
        assert np.all(np.isfinite(result.excitation))
    # The second process warms up on the frames before its own, so both runs agree closely.
    assert np.abs(forked.activation - serial.activation).max() < 0.05
    assert np.allclose(forked.activation[:22], serial.activation[:22])


def test_threads_and_processes_split_the_frames_alike() -> None:
    """Chunks of a clip on threads or forked processes: each later chunk warms up on the frames
    before its own, so all runs agree with the serial one (exactly, on the first chunk)."""
    arm = planar_arm(8)
    known = smooth_excitations(arm.nu, 60, 100.0, seed=5, base=0.3, amp=0.15)
    reference, _ = simulate(arm, known, 100.0, np.array([0.1, 1.1]), known[0])
    serial = static_optimization(reference, arm)
    assert serial.notes["parallel"] == "serial"
    spans = balanced_spans(60, 2, warmup=10)
    assert spans == [(0, 0, 35), (25, 35, 60)]  # 35 frames of work each, warm-up included
    for how, kwargs in (("2 threads", {"threads": 2}), ("2 processes", {"processes": 2})):
        split = static_optimization(reference, arm, **kwargs)
        assert split.notes["parallel"] == how
        assert np.array_equal(split.activation[:35], serial.activation[:35])
        assert np.abs(split.activation - serial.activation).max() < 0.05
        assert np.abs(split.excitation - serial.excitation).max() < 0.05


def test_bad_references_give_one_line_errors() -> None:
    arm = planar_arm(6)
    arrays = {"qpos": np.zeros((5, 2)), "qvel": np.zeros((5, 2)), "qacc": np.zeros((5, 2))}

    def reference(fps: float = 50.0, **changed: np.ndarray) -> Reference:
        return Reference.from_trajectory("bad", fps, **dict(arrays, **changed))

    good = reference()
    cases = {
        "not finite": reference(qacc=np.where(np.arange(10).reshape(5, 2) == 7, np.nan, 0.0)),
        "shape (5, 3)": reference(qpos=np.zeros((5, 3))),
        "at least 2": reference(**{k: v[:1] for k, v in arrays.items()}),
        "frame count": reference(qvel=np.zeros((4, 2))),
        "fps must be a positive number, not 0.0": reference(fps=0.0),
        "fps must be a positive number, not -50.0": reference(fps=-50.0),
        "fps must be a positive number, not nan": reference(fps=np.nan),
        "not numeric": dataclasses.replace(good, qacc=np.full((5, 2), "x")),
        "must be a Reference": dict(arrays, fps=50.0),  # a mapping is no stand-in
        "not list": [1, 2, 3],
    }
    for needle, bad in cases.items():
        with pytest.raises(StaticOptError, match=re.escape(needle)) as info:
            static_optimization(bad, arm)  # type: ignore[arg-type]
        assert "\n" not in str(info.value)
    with pytest.raises(StaticOptError, match="cost"):
        static_optimization(good, arm, cost="act4")
    with pytest.raises(StaticOptError, match="contacts"):
        static_optimization(good, arm, contacts="hard")
    assert isinstance(StaticOptError("x"), ValueError)
