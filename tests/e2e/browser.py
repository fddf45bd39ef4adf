"""Headless Chromium driven over the DevTools protocol on a pipe: no websocket, no new dependency.

``chromium --remote-debugging-pipe`` reads protocol messages from fd 3 and writes them to
fd 4, each a JSON object ended by a NUL byte (what Puppeteer's pipe transport does).
Debian's ``chromium`` package provides the browser; where it is missing, ``CHROMIUM``
is None and the tests that need it skip, saying how to install it.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
INSTALL_HINT = "headless Chromium is not installed (Debian: apt-get install -y chromium; or set CHROMIUM=/path)"

_READ_FD, _WRITE_FD = 3, 4  # the browser's ends: it reads commands from 3, writes answers to 4


class BrowserError(Exception):
    """The browser answered a command with an error, or a script in the page threw."""


class Browser:
    """One headless Chromium with one page; every call is bounded by ``timeout`` seconds."""

    def __init__(self, profile: Path, *, width: int = 1100, height: int = 900, timeout: float = 30.0) -> None:
        if CHROMIUM is None:
            raise RuntimeError(INSTALL_HINT)
        self.timeout = timeout
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire() -> None:  # in the child, before exec: the pipe ends on the fds the browser expects
            r, w = os.dup(to_browser_r), os.dup(from_browser_w)
            os.dup2(r, _READ_FD)
            os.dup2(w, _WRITE_FD)

        self._log = open(profile.parent / "chromium.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--remote-debugging-pipe", f"--user-data-dir={profile}",
             "--no-sandbox",  # CI runs as root, where the sandbox refuses to start
             "--disable-gpu", "--no-first-run", "--no-default-browser-check", "--disable-extensions",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", "--mute-audio", "--force-color-profile=srgb", f"--window-size={width},{height}",
             "about:blank"],
            pass_fds=(_READ_FD, _WRITE_FD), preexec_fn=wire, stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buf = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        self.session = ""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call("Log.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    # -- the protocol ---------------------------------------------------------------

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command (to the page's session once attached) and return its result."""
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if self.session and not method.startswith(("Target.", "Browser.")):
            msg["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            if "method" in reply:
                self.events.append(reply)

    def _message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"the browser did not answer within {self.timeout:g} s")
            ready, _, _ = select.select([self._from_browser], [], [], remaining)
            if ready:
                chunk = os.read(self._from_browser, 1 << 16)
                if not chunk:
                    raise BrowserError(f"the browser exited ({self.proc.poll()})")
                self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    # -- what tests do ----------------------------------------------------------------

    def goto(self, url: str) -> None:
        """Load ``url`` and wait until its document has loaded."""
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'", what=f"{url} loaded")

    def js(self, expression: str) -> Any:
        """The value of ``expression`` in the page (awaited if it is a promise)."""
        answer = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in answer:
            raise BrowserError(f"{expression!r} threw: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20.0, what: str = "") -> Any:
        """Poll ``expression`` in the page until it is truthy; its value. A bounded poll, not a sleep."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.js(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what or expression}")
            time.sleep(0.05)

    def press(self, key: str) -> None:
        """One key press as a person makes it (down, then up), through the browser's input pipeline."""
        codes = {"Tab": ("Tab", 9, ""), "Enter": ("Enter", 13, "\r"), "ArrowDown": ("ArrowDown", 40, ""),
                 "Space": (" ", 32, " ")}
        name, code, text = codes[key]
        down: dict[str, Any] = {"type": "keyDown", "key": name, "code": key, "windowsVirtualKeyCode": code}
        if text:
            down["text"] = text
        self.call("Input.dispatchKeyEvent", **down)
        self.call("Input.dispatchKeyEvent", type="keyUp", key=name, code=key, windowsVirtualKeyCode=code)

    def screenshot(self, path: Path) -> Path:
        """The whole page as a PNG at ``path``."""
        metrics = self.call("Page.getLayoutMetrics")["cssContentSize"]
        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": metrics["width"], "height": metrics["height"], "scale": 1})
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def console_errors(self) -> list[str]:
        """Errors so far: the page's console errors, exceptions it did not catch, and the browser's own
        (a script or style the Content-Security-Policy refused, a failed load)."""
        out = []
        for event in self.events:
            if event.get("method") == "Runtime.exceptionThrown":
                out.append(str(event["params"]["exceptionDetails"].get("exception", {}).get("description")))
            elif event.get("method") == "Runtime.consoleAPICalled" and event["params"].get("type") == "error":
                out.append(" ".join(str(a.get("value")) for a in event["params"].get("args", [])))
            elif event.get("method") == "Log.entryAdded" and event["params"]["entry"].get("level") == "error":
                out.append(str(event["params"]["entry"].get("text")))  # CSP violations, failed loads
        return out

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.call("Browser.close")
        except (BrowserError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        try:  # the browser's own helpers (renderer, zygote) are in its group: none outlives the test
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        self._log.close()
