"""The per-clip pipeline (a function of one source file) and the batch that runs it over a corpus.

Each stage is a function of the previous stage's value; the batch only schedules, writes and
reports. Workers compute, the calling process is the catalog's single writer.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from msconvert import __version__
from msconvert.catalog import Catalog, CatalogError
from msconvert.catalog.records import (
    emulation_dataset,
    reference_dataset,
    reference_mapping,
    source_dataset,
    static_opt_dataset,
    stochastic_dataset,
    stochastic_metrics,
)
from msconvert.catalog.schema import DIM_TIME, STATUS_COMPLETE, STATUS_FAILED
from msconvert.convert import stage_cache
from msconvert.convert.executors import map_unordered
from msconvert.convert.presets import PRESETS
from msconvert.convert.training import warm_start_solutions
from msconvert.datasets.amass import ClipSource, read_amass
from msconvert.datasets.kinematics import (
    BodyModelError,
    Skeleton,
    find_body_model_file,
    forward_kinematics,
    load_body_model,
    mean_skeleton,
)
from msconvert.datasets.motion import Motion, MotionError
from msconvert.datasets.resample import resample
from msconvert.emulator.emulate import Emulation, emulate
from msconvert.emulator.learn.checkpoint import CheckpointError, Policy, read_meta, restore
from msconvert.emulator.learn.env import EnvConfig
from msconvert.emulator.learn.reward import AdversarialConfig
from msconvert.emulator.learn.train import (
    TrainConfig,
    Trainer,
    TrainError,
    agent_module,
    make_trainer,
    selected,
    train,
)
from msconvert.emulator.model import ModelError, load_model, model_sha256
from msconvert.emulator.muscles.static_opt import (
    StaticOptError,
    StaticOptResult,
    static_optimization,
)
from msconvert.emulator.retarget import (
    CorrespondenceError,
    Reference,
    RetargetConfig,
    RetargetError,
    retarget,
)

STAGES: tuple[str, ...] = ("ingest", "retarget", "train", "emulate")
# How the muscle activity is found: a learned policy per clip (the product), or inverse dynamics
# with static optimization (the fast classic answer, no training: its `emulate` is per frame).
METHODS: tuple[str, ...] = ("rl", "static-opt")
# Stages that exist today, per method; the others are refused with a clear message, never faked.
IMPLEMENTED: dict[str, tuple[str, ...]] = {
    "rl": ("ingest", "retarget", "train", "emulate"),
    "static-opt": ("ingest", "retarget", "emulate"),
}
IMPLEMENTED_STAGES: tuple[str, ...] = IMPLEMENTED["rl"]


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
            "static optimization trains nothing"
            if method == "static-opt" and until == "train"
            else f"it is not available yet in msconvert {__version__}"
        )
        raise StageNotAvailableError(
            f"stage '{until}' with --method {method}: {why}; "
            f"available: {', '.join(available)} (use --until {available[-1]})"
        )


def default_until(method: str) -> str:
    """The last stage the method implements."""
    return IMPLEMENTED[method][-1]


@dataclass(frozen=True)
class PipelineOptions:
    """Everything a worker needs to convert one clip; picklable."""

    until: str = IMPLEMENTED_STAGES[-1]
    source_fps: float | None = None  # resample the source to this rate; None keeps the file's
    body_models: str | None = None  # directory of licensed SMPL-H/SMPL-X model files
    allow_pickle_body_models: bool = False
    model: str | None = None  # MJCF path; None = MyoFullBody
    retarget_config: str | None = None  # correspondence file; None = the model's packaged one
    control_hz: float = 50.0  # rate of the reference (and later of the policy)
    method: str = "rl"
    static_opt_cost: str = "act2"  # 'act2' (Σ act²) or 'act3' (Σ act³)
    static_opt_processes: int = 1  # forked processes per clip (only when clips run one at a time)
    # The rl method: a named budget (convert/presets.py), and what may override it.
    preset: str = "demo"
    agent: str = "flow"
    reward: str = "adversarial"
    warm_start: bool = True
    policy: str = "per-clip"  # or 'multi-clip': one policy for all the clips of the run
    checkpoints: str | None = None  # directory of the policies; None: beside a local catalog
    seed: int = 0
    budget_steps: int | None = None
    budget_minutes: float | None = None
    n_envs: int | None = None
    backend: str | None = None
    stochastic: int = 0  # rollouts with sampled actions, beside the deterministic emulation
    finetune_steps: int = 0  # multi-clip: env steps of per-clip fine-tuning of the shared policy
    checkpoint_every_s: float = 120.0  # training state saved this often (and at the end)

    def train_config(self) -> TrainConfig:
        """The trainer's settings: the preset, then the explicit overrides."""
        preset = PRESETS[self.preset]
        module = agent_module(self.agent)
        return TrainConfig(
            agent=self.agent,
            reward=self.reward,
            warm_start=self.warm_start,
            backend=self.backend or preset.backend,
            n_envs=self.n_envs or preset.n_envs,
            budget_steps=self.budget_steps or preset.budget_steps,
            budget_minutes=self.budget_minutes if self.budget_minutes else preset.budget_minutes,
            seed=self.seed,
            checkpoint_every_s=self.checkpoint_every_s,
            bc_steps=preset.bc_steps,
            evaluations=preset.evaluations,
            env=EnvConfig(control_hz=self.control_hz),
            agent_config=self._agent_config(module, preset),
        )

    @staticmethod
    def _agent_config(module: Any, preset: Any) -> Any:
        config = module.Config.gpu() if preset.gpu_agent else module.Config()
        if hasattr(config, "replay_size"):
            config = replace(config, replay_size=preset.replay_size)
        return config

    def checkpoint_dir(self, name: str) -> Path:
        if self.checkpoints is None:
            raise StageNotAvailableError("no checkpoint directory (pass --checkpoints DIR)")
        return Path(self.checkpoints) / name

    @property
    def body_model_mode(self) -> str:
        return "body-model" if self.body_models else "mean-skeleton"

    def reaches(self, stage: str) -> bool:
        """Whether this run goes as far as `stage`."""
        return STAGES.index(self.until) >= STAGES.index(stage)

    def retarget_settings(self) -> RetargetConfig:
        return RetargetConfig(fps=self.control_hz, correspondence=self.retarget_config)


