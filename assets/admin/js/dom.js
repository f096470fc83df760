// DOM helpers. Text is always set as text (never parsed as HTML); no inline styles or scripts.

/** h('button', {class: 'primary', onclick: fn}, 'Save') */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    // Properties, and their defaults too, so that form.reset() returns to them.
    else if (k === 'value') { if ('defaultValue' in el && tag !== 'select') el.defaultValue = v; el.value = v; }
    else if (k === 'checked') { el.defaultChecked = v; el.checked = v; }
    else if (k === 'selected') { el.defaultSelected = v; el.selected = v; }
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let uid = 0;
export const nextId = (p = 'f') => `${p}-${++uid}`;

/** A labelled field: the label wraps the control, so the name is announced. */
export function field(label, control, hint) {
  return h('label', {}, label, control, hint ? h('span', { class: 'muted' }, hint) : null);
}

export function toast(text) {
  const box = document.getElementById('toasts');
  const t = h('div', { class: 'toast' }, text);
  box.append(t);
  setTimeout(() => t.remove(), 4000);
}

export function errorBox(err) {
  return h('div', { class: 'alert', role: 'alert' }, messageOf(err));
}

export function messageOf(err) {
  if (!err) return '';
  if (err.code) return `${err.message} (${err.code})`;
  return err.message || String(err);
}

export function empty(...children) {
  return h('div', { class: 'empty' }, ...children);
}

export function badge(text, kind) {
  return h('span', { class: `badge ${kind || ''}` }, text);
}

export function statusBadge(s) {
  const kind = { active: 'ok', indexed: 'ok', succeeded: 'ok', ready: 'ok', ok: 'ok',
    pending: 'warn', queued: 'warn', indexing: 'warn', running: 'warn', building: 'warn',
    suspended: 'bad', failed: 'bad', cancelled: 'bad', deleted: 'bad', revoked: 'bad', expired: 'bad' }[s];
  return badge(s, kind);
}

export function fmtDate(s) {
  if (!s) return '—';
  const d = new Date(s);
  return isNaN(d) ? s : d.toLocaleString();
}

export const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

export function fmtBytes(n) {
  if (n === null || n === undefined) return '—';
  const u = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
}

/** Renders a highlight fragment: `<mark>` tags become elements, everything else stays text. */
export function highlighted(fragment) {
  const out = h('span', {});
  const parts = String(fragment).split(/(<mark>|<\/mark>)/);
  let inMark = false;
  for (const p of parts) {
    if (p === '<mark>') { inMark = true; continue; }
    if (p === '</mark>') { inMark = false; continue; }
    if (!p) continue;
    const text = decodeEntities(p);
    out.append(inMark ? h('mark', {}, text) : document.createTextNode(text));
  }
  return out;
}

function decodeEntities(s) {
  return s.replace(/&(lt|gt|amp|quot|#39|#x27|apos);/g, (_, e) =>
    ({ lt: '<', gt: '>', amp: '&', quot: '"', '#39': "'", '#x27': "'", apos: "'" })[e]);
}

/** A secret shown once, with a copy button. */
export function secretBox(title, value, extra) {
  const id = nextId('secret');
  const input = h('input', { type: 'text', readonly: true, value, id, class: 'mono', 'aria-label': title });
  const copy = h('button', { type: 'button', onclick: () => copyText(value, input) }, 'Copy');
  return h('div', { class: 'secret', role: 'region', 'aria-label': title },
    h('strong', {}, title), h('div', {}, 'Shown once: copy it now, it cannot be shown again.'),
    input, h('div', { class: 'row' }, copy, extra || null));
}

export async function copyText(value, input) {
  try {
    await navigator.clipboard.writeText(value);
    toast('Copied to the clipboard');
  } catch {
    if (input) { input.focus(); input.select(); }
    toast('Press Ctrl+C (or ⌘C) to copy the selected text');
  }
}

/** Opens the one modal dialog with a title and body; resolves with the button value. */
export function openDialog(title, body, buttons = [{ label: 'Close', value: 'close' }]) {
  const dlg = document.getElementById('dialog');
  const returnFocus = document.activeElement;
  return new Promise((resolve) => {
    const btns = buttons.map((b) => h('button', {
      type: 'button', class: b.class || '', onclick: () => { dlg.close(b.value); },
    }, b.label));
    clear(dlg, h('h2', { id: 'dialog-title' }, title), body, h('div', { class: 'row' }, btns));
    const onClose = () => {
      dlg.removeEventListener('close', onClose);
      const value = dlg.returnValue || 'close';
      dlg.replaceChildren();
      if (returnFocus && returnFocus.focus) returnFocus.focus();
      resolve(value);
    };
    dlg.returnValue = '';
    dlg.addEventListener('close', onClose);
    dlg.showModal();
    (btns[btns.length - 1]).focus();
  });
}

export async function confirmDanger(title, text, label = 'Delete') {
  const v = await openDialog(title, h('p', {}, text), [
    { label: 'Cancel', value: 'cancel' },
    { label, value: 'ok', class: 'danger' },
  ]);
  return v === 'ok';
}

/** A table with a header row; rows are arrays of cells (nodes or text). */
export function table(caption, headers, rows) {
  return h('table', {},
    h('caption', { class: 'sr-only' }, caption),
    h('thead', {}, h('tr', {}, headers.map((x) => h('th', { scope: 'col' }, x)))),
    h('tbody', {}, rows.map((r) => h('tr', r.attrs || {}, (r.cells || r).map((c, i) =>
      h('td', { class: i === (r.cells || r).length - 1 && r.actions ? 'actions' : null }, c))))));
}

/** A busy-aware submit handler: disables the form's buttons while it runs, shows errors. */
export function onSubmit(form, errSlot, fn) {
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const buttons = [...form.querySelectorAll('button')];
    buttons.forEach((b) => { b.disabled = true; });
    clear(errSlot);
    try {
      await fn(new FormData(form));
    } catch (e) {
      clear(errSlot, errorBox(e));
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  });
  return form;
}
