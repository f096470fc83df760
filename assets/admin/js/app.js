// Router, layout, sign-in. Routes live in the URL fragment (#/...), so the server only ever
// serves index.html and the static files.
import { h, clear, field, errorBox, toast, onSubmit } from './dom.js';
import { session, get, post, isOperator } from './api.js';
import * as operator from './operator.js';
import * as org from './org.js';
import * as ws from './workspace.js';

const main = document.getElementById('main');
const side = document.getElementById('side');
const crumbs = document.getElementById('crumbs');
const who = document.getElementById('who');

const routes = [
  [/^#\/signin$/, signIn, { public: true }],
  [/^#\/accept\/([^/]+)$/, accept, { public: true }],
  [/^#\/operator\/orgs$/, operator.orgs],
  [/^#\/operator\/health$/, operator.health],
  [/^#\/operator\/audit$/, operator.audit],
  [/^#\/orgs$/, org.myOrgs],
  [/^#\/orgs\/([^/]+)(?:\/(workspaces|members|invitations|providers|usage|audit))?$/, org.view],
  [/^#\/ws\/([^/]+)(?:\/(documents|search|chat|agents|keys|tokens|embedder|audit))?$/, ws.view],
];

// Every render gets a fresh context; timers and streams check `alive()` and stop when the
// user navigates away.
let generation = 0;
function context() {
  const mine = ++generation;
  const timers = [];
  const ctx = {
    alive: () => mine === generation,
    every(ms, fn) {
      const tick = async () => {
        if (!ctx.alive()) return;
        try { await fn(); } catch { /* shown by the view */ }
        if (ctx.alive()) timers.push(setTimeout(tick, ms));
      };
      timers.push(setTimeout(tick, ms));
    },
    setCrumbs(...parts) { clear(crumbs, parts.flatMap((p, i) => (i ? [h('span', { 'aria-hidden': 'true' }, '/'), p] : [p]))); },
    setSide(node) { clear(side, node); },
  };
  return ctx;
}

async function render() {
  const hash = location.hash || '#/';
  if (!session.token && !hash.startsWith('#/accept/')) {
    if (hash !== '#/signin') { location.replace('#/signin'); return; }
  }
  if (hash === '#/' || hash === '#') {
    location.replace(isOperator() ? '#/operator/orgs' : '#/orgs');
    return;
  }
  const ctx = context();
  renderWho();
  for (const [re, fn] of routes) {
    const m = hash.match(re);
    if (!m) continue;
    clear(main, h('p', { class: 'muted' }, 'Loading…'));
    try {
      await fn(main, m.slice(1), ctx);
    } catch (e) {
      if (ctx.alive()) clear(main, h('h1', {}, 'Something went wrong'), errorBox(e));
    }
    if (ctx.alive()) main.focus({ preventScroll: true });
    return;
  }
  clear(main, h('h1', {}, 'Not found'), h('p', {}, 'No such page. ', h('a', { href: '#/' }, 'Go to the start page')));
}

function renderWho() {
  if (!session.token) { clear(who); clear(side); clear(crumbs); return; }
  const me = session.me;
  const name = me.principal === 'operator' ? 'Operator' : (me.user.name || me.user.email);
  clear(who, h('span', {}, name), h('button', { type: 'button', onclick: signOut }, 'Sign out'));
}

async function signOut() {
  try { if (session.me && session.me.principal === 'user') await post('/auth/logout'); } catch { /* ended anyway */ }
  session.token = null;
  session.me = null;
  toast('Signed out');
  location.hash = '#/signin';
  render();
}

session.onExpired = () => {
  session.token = null;
  session.me = null;
  location.hash = '#/signin';
  setTimeout(() => toast('Your session ended: sign in again'), 0);
};

async function startSession(token) {
  const me = await get('/me', { token });
  session.token = token;
  session.me = me;
}

async function signIn(el, _params, ctx) {
  ctx.setSide(null);
  ctx.setCrumbs();
  const err1 = h('div', {});
  const err2 = h('div', {});
  const userForm = onSubmit(h('form', { 'aria-labelledby': 'signin-user' },
    h('h2', { id: 'signin-user' }, 'User account'),
    field('Email', h('input', { type: 'email', name: 'email', required: true, autocomplete: 'username' })),
    field('Password', h('input', { type: 'password', name: 'password', required: true, autocomplete: 'current-password' })),
    err1,
    h('button', { class: 'primary', type: 'submit' }, 'Sign in')), err1, async (f) => {
    const res = await post('/auth/login', { email: f.get('email'), password: f.get('password') }, { token: null });
    await startSession(res.token);
    location.hash = '#/orgs';
  });
  const opForm = onSubmit(h('form', { 'aria-labelledby': 'signin-op' },
    h('h2', { id: 'signin-op' }, 'Operator'),
    field('Operator token', h('input', { type: 'password', name: 'token', required: true, autocomplete: 'off' }),
      ' ENCLAVE_ADMIN_TOKEN, or the one printed at first start.'),
    err2,
    h('button', { class: 'primary', type: 'submit' }, 'Sign in as operator')), err2, async (f) => {
    const token = String(f.get('token')).trim();
    await startSession(token);
    if (session.me.principal !== 'operator') {
      session.token = null; session.me = null;
      throw new Error('That credential is not the operator token: use email and password for a user account.');
    }
    location.hash = '#/operator/orgs';
  });
  clear(el, h('div', { class: 'signin' },
    h('h1', {}, 'Sign in to Enclave'),
    h('p', { class: 'muted' }, 'Your session is kept in this tab\'s memory only: reloading the page signs you out.'),
    h('div', { class: 'panel' }, userForm),
    h('div', { class: 'panel' }, opForm)));
}

async function accept(el, [token], ctx) {
  ctx.setSide(null);
  ctx.setCrumbs();
  const err = h('div', {});
  const form = onSubmit(h('form', {},
    field('Your name', h('input', { type: 'text', name: 'name', autocomplete: 'name' })),
    field('Choose a password', h('input', { type: 'password', name: 'password', autocomplete: 'new-password' }),
      ' Leave empty if you already have an account and are signed in.'),
    err, h('button', { class: 'primary', type: 'submit' }, 'Accept invitation')), err, async (f) => {
    const body = {};
    if (f.get('password')) body.password = f.get('password');
    if (f.get('name')) body.name = f.get('name');
    const res = await post(`/invitations/${encodeURIComponent(token)}/accept`, body);
    if (res.token) await startSession(res.token);
    toast('Invitation accepted');
    location.hash = session.token ? `#/orgs/${res.org_id}` : '#/signin';
  });
  clear(el, h('div', { class: 'signin' }, h('h1', {}, 'Join an organization'),
    h('div', { class: 'panel' }, form)));
}

document.querySelector('.skip').addEventListener('click', (e) => { e.preventDefault(); main.focus(); });
window.addEventListener('hashchange', render);
render();
