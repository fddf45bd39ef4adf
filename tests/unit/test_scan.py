"""InputScanner: every kind of change to an input is found, while a quiet directory costs a stat and a few lstats."""

from __future__ import annotations

import os
import time
from pathlib import Path

from modelgen_watcher.volume.dirtimes import DirTimes
from modelgen_watcher.volume.names import Names, Rejected
from modelgen_watcher.volume.scan import InputScanner, Pace, Scan
from tests.helpers import input_name, result_name

OLD = time.time() - 3600
RELIST_EVERY = 10


def settle(directory: Path) -> None:
    """Age the directory's mtime, so a scan trusts its listing (a change within the last 2 s is listed again)."""
    os.utime(directory, (OLD, OLD))


def changed(scan: Scan) -> list[str]:
    return sorted(c.name for c in scan.changed)


def write(directory: Path, name: str, data: bytes = b"{}") -> None:
    (directory / name).write_bytes(data)


def baseline(directory: Path, quiet_per_scan: int = 1000) -> InputScanner:
    """A scanner that has seen the directory as it is, with times old enough to trust."""
    settle(directory)
    scanner = InputScanner(directory, Names(), Pace(quiet_per_scan, RELIST_EVERY))
    scanner.scan(everything=True)
    return scanner


def test_everything_reports_every_input_and_nothing_else(tmp_path):
    for key in ("a", "b"):
        write(tmp_path, input_name(key))
        write(tmp_path, result_name(key))
    write(tmp_path, input_name(None))
    write(tmp_path, ".writer-tmp")
    scan = InputScanner(tmp_path, Names(), Pace(1000, RELIST_EVERY)).scan(everything=True)
    assert changed(scan) == sorted([input_name("a"), input_name("b"), input_name(None)])


def test_a_quiet_directory_is_not_listed_and_reports_nothing(tmp_path):
    for i in range(20):
        write(tmp_path, input_name(f"k{i}"))
    scanner = baseline(tmp_path)
    scan = scanner.scan()
    assert not scan.listed and scan.changed == []


def test_a_new_input_and_one_renamed_over_are_found_by_the_listing(tmp_path):
    write(tmp_path, input_name("old"))
    scanner = baseline(tmp_path)
    write(tmp_path, input_name("new"))
    write(tmp_path, ".tmp-upload", b'{"v": 2}')
    os.replace(tmp_path / ".tmp-upload", tmp_path / input_name("old"))
    scan = scanner.scan()
    assert scan.listed
    assert changed(scan) == [input_name("new"), input_name("old")]


def test_an_input_rewritten_in_place_is_found_while_hot_at_the_next_scan(tmp_path):
    scanner = baseline(tmp_path)
    write(tmp_path, input_name("slow"), b"{")  # appears: hot from now on
    assert changed(scanner.scan()) == [input_name("slow")]
    settle(tmp_path)
    with open(tmp_path / input_name("slow"), "ab") as fh:  # same inode, the directory untouched
        fh.write(b"}")
    assert changed(scanner.scan()) == [input_name("slow")]


def test_quiet_inputs_rewritten_in_place_are_found_in_turns(tmp_path):
    for i in range(6):
        write(tmp_path, input_name(f"k{i}"))
    scanner = baseline(tmp_path, quiet_per_scan=2)
    os.utime(tmp_path / input_name("k4"), (OLD + 60, OLD + 60))  # a touch: what asks for a failed request again
    found = []
    for _ in range(3):  # 6 quiet inputs, 2 per scan: every one is checked within 3 scans
        found += changed(scanner.scan())
    assert found == [input_name("k4")]


def test_an_input_with_an_event_is_checked_at_the_next_scan(tmp_path):
    for i in range(6):
        write(tmp_path, input_name(f"k{i}"))
    scanner = baseline(tmp_path, quiet_per_scan=1)
    scanner.scan()  # k0's turn
    with open(tmp_path / input_name("k0"), "ab") as fh:
        fh.write(b" ")
    scan = scanner.scan(hint={input_name("k0")})
    assert changed(scan) == [input_name("k0")]


def test_the_legacy_input_is_checked_at_every_scan(tmp_path):
    for i in range(5):
        write(tmp_path, input_name(f"k{i}"))
    write(tmp_path, input_name(None))
    scanner = baseline(tmp_path, quiet_per_scan=1)
    for n in range(3):
        with open(tmp_path / input_name(None), "ab") as fh:  # upstream's server rewrites it in place
            fh.write(b" ")
        assert changed(scanner.scan()) == [input_name(None)], n


def test_a_removed_input_is_forgotten_and_reported_again_when_published_again(tmp_path):
    write(tmp_path, input_name("gone"))
    scanner = baseline(tmp_path)
    (tmp_path / input_name("gone")).unlink()
    assert changed(scanner.scan()) == []
    settle(tmp_path)
    write(tmp_path, input_name("gone"))
    assert changed(scanner.scan()) == [input_name("gone")]


def test_refused_names_are_reported_once(tmp_path):
    scanner = baseline(tmp_path)
    write(tmp_path, input_name("bad key"))
    first = scanner.scan()
    assert [r.name for r in first.rejected] == [input_name("bad key")]
    assert all(isinstance(r, Rejected) for r in first.rejected)
    write(tmp_path, input_name("other"))
    assert scanner.scan().rejected == []


def test_a_directory_changed_just_before_its_listing_is_listed_again(tmp_path):
    scanner = InputScanner(tmp_path, Names(), Pace(1000, RELIST_EVERY))
    scanner.scan(everything=True)  # the directory was just created: its times are too recent to trust
    assert scanner.scan().listed


class FrozenTimes(DirTimes):
    """A file system whose directory mtime and ctime never move (some FUSE mounts)."""

    def unchanged(self) -> bool:
        return True


def test_a_directory_whose_times_never_move_is_listed_at_every_scan_once_that_shows(tmp_path):
    scanner = InputScanner(tmp_path, Names(), Pace(1000, RELIST_EVERY))
    scanner._times = FrozenTimes(tmp_path)
    scanner.scan(everything=True)
    write(tmp_path, input_name("unseen"))
    scans = [scanner.scan() for _ in range(RELIST_EVERY)]  # only the periodic listing finds it
    assert [changed(s) for s in scans] == [[]] * (RELIST_EVERY - 1) + [[input_name("unseen")]]
    write(tmp_path, input_name("next"))
    assert changed(scanner.scan()) == [input_name("next")]  # from then on, at every scan


def test_results_appearing_while_the_times_stay_show_them_unreliable_too(tmp_path):
    """The scanner keeps only input names, yet the watcher's own results and statuses, appearing while the
    directory's times stay, show the times for what they are: the next new input is found at the next scan."""
    scanner = InputScanner(tmp_path, Names(), Pace(1000, RELIST_EVERY))
    scanner._times = FrozenTimes(tmp_path)
    scanner.scan(everything=True)
    write(tmp_path, result_name("k1"))
    write(tmp_path, Names().status("k1"))
    for _ in range(RELIST_EVERY):  # the periodic listing among them finds two names more
        assert changed(scanner.scan()) == []
    write(tmp_path, input_name("next"))
    assert changed(scanner.scan()) == [input_name("next")]
