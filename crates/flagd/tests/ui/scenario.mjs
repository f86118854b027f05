// The admin web UI end to end in Chromium, in the order a person would use it: sign in, find
// every section, create a flag, target it with a rule of two clauses serving a percentage
// rollout, see the native API follow within a second of the save, kill it from the list while a
// second signed-in user's list updates live, kill another flag without JavaScript through the
// confirmation page, resolve a conflicting edit of two users, read the change in the audit log,
// and sign out. Every page visited is screenshotted and checked with axe-core.
//
// Run by crates/flagd/tests/ui_browser.rs; see harness.mjs for the environment it sets.

import {
  LIVE_LIMIT_MS,
  admin,
  assert,
  assertNoPageProblems,
  evaluate,
  expectHeading,
  log,
  main,
  need,
  newUser,
  open,
  settled,
  signIn,
  step,
  storedFlag,
  submit,
  seenWithin,
  visited,
  watch,
  where,
} from './harness.mjs';

const ENV = need('FLAGD_ENV');
const ENV_NAME = need('FLAGD_ENV_NAME');
const ENV_COLOR = need('FLAGD_ENV_COLOR');
const LIST = `/ui/envs/${ENV}/flags`;

/** The flag made through the UI. */
const FLAG = 'new-checkout';
const FLAG_NAME = 'New checkout';
const DETAIL = `${LIST}/${FLAG}`;

/** A flag made through the admin API, killed without JavaScript. */
const OTHER = 'legacy-banner';

/** A context both clauses of the rule match. */
const MATCHING = { kind: 'user', key: 'alice', email: 'alice@example.com', country: 'de' };

