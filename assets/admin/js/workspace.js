// Workspace views: documents, search, chat, agents, API keys, tenant tokens, embedder.
import { h, clear, field, errorBox, toast, onSubmit, empty, statusBadge, badge, table, fmtDate, fmtBytes,
  confirmDanger, secretBox, highlighted, openDialog, messageOf, plural } from './dom.js';
import { session, get, post, put, patch, del, upload, stream, can } from './api.js';
import { sideNav } from './nav.js';
import { trail } from './audit.js';

// API keys created in this tab, by workspace, so that tenant tokens can be minted with them
// (memory only, like the session).
const createdKeys = new Map();

export async function view(el, [id, tab = 'documents'], ctx) {
  const ws = await get(`/workspaces/${encodeURIComponent(id)}`);
  const org = await get(`/orgs/${ws.org_id}`);
  if (!ctx.alive()) return;
  sideNav(ctx, { org, ws });
  const body = h('div', {});
  const summary = h('p', { class: 'muted' });
  const show = (s = {}) => clear(summary, `${org.name} · ${plural(s.documents ?? 0, 'document')} · ${plural(s.chunks ?? 0, 'chunk')} · ${fmtBytes(s.bytes_on_disk)} on disk · id `,
    h('span', { class: 'mono' }, ws.id));
  show(ws.stats);
  // Views that change the workspace's contents refresh the summary.
  const refresh = () => get(`/workspaces/${ws.id}`).then((w) => { if (ctx.alive()) show(w.stats); }).catch(() => {});
  clear(el, h('h1', {}, ws.name), summary, body);
  const audit = (b) => trail(b, { path: `/workspaces/${ws.id}/audit`, title: 'Workspace audit',
    intro: 'This workspace\'s trail, newest first: documents, jobs, agents, API keys, tenant tokens minted, the embedder and settings.',
    none: 'Nothing recorded here yet (or nothing matches the filters).' }, ctx);
  const views = { documents, search, chat, agents, keys, tokens, embedder, audit };
  await views[tab](body, { ws, org, base: `/workspaces/${ws.id}`, refresh }, ctx);
}

const FINAL = new Set(['succeeded', 'failed', 'cancelled']);

