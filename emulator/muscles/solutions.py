"""Distinct muscle solutions of one clip (`--method track --solutions K`).

The same motion can be made by many coordination patterns of a redundant muscle set. Here K
runs of the tracking controller each find one, and each still tracks the clip
(docs/method.md#distinct-muscle-solutions):

- solution 0 is the single answer: Σ act², exactly what `track` gives with no options;
- solution j ≥ 1 weighs each muscle's activation squared by a seeded log-normal weight that
  drifts in time, w_i(t) ∝ exp(σ·ξ_i(t)) with ξ_i a smooth unit Gaussian process from the seed
  (seed, j) (`muscle_weights`), and adds a linear cost
  push·⟨ā(t), act⟩ on what solutions 0..j-1 activated on average at that frame, ā(t): it
  steers the muscle share towards muscles the others left idle. Both keep each frame problem a
  convex QP, and the controller's strict joint-torque and assist weights are unchanged, so
  the cost only chooses among the ways of meeting the same torques.

Each solution is a full simulation of the clip: the controller's time grows K-fold.

`--method rl --solutions K` distils policy j from controller j (`teacher_cost` gives a trainer
the controller of solution j); `solutions_dataset` and `diversity_metrics` serve both methods.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import mujoco
import numpy as np
import xarray as xr
from scipy.ndimage import gaussian_filter1d

from msconvert.dims import DIM_SOLUTION, DIM_TIME, solution_count
from msconvert.emulator.emulation import Emulation, solution_prefix
from msconvert.emulator.model import muscle_actuators
from msconvert.emulator.muscles.static_opt import MuscleCost
from msconvert.emulator.muscles.track import TEACHER, TrackConfig, TrackError, TrackResult, track
from msconvert.emulator.retarget.reference import Reference

# The seed when no --seed is given (the CLI's --seed default is the same 0).
DEFAULT_SEED = 0
# Series this close to constant carry no correlation (a muscle idle at its lower bound).
_CONSTANT = 1e-9


@dataclass(frozen=True)
class SolutionsConfig:
    """How many solutions, and how they are pushed apart; the defaults are measured in
    benchmarks/RESULTS.md (distinct muscle solutions)."""

    count: int = 1  # K: solution 0 and K - 1 distinct ones
    # σ of log w: a 1-σ muscle costs e^1.5 ≈ 4.5 times more (or less). 1.0 left the walk's
    # solutions at corr 0.52-0.55 once the 200-Hz controller tracked it closely; 1.5: 0.45-0.49.
    weight_sigma: float = 1.5
    push: float = 1.0  # cost per unit activation per unit of the earlier solutions' mean
    # s: the width of the Gaussian that smooths each muscle's log-weight in time (about how
    # long a weight keeps its value); 0: one weight per muscle for the whole clip
    weight_period_s: float = 0.3
    seed: int = DEFAULT_SEED  # with the solution index, seeds each solution's muscle weights

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, numbers.Integral):
            raise TrackError(f"solutions must be a whole number >= 1, not {self.count!r}")
        if self.count < 1:
            raise TrackError(f"solutions must be a whole number >= 1, not {self.count}")
        for name in ("weight_sigma", "push", "weight_period_s"):
            value = getattr(self, name)
            if not (isinstance(value, numbers.Real) and np.isfinite(value) and value >= 0):
                raise TrackError(f"solutions {name} must be a number >= 0, not {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise TrackError(f"the solutions' seed must be an integer, not {self.seed!r}")


def muscle_weights(
    n_muscles: int, solution: int, config: SolutionsConfig, frames: int = 1, fps: float = 1.0
) -> np.ndarray:
    """(frames, M) cost weights of one solution's muscles: all 1 for solution 0, else
    log-normal from the seed (config.seed, solution), the same on every clip and machine.

    With weight_period_s > 0 each muscle's log-weight is a stationary Gaussian process in time
    (white noise smoothed by a Gaussian of that width, scaled back to unit variance): constant
    weights change a muscle's share of a torque, not its time course, so the solutions would
    still rise and fall together (benchmarks/RESULTS.md, distinct muscle solutions)."""
    if solution == 0:
        return np.ones((frames, n_muscles))
    # SeedSequence takes non-negative integers: a negative --seed maps to its two's complement.
    rng = np.random.default_rng([int(config.seed) % 2**64, solution])
    log_weight = rng.standard_normal(n_muscles)
    width = config.weight_period_s * fps  # in frames
    if width <= 0:
        log_weight = np.broadcast_to(log_weight, (frames, n_muscles))
    else:
        noise = rng.standard_normal((frames, n_muscles))
        smooth = gaussian_filter1d(noise, width, axis=0, mode="reflect")
        impulse = np.zeros(2 * int(4 * width) + 1)
        impulse[impulse.size // 2] = 1.0
        kernel = gaussian_filter1d(impulse, width, mode="constant")  # its variance gain is Σ k²
        log_weight = smooth / np.sqrt(np.sum(kernel**2))
    weight = np.exp(config.weight_sigma * log_weight)
    # mean 1 over the muscles at every frame, as solution 0's: a dearer muscle set on the
    # whole would make the controller's assist relatively cheaper, and track worse
    return weight / weight.mean(axis=1, keepdims=True)


@dataclass(frozen=True, eq=False)
class Solutions:
    """K runs of the controller on one clip, and how they differ."""

    results: tuple[TrackResult, ...]  # solution 0 first: the single answer
    weights: np.ndarray  # (K, T, M) each solution's muscle weights per frame
    config: SolutionsConfig
    metrics: dict[str, float]

    def to_dataset(self) -> xr.Dataset:
        """Every array of the controller's result with a leading `solution` dim, plus each
        solution's tracked frames, fall and muscle weights; attrs as solution 0's."""
        parts = [r.to_dataset() for r in self.results]
        return solutions_dataset(parts, [r.emulation for r in self.results], self)

    def cost(self, solution: int) -> MuscleCost | None:
        """The muscle cost solution `solution`'s controller ran with (None: solution 0's Σ act²)."""
        if solution == 0:
            return None
        return _pushed(self.weights[solution], self.results[:solution], self.config.push)

    @classmethod
    def from_dataset(cls, ds: xr.Dataset) -> Solutions:
        """The solutions a clip's dataset holds (as `to_dataset` wrote it, or one solution)."""
        count = solution_count(ds)
        results = tuple(TrackResult.from_dataset(ds, j) for j in range(count))
        n_muscles = results[0].emulation.activation.shape[1]
        frames = results[0].emulation.activation.shape[0]
        weights = (
            np.asarray(ds["solution_muscle_weight"].values, np.float64)
            if "solution_muscle_weight" in ds
            else np.ones((1, frames, n_muscles))
        )
        if weights.ndim == 2:  # written before the weights drifted in time: one per muscle
            weights = np.repeat(weights[:, None, :], frames, axis=1)
        config = SolutionsConfig(
            count=count,
            weight_sigma=float(ds.attrs.get("solutions_weight_sigma", 0.0)),
            push=float(ds.attrs.get("solutions_push", 0.0)),
            weight_period_s=float(ds.attrs.get("solutions_weight_period_s", 0.0)),
            seed=int(ds.attrs.get("solutions_seed", DEFAULT_SEED)),
        )
        metrics = {
            k: float("nan") if v is None else float(v)
            for k, v in (ds.attrs.get("metrics") or {}).items()
            if k.startswith(("track.", "tracking.", "solution", "diversity."))
        }
        return cls(results, weights, config, metrics)