@functools.cache
def model_for(path: str | None):  # noqa: ANN201 - mujoco.MjModel
    """The model, compiled once per process (workers convert many clips with it)."""
    return load_model(path)


@dataclass
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


def skeleton_for(motion: Motion, options: PipelineOptions) -> Skeleton:
    """The exact skeleton from the user's model files, or the built-in mean shape."""
    if not options.body_models:
        return mean_skeleton()
    path = find_body_model_file(
        options.body_models, motion.body_model, motion.gender, options.allow_pickle_body_models
    )
    return load_body_model(str(path), options.allow_pickle_body_models).skeleton(motion.betas)


def ingest(source: ClipSource, options: PipelineOptions) -> tuple[Motion, Skeleton, xr.Dataset]:
    """Stage 1: file → validated `Motion` (optionally resampled) and its world joints."""
    motion = read_amass(source.path, relpath=source.relpath, clip_id=source.clip_id)
    if options.source_fps is not None:
        motion = resample(motion, options.source_fps)
    skeleton = skeleton_for(motion, options)
    return motion, skeleton, source_dataset(motion, forward_kinematics(motion, skeleton))


def run_clip(source: ClipSource, options: PipelineOptions) -> ClipOutcome:
    """Run the stages up to `options.until` on one clip; never raises for a bad clip."""
    if options.method == "rl" and options.reaches("train"):
        return _run_rl_clip(source, options)
    start = time.perf_counter()
    stage = "ingest"
    base = {"source": source.relpath, "until": options.until}
    try:
        motion, skeleton, data = ingest(source, options)
        parts = [data]
        reference = None
        solution = None
        if options.reaches("retarget"):
            stage = "retarget"
            model = model_for(options.model)
            reference = retarget(motion, model, options.retarget_settings(), skeleton)
            parts.append(reference_dataset(reference))
        if options.method == "static-opt" and options.reaches("emulate"):
            stage = "static-opt"
            solution = static_optimization(
                reference,
                model,
                cost=options.static_opt_cost,
                processes=options.static_opt_processes,
            )
            parts.append(static_opt_dataset(solution, reference.times))
    except (
        MotionError,
        BodyModelError,
        RetargetError,
        CorrespondenceError,
        ModelError,
        StaticOptError,
        TrainError,
        CheckpointError,
    ) as exc:
        return _failure(source, stage, str(exc), start, base)
    except Exception as exc:  # a bug must cost one clip, not the batch; say it is ours
        return _failure(source, stage, f"internal error: {type(exc).__name__}: {exc}", start, base)
    attrs, metrics, summary = _describe(motion, skeleton, options, reference, solution)
    return ClipOutcome(
        clip_id=source.clip_id,
        status=STATUS_COMPLETE,
        stage=options.until,
        data=xr.merge(parts, compat="no_conflicts", join="exact"),
        attrs=attrs,
        metrics=metrics,
        summary={**base, **summary},
        seconds=time.perf_counter() - start,
        frames=motion.n_frames,
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
    source: ClipSource, options: PipelineOptions, reference: Any, model: Any
) -> tuple[np.ndarray, np.ndarray]:
    """The clip's static-optimization warm start, from the stage cache or solved (and cached)."""
    slot = _cache_slot(source, options)
    hit = stage_cache.load_solution(*slot) if slot is not None else None
    if hit is not None:
        return hit
    # One process: forking after JAX has started threads can deadlock.
    (activation,), (excitation,) = warm_start_solutions([reference], model, 1)
    if slot is not None:
        stage_cache.save_solution(slot[0], activation, excitation, slot[1])
    return activation, excitation


