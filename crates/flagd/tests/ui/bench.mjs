// The flag list's weight and time to interactive, for `cargo xtask bench-ui`: RUNS loads of
// `/ui/envs/FLAGD_ENV/flags`, each in a new browser context (an empty cache, a session of its
// own, signed in over HTTP so that the list itself is the first page the context loads).
//
// Per load it counts the bytes the browser received for every request of the page (headers
// included, compressed as sent: the DevTools protocol's `encodedDataLength` at
// `Network.loadingFinished`), and times, from the navigation's start, the `load` event and the
// moment app.js marks itself bound (`<html data-ready="1">`, seen by a MutationObserver set up
// before any of the page's scripts). Time to interactive is the later of the two. The live-update
// stream app.js opens never finishes loading, so it is not counted; its request is, in
// `requests`.
//
// Writes one JSON line per load on stdout; progress goes to stderr.

import { launch, log, need } from './harness.mjs';

const ENV = need('FLAGD_ENV');
const RUNS = Number.parseInt(need('RUNS'), 10);
const LIST = `/ui/envs/${ENV}/flags`;

const browser = await launch();
try {
  for (let run = 1; run <= RUNS; run += 1) {
    const result = await measure();
    process.stdout.write(`${JSON.stringify({ run, ...result })}\n`);
    log(`bench-ui: load ${run}/${RUNS}: ${result.bytes} bytes in ${result.requests} requests, interactive at ${result.interactiveMs.toFixed(1)} ms`);
  }
} catch (error) {
  log(`bench-ui: ${error.stack ?? error}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}

async function measure() {
  const context = await browser.newContext({ baseURL: need('FLAGD_URL') });
  try {
    await signIn(context);
    const page = await context.newPage();
    await page.addInitScript(() => {
      const mark = () => {
        if (document.documentElement?.dataset.ready === '1' && window.__flagdReadyAt === undefined) {
          window.__flagdReadyAt = performance.now();
        }
      };
      // The document, not its <html>, which may not exist yet when this runs.
      new MutationObserver(mark).observe(document, {
        subtree: true,
        attributes: true,
        attributeFilter: ['data-ready'],
      });
    });
    const cdp = await context.newCDPSession(page);
    await cdp.send('Network.enable');
    await cdp.send('Network.setCacheDisabled', { cacheDisabled: false });
    const received = new Map();
    let requests = 0;
    cdp.on('Network.requestWillBeSent', () => {
      requests += 1;
    });
    cdp.on('Network.loadingFinished', (event) => {
      received.set(event.requestId, event.encodedDataLength);
    });
    const response = await page.goto(LIST, { waitUntil: 'load' });
    if (response?.status() !== 200) {
      throw new Error(`GET ${LIST} answered ${response?.status()} at ${page.url()}`);
    }
    await page.waitForFunction(() => window.__flagdReadyAt !== undefined, null, { timeout: 10_000 }).catch(() => {
      throw new Error('app.js never set <html data-ready="1">');
    });
    const timing = await page.evaluate(() => {
      const [navigation] = performance.getEntriesByType('navigation');
      return {
        loadMs: navigation.loadEventEnd - navigation.startTime,
        readyMs: window.__flagdReadyAt - navigation.startTime,
        rows: document.querySelectorAll('main table tbody tr').length,
      };
    });
    // Anything still arriving for the page (a late image, say) is counted too.
    await page.waitForTimeout(100);
    const bytes = [...received.values()].reduce((sum, n) => sum + n, 0);
    return {
      bytes,
      requests,
      rows: timing.rows,
      loadMs: timing.loadMs,
      readyMs: timing.readyMs,
      interactiveMs: Math.max(timing.loadMs, timing.readyMs),
    };
  } finally {
    await context.close();
  }
}

/** Signs the context in over HTTP with the admin key, as the sign-in form would. */
async function signIn(context) {
  const form = await context.request.get('/ui/sign-in');
  if (form.status() !== 200) {
    throw new Error(`GET /ui/sign-in answered ${form.status()}: this flagd has no admin UI`);
  }
  const fields = { key: need('FLAGD_ADMIN_KEY') };
  const token = /name="_csrf"[^>]*value="([^"]*)"|value="([^"]*)"[^>]*name="_csrf"/.exec(await form.text());
  if (token) fields._csrf = token[1] ?? token[2];
  const answer = await context.request.post('/ui/sign-in', { form: fields, maxRedirects: 0 });
  if (answer.status() !== 303) {
    throw new Error(`signing in answered ${answer.status()}: ${(await answer.text()).slice(0, 500)}`);
  }
}
