import { chromium, type Browser, type BrowserContext, type Locator, type Page, type Request } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { customerTopic } from '../../src/modules/customers/customers.service.ts';
import { startTestServer, waitForSubscribers, type TestServer } from '../server.ts';

/**
 * The GraphiQL playground, in a real Chromium:
 *  - it loads with no request to any host but this server (every asset is inlined), and
 *  - it can send the API key header (typed into GraphiQL's Headers editor) with a query.
 *
 * Every page/worker request to a host other than 127.0.0.1/localhost is aborted before it is
 * sent and recorded, so a regression (e.g. GraphiQL from a CDN) fails the test without any
 * traffic leaving the machine. Run through scripts/run-e2e.sh (fresh network namespace).
 */
const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const LOCAL_HOSTS = new Set(['127.0.0.1', 'localhost', '[::1]']);

/** True for URLs that stay on this machine: loopback http(s)/ws(s), data:, about:, and blobs minted by a loopback page. */
function isLocalUrl(raw: string): boolean {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return false;
  }
  switch (url.protocol) {
    case 'data:':
    case 'about:':
      return true;
    case 'blob:':
      return isLocalUrl(raw.slice('blob:'.length));
    case 'http:':
    case 'https:':
    case 'ws:':
    case 'wss:':
      return LOCAL_HOSTS.has(url.hostname);
    default:
      return false;
  }
}

interface Recorder {
  /** Every request the page (and its workers) made, in order. */
  requests: Request[];
  /** External requests and WebSockets stopped by the route handlers: aborted, never sent. */
  blocked: string[];
  /** Local requests answered with an HTTP error (e.g. a relative asset that isn't served). */
  failedLocal: string[];
  /** Every external request or WebSocket seen by any means (blocked or merely observed), deduplicated. */
  external(): string[];
}

/** A fresh browser context (empty localStorage) that records every request and blocks external ones. */
async function recordingContext(browser: Browser): Promise<{ context: BrowserContext; page: Page; recorder: Recorder }> {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const observed: string[] = [];
  const recorder: Recorder = {
    requests: [],
    blocked: [],
    failedLocal: [],
    external: () => [...new Set([...recorder.blocked, ...observed])],
  };
  await context.route('**/*', async (route) => {
    const url = route.request().url();
    if (isLocalUrl(url)) return route.continue();
    recorder.blocked.push(`${route.request().method()} ${url}`);
    return route.abort('blockedbyclient');
  });
  await context.routeWebSocket(
    (url) => !isLocalUrl(url.toString()),
    (ws) => {
      recorder.blocked.push(`WS ${ws.url()}`);
      return ws.close();
    },
  );
  const page = await context.newPage();
  // Belt and braces: also note external traffic the route handlers might not see.
  page.on('request', (request) => {
    recorder.requests.push(request);
    if (!isLocalUrl(request.url())) observed.push(`${request.method()} ${request.url()}`);
  });
  page.on('websocket', (ws) => {
    if (!isLocalUrl(ws.url())) observed.push(`WS ${ws.url()}`);
  });
  page.on('response', (response) => {
    if (isLocalUrl(response.url()) && response.status() >= 400) recorder.failedLocal.push(`${response.status()} ${response.url()}`);
  });
  return { context, page, recorder };
}

const executeButton = (page: Page) => page.getByRole('button', { name: /Execute query/ });
const queryEditor = (page: Page) => page.locator('section.graphiql-query-editor .monaco-editor');
const headersEditor = (page: Page) => page.locator('section.graphiql-editor-tool[aria-label="Headers"] .graphiql-editor:not(.hidden) .monaco-editor');
const resultWindow = (page: Page) => page.locator('section.result-window');
/** The visible text of a Monaco editor (Monaco renders spaces as no-break spaces). */
const editorText = async (editor: Locator) => (await editor.locator('.view-lines').innerText()).replaceAll('\u00a0', ' ');

/** Waits until GraphiQL has rendered its editors with the server's default query (not network idle: it never is). */
async function waitForGraphiQL(page: Page): Promise<void> {
  await executeButton(page).waitFor({ state: 'visible' });
  await expect.poll(() => editorText(queryEditor(page)), { timeout: 30_000 }).toContain('query Viewer');
  await headersEditor(page).locator('.view-lines').waitFor({ state: 'visible' });
  // Let anything triggered by the first paint (fonts, images, lazy chunks) be requested.
  await page.evaluate(() => document.fonts.ready.then(() => undefined));
  await page.waitForTimeout(1_000);
}

/**
 * Clicks Execute and waits for `ran`. GraphiQL re-reads the operations from the editor a moment
 * after each edit; a click before that asks for the operation name of the text before ("Cannot
 * infer operation Viewer") and executes nothing. Then the click is repeated once, as a user
 * would, after the moment has passed.
 */
