// Org views: workspaces, members and roles, invitations, model providers.
import { h, clear, field, errorBox, toast, onSubmit, empty, statusBadge, badge, table, fmtDate, fmtBytes, confirmDanger, secretBox } from './dom.js';
import { session, get, post, put, patch, del, can, roleIn, isOperator } from './api.js';
import { sideNav } from './nav.js';
import { usage } from './usage.js';
import { trail } from './audit.js';

const ROLES = ['viewer', 'member', 'admin', 'owner'];

export async function myOrgs(el, _p, ctx) {
  if (isOperator()) { location.replace('#/operator/orgs'); return; }
  const me = await get('/me');
  if (!ctx.alive()) return;
  session.me = me;
  sideNav(ctx);
  const orgs = me.orgs || [];
  clear(el, h('h1', {}, 'Your organizations'),
    orgs.length
      ? table('Your organizations', ['Name', 'Your role', 'Status'], orgs.map((o) => [
        h('a', { href: `#/orgs/${o.slug}/workspaces` }, o.name), badge(o.role), statusBadge(o.status)]))
      : empty('You are not a member of any organization yet. Ask an org admin for an invitation link.'));
}

export async function view(el, [slug, tab = 'workspaces'], ctx) {
  const org = await get(`/orgs/${encodeURIComponent(slug)}`);
  if (!ctx.alive()) return;
  sideNav(ctx, { org });
  const body = h('div', {});
  const role = roleIn(org.id);
  clear(el, h('div', { class: 'spread' },
    h('div', {}, h('h1', {}, org.name),
      h('p', { class: 'muted' }, 'Plan ', badge(org.plan), ' · status ', statusBadge(org.status), ' · you are ', badge(role || '—')))),
  body);
  const audit = (b) => trail(b, { path: `/orgs/${org.id}/audit`, title: 'Audit trail',
    intro: 'This organization\'s trail, newest first: members, invitations, workspaces created or deleted, providers, sign-ins, and the operator\'s actions on it. A workspace\'s own actions (documents, agents, keys) are in its Workspace audit.',
    none: 'Nothing recorded here yet (or nothing matches the filters).' }, ctx);
  const views = { workspaces, members, invitations, providers, usage, audit };
  await views[tab](body, org, ctx);
}

async function workspaces(el, org, ctx) {
  const list = h('div', {});
  const err = h('div', {});
  const admin = can(org.id, 'admin');
  const form = admin ? onSubmit(h('form', { class: 'grid' },
    field('Name', h('input', { type: 'text', name: 'name', required: true })),
    field('Slug (optional)', h('input', { type: 'text', name: 'slug' })),
    h('div', {}, h('button', { class: 'primary', type: 'submit' }, 'Create workspace')),
    h('div', { class: 'wide' }, err)), err, async (f) => {
    const body = { name: f.get('name') };
    if (f.get('slug')) body.slug = f.get('slug');
    const w = await post(`/orgs/${org.id}/workspaces`, body);
    toast(`Created workspace ${w.name}`);
    form.reset();
    await load();
  }) : null;
  async function load() {
    const data = (await get(`/orgs/${org.id}/workspaces?limit=1000`)).data;
    if (!ctx.alive()) return;
    if (!data.length) {
      clear(list, empty(admin ? 'No workspaces yet. Create one above, then upload documents to it.' : 'No workspaces yet. An org admin can create one.'));
      return;
    }
    const stats = await Promise.all(data.map((w) => get(`/workspaces/${w.id}`).then((x) => x.stats).catch(() => null)));
    clear(list, table('Workspaces', ['Name', 'Slug', 'Documents', 'Chunks', 'On disk', 'Created', admin ? 'Actions' : ''], data.map((w, i) => ({
      actions: true,
      cells: [h('a', { href: `#/ws/${w.id}/documents` }, w.name), h('span', { class: 'mono' }, w.slug),
        String(stats[i]?.documents ?? '—'), String(stats[i]?.chunks ?? '—'), fmtBytes(stats[i]?.bytes_on_disk), fmtDate(w.created_at),
        admin ? h('button', { type: 'button', class: 'small danger', 'aria-label': `Delete workspace ${w.name}`, onclick: async () => {
          if (!await confirmDanger(`Delete ${w.name}?`, 'It becomes unreachable at once, with its documents, agents, chat sessions and API keys. The operator can restore it during the grace period; then it is purged.')) return;
          try { await del(`/workspaces/${w.id}`); toast(`Deleted ${w.name}`); } catch (e) { toast(e.message); }
          await load();
        } }, 'Delete') : ''],
    }))));
  }
  clear(el, h('h2', {}, 'Workspaces'),
    form ? h('div', { class: 'panel' }, h('h3', {}, 'New workspace'), form) : null, list);
  try { await load(); } catch (e) { clear(list, errorBox(e)); }
}

