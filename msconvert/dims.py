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


# Distinct muscle solutions of one clip (`--method track --solutions K`): the arrays each
# solution has its own of carry this leading dim; solution 0 is the single answer of K = 1.
DIM_SOLUTION = "solution"


class SolutionError(ValueError):
    """A muscle solution asked of a clip that does not hold it; the message is one line."""


def solution_count(ds) -> int:  # an xarray.Dataset or DataArray (not imported: this stays cheap)
    """How many muscle solutions a clip's dataset holds (1 without the solution dim)."""
    return int(ds.sizes.get(DIM_SOLUTION, 1))


def check_solution(clip_id: str, count: int, solution: int) -> None:
    """SolutionError unless 0 <= solution < count (count: the clip's solutions)."""
    if isinstance(solution, bool) or not isinstance(solution, int):
        raise SolutionError(f"a solution is an integer index, not {solution!r}")
    if 0 <= solution < count:
        return
    if count == 1:
        raise SolutionError(
            f"clip {clip_id!r} has no distinct muscle solutions (it was not converted with "
            f"--solutions K > 1): solution takes only 0, not {solution}"
        )
    raise SolutionError(
        f"clip {clip_id!r} holds {count} muscle solutions: solution takes 0 to {count - 1}, "
        f"not {solution}"
    )


def select_solution(ds, solution: int | None = None, clip_id: str | None = None):
    """One muscle solution of a clip's xarray.Dataset: the arrays on the solution dim at
    `solution` (None: 0, the single answer), the others (shared by every solution) as they are;
    its attrs say which (`solution`). A clip without the dim holds one solution, 0. clip_id
    names the clip in errors (default: its `clip_id` attribute)."""
    count = solution_count(ds)
    index = 0 if solution is None else solution
    check_solution(clip_id or str(ds.attrs.get("clip_id", "")), count, index)
    if DIM_SOLUTION not in ds.dims:
        return ds
    out = ds.isel({DIM_SOLUTION: index}, drop=True)
    out.attrs = {**ds.attrs, "solution": index}
    return out