await main('scenario', async (browser) => {
  await admin('PUT', `/environments/${ENV}/flags/${OTHER}`, {
    key: OTHER,
    on: true,
    variations: [true, false],
    offVariation: 1,
    fallthrough: { variation: 0 },
    salt: OTHER,
  });
  const alice = await newUser(browser, 'alice');

  await step('not signed in, /ui/ leads to the sign-in page', async () => {
    await open(alice, '/ui', { redirectedTo: '/ui/sign-in', name: 'sign-in' });
    await expectHeading(alice, 'Sign in');
  });

  await step('a wrong key is refused with the reason', async () => {
    await alice.getByLabel('Admin key').fill('flagd-admin-not-a-key');
    const answer = await submit(alice, alice.getByRole('button', { name: 'Sign in' }), {
      name: 'sign-in-refused',
    });
    assert(answer.post === 401, `a wrong key answered ${answer.post}, expected 401`);
    const text = await alice.locator('body').innerText();
    assert(text.includes('unknown or revoked key'), 'the page does not say "unknown or revoked key"');
  });

  await step('sign in with the admin key', async () => {
    await signIn(alice, { name: 'flags' });
    await expectHeading(alice, 'Flags');
  });

  await step('the layout: skip link, environment banner in its colour, main navigation', async () => {
    const skip = alice.getByRole('link', { name: 'Skip to content' });
    assert((await skip.getAttribute('href')) === '#main', 'the skip link does not lead to #main');
    assert((await alice.locator('main#main').count()) === 1, 'there is no <main id="main">');
    const label = `${ENV_NAME} (${ENV})`;
    const banner = alice.getByRole('banner').filter({ hasText: label });
    assert((await banner.count()) >= 1, `no banner names the environment as "${label}"`);
    const background = await alice.getByText(label, { exact: false }).first().evaluate((element) => {
      for (let at = element; at; at = at.parentElement) {
        const colour = getComputedStyle(at).backgroundColor;
        if (colour !== 'rgba(0, 0, 0, 0)' && colour !== 'transparent') return colour;
      }
      return 'none';
    });
    const [r, g, b] = [1, 3, 5].map((i) => parseInt(ENV_COLOR.slice(i, i + 2), 16));
    assert(
      background === `rgb(${r}, ${g}, ${b})`,
      `the banner's background is ${background}, not the environment's colour ${ENV_COLOR}`,
    );
    const nav = alice.getByRole('navigation', { name: 'Main' });
    for (const link of ['Flags', 'Segments', 'Audit log', 'Evaluate', 'Environment settings']) {
      assert((await nav.getByRole('link', { name: link, exact: true }).count()) === 1, `the main navigation has no link "${link}"`);
    }
    await alice.getByLabel('Environment', { exact: true }).waitFor();
    await alice.getByRole('button', { name: 'Switch' }).waitFor();
    await alice.getByRole('button', { name: 'Sign out' }).waitFor();
  });

  await step('every section of the navigation opens with its heading', async () => {
    const sections = [
      ['Segments', 'segments'],
      ['Audit log', 'audit'],
      ['Evaluate', 'evaluate'],
      ['Environment settings', 'settings'],
      ['Flags', 'flags-again'],
    ];
    for (const [link, name] of sections) {
      await follow(alice, alice.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: link, exact: true }));
      await expectHeading(alice, link);
      await visited(alice, name);
    }
  });

  await step('create a boolean flag', async () => {
    await alice.getByLabel('New flag key').fill(FLAG);
    await alice.getByLabel('Name', { exact: true }).fill(FLAG_NAME);
    await choose(alice.getByLabel('Kind', { exact: true }), /^boolean$/i);
    const answer = await submit(alice, alice.getByRole('button', { name: 'Create flag' }), { name: 'flag-created' });
    assert(answer.post === 303, `creating the flag answered ${answer.post}, expected 303`);
    assert(new URL(alice.url()).pathname === DETAIL, `creating the flag led to ${where(alice)}, not ${DETAIL}`);
    await expectHeading(alice, FLAG_NAME);
    for (const section of ['State', 'Targeting', 'Overrides', 'Raw JSON', 'Audit log']) {
      const heading = alice.getByRole('heading', { level: 2, name: section, exact: true });
      assert((await heading.count()) === 1, `the detail page has no <h2> "${section}"`);
    }
    const stored = await storedFlag(FLAG);
    assert(JSON.stringify(stored.doc.variations) === '[true,false]', `stored variations: ${JSON.stringify(stored.doc.variations)}`);
    if (!stored.doc.on) {
      const turnedOn = await submit(alice, alice.getByRole('button', { name: 'Turn on', exact: true }));
      assert(turnedOn.post === 303, `turning the flag on answered ${turnedOn.post}`);
    }
    assert((await storedFlag(FLAG)).doc.on === true, 'the flag is not on');
    const before = await evaluate(FLAG, MATCHING);
    assert(before.reason?.kind === 'FALLTHROUGH', `before any rule: ${JSON.stringify(before)}`);
  });

  let saved;
  let ruleServed;
  await step('a rule with two clauses serving a percentage rollout; a total other than 100% is refused', async () => {
    const versionBefore = (await storedFlag(FLAG)).version;
    await submit(alice, alice.getByRole('button', { name: 'Add rule', exact: true }));
    let rule = ruleGroup(alice, 1);
    while ((await rule.getByLabel('Attribute', { exact: true }).count()) < 2) {
      const clauses = await rule.getByLabel('Attribute', { exact: true }).count();
      await submit(alice, rule.getByRole('button', { name: 'Add clause' }));
      rule = ruleGroup(alice, 1);
      const now = await rule.getByLabel('Attribute', { exact: true }).count();
      assert(now > clauses, `"Add clause" left Rule 1 with ${now} clause(s)`);
    }
    await fillClause(rule, 0, { attribute: 'email', operator: /^ends ?with$/i, values: '@example.com' });
    await fillClause(rule, 1, { attribute: 'country', operator: /^in$/i, values: 'de\nfr' });
    await servePercentageRollout(rule);
    const weightTrue = rule.getByLabel(/^Weight of\b.*\btrue\b.*\(%\)/);
    const weightFalse = rule.getByLabel(/^Weight of\b.*\bfalse\b.*\(%\)/);
    await weightTrue.fill('30');
    await weightFalse.fill('60');
    await rule.getByText(/Total:\s*90(\.0+)?\s*%/).waitFor({ timeout: 2000 }).catch(() => {
      throw new Error('the rollout editor does not show the live "Total: 90%"');
    });
    await visited(alice, 'rule-editing');

    const refused = await submit(alice, alice.getByRole('button', { name: 'Save changes' }), { name: 'rule-refused' });
    assert(refused.post !== 303 && refused.post >= 400, `saving a 90% rollout answered ${refused.post}`);
    const error = alice.getByRole('alert').filter({ hasText: /90/ });
    assert((await error.count()) >= 1, 'no role="alert" error names the total of 90%');
    assert((await storedFlag(FLAG)).version === versionBefore, 'the refused rollout was stored');

    rule = ruleGroup(alice, 1);
    assert((await rule.count()) === 1, 'the refused save lost the pending rule');
    await rule.getByLabel(/^Weight of\b.*\bfalse\b.*\(%\)/).fill('70');
    await rule.getByText(/Total:\s*100(\.0+)?\s*%/).waitFor({ timeout: 2000 }).catch(() => {
      throw new Error('the rollout editor does not show the live "Total: 100%"');
    });
    ruleServed = watch('the rule at POST /v1/evaluate', async () => {
      const answer = await evaluate(FLAG, MATCHING);
      return answer.reason?.kind === 'RULE_MATCH' && answer.reason.ruleIndex === 0;
    });
    saved = await submit(alice, alice.getByRole('button', { name: 'Save changes' }), { name: 'rule-saved' });
    assert(saved.post === 303, `saving the rule answered ${saved.post}, expected 303`);
  });

  await step('the native API serves the rule within a second of the save', async () => {
    const took = await seenWithin('the rule at POST /v1/evaluate', ruleServed, saved.postedAt, LIVE_LIMIT_MS);
    log(`  the native API served the rule ${took} ms after the save`);
  });

  await step('the rule is stored as LaunchDarkly clauses and weights', async () => {
    const stored = (await storedFlag(FLAG)).doc;
    const [r0] = stored.rules ?? [];
    assert(stored.rules?.length === 1 && r0.clauses?.length === 2, `stored rules: ${JSON.stringify(stored.rules)}`);
    const [email, country] = r0.clauses;
    assert(
      email.attribute === 'email' && email.op === 'endsWith' && JSON.stringify(email.values) === '["@example.com"]',
      `stored first clause: ${JSON.stringify(email)}`,
    );
    assert(
      country.attribute === 'country' && country.op === 'in' && JSON.stringify(country.values) === '["de","fr"]',
      `stored second clause: ${JSON.stringify(country)}`,
    );
    const weights = (r0.rollout?.variations ?? []).map((v) => [v.variation, v.weight]);
    assert(JSON.stringify(weights) === '[[0,30000],[1,70000]]', `stored rollout: ${JSON.stringify(r0.rollout)}`);
    const elsewhere = await evaluate(FLAG, { ...MATCHING, country: 'us' });
    assert(elsewhere.reason?.kind === 'FALLTHROUGH', `a context outside the rule: ${JSON.stringify(elsewhere)}`);
  });

  const bob = await newUser(browser, 'bob');
  let bobNavigations = 0;
  await step('a second user signs in separately and watches the flag list', async () => {
    const live = bob.waitForResponse((r) => new URL(r.url()).pathname === `/ui/envs/${ENV}/live`, { timeout: 10_000 });
    await signIn(bob, { name: 'flags-second-user' });
    const stream = await live.catch(() => {
      throw new Error(`the list page did not open /ui/envs/${ENV}/live`);
    });
    assert(stream.status() === 200, `/ui/envs/${ENV}/live answered ${stream.status()}`);
    bob.on('framenavigated', (frame) => {
      if (frame === bob.mainFrame()) bobNavigations += 1;
    });
  });

  let killed;
  let bobSawKill;
  await step('kill the flag from the list; the confirmation names the environment', async () => {
    await follow(alice, alice.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Flags', exact: true }));
    const row = flagRow(alice, FLAG);
    await row.getByRole('button', { name: /^Kill\b/ }).click();
    const dialog = alice.getByRole('dialog');
    await dialog.waitFor({ timeout: 2000 }).catch(() => {
      throw new Error('clicking Kill opened no <dialog> (with JavaScript on)');
    });
    const asked = await dialog.innerText();
    assert(asked.includes(ENV_NAME), `the confirmation does not name the environment: ${JSON.stringify(asked)}`);
    await visited(alice, 'kill-dialog');
    bobSawKill = watch('"Killed" in the second user\'s list', async () =>
      /Killed/.test(await flagRow(bob, FLAG).innerText({ timeout: 100 }).catch(() => '')),
    );
    killed = await submit(alice, dialog.getByRole('button', { name: `Kill ${FLAG} in ${ENV_NAME}` }), { name: 'flags-killed' });
    assert(killed.post === 303, `the kill answered ${killed.post}, expected 303`);
    const state = await flagRow(alice, FLAG).innerText();
    assert(/Killed/.test(state), `after the kill the row reads ${JSON.stringify(state)}`);
    await flagRow(alice, FLAG).getByRole('button', { name: /^Unkill\b/ }).waitFor();
  });

  await step('the second user\'s list shows the kill within a second, without reloading', async () => {
    const took = await seenWithin('"Killed" in the second user\'s list', bobSawKill, killed.postedAt, LIVE_LIMIT_MS);
    log(`  the second user's list showed the kill ${took} ms after it`);
    assert(bobNavigations === 0, `the second user's page navigated ${bobNavigations} time(s) instead of updating in place`);
    await visited(bob, 'flags-second-user-live');
    const answer = await evaluate(FLAG, MATCHING);
    assert(answer.reason?.killed === true && answer.value === false, `the killed flag evaluates to ${JSON.stringify(answer)}`);
  });

  await step('without JavaScript, Kill leads to a confirmation page naming the environment', async () => {
    const carol = await newUser(browser, 'no-js', { javaScriptEnabled: false });
    await signIn(carol);
    const asked = await submit(carol, flagRow(carol, OTHER).getByRole('button', { name: /^Kill\b/ }), { name: 'kill-confirm' });
    const confirm = `${LIST}/${OTHER}/kill`;
    assert(new URL(carol.url()).pathname === confirm, `Kill without JavaScript led to ${where(carol)}, not ${confirm}`);
    assert(asked.final === 200, `the confirmation page answered ${asked.final}`);
    const text = await carol.locator('main').innerText();
    assert(text.includes(ENV_NAME), `the confirmation page does not name the environment: ${JSON.stringify(text)}`);
    const { killed: before } = await admin('GET', `/environments/${ENV}/killed`);
    assert(!before.includes(OTHER), 'asking to confirm already killed the flag');
    const done = await submit(carol, carol.getByRole('button', { name: `Kill ${OTHER} in ${ENV_NAME}` }));
    assert(done.post === 303, `confirming the kill answered ${done.post}`);
    assert(/Killed/.test(await flagRow(carol, OTHER).innerText()), `${OTHER} is not shown killed`);
    const { killed: after } = await admin('GET', `/environments/${ENV}/killed`);
    assert(after.includes(OTHER), `${OTHER} is not in the stored kill set: ${JSON.stringify(after)}`);
    await carol.context().close();
  });

  await step('keyboard only: Tab reaches Unkill and Kill, Enter presses them, the dialog answers keys', async () => {
    await open(alice, LIST);
    const killed = async () => (await admin('GET', `/environments/${ENV}/killed`)).killed.includes(FLAG);
    assert(await killed(), `${FLAG} should be killed before this step`);
    await tabTo(alice, flagRow(alice, FLAG).getByRole('button', { name: /^Unkill\b/ }));
    await Promise.all([alice.waitForNavigation({ waitUntil: 'load' }), alice.keyboard.press('Enter')]);
    await settled(alice);
    assert(!(await killed()), 'Enter on Unkill did not unkill the flag');

    await tabTo(alice, flagRow(alice, FLAG).getByRole('button', { name: /^Kill\b/ }));
    await alice.keyboard.press('Enter');
    const dialog = alice.getByRole('dialog');
    await dialog.waitFor();
    assert((await dialog.innerText()).includes(ENV_NAME), 'the kill dialog does not name the environment');
    // The dialog starts on Cancel, the safe answer; Shift+Tab goes to the kill itself.
    assert(await dialog.getByRole('button', { name: 'Cancel' }).evaluate((el) => el === document.activeElement), 'the dialog does not start on Cancel');
    await alice.keyboard.press('Shift+Tab');
    const confirm = dialog.getByRole('button', { name: `Kill ${FLAG} in ${ENV_NAME}` });
    assert(await confirm.evaluate((el) => el === document.activeElement), 'Shift+Tab did not reach the kill button');
    await Promise.all([alice.waitForNavigation({ waitUntil: 'load' }), alice.keyboard.press('Enter')]);
    await settled(alice);
    assert(await killed(), 'Enter on the dialog\'s kill button did not kill the flag');
    await visited(alice, 'keyboard-killed');
  });

  await step('two users edit the flag at once: a conflict page, then "Overwrite with mine"', async () => {
    bobNavigations = 0;
    await open(alice, DETAIL, { name: 'flag-detail' });
    await open(bob, DETAIL);
    await ruleGroup(bob, 1).getByLabel('Description').fill('Rule by B');
    await ruleGroup(alice, 1).getByLabel('Description').fill('Rule by A');
    const warning = watch('"This flag changed since you opened it" on the second page', async () =>
      (await bob.getByRole('alert').filter({ hasText: 'This flag changed since you opened it' }).count()) > 0,
    );
    const first = await submit(alice, alice.getByRole('button', { name: 'Save changes' }));
    assert(first.post === 303, `the first save answered ${first.post}`);
    const theirs = (await storedFlag(FLAG)).version;
    const warned = await seenWithin('the second page\'s warning', warning, first.postedAt, LIVE_LIMIT_MS);
    log(`  the second page warned ${warned} ms after the first save`);
    await bob.getByRole('button', { name: 'Reload' }).waitFor();
    assert((await ruleGroup(bob, 1).getByLabel('Description').inputValue()) === 'Rule by B', 'the warning threw away the pending edit');
    await visited(bob, 'flag-changed-warning');

    const conflict = await submit(bob, bob.getByRole('button', { name: 'Save changes' }), { name: 'conflict' });
    assert(conflict.post === 409, `the conflicting save answered ${conflict.post}, expected 409`);
    const text = await bob.locator('main').innerText();
    assert(/This flag was changed by .+ at .+ while you were editing/.test(text), 'the conflict page does not say who changed the flag, and when');
    assert(text.includes('Rule by A') && text.includes('Rule by B'), 'the conflict page does not show both versions');
    assert((await storedFlag(FLAG)).version === theirs, 'the conflicting save was stored');
    const discard = bob.getByRole('link', { name: 'Discard mine' });
    assert(new URL(await discard.getAttribute('href'), need('FLAGD_URL')).pathname === DETAIL, '"Discard mine" does not lead to the flag');

    const overwritten = await submit(bob, bob.getByRole('button', { name: 'Overwrite with mine' }));
    assert(overwritten.post === 303, `"Overwrite with mine" answered ${overwritten.post}`);
    const stored = await storedFlag(FLAG);
    assert(stored.version === theirs + 1, `after the overwrite the version is ${stored.version}, expected ${theirs + 1}`);
    assert(stored.doc.rules?.[0]?.description === 'Rule by B', `stored description: ${JSON.stringify(stored.doc.rules?.[0]?.description)}`);
    assert(stored.doc.rules[0].clauses?.length === 2, 'the overwrite lost a clause');
  });

  await step('the flag\'s audit log shows the rule addition as a path diff, newest first', async () => {
    await open(alice, DETAIL);
    await follow(alice, alice.locator(`main a[href$="/flags/${FLAG}/audit"]`).first());
    assert(new URL(alice.url()).pathname === `${DETAIL}/audit`, `the flag's audit link led to ${where(alice)}`);
    await expectHeading(alice, 'Audit log');
    await visited(alice, 'flag-audit');
    const cells = alice.getByRole('main').locator(':is(td, th, dt, dd)').filter({ hasText: /rules\[0\]/ });
    assert((await cells.count()) >= 1, 'no table or definition-list entry names a path under rules[0]');
    const text = await alice.getByRole('main').innerText();
    assert(text.includes('@example.com') && text.includes('country'), 'the rule addition\'s diff does not show its clauses');
    const newest = text.indexOf('Rule by B');
    const added = text.indexOf('@example.com');
    assert(newest >= 0 && newest < added, 'the overwrite is not listed before the rule addition');
  });

  await step('the other pages: an override, a big segment and its members, an evaluation, the settings', async () => {
    await open(alice, DETAIL);
    await alice.getByLabel('Context key', { exact: true }).fill('vip-user');
    await choose(alice.getByLabel('Variation', { exact: true }), /false/);
    const added = await submit(alice, alice.getByRole('button', { name: 'Add override' }), { name: 'override-added' });
    assert(added.post === 303, `adding an override answered ${added.post}`);
    const overrides = await admin('GET', `/environments/${ENV}/flags/${FLAG}/overrides`);
    assert(JSON.stringify(overrides).includes('vip-user'), `the override was not stored: ${JSON.stringify(overrides)}`);

    await open(alice, `/ui/envs/${ENV}/segments`, { name: 'segments-list' });
    await alice.getByLabel('New segment key').fill('beta-testers');
    await alice.getByLabel('Big segment').check();
    const created = await submit(alice, alice.getByRole('button', { name: 'Create segment' }), { name: 'segment-created' });
    assert(created.post === 303, `creating the segment answered ${created.post}`);
    await alice.getByLabel('Members file').setInputFiles({
      name: 'members.txt',
      mimeType: 'text/plain',
      buffer: Buffer.from('user-1\nuser-2\nuser-3\n'),
    });
    await Promise.all([
      alice.waitForNavigation({ waitUntil: 'load' }),
      alice.getByRole('button', { name: 'Upload members' }).click(),
    ]);
    await settled(alice);
    // The flash message; the form's own <output> (a status too) is empty after the reload.
    const said = alice.getByRole('status').filter({ hasText: /members? added/ });
    assert((await said.count()) === 1, 'no message says how many members were added');
    const uploaded = await said.innerText();
    assert(uploaded.includes('3 members added'), `the upload said ${JSON.stringify(uploaded)}`);
    await visited(alice, 'segment-uploaded');
    const member = await admin('GET', `/environments/${ENV}/segments/beta-testers/members/user-2`);
    assert(member.member === 'included', `user-2 is not a member: ${JSON.stringify(member)}`);

    await open(alice, `/ui/envs/${ENV}/evaluate`);
    await alice.getByLabel('Context JSON').fill('{"kind":"user","key":"vip-user"}');
    await choose(alice.getByLabel('Flag', { exact: true }), new RegExp(`^${FLAG}$`));
    await Promise.all([
      alice.waitForNavigation({ waitUntil: 'load' }),
      alice.getByRole('button', { name: 'Evaluate', exact: true }).click(),
    ]);
    await settled(alice);
    const raw = JSON.parse(await alice.locator('#raw-result').innerText());
    const api = await evaluate(FLAG, { kind: 'user', key: 'vip-user' });
    assert(JSON.stringify(raw) === JSON.stringify(api), `the page showed ${JSON.stringify(raw)}, the API answered ${JSON.stringify(api)}`);
    await visited(alice, 'evaluated');

    await open(alice, `/ui/envs/${ENV}/settings`, { name: 'settings' });
  });

  await step('sign out; pages lead to the sign-in page again, and the other session lives on', async () => {
    const out = await submit(alice, alice.getByRole('button', { name: 'Sign out' }));
    assert(out.post === 303, `signing out answered ${out.post}`);
    await expectHeading(alice, 'Sign in');
    await open(alice, LIST, { redirectedTo: '/ui/sign-in' });
    await open(bob, LIST);
    await expectHeading(bob, 'Flags');
  });

  await step('no page had a script error or broke its Content-Security-Policy', async () => {
    assertNoPageProblems();
  });
});

