"""Bounded-cost decoding of untrusted JSON documents: routes from writers, scored routes from models.

Parsing JSON into Python objects costs up to ~30 bytes of memory per byte of input
(a 3 MB list of a million ``{}`` is 72 MB of dicts), and validating it can cost far
more: pydantic reports one error object per bad element, 500 MB for that list. So a
document is measured before it is parsed (objects and arrays counted, cheaply),
parsed, counted again where it matters (steps), and only then validated, with every
list failing fast on its first bad element. One decode runs at a time per process:
validation is CPU-bound under the GIL anyway, so the lock costs no throughput and
caps peak memory at one document's worth however many threads call it.

The worst case this leaves is written down in ``docs/RELIABILITY.md`` (measured by
``bench/decode_memory.py``).
"""

from __future__ import annotations

import json
import re
import threading
from enum import Enum
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from .schemas import RouteRequest, ScoredRoute, format_validation_error

MAX_CONTAINERS = 250_000
"""Objects plus arrays in one document. A real DirectionsResult has about one per 40-60
bytes (points of ``path``/``lat_lngs``), so 5 MiB of it holds about 130,000."""
MAX_STEPS = 20_000
"""Steps in all legs of all routes. Google answers tens to hundreds per leg; each validated
step costs about 1.3 KB of pydantic objects, so this caps validation at about 26 MB."""

_DECODE_LOCK = threading.Lock()
_M = TypeVar("_M", bound=BaseModel)
_STRING = re.compile(rb'"[^"]*"')


class Stage(str, Enum):
    """Where a document was refused: callers treat "not JSON" differently (a writer may not be done)."""

    size = "size"
    json = "json"
    schema = "schema"


class DecodeError(ValueError):
    """The document cannot be used: ``stage`` says where it was refused, the message why, in one line."""

    def __init__(self, stage: Stage, message: str) -> None:
        super().__init__(message)
        self.stage = stage


def count_containers(raw: bytes) -> int:
    """Objects plus arrays in ``raw``, not counting brackets inside strings.

    Counting every ``{`` and ``[`` is a C-speed over-estimate (encoded polylines hold
    brackets); only when that exceeds the limit are strings stripped for the exact
    figure, which costs 100-300 ms on 5 MB.
    """
    rough = raw.count(b"{") + raw.count(b"[")
    if rough <= MAX_CONTAINERS:
        return rough
    # Escapes first (an escaped backslash, then an escaped quote), so that every
    # remaining quote opens or closes a string.
    plain = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    skeleton = _STRING.sub(b"", plain)
    return skeleton.count(b"{") + skeleton.count(b"[")


def _count_steps(doc: object) -> int:
    """Steps in every leg of every route; 0 where the shape is wrong (validation will say where)."""
    if not isinstance(doc, dict):
        return 0
    total = 0
    routes = doc.get("routes")
    for route in routes if isinstance(routes, list) else ():
        legs = route.get("legs") if isinstance(route, dict) else None
        for leg in legs if isinstance(legs, list) else ():
            steps = leg.get("steps") if isinstance(leg, dict) else None
            total += len(steps) if isinstance(steps, list) else 0
    return total


def _loads(raw: bytes | str, what: str, not_json: str) -> object:
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    containers = count_containers(data)
    if containers > MAX_CONTAINERS:
        raise DecodeError(
            Stage.size, f"{what} has {containers:,} objects and arrays, over the limit of {MAX_CONTAINERS:,}"
        )
    try:
        return json.loads(data)
    except RecursionError as exc:
        raise DecodeError(Stage.size, f"{what} is nested too deeply") from exc
    except ValueError as exc:
        empty = not data.strip()
        raise DecodeError(Stage.json, f"{what} is empty" if empty else f"{what} {not_json}: {exc}") from exc


def _validate(model: type[_M], doc: object, what: str) -> _M:
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        raise DecodeError(Stage.schema, f"{what} is not {_ARTICLE[model]}: {format_validation_error(exc)}") from exc


_ARTICLE: dict[type[BaseModel], str] = {RouteRequest: "a route", ScoredRoute: "a scored route"}


def decode_route(raw: bytes, what: str = "the input") -> RouteRequest:
    """A route from an untrusted writer, or DecodeError. Memory stays bounded whatever ``raw`` holds.

    ``what`` names the document in messages ("the input" on the volume, "the route" at upload).
    """
    with _DECODE_LOCK:
        doc = _loads(raw, what, "is not valid JSON")
        steps = _count_steps(doc)
        if steps > MAX_STEPS:
            raise DecodeError(Stage.size, f"{what} has {steps:,} steps, over the limit of {MAX_STEPS:,}")
        return _validate(RouteRequest, doc, what)


def decode_scored(raw: bytes) -> ScoredRoute:
    """A model's output, unwrapping upstream's JSON-string-holding-JSON form, or DecodeError."""
    with _DECODE_LOCK:
        doc = _loads(raw, "the model's output", "is not JSON")
        if isinstance(doc, str):
            doc = _loads(doc, "the model's output", "is not JSON")
        return _validate(ScoredRoute, doc, "the model's output")
