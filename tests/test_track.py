"""The tracking controller (`--method track`): a forward simulation over the whole clip."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
from arm_reference import arm_reference
from toy_models import planar_arm, standing_block

from msconvert.emulator.emulation import joint_errors_deg, tracking_metrics
from msconvert.emulator.model import load_model
from msconvert.emulator.muscles.track import (
    TrackConfig,
    TrackError,
    TrackResult,
    _diverged,
    track,
)
from msconvert.emulator.retarget.reference import Reference

FEET = {"left": ["foot_l"], "right": ["foot_r"]}


def _block_reference(model, seconds: float = 2.0) -> Reference:
    """The block standing still at 50 Hz, with its torso and feet as key bodies."""
    n = int(seconds * 50)
    qpos = np.tile(model.qpos0, (n, 1))
    bodies = ("torso", "foot_l", "foot_r")
    data = mujoco.MjData(model)
    data.qpos[:] = model.qpos0
    mujoco.mj_kinematics(model, data)
    body_pos = np.tile([data.xpos[model.body(b).id] for b in bodies], (n, 1, 1))
    return Reference.from_trajectory(
        "block", 50.0, qpos, np.zeros((n, model.nv)), body_names=bodies, body_pos=body_pos
    )


def test_the_controller_holds_a_standing_block_to_the_end_with_little_assist():
    model = standing_block(timestep=0.002)
    result = track(_block_reference(model), model, feet=FEET)
    m = result.metrics
    assert m["tracking.fraction_tracked"] == 1.0 and not result.emulation.fell
    assert m["tracking.joint_error_deg_mean"] < 2.0
    # no joint of the block is far off either; the worst joint bounds the mean from above
    assert m["tracking.joint_error_deg_mean"] <= m["tracking.joint_error_deg_worst"] < 3.0
    assert m["track.assist_force_pct_bw"] < 2.0  # the muscles and the floor carry the body
    # what the simulator did: its floor force carries the body weight
    vertical = np.nansum(result.emulation.grf[1:, :, 2], axis=1)
    assert np.mean(vertical) == pytest.approx(result.body_weight, rel=0.05)


def test_the_worst_joint_shows_one_joint_far_off_that_the_mean_hides():
    n, nq = 10, 40
    ref = np.zeros((n, nq))
    qpos = ref.copy()
    qpos[:, 7] = np.deg2rad(45.0)  # one joint of 33 is 45 deg off; the rest exact
    qpos[:, 8] = np.deg2rad(359.0)  # a hinge one turn round is 1 deg off, not 359
    columns, hinge = np.arange(7, nq), np.ones(nq - 7, bool)
    per_frame = joint_errors_deg(qpos, ref, columns, hinge)
    recording = {
        "qpos": qpos,
        "joint_error_deg": per_frame.mean(axis=1),
        "body_error_mm": np.zeros(n),
        "root_error_mm": np.zeros(n),
        "activation": np.zeros((n, 3)),
    }
    m = tracking_metrics(recording, n, ref, (columns, hinge))
    assert m["tracking.joint_error_deg_mean"] == pytest.approx(46.0 / 33)
    assert m["tracking.joint_error_deg_worst"] == pytest.approx(45.0)
    # only the tracked frames count: a joint 120 deg off after the fall is averaged in nowhere
    recording["qpos"][5:, 9] = np.deg2rad(120.0)
    assert tracking_metrics(recording, 5, ref, (columns, hinge))[
        "tracking.joint_error_deg_worst"
    ] == pytest.approx(45.0)


def test_with_the_assist_off_a_feasible_reference_is_still_tracked():
    model = standing_block(timestep=0.002)
    result = track(_block_reference(model), model, TrackConfig(assist="off"), feet=FEET)
    assert result.metrics["tracking.fraction_tracked"] == 1.0
    assert np.all(result.assist_force[:-1] == 0.0)
    assert result.metrics["tracking.joint_error_deg_mean"] < 1.0


def test_a_fall_is_recorded_and_nothing_is_invented_after_it():
    model = standing_block(timestep=0.002)
    ref = _block_reference(model, seconds=2.0)
    qpos = ref.qpos.copy()
    qpos[:, 2] += np.linspace(0.0, 1.5, qpos.shape[0])  # rises 1.5 m: beyond any muscle
    rising = Reference.from_trajectory(
        "rise",
        50.0,
        qpos,
        np.zeros((qpos.shape[0], model.nv)),
        body_names=ref.body_names,
        body_pos=ref.body_pos + np.linspace(0.0, 1.5, qpos.shape[0])[:, None, None] * [0, 0, 1],
    )
    result = track(rising, model, TrackConfig(assist="off"), feet=FEET)
    emu = result.emulation
    assert emu.fell and emu.tracked_frames < rising.n_frames
    assert np.isnan(emu.qpos[emu.tracked_frames :]).all()


def test_the_result_round_trips_with_its_assist(tmp_path):
    from msconvert.catalog import Catalog

    model = standing_block(timestep=0.002)
    result = track(_block_reference(model, seconds=0.5), model, feet=FEET)
    with Catalog.create(tmp_path / "c.zarr") as cat:
        cat.write_clip("block", result.to_dataset(), attrs={}, metrics=result.metrics)
    back = TrackResult.from_dataset(Catalog.open(tmp_path / "c.zarr")["block"])
    np.testing.assert_allclose(back.assist_force, result.assist_force.astype(np.float32))
    assert back.assist == "on" and back.metrics == pytest.approx(
        {k: v for k, v in result.metrics.items()}, nan_ok=True
    )


@pytest.mark.parametrize(
    "settings,match",
    [
        (dict(kp=-1.0), "kp must be a number >= 0"),
        (dict(assist="maybe"), "assist must be one of"),
        (dict(kd=float("nan")), "kd must be a number >= 0"),
        (dict(contact_lift_m=0.0), "contact_lift_m must be positive"),
    ],
)
def test_bad_settings_fail_in_one_line(settings, match):
    with pytest.raises(TrackError, match=match) as info:
        TrackConfig(**settings)
    assert "\n" not in str(info.value)


FLOATING_WITHOUT_FLOOR = """
<mujoco>
  <worldbody>
    <body name="torso" pos="0 0 1">
      <freejoint/>
      <geom size="0.1" mass="10"/>
      <body name="leg">
        <joint name="hip" type="hinge" axis="0 1 0" range="-1 1"/>
        <geom type="capsule" fromto="0 0 0 0 0 -0.4" size="0.03" mass="2"/>
      </body>
    </body>
  </worldbody>
  <actuator><muscle name="hip_flexor" joint="hip"/></actuator>
