"""Decoding a model's output file and turning a run report into an error status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelgen_watcher.runners.base import ModelJob, RunReport
from modelgen_watcher.volume.documents import read_status
from modelgen_watcher.volume.names import Layout, Names, Request
from modelgen_watcher.volume.schemas import ErrorKind, State, Status
from modelgen_watcher.watcher.outcomes import Outcome, Processed
from modelgen_watcher.watcher.pipeline import Pipeline, RequestFailed, decode_model_output, failure_from_report
from tests.helpers import route, sha

SCORED = {"routes": [[{"score": 0.93, "lat": 30.2, "lng": -97.7}]], "totalScores": [0.93]}


def test_plain_json() -> None:
    scored = decode_model_output(json.dumps(SCORED).encode())
    assert scored.totalScores == [0.93]
    assert scored.routes[0][0].lat == 30.2


def test_double_encoded_json_string() -> None:
    raw = json.dumps(json.dumps(SCORED)).encode()  # upstream writes a JSON string holding the JSON
    assert decode_model_output(raw).totalScores == [0.93]


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"", "empty"),
        (b"  \n", "empty"),
        (b"Traceback (most recent call last)", "not JSON"),
        (b"\xff\xfe{}", "not JSON"),
        (b'"not json inside"', "not JSON"),
        (b"[1, 2]", "not a scored route"),
        (b'{"routes": [[]]}', "not a scored route"),
        (b'{"routes": [[], []], "totalScores": [1.0]}', "not a scored route"),
    ],
    ids=["empty", "blank", "garbage", "not-utf8", "string-garbage", "list", "no-totals", "mismatch"],
)
def test_invalid_output(raw: bytes, words: str) -> None:
    with pytest.raises(RequestFailed) as info:
        decode_model_output(raw)
    assert info.value.info.kind is ErrorKind.invalid_output
    assert words in info.value.info.message


def test_garbage_detail_previews_the_output() -> None:
    with pytest.raises(RequestFailed) as info:
        decode_model_output(b"oops" * 1000)
    detail = info.value.info.detail
    assert detail is not None and detail.startswith("oops") and len(detail) < 600


STDERR = "Traceback (most recent call last):\n  File \"model.py\", line 3\nValueError: no steps\n\n"


def test_success_is_no_failure() -> None:
    assert failure_from_report(RunReport(exit_code=0, duration_s=0.1), timeout=5) is None


def test_timeout() -> None:
    failed = failure_from_report(RunReport(exit_code=-15, duration_s=5, timed_out=True, stderr_tail=STDERR), 5)
    assert failed is not None
    assert failed.info.kind is ErrorKind.model_timeout
    assert "5 s" in failed.info.message
    assert failed.info.detail is not None and failed.info.detail.endswith("ValueError: no steps")


def test_nonzero_exit_names_code_and_last_stderr_line() -> None:
    failed = failure_from_report(RunReport(exit_code=1, duration_s=0.2, stderr_tail=STDERR), 5)
    assert failed is not None
    assert failed.info.kind is ErrorKind.model_failed
    assert "exited with code 1" in failed.info.message
    assert failed.info.message.endswith("ValueError: no steps")
    assert failed.info.detail is not None and "Traceback" in failed.info.detail


def test_nonzero_exit_falls_back_to_stdout() -> None:
    failed = failure_from_report(RunReport(exit_code=2, duration_s=0.2, stdout_tail="bad flag --foo\n"), 5)
    assert failed is not None
    assert failed.info.message.endswith("bad flag --foo")


def test_killed_by_signal() -> None:
    failed = failure_from_report(RunReport(exit_code=-9, duration_s=0.2), 5)
    assert failed is not None
    assert failed.info.kind is ErrorKind.model_failed
    assert "killed by SIGKILL" in failed.info.message


def test_launch_error() -> None:
    report = RunReport(exit_code=None, duration_s=0.0, launch_error="cannot start 'nope': No such file")
    failed = failure_from_report(report, 5)
    assert failed is not None
    assert failed.info.kind is ErrorKind.model_failed
    assert failed.info.message == "cannot start 'nope': No such file"


# -- deeply nested JSON: json.loads raises RecursionError, which is not a ValueError ---------------

DEEP = b"[" * 100_000


def test_deeply_nested_output_is_invalid_output() -> None:
    with pytest.raises(RequestFailed) as info:
        decode_model_output(DEEP)
    assert info.value.info.kind is ErrorKind.invalid_output


class _WritesOutput:
    """A runner double that 'runs a model' by writing fixed bytes to the job's output file."""

    overlap = 0

    def __init__(self, data: bytes) -> None:
        self.data = data

    def start(self, record_dir: Path) -> int:
        return 0

    def run(self, job: ModelJob) -> RunReport:
        job.output_path.write_bytes(self.data)
        return RunReport(exit_code=0, duration_s=0.01)

    def reap_orphans(self) -> int:
        return 0

    def cancel(self, job: ModelJob) -> None:
        pass

    def stop(self) -> None:
        pass


def _process(tmp_path: Path, input_bytes: bytes, output: bytes) -> tuple[Processed, Status | None]:
    layout = Layout(tmp_path, Names())
    layout.input(None).write_bytes(input_bytes)
    pipe = Pipeline(
        layout, _WritesOutput(output), model_label="double", model_timeout=5, max_input_bytes=1 << 20, settle=0
    )
    processed = pipe.process(Request(None))
    found = read_status(layout.status(None))
    return processed, found[0] if found else None


def test_pipeline_publishes_double_encoded_output(tmp_path: Path) -> None:
    raw = json.dumps(route([""])).encode()  # one step, as SCORED has one point
    done, status = _process(tmp_path, raw, json.dumps(json.dumps(SCORED)).encode())
    assert done.outcome is Outcome.ok
    assert status is not None and status.state is State.ok
    result = json.loads((tmp_path / "gps_scored_route.json").read_bytes())
    assert result["meta"]["input_sha256"] == sha(raw) and result["meta"]["model"] == "double"


def test_pipeline_garbage_output_is_an_error_status(tmp_path: Path) -> None:
    done, status = _process(tmp_path, json.dumps(route()).encode(), b"garbage")
    assert done.outcome is Outcome.error
    assert status is not None and status.error is not None
    assert status.error.kind is ErrorKind.invalid_output
    assert not (tmp_path / "gps_scored_route.json").exists()


def test_pipeline_deeply_nested_input_is_an_error_status(tmp_path: Path) -> None:
    done, status = _process(tmp_path, DEEP, json.dumps(SCORED).encode())
    assert done.outcome is Outcome.error
    assert status is not None and status.error is not None and status.error.kind is ErrorKind.invalid_input


def test_pipeline_deeply_nested_output_is_an_error_status(tmp_path: Path) -> None:
    done, status = _process(tmp_path, json.dumps(route()).encode(), DEEP)
    assert done.outcome is Outcome.error
    assert status is not None and status.error is not None and status.error.kind is ErrorKind.invalid_output


def test_pipeline_output_of_the_wrong_shape_for_the_input_is_invalid_output(tmp_path: Path) -> None:
    """Two steps in, one point out: the result would misplace scores on the map."""
    done, status = _process(tmp_path, json.dumps(route(["", "turn-left"])).encode(), json.dumps(SCORED).encode())
    assert done.outcome is Outcome.error
    assert status is not None and status.error is not None and status.error.kind is ErrorKind.invalid_output
    assert "1 points for route 0" in status.error.message
