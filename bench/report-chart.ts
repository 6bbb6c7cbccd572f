// Hand-written SVG for the benchmark report: horizontal bars of figures normalised to their targets
// (>= 1 meets it), on a log2 scale, each bar drawn from the 1.0 line to its value, labelled with the
// measured figure. No dependencies.

export interface Bar {
  label: string
  /** Figure ÷ target, or target ÷ figure for "at most" targets: >= 1 meets the target. */
  value: number
  /** The measured figure, as shown next to the bar. */
  text: string
}

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')

function tickLabel (v: number): string {
  return v >= 1 ? `${v}` : v >= 0.1 ? `${v}`.replace(/^0/, '') : v.toPrecision(1)
}

export function chartSvg (bars: Bar[]): string {
  const width = 900
  const labelW = 300
  const plotX0 = labelW + 10
  const plotX1 = 730
  const top = 66
  const rowH = 30
  const barH = 18
  const plotH = bars.length * rowH
  const height = top + plotH + 46

  const lo = Math.min(-2, Math.floor(Math.log2(Math.min(...bars.map((b) => b.value)))))
  const hi = Math.max(2, Math.ceil(Math.log2(Math.max(...bars.map((b) => b.value)))))
  const x = (v: number): number => plotX0 + ((Math.log2(v) - lo) / (hi - lo)) * (plotX1 - plotX0)
  const x1 = x(1)

  const parts: string[] = []
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif" font-size="12">`)
  parts.push(`<rect width="${width}" height="${height}" fill="#ffffff"/>`)
  parts.push(`<text x="${width / 2}" y="20" text-anchor="middle" font-size="15" font-weight="bold">Key figures ÷ target (log scale; ≥ 1.0 meets the target)</text>`)
  parts.push(`<text x="${width / 2}" y="36" text-anchor="middle" fill="#555">"at most" targets are inverted (target ÷ figure); the measured figure is printed next to each bar</text>`)

  // Grid and ticks at powers of two.
  for (let e = lo; e <= hi; e++) {
    const v = 2 ** e
    const gx = x(v).toFixed(1)
    parts.push(`<line x1="${gx}" y1="${top - 4}" x2="${gx}" y2="${top + plotH}" stroke="#e5e5e5"/>`)
    parts.push(`<text x="${gx}" y="${top + plotH + 16}" text-anchor="middle" fill="#555">${tickLabel(v)}</text>`)
  }
  parts.push(`<text x="${((plotX0 + plotX1) / 2).toFixed(1)}" y="${top + plotH + 34}" text-anchor="middle" fill="#555">× target</text>`)

  bars.forEach((b, i) => {
    const cy = top + i * rowH + rowH / 2
    const bx = x(b.value)
    const met = b.value >= 1
    const left = Math.min(bx, x1)
    const w = Math.max(1, Math.abs(bx - x1))
    parts.push(`<text x="${labelW}" y="${(cy + 4).toFixed(1)}" text-anchor="end">${esc(b.label)}</text>`)
    parts.push(`<rect x="${left.toFixed(1)}" y="${(cy - barH / 2).toFixed(1)}" width="${w.toFixed(1)}" height="${barH}" fill="${met ? '#3a9d5d' : '#d9534f'}"/>`)
    // The figure goes beyond the bar's outer end (right of a met bar, left of a missed one).
    const tx = met ? Math.max(bx, x1) + 6 : Math.min(bx, x1) - 6
    const anchor = met ? 'start' : 'end'
    const txt = `${b.text} · ${b.value >= 10 ? b.value.toFixed(0) : b.value.toFixed(2)}×`
    // A missed bar's figure would run into the labels: put it right of the 1.0 line instead.
    if (!met && tx - txt.length * 6.2 < plotX0) {
      parts.push(`<text x="${(x1 + 6).toFixed(1)}" y="${(cy + 4).toFixed(1)}" fill="#333">${esc(txt)}</text>`)
    } else {
      parts.push(`<text x="${tx.toFixed(1)}" y="${(cy + 4).toFixed(1)}" text-anchor="${anchor}" fill="#333">${esc(txt)}</text>`)
    }
  })

  parts.push(`<line x1="${x1.toFixed(1)}" y1="${top - 8}" x2="${x1.toFixed(1)}" y2="${top + plotH + 4}" stroke="#000" stroke-width="1.5" stroke-dasharray="4 3"/>`)
  parts.push(`<text x="${(x1 + 3).toFixed(1)}" y="${top - 9}" font-size="11">1.0 = target</text>`)
  parts.push('</svg>')
  return parts.join('\n') + '\n'
}
