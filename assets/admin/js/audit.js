// An audit trail with filters (actor, action, from, to) and paging: the org's
// (GET /v1/orgs/{org}/audit) and a workspace's (GET /v1/workspaces/{ws}/audit).
import { h, clear, field, errorBox, onSubmit, empty, table, fmtDate, badge } from './dom.js';
import { get } from './api.js';

const LIMIT = 50;
const OUTCOME = { success: 'ok', denied: 'bad', refused: 'warn', failed: 'bad', error: 'bad' };

/** trail(el, { path: '/orgs/<id>/audit', title, intro, empty }, ctx) */
export async function trail(el, { path, title, intro, none }, ctx) {
  const box = h('div', {});
  const err = h('div', {});
  const actor = h('input', { type: 'text', name: 'actor', placeholder: 'user, api_key, operator… or an id' });
  const action = h('input', { type: 'text', name: 'action', placeholder: 'document.add or document.*' });
  const from = h('input', { type: 'date', name: 'from' });
  const to = h('input', { type: 'date', name: 'to' });
  let offset = 0;
  const form = onSubmit(h('form', { class: 'grid', 'aria-label': `Filter the ${title.toLowerCase()}` },
    field('Actor', actor), field('Action', action), field('From', from), field('To (excluded)', to),
    h('div', { class: 'row' }, h('button', { type: 'submit', class: 'primary' }, 'Show'),
      h('button', { type: 'reset' }, 'Clear filters')),
    h('div', { class: 'wide' }, err)), err, async () => { offset = 0; await load(); });
  form.addEventListener('reset', () => { offset = 0; setTimeout(() => load().catch((e) => clear(box, errorBox(e))), 0); });

  async function load() {
    const q = new URLSearchParams({ limit: LIMIT, offset });
    for (const [k, input] of [['actor', actor], ['action', action], ['from', from], ['to', to]]) {
      if (input.value.trim()) q.set(k, input.value.trim());
    }
    const page = await get(`${path}?${q}`);
    if (!ctx.alive()) return;
    const rows = page.data;
    const go = async (o) => {
      offset = o;
      try { await load(); } catch (e) { clear(box, errorBox(e)); }
    };
    const pager = h('div', { class: 'row' },
      h('button', { type: 'button', disabled: offset === 0, onclick: () => go(Math.max(0, offset - LIMIT)) }, 'Newer'),
      h('span', { class: 'muted' }, rows.length ? `Entries ${offset + 1}–${offset + rows.length}` : ''),
      h('button', { type: 'button', disabled: page.next_offset == null, onclick: () => go(page.next_offset) }, 'Older'));
    clear(box, rows.length
      ? table(title, ['When', 'Actor', 'Action', 'Target', 'Outcome', 'Request id'], rows.map((r) => ({
        attrs: { dataset: { action: r.action } },
        cells: [fmtDate(r.at),
          h('span', {}, r.actor, r.actor_id ? h('span', { class: 'mono muted' }, ` ${r.actor_id}`) : null),
          h('span', { class: 'mono' }, r.action), h('span', { class: 'mono' }, r.target || '—'),
          r.outcome ? badge(r.status == null ? r.outcome : `${r.outcome} ${r.status}`, OUTCOME[r.outcome]) : (r.status == null ? '—' : String(r.status)),
          h('span', { class: 'mono' }, r.request_id || '—')],
      })))
      : empty(offset ? 'No older entries.' : none), pager);
  }

  clear(el, h('h2', {}, title), h('p', { class: 'muted' }, intro),
    h('div', { class: 'panel' }, form), box);
  try { await load(); } catch (e) { clear(box, errorBox(e)); }
}
