"""Named training budgets for the `rl` method: what `--preset` means, printed in `--help`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    """A training budget and scale; per clip (or per multi-clip policy)."""

    name: str
    description: str
    backend: str  # 'cpu', 'mjx' or 'auto'
    n_envs: int
    budget_steps: int  # environment steps, summed over environments
    budget_minutes: float | None
    bc_steps: int  # warm-start gradient steps (per DAgger round)
    gpu_agent: bool  # use the agent's Config.gpu() (big networks, big batches)
    replay_size: int  # off-policy agents: transitions kept (observations are ~2,500 floats)
    # Snapshots emulated to pick the exported policy (TrainConfig.evaluations). An emulation of
    # a MyoFullBody clip costs seconds on a CPU, so the minutes-long demo affords only a few.
    evaluations: int = 8
    # The track warm start (DAgger): rounds, control steps per round, and how many
    # environments the CPU controller labels (None: all).
    dagger_rounds: int = 4
    dagger_steps: int = 40
    dagger_labelled_envs: int | None = None
    dagger_fit_steps: int | None = None  # per round (None: bc_steps)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="demo",
            description="a laptop CPU: 1.5 min per clip, a modest and honestly reported fit",
            backend="cpu",
            n_envs=8,
            budget_steps=40_000,
            budget_minutes=1.5,
            bc_steps=400,
            gpu_agent=False,
            replay_size=20_000,
            evaluations=4,
            # ~1 min of the 1.5: the controller answers in ~40 ms a state on MyoFullBody
            dagger_rounds=3,
            dagger_steps=30,
        ),
        Preset(
            name="cpu",
            description="hours per clip on all CPU cores (MuJoCo C engine): 2 M env steps, <= 4 h",
            backend="cpu",
            n_envs=32,
            budget_steps=2_000_000,
            budget_minutes=240.0,
            bc_steps=2_000,
            gpu_agent=False,
            # 300,000 was killed for memory on a 24 GiB machine (22.6 GB resident in the DAgger
            # warm start, 2026-12-06): about three times the replay's own 7 GB.
            replay_size=100_000,
            dagger_rounds=8,
            dagger_steps=50,
        ),
        Preset(
            name="gpu",
            description="an accelerator: 4,096 MJX environments, 200 M env steps, big networks",
            backend="mjx",
            n_envs=4_096,
            budget_steps=200_000_000,
            budget_minutes=None,
            bc_steps=5_000,
            gpu_agent=True,
            replay_size=1_000_000,  # ~24 GB in float32 at MyoFullBody size (obs ~2,765)
            dagger_rounds=8,
            dagger_steps=50,
            dagger_labelled_envs=32,  # the controller answers on the host CPU
        ),
    )
}


def presets_help() -> str:
    """One line per preset, for `--help`."""
    return "; ".join(f"{p.name}: {p.description}" for p in PRESETS.values())
