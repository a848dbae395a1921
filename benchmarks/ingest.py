"""Ingest throughput and query latency, measured side by side in one run.

    python benchmarks/ingest.py [--json] [--clips 200] [--catalog-clips 1000]

1. Ingest + kinematics + catalog write over a generated corpus of N clips (copies of the demo
   clips under distinct ids), with 1 and 2 worker processes: clips/s and frames/s.
2. p50 latency of reading one joint's world series from one clip of a 1,000-clip catalog
   (`Catalog.open` + `read_variable`, what `msconvert query` does after start-up), next to the
   time to get the same series from the raw .npz (load + mean-skeleton forward kinematics).
The last line printed is a JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from msconvert.catalog import Catalog
from msconvert.convert.pipeline import PipelineOptions, run_batch
from msconvert.datasets.amass import discover, read_amass
from msconvert.datasets.demo import write_demo_corpus
from msconvert.datasets.kinematics import forward_kinematics, mean_skeleton


def make_corpus(root: Path, n: int, seed_dir: Path) -> None:
    """N clip files cycling through the demo clips, each under its own id."""
    clips = sorted(seed_dir.rglob("*_poses.npz")) + sorted(seed_dir.rglob("*_stageii.npz"))
    for i in range(n):
        src = clips[i % len(clips)]
        suffix = "_stageii.npz" if src.name.endswith("_stageii.npz") else "_poses.npz"
        dest = root / f"Bench{i // 100:02d}" / f"clip{i:05d}{suffix}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)


def ingest(corpus: Path, out: Path, workers: int) -> dict[str, float]:
    sources = discover(corpus)
    start = time.perf_counter()
    with Catalog.create(out, overwrite=True) as cat:
        report = run_batch(sources, cat, PipelineOptions(until="ingest"), workers=workers)
    seconds = time.perf_counter() - start
    assert report.failed == 0, report.failures[:3]
    return {
        "clips_per_s": report.completed / seconds,
        "frames_per_s": report.frames / seconds,
        "seconds": seconds,
    }


def query_latency(catalog: Path, corpus: Path, repeats: int) -> dict[str, float]:
    sources = {s.clip_id: s for s in discover(corpus)}
    ids = sorted(sources)
    rng = random.Random(0)
    picks = [rng.choice(ids) for _ in range(repeats)]
    ours, raw = [], []
    skeleton = mean_skeleton()
    knee = 4  # left_knee
    for clip in picks:
        t0 = time.perf_counter()
        cat = Catalog.open(catalog)
        series = cat.read_variable(clip, "source_joints", sel={"joint": ["left_knee"]}).values
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        motion = read_amass(sources[clip].path)
        same = forward_kinematics(motion, skeleton).positions[:, knee]
        raw.append(time.perf_counter() - t0)
        assert np.abs(series[:, 0] - same).max() < 1e-5
    return {
        "query_p50_ms": 1e3 * statistics.median(ours),
        "raw_npz_p50_ms": 1e3 * statistics.median(raw),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="only the JSON line")
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--catalog-clips", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    say = (lambda *a: None) if args.json else print
    with tempfile.TemporaryDirectory(prefix="msconvert-bench-") as tmp:
        work = Path(tmp)
        write_demo_corpus(work / "seed")
        make_corpus(work / "corpus", args.clips, work / "seed")
        frames = sum(read_amass(s.path).n_frames for s in discover(work / "corpus"))
        say(f"corpus: {args.clips} clips, {frames} frames")
        one = ingest(work / "corpus", work / "c1.zarr", workers=1)
        say(
            f"ingest, 1 worker : {one['clips_per_s']:.1f} clips/s, "
            f"{one['frames_per_s']:.0f} frames/s"
        )
        two = ingest(work / "corpus", work / "c2.zarr", workers=2)
        say(
            f"ingest, 2 workers: {two['clips_per_s']:.1f} clips/s, "
            f"{two['frames_per_s']:.0f} frames/s"
        )
        make_corpus(work / "big", args.catalog_clips, work / "seed")
        big = ingest(work / "big", work / "big.zarr", workers=2)
        say(f"{args.catalog_clips}-clip catalog written in {big['seconds']:.1f} s")
        q = query_latency(work / "big.zarr", work / "big", args.repeats)
        say(
            f"query one joint, p50: {q['query_p50_ms']:.2f} ms (raw .npz + FK: "
            f"{q['raw_npz_p50_ms']:.2f} ms)"
        )
    result = {
        "machine": f"{platform.node()} {platform.machine()} {platform.python_version()}",
        "clips": args.clips,
        "frames": frames,
        "ingest_clips_per_s_1worker": round(one["clips_per_s"], 2),
        "ingest_frames_per_s_1worker": round(one["frames_per_s"]),
        "ingest_clips_per_s_2workers": round(two["clips_per_s"], 2),
        "ingest_frames_per_s_2workers": round(two["frames_per_s"]),
        "catalog_clips": args.catalog_clips,
        "query_p50_ms": round(q["query_p50_ms"], 3),
        "raw_npz_p50_ms": round(q["raw_npz_p50_ms"], 3),
        "query_target_ms": 20.0,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