async function documents(el, { org, base, refresh }, ctx) {
  const ingest = can(org.id, 'member');
  const list = h('div', {});
  const uploads = h('ul', { class: 'uploads', 'aria-label': 'Uploads' });
  let active = 0;
  const filter = h('select', { name: 'status', onchange: async () => { pending = await load(); } },
    ['', 'pending', 'indexing', 'indexed', 'failed'].map((s) => h('option', { value: s }, s || 'all')));

  const meta = h('input', { type: 'text', name: 'metadata', class: 'mono', placeholder: '{"group": "sales"}' });
  const metaErr = h('div', {});
  function addFiles(files) {
    clear(metaErr);
    const text = meta.value.trim();
    if (text) {
      try {
        const v = JSON.parse(text);
        if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error('it must be a JSON object');
      } catch (e) {
        clear(metaErr, errorBox(new Error(`The metadata is not a JSON object (${e.message}): fix it, then add the files again.`)));
        return;
      }
    }
    for (const file of files) track(file, text);
  }
  async function track(file, metadata) {
    const bar = h('progress', { max: 1, value: 0, 'aria-label': `Progress of ${file.name}` });
    const status = h('span', { class: 'muted' }, 'uploading');
    const row = h('li', { dataset: { file: file.name } }, h('span', {}, file.name, ' ', h('span', { class: 'muted' }, fmtBytes(file.size))), bar, status);
    uploads.append(row);
    active++;
    try {
      const res = await upload(`${base}/documents`, file, (p) => { bar.value = p * 0.3; clear(status, `uploading ${Math.round(p * 100)}%`); }, metadata);
      if (res.duplicate) {
        bar.value = 1;
        clear(status, statusBadge('indexed'), ' already in this workspace');
        row.dataset.state = 'done';
        return;
      }
      clear(status, statusBadge('queued'));
      for (;;) {
        await new Promise((r) => setTimeout(r, 400));
        const job = await get(`${base}/jobs/${res.job_id}`);
        bar.value = 0.3 + 0.7 * (job.progress || 0);
        if (job.status === 'failed' || job.status === 'cancelled') {
          clear(status, statusBadge(job.status), ' ', job.error || '');
          row.dataset.state = 'failed';
          break;
        }
        if (FINAL.has(job.status)) {
          bar.value = 1;
          clear(status, statusBadge('indexed'));
          row.dataset.state = 'done';
          break;
        }
        clear(status, statusBadge(job.status), ` ${job.phase} ${Math.round((job.progress || 0) * 100)}%`);
      }
    } catch (e) {
      clear(status, statusBadge('failed'), ' ', messageOf(e));
      row.dataset.state = 'failed';
    } finally {
      active--;
      if (ctx.alive()) pending = await load();
    }
  }

  let drop = null;
  if (ingest) {
    const input = h('input', { type: 'file', multiple: true, name: 'files', onchange: (e) => { addFiles([...e.target.files]); e.target.value = ''; } });
    drop = h('label', { class: 'drop' },
      h('strong', {}, 'Drop files here'), ' or choose them: ', input,
      h('div', { class: 'muted' }, 'PDF, DOCX, Markdown, HTML, text, CSV, JSON. Each file is uploaded, then indexed in the background.'));
    drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
    drop.addEventListener('dragleave', () => drop.classList.remove('over'));
    drop.addEventListener('drop', (e) => { e.preventDefault(); drop.classList.remove('over'); addFiles([...e.dataTransfer.files]); });
  }

  async function load() {
    const q = new URLSearchParams({ limit: 200 });
    if (filter.value) q.set('status', filter.value);
    let data;
    try { data = (await get(`${base}/documents?${q}`)).data; } catch (e) { clear(list, errorBox(e)); return false; }
    if (!ctx.alive()) return false;
    refresh();
    if (!data.length) {
      clear(list, empty(filter.value ? `No ${filter.value} documents.`
        : ingest ? 'No documents yet. Drop files above to add the first ones; they become searchable once indexed.'
          : 'No documents yet. A member of the org can upload some.'));
      return false;
    }
    clear(list, table('Documents', ['Title', 'File', 'Status', 'Chunks (embedded)', 'Size', 'Updated', ingest ? 'Actions' : ''], data.map((d) => ({
      actions: true,
      attrs: { dataset: { status: d.status } },
      cells: [h('div', {}, d.title || d.source_name || '(untitled)',
        Object.keys(d.metadata || {}).length ? h('div', { class: 'muted mono' }, JSON.stringify(d.metadata)) : null), d.source_name || '—',
        h('div', {}, statusBadge(d.status), d.error ? h('div', { class: 'muted' }, d.error) : null),
        `${d.chunk_count} (${d.embedded_chunks})`, fmtBytes(d.byte_size), fmtDate(d.updated_at),
        ingest ? h('button', { type: 'button', class: 'small danger', 'aria-label': `Delete ${d.title || d.source_name || d.id}`, onclick: async () => {
          if (!await confirmDanger(`Delete ${d.title || d.source_name || 'this document'}?`, 'It is removed from every index, and its original file too.')) return;
          try { await del(`${base}/documents/${d.id}`); toast('Document deleted'); } catch (e) { toast(e.message); }
          load();
        } }, 'Delete') : ''],
    }))));
    return data.some((d) => d.status === 'pending' || d.status === 'indexing' || d.embedded_chunks < d.chunk_count);
  }
  clear(el, h('h2', {}, 'Documents'),
    ingest ? field('Metadata for the next files (JSON object, optional)', meta, ' Search filters and tenant tokens match on it.') : null, metaErr,
    drop, uploads,
    h('div', { class: 'spread' }, h('h3', {}, 'In this workspace'), field('Show', filter)), list);
  let pending = await load();
  ctx.every(2000, async () => { if (active === 0 && pending) pending = await load(); });
}

