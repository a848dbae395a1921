"""Where clips run: inline, or a local process pool that survives a crashing worker."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

S = TypeVar("S")  # a source
O = TypeVar("O")  # an option bundle
R = TypeVar("R")  # a result

# How many clips each worker may have queued: enough to keep it busy, few enough that an
# interrupted run has little in flight.
_IN_FLIGHT_PER_WORKER = 2


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
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
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


def _take(it: Iterator[S], n: int) -> list[S]:
    out = []
    for _ in range(n):
        try:
            out.append(next(it))
        except StopIteration:
            break
    return out
