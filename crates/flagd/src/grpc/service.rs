//! `flags.v1.FlagEvaluatorService`: flagd's evaluations, kill set, overrides and health over
//! gRPC, with the HTTP API's answers.

use std::sync::Arc;
use std::time::Instant;

use flags_core::{BigSegmentStore, ErrorKind, EvalDetail, KillSet, OverrideLookup, Reason};
use flags_proto::v1::flag_evaluator_service_server::FlagEvaluatorService;
use flags_proto::v1::{
    self, BulkEvaluateRequest, BulkEvaluateResponse, EvaluateRequest, EvaluateResponse,
    EvaluationSource, EvaluatorStatus, FlagState, GetFlagStateRequest, GetFlagStateResponse,
    GetKilledFlagsRequest, GetKilledFlagsResponse, GetOverridesRequest, GetOverridesResponse,
    HealthRequest, HealthResponse, OverrideState, State,
};
use serde_json::Value;
use tokio::sync::SemaphorePermit;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::convert;
use crate::access::{self, Refusal};
use crate::engine::Snapshot;
use crate::env::Env;
use crate::evaluate;
use crate::readiness::{self, SourceState};
use crate::state::AppState;

/// The metadata entry that carries the SDK key, as HTTP's `Authorization` header does.
pub(crate) const KEY_METADATA: &str = "authorization";

/// The service, over the state every HTTP handler shares.
pub(crate) struct Evaluator {
    state: AppState,
}

impl Evaluator {
    pub(crate) fn new(state: AppState) -> Evaluator {
        Evaluator { state }
    }

    /// The default compiled into `flag_key`'s protobuf declaration (`(flags.flag).default`),
    /// in the descriptor set flagd has loaded (`--descriptors`): the last fallback of an
    /// evaluation that has no value and was given no default (source `COMPILED_DEFAULT`), and
    /// the value of a flag known only by its declaration (state `STATE_DEFAULT`).
    fn compiled_default(&self, flag_key: &str) -> Option<Value> {
        evaluate::declared(&self.state)?
            .compiled_default(flag_key)
            .cloned()
    }

    /// The environment the call's SDK key opens, as the HTTP evaluation routes decide it.
    async fn env(&self, metadata: &MetadataMap) -> Result<Arc<Env>, Status> {
        match access::authorize(&self.state, metadata.as_ref()).await {
            Ok(Some(env)) => Ok(env),
            Ok(None) => Ok(Arc::clone(&self.state.default_env)),
            Err(Refusal::Unauthenticated) => Err(Status::unauthenticated(format!(
                "no accepted SDK key: send the environment's SDK key in the `{KEY_METADATA}` \
                 metadata entry (`{KEY_METADATA}: KEY` or `{KEY_METADATA}: Bearer KEY`)"
            ))),
            Err(Refusal::Forbidden) => Err(Status::permission_denied(
                "this key cannot evaluate flags: use an SDK key of one environment",
            )),
            Err(Refusal::Unavailable) => Err(Status::unavailable(
                "the SDK key cannot be checked now; retry later",
            )),
        }
    }

