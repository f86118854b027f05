//! `flagd health`: one `GET /healthz` (or any URL) and its status, for container health checks
//! in images that have no curl. HTTP/1.1 over plain TCP or TLS; with TLS the server's
//! certificate is checked against the system's CA store, unless told not to (a probe of
//! flagd's own port, whose certificate names the service, not `127.0.0.1`).

use std::sync::Arc;
use std::time::Duration;

use http_body_util::Empty;
use hyper::Uri;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;

/// The port probed when neither `--url` nor `FLAGD_LISTEN` gives one.
const DEFAULT_PORT: u16 = 8013;

/// Why the probe got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The URL is not an `http` or `https` URL with a host.
    #[error("not an http:// or https:// URL: {0}")]
    Url(String),
    /// No answer within the time limit.
    #[error("no answer from {url} within {limit:?}")]
    Timeout {
        /// The URL.
        url: String,
        /// The limit.
        limit: Duration,
    },
    /// The connection, the TLS handshake or the exchange failed.
    #[error("{url}: {message}")]
    Failed {
        /// The URL.
        url: String,
        /// What failed.
        message: String,
    },
}

/// The URL probed by default: `/healthz` on 127.0.0.1 at `FLAGD_LISTEN`'s port (from `env`),
/// or 8013.
pub fn default_url(env: &std::collections::HashMap<String, String>) -> String {
    let port = env
        .get("FLAGD_LISTEN")
        .and_then(|listen| listen.trim().parse::<std::net::SocketAddr>().ok())
        .map_or(DEFAULT_PORT, |addr| addr.port());
    format!("http://127.0.0.1:{port}/healthz")
}

/// GETs `url` and returns the answer's status. With `insecure`, an `https` server's
/// certificate is not checked (the connection is still encrypted).
pub async fn probe(url: &str, insecure: bool, limit: Duration) -> Result<u16, ProbeError> {
    let uri: Uri = url.parse().map_err(|_| ProbeError::Url(url.to_owned()))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(ProbeError::Url(url.to_owned())),
    };
    let host = uri
        .host()
        .ok_or_else(|| ProbeError::Url(url.to_owned()))?
        .to_owned();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let failed = |message: String| ProbeError::Failed {
        url: url.to_owned(),
        message,
    };
    let exchange = async {
        // An IPv6 literal comes bracketed in a URL, and bare to the resolver.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let tcp = TcpStream::connect((bare, port))
            .await
            .map_err(|e| failed(format!("cannot connect: {e}")))?;
        let authority = uri.authority().map_or(host.clone(), ToString::to_string);
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        if tls {
            let config = client_config(insecure).map_err(&failed)?;
            let name = ServerName::try_from(bare.to_owned())
                .map_err(|e| failed(format!("not a server name: {e}")))?;
            let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .map_err(|e| failed(format!("TLS handshake failed: {e}")))?;
            get(stream, &authority, &path).await.map_err(failed)
        } else {
            get(tcp, &authority, &path).await.map_err(failed)
        }
    };
    tokio::time::timeout(limit, exchange)
        .await
        .map_err(|_| ProbeError::Timeout {
            url: url.to_owned(),
            limit,
        })?
}

/// One `GET` over `stream`: the status.
async fn get<S>(stream: S, authority: &str, path: &str) -> Result<u16, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let connection = tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::USER_AGENT, "flagd-health")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    connection.abort();
    Ok(response.status().as_u16())
}

/// A client configuration on ring trusting the system's CA store, or nothing with `insecure`.
fn client_config(insecure: bool) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(crate::tls::ring_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        // Unreadable entries of the store are skipped; an empty store fails the handshake,
        // which says so.
        let (_added, _skipped) =
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Accepts any certificate, but still checks that the server holds its key (the handshake's
/// signatures), for `--insecure`.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_url_follows_flagd_listen() {
        let env = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert_eq!(default_url(&env(&[])), "http://127.0.0.1:8013/healthz");
        assert_eq!(
            default_url(&env(&[("FLAGD_LISTEN", "0.0.0.0:9000")])),
            "http://127.0.0.1:9000/healthz"
        );
        assert_eq!(
            default_url(&env(&[("FLAGD_LISTEN", "nonsense")])),
            "http://127.0.0.1:8013/healthz",
            "serve says what is wrong with it; the probe tries the default"
        );
    }

    #[tokio::test]
    async fn urls_that_are_not_http_are_refused() {
        for url in ["ftp://127.0.0.1/healthz", "127.0.0.1:8013", "http:///x"] {
            let error = probe(url, false, Duration::from_secs(1)).await.unwrap_err();
            assert!(matches!(error, ProbeError::Url(_)), "{url}: {error}");
        }
    }
}