def _cache_slot(source: ClipSource, options: PipelineOptions) -> tuple[Path, str] | None:
    """The clip's stage-cache entry and key; None when it cannot be cached."""
    if not options.checkpoints:
        return None
    path = stage_cache.entry(options.checkpoints, source.clip_id)
    cache_key = stage_cache.key(source, options)
    return None if path is None or cache_key is None else (path, cache_key)


def _rl_stages(options: PipelineOptions) -> list[str]:
    return [st for st in IMPLEMENTED["rl"] if options.reaches(st)]


def _run_rl_clip(source: ClipSource, options: PipelineOptions) -> ClipOutcome:
    """A per-clip policy: retarget (cached), warm start (cached), train (checkpointed), then
    emulate; a kill anywhere costs only the work since the last of those."""
    start = time.perf_counter()
    ready = retargeted(source, options)
    if ready.status != STATUS_COMPLETE or ready.data is None:
        return replace(ready, summary={**ready.summary, "until": options.until})
    stage = "train"
    base = {"source": source.relpath, "until": options.until}
    try:
        ref = _StoredReference(ready.data, source.clip_id, ready.attrs)
        model = model_for(options.model)
        solutions = None
        if options.warm_start:
            stage = "warm-start"
            activation, excitation = warm_start_cached(source, options, ref.mapping, model)
            solutions = ([activation], [excitation])
            stage = "train"
        trainer, policy = train_policy([ref.mapping], model, options, source.clip_id, solutions)
        parts, emulation, extra_metrics = [ready.data], None, {}
        if options.reaches("emulate"):
            stage = "emulate"
            emulation, emulated, extra_metrics = emulation_parts(
                trainer, policy, ref, 0, options.stochastic
            )
            parts.extend(emulated)
        data = xr.merge(parts, compat="no_conflicts", join="exact")
    except (StaticOptError, TrainError, CheckpointError, ModelError) as exc:
        return _failure(source, stage, str(exc), start, base)
    except Exception as exc:  # a bug must cost one clip, not the batch; say it is ours
        return _failure(source, stage, f"internal error: {type(exc).__name__}: {exc}", start, base)
    attrs, metrics = dict(ready.attrs), dict(ready.metrics)
    attrs.update(method="rl", stages=_rl_stages(options))
    _describe_policy(attrs, metrics, policy, emulation)
    metrics.update(extra_metrics)
    return ClipOutcome(
        clip_id=source.clip_id,
        status=STATUS_COMPLETE,
        stage=options.until,
        data=data,
        attrs=attrs,
        metrics=metrics,
        summary={**ready.summary, **base},
        seconds=time.perf_counter() - start,
        frames=ready.frames,
    )


