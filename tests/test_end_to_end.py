"""The main job through the CLI: corpus → retarget → warm start → train → emulate → catalog, then
resume, export, plot, export-checkpoint and emulate again (MyoFullBody, a tiny budget)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from msconvert.catalog import Catalog
from msconvert.convert.cli import main
from msconvert.convert.exports import read_sto

CLIP = "DemoLab/subject1/standing"
# The step budget, not the machine's load, ends training: the minutes cap is set out of reach.
TINY = ["--include", "*stand*", "--budget-steps", "200", "--budget-minutes", "30", "--envs", "2"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def converted(demo_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e") / "c.zarr"
    result = run("amass", demo_corpus, "--out", out, *TINY)
    assert result.exit_code == 0, result.output
    return out


def test_every_array_with_named_dims_and_the_metrics(converted):
    ds = Catalog.open(converted)[CLIP]
    expected = {
        "emulated_qpos": ("time", "qpos"),
        "emulated_qvel": ("time", "qvel"),
        "reference_qpos": ("time", "qpos"),
        "excitation": ("time", "muscle"),
        "activation": ("time", "muscle"),
        "muscle_force": ("time", "muscle"),
        "muscle_length": ("time", "muscle"),
        "muscle_velocity": ("time", "muscle"),
        "joint_torque": ("time", "model_joint"),
        "grf": ("time", "foot", "xyz"),
        "cop": ("time", "foot", "xyz"),
        "com": ("time", "xyz"),
        "tracking_joint_error_deg": ("time",),
        "source_joints": ("source_time", "joint", "xyz"),
    }
    for name, dims in expected.items():
        assert ds[name].dims == dims, name
    assert ds.sizes["muscle"] == 416
    tracked = ds.attrs["tracked_frames"]
    act = ds["activation"].values
    assert np.isfinite(act[:tracked]).all() and ((act[:tracked] >= 0) & (act[:tracked] <= 1)).all()
    if ds.attrs["fell"]:  # nothing is invented after a fall
        assert np.isnan(act[tracked:]).all()
    (row,) = json.loads(run("ls", converted, "--format", "json").output)
    for key in (
        "tracking.joint_error_deg_mean",
        "tracking.joint_error_deg_max",
        "tracking.joint_error_deg_worst",
        "tracking.body_error_mm_mean",
        "tracking.root_error_mm_mean",
        "tracking.fraction_tracked",
        "tracking.effort",
        "train.env_steps",
        "train.minutes",
        "retarget.position_error_mm",
        "policy.assist_scale",  # the root assist it was emulated at (--assist on: the default)
        "policy.assist_force_pct_bw",
    ):
        assert np.isfinite(row["metrics"][key]), key
    assert row["metrics"]["train.env_steps"] == 200
    assert 0 < row["metrics"]["tracking.fraction_tracked"] <= 1
    assert ds.attrs["method"] == "rl" and ds.attrs["checkpoint"]


def test_resume_redoes_nothing_and_reuses_the_policy(converted, demo_corpus):
    before = Catalog.open(converted)[CLIP]["activation"].values
    result = run("amass", demo_corpus, "--out", converted, "--resume", *TINY)
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(Catalog.open(converted)[CLIP]["activation"].values, before)


def test_exports_and_plot(converted, tmp_path):
    result = run("export", converted, CLIP, "--format", "sto", "--out", tmp_path / "s")
    assert result.exit_code == 0, result.output
    header, columns, data = read_sto(tmp_path / "s_activation.sto")
    assert columns[0] == "time" and len(columns) == 417 and header["inDegrees"] == "no"
    ds = Catalog.open(converted)[CLIP]
    np.testing.assert_allclose(data[:, 1], ds["activation"].values[:, 0], rtol=1e-5, equal_nan=True)
    result = run("export", converted, CLIP, "--format", "mot", "--out", tmp_path / "k.mot")
    assert result.exit_code == 0, result.output
    header, columns, _ = read_sto(tmp_path / "k.mot")
    assert header["inDegrees"] == "yes" and "pelvis_tilt" in columns
    png = tmp_path / "p.png"
    result = run("plot", converted, CLIP, "--out", png)
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_export_checkpoint_then_emulate_reproduces_the_catalog(converted, demo_corpus, tmp_path):
    ckpt = tmp_path / "ckpt"
    result = run("export-checkpoint", converted, CLIP, "--out", ckpt)
    assert result.exit_code == 0, result.output
    layout = json.loads((ckpt / "policy.json").read_text())
    # One excitation per muscle, then the six root-assist components (--assist on).
    assert layout["action_dim"] == 416 + 6 and len(layout["muscles"]) == 416
    assert "root-assist" in layout["action"] and 0.0 <= layout["assist_scale"] <= 1.0
    again = tmp_path / "again.zarr"
    motion = next(demo_corpus.rglob("standing_poses.npz"))
    result = run("emulate", ckpt, motion, "--out", again, "--clip-id", "replay")
    assert result.exit_code == 0, result.output
    a, b = Catalog.open(converted)[CLIP], Catalog.open(again)["replay"]
    for name in ("activation", "emulated_qpos", "grf"):
        np.testing.assert_allclose(a[name].values, b[name].values, atol=1e-6, equal_nan=True)


def test_multi_clip_policy_fine_tuned_per_clip_with_stochastic_rollouts(demo_corpus, tmp_path):
    out = tmp_path / "multi.zarr"
    two = ["--include", "*stand*", "--include", "*arm_raise*", "--budget-steps", "200"]
    two += ["--budget-minutes", "30"]  # the step budget ends training, not machine load
    more = ["--envs", "2", "--policy", "multi-clip", "--finetune-steps", "50", "--stochastic", "2"]
    result = run("amass", demo_corpus, "--out", out, *two, *more)
    assert result.exit_code == 0, result.output
    rows = {r["clip"]: r for r in json.loads(run("ls", out, "--format", "json").output)}
    assert set(rows) == {CLIP, "DemoLab/subject2/arm_raise"}
    catalog = Catalog.open(out)
    for clip, row in rows.items():
        metrics, ds = row["metrics"], catalog[clip]
        # 200 shared steps, then 50 on this clip alone (one chunk of 25 control steps x 2 envs).
        assert metrics["train.env_steps"] == 250 and metrics["train.finetune_env_steps"] == 50
        assert ds.attrs["policy_clips"] == [clip] and "multi-clip" in ds.attrs["finetuned_from"]
        assert ds["stochastic_activation"].dims == ("rollout", "time", "muscle")
        assert ds.sizes["rollout"] == 2 and ds["stochastic_emulated_qpos"].shape[1:] == (
            ds.sizes["time"],
            ds.sizes["qpos"],
        )
        tracked = ds["stochastic_tracked_frames"].values
        act = ds["stochastic_activation"].values
        for k in range(2):
            assert 1 <= tracked[k] <= ds.sizes["time"]
            assert ((act[k, : tracked[k]] >= 0) & (act[k, : tracked[k]] <= 1)).all()
            assert np.isnan(act[k, tracked[k] :]).all()  # nothing after a fall
        n = min(tracked)
        assert np.abs(act[0, :n] - act[1, :n]).max() > 0  # two seeds, two muscle solutions
        assert metrics["tracking.stochastic_rollouts"] == 2
        for key in ("joint_error_deg_mean", "fraction_tracked_mean", "activation_sd"):
            assert np.isfinite(metrics[f"tracking.stochastic_{key}"]), key
    ckpts = out.with_name(out.name + ".checkpoints")
    assert len(list(ckpts.glob("multi-clip-*-finetune/DemoLab/subject*/*"))) == 2
    refused = run("amass", demo_corpus, "--out", tmp_path / "x.zarr", "--finetune-steps", "5")
    assert refused.exit_code == 2 and "multi-clip" in refused.output