async function executeEditedOperation(page: Page, ran: () => Promise<void>): Promise<void> {
  let finished = false;
  const outcome = ran().finally(() => {
    finished = true;
  });
  await executeButton(page).click();
  const stale = await Promise.race([
    outcome.then(() => false, () => false),
    expect.poll(() => editorText(resultWindow(page)), { timeout: 10_000 }).toContain('Cannot infer operation').then(() => true, () => false),
  ]);
  if (stale && !finished) {
    await page.waitForTimeout(500);
    await executeButton(page).click();
  }
  return outcome;
}

/** Replaces a Monaco editor's whole text the way a user would: click, select all, type. */
async function replaceEditorText(page: Page, editor: Locator, text: string): Promise<void> {
  await editor.locator('.view-lines').click();
  await page.keyboard.press('ControlOrMeta+A');
  await page.keyboard.press('Delete');
  // insertText sends the text as one input, so Monaco doesn't auto-close brackets/quotes per key;
  // it still re-indents after a newline, so callers pass single-line text.
  await page.keyboard.insertText(text);
}

let server: TestServer;
let browser: Browser;

beforeAll(async () => {
  [server, browser] = await Promise.all([
    startTestServer(),
    chromium.launch({ executablePath: CHROMIUM_PATH, args: CHROMIUM_ARGS, timeout: 45_000 }),
  ]);
});

afterAll(async () => {
  await browser?.close();
  await server?.close();
});

