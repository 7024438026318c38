"""Learning-rate schedule: linear warmup, cosine decay, and a short linear re-warmup after
every target switch (LayerLock: +~1 SSv2 point in the paper).

The schedule is a pure function of the step, so resuming needs no scheduler state beyond the
step counter. The re-warmup multiplies the cosine envelope by a ramp that starts at
``1 / rewarmup_steps`` on the switch step and reaches 1 ``rewarmup_steps`` later.
"""
from __future__ import annotations

import bisect
import math
from typing import Sequence


def cosine_with_warmup(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Multiplier in (0, 1] of the peak learning rate at update ``step`` (0-based)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def rewarmup_factor(step: int, switches: Sequence[int], rewarmup: int) -> float:
    """Ramp after the latest switch at or before ``step`` (``switches`` sorted)."""
    i = bisect.bisect_right(switches, step)
    if i == 0 or rewarmup <= 0:
        return 1.0
    return min(1.0, (step - switches[i - 1] + 1) / rewarmup)


def lr_at(step: int, recipe: dict, switches: Sequence[int]) -> float:
    """Learning rate of update ``step`` under a resolved recipe and its target-switch steps."""
    f = cosine_with_warmup(step, recipe["steps"], recipe["warmup_steps"], recipe["min_lr_ratio"])
    return recipe["lr"] * f * rewarmup_factor(step, switches, recipe["rewarmup_steps"])
