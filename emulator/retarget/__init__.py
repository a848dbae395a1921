"""Stage 2: retarget a `Motion` onto a musculoskeletal model, giving a `Reference`."""

from msconvert.emulator.retarget.config import RetargetConfig
from msconvert.emulator.retarget.correspondence import (
    Binding,
    Correspondence,
    CorrespondenceSet,
    bind,
    default_correspondence_path,
    load_correspondence,
)
from msconvert.emulator.retarget.exceptions import CorrespondenceError, RetargetError
from msconvert.emulator.retarget.ik import IKOptions, IKResult, solve_ik
from msconvert.emulator.retarget.pipeline import retarget
from msconvert.emulator.retarget.reference import Reference

__all__ = [
    "Binding",
    "Correspondence",
    "CorrespondenceError",
    "CorrespondenceSet",
    "IKOptions",
    "IKResult",
    "Reference",
    "RetargetConfig",
    "RetargetError",
    "bind",
    "default_correspondence_path",
    "load_correspondence",
    "retarget",
    "solve_ik",
]
