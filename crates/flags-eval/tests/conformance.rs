//! LaunchDarkly's server-side evaluation conformance suite (sdk-test-harness v2.41.0 data files,
//! vendored in `testdata/ld-server-side-eval`), run as an ordinary test.
//!
//! Each file is expanded as the upstream harness does: YAML merge keys are applied, every
//! parameter set (the cartesian product when `parameters` is a list of lists) yields one copy of
//! the file, and `<NAME>` placeholders are replaced by constants and parameters: a string that is
//! exactly `<NAME>` becomes the value itself (typed), and `<NAME>` inside a longer string (or a
//! map key) is replaced textually. Every evaluation is checked against its `expect`, and every
//! failure is reported before the test fails.
#![allow(clippy::unwrap_used)]

use std::fmt::Write as _;
use std::path::Path;

use flags_core::{Context, ErrorKind, EvalDetail, FlagData, Reason, Value};
use flags_eval::{CompiledData, Evaluator};
use serde_json::json;

/// Cases that cannot run here, by (file, case name) and why. Big segments (`unbounded`) would go
/// here; this version of the suite has none.
const EXCLUDED: &[(&str, &str, &str)] = &[];

#[derive(Default)]
struct Tally {
    files: usize,
    copies: usize,
    cases: usize,
    passed: usize,
    excluded: usize,
    failures: Vec<String>,
}

#[test]
fn launchdarkly_server_side_eval_suite() {
    let files = flags_test_support::conformance::files();

    let mut tally = Tally::default();
    for path in &files {
        run_file(path, &mut tally);
    }
    println!(
        "conformance: {} files, {} expanded copies, {} cases, {} passed, {} excluded",
        tally.files, tally.copies, tally.cases, tally.passed, tally.excluded
    );
    if !tally.failures.is_empty() {
        let mut report = String::new();
        for f in &tally.failures {
            writeln!(report, "{f}").unwrap();
        }
        panic!(
            "{} of {} conformance cases failed:\n{report}",
            tally.failures.len(),
            tally.cases
        );
    }
    assert!(tally.cases > 500, "too few cases ran: {}", tally.cases);
}

fn run_file(path: &Path, tally: &mut Tally) {
    let file_name = path.file_name().unwrap().to_string_lossy().into_owned();
    tally.files += 1;
    for (i, copy) in flags_test_support::conformance::copies(path)
        .into_iter()
        .enumerate()
    {
        tally.copies += 1;
        let label = format!(
            "{file_name} [parameters #{i} {}]",
            Value::Object(copy.params)
        );
        run_copy(&file_name, &label, &copy.body, tally);
    }
}

fn run_copy(file_name: &str, label: &str, body: &Value, tally: &mut Tally) {
    let sdk_data = body.get("sdkData").cloned().unwrap_or_else(|| json!({}));
    let data = match FlagData::from_json_value(sdk_data).map(CompiledData::compile) {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => {
            tally.failures.push(format!("{label}: compile failed: {e}"));
            return;
        }
        Err(e) => {
            tally.failures.push(format!("{label}: load failed: {e}"));
            return;
        }
    };
    let check_all = !body
        .get("skipEvaluateAllFlags")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let evaluator = Evaluator::new(&data);
    let evaluations = body
        .get("evaluations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (n, case) in evaluations.iter().enumerate() {
        let name = case
            .get("name")
            .and_then(Value::as_str)
            .map_or_else(|| format!("evaluation #{n}"), str::to_owned);
        tally.cases += 1;
        if EXCLUDED
            .iter()
            .any(|(f, c, _)| *f == file_name && *c == name)
        {
            tally.excluded += 1;
            continue;
        }
        match run_case(&evaluator, case, check_all) {
            Ok(()) => tally.passed += 1,
            Err(msg) => tally.failures.push(format!("{label} / {name}: {msg}")),
        }
    }
}

fn run_case(evaluator: &Evaluator<'_>, case: &Value, check_all: bool) -> Result<(), String> {
    let flag_key = case["flagKey"].as_str().ok_or("flagKey missing")?;
    // The upstream harness infers the variation method from the default; with no default it
    // uses the boolean one, whose default is `false`.
    let default = case.get("default").cloned().unwrap_or(Value::Bool(false));
    let value_type = case
        .get("valueType")
        .and_then(Value::as_str)
        .unwrap_or("any");
    let context = Context::from_json(&case["context"]);
    let detail = match &context {
        Ok(ctx) => evaluator.evaluate(flag_key, ctx),
        // LaunchDarkly's SDKs answer an invalid context with USER_NOT_SPECIFIED.
        Err(_) => EvalDetail::error(ErrorKind::UserNotSpecified),
    };
    let (value, variation_index, reason) = typed_result(&detail, &default, value_type);
    let got = json!({"value": value, "variationIndex": variation_index, "reason": reason});

    let expect = &case["expect"];
    let want = json!({
        "value": expect.get("value").cloned().unwrap_or(Value::Null),
        "variationIndex": expect.get("variationIndex").cloned().unwrap_or(Value::Null),
        "reason": expect.get("reason").cloned().unwrap_or(Value::Null),
    });
    if !json_eq(&got, &want) {
        return Err(format!("expected {want}, got {got}"));
    }

    if check_all && let (Ok(ctx), Some(_)) = (&context, evaluator.data().flag(flag_key)) {
        let all = evaluator
            .evaluate_all(ctx)
            .find(|(k, _)| *k == flag_key)
            .map(|(_, d)| d);
        if all.as_ref() != Some(&detail) {
            return Err(format!("evaluate_all disagrees: {all:?} vs {detail:?}"));
        }
    }
    Ok(())
}

/// What a strongly-typed SDK variation method returns: the default when there is no value, and
/// the default with ERROR/WRONG_TYPE when the value has the wrong type.
fn typed_result(
    detail: &EvalDetail<'_>,
    default: &Value,
    value_type: &str,
) -> (Value, Option<usize>, Value) {
    let reason = serde_json::to_value(&detail.reason).unwrap();
    let Some(value) = detail.value else {
        return (default.clone(), detail.variation_index, reason);
    };
    let type_ok = match value_type {
        "bool" => value.is_boolean(),
        "int" | "double" => value.is_number(),
        "string" => value.is_string(),
        _ => true,
    };
    if type_ok {
        (value.clone(), detail.variation_index, reason)
    } else {
        let wrong = Reason::Error {
            error_kind: ErrorKind::WrongType,
        };
        (default.clone(), None, serde_json::to_value(&wrong).unwrap())
    }
}

/// JSON equality with numbers compared by value (`1` equals `1.0`).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}