def _describe(
    motion: Motion,
    skeleton: Skeleton,
    options: PipelineOptions,
    reference: Reference | None,
    solution: StaticOptResult | None = None,
) -> tuple[dict[str, Any], dict[str, float], dict[str, Any]]:
    """A clip's attributes (provenance, settings), metrics and index summary."""
    prov = motion.provenance
    attrs: dict[str, Any] = {
        "source_path": prov.path,
        "source_relpath": prov.relpath,
        "source_size": prov.size,
        "source_sha256": prov.sha256,
        "source_fps": float(motion.fps),
        "body_model": motion.body_model,
        "gender": motion.gender,
        "betas": [float(b) for b in motion.betas],
        "body_model_mode": skeleton.mode,
        "skeleton": skeleton.name,
        "has_hand_data": motion.has_hand_data,
        "stages": [st for st in IMPLEMENTED[options.method] if options.reaches(st)],
        "method": options.method,
        "software_version": __version__,
    }
    metrics = {
        "source.frames": float(motion.n_frames),
        "source.fps": float(motion.fps),
        "source.duration_s": float(motion.duration_s),
    }
    summary: dict[str, Any] = {
        "frames": motion.n_frames,
        "fps": float(motion.fps),
        "body_model_mode": skeleton.mode,
    }
    if reference is not None:
        attrs.update(
            model_name=reference.model_name,
            model_sha256=reference.model_sha256,
            control_fps=float(reference.fps),
            retarget_correspondence=options.retarget_config or "packaged",
            retarget_filled_frames=int(reference.filled_frames),
            retarget_notes=dict(reference.notes),
        )
        metrics.update(reference.metrics)
        summary.update(model=reference.model_name, control_fps=float(reference.fps))
    if solution is not None:
        attrs.update(
            method_label="inverse dynamics + static optimization (no policy; per-frame solution)",
            static_opt_cost=solution.cost,
            static_opt_contacts=solution.contacts,
            static_opt_notes=dict(solution.notes),
            body_weight_n=float(solution.body_weight),
        )
        metrics.update(solution.metrics)
    summary["method"] = options.method
    return attrs, metrics, summary


def train_policy(
    references: Sequence[Reference],
    model: Any,
    options: PipelineOptions,
    name: str,
    solutions: tuple[list[np.ndarray], list[np.ndarray]] | None = None,
) -> tuple[Trainer, Policy]:
    """Warm start (static optimization) and train one policy for these references; a policy
    already trained to its budget in the checkpoint directory is reused, a cut one resumed.
    solutions: the references' static-optimization (activations, excitations), if known."""
    config = options.train_config()
    activations = excitations = None
    if config.warm_start:
        # One process: forking after JAX has started threads can deadlock (and a clip's
        # static optimization takes seconds next to minutes of training).
        activations, excitations = solutions or warm_start_solutions(references, model, 1)
    trainer = make_trainer(
        model, references, config, activations=activations, excitations=excitations
    )
    policy = train(trainer, options.checkpoint_dir(name), resume=True)
    return trainer, policy


