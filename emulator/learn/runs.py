"""Training runs on references: warm start, train or resume, fine-tune a shared policy, restore a
saved policy, and emulate it. What the pipeline and `msconvert train` / `emulate` share.

See docs/method.md#training for the method.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from msconvert.emulator.backends.base import recording_model
from msconvert.emulator.emulation import Emulation
from msconvert.emulator.learn import checkpoint
from msconvert.emulator.learn.checkpoint import CheckpointError, Policy
from msconvert.emulator.learn.dagger import DaggerConfig
from msconvert.emulator.learn.emulate import emulate
from msconvert.emulator.learn.env import EnvConfig
from msconvert.emulator.learn.reward import AdversarialConfig
from msconvert.emulator.learn.train import (
    TrainConfig,
    Trainer,
    TrainError,
    TrainState,
    agent_module,
    make_trainer,
    selected,
    train,
)
from msconvert.emulator.muscles.solutions import SolutionsConfig
from msconvert.emulator.muscles.static_opt import MuscleCost, static_optimization
from msconvert.emulator.muscles.track import TEACHER, TrackConfig, TrackError, track
from msconvert.emulator.retarget.reference import Reference

Solutions = tuple[list[np.ndarray], list[np.ndarray]]  # (activations, excitations) per clip


def warm_start_solutions(
    references: Sequence[Reference],
    model: mujoco.MjModel,
    processes: int = 1,
    warm_start: str = "static-opt",
    feet: Mapping[str, list[str]] | None = None,
) -> Solutions:
    """Activations (T, na) and excitations (T, nu) per reference, the warm start's data:
    the tracking controller's run over the clip ('track'), or static optimization's."""
    activations, excitations = [], []
    for ref in references:
        if warm_start == "track":
            activation, excitation = _track_solution(ref, model, feet)
        else:
            result = static_optimization(ref, model, processes=processes)
            activation, excitation = result.activation, result.excitation
        activations.append(activation.astype(np.float32))
        excitations.append(excitation.astype(np.float32))
    return activations, excitations


def _track_solution(
    ref: Reference, model: mujoco.MjModel, feet: Mapping[str, list[str]] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The tracking controller's activations and excitations over the clip (assist on); after a
    fall, its last state's (resets there then start from the activations it reached)."""
    try:
        run = track(ref, model, TEACHER, feet=feet).emulation
    except TrackError as exc:
        raise TrainError(f"the track warm start cannot run: {exc}") from exc
    layout = recording_model(model)[1]
    last = max(run.tracked_frames - 1, 0)
    activation = np.full((len(run.activation), model.na), TrackConfig().initial_activation)
    activation[:, layout.muscle_act] = run.activation
    activation[last + 1 :] = activation[last]
    excitation = np.nan_to_num(np.array(run.excitation, np.float64))
    excitation[last + 1 :] = excitation[last]
    return activation, excitation


def needs_solutions(config: TrainConfig) -> bool:
    """Whether the warm start reads each clip's solution (`warm_start_solutions`): a residual
    policy's resets and feedforward come from the controller's run in `make_trainer` instead."""
    resolved = config.resolved()
    return resolved.warm_start != "none" and not resolved.residual


def check_model(references: Sequence[Reference], model_sha256: str) -> None:
    """The references must have been retargeted onto this very model."""
    for ref in references:
        if ref.model_sha256 and ref.model_sha256 != model_sha256:
            raise TrainError(
                f"clip {ref.clip_id!r} was retargeted onto another model (SHA-256 "
                f"{ref.model_sha256[:12]}…, this one {model_sha256[:12]}…): pass the same --model "
                "(catalogs retargeted by msconvert 0.1.0 hashed the model's install path: "
                "retarget them again with this version)"
            )


def train_policy(
    references: Sequence[Reference],
    model: mujoco.MjModel,
    config: TrainConfig,
    out_dir: str | Path,
    *,
    solutions: Solutions | None = None,
    resume: bool = True,
    progress: Callable[[dict[str, float]], None] | None = None,
    initial: Callable[[TrainState], TrainState] | None = None,
    muscle_costs: Sequence[MuscleCost | None] | None = None,
) -> tuple[Trainer, Policy]:
    """Warm start (static optimization, unless `solutions` are given or the config disables it)
    and train one policy for these references to the budget; a run already trained to its
    budget in out_dir is reused, a cut one resumed (resume=True). muscle_costs: as for
    `make_trainer`."""
    activations = excitations = None
    if needs_solutions(config):
        # One process: forking after JAX has started threads can deadlock (and a clip's static
        # optimization takes seconds next to minutes of training).
        activations, excitations = solutions or warm_start_solutions(
            references, model, 1, config.warm_start
        )
    trainer = make_trainer(
        model,
        references,
        config,
        activations=activations,
        excitations=excitations,
        muscle_costs=muscle_costs,
    )
    policy = train(trainer, out_dir, resume=resume, progress=progress, initial=initial)
    return trainer, policy


