"""The value types of the contract: what a field may hold, decided once for every body.

A hostile or buggy client must get a 422 naming the field before anything is written, and
nothing a client can send may later break a read or a response. So, for every body:

- numbers are strict (no `true` for 1, no "3" for 3), bounded (`Count`, `Seq`, ...: a value the
  database column holds and that makes sense for the field) and finite (no NaN or Infinity);
- text holds no unpaired UTF-16 surrogate (JSON `"\\ud800"`), which no database or UTF-8
  response can carry, and no NUL (`"\\u0000"`), which PostgreSQL's text refuses;
- free-form JSON (`config`, event `data`) holds only such text and finite numbers, nested at
  most MAX_DEPTH deep;
- metric values are numbers or null, and a non-finite one is kept as the string "NaN",
  "Infinity" or "-Infinity" (JSON has no such numbers; a NaN loss is news: training diverged);
- timestamps go out as RFC 3339 UTC with microseconds and `Z`, one format everywhere.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, PlainSerializer, PlainValidator, WithJsonSchema
from sdk import contract
from sdk.contract import INF as INF, MAX_SEQ as MAX_SEQ, NAN as NAN, NEG_INF as NEG_INF  # re-exported
from sdk.contract import NON_FINITE as NON_FINITE, wire_float

# the limits and wire forms are the contract's (trainers/sdk/contract.py), shared with the SDK
MAX_DEPTH = contract.MAX_JSON_DEPTH
_NOT_TEXT = contract.INVALID_TEXT  # surrogates, and NUL (PostgreSQL text refuses it)


def check_text(value: str) -> str:
    match = _NOT_TEXT.search(value)
    if match:
        what = "a NUL character" if match.group() == "\x00" else "an unpaired UTF-16 surrogate"
        raise ValueError(f"{what} (\\u{ord(match.group()):04x}) at character {match.start()}: not valid text")
    return value


def check_json(value: Any, path: str = "", depth: int = 0) -> Any:
    """Free-form JSON: text without surrogates (keys too), finite numbers, bounded depth."""
    where = f" at {path}" if path else ""
    if depth > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels{where}")
    if isinstance(value, str):
        try:
            check_text(value)
        except ValueError as exc:
            raise ValueError(f"{exc}{where}") from None
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value} is not a JSON number{where}")
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"object keys must be strings{where}")
            check_json(key, path, depth + 1)
            check_json(item, f"{path}.{key}" if path else key, depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_json(item, f"{path}[{index}]", depth + 1)
    return value


def metric_value(value: Any) -> float | int | str | None:
    if value is None or (isinstance(value, str) and value in NON_FINITE):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"a metric is a number or null, not {type(value).__name__}")
    if isinstance(value, int) and abs(value) > MAX_SEQ:
        try:
            value = float(value)  # a metric, not an id: kept as the nearest float
        except OverflowError:
            value = math.inf if value > 0 else -math.inf
    if isinstance(value, float):
        return wire_float(value)
    return value


def non_finite(metrics: dict[str, Any]) -> dict[str, str]:
    return {name: value for name, value in metrics.items() if isinstance(value, str) and value in NON_FINITE}


def readable(value: Any, depth: int = 0) -> Any:
    """What a read returns for a stored value, whatever the database holds (rows written before
    these rules, or by hand), and what a log line is stored as: text with U+FFFD for surrogates
    and NUL, non-finite numbers as their names.
    A stored value must never make a read or a response fail."""
    if isinstance(value, str):
        return _NOT_TEXT.sub("\ufffd", value) if _NOT_TEXT.search(value) else value
    if isinstance(value, float):
        return wire_float(value)
    if isinstance(value, dict):
        if depth > MAX_DEPTH:
            return {}
        return {readable(str(k)): readable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [] if depth > MAX_DEPTH else [readable(v, depth + 1) for v in value]
    return value


def as_utc(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value


def rfc3339(value: datetime) -> str:
    return as_utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


Text = Annotated[str, AfterValidator(check_text)]
JsonObject = Annotated[dict[str, Any], AfterValidator(check_json)]
MetricName = Annotated[str, Field(min_length=1, max_length=contract.MAX_METRIC_NAME), AfterValidator(check_text)]
MetricValue = Annotated[
    float | int | str | None,
    PlainValidator(metric_value),
    WithJsonSchema({"anyOf": [{"type": "number"}, {"type": "null"}, {"enum": sorted(NON_FINITE)}],
                    "description": "a number; a non-finite value is sent and kept as "
                                   "\"NaN\", \"Infinity\" or \"-Infinity\""}),
]
Metrics = dict[MetricName, MetricValue]

# strict, bounded numbers: `true` is not 1, and every value fits its database column
Seq = Annotated[int, Field(strict=True, ge=0, le=MAX_SEQ)]
Attempt = Annotated[int, Field(strict=True, ge=1, le=contract.MAX_ATTEMPT)]
Epoch = Annotated[int, Field(strict=True, ge=0, le=contract.MAX_EPOCH)]
Step = Annotated[int, Field(strict=True, ge=0, le=contract.MAX_STEP)]
Timestamp = Annotated[datetime, BeforeValidator(as_utc), PlainSerializer(rfc3339, return_type=str, when_used="json"),
                      WithJsonSchema({"type": "string", "format": "date-time",
                                      "examples": ["2026-11-30T21:50:00.000000Z"]})]


def finite_float(**bounds: Any) -> Any:
    """A strict (no booleans), finite float field with bounds."""
    return Field(strict=True, allow_inf_nan=False, **bounds)
