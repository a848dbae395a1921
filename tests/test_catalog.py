"""The Zarr v3 catalog: round trips, xarray interop, fast reads, index, atomicity, safety."""

from __future__ import annotations

import json
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from msconvert.catalog import Catalog, CatalogError, ClipEntry, sanitize_clip_id
from msconvert.catalog import store as catalog_store
from msconvert.catalog.schema import INDEX_KEY, SCHEMA_VERSION, TARGET_CHUNK_BYTES

JOINTS = ["pelvis", "left_hip", "right_hip", "left_knee", "right_knee", "head"]


def clip_dataset(n_frames: int = 90, fps: float = 30.0, seed: int = 0) -> xr.Dataset:
    """A small clip: float32 and float64 arrays, string and time coordinates."""
    rng = np.random.default_rng(seed)
    return xr.Dataset(
        {
            "source_joints": (
                ("time", "joint", "xyz"),
                rng.normal(size=(n_frames, len(JOINTS), 3)).astype(np.float32),
                {"units": "m", "description": "world joint positions"},
            ),
            "source_root_translation": (
                ("time", "xyz"),
                rng.normal(size=(n_frames, 3)),
                {"units": "m"},
            ),
            "bone_lengths": (("joint",), rng.uniform(size=len(JOINTS)), {"units": "m"}),
        },
        coords={
            "time": ("time", np.arange(n_frames) / fps, {"units": "s"}),
            "joint": ("joint", np.asarray(JOINTS)),
            "xyz": ("xyz", np.asarray(["x", "y", "z"])),
        },
    )


def write(cat: Catalog, clip: str, data: xr.Dataset | None = None, **summary: object) -> None:
    cat.write_clip(
        clip,
        clip_dataset() if data is None else data,
        attrs={"source_fps": np.float32(30.0), "n": np.int64(3), "betas": np.zeros(2)},
        metrics={"source.frames": 90.0, "bad": float("nan"), "worse": np.float32(np.inf)},
        summary=summary or {"frames": np.int64(90)},
    )


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "catalog.zarr"


@pytest.fixture
def catalog(path: Path) -> Catalog:
    with Catalog.create(path) as cat:
        write(cat, "KIT/3/walking_slow08")
        write(cat, "KIT/3/running01", clip_dataset(seed=1))
        cat.write_failure("KIT/4/broken", reason="bad file:\n  no 'poses' key", stage="ingest")
    return Catalog.open(path)


def test_round_trip_values_dtypes_coords_and_attrs(catalog: Catalog):
    expected = clip_dataset()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the string representation must not warn either
        back = catalog["KIT/3/walking_slow08"]
        xr.testing.assert_equal(back, expected)
    assert back["source_joints"].dtype == np.float32
    assert back["source_root_translation"].dtype == np.float64
    assert back["joint"].values.tolist() == JOINTS and back["joint"].dtype.kind == "U"
    assert back["xyz"].values.tolist() == ["x", "y", "z"]
    assert back["time"].attrs == {"units": "s"}
    assert back["source_joints"].attrs == expected["source_joints"].attrs
    attrs = catalog.attrs("KIT/3/walking_slow08")
    assert attrs["source_fps"] == 30.0 and type(attrs["source_fps"]) is float
    assert attrs["n"] == 3 and type(attrs["n"]) is int
    assert attrs["betas"] == [0.0, 0.0]
    assert attrs["metrics"] == {"source.frames": 90.0, "bad": None, "worse": None}
    assert attrs["clip_id"] == "KIT/3/walking_slow08" and attrs["msconvert_clip"] is True
    assert attrs["status"] == "complete" and list(attrs)[-1] == "status"
    assert sorted(catalog) == ["KIT/3/running01", "KIT/3/walking_slow08"]
    assert len(catalog) == 2 and "KIT/3/walking_slow08" in catalog
    assert "KIT/4/broken" not in catalog and "nope" not in catalog


