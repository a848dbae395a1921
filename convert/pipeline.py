"""The per-clip pipeline (a function of one source file) and the batch that runs it over a corpus.

Each stage is a function of the previous stage's value; the batch only schedules, writes and
reports. Local workers compute and the calling process writes their clips; Ray workers write
their own clip (status last, as the calling process would) and the calling process keeps the
index. Either way the calling process holds the catalog's writer lease: one run per catalog.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from msconvert import __version__
from msconvert.catalog import Catalog, CatalogError, CatalogLockedError, ClipWriter
from msconvert.catalog.schema import STATUS_COMPLETE, STATUS_FAILED
from msconvert.convert import checkpoint_store, stage_cache
from msconvert.convert.executors import RayCluster, map_unordered, this_node
from msconvert.convert.presets import PRESETS
from msconvert.datasets.amass import ClipSource
from msconvert.datasets.kinematics import (
    BodyModelError,
    Skeleton,
    find_body_model_file,
    forward_kinematics,
    load_body_model,
    mean_skeleton,
    source_skeleton,
)
from msconvert.datasets.motion import Motion, MotionError
from msconvert.datasets.readers import read_clip
from msconvert.datasets.resample import resample
from msconvert.emulator.emulation import (
    Emulation,
    EmulationFormatError,
    solution_prefix,
    stochastic_dataset,
    stochastic_metrics,
)
from msconvert.emulator.model import ModelError, default_model_path, load_model, model_sha256
from msconvert.emulator.muscles.result import StaticOptFormatError
from msconvert.emulator.muscles.solutions import (
    SolutionsConfig,
    solutions_dataset,
    solutions_metrics,
    track_solutions,
)
from msconvert.emulator.muscles.static_opt import StaticOptError, static_optimization
from msconvert.emulator.muscles.track import TEACHER, TrackConfig, TrackError, track
from msconvert.emulator.retarget import (
    CorrespondenceError,
    Reference,
    RetargetConfig,
    RetargetError,
    retarget,
)
from msconvert.emulator.retarget.reference import ReferenceFormatError

if TYPE_CHECKING:  # training brings JAX, flax and optax: imported where the rl method runs
    from msconvert.emulator.learn.checkpoint import Policy
    from msconvert.emulator.learn.runs import Solutions
    from msconvert.emulator.learn.train import TrainConfig, Trainer

STAGES: tuple[str, ...] = ("ingest", "retarget", "train", "emulate")
# How the muscle activity is found: a learned policy per clip (the product), or inverse dynamics
# with static optimization (the fast classic answer, no training: its `emulate` is per frame).
METHODS: tuple[str, ...] = ("rl", "static-opt", "track")
# Stages that exist today, per method; the others are refused with a clear message, never faked.
IMPLEMENTED: dict[str, tuple[str, ...]] = {
    "rl": ("ingest", "retarget", "train", "emulate"),
    "static-opt": ("ingest", "retarget", "emulate"),
    "track": ("ingest", "retarget", "emulate"),
}


class StageNotAvailableError(Exception):
    """A stage was asked for that this version of msconvert does not implement yet."""


def check_until(until: str, method: str = "rl") -> None:
    """Refuse, in one line, a stage that is unknown or not implemented yet for the method."""
    if method not in METHODS:
        raise StageNotAvailableError(f"unknown method '{method}' (methods: {', '.join(METHODS)})")
    if until not in STAGES:
        raise StageNotAvailableError(f"unknown stage '{until}' (stages: {', '.join(STAGES)})")
    available = IMPLEMENTED[method]
    if until not in available:
        why = (
            f"{method} trains nothing"
            if method in ("static-opt", "track") and until == "train"
            else f"it is not available yet in msconvert {__version__}"
        )
        raise StageNotAvailableError(
            f"stage '{until}' with --method {method}: {why}; "
            f"available: {', '.join(available)} (use --until {available[-1]})"
        )


def check_solutions(
    count: int,
    method: str,
    policy: str = "per-clip",
    warm_start: str = "track",
    residual: bool = True,
) -> None:
    """Refuse, in one line, distinct muscle solutions (`--solutions K`) that are not built."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise StageNotAvailableError(f"--solutions takes a whole number >= 1, not {count!r}")
    if count == 1 or method == "track":
        return
    if method != "rl":
        raise StageNotAvailableError(
            f"--solutions {count} with --method {method}: distinct muscle solutions are built only "
            "for --method track and rl; use one of them or --solutions 1"
        )
    if policy != "per-clip":
        raise StageNotAvailableError(
            f"--solutions {count} with --policy {policy}: rl solutions are built for per-clip "
            "policies only; use --policy per-clip or --solutions 1"
        )
    if warm_start != "track" or not residual:
        how = f"--warm-start {warm_start}" if warm_start != "track" else "--no-residual"
        raise StageNotAvailableError(
            f"--solutions {count} with {how}: each policy is taught by one solution's tracking "
            "controller and acts as a residual on its run; use --warm-start track --residual"
        )


def solution_folder(clip_id: str, solution: int) -> str:
    """Where the policy of muscle solution `solution` trains, relative to the checkpoints:
    solution 0's is the clip's own folder, solution j's a sibling '.<leaf>.solution<j>' (no
    clip id part starts with '.', so it never meets a clip's)."""
    if solution == 0:
        return clip_id
    parent, _, leaf = clip_id.rpartition("/")
    name = f".{leaf}.solution{solution}"
    return f"{parent}/{name}" if parent else name


def default_until(method: str) -> str:
    """The last stage the method implements."""
    return IMPLEMENTED[method][-1]