async function members(el, org, ctx) {
  const list = h('div', {});
  const manage = can(org.id, 'admin');
  const owner = can(org.id, 'owner');
  async function load() {
    const data = (await get(`/orgs/${org.id}/members`)).data;
    if (!ctx.alive()) return;
    if (!data.length) {
      clear(list, empty(manage ? 'No members yet. Invite someone from Invitations; the first owner can be invited by the operator.' : 'No members.'));
      return;
    }
    clear(list, table('Members', ['Name', 'Email', 'Role', 'Since', manage ? 'Actions' : ''], data.map((m) => {
      const mayChange = manage && (owner || m.role !== 'owner');
      const roleCell = mayChange
        ? h('select', { 'aria-label': `Role of ${m.email}`, onchange: async (e) => {
          try { await patch(`/orgs/${org.id}/members/${m.user_id}`, { role: e.target.value }); toast(`${m.email} is now ${e.target.value}`); } catch (er) { toast(er.message); }
          await load();
        } }, ROLES.filter((r) => owner || r !== 'owner').map((r) => h('option', { value: r, selected: r === m.role }, r)))
        : badge(m.role);
      return { actions: true, cells: [m.name || '—', m.email, roleCell, fmtDate(m.created_at),
        mayChange ? h('button', { type: 'button', class: 'small danger', 'aria-label': `Remove ${m.email}`, onclick: async () => {
          if (!await confirmDanger(`Remove ${m.email}?`, `${m.email} loses access to ${org.name} at once.`, 'Remove')) return;
          try { await del(`/orgs/${org.id}/members/${m.user_id}`); toast(`Removed ${m.email}`); } catch (e) { toast(e.message); }
          await load();
        } }, 'Remove') : ''] };
    })));
  }
  clear(el, h('h2', {}, 'Members'), h('p', { class: 'muted' }, 'Roles: viewer (read, search, chat) < member (upload, own agents) < admin (workspaces, keys, members, providers) < owner.'), list);
  try { await load(); } catch (e) { clear(list, errorBox(e)); }
}

async function invitations(el, org) {
  const out = h('div', {});
  const err = h('div', {});
  const owner = can(org.id, 'owner');
  const form = onSubmit(h('form', { class: 'grid' },
    field('Email', h('input', { type: 'email', name: 'email', required: true })),
    field('Role', h('select', { name: 'role' }, ROLES.filter((r) => owner || r !== 'owner').map((r) => h('option', { value: r, selected: r === 'member' }, r)))),
    h('div', {}, h('button', { class: 'primary', type: 'submit' }, 'Create invitation')),
    h('div', { class: 'wide' }, err)), err, async (f) => {
    const inv = await post(`/orgs/${org.id}/invitations`, { email: f.get('email'), role: f.get('role') });
    const link = `${location.origin}/admin/#/accept/${inv.token}`;
    out.prepend(h('div', {}, secretBox(`Invitation link for ${inv.email} (${inv.role})`, link),
      h('p', { class: 'muted' }, `Valid until ${fmtDate(inv.expires_at)}. Send it to ${inv.email}; opening it lets them choose a password and join.`)));
    form.reset();
  });
  clear(el, h('h2', {}, 'Invitations'),
    h('div', { class: 'panel' }, form),
    h('div', { class: 'note' }, 'The API does not list or revoke pending invitations yet: a link is shown once here, and expires after 7 days.'),
    out);
}

async function providers(el, org, ctx) {
  const list = h('div', {});
  const err = h('div', {});
  const form = onSubmit(h('form', { class: 'grid' },
    field('Provider', h('select', { name: 'name' }, h('option', { value: 'openai-compatible' }, 'openai-compatible'))),
    field('Base URL', h('input', { type: 'url', name: 'base_url', required: true, placeholder: 'https://api.openai.com/v1' })),
    field('Model', h('input', { type: 'text', name: 'model', required: true, placeholder: 'gpt-4o-mini' })),
    field('API key', h('input', { type: 'password', name: 'api_key', autocomplete: 'off' }), ' Leave empty to keep the stored key.'),
    h('div', {}, h('button', { class: 'primary', type: 'submit' }, 'Save provider')),
    h('div', { class: 'wide' }, err)), err, async (f) => {
    const body = { base_url: f.get('base_url'), model: f.get('model') };
    if (f.get('api_key')) body.api_key = f.get('api_key');
    await put(`/orgs/${org.id}/providers/${f.get('name')}`, body);
    toast('Provider saved; the key is stored encrypted and never shown back');
    form.reset();
    await load();
  });
  async function load() {
    const data = (await get(`/orgs/${org.id}/providers`)).data;
    if (!ctx.alive()) return;
    clear(list, data.length
      ? table('Model providers', ['Name', 'Base URL', 'Model', 'Key', 'Updated', 'Actions'], data.map((p) => ({ actions: true, cells: [
        p.name, h('span', { class: 'mono' }, p.base_url), p.model, p.api_key_set ? badge('set', 'ok') : badge('not set', 'warn'), fmtDate(p.updated_at),
        h('button', { type: 'button', class: 'small danger', 'aria-label': `Clear provider ${p.name}`, onclick: async () => {
          if (!await confirmDanger(`Clear ${p.name}?`, 'Agents using it fall back to extractive answers; an openai embedder stops working until it is set again.', 'Clear')) return;
          try { await del(`/orgs/${org.id}/providers/${p.name}`); toast('Provider cleared'); } catch (e) { toast(e.message); }
          await load();
        } }, 'Clear')] })))
      : empty('No provider: agents answer extractively (the best passages, cited), with no network. Set an OpenAI-compatible endpoint above to generate answers.'));
  }
  clear(el, h('h2', {}, 'Model providers'),
    h('p', { class: 'muted' }, 'Bring your own OpenAI-compatible endpoint and key. Saving again replaces it.'),
    h('div', { class: 'panel' }, form), list);
  try { await load(); } catch (e) { clear(list, errorBox(e)); }
}
