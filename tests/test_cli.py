"""The CLI end to end on generated corpora: amass, ls, query, info, errors."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from msconvert.convert.cli import main

REPO = Path(__file__).resolve().parents[1]
UNTIL = ("--until", "retarget")  # the rl stages train; tests of the CLI itself stop before


def run(*args: str) -> object:
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


@pytest.fixture(scope="module")
def mixed_catalog(mixed_corpus, tmp_path_factory) -> tuple[Path, dict[str, str], object]:
    root, broken = mixed_corpus
    out = tmp_path_factory.mktemp("cat") / "catalog.zarr"
    result = run("amass", root, "--out", out, "--until", "retarget")
    return out, broken, result


def ls_json(catalog: Path, *extra: str) -> list[dict]:
    result = run("ls", catalog, "--format", "json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_good_clips_complete_and_broken_ones_fail_with_reasons(mixed_catalog, mixed_corpus):
    out, broken, result = mixed_catalog
    assert result.exit_code == 1, "a batch with failed clips must exit non-zero"
    rows = {r["clip"]: r for r in ls_json(out)}
    root, _ = mixed_corpus
    n_clip_files = len(list(root.rglob("*_poses.npz"))) + len(list(root.rglob("*_stageii.npz")))
    assert len(rows) == n_clip_files
    failed = {r["source"]: r for r in rows.values() if r["status"] == "failed"}
    complete = [r for r in rows.values() if r["status"] == "complete"]
    assert set(failed) == set(broken), "exactly the broken files fail"
    for relpath, expected in broken.items():
        reason = failed[relpath]["reason"]
        assert "\n" not in reason and reason
        assert expected.lower() in reason.lower(), (relpath, reason)
    assert len(complete) >= 5
    for r in complete:
        assert r["reason"] == ""
        assert r["metrics"]["source.frames"] >= 2
        assert r["body_model_mode"] == "mean-skeleton"
    only_failed = ls_json(out, "--status", "failed")
    assert {r["clip"] for r in only_failed} == {r["clip"] for r in failed.values()}


def test_ls_table_and_csv(mixed_catalog):
    out, _, _ = mixed_catalog
    table = run("ls", out)
    assert table.exit_code == 0 and "complete" in table.output and "failed" in table.output
    result = run("ls", out, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert {"clip", "status", "reason", "source.frames"} <= set(rows[0])
    assert len(rows) == len(ls_json(out))


def _rodrigues(rotvec: np.ndarray) -> np.ndarray:
    """Rotation matrices from axis-angle, written out (independent of scipy)."""
    theta = np.linalg.norm(rotvec, axis=-1, keepdims=True)
    axis = np.where(theta > 1e-12, rotvec / np.maximum(theta, 1e-12), 0.0)
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zero = np.zeros_like(x)
    k = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*x.shape, 3, 3)
    t = theta[..., None]
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * (k @ k)


def _independent_fk(trans: np.ndarray, poses: np.ndarray) -> np.ndarray:
    """Mean-skeleton FK straight from the reference figures, joint by joint."""
    ref = REPO.parent / "shared" / "reference" / "smpl_mean_skeleton.json"
    if not ref.exists():
        ref = REPO / "datasets" / "data" / "smpl_mean_skeleton.json"
    fig = json.loads(ref.read_text())
    parents, offsets = fig["parents"], np.asarray(fig["offsets_from_parent"])
    rot = _rodrigues(poses[:, :66].reshape(-1, 22, 3))
    glob_r = [rot[:, 0]]
    pos = [trans + np.asarray(fig["root_joint_rest_position"])]
    for j in range(1, 22):
        p = parents[j]
        glob_r.append(glob_r[p] @ rot[:, j])
        pos.append(pos[p] + np.einsum("tij,j->ti", glob_r[p], offsets[j]))
    return np.stack(pos, axis=1)


def test_query_source_joints_agrees_with_independent_fk(mixed_catalog, mixed_corpus):
    out, _, _ = mixed_catalog
    root, _ = mixed_corpus
    walking = next(root.rglob("walking_poses.npz"))
    clip = walking.relative_to(root).as_posix().removesuffix("_poses.npz")
    result = run("query", out, clip, "--field", "source_joints", "--format", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["dims"] == ["source_time", "joint", "xyz"]
    assert doc["coords"]["xyz"] == ["x", "y", "z"]
    got = np.asarray(doc["data"])
    with np.load(walking) as z:
        fps = float(z["mocap_framerate"])
        expected = _independent_fk(z["trans"].astype(float), z["poses"].astype(float))
    assert got.shape == expected.shape
    names = doc["coords"]["joint"]
    assert names[0] == "pelvis" and names[21] == "right_wrist"
    assert np.abs(got - expected).max() < 2e-3, "within a few millimetres"
    assert np.allclose(doc["coords"]["source_time"][:3], np.arange(3) / fps)


def test_query_selects_by_label_and_time_in_every_format(mixed_catalog, tmp_path):
    out, _, _ = mixed_catalog
    clip = next(r["clip"] for r in ls_json(out, "--status", "complete"))
    full = json.loads(
        run("query", out, clip, "--field", "source_joints", "--format", "json").output
    )
    sel = json.loads(
        run(
            "query",
            out,
            clip,
            "--field",
            "source_joints",
            "--joints",
            "left_knee,right_knee",
            "--start",
            "0.5",
            "--end",
            "1.0",
            "--format",
            "json",
        ).output
    )
    assert sel["coords"]["joint"] == ["left_knee", "right_knee"]
    times = np.asarray(sel["coords"]["source_time"])
    assert times.min() >= 0.5 - 1e-9 and times.max() <= 1.0 + 1e-9 and len(times) > 1
    t_all = np.asarray(full["coords"]["source_time"])
    i0 = int(np.searchsorted(t_all, times[0] - 1e-9))
    knee = full["coords"]["joint"].index("left_knee")
    np.testing.assert_allclose(
        np.asarray(sel["data"])[:, 0], np.asarray(full["data"])[i0 : i0 + len(times), knee]
    )
    npy = tmp_path / "q.npy"
    r = run(
        "query",
        out,
        clip,
        "--field",
        "source_joints",
        "--joints",
        "left_knee",
        "--format",
        "npy",
        "--out",
        npy,
    )
    assert r.exit_code == 0
    arr = np.load(npy, allow_pickle=False)
    assert arr.shape == (len(t_all), 1, 3)
    r = run("query", out, clip, "--field", "source_joints", "--joints", "head", "--format", "csv")
    rows = list(csv.reader(io.StringIO(r.output)))
    assert rows[0] == ["source_time", "head.x", "head.y", "head.z"] and len(rows) == len(t_all) + 1
    r = run("query", out, clip, "--field", "source_joints", "--joints", "head", "--end", "0.1")
    assert r.exit_code == 0 and "head.z" in r.output


def test_query_errors_are_one_line(mixed_catalog):
    out, _, _ = mixed_catalog
    clip = next(r["clip"] for r in ls_json(out, "--status", "complete"))
    bad_clip = next(r for r in ls_json(out, "--status", "failed"))
    for args in (
        (clip, "--field", "no_such_field"),
        ("no/such/clip", "--field", "source_joints"),
        (clip, "--field", "source_joints", "--joints", "no_such_joint"),
        (bad_clip["clip"], "--field", "source_joints"),
    ):
        r = CliRunner().invoke(main, ["query", str(out), *args])
        assert r.exit_code != 0, args
        assert "Traceback" not in r.output and r.output.strip(), args
    r = CliRunner().invoke(main, ["query", str(out), bad_clip["clip"], "--field", "source_joints"])
    assert bad_clip["reason"][:20] in r.output


def test_info_shows_attrs_and_shapes(mixed_catalog):
    out, _, _ = mixed_catalog
    clip = next(r["clip"] for r in ls_json(out, "--status", "complete"))
    r = run("info", out, clip, "--format", "json")
    doc = json.loads(r.output)
    assert len(doc["attrs"]["source_sha256"]) == 64
    assert doc["attrs"]["body_model_mode"] == "mean-skeleton"
    assert doc["arrays"]["source_joints"]["dims"] == ["source_time", "joint", "xyz"]
    assert run("info", out, clip).exit_code == 0


def test_existing_catalog_needs_resume_or_overwrite(demo_corpus, tmp_path):
    out = tmp_path / "c.zarr"
    assert run("amass", demo_corpus, "--out", out, "--limit", "1", *UNTIL).exit_code == 0
    r = CliRunner().invoke(main, ["amass", str(demo_corpus), "--out", str(out), *UNTIL])
    assert r.exit_code == 2 and "--resume" in r.output
    assert run("amass", demo_corpus, "--out", out, "--resume", *UNTIL).exit_code == 0
    assert len(ls_json(out)) == len(list(demo_corpus.rglob("*_poses.npz"))) + len(
        list(demo_corpus.rglob("*_stageii.npz"))
    )
    assert (
        run("amass", demo_corpus, "--out", out, "--overwrite", "--limit", "2", *UNTIL).exit_code
        == 0
    )
    assert len(ls_json(out)) == 2


def test_no_clips_and_missing_root_are_usage_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(main, ["amass", str(tmp_path / "empty"), "--out", str(tmp_path / "c")])
    assert r.exit_code == 2 and "no AMASS clips" in r.output
    r = CliRunner().invoke(main, ["amass", str(tmp_path / "nope"), "--out", str(tmp_path / "c")])
    assert r.exit_code == 2


def test_process_pool_gives_the_same_arrays(demo_corpus, tmp_path):
    from msconvert.catalog import Catalog

    one, two = tmp_path / "one.zarr", tmp_path / "two.zarr"
    assert run("amass", demo_corpus, "--out", one, "--workers", "1", *UNTIL).exit_code == 0
    assert run("amass", demo_corpus, "--out", two, "--workers", "2", *UNTIL).exit_code == 0
    a, b = Catalog.open(one), Catalog.open(two)
    assert sorted(a) == sorted(b) and len(list(a)) >= 5
    for clip in a:
        for name in a[clip].data_vars:
            np.testing.assert_array_equal(a[clip][name].values, b[clip][name].values)


def test_module_entry_point_and_help():
    r = subprocess.run(
        [sys.executable, "-m", "msconvert", "--help"], capture_output=True, text=True, check=True
    )
    for cmd in ("amass", "ls", "query", "info"):
        assert cmd in r.stdout
    r = run("amass", "--help")
    for opt in (
        "--until",
        "--resume",
        "--workers",
        "--include",
        "--exclude",
        "--limit",
        "--body-models",
    ):
        assert opt in r.output


RETARGET_KEYS = (
    "retarget.position_error_mm",
    "retarget.position_error_mm_max",
    "retarget.orientation_error_deg",
    "retarget.joint_limit_violation_pct",
    "retarget.penetration_pct",
    "retarget.penetration_mm_max",
    "retarget.float_mm",
    "retarget.tendon_jump_pct",
    "retarget.fps",
)


def test_retarget_stage_writes_reference_arrays_and_metrics(mixed_catalog):
    out, _, _ = mixed_catalog
    rows = ls_json(out, "--status", "complete")
    for r in rows:
        for key in RETARGET_KEYS:
            assert isinstance(r["metrics"][key], float), (r["clip"], key)
        assert r["metrics"]["retarget.position_error_mm"] < 40.0, r["clip"]
        assert r["metrics"]["retarget.joint_limit_violation_pct"] <= 1.0, r["clip"]
    walking = next(r for r in rows if r["clip"].endswith("/walking"))
    assert walking["metrics"]["retarget.position_error_mm"] <= 20.0
    assert walking["metrics"]["retarget.penetration_pct"] <= 0.2
    doc = json.loads(
        run("query", out, walking["clip"], "--field", "reference_qpos", "--format", "json").output
    )
    assert doc["dims"] == ["time", "qpos"]
    qpos = np.asarray(doc["data"])
    assert np.isfinite(qpos).all() and qpos.shape[1] == len(doc["coords"]["qpos"])
    times = np.asarray(doc["coords"]["time"])
    np.testing.assert_allclose(np.diff(times), 1 / 50.0, rtol=1e-9)
    info = json.loads(run("info", out, walking["clip"], "--format", "json").output)
    assert info["attrs"]["model_name"] == "myofullbody"
    assert len(info["attrs"]["model_sha256"]) == 64
    for name in ("reference_qvel", "reference_body_pos", "retarget_position_error"):
        assert info["arrays"][name]["dims"][0] == "time"


def test_id_clashing_with_an_earlier_run_fails_that_clip_only(demo_corpus, tmp_path):
    walking = next(demo_corpus.rglob("walking_poses.npz"))
    first, second = tmp_path / "first", tmp_path / "second"
    (first / "A").mkdir(parents=True)
    (second / "A/b").mkdir(parents=True)
    (first / "A/b_poses.npz").write_bytes(walking.read_bytes())
    (second / "A/b/c_poses.npz").write_bytes(walking.read_bytes())
    (second / "A/d_poses.npz").write_bytes(walking.read_bytes())
    out = tmp_path / "c.zarr"
    assert run("amass", first, "--out", out, "--until", "ingest").exit_code == 0
    # A second corpus into the same catalog: 'A/b/c' would sit inside the clip 'A/b'.
    result = run("amass", second, "--out", out, "--until", "ingest", "--resume")
    assert result.exit_code == 1, result.output
    rows = {r["clip"]: r["status"] for r in ls_json(out)}
    assert rows == {"A/b": "complete", "A/d": "complete"}
    assert "A/b/c" in result.output and "inside clip" in result.output


def test_retarget_one_file_into_a_catalog(demo_corpus, tmp_path):
    walking = next(demo_corpus.rglob("walking_poses.npz"))
    out = tmp_path / "one.zarr"
    assert run("retarget", walking, "--out", out).exit_code == 0
    again = run("retarget", walking, "--out", out, "--clip-id", "S1/walk", "--control-hz", "25")
    assert again.exit_code == 0, again.output
    rows = {r["clip"]: r for r in ls_json(out)}
    assert set(rows) == {"walking", "S1/walk"}  # the second run adds, it does not replace
    assert rows["walking"]["metrics"]["retarget.position_error_mm"] < 20
    bad = run("retarget", walking, "--out", out, "--clip-id", "///")
    assert bad.exit_code == 2 and "--clip-id" in bad.output


def test_static_opt_method_writes_muscle_arrays_and_metrics(demo_corpus, tmp_path):
    out = tmp_path / "so.zarr"
    args = ["amass", demo_corpus, "--out", out, "--method", "static-opt", "--include", "*stand*"]
    result = run(*args)
    assert result.exit_code == 0, result.output
    (row,) = ls_json(out)
    for key in (
        "static_opt.residual_force_pct_bw",
        "static_opt.residual_moment_nm",
        "static_opt.fps",
        "retarget.position_error_mm",
    ):
        assert np.isfinite(row["metrics"][key]), key
    # Standing still: the floor carries the body, so the root needs almost no residual force.
    assert row["metrics"]["static_opt.residual_force_pct_bw"] < 2.0
    clip = row["clip"]
    act = run(
        "query", out, clip, "--field", "activation", "--muscles", "soleus_r", "--format", "json"
    )
    doc = json.loads(act.output)
    assert doc["dims"] == ["time", "muscle"] and doc["coords"]["muscle"] == ["soleus_r"]
    values = np.asarray(doc["data"])
    assert values.size > 100 and (values >= 0).all() and (values <= 1).all()
    grf = run("query", out, clip, "--field", "grf", "--sel", "xyz=z", "--format", "json")
    vertical = np.asarray(json.loads(grf.output)["data"]).sum(axis=(1, 2))
    info = run("info", out, clip)
    assert "static-opt" in info.output
    from msconvert.catalog import Catalog

    ds = Catalog.open(out)[clip]
    for name, dims in {
        "excitation": ("time", "muscle"),
        "muscle_force": ("time", "muscle"),
        "grf": ("time", "foot", "xyz"),
        "residual": ("time", "residual_component"),
    }.items():
        assert ds[name].dims == dims, name
    weight = ds.attrs["body_weight_n"]
    assert abs(np.median(vertical) / weight - 1) < 0.05  # the feet carry the body weight
    # A method that trains nothing has no train stage.
    refused = run(*args[:3], tmp_path / "x.zarr", "--method", "static-opt", "--until", "train")
    assert refused.exit_code == 2 and "trains nothing" in refused.output


def test_training_eta_is_the_sooner_of_the_step_and_time_budgets():
    import io

    from rich.console import Console

    from msconvert.convert.progress import TrainProgress

    def eta(budget_minutes):
        bar = TrainProgress(20_000, "train", Console(file=io.StringIO()), budget_minutes)
        bar.update({"env_steps": 200.0, "seconds": 30.0})  # compilation: no rate yet
        first = bar.progress.tasks[0].fields["eta"]
        bar.update({"env_steps": 1200.0, "seconds": 40.0})  # 100 env steps/s
        return first, bar.progress.tasks[0].fields["eta"]

    assert eta(None) == ("-:--:--", "0:03:08")  # 18,800 steps at 100/s
    assert eta(1.5) == ("0:01:00", "0:00:50")  # the 90-s budget ends first


def _declared_options() -> list[str]:
    """Every long option name passed to click.option(...) anywhere in convert/."""
    import ast

    names = []
    for path in sorted((REPO / "convert").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if not (node.func.attr == "option" and getattr(node.func.value, "id", "") == "click"):
                continue
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    names += [n for n in arg.value.split("/") if n.startswith("--")]
    return names


def test_each_long_option_is_declared_once():
    names = _declared_options()
    assert {"--out", "--model", "--preset", "--budget-steps", "--envs", "--evaluations"} <= set(
        names
    ), "the scan finds the declarations"
    twice = sorted({n for n in names if names.count(n) > 1})
    assert not twice, f"declared more than once in convert/: {twice}"


def test_train_takes_the_training_options_of_amass():
    train_help = run("train", "--help").output
    for opt in ("--preset", "--evaluations", "--budget-steps", "--backend", "--envs"):
        assert opt in train_help
    assert "come from --preset" in " ".join(train_help.split())
    params = {c: {p.name: p for p in main.commands[c].params} for c in ("amass", "train")}
    shared = set(params["amass"]) & set(params["train"])
    assert {"preset", "agent", "reward", "budget_steps", "n_envs", "backend", "evaluations"} <= (
        shared
    )
    for name in shared:  # one declaration: the same default, type and help
        assert params["amass"][name].to_info_dict() == params["train"][name].to_info_dict(), name


def test_train_builds_its_config_from_the_preset(mixed_catalog, monkeypatch, tmp_path):
    from types import SimpleNamespace

    from msconvert.convert.presets import PRESETS
    from msconvert.emulator.learn import runs

    out, _, _ = mixed_catalog
    clip = next(r["clip"] for r in ls_json(out, "--status", "complete"))
    seen = []

    def fake_train_policy(refs, model, config, out_dir, **kwargs):
        seen.append(config)
        return None, SimpleNamespace(curve=[], step=0)

    monkeypatch.setattr(runs, "train_policy", fake_train_policy)
    result = run("train", out, clip, "--out", tmp_path / "a")
    assert result.exit_code == 0, result.output
    demo = PRESETS["demo"]
    config = seen[-1]
    assert (config.backend, config.n_envs, config.budget_steps) == (
        demo.backend,
        demo.n_envs,
        demo.budget_steps,
    )
    assert (config.budget_minutes, config.evaluations, config.bc_steps) == (
        demo.budget_minutes,
        demo.evaluations,
        demo.bc_steps,
    )
    args = ("--preset", "cpu", "--envs", "3", "--evaluations", "0", "--budget-steps", "7")
    result = run("train", out, clip, "--out", tmp_path / "b", *args)
    assert result.exit_code == 0, result.output
    config = seen[-1]
    assert (config.n_envs, config.evaluations, config.budget_steps) == (3, 0, 7)
    assert (config.backend, config.budget_minutes) == ("cpu", PRESETS["cpu"].budget_minutes)
    # --out must be a directory for train, a file for query: a usage error either way.
    (tmp_path / "file").write_text("")
    bad = CliRunner().invoke(main, ["train", str(out), clip, "--out", str(tmp_path / "file")])
    assert bad.exit_code == 2 and "--out" in bad.output
    bad = CliRunner().invoke(
        main, ["query", str(out), clip, "--field", "source_joints", "--out", str(tmp_path)]
    )
    assert bad.exit_code == 2 and "--out" in bad.output
