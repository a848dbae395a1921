"""Policy checkpoints beside a catalog on an object store.

With `--out s3://bucket/c.zarr` (any fsspec URL), a run's policies go to
`s3://bucket/c.zarr.checkpoints/<name>/` on the same store, as a local catalog's go to
`c.zarr.checkpoints/<name>/` beside it. Orbax and the trainer write files, so each policy trains
into a local mirror of its folder (under the user's cache folder) that a `Mirror` copies to the
store while training goes: every step Orbax has committed, its files first and the step's
`commit_success.txt` last, so a step on the store without that marker is an unfinished copy and
is never fetched. A run that starts (on a fresh node, or a resumed driver) first fetches the last
finished step the store holds, so training resumes from it whichever machine wrote it. Steps
Orbax has since dropped locally (it keeps the last two) are dropped on the store too.

Credentials and endpoints come the usual fsspec/botocore way, as for the catalog. The stage
cache (convert/stage_cache.py) stays in the local mirror: it only saves seconds, and is
recomputed where it is missing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

MARKER = "commit_success.txt"  # written into each step by Orbax; copied last
SUFFIX = ".checkpoints"
_PARTIAL = ".msconvert-fetching"  # a step being fetched (renamed when whole)


def is_remote(location: str | os.PathLike[str] | None) -> bool:
    """Whether a checkpoint location is a URL (s3://, gs://, ...), not a local folder."""
    return location is not None and "://" in str(location)


def beside(catalog_url: str) -> str:
    """Where a catalog's policies go: `<url>.checkpoints` on the same store."""
    return catalog_url.rstrip("/") + SUFFIX


def local_root(url: str) -> Path:
    """The local mirror of a checkpoint URL: a folder of the user's cache, one per URL
    ($MSCONVERT_CACHE, else $XDG_CACHE_HOME/msconvert, else ~/.cache/msconvert)."""
    base = os.environ.get("MSCONVERT_CACHE")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        base = str(Path(xdg) / "msconvert")
    digest = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]
    return Path(base) / "checkpoints" / digest


def _fs(url: str) -> tuple[Any, str]:
    import fsspec

    return fsspec.core.url_to_fs(url)


def _local_steps(local: Path) -> list[int]:
    """Steps Orbax has committed in a local folder (it renames a step's folder to its number
    only when the step is whole)."""
    if not local.is_dir():
        return []
    return sorted(int(p.name) for p in local.iterdir() if p.is_dir() and p.name.isdigit())


def _remote_files(fs: Any, root: str) -> list[str]:
    """Every file under root, relative to it ([] when there is none)."""
    fs.invalidate_cache(root)
    try:
        found = fs.find(root)
    except FileNotFoundError:
        return []
    strip = root.rstrip("/") + "/"
    return [f[len(strip) :] for f in found if f.startswith(strip)]


def _remote_steps(files: list[str]) -> tuple[set[int], set[int]]:
    """(finished, unfinished) steps among the files of a remote policy folder."""
    seen, done = set(), set()
    for rel in files:
        head, _, rest = rel.partition("/")
        if head.isdigit() and rest:
            seen.add(int(head))
            if rest == MARKER:
                done.add(int(head))
    return done, seen - done


def _put(fs: Any, sources: list[str], targets: list[str]) -> None:
    """Copy local files to the store; on a local filesystem (file://) make their folders first
    (object stores have none)."""
    from fsspec.implementations.local import LocalFileSystem

    if isinstance(fs, LocalFileSystem):
        for folder in sorted({t.rsplit("/", 1)[0] for t in targets}):
            fs.makedirs(folder, exist_ok=True)
    fs.put(sources, targets)


def fetch(url: str, local: str | os.PathLike[str]) -> int | None:
    """Copy the last finished step of a remote policy folder (and its top-level files, such as
    policy.json) into the local folder, unless that holds it or a later one already; the step
    fetched, or None."""
    local = Path(local)
    fs, root = _fs(url)
    files = _remote_files(fs, root)
    done, _ = _remote_steps(files)
    if not done:
        return None
    step = max(done)
    have = _local_steps(local)
    if have and have[-1] >= step:
        return None
    # Its own partial folder: tasks on one machine may fetch the same policy at once.
    partial = local / f"{step}{_PARTIAL}-{os.getpid()}-{threading.get_ident()}"
    shutil.rmtree(partial, ignore_errors=True)
    prefix = f"{step}/"
    wanted = [r for r in files if r.startswith(prefix)]
    tops = [r for r in files if "/" not in r]
    local.mkdir(parents=True, exist_ok=True)
    targets = [str(partial / r[len(prefix) :]) for r in wanted]
    for target in targets:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
    fs.get([f"{root}/{r}" for r in wanted], targets)
    try:
        os.replace(partial, local / str(step))  # whole now: Orbax may see it
    except OSError:
        if not (local / str(step)).is_dir():
            raise
        shutil.rmtree(partial, ignore_errors=True)  # another task fetched it first
    if tops:
        fs.get([f"{root}/{r}" for r in tops], [str(local / r) for r in tops])
    return step


