// Operator views: every org, server health, the control plane's audit trail.
import { h, clear, field, errorBox, toast, onSubmit, empty, statusBadge, badge, table, fmtDate, confirmDanger } from './dom.js';
import { get, post, patch, del, server } from './api.js';
import { sideNav } from './nav.js';

export async function orgs(el, _p, ctx) {
  sideNav(ctx);
  const list = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  const deleted = h('div', {});
  const err = h('div', {});
  const form = onSubmit(h('form', { class: 'grid', 'aria-labelledby': 'new-org' },
    field('Name', h('input', { type: 'text', name: 'name', required: true })),
    field('Slug (optional)', h('input', { type: 'text', name: 'slug', pattern: '[a-z0-9][a-z0-9-]*' })),
    field('Plan', h('select', { name: 'plan' }, ['free', 'team', 'enterprise'].map((p) => h('option', { value: p }, p)))),
    h('div', {}, h('button', { class: 'primary', type: 'submit' }, 'Create organization')),
    h('div', { class: 'wide' }, err)), err, async (f) => {
    const body = { name: f.get('name'), plan: f.get('plan') };
    if (f.get('slug')) body.slug = f.get('slug');
    const o = await post('/orgs', body);
    toast(`Created ${o.name}`);
    form.reset();
    await load();
  });

  async function load() {
    let data;
    try {
      data = (await get('/orgs?limit=1000')).data;
    } catch (e) { clear(list, errorBox(e)); return; }
    if (!ctx.alive()) return;
    await loadDeleted();
    if (!data.length) {
      clear(list, empty('No organizations yet. Create the first one above, then add a workspace to it.'));
      return;
    }
    // Workspace counts: one listing per org (the org list carries no aggregates).
    const counts = await Promise.all(data.map((o) => get(`/orgs/${o.id}/workspaces?limit=1000`)
      .then((r) => r.data.length).catch(() => '—')));
    clear(list, table('Organizations', ['Name', 'Slug', 'Plan', 'Status', 'Workspaces', 'Created', 'Actions'],
      data.map((o, i) => ({
        actions: true,
        cells: [
          h('a', { href: `#/orgs/${o.slug}/workspaces` }, o.name), h('span', { class: 'mono' }, o.slug),
          h('select', { 'aria-label': `Plan of ${o.name}`, onchange: (e) => setPlan(o, e.target.value) },
            ['free', 'team', 'enterprise'].map((p) => h('option', { value: p, selected: p === o.plan }, p))),
          statusBadge(o.status), String(counts[i]), fmtDate(o.created_at),
          h('div', { class: 'row' },
            o.status === 'suspended'
              ? h('button', { type: 'button', class: 'small', onclick: () => act(o, 'reactivate') }, `Reactivate`)
              : h('button', { type: 'button', class: 'small', onclick: () => act(o, 'suspend') }, `Suspend`),
            h('button', { type: 'button', class: 'small danger', 'aria-label': `Delete ${o.name}`, onclick: () => remove(o) }, 'Delete')),
        ],
      }))));
  }
  async function setPlan(o, plan) {
    try {
      await patch(`/orgs/${o.id}`, { plan });
      toast(`${o.name} is on the ${plan} plan`);
    } catch (e) { toast(e.message); }
    await load();
  }
  async function act(o, what) {
    try {
      await post(`/orgs/${o.id}/${what}`);
      toast(`${o.name}: ${what === 'suspend' ? 'suspended' : 'reactivated'}`);
    } catch (e) { toast(e.message); }
    await load();
  }
  async function remove(o) {
    if (!await confirmDanger(`Delete ${o.name}?`, `${o.name} and every one of its workspaces become unreachable at once. Their data is kept for the grace period, restorable below, then purged.`)) return;
    try { await del(`/orgs/${o.id}`); toast(`Deleted ${o.name}`); } catch (e) { toast(e.message); }
    await load();
  }
  // Deleted orgs and workspaces still within their grace period.
  async function loadDeleted() {
    let rows;
    try {
      rows = (await get('/admin/deleted')).data;
    } catch (e) { clear(deleted, errorBox(e)); return; }
    if (!ctx.alive()) return;
    clear(deleted, rows.length
      ? table('Deleted', ['Kind', 'Name', 'Slug', 'Deleted', 'Purged after', 'Actions'], rows.map((d) => ({
        actions: true,
        cells: [d.kind, d.name, h('span', { class: 'mono' }, d.slug), fmtDate(d.deleted_at), fmtDate(d.purge_after),
          h('button', { type: 'button', class: 'small', 'aria-label': `Restore ${d.name}`, onclick: () => restore(d) }, 'Restore')],
      })))
      : empty('Nothing deleted is waiting for its purge.'));
  }
  async function restore(d) {
    try {
      await post(d.kind === 'org' ? `/orgs/${d.id}/restore` : `/workspaces/${d.id}/restore`);
      toast(`Restored ${d.name}`);
    } catch (e) { toast(e.message); }
    await load();
  }
  clear(el, h('h1', {}, 'Organizations'),
    h('p', { class: 'muted' }, 'Every organization on this server. Suspending one refuses its requests (403 tenant_suspended) until it is reactivated.'),
    h('div', { class: 'panel' }, h('h2', { id: 'new-org' }, 'New organization'), form),
    h('h2', {}, 'All organizations'), list,
    h('h2', {}, 'Deleted'),
    h('p', { class: 'muted' }, 'Deleted organizations and workspaces are kept for the grace period (deletion_grace_days) and can be restored until they are purged.'),
    deleted);
  await load();
}

