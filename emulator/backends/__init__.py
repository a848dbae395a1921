"""Simulation backends: batched environments on MuJoCo's C engine (CPU) or MJX (accelerators)."""

from __future__ import annotations

import mujoco

from msconvert.emulator.backends.base import (
    DIMS,
    FEET,
    Backend,
    Layout,
    Recording,
    Step,
    View,
)

__all__ = ["DIMS", "FEET", "Backend", "Layout", "Recording", "Step", "View", "make_backend"]


def make_backend(
    kind: str,
    model: mujoco.MjModel,
    n_envs: int,
    frame_skip: int,
    record_physics_steps: bool = False,
    *,
    record: bool = True,
    nthread: int | None = None,
) -> Backend:
    """A backend of `kind` 'cpu', 'mjx' or 'auto' (MJX when JAX sees an accelerator, else CPU).

    record: simulate the recording sensors and return recordings (False: physics only).
    nthread: the C engine's threads (default: every available core, at most one per env).
    """
    if kind == "auto":
        import jax

        kind = "cpu" if jax.default_backend() == "cpu" else "mjx"
    if kind == "cpu":
        from msconvert.emulator.backends.cpu import CpuBackend

        return CpuBackend(
            model, n_envs, frame_skip, record_physics_steps, nthread=nthread, record=record
        )
    if kind == "mjx":
        from msconvert.emulator.backends.mjx import MjxBackend

        return MjxBackend(model, n_envs, frame_skip, record_physics_steps, record=record)
    raise ValueError(f"unknown backend '{kind}' (use 'cpu', 'mjx' or 'auto')")
