"""The stage cache: what an RL clip's quick stages made, kept while its policy trains.

A per-clip RL run ingests and retargets (seconds), solves the warm start by static optimization
(seconds), then trains (minutes to hours). If the run is killed, `--resume` must redo only what
is missing: the training resumes from its Orbax checkpoint, and the retargeted clip and its
warm-start solution come from here. Each clip's entry, under `CHECKPOINTS/_stages/`, is a
one-clip catalog (the catalog's own writer and reader, status written last) and an `.npz` (no
pickles), both keyed by the source file (path, size, mtime) and every setting that shapes them.
An entry that is missing, stale or unreadable is simply recomputed; the pipeline removes it
once the clip is in the real catalog.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from msconvert import __version__
from msconvert.catalog import Catalog
from msconvert.catalog.schema import (
    ATTR_CLIP_ID,
    ATTR_CLIP_MARKER,
    ATTR_COORDINATES,
    ATTR_METRICS,
    ATTR_STATUS,
    ATTR_SUMMARY,
    STATUS_COMPLETE,
)

if TYPE_CHECKING:
    from msconvert.convert.pipeline import PipelineOptions
    from msconvert.datasets.amass import ClipSource

CACHE_DIR = "_stages"
ATTR_KEY = "stage_cache_key"
_BOOKKEEPING = (ATTR_CLIP_ID, ATTR_CLIP_MARKER, ATTR_COORDINATES, ATTR_METRICS, ATTR_SUMMARY)


@dataclass
class Retargeted:
    """A clip after ingest and retargeting, as the later stages need it."""

    data: xr.Dataset
    attrs: dict[str, Any]
    metrics: dict[str, float]
    summary: dict[str, Any]


def entry(checkpoints: str | os.PathLike[str], clip_id: str) -> Path | None:
    """Where a clip's entry lives; None for an id that would leave the cache (never written)."""
    root = (Path(checkpoints) / CACHE_DIR).absolute()
    path = (root / f"{clip_id}.zarr").resolve()
    return path if path.is_relative_to(root.resolve()) else None


def key(source: ClipSource, options: PipelineOptions) -> str | None:
    """What the cached stages depend on; None when the source cannot be read (not cached)."""
    try:
        stat = Path(source.path).stat()
    except OSError:
        return None
    shaping = {
        "relpath": source.relpath,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "source_fps": options.source_fps,
        "body_models": options.body_models,
        "model": options.model,
        "retarget_config": options.retarget_config,
        "control_hz": options.control_hz,
        "version": __version__,
    }
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:32]


def save(path: Path, clip_id: str, done: Retargeted, cache_key: str) -> None:
    """Write a clip's retargeted stages (status last: a killed write reads as missing)."""
    catalog = Catalog.create(path, overwrite=True)
    try:
        catalog.write_clip(
            clip_id,
            done.data,
            attrs={**done.attrs, ATTR_KEY: cache_key},
            metrics=done.metrics,
            summary=done.summary,
        )
    finally:
        catalog.close()


def load(path: Path, clip_id: str, cache_key: str) -> Retargeted | None:
    """The entry if it is complete and made from the same file and settings, else None."""
    if not (path / "zarr.json").is_file():
        return None
    try:
        catalog = Catalog.open(path)
        attrs = catalog.attrs(clip_id)
        if attrs.get(ATTR_STATUS) != STATUS_COMPLETE or attrs.get(ATTR_KEY) != cache_key:
            return None
        data = catalog[clip_id].load()
    except Exception:  # an unreadable cache is recomputed, never trusted
        return None
    data.attrs = {}
    metrics = {k: float(v) for k, v in dict(attrs.get(ATTR_METRICS) or {}).items() if v is not None}
    summary = dict(attrs.get(ATTR_SUMMARY) or {})
    kept = {k: v for k, v in attrs.items() if k not in (*_BOOKKEEPING, ATTR_STATUS, ATTR_KEY)}
    return Retargeted(data=data, attrs=kept, metrics=metrics, summary=summary)


def _solution_path(path: Path) -> Path:
    return path.with_name(path.name.removesuffix(".zarr") + ".warm_start.npz")


def save_solution(
    path: Path, activation: np.ndarray, excitation: np.ndarray, cache_key: str
) -> None:
    """The clip's warm-start (static-optimization) solution, written atomically."""
    target = _solution_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, activation=activation, excitation=excitation, key=np.str_(cache_key))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_solution(path: Path, cache_key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(activation, excitation) if saved for the same file and settings, else None."""
    try:
        with np.load(_solution_path(path), allow_pickle=False) as npz:
            if str(npz["key"]) != cache_key:
                return None
            return npz["activation"], npz["excitation"]
    except Exception:  # missing or unreadable: recomputed
        return None


def remove(path: Path) -> None:
    """Drop a clip's entry (its results are in the real catalog now)."""
    shutil.rmtree(path, ignore_errors=True)
    _solution_path(path).unlink(missing_ok=True)
    for folder in path.parents:  # and the folders it leaves empty, up to the cache's root
        if folder.name == CACHE_DIR:
            break
        try:
            folder.rmdir()
        except OSError:  # not empty: other clips are in flight
            break
