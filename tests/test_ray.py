"""The Ray executor on a real local Ray cluster (`ray start --head`, 2 CPUs, 127.0.0.1), with the
catalog on a local disk and on a real S3 server (SeaweedFS, test_s3.py): the catalogs equal the
local executor's array for array; a worker killed with SIGKILL mid-clip costs a retry (or that
clip, with a reason), never the run; a killed driver loses nothing and --resume redoes only what
is not complete; a second driver on a catalog is refused. Every component is started here on
loopback and stopped at the end of the module.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
import xarray as xr
from click.testing import CliRunner
from test_s3 import free_ports, s3_url, seaweed_s3

from msconvert.catalog import Catalog, CatalogLockedError
from msconvert.catalog import lease as lease_mod
from msconvert.catalog.schema import LOCK_KEY
from msconvert.convert.cli import main
from msconvert.convert.pipeline import PipelineOptions, run_batch
from msconvert.datasets.amass import scan_corpus

TASK_TITLE = "ray::msconvert:"  # the process title of a worker converting a clip


# --- The writer's lease (no Ray needed) -----------------------------------------------------


def _small_clip() -> xr.Dataset:
    return xr.Dataset({"x": (("time",), np.arange(4.0))}, coords={"time": np.arange(4.0)})


def _put_lease(url: Path, **fields: object) -> None:
    doc = {"token": "someone-else", "host": "elsewhere", "pid": 1, "renewed": time.time()}
    (url / LOCK_KEY).write_text(json.dumps({**doc, **fields}))


def test_a_second_run_is_refused_and_a_dead_ones_lease_is_taken_over(tmp_path):
    url = tmp_path / "c.zarr"
    Catalog.create(url).close()
    first = Catalog.open(url, mode="a")
    with first.lease():
        second = Catalog.open(url, mode="a")
        with pytest.raises(CatalogLockedError, match=rf"pid {os.getpid()} on "):
            with second.lease():
                pass
        assert second.mode == "r"  # refused: it writes nothing, not even its index on close
    assert not (url / LOCK_KEY).exists()  # released

    # Left by a process of this machine that is gone (a killed driver): taken over at once.
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], text=True,
                          capture_output=True, check=True).stdout  # fmt: skip
    _put_lease(url, pid=int(gone), machine=lease_mod._machine())
    with Catalog.open(url, mode="a").lease():
        pass
    # Another machine's: honoured while it is renewed, taken over once it expired.
    _put_lease(url, machine="elsewhere/boot/ns", renewed=time.time() - 5)
    with pytest.raises(CatalogLockedError, match="renewed 5 s ago"):
        with Catalog.open(url, mode="a").lease():
            pass
    with pytest.raises(CatalogLockedError):  # --overwrite may not wipe it either
        Catalog.create(url, overwrite=True)
    _put_lease(url, machine="elsewhere/boot/ns", renewed=time.time() - lease_mod.TTL_S - 1)
    with Catalog.open(url, mode="a").lease():
        pass


def test_a_run_that_lost_its_lease_marks_nothing_complete(tmp_path):
    url = tmp_path / "c.zarr"
    Catalog.create(url).close()
    catalog = Catalog.open(url, mode="a")
    with catalog.lease() as lease:
        writer = Catalog.clip_writer(url, lease=lease.token)  # a worker of this run
        writer.write_clip("A/one", _small_clip(), attrs={}, metrics={})
        assert catalog.index_clip("A/one").status == "complete"
        _put_lease(url, machine=lease_mod._machine(), pid=os.getpid())  # another run took it
        with pytest.raises(CatalogLockedError, match="no longer holds"):
            writer.write_clip("A/two", _small_clip(), attrs={}, metrics={})
        assert Catalog.open(url).scan() == {"A/one": "complete", "A/two": "incomplete"}
        # The driver finds out at its next renewal, and stops.
        lease.renew_s = 0.05
        lease._stop.set()
        lease._thread.join()
        lease._stop.clear()
        lease._keep()
        with pytest.raises(CatalogLockedError, match="lost its lease"):
            catalog.check_lease()


@contextlib.contextmanager
def ray_head(env: dict[str, str]) -> Iterator[tuple[str, int]]:
    """A one-node Ray cluster with 2 CPUs on 127.0.0.1 (own ports and temp dir), started with
    `ray start --head --block` in its own session and stopped by its process group; yields its
    address and the pid of `ray start` (every Ray process of it descends from that pid)."""
    ports = free_ports(24)
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's unix sockets live there
    ray = Path(sys.executable).parent / "ray"
    cmd = [
        str(ray) if ray.exists() else "ray",
        "start",
        "--head",
        "--block",
        "--num-cpus=2",
        "--num-gpus=0",
        "--node-ip-address=127.0.0.1",
        f"--port={ports[0]}",
        f"--node-manager-port={ports[1]}",
        f"--object-manager-port={ports[2]}",
        f"--dashboard-agent-listen-port={ports[4]}",
        f"--dashboard-agent-grpc-port={ports[5]}",
        f"--runtime-env-agent-port={ports[6]}",
        f"--metrics-export-port={ports[7]}",
        f"--worker-port-list={','.join(map(str, ports[8:]))}",
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--object-store-memory={256 * 1024**2}",
        f"--temp-dir={temp}",
    ]
    log = open(Path(temp) / "ray-start.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    address = f"127.0.0.1:{ports[0]}"
    try:
        deadline = time.monotonic() + 90
        while not (Path(temp) / "session_latest" / "logs" / "raylet.out").exists():
            assert proc.poll() is None, (Path(temp) / "ray-start.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the Ray head did not start in 90 s"
            time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", ports[0]), timeout=30):
            pass
        yield address, proc.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for child in _descendants_of_session(proc.pid):  # workers that outlived the head
            with contextlib.suppress(psutil.Error):
                child.kill()
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def _descendants_of_session(sid: int) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getsid(p.pid) == sid:
                out.append(p)
    return out


def _clip_tasks(session: int) -> list[tuple[psutil.Process, str]]:
    """Worker processes of our cluster converting a clip now, with the clip id."""
    found = []
    for p in _descendants_of_session(session):
        with contextlib.suppress(psutil.Error):
            title = " ".join(p.cmdline())
            if title.startswith(TASK_TITLE):
                found.append((p, title.removeprefix(TASK_TITLE).strip()))
    return found


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The S3 server, then the Ray cluster whose workers see it (credentials and endpoint come
    from each node's environment, as on a real cluster); the test process sees it too."""
    # Token authentication with a token of this module's own (Ray enables it when a token is
    # found, e.g. ~/.ray/auth_token left by a local ray.init; drivers need the same one).
    own = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex}
    # The workers' local mirrors of checkpoints on the store (checkpoint_store.local_root).
    own["MSCONVERT_CACHE"] = str(tmp_path_factory.mktemp("worker-cache"))
    # JAX's persistent compilation cache, shared by the workers (as `msconvert amass` sets it).
    own["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path_factory.mktemp("jax-cache"))
    own["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    own["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"
    with seaweed_s3(tmp_path_factory.mktemp("seaweedfs")) as s3_env:
        env = {**os.environ, **s3_env, **own}
        with ray_head(env) as (address, session):
            yield {"address": address, "session": session, "env": env}


LIMIT = 3  # clips of the demo corpus converted with static optimization (in id order)


@pytest.fixture(scope="module")
def reference(demo_corpus, tmp_path_factory) -> Catalog:
    """What the local executor writes for the first LIMIT demo clips with --method static-opt
    (one process per clip, as a Ray task with one CPU has); its retarget-stage arrays are what
    a --until retarget run writes."""
    sources = scan_corpus(demo_corpus, limit=LIMIT).sources
    out = tmp_path_factory.mktemp("reference") / "so.zarr"
    options = PipelineOptions(until="emulate", method="static-opt", static_opt_processes=1)
    with Catalog.create(out) as cat:
        assert run_batch(sources, cat, options).completed == LIMIT
    return Catalog.open(out)


def assert_same_arrays(ref: Catalog, url: str, clips: dict[str, str], *, stage: str) -> None:
    """Every array of each catalog clip equals the reference clip's (clip -> reference clip):
    all of them for stage 'static-opt'; for 'retarget', the reference's arrays of that stage."""
    got = Catalog.open(url)
    assert sorted(got) == sorted(clips)
    for clip, ref_clip in clips.items():
        a, b = ref[ref_clip], got[clip]
        names = sorted(b.variables)
        if stage == "static-opt":
            assert names == sorted(a.variables), clip
        else:
            assert "reference_qpos" in names and "activation" not in names, clip
        for name in names:
            np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=f"{clip}:{name}")


def target(storage: str, tmp_path: Path, name: str) -> str:
    return s3_url(name) if storage == "s3" else str(tmp_path / f"{name}.zarr")


@contextlib.contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        yield


def amass(*args: object) -> object:
    return CliRunner().invoke(main, ["amass", *map(str, args)])


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["local", "s3"])
def test_static_opt_on_ray_survives_a_worker_killed_mid_clip(
    storage, cluster, demo_corpus, reference, tmp_path
):
    url = target(storage, tmp_path, "so")
    retries = 1 if storage == "local" else 0  # retried; or failed with its reason
    killed: dict[str, str] = {}
    done = threading.Event()

    def kill_one_worker_mid_clip() -> None:
        seen: dict[tuple[int, str], float] = {}
        while not done.is_set():
            for proc, clip in _clip_tasks(cluster["session"]):
                first = seen.setdefault((proc.pid, clip), time.monotonic())
                if time.monotonic() - first > 0.8:  # well inside its static optimization
                    proc.send_signal(signal.SIGKILL)
                    killed["clip"] = clip
                    return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_worker_mid_clip, daemon=True)
    with environment(cluster["env"]):
        killer.start()
        r = amass(
            demo_corpus, "--out", url, "--method", "static-opt", "--limit", LIMIT,
            "--executor", "ray", "--ray-address", cluster["address"],
            "--max-retries", retries,
        )  # fmt: skip
        done.set()
        killer.join()
        assert killed, "no worker was killed: the clips finished too fast to catch one"
        rows = {e.clip: e for e in Catalog.open(url).clips()}  # the catalog opens
        assert len(rows) == LIMIT
        if retries:  # the killed clip was retried on a fresh worker
            assert r.exit_code == 0, r.output
        else:  # ... or failed with its one-line reason, while the others went on
            assert r.exit_code == 1, r.output
            dead = rows.pop(killed["clip"])
            assert dead.status == "failed" and dead.stage == "worker"
            assert "worker process or node died" in dead.reason and "\n" not in dead.reason
            assert "--max-retries 0" in dead.reason
        assert all(e.status == "complete" for e in rows.values())
        assert_same_arrays(reference, url, {c: c for c in rows}, stage="static-opt")


