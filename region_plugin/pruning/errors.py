"""The one error type of region-prune: bad input, reported before any expensive work."""
from __future__ import annotations


class PruneError(ValueError):
    """An input region-prune cannot use; the message names the flag or file and the fix."""
