"""The catalog: one Zarr v3 store, one group per clip, one writer and any number of readers.

The writer is one run: it holds the store's writer lease (`Catalog.lease`, catalog/lease.py)
and keeps the index; its workers may write whole clips themselves (`ClipWriter`), which the
writer then indexes (`Catalog.index_clip`).

Layout (all paths relative to the catalog URL):

    zarr.json                      root group; attrs: msconvert_schema_version, created, ...
    .msconvert_index.json          the index: clip id -> row (status, reason, metrics, summary)
    .msconvert_lock.json           the writer's lease, while a run writes (who, last renewal)
    KIT/zarr.json, KIT/3/zarr.json plain groups for the folders of clip ids
    KIT/3/walking_slow08/          one clip group; attrs: caller attrs, metrics, summary,
        zarr.json                  clip_id, msconvert_clip, and status written last
        source_joints/             one array per variable and coordinate, with dimension_names
        time/ joint/ xyz/ ...      (so xarray.open_zarr(url, group=clip) gives the Dataset back)

The clip groups are the ground truth (`scan()`); the index is a cache of their attributes that
makes `ls` and filtering one read, rebuilt from the groups whenever it may be stale.

The index is a separate JSON document rather than the root group's attributes so that opening a
catalog stays one small read however many clips it holds (the root zarr.json never grows), so
that generic Zarr tools opening the root do not parse it, and so that rewriting it (one atomic
store write) never touches the metadata that makes the store a catalog.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import numbers
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from types import TracebackType
from typing import Any, Literal

import numpy as np
import xarray as xr
import zarr

import msconvert
from msconvert.catalog import _zarrio as zio
from msconvert.catalog.lease import Lease, LeaseError, holder_alive, token_on_store
from msconvert.catalog.schema import (
    ATTR_CLIP_ID,
    ATTR_CLIP_MARKER,
    ATTR_COORDINATES,
    ATTR_CREATED,
    ATTR_METRICS,
    ATTR_REASON,
    ATTR_SCHEMA_VERSION,
    ATTR_SOFTWARE_VERSION,
    ATTR_STAGE,
    ATTR_STATUS,
    ATTR_SUMMARY,
    INDEX_KEY,
    INDEX_ROW_FIELDS,
    LOCK_KEY,
    RESERVED_CLIP_ATTRS,
    SCHEMA_VERSION,
    STATUS_COMPLETE,
    STATUS_FAILED,
    STATUS_INCOMPLETE,
    STATUSES,
    ClipIdError,
    is_time_dim,
    sanitize_clip_id,
)

FLUSH_INTERVAL_S = 2.0  # the writer persists its index at most this often during writes
_NAME_OK = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._+-")

Mode = Literal["r", "a"]
Selection = slice | int | Sequence[int] | np.ndarray


class CatalogError(Exception):
    """A catalog that cannot be created, opened or written as asked (one-line message)."""


class CatalogLockedError(CatalogError):
    """Another run holds the catalog's writer lease, or took it from this one (one line)."""


@dataclass(frozen=True)
class ClipEntry:
    """One row of the catalog index."""

    clip: str
    status: str
    reason: str = ""
    stage: str = ""
    metrics: dict[str, float | None] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, clip: str, row: Mapping[str, Any]) -> ClipEntry:
        """The entry for the index row of a clip."""
        return cls(
            clip=clip,
            status=str(row.get("status", "")),
            reason=str(row.get("reason") or ""),
            stage=str(row.get("stage") or ""),
            metrics=dict(row.get("metrics") or {}),
            summary={k: v for k, v in row.items() if k not in INDEX_ROW_FIELDS},
        )


def _row(
    clip: str,
    status: str,
    *,
    reason: str = "",
    stage: str = "",
    metrics: Mapping[str, float | None] | None = None,
    summary: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "clip": clip,
        "status": status,
        "reason": reason,
        "stage": stage,
        "metrics": dict(metrics or {}),
        **dict(summary or {}),
    }


def _row_from_attrs(clip: str, attrs: Mapping[str, Any]) -> dict[str, Any]:
    summary = attrs.get(ATTR_SUMMARY)
    return _row(
        clip,
        _status_of(attrs),
        reason=str(attrs.get(ATTR_REASON) or ""),
        stage=str(attrs.get(ATTR_STAGE) or ""),
        metrics=attrs.get(ATTR_METRICS) or {},
        summary={k: v for k, v in (summary or {}).items() if k not in INDEX_ROW_FIELDS}
        if isinstance(summary, Mapping)
        else None,
    )


def _status_of(attrs: Mapping[str, Any]) -> str:
    status = attrs.get(ATTR_STATUS)
    return status if status in STATUSES else STATUS_INCOMPLETE


