// What the browser scripts of flagd's admin UI share: Chromium through playwright-core, one
// signed-in user per browser context, a screenshot and an axe-core check of every page visited,
// the admin and native APIs for checking what the UI stored, and a failure report that says
// which step failed, on which page, and what that page showed.
//
// crates/flagd/tests/ui_browser.rs runs the scripts with these variables set:
//   FLAGD_URL        the flagd under test, `http://127.0.0.1:PORT`
//   FLAGD_ADMIN_KEY  its bootstrap admin key
//   FLAGD_SDK_KEY    an SDK key of environment FLAGD_ENV, for the native API
//   FLAGD_ENV, FLAGD_ENV_NAME, FLAGD_ENV_COLOR  the environment made for the test
//   CHROMIUM         the browser to launch
//   SCREENSHOT_DIR   where `<page>.png` goes
//   NODE_PATH        the node_modules that `cargo xtask deps` installed

import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

// ES module imports ignore NODE_PATH, which is how the test points at the packages installed
// under the target directory; a CommonJS require() made here honours it.
const require = createRequire(import.meta.url);

/** Loads an installed package, or fails saying how to install it. */
export function load(name) {
  try {
    return require(name);
  } catch (e) {
    throw new Error(`cannot load ${name} (${e.message}): run \`cargo xtask deps\``);
  }
}

/** The value of environment variable `name`, which must be set. */
export function need(name) {
  const value = process.env[name];
  if (value === undefined || value === '') {
    throw new Error(`${name} is not set: run this script through \`cargo test -p flagd --test ui_browser\``);
  }
  return value;
}

/** How long a change may take to reach a browser page or an evaluation, after it is saved. */
export const LIVE_LIMIT_MS = 1000;

/** How long one action or assertion may wait before the step fails. */
const ACTION_TIMEOUT_MS = 10_000;

/** The flags the UI tests need from Chromium: no sandbox (they run as root in CI), and no
 * background traffic to anywhere but the server under test. */