def test_xarray_open_zarr_reads_a_clip_group(catalog: Catalog, path: Path):
    ds = xr.open_zarr(path, group="KIT/3/running01", zarr_format=3, consolidated=False)
    xr.testing.assert_equal(ds, clip_dataset(seed=1))  # string coords come back as StringDType
    assert ds["joint"].values.tolist() == JOINTS
    assert ds.sel(joint="left_knee", xyz="z")["source_joints"].shape == (90,)
    assert list(ds["source_joints"].dims) == ["time", "joint", "xyz"]
    arr = zarr.open_array(str(path), path="KIT/3/running01/joint", mode="r")
    assert arr.metadata.dimension_names == ("joint",)


def test_read_variable_by_label_and_time_matches_numpy(catalog: Catalog):
    full = clip_dataset()
    t = full["time"].values
    got = catalog.read_variable(
        "KIT/3/walking_slow08",
        "source_joints",
        sel={"joint": ["left_knee", "pelvis"], "time": slice(t[10], t[40])},
    )
    want = full["source_joints"].values[10:41][:, [3, 0]]
    np.testing.assert_array_equal(got.values, want)
    assert got.dims == ("time", "joint", "xyz") and got.dtype == np.float32
    assert got["joint"].values.tolist() == ["left_knee", "pelvis"]
    np.testing.assert_array_equal(got["time"].values, t[10:41])
    assert got.attrs["units"] == "m" and got.name == "source_joints"
    xr.testing.assert_equal(
        got, full["source_joints"].sel(joint=["left_knee", "pelvis"], time=slice(t[10], t[40]))
    )
    one = catalog.read_variable(
        "KIT/3/walking_slow08", "source_joints", sel={"joint": "head", "xyz": "z"}
    )
    assert one.dims == ("time",) and one["joint"].item() == "head"
    np.testing.assert_array_equal(one.values, full["source_joints"].values[:, 5, 2])
    pos = catalog.read_variable(
        "KIT/3/walking_slow08", "source_root_translation", isel={"time": slice(5, 9)}
    )
    np.testing.assert_array_equal(pos.values, full["source_root_translation"].values[5:9])
    open_end = catalog.read_variable(
        "KIT/3/walking_slow08", "source_joints", sel={"time": slice(None, 0.1)}
    )
    assert open_end.sizes["time"] == int(np.sum(t <= 0.1))


def test_read_variable_errors_are_one_line(catalog: Catalog):
    clip = "KIT/3/walking_slow08"
    cases = [
        (KeyError, dict(clip_id=clip, name="no_such_field"), "source_joints"),
        (KeyError, dict(clip_id="no/such/clip", name="source_joints"), "no clip"),
        (KeyError, dict(clip_id="KIT/4/broken", name="source_joints"), "no 'poses' key"),
        (KeyError, dict(clip_id=clip, name="source_joints", sel={"joint": ["nope"]}), "nope"),
        (ValueError, dict(clip_id=clip, name="source_joints", sel={"muscle": ["x"]}), "muscle"),
        (KeyError, dict(clip_id="../etc", name="source_joints"), "not a valid clip id"),
    ]
    for error, kwargs, needle in cases:
        with pytest.raises(error) as info:
            catalog.read_variable(**kwargs)
        message = str(info.value.args[0])
        assert needle in message and "\n" not in message, message