def finetune_policy(
    start: Any,
    reference: Reference,
    model: Any,
    options: PipelineOptions,
    name: str,
    solution: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[Trainer, Policy]:
    """A copy of the shared (multi-clip) policy trained on one clip for options.finetune_steps.

    start: the shared run's restored training state. The copy takes its networks, optimizer
    states, replay, normalizer and discriminator, with fresh environments on this clip; its own
    checkpoints make it resumable like any run. The preset's minutes budget is not applied (only
    --budget-minutes).
    """
    config = replace(
        options.train_config(),
        budget_steps=options.finetune_steps,
        budget_minutes=options.budget_minutes,
    )
    activations = excitations = None
    if config.warm_start and solution is not None:
        activations, excitations = [solution[0]], [solution[1]]
    trainer = make_trainer(
        model, [reference], config, activations=activations, excitations=excitations
    )

    def initial(ts: Any) -> Any:
        # Copies: training donates its state's buffers, and `start` serves every clip.
        own = jax.tree.map(jnp.copy, (start.agent, start.obs_norm, start.reward))
        return ts._replace(agent=own[0], obs_norm=own[1], reward=own[2])

    policy = train(trainer, options.checkpoint_dir(name), resume=True, initial=initial)
    return trainer, policy


def emulate_reference(
    trainer: Trainer,
    policy: Policy,
    reference: Reference,
    clip: int,
    deterministic: bool = True,
    seed: int = 0,
) -> Emulation:
    """The policy's rollout over one of its clips (deterministic unless asked), on the
    reference's time axis."""
    agent_state, obs_norm = policy.params
    emulation = emulate(
        trainer.env,
        trainer.agent,
        agent_state,
        obs_norm,
        trainer.config.agent_config,
        clip=clip,
        qpos_names=reference.qpos_names,
        qvel_names=reference.qvel_names,
        deterministic=deterministic,
        seed=seed,
    )
    emulation.times = reference.times
    return emulation


def emulation_parts(
    trainer: Trainer, policy: Policy, reference: Reference, clip: int, stochastic: int
) -> tuple[Emulation, list[xr.Dataset], dict[str, float]]:
    """The deterministic emulation, then `stochastic` sampled rollouts (seeds 1..K): the
    emulation, the datasets for the catalog, and the stochastic metrics."""
    emulation = emulate_reference(trainer, policy, reference, clip)
    parts, metrics = [emulation_dataset(emulation)], {}
    if stochastic > 0:
        rollouts = [
            emulate_reference(trainer, policy, reference, clip, deterministic=False, seed=k)
            for k in range(1, stochastic + 1)
        ]
        parts.append(stochastic_dataset(rollouts))
        metrics = stochastic_metrics(rollouts)
    return emulation, parts, metrics


def config_from_meta(meta: dict[str, Any]) -> TrainConfig:
    """The TrainConfig a checkpoint was trained with (from its JSON meta)."""
    raw = dict(meta["config"])
    module = agent_module(raw["agent"])

    def build(cls: Any, values: dict[str, Any]) -> Any:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        out = {}
        for k, v in values.items():
            if k in fields:
                out[k] = tuple(v) if isinstance(v, list) else v
        return cls(**out)

    raw["env"] = build(EnvConfig, raw["env"])
    raw["adversarial"] = build(AdversarialConfig, raw["adversarial"])
    raw["agent_config"] = build(module.Config, raw["agent_config"])
    return build(TrainConfig, raw)


def replay_policy(source: ClipSource, options: PipelineOptions, checkpoint_dir: str) -> ClipOutcome:
    """Ingest and retarget a motion file, then emulate it with a saved policy (no training)."""
    start = time.perf_counter()
    base = {"source": source.relpath, "until": "emulate", "method": "rl"}
    stage = "ingest"
    try:
        meta, _ = read_meta(checkpoint_dir)
        config = config_from_meta(meta)
        motion, skeleton, data = ingest(source, options)
        stage = "retarget"
        model = model_for(options.model)
        if meta.get("model_sha256") and meta["model_sha256"] != model_sha256(model):
            raise TrainError("the checkpoint was trained on another model: pass its --model")
        settings = RetargetConfig(fps=config.env.control_hz, correspondence=options.retarget_config)
        reference = retarget(motion, model, settings, skeleton)
        stage = "emulate"
        # A trainer shaped like the one that saved the checkpoint (same number of clips), with
        # the same initial activations (static optimization's, when it warm-started).
        n = len(meta["clip_ids"])
        acts = excs = None
        if config.warm_start:
            acts, excs = warm_start_solutions([reference], model, 1)  # no fork after JAX
            acts, excs = acts * n, excs * n
        trainer = make_trainer(model, [reference] * n, config, activations=acts, excitations=excs)
        state, meta, step = restore(checkpoint_dir, trainer.init())
        state = selected(trainer, state)
        policy = Policy(str(checkpoint_dir), step, meta, params=(state.agent, state.obs_norm))
        emulation, emulated, extra_metrics = emulation_parts(
            trainer, policy, reference, 0, options.stochastic
        )
    except (
        MotionError,
        BodyModelError,
        RetargetError,
        CorrespondenceError,
        ModelError,
        TrainError,
        CheckpointError,
    ) as exc:
        return _failure(source, stage, str(exc), start, base)
    parts = [data, reference_dataset(reference), *emulated]
    attrs, metrics, summary = _describe(
        motion, skeleton, replace(options, until="emulate"), reference
    )
    _describe_policy(attrs, metrics, policy, emulation)
    metrics.update(extra_metrics)
    return ClipOutcome(
        clip_id=source.clip_id,
        status=STATUS_COMPLETE,
        stage="emulate",
        data=xr.merge(parts, compat="no_conflicts", join="exact"),
        attrs=attrs,
        metrics=metrics,
        summary={**base, **summary},
        seconds=time.perf_counter() - start,
        frames=motion.n_frames,
    )


def _describe_policy(
    attrs: dict[str, Any], metrics: dict[str, float], policy: Policy, emulation: Emulation | None
) -> None:
    """What the catalog says of the policy: how it was trained, where it is, how it tracks."""
    seconds = float(policy.meta.get("seconds", 0.0))
    metrics.update({"train.env_steps": float(policy.step), "train.minutes": seconds / 60.0})
    attrs.update(
        method_label="reinforcement-learning imitation (policy rollout, deterministic)",
        checkpoint=str(Path(policy.checkpoint_dir).absolute()),
        checkpoint_step=int(policy.step),
        trainer=policy.meta.get("config", {}),
        seed=int(policy.meta.get("config", {}).get("seed", 0)),
        policy_clips=list(policy.clip_ids),
    )
    if emulation is not None:
        metrics.update(emulation.metrics)
        attrs.update(tracked_frames=int(emulation.tracked_frames), fell=bool(emulation.fell))


def _failure(
    source: ClipSource, stage: str, reason: str, start: float, summary: dict[str, Any]
) -> ClipOutcome:
    return ClipOutcome(
        clip_id=source.clip_id,
        status=STATUS_FAILED,
        stage=stage,
        reason=" ".join(reason.split()),
        summary=dict(summary),
        seconds=time.perf_counter() - start,
    )


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
) -> BatchReport:
    """Convert every source into the catalog; failures are recorded and the batch goes on."""
    check_until(options.until, options.method)
    report = BatchReport(total=len(sources))
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
    if multi:
        outcomes = _multi_clip(list(todo), options, workers)
    else:
        outcomes = map_unordered(run_clip, todo, options, workers=workers, on_crash=_crashed)
    try:
        for outcome in outcomes:
            try:
                _write(catalog, outcome)
            except CatalogError as exc:  # e.g. the id clashes with what an earlier run wrote
                outcome = replace(
                    outcome, status=STATUS_FAILED, stage="catalog", reason=str(exc), data=None
                )
            if outcome.status == STATUS_COMPLETE:
                report.completed += 1
                report.frames += outcome.frames
                if cached_stages and options.checkpoints:
                    done = stage_cache.entry(options.checkpoints, outcome.clip_id)
                    if done is not None:
                        stage_cache.remove(done)  # the catalog holds the clip now
            else:
                report.failed += 1
                report.failures.append((outcome.clip_id, outcome.reason))
            if on_outcome is not None:
                on_outcome(outcome)
    finally:
        catalog.flush_index()
        report.seconds = time.perf_counter() - start
    return report