/** Parses the Prometheus text of /metrics into {name{labels}: value}. */
function parseMetrics(text) {
  const out = {};
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out[line.slice(0, i)] = Number(line.slice(i + 1));
  }
  return out;
}

export async function health(el, _p, ctx) {
  sideNav(ctx);
  const box = h('div', {});
  clear(el, h('h1', {}, 'Server health'), h('p', { class: 'muted' }, 'From /healthz, /readyz and /metrics; refreshed every 5 seconds.'), box);
  async function load() {
    const [hz, rz, mx] = await Promise.all([server('/healthz'), server('/readyz'), server('/metrics')]);
    if (!ctx.alive()) return;
    let ready = {};
    try { ready = JSON.parse(rz.text); } catch { ready = {}; }
    const m = parseMetrics(mx.text);
    const stat = (label, value) => h('div', { class: 'stat' }, h('b', {}, String(value ?? '—')), label);
    clear(box,
      h('div', { class: 'stats' },
        stat('liveness', hz.status === 200 ? 'ok' : `HTTP ${hz.status}`),
        stat('readiness', ready.status || `HTTP ${rz.status}`),
        stat('control plane', ready.control_plane),
        stat('draining', ready.draining ? 'yes' : 'no')),
      h('h2', {}, 'Workspaces and connections'),
      h('div', { class: 'stats' },
        stat('open workspaces', m.enclave_workspaces_open),
        stat('cache capacity', m.enclave_workspaces_cache_capacity),
        stat('peak open', m.enclave_workspaces_open_peak),
        stat('index writers open', m.enclave_index_writers_open),
        stat('HTTP connections', m.enclave_http_connections_open)),
      h('h2', {}, 'Responses since start'),
      h('div', { class: 'stats' }, ['2xx', '4xx', '5xx'].map((c) => stat(c, m[`enclave_http_responses_total{class="${c}"}`]))),
      h('details', {}, h('summary', {}, 'All metrics'), h('pre', { class: 'block mono' }, mx.text)));
  }
  await load();
  ctx.every(5000, load);
}

export async function audit(el, _p, ctx) {
  sideNav(ctx);
  const box = h('div', {});
  let offset = 0;
  const limit = 50;
  const orgInput = h('input', { type: 'text', name: 'org', placeholder: 'slug or id' });
  const err = h('div', {});
  const form = onSubmit(h('form', { class: 'grid' }, field('Organization (optional)', orgInput),
    h('div', {}, h('button', { type: 'submit', class: 'primary' }, 'Show')), h('div', { class: 'wide' }, err)), err, async () => { offset = 0; await load(); });
  async function load() {
    const q = new URLSearchParams({ limit, offset });
    if (orgInput.value.trim()) q.set('org', orgInput.value.trim());
    const rows = (await get(`/admin/audit?${q}`)).data;
    if (!ctx.alive()) return;
    const pager = h('div', { class: 'row' },
      h('button', { type: 'button', disabled: offset === 0, onclick: () => { offset = Math.max(0, offset - limit); load(); } }, 'Newer'),
      h('button', { type: 'button', disabled: rows.length < limit, onclick: () => { offset += limit; load(); } }, 'Older'));
    clear(box, rows.length
      ? table('Audit log', ['When', 'Actor', 'Action', 'Target', 'Path', 'Status', 'Client'], rows.map((r) => [
        fmtDate(r.at), r.actor, h('span', { class: 'mono' }, r.action), h('span', { class: 'mono' }, r.target || '—'),
        h('span', { class: 'mono' }, r.path), r.status == null ? '—' : String(r.status), r.client || '—']))
      : empty('Nothing recorded here yet: org and server actions, and every request of the operator and the CLI, appear as they happen.'), pager);
  }
  clear(el, h('h1', {}, 'Audit log'), h('p', { class: 'muted' }, 'The control plane\'s trail, newest first: org and server actions of every principal, every operator request (API and CLI). A workspace\'s own actions are in its trail (GET /v1/workspaces/{ws}/audit).'),
    h('div', { class: 'panel' }, form), box);
  await load();
}
