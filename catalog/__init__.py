"""msconvert.catalog: the Zarr v3 catalog of converted clips (writer, reader, index)."""

from msconvert.catalog.schema import (
    SCHEMA_VERSION,
    STATUS_COMPLETE,
    STATUS_FAILED,
    STATUS_INCOMPLETE,
    STATUSES,
    ClipIdError,
    sanitize_clip_id,
)
from msconvert.catalog.store import (
    Catalog,
    CatalogError,
    CatalogLockedError,
    ClipEntry,
    ClipWriter,
)

__all__ = [
    "SCHEMA_VERSION",
    "STATUSES",
    "STATUS_COMPLETE",
    "STATUS_FAILED",
    "STATUS_INCOMPLETE",
    "Catalog",
    "CatalogError",
    "CatalogLockedError",
    "ClipEntry",
    "ClipIdError",
    "ClipWriter",
    "sanitize_clip_id",
]
