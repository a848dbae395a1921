"""Ground contact from stance: candidate points, hysteresis, residuals in stance and in flight,
and the root as any 6-DoF chain."""

from __future__ import annotations

from pathlib import Path

import mujoco
import numpy as np
import pytest
from toy_models import standing_block

from msconvert.emulator.model import load_model
from msconvert.emulator.muscles.contacts import (
    ContactError,
    StanceRule,
    contact_points,
    stance,
)
from msconvert.emulator.muscles.static_opt import StaticOptError, root_chain, static_optimization
from msconvert.emulator.retarget.reference import Reference

FEET = {"left": ["foot_l"], "right": ["foot_r"]}
MS_HUMAN_700 = Path(__file__).resolve().parents[2] / "shared" / "models" / "ms_human_700"


def _block_reference(model: mujoco.MjModel, lift: np.ndarray) -> Reference:
    """The block standing still, its root raised by `lift` (m) per frame."""
    qpos = np.tile(model.qpos0, (lift.size, 1))
    qpos[:, 2] += lift
    return Reference.from_trajectory("block", 50.0, qpos, np.zeros((lift.size, model.nv)))


def test_each_foot_gets_several_points_spread_heel_to_toe():
    model = standing_block()
    points = contact_points(model, FEET)
    assert points.n == 8 and set(points.foot.tolist()) == {0, 1}
    data = mujoco.MjData(model)
    mujoco.mj_kinematics(model, data)
    pos = points.world(model, data)[0]
    left = pos[points.foot == 0]
    assert np.ptp(left[:, 0]) > 0.1  # heel to toe: the centre of pressure can travel
    assert np.allclose(left[:, 2], left[0, 2])  # the sole's corners, level


def test_stance_has_hysteresis_and_flight_has_no_candidates():
    model = standing_block()
    points = contact_points(model, FEET)
    # on the floor, lifted 7 cm (between the thresholds), 20 cm (flight), 7 cm, back down
    lift = np.concatenate([np.zeros(10), np.full(10, 0.07), np.full(10, 0.2), np.full(10, 0.07)])
    lift = np.concatenate([lift, np.zeros(10)])
    mask = stance(model, points, _block_reference(model, lift).qpos, 50.0, StanceRule())
    per_frame = mask.any(axis=1)
    assert per_frame[:9].all() and per_frame[12:19].all(), "stays on between the thresholds"
    assert not per_frame[21:29].any(), "flight: no candidates"
    assert not per_frame[32:39].any(), "stays off between the thresholds"
    assert per_frame[42:].all()


def test_muscles_and_floor_carry_a_standing_body_and_flight_is_reported_apart():
    model = standing_block()
    lift = np.concatenate([np.zeros(15), np.full(10, 0.3), np.zeros(15)])
    result = static_optimization(_block_reference(model, lift), model, feet=FEET)
    m = result.metrics
    assert m["static_opt.residual_force_pct_bw"] < 1.0  # stance: the floor carries the body
    assert abs(m["grf.support_pct"] - 100.0) < 3.0
    assert m["grf.vertical_peak_bw"] == pytest.approx(1.0, abs=0.05)
    # Hanging still in the air is far from ballistic: the whole weight is residual there.
    assert m["static_opt.flight_pct"] == pytest.approx(25.0, abs=5.0)
    assert m["static_opt.flight_residual_pct_bw"] > 90.0
    cop = result.cop[5]
    assert np.isfinite(cop).all() and (result.grf[5, :, 2] > 0).all()


def test_demo_stance_on_myofullbody_is_carried_by_the_floor(tmp_path):
    from msconvert.datasets.amass import read_amass
    from msconvert.datasets.demo import standing, write_smplh_npz
    from msconvert.emulator.retarget import RetargetConfig, retarget

    trans, poses, fps = standing(duration_s=1.0, fps=60.0)
    write_smplh_npz(tmp_path / "s_poses.npz", trans, poses, fps)
    model = load_model()
    ref = retarget(read_amass(tmp_path / "s_poses.npz"), model, RetargetConfig(fps=50.0))
    m = static_optimization(ref, model).metrics
    assert m["static_opt.residual_force_pct_bw"] <= 2.0
    assert abs(m["grf.support_pct"] - 100.0) <= 3.0


@pytest.mark.parametrize(
    "rule",
    [
        dict(height_on_m=-0.01),
        dict(speed_on_ms=float("nan")),
        dict(height_on_m=0.05, height_off_m=0.04),
    ],
)
def test_bad_stance_rules_are_refused_in_one_line(rule):
    with pytest.raises(ContactError) as info:
        StanceRule(**rule)
    assert "\n" not in str(info.value)


def test_unknown_contact_mode_and_missing_foot_fail_clearly():
    model = standing_block()
    ref = _block_reference(model, np.zeros(4))
    with pytest.raises(StaticOptError, match="contacts must be one of"):
        static_optimization(ref, model, contacts="magic")
    with pytest.raises(StaticOptError, match="no body 'hoof'"):
        static_optimization(ref, model, feet={"left": ["hoof"], "right": ["foot_r"]})


def test_the_root_is_any_six_dof_chain():
    block = standing_block()
    dofs, body = root_chain(block)
    assert dofs.tolist() == list(range(6)) and block.body(body).name == "torso"
    if not (MS_HUMAN_700 / "MS-Human-700.xml").is_file():
        pytest.skip("MS-Human-700 absent (../shared/models/ms_human_700)")
    ms = load_model(MS_HUMAN_700 / "MS-Human-700.xml")
    dofs, body = root_chain(ms)
    assert dofs.size == 6 and ms.body(body).name == "pelvis"


def test_a_capsule_end_point_rolls_with_the_foot():
    # MyoFullBody's feet are capsules: pitched at heel strike, the candidate must stay at the
    # capsule end's bottom, not at the default pose's bottom carried round with the foot.
    model = load_model()
    points = contact_points(model, {"right": ["calcn_r", "toes_r"]})
    rounded = np.flatnonzero(points.radius > 0)
    assert rounded.size >= 4
    data = mujoco.MjData(model)
    ankle = model.joint("ankle_angle_r")
    data.qpos[ankle.qposadr[0]] = np.deg2rad(25.0)
    mujoco.mj_kinematics(model, data)
    pos = points.world(model, data)[0]
    for p in rounded:
        centre = (
            data.xpos[points.body[p]] + data.xmat[points.body[p]].reshape(3, 3) @ (points.local[p])
        )
        assert pos[p, 2] == pytest.approx(centre[2] - points.radius[p])
        assert np.allclose(pos[p, :2], centre[:2])
