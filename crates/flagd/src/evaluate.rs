//! flagd's own evaluations, as every API that evaluates on the server makes them: the native
//! API, OFREP and gRPC. Each evaluates the environment's snapshot with its operations layer
//! (which labels kills and overrides), counts the answer in the metrics under the flag's key
//! (unknown flags under one label) and hands it to the event exporters as sampling says. One
//! place, so that the protocols cannot drift apart in what they answer or record; each of them
//! only reads its request and writes its answer.

use flags_core::{BigSegmentStore, Context, ErrorKind, EvalDetail, Reason};

use crate::big_segments::BigSegments;
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