</mujoco>
"""


def test_a_floating_model_without_a_floor_is_refused():
    model = mujoco.MjModel.from_xml_string(FLOATING_WITHOUT_FLOOR)
    ref = Reference.from_trajectory(
        "float", 50.0, np.tile(model.qpos0, (5, 1)), np.zeros((5, model.nv))
    )
    with pytest.raises(TrackError, match="floor"):
        track(ref, model)


def test_a_model_fixed_to_the_world_needs_no_floor_and_gets_no_assist():
    arm = planar_arm(6)
    ref = arm_reference(arm)
    result = track(ref, arm)
    m = result.metrics
    assert m["tracking.fraction_tracked"] == 1.0
    assert m["tracking.joint_error_deg_mean"] < 3.0, m  # a feasible reference, tracked
    assert np.all(result.assist_force[:-1] == 0.0) and m["track.assist_force_pct_bw"] == 0.0


def test_myofullbody_quiet_stance_is_carried_by_muscles_and_floor(tmp_path):
    from msconvert.datasets.amass import read_amass
    from msconvert.datasets.demo import standing, write_smplh_npz
    from msconvert.emulator.retarget import RetargetConfig, retarget

    trans, poses, fps = standing(duration_s=1.0, fps=60.0)
    write_smplh_npz(tmp_path / "s_poses.npz", trans, poses, fps)
    model = load_model()
    ref = retarget(read_amass(tmp_path / "s_poses.npz"), model, RetargetConfig(fps=50.0))
    result = track(ref, model)
    m = result.metrics
    assert m["tracking.fraction_tracked"] == 1.0
    assert m["track.assist_force_pct_bw"] <= 2.0
    vertical = np.nansum(result.emulation.grf[1:, :, 2], axis=1)
    assert abs(np.mean(vertical) / result.body_weight - 1.0) <= 0.03


def test_the_walk_is_tracked_with_its_toes_out_of_the_plan_at_200_hz_and_the_lift_rule(tmp_path):
    """What carries the demo walk, each against the default with it undone: a planned push on
    the toes (only the toe flexors can hold one: they saturate and whip the swing ankle into
    its limit), a plan once per 50-Hz frame (the legs lag the push-off and the swing toe
    catches the floor), and a push through a point the plan lifts. Measured on the 3-s walk
    (joint deg, key-body mm, assist % BW): default 1.6, 17, 10.5; toes 5.3, 154, 37; 50 Hz 3.9,
    48, 38; lift rule off 2.3, 39, 30."""
    from msconvert.datasets.amass import read_amass
    from msconvert.datasets.demo import walking, write_smplh_npz
    from msconvert.emulator.retarget import RetargetConfig, retarget

    write_smplh_npz(tmp_path / "w_poses.npz", *walking(duration_s=3.0))
    model = load_model()
    ref = retarget(read_amass(tmp_path / "w_poses.npz"), model, RetargetConfig(fps=50.0))
    ours = track(ref, model).metrics
    assert ours["tracking.fraction_tracked"] == 1.0 and ours["track.control_hz"] == 200.0
    assert ours["tracking.joint_error_deg_mean"] < 3.0
    body, assist = "tracking.body_error_mm_mean", "track.assist_force_pct_bw"
    toes = track(ref, model, TrackConfig(toe_push=True)).metrics
    assert ours[body] < 0.5 * toes[body] and ours[assist] < 0.5 * toes[assist]
    frame_rate = track(ref, model, TrackConfig(control_hz=0.0)).metrics
    assert frame_rate["track.control_hz"] == 50.0
    assert ours[body] < 0.85 * frame_rate[body] and ours[assist] < 0.85 * frame_rate[assist]
    lifted = track(ref, model, TrackConfig(contact_lift_m=10.0)).metrics
    assert ours[body] < 0.9 * lifted[body] and ours[assist] < 0.8 * lifted[assist]


def test_the_plan_does_not_count_on_a_joint_limits_push():
    """Past a limit, a plan that counted on the limit's push would spend muscle force against
    it and hold the joint there; the controller's plan leaves the push out while it asks the
    joint to leave the limit."""
    from msconvert.emulator.muscles.static_opt import FrameSolver, frame_problem

    arm = planar_arm(6)
    elbow = arm.joint("elbow").dofadr[0]
    qpos = np.array([0.3, -0.01])  # the elbow 0.01 rad past its 0 limit
    qacc = np.array([0.0, 2.0])  # asked to come back in range

    def elbow_torque(limit_forces: bool, qacc: np.ndarray = qacc) -> float:
        setup, _ = frame_problem(
            arm,
            None,
            "act2",
            "stance",
            100.0,
            1e6,
            1e-3,
            0.01,
            False,
            False,
            50.0,
            limit_forces=limit_forces,
        )
        frame = FrameSolver(setup).solve(qpos, np.zeros(arm.nv), qacc)
        return float(frame.muscle_torque[elbow])

    data = mujoco.MjData(arm)
    data.qpos[:], data.qacc[:] = qpos, qacc
    mujoco.mj_inverse(arm, data)
    push = float(data.qfrc_constraint[elbow])
    assert push > 1.0  # the soft limit pushes the elbow back in range
    # left out, the muscles drive the elbow back in range; counted, they work against the push
    assert elbow_torque(False) > 0.5
    assert elbow_torque(True) == pytest.approx(elbow_torque(False) - push, abs=0.05 * push)
    # a limit the desired motion presses into still holds the joint: counted either way
    into = np.array([0.0, -2.0])
    assert elbow_torque(False, into) == pytest.approx(elbow_torque(True, into), abs=1e-6)


def test_the_reference_between_frames_passes_its_frames_and_a_steady_turn_exactly():
    from msconvert.emulator.muscles.track import _interpolated, _substeps

    model = standing_block()
    n, fps, spin = 6, 50.0, 3.0  # rad/s about z, with a steady slide along x
    t = np.arange(n) / fps
    qpos = np.tile(model.qpos0, (n, 1))
    qpos[:, 0] = 0.4 * t
    qpos[:, 3:7] = np.stack([np.cos(spin * t / 2), 0 * t, 0 * t, np.sin(spin * t / 2)], axis=1)
    qvel = np.zeros((n, model.nv))
    qvel[:, 0], qvel[:, 5] = 0.4, spin
    q, v, a = _interpolated(model, qpos, qvel, np.zeros_like(qvel), fps, 4)
    assert q.shape == (4 * (n - 1) + 1, model.nq) and v.shape == a.shape == (q.shape[0], model.nv)
    np.testing.assert_array_equal(q[::4], qpos)
    fine = np.arange(q.shape[0]) / (4 * fps)
    np.testing.assert_allclose(q[:, 0], 0.4 * fine, atol=1e-12)
    np.testing.assert_allclose(np.abs(q[:, 3]), np.cos(spin * fine / 2), atol=1e-9)
    np.testing.assert_allclose(np.abs(q[:, 6]), np.sin(spin * fine / 2), atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(q[:, 3:7], axis=1), 1.0, atol=1e-12)
    # control steps per frame: as many as asked that split the frame's physics steps evenly
    assert [_substeps(20, 50.0, hz) for hz in (0.0, 50.0, 200.0, 300.0, 1e4)] == [1, 1, 4, 5, 20]
    assert _substeps(15, 60.0, 200.0) == 3


def test_the_toes_are_the_distal_points_of_each_foot():
    from msconvert.emulator.muscles.static_opt import frame_problem
    from msconvert.emulator.muscles.track import _toe_points

    model = load_model()
    setup, _ = frame_problem(
        model, None, "act2", "stance", 100.0, 1e6, 1e-3, 0.01, True, False, 50.0
    )
    points = setup.points
    toe = _toe_points(model, points)
    fixed = points.body.size
    names = {model.body(int(b)).name for b in points.body[toe[:fixed]]}
    assert names == {"toes_l", "toes_r"}
    assert {model.body(int(b)).name for b in points.body[~toe[:fixed]]} == {"calcn_l", "calcn_r"}
    assert not toe[fixed:].any()  # floor-work geoms (hands, knees, pelvis) are never toes


def test_the_simulation_touches_only_the_floor_and_starts_on_the_couplings():
    from msconvert.emulator.model import floor_geom
    from msconvert.emulator.muscles.track import _coupled_velocity, _floor_contacts_only

    model = load_model()
    floor = floor_geom(model)
    sim = model.__copy__()
    _floor_contacts_only(sim, floor)

    def collide(m, a, b):
        return bool(
            (m.geom_contype[a] & m.geom_conaffinity[b])
            | (m.geom_contype[b] & m.geom_conaffinity[a])
        )

    body_geoms = [g for g in range(model.ngeom) if g != floor and collide(model, g, floor)]
    assert body_geoms and all(collide(sim, g, floor) for g in body_geoms)
    assert not any(collide(sim, a, b) for a in body_geoms for b in body_geoms)
    # a velocity that breaks the joint couplings is corrected with the least change
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    rng = np.random.default_rng(0)
    qvel = rng.normal(size=model.nv)
    fixed = _coupled_velocity(model, data, qvel)
    data.qvel[:] = fixed
    mujoco.mj_forward(model, data)
    ne = model.neq
    jac = np.zeros((data.nefc, model.nv))
    mujoco.mju_sparse2dense(
        jac, data.efc_J, data.efc_J_rownnz, data.efc_J_rowadr, data.efc_J_colind
    )
    assert np.abs(jac[:ne] @ fixed).max() < 1e-9 < np.abs(jac[:ne] @ qvel).max()
    assert np.linalg.norm(fixed - qvel) < np.linalg.norm(qvel)


def _cli(*args):
    from click.testing import CliRunner

    from msconvert.convert.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_the_cli_passes_the_contact_lift_and_records_it(tmp_path):
    from msconvert.catalog import Catalog
    from msconvert.datasets.demo import standing, write_smplh_npz

    write_smplh_npz(tmp_path / "corpus" / "S1" / "stand_poses.npz", *standing(duration_s=0.4))
    out = tmp_path / "c.zarr"
    args = ("--method", "track", "--track-contact-lift", "0.008")
    result = _cli("amass", tmp_path / "corpus", "--out", out, *args)
    assert result.exit_code == 0, result.output
    metrics = Catalog.open(out)["S1/stand"].attrs["metrics"]
    assert metrics["track.contact_lift_m"] == pytest.approx(0.008)
    assert metrics["tracking.fraction_tracked"] == 1.0


@pytest.mark.parametrize("value", ["0", "-0.01", "two"])
def test_a_bad_contact_lift_is_refused_in_one_line(tmp_path, value):
    (tmp_path / "corpus").mkdir()
    out = tmp_path / "c.zarr"
    args = ("--method", "track", "--track-contact-lift", value)
    result = _cli("amass", tmp_path / "corpus", "--out", out, *args)
    assert result.exit_code == 2
    errors = [ln for ln in result.output.splitlines() if ln.startswith("Error")]
    assert len(errors) == 1 and "--track-contact-lift" in errors[0], result.output
    assert not out.exists()


def test_a_diverged_simulation_is_a_fall_whose_last_frame_counts_in_no_mean():
    model = standing_block(timestep=0.002)
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    assert not _diverged(data)
    data.qvel[:] = 1e12  # beyond MuJoCo's range: it warns and resets the data
    mujoco.mj_step(model, data)
    assert _diverged(data)
    for value in (np.nan, 1e11):  # non-finite, or beyond range before MuJoCo's next check
        data = mujoco.MjData(model)
        data.qpos[0] = value
        assert _diverged(data)
    # a rollout that blows up ends at its last sound frame: no mean takes in the blown-up one
    ref = _block_reference(model, seconds=1.0)
    blowing_up = TrackConfig(kp=1e7, kd=1e5, assist_weight=1e-9)  # an assist without bound
    result = track(ref, model, blowing_up, feet=FEET)
    m = result.metrics
    assert result.emulation.fell and m["tracking.fraction_tracked"] < 1.0
    assert m["tracking.joint_error_deg_worst"] < 180.0
    assert m["tracking.body_error_mm_mean"] < 100.0
