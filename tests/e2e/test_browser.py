"""The page in a real browser: headless Chromium on a running ``serve`` + watcher, driven by keyboard.

Skipped, saying how to install it, where Debian's ``chromium`` is missing (``.ci/run``
installs it). Each test saves a screenshot under its temp dir.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelgen_watcher.picture import VIRIDIS, Scale
from tests.e2e.browser import CHROMIUM, INSTALL_HINT, Browser
from tests.e2e.conftest import Server
from tests.helpers import encode, fake_model_cmd, must_result, route, wait_for

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=INSTALL_HINT)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

STEPS_IN_PAGE = """Array.from(document.querySelectorAll('#picture svg g.route')).map(g => ({
  route: Number(g.dataset.route),
  steps: Array.from(g.querySelectorAll('path.step')).map(p => ({
    step: Number(p.dataset.step), score: Number(p.dataset.score), stroke: p.getAttribute('stroke'),
    title: p.querySelector('title').textContent})),
}))"""


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    b = Browser(tmp_path / "profile")
    yield b
    b.close()


def keyed_inputs(watch_dir: Path) -> list[str]:
    return [p.name.split(".")[1] for p in watch_dir.glob("gps_input_route.*.json")]


def focus_by_tab(browser: Browser, element_id: str, limit: int = 20) -> None:
    """Tab through the page until ``element_id`` has the focus, as a keyboard user would."""
    for _ in range(limit):
        if browser.js("document.activeElement && document.activeElement.id") == element_id:
            return
        browser.press("Tab")
    raise AssertionError(f"#{element_id} was not reached with {limit} presses of Tab")


def test_a_sample_scored_from_the_keyboard_is_drawn_with_one_path_per_step_in_its_scores_colours(
        daemon_factory, server_factory, watch_dir: Path, browser: Browser, tmp_path: Path):
    daemon_factory()
    server: Server = server_factory()
    browser.goto(f"http://127.0.0.1:{server.port}/")
    browser.wait_for("document.querySelectorAll('#sample option').length >= 3", what="the samples listed")
    browser.wait_for("document.querySelector('#watcher').textContent === 'Watcher: ready'", what="the watcher's state")

    focus_by_tab(browser, "sample")
    for _ in range(10):  # the sample with two routes, picked with the arrow keys
        if browser.js("document.querySelector('#sample').value").endswith("/ut-tower-to-zilker-park.json"):
            break
        browser.press("ArrowDown")
    else:
        raise AssertionError("the two-route sample could not be picked with the keyboard")
    focus_by_tab(browser, "score-sample")
    browser.press("Enter")

    browser.wait_for("document.querySelectorAll('#picture svg path.step').length > 0", what="the picture")
    (key,) = keyed_inputs(watch_dir)
    result = must_result(watch_dir, key)
    drawn: list[dict[str, Any]] = browser.js(STEPS_IN_PAGE)

    assert [d["route"] for d in drawn] == list(range(len(result["routes"]))) == [0, 1]
    scores = [p["score"] for r in result["routes"] for p in r]
    scale = Scale(min(scores), max(scores))
    for d, points in zip(drawn, result["routes"], strict=True):
        assert [s["step"] for s in d["steps"]] == list(range(len(points)))  # one path per step, in order
        assert [s["score"] for s in d["steps"]] == [p["score"] for p in points]
        for s, p in zip(d["steps"], points, strict=True):
            assert s["stroke"] == scale.colour(p["score"])
            assert s["stroke"] == (VIRIDIS[0] if p["score"] == scale.lo else VIRIDIS[-1])  # two scores: the ends
            assert s["title"].endswith(f"step {s['step'] + 1}: score {p['score']:.3f}")

    # The text alternatives: the picture's title and description, the totals, a row per step.
    labelled = browser.js("document.querySelector('#picture svg').getAttribute('aria-labelledby')")
    desc = browser.js(f"document.getElementById('{labelled.split()[1]}').textContent")
    assert "Route 2: 10 steps" in desc and "higher scores are safer" in desc
    totals = browser.js("Array.from(document.querySelectorAll('#totals li')).map(li => li.textContent)")
    assert totals == [f"Route {i + 1}: total {t:.3f} over {len(r)} steps"
                      for i, (t, r) in enumerate(zip(result["totalScores"], result["routes"], strict=True))]
    assert browser.js("document.querySelectorAll('#steps tbody tr').length") == len(scores)

    # The queue shows this request, marked as the viewer's, finished.
    row = browser.wait_for(
        "(() => { const r = document.querySelector('#queue tr.mine'); "
        "return r && r.cells[1].textContent === 'ok' && Array.from(r.cells).map(c => c.textContent); })()",
        what="the request in the queue")
    assert row[0] == key and row[2].endswith(" ms")

    shot = browser.screenshot(tmp_path / "page.png")
    assert shot.read_bytes().startswith(PNG_MAGIC) and shot.stat().st_size > 10_000
    assert browser.console_errors() == []


def test_a_failing_model_shows_its_message_and_a_route_file_can_be_uploaded(
        daemon_factory, server_factory, watch_dir: Path, browser: Browser, tmp_path: Path):
    daemon_factory("--model-cmd", fake_model_cmd("ok", "--fail-marked"))
    server: Server = server_factory("--static-dir", str(tmp_path))  # the page stays at /ui/ beside static files
    marked = tmp_path / "marked.json"
    marked.write_bytes(encode({**route(["", "turn-left"]), "fail_me": True}))
    browser.goto(f"http://127.0.0.1:{server.port}/ui/")

    node = browser.call("DOM.querySelector", nodeId=browser.call("DOM.getDocument")["root"]["nodeId"],
                        selector="#file")["nodeId"]
    browser.call("DOM.setFileInputFiles", nodeId=node, files=[str(marked)])
    focus_by_tab(browser, "score-file")
    browser.press("Enter")

    message = browser.wait_for("!document.querySelector('#error').hidden && document.querySelector('#error').textContent",
                               what="the error shown")
    assert "model_failed" in message and "this route was marked to fail" in message
    assert browser.js("document.querySelector('#result').hidden") is True  # no stale picture beside an error
    row = wait_for(lambda: browser.js(
        "(() => { const r = document.querySelector('#queue tr.mine'); "
        "return r && r.cells[1].textContent === 'error' && r.cells[3].textContent; })()"), 10, what="queue row")
    assert row == "model_failed"
    browser.screenshot(tmp_path / "error.png")
    assert [e for e in browser.console_errors() if "status of 502" not in e] == []  # the 502 is the answer awaited