@dataclass(frozen=True)
class PipelineOptions:
    """Everything a worker needs to convert one clip; picklable."""

    until: str = IMPLEMENTED["rl"][-1]
    source_fps: float | None = None  # resample the source to this rate; None keeps the file's
    body_models: str | None = None  # directory of licensed SMPL-H/SMPL-X model files
    allow_pickle_body_models: bool = False
    model: str | None = None  # MJCF path; None = MyoFullBody
    retarget_config: str | None = None  # correspondence file; None = the model's packaged one
    control_hz: float = 50.0  # rate of the reference (and later of the policy)
    method: str = "rl"
    static_opt_cost: str = "act2"  # 'act2' (Σ act²) or 'act3' (Σ act³)
    static_opt_processes: int = 1  # forked processes per clip (only when clips run one at a time)
    assist: str = "on"  # track: the controller's root assist; rl: the policy's (annealed to 0)
    track_kp: float = 100.0  # track: PD gains on the reference
    track_kd: float = 20.0
    track_contact_lift: float = 0.005  # track: m, see TrackConfig.contact_lift_m
    track_control_hz: float = 200.0  # track: the plan's rate, see TrackConfig.control_hz
    track_toe_push: bool = False  # track: see TrackConfig.toe_push
    # track and rl: distinct muscle solutions per clip (1: the single answer); rl trains one
    # policy per solution, each taught by that solution's controller, seeded seed + j
    solutions: int = 1
    # The rl method: a named budget (convert/presets.py), and what may override it.
    preset: str = "demo"
    agent: str = "flow"
    reward: str = "adversarial"
    warm_start: str = "track"  # 'track' (DAgger from the controller), 'static-opt' or 'none'
    residual: bool = True  # track warm start: the policy adds to the controller's run
    policy: str = "per-clip"  # or 'multi-clip': one policy for all the clips of the run
    # Where the policies go: a folder, or a URL on an object store (a catalog there has its
    # policies at <url>.checkpoints); None: none (the CLI puts them beside the catalog).
    checkpoints: str | None = None
    seed: int = 0
    budget_steps: int | None = None
    budget_minutes: float | None = None
    n_envs: int | None = None
    backend: str | None = None
    evaluations: int | None = None  # snapshots emulated to pick the exported one (0: the last)
    stochastic: int = 0  # rollouts with sampled actions, beside the deterministic emulation
    finetune_steps: int = 0  # multi-clip: env steps of per-clip fine-tuning of the shared policy
    checkpoint_every_s: float = 120.0  # training state saved this often (and at the end)

    def train_config(self) -> TrainConfig:
        """The trainer's settings: the preset, then the explicit overrides."""
        from msconvert.emulator.learn.dagger import DaggerConfig
        from msconvert.emulator.learn.env import EnvConfig
        from msconvert.emulator.learn.train import TrainConfig, agent_module

        preset = PRESETS[self.preset]
        module = agent_module(self.agent)
        return TrainConfig(
            agent=self.agent,
            reward=self.reward,
            warm_start=self.warm_start,
            residual=self.residual,
            backend=self.backend or preset.backend,
            n_envs=self.n_envs or preset.n_envs,
            budget_steps=self.budget_steps or preset.budget_steps,
            budget_minutes=self.budget_minutes if self.budget_minutes else preset.budget_minutes,
            seed=self.seed,
            checkpoint_every_s=self.checkpoint_every_s,
            bc_steps=preset.bc_steps,
            dagger=DaggerConfig(
                rounds=preset.dagger_rounds,
                steps=preset.dagger_steps,
                labelled_envs=preset.dagger_labelled_envs,
                fit_steps=preset.dagger_fit_steps,
            ),
            evaluations=preset.evaluations if self.evaluations is None else self.evaluations,
            env=EnvConfig(control_hz=self.control_hz, assist=self.assist == "on"),
            agent_config=self._agent_config(module, preset),
        )

    @staticmethod
    def _agent_config(module: Any, preset: Any) -> Any:
        config = module.Config.gpu() if preset.gpu_agent else module.Config()
        if hasattr(config, "replay_size"):
            config = replace(config, replay_size=preset.replay_size)
        return config

    def checkpoint_dir(self, name: str) -> Path:
        """The local folder a policy trains in (for checkpoints on a store, its local mirror:
        see `policy_folder`)."""
        root = self.local_checkpoints
        if root is None:
            raise StageNotAvailableError("no checkpoint directory (pass --checkpoints DIR)")
        return Path(root) / name

    @property
    def local_checkpoints(self) -> str | None:
        """The local folder of the policies and the stage cache (a store's local mirror)."""
        if checkpoint_store.is_remote(self.checkpoints):
            assert self.checkpoints is not None
            return str(checkpoint_store.local_root(self.checkpoints))
        return self.checkpoints

    def checkpoint_location(self, folder: str | os.PathLike[str]) -> str:
        """What the catalog records for a policy's local folder: its URL on the store when the
        checkpoints are there, else its absolute path."""
        local = Path(folder).absolute()
        if checkpoint_store.is_remote(self.checkpoints) and self.local_checkpoints:
            assert self.checkpoints is not None
            with contextlib.suppress(ValueError):
                rel = local.relative_to(Path(self.local_checkpoints).absolute())
                return f"{self.checkpoints.rstrip('/')}/{rel.as_posix()}"
        return str(local)

    @property
    def body_model_mode(self) -> str:
        return "body-model" if self.body_models else "mean-skeleton"

    def reaches(self, stage: str) -> bool:
        """Whether this run goes as far as `stage`."""
        return STAGES.index(self.until) >= STAGES.index(stage)

    def retarget_settings(self) -> RetargetConfig:
        return RetargetConfig(fps=self.control_hz, correspondence=self.retarget_config)


# What a bad clip raises: each becomes that clip's one-line failure, and the batch goes on.
# Training's errors join them through `clip_errors` (their modules bring JAX).
CLIP_ERRORS: tuple[type[Exception], ...] = (
    MotionError,
    BodyModelError,
    RetargetError,
    CorrespondenceError,
    ModelError,
    StaticOptError,
    ReferenceFormatError,
    StaticOptFormatError,
    EmulationFormatError,
    TrackError,
)
# Training's own errors, by module and name: looked up only once their module is loaded (an
# error whose module was never imported cannot have been raised), so that retargeting and
# static optimization never import JAX.
_TRAINING_ERRORS = (
    ("msconvert.emulator.learn.train", "TrainError"),
    ("msconvert.emulator.learn.checkpoint", "CheckpointError"),
)


def clip_errors() -> tuple[type[Exception], ...]:
    """CLIP_ERRORS, with training's errors once training's modules are loaded."""
    loaded = tuple(getattr(sys.modules[m], n) for m, n in _TRAINING_ERRORS if m in sys.modules)
    return CLIP_ERRORS + loaded


