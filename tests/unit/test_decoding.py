"""Bounded decoding: limits checked before parsing, the stage a document was refused at, one-line messages."""

from __future__ import annotations

import json

import pytest

from modelgen_watcher.volume.decoding import (
    MAX_CONTAINERS,
    MAX_STEPS,
    DecodeError,
    Stage,
    count_containers,
    decode_route,
    decode_scored,
)
from tests.helpers import route


def test_brackets_inside_strings_are_not_counted_once_the_rough_count_is_over() -> None:
    text = '{"a": "' + "[{" * MAX_CONTAINERS + '", "b": [1, {"c": "\\"[{"}]}'
    assert count_containers(text.encode()) == 3  # the object, the list, the inner object


def test_the_rough_count_is_an_upper_bound_under_the_limit() -> None:
    assert count_containers(b'{"a": "[[{{"}') == 5


@pytest.mark.parametrize(
    ("raw", "stage", "words"),
    [
        (b"", Stage.json, "is empty"),
        (b'{"routes": [', Stage.json, "not valid JSON"),
        (b'{"routes":[' + b",".join([b"{}"] * (MAX_CONTAINERS + 1)) + b"]}", Stage.size, "objects and arrays"),
        (b"[" * 50_000, Stage.size, "nested too deeply"),
        (json.dumps({"routes": [{"legs": [{"steps": [{}] * (MAX_STEPS + 1)}]}]}).encode(), Stage.size, "steps"),
        (b'{"routes": [{"legs": []}]}', Stage.schema, "routes.0.legs"),
    ],
    ids=["empty", "truncated", "containers", "deep", "steps", "schema"],
)
def test_refusals_name_their_stage(raw: bytes, stage: Stage, words: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_route(raw)
    assert info.value.stage is stage
    assert words in str(info.value)
    assert "\n" not in str(info.value)


def test_a_valid_route_decodes() -> None:
    doc = decode_route(json.dumps(route(["", "turn-left"])).encode())
    assert len(doc.routes[0].legs[0].steps) == 2


def test_the_document_is_named_as_the_caller_says() -> None:
    with pytest.raises(DecodeError, match=r"^the route is not valid JSON"):
        decode_route(b"{", what="the route")


def test_a_model_output_held_in_a_json_string_is_decoded_with_the_same_limits() -> None:
    inner = '{"routes":[' + ",".join(["{}"] * (MAX_CONTAINERS + 1)) + "]}"
    with pytest.raises(DecodeError, match="objects and arrays"):
        decode_scored(json.dumps(inner).encode())
