"""AMASS corpus ingestion: find SMPL-H / SMPL-X clip files and read them into validated `Motion`s.

Files are read with NumPy only (``allow_pickle=False``): nothing in a corpus is ever unpickled.
Every problem with a file surfaces as one `MotionError` whose message is a single line that
starts with the file's corpus-relative path.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import io
import os
import stat
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from msconvert.clip_ids import sanitize_clip_id
from msconvert.datasets.motion import N_BODY_JOINTS, N_HAND_JOINTS, Motion, MotionError, Provenance

# File-name suffixes of AMASS clips and the body model each implies.
SUFFIXES: dict[str, str] = {"_poses.npz": "smplh", "_stageii.npz": "smplx"}
# Appended (with a counter) to the clip id of a file whose sanitized id another file already has.
# It is within sanitize_clip_id's alphabet, so the result is still a valid catalog clip id.
COLLISION_SEPARATOR = "+"
MIN_FPS = 1.0
MAX_FPS = 1000.0
# Caps against decompression bombs and runaway reads; real AMASS clips are far below both.
MAX_FILE_BYTES = 4 << 30
MAX_ARRAY_BYTES = 2 << 30
_CHUNK = 1 << 20
_FRAMERATE_KEYS = ("mocap_framerate", "mocap_frame_rate", "fps")
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header, or an empty archive
_NPY_MAGIC = b"\x93NUMPY"
_GENDERS = {"male": "male", "female": "female", "neutral": "neutral"}


@dataclass(frozen=True)
class ClipSource:
    """One clip file found in a corpus, with its stable catalog id."""

    path: Path
    relpath: str  # '/'-separated, relative to the corpus root
    clip_id: str
    body_model: str  # the source's format: 'smplh' | 'smplx' | 'bvh:<joint map>'


# --- discovery ----------------------------------------------------------------------------------


def _suffix_of(name: str, suffixes: Mapping[str, str] = SUFFIXES) -> str | None:
    """The clip suffix (AMASS's, or those given) a file name ends with, or None."""
    return next((s for s in suffixes if name.endswith(s)), None)


def _raw_clip_id(relpath: str) -> str:
    """The corpus-relative path without its clip suffix (or '.npz'), before sanitizing."""
    head, _, name = relpath.rpartition("/")
    suffix = _suffix_of(name) or next((s for s in (".npz", ".bvh") if name.endswith(s)), "")
    stem = name[: len(name) - len(suffix)] if suffix else name
    if not stem:  # a file named exactly '_poses.npz': keep a non-empty last part
        stem = name.removesuffix(".npz") or name
    return f"{head}/{stem}" if head else stem


def clip_id_for(relpath: str) -> str:
    """The sanitized clip id of a corpus-relative path (`KIT/3/walk_poses.npz` → `KIT/3/walk`)."""
    return sanitize_clip_id(_raw_clip_id(relpath))


def _with_counter(base: str, n: int) -> str:
    """`base` + separator + n, shortening the last part if needed so it stays a valid clip id."""
    head, sep, last = base.rpartition("/")
    tail = f"{COLLISION_SEPARATOR}{n}"
    while True:
        candidate = f"{head}{sep}{last}{tail}"
        # sanitize_clip_id truncates long parts; trim ours until it survives unchanged.
        if sanitize_clip_id(candidate) == candidate or not last:
            return candidate
        last = last[:-1]


def _next_free(clip_id: str, taken: set[str]) -> str:
    """The first `clip_id+N` (N >= 2) not in taken; it is added to taken."""
    n = 2
    while (candidate := _with_counter(clip_id, n)) in taken:
        n += 1
    taken.add(candidate)
    return candidate


def _matches(patterns: Sequence[str], clip_id: str, relpath: str) -> bool:
    """True when any glob matches the clip id or the relpath ('*' crosses '/')."""
    return any(fnmatch.fnmatchcase(clip_id, p) or fnmatch.fnmatchcase(relpath, p) for p in patterns)


@dataclass(frozen=True)
class SkippedEntry:
    """A corpus entry the scan could not use, with why (one of SKIP_REASONS)."""

    relpath: str  # '/'-separated, relative to the corpus root (the link's own path for links)
    reason: str
    detail: str = ""  # e.g. the link target or the OS error, one line

    def __str__(self) -> str:
        """'KIT/3/walk_poses.npz: broken link (-> /gone/walk_poses.npz)', on one line."""
        detail = f" ({self.detail})" if self.detail else ""
        return f"{_display(self.relpath)}: {self.reason}{detail}"


# Why an entry is skipped: singular -> plural, in the order a summary lists ties.
SKIP_REASONS: dict[str, str] = {
    "broken link": "broken links",  # a symlink whose target does not exist
    "symlink loop": "symlink loops",  # a folder link to itself or an ancestor, or a link cycle
    "folder already scanned": "folders already scanned",  # a second way into a scanned folder
    "unreadable folder": "unreadable folders",  # listing it failed (e.g. permissions)
    "unreadable entry": "unreadable entries",  # stat failed for another reason
    "not a regular file": "not regular files",  # a clip name on a FIFO, socket or device
}


@dataclass(frozen=True)
class CorpusScan:
    """What `scan_corpus` found: the clips (as `discover` returns them) and what it skipped."""

    sources: tuple[ClipSource, ...]
    skipped: tuple[SkippedEntry, ...] = ()

    def summary(self) -> str:
        """'skipped 3 entries: 2 broken links, 1 symlink loop', or '' when nothing was skipped."""
        if not self.skipped:
            return ""
        counts: dict[str, int] = {}
        for entry in self.skipped:
            counts[entry.reason] = counts.get(entry.reason, 0) + 1
        order = list(SKIP_REASONS)
        parts = sorted(counts.items(), key=lambda kv: (-kv[1], order.index(kv[0])))
        n = len(self.skipped)
        return f"skipped {n} entr{'y' if n == 1 else 'ies'}: " + ", ".join(
            f"{k} {reason if k == 1 else SKIP_REASONS[reason]}" for reason, k in parts
        )


def _link_problem(exc: OSError) -> str:
    """The skip reason of a symlink that os.stat cannot follow."""
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return "broken link"
    return "unreadable entry"


def _link_detail(path: Path) -> str:
    """'-> target' as the link says it (relative or absolute), or '' when it cannot be read."""
    try:
        return f"-> {_display(os.readlink(path))}"
    except OSError:
        return ""


def _is_within(path: str, folder: str) -> bool:
    """True when the real path `path` is `folder` or lies below it."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _scan_tree(
    base: Path, suffixes: Mapping[str, str] = SUFFIXES
) -> tuple[list[tuple[str, Path, str]], list[SkippedEntry]]:
    """(relpath, path, format) of every clip file under base (by suffix), and what was skipped.

    Symlinked files and folders are followed wherever they point; relpaths (and so clip ids)
    are always the links' own paths under base. Real folders are scanned first, then folder
    links in relpath order, so a folder reachable both ways keeps its real path. Each real
    folder is scanned once: a link to a folder on its own way from the root, or to an ancestor
    of one (of the root, say), is a loop; a later way into a folder already scanned is skipped.
    Both are reported, as are broken links and entries that cannot be read. Hidden entries
    (names starting with '.') are ignored.
    """
    found: list[tuple[str, Path, str]] = []
    skipped: list[SkippedEntry] = []
    real_root = os.path.realpath(base)
    visited = {real_root}
    # Folders to list: (relpath, path, the real paths of the folders on its way from the root).
    folders: list[tuple[str, Path, tuple[str, ...]]] = [("", base, (real_root,))]
    links: list[tuple[str, Path, tuple[str, ...]]] = []  # folder links met, followed later

    while folders or links:
        if not folders:  # every real folder so far is done: follow the first folder link
            links.sort(key=lambda link: link[0], reverse=True)
            rel, path, chain = links.pop()
            target = os.path.realpath(path)
            if any(_is_within(folder, target) for folder in chain):  # on its way, or above
                skipped.append(SkippedEntry(rel, "symlink loop", f"-> {_display(target)}"))
            elif target in visited:
                skipped.append(SkippedEntry(rel, "folder already scanned", _display(target)))
            else:
                visited.add(target)
                folders.append((rel, path, (*chain, target)))
            continue
        rel, path, chain = folders.pop()
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            if not rel:
                raise MotionError(
                    f"{_display(str(base))}: cannot read corpus root ({_one_line(exc)})"
                ) from exc
            skipped.append(SkippedEntry(rel, "unreadable folder", _one_line(exc)))
            continue
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            erel = f"{rel}/{name}" if rel else name
            epath = path / name
            try:
                if entry.is_symlink():
                    try:
                        mode = os.stat(epath).st_mode
                    except OSError as exc:
                        skipped.append(SkippedEntry(erel, _link_problem(exc), _link_detail(epath)))
                        continue
                    if stat.S_ISDIR(mode):
                        links.append((erel, epath, chain))
                        continue
                    is_dir, is_file = False, stat.S_ISREG(mode)
                else:
                    is_dir = entry.is_dir(follow_symlinks=False)
                    is_file = not is_dir and entry.is_file(follow_symlinks=False)
            except OSError as exc:
                skipped.append(SkippedEntry(erel, "unreadable entry", _one_line(exc)))
                continue
            if is_dir:
                real = os.path.join(chain[-1], name)
                if real in visited:  # reached before through a link into this tree
                    skipped.append(SkippedEntry(erel, "folder already scanned", _display(real)))
                else:
                    visited.add(real)
                    folders.append((erel, epath, (*chain, real)))
                continue
            suffix = _suffix_of(name, suffixes)
            if suffix is None:
                continue
            if is_file:
                found.append((erel, epath, suffixes[suffix]))
            else:
                skipped.append(SkippedEntry(erel, "not a regular file"))
    return found, skipped


def scan_corpus(
    root: str | os.PathLike[str],
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    limit: int | None = None,
    suffixes: Mapping[str, str] = SUFFIXES,
) -> CorpusScan:
    """All AMASS clip files under root (recursive), filtered and sorted by clip id, and what was
    skipped on the way. `suffixes` maps file-name endings to the source's format (AMASS's by
    default; `datasets.bvh` passes '.bvh').

    `*_poses.npz` files are SMPL-H clips and `*_stageii.npz` SMPL-X clips; anything else, and
    hidden files and folders (names starting with '.', e.g. macOS '._*' resource forks), is
    ignored. Symlinked files and folders are followed, also out of the root; a clip's relpath
    and id come from the path of the link inside the root, never from its target, so an id never
    leaves the corpus. Loops are cut (each real folder is scanned once) and reported in
    `skipped` with broken links and unreadable entries; skipped files are reported when the
    include/exclude filters would have kept them, skipped folders always. Clip ids are the
    corpus-relative paths without the suffix, passed through `sanitize_clip_id`. When several
    files share a sanitized id, the first by relpath keeps it and the others get `+2`, `+3`, ...
    (skipping ids already in use), computed over the whole corpus before filtering, so an id
    never depends on the filters. A file whose id is also the folder of other clips gets the
    next free `+N` id too. include/exclude are fnmatch globs tried on the clip id and on the
    relpath (either matching counts); an empty include keeps everything. `limit` applies after
    filtering, to the sources only.
    """
    if isinstance(include, str):  # a lone pattern, not a sequence of one-character patterns
        include = (include,)
    if isinstance(exclude, str):
        exclude = (exclude,)
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    base = Path(root)
    if not base.exists():
        raise MotionError(f"{_display(str(base))}: corpus root does not exist")
    if not base.is_dir():
        raise MotionError(f"{_display(str(base))}: corpus root is not a directory")

    found, skipped = _scan_tree(base, suffixes)
    found.sort(key=lambda item: item[0])

    # File names are never empty, so sanitizing always leaves an id (no ClipIdError here).
    ids = [clip_id_for(relpath) for relpath, _, _ in found]
    taken = set(ids)
    seen: set[str] = set()
    for i, clip_id in enumerate(ids):
        if clip_id in seen:
            ids[i] = _next_free(clip_id, taken)
        seen.add(ids[i])
    # A clip id that is also a folder of other clips (`KIT/3_poses.npz` beside `KIT/3/...`) cannot
    # be a Zarr group and a parent of groups at once: the file's clip moves to `KIT/3+2`.
    folders = {
        clip_id.rsplit("/", k)[0] for clip_id in ids for k in range(1, clip_id.count("/") + 1)
    }
    taken |= folders
    ids = [_next_free(c, taken) if c in folders else c for c in ids]

    def wanted(clip_id: str, relpath: str) -> bool:
        if include and not _matches(include, clip_id, relpath):
            return False
        return not (exclude and _matches(exclude, clip_id, relpath))

    sources = [
        ClipSource(path=path, relpath=relpath, clip_id=clip_id, body_model=model)
        for (relpath, path, model), clip_id in zip(found, ids, strict=True)
        if wanted(clip_id, relpath)
    ]
    sources.sort(key=lambda s: s.clip_id)
    reported = [
        entry
        for entry in sorted(skipped, key=lambda e: e.relpath)
        if _suffix_of(entry.relpath.rpartition("/")[2], suffixes) is None
        or wanted(clip_id_for(entry.relpath), entry.relpath)
    ]
    return CorpusScan(
        sources=tuple(sources if limit is None else sources[:limit]), skipped=tuple(reported)
    )


def discover(
    root: str | os.PathLike[str],
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    limit: int | None = None,
) -> list[ClipSource]:
    """The clips of `scan_corpus(root, include, exclude, limit)` (see there), as a list.

    The skipped entries (broken links, symlink loops, unreadable folders) are dropped here: use
    `scan_corpus` to report them.
    """
    return list(scan_corpus(root, include, exclude, limit).sources)


# --- reading ------------------------------------------------------------------------------------


def _display(text: str) -> str:
    """Text safe inside a one-line message: non-printable characters escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception as 'Type: message' on one line, shortened."""
    text = " ".join(str(exc).split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


class _Problem(Exception):
    """A validation failure inside the reader; read_amass prefixes the file's name."""