def shared_state(trainer: Trainer, policy: Policy) -> TrainState:
    """A finished run's training state with its exported policy: what fine-tunes start from."""
    return selected(trainer, checkpoint.restore(policy.checkpoint_dir, trainer.init())[0])


def finetune_policy(
    start: TrainState,
    reference: Reference,
    model: mujoco.MjModel,
    config: TrainConfig,
    out_dir: str | Path,
    solution: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[Trainer, Policy]:
    """A copy of a shared (multi-clip) policy trained on one clip to config's budget.

    start: the shared run's state (`shared_state`). The copy takes its networks, optimizer
    states, replay, normalizer and discriminator, with fresh environments on this clip; its own
    checkpoints make it resumable like any run.
    """

    def initial(ts: TrainState) -> TrainState:
        # Copies: training donates its state's buffers, and `start` serves every clip.
        own = jax.tree.map(jnp.copy, (start.agent, start.obs_norm, start.reward))
        return ts._replace(agent=own[0], obs_norm=own[1], reward=own[2])

    solutions = ([solution[0]], [solution[1]]) if solution is not None else None
    if needs_solutions(config) and solutions is None:
        solutions = warm_start_solutions([reference], model, 1, config.warm_start)
    return train_policy(
        [reference], model, config, out_dir, solutions=solutions, resume=True, initial=initial
    )


def config_from_meta(meta: Mapping[str, Any]) -> TrainConfig:
    """The TrainConfig a checkpoint was trained with (from its JSON meta)."""
    raw = dict(meta["config"])
    raw.setdefault("residual", False)  # policies of msconvert <= 0.3 act alone
    module = agent_module(raw["agent"])

    def build(cls: Any, values: Mapping[str, Any]) -> Any:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in fields}
        )

    raw["env"] = build(EnvConfig, raw["env"])
    raw["adversarial"] = build(AdversarialConfig, raw["adversarial"])
    raw["agent_config"] = build(module.Config, raw["agent_config"])
    raw["dagger"] = build(DaggerConfig, raw.get("dagger", {}))
    # Older checkpoints hold no solutions: their teacher was solution 0.
    raw["solutions"] = build(SolutionsConfig, raw.get("solutions", {}))
    return build(TrainConfig, raw)


def load_policy(
    checkpoint_dir: str | Path,
    reference: Reference,
    model: mujoco.MjModel,
    model_sha256: str,
    feet: Mapping[str, list[str]] | None = None,
) -> tuple[Trainer, Policy]:
    """A saved policy, ready to emulate `reference` (clip 0 of the returned trainer).

    The trainer is shaped like the one that saved the checkpoint (as many clips, the same
    initial activations: static optimization's when it warm-started), so the checkpoint's
    arrays fit it. feet: as for `make_trainer`.
    """
    meta, _ = checkpoint.read_meta(checkpoint_dir)
    if meta.get("model_sha256") and meta["model_sha256"] != model_sha256:
        raise TrainError("the checkpoint was trained on another model: pass its --model")
    config = config_from_meta(meta)
    n = len(meta["clip_ids"])
    activations = excitations = None
    warm_start = config.resolved().warm_start  # 'static-opt' for checkpoints that said True
    if needs_solutions(config):
        activations, excitations = warm_start_solutions([reference], model, 1, warm_start, feet)
        activations, excitations = activations * n, excitations * n
    trainer = make_trainer(
        model,
        [reference] * n,
        config,
        activations=activations,
        excitations=excitations,
        feet=feet,
    )
    saved = meta.get("feedforward_sha256", {}).get(reference.clip_id)
    if saved is not None and trainer.feedforward_sha256[reference.clip_id] != saved:
        raise TrainError(
            f"the tracking controller's run on {reference.clip_id!r} is not the one this residual "
            "policy was trained with (another msconvert or MuJoCo build, or another reference): "
            "train the policy again"
        )
    state, meta, step = checkpoint.restore(checkpoint_dir, trainer.init())
    state = selected(trainer, state)
    policy = Policy(str(checkpoint_dir), step, meta, params=(state.agent, state.obs_norm))
    return trainer, policy


def emulate_policy(
    trainer: Trainer,
    policy: Policy,
    reference: Reference,
    clip: int = 0,
    deterministic: bool = True,
    seed: int = 0,
) -> Emulation:
    """The policy's rollout over one of its clips (deterministic unless asked), on the
    reference's time axis."""
    if policy.params is None:
        raise CheckpointError(f"the policy in {policy.checkpoint_dir} is not loaded")
    agent_state, obs_norm = policy.params
    return emulate(
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
        times=reference.times,
        assist_scale=policy.assist_scale if trainer.assisted else None,
    )
