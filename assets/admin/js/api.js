// The client of the public /v1 API. The credential (a session token from POST /v1/auth/login,
// or the operator token) lives in this module's memory only: never in the browser's web storage
// (local or session) or a cookie. It is sent as a bearer header, so no ambient credential exists
// for a cross-site request to ride on (CSRF-safe). Reloading the page signs out.

export const session = { token: null, me: null, onExpired: null };

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function headersFor(token) {
  const t = token === undefined ? session.token : token;
  return t ? { authorization: `Bearer ${t}` } : {};
}

async function parse(res) {
  if (res.status === 204) return null;
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!res.ok) throw errorFrom(res.status, data, res.statusText);
  return data;
}

function errorFrom(status, data, statusText) {
  const e = data && data.error;
  const err = new ApiError(status, e ? e.code : `http_${status}`,
    e ? e.message : `The server answered ${status} ${statusText || ''}`.trim());
  if (status === 401 && session.token && session.onExpired) session.onExpired(err);
  return err;
}

/** api('GET', '/orgs') → parsed JSON; throws ApiError with the API's own message. */
export async function api(method, path, body, opts = {}) {
  const headers = headersFor(opts.token);
  let payload;
  if (body !== undefined) {
    headers['content-type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(`/v1${path}`, { method, headers, body: payload, credentials: 'omit', cache: 'no-store', signal: opts.signal });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network', `The server could not be reached (${e.message})`);
  }
  return parse(res);
}

export const get = (p, o) => api('GET', p, undefined, o);
export const post = (p, b, o) => api('POST', p, b === undefined ? {} : b, o);
export const patch = (p, b) => api('PATCH', p, b);
export const put = (p, b) => api('PUT', p, b);
export const del = (p) => api('DELETE', p);

/** GETs a file (e.g. a CSV report) with the bearer header; resolves with a Blob. */
export async function fetchBlob(path, accept) {
  const headers = headersFor();
  if (accept) headers.accept = accept;
  let res;
  try {
    res = await fetch(`/v1${path}`, { headers, credentials: 'omit', cache: 'no-store' });
  } catch (e) {
    throw new ApiError(0, 'network', `The server could not be reached (${e.message})`);
  }
  if (!res.ok) return parse(res);
  return res.blob();
}

/** Uploads one file (multipart) with progress callbacks (0..1). */
export function upload(path, file, onProgress, metadata) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', `/v1${path}`);
    for (const [k, v] of Object.entries(headersFor())) xhr.setRequestHeader(k, v);
    xhr.responseType = 'text';
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); };
    xhr.onload = () => {
      let data = null;
      try { data = xhr.responseText ? JSON.parse(xhr.responseText) : null; } catch { data = null; }
      if (xhr.status >= 200 && xhr.status < 300) resolve(data);
      else reject(errorFrom(xhr.status, data, xhr.statusText));
    };
    xhr.onerror = () => reject(new ApiError(0, 'network', 'The upload could not reach the server'));
    const form = new FormData();
    if (metadata) form.append('metadata', metadata);
    form.append('file', file, file.name);
    xhr.send(form);
  });
}

/** POSTs a chat request with stream: true and calls onEvent(name, data) per SSE event. */
export async function stream(path, body, onEvent, signal) {
  const headers = { ...headersFor(), 'content-type': 'application/json', accept: 'text/event-stream' };
  const res = await fetch(`/v1${path}`, { method: 'POST', headers, body: JSON.stringify(body), credentials: 'omit', cache: 'no-store', signal });
  if (!res.ok) return parse(res);
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buf.search(/\r?\n\r?\n/)) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut).replace(/^\r?\n\r?\n/, '');
      let name = 'message';
      const data = [];
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith('event:')) name = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      }
      if (!data.length) continue;
      let parsed;
      try { parsed = JSON.parse(data.join('\n')); } catch { parsed = data.join('\n'); }
      onEvent(name, parsed);
    }
  }
  return null;
}

/** /healthz, /readyz and /metrics: public server endpoints outside /v1. */
export async function server(path) {
  const res = await fetch(path, { cache: 'no-store', credentials: 'omit' });
  const text = await res.text();
  return { status: res.status, text };
}

/** What the signed-in principal may do in an org: operator > owner > admin > member > viewer. */
const RANK = { viewer: 0, member: 1, admin: 2, owner: 3 };
export function roleIn(orgId) {
  const me = session.me;
  if (!me) return null;
  if (me.principal === 'operator') return 'operator';
  const m = (me.orgs || []).find((o) => o.id === orgId || o.slug === orgId);
  return m ? m.role : null;
}
export function can(orgId, minRole) {
  const r = roleIn(orgId);
  if (r === 'operator') return true;
  if (!r) return false;
  return RANK[r] >= RANK[minRole];
}
export const isOperator = () => session.me && session.me.principal === 'operator';
