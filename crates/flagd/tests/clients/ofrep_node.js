// Drives the OpenFeature Node server SDK with `@openfeature/ofrep-provider` against flagd.
//
// tests/third_party.rs runs this with NODE_PATH pointing at the node_modules that
// `cargo xtask deps` installs. It reads a plan as JSON on stdin and prints one result document.
//
// Plan fields: base_url, sdk_key (sent as `X-API-Key: KEY`, the other form flagd accepts from
// OFREP clients; ofrep_python.py sends a bearer token), cases [{flag, type, default, context}]
// with type boolean, string, number or object, timeout.
// Result: {"results": [{value, variant, reason, error_code} per case]}.

'use strict';

const { OpenFeature } = require('@openfeature/server-sdk');
const { OFREPProvider } = require('@openfeature/ofrep-provider');

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

const METHODS = {
  boolean: 'getBooleanDetails',
  string: 'getStringDetails',
  number: 'getNumberDetails',
  object: 'getObjectDetails',
};

async function main() {
  const plan = await readStdin();
  // A hang anywhere must end the process so the test fails instead of blocking.
  setTimeout(() => {
    process.stderr.write('ofrep_node.js: timed out\n');
    process.exit(3);
  }, (plan.timeout || 20) * 1000).unref();

  await OpenFeature.setProviderAndWait(
    new OFREPProvider({
      baseUrl: plan.base_url,
      headers: [['X-API-Key', plan.sdk_key]],
      timeoutMs: 3000,
    }),
  );
  const client = OpenFeature.getClient();
  const results = [];
  for (const { flag, type, default: fallback, context } of plan.cases) {
    const details = await client[METHODS[type]](flag, fallback, context);
    results.push({
      value: details.value,
      variant: details.variant ?? null,
      reason: details.reason ?? null,
      error_code: details.errorCode ?? null,
      error_message: details.errorMessage ?? null,
    });
  }
  await OpenFeature.close();
  process.stdout.write(`${JSON.stringify({ results })}\n`);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`ofrep_node.js: ${err && err.stack ? err.stack : err}\n`);
    process.exit(2);
  },
);
