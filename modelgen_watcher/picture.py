"""A scored route as a picture: one SVG document, the one drawing of a result.

``score --svg`` writes it and the server's page shows it (``GET /ui/picture.svg``), so
the drawing, the colour scale and the text alternatives have this one home; the page's
script only inserts what this module wrote.

Each route is a panel drawn from its steps' coordinates (a local equirectangular
projection, north up, no map tiles: they would need the internet): a dark casing
polyline under the whole route, then one ``<path class="step">`` per step, from the
previous step's end (the route's start for the first step, when the input says where
it is) to the step's own ``end_location``, stroked with its score's colour. The
colours are viridis, readable by colour-blind readers and in greyscale, spread over
the result's own score range (the legend names both ends): a model's scores often
differ in the second decimal, which a fixed 0-1 scale would paint in one colour.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard
from xml.sax.saxutils import escape

from .volume.schemas import Route, RouteRequest, ScoredRoute

VIRIDIS = (
    "#440154", "#482475", "#414487", "#355f8d", "#2a788e", "#21918c",
    "#22a884", "#44bf70", "#7ad151", "#bddf26", "#fde725",
)
"""matplotlib's viridis (CC0) at 0, 0.1, ... 1: perceptually uniform, so equal score steps look equal."""

EARTH_RADIUS_M = 6_371_008.8
"""The mean Earth radius: at a city's scale the projection's error is far below a pixel."""

WIDTH = 720
MARGIN = 16
LEGEND_HEIGHT = 72
PANEL_HEADER = 28
MAP_HEIGHT = 380
PANEL_GAP = 16
MAP_PADDING = 28
MIN_SPAN_M = 200.0
"""The smallest stretch of ground a panel shows, so a one-step route is not magnified into a blob."""

STEP_WIDTH = 6
CASING_WIDTH = 10
CASING = "#1f1f1f"
MAP_BACKGROUND = "#f2f1ec"

LatLng = tuple[float, float]


@dataclass(frozen=True)
class Scale:
    """Scores ``lo``..``hi`` onto viridis; when every score is the same, it sits in the middle."""

    lo: float
    hi: float

    def position(self, score: float) -> float:
        """Where ``score`` lies on the scale, 0 (lowest: riskier) to 1 (highest: safer)."""
        if self.hi - self.lo <= 1e-12:
            return 0.5
        return min(1.0, max(0.0, (score - self.lo) / (self.hi - self.lo)))

    def colour(self, score: float) -> str:
        return colour_at(self.position(score))


def colour_at(t: float) -> str:
    """Viridis at ``t`` (0..1), linear between the stops, as ``#rrggbb``."""
    t = min(1.0, max(0.0, t))
    span = (len(VIRIDIS) - 1) * t
    i = min(int(span), len(VIRIDIS) - 2)
    f = span - i
    a, b = _rgb(VIRIDIS[i]), _rgb(VIRIDIS[i + 1])
    return "#" + "".join(f"{round(x + (y - x) * f):02x}" for x, y in zip(a, b, strict=True))


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return int(hex_colour[1:3], 16), int(hex_colour[3:5], 16), int(hex_colour[5:7], 16)


def scale_of(result: ScoredRoute) -> Scale:
    """The lowest and highest step score of the whole result: one scale for every panel."""
    scores = [p.score for route in result.routes for p in route]
    return Scale(min(scores), max(scores)) if scores else Scale(0.0, 1.0)


def route_starts(request: RouteRequest) -> list[LatLng | None]:
    """Where each input route begins (its first leg's first step's ``start_location``, else the leg's), if it says.

    A DirectionsResult carries both, as extra keys the schema keeps but does not check,
    so they are read leniently here: the result holds only each step's end, and without
    a start the first step is drawn as a dot at its end.
    """
    return [_start_of(route) for route in request.routes]


def _start_of(route: Route) -> LatLng | None:
    leg = route.legs[0]
    for loc in ((leg.steps[0].model_extra or {}).get("start_location"), (leg.model_extra or {}).get("start_location")):
        if isinstance(loc, dict):
            lat, lng = loc.get("lat"), loc.get("lng")
            if _finite(lat) and _finite(lng) and -90 <= lat <= 90 and -180 <= lng <= 180:
                return float(lat), float(lng)
    return None