def _many_clips(demo_corpus: Path, root: Path, n: int = 10) -> dict[str, str]:
    """A corpus of n copies of two demo clips (clip id -> the demo clip it copies)."""
    originals = {
        "DemoLab/subject1/standing": next(demo_corpus.rglob("standing_poses.npz")),
        "DemoLab/subject1/walking": next(demo_corpus.rglob("walking_poses.npz")),
    }
    copies = {}
    for i in range(n):
        ref, path = list(originals.items())[i % 2]
        dest = root / f"Lab{i % 2}" / f"take{i:02d}_poses.npz"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
        copies[f"Lab{i % 2}/take{i:02d}"] = ref
    return copies


def _stamps(url: str, clips: list[str]) -> dict[str, object]:
    """When each clip's group document was last written (local mtime, or S3 LastModified+ETag)."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    fs.invalidate_cache()
    stamps = {}
    for clip in clips:
        info = fs.info(f"{root}/{clip}/zarr.json")
        stamps[clip] = (info.get("mtime"), info.get("LastModified"), info.get("ETag"))
    return stamps


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["local", "s3"])
def test_killed_driver_loses_nothing_and_a_second_driver_is_refused(
    storage, cluster, demo_corpus, reference, tmp_path
):
    copies = _many_clips(demo_corpus, tmp_path / "corpus")
    corpus = tmp_path / "corpus"
    url = target(storage, tmp_path, "killed")
    ray = ("--executor", "ray", "--ray-address", cluster["address"])
    until = ("--until", "retarget")
    log = tmp_path / "driver.log"
    with open(log, "wb") as out:
        driver = subprocess.Popen(
            [sys.executable, "-m", "msconvert", "amass", str(corpus), "--out", url, *until, *ray],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=cluster["env"],
        )
    with environment(cluster["env"]):
        deadline = time.monotonic() + 150
        done: list[str] = []
        while time.monotonic() < deadline and driver.poll() is None:
            with contextlib.suppress(Exception):  # not created yet
                done = [c for c, s in Catalog.open(url).scan().items() if s == "complete"]
            if len(done) >= 2:
                break
            time.sleep(0.2)
        assert driver.poll() is None, f"the driver must still be running: {log.read_text()}"
        assert len(done) >= 2, "the driver converted nothing in time"

        # A second driver on the same catalog is refused, and writes nothing.
        second = amass(corpus, "--out", url, *until, "--resume", *ray)
        assert second.exit_code == 1
        assert "being written by another msconvert run" in second.output, second.output

        driver.send_signal(signal.SIGKILL)
        assert driver.wait() == -signal.SIGKILL
        deadline = time.monotonic() + 30  # Ray stops the dead driver's workers
        while _clip_tasks(cluster["session"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _clip_tasks(cluster["session"]), "the dead driver's workers kept running"
        finished = sorted(c for c, s in Catalog.open(url).scan().items() if s == "complete")
        assert 2 <= len(finished) < len(copies)
        before = _stamps(url, finished)

        r = amass(corpus, "--out", url, *until, "--resume", *ray)
        assert r.exit_code == 0, r.output
        skipped = re.search(r"already complete \(resumed\)\s*│\s*(\d+)\s", r.output)
        assert skipped and int(skipped.group(1)) == len(finished), r.output
        assert _stamps(url, finished) == before  # nothing finished was redone
        assert_same_arrays(reference, url, copies, stage="retarget")


def test_multi_clip_training_is_one_task_and_the_clips_fan_out(cluster, tmp_path, monkeypatch):
    """--policy multi-clip on Ray: the shared policy trains in one task, each clip's fine-tune
    and emulation in a task of its own, with the checkpoints on the store beside the catalog
    (the toy arm, two clips, a tiny PPO budget)."""
    import fsspec
    from arm_reference import arm_reference
    from toy_models import planar_arm

    from msconvert.catalog.schema import STATUS_COMPLETE
    from msconvert.convert import checkpoint_store
    from msconvert.convert.executors import RayCluster, RaySettings
    from msconvert.convert.pipeline import ClipOutcome, shared_policy_on_ray
    from msconvert.datasets.amass import ClipSource
    from msconvert.emulator.model import load_model, model_name, model_sha256, model_spec

    xml = tmp_path / "arm.xml"
    xml.write_text(model_spec(planar_arm(4)).to_xml())
    model = load_model(xml)
    pairs = []
    for k in range(2):
        clip = f"Lab/arm{k}"
        ref = arm_reference(model, seconds=1.0, seed=k, clip_id=clip)
        ref = dataclasses.replace(
            ref, model_sha256=model_sha256(model), model_name=model_name(model)
        )
        ds = ref.to_dataset()
        attrs, ds.attrs = dict(ds.attrs), {}
        source = ClipSource(tmp_path / f"arm{k}.npz", f"{clip}.npz", clip, "smplh")
        ready = ClipOutcome(clip, STATUS_COMPLETE, "retarget", data=ds, attrs=attrs, frames=50)
        pairs.append((source, ready))
    url = s3_url("multi")
    options = PipelineOptions(
        until="emulate", method="rl", policy="multi-clip", model=str(xml), agent="ppo",
        warm_start="none", backend="cpu", n_envs=4, budget_steps=200, budget_minutes=30,
        evaluations=0, finetune_steps=100, checkpoints=checkpoint_store.beside(url),
    )  # fmt: skip
    monkeypatch.setenv("MSCONVERT_CACHE", str(tmp_path / "driver-cache"))
    with environment(cluster["env"]):
        with RayCluster(RaySettings(address=cluster["address"], cpus=1.0)) as ray:
            got = {o.clip_id: (o, node) for o, node in shared_policy_on_ray(ray, pairs, options)}
        assert sorted(got) == ["Lab/arm0", "Lab/arm1"]
        shared = None
        for clip, (outcome, node) in got.items():
            assert outcome.status == STATUS_COMPLETE, outcome.reason
            assert node == socket.gethostname()  # returned by a Ray task (a lost one says '?')
            attrs, metrics = outcome.attrs, outcome.metrics
            assert attrs["policy_clips"] == [clip]  # the fine-tuned copy's
            shared = shared or attrs["finetuned_from"]
            assert shared == attrs["finetuned_from"]  # one shared policy for both
            assert shared.startswith(f"{url}.checkpoints/multi-clip-")
            assert attrs["checkpoint"] == f"{shared}-finetune/{clip}"
            assert metrics["train.finetune_env_steps"] == 100
            assert metrics["train.env_steps"] == 300  # the shared training counted too
            qpos = outcome.data["emulated_qpos"].values
            assert qpos.shape[0] == 50 and np.isfinite(qpos[: attrs["tracked_frames"]]).all()
        # Every policy is on the store, each step's copy finished; none was trained here.
        fs, _ = fsspec.core.url_to_fs(url)
        fs.invalidate_cache()
        for policy in (shared, *(o.attrs["checkpoint"] for o, _ in got.values())):
            assert fs.glob(f"{policy}/*/commit_success.txt"), policy
    assert not (tmp_path / "driver-cache").exists()