def track_solutions(
    reference: Reference,
    model: mujoco.MjModel,
    config: TrackConfig | None = None,
    solutions: SolutionsConfig | None = None,
    *,
    feet: dict[str, list[str]] | None = None,
    floor_work: bool = True,
) -> Solutions:
    """K controller runs on the clip, each pushed away from the ones before it (module doc)."""
    solutions = solutions or SolutionsConfig()
    n_muscles = muscle_actuators(model).size
    frames, fps = reference.n_frames, float(reference.fps)
    weights = np.stack(
        [muscle_weights(n_muscles, j, solutions, frames, fps) for j in range(solutions.count)]
    )
    results: list[TrackResult] = []
    for j in range(solutions.count):
        cost = None  # solution 0: today's Σ act², bit for bit
        if j > 0:
            cost = _pushed(weights[j], results, solutions.push)
        results.append(
            track(reference, model, config, feet=feet, floor_work=floor_work, muscle_cost=cost)
        )
    return Solutions(
        tuple(results),
        weights,
        solutions,
        solutions_metrics([r.metrics for r in results], [r.emulation for r in results]),
    )


def teacher_cost(
    reference: Reference,
    model: mujoco.MjModel,
    solutions: SolutionsConfig,
    solution: int,
    *,
    feet: dict[str, list[str]] | None = None,
) -> MuscleCost | None:
    """The muscle cost of solution `solution`'s controller on the clip as a teacher (`TEACHER`:
    once per frame), as `track_solutions` makes it: solutions 0..solution-1 are run again (the
    C engine is deterministic, so they are the ones the policy's teacher pushed away from)."""
    if solution == 0:
        return None
    earlier = track_solutions(
        reference, model, TEACHER, dataclasses.replace(solutions, count=solution), feet=feet
    )
    frames, fps = reference.n_frames, float(reference.fps)
    weight = muscle_weights(earlier.weights.shape[2], solution, solutions, frames, fps)
    return _pushed(weight, earlier.results, solutions.push)