async function search(el, { base }) {
  const results = h('div', { 'aria-live': 'polite' });
  const err = h('div', {});
  const form = onSubmit(h('form', { class: 'grid', role: 'search' },
    h('div', { class: 'wide' }, field('Query', h('input', { type: 'search', name: 'query', required: true, placeholder: 'refund policy' }))),
    h('fieldset', {}, h('legend', {}, 'Mode'), ['hybrid', 'fulltext', 'vector'].map((m) =>
      h('label', {}, h('input', { type: 'radio', name: 'mode', value: m, checked: m === 'hybrid' }), m))),
    field('Results', h('input', { type: 'number', name: 'limit', min: 1, max: 100, value: 10 })),
    h('div', { class: 'wide' }, field('Filter (JSON, optional)', h('textarea', { name: 'filter', class: 'code', rows: 2, placeholder: '{"group": "sales", "year": {"gte": 2023}}' }))),
    h('div', {}, h('button', { class: 'primary', type: 'submit' }, 'Search')),
    h('div', { class: 'wide' }, err)), err, async (f) => {
    const body = { query: f.get('query'), mode: f.get('mode'), limit: Number(f.get('limit')) || 10 };
    const ft = String(f.get('filter') || '').trim();
    if (ft) {
      try { body.filter = JSON.parse(ft); } catch (e) { throw new Error(`The filter is not valid JSON: ${e.message}`); }
    }
    const started = performance.now();
    const res = await post(`${base}/search`, body);
    const ms = Math.round(performance.now() - started);
    clear(results, h('p', { class: 'muted', dataset: { mode: res.mode || body.mode } }, `${res.results.length} results · mode ${res.mode || body.mode} · ${ms} ms`),
      res.results.length ? h('ol', { class: 'results' }, res.results.map((r) => h('li', {},
        h('div', { class: 'spread' }, h('strong', {}, r.title || '(untitled)'), h('span', { class: 'mono' }, `score ${Number(r.score).toFixed(4)}`)),
        r.heading_path ? h('div', { class: 'muted' }, r.heading_path) : null,
        h('div', {}, (r.highlights && r.highlights.length) ? r.highlights.map((x) => h('div', {}, highlighted(x))) : r.text.slice(0, 300)),
        Object.keys(r.metadata || {}).length ? h('div', { class: 'muted mono' }, JSON.stringify(r.metadata)) : null,
        h('details', {}, h('summary', {}, 'Chunk text'), h('pre', { class: 'block' }, r.text)))))
        : empty('Nothing matches. Try other words, another mode, or a wider filter.'));
  });
  clear(el, h('h2', {}, 'Search playground'),
    h('p', { class: 'muted' }, 'Full text (BM25), vector (embeddings) or hybrid (both, fused). Filters apply to every mode.'),
    h('div', { class: 'panel' }, form), results);
}

async function showCitation(base, c) {
  const info = h('div', { class: 'muted' }, 'Loading the document…');
  const body = h('div', {},
    c.heading_path ? h('p', { class: 'muted' }, c.heading_path) : null,
    h('pre', { class: 'block', 'aria-label': 'Cited passage' }, c.snippet || ''), info);
  get(`${base}/documents/${c.document_id}`).then((d) => clear(info,
    `Document: ${d.title || '(untitled)'} · ${d.source_name || d.mime_type} · ${d.chunk_count} chunks · chunk ${c.chunk_id}`))
    .catch((e) => clear(info, messageOf(e)));
  await openDialog(`[${c.marker}] ${c.title || 'Citation'}`, body);
}

function citeButtons(base, citations) {
  return (citations || []).map((c) => h('button', { type: 'button', class: 'small', onclick: () => showCitation(base, c) },
    `[${c.marker}] ${c.title || 'source'}${c.heading_path ? ` › ${c.heading_path}` : ''}`));
}

