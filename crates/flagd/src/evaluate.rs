//! flagd's own evaluations, as every API that evaluates on the server makes them: the native
//! API, OFREP and gRPC. Each evaluates the environment's snapshot with its operations layer
//! (which labels kills and overrides), counts the answer in the metrics under the flag's key
//! (unknown flags under one label) and hands it to the event exporters as sampling says. One
//! place, so that the protocols cannot drift apart in what they answer or record; each of them
//! only reads its request and writes its answer.

use std::sync::Arc;

use flags_core::{BigSegmentStore, Context, ErrorKind, EvalDetail, Reason};
use serde_json::Value;

use crate::big_segments::{BigSegments, Prefetched};
use crate::descriptors::Registry;
use crate::engine::Snapshot;
use crate::env::Env;
use crate::metrics::UNKNOWN_FLAG;
use crate::state::AppState;

/// Evaluates `flag_key` for `context` in `env` (whose current snapshot is `snapshot`), counts
/// and exports the answer. Unknown flags give `ERROR`/`FLAG_NOT_FOUND`.
#[inline]
pub(crate) fn one<'s>(
    state: &AppState,
    env: &Env,
    snapshot: &'s Snapshot,
    flag_key: &str,
    context: &Context,
    big: Option<&'s dyn BigSegmentStore>,
) -> EvalDetail<'s> {
    let detail = snapshot.evaluate_with(&env.ops, flag_key, context, big);
    let label = if is_not_found(&detail) {
        UNKNOWN_FLAG
    } else {
        flag_key
    };
    state.metrics.evaluation(label, detail.reason.kind_str());
    crate::telemetry::record_evaluation(flag_key, detail.reason.kind_str());
    export(state, env, snapshot, context, [(flag_key, &detail)]);
    detail
}

/// Evaluates every flag of `snapshot` for `context`, in key order, counting and exporting
/// each answer as [`one`] does.
#[inline]
pub(crate) fn all<'s>(
    state: &AppState,
    env: &Env,
    snapshot: &'s Snapshot,
    context: &Context,
    big: Option<&'s dyn BigSegmentStore>,
) -> Vec<(&'s str, EvalDetail<'s>)> {
    let results = snapshot.evaluate_all_with(&env.ops, context, big);
    crate::telemetry::record_bulk(results.len());
    for (key, detail) in &results {
        state.metrics.evaluation(key, detail.reason.kind_str());
    }
    export(
        state,
        env,
        snapshot,
        context,
        results.iter().map(|(key, detail)| (*key, detail)),
    );
    results
}

/// Whether an answer says the flag does not exist.
pub(crate) fn is_not_found(detail: &EvalDetail<'_>) -> bool {
    matches!(
        detail.reason,
        Reason::Error {
            error_kind: ErrorKind::FlagNotFound
        }
    )
}

/// The big-segment memberships an evaluation of `context` in `env` may read, fetched now
/// (cache first), when flagd has a big-segment store and the environment serves a big
/// segment; `None` otherwise, when evaluating needs none (big segments then report
/// `NOT_CONFIGURED`, as SDKs without a store do).
pub(crate) async fn prefetch(state: &AppState, env: &Env, context: &Context) -> Option<Prefetched> {
    match big_segments(state, env) {
        Some(big) => Some(big.prefetch(&env.key, context).await),
        None => None,
    }
}

/// Where an evaluation in `env` reads big-segment memberships from: flagd's big-segment store,
/// when it has one and the environment serves a big segment.
#[inline]
pub(crate) fn big_segments<'a>(state: &'a AppState, env: &Env) -> Option<&'a BigSegments> {
    state
        .big_segments
        .as_deref()
        .filter(|_| env.store.has_big_segments())
}

/// Hands flagd's own evaluations to the exporters, as many as the configured sampling keeps
/// (nothing at all is built when it keeps none).
pub(crate) fn export<'a, 'd: 'a>(
    state: &AppState,
    env: &Env,
    snapshot: &Snapshot,
    context: &Context,
    evaluations: impl IntoIterator<Item = (&'a str, &'a EvalDetail<'d>)>,
) {
    if !state.events.samples_evaluations() {
        return;
    }
    let records: Vec<_> = evaluations
        .into_iter()
        .filter_map(|(key, detail)| {
            let version = snapshot.compiled_flag(key).map(|flag| flag.version());
            state
                .events
                .evaluation(&env.key, key, version, context, detail)
        })
        .collect();
    state.events.submit(records);
}

// ------------------------------------------------------------------------------------------
// The last fallback: the compiled defaults of the flags a descriptor set declares
// (`crate::descriptors`). Apart from the evaluation above, which it does not change: a
// protocol asks for it when an answer serves no value, serves the default instead, and says
// so in its own terms (`"source":"COMPILED_DEFAULT"` in the native API's reason, OFREP's
// `DEFAULT` reason with `metadata.source`, gRPC's `EVALUATION_SOURCE_COMPILED_DEFAULT`).
// What is counted and exported stays the evaluation's own answer.

/// The declared flags to fall back on, when flagd has a descriptor set: held by the caller for
/// as long as it answers, since the defaults are borrowed from it.
#[inline]
pub(crate) fn declared(state: &AppState) -> Option<Arc<Registry>> {
    state.descriptors.as_ref().map(|d| d.registry())
}

/// The compiled default an answer `detail` for `flag_key` falls back to: the declared default,
/// when the answer serves no value (the flag is missing, its evaluation failed, or it is off
/// without an off variation) and `declared` declares the flag.
#[inline]
pub(crate) fn compiled_default<'r>(
    declared: Option<&'r Registry>,
    flag_key: &str,
    detail: &EvalDetail<'_>,
) -> Option<&'r Value> {
    if detail.value.is_some() {
        return None;
    }
    declared?.compiled_default(flag_key)
}

/// The declared flags that `results` (in key order, as [`all`] gives them) does not hold,
/// with their compiled defaults, in key order: what an answer for every flag adds, so that it
/// agrees with the answers for each flag.
pub(crate) fn declared_only<'r>(
    declared: &'r Registry,
    results: &[(&str, EvalDetail<'_>)],
) -> Vec<(&'r str, &'r Value)> {
    declared
        .flags()
        .filter(|flag| {
            results
                .binary_search_by(|(key, _)| (*key).cmp(flag.key.as_str()))
                .is_err()
        })
        .map(|flag| (flag.key.as_str(), &flag.default))
        .collect()
}
