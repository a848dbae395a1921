"""What `msconvert train` reads from a catalog: the clips' references and warm-start solutions."""

from __future__ import annotations

from collections.abc import Sequence

from msconvert.catalog import Catalog
from msconvert.emulator.learn.runs import Solutions
from msconvert.emulator.muscles.result import StaticOptFormatError, StaticOptResult
from msconvert.emulator.retarget.reference import Reference


def references_from_catalog(
    catalog: Catalog, clip_ids: Sequence[str]
) -> tuple[list[Reference], Solutions | None]:
    """The stored references of these clips, and their static-optimization solutions when every
    clip has one (else None: the warm start solves them)."""
    refs, acts, excs = [], [], []
    for clip in clip_ids:
        ds = catalog[clip]
        refs.append(Reference.from_dataset(ds, clip))
        if ds.attrs.get("method") != "static-opt":
            continue
        try:
            solution = StaticOptResult.from_dataset(ds)
        except StaticOptFormatError:  # written by an older msconvert: solved again
            continue
        acts.append(solution.activation.astype("float32"))
        excs.append(solution.excitation.astype("float32"))
    if len(acts) != len(refs):
        return refs, None
    return refs, (acts, excs)
