"""A trial's metric, epoch by epoch, from its job's stored metrics (pure).

The store keeps one metrics row per (attempt, epoch), merged from that epoch's heartbeats
(store/db.upsert_metrics). What Tune is told, and what a sweep page shows, is one value per epoch:

- a retried attempt's rows replace the earlier attempt's for the same epoch;
- an epoch is *complete* once a later epoch has a row, once the job is final, or when its row
  came from an end-of-epoch heartbeat: no step (a trainer that reports once an epoch), or the
  step equals the job's total_steps (the SDK's report_progress at the end of an epoch). Mid-epoch
  heartbeats (a loss every few steps) never stand for the epoch;
- a complete epoch without the metric is a trainer that does not report it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

MISSING = object()  # an epoch that is complete but carries no value for the metric


def _merged(rows: Iterable[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: (r["attempt"], r["epoch"])):
        out[row["epoch"]] = row  # a later attempt's epoch replaces an earlier attempt's
    return out


def completed(rows: Iterable[dict[str, Any]], metric: str, total_steps: int | None,
              final: bool) -> list[tuple[int, Any]]:
    """(epoch, value or MISSING) for every complete epoch, in order."""
    merged = _merged(rows)
    epochs = sorted(merged)
    out: list[tuple[int, Any]] = []
    for i, epoch in enumerate(epochs):
        row = merged[epoch]
        done = (i + 1 < len(epochs) or final or row.get("step") is None
                or (total_steps is not None and row["step"] >= total_steps))
        if not done:
            break
        out.append((epoch, row["metrics"].get(metric, MISSING)))
    return out


def history(rows: Iterable[dict[str, Any]], metric: str) -> list[tuple[int, Any]]:
    """(epoch, value) for every epoch whose row holds the metric: what a chart draws."""
    merged = _merged(rows)
    return [(epoch, merged[epoch]["metrics"][metric]) for epoch in sorted(merged) if metric in merged[epoch]["metrics"]]


def number(value: Any) -> float | None:
    """A metric as a number to compare: None for a missing or non-finite one ("NaN" and friends
    as the store keeps them)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def best(values: Iterable[Any], mode: str) -> float | None:
    numbers = [n for n in (number(v) for v in values) if n is not None]
    if not numbers:
        return None
    return max(numbers) if mode == "max" else min(numbers)


def better(a: float | None, b: float | None, mode: str) -> bool:
    """Whether a beats b (None never beats anything)."""
    if a is None:
        return False
    if b is None:
        return True
    return a > b if mode == "max" else a < b