async function chat(el, { base }, ctx) {
  const [agents, sessions] = await Promise.all([get(`${base}/agents`), get(`${base}/sessions?limit=50`).catch(() => ({ data: [] }))]);
  if (!ctx.alive()) return;
  const log = h('div', { class: 'chat-log', role: 'log', 'aria-label': 'Conversation' });
  const err = h('div', {});
  let sessionId = null;
  const agentSel = h('select', { name: 'agent', onchange: () => { sessionId = null; past.value = ''; clear(log); } },
    agents.data.map((a) => h('option', { value: a.id }, `${a.name} (${a.slug})`)));
  const past = h('select', { name: 'session', onchange: () => reopen(past.value) },
    h('option', { value: '' }, 'a new conversation'),
    sessions.data.map((x) => h('option', { value: x.id }, `${x.title || '(untitled)'} · ${fmtDate(x.updated_at)}`)));
  async function reopen(id) {
    clear(log);
    sessionId = id || null;
    if (!id) return;
    const s = sessions.data.find((x) => x.id === id);
    if (s && [...agentSel.options].some((o) => o.value === s.agent_id)) agentSel.value = s.agent_id;
    try {
      const msgs = (await get(`${base}/sessions/${id}/messages`)).data;
      for (const m of msgs) {
        log.append(m.role === 'user' ? h('div', { class: 'msg user' }, m.content)
          : h('div', { class: 'msg', dataset: { state: 'done' } }, m.content, h('div', { class: 'cites' }, citeButtons(base, m.citations))));
      }
    } catch (e) { log.append(errorBox(e)); }
  }
  let abort = null;
  const stop = h('button', { type: 'button', disabled: true, onclick: () => abort && abort.abort() }, 'Stop');
  const form = onSubmit(h('form', { class: 'grid' },
    h('div', { class: 'wide' }, field('Message', h('textarea', { name: 'query', required: true, rows: 3 }))),
    h('div', { class: 'row' }, h('button', { class: 'primary', type: 'submit' }, 'Send'), stop),
    h('div', { class: 'wide' }, err)), err, async (f) => {
    const query = String(f.get('query'));
    log.append(h('div', { class: 'msg user' }, query));
    const text = document.createTextNode('');
    const tools = h('div', { class: 'tools' });
    const cites = h('div', { class: 'cites' });
    const msg = h('div', { class: 'msg', dataset: { state: 'streaming' } }, tools, text, cites);
    log.append(msg);
    log.setAttribute('aria-busy', 'true');
    form.querySelector('textarea').value = '';
    abort = new AbortController();
    stop.disabled = false;
    const body = { agent_id: agentSel.value, query, stream: true };
    if (sessionId) body.session_id = sessionId;
    try {
      await stream(`${base}/chat`, body, (name, data) => {
        if (name === 'session') sessionId = data.session_id;
        else if (name === 'delta') { text.appendData(data.text); msg.dataset.deltas = String(Number(msg.dataset.deltas || 0) + 1); }
        else if (name === 'tool') tools.append(h('div', {}, `Tool ${data.name}(${typeof data.arguments === 'string' ? data.arguments : JSON.stringify(data.arguments)})`));
        else if (name === 'citations') clear(cites, citeButtons(base, data.citations));
        else if (name === 'done') {
          if (data.answer && !text.data) text.appendData(data.answer);
          msg.dataset.state = 'done';
        } else if (name === 'error') {
          msg.append(errorBox(data.error || data));
          msg.dataset.state = 'error';
        }
      }, abort.signal);
      if (msg.dataset.state === 'streaming') msg.dataset.state = 'done';
    } catch (e) {
      msg.dataset.state = 'error';
      if (e.name === 'AbortError') msg.append(h('div', { class: 'muted' }, '(stopped)'));
      else throw e;
    } finally {
      stop.disabled = true;
      log.removeAttribute('aria-busy');
    }
  });
  clear(el, h('h2', {}, 'Chat playground'),
    h('p', { class: 'muted' }, 'Answers stream as they are written; citations open the cited passage. Without a model provider, agents answer extractively.'),
    h('div', { class: 'row' }, field('Agent', agentSel), field('Continue', past),
      h('button', { type: 'button', onclick: () => { sessionId = null; past.value = ''; clear(log); toast('New conversation'); } }, 'New conversation')),
    agents.data.length ? null : empty('No agents you can use here.'),
    log, h('div', { class: 'panel' }, form));
}

const TOOLS = ['search', 'fulltext_search', 'vector_search', 'get_document'];