def _read_bytes(path: Path) -> tuple[io.BytesIO, bytes, int, str]:
    """The file's bytes in memory, its first bytes, size and SHA-256: one pass over the file."""
    digest = hashlib.sha256()
    buf = io.BytesIO()
    head = b""
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            if len(head) < 8:
                head += chunk[: 8 - len(head)]
            size += len(chunk)
            if size > MAX_FILE_BYTES:
                raise _Problem(f"file is larger than {MAX_FILE_BYTES >> 30} GiB")
            digest.update(chunk)
            buf.write(chunk)
    buf.seek(0)
    return buf, head, size, digest.hexdigest()


def _member(npz: np.lib.npyio.NpzFile, key: str) -> str:
    """The zip member name NumPy reads for a key ('poses' → 'poses.npy')."""
    names = npz.zip.namelist()
    return key + ".npy" if key + ".npy" in names else key


def _load(npz: np.lib.npyio.NpzFile, key: str) -> np.ndarray:
    """One array of the archive, with every way it can fail turned into a named problem."""
    info = npz.zip.getinfo(_member(npz, key))
    if info.file_size > MAX_ARRAY_BYTES:
        raise _Problem(f"key '{key}' is {info.file_size} bytes, over the {MAX_ARRAY_BYTES} limit")
    try:
        value = npz[key]
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise _Problem(
                f"key '{key}' contains pickled object arrays (refused; files are never unpickled)"
            ) from exc
        raise _Problem(f"key '{key}' is not a valid .npy array ({_one_line(exc)})") from exc
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise _Problem(f"key '{key}' is corrupt or truncated ({_one_line(exc)})") from exc
    except MemoryError as exc:
        raise _Problem(f"key '{key}' declares an array too large to load") from exc
    except Exception as exc:  # a mangled header: numpy's parser raises tokenizer/syntax errors
        raise _Problem(f"key '{key}' is not a valid .npy array ({_one_line(exc)})") from exc
    if not isinstance(value, np.ndarray):  # a zip member that is not a .npy file: raw bytes
        raise _Problem(f"key '{key}' is not a .npy array")
    return value


