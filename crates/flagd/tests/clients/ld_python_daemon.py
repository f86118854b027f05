"""Drives the official LaunchDarkly Python server-side SDK (`ldclient`) in daemon mode: it never
talks to flagd, and evaluates from the Redis that flagd writes into (`use_ldd=True` with the
SDK's own Redis feature store, its cache off so that every evaluation reads Redis).

tests/third_party.rs runs this with the venv that `cargo xtask deps` builds. Unlike the other
scripts it stays for several rounds: every line on stdin is one JSON command, and each command
is answered by one JSON line on stdout. The SDK's own logging goes to stderr, which the test
shows when it fails.

The first line is the plan:
  redis_url, prefix        where flagd writes, as `Redis.new_feature_store` takes them
  flags, contexts, default every flag is evaluated for every context; `default` is the caller's
                           default value
  timeout                  seconds after which the whole script gives up (a hang must fail)
  big_segments             optional: read big segments from the same Redis and prefix with
                           the SDK's own Redis big-segment store
It is answered with {"initialized": ..., "evaluations": {flag: [detail per context]}}.

Then, any number of:
  {"evaluate": true}       answered with {"evaluations": ...}, as above
  {"watch": {flag, context, expect, timeout}}
                           answered with {"ready": true} at once, then, once the flag's value
                           for that context became `expect` (or the timeout passed), with
                           {"watch": {"seen", "seen_at", "after"}}; daemon mode has no change
                           listeners, so the flag is evaluated every 10 ms
  {"close": true}          closes the client and ends, answered with {"closed": true}
"""

import json
import logging
import signal
import sys
import time


def emit(document):
    sys.stdout.write(json.dumps(document) + "\n")
    sys.stdout.flush()


def main():
    plan = json.loads(sys.stdin.readline())
    # A hang anywhere must end the process so the test fails instead of blocking; SIGALRM's
    # default action is to exit.
    signal.alarm(int(plan.get("timeout", 60)))
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)

    from ldclient import Context, LDClient
    from ldclient.config import Config
    from ldclient.feature_store import CacheConfig
    from ldclient.integrations import Redis

    store = Redis.new_feature_store(
        url=plan["redis_url"],
        prefix=plan["prefix"],
        caching=CacheConfig.disabled(),
    )
    big_segments = None
    if plan.get("big_segments"):
        from ldclient.config import BigSegmentsConfig

        big_segments = BigSegmentsConfig(
            store=Redis.new_big_segment_store(url=plan["redis_url"], prefix=plan["prefix"])
        )
    # No SDK key is needed: in daemon mode the SDK reads Redis only, and sends no events here.
    config = Config(
        "sdk-daemon-mode",
        use_ldd=True,
        feature_store=store,
        send_events=False,
        big_segments=big_segments,
    )
    client = LDClient(config, start_wait=5)

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

    def evaluations():
        return {flag: [detail_of(flag, context) for context in contexts] for flag in plan["flags"]}

    emit({"initialized": client.is_initialized(), "evaluations": evaluations()})

    for line in sys.stdin:
        command = json.loads(line)
        if command.get("evaluate"):
            emit({"evaluations": evaluations()})
        elif command.get("watch"):
            watch = command["watch"]
            context = Context.from_dict(watch["context"])
            emit({"ready": True, "at": time.time()})
            deadline = time.time() + float(watch["timeout"])
            seen_at = None
            while time.time() < deadline:
                if client.variation(watch["flag"], context, plan["default"]) == watch["expect"]:
                    seen_at = time.time()
                    break
                time.sleep(0.01)
            emit({
                "watch": {
                    "seen": seen_at is not None,
                    "seen_at": seen_at,
                    "after": detail_of(watch["flag"], context),
                }
            })
        elif command.get("close"):
            break
        else:
            raise SystemExit(f"unknown command {command!r}")

    client.close()
    emit({"closed": True})
    return 0


if __name__ == "__main__":
    sys.exit(main())