class _StoredReference:
    """A reference read back from a clip's dataset (what emulation needs of a `Reference`)."""

    def __init__(self, ds: xr.Dataset, clip_id: str, attrs: dict[str, Any]):
        self.mapping = reference_mapping(ds.assign_attrs(attrs), clip_id)
        self.times = ds[DIM_TIME].values
        self.qpos_names = tuple(str(x) for x in ds["qpos"].values)
        self.qvel_names = tuple(str(x) for x in ds["qvel"].values)


def _multi_clip(
    sources: list[ClipSource], options: PipelineOptions, workers: int
) -> Iterable[ClipOutcome]:
    """One policy for all clips: retarget every clip, train once, then emulate each clip."""
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
    stored = [_StoredReference(o.data, o.clip_id, o.attrs) for o in ready]
    digest = hashlib.sha256("\n".join(o.clip_id for o in ready).encode()).hexdigest()[:12]
    model = model_for(options.model)
    name = f"multi-clip-{digest}"
    refs = [r.mapping for r in stored]
    try:
        solutions = None
        if options.warm_start:
            pairs = [
                warm_start_cached(by_id[o.clip_id], options, r, model)
                for o, r in zip(ready, refs, strict=True)
            ]
            solutions = ([a for a, _ in pairs], [e for _, e in pairs])
        shared = train_policy(refs, model, options, name, solutions)
        start = None  # the shared state, read once for all fine-tunes
        if options.finetune_steps > 0:
            start = selected(shared[0], restore(shared[1].checkpoint_dir, shared[0].init())[0])
    except (TrainError, CheckpointError, StaticOptError) as exc:
        for o in ready:
            yield ClipOutcome(
                o.clip_id, STATUS_FAILED, "train", " ".join(str(exc).split()), summary=o.summary
            )
        return
    for c, (outcome, ref) in enumerate(zip(ready, stored, strict=True)):
        trainer, policy, clip = *shared, c
        attrs, metrics = dict(outcome.attrs), dict(outcome.metrics)
        try:
            if start is not None:
                solution = (solutions[0][c], solutions[1][c]) if solutions else None
                trainer, policy = finetune_policy(
                    start,
                    ref.mapping,
                    model,
                    options,
                    f"{name}-finetune/{outcome.clip_id}",
                    solution,
                )
                clip = 0
        except (TrainError, CheckpointError) as exc:
            yield ClipOutcome(
                outcome.clip_id,
                STATUS_FAILED,
                "train",
                " ".join(str(exc).split()),
                summary=outcome.summary,
            )
            continue
        parts = [outcome.data]
        extra_metrics: dict[str, float] = {}
        if options.reaches("emulate"):
            emulation, emulated, extra_metrics = emulation_parts(
                trainer, policy, ref, clip, options.stochastic
            )
            parts.extend(emulated)
        else:
            emulation = None
        data = xr.merge(parts, compat="no_conflicts", join="exact")
        attrs.update(method="rl", stages=_rl_stages(options))
        _describe_policy(attrs, metrics, policy, emulation)
        metrics.update(extra_metrics)
        if policy is not shared[1]:  # fine-tuned: count the shared training too
            shared_minutes = float(shared[1].meta.get("seconds", 0.0)) / 60.0
            metrics["train.finetune_env_steps"] = float(policy.step)
            metrics["train.env_steps"] = float(shared[1].step + policy.step)
            metrics["train.minutes"] += shared_minutes
            attrs.update(finetuned_from=str(Path(shared[1].checkpoint_dir).absolute()))
        yield replace(
            outcome,
            stage=options.until,
            data=data,
            attrs=attrs,
            metrics=metrics,
            summary={**outcome.summary, "until": options.until, "policy": "multi-clip"},
        )


def _crashed(source: ClipSource, reason: str) -> ClipOutcome:
    """The outcome of a clip whose worker process died (a crash in native code, say)."""
    return ClipOutcome(
        clip_id=source.clip_id,
        status=STATUS_FAILED,
        stage="worker",
        reason=reason,
        summary={"source": source.relpath},
    )


def _write(catalog: Catalog, outcome: ClipOutcome) -> None:
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
