"""Low-level Zarr v3 I/O for the catalog: stores from URLs, JSON documents, array layout.

Everything here talks to a `zarr.abc.store.Store` through its async API, run on zarr's own event
loop, so that one catalog operation (write a clip, read a selection) is one round trip from
Python into zarr with the store requests inside it issued concurrently.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import math
import os
import warnings
from collections.abc import Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import zarr
from zarr.abc.store import Store
from zarr.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import FsspecStore, LocalStore, StorePath

from msconvert.catalog.schema import TARGET_CHUNK_BYTES, ZSTD_LEVEL, is_time_dim

T = TypeVar("T")

ZARR_JSON = "zarr.json"
# Chunks are always written, even when all fill value: skips zarr's per-chunk comparison and
# keeps every clip's data explicit on the store.
_ARRAY_CONFIG = {"write_empty_chunks": True}
# At most this many store requests in flight while walking a catalog (remote stores included).
_WALK_CONCURRENCY = 64


class StoreError(Exception):
    """A problem with a store location, reported by the catalog as a CatalogError."""


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on zarr's event loop (works from plain and async-hosting threads alike)."""
    return sync(coro)


def make_store(
    url: str | os.PathLike[str], *, read_only: bool, storage_options: Mapping[str, Any] | None
) -> Store:
    """A LocalStore for a local path or file:// URL; an FsspecStore for any other fsspec URL."""
    text = os.fspath(url)
    if "://" in text and not text.startswith("file://"):
        return FsspecStore.from_url(
            text, storage_options=dict(storage_options or {}), read_only=read_only
        )
    if storage_options:
        raise StoreError("storage_options only apply to fsspec URLs, not to local paths")
    path = Path(text.removeprefix("file://")).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise StoreError(f"{path} is a file, not a catalog directory")
    return LocalStore(path, read_only=read_only)


def is_remote(store: Store) -> bool:
    """Whether the store is reached through fsspec (an object store, say), not a local disk."""
    return not isinstance(store, LocalStore)


def forget_listings(store: Store) -> None:
    """Drop the cached directory listings of the store's filesystem (fsspec's dircache, e.g.
    s3fs's), so that a listing sees what other processes wrote since; no-op for local disks.
    All of them: s3fs forgets a path's parents with it, never its children."""
    fs = getattr(store, "fs", None)
    invalidate = getattr(fs, "invalidate_cache", None)
    if isinstance(store, FsspecStore) and callable(invalidate):
        try:
            invalidate()
        except Exception:  # a filesystem without a cache, or a wrapper: nothing to forget
            pass


def join(*parts: str) -> str:
    """A store key from path parts, ignoring empty ones (the root is '')."""
    return "/".join(p for p in parts if p)


async def get_bytes(store: Store, key: str) -> bytes | None:
    """The bytes at a key, or None when it (or the store's root) does not exist."""
    try:
        buf = await store.get(key, prototype=default_buffer_prototype())
    except (FileNotFoundError, NotADirectoryError):
        return None
    return None if buf is None else buf.to_bytes()


async def get_json(store: Store, key: str) -> dict[str, Any] | None:
    """A JSON object document, or None when missing or not a JSON object."""
    raw = await get_bytes(store, key)
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


async def put_bytes(store: Store, key: str, data: bytes) -> None:
    """Write bytes at a key (one store write)."""
    await store.set(key, default_buffer_prototype().buffer.from_bytes(data))


async def put_json(store: Store, key: str, doc: Mapping[str, Any]) -> None:
    """Write a JSON document (one store write: atomic on local disks and object stores)."""
    # Compact: json's C encoder only runs without indent, and a clip writes ~20 documents.
    await put_bytes(store, key, json.dumps(doc, separators=(",", ":"), allow_nan=False).encode())


async def list_children(store: Store, prefix: str) -> list[str]:
    """Names directly under a prefix ([] when it does not exist)."""
    try:
        return [name async for name in store.list_dir(prefix)]
    except (FileNotFoundError, NotADirectoryError):
        return []


async def node_docs(
    store: Store, prefix: str, names: Sequence[str], limit: asyncio.Semaphore | None = None
) -> list[dict[str, Any] | None]:
    """The zarr.json documents of the named children of a node, fetched concurrently."""

    async def one(name: str) -> dict[str, Any] | None:
        if limit is None:
            return await get_json(store, join(prefix, name, ZARR_JSON))
        async with limit:
            return await get_json(store, join(prefix, name, ZARR_JSON))

    return list(await asyncio.gather(*(one(n) for n in names)))


def walk_semaphore() -> asyncio.Semaphore:
    """The request limit for one walk of a catalog (created on the running loop)."""
    return asyncio.Semaphore(_WALK_CONCURRENCY)


def is_group(doc: Mapping[str, Any] | None) -> bool:
    """Whether a zarr.json document describes a Zarr v3 group."""
    return doc is not None and doc.get("zarr_format") == 3 and doc.get("node_type") == "group"


def is_array(doc: Mapping[str, Any] | None) -> bool:
    """Whether a zarr.json document describes a Zarr v3 array."""
    return doc is not None and doc.get("zarr_format") == 3 and doc.get("node_type") == "array"


