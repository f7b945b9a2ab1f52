"""The library's on-disk cache: teachers trained from recipes, feature networks for metrics.

Everything lives under $DISTILL_CACHE (default ~/.cache/distill), in a subdirectory per kind,
named by the hash of what produced it, so nothing is ever trained twice for the same inputs.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """$DISTILL_CACHE, or ~/.cache/distill."""
    return Path(os.environ.get("DISTILL_CACHE", Path.home() / ".cache" / "distill"))
