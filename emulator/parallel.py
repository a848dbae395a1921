"""Running many small NumPy jobs at once: forked processes or threads, and single-threaded BLAS.

- `Workers`: map a function over jobs in this thread, a thread pool or forked processes. Forked
  workers inherit the parent's memory, so a function handed over at the fork (`inherit`) is
  never pickled, nor anything it closes over: only its jobs and results travel.
- `single_threaded_blas()`: hold OpenBLAS to one thread, for products too small for its threads
  (they spin and contend with ours: 10x slower on 2 cores).
- `balanced_spans`: contiguous chunks of a sequence whose items each warm-start the next, with
  each later chunk starting a few items early to warm up, sized for equal work.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import multiprocessing
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any

_BLAS_LOCK = threading.Lock()
_BLAS_USERS: list[Any] = [0, ()]  # active callers, and the thread counts to restore
_FORK_LOCK = threading.Lock()
_INHERITED: tuple[Callable[[Any], Any], ...] = ()  # set only while a pool forks its workers


@functools.cache
def _openblas_thread_controls() -> tuple[tuple[Callable[[int], None], Callable[[], int]], ...]:
    """(set, get) thread-count functions of every OpenBLAS loaded in this process (Linux)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower()})
    except OSError:
        return ()
    controls = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("scipy_openblas", "64_"), ("scipy_openblas", ""), ("openblas", "")):
            setter = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
            getter = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
            if setter is not None and getter is not None:
                setter.argtypes, getter.restype = [ctypes.c_int], ctypes.c_int
                controls.append((setter, getter))
                break
    return tuple(controls)


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Hold OpenBLAS to one thread while inside; restored when the last caller leaves.

    Workers forked inside inherit the setting.
    """
    with _BLAS_LOCK:
        if _BLAS_USERS[0] == 0:
            controls = _openblas_thread_controls()
            _BLAS_USERS[1] = tuple(get() for _, get in controls)
            for set_threads, _ in controls:
                set_threads(1)
        _BLAS_USERS[0] += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS_USERS[0] -= 1
            if _BLAS_USERS[0] == 0:
                for (set_threads, _), n in zip(
                    _openblas_thread_controls(), _BLAS_USERS[1], strict=True
                ):
                    set_threads(n)


def can_fork() -> bool:
    """Whether this process may fork workers: POSIX only, and not from a daemonic worker."""
    return "fork" in multiprocessing.get_all_start_methods() and not (
        multiprocessing.current_process().daemon
    )


def _call_inherited(job: tuple[int, Any]) -> Any:
    """In a forked worker: the function the fork inherited, on one job."""
    index, arg = job
    return _INHERITED[index](arg)


class Workers:
    """Maps functions over jobs with `workers` workers; a context manager (the pool's lifetime).

    One worker: this thread. More: forked processes when `processes` is set and this process can
    fork (`can_fork`), else threads (which help little for NumPy code that holds the GIL in many
    small calls). The processes fork on entry: a function in `inherit` reaches them with the fork
    and is never pickled (a closure over large arrays costs nothing to send); any other function
    given to `map` must pickle (a module-level function). Jobs and results always pickle.
    """

    def __init__(
        self,
        workers: int,
        *,
        processes: bool = False,
        inherit: Sequence[Callable[[Any], Any]] = (),
    ) -> None:
        self.workers = max(1, int(workers))
        if self.workers == 1:
            self.kind = "serial"
        elif processes and can_fork():
            self.kind = "processes"
        else:
            self.kind = "threads"
        self._inherit = tuple(inherit)
        self._pool: Any = None

    def __str__(self) -> str:
        """How the jobs run: 'serial', '2 threads', '4 processes'."""
        return self.kind if self.kind == "serial" else f"{self.workers} {self.kind}"

    def __enter__(self) -> Workers:
        if self.kind == "processes":
            global _INHERITED
            with _FORK_LOCK:  # the workers copy _INHERITED when they fork, at the pool's creation
                _INHERITED = self._inherit
                try:
                    self._pool = multiprocessing.get_context("fork").Pool(self.workers)
                finally:
                    _INHERITED = ()
        elif self.kind == "threads":
            self._pool = ThreadPoolExecutor(max_workers=self.workers)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.kind == "processes":
            self._pool.terminate()
        elif self.kind == "threads":
            self._pool.shutdown()
        self._pool = None

    def map(self, fn: Callable[[Any], Any], jobs: Sequence[Any]) -> list[Any]:
        """[fn(job) for job in jobs], the jobs spread over the workers; results in job order."""
        if self.kind == "serial":
            return [fn(job) for job in jobs]
        if self.kind == "threads":
            return list(self._pool.map(fn, jobs))
        for index, inherited in enumerate(self._inherit):
            if fn is inherited:
                return self._pool.map(_call_inherited, [(index, job) for job in jobs])
        return self._pool.map(fn, jobs)


def balanced_spans(n: int, chunks: int, warmup: int) -> list[tuple[int, int, int]]:
    """(first, start, stop) per chunk of n items: a chunk's own items are start..stop−1, and it
    warms up on first..start−1 (up to `warmup` items before its own). Equal work per chunk,
    counting each later chunk's warm-up items."""
    per = (n + (chunks - 1) * warmup) / chunks
    stops = [round(per + i * (per - warmup)) for i in range(chunks)]
    stops[-1] = n
    starts = [0, *stops[:-1]]
    return [(max(0, a - warmup), a, b) for a, b in zip(starts, stops, strict=True)]
