/* The operations admin's charts, drawn with uPlot (./uplot/, a static file).
 *
 * Each <figure class="op-chart" data-chart="ID"> is drawn from the JSON of <script id="ID"> that the page
 * carries (operations/charts.py says its shape). Times are UTC, as everywhere in the admin. The charts of one
 * .op-charts block share their x axis: the cursor and a zoom (drag across a chart; double-click undoes it)
 * move on all of them.
 *
 * What each chart drew is left on its figure for tests and tools: `figure.uplot` (the uPlot instance) and
 * `data-x-ticks` (the x axis' tick labels as drawn, JSON).
 */
"use strict";

(function () {
  const DAY = 86400;
  const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  const FONT = '12px -apple-system, "Segoe UI", system-ui, Roboto, "Helvetica Neue", Arial, sans-serif';
  // The admin's own colours (light or dark theme), read once the stylesheets apply.
  const themed = (name, fallback) =>
    getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
  let AXIS_COLOUR = "#666";
  let GRID_COLOUR = "rgba(0, 0, 0, 0.08)";

  const pad = (n) => String(n).padStart(2, "0");

  function grouped(value, decimals) {
    return value.toLocaleString("en-US", { minimumFractionDigits: decimals, maximumFractionDigits: decimals });
  }

  // As many decimals as a step between ticks needs: 0.05 -> 2, 2,000 -> 0.
  function decimalsFor(step) {
    if (!step || !isFinite(step)) return 2;
    return Math.max(0, Math.min(10, -Math.floor(Math.log10(Math.abs(step)) + 1e-9)));
  }

  // A time on a tick: only as precise as the spacing of the ticks (in seconds) asks.
  function timeTick(seconds, step) {
    const d = new Date(seconds * 1000);
    const day = `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
    if (step >= 365 * DAY) return String(d.getUTCFullYear());
    if (step >= 28 * DAY) return `${MONTHS[d.getUTCMonth()]} ${d.getUTCFullYear()}`;
    if (step >= DAY) return day;
    return `${day} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
  }

  function timeFull(seconds) {
    const d = new Date(seconds * 1000);
    return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ` +
      `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())} UTC`;
  }

  const percent = (value, decimals) => `${grouped(value * 100, decimals)} %`;

  // How a value of each unit reads on a tick (given the step between ticks) and under the cursor.
  const UNITS = {
    money: { tick: (v, step) => grouped(v, decimalsFor(step)), exact: (v) => grouped(v, 2) },
    loss: { tick: (v, step) => grouped(v, Math.max(2, decimalsFor(step))), exact: (v) => grouped(v, 4) },
    fraction: { tick: (v, step) => percent(v, decimalsFor(step * 100)), exact: (v) => percent(v, 2) },
    drawdown: { tick: (v, step) => percent(v, decimalsFor(step * 100)), exact: (v) => percent(v, 2) },
    number: { tick: (v) => String(Number(v.toPrecision(3))), exact: (v) => String(Number(v.toPrecision(4))) },
  };

  // A drawdown from its deepest up to zero; a learning rate (always positive) from zero up.
  const Y_RANGES = {
    drawdown: (u, min) => [Math.min(min * 1.05, -0.001), 0],
    number: (u, min, max) => (min >= 0 && max > 0 ? [0, max * 1.08] : [min, max]),
  };

  // Room for the longest tick label of a y axis, measured in the axis' font.
  const measure = document.createElement("canvas").getContext("2d");
  measure.font = FONT;
  function axisSize(u, values) {
    const widest = Math.max(0, ...(values || []).map((text) => measure.measureText(text).width));
    return Math.ceil(widest) + 18;
  }

  function placeMarkers(u, nodes) {
    const width = u.over.clientWidth;
    for (const node of nodes) {
      const left = u.valToPos(Number(node.dataset.x), "x");
      node.style.left = `${left}px`;
      node.hidden = !(left >= 0 && left <= width);
    }
  }

  function draw(figure, chart, group) {
    const unit = UNITS[chart.y.unit] || UNITS.number;
    const isTime = chart.x.kind === "time";
    const markers = chart.markers.map((marker) => {
      const node = document.createElement("div");
      node.className = "op-chart-marker";
      node.dataset.x = marker.x;
      const label = document.createElement("span");
      label.textContent = marker.label;
      node.appendChild(label);
      return node;
    });
    const xAxis = {
      stroke: AXIS_COLOUR,
      font: FONT,
      grid: { stroke: GRID_COLOUR },
      ticks: { stroke: GRID_COLOUR },
      label: chart.x.label || undefined,
      labelFont: FONT,
      values: (u, splits, axis, space, step) => {
        const labels = splits.map((value) => (isTime ? timeTick(value, step) : String(value)));
        figure.dataset.xTicks = JSON.stringify(labels);
        return labels;
      },
    };
    if (isTime) {
      xAxis.space = (u, axis, min, max) => (max - min < 20 * DAY ? 130 : 80);
    } else {
      xAxis.space = 50;
      xAxis.incrs = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10000];
    }
    const options = {
      width: Math.max(300, figure.clientWidth),
      height: chart.height || 300,
      tzDate: (seconds) => uPlot.tzDate(new Date(seconds * 1000), "Etc/UTC"),
      scales: {
        x: { time: isTime },
        y: Y_RANGES[chart.y.unit] ? { range: Y_RANGES[chart.y.unit] } : {},
      },
      cursor: { sync: { key: group.key }, points: { size: 6 } },
      legend: { live: true },
      axes: [
        xAxis,
        {
          stroke: AXIS_COLOUR,
          font: FONT,
          grid: { stroke: GRID_COLOUR },
          ticks: { stroke: GRID_COLOUR },
          label: chart.y.label || undefined,
          labelFont: FONT,
          labelSize: 20,
          size: axisSize,
          values: (u, splits, axis, space, step) => splits.map((value) => unit.tick(value, step)),
        },
      ],
      series: [
        {
          label: isTime ? "time" : chart.x.label || "x",
          value: (u, v) => (v == null ? "–" : isTime ? timeFull(v) : String(v)),
        },
        ...chart.series.map((series) => ({
          label: series.label,
          stroke: series.colour,
          fill: series.fill ? `${series.colour}33` : undefined,
          width: 2,
          points: { show: false },
          value: (u, v) => (v == null ? "–" : unit.exact(v)),
        })),
      ],
      hooks: {
        draw: [(u) => placeMarkers(u, markers)],
        setScale: [(u, key) => {
          if (key !== "x" || group.syncing) return;
          group.syncing = true;
          for (const other of group.charts) {
            if (other !== u) other.setScale("x", { min: u.scales.x.min, max: u.scales.x.max });
          }
          group.syncing = false;
        }],
      },
    };
    const u = new uPlot(options, chart.data, figure);
    markers.forEach((node) => u.over.appendChild(node));
    placeMarkers(u, markers);
    figure.uplot = u;
    group.charts.push(u);
    new ResizeObserver(() => {
      const width = Math.max(300, figure.clientWidth);
      if (width !== u.width) u.setSize({ width, height: u.height });
    }).observe(figure);
  }

  function drawAll() {
    AXIS_COLOUR = themed("--body-quiet-color", AXIS_COLOUR);
    GRID_COLOUR = themed("--hairline-color", GRID_COLOUR);
    document.querySelectorAll(".op-charts").forEach((block, index) => {
      const group = { key: `op-charts-${index}`, charts: [], syncing: false };
      block.querySelectorAll("figure.op-chart[data-chart]").forEach((figure) => {
        const source = document.getElementById(figure.dataset.chart);
        if (!source) return;
        draw(figure, JSON.parse(source.textContent), group);
      });
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", drawAll);
  } else {
    drawAll();
  }
})();
