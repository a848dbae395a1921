"""Training from references: what `msconvert train` and the pipeline's train stage share."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import mujoco
import numpy as np

from msconvert.catalog import Catalog
from msconvert.catalog.records import reference_mapping
from msconvert.emulator.learn.checkpoint import Policy
from msconvert.emulator.learn.train import TrainConfig, TrainError, make_trainer, train
from msconvert.emulator.muscles.static_opt import static_optimization


def warm_start_solutions(
    references: Sequence[Any], model: mujoco.MjModel, processes: int = 1
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Static-optimization activations and excitations per reference (algorithm.md §6)."""
    activations, excitations = [], []
    for ref in references:
        result = static_optimization(ref, model, processes=processes)
        activations.append(result.activation.astype(np.float32))
        excitations.append(result.excitation.astype(np.float32))
    return activations, excitations


def references_from_catalog(
    catalog: Catalog, clip_ids: Sequence[str]
) -> tuple[list[dict], list[np.ndarray] | None, list[np.ndarray] | None]:
    """The stored references of these clips, and their static-opt solution when all have one."""
    refs, acts, excs = [], [], []
    for clip in clip_ids:
        ds = catalog[clip]
        refs.append(reference_mapping(ds, clip))
        if "activation" in ds and "excitation" in ds and ds.attrs.get("method") == "static-opt":
            acts.append(ds["activation"].values.astype(np.float32))
            excs.append(ds["excitation"].values.astype(np.float32))
    if len(acts) != len(refs):
        return refs, None, None
    return refs, acts, excs


def check_model(references: Sequence[Any], model: mujoco.MjModel, model_sha256: str) -> None:
    """The references must have been retargeted onto this very model."""
    for ref in references:
        got = ref["model_sha256"] if isinstance(ref, dict) else ref.model_sha256
        if got and got != model_sha256:
            clip = ref["clip_id"] if isinstance(ref, dict) else ref.clip_id
            raise TrainError(
                f"clip {clip!r} was retargeted onto another model (SHA-256 {got[:12]}…, "
                f"this one {model_sha256[:12]}…): pass the same --model"
            )


def train_references(
    references: Sequence[Any],
    model: mujoco.MjModel,
    config: TrainConfig,
    out_dir: str | Path,
    *,
    activations: Sequence[np.ndarray] | None = None,
    excitations: Sequence[np.ndarray] | None = None,
    resume: bool = False,
    processes: int = 1,
    progress: Callable[[dict[str, float]], None] | None = None,
) -> Policy:
    """Warm start (static optimization, unless given or disabled), then train to the budget."""
    if activations is None and config.warm_start:
        activations, excitations = warm_start_solutions(references, model, processes)
    trainer = make_trainer(
        model, references, config, activations=activations, excitations=excitations
    )
    return train(trainer, out_dir, resume=resume, progress=progress)