def _is_clip(doc: Mapping[str, Any] | None) -> bool:
    return zio.is_group(doc) and (doc or {}).get("attributes", {}).get(ATTR_CLIP_MARKER) is True


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _check_name(name: object, what: str) -> str:
    """A variable or dimension name usable as a Zarr node name and in a 'coordinates' list."""
    if (
        not isinstance(name, str)
        or not name
        or not set(name) <= _NAME_OK
        or name.startswith((".", "__"))
        or name == zio.ZARR_JSON
    ):
        raise CatalogError(f"{what} name {name!r} is not allowed (use [A-Za-z0-9._+-])")
    return name


def _metrics(metrics: Mapping[str, Any]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key, value in metrics.items():
        if not isinstance(key, str):
            raise CatalogError(f"metric name {key!r} is not a string")
        if value is None:
            out[key] = None
            continue
        if not isinstance(value, numbers.Real | np.number):
            raise CatalogError(f"metric {key!r} is a {type(value).__name__}, not a number")
        number = float(value)
        out[key] = number if np.isfinite(number) else None
    return out


def _attrs(attrs: Mapping[str, Any] | None, where: str) -> dict[str, Any]:
    attrs = dict(attrs or {})
    reserved = sorted(RESERVED_CLIP_ATTRS & set(attrs))
    if reserved:
        raise CatalogError(f"{where} may not set {', '.join(reserved)} (written by the catalog)")
    return _json(attrs, where)


def _summary(summary: Mapping[str, Any] | None) -> dict[str, Any]:
    summary = dict(summary or {})
    clash = sorted(set(INDEX_ROW_FIELDS) & set(summary))
    if clash:
        raise CatalogError(f"summary may not set {', '.join(clash)} (index row fields)")
    return _json(summary, "summary")


def _json(value: Any, where: str) -> Any:
    try:
        return zio.to_json(value, where)
    except zio.StoreError as exc:
        raise CatalogError(str(exc)) from None


@dataclass
class _PreparedArray:
    name: str
    values: np.ndarray
    doc: dict[str, Any]


def _prepare(data: xr.Dataset) -> tuple[list[_PreparedArray], list[str]]:
    """Every variable and coordinate as (values, zarr.json), validated before anything is written.

    Also returns the non-dimension coordinates that no data variable can carry (they go in the
    group's 'coordinates' attribute, as xarray does).
    """
    if not isinstance(data, xr.Dataset):
        raise CatalogError(f"data must be an xarray.Dataset, not {type(data).__name__}")
    coord_names = [str(c) for c in data.coords]
    extra = [c for c in coord_names if data[c].dims != (c,)]
    carried: set[str] = set()
    out = []
    for name, var in data.variables.items():
        _check_name(name, "variable")
        dims = [_check_name(d, f"dimension of {name!r}") for d in var.dims]
        attrs = dict(var.attrs)
        if ATTR_COORDINATES in attrs:
            raise CatalogError(f"variable {name!r} may not set '{ATTR_COORDINATES}'")
        attrs = _json(attrs, f"attrs of {name!r}")
        if name not in data.coords:
            # CF/xarray encoding: non-dimension coordinates ride on the variables that span them.
            mine = [c for c in extra if set(data[c].dims) <= set(var.dims)]
            if mine:
                attrs[ATTR_COORDINATES] = " ".join(mine)
                carried.update(mine)
        try:
            values = zio.encode_values(np.asarray(var.values), name)
        except zio.StoreError as exc:
            raise CatalogError(str(exc)) from None
        out.append(_PreparedArray(name, values, zio.array_doc(values, dims, attrs)))
    return out, [c for c in extra if c not in carried]


class Catalog:
    """A catalog of converted clips in a Zarr v3 store: single writer, any number of readers."""

    def __init__(self, store: zio.Store, url: str, mode: Mode, root_attrs: dict[str, Any]) -> None:
        """Use Catalog.create or Catalog.open."""
        self._store = store
        self.url = url
        self.mode: Mode = mode
        self.root_attrs = root_attrs
        self._rows: dict[str, dict[str, Any]] | None = None
        self._dirty = False
        self._writer_marked = False  # the index on the store says a writer is active
        self._last_flush = time.monotonic()
        self._known_groups: set[str] = set()  # folder groups known to exist (writer cache)
        self._closed = False
        self._lease: Lease | None = None  # held while a run writes (`lease()`)
        self.storage_options: dict[str, Any] | None = None  # as opened (workers open it alike)

    # ------------------------------------------------------------------ opening

    @classmethod
    def create(
        cls,
        url: str | PathLike[str],
        *,
        overwrite: bool = False,
        storage_options: dict[str, Any] | None = None,
    ) -> Catalog:
        """A new catalog at url; an existing catalog there is opened to append, or wiped."""
        probe = _store(url, read_only=True, storage_options=storage_options)
        state, detail, _ = zio.run(_probe(probe))
        if state == "other":
            raise CatalogError(f"{url} {detail}; refusing to touch it")
        if state == "catalog" and not overwrite:
            return cls.open(url, mode="a", storage_options=storage_options)
        store = probe.with_read_only(False)
        if state == "catalog":  # --overwrite: never wipe a catalog that another run is writing
            held = zio.run(zio.get_json(store, LOCK_KEY))
            if held is not None and holder_alive(held):
                lease = Lease(store, str(url), remote=zio.is_remote(store))
                raise CatalogLockedError(lease.refusal(held))
        root_attrs = {
            ATTR_SCHEMA_VERSION: SCHEMA_VERSION,
            ATTR_CREATED: _now(),
            ATTR_SOFTWARE_VERSION: msconvert.__version__,
        }

        async def init() -> None:
            if state == "catalog":
                await store.clear()
            await zio.put_json(store, zio.ZARR_JSON, zio.group_doc(root_attrs))

        zio.run(init())
        catalog = cls(store, str(url), "a", root_attrs)
        catalog.storage_options = storage_options
        catalog._rows = {}
        catalog._dirty = True  # write the (empty) index with the first flush or on close
        return catalog

    @classmethod
    def open(
        cls,
        url: str | PathLike[str],
        *,
        mode: Mode = "r",
        storage_options: dict[str, Any] | None = None,
    ) -> Catalog:
        """An existing catalog, read-only ('r') or to append ('a')."""
        if mode not in ("r", "a"):
            raise CatalogError(f"mode must be 'r' or 'a', not {mode!r}")
        store = _store(url, read_only=True, storage_options=storage_options)
        state, detail, root_attrs = zio.run(_probe(store))
        if state != "catalog":
            raise CatalogError(f"{url} is not an msconvert catalog ({detail})")
        version = root_attrs.get(ATTR_SCHEMA_VERSION)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise CatalogError(f"{url} has an invalid catalog schema version {version!r}")
        if version > SCHEMA_VERSION:
            raise CatalogError(
                f"{url} uses catalog schema v{version}, newer than this msconvert "
                f"{msconvert.__version__} reads (v{SCHEMA_VERSION}): upgrade msconvert"
            )
        if mode == "a":
            store = store.with_read_only(False)
        catalog = cls(store, str(url), mode, root_attrs)
        catalog.storage_options = storage_options
        if mode == "a":
            catalog._load_index_for_writing()
        return catalog

    def __repr__(self) -> str:
        return f"Catalog({self.url!r}, mode={self.mode!r})"

    # ------------------------------------------------------------------ index

    @property
    def _index(self) -> dict[str, dict[str, Any]]:
        if self._rows is None:
            doc = zio.run(zio.get_json(self._store, INDEX_KEY))
            if doc is None or not isinstance(doc.get("clips"), dict):
                # No index yet (a writer died before its first flush): derive it from the groups.
                self._rows = self._rows_from_groups(zio.run(self._walk()))
            else:
                self._rows = doc["clips"]
        return self._rows

    def _load_index_for_writing(self) -> None:
        doc = zio.run(zio.get_json(self._store, INDEX_KEY))
        if doc is None or not isinstance(doc.get("clips"), dict) or doc.get("writer_open"):
            # Missing, or left by a writer that never closed: its rows may be stale.
            self._rows = self._rows_from_groups(zio.run(self._walk()))
            self._dirty = True
        else:
            self._rows = doc["clips"]

    @staticmethod
    def _rows_from_groups(found: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
        return {
            clip: _row_from_attrs(clip, attrs)
            for clip, attrs in sorted(found.items())
            if _status_of(attrs) != STATUS_INCOMPLETE
        }

    def refresh(self) -> None:
        """Re-read the index on the next query (a reader following a running writer)."""
        if self.mode == "r":
            self._rows = None

    def flush_index(self) -> None:
        """Persist the writer's index now (also done every ~2 s of writes and on close)."""
        if self.mode == "a" and self._dirty:
            self._write_index(writer_open=self._writer_marked and not self._closed)

    def _write_index(self, *, writer_open: bool) -> None:
        doc = {
            ATTR_SCHEMA_VERSION: SCHEMA_VERSION,
            "updated": _now(),
            "writer_open": writer_open,
            "clips": self._index,
        }
        zio.run(zio.put_json(self._store, INDEX_KEY, doc))
        self._dirty = False
        self._last_flush = time.monotonic()

    def _begin_change(self) -> None:
        """Before the first change of a session, record on the store that a writer is active."""
        if self.mode != "a":
            raise CatalogError(f"{self.url} is open read-only")
        if self._closed:
            raise CatalogError(f"{self.url} is closed")
        if not self._writer_marked:
            self._writer_marked = True
            self._write_index(writer_open=True)

    def _changed(self) -> None:
        self._dirty = True
        if time.monotonic() - self._last_flush >= FLUSH_INTERVAL_S:
            self.flush_index()

    def close(self) -> None:
        """Persist the index (writer) and release the catalog; reads stay possible."""
        if self.mode == "a" and not self._closed and (self._dirty or self._writer_marked):
            self._write_index(writer_open=False)
        self._closed = True

    def __enter__(self) -> Catalog:
        return self

    # ------------------------------------------------------------------ the writer's lease

    @contextlib.contextmanager
    def lease(self) -> Iterator[Lease]:
        """Hold the catalog's writer lease while inside (catalog/lease.py): a second run on the
        same catalog is refused (CatalogLockedError) instead of overwriting this one's clips,
        and its handle becomes read-only. Re-entering while held is a no-op."""
        if self.mode != "a":
            raise CatalogError(f"{self.url} is open read-only")
        if self._lease is not None:
            yield self._lease
            return
        lease = Lease(self._store, self.url, remote=zio.is_remote(self._store))
        try:
            lease.acquire()
        except LeaseError as exc:
            # Refused: this handle writes nothing, not even its index on close (the other
            # run's index is the one that counts).
            self.mode, self._dirty, self._writer_marked = "r", False, False
            raise CatalogLockedError(str(exc)) from None
        self._lease = lease
        try:
            yield lease
        finally:
            self._lease = None
            lease.release()

    @property
    def lease_token(self) -> str | None:
        """The token of the lease this catalog holds (for `ClipWriter`s), None when none."""
        return None if self._lease is None else self._lease.token

    def check_lease(self) -> None:
        """Raise CatalogLockedError when the lease this catalog held was taken by another run."""
        if self._lease is not None and self._lease.lost is not None:
            raise CatalogLockedError(self._lease.lost)

    async def _before_status(self) -> None:
        """Last check before a clip's status is written: the writer still holds the lease."""
        self.check_lease()

    @classmethod
    def clip_writer(
        cls,
        url: str | PathLike[str],
        *,
        lease: str | None,
        storage_options: dict[str, Any] | None = None,
    ) -> ClipWriter:
        """A writer of whole clips for a run whose driver holds the lease `lease` and keeps the
        index (a Ray worker's view of the catalog): see `ClipWriter`."""
        store = _store(url, read_only=True, storage_options=storage_options)
        state, detail, root_attrs = zio.run(_probe(store))
        if state != "catalog":
            raise CatalogError(f"{url} is not an msconvert catalog ({detail})")
        return ClipWriter(store.with_read_only(False), str(url), root_attrs, lease)

    def index_clip(self, clip_id: str) -> ClipEntry | None:
        """Index a clip that another process (a worker) wrote, from its group on the store;
        None (and no row) when there is no finished clip group there."""
        clip = self._valid_id(clip_id)
        self._begin_change()
        doc = zio.run(zio.get_json(self._store, zio.join(clip, zio.ZARR_JSON)))
        attrs = dict((doc or {}).get("attributes") or {}) if _is_clip(doc) else {}
        if not attrs or _status_of(attrs) == STATUS_INCOMPLETE:
            if self._index.pop(clip, None) is not None:
                self._changed()
            return None
        self._index[clip] = _row_from_attrs(clip, attrs)
        self._changed()
        return ClipEntry.from_row(clip, self._index[clip])

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ ground truth

    async def _walk(self) -> dict[str, dict[str, Any]]:
        """Every clip group under the root: clip id -> its attributes."""
        store, limit, found = self._store, zio.walk_semaphore(), {}
        zio.forget_listings(store)  # other processes (workers, other runs) write there too

        async def visit(prefix: str) -> None:
            async with limit:
                names = await zio.list_children(store, prefix)
            # Names starting with '.' are never clip id parts (sanitize_clip_id), e.g. the index.
            names = [n for n in names if n != zio.ZARR_JSON and not n.startswith(".")]
            docs = await zio.node_docs(store, prefix, names, limit)
            folders = []
            for name, doc in zip(names, docs, strict=True):
                if not zio.is_group(doc):
                    continue
                path = zio.join(prefix, name)
                attrs = (doc or {}).get("attributes") or {}
                if attrs.get(ATTR_CLIP_MARKER) is True:
                    found[path] = attrs
                else:
                    folders.append(visit(path))
            await asyncio.gather(*folders)

        await visit("")
        return found

    def scan(self) -> dict[str, str]:
        """Clip id -> 'complete' | 'failed' | 'incomplete', read from the clip groups themselves."""
        found = zio.run(self._walk())
        return {clip: _status_of(attrs) for clip, attrs in sorted(found.items())}

    def rebuild_index(self) -> dict[str, str]:
        """Rebuild and persist the index from the groups (incomplete ones left out); the scan."""
        self._begin_change()
        found = zio.run(self._walk())
        self._rows = self._rows_from_groups(found)
        self._dirty = True
        self.flush_index()
        return {clip: _status_of(attrs) for clip, attrs in sorted(found.items())}

    # ------------------------------------------------------------------ writing

    def _valid_id(self, clip_id: str) -> str:
        try:
            safe = sanitize_clip_id(clip_id) if isinstance(clip_id, str) else None
        except ClipIdError:
            safe = None
        if safe is None or safe != clip_id:
            raise CatalogError(
                f"unsafe clip id {clip_id!r}"
                + (f" (use sanitize_clip_id: {safe!r})" if safe is not None else "")
            )
        return clip_id

    async def _make_room(self, clip: str) -> None:
        """Ensure the folder groups above a clip exist, and remove whatever clip is there now."""
        parts = clip.split("/")
        folders = ["/".join(parts[:i]) for i in range(1, len(parts))]
        unknown = [f for f in folders if f not in self._known_groups]
        docs = await asyncio.gather(
            *(zio.get_json(self._store, zio.join(p, zio.ZARR_JSON)) for p in [*unknown, clip])
        )
        for folder, doc in zip(unknown, docs, strict=False):
            if doc is None:
                await zio.put_json(self._store, zio.join(folder, zio.ZARR_JSON), zio.group_doc({}))
            elif _is_clip(doc):
                raise CatalogError(f"clip id {clip!r} would sit inside clip {folder!r}")
            elif not zio.is_group(doc):
                raise CatalogError(f"clip id {clip!r}: {folder!r} is not a Zarr group")
            self._known_groups.add(folder)
        existing = docs[-1]
        if existing is not None and not _is_clip(existing):
            raise CatalogError(f"clip id {clip!r} names a folder of other clips or a non-clip node")
        # Always, even without a zarr.json: a crash mid-delete may have left arrays behind.
        await self._store.delete_dir(clip)

    def _replace(self, clip: str) -> None:
        self._begin_change()
        zio.run(self._make_room(clip))
        if self._index.pop(clip, None) is not None:
            self._dirty = True

    def write_clip(
        self,
        clip_id: str,
        data: xr.Dataset,
        *,
        attrs: Mapping[str, Any],
        metrics: Mapping[str, float],
        summary: Mapping[str, Any] | None = None,
    ) -> None:
        """Write one complete clip (replacing any clip there), status=complete last."""
        clip = self._valid_id(clip_id)
        arrays, group_coords = _prepare(data)
        group_attrs = {
            **_attrs(data.attrs, "dataset attrs"),
            **_attrs(attrs, "attrs"),
            ATTR_CLIP_ID: clip,
            ATTR_CLIP_MARKER: True,
            ATTR_METRICS: _metrics(metrics),
            ATTR_SUMMARY: _summary(summary),
        }
        if group_coords:
            group_attrs[ATTR_COORDINATES] = " ".join(group_coords)
        # Parsing the metadata here validates it before anything on the store changes.
        handles = [zio.open_array(self._store, zio.join(clip, a.name), a.doc) for a in arrays]
        self._replace(clip)

        async def write() -> None:
            store = self._store
            await zio.put_json(store, zio.join(clip, zio.ZARR_JSON), zio.group_doc(group_attrs))

            async def one(a: _PreparedArray, handle: zarr.AsyncArray[Any]) -> None:
                await zio.put_json(store, zio.join(clip, a.name, zio.ZARR_JSON), a.doc)
                if a.values.size:
                    await handle.setitem(Ellipsis, a.values)

            await asyncio.gather(*(one(a, h) for a, h in zip(arrays, handles, strict=True)))
            # The status goes last, in its own write: a reader (and scan) sees the clip only
            # once every array above is on the store; and only while this run holds the lease.
            await self._before_status()
            final = zio.group_doc({**group_attrs, ATTR_STATUS: STATUS_COMPLETE})
            await zio.put_json(store, zio.join(clip, zio.ZARR_JSON), final)

        zio.run(write())
        self._index[clip] = _row(
            clip,
            STATUS_COMPLETE,
            metrics=group_attrs[ATTR_METRICS],
            summary=group_attrs[ATTR_SUMMARY],
        )
        self._changed()

    def write_failure(
        self,
        clip_id: str,
        *,
        reason: str,
        stage: str,
        attrs: Mapping[str, Any] | None = None,
        summary: Mapping[str, Any] | None = None,
    ) -> None:
        """Record a failed clip (an array-less group with its one-line reason), replacing any."""
        clip = self._valid_id(clip_id)
        reason = _one_line(reason) or "unknown failure"
        stage = _one_line(stage)
        group_attrs = {
            **_attrs(attrs, "attrs"),
            ATTR_CLIP_ID: clip,
            ATTR_CLIP_MARKER: True,
            ATTR_REASON: reason,
            ATTR_STAGE: stage,
            ATTR_SUMMARY: _summary(summary),
            ATTR_STATUS: STATUS_FAILED,
        }
        self._replace(clip)
        doc = zio.group_doc(group_attrs)

        async def write() -> None:
            await self._before_status()
            await zio.put_json(self._store, zio.join(clip, zio.ZARR_JSON), doc)

        zio.run(write())
        self._index[clip] = _row(
            clip, STATUS_FAILED, reason=reason, stage=stage, summary=group_attrs[ATTR_SUMMARY]
        )
        self._changed()

    def remove_clip(self, clip_id: str) -> None:
        """Delete a clip group (any status) and its index row; KeyError if there is none."""
        clip = self._valid_id(clip_id)
        self._begin_change()
        doc = zio.run(zio.get_json(self._store, zio.join(clip, zio.ZARR_JSON)))
        if not _is_clip(doc):
            raise KeyError(f"no clip {clip!r} in {self.url}")
        zio.run(self._store.delete_dir(clip))
        self._index.pop(clip, None)
        self._changed()

    # ------------------------------------------------------------------ reading

    def clips(self, status: str | None = None) -> list[ClipEntry]:
        """Index entries, sorted by clip id, optionally only those with one status."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
        rows = self._index
        return [
            ClipEntry.from_row(c, rows[c])
            for c in sorted(rows)
            if status is None or rows[c].get("status") == status
        ]

    def __contains__(self, clip_id: object) -> bool:
        row = self._index.get(clip_id) if isinstance(clip_id, str) else None
        return row is not None and row.get("status") == STATUS_COMPLETE

    def __iter__(self) -> Iterator[str]:
        rows = self._index
        return iter([c for c in sorted(rows) if rows[c].get("status") == STATUS_COMPLETE])

    def __len__(self) -> int:
        return sum(1 for r in self._index.values() if r.get("status") == STATUS_COMPLETE)

    def _lookup_id(self, clip_id: str) -> str:
        try:
            return self._valid_id(clip_id)
        except CatalogError:
            raise KeyError(f"{clip_id!r} is not a valid clip id") from None

    async def _clip_attrs(self, clip: str, *, complete: bool) -> dict[str, Any]:
        doc = await zio.get_json(self._store, zio.join(clip, zio.ZARR_JSON))
        if not _is_clip(doc):
            raise KeyError(f"no clip {clip!r} in {self.url}")
        attrs = dict((doc or {}).get("attributes") or {})
        if complete:
            _require_complete(clip, attrs)
        return attrs

    def __getitem__(self, clip_id: str) -> xr.Dataset:
        """The clip's Dataset, opened lazily (complete clips only; KeyError with the reason)."""
        clip = self._lookup_id(clip_id)
        zio.run(self._clip_attrs(clip, complete=True))
        ds = xr.open_zarr(self._store, group=clip, zarr_format=3, consolidated=False)
        text = {n: zio.decode_strings(ds[n].values) for n in ds.coords if ds[n].dtype.kind == "T"}
        return ds.assign_coords({n: (ds[n].dims, v, ds[n].attrs) for n, v in text.items()})

    def attrs(self, clip_id: str) -> dict[str, Any]:
        """A clip group's attributes (any status)."""
        return zio.run(self._clip_attrs(self._lookup_id(clip_id), complete=False))

    async def _array_docs(self, clip: str) -> dict[str, dict[str, Any]]:
        names = await zio.list_children(self._store, clip)
        names = [n for n in names if n != zio.ZARR_JSON and not n.startswith(".")]
        docs = await zio.node_docs(self._store, clip, names)
        return {n: d for n, d in zip(names, docs, strict=True) if d and zio.is_array(d)}

    def info(self, clip_id: str) -> dict[str, Any]:
        """A clip's attributes, and each array's dims, shape, dtype, chunks, codecs and attrs."""
        clip = self._lookup_id(clip_id)

        async def get() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
            return await asyncio.gather(
                self._clip_attrs(clip, complete=False), self._array_docs(clip)
            )

        attrs, docs = zio.run(get())
        arrays = {
            name: {
                "dims": list(doc.get("dimension_names") or []),
                "shape": list(doc["shape"]),
                "dtype": "str" if doc["data_type"] == "string" else str(doc["data_type"]),
                "chunks": list(doc["chunk_grid"]["configuration"]["chunk_shape"]),
                "codecs": [c["name"] if isinstance(c, dict) else c for c in doc["codecs"]],
                "attrs": dict(doc.get("attributes") or {}),
            }
            for name, doc in sorted(docs.items())
        }
        return {"clip": clip, "status": _status_of(attrs), "attrs": attrs, "arrays": arrays}

    def variables(self, clip_id: str) -> list[str]:
        """A clip's data variables (arrays that are not coordinates), sorted."""
        clip = self._lookup_id(clip_id)

        async def get() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
            return await asyncio.gather(
                self._clip_attrs(clip, complete=False), self._array_docs(clip)
            )

        attrs, docs = zio.run(get())
        return _data_variables(attrs, docs)

    def read_variable(
        self,
        clip_id: str,
        name: str,
        *,
        isel: Mapping[str, Selection] | None = None,
        sel: Mapping[str, Any] | None = None,
        time_range: tuple[float | None, float | None] | None = None,
    ) -> xr.DataArray:
        """One array of one clip, selected by position and/or label, reading only needed chunks.

        Labels follow xarray: a slice of labels is inclusive at both ends (time ranges in
        seconds), a list of labels keeps that dim, a single label drops it. `time_range`
        (start, end) in seconds applies to the array's time-like dim, whatever its name.
        """
        clip = self._lookup_id(clip_id)
        isel, sel = dict(isel or {}), dict(sel or {})
        both = sorted(set(isel) & set(sel))
        if both:
            raise ValueError(f"dimension {both[0]!r} is given in both isel and sel")
        return zio.run(self._read_variable(clip, name, isel, sel, time_range))

    async def _read_variable(
        self,
        clip: str,
        name: str,
        isel: dict[str, Any],
        sel: dict[str, Any],
        time_range: tuple[float | None, float | None] | None = None,
    ) -> xr.DataArray:
        store = self._store
        group, doc = await asyncio.gather(
            zio.get_json(store, zio.join(clip, zio.ZARR_JSON)),
            zio.get_json(store, zio.join(clip, name, zio.ZARR_JSON))
            if isinstance(name, str) and name and set(name) <= _NAME_OK
            else asyncio.sleep(0),
        )
        if not _is_clip(group):
            raise KeyError(f"no clip {clip!r} in {self.url}")
        _require_complete(clip, (group or {}).get("attributes") or {})
        if not zio.is_array(doc):
            attrs = (group or {}).get("attributes") or {}
            names = _data_variables(attrs, await self._array_docs(clip))
            raise KeyError(f"clip {clip!r} has no variable {name!r}; it has {', '.join(names)}")
        assert doc is not None
        dims = list(doc.get("dimension_names") or [f"dim_{i}" for i in range(len(doc["shape"]))])
        if time_range is not None:
            time_dim = next((d for d in dims if is_time_dim(d)), None)
            if time_dim is None:
                raise ValueError(f"{name!r} has no time dimension; its dimensions are {dims}")
            sel.setdefault(time_dim, slice(*time_range))
        unknown = sorted((set(isel) | set(sel)) - set(dims))
        if unknown:
            raise ValueError(
                f"{name!r} has no dimension {unknown[0]!r}; its dimensions are {', '.join(dims)}"
            )
        coords = await asyncio.gather(*(self._coordinate(clip, d) for d in dims))
        keys: list[Any] = []
        for dim, coord in zip(dims, coords, strict=True):
            if dim in isel:
                keys.append(_position_key(isel[dim]))
            elif dim in sel:
                if coord is None:
                    raise ValueError(f"dimension {dim!r} of {name!r} has no labels; use isel")
                keys.append(_label_key(dim, coord[0], sel[dim]))
            else:
                keys.append(slice(None))
        values = await zio.open_array(store, zio.join(clip, name), doc).get_orthogonal_selection(
            tuple(keys)
        )
        out_dims, out_coords = [], {}
        for dim, coord, key in zip(dims, coords, keys, strict=True):
            scalar = isinstance(key, int | np.integer)
            if not scalar:
                out_dims.append(dim)
            if coord is not None:
                labels, attrs = coord
                out_coords[dim] = xr.Variable(() if scalar else (dim,), labels[key], attrs)
        var_attrs = dict(doc.get("attributes") or {})
        var_attrs.pop(ATTR_COORDINATES, None)
        values = zio.decode_strings(np.asarray(values))
        return xr.DataArray(values, dims=out_dims, coords=out_coords, name=name, attrs=var_attrs)

    async def _coordinate(self, clip: str, dim: str) -> tuple[np.ndarray, dict[str, Any]] | None:
        """A dimension's coordinate labels and attrs, or None when it has none."""
        path = zio.join(clip, dim)
        doc = await zio.get_json(self._store, zio.join(path, zio.ZARR_JSON))
        if not zio.is_array(doc) or (doc or {}).get("dimension_names") != [dim]:
            return None
        assert doc is not None
        labels = await zio.open_array(self._store, path, doc).getitem(Ellipsis)
        attrs = dict(doc.get("attributes") or {})
        attrs.pop(ATTR_COORDINATES, None)
        return zio.decode_strings(np.asarray(labels)), attrs


class ClipWriter(Catalog):
    """Writes whole clips (`write_clip`, `write_failure`) into a catalog whose index another
    process keeps: the view of a worker that writes its clips straight to the store while the
    run's driver holds the lease and indexes them (`Catalog.index_clip`).

    Each clip is written as by `Catalog.write_clip` (status last), and its status only while the
    store's lease still carries `lease` (one small read per clip): a worker of a run that lost
    its lease, or whose driver died and was replaced by another run, marks nothing complete.
    It neither reads nor writes the index; its reading methods are not meant to be used.
    """

    def __init__(
        self, store: zio.Store, url: str, root_attrs: dict[str, Any], lease: str | None
    ) -> None:
        super().__init__(store, url, "a", root_attrs)
        self._rows = {}  # a scratch index: the driver's is the real one
        self._writer_marked = True
        self.expected_lease = lease

    def _begin_change(self) -> None:
        if self._closed:
            raise CatalogError(f"{self.url} is closed")

    def _changed(self) -> None:
        self._rows = {}

    def flush_index(self) -> None:
        pass

    def close(self) -> None:
        self._closed = True

    async def _before_status(self) -> None:
        if self.expected_lease is None:
            return
        held = await token_on_store(self._store)
        if held != self.expected_lease:
            raise CatalogLockedError(
                f"{self.url}: the run this worker writes for no longer holds the catalog's "
                "lease (its driver stopped, or another run took over); clip not marked complete"
            )


def _store(
    url: str | PathLike[str], *, read_only: bool, storage_options: Mapping[str, Any] | None
) -> zio.Store:
    try:
        return zio.make_store(url, read_only=read_only, storage_options=storage_options)
    except zio.StoreError as exc:
        raise CatalogError(str(exc)) from None
    except (ValueError, ImportError, OSError) as exc:
        raise CatalogError(f"cannot open {url}: {_one_line(exc)}") from None


async def _probe(store: zio.Store) -> tuple[str, str, dict[str, Any]]:
    """('catalog' | 'empty' | 'other', why, root attrs) for what a store location holds now."""
    root = await zio.get_json(store, zio.ZARR_JSON)
    if root is not None:
        attrs = dict(root.get("attributes") or {})
        if zio.is_group(root) and ATTR_SCHEMA_VERSION in attrs:
            return "catalog", "", attrs
        kind = "a Zarr group" if zio.is_group(root) else "a Zarr node"
        return "other", f"holds {kind} that is not an msconvert catalog", {}
    try:
        empty = await store.is_empty("")
    except (FileNotFoundError, NotADirectoryError):
        empty = True
    if empty:
        return "empty", "nothing there", {}
    return "other", "is not empty and not a catalog", {}


def _require_complete(clip: str, attrs: Mapping[str, Any]) -> None:
    status = _status_of(attrs)
    if status == STATUS_FAILED:
        stage = attrs.get(ATTR_STAGE) or "?"
        raise KeyError(f"clip {clip!r} failed at {stage}: {attrs.get(ATTR_REASON) or '?'}")
    if status != STATUS_COMPLETE:
        raise KeyError(f"clip {clip!r} is incomplete (its writer stopped); resume the run")


def _data_variables(attrs: Mapping[str, Any], docs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    coords = {n for n, d in docs.items() if d.get("dimension_names") == [n]}
    coords.update(str(attrs.get(ATTR_COORDINATES) or "").split())
    for doc in docs.values():
        coords.update(str((doc.get("attributes") or {}).get(ATTR_COORDINATES) or "").split())
    return sorted(n for n in docs if n not in coords)


def _position_key(key: Any) -> slice | int | np.ndarray:
    if isinstance(key, slice | int | np.integer):
        return key
    positions = np.asarray(key)
    if positions.ndim != 1 or positions.dtype.kind not in "iu":
        raise ValueError(f"isel takes a slice, an int or a list of ints, not {key!r}")
    return positions


def _label_key(dim: str, labels: np.ndarray, key: Any) -> slice | int | np.ndarray:
    """Positions selected by labels (xarray semantics: label slices include both ends)."""
    if isinstance(key, slice):
        numeric = labels.dtype.kind in "iuf"
        if numeric and (labels.size < 2 or bool(np.all(np.diff(labels) >= 0))):
            start = 0 if key.start is None else int(np.searchsorted(labels, key.start, "left"))
            stop = (
                labels.size if key.stop is None else int(np.searchsorted(labels, key.stop, "right"))
            )
            return slice(start, max(start, stop), key.step)
        start = 0 if key.start is None else _position_of(dim, labels, key.start)
        stop = labels.size if key.stop is None else _position_of(dim, labels, key.stop) + 1
        return slice(start, max(start, stop), key.step)
    if isinstance(key, list | tuple | np.ndarray):
        return np.asarray([_position_of(dim, labels, k) for k in key], dtype=np.intp)
    return _position_of(dim, labels, key)


def _position_of(dim: str, labels: np.ndarray, label: Any) -> int:
    try:
        hits = np.flatnonzero(labels == label)
    except (TypeError, ValueError, np.exceptions.DTypePromotionError):
        hits = np.empty(0, dtype=np.intp)
    if hits.size == 0:
        shown = ", ".join(str(v) for v in labels[:8]) + (", ..." if labels.size > 8 else "")
        raise KeyError(f"{dim} {label!r} not found (has {shown})")
    return int(hits[0])