const CHROMIUM_ARGS = [
  '--headless=new',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export function log(line) {
  process.stderr.write(`${line}\n`);
}

/** `FLAGD_URL` + `path`. */
export function url(path) {
  return new URL(path, need('FLAGD_URL')).href;
}

/** The path and query of a page's URL, for messages and comparisons. */
export function where(page) {
  const at = new URL(page.url());
  return at.pathname + at.search;
}

// ------------------------------------------------------------------ running a script

/** Every page opened, by label, for the failure report. */
const pages = new Map();

/** Where the script is, for the failure report. */
let current = { number: 0, title: 'start' };

/**
 * Runs `body(browser)` with a launched Chromium, and exits non-zero with a report when it
 * throws: the step, the error, and for every open page its URL, status, heading, text and a
 * screenshot `failure-<label>.png`.
 */
export async function main(name, body) {
  const started = Date.now();
  let browser;
  try {
    browser = await launch();
    await body(browser);
    log(`${name}: passed ${current.number} steps in ${Date.now() - started} ms`);
  } catch (error) {
    process.exitCode = 1;
    log(`\n${name}: FAILED at step ${current.number} (${current.title}):\n${error.stack ?? error}`);
    await describePages();
  } finally {
    await browser?.close().catch(() => {});
  }
}

/** Runs one numbered step of the scenario, saying so on stderr. */
export async function step(title, fn) {
  current = { number: current.number + 1, title };
  log(`step ${current.number}: ${title}`);
  const started = Date.now();
  const result = await fn();
  log(`  done in ${Date.now() - started} ms`);
  return result;
}

/** Chromium from $CHROMIUM, headless. */
export async function launch() {
  const executablePath = need('CHROMIUM');
  if (!fs.existsSync(executablePath)) {
    throw new Error(`${executablePath} is missing: run \`cargo xtask deps\``);
  }
  const { chromium } = load('playwright-core');
  return chromium.launch({ executablePath, args: CHROMIUM_ARGS, timeout: 30_000 });
}

/**
 * A fresh browser context (its own cookies: a separate user) with one page, registered under
 * `label` for the failure report. `options` go to `browser.newContext` (`javaScriptEnabled`).
 */
export async function newUser(browser, label, options = {}) {
  const context = await browser.newContext({ ...options, baseURL: need('FLAGD_URL') });
  context.setDefaultTimeout(ACTION_TIMEOUT_MS);
  const page = await context.newPage();
  const record = { page, status: undefined, problems: [], js: options.javaScriptEnabled !== false };
  pages.set(label, record);
  page.on('response', (response) => {
    if (response.request().isNavigationRequest() && response.frame() === page.mainFrame()) {
      record.status = `${response.request().method()} ${new URL(response.url()).pathname} → ${response.status()}`;
    }
  });
  // A script error or a refused inline script is a fault of the page, whatever the step.
  page.on('pageerror', (error) => record.problems.push(`script error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error' && /Content Security Policy/i.test(message.text())) {
      record.problems.push(`CSP: ${message.text()}`);
    }
  });
  return page;
}

/** The script errors and CSP violations seen so far on `page`. */
export function pageProblems(page) {
  return [...pages.values()].find((r) => r.page === page)?.problems ?? [];
}

/** Fails when any page so far had a script error or broke its Content-Security-Policy. */
export function assertNoPageProblems() {
  const found = [];
  for (const [label, record] of pages) {
    for (const problem of record.problems) found.push(`${label}: ${problem}`);
  }
  if (found.length > 0) {
    throw new Error(`the pages had script errors or CSP violations:\n  ${found.join('\n  ')}`);
  }
}

async function describePages() {
  const dir = need('SCREENSHOT_DIR');
  for (const [label, { page, status, problems }] of pages) {
    if (page.isClosed()) continue;
    const file = path.join(dir, `failure-${label}.png`);
    const shot = await page
      .screenshot({ path: file, fullPage: true, timeout: 5000 })
      .then(() => file, (e) => `none (${e.message.split('\n')[0]})`);
    const heading = await page
      .locator('h1')
      .first()
      .textContent({ timeout: 500 })
      .catch(() => null);
    const text = await page
      .locator('body')
      .innerText({ timeout: 1000 })
      .catch(() => '');
    log(`\npage "${label}" at ${page.url()}`);
    log(`  last navigation: ${status ?? 'none'}`);
    log(`  <h1>: ${heading === null ? '(none)' : JSON.stringify(heading.trim())}`);
    log(`  screenshot: ${shot}`);
    for (const problem of problems) log(`  ${problem}`);
    const shown = text.trim().replace(/\n{3,}/g, '\n\n');
    log(`  text:\n    ${(shown.length > 2000 ? `${shown.slice(0, 2000)} …` : shown || '(empty)').replace(/\n/g, '\n    ')}`);
  }
}

// ------------------------------------------------------------------ pages

/**
 * Opens `path` and checks the answer's status (after redirects); with `redirectedTo`, also
 * that the first answer was a 303 to that path. Then [`settled`] and [`visited`].
 */
export async function open(page, path, { status = 200, redirectedTo, name } = {}) {
  const response = await page.goto(path);
  if (!response) throw new Error(`GET ${path} gave no answer`);
  if (redirectedTo !== undefined) {
    const first = await firstAnswer(response);
    const location = first === response ? null : new URL(response.url()).pathname;
    if (first?.status() !== 303 || location !== redirectedTo) {
      throw new Error(
        `GET ${path} answered ${first?.status()}${location ? ` leading to ${location}` : ''}; expected 303 to ${redirectedTo}`,
      );
    }
  }
  if (response.status() !== status) {
    throw new Error(`GET ${path} answered ${response.status()} at ${where(page)}; expected ${status}`);
  }
  await settled(page);
  if (name) await visited(page, name);
  return response;
}

/** The first answer of a chain of redirects that ended in `response`. */
async function firstAnswer(response) {
  let request = response.request();
  while (request.redirectedFrom()) request = request.redirectedFrom();
  return request === response.request() ? response : await request.response();
}

/**
 * Clicks `button`, which submits a form, and waits for the page it leads to (after the
 * post/redirect/get). Returns `{post, final, postedAt}`: the status of the form's own answer
 * (303 for a redirect), that of the page finally shown, and when the form's answer arrived.
 */
export async function submit(page, button, { name } = {}) {
  const answers = [];
  const onResponse = (response) => {
    if (response.request().isNavigationRequest() && response.frame() === page.mainFrame()) {
      answers.push({ status: response.status(), at: Date.now() });
    }
  };
  page.on('response', onResponse);
  let final;
  try {
    [final] = await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), button.click()]);
  } finally {
    page.off('response', onResponse);
  }
  const [first] = answers;
  await settled(page);
  if (name) await visited(page, name);
  return { post: first?.status, final: final?.status(), postedAt: first?.at ?? Date.now() };
}

/** When the page runs app.js, waits until it has bound its enhancements (`data-ready="1"`). */
export async function settled(page) {
  const record = [...pages.values()].find((r) => r.page === page);
  if (record && !record.js) return;
  const usesApp = await page.evaluate(() => document.querySelector('script[src*="/ui/assets/app.js"]') !== null);
  if (!usesApp) return;
  try {
    await page.waitForFunction(() => document.documentElement.dataset.ready === '1', null, {
      timeout: 5000,
    });
  } catch {
    throw new Error(
      `app.js did not set <html data-ready="1"> within 5 s on ${where(page)}: its enhancements are not bound`,
    );
  }
}

/** Takes the screenshot `<name>.png` of a page just visited and checks it with axe-core. */
export async function visited(page, name) {
  await page.screenshot({ path: path.join(need('SCREENSHOT_DIR'), `${name}.png`), fullPage: true });
  await checkAccessibility(page, name);
}

// ------------------------------------------------------------------ accessibility

let axePath;
let axeSource;

/**
 * Runs axe-core on the page and fails listing the serious and critical violations; lesser ones
 * are only logged. axe-core needs the page's timers, which do not run where the page's
 * JavaScript is off: such a page is checked as the same user sees it with JavaScript on (its
 * URL opened again, a GET, in a context with the same cookies).
 */
export async function checkAccessibility(page, name) {
  const record = [...pages.values()].find((r) => r.page === page);
  if (record && !record.js) {
    const context = await page
      .context()
      .browser()
      .newContext({ storageState: await page.context().storageState() });
    try {
      const twin = await context.newPage();
      const response = await twin.goto(page.url());
      assert(response?.status() === 200, `${where(page)} opened again with JavaScript on answered ${response?.status()}`);
      return await checkAccessibility(twin, `${name} (JavaScript on)`);
    } finally {
      await context.close();
    }
  }
  axePath ??= require.resolve('axe-core/axe.min.js');
  if (!(await page.evaluate(() => typeof window.axe === 'object'))) {
    await injectAxe(page);
  }
  const run = page.evaluate(async () => {
    const result = await window.axe.run(document, { resultTypes: ['violations'] });
    return result.violations.map((v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      nodes: v.nodes.slice(0, 5).map((n) => n.target.join(' ')),
    }));
  });
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`axe-core did not finish on ${name} within 30 s`)), 30_000);
  });
  const violations = await Promise.race([run, late]).finally(() => clearTimeout(timer));
  const describe = (v) => `${v.impact} ${v.id}: ${v.help} — ${v.nodes.join(', ')}`;
  const bad = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  for (const v of violations.filter((v) => !bad.includes(v))) log(`  axe (${name}): ${describe(v)}`);
  if (bad.length > 0) {
    throw new Error(
      `axe-core found ${bad.length} serious or critical violation(s) on ${name} (${where(page)}):\n  ${bad
        .map(describe)
        .join('\n  ')}`,
    );
  }
  return violations;
}

/**
 * Puts axe-core into the page. Not with `addScriptTag({path})`: that adds an inline script,
 * which the UI's Content-Security-Policy (`default-src 'self'`) refuses, as it should, and the
 * refusal would count as the page's own violation. Code evaluated through the DevTools protocol
 * is not subject to the page's policy.
 */
async function injectAxe(page) {
  axeSource ??= fs.readFileSync(axePath, 'utf8');
  await page.evaluate(axeSource);
  if (!(await page.evaluate(() => typeof window.axe === 'object'))) {
    throw new Error(`axe-core could not be loaded into ${where(page)}`);
  }
}

// ------------------------------------------------------------------ the UI's own steps

/** Signs in on the sign-in page with `key` (the admin key by default); checks where it lands. */
export async function signIn(page, { key = need('FLAGD_ADMIN_KEY'), name } = {}) {
  await open(page, '/ui/sign-in');
  await page.getByLabel('Admin key').fill(key);
  const { post } = await submit(page, page.getByRole('button', { name: 'Sign in' }));
  if (post !== 303) throw new Error(`signing in answered ${post}, expected 303`);
  const flags = `/ui/envs/${need('FLAGD_ENV')}/flags`;
  if (new URL(page.url()).pathname !== flags) {
    throw new Error(`signing in led to ${where(page)}, expected ${flags} (via /ui/)`);
  }
  if (name) await visited(page, name);
}

/** The heading `<h1>` must read `text`. */
export async function expectHeading(page, text) {
  const h1 = page.getByRole('heading', { level: 1 });
  await h1.first().waitFor();
  const found = (await h1.first().innerText()).trim();
  if (found !== text) throw new Error(`the <h1> of ${where(page)} is ${JSON.stringify(found)}, expected ${JSON.stringify(text)}`);
}

/**
 * Starts polling `predicate()` every 20 ms, now, before the action it waits for; resolves with
 * the time (`Date.now()`) it first held, or rejects naming `what` after `timeoutMs`. Started
 * before the action, the time it reports does not include the screenshots and checks the action
 * is followed by.
 */
export function watch(what, predicate, timeoutMs = 10_000) {
  const started = Date.now();
  const watching = (async () => {
    for (;;) {
      if (await predicate()) return Date.now();
      if (Date.now() - started > timeoutMs) throw new Error(`${what}: not within ${timeoutMs} ms`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  })();
  // Awaited later: a failure before then must not count as unhandled.
  watching.catch(() => {});
  return watching;
}

/**
 * Waits for a [`watch`] and fails unless what it watched held within `limitMs` of `since`;
 * returns how long after `since` that was (0 when it held before `since` was even known).
 */
export async function seenWithin(what, watching, since, limitMs) {
  const took = Math.max(0, (await watching) - since);
  if (took > limitMs) throw new Error(`${what}: after ${took} ms, more than ${limitMs} ms`);
  return took;
}

/** Fails with `message` unless `condition`. */
export function assert(condition, message) {
  if (!condition) throw new Error(message);
}

// ------------------------------------------------------------------ the APIs beside the UI

/** One admin API request with the admin key; the parsed answer, which must be a success. */
export async function admin(method, apiPath, body) {
  const response = await fetch(url(`/api/v1${apiPath}`), {
    method,
    headers: {
      authorization: `Bearer ${need('FLAGD_ADMIN_KEY')}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} /api/v1${apiPath}: ${response.status} ${text}`);
  return text === '' ? null : JSON.parse(text);
}

/** The stored flag `key` of the test's environment: `{version, doc, ...}`. */
export function storedFlag(key) {
  return admin('GET', `/environments/${need('FLAGD_ENV')}/flags/${encodeURIComponent(key)}`);
}

/** `POST /v1/evaluate/{flag}` with the SDK key: the answer `{key, value, variationIndex, reason}`. */
export async function evaluate(flag, context) {
  const response = await fetch(url(`/v1/evaluate/${encodeURIComponent(flag)}`), {
    method: 'POST',
    headers: { authorization: need('FLAGD_SDK_KEY'), 'content-type': 'application/json' },
    body: JSON.stringify({ context }),
  });
  const text = await response.text();
  if (response.status !== 200) throw new Error(`POST /v1/evaluate/${flag}: ${response.status} ${text}`);
  return JSON.parse(text);
}
