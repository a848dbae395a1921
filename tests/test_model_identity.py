"""A model's identity is what defines its physics, never where its files are: the same model
installed in two folders hashes the same, and a catalog written with one install trains, resumes
and emulates with the other."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
from arm_reference import arm_reference
from click.testing import CliRunner
from toy_models import planar_arm

from msconvert.catalog import Catalog
from msconvert.convert.cli import main
from msconvert.emulator.learn.checkpoint import read_meta
from msconvert.emulator.learn.runs import emulate_policy, load_policy
from msconvert.emulator.model import (
    default_model_path,
    load_model,
    model_name,
    model_sha256,
    model_spec,
)

# A tetrahedron-ish mesh for the forearm (OBJ), so that the model has an asset file.
_SHELL = """v 0 -0.02 -0.02
v 0.2 -0.02 -0.02
v 0 0.02 -0.02
v 0 -0.02 0.02
v 0.2 0.02 0.02
f 1 2 3
f 1 2 4
f 1 3 4
f 2 3 5
f 2 4 5
f 3 4 5
"""


def _install_arm(root: Path) -> Path:
    """The planar arm as an MJCF that includes an asset file declaring a mesh in a subfolder
    (MyoFullBody's layout: MuJoCo then records the mesh's absolute path in the model)."""
    xml = model_spec(planar_arm(2)).to_xml()
    xml = xml.replace(
        '<compiler angle="radian"/>',
        '<compiler angle="radian"/>\n  <include file="parts/assets.xml"/>',
    )
    xml = xml.replace(
        '<body name="forearm" pos="0.3 0 0">',
        '<body name="forearm" pos="0.3 0 0">\n'
        '      <geom type="mesh" mesh="shell" contype="0" conaffinity="0" mass="0.1"/>',
        1,
    )
    assert 'mesh="shell"' in xml and "parts/assets.xml" in xml
    (root / "parts").mkdir(parents=True)
    (root / "parts" / "shell.obj").write_text(_SHELL)
    (root / "parts" / "assets.xml").write_text(
        '<mujoco><asset><mesh name="shell" file="shell.obj"/></asset></mujoco>'
    )
    (root / "arm.xml").write_text(xml)
    return root / "arm.xml"


def test_myofullbody_installed_in_two_folders_has_one_identity(tmp_path):
    package = default_model_path().parents[1]  # musclemimic_models/model: the XML and meshes
    relative = default_model_path().relative_to(package)
    models = []
    for name in ("a", "b/deeper"):
        shutil.copytree(package, tmp_path / name / "model")
        models.append(load_model(tmp_path / name / "model" / relative))
    a, b = models
    assert a.paths != b.paths  # the installs differ where their files are ...
    assert model_sha256(a) == model_sha256(b) == model_sha256(load_model())  # ... and only there


def test_identity_follows_the_physics_not_the_looks(tmp_path):
    model = load_model(_install_arm(tmp_path / "arm"))
    same = model_sha256(model)
    model.geom_rgba[:] = 0.5  # colours do not move anything
    assert model_sha256(model) == same
    model.actuator_gainprm[0, 2] *= 1.5  # a stronger muscle does
    assert model_sha256(model) != same
    model.actuator_gainprm[0, 2] /= 1.5
    model.opt.timestep = 0.001
    assert model_sha256(model) != same


@pytest.mark.slow
def test_a_catalog_moves_between_installs(tmp_path):
    """Written with the model in one folder; trained, resumed and emulated with a copy of it in
    another (as on another machine or checkout)."""
    here = load_model(_install_arm(tmp_path / "checkout-a"))
    there_xml = _install_arm(tmp_path / "elsewhere" / "checkout-b")
    there = load_model(there_xml)
    assert here.paths != there.paths
    ref = arm_reference(here, seconds=1.0, clip_id="arm")
    ref = dataclasses.replace(ref, model_sha256=model_sha256(here), model_name=model_name(here))
    catalog = tmp_path / "catalog.zarr"
    with Catalog.create(catalog) as cat:
        ds = ref.to_dataset()
        attrs, ds.attrs = dict(ds.attrs), {}
        cat.write_clip("arm", ds, attrs=attrs, metrics={}, summary={"until": "retarget"})

    ckpt = tmp_path / "ckpt"
    train = [
        "train", str(catalog), "arm", "--model", str(there_xml), "--out", str(ckpt),
        "--agent", "ppo", "--envs", "2", "--backend", "cpu", "--no-warm-start",
        "--evaluations", "0",
    ]  # fmt: skip
    r = CliRunner().invoke(main, [*train, "--budget-steps", "100"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, [*train, "--budget-steps", "200", "--resume"])
    assert r.exit_code == 0, r.output
    meta, _ = read_meta(ckpt)
    assert meta["model_sha256"] == model_sha256(here) == model_sha256(there)

    trainer, policy = load_policy(ckpt, ref, there, model_sha256(there))
    assert policy.step >= 200
    emulation = emulate_policy(trainer, policy, ref)
    assert np.isfinite(emulation.metrics["tracking.joint_error_deg_mean"])
