"""Policy checkpoints (Orbax): saved atomically, resumable, and self-describing.

A checkpoint directory holds numbered steps (Orbax commits a step only when it is complete, so a
kill mid-save leaves the previous step intact), each with two items:
- `state`: the whole training state as arrays (agent parameters and optimizer states, replay,
  normalizers, discriminator, environments, random key, counters);
- `meta`: JSON: the training config, clip ids, the model's SHA-256, the software version, the
  observation and action layout, and the training curve so far.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

META_FILE = "policy.json"  # the layout description written beside the steps, for humans and tools


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete, or was made for another model, config or clip set."""


@dataclass(frozen=True)
class Policy:
    """Stage 4's value: a trained policy, where it lives, and how it was made."""

    checkpoint_dir: str
    step: int  # the checkpoint step (env steps trained)
    meta: dict[str, Any]
    params: Any = None  # the pytree the agent's `act` needs; None until loaded
    curve: list[dict[str, float]] = field(default_factory=list)

    @property
    def agent(self) -> str:
        return str(self.meta["config"]["agent"])

    @property
    def clip_ids(self) -> list[str]:
        return list(self.meta["clip_ids"])

    @property
    def assist_scale(self) -> float:
        """The root-assist scale the policy is emulated at (0: none or off)."""
        return float(self.meta.get("assist_scale", 0.0))


def manager(directory: str | Path, keep: int = 2) -> ocp.CheckpointManager:
    """An Orbax manager on `directory` keeping the last `keep` steps."""
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    return ocp.CheckpointManager(Path(directory).absolute(), options=options)


def _flat(state: Any) -> tuple[dict[str, Any], list[Any], Any]:
    """The state's non-empty leaves by position (Orbax refuses zero-size arrays, which MJX data
    has), all leaves, and the tree structure."""
    leaves, treedef = jax.tree.flatten(state)
    payload = {f"{i:05d}": leaf for i, leaf in enumerate(leaves) if np.size(leaf) > 0}
    return payload, leaves, treedef


def save(mgr: ocp.CheckpointManager, step: int, state: Any, meta: dict[str, Any]) -> None:
    """Save one step and wait until it is committed."""
    payload = {k: np.asarray(v) for k, v in _flat(state)[0].items()}
    mgr.save(
        int(step),
        args=ocp.args.Composite(state=ocp.args.StandardSave(payload), meta=ocp.args.JsonSave(meta)),
        force=True,
    )
    mgr.wait_until_finished()
    (Path(mgr.directory) / META_FILE).write_text(json.dumps(meta, indent=1, default=str))


def latest_step(directory: str | Path) -> int | None:
    """The last complete step in `directory`, or None."""
    if not Path(directory).is_dir():
        return None
    with manager(directory) as mgr:
        return mgr.latest_step()


def restore(directory: str | Path, like: Any, step: int | None = None) -> tuple[Any, dict, int]:
    """The state (shaped like `like`), meta and step of the latest (or given) complete step."""
    with manager(directory) as mgr:
        step = mgr.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"{directory}: no complete checkpoint")
        payload, leaves, treedef = _flat(like)
        abstract = {
            k: jax.ShapeDtypeStruct(np.shape(v), np.asarray(v).dtype) for k, v in payload.items()
        }
        try:
            got = mgr.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
                ),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(
                f"{directory}: step {step} does not fit this training setup ({exc})"
            ) from None
        restored = dict(got.state)
        if set(restored) != set(abstract):
            raise CheckpointError(f"{directory}: step {step} does not fit this training setup")
        for k, v in restored.items():
            if np.shape(v) != abstract[k].shape:
                raise CheckpointError(f"{directory}: step {step} does not fit this training setup")
    keys = iter(sorted(payload))
    out = [leaf if np.size(leaf) == 0 else _like(restored[next(keys)], leaf) for leaf in leaves]
    return jax.tree.unflatten(treedef, out), dict(got.meta), int(step)


def _like(value: Any, leaf: Any) -> Any:
    """The restored value in the kind of array the fresh state holds (NumPy or JAX)."""
    if isinstance(leaf, np.ndarray):
        return np.asarray(value, dtype=leaf.dtype)
    return jax.numpy.asarray(value, dtype=np.asarray(leaf).dtype)


def read_meta(directory: str | Path, step: int | None = None) -> tuple[dict, int]:
    """Only the JSON meta of a checkpoint (no arrays are read)."""
    with manager(directory) as mgr:
        step = mgr.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"{directory}: no complete checkpoint")
        got = mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(got.meta), int(step)


def export(source: str | Path, dest: str | Path, clip: str) -> int:
    """Copy a checkpoint to `dest` (absent or empty) and describe its observation and action
    layout in dest/META_FILE; the step exported."""
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise CheckpointError(f"{dest} exists and is not empty")
    if not Path(source).is_dir():
        raise CheckpointError(f"the checkpoint {source} is not on this machine")
    shutil.copytree(source, dest, dirs_exist_ok=True)
    meta, step = read_meta(dest)
    layout = {
        "clip": clip,
        "checkpoint_step": step,
        "observation_dim": meta["obs_dim"],
        "action_dim": meta["act_dim"],
        "action": meta["action"],
        "muscles": meta["muscles"],
        # The root assist's scale the policy is emulated at (0: none or off; see "action").
        "assist_scale": float(meta.get("assist_scale", 0.0)),
        "config": meta["config"],
        "clip_ids": meta["clip_ids"],
        "model_sha256": meta["model_sha256"],
        "software_version": meta["software_version"],
    }
    (dest / META_FILE).write_text(json.dumps(layout, indent=1))
    return step
