// End-to-end tests of the embedded admin UI: Debian's chromium driven by playwright-core, against
// the real binary (target/debug/enclave, or $ENCLAVE_BIN) on a temporary data directory, with a
// scripted OpenAI-compatible provider (a tiny node HTTP server) for streamed chat.
//
//   cd tests/browser && npm ci && npm test
//
// Screenshots of each main view go to tests/browser/screenshots/ (ignored by git). Every view is
// checked with axe-core: serious or critical violations fail the test. A Content-Security-Policy
// violation or an uncaught page error fails it too.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import zlib from 'node:zlib';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const axeSource = fs.readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const BIN = process.env.ENCLAVE_BIN || path.resolve(here, '../../target/debug/enclave');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SHOTS = path.join(here, 'screenshots');
const OPERATOR = 'browser-test-operator-token-0123456789';
const LONG = 120_000;

let server; let base; let dataDir; let serverLog = '';
let mock; let mockBase; const mockRequests = [];

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

async function waitFor(fn, what, ms = LONG) {
  const deadline = Date.now() + ms;
  for (;;) {
    try { if (await fn()) return; } catch { /* not yet */ }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The API from node (test set-up and checks that the UI's actions took effect). */
async function api(method, p, body, token = OPERATOR) {
  const res = await fetch(`${base}/v1${p}`, {
    method, headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

/** A one-page PDF with a text layer (the same shape as tests/api/doc_files.rs writes). */
function pdf(text) {
  const content = `BT /F1 12 Tf 72 712 Td (${text}) Tj ET`;
  const objects = [
    '<< /Type /Catalog /Pages 2 0 R >>',
    '<< /Type /Pages /Kids [3 0 R] /Count 1 >>',
    '<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>',
    `<< /Length ${content.length} >>\nstream\n${content}\nendstream`,
    '<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>',
  ];
  let out = '%PDF-1.4\n';
  const offsets = [];
  objects.forEach((o, i) => { offsets.push(out.length); out += `${i + 1} 0 obj\n${o}\nendobj\n`; });
  const xref = out.length;
  out += `xref\n0 ${objects.length + 1}\n0000000000 65535 f \n`;
  for (const off of offsets) out += `${String(off).padStart(10, '0')} 00000 n \n`;
  out += `trailer\n<< /Size ${objects.length + 1} /Root 1 0 R >>\nstartxref\n${xref}\n%%EOF\n`;
  return Buffer.from(out, 'latin1');
}

const ANSWER_PARTS = ['The refund ', 'window is ', '30 days ', 'from delivery ', '[1].'];

function startMock() {
  return new Promise((resolve) => {
    mock = http.createServer((req, res) => {
      let raw = '';
      req.on('data', (c) => { raw += c; });
      req.on('end', async () => {
        let body = {};
        try { body = JSON.parse(raw); } catch { body = {}; }
        mockRequests.push({ path: req.url, authorization: req.headers.authorization, body });
        if (req.method !== 'POST' || !req.url.endsWith('/chat/completions')) { res.writeHead(404).end(); return; }
        if (!body.stream) {
          res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({
            id: 'c', object: 'chat.completion', created: 1, model: 'mock-model',
            choices: [{ index: 0, message: { role: 'assistant', content: ANSWER_PARTS.join('') }, finish_reason: 'stop' }],
            usage: { prompt_tokens: 10, completion_tokens: 8, total_tokens: 18 },
          }));
          return;
        }
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
        for (const p of ANSWER_PARTS) {
          res.write(`data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content: p }, finish_reason: null }] })}\n\n`);
          // Slow enough that the page shows a partial answer while it streams.
          await new Promise((r) => setTimeout(r, 300));
        }
        res.write(`data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] })}\n\n`);
        res.write(`data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', choices: [], usage: { prompt_tokens: 10, completion_tokens: 8, total_tokens: 18 } })}\n\n`);
        res.end('data: [DONE]\n\n');
      });
    });
    mock.listen(0, '127.0.0.1', () => { mockBase = `http://127.0.0.1:${mock.address().port}/v1`; resolve(); });
  });
}

before(async () => {
  assert.ok(fs.existsSync(BIN), `no server binary at ${BIN}: run \`cargo build\` first (or set ENCLAVE_BIN)`);
  assert.ok(fs.existsSync(CHROMIUM), `no browser at ${CHROMIUM}: apt-get install -y chromium (or set CHROMIUM)`);
  fs.mkdirSync(SHOTS, { recursive: true });
  for (const f of fs.readdirSync(SHOTS)) if (f.startsWith('failure-')) fs.rmSync(path.join(SHOTS, f));
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-ui-'));
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  server = spawn(BIN, ['serve'], {
    env: { ...process.env, ENCLAVE_DATA_DIR: dataDir, ENCLAVE_LISTEN: `127.0.0.1:${port}`, ENCLAVE_ADMIN_TOKEN: OPERATOR, ENCLAVE_LOG: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  server.stdout.on('data', (d) => { serverLog += d; });
  server.stderr.on('data', (d) => { serverLog += d; });
  await waitFor(async () => (await fetch(`${base}/healthz`)).ok, 'the server to answer /healthz', 30_000);
  await startMock();
});

after(async () => {
  if (server) {
    server.kill('SIGTERM');
    await new Promise((r) => { server.once('exit', r); setTimeout(r, 15_000); });
  }
  if (mock) mock.close();
  if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
});

/** A fresh browser profile per test; collects CSP violations and page errors. */
async function browser() {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-chromium-'));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1280, height: 900 },
  });
  await ctx.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: base });
  const page = ctx.pages()[0] || await ctx.newPage();
  page.setDefaultTimeout(30_000);
  const problems = [];
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content.Security.Policy|Refused to/i.test(m.text())) problems.push(`CSP: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  return {
    page, problems,
    async close() {
      await ctx.close();
      fs.rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** axe-core on the current view: no serious or critical violation. */
async function checkA11y(page, view) {
  // Evaluated through the DevTools protocol, so the page's CSP (no inline script) stays on.
  await page.evaluate(`if (!window.axe) { ${axeSource}\n }`);
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
  const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  assert.deepEqual(bad.map((v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', ')}`), [],
    `accessibility violations on ${view}`);
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

async function view(page, name) {
  await checkA11y(page, name);
  await shot(page, name);
}

test('the /admin route: redirect, headers, files', async () => {
  const redirect = await fetch(`${base}/admin`, { redirect: 'manual' });
  assert.equal(redirect.status, 308);
  assert.equal(redirect.headers.get('location'), '/admin/');
  const index = await fetch(`${base}/admin/`);
  assert.equal(index.status, 200);
  assert.match(index.headers.get('content-type'), /text\/html/);
  const csp = index.headers.get('content-security-policy');
  assert.match(csp, /default-src 'self'/);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
  assert.equal(index.headers.get('x-content-type-options'), 'nosniff');
  assert.equal(index.headers.get('cache-control'), 'no-cache');
  const etag = index.headers.get('etag');
  assert.ok(etag);
  assert.equal((await fetch(`${base}/admin/`, { headers: { 'if-none-match': etag } })).status, 304);
  const js = await fetch(`${base}/admin/js/app.js`);
  assert.match(js.headers.get('content-type'), /text\/javascript/);
  assert.equal((await fetch(`${base}/admin/js/missing.js`)).status, 404);
  // Client-side routes that are not files serve the app.
  assert.match(await (await fetch(`${base}/admin/orgs/x`)).text(), /<script type="module" src="js\/app.js">/);
});

test('the UI is small: under 300 KB gzipped, all files together', async () => {
  const root = path.resolve(here, '../../assets/admin');
  let raw = 0; let gz = 0; let n = 0;
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) { walk(p); continue; }
      // Each file is served by the binary exactly as it is on disk (tests/api/admin_ui.rs).
      const res = fs.readFileSync(p);
      raw += res.length; gz += zlib.gzipSync(res, { level: 9 }).length; n++;
    }
  };
  walk(root);
  console.log(`admin UI: ${n} files, ${(raw / 1024).toFixed(1)} KB, ${(gz / 1024).toFixed(1)} KB gzipped`);
  assert.ok(gz < 300 * 1024, `the UI is ${gz} bytes gzipped`);
});

