"""msconvert: batch converter from motion-capture corpora to muscle-driven emulations."""

import os
import sys
import warnings
from importlib.metadata import PackageNotFoundError, version

# XLA:CPU's fusion emitters (jax >= 0.7) turn MJX's unrolled kinematic tree into kernels that
# recompute it exponentially: one MyoFullBody physics step took minutes on a CPU, against
# 19 ms with the older emitters (benchmarks/RESULTS.md, the MJX path). Set before JAX starts
# its CPU backend, and inherited by worker processes; a user's own setting of it wins.
_CPU_EMITTERS = "--xla_cpu_use_fusion_emitters=false"
if "xla_cpu_use_fusion_emitters" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_CPU_EMITTERS}".strip()
    if getattr(sys.modules.get("jax._src.xla_bridge"), "_backends", None):
        warnings.warn(
            "JAX started before msconvert was imported, so XLA:CPU's fusion emitters stay on and "
            "MJX on a CPU can be 1000x slower: import msconvert first, or set "
            f"XLA_FLAGS={_CPU_EMITTERS} before Python starts",
            stacklevel=2,
        )

try:
    __version__ = version("msconvert")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