/** Follows a link and waits for the page it opens. */
async function follow(page, link) {
  const [response] = await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), link.click()]);
  assert(response?.status() === 200, `following a link to ${where(page)} answered ${response?.status()}`);
  await settled(page);
}

/**
 * Presses Tab from the top of the page until `target` has the focus, and checks that the
 * focus shows (an outline).
 */
async function tabTo(page, target) {
  await page.evaluate(() => document.activeElement?.blur());
  for (let presses = 0; presses < 80; presses += 1) {
    await page.keyboard.press('Tab');
    if (await target.evaluate((el) => el === document.activeElement)) {
      const outline = await target.evaluate((el) => getComputedStyle(el).outlineStyle);
      assert(outline !== 'none', 'the focused control shows no focus outline');
      return;
    }
  }
  throw new Error(`Tab never reached ${target}`);
}

/** The `<fieldset>` of rule `n`, by its legend "Rule n". */
function ruleGroup(page, n) {
  return page.getByRole('group', { name: new RegExp(`^Rule ${n}\\b`) }).first();
}

/** The flag list's row of flag `key`. */
function flagRow(page, key) {
  return page.getByRole('row').filter({ has: page.getByRole('link', { name: new RegExp(`\\b${key}\\b`) }) });
}

/** Fills clause `index` of a rule. */
async function fillClause(rule, index, { attribute, operator, values }) {
  const kind = rule.getByLabel('Context kind', { exact: true }).nth(index);
  if ((await kind.inputValue()) === '') await kind.fill('user');
  await rule.getByLabel('Attribute', { exact: true }).nth(index).fill(attribute);
  await choose(rule.getByLabel('Operator', { exact: true }).nth(index), operator);
  await rule.getByLabel('Values', { exact: true }).nth(index).fill(values);
}

