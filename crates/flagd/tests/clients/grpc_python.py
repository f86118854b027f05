"""Drives flagd's gRPC service with Python's grpcio: the standard health check, a reflection
listing through the grpc_reflection.v1alpha client stubs, and Evaluate through stubs that
grpcio-tools generates here, now, from proto/flags/v1/evaluator.proto.

tests/third_party.rs runs this with the venv that `cargo xtask deps` builds. It reads a plan as
JSON on stdin and prints one result document on stdout.

Plan fields:
  target        flagd's gRPC address, host:port
  sdk_key       the key sent in the `authorization` metadata entry
  proto_dir     the repository's proto/ directory
  flags         flag keys to evaluate
  contexts      LaunchDarkly contexts (JSON) to evaluate each flag for
  timeout       seconds after which the whole script gives up (a hang must fail)

Result: {"health": {service: status name}, "services": [names reflection lists],
"answers": [{flag, context, value, variationIndex, reason, source}] with value, variation
and reason as flagd's HTTP API writes them, and "unauthenticated": {code, details} of an
Evaluate without a key.
"""

import importlib
import json
import signal
import sys
import tempfile


def generate_stubs(proto_dir):
    """Compiles evaluator.proto with grpcio-tools into a temporary package and imports it."""
    from grpc_tools import protoc

    out = tempfile.mkdtemp(prefix="flagd-grpc-stubs-")
    args = [
        "grpc_tools.protoc",
        f"--proto_path={proto_dir}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        "flags/v1/evaluator.proto",
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {proto_dir}/flags/v1/evaluator.proto")
    sys.path.insert(0, out)
    messages = importlib.import_module("flags.v1.evaluator_pb2")
    services = importlib.import_module("flags.v1.evaluator_pb2_grpc")
    return messages, services


def reason_json(pb, source_name, reason):
    """A reason as LaunchDarkly's JSON has it, flagd's labels included (from the source)."""
    kind = pb.ReasonKind.Name(reason.kind).removeprefix("REASON_KIND_")
    shown = {"kind": kind}
    if kind == "OFF" and source_name == "KILLED":
        shown["killed"] = True
    if kind == "TARGET_MATCH" and source_name == "OVERRIDE":
        shown["override"] = True
    if kind == "RULE_MATCH":
        shown["ruleIndex"] = reason.rule_index
        shown["ruleId"] = reason.rule_id
    if kind == "PREREQUISITE_FAILED":
        shown["prerequisiteKey"] = reason.prerequisite_key
    if kind == "ERROR":
        shown["errorKind"] = pb.ErrorKind.Name(reason.error_kind).removeprefix("ERROR_KIND_")
    if reason.in_experiment:
        shown["inExperiment"] = True
    if reason.big_segments_status:
        status = pb.BigSegmentsStatus.Name(reason.big_segments_status)
        shown["bigSegmentsStatus"] = status.removeprefix("BIG_SEGMENTS_STATUS_")
    return shown


def value_json(value):
    """A typed FlagValue back as the JSON value it was served as (None when unset)."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "json_value":
        return json.loads(value.json_value)
    return getattr(value, which)


def main():
    plan = json.load(sys.stdin)
    # A hang must end the process so the test fails instead of blocking.
    signal.alarm(int(plan.get("timeout", 30)))

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    result = {}
    with grpc.insecure_channel(plan["target"]) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)

        health = health_pb2_grpc.HealthStub(channel)
        result["health"] = {}
        for service in ["", "flags.v1.FlagEvaluatorService"]:
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
            result["health"][service] = status

        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        services = []
        for answer in reflection.ServerReflectionInfo(iter([request]), timeout=5):
            services.extend(s.name for s in answer.list_services_response.service)
        result["services"] = sorted(services)

        pb, pb_grpc = generate_stubs(plan["proto_dir"])
        evaluator = pb_grpc.FlagEvaluatorServiceStub(channel)
        metadata = [("authorization", plan["sdk_key"])]
        answers = []
        for flag in plan["flags"]:
            for index, context in enumerate(plan["contexts"]):
                request = pb.EvaluateRequest(
                    flag_id=flag,
                    context=pb.EvaluationContext(json=json.dumps(context)),
                )
                answer = evaluator.Evaluate(request, metadata=metadata, timeout=5)
                source = pb.EvaluationSource.Name(answer.source).removeprefix(
                    "EVALUATION_SOURCE_"
                )
                answers.append(
                    {
                        "flag": answer.flag_id,
                        "context": index,
                        "value": value_json(answer.value),
                        "variationIndex": answer.variation_index
                        if answer.HasField("variation_index")
                        else None,
                        "reason": reason_json(pb, source, answer.reason),
                        "source": source,
                    }
                )
        result["answers"] = answers

        try:
            evaluator.Evaluate(
                pb.EvaluateRequest(
                    flag_id=plan["flags"][0],
                    context=pb.EvaluationContext(json=json.dumps(plan["contexts"][0])),
                ),
                timeout=5,
            )
            result["unauthenticated"] = None
        except grpc.RpcError as error:
            result["unauthenticated"] = {
                "code": error.code().name,
                "details": error.details(),
            }

    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