def model_for(path: str | None):  # mujoco.MjModel
    """The model, compiled once per process (a worker converts many clips with it, and a Ray
    worker process serves many tasks). Keyed by the model file itself, its resolved path, size
    and modification time: a relative path means the same after a worker's chdir, and a file
    edited since is compiled anew."""
    file = default_model_path() if path is None else Path(path).expanduser().resolve()
    try:
        stat = file.stat()
    except OSError:  # load_model says what is wrong with it
        return load_model(path)
    return _compiled(None if path is None else str(file), (stat.st_size, stat.st_mtime_ns))


@functools.lru_cache(maxsize=8)
def _compiled(file: str | None, _stamp: tuple[int, int]):  # mujoco.MjModel
    return load_model(file)  # None: the default model, under its own name


@dataclass(frozen=True)
class ClipOutcome:
    """What one clip's run produced: a dataset to write, or a one-line failure."""

    clip_id: str
    status: str
    stage: str
    reason: str = ""
    data: xr.Dataset | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    frames: int = 0

    def reference(self) -> Reference:
        """The retargeted reference this outcome holds, as the later stages need it."""
        assert self.data is not None
        ds = self.data.assign_attrs({**self.attrs, "metrics": self.metrics})
        return Reference.from_dataset(ds, self.clip_id)


@dataclass
class _Clip:
    """What one clip's stages have made so far; `stage` is the one running (a failure names it).
    A multi-clip policy's shared training runs as a `_Clip` of its own, with no source."""

    clip_id: str
    source: ClipSource | None
    options: PipelineOptions
    stage: str = "ingest"
    parts: list[xr.Dataset] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    frames: int = 0

    @classmethod
    def resumed(cls, ready: ClipOutcome, source: ClipSource, options: PipelineOptions) -> _Clip:
        """A clip that continues from an earlier outcome (its retargeted stages)."""
        assert ready.data is not None
        clip = cls(source.clip_id, source, options)
        clip.parts, clip.frames = [ready.data], ready.frames
        clip.attrs, clip.metrics = dict(ready.attrs), dict(ready.metrics)
        clip.summary = dict(ready.summary)
        return clip

    def add_motion(self, motion: Motion, skeleton: Skeleton) -> None:
        options = self.options
        self.parts.append(motion.to_dataset(forward_kinematics(motion, skeleton)))
        self.attrs.update(
            body_model_mode=skeleton.mode,
            skeleton=skeleton.name,
            stages=[st for st in IMPLEMENTED[options.method] if options.reaches(st)],
            method=options.method,
            software_version=__version__,
        )
        self.metrics.update(
            {
                "source.frames": float(motion.n_frames),
                "source.fps": float(motion.fps),
                "source.duration_s": float(motion.duration_s),
            }
        )
        self.summary.update(
            frames=motion.n_frames,
            fps=float(motion.fps),
            body_model_mode=skeleton.mode,
            method=options.method,
        )
        self.frames = motion.n_frames

    def add_reference(self, reference: Reference) -> None:
        self.parts.append(reference.to_dataset())
        self.attrs.update(retarget_correspondence=self.options.retarget_config or "packaged")
        self.metrics.update(reference.metrics)
        self.summary.update(model=reference.model_name, control_fps=float(reference.fps))

    def add_policy(
        self,
        policy: Policy,
        rollouts: tuple[Emulation, list[Emulation]] | None,
    ) -> None:
        """The policy that made the clip, and its emulation (with sampled rollouts, if any)."""
        seconds = float(policy.meta.get("seconds", 0.0))
        self.metrics.update(
            {"train.env_steps": float(policy.step), "train.minutes": seconds / 60.0}
        )
        self.attrs.update(
            method="rl",
            stages=[st for st in IMPLEMENTED["rl"] if self.options.reaches(st)],
            method_label="reinforcement-learning imitation (policy rollout, deterministic)",
            checkpoint=self.options.checkpoint_location(policy.checkpoint_dir),
            checkpoint_step=int(policy.step),
            trainer=policy.meta.get("config", {}),
            seed=int(policy.meta.get("config", {}).get("seed", 0)),
            policy_clips=list(policy.clip_ids),
        )
        if rollouts is not None:
            emulation, sampled = rollouts
            self.parts.append(emulation.to_dataset())
            self.metrics.update(emulation.metrics)
            if sampled:
                self.parts.append(stochastic_dataset(sampled))
                self.metrics.update(stochastic_metrics(sampled))

    def outcome(self, start: float, stage: str) -> ClipOutcome:
        """The clip's outcome: every stage's dataset merged on shared labels."""
        data = xr.merge(
            self.parts, compat="no_conflicts", join="exact", combine_attrs="no_conflicts"
        )
        # Every attribute in one place (the stage cache reads them back the same way).
        attrs, data.attrs = {**data.attrs, **self.attrs}, {}
        return ClipOutcome(
            clip_id=self.clip_id,
            status=STATUS_COMPLETE,
            stage=stage,
            data=data,
            attrs=attrs,
            metrics=self.metrics,
            summary=self.summary,
            seconds=time.perf_counter() - start,
            frames=self.frames,
        )


def _run(clip: _Clip, stage: str, work: Callable[[_Clip], None]) -> ClipOutcome:
    """Run `work` on the clip under the one exception policy of every per-clip runner: a known
    bad-input error or a bug costs this clip (a one-line reason naming the stage), never the
    batch."""
    start = time.perf_counter()
    try:
        work(clip)
    except clip_errors() as exc:
        return _failure(clip.clip_id, clip.stage, str(exc), start, clip.summary)
    except Exception as exc:  # a bug must cost one clip, not the batch; say it is ours
        reason = f"internal error: {type(exc).__name__}: {exc}"
        return _failure(clip.clip_id, clip.stage, reason, start, clip.summary)
    return clip.outcome(start, stage)


def _failure(
    clip_id: str, stage: str, reason: str, start: float, summary: dict[str, Any]
) -> ClipOutcome:
    return ClipOutcome(
        clip_id=clip_id,
        status=STATUS_FAILED,
        stage=stage,
        reason=" ".join(reason.split()),
        summary=dict(summary),
        seconds=time.perf_counter() - start,
    )


def skeleton_for(motion: Motion, options: PipelineOptions) -> Skeleton:
    """The exact skeleton from the user's model files, or the built-in mean shape."""
    if not options.body_models:
        return mean_skeleton()
    path = find_body_model_file(
        options.body_models, motion.body_model, motion.gender, options.allow_pickle_body_models
    )
    return load_body_model(str(path), options.allow_pickle_body_models).skeleton(motion.betas)


