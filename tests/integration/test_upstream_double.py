"""Upstream's model.py shape, run with CONTRACT section 6's command line unchanged."""

from __future__ import annotations

import shutil
import sys

import pytest

from tests.helpers import MODELS, drop, must_result, result_of, route, sha, wait_final

UPSTREAM_CMD = (
    "python3 ./modelmanager/model.py --workspace={workspace} --routefile={input} "
    "--dumpresponse={output_name} --datafile=./data/txdot_cris_20170427.csv"
)
TABLE = [  # intersection, daylight, manner, share not severe (UPSTREAM.md)
    (0, 0, 0, 0.955556), (0, 0, 1, 0.789474), (0, 1, 0, 0.939394), (0, 1, 1, 0.889197),
    (1, 0, 0, 0.907514), (1, 0, 1, 0.880682), (1, 1, 0, 0.911523), (1, 1, 1, 0.896686),
]


@pytest.fixture
def checkout(tmp_path):
    """A modelgen checkout laid out like upstream's: modelmanager/model.py and data/*.csv."""
    root = tmp_path / "modelgen"
    (root / "modelmanager").mkdir(parents=True)
    (root / "data").mkdir()
    shutil.copy(MODELS / "upstream_model.py", root / "modelmanager" / "model.py")
    lines = ["intersection,daylight,manner,not_severe"] + [",".join(map(str, row)) for row in TABLE]
    (root / "data" / "txdot_cris_20170427.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def python3_on_path(tmp_path, monkeypatch):
    """Make ``python3`` in the command resolve to this interpreter, as it would in the model's image."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python3").symlink_to(sys.executable)
    return {"PATH": f"{bindir}:{__import__('os').environ['PATH']}"}


def test_upstream_command_line_unchanged(daemon_factory, watch_dir, checkout, python3_on_path):
    d = daemon_factory("--model-cmd", UPSTREAM_CMD, "--model-cwd", str(checkout), "--workers", "2",
                       env=python3_on_path)
    raws: dict[str | None, bytes] = {k: drop(watch_dir, route(["", "turn-left", ""]), key=k) for k in ("u1", "u2")}
    raws[None] = drop(watch_dir, route(["turn-left"]))  # the legacy name, no key
    for key, raw in raws.items():
        st = wait_final(watch_dir, key, sha(raw))
        assert st["state"] == "ok", st
        res = result_of(watch_dir, key)
        assert isinstance(res, dict)  # the double-encoded output was decoded
        assert res["meta"]["model"] == "model.py"
    assert [p["score"] for p in must_result(watch_dir, "u1")["routes"][0]] == [0.939394, 0.911523, 0.939394]
    assert must_result(watch_dir, None)["totalScores"] == [0.911523]
    assert (watch_dir / ".modelgen" / "workspace" / "human_read_dectree.pkl").exists()  # its cache persists
    assert not list((watch_dir / ".modelgen" / "workspace").glob("modelgen-out-*"))  # outputs cleaned up
    assert d.proc.poll() is None


def test_upstream_traceback_becomes_model_failed(daemon_factory, watch_dir, checkout, python3_on_path):
    """A valid route, but the model's data file is missing: its traceback reaches the status."""
    daemon_factory("--model-cmd", UPSTREAM_CMD, "--model-cwd", str(checkout), env=python3_on_path)
    (checkout / "data" / "txdot_cris_20170427.csv").unlink()
    raw = drop(watch_dir, route(["", "turn-left"]), key="bad")
    st = wait_final(watch_dir, "bad", sha(raw))
    assert st["error"]["kind"] == "model_failed"
    assert "FileNotFoundError" in st["error"]["message"]
    assert "Traceback" in st["error"]["detail"]
    assert result_of(watch_dir, "bad") is None
