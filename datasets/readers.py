"""One reader per source format, chosen by the clip source's format (`ClipSource.body_model`)."""

from __future__ import annotations

from msconvert.datasets.amass import ClipSource, read_amass
from msconvert.datasets.bvh import BVH_FORMAT, read_bvh
from msconvert.datasets.motion import Motion


def read_clip(source: ClipSource) -> Motion:
    """The source's `Motion`: an AMASS .npz, or a BVH file read with its joint map ('bvh:<map>')."""
    kind, _, joint_map = source.body_model.partition(":")
    if kind == BVH_FORMAT:
        return read_bvh(
            source.path, relpath=source.relpath, clip_id=source.clip_id, joint_map=joint_map
        )
    return read_amass(source.path, relpath=source.relpath, clip_id=source.clip_id)
