"""The picture of a scored route (``modelgen_watcher/picture.py``), read back as XML."""

from __future__ import annotations

import itertools
import math
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from modelgen_watcher.picture import VIRIDIS, Scale, colour_at, nice_distance, render, route_starts
from modelgen_watcher.volume.schemas import RouteRequest, ScoredRoute
from tests.helpers import route

SVG = "{http://www.w3.org/2000/svg}"


def scored(*routes: list[tuple[float, float, float]]) -> ScoredRoute:
    """A result of routes given as (score, lat, lng) per step; totals are the means."""
    return ScoredRoute.model_validate({
        "routes": [[{"score": s, "lat": lat, "lng": lng} for s, lat, lng in r] for r in routes],
        "totalScores": [sum(p[0] for p in r) / len(r) if r else 0.0 for r in routes],
    })


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def steps_of(doc: ET.Element) -> list[list[ET.Element]]:
    return [g.findall(f"{SVG}path[@class='step']") for g in doc.findall(f"{SVG}g[@class='route']")]


def endpoints(d: str) -> list[tuple[float, float]]:
    nums = [float(n) for n in d.replace("M", " ").replace("L", " ").replace("h0", "").split()]
    return list(zip(nums[::2], nums[1::2], strict=True))


ROUTE = [(0.9, 30.2860, -97.7390), (0.5, 30.2870, -97.7420), (0.7, 30.2800, -97.7425), (0.9, 30.2720, -97.7445)]


def test_viridis_ends_and_middle():
    assert colour_at(0) == VIRIDIS[0] == "#440154"
    assert colour_at(1) == VIRIDIS[-1] == "#fde725"
    assert colour_at(0.5) == VIRIDIS[5]
    assert colour_at(-3) == VIRIDIS[0] and colour_at(7) == VIRIDIS[-1]  # clipped
    assert colour_at(0.05) not in (VIRIDIS[0], VIRIDIS[1])  # between two stops, interpolated


def test_one_path_per_step_coloured_by_its_place_on_the_results_scale():
    doc = parse(render(scored(ROUTE)))
    (steps,) = steps_of(doc)
    assert [float(p.get("data-score", "")) for p in steps] == [0.9, 0.5, 0.7, 0.9]
    assert [p.get("stroke") for p in steps] == [VIRIDIS[-1], VIRIDIS[0], VIRIDIS[5], VIRIDIS[-1]]
    titles = [p.findtext(f"{SVG}title") for p in steps]
    assert titles[1] == "Route 1, step 2: score 0.500"


def test_each_step_runs_from_the_previous_steps_end_and_north_is_up():
    doc = parse(render(scored(ROUTE)))
    (steps,) = steps_of(doc)
    ends = [endpoints(p.get("d", "")) for p in steps]
    assert len(ends[0]) == 1  # no start known: the first step is a dot at its end
    for before, after in itertools.pairwise(ends):
        assert after[0] == before[-1]
    # The route heads south after step 2: y grows downwards on screen.
    assert ends[3][-1][1] > ends[2][-1][1] > ends[1][-1][1]
    # West is left: step 2 goes west (lng falls), so x falls.
    assert ends[1][-1][0] < ends[1][0][0]


def test_the_inputs_start_makes_the_first_step_a_segment():
    doc = route(["", "turn-left"])
    doc["routes"][0]["legs"][0]["steps"][0]["start_location"] = {"lat": 30.2850, "lng": -97.7360}
    starts = route_starts(RouteRequest.model_validate(doc))
    assert starts == [(30.2850, -97.7360)]
    points = [(0.9, s["end_location"]["lat"], s["end_location"]["lng"]) for s in doc["routes"][0]["legs"][0]["steps"]]
    (steps,) = steps_of(parse(render(scored(points), starts)))
    assert len(endpoints(steps[0].get("d", ""))) == 2


@pytest.mark.parametrize("loc", [None, {"lat": "30", "lng": -97.7}, {"lat": 95.0, "lng": 0.0}, {"lat": True, "lng": 1},
                                 "north", {"lat": float("nan"), "lng": 0.0}])
def test_a_start_that_is_not_a_place_is_ignored(loc: Any):
    doc = route([""])
    doc["routes"][0]["legs"][0]["steps"][0]["start_location"] = loc
    assert route_starts(RouteRequest.model_validate(doc)) == [None]


def test_the_leg_start_is_used_when_the_step_has_none():
    doc = route([""])
    doc["routes"][0]["legs"][0]["start_location"] = {"lat": 30.1, "lng": -97.1}
    assert route_starts(RouteRequest.model_validate(doc)) == [(30.1, -97.1)]


def test_text_alternatives_say_what_the_picture_shows():
    doc = parse(render(scored(ROUTE, ROUTE[:2]), id_prefix="route-abc"))
    assert doc.get("role") == "img"
    assert doc.get("aria-labelledby") == "route-abc-title route-abc-desc"
    assert doc.findtext(f"{SVG}title") == "Scored route: 2 routes, 6 steps"
    desc = doc.findtext(f"{SVG}desc") or ""
    assert "Route 1: 4 steps, total 0.750; lowest score 0.500 at step 2, highest 0.900 at step 1." in desc
    assert "dark purple (score 0.500, riskier) to yellow (score 0.900, safer)" in desc
    ids = [e.get("id") for e in doc.iter() if e.get("id")]
    assert ids and all(i is not None and i.startswith("route-abc-") for i in ids)


def test_one_scale_for_every_route_and_a_legend_naming_its_ends():
    svg = render(scored([(0.2, 30.0, -97.0), (0.4, 30.001, -97.0)], [(0.8, 30.0, -97.0), (0.6, 30.001, -97.0)]))
    doc = parse(svg)
    first, second = steps_of(doc)
    assert first[0].get("stroke") == VIRIDIS[0] and second[0].get("stroke") == VIRIDIS[-1]
    legend = " ".join(t.text or "" for t in doc.iter(f"{SVG}text"))
    assert "0.200 riskier" in legend and "safer 0.800" in legend


def test_every_step_scored_the_same_sits_mid_scale():
    (steps,) = steps_of(parse(render(scored([(0.9, 30.0, -97.0), (0.9, 30.01, -97.0)]))))
    assert {p.get("stroke") for p in steps} == {VIRIDIS[5]}
    assert Scale(0.9, 0.9).position(0.9) == 0.5


def test_a_scale_bar_of_a_round_length_and_a_north_arrow():
    doc = parse(render(scored(ROUTE)))
    bar = doc.find(f".//{SVG}g[@class='scale-bar']")
    assert bar is not None
    metres = float(bar.get("data-metres", ""))
    assert metres / 10 ** math.floor(math.log10(metres)) in (1, 2, 5)
    assert doc.find(f".//{SVG}g[@class='north-arrow']") is not None
    assert nice_distance(740) == 500 and nice_distance(2100) == 2000 and nice_distance(0.3) == 1


def test_odd_results_still_draw():
    one = parse(render(scored([(0.5, 30.0, -97.0)])))  # one step: a dot, a sane zoom
    (steps,) = steps_of(one)
    assert len(steps) == 1 and one.find(f".//{SVG}g[@class='scale-bar']") is not None
    empty = parse(render(ScoredRoute.model_validate({"routes": [[]], "totalScores": [0.0]})))
    assert steps_of(empty) == [[]] and "no steps to draw" in ET.tostring(empty, encoding="unicode")
    pole = parse(render(scored([(0.5, 89.9999, 0.0), (0.6, 90.0, 10.0)])))  # no east-west extent at all
    assert len(steps_of(pole)[0]) == 2
