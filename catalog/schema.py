"""The catalog's schema: version, status values, attribute names and storage layout."""

from __future__ import annotations

from msconvert.clip_ids import ClipIdError, sanitize_clip_id
from msconvert.dims import (
    DIM_JOINT,
    DIM_QUAT,
    DIM_SOURCE_TIME,
    DIM_TIME,
    DIM_XYZ,
    is_time_dim,
)

__all__ = [
    "DIM_JOINT",
    "DIM_QUAT",
    "DIM_SOURCE_TIME",
    "DIM_TIME",
    "DIM_XYZ",
    "ClipIdError",
    "is_time_dim",
    "sanitize_clip_id",
]

SCHEMA_VERSION = 1
STATUS_COMPLETE = "complete"
STATUS_FAILED = "failed"
STATUSES = (STATUS_COMPLETE, STATUS_FAILED)
# What scan() reports for a clip group whose writer died before its final status write.
STATUS_INCOMPLETE = "incomplete"

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
# The writer's lease: who is writing the catalog now (catalog/lease.py). Also a '.' name.
LOCK_KEY = ".msconvert_lock.json"
# Fields of every index row; summary fields may not reuse these names.
INDEX_ROW_FIELDS = ("clip", "status", "reason", "stage", "metrics")

# Storage layout of clip arrays: chunks along time of about this many (uncompressed) bytes.
TARGET_CHUNK_BYTES = 512 * 1024
# zstd level 3 (zstd's own default): near the best ratio of levels 1-9 on float data at a
# fraction of the cost of higher levels.
ZSTD_LEVEL = 3
