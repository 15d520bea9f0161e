"""report.html and trend.html as a reader sees them: in a real browser (headless Chromium).

SPEC "Report layout (rev 2)": the pages read well on a 1400 px screen and on a 420 px phone
(no horizontal scrolling) and printed to A4 (no heading stranded at a page end, the as-of
date on every page); SPEC "Privacy": report.html loads nothing from outside.

The browser is Debian's ``chromium`` package, driven by Playwright's Python API with
``executable_path`` (Playwright's own browser download cannot work here). ``.ci/run``
installs Chromium where it is missing; these tests skip only where there is none.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.sample_data import generate
from tests.conftest import invoke

sync_api = pytest.importorskip(
    "playwright.sync_api",
    reason="Playwright is not installed: pip install -e '.[test]'",
)

WIDTHS = (1400, 420)
MONTHS = (dt.date(2026, 9, 30), dt.date(2026, 10, 31))
LATEST = MONTHS[-1].isoformat()


def chromium_path() -> str | None:
    """The system Chromium: $B12SCREEN_CHROMIUM, else Debian's chromium on the PATH."""
    for candidate in (os.environ.get("B12SCREEN_CHROMIUM"), shutil.which("chromium"),
                      shutil.which("chromium-browser"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    executable = chromium_path()
    if executable is None:
        pytest.skip("no Chromium on this machine and none could be installed "
                    "(.ci/run runs 'apt-get install -y chromium'; set B12SCREEN_CHROMIUM "
                    "to another Chromium build)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two monthly runs of ~300 patients, as a QI analyst makes them, and their trend."""
    root = tmp_path_factory.mktemp("browser")
    reports = root / "reports"
    for as_of in MONTHS:
        extract = generate(root / f"extract-{as_of:%Y-%m}", n_patients=300, seed=as_of.month,
                           as_of=as_of)
        result = invoke("run", extract["labs"], "--patients", extract["patients"],
                        "--medications", extract["medications"],
                        "--out", reports / f"{as_of:%Y-%m}", "--quiet")
        assert result.exit_code == 0, result.output
    result = invoke("trend", reports)
    assert result.exit_code == 0, result.output
    return {"report": reports / f"{MONTHS[-1]:%Y-%m}" / "report.html",
            "trend": reports / "trend.html"}


class Opened:
    """A page loaded in Chromium, with what it asked the network for and what it logged."""

    def __init__(self, browser: sync_api.Browser, path: Path, width: int) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": 900})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.outside: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.context.route("**/*", self._route)
        self.page.goto(path.resolve().as_uri(), wait_until="load")

    def _route(self, route: sync_api.Route) -> None:
        """Record any request that leaves the file, and never let it through."""
        url = route.request.url
        if url.startswith(("file:", "data:")):
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def opened(browser, pages, request) -> Iterator[Opened]:
    name, width = request.param
    page = Opened(browser, pages[name], width)
    yield page
    page.close()


SCREENS = [pytest.param((name, width), id=f"{name}-{width}px")
           for name in ("report", "trend") for width in WIDTHS]


@pytest.mark.parametrize("opened", SCREENS, indirect=True)
def test_reads_on_screen_without_sideways_scrolling(opened: Opened) -> None:
    page = opened.page
    width = page.evaluate("window.innerWidth")
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    assert page.evaluate("document.body.scrollWidth") <= width
    sticking_out = page.evaluate(
        """() => [...document.querySelectorAll('body *')]
               .filter(e => !e.closest('.table-scroll'))
               .filter(e => e.getBoundingClientRect().right > window.innerWidth + 0.5)
               .map(e => e.tagName)""")
    assert sticking_out == []
    assert opened.errors == []
    assert opened.outside == []


@pytest.mark.parametrize("opened", SCREENS, indirect=True)
def test_every_chart_is_drawn(opened: Opened) -> None:
    """Every chart has a visible size inside the viewport; a figure without a chart says why
    (small numbers are not drawn), and the report always draws its result distributions."""
    boxes = opened.page.evaluate(
        """() => [...document.querySelectorAll('svg')].map(s => {
               const r = s.getBoundingClientRect();
               return {label: s.getAttribute('aria-label') || s.closest('figure')?.id,
                       width: r.width, height: r.height, right: r.right}; })""")
    width = opened.page.evaluate("window.innerWidth")
    for box in boxes:
        assert box["width"] > 50 and box["height"] > 50, box
        assert box["right"] <= width + 0.5, box
    chartless = opened.page.evaluate(
        """() => [...document.querySelectorAll('figure')].filter(f => !f.querySelector('svg'))
               .map(f => f.innerText)""")
    for text in chartless:
        assert re.search(r"(?i)too few|no month has a publishable", text), text
    if opened.page.url.endswith("report.html"):
        assert sum(1 for b in boxes if b["label"].startswith("Distribution of")) == 3


@pytest.mark.parametrize("opened", [pytest.param(("report", 1400), id="report")], indirect=True)
def test_funnel_plots_label_the_practices_outside_the_limits(opened: Opened) -> None:
    figures = opened.page.evaluate(
        """() => [...document.querySelectorAll('figure[id^=funnel-]')].map(f => ({
               listed: [...f.querySelectorAll('tbody tr td:first-child')].map(c => c.innerText),
               labels: [...f.querySelectorAll('svg text')].map(t => t.textContent)}))""")
    assert len(figures) == 2
    for figure in figures:
        labelled = {p.strip() for label in figure["labels"] for p in label.split(",")}
        assert set(figure["listed"]) <= labelled


def pdf_pages(pdf: bytes, tmp_path: Path) -> list[str] | None:
    """The PDF's text, one string per page (pdftotext -layout); None without poppler."""
    pdftotext = shutil.which("pdftotext")
    if pdftotext is None:
        return None
    path = tmp_path / "page.pdf"
    path.write_bytes(pdf)
    text = subprocess.run([pdftotext, "-layout", str(path), "-"], capture_output=True,
                          check=True, text=True).stdout
    return text.split("\f")[:-1]


PRINTS = [pytest.param((name, 1400), id=name) for name in ("report", "trend")]


@pytest.mark.parametrize("opened", PRINTS, indirect=True)
def test_prints_to_a4_with_the_as_of_date_on_every_page(opened: Opened, tmp_path: Path) -> None:
    page = opened.page
    page.emulate_media(media="print")
    breaks = page.evaluate(
        """() => [...document.querySelectorAll('h1, h2, h3')]
               .map(h => getComputedStyle(h).breakAfter)""")
    assert breaks and set(breaks) == {"avoid"}
    headings = {" ".join(h.split()) for h in page.evaluate(
        "() => [...document.querySelectorAll('h1, h2, h3')].map(h => h.innerText)")}

    pdf = page.pdf(format="A4")
    assert pdf.startswith(b"%PDF-")
    sizes = re.findall(rb"/MediaBox\s*\[\s*0 0 ([\d.]+) ([\d.]+)\s*\]", pdf)
    assert sizes and all(abs(float(w) - 595.3) < 2 and abs(float(h) - 841.9) < 2
                         for w, h in sizes)  # A4 in points

    texts = pdf_pages(pdf, tmp_path)
    if texts is None:
        pytest.skip("pdftotext (poppler-utils) is not installed: the PDF's text is not checked")
    assert len(texts) >= 1
    footer = re.compile(r"^Page \d+ of \d+$")
    for number, text in enumerate(texts, start=1):
        lines = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
        assert any(LATEST in line for line in lines[:2]), f"page {number}: no as-of date on top"
        body = [line for line in lines[1:] if not footer.match(line)]
        assert body, f"page {number} is empty"
        assert body[-1] not in headings, f"page {number} ends with the heading {body[-1]!r}"
        assert footer.match(lines[-1]), f"page {number}: no page number"
