"""Pydantic documents: what a route input and a scored result must look like."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import BaseModel

from modelgen_watcher.volume.schemas import (
    RouteRequest,
    ScoredPoint,
    ScoredRoute,
    ValidationError,
    format_validation_error,
)
from tests.helpers import route


def _first_step(doc: dict[str, Any]) -> dict[str, Any]:
    step: dict[str, Any] = doc["routes"][0]["legs"][0]["steps"][0]
    return step


def test_route_request_accepts_extra_keys_and_missing_maneuver() -> None:
    doc = route(["", "turn-left"], request={"travelMode": "BICYCLING"}, status="OK")
    del _first_step(doc)["maneuver"]
    parsed = RouteRequest.model_validate(doc)
    steps = parsed.routes[0].legs[0].steps
    assert steps[0].maneuver is None
    assert steps[1].maneuver == "turn-left"
    assert parsed.model_extra is not None and parsed.model_extra["status"] == "OK"


def test_route_request_accepts_rider() -> None:
    parsed = RouteRequest.model_validate(route(rider={"daylight": False}))
    assert parsed.rider is not None
    assert parsed.rider.daylight is False and parsed.rider.motorist_at_fault is True


def _no_legs() -> dict[str, Any]:
    doc = route()
    doc["routes"][0]["legs"] = []
    return doc


def _no_steps() -> dict[str, Any]:
    doc = route()
    doc["routes"][0]["legs"][0]["steps"] = []
    return doc


def _lat(value: object) -> dict[str, Any]:
    doc = route()
    _first_step(doc)["end_location"]["lat"] = value
    return doc


@pytest.mark.parametrize(
    "doc",
    [{"geocoded_waypoints": []}, _no_legs(), _no_steps(), _lat(91.0), _lat(-90.5), _lat(math.nan), _lat(math.inf)],
    ids=["no-routes-key", "no-legs", "no-steps", "lat-91", "lat-minus-90.5", "lat-nan", "lat-inf"],
)
def test_route_request_rejects(doc: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RouteRequest.model_validate(doc)


def _scored(n_routes: int, totals: list[float]) -> dict[str, Any]:
    return {"routes": [[{"score": 0.9, "lat": 30.0, "lng": -97.0}] for _ in range(n_routes)], "totalScores": totals}


def test_scored_route_accepts_one_total_per_route() -> None:
    parsed = ScoredRoute.model_validate(_scored(2, [0.9, 0.8]))
    assert parsed.totalScores == [0.9, 0.8]
    assert parsed.meta is None


def test_scored_route_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValidationError, match="2 routes but 1 totalScores"):
        ScoredRoute.model_validate(_scored(2, [0.9]))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_scored_route_rejects_non_finite_numbers(bad: float) -> None:
    with pytest.raises(ValidationError):
        ScoredRoute.model_validate(_scored(1, [bad]))
    doc = _scored(1, [0.5])
    doc["routes"][0][0]["score"] = bad
    with pytest.raises(ValidationError):
        ScoredRoute.model_validate(doc)


def test_format_validation_error_is_one_line_naming_the_place() -> None:
    with pytest.raises(ValidationError) as info:
        RouteRequest.model_validate(_lat(95.0))
    line = format_validation_error(info.value)
    assert "\n" not in line
    assert line.startswith("routes.0.legs.0.steps.0.end_location.lat:")


def test_format_validation_error_limits_the_count() -> None:
    doc: dict[str, Any] = {"lat": "x", "lng": None, "score": [], "extra": 1}  # three bad fields, three errors
    with pytest.raises(ValidationError) as info:
        ScoredPoint.model_validate(doc)
    line = format_validation_error(info.value, limit=2)
    assert "\n" not in line
    assert line.endswith("and 1 more")


@pytest.mark.parametrize("model", [RouteRequest, ScoredRoute])
def test_lists_fail_fast_so_a_million_bad_elements_cost_one_error(model: type[BaseModel]) -> None:
    """Validation errors are objects: one per bad element would cost hundreds of MB."""
    doc = {"routes": [{}] * 1000, "totalScores": ["x"] * 1000}
    with pytest.raises(ValidationError) as info:
        model.model_validate(doc)
    assert info.value.error_count() <= 2


@pytest.mark.parametrize("value", ["30.2", True, None, [30.2]])
def test_coordinates_must_be_numbers(value: object) -> None:
    with pytest.raises(ValidationError):
        RouteRequest.model_validate(_lat(value))
