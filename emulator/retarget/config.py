"""Settings of the retargeting stage."""

from __future__ import annotations

from dataclasses import dataclass, field

from msconvert.emulator.retarget.ik import IKOptions
from msconvert.emulator.retarget.scaling import SCALING_MODES


@dataclass(frozen=True)
class RetargetConfig:
    """Everything `retarget` takes besides the clip, the model and the skeleton; picklable."""

    fps: float | None = 50.0  # control rate of the Reference; None keeps the source's rate
    correspondence: str | None = None  # a correspondence JSON; None: the packaged one for the model
    scaling: str = "segment"  # 'segment' (model limb lengths, planted feet), 'uniform' or 'none'
    ik: IKOptions = field(default_factory=IKOptions)
    max_gap_s: float = 0.25  # longest run of non-finite source frames that is interpolated
    max_bad_fraction: float = 0.2  # more non-finite frames than this and the clip is refused
    ground: bool = True  # shift the root vertically so stance feet touch the floor
    penetration_tolerance_m: float = 0.001
    ground_smooth_s: float = 0.05  # Gaussian blur (sigma) of the vertical shift
    floor_weight: float = 10.0  # IK weight of the floor contacts (stance sole on it, none below)
    stance_speed: float = 0.3  # m/s: a foot point slower than this may be in stance
    stance_height: float = 0.04  # m: ... if also within this of its lowest level in the clip
    derivative_window_s: float = 0.15  # Savitzky-Golay window for qvel and qacc
    derivative_polyorder: int = 3

    def __post_init__(self) -> None:
        if self.scaling not in SCALING_MODES:
            raise ValueError(
                f"scaling must be one of {', '.join(SCALING_MODES)}, not {self.scaling!r}"
            )
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"fps must be a positive number or None, not {self.fps!r}")
