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

import functools
import hashlib
import importlib
import json
import os
import threading
import warnings
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
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


# --- programs kept on disk between processes -------------------------------------------------

EXPORT_FOLDER = "exported"  # under the compilation cache directory


@functools.cache
def _code_fingerprint() -> str:
    """The SHA-256 of msconvert's own source and of the libraries that shape a traced program:
    an exported program is reused only by the very code that traced it."""
    import mujoco

    digest = hashlib.sha256(f"{jax.__version__} {jaxlib.__version__} {mujoco.__version__}".encode())
    for name in ("msconvert", *(f"msconvert.{p}" for p in ("emulator", "convert", "datasets"))):
        root = Path(importlib.import_module(name).__file__).parent
        for file in sorted(root.rglob("*.py")):
            digest.update(file.relative_to(root).as_posix().encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


OutStructure = Callable[[tuple, Any], Any]  # (args, recorded) -> the output's tree structure
Recorded = Callable[[Any], Any]  # the output's tree structure -> what to record (JSON)


class Persisted:
    """A jitted function whose traced and lowered program is kept on disk (`jax.export`, in the
    compilation cache directory), so that a new process with the same code, model and settings
    skips tracing and lowering as well as XLA: on MyoFullBody's training chunk, those take most
    of a warm start (benchmarks/RESULTS.md). Without a cache directory it is the jitted function.

    The program is exported with flat arguments and results (arrays only, so that no pytree type
    needs registering for serialization); `out_structure(args, recorded)` rebuilds the result's
    structure from what `recorded(structure)` wrote (JSON) when the program was exported. A
    program that cannot be exported (a callback, an unstable custom call) runs jitted."""

    def __init__(
        self,
        name: str,
        key: Hashable,
        jitted: Any,
        out_structure: OutStructure,
        recorded: Recorded,
        donate_argnums: tuple[int, ...] = (),
    ):
        self.name, self._key, self._jitted = name, repr(key), jitted
        self._out_structure, self._recorded = out_structure, recorded
        self._donate = donate_argnums
        self._programs: dict[Hashable, _Program | None] = {}
        self.last_source: str | None = None  # where the last new program came from: 'disk',
        # 'exported' (traced here and written) or 'jit' (not kept on disk)

    def lower(self, *args: Any) -> jax.stages.Lowered:
        """What a call with these arguments runs, lowered (the kept program when there is one)."""
        program = self._program(args)
        if program is None:
            return self._jitted.lower(*args)
        return program.call.lower(*jax.tree.leaves(args))

    def __call__(self, *args: Any) -> Any:
        program = self._program(args)
        if program is None:
            return self._jitted(*args)
        return jax.tree.unflatten(program.structure, program.call(*jax.tree.leaves(args)))

    def _program(self, args: tuple) -> _Program | None:
        directory = jax.config.jax_compilation_cache_dir
        if not directory or " at 0x" in self._key:  # no cache, or a key no other process shares
            return None
        leaves, tree = jax.tree.flatten(args)
        # Weak types are left out: a scalar's can differ between processes (one computed by an
        # executable from the cache), and the program is the same for both.
        shapes = tuple((np.shape(x), str(jnp.result_type(x))) for x in leaves)
        if (tree, shapes) not in self._programs:
            try:
                program = self._load(Path(directory), args, tree, shapes)
            except Exception as exc:  # noqa: BLE001 - any failure to export falls back to jit
                warnings.warn(f"{self.name}: not kept on disk ({exc})", stacklevel=3)
                program, self.last_source = None, "jit"
            self._programs[(tree, shapes)] = program
        return self._programs[(tree, shapes)]

    def _load(self, directory: Path, args: tuple, tree: Any, shapes: tuple) -> _Program:
        what = repr(
            (self._key, _describe(tree), shapes, jax.default_backend(), _code_fingerprint())
        )
        if " at 0x" in what:  # something in the arguments' structure no other process can name
            raise ValueError("the arguments' structure has no stable description")
        stem = (
            directory
            / EXPORT_FOLDER
            / f"{self.name}-{hashlib.sha256(what.encode()).hexdigest()[:32]}"
        )
        program, about = stem.with_suffix(".jaxexport"), stem.with_suffix(".json")
        exported = structure = None
        if program.is_file() and about.is_file():
            try:
                exported = jax.export.deserialize(bytearray(program.read_bytes()))
                structure = self._out_structure(args, json.loads(about.read_text())["recorded"])
                self.last_source = "disk"
            except Exception:  # noqa: BLE001 - a damaged or foreign file: export again over it
                exported = None
        if exported is None:
            out: dict[str, Any] = {}

            def flat(*leaves: Any) -> tuple:
                values, out["tree"] = jax.tree.flatten(
                    self._jitted(*jax.tree.unflatten(tree, leaves))
                )
                return tuple(values)

            avals = [jax.ShapeDtypeStruct(s, d) for s, d in shapes]
            exported = jax.export.export(jax.jit(flat))(*avals)
            structure = out["tree"]
            stem.parent.mkdir(parents=True, exist_ok=True)
            _write_atomic(program, bytes(exported.serialize()))
            _write_atomic(about, json.dumps({"recorded": self._recorded(structure)}).encode())
            self.last_source = "exported"
        sizes = [len(jax.tree.leaves(a)) for a in args]
        starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        donate = tuple(i for a in self._donate for i in range(starts[a], starts[a + 1]))

        def run(*leaves: Any) -> Any:
            return exported.call(*leaves)

        run.__name__ = run.__qualname__ = self.name  # what compile reports and XLA call it
        call = jax.jit(run, donate_argnums=donate)
        return _Program(call, structure)


@dataclass(frozen=True)
class _Program:
    call: Any  # jitted: flat arguments -> flat results
    structure: Any  # the results' tree structure


def _describe(tree: Any) -> str:
    """A tree structure named the same in every process: its node types and static data, with
    arrays held as static data (MJX keeps some) named by their contents, not their address."""
    if tree.node_data() is None:
        return "*"
    kind, data = tree.node_data()
    children = ", ".join(_describe(child) for child in tree.children())
    return f"{kind.__module__}.{kind.__qualname__}{_static(data)}[{children}]"


def _static(x: Any) -> str:
    if isinstance(x, (tuple, list)):
        return "(" + ", ".join(_static(v) for v in x) + ")"
    array = getattr(x, "array", x)
    if isinstance(array, np.ndarray):
        contents = hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]
        return f"array{array.shape}{array.dtype}:{contents}"
    return repr(x)


def _write_atomic(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)
