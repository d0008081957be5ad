"""A job's priority: an integer 0-100, higher first, with named levels for people.

The names are what the CLI, the console and most bodies use; any integer in the range is
accepted, so a team can slot a job between two levels. A sweep's trials take the sweep's job's
priority.
"""

from __future__ import annotations

from typing import Any

LOW, NORMAL, HIGH = 20, 50, 80
LEVELS: dict[str, int] = {"low": LOW, "normal": NORMAL, "high": HIGH}
MIN_PRIORITY, MAX_PRIORITY = 0, 100


def parse(value: Any) -> Any:
    """A priority as given (a level's name, any case, or an integer) -> its integer; anything
    else is returned as is for the model's own check to refuse it with its reason."""
    if isinstance(value, str):
        key = value.strip().lower()
        if key in LEVELS:
            return LEVELS[key]
        if key.isascii() and key.lstrip("-").isdigit() and len(key) < 6:
            return int(key)
        raise ValueError(f"unknown priority {value[:40]!r}: a number {MIN_PRIORITY}-{MAX_PRIORITY} "
                         f"or one of {', '.join(LEVELS)}")
    return value


def name_of(priority: int) -> str:
    """The level's name, or the number with the level just below it (e.g. "normal+10")."""
    below = [(v, k) for k, v in LEVELS.items() if v <= priority]
    if not below:
        return str(priority)
    value, name = max(below)
    return name if value == priority else f"{name}+{priority - value}"
