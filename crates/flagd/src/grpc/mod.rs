//! flagd's gRPC server, on a port of its own (`--grpc-listen`), in every mode:
//!
//! - `flags.v1.FlagEvaluatorService` (`proto/flags/v1/evaluator.proto`, stubs from
//!   flags-proto): evaluations with the HTTP API's answers, the kill set, overrides and health.
//!   It reads the state the HTTP handlers read and answers through the same code: the key
//!   decision is `crate::access`'s (the key in the `authorization` metadata entry, as in HTTP's
//!   header), evaluation, metrics and exported events are `crate::evaluate`'s, and health is
//!   `crate::readiness`'s. Evaluations share HTTP's limit on concurrent requests and body size.
//! - `grpc.health.v1.Health`, following `/readyz`.
//! - Server reflection, `grpc.reflection.v1` and `v1alpha`, over flags-proto's descriptors and
//!   the health service's, so `grpcurl` and other tools need no `.proto` file.
//!
//! Health and reflection need no key, as `/readyz` does not. The server stops with the rest of
//! flagd: on the stop signal it accepts no more connections, lets calls in flight finish, and
//! ends health watches. With TLS on, it serves the HTTP port's certificate (`crate::tls`), each
//! handshake on a task of its own, and tonic sees only connections whose handshake succeeded.

mod convert;
mod health;
mod service;

use std::time::Duration;

use flags_proto::v1::flag_evaluator_service_server::FlagEvaluatorServiceServer;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::pb::health_server::HealthServer;

use crate::state::AppState;

/// The gRPC services over `state`, with the compiled defaults of its descriptor set as the
/// last fallback of evaluation. Fails only
/// when a descriptor set does not decode, which a test rules out.
pub(crate) fn routes(state: &AppState) -> Result<Routes, tonic_reflection::server::Error> {
    let evaluator = FlagEvaluatorServiceServer::new(service::Evaluator::new(state.clone()))
        .max_decoding_message_size(state.http.max_body_bytes);
    let health = HealthServer::new(health::HealthService::new(state.clone()));
    // Each version of reflection lists every service served, the other version included (each
    // adds its own descriptors itself).
    let reflection = |other_reflection| {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(flags_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(other_reflection)
    };
    let mut routes = Routes::builder();
    routes
        .add_service(evaluator)
        .add_service(health)
        .add_service(reflection(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET).build_v1()?)
        .add_service(reflection(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET).build_v1alpha()?);
    Ok(routes.routes())
}

/// Serves `routes` on `listener` until `state`'s stop signal, then lets calls in flight
/// finish. With `tls`, connections speak TLS with that acceptor, each handshake within the
/// given time.
pub(crate) fn spawn(
    listener: TcpListener,
    state: &AppState,
    routes: Routes,
    tls: Option<(tokio_rustls::TlsAcceptor, Duration)>,
) -> JoinHandle<std::io::Result<()>> {
    let shutdown = state.shutdown.clone();
    let timeout = state.http.request_timeout();
    tokio::spawn(async move {
        let server = Server::builder().timeout(timeout).add_routes(routes);
        let served = match tls {
            None => {
                let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                server
                    .serve_with_incoming_shutdown(incoming, shutdown.wait())
                    .await
            }
            Some((acceptor, limit)) => {
                let incoming = tls_incoming(listener, acceptor, limit, shutdown.clone());
                server
                    .serve_with_incoming_shutdown(incoming, shutdown.wait())
                    .await
            }
        };
        served.map_err(std::io::Error::other)
    })
}

/// The TLS connections made on `listener` until `shutdown`: each accepted connection's
/// handshake runs on a task of its own, within `limit`, and only those that succeed come out.
fn tls_incoming(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    limit: Duration,
    shutdown: crate::shutdown::Shutdown,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<crate::tls::GrpcTlsStream>> {
    // A few finished handshakes may wait for tonic to take them; more hold their tasks back.
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    drop(tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                () = shutdown.wait() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _peer)) => stream,
                    Err(e) => {
                        crate::server::accept_failed(&e).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            drop(tokio::spawn(async move {
                if let Some(stream) = crate::tls::handshake(&acceptor, stream, limit).await {
                    // Gone only when the server has stopped; the connection goes with it.
                    let _ = tx.send(Ok(crate::tls::GrpcTlsStream(stream))).await;
                }
            }));
        }
    }));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// Both descriptor sets decode, so the server always starts.
    #[test]
    fn the_reflection_services_build() {
        let state = AppState::new(&Config::for_tests(Vec::new()));
        assert!(routes(&state).is_ok());
    }
}