describe('GraphiQL playground in a browser', () => {
  it.each(['/playground', '/graphql'])('GET %s renders GraphiQL with no external request', async (path) => {
    const { context, page, recorder } = await recordingContext(browser);
    try {
      const response = await page.goto(`${server.url}${path}`, { waitUntil: 'commit' });
      expect(response?.status()).toBe(200);
      expect(response?.headers()['content-type']).toMatch(/^text\/html/);
      await waitForGraphiQL(page);

      expect(await page.title()).toBe('Tollgate GraphQL playground');
      expect(recorder.external()).toEqual([]);
      expect(recorder.failedLocal).toEqual([]);
      // Sanity check that the recorder saw the page itself.
      expect(recorder.requests.map((request) => request.url())).toContain(`${server.url}${path}`);
    } finally {
      await context.close();
    }
  });

  it('runs a query with the API key typed into the Headers editor', async () => {
    const merchant = await server.createMerchant('Playground Plumbing Co');
    const { context, page, recorder } = await recordingContext(browser);
    try {
      await page.goto(`${server.url}/playground`, { waitUntil: 'commit' });
      await waitForGraphiQL(page);

      // One line each: typing a newline after "{" would make Monaco auto-close the brace.
      const headers = JSON.stringify({ Authorization: `Bearer ${merchant.secret}` });
      const query = 'query Viewer { viewer { kind merchant { name } } }';
      await replaceEditorText(page, headersEditor(page), headers);
      await replaceEditorText(page, queryEditor(page), query);
      await expect.poll(() => editorText(headersEditor(page))).toBe(headers);
      await expect.poll(() => editorText(queryEditor(page))).toBe(query);

      const posted = page.waitForRequest(
        (request) => request.method() === 'POST' && new URL(request.url()).pathname === '/graphql' && (request.postData() ?? '').includes('viewer'),
        { timeout: 15_000 },
      );
      await executeButton(page).click();
      const request = await posted.catch(async (error: Error) => {
        throw new Error(`GraphiQL sent no POST /graphql (${error.message}); its result pane shows: ${await editorText(resultWindow(page))}`);
      });

      const sentHeaders = await request.allHeaders();
      expect(sentHeaders.authorization).toBe(`Bearer ${merchant.secret}`);
      const response = await request.response();
      const sent = request.postDataJSON() as { query: string; operationName?: string };
      // GraphiQL sends the operation with insignificant whitespace stripped.
      expect(sent.query.replace(/\s+/g, '')).toBe('queryViewer{viewer{kindmerchant{name}}}');
      expect({ status: response?.status(), body: await response?.json() }).toEqual({
        status: 200,
        body: { data: { viewer: { kind: 'MERCHANT', merchant: { name: 'Playground Plumbing Co' } } } },
      });

      await expect.poll(() => editorText(resultWindow(page)), { timeout: 15_000 }).toContain('Playground Plumbing Co');
      const shown = await editorText(resultWindow(page));
      expect(shown).toContain('MERCHANT');
      expect(shown).not.toContain('errors');

      // Scroll the headers editor back to the start of its line so the screenshot shows the key header.
      await headersEditor(page).locator('.view-lines').click();
      await page.keyboard.press('Home');
      await page.screenshot({ path: process.env.E2E_SCREENSHOT ?? '/tmp/playground.png' });
      expect(recorder.external()).toEqual([]);
    } finally {
      await context.close();
    }
  });

  // Browsers cannot put headers on a WebSocket, and GraphiQL sends an empty connection_init: the
  // Headers editor's JSON travels in each subscribe message as extensions.headers, which the
  // server honours when the connection itself carried no credential (src/app.ts, onSubscribe).
  it('runs a subscription with the API key typed into the Headers editor', async () => {
    const merchant = await server.createMerchant('Playground Live Co');
    const customer = await server.services.customers.create(merchant.id, { externalId: 'playground-live' });
    const topic = customerTopic(customer.id);
    const { context, page, recorder } = await recordingContext(browser);
    const sockets: string[] = [];
    const sent: string[] = [];
    const received: string[] = [];
    page.on('websocket', (ws) => {
      sockets.push(ws.url());
      ws.on('framesent', (frame) => sent.push(String(frame.payload)));
      ws.on('framereceived', (frame) => received.push(String(frame.payload)));
    });
    const frames = () => `sent ${JSON.stringify(sent)}; received ${JSON.stringify(received)}`;
    try {
      await page.goto(`${server.url}/playground`, { waitUntil: 'commit' });
      await waitForGraphiQL(page);

      // The id is inlined so the Variables editor stays out of it; one line each (see above).
      const headers = JSON.stringify({ Authorization: `Bearer ${merchant.secret}` });
      const query = `subscription { customerUpdated(id: "${customer.id}") { id name } }`;
      await replaceEditorText(page, headersEditor(page), headers);
      await replaceEditorText(page, queryEditor(page), query);
      await expect.poll(() => editorText(headersEditor(page))).toBe(headers);
      await expect.poll(() => editorText(queryEditor(page))).toBe(query);

      await executeEditedOperation(page, () => waitForSubscribers(server, topic, 1)).catch(async (error: Error) => {
        throw new Error(`${error.message}; ${frames()}; result pane: ${await editorText(resultWindow(page))}`);
      });

      // Each change is pushed and shown; the pane ends on the latest one.
      await server.services.customers.update(merchant.id, customer.id, { name: 'First' });
      await expect.poll(() => editorText(resultWindow(page)), { timeout: 15_000 }).toContain('"First"');
      await server.services.customers.update(merchant.id, customer.id, { name: 'Second' });
      await expect.poll(() => editorText(resultWindow(page)), { timeout: 15_000 }).toContain('"Second"');
      const shown = await editorText(resultWindow(page));
      expect(shown).toContain(customer.id);
      expect(shown).not.toContain('First');
      expect(shown).not.toContain('errors');

      // Over one WebSocket to this server, with the key in the subscribe message (not connection_init).
      const origin = new URL(server.url);
      expect(sockets).toEqual([`ws://127.0.0.1:${origin.port}/graphql`]);
      const messages = sent.map((text) => JSON.parse(text) as { type: string; payload?: Record<string, unknown> });
      expect(messages[0], frames()).toEqual({ type: 'connection_init', payload: {} });
      const subscribe = messages.find((message) => message.type === 'subscribe');
      expect(subscribe?.payload?.extensions, frames()).toEqual({ headers: { Authorization: `Bearer ${merchant.secret}` } });
      const pushed = received
        .map((text) => JSON.parse(text) as { type: string; payload?: { data?: { customerUpdated?: { name: string } } } })
        .filter((message) => message.type === 'next')
        .map((message) => message.payload?.data?.customerUpdated?.name);
      expect(pushed).toEqual(['First', 'Second']);
      // Nothing went over HTTP for the subscription, and nothing left the machine.
      expect(recorder.requests.filter((request) => (request.postData() ?? '').includes('customerUpdated')).map((request) => request.url())).toEqual([]);
      expect(recorder.external()).toEqual([]);
    } finally {
      await context.close();
    }
    // Closing the page ends the subscription on the server.
    await waitForSubscribers(server, topic, 0);
  });

  // Negative control: proves the recorder catches (and blocks) an external asset, so a green
  // "no external request" above means something. The page is served from the loopback origin.
  it('the request recorder catches and blocks an external script', async () => {
    const { context, page, recorder } = await recordingContext(browser);
    try {
      await page.route(`${server.url}/canary`, (route) =>
        route.fulfill({
          contentType: 'text/html',
          body: '<!doctype html><title>canary</title><script src="https://cdn.jsdelivr.net/npm/graphiql/graphiql.min.js"></script><p>hi</p>',
        }),
      );
      await page.goto(`${server.url}/canary`);
      const cdn = 'GET https://cdn.jsdelivr.net/npm/graphiql/graphiql.min.js';
      expect(recorder.external()).toEqual([cdn]);
      expect(recorder.blocked).toEqual([cdn]);
    } finally {
      await context.close();
    }
  });
});
