"""Dimension names of the labelled arrays every stage writes (xarray-style)."""

from __future__ import annotations

# Dimension names shared by every array in a clip group (xarray-style labelled data).
DIM_TIME = "time"  # seconds from the clip's first frame, at the control rate (model arrays)
DIM_SOURCE_TIME = "source_time"  # seconds from the clip's first frame, at the source's own rate
DIM_JOINT = "joint"  # SMPL body joint names for source_* arrays
DIM_XYZ = "xyz"  # 'x', 'y', 'z'
DIM_QUAT = "quat"  # 'w', 'x', 'y', 'z'
XYZ = ("x", "y", "z")
WXYZ = ("w", "x", "y", "z")


def is_time_dim(dim: str) -> bool:
    """Time-like dims ('time', 'source_time', ...): chunked along, sliced by --start/--end."""
    return dim == DIM_TIME or dim.endswith("_time")
