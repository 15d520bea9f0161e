"""Inline SVG charts for ``report.html``, written directly.

The report's histograms and funnel plots are a few rectangles, lines and labels: written as
SVG text they take a millisecond each, are deterministic, and reference nothing outside the
page (no ids, links or fonts). A plotting library took longer to import and to draw the
report's five charts than writing every table of a million-row extract.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from markupsafe import Markup, escape

__all__ = ["Chart", "nice_ticks"]

#: Dash patterns for the line styles the report names.
DASHES = {"-": "", "--": "6 3", ":": "1.5 3"}
FONT = "font-family:sans-serif;font-size:12px"


def nice_ticks(low: float, high: float, count: int = 6) -> list[float]:
    """Round tick values (1, 2, 2.5 or 5 times a power of ten) covering [low, high]."""
    span = high - low
    if not math.isfinite(span) or span <= 0:
        return [low]
    magnitude = 10 ** math.floor(math.log10(span / count))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if span / (m * magnitude) <= count)
    first = math.ceil(low / step - 1e-9) * step
    return [round(first + i * step, 12) for i in range(int((high - first) / step + 1e-9) + 1)]


def _number(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


class Chart:
    """One chart: data coordinates mapped onto a ``width`` x ``height`` pixel box with
    room for axes (and a legend on the right when ``legend_width`` is given)."""

    def __init__(self, x_range: tuple[float, float], y_range: tuple[float, float],
                 width: int = 640, height: int = 300, legend_width: int = 0) -> None:
        self.width, self.height = width, height
        self.left, self.right = 62.0, width - 16.0 - legend_width
        self.top, self.bottom = 14.0, height - 44.0
        self.x0, self.x1 = x_range
        self.y0, self.y1 = y_range
        self.parts: list[str] = []
        self.legend: list[str] = []

    def x(self, value: float | np.ndarray) -> float | np.ndarray:
        span = (self.x1 - self.x0) or 1.0
        return self.left + (np.asarray(value, dtype=float) - self.x0) / span * (
            self.right - self.left)

    def y(self, value: float | np.ndarray) -> float | np.ndarray:
        span = (self.y1 - self.y0) or 1.0
        return self.bottom - (np.asarray(value, dtype=float) - self.y0) / span * (
            self.bottom - self.top)

    def bars(self, lefts: np.ndarray, rights: np.ndarray, heights: np.ndarray,
             colour: str) -> None:
        """Vertical bars from zero; bars of height zero are not drawn."""
        x0, x1, top = self.x(lefts), self.x(rights), self.y(heights)
        base = float(self.y(0.0))
        for a, b, t, h in zip(x0, x1, top, heights, strict=True):  # one per histogram bin
            if h > 0:
                self.parts.append(f'<rect x="{_number(a)}" y="{_number(t)}" '
                                  f'width="{_number(b - a)}" height="{_number(base - t)}" '
                                  f'fill="{colour}"/>')

    def line(self, xs: Sequence[float] | np.ndarray, ys: Sequence[float] | np.ndarray,
             colour: str, style: str = "-", width: float = 1.0, label: str = "") -> None:
        points = " ".join(f"{_number(a)},{_number(b)}"
                          for a, b in zip(self.x(xs), self.y(ys), strict=True))
        dash = f' stroke-dasharray="{DASHES[style]}"' if DASHES[style] else ""
        self.parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" '
                          f'stroke-width="{width}"{dash}/>')
        if label:
            self._key(f'<line x1="0" y1="0" x2="18" y2="0" stroke="{colour}" '
                      f'stroke-width="{width}"{dash}/>', label)

    def points(self, xs: np.ndarray, ys: np.ndarray, colour: str, label: str = "",
               radius: float = 3.0) -> None:
        for a, b in zip(self.x(xs), self.y(ys), strict=True):  # one per practice
            self.parts.append(f'<circle cx="{_number(a)}" cy="{_number(b)}" '
                              f'r="{_number(radius)}" fill="{colour}"/>')
        if label:
            self._key(f'<circle cx="9" cy="0" r="{_number(radius)}" fill="{colour}"/>', label)

    def labels(self, xs: np.ndarray, ys: np.ndarray, texts: Sequence[str],
               colour: str = "#333333", gap: float = 13.0) -> None:
        """A label beside each point, stacked ``gap`` px apart where points crowd, so every
        label stays legible; a thin leader joins a label that moved to its point. Labels on
        the right half of the plot sit to the left of their point, to stay inside it."""
        px = np.asarray(self.x(xs), dtype=float).reshape(-1)
        py = np.asarray(self.y(ys), dtype=float).reshape(-1)
        if not len(px):
            return
        order = np.argsort(py, kind="stable")
        step = gap * np.arange(len(order))
        placed = np.empty_like(py)
        # each label at its point, or just below the previous one: a running maximum
        placed[order] = np.maximum.accumulate(py[order] - step) + step
        placed -= max(0.0, float(placed.max()) - (self.bottom - 4))  # stack stays on the plot
        placed = np.maximum(placed, self.top + 8)
        left = px > (self.left + self.right) / 2
        tx = np.where(left, px - 7, px + 7)
        for x, y, y_label, x_text, end, label in zip(  # the few labelled points
                px, py, placed, tx, left, texts, strict=True):
            if abs(y_label - y) > 3:
                self.parts.append(f'<line x1="{_number(x)}" y1="{_number(y)}" '
                                  f'x2="{_number(x_text)}" y2="{_number(y_label)}" '
                                  f'stroke="{colour}" stroke-width="0.6"/>')
            self.parts.append(f'<text x="{_number(x_text)}" y="{_number(y_label)}" dy="4" '
                              f'fill="{colour}" text-anchor="{"end" if end else "start"}" '
                              f'style="{FONT}">{escape(label)}</text>')

    def text(self, x: float, y: float, label: str, colour: str = "#333333",
             anchor: str = "start") -> None:
        self.parts.append(f'<text x="{_number(self.x(x))}" y="{_number(self.y(y))}" '
                          f'fill="{colour}" text-anchor="{anchor}" dy="10" dx="3" '
                          f'style="{FONT}">{escape(label)}</text>')

    def _key(self, mark: str, label: str) -> None:
        y = self.top + 8 + 16 * len(self.legend)
        self.legend.append(f'<g transform="translate({_number(self.right + 12)},{_number(y)})">'
                           f'{mark}<text x="24" y="4" style="{FONT}">{escape(label)}</text></g>')

    def axes(self, x_label: str, y_label: str) -> None:
        """Left and bottom axes with round ticks and their titles."""
        grey = 'stroke="#555555" stroke-width="1"'
        out = [f'<line x1="{self.left}" y1="{self.bottom}" x2="{self.right}" '
               f'y2="{self.bottom}" {grey}/>',
               f'<line x1="{self.left}" y1="{self.top}" x2="{self.left}" '
               f'y2="{self.bottom}" {grey}/>']
        for tick in nice_ticks(self.x0, self.x1):
            at = _number(self.x(tick))
            out.append(f'<line x1="{at}" y1="{self.bottom}" x2="{at}" '
                       f'y2="{self.bottom + 4}" {grey}/>')
            out.append(f'<text x="{at}" y="{self.bottom + 16}" text-anchor="middle" '
                       f'style="{FONT}">{tick:g}</text>')
        for tick in nice_ticks(self.y0, self.y1, 5):
            at = _number(self.y(tick))
            out.append(f'<line x1="{self.left - 4}" y1="{at}" x2="{self.left}" y2="{at}" '
                       f'{grey}/>')
            out.append(f'<text x="{self.left - 7}" y="{at}" dy="4" text-anchor="end" '
                       f'style="{FONT}">{tick:g}</text>')
        middle = _number((self.left + self.right) / 2)
        out.append(f'<text x="{middle}" y="{self.height - 8}" text-anchor="middle" '
                   f'style="{FONT}">{escape(x_label)}</text>')
        y_middle = _number((self.top + self.bottom) / 2)
        out.append(f'<text transform="translate(14,{y_middle}) rotate(-90)" '
                   f'text-anchor="middle" style="{FONT}">{escape(y_label)}</text>')
        self.parts = out + self.parts

    def svg(self, title: str) -> Markup:
        """The chart as an inline ``<svg>`` element (the HTML parser supplies the SVG
        namespace), titled for screen readers."""
        body = "".join([*self.parts, *self.legend])
        return Markup(f'<svg viewBox="0 0 {self.width} {self.height}" width="{self.width}" '
                      f'height="{self.height}" role="img" aria-label="{escape(title)}">'
                      f'<title>{escape(title)}</title>'
                      f'<rect width="{self.width}" height="{self.height}" fill="white"/>'
                      f'{body}</svg>')
