"""Where clips run: inline, a local process pool that survives a crashing worker, or Ray tasks
on a cluster (`RayCluster`), retried by Ray when their worker or node dies.

Both map a function over items and yield results as they finish; neither knows about clips or
catalogs (convert/pipeline.py composes them with the per-clip work).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import socket
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, TypeVar

S = TypeVar("S")  # a source
O = TypeVar("O")  # an option bundle
R = TypeVar("R")  # a result

# How many clips each worker may have queued: enough to keep it busy, few enough that an
# interrupted run has little in flight.
_IN_FLIGHT_PER_WORKER = 2
# Thread pools of the numeric libraries, held to one thread in each pool worker (as Ray does
# for a one-CPU task): a worker per core, each with a BLAS pool as large as the machine,
# oversubscribes the cores, and OpenBLAS threads spin on small products.
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def map_unordered(
    fn: Callable[[S, O], R],
    items: Iterable[S],
    options: O,
    *,
    workers: int,
    on_crash: Callable[[S, str], R],
) -> Iterator[R]:
    """Yield fn(item, options) for each item as it finishes; a dead worker fails its items only."""
    if workers <= 1:
        for item in items:
            yield fn(item, options)
        return
    pending = iter(items)
    # 'spawn' starts clean interpreters: forking a parent that holds threads (JAX, BLAS, zarr's
    # event loop) can deadlock.
    context = multiprocessing.get_context("spawn")
    while True:
        pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=_one_thread_each
        )
        in_flight: dict[Future[R], S] = {}
        broken = False
        try:
            for item in _take(pending, workers * _IN_FLIGHT_PER_WORKER):
                in_flight[pool.submit(fn, item, options)] = item
            while in_flight:
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    item = in_flight.pop(future)
                    try:
                        yield future.result()
                    except BrokenProcessPool:
                        broken = True
                        yield on_crash(item, "worker process died while converting this clip")
                if not broken:
                    for item in _take(pending, len(done)):
                        in_flight[pool.submit(fn, item, options)] = item
                else:
                    for future, item in list(in_flight.items()):
                        in_flight.pop(future)
                        yield on_crash(
                            item, "worker process died while converting a clip beside it"
                        )
        finally:
            pool.shutdown(wait=not broken, cancel_futures=True)
        if not broken:
            return


def _one_thread_each() -> None:
    """A pool worker's first act, before it imports NumPy: one thread per numeric library,
    unless the user set otherwise."""
    for name in _THREAD_VARS:
        os.environ.setdefault(name, "1")


def _take(it: Iterator[S], n: int) -> list[S]:
    out = []
    for _ in range(n):
        try:
            out.append(next(it))
        except StopIteration:
            break
    return out


# --- Ray -------------------------------------------------------------------------------------


class ExecutorError(Exception):
    """The executor cannot start or reach its workers (one-line message)."""


@dataclass(frozen=True)
class RaySettings:
    """How clips run on Ray: where the cluster is, and what each task declares it needs.

    address: None starts a local Ray instance on this machine (with `local_cpus` CPUs, default
    all); 'auto' joins the cluster running on this node (`ray start`); 'HOST:PORT' joins the
    cluster whose head (GCS) is there. Tasks declare `cpus` (Ray then gives each that many
    cores, and sets OMP_NUM_THREADS to it), `gpus` and `memory` (bytes, None: undeclared), so
    the scheduler never packs more clips on a node than it holds. A task whose worker process
    or node dies is retried `max_retries` times, then reported through `on_crash`.
    """

    address: str | None = None
    local_cpus: int | None = None
    cpus: float = 1.0
    gpus: float = 0.0
    memory: int | None = None
    max_retries: int = 2


# Tasks submitted ahead of what the cluster runs at once: enough to keep every slot busy while
# results come back, few enough that the driver's memory and an interrupted run stay small.
_RAY_IN_FLIGHT_PER_SLOT = 2


def this_node() -> str:
    """The label of the machine a result was made on (its host name)."""
    return socket.gethostname()


def _placed(fn: Callable[[S, O], R], item: S, options: O) -> tuple[str, R]:
    """Run fn on a Ray worker; return it with the worker's node label."""
    return this_node(), fn(item, options)


