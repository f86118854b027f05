// Checks the browser harness itself, apart from the UI: Chromium starts and reaches flagd, a
// form's post/redirect/get is followed and its statuses read, axe-core loads into a page whose
// Content-Security-Policy is the UI's and reports the violations it should, and a refused inline
// script is caught. The pages come from a small server of this script's own, so a failure here
// is the harness's (or the machine's), never the UI's.

import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';

import {
  assert,
  checkAccessibility,
  main,
  need,
  newUser,
  open,
  pageProblems,
  step,
  submit,
  url,
} from './harness.mjs';

/** The policy the UI sends with every page (see the UI's contract). */
const CSP = "default-src 'self'; frame-ancestors 'none'; form-action 'self'";

const page = (title, body, head = '') =>
  `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${title}</title>${head}</head>` +
  `<body><main id="main"><h1>${title}</h1>${body}</main></body></html>`;

const routes = {
  'GET /form': page(
    'Form',
    '<form method="post" action="/form"><label for="k">Admin key</label>' +
      '<input id="k" name="key" type="password"><button>Sign in</button></form>',
    '<script src="/app.js"></script>',
  ),
  'GET /app.js': "document.documentElement.dataset.ready = '1';",
  'GET /done': page('Done', '<p>Signed in.</p>'),
  'GET /inaccessible': page('Broken', '<img src="/nothing.png"><button></button>'),
  'GET /inline': page('Inline', '<p>An inline script follows.</p><script>window.ran = true;</script>'),
};

const server = http.createServer((request, response) => {
  const route = `${request.method} ${new URL(request.url, 'http://x').pathname}`;
  response.setHeader('content-security-policy', CSP);
  if (route === 'POST /form') {
    request.resume();
    response.writeHead(303, { location: '/done' }).end();
  } else if (routes[route] !== undefined) {
    const type = route.endsWith('.js') ? 'text/javascript' : 'text/html; charset=utf-8';
    response.writeHead(200, { 'content-type': type }).end(routes[route]);
  } else {
    response.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
  }
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const local = (p) => `http://127.0.0.1:${server.address().port}${p}`;

await main('harness-check', async (browser) => {
  const user = await newUser(browser, 'harness');

  await step('Chromium reaches flagd', async () => {
    const response = await user.goto(url('/healthz'));
    assert(response?.status() === 200, `GET /healthz answered ${response?.status()} in the browser`);
    const shot = path.join(need('SCREENSHOT_DIR'), 'harness-healthz.png');
    await user.screenshot({ path: shot });
    assert(fs.statSync(shot).size > 0, `the screenshot ${shot} is empty`);
  });

  await step('a form post is followed through its redirect, with both statuses', async () => {
    await open(user, local('/form'), { name: 'harness-form' });
    await user.getByLabel('Admin key').fill('secret');
    const answer = await submit(user, user.getByRole('button', { name: 'Sign in' }), { name: 'harness-done' });
    assert(answer.post === 303 && answer.final === 200, `the form answered ${JSON.stringify(answer)}`);
    assert(new URL(user.url()).pathname === '/done', `the form led to ${user.url()}`);
  });

  await step('a redirect is told from a page that answers directly', async () => {
    const refused = await open(user, local('/form'), { redirectedTo: '/done' }).then(
      () => null,
      (e) => e.message,
    );
    assert(refused?.includes('expected 303 to /done'), `open() took a page without a redirect: ${refused}`);
    const missing = await open(user, local('/missing')).then(
      () => null,
      (e) => e.message,
    );
    assert(missing?.includes('answered 404'), `open() took a 404: ${missing}`);
  });

  await step('axe-core runs under the UI\'s Content-Security-Policy and reports violations', async () => {
    await open(user, local('/done'));
    const clean = await checkAccessibility(user, 'harness-done');
    assert(Array.isArray(clean), 'axe-core gave no result');
    await open(user, local('/inaccessible'));
    const failure = await checkAccessibility(user, 'harness-inaccessible').then(
      () => null,
      (e) => e.message,
    );
    assert(failure !== null, 'a page with an unlabelled image and an empty button passed axe-core');
    for (const rule of ['image-alt', 'button-name']) {
      assert(failure.includes(rule), `the axe-core failure does not name ${rule}: ${failure}`);
    }
  });

  await step('axe-core also runs where the page\'s own JavaScript is off', async () => {
    const noScript = await newUser(browser, 'harness-no-js', { javaScriptEnabled: false });
    await open(noScript, local('/inaccessible'));
    const failure = await checkAccessibility(noScript, 'harness-no-js').then(
      () => null,
      (e) => e.message,
    );
    assert(failure?.includes('image-alt'), `axe-core without the page's JavaScript: ${failure}`);
    await noScript.context().close();
  });

  await step('an inline script refused by the policy is reported', async () => {
    const before = pageProblems(user);
    assert(before.length === 0, `the pages so far, and axe-core in them, broke the policy: ${before.join('; ')}`);
    await open(user, local('/inline'));
    await user.waitForTimeout(200);
    assert(!(await user.evaluate(() => window.ran === true)), 'the inline script ran despite the policy');
    const problems = pageProblems(user);
    assert(problems.some((p) => p.startsWith('CSP')), `no CSP violation was recorded: ${JSON.stringify(problems)}`);
  });
});
server.close();
