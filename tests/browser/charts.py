"""Charts as Chromium drew them (operations/static/operations/charts.js leaves its uPlot instance on each figure)."""

from __future__ import annotations

from playwright.sync_api import Locator, expect


def drawn(figure: Locator) -> dict:
    """What uPlot drew in a chart: its series, data, x tick labels, marker labels and painted pixels."""
    expect(figure.locator(".uplot canvas")).to_have_count(1)
    return figure.evaluate("""figure => {
        const u = figure.uplot;
        const canvas = figure.querySelector(".uplot canvas");
        const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
        let painted = 0;
        for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) painted++;
        return {
            series: u.series.map(s => s.label), data: u.data, ticks: JSON.parse(figure.dataset.xTicks || "[]"),
            width: u.bbox.width / devicePixelRatio, painted,
            markers: Array.from(figure.querySelectorAll(".op-chart-marker")).map(m => ({
                text: m.textContent, left: m.getBoundingClientRect().left - u.over.getBoundingClientRect().left,
                expected: u.valToPos(Number(m.dataset.x), "x"), visible: !m.hidden})),
        };
    }""")