def _finite(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# -- layout ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Frame:
    """A panel's projection: metres east/north of a centre, then pixels in the map's box."""

    lat0: float
    lng0: float
    cos_lat: float
    px_per_m: float
    cx: float
    cy: float

    def metres(self, lat: float, lng: float) -> tuple[float, float]:
        east = math.radians(lng - self.lng0) * self.cos_lat * EARTH_RADIUS_M
        north = math.radians(lat - self.lat0) * EARTH_RADIUS_M
        return east, north

    def xy(self, point: LatLng) -> tuple[float, float]:
        east, north = self.metres(*point)
        return self.cx + east * self.px_per_m, self.cy - north * self.px_per_m


def _frame(points: Sequence[LatLng], left: float, top: float, width: float, height: float) -> _Frame:
    lats = [p[0] for p in points]
    lngs = [p[1] for p in points]
    lat0, lng0 = (min(lats) + max(lats)) / 2, (min(lngs) + max(lngs)) / 2
    probe = _Frame(lat0, lng0, math.cos(math.radians(lat0)), 1.0, 0.0, 0.0)
    corners = [probe.metres(lat, lng) for lat, lng in points]
    span_e = max(max(c[0] for c in corners) - min(c[0] for c in corners), MIN_SPAN_M)
    span_n = max(max(c[1] for c in corners) - min(c[1] for c in corners), MIN_SPAN_M)
    px_per_m = min((width - 2 * MAP_PADDING) / span_e, (height - 2 * MAP_PADDING) / span_n)
    return _Frame(lat0, lng0, probe.cos_lat, px_per_m, left + width / 2, top + height / 2)


def nice_distance(max_m: float) -> float:
    """The longest 1, 2 or 5 x 10^n metres not over ``max_m``: what a scale bar shows."""
    if max_m < 1:
        return 1.0
    power = 10 ** math.floor(math.log10(max_m))
    for factor in (5, 2, 1):
        if factor * power <= max_m:
            return float(factor * power)
    return float(power)


def distance_text(metres: float) -> str:
    return f"{metres / 1000:g} km" if metres >= 1000 else f"{metres:g} m"


def _n(value: float) -> str:
    """A coordinate in the document: a tenth of a pixel is finer than any screen."""
    return f"{value:.1f}".rstrip("0").rstrip(".") if not value.is_integer() else str(int(value))


def _score_text(score: float) -> str:
    return f"{score:.3f}"


# -- the document ------------------------------------------------------------------


def render(result: ScoredRoute, starts: Sequence[LatLng | None] = (), *, id_prefix: str = "route") -> str:
    """The whole picture of ``result`` as a standalone SVG document (UTF-8 text).

    ``starts``: where each route begins (``route_starts`` of the input), if known.
    ``id_prefix`` keeps the document's ids unique where several are inlined in one page;
    it must be an XML name (a request key is one).
    """
    scale = scale_of(result)
    panels = len(result.routes)
    height = LEGEND_HEIGHT + panels * (PANEL_HEADER + MAP_HEIGHT + PANEL_GAP) + MARGIN - PANEL_GAP
    title, desc = _texts(result, scale)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
        f'role="img" aria-labelledby="{id_prefix}-title {id_prefix}-desc" class="scored-route" '
        f'font-family="system-ui, -apple-system, \'Segoe UI\', Roboto, \'DejaVu Sans\', sans-serif" font-size="13">',
        f'<title id="{id_prefix}-title">{escape(title)}</title>',
        f'<desc id="{id_prefix}-desc">{escape(desc)}</desc>',
        *_legend(scale, id_prefix),
    ]
    top = float(LEGEND_HEIGHT)
    for index, points in enumerate(result.routes):
        start = starts[index] if index < len(starts) else None
        total = result.totalScores[index]
        out += _panel(index, [(p.lat, p.lng) for p in points], [p.score for p in points], start, total, scale, top)
        top += PANEL_HEADER + MAP_HEIGHT + PANEL_GAP
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _texts(result: ScoredRoute, scale: Scale) -> tuple[str, str]:
    """The picture's title and description: what a reader who cannot see it needs to know."""
    steps = sum(len(r) for r in result.routes)
    n = len(result.routes)
    title = f"Scored route: {n} route{'s' if n != 1 else ''}, {steps} step{'s' if steps != 1 else ''}"
    parts = []
    for i, points in enumerate(result.routes):
        if not points:
            parts.append(f"Route {i + 1}: no steps.")
            continue
        low = min(range(len(points)), key=lambda j: points[j].score)
        high = max(range(len(points)), key=lambda j: points[j].score)
        parts.append(
            f"Route {i + 1}: {len(points)} steps, total {_score_text(result.totalScores[i])}; "
            f"lowest score {_score_text(points[low].score)} at step {low + 1}, "
            f"highest {_score_text(points[high].score)} at step {high + 1}."
        )
    parts.append(
        f"Each step is coloured from dark purple (score {_score_text(scale.lo)}, riskier) "
        f"to yellow (score {_score_text(scale.hi)}, safer); higher scores are safer."
    )
    return title, " ".join(parts)


