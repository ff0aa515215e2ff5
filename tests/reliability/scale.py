"""How much work each reliability check does: the CI run at scale 1, longer soak runs at more
(``HEADROOM_RELIABILITY_SCALE=10``; ``benchmarks/soak_reliability.py`` sets it)."""

from __future__ import annotations

import os

SCALE = float(os.environ.get("HEADROOM_RELIABILITY_SCALE", "1"))


def scaled(count: float) -> int:
    """``count`` times the scale (at least 1)."""
    return max(1, round(count * SCALE))