def _ingest(clip: _Clip) -> tuple[Motion, Skeleton]:
    """Stage 1: file → validated `Motion` (optionally resampled) and its skeleton."""
    clip.stage = "ingest"
    source, options = clip.source, clip.options
    assert source is not None
    clip.summary["source_format"] = source.body_model
    motion = read_clip(source)  # the reader of its format: AMASS .npz or BVH
    if options.source_fps is not None:
        motion = resample(motion, options.source_fps)
    skeleton = source_skeleton(motion) or skeleton_for(motion, options)
    clip.add_motion(motion, skeleton)
    clip.summary["source_format"] = motion.format
    return motion, skeleton


def _retarget(clip: _Clip, motion: Motion, skeleton: Skeleton, fps: float) -> Reference:
    """Stage 2: the motion on the model, at `fps`."""
    clip.stage = "retarget"
    settings = RetargetConfig(fps=fps, correspondence=clip.options.retarget_config)
    reference = retarget(motion, model_for(clip.options.model), settings, skeleton)
    clip.add_reference(reference)
    return reference


def run_clip(source: ClipSource, options: PipelineOptions) -> ClipOutcome:
    """Run the stages up to `options.until` on one clip; never raises for a bad clip."""
    if options.method == "rl" and options.reaches("train"):
        return _run_rl_clip(source, options)

    def work(clip: _Clip) -> None:
        motion, skeleton = _ingest(clip)
        if not options.reaches("retarget"):
            return
        reference = _retarget(clip, motion, skeleton, options.control_hz)
        if options.method == "static-opt" and options.reaches("emulate"):
            clip.stage = "static-opt"
            solution = static_optimization(
                reference,
                model_for(options.model),
                cost=options.static_opt_cost,
                processes=options.static_opt_processes,
            )
            clip.parts.append(solution.to_dataset())
            clip.metrics.update(solution.metrics)
        if options.method == "track" and options.reaches("emulate"):
            clip.stage = "track"
            config = TrackConfig(
                kp=options.track_kp,
                kd=options.track_kd,
                contact_lift_m=options.track_contact_lift,
                control_hz=options.track_control_hz,
                toe_push=options.track_toe_push,
                assist=options.assist,
            )
            if options.solutions > 1:  # K runs; solution 0 is the single answer below
                wanted = SolutionsConfig(count=options.solutions, seed=options.seed)
                found = track_solutions(reference, model_for(options.model), config, wanted)
                clip.parts.append(found.to_dataset())
                clip.metrics.update(found.metrics)
            else:
                result = track(reference, model_for(options.model), config)
                clip.parts.append(result.to_dataset())
                clip.metrics.update(result.metrics)

    return _run(_clip(source, options), options.until, work)


def _clip(source: ClipSource, options: PipelineOptions, **summary: Any) -> _Clip:
    return _Clip(
        source.clip_id,
        source,
        options,
        summary={"source": source.relpath, "until": options.until, **summary},
    )


def retargeted(source: ClipSource, options: PipelineOptions) -> ClipOutcome:
    """Ingest and retarget one clip for an RL run, from the stage cache when an earlier (killed)
    run left them for the same file and settings; fresh results are cached for the next one."""
    upto = replace(options, until="retarget")
    slot = _cache_slot(source, options)
    if slot is None:
        return run_clip(source, upto)
    path, cache_key = slot
    hit = stage_cache.load(path, source.clip_id, cache_key)
    if hit is not None:
        return ClipOutcome(
            clip_id=source.clip_id,
            status=STATUS_COMPLETE,
            stage="retarget",
            data=hit.data,
            attrs=hit.attrs,
            metrics=hit.metrics,
            summary=hit.summary,
            frames=int(hit.summary.get("frames", 0)),
        )
    outcome = run_clip(source, upto)
    if outcome.status == STATUS_COMPLETE and outcome.data is not None:
        done = stage_cache.Retargeted(outcome.data, outcome.attrs, outcome.metrics, outcome.summary)
        stage_cache.save(path, source.clip_id, done, cache_key)
    return outcome


def warm_start_cached(
    source: ClipSource, options: PipelineOptions, reference: Reference, model: Any
) -> tuple[np.ndarray, np.ndarray]:
    """The clip's warm-start solution (the controller's run, or static optimization's), from the
    stage cache or solved (and cached)."""
    slot = _cache_slot(source, options)
    if slot is not None:  # each kind of warm start caches its own solution
        slot = (slot[0], f"{slot[1]}:{options.warm_start}")
    hit = stage_cache.load_solution(*slot) if slot is not None else None
    if hit is not None:
        return hit
    from msconvert.emulator.learn.runs import warm_start_solutions

    # One process: forking after JAX has started threads can deadlock.
    (activation,), (excitation,) = warm_start_solutions([reference], model, 1, options.warm_start)
    if slot is not None:
        stage_cache.save_solution(slot[0], activation, excitation, slot[1])
    return activation, excitation


def _cache_slot(source: ClipSource, options: PipelineOptions) -> tuple[Path, str] | None:
    """The clip's stage-cache entry and key; None when it cannot be cached."""
    if not options.local_checkpoints:
        return None
    path = stage_cache.entry(options.local_checkpoints, source.clip_id)
    cache_key = stage_cache.key(source, options)
    return None if path is None or cache_key is None else (path, cache_key)


@contextlib.contextmanager
def policy_folder(options: PipelineOptions, name: str) -> Iterator[Path]:
    """The local folder a policy trains in. With checkpoints on a store, it is a mirror: the
    last finished step there is fetched first (training resumes from it, on any machine), and
    committed steps are copied there while training goes and when it ends."""
    local = options.checkpoint_dir(name)
    if not checkpoint_store.is_remote(options.checkpoints):
        yield local
        return
    assert options.checkpoints is not None
    with checkpoint_store.Mirror(f"{options.checkpoints.rstrip('/')}/{name}", local):
        yield local


def _emulations(
    trainer: Trainer, policy: Policy, reference: Reference, clip: int, stochastic: int
) -> tuple[Emulation, list[Emulation]]:
    """The deterministic emulation, then `stochastic` sampled rollouts (seeds 1..K)."""
    from msconvert.emulator.learn.runs import emulate_policy

    emulation = emulate_policy(trainer, policy, reference, clip)
    sampled = [
        emulate_policy(trainer, policy, reference, clip, deterministic=False, seed=k)
        for k in range(1, stochastic + 1)
    ]
    return emulation, sampled


