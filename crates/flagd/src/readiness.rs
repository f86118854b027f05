//! How flagd stands with its source of data, in every mode, read one way for every protocol:
//! `GET /readyz` answers with it, gRPC's health services (`grpc.health.v1` and the evaluation
//! service's `Health`) report it, and gRPC evaluations say whether the data they read is
//! cached through an outage or stale from a warm start.

use flags_cache::{HealthReport, HealthStatus};

use crate::state::{AppState, Mode};

/// Where flagd stands with its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SourceState {
    /// No data yet: the source has not answered.
    Connecting,
    /// The source answers (or has failed fewer than 3 times in a row).
    Serving,
    /// 3 or more attempts in a row have failed (in proxy mode: the upstream's stream is down);
    /// the last good data keeps serving.
    Degraded,
    /// The data served was read from Redis at start, the source giving nothing; it has not
    /// answered since.
    Stale,
    /// Proxy mode: the upstream refused the key, so its data will not come back.
    Down,
}

impl SourceState {
    /// The name `/readyz` shows.
    pub(crate) fn label(self) -> &'static str {
        match self {
            SourceState::Connecting => "CONNECTING",
            SourceState::Serving => "SERVING",
            SourceState::Degraded => "DEGRADED",
            SourceState::Stale => "STALE",
            SourceState::Down => "DOWN",
        }
    }
}

/// flagd's standing at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Readiness {
    /// Where it stands with its source.
    pub state: SourceState,
    /// Whether it serves data: `/readyz` answers 200, and gRPC health says `SERVING`.
    pub ready: bool,
    /// Whole seconds since the source last answered; `None` when it never did.
    pub seconds_since_contact: Option<u64>,
    /// Failed attempts to reach the source since the last success.
    pub consecutive_failures: u32,
}

/// Where `state`'s server stands now.
pub(crate) fn of(state: &AppState) -> Readiness {
    match &state.mode {
        Mode::File { .. } => {
            let report = state.store.health().report();
            let stale = state.store.is_warm();
            let has_data = state.store.snapshot().is_some();
            let source = match has_data {
                false => SourceState::Connecting,
                true if stale => SourceState::Stale,
                true if report.status == HealthStatus::Degraded => SourceState::Degraded,
                true => SourceState::Serving,
            };
            tracked(source, has_data, &report)
        }
        Mode::Root { health, .. } => {
            let report = health.report();
            // Never reached the store, but serving what Redis held: ready, and saying so.
            let stale = report.status == HealthStatus::Connecting
                && state.envs.all().iter().any(|env| env.store.is_warm());
            let (source, ready) = match report.status {
                _ if stale => (SourceState::Stale, true),
                HealthStatus::Connecting => (SourceState::Connecting, false),
                HealthStatus::Serving => (SourceState::Serving, true),
                HealthStatus::Degraded => (SourceState::Degraded, true),
                // A state this server does not know of is not known to be ready.
                _ => (SourceState::Connecting, false),
            };
            tracked(source, ready, &report)
        }
        Mode::Proxy { upstream } => {
            let report = upstream.report();
            let source = if state.store.is_warm() {
                SourceState::Stale
            } else {
                match report.status {
                    "SERVING" => SourceState::Serving,
                    "DEGRADED" => SourceState::Degraded,
                    "DOWN" => SourceState::Down,
                    _ => SourceState::Connecting,
                }
            };
            Readiness {
                state: source,
                ready: state.store.snapshot().is_some(),
                seconds_since_contact: report.seconds_since_last_contact,
                consecutive_failures: report.consecutive_failures,
            }
        }
    }
}

fn tracked(state: SourceState, ready: bool, report: &HealthReport) -> Readiness {
    Readiness {
        state,
        ready,
        seconds_since_contact: report.seconds_since_last_contact,
        consecutive_failures: report.consecutive_failures,
    }
}
