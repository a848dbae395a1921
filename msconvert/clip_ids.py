"""Clip ids: '/'-separated names that can never leave a catalog's root (every layer uses them)."""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9._+\-]")
_MAX_COMPONENT = 120


class ClipIdError(ValueError):
    """A clip id that cannot be made safe (empty after cleaning)."""


def sanitize_clip_id(raw: str) -> str:
    """A '/'-separated clip id that can never leave the catalog root.

    Backslashes count as separators; empty and '.' parts are dropped; characters outside
    [A-Za-z0-9._+-] become '_'; a part made only of dots, or starting with a dot, is prefixed
    with '_' (so '..' can never climb and no part is hidden); 'zarr.json' is reserved.
    """
    parts = []
    for part in raw.replace("\\", "/").split("/"):
        if part in ("", "."):
            continue
        part = _UNSAFE.sub("_", part)[:_MAX_COMPONENT]
        if part.startswith(".") or part == "zarr.json":
            part = "_" + part
        parts.append(part)
    if not parts:
        raise ClipIdError(f"clip id {raw!r} is empty after sanitizing")
    return "/".join(parts)