def _floats(value: np.ndarray, key: str) -> np.ndarray:
    """A floating-point array as float64; integers, bools, strings are the wrong dtype."""
    if value.dtype.kind != "f":
        raise _Problem(f"key '{key}' has dtype {value.dtype}, expected floating point")
    return value.astype(np.float64)


def _framerate(value: np.ndarray, key: str) -> float:
    """A plausible frame rate from a scalar or one-element array."""
    if value.dtype.kind not in "iuf" or value.size != 1 or value.ndim > 1:
        raise _Problem(
            f"key '{key}' must be one number, got dtype {value.dtype} shape {_shape(value.shape)}"
        )
    fps = float(value.reshape(()))
    if not np.isfinite(fps):
        raise _Problem(f"frame rate '{key}' is not finite ({fps})")
    if fps <= 0:
        raise _Problem(f"frame rate '{key}' must be positive, got {fps:g}")
    if not MIN_FPS <= fps <= MAX_FPS:
        raise _Problem(
            f"frame rate '{key}' = {fps:g} Hz is absurd (expected {MIN_FPS:g} to {MAX_FPS:g} Hz)"
        )
    return fps


def _gender(value: object) -> str:
    """'male' | 'female' | 'neutral' from str, bytes or a one-element NumPy string array."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "US" or value.size != 1 or value.ndim > 1:
            raise _Problem(
                f"key 'gender' must be one string, got dtype {value.dtype} "
                f"shape {_shape(value.shape)}"
            )
        value = value.reshape(()).item()
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if not isinstance(value, str):
        raise _Problem(f"key 'gender' must be a string, got {type(value).__name__}")
    text = value.strip().lower()
    if len(text) > 3 and text[0] == "b" and text[1] in "'\"" and text[-1] == text[1]:
        text = text[2:-1].strip()  # "b'male'": bytes that were str()-ed on the way to the file
    if text not in _GENDERS:
        raise _Problem(f"unknown gender {_display(repr(value)[:40])}")
    return _GENDERS[text]


def _betas(value: np.ndarray) -> np.ndarray:
    """(B,) float64 shape coefficients from (B,), (1, B) or (T, B) (the first row)."""
    if value.dtype.kind not in "iuf":
        raise _Problem(f"key 'betas' has dtype {value.dtype}, expected numbers")
    if value.ndim == 2 and value.shape[0] >= 1:
        value = value[0]
    if value.ndim != 1:
        raise _Problem(f"key 'betas' has shape {_shape(value.shape)}, expected (B,) or (T, B)")
    betas = value.astype(np.float64)
    if not np.isfinite(betas).all():
        raise _Problem("key 'betas' has non-finite values")
    return betas


def _rows(value: np.ndarray, key: str, widths: tuple[int, ...], expected: str) -> np.ndarray:
    """A (T, W) float64 pose matrix, W in widths, from (T, W) or (T, W / 3, 3) input."""
    arr = _floats(value, key)
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = arr.reshape(arr.shape[0], -1)
    if arr.ndim != 2 or arr.shape[1] not in widths:
        raise _Problem(f"key '{key}' has shape {_shape(value.shape)}, expected {expected}")
    return arr


_POSES_EXPECTED = (
    "(T, 156) SMPL-H, (T, 165) SMPL-X, (T, 66) body or (T, 72) SMPL, or (T, J, 3) of those"
)


def _split_poses(poses: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    """Body (T, 66), hands (T, 90) or None, and the body model a 'poses' width implies."""
    width = poses.shape[1]
    if width == 156:  # SMPL-H: 22 body, then 15 left-hand and 15 right-hand joints
        return poses[:, :66], poses[:, 66:156], "smplh"
    if width == 165:  # SMPL-X: 22 body, jaw, 2 eyes, then 30 hand joints
        return poses[:, :66], poses[:, 75:165], "smplx"
    if width == 72:  # SMPL: joints 22, 23 are its simple hands, which SMPL-H/X do not share
        return poses[:, :66], None, None
    return poses, None, None  # 66: body only


def _frames(arr: np.ndarray, key: str, n: int) -> None:
    if arr.shape[0] != n:
        raise _Problem(
            f"frame count mismatch: 'trans' has {n} frames but '{key}' has {arr.shape[0]}"
        )


def _parse(npz: np.lib.npyio.NpzFile, name_model: str | None) -> dict[str, object]:
    """The Motion fields of an opened archive; raises _Problem on anything invalid."""
    keys = set(npz.files)
    split = "root_orient" in keys and "pose_body" in keys
    missing = []
    if "trans" not in keys:
        missing.append("'trans'")
    if not split and "poses" not in keys:
        if name_model == "smplx" or "root_orient" in keys or "pose_body" in keys:
            absent = [k for k in ("root_orient", "pose_body") if k not in keys]
            missing.append(" and ".join(f"'{k}'" for k in absent) + " (or 'poses')")
        else:
            missing.append("'poses'")
    rate_key = next((k for k in _FRAMERATE_KEYS if k in keys), None)
    if rate_key is None:
        missing.append("'mocap_frame_rate'" if name_model == "smplx" else "'mocap_framerate'")
    missing += [f"'{k}'" for k in ("betas", "gender") if k not in keys]
    if missing:
        raise _Problem(f"missing key{'s' if len(missing) > 1 else ''} {', '.join(missing)}")

    trans = _floats(_load(npz, "trans"), "trans")
    if trans.ndim != 2 or trans.shape[1] != 3:
        raise _Problem(f"key 'trans' has shape {_shape(trans.shape)}, expected (T, 3)")
    n = trans.shape[0]
    sources = {"trans": trans}
    model = name_model
    if split:
        root = _rows(_load(npz, "root_orient"), "root_orient", (3,), "(T, 3)")
        body = _rows(_load(npz, "pose_body"), "pose_body", (63,), "(T, 63) or (T, 21, 3)")
        _frames(root, "root_orient", n)
        _frames(body, "pose_body", n)
        sources |= {"root_orient": root, "pose_body": body}
        hands = None
        if "pose_hand" in keys:
            hands = _rows(_load(npz, "pose_hand"), "pose_hand", (90,), "(T, 90) or (T, 30, 3)")
            _frames(hands, "pose_hand", n)
            sources["pose_hand"] = hands
        body_flat = np.concatenate([root, body], axis=1)
        model = "smplx"
    else:
        poses = _rows(_load(npz, "poses"), "poses", (156, 165, 66, 72), _POSES_EXPECTED)
        _frames(poses, "poses", n)
        body_flat, hands, implied = _split_poses(poses)
        sources["poses"] = poses
        model = implied or model
    if n < 2:
        raise _Problem(f"has {n} frame{'' if n == 1 else 's'}; a clip needs at least 2")

    bad = np.zeros(n, dtype=bool)
    bad_keys = []
    for key, arr in sources.items():
        rows = ~np.isfinite(arr).all(axis=1)
        if rows.any():
            bad |= rows
            bad_keys.append(f"'{key}'")
    if bad.any():
        raise _Problem(
            f"non-finite values (NaN/Inf) in {int(bad.sum())} of {n} frames "
            f"(first: frame {int(np.argmax(bad))}) in {', '.join(bad_keys)}"
        )

    fps = _framerate(_load(npz, rate_key), rate_key)
    betas = _betas(_load(npz, "betas"))
    gender = _gender(_load(npz, "gender"))
    return {
        "fps": fps,
        "root_translation": trans,
        "body_pose": np.ascontiguousarray(body_flat.reshape(n, N_BODY_JOINTS, 3)),
        "hand_pose": None
        if hands is None
        else np.ascontiguousarray(hands.reshape(n, N_HAND_JOINTS, 3)),
        "betas": betas,
        "gender": gender,
        "body_model": model or "smplh",
    }


def read_amass(
    path: str | os.PathLike[str], *, relpath: str | None = None, clip_id: str | None = None
) -> Motion:
    """Read and validate one AMASS clip (SMPL-H `*_poses.npz` or SMPL-X `*_stageii.npz`).

    Only the keys a `Motion` needs are loaded, so unrelated keys (e.g. the pickled marker
    metadata of some SMPL-X files) are never touched. Any failure, whatever the bytes, is a
    `MotionError` with a one-line message starting with the relpath (default: the file name).
    """
    path = Path(path)
    relpath = relpath if relpath is not None else (path.name or str(path))
    label = _display(relpath)
    try:
        try:
            buf, head, size, sha = _read_bytes(path)
        except OSError as exc:
            raise _Problem(f"cannot read file ({_one_line(exc)})") from exc
        if size == 0:
            raise _Problem("empty file")
        if head.startswith(_NPY_MAGIC):
            raise _Problem("is a single .npy array, not an .npz archive")
        if not head.startswith(_ZIP_MAGICS):
            raise _Problem("not an .npz file (not a zip archive)")
        name_suffix = _suffix_of(Path(relpath).name) or _suffix_of(path.name)
        try:
            npz = np.load(buf, allow_pickle=False)
        except (
            zipfile.BadZipFile,
            zlib.error,
            EOFError,
            ValueError,
            OSError,
            NotImplementedError,
        ) as exc:
            raise _Problem(f"corrupt or truncated .npz archive ({_one_line(exc)})") from exc
        with npz:
            fields = _parse(npz, SUFFIXES.get(name_suffix) if name_suffix else None)
        if clip_id is None:
            try:
                clip_id = clip_id_for(relpath)
            except ValueError as exc:  # ClipIdError: nothing usable left after sanitizing
                raise _Problem(f"no valid clip id ({_one_line(exc)})") from exc
    except _Problem as exc:
        raise MotionError(f"{label}: {exc}") from exc.__cause__
    except Exception as exc:  # any other failure still names the file, on one line
        raise MotionError(f"{label}: cannot read ({_one_line(exc)})") from exc
    provenance = Provenance(path=str(path), relpath=relpath, size=size, sha256=sha)
    return Motion(clip_id=clip_id, provenance=provenance, **fields)  # type: ignore[arg-type]
