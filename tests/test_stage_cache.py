"""The stage cache: a resumed RL run reads back the retargeted clip and warm start, not redoes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from msconvert.convert import pipeline, stage_cache
from msconvert.convert.pipeline import PipelineOptions, retargeted, warm_start_cached
from msconvert.datasets.amass import discover

CLIP = "DemoLab/subject1/standing"


@pytest.fixture
def standing(demo_corpus: Path, tmp_path: Path):
    (source,) = discover(demo_corpus, include=["*stand*"])
    options = PipelineOptions(checkpoints=str(tmp_path / "ckpt"), until="train")
    return source, options


def _count_fresh(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every clip that is ingested and retargeted from scratch."""
    calls: list[str] = []
    real = pipeline.run_clip

    def counting(source, options):
        calls.append(source.clip_id)
        return real(source, options)

    monkeypatch.setattr(pipeline, "run_clip", counting)
    return calls


def test_retargeted_clip_is_read_back_exactly_and_not_redone(standing, monkeypatch):
    source, options = standing
    calls = _count_fresh(monkeypatch)
    first = retargeted(source, options)
    assert first.status == "complete" and calls == [CLIP]
    path = stage_cache.entry(options.checkpoints, CLIP)
    assert path is not None and (path / "zarr.json").is_file()
    again = retargeted(source, options)
    assert calls == [CLIP], "a cached clip must not be ingested or retargeted again"
    xr.testing.assert_identical(first.data, again.data)
    assert again.attrs == first.attrs and again.metrics == first.metrics
    assert again.summary == first.summary and again.frames == first.frames


def test_changed_source_or_settings_or_a_broken_entry_is_recomputed(standing, monkeypatch):
    source, options = standing
    calls = _count_fresh(monkeypatch)
    retargeted(source, options)
    retargeted(source, PipelineOptions(checkpoints=options.checkpoints, control_hz=25.0))
    assert len(calls) == 2, "another control rate is another reference"
    st = os.stat(source.path)
    os.utime(source.path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    retargeted(source, options)
    assert len(calls) == 3, "a changed file is read again"
    path = stage_cache.entry(options.checkpoints, CLIP)
    assert path is not None
    (path / CLIP / "zarr.json").unlink()  # as if killed while writing it
    retargeted(source, options)
    assert len(calls) == 4
    retargeted(source, options)
    assert len(calls) == 4, "the rewritten entry is used"


def test_warm_start_is_cached_and_a_truncated_file_is_resolved(standing, monkeypatch):
    source, options = standing
    ref = retargeted(source, options).reference()
    model = pipeline.model_for(None)
    activation, excitation = warm_start_cached(source, options, ref, model)
    assert activation.shape == excitation.shape and ((activation >= 0) & (activation <= 1)).all()

    def refuse(*_a, **_k):
        raise AssertionError("solved again although cached")

    from msconvert.emulator.learn import runs  # (the pipeline imports training where it runs)

    monkeypatch.setattr(runs, "warm_start_solutions", refuse)
    a2, e2 = warm_start_cached(source, options, ref, model)
    np.testing.assert_array_equal(a2, activation)
    np.testing.assert_array_equal(e2, excitation)
    npz = next(Path(options.checkpoints).rglob("*.warm_start.npz"))
    npz.write_bytes(npz.read_bytes()[:100])  # truncated
    with pytest.raises(AssertionError, match="solved again"):
        warm_start_cached(source, options, ref, model)