    /// A permit of the limit on concurrent requests, which HTTP's evaluation routes share.
    fn permit(&self) -> Result<SemaphorePermit<'_>, Status> {
        self.state
            .limiter
            .try_acquire()
            .map_err(|_| Status::resource_exhausted("too many concurrent requests; retry later"))
    }

    /// What the data of `env` is: current (`GLOBAL`), kept through an outage of the source
    /// (`CACHED`) or read from Redis at a start while the source gave nothing (`STALE`).
    fn freshness(&self, env: &Env) -> EvaluationSource {
        if env.store.is_warm() {
            return EvaluationSource::Stale;
        }
        match readiness::of(&self.state).state {
            SourceState::Degraded | SourceState::Down => EvaluationSource::Cached,
            SourceState::Stale => EvaluationSource::Stale,
            SourceState::Connecting | SourceState::Serving => EvaluationSource::Global,
        }
    }

    /// One answer. A value the flag does not give (an error, or off without an off
    /// variation) is the request's default, else the compiled default.
    fn answer(
        &self,
        env: &Env,
        flag_id: String,
        detail: &EvalDetail<'_>,
        default: Option<v1::FlagValue>,
        freshness: &mut Option<EvaluationSource>,
    ) -> EvaluateResponse {
        let decided = match &detail.reason {
            Reason::Off { killed: true } => Some(EvaluationSource::Killed),
            Reason::TargetMatch { is_override: true } => Some(EvaluationSource::Override),
            _ => None,
        };
        let (value, source) = match detail.value {
            Some(value) => {
                let source = match decided {
                    Some(source) => source,
                    None if detail.is_error() => EvaluationSource::Default,
                    None => *freshness.get_or_insert_with(|| self.freshness(env)),
                };
                (Some(convert::flag_value(value)), source)
            }
            None => {
                let (value, source) = match default {
                    Some(default) => (Some(default), EvaluationSource::Default),
                    None => match self.compiled_default(&flag_id) {
                        Some(compiled) => (
                            Some(convert::flag_value(&compiled)),
                            EvaluationSource::CompiledDefault,
                        ),
                        None => (None, EvaluationSource::Default),
                    },
                };
                (value, decided.unwrap_or(source))
            }
        };
        EvaluateResponse {
            flag_id,
            value,
            source: source.into(),
            variation_index: detail.variation_index.map(convert::index),
            reason: Some(convert::reason(detail)),
        }
    }

    /// Runs `call`, then counts it under `method` and the code it ended with.
    async fn timed<T>(
        &self,
        method: &'static str,
        call: impl Future<Output = Result<T, Status>>,
    ) -> Result<Response<T>, Status> {
        let started = Instant::now();
        let result = call.await;
        self.record(method, started, &result);
        result.map(Response::new)
    }

    /// Counts a call under its method and the code it ended with.
    fn record<T>(&self, method: &'static str, started: Instant, result: &Result<T, Status>) {
        let code = match result {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        };
        let latency = started.elapsed().as_secs_f64();
        self.state
            .metrics
            .grpc_request(method, code_name(code), latency);
        tracing::info!(
            target: crate::telemetry::REQUEST_LOG_TARGET,
            rpc = %method,
            code = %code_name(code),
            latency_ms = crate::telemetry::millis(latency),
            "answered"
        );
    }

    async fn evaluate_one(
        &self,
        request: Request<EvaluateRequest>,
    ) -> Result<EvaluateResponse, Status> {
        let env = self.env(request.metadata()).await?;
        let _permit = self.permit()?;
        let request = request.into_inner();
        let context = convert::context(request.context)?;
        let big = evaluate::prefetch(&self.state, &env, &context).await;
        let big = big.as_ref().map(|b| b as &dyn BigSegmentStore);
        let mut freshness = None;
        let Some(snapshot) = env.store.snapshot() else {
            let detail = EvalDetail::error(ErrorKind::ClientNotReady);
            return Ok(self.answer(
                &env,
                request.flag_id,
                &detail,
                request.default_value,
                &mut freshness,
            ));
        };
        let detail = evaluate::one(
            &self.state,
            &env,
            &snapshot,
            &request.flag_id,
            &context,
            big,
        );
        Ok(self.answer(
            &env,
            request.flag_id,
            &detail,
            request.default_value,
            &mut freshness,
        ))
    }

    async fn evaluate_many(
        &self,
        request: Request<BulkEvaluateRequest>,
    ) -> Result<BulkEvaluateResponse, Status> {
        let env = self.env(request.metadata()).await?;
        let _permit = self.permit()?;
        let request = request.into_inner();
        let context = convert::context(request.context)?;
        let big = evaluate::prefetch(&self.state, &env, &context).await;
        let big = big.as_ref().map(|b| b as &dyn BigSegmentStore);
        let mut freshness = None;
        let snapshot = env.store.snapshot();
        let evaluations = match (&snapshot, request.flag_ids.is_empty()) {
            (None, true) => return Err(not_ready()),
            (Some(snapshot), true) => {
                let results = evaluate::all(&self.state, &env, snapshot, &context, big);
                let mut answers: Vec<_> = results
                    .iter()
                    .map(|(key, detail)| {
                        self.answer(&env, (*key).to_owned(), detail, None, &mut freshness)
                    })
                    .collect();
                // Declared flags the data lacks answer with their compiled defaults, as each
                // does on its own and as HTTP's answers for every flag have them.
                if let Some(declared) = evaluate::declared(&self.state) {
                    let missing = EvalDetail::error(ErrorKind::FlagNotFound);
                    answers.extend(
                        evaluate::declared_only(&declared, &results)
                            .into_iter()
                            .map(|(key, _)| {
                                self.answer(&env, key.to_owned(), &missing, None, &mut freshness)
                            }),
                    );
                    answers.sort_by(|a, b| a.flag_id.cmp(&b.flag_id));
                }
                answers
            }
            (None, false) => {
                let detail = EvalDetail::error(ErrorKind::ClientNotReady);
                request
                    .flag_ids
                    .into_iter()
                    .map(|key| self.answer(&env, key, &detail, None, &mut freshness))
                    .collect()
            }
            (Some(snapshot), false) => request
                .flag_ids
                .into_iter()
                .map(|key| {
                    let detail = evaluate::one(&self.state, &env, snapshot, &key, &context, big);
                    self.answer(&env, key, &detail, None, &mut freshness)
                })
                .collect(),
        };
        Ok(BulkEvaluateResponse { evaluations })
    }

    async fn flag_state(
        &self,
        request: Request<GetFlagStateRequest>,
    ) -> Result<GetFlagStateResponse, Status> {
        let env = self.env(request.metadata()).await?;
        let flag_id = request.into_inner().flag_id;
        let snapshot = env.store.snapshot().ok_or_else(not_ready)?;
        let Some(flag) = snapshot
            .compiled_flag(&flag_id)
            .filter(|flag| !flag.is_deleted())
        else {
            return match self.compiled_default(&flag_id) {
                Some(compiled) => Ok(GetFlagStateResponse {
                    flag: Some(FlagState {
                        flag_id,
                        state: State::Default.into(),
                        value: Some(convert::flag_value(&compiled)),
                        ..FlagState::default()
                    }),
                    archived: false,
                }),
                // Archived in the store: not served, so in no state, but there.
                None if env.is_archived(&flag_id) => Ok(GetFlagStateResponse {
                    flag: None,
                    archived: true,
                }),
                None => Err(Status::not_found(format!("flag {flag_id:?} not found"))),
            };
        };
        let model = flag.to_flag();
        let killed = env.ops.is_killed(&flag_id);
        let (state, variation) = if killed {
            (State::Killed, model.off_variation)
        } else if flag.is_on() {
            (State::Enabled, model.fallthrough.variation)
        } else {
            (State::Off, model.off_variation)
        };
        Ok(GetFlagStateResponse {
            flag: Some(FlagState {
                value: variation
                    .and_then(|v| flag.variations().get(v))
                    .map(convert::flag_value),
                flag_id,
                state: state.into(),
                version: flag.version(),
                flag_json: flag.json().to_owned(),
            }),
            archived: false,
        })
    }

    async fn overrides(
        &self,
        request: Request<GetOverridesRequest>,
    ) -> Result<GetOverridesResponse, Status> {
        let env = self.env(request.metadata()).await?;
        let request = request.into_inner();
        let entity = request
            .entity
            .filter(|e| !e.kind.is_empty() && !e.key.is_empty())
            .ok_or_else(|| {
                Status::invalid_argument("the request needs an entity with a kind and a key")
            })?;
        let snapshot = env.store.snapshot().ok_or_else(not_ready)?;
        let mut flag_ids = if request.flag_ids.is_empty() {
            snapshot.flags().map(|f| f.key().to_owned()).collect()
        } else {
            request.flag_ids
        };
        flag_ids.sort_unstable();
        flag_ids.dedup();
        let overrides = flag_ids
            .into_iter()
            .filter_map(|flag_id| {
                let variation = env.ops.variation_for(&flag_id, &entity.kind, &entity.key)?;
                Some(OverrideState {
                    value: variation_value(&snapshot, &flag_id, variation),
                    flag_id,
                    entity: Some(entity.clone()),
                    variation_index: convert::index(variation),
                })
            })
            .collect();
        Ok(GetOverridesResponse { overrides })
    }

    async fn health_of(&self, request: Request<HealthRequest>) -> Result<HealthResponse, Status> {
        let env = self.env(request.metadata()).await?;
        let readiness = readiness::of(&self.state);
        let status = match readiness.state {
            SourceState::Connecting => EvaluatorStatus::Connecting,
            SourceState::Serving => EvaluatorStatus::Serving,
            // Data is served that the source has not confirmed: the last good data, as in an
            // outage.
            SourceState::Degraded | SourceState::Stale | SourceState::Down if readiness.ready => {
                EvaluatorStatus::Degraded
            }
            SourceState::Degraded | SourceState::Stale | SourceState::Down => {
                EvaluatorStatus::Connecting
            }
        };
        let flags = env.store.snapshot().map_or(0, |s| s.flag_count());
        Ok(HealthResponse {
            status: status.into(),
            seconds_since_contact: readiness
                .seconds_since_contact
                .map_or(-1, |s| i64::try_from(s).unwrap_or(i64::MAX)),
            cached_flag_count: i32::try_from(flags).unwrap_or(i32::MAX),
            consecutive_failures: i32::try_from(readiness.consecutive_failures).unwrap_or(i32::MAX),
        })
    }
}

