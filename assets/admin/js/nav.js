// The side navigation and breadcrumbs for the current place (operator, org, workspace).
import { h } from './dom.js';
import { session, isOperator, can } from './api.js';

function link(href, text) {
  const current = location.hash === href || (href.endsWith('/documents') && location.hash === href.replace(/\/documents$/, ''))
    || (href.endsWith('/workspaces') && location.hash === href.replace(/\/workspaces$/, ''));
  return h('li', {}, h('a', { href, 'aria-current': current ? 'page' : null }, text));
}

export function sideNav(ctx, { org, ws } = {}) {
  const parts = [];
  if (isOperator()) {
    parts.push(h('h2', {}, 'Operator'), h('ul', {},
      link('#/operator/orgs', 'Organizations'),
      link('#/operator/health', 'Server health'),
      link('#/operator/audit', 'Audit log')));
  } else {
    parts.push(h('h2', {}, 'Your organizations'), h('ul', {},
      (session.me.orgs || []).map((o) => link(`#/orgs/${o.slug}/workspaces`, o.name))));
  }
  if (org) {
    const base = `#/orgs/${org.slug}`;
    parts.push(h('h2', {}, org.name), h('ul', {},
      link(`${base}/workspaces`, 'Workspaces'),
      link(`${base}/members`, 'Members'),
      can(org.id, 'admin') ? link(`${base}/invitations`, 'Invitations') : null,
      can(org.id, 'admin') ? link(`${base}/providers`, 'Model providers') : null,
      can(org.id, 'admin') ? link(`${base}/usage`, 'Usage') : null,
      can(org.id, 'admin') ? link(`${base}/audit`, 'Audit trail') : null));
  }
  if (ws && org) {
    const base = `#/ws/${ws.id}`;
    parts.push(h('h2', {}, ws.name), h('ul', {},
      link(`${base}/documents`, 'Documents'),
      link(`${base}/search`, 'Search'),
      link(`${base}/chat`, 'Chat'),
      link(`${base}/agents`, 'Agents'),
      can(org.id, 'admin') ? link(`${base}/keys`, 'API keys') : null,
      link(`${base}/tokens`, 'Tenant tokens'),
      link(`${base}/embedder`, 'Embedder'),
      can(org.id, 'admin') ? link(`${base}/audit`, 'Workspace audit') : null));
  }
  ctx.setSide(h('div', {}, parts));
  const crumbs = [];
  if (isOperator()) crumbs.push(h('a', { href: '#/operator/orgs' }, 'Operator'));
  if (org) crumbs.push(h('a', { href: `#/orgs/${org.slug}/workspaces` }, org.name));
  if (ws) crumbs.push(h('a', { href: `#/ws/${ws.id}/documents` }, ws.name));
  ctx.setCrumbs(...crumbs);
}