def group_doc(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """The zarr.json document of a Zarr v3 group."""
    return {"zarr_format": 3, "node_type": "group", "attributes": dict(attributes)}


def open_array(store: Store, path: str, doc: Mapping[str, Any]) -> zarr.AsyncArray[Any]:
    """An array handle from metadata already in hand (no store request)."""
    return zarr.AsyncArray(
        metadata=dict(doc), store_path=StorePath(store, path), config=_ARRAY_CONFIG
    )


def time_chunks(shape: Sequence[int], dims: Sequence[str], itemsize: int) -> tuple[int, ...]:
    """Chunk shape: whole along every dim but the first time-like one, chunks of ~TARGET bytes."""
    chunks = [max(1, int(n)) for n in shape]
    axis = next((i for i, d in enumerate(dims) if is_time_dim(d)), None)
    if axis is not None:
        step = itemsize * math.prod(c for i, c in enumerate(chunks) if i != axis)
        chunks[axis] = max(1, min(chunks[axis], TARGET_CHUNK_BYTES // max(1, step)))
    return tuple(chunks)


# Text is stored as Zarr's variable-length UTF-8 `string` data type with the `vlen-utf8` codec
# (both specified in zarr-extensions, read by other implementations such as zarrs) and comes back
# from zarr as NumPy StringDType; our readers turn it into '<U'. The alternative, letting NumPy
# '<U' arrays become `fixed_length_utf32`, makes zarr 3.1.6 raise UnstableSpecificationWarning
# ("no Zarr V3 specification ... may change without warning") on every write: a poor basis for a
# long-lived catalog. zarr 3.1.6 writes and reads `string` silently; zarr releases before the
# vlen-utf8 spec (3.1.0, still allowed by our pin) warned that the codec was not in the v3 spec.
# That one message is silenced here; nothing else is.
warnings.filterwarnings(
    "ignore",
    message="The codec `vlen-utf8` is currently not part in the Zarr format 3 specification",
    category=UserWarning,
)
STRING_DTYPE = np.dtypes.StringDType()
_STRING_ITEMSIZE_GUESS = 16  # bytes per element, only to size time chunks of string arrays


def encode_values(values: np.ndarray, name: str) -> np.ndarray:
    """The array as it will be stored: native-endian numbers, or StringDType text."""
    kind = values.dtype.kind
    if kind in "biufc":
        return values.astype(values.dtype.newbyteorder("="), copy=False)
    if kind in "UT":
        return values.astype(STRING_DTYPE)
    if kind == "O" and all(isinstance(v, str) for v in values.flat):
        return values.astype(STRING_DTYPE)
    if kind in "mM":
        raise StoreError(
            f"variable {name!r} has dtype {values.dtype}; store times as float seconds"
        )
    raise StoreError(f"variable {name!r} has unsupported dtype {values.dtype}")


def array_doc(
    values: np.ndarray, dims: Sequence[str], attributes: Mapping[str, Any]
) -> dict[str, Any]:
    """The zarr.json document of one stored variable: chunked along time, zstd-compressed."""
    dtype = values.dtype
    if dtype.kind == "T":
        data_type: str = "string"
        serializer: dict[str, Any] = {"name": "vlen-utf8", "configuration": {}}
        fill: Any = ""
        itemsize = _STRING_ITEMSIZE_GUESS
    else:
        data_type = dtype.name
        serializer = {"name": "bytes"}
        if dtype.itemsize > 1:
            serializer["configuration"] = {"endian": "little"}
        fill = {"f": "NaN", "c": ["NaN", "NaN"], "b": False}.get(dtype.kind, 0)
        itemsize = dtype.itemsize
    chunks = time_chunks(values.shape, dims, itemsize)
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": list(values.shape),
        "data_type": data_type,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": fill,
        "codecs": [
            serializer,
            {"name": "zstd", "configuration": {"level": ZSTD_LEVEL, "checksum": False}},
        ],
        "attributes": dict(attributes),
        "dimension_names": list(dims),
    }


def decode_strings(values: np.ndarray) -> np.ndarray:
    """StringDType (as zarr returns text) → '<U', which every NumPy/pandas tool handles."""
    if values.dtype.kind not in "TO":
        return values
    width = max((len(str(v)) for v in values.flat), default=1)
    return values.astype(f"<U{max(width, 1)}")


def to_json(value: Any, where: str) -> Any:
    """A JSON-ready copy: NumPy scalars/arrays → Python, non-finite floats → None."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.generic):
        return to_json(value.item(), where)
    if isinstance(value, np.ndarray):
        return to_json(value.tolist(), where)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise StoreError(f"{where}: key {k!r} is not a string")
            out[k] = to_json(v, f"{where}.{k}")
        return out
    if isinstance(value, list | tuple):
        return [to_json(v, where) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, _dt.datetime | _dt.date):
        return value.isoformat()
    raise StoreError(f"{where}: a {type(value).__name__} cannot be stored as a JSON attribute")