/** Picks "Percentage rollout" as what a rule serves: a radio button, an option or a button. */
async function servePercentageRollout(rule) {
  const radio = rule.getByRole('radio', { name: /Percentage rollout/i });
  if ((await radio.count()) > 0) {
    await radio.first().check();
  } else {
    const selects = rule.getByRole('combobox');
    let chosen = false;
    for (let i = 0; i < (await selects.count()) && !chosen; i += 1) {
      const labels = await selects.nth(i).locator('option').allInnerTexts();
      if (labels.some((l) => /Percentage rollout/i.test(l))) {
        await choose(selects.nth(i), /Percentage rollout/i);
        chosen = true;
      }
    }
    if (!chosen) {
      const button = rule.getByRole('button', { name: /Percentage rollout/i });
      assert((await button.count()) > 0, 'Rule 1 offers no "Percentage rollout" to serve');
      await submit(rule.page(), button.first());
    }
  }
  await rule
    .getByLabel(/^Weight of\b/)
    .first()
    .waitFor({ state: 'visible', timeout: 2000 })
    .catch(() => {
      throw new Error('after choosing "Percentage rollout" no "Weight of {variation} (%)" input is shown');
    });
}

/** Selects the option of `select` whose text or value matches `pattern`. */
async function choose(select, pattern) {
  const options = await select
    .locator('option')
    .evaluateAll((all) => all.map((o) => ({ value: o.value, label: (o.label || o.textContent).trim() })));
  const hit = options.find((o) => pattern.test(o.label) || pattern.test(o.value));
  assert(hit, `no option matches ${pattern}; the options: ${options.map((o) => o.label).join(', ')}`);
  await select.selectOption({ value: hit.value });
}