def _run_rl_clip(source: ClipSource, options: PipelineOptions) -> ClipOutcome:
    """A per-clip policy: retarget (cached), warm start (cached), train (checkpointed), then
    emulate; a kill anywhere costs only the work since the last of those."""
    ready = retargeted(source, options)
    if ready.status != STATUS_COMPLETE or ready.data is None:
        return replace(ready, summary={**ready.summary, "until": options.until})

    def work(clip: _Clip) -> None:
        from msconvert.emulator.learn.runs import needs_solutions, train_policy

        clip.stage = "train"
        reference = ready.reference()
        model = model_for(options.model)
        solutions = None
        if needs_solutions(options.train_config()):
            clip.stage = "warm-start"
            activation, excitation = warm_start_cached(source, options, reference, model)
            solutions = ([activation], [excitation])
            clip.stage = "train"
        if options.solutions > 1:
            _rl_solutions(clip, source, reference, model)
            return
        with policy_folder(options, source.clip_id) as out:
            trainer, policy = train_policy(
                [reference], model, options.train_config(), out, solutions=solutions
            )
        rollouts = None
        if options.reaches("emulate"):
            clip.stage = "emulate"
            rollouts = _emulations(trainer, policy, reference, 0, options.stochastic)
        clip.add_policy(policy, rollouts)

    clip = _Clip.resumed(ready, source, options)
    clip.summary.update(source=source.relpath, until=options.until)
    return _run(clip, options.until, work)


def _rl_solutions(clip: _Clip, source: ClipSource, reference: Reference, model: Any) -> None:
    """`--method rl --solutions K`: the controller's K solutions of the clip, then policy j
    trained from solution j's controller (DAgger and the residual on its run) with seed + j, and
    each policy's emulation on a leading `solution` dim. Policy 0 is the usual one, bit for bit."""
    from msconvert.emulator.learn.runs import emulate_policy, train_policy

    options = clip.options
    clip.stage = "track-solutions"
    wanted = SolutionsConfig(count=options.solutions, seed=options.seed)
    # The teachers run as every track warm start's do (TEACHER: once per frame, as the policy
    # acts; a loaded policy's controller is made again the same way).
    found = track_solutions(reference, model, TEACHER, solutions=wanted)
    policies, emulations, sampled = [], [], []
    for j in range(options.solutions):
        clip.stage = "train" if j == 0 else f"train solution {j}"
        config = replace(
            options.train_config(), seed=options.seed + j, solution=j, solutions=wanted
        )
        with policy_folder(options, solution_folder(source.clip_id, j)) as out:
            trainer, policy = train_policy(
                [reference], model, config, out, muscle_costs=[found.cost(j)]
            )
        policies.append(policy)
        if options.reaches("emulate"):
            clip.stage = "emulate" if j == 0 else f"emulate solution {j}"
            if j == 0:
                first, sampled = _emulations(trainer, policy, reference, 0, options.stochastic)
                emulations.append(first)
            else:
                emulations.append(emulate_policy(trainer, policy, reference, 0))
    clip.add_policy(policies[0], None)
    clip.attrs.update(
        solution_checkpoints=[options.checkpoint_location(p.checkpoint_dir) for p in policies],
        solution_seeds=[options.seed + j for j in range(options.solutions)],
    )
    for j, policy in enumerate(policies[1:], start=1):
        clip.metrics[f"{solution_prefix(j)}train.env_steps"] = float(policy.step)
        minutes = float(policy.meta.get("seconds", 0.0)) / 60.0
        clip.metrics[f"{solution_prefix(j)}train.minutes"] = minutes
    # How far the teachers' own runs differ: the policies' diversity is read against it.
    clip.metrics.update(
        {f"teacher_{k}": v for k, v in found.metrics.items() if k.startswith("diversity.")}
    )
    if not emulations:
        return
    parts = [e.to_dataset() for e in emulations]
    clip.parts.append(solutions_dataset(parts, emulations, found))
    clip.metrics.update(solutions_metrics([e.metrics for e in emulations], emulations))
    if sampled:
        clip.parts.append(stochastic_dataset(sampled))
        clip.metrics.update(stochastic_metrics(sampled))


def replay_policy(source: ClipSource, options: PipelineOptions, checkpoint_dir: str) -> ClipOutcome:
    """Ingest and retarget a motion file, then emulate it with a saved policy (no training)."""
    options = replace(options, until="emulate", method="rl")

    def work(clip: _Clip) -> None:
        from msconvert.emulator.learn.checkpoint import read_meta
        from msconvert.emulator.learn.runs import load_policy

        motion, skeleton = _ingest(clip)
        clip.stage = "retarget"
        model = model_for(options.model)
        meta, _ = read_meta(checkpoint_dir)
        fps = float(meta["config"]["env"]["control_hz"])
        reference = _retarget(clip, motion, skeleton, fps)
        clip.stage = "emulate"
        trainer, policy = load_policy(checkpoint_dir, reference, model, model_sha256(model))
        clip.add_policy(policy, _emulations(trainer, policy, reference, 0, options.stochastic))

    return _run(_clip(source, options), "emulate", work)


@dataclass
class BatchReport:
    """Counts and timings of one batch run."""

    total: int = 0
    completed: int = 0
    failed: int = 0
    skipped: int = 0
    frames: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)


def clips_to_skip(catalog: Catalog, until: str, method: str = "rl") -> set[str]:
    """Clips a resumed run need not redo: complete, through at least the requested stage, and
    (past retargeting, where methods differ) made by the same method."""
    states = catalog.rebuild_index()  # the index may be stale after a kill; groups are the truth
    need = STAGES.index(until)
    done = set()
    for entry in catalog.clips(status=STATUS_COMPLETE):
        if states.get(entry.clip) != STATUS_COMPLETE:
            continue
        reached = entry.summary.get("until")
        same_method = entry.summary.get("method", "rl") == method or need <= STAGES.index(
            "retarget"
        )
        if reached in STAGES and STAGES.index(reached) >= need and same_method:
            done.add(entry.clip)
    return done


