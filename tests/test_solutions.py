"""Distinct muscle solutions of the tracking controller (`--method track --solutions K`)."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
from block_reference import sway_reference
from scipy.optimize import lsq_linear
from toy_models import _add_muscle, standing_block

from msconvert.emulator.model import compile_spec, model_spec
from msconvert.emulator.qp import solve_box_qp_lowrank

FEET = {"left": ["foot_l"], "right": ["foot_r"]}


def _random_box_qp(rng: np.random.Generator, n: int = 40, k: int = 9) -> dict:
    """A static-optimization-shaped problem: muscles in [0, 1], contact forces in [0, inf)."""
    return dict(
        at=rng.normal(size=(k, n)),
        rhs=5.0 * rng.normal(size=k),
        winv=np.diag(rng.uniform(0.01, 1.0, k)),
        h=rng.uniform(0.2, 3.0, n),
        lo=np.zeros(n),
        hi=np.where(np.arange(n) < 30, 1.0, np.inf),
        x0=rng.uniform(0.0, 1.0, n),
    )


@pytest.mark.parametrize("seed", range(5))
def test_the_qp_linear_term_matches_a_bounded_least_squares_reference(seed):
    rng = np.random.default_rng(seed)
    p = _random_box_qp(rng)
    linear = rng.normal(scale=2.0, size=p["h"].size)  # both signs: pushes up and down
    x, iterations = solve_box_qp_lowrank(**p, linear=linear)
    assert iterations < 300
    # The same objective as one least-squares problem, solved by scipy's BVLS:
    # ½Σh·x² + linearᵀx = ½‖√h·x + linear/√h‖² + const, ½‖at·x − rhs‖²_W = ½‖Lᵀ(at·x − rhs)‖²
    # with W = L·Lᵀ.
    root_h = np.sqrt(p["h"])
    chol = np.linalg.cholesky(np.linalg.inv(p["winv"]))
    stacked = np.vstack([np.diag(root_h), chol.T @ p["at"]])
    target = np.concatenate([-linear / root_h, chol.T @ p["rhs"]])
    ref = lsq_linear(stacked, target, bounds=(p["lo"], p["hi"]), method="bvls", tol=1e-14)
    np.testing.assert_allclose(x, ref.x, atol=1e-7)
    assert ((x >= p["lo"]) & (x <= p["hi"])).all()
    # the linear term moves the answer: it is not ignored
    plain, _ = solve_box_qp_lowrank(**p)
    assert np.abs(plain - x).max() > 1e-3


def test_a_zero_linear_term_gives_the_plain_answer():
    p = _random_box_qp(np.random.default_rng(7))
    plain, its = solve_box_qp_lowrank(**p)
    zero, its_zero = solve_box_qp_lowrank(**p, linear=np.zeros(p["h"].size))
    np.testing.assert_array_equal(plain, zero)
    assert its == its_zero


def _redundant_block() -> mujoco.MjModel:
    """The standing block with more muscles than joint directions: per side a second, weaker
    ankle plantarflexor and dorsiflexor, and two hip-ankle muscles (front and back), so each
    direction of each joint has two to three muscles to share its torque."""
    spec = model_spec(standing_block(timestep=0.002))
    for side, y in (("r", -0.08), ("l", 0.08)):
        torso, leg, foot = (spec.body(b) for b in ("torso", f"leg_{side}", f"foot_{side}"))
        wrap = {  # the block's wrapping cylinders, by joint and side (1 flexor, -1 extensor)
            (joint, sign): (
                spec.geom(f"{joint}_{side}_wrap"),
                spec.site(f"{joint}_{side}_{x}_side"),
            )
            for joint in ("hip", "ankle")
            for sign, x in ((1, "flexor"), (-1, "extensor"))
        }

        def site(body, name, pos, side=side):
            return body.add_site(name=f"{name}_{side}", pos=pos)

        for name, sign, x_leg, x_foot in (
            ("ankle_plantarflexor_deep", -1, -0.025, -0.03),
            ("ankle_dorsiflexor_deep", 1, 0.025, 0.08),
        ):
            path = [
                site(leg, f"{name}_origin", [x_leg, 0, -0.37]),
                wrap[("ankle", sign)],
                site(foot, f"{name}_insertion", [x_foot, 0, -0.012]),
            ]
            _add_muscle(spec, f"{name}_{side}", path, 800.0)
        for name, sign, x_foot in (("hip_ankle_back", -1, -0.06), ("hip_ankle_front", 1, 0.1)):
            path = [
                site(torso, f"{name}_origin", [0.07 * sign, y, -0.03]),
                wrap[("hip", sign)],
                site(leg, f"{name}_via", [0.045 * sign, 0, -0.22]),
                wrap[("ankle", sign)],
                site(foot, f"{name}_insertion", [x_foot, 0, -0.015]),
            ]
            _add_muscle(spec, f"{name}_{side}", path, 1000.0)
    return compile_spec(spec, "redundant_block")


@pytest.fixture(scope="module")
def sway_solutions():
    from msconvert.emulator.muscles.solutions import SolutionsConfig, track_solutions

    model = _redundant_block()
    reference = sway_reference(model)
    found = track_solutions(reference, model, solutions=SolutionsConfig(count=3), feet=FEET)
    return model, reference, found


def test_three_solutions_all_track_while_their_muscles_differ(sway_solutions):
    from msconvert.emulator.muscles.track import track

    model, reference, found = sway_solutions
    for result in found.results:
        m = result.metrics
        assert m["tracking.fraction_tracked"] == 1.0 and not result.emulation.fell
        assert m["tracking.joint_error_deg_mean"] < 1.0  # 0.55-0.63 deg measured
        assert m["track.assist_force_pct_bw"] < 2.0  # test_track's bound on the block
    m = found.metrics
    assert m["diversity.joint_error_spread_deg"] < 1.0
    # Measured 0.76 with the defaults (0.79 with weights constant in time); identical solutions
    # give 1.0 (as σ = 0 does here, the push alone being absorbed by the torque rows:
    # docs/method.md). With two or three muscles per joint direction, every muscle that works
    # follows the sway's torque in time, so the block cannot go much lower (MyoFullBody's demo
    # clips, with 416 muscles: 0.18-0.63, benchmarks/RESULTS.md).
    assert m["diversity.activation_corr_mean"] < 0.85
    # solution 1 shares the work out differently, at a higher Σ act² than the least one
    act = [r.emulation.activation for r in found.results]
    assert np.abs(act[1] - act[0]).max() > 0.02
    assert m["diversity.effort_spread_pct"] > 10.0
    # solution 0 is today's single answer, bit for bit
    single = track(reference, model, feet=FEET)
    np.testing.assert_array_equal(act[0], single.emulation.activation)
    assert m["tracking.joint_error_deg_mean"] == single.metrics["tracking.joint_error_deg_mean"]
    # each solution's own metrics under solution<j>.
    assert (
        m["solution2.track.assist_force_pct_bw"]
        == (found.results[2].metrics["track.assist_force_pct_bw"])
    )


def test_the_solutions_weights_are_seeded_and_solution_zero_is_unweighted():
    from msconvert.emulator.muscles.solutions import SolutionsConfig, muscle_weights

    config = SolutionsConfig(count=3, seed=4)
    np.testing.assert_array_equal(muscle_weights(6, 0, config, 30, 50.0), np.ones((30, 6)))
    first = muscle_weights(400, 1, config, 150, 50.0)
    again = muscle_weights(400, 1, SolutionsConfig(count=3, seed=4), 150, 50.0)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, muscle_weights(400, 2, config, 150, 50.0))
    assert not np.allclose(
        first, muscle_weights(400, 1, SolutionsConfig(count=3, seed=5), 150, 50.0)
    )
    # mean 1 over the muscles at every frame, as solution 0's
    np.testing.assert_allclose(first.mean(axis=1), 1.0, rtol=1e-12)
    # log-normal with σ (1.5 by default): log w spreads by ~σ across muscles, and by ~σ over time
    sigma = config.weight_sigma
    log_w = np.log(first)
    assert abs(log_w.std(axis=1).mean() - sigma) < 0.15 * sigma
    assert 0.5 * sigma < log_w.std(axis=0).mean() < 1.2 * sigma  # 3 s of a 0.3-s process
    # smooth in time: neighbouring frames (0.02 s) nearly equal, frames 1 s apart unrelated
    lag = lambda k: np.corrcoef(log_w[:-k].ravel(), log_w[k:].ravel())[0, 1]  # noqa: E731
    assert lag(1) > 0.95 and abs(lag(50)) < 0.2
    # weight_period_s = 0: one weight per muscle for the whole clip
    still = muscle_weights(400, 1, SolutionsConfig(count=3, seed=4, weight_period_s=0.0), 150, 50.0)
    assert (still == still[0]).all() and abs(np.log(still[0]).std() - sigma) < 0.15 * sigma


def test_per_frame_weights_steer_each_frame_and_bad_ones_are_refused(sway_solutions):
    from msconvert.emulator.muscles.static_opt import MuscleCost
    from msconvert.emulator.muscles.track import Controller, TrackError, track

    model, reference, found = sway_solutions
    frames, n_muscles = found.weights.shape[1:]
    assert found.weights[1].std(axis=0).min() > 0  # every muscle's weight moves in time
    # the same weights per frame for the first half, then swapped to solution 2's: only the
    # frames after the swap (and the motion they cause) change
    weight = found.weights[1].copy()
    half = frames // 2
    weight[half:] = found.weights[2][half:]
    swapped = track(reference, model, feet=FEET, muscle_cost=MuscleCost(weight))
    plain = track(reference, model, feet=FEET, muscle_cost=MuscleCost(found.weights[1]))
    a, b = swapped.emulation.activation, plain.emulation.activation
    np.testing.assert_array_equal(a[:half], b[:half])
    assert np.abs(a[half + 1 :] - b[half + 1 :]).max() > 0.01
    for bad, match in (
        (np.ones((frames + 1, n_muscles)), "weight is"),
        (np.ones((frames, n_muscles + 1)), "weight is"),
        (np.where(np.arange(n_muscles) == 0, 0.0, 1.0) * np.ones((frames, 1)), "positive"),
        (np.full((frames, n_muscles), np.nan), "finite"),
    ):
        with pytest.raises(TrackError, match=match):
            Controller(reference, model, feet=FEET, muscle_cost=MuscleCost(bad))


@pytest.mark.parametrize(
    "settings,match",
    [
        (dict(count=0), "whole number >= 1"),
        (dict(count=1.5), "whole number >= 1"),
        (dict(count=2, push=-1.0), "push must be a number >= 0"),
        (dict(count=2, weight_sigma=float("inf")), "weight_sigma must be a number >= 0"),
        (dict(count=2, weight_period_s=-0.1), "weight_period_s must be a number >= 0"),
    ],
)
def test_bad_solution_settings_fail_in_one_line(settings, match):
    from msconvert.emulator.muscles.solutions import SolutionsConfig
    from msconvert.emulator.muscles.track import TrackError

    with pytest.raises(TrackError, match=match) as info:
        SolutionsConfig(**settings)
    assert "\n" not in str(info.value)


def test_the_solutions_round_trip_through_a_dataset(sway_solutions, tmp_path):
    from msconvert.catalog import Catalog
    from msconvert.emulator.emulation import Emulation
    from msconvert.emulator.muscles.solutions import Solutions
    from msconvert.emulator.muscles.track import TrackResult

    _, _, found = sway_solutions
    with Catalog.create(tmp_path / "c.zarr") as cat:
        cat.write_clip("sway", found.to_dataset(), attrs={}, metrics=found.metrics)
    ds = Catalog.open(tmp_path / "c.zarr")["sway"]
    assert ds["activation"].dims == ("solution", "time", "muscle")
    back = Solutions.from_dataset(ds)
    assert len(back.results) == 3
    for j, (got, made) in enumerate(zip(back.results, found.results, strict=True)):
        np.testing.assert_array_equal(
            got.emulation.activation, made.emulation.activation.astype(np.float32)
        )
        np.testing.assert_array_equal(got.assist_force, made.assist_force.astype(np.float32))
        assert got.metrics == pytest.approx(made.metrics, nan_ok=True), j
    # readers that know nothing of solutions get solution 0
    np.testing.assert_array_equal(
        Emulation.from_dataset(ds).activation, back.results[0].emulation.activation
    )
    assert TrackResult.from_dataset(ds).metrics == back.results[0].metrics
    np.testing.assert_allclose(back.weights, found.weights.astype(np.float32))
    # a catalog written when the weights were one per muscle, constant in time
    old = ds.assign(solution_muscle_weight=ds["solution_muscle_weight"].isel(time=0))
    assert old["solution_muscle_weight"].dims == ("solution", "muscle")
    constant = Solutions.from_dataset(old).weights
    assert constant.shape == found.weights.shape
    np.testing.assert_array_equal(constant[:, -1], old["solution_muscle_weight"].values)
    with pytest.raises(ValueError, match="holds 3 muscle solutions: solution takes 0 to 2, not 3"):
        Emulation.from_dataset(ds, solution=3)


def _cli(*args):
    from click.testing import CliRunner

    from msconvert.convert.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _error_line(result) -> str:
    """The one line a failed command says why in (click prints usage lines above it)."""
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error")]
    assert len(errors) == 1, result.output
    return errors[0]


@pytest.fixture(scope="module")
def two_solution_catalog(tmp_path_factory):
    """A 0.6-s standing clip converted on MyoFullBody by the real CLI with --solutions 2."""
    from msconvert.datasets.demo import standing, write_smplh_npz

    root = tmp_path_factory.mktemp("solutions")
    write_smplh_npz(root / "corpus" / "S1" / "stand_poses.npz", *standing(duration_s=0.6))
    out = root / "c.zarr"
    result = _cli("amass", root / "corpus", "--out", out, "--method", "track", "--solutions", 2)
    assert result.exit_code == 0, result.output
    return root, out, "S1/stand"


def test_the_cli_writes_two_solutions_and_reads_either(two_solution_catalog):
    import json

    from msconvert.catalog import Catalog

    root, out, clip = two_solution_catalog
    ds = Catalog.open(out)[clip]
    assert ds.sizes["solution"] == 2 and ds.attrs["solutions"] == 2
    for name in ("excitation", "activation", "muscle_force", "muscle_length", "emulated_qpos"):
        assert ds[name].dims[0] == "solution", name
    assert "solution" not in ds["reference_qpos"].dims  # shared by both solutions
    stored = [np.asarray(ds["activation"].isel(solution=j).values) for j in range(2)]
    assert np.nanmax(np.abs(stored[1] - stored[0])) > 0.01  # two answers, not one twice

    def query(*extra):
        result = _cli("query", out, clip, "--field", "activation", "--format", "json", *extra)
        assert result.exit_code == 0, result.output
        doc = json.loads(result.output)
        assert doc["dims"] == ["time", "muscle"]
        return np.asarray(doc["data"], dtype=np.float32)

    np.testing.assert_array_equal(query(), stored[0])
    np.testing.assert_array_equal(query("--solution", 0), stored[0])
    np.testing.assert_array_equal(query("--solution", 1), stored[1])
    reference = _cli("query", out, clip, "--field", "reference_qpos", "--solution", 1)
    assert reference.exit_code == 0, reference.output

    for j in (None, 1):
        prefix = root / f"export_{j}"
        extra = () if j is None else ("--solution", j)
        result = _cli("export", out, clip, "--format", "npz", "--out", prefix, *extra)
        assert result.exit_code == 0, result.output
        with np.load(f"{prefix}.npz") as npz:
            np.testing.assert_array_equal(npz["activation"], stored[j or 0])
            assert list(npz["activation__dims"]) == ["time", "muscle"]
    sto = _cli("export", out, clip, "--format", "sto", "--solution", 1, "--out", root / "s1")
    assert sto.exit_code == 0, sto.output

    figure = root / "overlay.png"
    plotted = _cli("plot", out, clip, "--solutions", 2, "--muscles", "soleus_r", "--out", figure)
    assert plotted.exit_code == 0, plotted.output
    assert figure.stat().st_size > 10_000

    # a solution the clip does not hold: one line, naming what it holds
    for command in (
        ("query", out, clip, "--field", "activation", "--solution", 5),
        ("export", out, clip, "--format", "npz", "--out", root / "x", "--solution", 5),
        ("plot", out, clip, "--solution", 5, "--out", root / "x.png"),
    ):
        result = _cli(*command)
        assert result.exit_code == 1
        assert "holds 2 muscle solutions: solution takes 0 to 1, not 5" in _error_line(result)
    too_many = _cli("plot", out, clip, "--solutions", 3, "--out", root / "x.png")
    assert too_many.exit_code == 1 and "cannot overlay 3" in _error_line(too_many)


@pytest.mark.parametrize(
    "extra,match",
    [
        (("--method", "track", "--solutions", "0"), "0 is not in the range x>=1"),
        (("--method", "track", "--solutions", "1.5"), "'1.5' is not a valid integer"),
        (("--method", "static-opt", "--solutions", "3"), "built only for --method track and rl"),
        (("--method", "rl", "--solutions", "2", "--policy", "multi-clip"), "per-clip policies"),
        (("--method", "rl", "--solutions", "2", "--warm-start", "none"), "use --warm-start track"),
        (("--method", "rl", "--solutions", "2", "--no-residual"), "with --no-residual"),
    ],
)
def test_bad_solution_counts_are_refused_in_one_line(tmp_path, extra, match):
    (tmp_path / "corpus").mkdir()
    result = _cli("amass", tmp_path / "corpus", "--out", tmp_path / "c.zarr", *extra)
    assert result.exit_code == 2
    assert match in _error_line(result)
    assert not (tmp_path / "c.zarr").exists()


def test_a_clip_without_solutions_answers_solution_zero_only(two_solution_catalog, tmp_path):
    from msconvert.catalog import Catalog

    root, out, clip = two_solution_catalog
    single = tmp_path / "one.zarr"
    with Catalog.open(out) as cat, Catalog.create(single) as one:
        ds = (
            cat[clip]
            .isel(solution=0, drop=True)
            .drop_vars(["solution_tracked_frames", "solution_fell", "solution_muscle_weight"])
        )
        ds = ds.load()
        ds.attrs = {}  # the catalog writes its own
        one.write_clip(clip, ds, attrs={}, metrics={})
    ok = _cli("query", single, clip, "--field", "activation", "--solution", 0)
    assert ok.exit_code == 0, ok.output
    refused = _cli("query", single, clip, "--field", "activation", "--solution", 1)
    assert refused.exit_code == 1
    assert "has no distinct muscle solutions" in _error_line(refused)


def test_rl_trains_one_policy_per_solution_each_taught_by_its_controller(tmp_path):
    """`amass --method rl --solutions 2` on MyoFullBody (a 0.6-s stance, a tiny budget): two
    policies, the second in its own folder with seed + 1, their emulations on `solution`, and
    the second loads again as a policy of solution 1."""
    from msconvert.catalog import Catalog
    from msconvert.datasets.demo import standing, write_smplh_npz
    from msconvert.emulator.learn.checkpoint import read_meta

    write_smplh_npz(tmp_path / "corpus" / "S1" / "stand_poses.npz", *standing(duration_s=0.6))
    out, clip = tmp_path / "c.zarr", "S1/stand"
    tiny = ("--budget-steps", 50, "--budget-minutes", 30, "--envs", 2, "--evaluations", 0)
    result = _cli(
        "amass", tmp_path / "corpus", "--out", out, "--method", "rl", "--solutions", 2, *tiny
    )
    assert result.exit_code == 0, result.output
    ds = Catalog.open(out)[clip]
    assert ds.sizes["solution"] == 2 and ds.attrs["solutions"] == 2
    assert ds["activation"].dims == ("solution", "time", "muscle")
    assert "solution" not in ds["reference_qpos"].dims
    folders = ds.attrs["solution_checkpoints"]
    assert folders[0] == ds.attrs["checkpoint"] and folders[1].endswith("S1/.stand.solution1")
    assert ds.attrs["solution_seeds"] == [0, 1]
    metas = [read_meta(folder)[0]["config"] for folder in folders]
    assert [(m["solution"], m["seed"]) for m in metas] == [(0, 0), (1, 1)]
    metrics = ds.attrs["metrics"]
    for key in (
        "tracking.joint_error_deg_mean",
        "solution1.tracking.joint_error_deg_mean",
        "solution1.train.env_steps",
        "diversity.activation_corr_mean",
        "teacher_diversity.activation_corr_mean",
    ):
        assert np.isfinite(metrics[key]), key
    tracked = [int(n) for n in ds["solution_tracked_frames"].values]
    act = [np.asarray(ds["activation"].isel(solution=j).values) for j in range(2)]
    common = min(tracked)
    assert np.nanmax(np.abs(act[1][:common] - act[0][:common])) > 0.01  # two answers
    # The policy of solution 1 leaves the catalog and replays the clip on its own.
    exported = tmp_path / "ckpt1"
    result = _cli("export-checkpoint", out, clip, "--solution", 1, "--out", exported)
    assert result.exit_code == 0, result.output
    assert read_meta(exported)[0]["config"]["solution"] == 1
    motion = tmp_path / "corpus" / "S1" / "stand_poses.npz"
    again = _cli("emulate", exported, motion, "--out", tmp_path / "again.zarr", "--clip-id", clip)
    assert again.exit_code == 0, again.output
    replayed = Catalog.open(tmp_path / "again.zarr")[clip]["activation"].values
    np.testing.assert_allclose(replayed, act[1], atol=1e-6, equal_nan=True)
    wrong = _cli("export-checkpoint", out, clip, "--solution", 2, "--out", tmp_path / "x")
    assert wrong.exit_code == 1
    assert "solution takes 0 to 1, not 2" in _error_line(wrong)
