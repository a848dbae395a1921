"""XLA compilation of the learning code: JAX's persistent cache on disk, what each compile cost,
and the compiled functions shared by every run of a model and its settings in one process.

    use_cache(directory)                          # compiled executables are reused from here
    with watch(on_start, on_end) as compiles:     # each compile reported as it starts and ends
        ...
    compiles[-1]                                  # Compile(name, seconds, cache_hit)

A compile is reported from JAX's own monitoring events (`jax.monitoring`): the backend compile
event starts and ends it, and a persistent-cache hit inside it is recorded by JAX before it ends.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
from jax import monitoring

# The event names of jax._src.dispatch and jax._src.compiler (jax 0.4.3x to 0.10).
BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"
CACHE_HIT = "/jax/compilation_cache/cache_hits"
CACHE_MISS = "/jax/compilation_cache/cache_misses"

CACHE_FOLDER = "jax_cache"  # under a catalog's checkpoint folder


@dataclass(frozen=True)
class Compile:
    """One XLA compile: the function's name (e.g. 'jit(chunk)'), its wall time, and whether the
    executable came from the persistent cache instead of being compiled."""

    name: str
    seconds: float
    cache_hit: bool


def user_cache_dir() -> Path:
    """Where compiled executables go when there is no catalog: $XDG_CACHE_HOME (or ~/.cache)
    /msconvert/jax."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "msconvert" / "jax"


def default_cache_dir(checkpoints: str | Path | None) -> Path:
    """The cache of a run: beside its policies (`<catalog>.checkpoints/jax_cache`), else the
    user's cache directory."""
    if checkpoints and "://" not in str(checkpoints):
        return Path(checkpoints) / CACHE_FOLDER
    return user_cache_dir()


# Every executable is written, however small or quick: a run compiles a hundred small functions
# besides the training chunk, and a new process would pay for each of them again.
_SETTINGS = {
    "jax_persistent_cache_min_compile_time_secs": 0.0,
    "jax_persistent_cache_min_entry_size_bytes": -1,  # -1: no minimum size
}


def use_cache(directory: str | Path, *, environ: bool = False) -> Path:
    """Turn JAX's persistent compilation cache on, in `directory` (created), for every compile
    from now on in this process. environ: also for the processes it starts (worker pools, a
    local Ray), through the environment variables JAX reads when it is imported."""
    from jax.experimental.compilation_cache import compilation_cache

    path = Path(directory).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    if jax.config.jax_compilation_cache_dir != str(path):
        # JAX opens the cache once per process: another folder needs it reopened.
        compilation_cache.reset_cache()
        jax.config.update("jax_compilation_cache_dir", str(path))
    for name, value in _SETTINGS.items():
        jax.config.update(name, value)
    if environ:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = str(path)
        os.environ.update({name.upper(): str(value) for name, value in _SETTINGS.items()})
    return path


def cache_entries(directory: str | Path) -> list[Path]:
    """The executables stored in a cache directory (JAX's '-cache' files)."""
    return sorted(Path(directory).glob("*-cache"))


# --- compile reports ------------------------------------------------------------------------

Started = Callable[[str], None]
Ended = Callable[[Compile], None]

_watchers: list[tuple[Started | None, Ended | None, list[Compile]]] = []
_lock = threading.Lock()
_local = threading.local()  # per thread: a compile's start and whether the cache served it
_installed = False


def _on_scalar(event: str, value: float, **kwargs: Any) -> None:
    if event != BACKEND_COMPILE:
        return
    name = str(kwargs.get("fun_name", "?"))
    _local.hit = False
    for started, _, _ in list(_watchers):
        if started is not None:
            started(name)


def _on_event(event: str, **kwargs: Any) -> None:
    if event == CACHE_HIT:
        _local.hit = True


def _on_duration(event: str, seconds: float, **kwargs: Any) -> None:
    if event != BACKEND_COMPILE:
        return
    done = Compile(str(kwargs.get("fun_name", "?")), float(seconds), getattr(_local, "hit", False))
    _local.hit = False
    for _, ended, log in list(_watchers):
        log.append(done)
        if ended is not None:
            ended(done)


def _install() -> None:
    global _installed
    with _lock:
        if _installed:  # JAX has no way to remove a listener: one set serves every watcher
            return
        monitoring.register_scalar_listener(_on_scalar)
        monitoring.register_event_listener(_on_event)
        monitoring.register_event_duration_secs_listener(_on_duration)
        _installed = True


@contextmanager
def watch(on_start: Started | None = None, on_end: Ended | None = None) -> Iterator[list[Compile]]:
    """Every XLA compile in this process while inside: on_start(name) when one begins,
    on_end(Compile) when it is done; the list yielded collects them."""
    _install()
    log: list[Compile] = []
    entry = (on_start, on_end, log)
    _watchers.append(entry)
    try:
        yield log
    finally:
        _watchers.remove(entry)


# --- compiled functions shared within a process ---------------------------------------------

_shared: dict[Hashable, Any] = {}
_SHARED_MAX = 32  # kinds of compiled function kept (model × settings × role); the oldest go


def shared(key: Hashable, make: Callable[[], Any]) -> Any:
    """The value made for `key` in this process, made now if it is the first: jitted functions
    keyed by all that their graph depends on, so that every run with the same model and
    settings traces and compiles them once."""
    with _lock:
        if key in _shared:
            return _shared[key]
    value = make()
    with _lock:
        value = _shared.setdefault(key, value)
        while len(_shared) > _SHARED_MAX:
            del _shared[next(iter(_shared))]
    return value


def clear_shared() -> None:
    """Forget the shared compiled functions (the next run traces and compiles again)."""
    with _lock:
        _shared.clear()
