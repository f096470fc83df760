// The org's Usage tab: GET /v1/orgs/{org}/usage per day or month, charts with their numbers, a
// per-workspace breakdown (group=workspace) and CSV downloads (fetched with the bearer header,
// handed to the browser as a Blob URL).
import { h, clear, field, errorBox, toast, onSubmit, empty, table, fmtBytes } from './dom.js';
import { get, fetchBlob } from './api.js';
import { barChart } from './chart.js';

const REQUESTS = [
  ['requests_search', 'search'], ['requests_chat', 'chat'], ['requests_ingest', 'ingest'],
  ['requests_mcp', 'MCP'], ['requests_openai', 'OpenAI facade'],
];
const GAUGES = new Set(['documents', 'storage_bytes']);

const pad = (n) => String(n).padStart(2, '0');
const isoDay = (d) => `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;

/** Every period from `from` to `to` (both days, included): days or months. Bounded by the API's 400 days. */
function periodsOf(from, to, granularity) {
  const out = [];
  const d = new Date(`${from}T00:00:00Z`);
  const end = new Date(`${to}T00:00:00Z`);
  if (isNaN(d) || isNaN(end)) return out;
  if (granularity === 'month') {
    d.setUTCDate(1);
    while (d <= end && out.length < 40) { out.push(isoDay(d).slice(0, 7)); d.setUTCMonth(d.getUTCMonth() + 1); }
  } else {
    while (d <= end && out.length < 401) { out.push(isoDay(d)); d.setUTCDate(d.getUTCDate() + 1); }
  }
  return out;
}

/** Folds rows into one: counters add up, gauges (documents, storage) keep their largest value. */
function fold(rows) {
  const acc = {};
  for (const r of rows) {
    for (const [k, v] of Object.entries(r)) {
      if (typeof v !== 'number') continue;
      acc[k] = GAUGES.has(k) ? Math.max(acc[k] || 0, v) : (acc[k] || 0) + v;
    }
  }
  return acc;
}

const requestsOf = (r) => REQUESTS.reduce((a, [k]) => a + (r[k] || 0), 0);

export async function usage(el, org, ctx) {
  const now = new Date();
  const today = isoDay(now);
  const monthStart = `${today.slice(0, 8)}01`;
  const from = h('input', { type: 'date', name: 'from', value: monthStart, required: true });
  const to = h('input', { type: 'date', name: 'to', value: today, required: true });
  const gran = h('select', { name: 'granularity' }, h('option', { value: 'day' }, 'per day'), h('option', { value: 'month' }, 'per month'));
  const out = h('div', {});
  const err = h('div', {});
  const form = onSubmit(h('form', { class: 'grid', 'aria-label': 'Usage range' },
    field('From', from), field('To (included)', to), field('Show', gran),
    h('div', { class: 'row wide' }, h('button', { class: 'primary', type: 'submit' }, 'Show usage'),
      h('button', { type: 'button', onclick: () => preset('month') }, 'This month'),
      h('button', { type: 'button', onclick: () => preset('year') }, 'Last 12 months')),
    h('div', { class: 'wide' }, err)), err, () => load());

  function preset(which) {
    if (which === 'month') { from.value = monthStart; to.value = today; gran.value = 'day'; } else {
      const d = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - 11, 1));
      from.value = isoDay(d); to.value = today; gran.value = 'month';
    }
    load().catch((e) => clear(err, errorBox(e)));
  }

  const query = (extra = {}) => new URLSearchParams({ from: from.value, to: to.value, granularity: gran.value, ...extra });

  async function download(byWorkspace) {
    const q = query(byWorkspace ? { group: 'workspace', format: 'csv' } : { format: 'csv' });
    try {
      const blob = await fetchBlob(`/orgs/${org.id}/usage?${q}`, 'text/csv');
      const url = URL.createObjectURL(blob);
      const a = h('a', { href: url, download: `usage-${org.slug}-${from.value}-${to.value}${byWorkspace ? '-by-workspace' : ''}.csv`, class: 'sr-only' }, 'CSV');
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    } catch (e) { toast(e.message); }
  }

  async function load() {
    clear(err);
    const [report, byWs, wsList] = await Promise.all([
      get(`/orgs/${org.id}/usage?${query()}`),
      get(`/orgs/${org.id}/usage?${query({ group: 'workspace' })}`),
      get(`/orgs/${org.id}/workspaces?limit=1000`).then((r) => r.data).catch(() => []),
    ]);
    if (!ctx.alive()) return;
    const g = report.granularity === 'month' ? 'month' : gran.value;
    const periods = periodsOf(report.from || from.value, report.to || to.value, g);
    const byPeriod = new Map(report.data.map((r) => [r.period, r]));
    const col = (k) => periods.map((p) => (byPeriod.get(p) || {})[k] || 0);
    const t = fold(report.data);
    const stat = (label, value, key) => h('div', { class: 'stat', dataset: { stat: key } }, h('b', {}, value), label);
    const names = new Map(wsList.map((w) => [w.id, w.name]));
    const perWs = new Map();
    for (const r of byWs.data) {
      const k = r.workspace_id || '';
      if (!perWs.has(k)) perWs.set(k, []);
      perWs.get(k).push(r);
    }
    const wsRows = [...perWs.entries()].map(([id, rows]) => ({ id, u: fold(rows) }))
      .sort((a, b) => requestsOf(b.u) - requestsOf(a.u));
    const num = (n) => (n || 0).toLocaleString();
    clear(out,
      h('p', { class: 'muted' }, `${report.from} to ${report.to} (UTC days, both included), ${g === 'month' ? 'per month' : 'per day'}.`),
      h('div', { class: 'stats' },
        stat('requests', num(requestsOf(t)), 'requests'),
        stat('chat tokens', num((t.chat_prompt_tokens || 0) + (t.chat_completion_tokens || 0)), 'chat_tokens'),
        stat('chunks embedded', num(t.embedding_chunks), 'embedding_chunks'),
        stat('documents added', num(t.documents_added), 'documents_added'),
        stat('documents (largest sample)', num(t.documents), 'documents'),
        stat('storage (largest sample)', fmtBytes(t.storage_bytes || 0), 'storage_bytes'),
        stat('refusals (quota, rate limit)', `${num(t.quota_refusals)}, ${num(t.rate_limit_refusals)}`, 'refusals')),
      h('div', { class: 'row toolbar' },
        h('button', { type: 'button', onclick: () => download(false) }, 'Download CSV'),
        h('button', { type: 'button', onclick: () => download(true) }, 'Download CSV by workspace')),
      report.data.length ? null : empty('Nothing was counted in this range. Requests answered by a workspace (search, chat, uploads, MCP, the OpenAI facade) appear here within seconds.'),
      h('div', { class: 'charts' },
        barChart({ title: 'Requests by kind', periods, series: REQUESTS.map(([k, label]) => ({ label, values: col(k) })) }),
        barChart({ title: 'Chat tokens', periods, series: [{ label: 'prompt', values: col('chat_prompt_tokens') }, { label: 'completion', values: col('chat_completion_tokens') }] }),
        barChart({ title: 'Chunks embedded', periods, series: [{ label: 'chunks', values: col('embedding_chunks') }] }),
        barChart({ title: 'Documents stored', periods, series: [{ label: 'documents', values: col('documents') }] }),
        barChart({ title: 'Storage', periods, series: [{ label: 'bytes on disk', values: col('storage_bytes') }], format: fmtBytes, binary: true })),
      h('h3', {}, 'By workspace'),
      wsRows.length
        ? table('Usage by workspace', ['Workspace', 'Requests', 'Chat tokens', 'Chunks embedded', 'Documents added', 'Documents', 'Storage'],
          wsRows.map(({ id, u }) => [
            id ? (names.has(id) ? h('a', { href: `#/ws/${id}/documents` }, names.get(id)) : h('span', { class: 'mono' }, `${id} (deleted)`)) : 'org-wide (refusals)',
            num(requestsOf(u)), num((u.chat_prompt_tokens || 0) + (u.chat_completion_tokens || 0)), num(u.embedding_chunks),
            num(u.documents_added), num(u.documents), fmtBytes(u.storage_bytes || 0)]))
        : empty('No workspace used anything in this range.'));
  }

  clear(el, h('h2', {}, 'Usage'),
    h('p', { class: 'muted' }, 'What this organization\'s workspaces did, counted per UTC day: requests answered, chat tokens, chunks embedded, documents and storage (sampled).'),
    h('div', { class: 'panel' }, form), out);
  try { await load(); } catch (e) { clear(out, errorBox(e)); }
}
