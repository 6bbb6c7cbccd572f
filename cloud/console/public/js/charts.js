// Time-series charts with uPlot (served from node_modules as /console/vendor/uplot/). A chart keeps
// its element's width (ResizeObserver) so layouts reflow on a tablet turned sideways.
/* global uPlot */

const COLORS = ['#1d4ed8', '#b91c1c', '#15803d', '#a16207', '#7c3aed', '#0e7490']

/**
 * A line chart in el. series: [{ label, color?, dash?, value?: (v) => string }]. setData(xsMs, ...ys)
 * replaces the data; x values are ms since the epoch.
 */
export function lineChart (el, { series, height = 220, yLabel = '' }) {
  if (typeof uPlot !== 'function') {
    el.textContent = 'chart library not loaded'
    return { setData () {}, setRange () {}, destroy () {} }
  }
  const opts = {
    width: Math.max(280, el.clientWidth),
    height,
    scales: { x: { time: true } },
    axes: [{}, { label: yLabel, size: 60 }],
    legend: { live: true },
    series: [{}, ...series.map((s, i) => ({
      label: s.label,
      stroke: s.color ?? COLORS[i % COLORS.length],
      width: s.width ?? 2,
      dash: s.dash,
      spanGaps: false,
      // Points show where data is sparse (a few buckets), lines carry the rest.
      points: { show: (u) => u.data[0].length < 40, size: 5 },
      value: s.value ? (_u, v) => v === null || v === undefined ? '–' : s.value(v) : undefined,
    }))],
  }
  const plot = new uPlot(opts, [[], ...series.map(() => [])], el)
  const ro = new ResizeObserver(() => plot.setSize({ width: Math.max(280, el.clientWidth), height }))
  ro.observe(el)
  return {
    setData (xsMs, ...ys) { plot.setData([xsMs.map((x) => x / 1000), ...ys]) },
    /** Pins the time axis to [fromMs, toMs] (a picked range), whatever the data covers. */
    setRange (fromMs, toMs) { plot.setScale('x', { min: fromMs / 1000, max: toMs / 1000 }) },
    destroy () { ro.disconnect(); plot.destroy() },
  }
}
