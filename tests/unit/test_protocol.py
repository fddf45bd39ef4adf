"""Names on the shared volume: derivation, classification of found files, and config checks."""

from __future__ import annotations

import pytest

from modelgen_watcher.volume.names import Names, Rejected, Request

N = Names()


def test_default_names_for_legacy_and_keyed_requests() -> None:
    assert (N.input(None), N.result(None), N.status(None)) == (
        "gps_input_route.json",
        "gps_scored_route.json",
        "gps_scored_route.status.json",
    )
    assert (N.input("abc"), N.result("abc"), N.status("abc")) == (
        "gps_input_route.abc.json",
        "gps_scored_route.abc.json",
        "gps_scored_route.abc.status.json",
    )


def test_parse_exact_input_name_is_the_legacy_request() -> None:
    assert N.parse("gps_input_route.json") == Request(None)


@pytest.mark.parametrize("key", ["abc", "A1", "user_42", "a-b-c", "x" * 64])
def test_parse_keyed_input(key: str) -> None:
    assert N.parse(f"gps_input_route.{key}.json") == Request(key)


@pytest.mark.parametrize(
    "key",
    ["status", "a b", "a.b", "x" * 65, "-abc", "_abc"],
    ids=["reserved", "space", "dot", "65-chars", "leading-dash", "leading-underscore"],
)
def test_parse_rejects_invalid_or_reserved_key(key: str) -> None:
    name = f"gps_input_route.{key}.json"
    got = N.parse(name)
    assert isinstance(got, Rejected)
    assert got.name == name
    assert got.reason


@pytest.mark.parametrize(
    "name",
    [
        ".gps_input_route.json",
        ".gps_input_route.abc.json",
        ".client-123.tmp",
        "gps_scored_route.json",
        "gps_scored_route.status.json",
        "gps_scored_route.abc.json",
        "gps_scored_route.abc.status.json",
        "gps_input_route.json.tmp",
        "gps_input_route.abc.txt",
        "unrelated.json",
        "gps_input_route..json",
    ],
)
def test_parse_ignores_everything_else(name: str) -> None:
    assert N.parse(name) is None


def test_custom_names() -> None:
    names = Names("in.json", "out.json")
    assert names.check() is None
    assert (names.input("k"), names.result("k"), names.status("k")) == ("in.k.json", "out.k.json", "out.k.status.json")
    assert names.status(None) == "out.status.json"
    assert names.parse("in.json") == Request(None)
    assert names.parse("in.k.json") == Request("k")
    assert names.parse("gps_input_route.json") is None
    assert names.parse("out.k.json") is None


def test_default_names_pass_check() -> None:
    assert N.check() is None


@pytest.mark.parametrize(
    ("names", "words"),
    [
        (Names("same.json", "same.json"), "differ"),
        (Names("input", "out.json"), "suffix"),
        (Names("in.json", "output"), "suffix"),
        (Names(".in.json", "out.json"), "dot"),
        (Names("in.json", ".out.json"), "dot"),
        (Names("sub/in.json", "out.json"), "plain file name"),
        (Names("in.json", "sub/out.json"), "plain file name"),
        (Names("", "out.json"), "plain file name"),
        (Names("route.json", "route.scored.json"), "same file"),
    ],
)
def test_check_rejects_unworkable_names(names: Names, words: str) -> None:
    problem = names.check()
    assert problem is not None
    assert words in problem


def test_check_rejects_keyed_result_equal_to_the_input_name() -> None:
    names = Names("scores.in.json", "scores.json")
    assert names.result("in") == names.input(None)  # the collision
    assert names.check() is not None


@pytest.mark.parametrize("names", [Names(), Names("in.json", "out.json"), Names("route.in.json", "scored.json")])
def test_request_file_answers_as_parse_and_status_do(names: Names) -> None:
    """The queue's fast test of a name agrees with the names every other reader derives."""
    keys = [None, "abc", "A-1_b", "x" * 64]
    for key in keys:
        assert names.request_file(names.input(key)) == (key, True)
        assert names.request_file(names.status(key)) == (key, False)
        assert names.request_file(names.result(key)) is None
    for name in ["", ".gps_input_route.abc.json", "notes.txt", names.input("x").replace("x", "bad key"),
                 names.status("x").replace("x", "status"), names.status("x").replace(".x.", ".."),
                 names.input("x").replace(".x.", ".."), names.status("x") + ".tmp"]:
        parsed = names.parse(name)
        assert names.request_file(name) is None, name
        assert not isinstance(parsed, Request)
