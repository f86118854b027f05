"""Drives the official LaunchDarkly Python server-side SDK (`ldclient`) against flagd.

tests/third_party.rs runs this with the venv that `cargo xtask deps` builds. It reads a plan as
JSON on stdin and writes JSON lines on stdout: `{"ready": ...}` once it is waiting for the test
to edit the flag file (only when the plan has a `watch`), then one result document, last.
The SDK's own logging goes to stderr, which the test shows when it fails.

Plan fields:
  sdk_key, base_uri        the key to present and flagd's base URL (used for all three URIs)
  mode                     "stream" or "poll"
  poll_interval            seconds between polls in poll mode
  flags, contexts, default every flag is evaluated for every context; `default` is the caller's
                           default value
  watch                    optional {flag, context, expect, timeout}: wait for the flag's value
                           for that context to become `expect`, and report when it did
  events                   optional {track, metric_value}: send an identify and `track` custom
                           events, then flush
  timeout                  seconds after which the whole script gives up (a hang must fail)
"""

import json
import logging
import signal
import sys
import threading
import time


def emit(document):
    sys.stdout.write(json.dumps(document) + "\n")
    sys.stdout.flush()


def main():
    plan = json.load(sys.stdin)
    # A hang anywhere (a client that never initializes, a change that never comes) must end
    # the process so the test fails instead of blocking; SIGALRM's default action is to exit.
    signal.alarm(int(plan.get("timeout", 20)))
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)

    from ldclient import Context, LDClient
    from ldclient.config import Config

    base = plan["base_uri"]
    config = Config(
        plan["sdk_key"],
        base_uri=base,
        stream_uri=base,
        events_uri=base,
        stream=plan["mode"] == "stream",
        initial_reconnect_delay=0.1,
        # Events are flushed explicitly before the script ends.
        flush_interval=60,
    )
    if plan["mode"] == "poll":
        # The SDK raises any poll interval below 30 s to 30 s, which would make a test wait
        # half a minute for the second poll; set the private field it reads behind its back.
        config._Config__poll_interval = float(plan["poll_interval"])

    started = time.time()
    client = LDClient(config, start_wait=5)
    result = {
        "initialized": client.is_initialized(),
        "init_seconds": time.time() - started,
    }
    if not result["initialized"]:
        client.close()
        emit(result)
        return 1

    contexts = []
    for raw in plan["contexts"]:
        context = Context.from_dict(raw)
        if not context.valid:
            raise SystemExit(f"invalid context {raw!r}: {context.error}")
        contexts.append(context)

    def detail_of(flag, context):
        detail = client.variation_detail(flag, context, plan["default"])
        return {
            "value": detail.value,
            "variationIndex": detail.variation_index,
            "reason": detail.reason,
        }

    result["evaluations"] = {
        flag: [detail_of(flag, context) for context in contexts] for flag in plan["flags"]
    }

    watch = plan.get("watch")
    if watch:
        context = Context.from_dict(watch["context"])
        seen = threading.Event()
        found = {}

        def on_change(change):
            if change.new_value == watch["expect"] and not seen.is_set():
                found["seen_at"] = time.time()
                seen.set()

        client.flag_tracker.add_flag_value_change_listener(watch["flag"], context, on_change)
        # The listener is in place before the test is told to edit the file, so no change can
        # be missed.
        emit({"ready": True, "at": time.time()})
        result["watch"] = {
            "seen": seen.wait(float(watch["timeout"])),
            "seen_at": found.get("seen_at"),
            "after": detail_of(watch["flag"], context),
        }

    events = plan.get("events")
    if events:
        context = contexts[0]
        client.identify(context)
        for i in range(int(events["track"])):
            client.track("checkout-completed", context, {"order": i}, events["metric_value"])
        client.flush()

    # close() stops the event processor, which sends whatever is still queued and waits for it.
    client.close()
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
