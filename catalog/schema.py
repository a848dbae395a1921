"""The catalog's schema: version, status values, dimension names, and safe clip ids."""

from __future__ import annotations

import re

SCHEMA_VERSION = 1
STATUS_COMPLETE = "complete"
STATUS_FAILED = "failed"
STATUSES = (STATUS_COMPLETE, STATUS_FAILED)
# What scan() reports for a clip group whose writer died before its final status write.
STATUS_INCOMPLETE = "incomplete"

# Dimension names shared by every array in a clip group (xarray-style labelled data).
DIM_TIME = "time"  # seconds from the clip's first frame, at the control rate (model arrays)
DIM_SOURCE_TIME = "source_time"  # seconds from the clip's first frame, at the source's own rate
DIM_JOINT = "joint"  # SMPL body joint names for source_* arrays
DIM_XYZ = "xyz"  # 'x', 'y', 'z'
DIM_QUAT = "quat"  # 'w', 'x', 'y', 'z'

# Root group attributes that make a Zarr group an msconvert catalog.
ATTR_SCHEMA_VERSION = "msconvert_schema_version"
ATTR_CREATED = "created"
ATTR_SOFTWARE_VERSION = "software_version"

# Clip group attributes written by the catalog itself (callers may not pass these in `attrs`).
ATTR_CLIP_MARKER = "msconvert_clip"  # true on every clip group, whatever its status
ATTR_CLIP_ID = "clip_id"
ATTR_STATUS = "status"  # written last: a group without it is incomplete
ATTR_REASON = "reason"
ATTR_STAGE = "stage"
ATTR_METRICS = "metrics"
ATTR_SUMMARY = "summary"  # the index row's extra fields, so rebuild_index() can restore them
ATTR_COORDINATES = "coordinates"  # CF/xarray: names of non-dimension coordinates
RESERVED_CLIP_ATTRS = frozenset(
    {
        ATTR_CLIP_MARKER,
        ATTR_CLIP_ID,
        ATTR_STATUS,
        ATTR_REASON,
        ATTR_STAGE,
        ATTR_METRICS,
        ATTR_SUMMARY,
        ATTR_COORDINATES,
    }
)

# The catalog-level index: a JSON document beside the root zarr.json. Its name starts with '.',
# which sanitize_clip_id never lets a clip id part do, so it can never collide with a clip.
INDEX_KEY = ".msconvert_index.json"
# Fields of every index row; summary fields may not reuse these names.
INDEX_ROW_FIELDS = ("clip", "status", "reason", "stage", "metrics")

# Storage layout of clip arrays: chunks along time of about this many (uncompressed) bytes.
TARGET_CHUNK_BYTES = 512 * 1024
# zstd level 3 (zstd's own default): near the best ratio of levels 1-9 on float data at a
# fraction of the cost of higher levels.
ZSTD_LEVEL = 3

_UNSAFE = re.compile(r"[^A-Za-z0-9._+\-]")
_MAX_COMPONENT = 120


class ClipIdError(ValueError):
    """A clip id that cannot be made safe (empty after cleaning)."""


def sanitize_clip_id(raw: str) -> str:
    """A '/'-separated clip id that can never leave the catalog root.

    Backslashes count as separators; empty and '.' parts are dropped; characters outside
    [A-Za-z0-9._+-] become '_'; a part made only of dots, or starting with a dot, is prefixed
    with '_' (so '..' can never climb and no part is hidden); 'zarr.json' is reserved.
    """
    parts = []
    for part in raw.replace("\\", "/").split("/"):
        if part in ("", "."):
            continue
        part = _UNSAFE.sub("_", part)[:_MAX_COMPONENT]
        if part.startswith(".") or part == "zarr.json":
            part = "_" + part
        parts.append(part)
    if not parts:
        raise ClipIdError(f"clip id {raw!r} is empty after sanitizing")
    return "/".join(parts)


def is_time_dim(dim: str) -> bool:
    """Time-like dims ('time', 'source_time', ...): chunked along, sliced by --start/--end."""
    return dim == DIM_TIME or dim.endswith("_time")
