"""A sweep's search space: which fields of a job body it may vary, and how.

Pure (no Ray, no Tune): the API checks a space here before anything is written, the driver turns it
into Tune's domains (driver.py) and every trial's job body is the base body with the trial's values
put in by `apply`.

A space maps a *path* to a *domain*:

- paths: `learning_rate`, `batch_size`, `image_size`, or `config.<key>` / `advanced_config.<key>`
  (framework arguments; one level, a Python-identifier key). `epochs` is the budget a scheduler
  shares out (ASHA's max_t), so it is not searched; resources and the dataset are the sweep's, not
  a trial's.
- domains: `{"choice": [v, ...]}` (1 to MAX_CHOICES JSON scalars), `{"uniform": [lo, hi]}`,
  `{"loguniform": [lo, hi]}` (0 < lo), `{"int": [lo, hi]}` (integers, both ends included).

Grid search takes choices only, and runs every combination once (at most MAX_GRID).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from itertools import product
from typing import Any

TOP_LEVEL = ("learning_rate", "batch_size", "image_size")
NESTED_ROOTS = ("config", "advanced_config")
KINDS = ("choice", "uniform", "loguniform", "int")
MAX_CHOICES = 100
MAX_PARAMS = 20
MAX_GRID = 1000  # grid combinations; a bigger grid is refused (422), not cut short
MAX_INT_BOUND = 2**53  # a range's integer bounds: exact as floats (what Tune samples with and JSON readers read)
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")  # fullmatch: `$` would let a trailing newline in
Scalar = str | int | float | bool | None


class SpaceError(ValueError):
    """A space the platform refuses: `path` names the place in the body (`space.<path>`)."""

    def __init__(self, path: str, msg: str):
        super().__init__(msg)
        self.path = path
        self.msg = msg


@dataclass(frozen=True)
class Domain:
    kind: str  # one of KINDS
    values: tuple[Any, ...]  # the choices, or (lo, hi)

    def candidates(self) -> tuple[Any, ...]:
        """The values a job body must accept for every trial to be valid: every choice, or both
        ends of a range (as floats for uniform and loguniform: Tune samples floats there whatever
        the bounds' type, so an integer field such as batch_size is refused for them)."""
        if self.kind in ("uniform", "loguniform"):
            return tuple(float(v) for v in self.values)
        return self.values

    def as_json(self) -> dict[str, list[Any]]:
        return {self.kind: list(self.values)}


def check_path(path: str) -> None:
    if path in TOP_LEVEL:
        return
    if path == "epochs":
        raise SpaceError(path, "epochs is the sweep's budget per trial (the scheduler's max_t): set it in "
                               "`job`, it is not searched")
    root, dot, key = path.partition(".")
    if dot and root in NESTED_ROOTS:
        if not _KEY.fullmatch(key):
            raise SpaceError(path, f"{root} keys in a space are identifiers (letters, digits, _; one level)")
        return
    raise SpaceError(path, f"unknown field {path!r}: a space varies {', '.join(TOP_LEVEL)}, "
                           "config.<key> or advanced_config.<key>")


def parse_domain(path: str, raw: Any) -> Domain:
    if not isinstance(raw, dict) or len(raw) != 1:
        raise SpaceError(path, f"a domain is one of {{{', '.join(repr(k) + ': [...]' for k in KINDS)}}}")
    (kind, values), = raw.items()
    if kind not in KINDS:
        raise SpaceError(path, f"unknown domain {kind!r}: one of {', '.join(KINDS)}")
    if not isinstance(values, list):
        raise SpaceError(path, f"{kind} takes a list")
    if kind == "choice":
        if not values:
            raise SpaceError(path, "an empty choice: give at least one value")
        if len(values) > MAX_CHOICES:
            raise SpaceError(path, f"at most {MAX_CHOICES} choices")
        for value in values:
            if isinstance(value, dict | list):
                raise SpaceError(path, "choices are numbers, text, booleans or null")
            if isinstance(value, float) and not math.isfinite(value):
                raise SpaceError(path, f"{value} is not a JSON number")
        if len({repr(v) for v in values}) != len(values):
            raise SpaceError(path, "a choice lists a value twice")
        return Domain(kind, tuple(values))
    if len(values) != 2 or any(isinstance(v, bool) or not isinstance(v, int | float) for v in values):
        raise SpaceError(path, f"{kind} takes [low, high], two numbers")
    lo, hi = values
    if any(isinstance(v, int) and abs(v) > MAX_INT_BOUND for v in (lo, hi)):
        raise SpaceError(path, f"{kind} bounds are at most 2**53 in size")
    if not all(math.isfinite(v) for v in (lo, hi)):
        raise SpaceError(path, f"{kind} bounds are finite numbers")
    if kind == "int" and not all(isinstance(v, int) for v in (lo, hi)):
        raise SpaceError(path, "int takes integer bounds")
    if kind == "loguniform" and lo <= 0:
        raise SpaceError(path, f"loguniform needs 0 < low (got {lo}): the logarithm of {lo} is undefined")
    if not lo < hi:
        raise SpaceError(path, f"{kind} needs low < high (got [{lo}, {hi}])")
    return Domain(kind, (lo, hi))


def parse_space(raw: dict[str, Any], search: str) -> dict[str, Domain]:
    """Every path checked, every domain parsed; grid: choices only, at most MAX_GRID combinations."""
    if not raw:
        raise SpaceError("", "a space names at least one field")
    if len(raw) > MAX_PARAMS:
        raise SpaceError("", f"at most {MAX_PARAMS} fields in a space")
    space = {}
    for path, domain in raw.items():
        check_path(path)
        space[path] = parse_domain(path, domain)
    if search == "grid":
        for path, domain in space.items():
            if domain.kind != "choice":
                raise SpaceError(path, f"grid search takes choice lists only, not {domain.kind}")
        size = grid_size(space)
        if size > MAX_GRID:
            raise SpaceError("", f"the grid has {size} combinations; at most {MAX_GRID}")
    return space


def grid_size(space: dict[str, Domain]) -> int:
    return math.prod(len(d.values) for d in space.values())


def grid(space: dict[str, Domain]) -> list[dict[str, Any]]:
    """Every combination, in a stable order (the first path varies slowest)."""
    paths = list(space)
    return [dict(zip(paths, combo, strict=True)) for combo in product(*(space[p].values for p in paths))]


def apply(body: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The job body of a trial: `body` with each path set to the trial's value (a copy)."""
    out = {**body, **{root: dict(body.get(root) or {}) for root in NESTED_ROOTS}}
    for path, value in params.items():
        root, dot, key = path.partition(".")
        if dot:
            out[root][key] = value
        else:
            out[path] = value
    return out


def corners(space: dict[str, Domain]) -> list[tuple[str, Any]]:
    """(path, value) for every candidate value of every path: what the API checks a job body
    accepts, one at a time, before the sweep is created."""
    return [(path, value) for path, domain in space.items() for value in domain.candidates()]
