"""The one error type of the analysis tools: bad input, reported (exit 2) before any weights load."""
from __future__ import annotations


class AnalysisError(ValueError):
    """An input an analysis tool cannot use; the message names the flag or file and the fix."""
