"""DirTimes: one stat says whether a directory's names changed since it was listed, and a racy listing is no proof."""

from __future__ import annotations

import os
import time

import pytest

from modelgen_watcher.volume.dirtimes import DirTimes

OLD = time.time() - 3600


def test_nothing_is_unchanged_before_a_listing(tmp_path):
    assert not DirTimes(tmp_path).unchanged()


def test_a_name_made_or_removed_after_the_listing_is_a_change(tmp_path):
    (tmp_path / "a").write_text("")
    os.utime(tmp_path, (OLD, OLD))
    times = DirTimes(tmp_path)
    with times.listing():
        os.listdir(tmp_path)
    assert times.unchanged()
    (tmp_path / "a").write_text("rewritten in place")  # not a change of names
    assert times.unchanged()
    (tmp_path / "b").write_text("")
    assert not times.unchanged()
    with times.listing():
        os.listdir(tmp_path)
    os.utime(tmp_path, (OLD, OLD))  # the listing above was racy anyway: this one is not
    with times.listing():
        os.listdir(tmp_path)
    (tmp_path / "a").unlink()
    assert not times.unchanged()


def test_a_listing_close_to_a_change_is_never_trusted_however_late_it_is_checked(tmp_path):
    times = DirTimes(tmp_path, racy_seconds=3600)  # every listing within an hour of a change is racy
    a_minute_ago = time.time() - 60
    os.utime(tmp_path, (a_minute_ago, a_minute_ago))
    with times.listing():
        os.listdir(tmp_path)
    assert not times.unchanged()  # a change in the same tick as the last one would not have moved the mtime


def test_a_listing_that_fails_records_nothing(tmp_path):
    os.utime(tmp_path, (OLD, OLD))
    times = DirTimes(tmp_path)
    with times.listing():
        pass
    assert times.unchanged()
    with pytest.raises(OSError), times.listing():
        raise OSError("the listing failed")
    assert not times.unchanged()