class RayCluster:
    """A connection to a Ray cluster (started here when no address is given) that maps a
    function over items as Ray tasks. Use as a context manager; a local instance it started
    is shut down on exit, a joined cluster is only disconnected from."""

    def __init__(self, settings: RaySettings) -> None:
        self.settings = settings
        self._ray: Any = None
        self._owned = False

    def __enter__(self) -> RayCluster:
        try:
            import ray
        except ImportError:
            raise ExecutorError("--executor ray needs Ray: pip install 'msconvert[ray]'") from None
        self._ray = ray
        if not ray.is_initialized():
            s = self.settings
            kwargs: dict[str, Any] = dict(
                log_to_driver=False,  # workers' output would break the progress bar
                logging_level="ERROR",
            )
            if s.address is None:  # a local instance, just for this run: no dashboard, no
                # usage report (unless the user asked for one)
                kwargs.update(num_cpus=s.local_cpus or os.cpu_count() or 1, include_dashboard=False)
                os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            try:
                ray.init(address=s.address, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = s.address or "a local Ray instance"
                raise ExecutorError(
                    f"cannot start or join Ray at {where}: {_one_line(exc)}"
                ) from None
            self._owned = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._owned and self._ray is not None:
            self._ray.shutdown()
        self._owned = False

    @property
    def ray(self) -> Any:
        if self._ray is None:
            raise ExecutorError("the Ray cluster is not connected (use RayCluster as a context)")
        return self._ray

    def describe(self) -> str:
        """'N nodes, C CPUs, G GPUs' of the cluster now."""
        ray = self.ray
        resources = ray.cluster_resources()
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        gpus = resources.get("GPU", 0.0)
        return f"{nodes} node{'s' if nodes != 1 else ''}, {resources.get('CPU', 0.0):g} CPUs" + (
            f", {gpus:g} GPUs" if gpus else ""
        )

    def unfit(self) -> str | None:
        """What no live node of the cluster has now for one task (None: some node fits it);
        such tasks wait until a node that has it joins (an autoscaling cluster)."""
        s = self.settings
        want = {"CPU": s.cpus, "GPU": s.gpus, "memory": float(s.memory or 0)}
        nodes = [n.get("Resources", {}) for n in self.ray.nodes() if n.get("Alive")]
        if any(all(r.get(k, 0.0) >= v for k, v in want.items() if v) for r in nodes):
            return None
        needs = f"{s.cpus:g} CPUs" + (f", {s.gpus:g} GPUs" if s.gpus else "")
        needs += f", {(s.memory or 0) / 1024**3:.1f} GiB of memory" if s.memory else ""
        return f"no node of the cluster has {needs} for one clip task now"

    def node_count(self) -> int:
        return sum(1 for n in self.ray.nodes() if n.get("Alive"))

    def _slots(self) -> int:
        """How many tasks the cluster runs at once now (it may grow: autoscaling)."""
        resources = self.ray.cluster_resources()
        s = self.settings
        slots = resources.get("CPU", 1.0) / max(s.cpus, 1e-9)
        if s.gpus > 0:
            slots = min(slots, resources.get("GPU", 0.0) / s.gpus)
        return max(1, int(slots))

    def map_unordered(
        self,
        fn: Callable[[S, O], R],
        items: Iterable[S],
        options: O,
        *,
        on_crash: Callable[[S, str], R],
        name: Callable[[S], str] = str,
        fatal: tuple[type[BaseException], ...] = (),
    ) -> Iterator[tuple[R, str]]:
        """Yield (fn(item, options), node) for each item as its task finishes.

        fn must be importable on the workers (a module-level function); `options` is put in
        Ray's object store once. A task whose worker or node died is retried by Ray up to
        max_retries times; then, or when fn raised, on_crash(item, one-line reason) stands in
        for its result (node '?'). An exception of a `fatal` type raised by fn stops the map
        and is raised here. Tasks still in flight when the caller stops are cancelled.
        """
        ray, s = self.ray, self.settings
        from ray.exceptions import RayError, RayTaskError, TaskCancelledError

        resources: dict[str, Any] = dict(
            num_cpus=s.cpus, num_gpus=s.gpus, max_retries=s.max_retries, retry_exceptions=False
        )
        if s.memory:
            resources["memory"] = int(s.memory)
        task = ray.remote(_placed)
        shared = ray.put(options)
        pending = iter(items)
        in_flight: dict[Any, S] = {}

        def top_up() -> None:
            want = self._slots() * _RAY_IN_FLIGHT_PER_SLOT
            for item in _take(pending, max(0, want - len(in_flight))):
                ref = task.options(name=name(item), **resources).remote(fn, item, shared)
                in_flight[ref] = item

        try:
            top_up()
            while in_flight:
                done, _ = ray.wait(list(in_flight), num_returns=1, timeout=5.0)
                for ref in done:
                    item = in_flight.pop(ref)
                    try:
                        node, result = ray.get(ref)
                    except RayTaskError as exc:
                        cause = exc.cause if exc.cause is not None else exc
                        if fatal and isinstance(cause, fatal):
                            raise cause from None
                        reason = f"internal error on a Ray worker: {type(cause).__name__}: {cause}"
                        yield on_crash(item, _one_line(reason)), "?"
                    except TaskCancelledError:
                        yield on_crash(item, "its Ray task was cancelled"), "?"
                    except RayError as exc:
                        tries = 1 + s.max_retries
                        reason = (
                            f"worker process or node died while converting this clip "
                            f"({tries} tr{'ies' if tries > 1 else 'y'}, --max-retries "
                            f"{s.max_retries}; {type(exc).__name__})"
                        )
                        yield on_crash(item, reason), "?"
                    else:
                        yield result, node
                top_up()
        finally:
            for ref in in_flight:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)


def _one_line(text: object) -> str:
    return " ".join(str(text).split())
