"""A warm worker reads its model's output itself (``host.collect_output``): as the watcher would, or refused alike."""

from __future__ import annotations

import os
from pathlib import Path

from modelgen_watcher.modelside import host


def test_a_regular_output_goes_back_whole_and_its_file_goes(tmp_path: Path) -> None:
    out = tmp_path / "modelgen-out-k.json"
    out.write_bytes(b'{"routes": []}\xff')  # any bytes, exactly
    assert host.collect_output(str(out), 100) == b'{"routes": []}\xff'
    assert not out.exists()


def test_no_output_file_is_said_so(tmp_path: Path) -> None:
    assert host.collect_output(str(tmp_path / "none.json"), 100) == host.NO_OUTPUT


def test_a_symlink_a_directory_or_a_fifo_is_refused_unread_and_left_for_the_watcher(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("not the model's")
    (tmp_path / "link").symlink_to(secret)
    (tmp_path / "dir").mkdir()
    os.mkfifo(tmp_path / "fifo")  # opened without blocking, never read
    for name, words in (("link", "a symlink"), ("dir", "a directory"), ("fifo", "a FIFO")):
        assert host.collect_output(str(tmp_path / name), 100) == f"{name} is {words}, not a regular file"
        assert os.path.lexists(tmp_path / name)


def test_an_output_over_the_limit_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "big"
    out.write_bytes(b"x" * 101)
    assert host.collect_output(str(out), 100) == "big is over the limit of 100 bytes"
    out.write_bytes(b"x" * 100)
    assert host.collect_output(str(out), 100) == b"x" * 100


def test_the_hosts_word_for_no_output_is_the_watchers() -> None:
    from modelgen_watcher.runners.base import NO_OUTPUT

    assert host.NO_OUTPUT == NO_OUTPUT


def test_replies_are_cut_into_lines_and_raw_outputs_however_they_arrive() -> None:
    """The watcher's side of the stream (``warm._Replies``): a line, then a line with its output's raw bytes (which
    may hold newlines), fed one byte at a time or all at once."""
    from modelgen_watcher.runners.warm import _EOF, _Replies

    stream = b'{"type": "ready"}\n{"id": 1, "output_bytes": 5}\na\nb\nc{"id": 2}\nnot json\n'
    expected = [{"type": "ready"}, {"id": 1, "output_bytes": 5, "output": b"a\nb\nc"}, {"id": 2}, _EOF]
    whole = _Replies()
    assert whole.feed(stream) == expected
    bytewise = _Replies()
    got: list[object] = []
    for i in range(len(stream)):
        got += bytewise.feed(stream[i : i + 1])
    assert got == expected
    assert _Replies().feed(b'{"output_bytes": 99999999999}\n') == [_EOF]  # more than a result may be: broken