test('operator: org, workspace, upload, search, chat, API keys, sign out', { timeout: 8 * 60_000 }, async () => {
  const { page, problems, close } = await browser();
  try {
    await page.goto(`${base}/admin`);
    await page.getByRole('heading', { name: 'Sign in to Enclave' }).waitFor();
    // Reported, not asserted (timings are not test outcomes): the first load, from navigation
    // start to the sign-in form on the page.
    const ms = await page.evaluate(() => Math.round(performance.now()));
    console.log(`admin UI: first load to the sign-in form in ${ms} ms (debug build, cold browser profile)`);
    await view(page, '01-signin');

    // A wrong token shows the API's message.
    await page.getByRole('textbox', { name: 'Operator token' }).fill('not-the-operator-token');
    await page.getByRole('button', { name: 'Sign in as operator' }).click();
    await page.getByRole('alert').filter({ hasText: 'unauthenticated' }).waitFor();

    await page.getByRole('textbox', { name: 'Operator token' }).fill(OPERATOR);
    await page.getByRole('button', { name: 'Sign in as operator' }).click();
    await page.getByRole('heading', { name: 'Organizations', level: 1 }).waitFor();
    await page.getByText('No organizations yet').waitFor();
    await view(page, '02-operator-orgs-empty');

    // Create an org; suspend and reactivate it.
    await page.getByLabel('Name').fill('Browser Test Org');
    await page.getByLabel('Plan').selectOption('team');
    await page.getByRole('button', { name: 'Create organization' }).click();
    const row = page.getByRole('row').filter({ hasText: 'Browser Test Org' });
    await row.getByText('active').waitFor();
    await row.getByRole('button', { name: 'Suspend' }).click();
    await row.getByText('suspended').waitFor();
    assert.equal((await api('GET', '/orgs/browser-test-org')).body.status, 'suspended');
    await row.getByRole('button', { name: 'Reactivate' }).click();
    await row.getByText('active').waitFor();
    await row.getByLabel('Plan of Browser Test Org').selectOption('enterprise');
    await page.getByText('Browser Test Org is on the enterprise plan').waitFor();
    assert.equal((await api('GET', '/orgs/browser-test-org')).body.plan, 'enterprise');
    await view(page, '03-operator-orgs');

    // A second org, deleted from the list.
    await page.getByLabel('Name').fill('Short Lived');
    await page.getByRole('button', { name: 'Create organization' }).click();
    await page.getByRole('row').filter({ hasText: 'Short Lived' }).getByRole('button', { name: 'Delete Short Lived' }).click();
    await page.getByRole('dialog').getByRole('button', { name: 'Delete' }).click();
    // A soft delete: gone from the list, shown under Deleted, restorable, then deleted again.
    const orgsTable = page.getByRole('table', { name: 'Organizations' });
    const deletedTable = page.getByRole('table', { name: 'Deleted' });
    await orgsTable.getByRole('row').filter({ hasText: 'Short Lived' }).waitFor({ state: 'detached' });
    await deletedTable.getByRole('button', { name: 'Restore Short Lived' }).click();
    await page.getByText('Restored Short Lived').waitFor();
    await orgsTable.getByRole('row').filter({ hasText: 'Short Lived' }).waitFor();
    assert.equal((await api('GET', '/orgs/short-lived')).body.status, 'active');
    await orgsTable.getByRole('button', { name: 'Delete Short Lived' }).click();
    await page.getByRole('dialog').getByRole('button', { name: 'Delete' }).click();
    await orgsTable.getByRole('row').filter({ hasText: 'Short Lived' }).waitFor({ state: 'detached' });
    await deletedTable.getByRole('row').filter({ hasText: 'Short Lived' }).waitFor();
    assert.equal((await api('GET', '/orgs/short-lived')).status, 404);

    await page.getByRole('link', { name: 'Server health' }).click();
    await page.locator('.stat', { hasText: 'open workspaces' }).waitFor();
    await view(page, '04-server-health');

    // Workspace.
    await page.getByRole('link', { name: 'Organizations' }).click();
    await page.getByRole('link', { name: 'Browser Test Org' }).click();
    await page.getByText('No workspaces yet').waitFor();
    await page.getByLabel('Name').fill('Handbook');
    await page.getByRole('button', { name: 'Create workspace' }).click();
    await page.getByRole('link', { name: 'Handbook' }).click();
    await page.getByText('No documents yet').waitFor();
    await view(page, '05-documents-empty');
    const wsId = (await api('GET', '/orgs/browser-test-org/workspaces')).body.data[0].id;

    // Upload: a PDF through the file chooser, a Markdown file by drag and drop, and a broken PDF.
    await page.locator('input[type=file]').setInputFiles([
      { name: 'policy.pdf', mimeType: 'application/pdf', buffer: pdf('Refund policy: customers may return items within thirty days for a full refund.') },
      { name: 'broken.pdf', mimeType: 'application/pdf', buffer: Buffer.from('%PDF-1.4\nthis is not a pdf at all\n') },
    ]);
    // The Markdown file carries metadata (search filters match on it).
    await page.getByLabel('Metadata for the next files').fill('{"group": "sales"}');
    const md = '# Shipping guide\n\n## Delivery times\n\nParcels arrive within five business days.\n\n## Refunds\n\nThe refund window is 30 days from delivery.\n';
    const dt = await page.evaluateHandle((text) => {
      const d = new DataTransfer();
      d.items.add(new File([text], 'shipping.md', { type: 'text/markdown' }));
      return d;
    }, md);
    await page.dispatchEvent('label.drop', 'drop', { dataTransfer: dt });
    for (const f of ['policy.pdf', 'shipping.md', 'broken.pdf']) {
      assert.equal(await page.locator(`li[data-file="${f}"] progress`).count(), 1, `a progress bar for ${f}`);
    }
    await page.locator('li[data-file="policy.pdf"][data-state="done"]').waitFor({ timeout: LONG });
    await page.locator('li[data-file="shipping.md"][data-state="done"]').waitFor({ timeout: LONG });
    await page.locator('li[data-file="broken.pdf"][data-state="failed"]').waitFor({ timeout: LONG });
    assert.equal(await page.locator('li[data-file="policy.pdf"] progress').evaluate((p) => p.value), 1);
    // Indexed, and every chunk embedded (vector search needs them).
    await page.waitForFunction(() => {
      const rows = [...document.querySelectorAll('tbody tr')];
      const ok = rows.filter((r) => r.dataset.status === 'indexed');
      return ok.length === 2 && ok.every((r) => { const m = r.cells[3].textContent.match(/^(\d+) \((\d+)\)$/); return m && m[1] === m[2]; });
    }, null, { timeout: LONG });
    const failedRow = page.getByRole('row').filter({ hasText: 'failed' });
    assert.ok((await failedRow.innerText()).length > 'failed'.length, 'a failed file shows its reason');
    await view(page, '06-documents');
    await page.getByLabel('Show').selectOption('failed');
    await page.waitForFunction(() => [...document.querySelectorAll('tbody tr')].every((r) => r.dataset.status === 'failed'));
    assert.equal(await page.locator('tbody tr').count(), 1);
    await failedRow.getByRole('button', { name: /^Delete/ }).click();
    await page.getByRole('dialog').getByRole('button', { name: 'Delete' }).click();
    await page.getByText('No failed documents.').waitFor();
    await page.getByLabel('Show').selectOption('');

    // Search in each mode.
    await page.getByRole('link', { name: 'Search' }).click();
    for (const mode of ['fulltext', 'vector', 'hybrid']) {
      await page.getByLabel('Query').fill('refund window');
      await page.getByRole('radio', { name: mode, exact: true }).check();
      await page.getByRole('button', { name: 'Search', exact: true }).click();
      await page.locator(`p[data-mode="${mode}"]`).waitFor();
      assert.ok(await page.locator('ol.results > li').count() > 0, `results in ${mode} mode`);
      assert.match(await page.locator('ol.results').innerText(), /score \d/);
      if (mode === 'fulltext') assert.ok(await page.locator('ol.results mark').count() > 0, 'highlights');
    }
    await view(page, '07-search');
    await page.emulateMedia({ colorScheme: 'dark' });
    await view(page, '07-search-dark');
    await page.emulateMedia({ colorScheme: 'light' });
    // A metadata filter: only the Markdown file is in the sales group.
    await page.getByLabel('Filter (JSON, optional)').fill('{"group": "sales"}');
    await page.getByRole('button', { name: 'Search', exact: true }).click();
    await page.waitForFunction(() => /results · mode/.test(document.querySelector('p[data-mode]')?.textContent || '')
      && [...document.querySelectorAll('ol.results > li strong')].every((s) => s.textContent === 'Shipping guide'));
    assert.ok(await page.locator('ol.results > li').count() > 0);
    // An invalid filter is the API's message.
    await page.getByLabel('Filter (JSON, optional)').fill('{"a": {"bogus": 1}}');
    await page.getByRole('button', { name: 'Search', exact: true }).click();
    await page.getByRole('alert').filter({ hasText: 'invalid_request' }).waitFor();
    await page.getByLabel('Filter (JSON, optional)').fill('');

    // The org's provider: the scripted mock. Its key is never shown back.
    await page.getByRole('link', { name: 'Model providers' }).click();
    await page.getByText('No provider').waitFor();
    await page.getByLabel('Base URL').fill(mockBase);
    await page.getByLabel('Model').fill('mock-model');
    await page.getByLabel('API key').fill('sk-browser-test-secret');
    await page.getByRole('button', { name: 'Save provider' }).click();
    await page.getByRole('row').filter({ hasText: 'openai-compatible' }).getByText('set', { exact: true }).waitFor();
    assert.ok(!(await page.content()).includes('sk-browser-test-secret'), 'the provider key is not shown');
    await view(page, '08-providers');

    // An agent on that provider, without tools (retrieved passages go into its prompt).
    await page.getByRole('link', { name: 'Workspaces' }).click();
    await page.getByRole('link', { name: 'Handbook' }).click();
    await page.getByRole('link', { name: 'Agents' }).click();
    await page.getByRole('button', { name: 'New agent' }).click();
    await page.getByLabel('Name').fill('Handbook bot');
    await page.getByLabel('System prompt').fill('Answer from the handbook.');
    await page.getByLabel('Provider').selectOption('openai-compatible');
    await page.getByRole('checkbox', { name: 'search', exact: true }).uncheck();
    await page.getByRole('checkbox', { name: 'get_document' }).uncheck();
    await page.getByRole('button', { name: 'Create agent' }).click();
    const agentRow = page.getByRole('row').filter({ hasText: 'Handbook bot' });
    await agentRow.waitFor();
    assert.match(await agentRow.innerText(), /openai-compatible/);
    await agentRow.getByRole('button', { name: 'Edit Handbook bot' }).click();
    await page.getByLabel('System prompt').fill('Answer from the handbook, briefly.');
    await page.getByRole('button', { name: 'Save agent' }).click();
    await page.getByText('Saved Handbook bot').waitFor();
    const agents = (await api('GET', `/workspaces/${wsId}/agents`)).body.data;
    assert.equal(agents.find((a) => a.slug === 'handbook-bot').system_prompt, 'Answer from the handbook, briefly.');
    await view(page, '09-agents');

    // Chat: the answer streams (a partial answer is on the page before the end), then a citation opens.
    await page.getByRole('link', { name: 'Chat' }).click();
    await page.getByLabel('Agent').selectOption({ label: 'Handbook bot (handbook-bot)' });
    await page.getByLabel('Message').fill('How long is the refund window?');
    await page.getByRole('button', { name: 'Send' }).click();
    await page.waitForFunction(() => {
      const m = document.querySelector('.msg[data-state="streaming"]');
      return m && m.textContent.includes('The refund') && !m.textContent.includes('[1].');
    }, null, { timeout: 60_000 });
    await page.locator('.msg[data-state="done"]').waitFor({ timeout: 60_000 });
    const answer = page.locator('.msg[data-state="done"]');
    assert.match(await answer.innerText(), /The refund window is 30 days from delivery \[1\]\./);
    assert.ok(Number(await answer.getAttribute('data-deltas')) >= 3, 'several deltas');
    const provider = mockRequests.filter((r) => r.path.endsWith('/chat/completions')).pop();
    assert.equal(provider.authorization, 'Bearer sk-browser-test-secret');
    assert.equal(provider.body.stream, true);
    await answer.getByRole('button', { name: /^\[1\]/ }).click();
    const dialog = page.getByRole('dialog');
    await dialog.getByText(/Document: .* chunk \d+/).waitFor();
    assert.ok((await dialog.getByLabel('Cited passage').innerText()).length > 0);
    await view(page, '10-chat-citation');
    await dialog.getByRole('button', { name: 'Close' }).click();
    // The conversation is stored: reopened from the list, with its citations.
    await page.getByRole('link', { name: 'Documents' }).click();
    await page.getByRole('link', { name: 'Chat' }).click();
    const pastOption = page.getByLabel('Continue').locator('option', { hasText: 'How long is the refund window?' });
    await page.getByLabel('Continue').selectOption(await pastOption.getAttribute('value'));
    await page.locator('.msg[data-state="done"]').getByRole('button', { name: /^\[1\]/ }).waitFor();
    assert.match(await page.locator('.chat-log').innerText(), /How long is the refund window\?[\s\S]*The refund window is 30 days/);

    // API keys: created with scopes and expiry, shown once, used, revoked.
    await page.getByRole('link', { name: 'API keys' }).click();
    await page.getByText('No API keys yet').waitFor();
    await page.getByLabel('Name').fill('ci-key');
    await page.getByRole('checkbox', { name: 'ingest' }).check();
    await page.getByLabel('Expires on (optional)').fill('2031-01-01');
    await page.getByRole('button', { name: 'Create API key' }).click();
    const secret = await page.getByRole('textbox', { name: /API key ci-key/ }).inputValue();
    assert.match(secret, /^enc_key_/);
    await page.getByRole('region', { name: /API key ci-key/ }).getByRole('button', { name: 'Copy' }).click();
    await page.getByText('Copied to the clipboard').waitFor();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), secret);
    const keyRow = page.locator('tr[data-key="ci-key"]');
    await keyRow.waitFor();
    assert.match(await keyRow.innerText(), /search, chat, ingest/);
    assert.equal((await api('POST', '/search', { query: 'refund' }, secret)).status, 200);
    await view(page, '11-api-keys');

    // Tenant token minted with that key (kept in this tab's memory).
    await page.getByRole('link', { name: 'Mint a tenant token with it' }).click();
    await page.getByLabel('Subject (optional)').fill('user-42');
    await page.getByLabel('Filter (JSON, optional)').fill('{"group": "sales"}');
    await page.getByRole('button', { name: 'Mint token' }).click();
    const jwt = await page.getByRole('textbox', { name: 'Tenant token' }).inputValue();
    assert.equal(jwt.split('.').length, 3);
    assert.match(await page.locator('main pre').innerText(), /"user-42"/);
    await view(page, '12-tenant-token');

    await page.getByRole('link', { name: 'API keys' }).click();
    await page.getByRole('button', { name: 'Revoke ci-key' }).click();
    await page.getByRole('dialog').getByRole('button', { name: 'Revoke' }).click();
    await page.locator('tr[data-key="ci-key"][data-state="revoked"]').waitFor();
    assert.equal((await api('POST', '/search', { query: 'refund' }, secret)).status, 401);

    // Embedder: switch to the static model and watch the re-embedding finish.
    await page.getByRole('link', { name: 'Embedder' }).click();
    await page.getByLabel('Embedder').selectOption('static');
    await page.getByRole('button', { name: 'Switch embedder' }).click();
    await page.locator('.stat b', { hasText: 'static' }).waitFor({ timeout: LONG });
    await page.getByText('No re-embedding in progress.').waitFor({ timeout: LONG });
    await view(page, '13-embedder');

    // Members and an invitation link (shown once).
    await page.getByRole('link', { name: 'Invitations' }).click();
    await page.getByLabel('Email').fill('someone@example.com');
    await page.getByLabel('Role').selectOption('viewer');
    await page.getByRole('button', { name: 'Create invitation' }).click();
    const link = await page.getByRole('textbox', { name: /Invitation link for someone@example.com/ }).inputValue();
    assert.match(link, /\/admin\/#\/accept\/enc_inv_/);
    await view(page, '14-invitations');
    await page.getByRole('link', { name: 'Members' }).click();
    await page.getByRole('heading', { name: 'Members', level: 2 }).waitFor();
    await view(page, '15-members');

    await page.getByRole('link', { name: 'Audit log' }).click();
    await page.getByRole('cell', { name: 'invitation.create' }).first().waitFor();
    await view(page, '16-audit');
    // The suspension is older than the first page: page back to it.
    for (let i = 0; i < 20 && !(await page.getByRole('cell', { name: 'org.suspend' }).count()); i++) {
      const first = await page.locator('tbody tr').first().innerText();
      await page.getByRole('button', { name: 'Older' }).click();
      await page.waitForFunction((f) => document.querySelector('tbody tr')?.innerText !== f, first);
    }
    await page.getByRole('cell', { name: 'org.suspend' }).first().waitFor();

    // The org's usage: the workload above is counted (requests, documents, chunks, chat tokens).
    await page.getByRole('link', { name: 'Organizations' }).click();
    await page.getByRole('link', { name: 'Browser Test Org' }).click();
    await page.getByRole('link', { name: 'Usage', exact: true }).click();
    await page.getByRole('heading', { name: 'Usage', level: 2 }).waitFor();
    await page.locator('.stat[data-stat="requests"]').waitFor();
    const statOf = async (k) => Number((await page.locator(`.stat[data-stat="${k}"] b`).innerText()).replace(/[^\d]/g, ''));
    const usage = (await api('GET', '/orgs/browser-test-org/usage')).body.data;
    const apiRequests = usage.reduce((a, r) => a + r.requests_search + r.requests_chat + r.requests_ingest + r.requests_mcp + r.requests_openai, 0);
    assert.ok(await statOf('requests') >= 6, 'uploads, searches and a chat are counted');
    assert.ok(await statOf('requests') <= apiRequests, 'the page shows what the API reports');
    assert.ok(await statOf('documents_added') >= 2, 'documents added');
    assert.ok(await statOf('embedding_chunks') > 0, 'chunks embedded');
    assert.ok(await statOf('chat_tokens') > 0, 'chat tokens');
    // Charts with an accessible name, and their numbers in a table.
    for (const name of ['Requests by kind', 'Chat tokens', 'Chunks embedded', 'Documents stored', 'Storage']) {
      await page.getByRole('img', { name: new RegExp(`^${name}`) }).waitFor();
    }
    assert.ok(await page.locator('svg.chart rect.bar').count() > 0, 'bars are drawn');
    await page.getByText('Numbers: Requests by kind').click();
    const today = new Date().toISOString().slice(0, 10);
    const todayRow = page.locator('details.numbers').first().getByRole('row').filter({ hasText: today });
    assert.ok(Number((await todayRow.locator('td').last().innerText()).replace(/[^\d]/g, '')) > 0, "today's requests in the table");
    const wsUsage = page.getByRole('table', { name: 'Usage by workspace' }).getByRole('row').filter({ hasText: 'Handbook' });
    assert.ok(Number((await wsUsage.locator('td').nth(1).innerText()).replace(/[^\d]/g, '')) > 0, 'the workspace breakdown');
    await view(page, '17-usage');
    await page.emulateMedia({ colorScheme: 'dark' });
    await view(page, '17-usage-dark');
    await page.emulateMedia({ colorScheme: 'light' });
    // CSV, fetched with the bearer header and saved through a Blob URL.
    const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Download CSV', exact: true }).click()]);
    assert.match(download.suggestedFilename(), /^usage-browser-test-org-.*\.csv$/);
    const csv = fs.readFileSync(await download.path(), 'utf8').trim().split('\n');
    assert.match(csv[0], /^org_id,workspace_id,period,requests_search,/);
    assert.ok(csv.length >= 2 && csv.slice(1).some((l) => l.includes(today)), 'a row for today');
    const [byWs] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Download CSV by workspace' }).click()]);
    assert.ok(fs.readFileSync(await byWs.path(), 'utf8').includes(wsId), 'the workspace is a column');
    // By month: the last 12 months, one period each.
    await page.getByRole('button', { name: 'Last 12 months' }).click();
    await page.waitForFunction(() => document.querySelectorAll('details.numbers')[0]?.querySelectorAll('tbody tr').length === 12);
    assert.ok(await statOf('requests') > 0);

    // The org's audit trail, filtered by action; then the workspace's.
    await page.getByRole('link', { name: 'Audit trail', exact: true }).click();
    await page.getByRole('heading', { name: 'Audit trail', level: 2 }).waitFor();
    await page.getByLabel('Action', { exact: true }).fill('org.suspend');
    await page.getByRole('button', { name: 'Show', exact: true }).click();
    await page.getByRole('cell', { name: 'org.suspend' }).first().waitFor();
    await page.waitForFunction(() => [...document.querySelectorAll('tbody tr')].every((r) => r.dataset.action === 'org.suspend'));
    const suspendRow = page.getByRole('row').filter({ hasText: 'org.suspend' }).first();
    assert.match(await suspendRow.innerText(), /operator[\s\S]*org\.suspend[\s\S]*success/);
    assert.notEqual((await suspendRow.locator('td').last().innerText()).trim(), '—', 'a request id');
    await view(page, '18-org-audit');
    await page.getByRole('link', { name: 'Workspaces', exact: true }).click();
    await page.getByRole('link', { name: 'Handbook' }).click();
    await page.getByRole('link', { name: 'Workspace audit' }).click();
    await page.getByRole('cell', { name: 'document.add' }).first().waitFor();
    await page.getByLabel('Action', { exact: true }).fill('agent.*');
    await page.getByRole('button', { name: 'Show', exact: true }).click();
    await page.waitForFunction(() => {
      const rows = [...document.querySelectorAll('tbody tr')];
      return rows.length > 0 && rows.every((r) => r.dataset.action.startsWith('agent.'));
    });
    // One page only: the API gave no next_offset, so there is nothing older to ask for.
    assert.ok(await page.getByRole('button', { name: 'Older' }).isDisabled());
    assert.ok(await page.getByRole('button', { name: 'Newer' }).isDisabled());
    await page.getByRole('button', { name: 'Clear filters' }).click();
    await page.getByRole('cell', { name: 'document.add' }).first().waitFor();
    await view(page, '19-workspace-audit');

    // Sign out: the token is gone from memory; nothing was stored in the browser.
    assert.equal(await page.evaluate(() => localStorage.length + sessionStorage.length), 0);
    assert.ok(!(await page.context().cookies()).length, 'no cookie');
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('heading', { name: 'Sign in to Enclave' }).waitFor();
    await page.evaluate(() => { location.hash = '#/operator/orgs'; });
    await page.getByRole('heading', { name: 'Sign in to Enclave' }).waitFor();
    assert.deepEqual(problems, []);
  } catch (e) {
    await shot(page, 'failure-operator').catch(() => {});
    throw new Error(`${e.message}\n--- server log (tail) ---\n${serverLog.slice(-3000)}`);
  } finally {
    await close();
  }
});

