"""The writer's lease: one run at a time writes a catalog, on a local disk or an object store.

A lease is one small JSON document beside the catalog's root (`LOCK_KEY`): a random token, who
holds it (host, pid) and when it was last renewed. The run that holds it renews it from a thread
every `RENEW_S` seconds; a second run finds it and is refused with a one-line message naming the
holder. A lease whose holder is gone is taken over:

- same machine (same host name, boot and pid namespace): as soon as the holder's process is gone
  (a killed driver is taken over at once by `--resume`);
- another machine: once the holder has not renewed it for `TTL_S` seconds (its clock).

Object stores have no compare-and-swap that every fsspec backend offers, so taking a lease is
write-then-verify: write our token, wait `settle` seconds, read it back; of two runs racing, the
one whose write landed last keeps it and the other is refused. Every renewal reads the document
first: a holder that finds another token there has lost the lease (`Lease.lost`) and must stop.
Workers that write clips for the holder (`ClipWriter`) check the token before each clip's final
status write, so a run that lost its lease cannot mark anything complete.
"""

from __future__ import annotations

import datetime as _dt
import os
import socket
import threading
import time
import uuid
from typing import Any

from msconvert.catalog import _zarrio as zio
from msconvert.catalog.schema import LOCK_KEY

TTL_S = 60.0  # a lease not renewed for this long (another machine's) is free
RENEW_S = 10.0  # the holder renews this often
SETTLE_LOCAL_S = 0.05  # write-then-verify wait on a local disk
SETTLE_REMOTE_S = 0.5  # on an object store (several request round trips)


class LeaseError(Exception):
    """The lease is held by another run, or was lost to one (one-line message)."""


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return ""


def _process_start(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), '' when unknown; with the pid
    it names one process even after the pid is reused."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return ""
    return stat.rpartition(")")[2].split()[19]  # field 22; the name in (...) may hold spaces


def _machine() -> str:
    """Where a pid means one process: host name, boot, pid namespace."""
    return f"{socket.gethostname()}/{_boot_id()}/{_pid_namespace()}"


def _running(pid: int, started: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    return not started or not _process_start(pid) or _process_start(pid) == started


def describe(doc: dict[str, Any], now: float | None = None) -> str:
    """Who holds a lease, in words."""
    now = time.time() if now is None else now
    age = max(0.0, now - float(doc.get("renewed", 0.0)))
    return (
        f"pid {doc.get('pid', '?')} on {doc.get('host', '?')}, writing since "
        f"{doc.get('started', '?')}, lease renewed {age:.0f} s ago"
    )


def holder_alive(doc: dict[str, Any], now: float | None = None) -> bool:
    """Whether the run that wrote this lease document may still be writing."""
    now = time.time() if now is None else now
    if doc.get("machine") and doc.get("machine") == _machine():
        try:
            pid = int(doc.get("pid", -1))
        except (TypeError, ValueError):
            pid = -1
        return pid > 0 and _running(pid, str(doc.get("pid_started") or ""))
    try:
        renewed = float(doc.get("renewed", 0.0))
        ttl = float(doc.get("ttl_s", TTL_S))
    except (TypeError, ValueError):
        return False
    return now - renewed < ttl


class Lease:
    """A run's exclusive right to write one catalog (see the module docstring)."""

    def __init__(
        self,
        store: zio.Store,
        url: str,
        *,
        remote: bool,
        ttl_s: float = TTL_S,
        renew_s: float = RENEW_S,
    ) -> None:
        self._store = store
        self.url = url
        self.token = uuid.uuid4().hex
        self.ttl_s = ttl_s
        self.renew_s = renew_s
        self.settle_s = SETTLE_REMOTE_S if remote else SETTLE_LOCAL_S
        self.lost: str | None = None  # why, once another run took it (or it could not be renewed)
        self._started = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        self._renewed = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ the document

    def _doc(self) -> dict[str, Any]:
        pid = os.getpid()
        return {
            "token": self.token,
            "host": socket.gethostname(),
            "machine": _machine(),
            "pid": pid,
            "pid_started": _process_start(pid),
            "started": self._started,
            "renewed": time.time(),
            "ttl_s": self.ttl_s,
        }

    def _read(self) -> dict[str, Any] | None:
        return zio.run(zio.get_json(self._store, LOCK_KEY))

    def _write(self) -> None:
        zio.run(zio.put_json(self._store, LOCK_KEY, self._doc()))
        self._renewed = time.monotonic()

    def refusal(self, doc: dict[str, Any] | None) -> str:
        """The one-line message for a run that finds this lease held by another."""
        who = describe(doc) if doc else "another run took it while this one was starting"
        return (
            f"{self.url} is being written by another msconvert run ({who}); two runs on one "
            "catalog would overwrite each other's clips. Wait for it to finish (or stop it); "
            "then --resume continues. A run killed on this machine frees it at once; one on "
            f"another machine, {self.ttl_s:.0f} s after its last renewal."
        )

    # ------------------------------------------------------------------ taking and keeping it

    def acquire(self) -> None:
        """Take the lease, or raise LeaseError naming the run that holds it."""
        doc = self._read()
        if doc is not None and doc.get("token") != self.token and holder_alive(doc):
            raise LeaseError(self.refusal(doc))
        self._write()
        time.sleep(self.settle_s)
        doc = self._read()
        if doc is None or doc.get("token") != self.token:
            raise LeaseError(self.refusal(doc))
        self._stop.clear()
        self._thread = threading.Thread(target=self._keep, name="msconvert-lease", daemon=True)
        self._thread.start()

    def _keep(self) -> None:
        while not self._stop.wait(self.renew_s):
            try:
                doc = self._read()
                if doc is None or doc.get("token") != self.token:
                    self.lost = (
                        f"{self.url}: this run lost its lease to another run "
                        f"({describe(doc) if doc else 'the lease document was removed'}); "
                        "stopping so that the two do not overwrite each other"
                    )
                    return
                self._write()
            except Exception as exc:  # a store hiccup: try again at the next renewal
                if time.monotonic() - self._renewed > self.ttl_s:
                    self.lost = (
                        f"{self.url}: could not renew this run's lease for {self.ttl_s:.0f} s "
                        f"({type(exc).__name__}: {' '.join(str(exc).split())}); stopping"
                    )
                    return

    def check(self) -> None:
        """Raise LeaseError when the lease was lost (the run must stop writing)."""
        if self.lost is not None:
            raise LeaseError(self.lost)

    def release(self) -> None:
        """Stop renewing and remove the document, when it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        try:
            doc = self._read()
            if doc is not None and doc.get("token") == self.token:
                zio.run(self._store.delete(LOCK_KEY))
        except Exception:  # best effort: an unreleased lease of a dead pid is taken over anyway
            pass


async def token_on_store(store: zio.Store) -> str | None:
    """The token of the lease on a catalog's store, None when there is none."""
    doc = await zio.get_json(store, LOCK_KEY)
    return None if doc is None else str(doc.get("token"))