def solutions_dataset(
    parts: Sequence[xr.Dataset], emulations: Sequence[Emulation], solutions: Solutions
) -> xr.Dataset:
    """Per-solution datasets (`parts`, of `emulations`) stacked on a leading `solution` dim, with
    each solution's tracked frames, fall and muscle weights (`solutions`: the controller runs
    that made or taught them); attrs as solution 0's."""
    ds = xr.concat(
        list(parts),
        dim=DIM_SOLUTION,
        data_vars="all",
        coords="minimal",
        compat="override",
        combine_attrs="override",
    )
    ds = ds.assign_coords(
        {
            DIM_SOLUTION: (
                DIM_SOLUTION,
                np.arange(len(parts)),
                {"description": "0: the single answer (Σ act²); 1..: distinct ones"},
            )
        }
    )
    ds["solution_tracked_frames"] = (
        (DIM_SOLUTION,),
        np.array([e.tracked_frames for e in emulations], np.int32),
        {"description": "frames tracked before the end of the clip or a fall"},
    )
    ds["solution_fell"] = ((DIM_SOLUTION,), np.array([e.fell for e in emulations], bool))
    ds["solution_muscle_weight"] = (
        (DIM_SOLUTION, DIM_TIME, "muscle"),
        solutions.weights[: len(parts)].astype(np.float32),
        {"description": "weight of each muscle's activation squared in the solution's cost"},
    )
    config = solutions.config
    ds.attrs.update(
        solutions=len(parts),
        solutions_weight_sigma=float(config.weight_sigma),
        solutions_push=float(config.push),
        solutions_weight_period_s=float(config.weight_period_s),
        solutions_seed=int(config.seed),
    )
    return ds


def mean_activation(results: list[TrackResult]) -> np.ndarray:
    """(T, M) the solutions' mean activation per frame, over those still tracking there (NaN
    where none is: after every one fell)."""
    act = np.stack([r.emulation.activation for r in results])
    tracking = np.isfinite(act)
    total = np.where(tracking, act, 0.0).sum(axis=0)
    count = tracking.sum(axis=0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def solutions_metrics(
    per_solution: Sequence[Mapping[str, float]], emulations: Sequence[Emulation]
) -> dict[str, float]:
    """Solution 0's metrics under today's keys, solution j's under 'solution<j>.', and
    `diversity.*` of their emulations (see `diversity_metrics`)."""
    metrics = dict(per_solution[0])
    for j, own in enumerate(per_solution[1:], start=1):
        metrics.update({solution_prefix(j) + k: v for k, v in own.items()})
    metrics.update(diversity_metrics(emulations))
    return metrics


def _pushed(weight: np.ndarray, earlier: Sequence[TrackResult], push: float) -> MuscleCost:
    """A solution's muscle cost: its weights, and the push away from the earlier solutions."""
    return MuscleCost(weight, mean_activation(list(earlier)), push)


def diversity_metrics(emulations: Sequence[Emulation]) -> dict[str, float]:
    """How far K solutions' muscles differ while they track:

    - `diversity.activation_corr_mean`: Pearson correlation of a muscle's activation over time
      between two solutions (over the frames both tracked), averaged over the muscles that are
      constant in neither, then over the pairs; 1 = the same pattern up to scale and offset;
    - `diversity.joint_error_spread_deg`: the largest difference of
      `tracking.joint_error_deg_mean` between solutions;
    - `diversity.effort_spread_pct`: the largest difference of the mean effort Σ_muscles act²
      per frame, in % of solution 0's;
    - `diversity.solutions`: K.
    """
    out = {"diversity.solutions": float(len(emulations))}
    pairs = []
    for a, b in combinations(emulations, 2):
        common = min(a.tracked_frames, b.tracked_frames)
        x, y = a.activation[:common], b.activation[:common]
        varies = (np.std(x, axis=0) > _CONSTANT) & (np.std(y, axis=0) > _CONSTANT)
        if not varies.any():
            continue
        x, y = x[:, varies] - x[:, varies].mean(0), y[:, varies] - y[:, varies].mean(0)
        corr = (x * y).sum(0) / np.sqrt((x * x).sum(0) * (y * y).sum(0))
        pairs.append(float(np.mean(corr)))
    out["diversity.activation_corr_mean"] = float(np.mean(pairs)) if pairs else float("nan")
    errors = [e.metrics["tracking.joint_error_deg_mean"] for e in emulations]
    out["diversity.joint_error_spread_deg"] = float(np.max(errors) - np.min(errors))
    effort = [
        float(np.mean(np.sum(e.activation[: e.tracked_frames] ** 2, axis=1))) for e in emulations
    ]
    out["diversity.effort_spread_pct"] = float((np.max(effort) - np.min(effort)) / effort[0] * 100)
    return out
