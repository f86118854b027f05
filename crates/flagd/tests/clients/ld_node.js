// Drives the official LaunchDarkly Node server-side SDK (`@launchdarkly/node-server-sdk`)
// against flagd.
//
// tests/third_party.rs runs this with NODE_PATH pointing at the node_modules that
// `cargo xtask deps` installs. It reads a plan as JSON on stdin and writes JSON lines on stdout:
// `{"ready": ...}` once it is waiting for the test to edit the flag file (only when the plan has
// a `watch`), then one result document, last. The SDK's log goes to stderr.
//
// Plan fields: sdk_key, base_uri, flags, contexts, default, watch {flag, context, expect,
// timeout}, timeout; the same meanings as in ld_python.py.

'use strict';

const ld = require('@launchdarkly/node-server-sdk');

function emit(document) {
  process.stdout.write(`${JSON.stringify(document)}\n`);
}

function readStdin() {
  return new Promise((resolve, reject) => {
    let text = '';
    process.stdin.setEncoding('utf8');
    process.stdin.on('data', (chunk) => {
      text += chunk;
    });
    process.stdin.on('end', () => resolve(JSON.parse(text)));
    process.stdin.on('error', reject);
  });
}

async function main() {
  const plan = await readStdin();
  // A hang anywhere must end the process so the test fails instead of blocking.
  setTimeout(() => {
    process.stderr.write('ld_node.js: timed out\n');
    process.exit(3);
  }, (plan.timeout || 20) * 1000).unref();

  const client = ld.init(plan.sdk_key, {
    baseUri: plan.base_uri,
    streamUri: plan.base_uri,
    eventsUri: plan.base_uri,
    stream: true,
    streamInitialReconnectDelay: 0.1,
    logger: ld.basicLogger({ level: 'warn', destination: (line) => process.stderr.write(`${line}\n`) }),
  });
  const started = Date.now();
  const result = { initialized: false };
  try {
    await client.waitForInitialization({ timeout: 5 });
    result.initialized = true;
  } catch (err) {
    result.error = String(err);
  }
  result.init_seconds = (Date.now() - started) / 1000;
  if (!result.initialized) {
    client.close();
    emit(result);
    return 1;
  }

  const detailOf = async (flag, context) => {
    const detail = await client.variationDetail(flag, context, plan.default);
    return {
      value: detail.value,
      // The SDK leaves the index out (undefined) where the other clients say null.
      variationIndex: detail.variationIndex ?? null,
      reason: detail.reason,
    };
  };

  result.evaluations = {};
  for (const flag of plan.flags) {
    result.evaluations[flag] = [];
    for (const context of plan.contexts) {
      result.evaluations[flag].push(await detailOf(flag, context));
    }
  }

  const { watch } = plan;
  if (watch) {
    // The SDK announces every change of the flag; wait for the one that gives the new value.
    const seen = new Promise((resolve) => {
      client.on(`update:${watch.flag}`, async () => {
        const seenAt = Date.now() / 1000;
        const value = await client.variation(watch.flag, watch.context, plan.default);
        if (JSON.stringify(value) === JSON.stringify(watch.expect)) {
          resolve(seenAt);
        }
      });
    });
    const timeout = new Promise((resolve) => {
      setTimeout(() => resolve(null), watch.timeout * 1000).unref();
    });
    emit({ ready: true, at: Date.now() / 1000 });
    const seenAt = await Promise.race([seen, timeout]);
    result.watch = {
      seen: seenAt !== null,
      seen_at: seenAt,
      after: await detailOf(watch.flag, watch.context),
    };
  }

  await client.flush();
  client.close();
  emit(result);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`ld_node.js: ${err && err.stack ? err.stack : err}\n`);
    process.exit(2);
  },
);
