"""Each project's use of the cluster, decayed: what fair share remembers (pure).

A project's usage is its resource-seconds (CPU-seconds, GPU-seconds) with an exponential decay
of half-life H (`fair_share_half_life_s`, an hour by default): what a project used an hour ago
counts half, a day ago 2^-24, so yesterday's big run does not starve a project today. The
policy compares projects by their *recent rate*: usage x ln2 / H, which is, for a project that
has held the same resources for a long while, exactly those resources (the decay's weighted
average of its holdings).
"""

from __future__ import annotations

import math

from ray_app.scheduling.resources import Resources


def accrue(usage: Resources, held: Resources, dt: float, half_life_s: float) -> Resources:
    """`usage` after `dt` seconds during which the project held `held` (exact for a constant
    holding: the decayed integral)."""
    if dt <= 0:
        return usage
    keep = 2.0 ** (-dt / half_life_s)
    return usage.times(keep) + held.times(half_life_s / math.log(2) * (1.0 - keep))


def recent_rate(usage: Resources, half_life_s: float) -> Resources:
    """The decay-weighted average of what the project held (CPUs, GPUs), from its usage."""
    return usage.times(math.log(2) / half_life_s)
