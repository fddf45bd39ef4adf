"""Peak memory of decoding one input, per byte of input: the documented worst case behind the deploy limits.

Each case is a document written here, decoded by ``decoding.decode_route`` in a fresh
interpreter (so earlier cases leave nothing behind); the figure is that process's peak
RSS (``VmHWM``) minus its RSS before decoding, with the document already in memory. The
cases are the shapes that cost most per byte within the limits (``MAX_CONTAINERS``,
``MAX_STEPS``, 5 MiB): many small objects, many short strings, many distinct keys, the
most steps, plus a real-shaped route and a flood that is refused.

Run: ``.venv/bin/python bench/decode_memory.py`` (a few seconds; ``make reliability``).
"""

from __future__ import annotations

import json
import subprocess
import sys

from modelgen_watcher.volume.decoding import MAX_CONTAINERS, MAX_STEPS

LIMIT = 5 * 1024 * 1024


def _valid(extra: str) -> str:
    return '{"routes":[{"legs":[{"steps":[{"end_location":{"lat":30.2,"lng":-97.7}}]}]}],"x":' + extra + "}"


def _fill(unit: str, budget: int, cap: int | None = None) -> str:
    n = min(budget // (len(unit) + 1), cap if cap is not None else 10**9)
    return "[" + ",".join([unit] * n) + "]"


def _real_step(i: int) -> dict[str, object]:
    pts = [{"lat": 30.28 + 0.0001 * k, "lng": -97.73 - 0.0001 * k} for k in range(4)]
    return {"distance": {"text": "120 m", "value": 120}, "end_location": pts[-1], "start_location": pts[0],
            "polyline": {"points": "a{~vDx_toQ[?]{@" * 3}, "path": pts, "lat_lngs": pts,
            "instructions": f"Turn left onto <b>Street {i}</b>", "maneuver": "turn-left" if i % 2 else ""}


CASES: dict[str, str] = {
    "real-shaped route, 6,500 steps": json.dumps({"routes": [{"legs": [{"steps": [_real_step(i) for i in range(6500)]}]}]}),
    f"most steps allowed ({MAX_STEPS:,}), each minimal": json.dumps(
        {"routes": [{"legs": [{"steps": [{"end_location": {"lat": 1.5, "lng": 2.5}, "maneuver": "x"}] * MAX_STEPS}]}]}),
    f"most objects allowed ({MAX_CONTAINERS:,} small ones)": _valid(_fill('{"a":0}', LIMIT, MAX_CONTAINERS - 10)),
    "5 MiB of two-letter strings": _valid(_fill('"ab"', LIMIT - 200)),
    "5 MiB of distinct keys": _valid("{" + ",".join(f'"{i:x}":0' for i in range(LIMIT // 10)) + "}"),
    "5 MiB of floats": _valid(_fill("1.5", LIMIT - 200)),
    "a million {} (refused)": '{"routes":[' + ",".join(["{}"] * 1_000_000) + "]}",
}

PROBE = r"""
import sys
from modelgen_watcher.volume.decoding import DecodeError, decode_route
def kb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
data = sys.stdin.buffer.read()
before = kb("VmRSS")
try:
    decode_route(data)
    outcome = "valid"
except DecodeError as exc:
    outcome = "refused: " + exc.stage.value
print(kb("VmHWM") - before, outcome)
"""


def main() -> int:
    print("decode memory: peak RSS of one decode above the process's RSS with the bytes in hand\n")
    print("| input | bytes | outcome | peak MB | bytes of memory per byte |\n| --- | ---: | --- | ---: | ---: |")
    worst, peak_mb = 0.0, 0.0
    for name, text in CASES.items():
        data = text.encode()
        assert len(data) <= LIMIT, (name, len(data))
        out = subprocess.run([sys.executable, "-c", PROBE], input=data, capture_output=True, check=True).stdout
        kb, outcome = out.decode().split(" ", 1)
        ratio = int(kb) * 1024 / len(data)
        worst, peak_mb = max(worst, ratio), max(peak_mb, int(kb) / 1024)
        print(f"| {name} | {len(data):,} | {outcome.strip()} | {int(kb) / 1024:.0f} | {ratio:.1f} |")
    print(f"\nlargest peak: {peak_mb:.0f} MB; largest ratio: {worst:.1f} bytes of memory per byte of input, "
          f"so at most {worst * LIMIT / 2**20:.0f} MB for any input at the 5 MiB limit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
