"""Drives the OpenFeature Python SDK with the OFREP provider against flagd.

tests/third_party.rs runs this with the venv that `cargo xtask deps` builds. It reads a plan as
JSON on stdin and prints one result document on stdout.

Plan fields:
  base_url, sdk_key   flagd's base URL and the key sent as `Authorization: Bearer KEY`
  cases               [{flag, type, default, context}], where type is boolean, string,
                      integer, float or object, and context is {"targetingKey": ..., attrs...}
  timeout             seconds after which the whole script gives up (a hang must fail)

Result: {"results": [{value, variant, reason, error_code} per case], "unauthenticated": {...}}
where "unauthenticated" is the first case resolved by a client that presents no key.
"""

import json
import logging
import signal
import sys


def plain(value):
    """Enums (reasons, error codes) as their string values; None stays None."""
    return getattr(value, "value", value)


def resolve(client, case):
    from openfeature.evaluation_context import EvaluationContext

    attributes = dict(case["context"])
    targeting_key = attributes.pop("targetingKey", None)
    context = EvaluationContext(targeting_key, attributes)
    method = getattr(client, f"get_{case['type']}_details")
    details = method(case["flag"], case["default"], context)
    return {
        "value": details.value,
        "variant": details.variant,
        "reason": plain(details.reason),
        "error_code": plain(details.error_code),
        "error_message": details.error_message,
    }


def main():
    plan = json.load(sys.stdin)
    # A hang must end the process so the test fails instead of blocking.
    signal.alarm(int(plan.get("timeout", 20)))
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)

    from openfeature import api
    from openfeature.contrib.provider.ofrep import OFREPProvider

    key = plan["sdk_key"]
    api.set_provider_and_wait(
        OFREPProvider(
            plan["base_url"],
            headers_factory=lambda: {"Authorization": f"Bearer {key}"},
            timeout=3.0,
        )
    )
    client = api.get_client()
    result = {"results": [resolve(client, case) for case in plan["cases"]]}

    # The same flag through a provider that sends no key: flagd must refuse it.
    api.set_provider_and_wait(OFREPProvider(plan["base_url"], timeout=3.0), domain="no-key")
    result["unauthenticated"] = resolve(api.get_client(domain="no-key"), plan["cases"][0])

    api.shutdown()
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
