"""The off-policy ablation of the flow agent: its learner (CrossQ critics, replay, entropy-tuned
tanh-Gaussian policy) acting with the tanh-Gaussian source alone, no velocity field. Comparing it
with flow.py isolates what the flow adds (docs/method.md#gaussian-ablation)."""

from __future__ import annotations

from dataclasses import dataclass

from msconvert.emulator.learn.agents import flow
from msconvert.emulator.learn.agents.flow import (
    AgentState,
    act,
    behaviour_clone,
    init,
    learn,
    with_policy_params,
)

__all__ = [
    "AgentState",
    "Config",
    "act",
    "behaviour_clone",
    "init",
    "learn",
    "policy_params",
    "with_policy_params",
]


@dataclass(frozen=True)
class Config(flow.Config):
    """flow.Config with the flow switched off (SAC-style soft targets in the critic)."""

    flow: bool = False

    @classmethod
    def gpu(cls) -> Config:
        import dataclasses

        return cls(
            **{
                f.name: getattr(flow.Config.gpu(), f.name)
                for f in dataclasses.fields(flow.Config)
                if f.name != "flow"
            }
        )


def policy_params(state: AgentState) -> dict:
    """What acting needs: the tanh-Gaussian policy."""
    return {"source": state.source}