def push(local: str | os.PathLike[str], url: str, fetched: int | None = None) -> list[int]:
    """Copy the local folder's committed steps the store lacks (each step's marker last), and its
    top-level files. Once the local folder holds a step of its own (later than `fetched`, the
    step it started from), the store keeps what it keeps: older steps are dropped there as Orbax
    dropped them here. The steps copied."""
    local = Path(local)
    steps = _local_steps(local)
    if not steps:
        return []
    fs, root = _fs(url)
    files = _remote_files(fs, root)
    done, unfinished = _remote_steps(files)
    copied = []
    for step in steps:
        if step in done:
            continue
        folder = local / str(step)
        rels = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        body = [r for r in rels if r != MARKER]
        if body:
            _put(fs, [str(folder / r) for r in body], [f"{root}/{step}/{r}" for r in body])
        if MARKER in rels:
            _put(fs, [str(folder / MARKER)], [f"{root}/{step}/{MARKER}"])
        else:  # Orbax wrote none (it may rename instead, on local disks): the copy's own
            with tempfile.TemporaryDirectory() as tmp:
                marker = Path(tmp) / MARKER
                marker.write_text("copied by msconvert\n")
                _put(fs, [str(marker)], [f"{root}/{step}/{MARKER}"])
        copied.append(step)
    tops = [p for p in local.iterdir() if p.is_file()]
    if tops:
        _put(fs, [str(p) for p in tops], [f"{root}/{p.name}" for p in tops])
    if fetched is not None and steps[-1] <= fetched:
        return copied  # nothing trained here yet: the store's steps are all there is
    for step in sorted((done | unfinished) - set(steps)):
        if step < steps[0]:  # Orbax dropped it here (or a copy of it was cut short)
            with contextlib.suppress(FileNotFoundError):
                fs.rm_file(f"{root}/{step}/{MARKER}")  # unfinished first: never half-fetched
            with contextlib.suppress(FileNotFoundError):
                fs.rm(f"{root}/{step}", recursive=True)
    return copied


def remove(url: str) -> None:
    """Remove a remote checkpoint folder and its local mirror (--overwrite)."""
    fs, root = _fs(url)
    with contextlib.suppress(FileNotFoundError):
        if fs.exists(root):
            fs.rm(root, recursive=True)
    shutil.rmtree(local_root(url), ignore_errors=True)


class Mirror:
    """A policy folder that training writes locally and this copies to the store.

    Use as a context manager: on entry the last finished step on the store is fetched (a run
    resumes from it); while inside, a thread copies each newly committed local step every
    `every_s` seconds; on exit (a failure included) whatever is committed is copied, so that a
    resumed run, on any machine, continues from there.
    """

    def __init__(self, url: str, local: str | os.PathLike[str], every_s: float = 2.0) -> None:
        self.url, self.local, self.every_s = url, Path(local), every_s
        self.copied: list[int] = []
        self.fetched: int | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen: list[int] = []
        self.error: BaseException | None = None

    def __enter__(self) -> Mirror:
        self.local.mkdir(parents=True, exist_ok=True)
        self.fetched = fetch(self.url, self.local)
        self._seen = _local_steps(self.local)
        self._thread = threading.Thread(target=self._watch, name="msconvert-mirror", daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(self.every_s):
            steps = _local_steps(self.local)
            if steps != self._seen:
                try:
                    self.sync()
                except Exception as exc:  # the store may be unreachable a while: retried
                    self.error = exc
                else:
                    self._seen = steps

    def sync(self) -> None:
        with self._lock:
            self.copied += push(self.local, self.url, self.fetched)

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if kind is None:
            self.sync()  # an error here is the clip's: its policy did not reach the store
        else:  # keep what training committed before it failed; its error is the one to tell
            with contextlib.suppress(Exception):
                self.sync()
