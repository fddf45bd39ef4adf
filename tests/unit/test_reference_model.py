"""The embedded reference model: scores from the crash table, and upstream's command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelgen_watcher.modelside.reference import BadRoute, main, score_route
from tests.helpers import route


def test_scores_of_a_two_step_route() -> None:
    doc = route(["", "turn-left"])
    out = score_route(doc)
    scores = [p["score"] for p in out["routes"][0]]
    assert scores == [0.939394, 0.911523]
    assert out["totalScores"] == [pytest.approx((0.939394 + 0.911523) / 2)]
    first = doc["routes"][0]["legs"][0]["steps"][0]["end_location"]
    assert (out["routes"][0][0]["lat"], out["routes"][0][0]["lng"]) == (first["lat"], first["lng"])


def test_missing_maneuver_counts_as_no_intersection() -> None:
    doc = route(["turn-right"])
    del doc["routes"][0]["legs"][0]["steps"][0]["maneuver"]
    assert score_route(doc)["routes"][0][0]["score"] == 0.939394


def test_one_total_per_route() -> None:
    out = score_route(route(["", "turn-left", "merge"], routes=3))
    assert len(out["routes"]) == len(out["totalScores"]) == 3


def test_rider_at_night_fault_unclear() -> None:
    out = score_route(route([""], rider={"daylight": False, "motorist_at_fault": False}))
    assert out["routes"][0][0]["score"] == 0.789474
    assert out["totalScores"] == [0.789474]


@pytest.mark.parametrize(
    "doc",
    [{}, {"routes": [{"legs": []}]}, {"routes": [{"legs": [{"steps": []}]}]}, route(rider="night")],
    ids=["no-routes", "no-legs", "no-steps", "bad-rider"],
)
def test_bad_route_raises(doc: object) -> None:
    with pytest.raises(BadRoute):
        score_route(doc)


def test_main_writes_output_relative_to_workspace(tmp_path: Path) -> None:
    routefile = tmp_path / "in.json"
    routefile.write_text(json.dumps(route(["", "turn-left"])))
    workspace = tmp_path / "ws"
    workspace.mkdir()
    rc = main([f"--workspace={workspace}", f"--routefile={routefile}", "--dumpresponse=out.json"])
    assert rc == 0
    result = json.loads((workspace / "out.json").read_text())
    assert [p["score"] for p in result["routes"][0]] == [0.939394, 0.911523]
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("content", [b"{not json", b'{"routes": "nope"}', b""])
def test_main_bad_input_returns_1(tmp_path: Path, content: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    routefile = tmp_path / "in.json"
    routefile.write_bytes(content)
    rc = main(["--workspace", str(tmp_path), "--routefile", str(routefile), "--dumpresponse", "out.json"])
    assert rc == 1
    assert not (tmp_path / "out.json").exists()
    assert "cannot score" in capsys.readouterr().err


def test_main_missing_routefile_returns_1(tmp_path: Path) -> None:
    rc = main(["--workspace", str(tmp_path), "--routefile", str(tmp_path / "nope.json"), "--dumpresponse", "o.json"])
    assert rc == 1


def test_string_booleans_in_rider_are_refused_not_scored_as_true() -> None:
    """ "false" must never be scored as daylight: the schema and the model both refuse it."""
    import pytest
    from pydantic import ValidationError

    from modelgen_watcher.volume.schemas import RouteRequest

    doc = route([""], rider={"daylight": "false", "motorist_at_fault": "false"})
    with pytest.raises(ValidationError):
        RouteRequest.model_validate(doc)
    with pytest.raises(BadRoute):
        score_route(doc)