async function agents(el, { org, base }, ctx) {
  const list = h('div', {});
  const editor = h('div', {});
  const member = can(org.id, 'member');
  const admin = can(org.id, 'admin');
  const myId = session.me.user ? session.me.user.id : null;

  function edit(a) {
    const err = h('div', {});
    const form = onSubmit(h('form', { class: 'grid' },
      field('Name', h('input', { type: 'text', name: 'name', required: true, value: a ? a.name : '' })),
      a ? null : field('Slug (optional)', h('input', { type: 'text', name: 'slug' })),
      h('div', { class: 'wide' }, field('Description', h('input', { type: 'text', name: 'description', value: a ? a.description || '' : '' }))),
      h('div', { class: 'wide' }, field('System prompt', h('textarea', { name: 'system_prompt', rows: 4, value: a ? a.system_prompt || '' : '' }))),
      field('Provider', h('select', { name: 'provider' }, [['', "the org's default"], ['extractive', 'extractive (no model)'], ['openai-compatible', 'openai-compatible']]
        .map(([v, l]) => h('option', { value: v, selected: (a ? a.provider || '' : '') === v }, l)))),
      field('Model (optional)', h('input', { type: 'text', name: 'model', value: a ? a.model || '' : '' })),
      field('Temperature', h('input', { type: 'number', name: 'temperature', step: '0.1', min: 0, max: 2, value: a && a.temperature !== null ? a.temperature : '' })),
      field('Max tokens', h('input', { type: 'number', name: 'max_tokens', min: 1, value: a && a.max_tokens !== null ? a.max_tokens : '' })),
      h('fieldset', { class: 'wide' }, h('legend', {}, 'Tools'), TOOLS.map((t) =>
        h('label', {}, h('input', { type: 'checkbox', name: 'tools', value: t, checked: a ? a.tools.includes(t) : ['search', 'get_document'].includes(t) }), t))),
      h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'public', checked: a ? a.public : true }), 'Visible to everyone in the org'),
      h('div', { class: 'row wide' }, h('button', { class: 'primary', type: 'submit' }, a ? 'Save agent' : 'Create agent'),
        h('button', { type: 'button', onclick: () => clear(editor) }, 'Cancel')),
      h('div', { class: 'wide' }, err)), err, async (f) => {
      const num = (k) => (f.get(k) === '' ? null : Number(f.get(k)));
      const body = {
        name: f.get('name'), description: f.get('description'), system_prompt: f.get('system_prompt'),
        provider: f.get('provider') || null, model: f.get('model') || null,
        temperature: num('temperature'), max_tokens: num('max_tokens'),
        tools: f.getAll('tools'), public: f.get('public') === 'on',
      };
      if (a) {
        await patch(`${base}/agents/${a.id}`, body);
        toast(`Saved ${body.name}`);
      } else {
        if (f.get('slug')) body.slug = f.get('slug');
        for (const k of ['provider', 'model', 'temperature', 'max_tokens']) if (body[k] === null) delete body[k];
        const made = await post(`${base}/agents`, body);
        toast(`Created ${made.name}`);
      }
      clear(editor);
      await load();
    });
    clear(editor, h('div', { class: 'panel' }, h('h3', {}, a ? `Edit ${a.name}` : 'New agent'), form));
    form.querySelector('input').focus();
  }
  async function load() {
    const data = (await get(`${base}/agents`)).data;
    if (!ctx.alive()) return;
    clear(list, data.length ? table('Agents', ['Name', 'Slug', 'Provider', 'Tools', 'Visibility', 'Actions'], data.map((a) => {
      const mine = admin || (member && a.owner_id && a.owner_id === myId);
      return { actions: true, cells: [
        h('span', {}, a.name, ' ', a.is_default ? badge('default') : null), h('span', { class: 'mono' }, a.slug),
        a.provider || "org's default", a.tools.length ? a.tools.join(', ') : 'none', a.public ? 'org' : 'private',
        h('div', { class: 'row' },
          mine ? h('button', { type: 'button', class: 'small', 'aria-label': `Edit ${a.name}`, onclick: () => edit(a) }, 'Edit') : null,
          mine && !a.is_default ? h('button', { type: 'button', class: 'small danger', 'aria-label': `Delete ${a.name}`, onclick: async () => {
            if (!await confirmDanger(`Delete ${a.name}?`, 'The agent is removed (its past sessions stay).')) return;
            try { await del(`${base}/agents/${a.id}`); toast('Agent deleted'); } catch (e) { toast(e.message); }
            await load();
          } }, 'Delete') : null)] };
    })) : empty('No agents you can see.'));
  }
  clear(el, h('div', { class: 'spread' }, h('h2', {}, 'Agents'),
    member ? h('button', { type: 'button', class: 'primary', onclick: () => edit(null) }, 'New agent') : null),
  editor, list);
  try { await load(); } catch (e) { clear(list, errorBox(e)); }
}

