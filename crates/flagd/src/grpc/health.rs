//! `grpc.health.v1.Health`, the standard gRPC health service (what `grpc_health_probe`,
//! Kubernetes' gRPC probes and load balancers ask): `SERVING` when flagd serves data, which is
//! when `GET /readyz` answers 200, and `NOT_SERVING` otherwise. It answers for the whole server
//! (service `""`) and for `flags.v1.FlagEvaluatorService`; other names are unknown. Like
//! `/readyz`, it needs no key.
//!
//! Each check reads flagd's readiness at that moment rather than a status kept up to date
//! beside it, so a check never lags behind `/readyz`. A watch reads it every
//! [`WATCH_INTERVAL`] and sends each change; it ends when flagd stops.

use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::Health;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::readiness;
use crate::state::AppState;

/// How often a watch reads flagd's readiness.
pub(crate) const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// The services whose health is reported: the whole server and the evaluation service.
const SERVICES: [&str; 2] = [
    "",
    flags_proto::v1::flag_evaluator_service_server::SERVICE_NAME,
];

/// The health service over flagd's readiness.
pub(crate) struct HealthService {
    state: AppState,
}

impl HealthService {
    pub(crate) fn new(state: AppState) -> HealthService {
        HealthService { state }
    }
}

/// The status of `service` now: `None` for a service flagd does not serve.
fn status(state: &AppState, service: &str) -> Option<ServingStatus> {
    if !SERVICES.contains(&service) {
        return None;
    }
    Some(if readiness::of(state).ready {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    })
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status.into(),
    }
}

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = &request.get_ref().service;
        match status(&self.state, service) {
            Some(status) => Ok(Response::new(response(status))),
            None => Err(Status::not_found(format!(
                "flagd serves no service {service:?}"
            ))),
        }
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let service = request.into_inner().service;
        let state = self.state.clone();
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            let mut last = None;
            loop {
                // An unknown service is said once per change, as the health protocol asks,
                // rather than refused: it may be served later.
                let now = status(&state, &service).unwrap_or(ServingStatus::ServiceUnknown);
                if last != Some(now) {
                    if tx.send(Ok(response(now))).await.is_err() {
                        return;
                    }
                    last = Some(now);
                }
                tokio::select! {
                    () = tokio::time::sleep(WATCH_INTERVAL) => {}
                    () = state.shutdown.wait() => return,
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