def run_batch(
    sources: Sequence[ClipSource],
    catalog: Catalog,
    options: PipelineOptions,
    *,
    workers: int = 1,
    resume: bool = False,
    on_outcome: Callable[[ClipOutcome], None] | None = None,
    on_skip: Callable[[int], None] | None = None,
    on_node: Callable[[str], None] | None = None,
    ray: RayCluster | None = None,
) -> BatchReport:
    """Convert every source into the catalog; failures are recorded and the batch goes on.

    The run holds the catalog's writer lease throughout (CatalogLockedError when another run
    holds it). Clips run in a local process pool of `workers` (this process writes them), or,
    with `ray` (a connected RayCluster), as Ray tasks that write their clip straight into the
    catalog: this process then keeps only the index. Under Ray, `--policy multi-clip` runs as
    tasks too (retargeting per clip, the shared training as one task, then each clip's fine-tune
    and emulation; see `_multi_clip_on_ray`), and this process writes its clips. on_node(label)
    is called with the machine each finished clip ran on.
    """
    check_until(options.until, options.method)
    check_solutions(
        options.solutions, options.method, options.policy, options.warm_start, options.residual
    )
    report = BatchReport(total=len(sources))
    with catalog.lease():
        start = time.perf_counter()
        todo: Iterable[ClipSource] = sources
        if resume:
            skip = clips_to_skip(catalog, options.until, options.method)
            todo = [s for s in sources if s.clip_id not in skip]
            report.skipped = len(sources) - len(todo)
            if on_skip is not None:
                on_skip(report.skipped)
        cached_stages = options.method == "rl" and options.reaches("train")
        multi = cached_stages and options.policy == "multi-clip"
        inner: Iterator[Any]
        if multi and ray is not None:
            inner = _multi_clip_on_ray(ray, list(todo), options)
        elif multi:
            inner = _multi_clip(list(todo), options, workers)
        elif ray is not None:
            inner = _on_ray(ray, todo, catalog, options)
        else:
            inner = map_unordered(run_clip, todo, options, workers=workers, on_crash=_crashed)
        here = this_node()
        placed: Iterator[tuple[ClipOutcome, str]] = (
            inner if ray is not None else ((o, here) for o in inner)
        )
        try:
            for outcome, node in placed:
                catalog.check_lease()  # a run that lost its lease stops here
                if ray is not None and not multi and node != _NOWHERE:
                    outcome = _index_written(catalog, outcome)  # the worker wrote it
                else:
                    try:
                        write_outcome(catalog, outcome)
                    except CatalogLockedError:
                        raise
                    except CatalogError as exc:  # e.g. the id clashes with an earlier clip
                        outcome = replace(
                            outcome,
                            status=STATUS_FAILED,
                            stage="catalog",
                            reason=str(exc),
                            data=None,
                        )
                    if outcome.status == STATUS_COMPLETE and cached_stages:
                        _forget_stages(options, outcome.clip_id)  # the catalog holds the clip
                if outcome.status == STATUS_COMPLETE:
                    report.completed += 1
                    report.frames += outcome.frames
                else:
                    report.failed += 1
                    report.failures.append((outcome.clip_id, outcome.reason))
                if on_node is not None:
                    on_node(node)
                if on_outcome is not None:
                    on_outcome(outcome)
        finally:
            close = getattr(inner, "close", None)
            if close is not None:
                close()  # stops the pool, or cancels the Ray tasks still in flight
            catalog.flush_index()
            report.seconds = time.perf_counter() - start
    return report


_NOWHERE = "?"  # the node of an outcome that no worker returned (its worker or node died)


@dataclass(frozen=True)
class RemoteJob:
    """What a Ray task needs besides its clip: the options, and where and for whom to write."""

    options: PipelineOptions
    url: str
    lease: str | None
    storage_options: dict[str, Any] | None = None
    cwd: str | None = None  # the driver's: relative paths mean the same on its workers


_GIB = 1024**3
# What one clip task declares to Ray besides its CPUs. Measured for MyoFullBody: a worker that
# retargets and solves static optimization peaks at 0.7 GB (demo clips); 2 GiB leaves room for
# long clips (a 2-minute clip's muscle arrays are ~0.1 GB each). Training adds its replay
# buffer on a CPU: observations of ~2,765 floats (MyoFullBody), twice (obs, next obs), float32.
_CLIP_MEMORY = 2 * _GIB
_SMALL_MODEL_MEMORY = 1 * _GIB
_OBS_FLOATS = 2_765


def ray_task_needs(options: PipelineOptions) -> tuple[float, int]:
    """(GPUs, memory in bytes) that one clip's Ray task declares: a GPU for training with the
    `gpu` preset (or an MJX backend), memory from the model and the replay buffer."""
    memory = _CLIP_MEMORY if options.model is None else _SMALL_MODEL_MEMORY
    gpus = 0.0
    if options.method == "rl" and options.reaches("train"):
        preset = PRESETS[options.preset]
        if (options.backend or preset.backend) == "mjx" or preset.gpu_agent:
            gpus = 1.0  # and the replay buffer lives in the accelerator's memory
        else:
            memory += preset.replay_size * _OBS_FLOATS * 4 * 2
    return gpus, int(memory)


def _on_ray(
    ray: RayCluster, todo: Iterable[ClipSource], catalog: Catalog, options: PipelineOptions
) -> Iterator[tuple[ClipOutcome, str]]:
    """Each clip as a Ray task that converts it and writes it into the catalog itself."""
    cpus = max(1, int(ray.settings.cpus))
    options = replace(options, static_opt_processes=cpus)
    url = catalog.url if "://" in catalog.url else str(Path(catalog.url).absolute())
    job = RemoteJob(options, url, catalog.lease_token, catalog.storage_options, os.getcwd())
    return ray.map_unordered(
        convert_into_catalog,
        todo,
        job,
        on_crash=_crashed,
        name=lambda s: f"msconvert:{s.clip_id}",
        fatal=(CatalogLockedError,),
    )


def convert_into_catalog(source: ClipSource, job: RemoteJob) -> ClipOutcome:
    """A worker's whole share of one clip: run it, write it straight into the catalog (status
    last, as the driver would), and return its outcome without the arrays.

    The worker runs in the driver's working directory when this machine has it (the same
    machine, or a shared filesystem), so relative paths (sources, --model) mean what they meant
    to the driver and are recorded alike; on other machines give absolute paths."""
    if job.cwd and os.getcwd() != job.cwd and os.path.isdir(job.cwd):
        os.chdir(job.cwd)  # a Ray worker runs one task at a time
    outcome = run_clip(source, job.options)
    writer = _clip_writer(job.url, job.lease, _json_key(job.storage_options))
    try:
        write_outcome(writer, outcome)
    except CatalogLockedError:
        raise  # the run lost its lease: nothing more may be written
    except CatalogError as exc:
        outcome = replace(
            outcome, status=STATUS_FAILED, stage="catalog", reason=str(exc), data=None
        )
        write_outcome(writer, outcome)
    if outcome.status == STATUS_COMPLETE and job.options.method == "rl":
        _forget_stages(job.options, outcome.clip_id)
    return replace(outcome, data=None)