const SCOPES = ['search', 'chat', 'ingest', 'manage'];

async function keys(el, { ws, base }, ctx) {
  const list = h('div', {});
  const out = h('div', {});
  const err = h('div', {});
  const form = onSubmit(h('form', { class: 'grid' },
    field('Name', h('input', { type: 'text', name: 'name', required: true, placeholder: 'backend' })),
    h('fieldset', {}, h('legend', {}, 'Scopes'), SCOPES.map((s) =>
      h('label', {}, h('input', { type: 'checkbox', name: 'scopes', value: s, checked: s === 'search' || s === 'chat' }), s))),
    field('Expires on (optional)', h('input', { type: 'date', name: 'expires' })),
    h('div', {}, h('button', { class: 'primary', type: 'submit' }, 'Create API key')),
    h('div', { class: 'wide' }, err)), err, async (f) => {
    const body = { name: f.get('name'), scopes: f.getAll('scopes') };
    if (f.get('expires')) body.expires_at = `${f.get('expires')}T00:00:00Z`;
    const k = await post(`${base}/api-keys`, body);
    createdKeys.set(ws.id, k.key);
    clear(out, secretBox(`API key ${k.name} (${k.scopes.join(', ')})`, k.key,
      h('a', { class: 'button', href: `#/ws/${ws.id}/tokens` }, 'Mint a tenant token with it')));
    form.reset();
    await load();
  });
  async function load() {
    const data = (await get(`${base}/api-keys`)).data;
    if (!ctx.alive()) return;
    const now = Date.now();
    clear(list, data.length ? table('API keys', ['Name', 'Prefix', 'Scopes', 'Expires', 'Last used', 'Status', 'Actions'], data.map((k) => {
      const state = k.revoked_at ? 'revoked' : (k.expires_at && Date.parse(k.expires_at) < now ? 'expired' : 'active');
      return { actions: true, attrs: { dataset: { key: k.name, state } }, cells: [k.name, h('span', { class: 'mono' }, k.prefix), k.scopes.join(', '),
        fmtDate(k.expires_at), fmtDate(k.last_used_at), statusBadge(state),
        state === 'active' ? h('button', { type: 'button', class: 'small danger', 'aria-label': `Revoke ${k.name}`, onclick: async () => {
          if (!await confirmDanger(`Revoke ${k.name}?`, 'Requests with this key are refused at once, and the tenant tokens minted with it die too.', 'Revoke')) return;
          try { await del(`${base}/api-keys/${k.id}`); toast(`Revoked ${k.name}`); } catch (e) { toast(e.message); }
          await load();
        } }, 'Revoke') : ''] };
    })) : empty('No API keys yet. Create one above for your app; the secret is shown once.'));
  }
  clear(el, h('h2', {}, 'API keys'),
    h('p', { class: 'muted' }, 'Keys reach this workspace only. search and chat for apps, ingest to add documents, manage for agents and settings.'),
    h('div', { class: 'panel' }, form), out, list);
  try { await load(); } catch (e) { clear(list, errorBox(e)); }
}

function claimsOf(jwt) {
  try {
    const p = jwt.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.stringify(JSON.parse(atob(p)), null, 2);
  } catch { return ''; }
}

