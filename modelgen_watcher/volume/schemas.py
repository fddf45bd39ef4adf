"""Pydantic models of every document on the volume: route input, scored result, status, health.

The watcher validates with them before and after the model runs; the client and the
server validate with the same classes, so a document is valid everywhere or nowhere.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from enum import Enum
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

__all__ = [
    "ErrorInfo",
    "ErrorKind",
    "Health",
    "ResultMeta",
    "RouteRequest",
    "ScoredPoint",
    "ScoredRoute",
    "State",
    "Status",
    "ValidationError",
    "WatcherHealth",
    "format_validation_error",
    "utc_now_iso",
]


def utc_now_iso() -> str:
    """UTC timestamp with millisecond precision and a ``Z`` suffix, as every document uses."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_validation_error(exc: ValidationError, limit: int = 3) -> str:
    """One line a person can act on: where in the document, and what is wrong there."""
    parts = []
    for err in exc.errors()[:limit]:
        where = ".".join(str(p) for p in err["loc"]) or "document"
        parts.append(f"{where}: {err['msg']}")
    more = exc.error_count() - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


class _Open(BaseModel):
    """Extra keys are kept and ignored: browsers send the whole DirectionsResult."""

    model_config = ConfigDict(extra="allow")


# Every list of an untrusted document stops at its first bad element: a million bad
# elements would otherwise cost a million error objects (hundreds of MB).
_FAIL_FAST = Field(fail_fast=True)

Coordinate = Annotated[float, Strict(), Field(allow_inf_nan=False)]
"""A JSON number: strings and booleans are refused here, not left for the model to trip on."""


class LatLng(_Open):
    lat: Annotated[Coordinate, Field(ge=-90, le=90)]
    lng: Annotated[Coordinate, Field(ge=-180, le=180)]


class Step(_Open):
    end_location: LatLng
    maneuver: str | None = None


class Leg(_Open):
    steps: list[Step] = Field(min_length=1, fail_fast=True)


class Route(_Open):
    legs: list[Leg] = Field(min_length=1, fail_fast=True)


class Rider(BaseModel):
    """Optional rider conditions for the reference model (defaults match upstream's hard-coded ones)."""

    model_config = ConfigDict(extra="forbid")

    daylight: StrictBool = True
    motorist_at_fault: StrictBool = True


class RouteRequest(_Open):
    """A Google Maps DirectionsResult as the browser posts it."""

    routes: Annotated[list[Route], _FAIL_FAST]
    rider: Rider | None = None


class ScoredPoint(BaseModel):
    score: float = Field(allow_inf_nan=False)
    lat: float = Field(allow_inf_nan=False)
    lng: float = Field(allow_inf_nan=False)


class ResultMeta(BaseModel):
    input_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    model: str
    duration_ms: int = Field(ge=0)
    scored_at: str


class ScoredRoute(BaseModel):
    """A model's answer; ``meta`` is added by the watcher when it publishes."""

    routes: Annotated[list[Annotated[list[ScoredPoint], _FAIL_FAST]], _FAIL_FAST]
    totalScores: Annotated[list[float], _FAIL_FAST]  # noqa: N815 - the upstream field name
    meta: ResultMeta | None = None

    @field_validator("totalScores")
    @classmethod
    def _finite(cls, values: list[float]) -> list[float]:
        if any(not math.isfinite(v) for v in values):
            raise ValueError("totalScores must be finite numbers")
        return values

    @model_validator(mode="after")
    def _one_total_per_route(self) -> ScoredRoute:
        if len(self.routes) != len(self.totalScores):
            raise ValueError(
                f"{len(self.routes)} routes but {len(self.totalScores)} totalScores; expected one total per route"
            )
        return self


class State(str, Enum):
    running = "running"
    ok = "ok"
    error = "error"


class ErrorKind(str, Enum):
    invalid_input = "invalid_input"
    model_failed = "model_failed"
    model_timeout = "model_timeout"
    invalid_output = "invalid_output"
    io_error = "io_error"


class ErrorInfo(BaseModel):
    kind: ErrorKind
    message: str
    detail: str | None = None


class Status(BaseModel):
    state: State
    key: str | None = None
    input_sha256: str | None = None
    started_at: str
    finished_at: str | None = None
    duration_ms: int = 0
    error: ErrorInfo | None = None


class Health(BaseModel):
    pid: int
    started_at: str
    heartbeat_at: str
    observer: Literal["native", "polling"]
    ready: bool
    reason: str | None = None
    """Why the watcher is not ready (the volume refuses writes...), when it says so."""


class WatcherHealth(Health):
    """A shared-mode watcher's heartbeat (``.modelgen/watchers/<id>.json``): the lone watcher's, plus who wrote it."""

    watcher_id: str
    hostname: str
    shared: Literal[True] = True