test('viewer: what a viewer may not do is not offered, and is refused', { timeout: 4 * 60_000 }, async () => {
  // Set-up through the API: an org with a workspace and a document, and an invitation.
  assert.equal((await api('POST', '/orgs', { name: 'Viewer Org', plan: 'free' })).status, 201);
  const ws = (await api('POST', '/orgs/viewer-org/workspaces', { name: 'Shared' })).body;
  assert.equal((await api('POST', `/workspaces/${ws.id}/documents?wait=true`, { title: 'Holidays', text: 'The office is closed on public holidays.' })).status, 201);
  const inv = (await api('POST', '/orgs/viewer-org/invitations', { email: 'vera@example.com', role: 'viewer' })).body;

  const { page, problems, close } = await browser();
  try {
    // Accepting the invitation link signs the viewer in.
    await page.goto(`${base}/admin/#/accept/${inv.token}`);
    await page.getByLabel('Your name').fill('Vera');
    await page.getByLabel('Choose a password').fill('a long enough password');
    await page.getByRole('button', { name: 'Accept invitation' }).click();
    await page.getByRole('heading', { name: 'Viewer Org', level: 1 }).waitFor();
    await page.getByRole('link', { name: 'Shared' }).waitFor();
    await view(page, '20-viewer-org');
    // Not offered: creating or deleting workspaces, invitations, providers.
    assert.equal(await page.getByRole('button', { name: 'Create workspace' }).count(), 0);
    assert.equal(await page.getByRole('button', { name: /^Delete/ }).count(), 0);
    assert.equal(await page.getByRole('link', { name: 'Invitations' }).count(), 0);
    assert.equal(await page.getByRole('link', { name: 'Model providers' }).count(), 0);
    assert.equal(await page.getByRole('link', { name: 'Usage' }).count(), 0);
    assert.equal(await page.getByRole('link', { name: 'Audit trail' }).count(), 0);
    await page.getByRole('link', { name: 'Members' }).click();
    await page.getByRole('cell', { name: 'vera@example.com' }).waitFor();
    assert.equal(await page.getByRole('combobox').count(), 0, 'no role selector');
    assert.equal(await page.getByRole('button', { name: /^Remove/ }).count(), 0);

    // The workspace: reading and searching work; upload, delete, new agents and API keys are not offered.
    await page.getByRole('link', { name: 'Workspaces' }).click();
    await page.getByRole('link', { name: 'Shared' }).click();
    await page.getByRole('cell', { name: 'Holidays' }).waitFor();
    assert.equal(await page.locator('input[type=file]').count(), 0);
    assert.equal(await page.getByRole('button', { name: /^Delete/ }).count(), 0);
    assert.equal(await page.getByRole('link', { name: 'API keys' }).count(), 0);
    assert.equal(await page.getByRole('link', { name: 'Workspace audit' }).count(), 0);
    await view(page, '21-viewer-documents');
    await page.getByRole('link', { name: 'Search' }).click();
    await page.getByLabel('Query').fill('holidays');
    await page.getByRole('button', { name: 'Search', exact: true }).click();
    await page.locator('ol.results > li').first().waitFor();
    await page.getByRole('link', { name: 'Agents' }).click();
    await page.getByRole('cell', { name: 'default', exact: true }).waitFor();
    assert.equal(await page.getByRole('button', { name: 'New agent' }).count(), 0);
    assert.equal(await page.getByRole('button', { name: /^Edit/ }).count(), 0);
    await page.getByRole('link', { name: 'Embedder' }).click();
    await page.getByText('No re-embedding in progress.').waitFor();
    assert.equal(await page.getByRole('button', { name: 'Switch embedder' }).count(), 0);

    // Refused: typed URLs of what is not offered answer with the API's 403 message.
    await page.evaluate((id) => { location.hash = `#/ws/${id}/keys`; }, ws.id);
    await page.getByRole('alert').filter({ hasText: 'may not manage API keys' }).waitFor();
    await view(page, '22-viewer-refused');
    await page.evaluate(() => { location.hash = '#/orgs/viewer-org/invitations'; });
    await page.getByLabel('Email').fill('friend@example.com');
    await page.getByRole('button', { name: 'Create invitation' }).click();
    await page.getByRole('alert').filter({ hasText: 'forbidden' }).waitFor();
    // Usage and audit trails: not offered, and refused by the API.
    await page.evaluate(() => { location.hash = '#/orgs/viewer-org/usage'; });
    await page.getByRole('alert').filter({ hasText: "may not read the organization's usage" }).waitFor();
    await page.evaluate(() => { location.hash = '#/orgs/viewer-org/audit'; });
    await page.getByRole('alert').filter({ hasText: 'may not read the audit trail' }).waitFor();
    await page.evaluate((id) => { location.hash = `#/ws/${id}/audit`; }, ws.id);
    await page.getByRole('heading', { name: 'Workspace audit', level: 2 }).waitFor();
    await page.getByRole('alert').filter({ hasText: 'may not read the audit trail' }).waitFor();
    assert.equal(await page.getByRole('link', { name: 'Workspace audit' }).count(), 0);

    // Sign out, then in again with email and password.
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByLabel('Email').fill('vera@example.com');
    await page.getByLabel('Password').fill('a long enough password');
    await page.getByRole('button', { name: 'Sign in', exact: true }).click();
    await page.getByRole('heading', { name: 'Your organizations', level: 1 }).waitFor();
    assert.match(await page.getByRole('row').filter({ hasText: 'Viewer Org' }).innerText(), /viewer/);
    assert.deepEqual(problems, []);
  } catch (e) {
    await shot(page, 'failure-viewer').catch(() => {});
    throw new Error(`${e.message}\n--- server log (tail) ---\n${serverLog.slice(-3000)}`);
  } finally {
    await close();
  }
});