async function tokens(el, { ws }) {
  const out = h('div', {});
  const err = h('div', {});
  const known = createdKeys.get(ws.id) || '';
  const form = onSubmit(h('form', { class: 'grid' },
    h('div', { class: 'wide' }, field('API key of this workspace', h('input', { type: 'password', name: 'key', required: true, value: known, autocomplete: 'off' }),
      known ? ' (the key you created in this tab)' : ' Tenant tokens are minted with an API key: paste one, or create one under API keys.')),
    h('fieldset', {}, h('legend', {}, 'Scopes'), ['search', 'chat'].map((s) =>
      h('label', {}, h('input', { type: 'checkbox', name: 'scopes', value: s, checked: true }), s))),
    field('Lifetime (seconds)', h('input', { type: 'number', name: 'expires_in', min: 1, max: 86400, value: 900 })),
    field('Subject (optional)', h('input', { type: 'text', name: 'subject', placeholder: 'user-42' })),
    h('div', { class: 'wide' }, field('Filter (JSON, optional)', h('textarea', { name: 'filter', class: 'code', rows: 2, placeholder: '{"group": "sales"}' }))),
    h('div', {}, h('button', { class: 'primary', type: 'submit' }, 'Mint token')),
    h('div', { class: 'wide' }, err)), err, async (f) => {
    const body = { scopes: f.getAll('scopes'), expires_in: Number(f.get('expires_in')) || 900 };
    if (f.get('subject')) body.subject = f.get('subject');
    const ft = String(f.get('filter') || '').trim();
    if (ft) {
      try { body.filter = JSON.parse(ft); } catch (e) { throw new Error(`The filter is not valid JSON: ${e.message}`); }
    }
    const res = await post('/tenant-tokens', body, { token: String(f.get('key')).trim() });
    clear(out, secretBox('Tenant token', res.token), h('h3', {}, 'Claims'), h('pre', { class: 'block mono' }, claimsOf(res.token)));
  });
  clear(el, h('h2', {}, 'Tenant tokens'),
    h('p', { class: 'muted' }, 'A short-lived token for one end user of your app, with narrowed scopes and a filter enforced on every search and chat. Mint one here to test what that user would see.'),
    h('div', { class: 'panel' }, form), out);
}

async function embedder(el, { org, base }, ctx) {
  const box = h('div', {});
  const err = h('div', {});
  const admin = can(org.id, 'admin');
  const describe = (s) => `${s.embedder.kind}${s.embedder.model ? ` · ${s.embedder.model}` : ''} · ${s.dimension} dimensions`;
  async function load() {
    const e = await get(`${base}/embedder`);
    if (!ctx.alive()) return false;
    const b = e.building;
    clear(box, h('div', { class: 'stats' }, h('div', { class: 'stat' }, h('b', {}, e.active.embedder.kind), describe(e.active))),
      b ? h('div', { class: 'panel' }, h('h3', {}, 'Re-embedding'), h('p', {}, `Building ${describe(b)}; search uses the current one until it is done.`),
        b.job ? h('div', {}, h('progress', { max: 1, value: b.job.progress || 0, 'aria-label': 'Re-embedding progress' }),
          ` ${b.job.status} · ${b.job.phase || ''} ${Math.round((b.job.progress || 0) * 100)}%`, b.job.error ? h('div', { class: 'alert' }, b.job.error) : null) : null)
        : h('p', { class: 'muted' }, 'No re-embedding in progress.'));
    return !!b;
  }
  const kind = h('select', { name: 'kind' }, [['minilm', 'minilm: built-in transformer (384 d)'], ['static', 'static: built-in Model2Vec (256 d, fast)'],
    ['openai', "openai: the org's OpenAI-compatible provider"], ['user-provided', 'user-provided: bring your own vectors']].map(([v, l]) => h('option', { value: v }, l)));
  const form = admin ? onSubmit(h('form', { class: 'grid' }, field('Embedder', kind),
    field('Model (openai)', h('input', { type: 'text', name: 'model', placeholder: 'text-embedding-3-small' })),
    field('Dimension (openai, user-provided)', h('input', { type: 'number', name: 'dimension', min: 1 })),
    h('div', {}, h('button', { class: 'primary', type: 'submit' }, 'Switch embedder')),
    h('div', { class: 'wide' }, err)), err, async (f) => {
    const body = { kind: f.get('kind') };
    if (body.kind === 'openai') { body.provider = 'openai-compatible'; body.model = f.get('model'); }
    if ((body.kind === 'openai' || body.kind === 'user-provided') && f.get('dimension')) body.dimension = Number(f.get('dimension'));
    await put(`${base}/embedder`, body);
    toast('Embedder changed; documents are re-embedded in the background');
    building = await load();
  }) : null;
  clear(el, h('h2', {}, 'Embedder'),
    h('p', { class: 'muted' }, 'Switching creates a new vector space and re-embeds every document in the background.'),
    box, form ? h('div', { class: 'panel' }, h('h3', {}, 'Change'), form) : null);
  let building = await load();
  ctx.every(1500, async () => { if (building) building = await load(); });
}
