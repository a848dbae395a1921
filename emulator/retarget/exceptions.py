"""Exceptions of the retargeting stage."""

from __future__ import annotations


class RetargetError(ValueError):
    """A clip cannot be retargeted; the message is one line naming the reason."""


class CorrespondenceError(ValueError):
    """A correspondence file is malformed or does not fit the model; one line naming the entry."""
