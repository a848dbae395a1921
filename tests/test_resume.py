"""Kill a conversion with SIGKILL mid-run, resume it, and lose nothing."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
from click.testing import CliRunner

from msconvert.catalog import Catalog
from msconvert.convert.cli import main
from msconvert.emulator.learn.checkpoint import read_meta

N_CLIPS = 120


def _corpus(demo_corpus: Path, root: Path) -> Path:
    """Many clips: copies of the demo walking clip under distinct ids."""
    walking = next(demo_corpus.rglob("walking_poses.npz"))
    for i in range(N_CLIPS):
        dest = root / f"Lab{i % 3}" / f"walk{i:03d}_poses.npz"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(walking, dest)
    return root


def _complete(out: Path) -> int:
    """Clip groups whose status=complete is on disk (as a reader would see them)."""
    return sum(
        1 for p in out.glob("Lab*/*/zarr.json") if '"complete"' in p.read_text(errors="ignore")
    )


def test_sigkill_then_resume_loses_nothing(demo_corpus, tmp_path):
    corpus = _corpus(demo_corpus, tmp_path / "corpus")
    reference = tmp_path / "reference.zarr"
    ingest = ["--until", "ingest"]  # the stage whose work is fastest: many clips, short run
    result = CliRunner().invoke(main, ["amass", str(corpus), "--out", str(reference), *ingest])
    assert result.exit_code == 0, result.output

    out = tmp_path / "killed.zarr"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "msconvert",
            "amass",
            str(corpus),
            "--out",
            str(out),
            "--workers",
            "1",
            *ingest,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and _complete(out) >= 3:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run must still be going when it is killed"
    done_before = _complete(out)
    assert 0 < done_before < N_CLIPS

    # Make sure a half-written clip exists too: strip the final status from a complete one,
    # as if the process had died between its arrays and its status.
    cat = Catalog.open(out)
    states = cat.scan()
    victim = next(c for c, s in states.items() if s == "complete")
    group = zarr.open_group(str(out), path=victim, mode="r+")
    attrs = dict(group.attrs)
    attrs.pop("status")
    group.attrs.clear()
    group.attrs.update(attrs)
    assert Catalog.open(out).scan()[victim] == "incomplete"

    result = CliRunner().invoke(
        main, ["amass", str(corpus), "--out", str(out), "--resume", *ingest]
    )
    assert result.exit_code == 0, result.output

    resumed, ref = Catalog.open(out), Catalog.open(reference)
    entries = resumed.clips()
    ids = [e.clip for e in entries]
    assert len(ids) == len(set(ids)) == N_CLIPS, "every clip exactly once"
    assert all(e.status == "complete" for e in entries)
    assert set(resumed.scan().values()) == {"complete"}
    for clip in ref:
        a, b = resumed[clip], ref[clip]
        assert set(a.data_vars) == set(b.data_vars)
        for name in b.data_vars:
            np.testing.assert_array_equal(a[name].values, b[name].values)


def _steps(ckpt: Path) -> list[int]:
    """Finished checkpoint steps of one policy (Orbax names each step's directory by it)."""
    return sorted(int(p.name) for p in ckpt.glob("*") if p.is_dir() and p.name.isdigit())


def _stage_files(cached: Path) -> list[Path]:
    """The stage-cache files of the standing clip: its group's metadata and its warm start
    (where the warm start reads one)."""
    files = [cached / "standing.zarr" / "DemoLab" / "subject1" / "standing" / "zarr.json"]
    files.append(cached / "standing.warm_start.npz")
    return [p for p in files if p.exists()]


def _kill_when(args: list[str], ready, timeout_s: float = 240.0) -> None:
    """Start a conversion, SIGKILL it as soon as ready() holds, and check it was still going."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "msconvert", *args], stdout=log, stderr=log, env=env
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and proc.poll() is None and not ready():
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        code = proc.wait()
        log.seek(0)
        tail = log.read().decode(errors="replace")[-3000:]
    assert code == -signal.SIGKILL, f"the run must still be going when it is killed:\n{tail}"


def test_sigkill_in_training_then_in_emulation_resumes_from_the_checkpoint(demo_corpus, tmp_path):
    out = tmp_path / "rl.zarr"
    ckpt = tmp_path / "rl.zarr.checkpoints" / "DemoLab" / "subject1" / "standing"
    args = ["amass", str(demo_corpus), "--out", str(out), "--include", "*stand*"]
    args += ["--budget-steps", "400", "--budget-minutes", "30", "--envs", "2"]
    args += ["--checkpoint-every", "0", "--stochastic", "4"]  # minutes: steps end it, not load

    # 1. Killed while training: some checkpoints (every 50 env steps), not the last.
    _kill_when(args, lambda: bool(_steps(ckpt)) and _steps(ckpt)[-1] >= 100)
    first = _steps(ckpt)
    assert 100 <= first[-1] < 400
    assert not Catalog.open(out).scan().get(CLIP_RL) == "complete"
    before, _ = read_meta(ckpt)
    # The quick stages are cached: the resumed runs must read them, not redo them.
    cached = tmp_path / "rl.zarr.checkpoints" / "_stages" / "DemoLab" / "subject1"
    stamps = {p: p.stat().st_mtime_ns for p in _stage_files(cached)}
    # The default warm start (a residual on the controller's run) reads no cached solution.
    assert len(stamps) == 1, "the retargeted clip is in the stage cache"
    assert not (cached / "standing.warm_start.npz").exists()

    # 2. Resumed, then killed while emulating: the policy is final, the clip not yet written.
    _kill_when([*args, "--resume"], lambda: bool(_steps(ckpt)) and _steps(ckpt)[-1] == 400)
    trained = _steps(ckpt)
    after, _ = read_meta(ckpt)
    assert {p: p.stat().st_mtime_ns for p in _stage_files(cached)} == stamps, "redone"
    # Continued, not restarted: the learning curve (wall times included) carries on from the kill.
    assert trained[-1] == 400 and after["curve"][: len(before["curve"])] == before["curve"]
    assert Catalog.open(out).scan().get(CLIP_RL) != "complete"
    mtime = (ckpt / "400").stat().st_mtime_ns

    # 3. Resumed again: only the emulation is redone.
    result = CliRunner().invoke(main, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    assert _steps(ckpt) == trained and (ckpt / "400").stat().st_mtime_ns == mtime
    assert not _stage_files(cached), "the stage cache is emptied once the clip is written"
    ds = Catalog.open(out)[CLIP_RL]
    assert ds.attrs["checkpoint_step"] == 400 and ds.sizes["rollout"] == 4
    meta, _ = read_meta(ckpt)
    steps = [r["env_steps"] for r in meta["curve"] if "joint_error_deg" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 400  # one curve, no chunk done twice


CLIP_RL = "DemoLab/subject1/standing"