#[tonic::async_trait]
impl FlagEvaluatorService for Evaluator {
    async fn evaluate(
        &self,
        request: Request<EvaluateRequest>,
    ) -> Result<Response<EvaluateResponse>, Status> {
        self.timed("Evaluate", self.evaluate_one(request)).await
    }

    async fn bulk_evaluate(
        &self,
        request: Request<BulkEvaluateRequest>,
    ) -> Result<Response<BulkEvaluateResponse>, Status> {
        self.timed("BulkEvaluate", self.evaluate_many(request))
            .await
    }

    async fn get_flag_state(
        &self,
        request: Request<GetFlagStateRequest>,
    ) -> Result<Response<GetFlagStateResponse>, Status> {
        self.timed("GetFlagState", self.flag_state(request)).await
    }

    async fn get_killed_flags(
        &self,
        request: Request<GetKilledFlagsRequest>,
    ) -> Result<Response<GetKilledFlagsResponse>, Status> {
        let killed = async {
            let env = self.env(request.metadata()).await?;
            Ok(GetKilledFlagsResponse {
                flag_ids: env.ops.killed(),
            })
        };
        self.timed("GetKilledFlags", killed).await
    }

    async fn get_overrides(
        &self,
        request: Request<GetOverridesRequest>,
    ) -> Result<Response<GetOverridesResponse>, Status> {
        self.timed("GetOverrides", self.overrides(request)).await
    }

    async fn health(
        &self,
        request: Request<HealthRequest>,
    ) -> Result<Response<HealthResponse>, Status> {
        self.timed("Health", self.health_of(request)).await
    }
}

/// No data has been loaded yet, as HTTP's 503 says it.
fn not_ready() -> Status {
    Status::unavailable("no flag data has been loaded yet")
}

/// The value of variation `index` of flag `flag_id`, when both exist.
fn variation_value(snapshot: &Snapshot, flag_id: &str, index: usize) -> Option<v1::FlagValue> {
    snapshot
        .compiled_flag(flag_id)
        .and_then(|flag| flag.variations().get(index))
        .map(convert::flag_value)
}

/// A status code's name as gRPC writes it (`OK`, `UNAUTHENTICATED`), for metric labels.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
