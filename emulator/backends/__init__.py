"""Simulation backends: batched environments on MuJoCo's C engine (CPU) or MJX (accelerators)."""

from __future__ import annotations

import mujoco

from msconvert.emulator.backends.base import DIMS, FEET, Backend, Layout, Recording, Step

__all__ = ["DIMS", "FEET", "Backend", "Layout", "Recording", "Step", "make_backend"]


def make_backend(
    kind: str,
    model: mujoco.MjModel,
    n_envs: int,
    frame_skip: int,
    record_physics_steps: bool = False,
) -> Backend:
    """A backend of `kind` 'cpu', 'mjx' or 'auto' (MJX when JAX sees an accelerator, else CPU)."""
    if kind == "auto":
        import jax

        kind = "cpu" if jax.default_backend() == "cpu" else "mjx"
    if kind == "cpu":
        from msconvert.emulator.backends.cpu import CpuBackend

        return CpuBackend(model, n_envs, frame_skip, record_physics_steps)
    if kind == "mjx":
        from msconvert.emulator.backends.mjx import MjxBackend

        return MjxBackend(model, n_envs, frame_skip, record_physics_steps)
    raise ValueError(f"unknown backend '{kind}' (use 'cpu', 'mjx' or 'auto')")