def test_chunked_along_time_and_compressed(path: Path):
    n_frames = 20_000  # 20,000 x 6 x 3 float32 = 1.4 MB: several chunks along time
    with Catalog.create(path) as cat:
        write(cat, "long/clip", clip_dataset(n_frames=n_frames))
        info = cat.info("long/clip")
    joints = zarr.open_array(str(path), path="long/clip/source_joints", mode="r")
    time_chunk = joints.chunks[0]
    assert joints.chunks[1:] == (len(JOINTS), 3), "only time is chunked"
    assert 1 < n_frames // time_chunk < 10
    chunk_bytes = time_chunk * len(JOINTS) * 3 * 4
    assert 0.25e6 <= chunk_bytes <= TARGET_CHUNK_BYTES <= 1.1e6
    assert [type(c).__name__ for c in joints.compressors] == ["ZstdCodec"]
    assert joints.nbytes_stored() < joints.nbytes
    chunk_files = list((path / "long/clip/source_joints/c").rglob("*"))
    assert sum(f.is_file() for f in chunk_files) == -(-n_frames // time_chunk)
    bones = zarr.open_array(str(path), path="long/clip/bone_lengths", mode="r")
    assert bones.chunks == bones.shape, "arrays without time are one chunk"
    assert info["arrays"]["source_joints"] == {
        "dims": ["time", "joint", "xyz"],
        "shape": [n_frames, len(JOINTS), 3],
        "dtype": "float32",
        "chunks": [time_chunk, len(JOINTS), 3],
        "codecs": ["bytes", "zstd"],
        "attrs": {"units": "m", "description": "world joint positions"},
    }
    assert info["arrays"]["joint"]["dtype"] == "str"


def test_index_rows_and_flush_on_close(path: Path):
    cat = Catalog.create(path)
    write(cat, "a/one", frames=90, fps=30.0, source="a/one_poses.npz")
    cat.write_failure("a/two", reason="truncated\nfile", stage="ingest", summary={"source": "x"})
    on_disk = json.loads((path / INDEX_KEY).read_text())
    assert on_disk["writer_open"] is True and on_disk["clips"] == {}, "not flushed yet (< 2 s)"
    rows = {e.clip: e for e in cat.clips()}  # the writer sees its own rows at once
    assert set(rows) == {"a/one", "a/two"}
    cat.close()
    on_disk = json.loads((path / INDEX_KEY).read_text())
    assert on_disk["writer_open"] is False and set(on_disk["clips"]) == {"a/one", "a/two"}
    reopened = Catalog.open(path)
    assert reopened.clips() == list(rows.values())
    one, two = reopened.clips()
    assert one == ClipEntry(
        clip="a/one",
        status="complete",
        reason="",
        stage="",
        metrics={"source.frames": 90.0, "bad": None, "worse": None},
        summary={"frames": 90, "fps": 30.0, "source": "a/one_poses.npz"},
    )
    assert (two.status, two.reason, two.stage) == ("failed", "truncated file", "ingest")
    assert two.summary == {"source": "x"}
    assert [e.clip for e in reopened.clips(status="failed")] == ["a/two"]
    assert list(reopened) == ["a/one"]


def test_index_is_flushed_every_interval_during_writes(path: Path, monkeypatch):
    monkeypatch.setattr(catalog_store, "FLUSH_INTERVAL_S", 0.0)
    cat = Catalog.create(path)
    write(cat, "a/one")
    assert set(json.loads((path / INDEX_KEY).read_text())["clips"]) == {"a/one"}
    cat.close()


def test_a_writer_that_never_closed_is_rebuilt_on_append(path: Path):
    cat = Catalog.create(path)
    write(cat, "a/one")
    cat.write_failure("a/two", reason="x", stage="ingest")
    del cat  # killed: no close, the index on disk is stale and says a writer was open
    assert Catalog.open(path).clips() == [], "readers see the last flushed index"
    with Catalog.open(path, mode="a") as cat:
        assert [e.clip for e in cat.clips()] == ["a/one", "a/two"]
    assert [e.status for e in Catalog.open(path).clips()] == ["complete", "failed"]


def test_failed_clip_raises_key_error_with_reason(catalog: Catalog):
    with pytest.raises(KeyError, match="failed at ingest: bad file: no 'poses' key"):
        catalog["KIT/4/broken"]
    with pytest.raises(KeyError, match="no clip"):
        catalog["KIT/4/unknown"]
    assert catalog.attrs("KIT/4/broken")["reason"] == "bad file: no 'poses' key"
    assert catalog.info("KIT/4/broken")["arrays"] == {}
    assert catalog.variables("KIT/4/broken") == []


def test_rewriting_a_clip_replaces_it(path: Path):
    with Catalog.create(path) as cat:
        write(cat, "a/clip")
        cat.write_clip(
            "a/clip",
            clip_dataset(n_frames=10, seed=5).drop_vars("bone_lengths"),
            attrs={"run": 2},
            metrics={},
        )
        assert cat.variables("a/clip") == ["source_joints", "source_root_translation"]
        assert "source_fps" not in cat.attrs("a/clip") and cat.attrs("a/clip")["run"] == 2
        xr.testing.assert_equal(
            cat["a/clip"], clip_dataset(n_frames=10, seed=5).drop_vars("bone_lengths")
        )
        cat.write_failure("a/clip", reason="now broken", stage="retarget")
        assert cat.scan() == {"a/clip": "failed"} and "a/clip" not in cat
        write(cat, "a/clip")
        assert cat.scan() == {"a/clip": "complete"}
        assert [e.status for e in cat.clips()] == ["complete"]


def test_scan_finds_incomplete_groups_and_rebuild_drops_them(path: Path):
    with Catalog.create(path) as cat:
        write(cat, "a/done")
        write(cat, "a/halfway")
        cat.write_failure("b/failed", reason="x", stage="ingest")
    # As if the writer died between the arrays and the final status write.
    group = zarr.open_group(str(path), path="a/halfway", mode="r+")
    attrs = dict(group.attrs)
    attrs.pop("status")
    group.attrs.clear()
    group.attrs.update(attrs)
    cat = Catalog.open(path, mode="a")
    assert cat.scan() == {"a/done": "complete", "a/halfway": "incomplete", "b/failed": "failed"}
    with pytest.raises(KeyError, match="incomplete"):
        cat["a/halfway"]
    assert "a/halfway" in {e.clip for e in cat.clips()}, "stale index before the rebuild"
    cat.rebuild_index()
    cat.close()
    reopened = Catalog.open(path)
    assert [(e.clip, e.status) for e in reopened.clips()] == [
        ("a/done", "complete"),
        ("b/failed", "failed"),
    ]
    assert reopened.clips()[0].summary == {"frames": 90}, "summary restored from the group"


def test_a_write_that_dies_before_its_status_leaves_an_incomplete_group(path: Path, monkeypatch):
    from msconvert.catalog import _zarrio

    real_put = _zarrio.put_json

    async def dies_at_status(store, key, doc):
        if doc.get("attributes", {}).get("status") == "complete":
            raise OSError("disk full")
        await real_put(store, key, doc)

    with Catalog.create(path) as cat:
        write(cat, "a/clip")
        monkeypatch.setattr(_zarrio, "put_json", dies_at_status)
        with pytest.raises(OSError, match="disk full"):
            write(cat, "a/clip")
        monkeypatch.setattr(_zarrio, "put_json", real_put)
        assert cat.scan() == {"a/clip": "incomplete"}
        assert cat.clips() == [] and "a/clip" not in cat
        assert (path / "a/clip/source_joints/zarr.json").exists(), "arrays were written"
    assert Catalog.open(path).clips() == []


def test_unsafe_clip_ids_are_refused(path: Path, tmp_path: Path):
    with Catalog.create(path) as cat:
        for bad in ("../x", "/abs/clip", "a/../../x", "a//b", "./a", "", "a b", ".hidden"):
            with pytest.raises(CatalogError, match="unsafe clip id"):
                write(cat, bad)
            with pytest.raises(CatalogError):
                cat.write_failure(bad, reason="x", stage="ingest")
        assert sanitize_clip_id("../x") == "_../x"
        write(cat, "a/clip")
        with pytest.raises(CatalogError, match="inside clip"):
            write(cat, "a/clip/nested")
        with pytest.raises(CatalogError, match="folder of other clips"):
            write(cat, "a")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalog.zarr"]
    assert Catalog.open(path).scan() == {"a/clip": "complete"}


def test_create_refuses_non_catalogs_and_leaves_them_untouched(tmp_path: Path):
    user = tmp_path / "user_data"
    user.mkdir()
    (user / "thesis.txt").write_text("precious")
    for overwrite in (False, True):
        with pytest.raises(CatalogError, match="not empty and not a catalog") as info:
            Catalog.create(user, overwrite=overwrite)
        assert "\n" not in str(info.value)
    assert [p.name for p in user.iterdir()] == ["thesis.txt"]
    assert (user / "thesis.txt").read_text() == "precious"
    plain = tmp_path / "plain.zarr"
    zarr.open_group(str(plain), mode="w", zarr_format=3, attributes={"mine": 1})
    with pytest.raises(CatalogError, match="not an msconvert catalog"):
        Catalog.create(plain, overwrite=True)
    assert zarr.open_group(str(plain), mode="r").attrs["mine"] == 1
    with pytest.raises(CatalogError, match="not an msconvert catalog"):
        Catalog.open(plain)
    (tmp_path / "file.zarr").write_text("x")
    with pytest.raises(CatalogError, match="is a file"):
        Catalog.create(tmp_path / "file.zarr")
    empty = tmp_path / "empty"
    empty.mkdir()
    Catalog.create(empty).close()
    assert Catalog.open(empty).root_attrs["msconvert_schema_version"] == SCHEMA_VERSION


def test_create_appends_to_or_wipes_an_existing_catalog(path: Path):
    with Catalog.create(path) as cat:
        write(cat, "a/one")
    with Catalog.create(path) as cat:
        assert cat.mode == "a"
        write(cat, "a/two")
    assert list(Catalog.open(path)) == ["a/one", "a/two"]
    root = Catalog.open(path).root_attrs
    assert set(root) == {"msconvert_schema_version", "created", "software_version"}
    with Catalog.create(path, overwrite=True) as cat:
        assert list(cat) == []
    assert Catalog.open(path).scan() == {} and list(Catalog.open(path)) == []


def test_open_refuses_missing_paths_and_newer_schemas(path: Path, tmp_path: Path):
    missing = tmp_path / "missing.zarr"
    for mode in ("r", "a"):
        with pytest.raises(CatalogError, match="not an msconvert catalog"):
            Catalog.open(missing, mode=mode)
    assert not missing.exists(), "opening must not create anything"
    Catalog.create(path).close()
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["msconvert_schema_version"] = SCHEMA_VERSION + 1
    (path / "zarr.json").write_text(json.dumps(meta))
    for mode in ("r", "a"):
        with pytest.raises(CatalogError, match="upgrade msconvert"):
            Catalog.open(path, mode=mode)
    with pytest.raises(CatalogError, match="upgrade msconvert"):
        Catalog.create(path)


def test_read_only_catalog_refuses_writes(catalog: Catalog):
    with pytest.raises(CatalogError, match="read-only"):
        write(catalog, "a/new")
    with pytest.raises(CatalogError, match="read-only"):
        catalog.rebuild_index()


def test_bad_attrs_metrics_and_summaries_are_refused_before_writing(path: Path):
    with Catalog.create(path) as cat:
        write(cat, "a/clip")
        bad_calls = [
            dict(attrs={"status": "complete"}, metrics={}),
            dict(attrs={"obj": object()}, metrics={}),
            dict(attrs={}, metrics={"m": "high"}),
            dict(attrs={}, metrics={}, summary={"status": "x"}),
        ]
        for kwargs in bad_calls:
            with pytest.raises(CatalogError):
                cat.write_clip("a/clip", clip_dataset(), **kwargs)
        when = clip_dataset().assign_coords(time=np.arange(90).astype("datetime64[s]"))
        with pytest.raises(CatalogError, match="float seconds"):
            cat.write_clip("a/clip", when, attrs={}, metrics={})
        assert cat.scan() == {"a/clip": "complete"}, "a refused write leaves the old clip"
        assert cat.attrs("a/clip")["source_fps"] == 30.0


def test_non_dimension_coordinates_and_variables(path: Path):
    data = clip_dataset().assign_coords(side=("joint", ["c", "l", "r", "l", "r", "c"]))
    with Catalog.create(path) as cat:
        write(cat, "a/clip", data)
        back = cat["a/clip"]
        assert (
            "side" in back.coords and back["side"].values.tolist() == data["side"].values.tolist()
        )
        assert cat.variables("a/clip") == [
            "bone_lengths",
            "source_joints",
            "source_root_translation",
        ]
        cat.remove_clip("a/clip")
        assert cat.scan() == {} and cat.clips() == []
        with pytest.raises(KeyError):
            cat.remove_clip("a/clip")


def test_memory_fsspec_url(tmp_path: Path):
    url = f"memory://catalogs/{uuid.uuid4().hex}.zarr"
    with Catalog.create(url) as cat:
        write(cat, "KIT/3/walking_slow08")
        cat.write_failure("KIT/4/broken", reason="nope", stage="ingest")
    cat = Catalog.open(url)
    assert [(e.clip, e.status) for e in cat.clips()] == [
        ("KIT/3/walking_slow08", "complete"),
        ("KIT/4/broken", "failed"),
    ]
    assert cat.scan() == {"KIT/3/walking_slow08": "complete", "KIT/4/broken": "failed"}
    got = cat.read_variable("KIT/3/walking_slow08", "source_joints", sel={"joint": ["head"]})
    np.testing.assert_array_equal(got.values, clip_dataset()["source_joints"].values[:, [5]])
    ds = xr.open_zarr(url, group="KIT/3/walking_slow08", zarr_format=3, consolidated=False)
    np.testing.assert_array_equal(
        ds["source_root_translation"].values, clip_dataset()["source_root_translation"].values
    )
    with pytest.raises(CatalogError):
        Catalog.open(f"memory://catalogs/{uuid.uuid4().hex}.zarr")


def test_every_dtype_and_edge_chunks_read_back_through_zarr(path: Path):
    n = 70_000  # text along time: several chunks, the last one partial
    data = xr.Dataset(
        {
            "flag": (("time",), np.arange(n) % 3 == 0),
            "small": (("time",), (np.arange(n) % 100 - 50).astype(np.int8)),
            "big_endian": (("time",), np.arange(n, dtype=">u4")),
            "wave": (("time",), np.exp(1j * np.arange(n)).astype(np.complex64)),
            "half": (("time",), np.linspace(0, 1, n).astype(np.float16)),
            "event": (("time",), np.asarray([f"ev{i % 7}é" if i % 5 else "" for i in range(n)])),
            "scalar": ((), np.float64(3.5)),
            "nothing": (("frame",), np.zeros(0, np.float32)),
        },
        coords={"time": np.arange(n) / 100.0},
    )
    with Catalog.create(path) as cat:
        write(cat, "a/clip", data)
        back = cat["a/clip"]
        assert cat.info("a/clip")["arrays"]["event"]["chunks"][0] < n
        assert cat.read_variable("a/clip", "event", isel={"time": [n - 1, 1]}).values.tolist() == [
            data["event"].values[n - 1],
            "ev1é",
        ]
    xr.testing.assert_equal(back, data)
    for name in data.variables:
        stored = zarr.open_array(str(path), path=f"a/clip/{name}", mode="r")[...]
        np.testing.assert_array_equal(np.asarray(stored), data[name].values, err_msg=str(name))
    assert back["big_endian"].dtype == np.uint32 and back["half"].dtype == np.float16