def _legend(scale: Scale, id_prefix: str) -> list[str]:
    bar_x, bar_y, bar_w, bar_h = MARGIN, 30, 300, 14
    gradient = f"{id_prefix}-scale"
    stops = "".join(
        f'<stop offset="{i / (len(VIRIDIS) - 1):.2f}" stop-color="{c}"/>' for i, c in enumerate(VIRIDIS)
    )
    same = scale.hi - scale.lo <= 1e-12
    out = [
        f'<g class="legend" aria-hidden="true"><defs><linearGradient id="{gradient}">{stops}</linearGradient></defs>',
        f'<text x="{bar_x}" y="20" font-weight="600">Score per step (higher is safer)</text>',
        f'<rect x="{bar_x}" y="{bar_y}" width="{bar_w}" height="{bar_h}" fill="url(#{gradient})" stroke="{CASING}" '
        'stroke-width="0.5"/>',
        f'<text x="{bar_x}" y="{bar_y + bar_h + 16}">{_score_text(scale.lo)} riskier</text>',
        f'<text x="{bar_x + bar_w}" y="{bar_y + bar_h + 16}" text-anchor="end">safer {_score_text(scale.hi)}</text>',
    ]
    if same:
        out.append(f'<text x="{bar_x + bar_w + 12}" y="{bar_y + 12}">every step scored {_score_text(scale.lo)}</text>')
    out.append("</g>")
    return out


def _panel(index: int, points: list[LatLng], scores: list[float], start: LatLng | None, total: float, scale: Scale,
           top: float) -> list[str]:
    left, width = float(MARGIN), float(WIDTH - 2 * MARGIN)
    map_top = top + PANEL_HEADER
    label = f"Route {index + 1}: total {_score_text(total)}, {len(points)} step{'s' if len(points) != 1 else ''}"
    out = [
        f'<g class="route" data-route="{index}" data-total="{total!r}">',
        f'<text x="{_n(left)}" y="{_n(top + 18)}" font-weight="600">{escape(label)}</text>',
        f'<rect x="{_n(left)}" y="{_n(map_top)}" width="{_n(width)}" height="{MAP_HEIGHT}" fill="{MAP_BACKGROUND}" '
        'stroke="#b8b6ad" aria-hidden="true"/>',
    ]
    if not points:
        out += [f'<text x="{_n(left + width / 2)}" y="{_n(map_top + MAP_HEIGHT / 2)}" text-anchor="middle">'
                "no steps to draw</text>", "</g>"]
        return out
    frame = _frame([*points, *([start] if start else [])], left, map_top, width, MAP_HEIGHT)
    line = [start, *points] if start else points
    xy = [frame.xy(p) for p in line]
    out.append(
        f'<polyline class="casing" points="{" ".join(f"{_n(x)},{_n(y)}" for x, y in xy)}" fill="none" '
        f'stroke="{CASING}" stroke-width="{CASING_WIDTH}" stroke-linecap="round" stroke-linejoin="round" '
        'aria-hidden="true"/>'
    )
    offset = 1 if start else 0
    for j, score in enumerate(scores):
        x1, y1 = xy[j + offset]
        if j + offset == 0:
            d = f"M{_n(x1)} {_n(y1)}h0"  # no start known: the first step is a dot at its end (round caps draw it)
        else:
            x0, y0 = xy[j + offset - 1]
            d = f"M{_n(x0)} {_n(y0)}L{_n(x1)} {_n(y1)}"
        out.append(
            f'<path class="step" d="{d}" stroke="{scale.colour(score)}" stroke-width="{STEP_WIDTH}" '
            f'stroke-linecap="round" fill="none" data-step="{j}" data-score="{score!r}">'
            f"<title>Route {index + 1}, step {j + 1}: score {_score_text(score)}</title></path>"
        )
    (sx, sy), (ex, ey) = xy[0], xy[-1]
    out += [
        f'<circle class="start" cx="{_n(sx)}" cy="{_n(sy)}" r="6" fill="#ffffff" stroke="{CASING}" stroke-width="2.5">'
        "<title>Start</title></circle>",
        f'<circle class="end" cx="{_n(ex)}" cy="{_n(ey)}" r="6" fill="{CASING}" stroke="#ffffff" stroke-width="2">'
        "<title>End</title></circle>",
        *_scale_bar(frame, left, map_top + MAP_HEIGHT, width),
        *_north_arrow(left + width - 24, map_top + 14),
        "</g>",
    ]
    return out


def _scale_bar(frame: _Frame, left: float, bottom: float, width: float) -> list[str]:
    metres = nice_distance(width / 4 / frame.px_per_m)
    length = metres * frame.px_per_m
    x, y = left + 14, bottom - 14
    path = f"M{_n(x)} {_n(y - 6)}v6h{_n(length)}v-6"
    return [
        f'<g class="scale-bar" aria-hidden="true" data-metres="{metres:g}">',
        f'<path d="{path}" fill="none" stroke="#ffffff" stroke-width="4"/>',
        f'<path d="{path}" fill="none" stroke="{CASING}" stroke-width="1.5"/>',
        f'<text x="{_n(x + length + 6)}" y="{_n(y)}">{distance_text(metres)}</text>',
        "</g>",
    ]


def _north_arrow(x: float, y: float) -> list[str]:
    return [
        f'<g class="north-arrow" aria-hidden="true"><path d="M{_n(x)} {_n(y)}l7 20l-7 -5l-7 5z" fill="{CASING}"/>',
        f'<text x="{_n(x)}" y="{_n(y + 34)}" text-anchor="middle" font-weight="600">N</text></g>',
    ]