def _json_key(value: Any) -> str:
    import json

    return json.dumps(value, sort_keys=True)


@functools.lru_cache(maxsize=4)
def _clip_writer(url: str, lease: str | None, storage_options: str) -> ClipWriter:
    """One writer per catalog and run in each worker process (workers convert many clips)."""
    import json

    return Catalog.clip_writer(url, lease=lease, storage_options=json.loads(storage_options))


def _index_written(catalog: Catalog, outcome: ClipOutcome) -> ClipOutcome:
    """The index row of a clip a worker wrote; a clip the worker reported but the store lacks
    becomes a failure."""
    try:
        entry = catalog.index_clip(outcome.clip_id)
    except CatalogError as exc:
        entry, why = None, str(exc)
    else:
        why = "the worker reported the clip written, but its group is not on the store"
    if entry is None:
        outcome = replace(outcome, status=STATUS_FAILED, stage="catalog", reason=why)
        write_outcome(catalog, outcome)
    return outcome


def _forget_stages(options: PipelineOptions, clip_id: str) -> None:
    """Remove a finished clip's stage-cache entry (the catalog holds the clip now)."""
    if options.local_checkpoints:
        done = stage_cache.entry(options.local_checkpoints, clip_id)
        if done is not None:
            stage_cache.remove(done)


def _multi_clip(
    sources: list[ClipSource], options: PipelineOptions, workers: int
) -> Iterator[ClipOutcome]:
    """One policy for all clips: retarget every clip, train once, then emulate each clip
    (after fine-tuning a copy of the shared policy on it, with --finetune-steps)."""
    ready: list[ClipOutcome] = []
    by_id = {s.clip_id: s for s in sources}
    for outcome in map_unordered(retargeted, sources, options, workers=workers, on_crash=_crashed):
        if outcome.status == STATUS_COMPLETE:
            ready.append(outcome)
        else:
            yield replace(outcome, summary={**outcome.summary, "until": options.until})
    if not ready:
        return
    ready.sort(key=lambda o: o.clip_id)
    name = _multi_clip_name(ready)
    model = model_for(options.model)
    pairs = [(by_id[o.clip_id], o) for o in ready]
    shared: dict[str, Any] = {}

    def train_shared(clip: _Clip) -> None:
        shared.update(_train_shared(clip, options, pairs, name, model))

    group = _run(_Clip(name, None, options), "train", train_shared)
    if group.status != STATUS_COMPLETE:
        for o in ready:
            yield _failure(o.clip_id, group.stage, group.reason, time.perf_counter(), o.summary)
        return
    for c, (source, outcome) in enumerate(pairs):

        def per_clip(clip: _Clip, c: int = c) -> None:
            sol = shared["solutions"]
            solution = (sol[0][c], sol[1][c]) if sol else None
            trainer, base, start = shared["trainer"], shared["policy"], shared["start"]
            reference = shared["refs"][c]
            _finish_shared(clip, name, reference, model, trainer, base, c, start, solution)

        yield _run(_Clip.resumed(outcome, source, options), options.until, per_clip)


def _multi_clip_name(ready: Sequence[ClipOutcome]) -> str:
    """The shared policy's name (its checkpoint folder): a digest of its clip ids."""
    digest = hashlib.sha256("\n".join(o.clip_id for o in ready).encode()).hexdigest()[:12]
    return f"multi-clip-{digest}"


def _train_shared(
    clip: _Clip,
    options: PipelineOptions,
    pairs: Sequence[tuple[ClipSource, ClipOutcome]],
    name: str,
    model: Any,
) -> dict[str, Any]:
    """Train the shared policy on every retargeted clip (warm starts from the stage cache); its
    trainer, policy, references, warm starts, and the state fine-tunes start from."""
    from msconvert.emulator.learn.runs import needs_solutions, shared_state, train_policy

    clip.stage = "train"
    refs = [o.reference() for _, o in pairs]
    solutions: Solutions | None = None
    if needs_solutions(options.train_config()):
        got = [
            warm_start_cached(s, options, r, model) for (s, _), r in zip(pairs, refs, strict=True)
        ]
        solutions = ([a for a, _ in got], [e for _, e in got])
    with policy_folder(options, name) as out:
        trainer, policy = train_policy(
            refs, model, options.train_config(), out, solutions=solutions
        )
    start = shared_state(trainer, policy) if options.finetune_steps > 0 else None
    return dict(refs=refs, solutions=solutions, trainer=trainer, policy=policy, start=start)


def _finish_shared(
    clip: _Clip,
    name: str,
    reference: Reference,
    model: Any,
    trainer: Trainer,
    base: Policy,
    index: int,
    start: Any,
    solution: tuple[np.ndarray, np.ndarray] | None,
) -> None:
    """One clip of a multi-clip run once the shared policy is trained: its fine-tune (when
    `start`, the shared state, is given), its emulation, and what the catalog records of both.
    `index` is the clip's place among `trainer`'s clips."""
    from msconvert.emulator.learn.runs import finetune_policy

    options = clip.options
    clip.stage = "train"
    policy = base
    if start is not None:
        finetune = replace(
            options.train_config(),
            budget_steps=options.finetune_steps,
            budget_minutes=options.budget_minutes,  # the preset's minutes apply to the shared run
        )
        with policy_folder(options, f"{name}-finetune/{clip.clip_id}") as out:
            trainer, policy = finetune_policy(start, reference, model, finetune, out, solution)
        index = 0
    rollouts = None
    if options.reaches("emulate"):
        clip.stage = "emulate"
        rollouts = _emulations(trainer, policy, reference, index, options.stochastic)
    clip.add_policy(policy, rollouts)
    clip.summary.update(until=options.until, policy="multi-clip")
    if policy is not base:  # fine-tuned: count the shared training too
        clip.metrics["train.finetune_env_steps"] = float(policy.step)
        clip.metrics["train.env_steps"] = float(base.step + policy.step)
        clip.metrics["train.minutes"] += float(base.meta.get("seconds", 0.0)) / 60.0
        clip.attrs.update(finetuned_from=options.checkpoint_location(base.checkpoint_dir))


