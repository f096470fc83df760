// Bar charts as inline SVG, built with DOM APIs (no library, no inline style: colours come from
// CSS classes). Each chart is a <figure> with an accessible name (<title>, <desc>) and a table of
// the same numbers beside it, so nothing is only in the picture.
import { h, nextId } from './dom.js';

const NS = 'http://www.w3.org/2000/svg';

function s(tag, attrs, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  for (const c of children) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

/** A round upper bound for the y axis: 1, 2 or 5 times a power of ten (of 1024 for bytes, then 1..1024). */
function niceMax(v, binary) {
  if (v <= 0) return 1;
  if (binary) {
    const unit = 1024 ** Math.floor(Math.log(v) / Math.log(1024));
    let m = 1;
    while (m * unit < v) m *= 2;
    return m * unit;
  }
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

const W = 460; const H = 200; const L = 84; const R = 8; const T = 12; const B = 28;

/**
 * barChart({ title, periods: ['2025-01-01', ...], series: [{ label, values: [..] }], format })
 * Several series are stacked. `format` turns a number into its label (default: locale digits);
 * `binary` rounds the axis to powers of two (bytes).
 */
export function barChart({ title, periods, series, format = (n) => n.toLocaleString(), binary = false }) {
  const totals = periods.map((_, i) => series.reduce((a, x) => a + (x.values[i] || 0), 0));
  const sum = totals.reduce((a, b) => a + b, 0);
  const peak = Math.max(0, ...totals);
  const top = niceMax(peak, binary);
  const titleId = nextId('chart-title');
  const descId = nextId('chart-desc');
  const n = Math.max(periods.length, 1);
  const slot = (W - L - R) / n;
  const bw = Math.max(1, Math.min(slot * 0.72, 48));
  const y = (v) => T + (H - T - B) * (1 - v / top);
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', 'aria-labelledby': `${titleId} ${descId}`, focusable: 'false' },
    s('title', { id: titleId }, title),
    s('desc', { id: descId }, periods.length
      ? `${periods.length} periods from ${periods[0]} to ${periods[periods.length - 1]}; highest ${format(peak)}`
      : 'No periods'));
  // Grid lines and y labels: 0, half, top.
  for (const v of [0, top / 2, top]) {
    svg.append(s('line', { class: 'grid', x1: L, x2: W - R, y1: y(v), y2: y(v) }),
      s('text', { class: 'axis', x: L - 6, y: y(v) + 5, 'text-anchor': 'end' }, format(v)));
  }
  // X labels: at most 8, evenly spaced.
  const every = Math.ceil(n / 8);
  periods.forEach((p, i) => {
    const x = L + slot * i + slot / 2;
    if (i % every === 0) svg.append(s('text', { class: 'axis', x, y: H - 8, 'text-anchor': 'middle' }, p.length === 10 ? p.slice(5) : p));
    let base = 0;
    series.forEach((ser, k) => {
      const v = ser.values[i] || 0;
      if (!v) return;
      svg.append(s('rect', { class: `bar s${k + 1}`, x: x - bw / 2, y: y(base + v), width: bw, height: Math.max(0.5, y(base) - y(base + v)) },
        s('title', {}, `${p} · ${ser.label}: ${format(v)}`)));
      base += v;
    });
  });
  const legend = series.length > 1
    ? h('ul', { class: 'legend' }, series.map((ser, k) => h('li', {}, h('span', { class: `swatch s${k + 1}`, 'aria-hidden': 'true' }), ser.label)))
    : null;
  const headers = ['Period', ...series.map((x) => x.label), ...(series.length > 1 ? ['Total'] : [])];
  const numbers = h('details', { class: 'numbers' },
    h('summary', {}, `Numbers: ${title}`),
    h('table', {},
      h('caption', { class: 'sr-only' }, title),
      h('thead', {}, h('tr', {}, headers.map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, periods.map((p, i) => h('tr', {}, h('th', { scope: 'row' }, p),
        series.map((x) => h('td', { class: 'num' }, format(x.values[i] || 0))),
        series.length > 1 ? h('td', { class: 'num' }, format(totals[i])) : null)))));
  return h('figure', { class: 'chart-box', dataset: { total: String(sum) } },
    h('figcaption', {}, h('strong', {}, title)), legend, svg, numbers);
}