@dataclass(frozen=True)
class SharedPolicyJob:
    """What the Ray tasks of a multi-clip run need besides their clips."""

    options: PipelineOptions
    name: str  # the shared policy's
    cwd: str | None = None  # the driver's: relative paths mean the same on its workers


def _multi_clip_on_ray(
    ray: RayCluster, sources: list[ClipSource], options: PipelineOptions
) -> Iterator[tuple[ClipOutcome, str]]:
    """--policy multi-clip on Ray: each clip's retargeting is a task; the shared training is one
    task (with the resources of a clip task: the GPU with --preset gpu); then each clip's
    fine-tune (--finetune-steps) and emulation is a task of its own, which loads the shared
    policy from its checkpoint: on the store beside the catalog, or in a folder every node sees.
    The outcomes come back here to be written, as the local path writes them."""
    by_id = {s.clip_id: s for s in sources}
    ready: list[ClipOutcome] = []
    for outcome, node in ray.map_unordered(
        retargeted, sources, options, on_crash=_crashed, name=lambda s: f"msconvert:{s.clip_id}"
    ):
        if outcome.status == STATUS_COMPLETE:
            ready.append(outcome)
        else:
            yield replace(outcome, summary={**outcome.summary, "until": options.until}), node
    ready.sort(key=lambda o: o.clip_id)
    yield from shared_policy_on_ray(ray, [(by_id[o.clip_id], o) for o in ready], options)


def shared_policy_on_ray(
    ray: RayCluster, pairs: Sequence[tuple[ClipSource, ClipOutcome]], options: PipelineOptions
) -> Iterator[tuple[ClipOutcome, str]]:
    """The shared training of retargeted clips as one Ray task, then each clip's fine-tune and
    emulation as a task; (outcome, node) per clip."""
    if not pairs:
        return
    name = _multi_clip_name([o for _, o in pairs])
    job = SharedPolicyJob(options, name, os.getcwd())

    def lost(_pairs: object, reason: str) -> ClipOutcome:
        return _failure(name, "train", reason, time.perf_counter(), {})

    ((group, _),) = ray.map_unordered(
        train_shared_policy, [pairs], job, on_crash=lost, name=lambda _p: f"msconvert:{name}"
    )
    if group.status != STATUS_COMPLETE:
        for _, o in pairs:
            failed = _failure(o.clip_id, group.stage, group.reason, time.perf_counter(), o.summary)
            yield failed, _NOWHERE
        return
    yield from ray.map_unordered(
        finish_shared_clip,
        pairs,
        job,
        on_crash=lambda pair, reason: _crashed(pair[0], reason),
        name=lambda pair: f"msconvert:{pair[0].clip_id}",
    )


def _in_driver_dir(cwd: str | None) -> None:
    """Run in the driver's working directory when this machine has it (the same machine, or a
    shared filesystem), so relative paths mean what they meant to the driver."""
    if cwd and os.getcwd() != cwd and os.path.isdir(cwd):
        os.chdir(cwd)  # a Ray worker runs one task at a time


def train_shared_policy(
    pairs: Sequence[tuple[ClipSource, ClipOutcome]], job: SharedPolicyJob
) -> ClipOutcome:
    """A Ray task: train a multi-clip run's shared policy into its checkpoint folder; the
    outcome of the training (no arrays)."""
    _in_driver_dir(job.cwd)
    options = job.options
    model = model_for(options.model)

    def work(clip: _Clip) -> None:
        _train_shared(clip, options, pairs, job.name, model)

    return replace(_run(_Clip(job.name, None, options), "train", work), data=None)


def finish_shared_clip(pair: tuple[ClipSource, ClipOutcome], job: SharedPolicyJob) -> ClipOutcome:
    """A Ray task: one clip of a multi-clip run after the shared training: the shared policy
    loaded from its checkpoint (fetched from the store), fine-tuned on the clip with
    --finetune-steps, and emulated."""
    from msconvert.emulator.learn.runs import load_policy, needs_solutions, shared_state

    _in_driver_dir(job.cwd)
    source, ready = pair
    options = job.options

    def work(clip: _Clip) -> None:
        clip.stage = "train"
        model = model_for(options.model)
        reference = ready.reference()
        folder = _shared_policy_folder(options, job.name)
        # A trainer shaped like the shared one, on this clip: the checkpoint's arrays fit it.
        trainer, base = load_policy(folder, reference, model, model_sha256(model))
        start = shared_state(trainer, base) if options.finetune_steps > 0 else None
        solution = None
        if start is not None and needs_solutions(options.train_config()):
            solution = warm_start_cached(source, options, reference, model)
        _finish_shared(clip, job.name, reference, model, trainer, base, 0, start, solution)

    return _run(_Clip.resumed(ready, source, options), options.until, work)


def _shared_policy_folder(options: PipelineOptions, name: str) -> Path:
    """The local folder of a trained policy: fetched from the store when it is there."""
    local = options.checkpoint_dir(name)
    if checkpoint_store.is_remote(options.checkpoints):
        assert options.checkpoints is not None
        checkpoint_store.fetch(f"{options.checkpoints.rstrip('/')}/{name}", local)
    return local


def _crashed(source: ClipSource, reason: str) -> ClipOutcome:
    """The outcome of a clip whose worker process died (a crash in native code, say)."""
    return ClipOutcome(
        clip_id=source.clip_id,
        status=STATUS_FAILED,
        stage="worker",
        reason=reason,
        summary={"source": source.relpath},
    )


def write_outcome(catalog: Catalog, outcome: ClipOutcome) -> None:
    """Write a clip's outcome: the complete clip, or its failure."""
    if outcome.status == STATUS_COMPLETE:
        assert outcome.data is not None
        catalog.write_clip(
            outcome.clip_id,
            outcome.data,
            attrs=outcome.attrs,
            metrics=outcome.metrics,
            summary=outcome.summary,
        )
    else:
        catalog.write_failure(
            outcome.clip_id, reason=outcome.reason, stage=outcome.stage, summary=outcome.summary
        )
