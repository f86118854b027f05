//! TLS on flagd's ports (`--tls-cert` and `--tls-key`): the HTTP port and, with the same
//! certificate, the gRPC port.
//!
//! The certificate is not fixed in the server's configuration: rustls asks a [`CertResolver`]
//! for it on every handshake, and the resolver hands out whatever pair it holds now. The pair's
//! files are followed by the same watch that follows flag files ([`crate::watch`]: the
//! directory watch, `..data` symlink swaps included, backed by a content poll), so a renewed
//! certificate serves new connections within moments while open connections keep theirs. A new
//! pair that does not load (unparsable, or a key that does not match the certificate) is
//! refused with a warning naming the file and the problem, and the last good pair goes on
//! serving; at start, a bad pair stops flagd.
//!
//! rustls runs on the `ring` provider, never aws-lc-rs (which needs CMake). Handshakes run in
//! each connection's task, under a time limit, so a client that stalls never holds up the
//! accept loop.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use crate::config::{ReloadConfig, TlsConfig};
use crate::shutdown::Shutdown;
use crate::watch::{ReloadOutcome, Reloadable};

/// The ALPN protocols the HTTP port offers: HTTP/2 first, then HTTP/1.1.
const HTTP_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The ALPN protocol the gRPC port offers: gRPC is HTTP/2 only.
const GRPC_ALPN: [&[u8]; 1] = [b"h2"];

/// How long a client gets to complete its handshake when no header-read timeout is configured.
pub(crate) const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a certificate and key pair cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Only one of the two files was given.
    #[error(
        "TLS needs both a certificate and its key: {given} is set but {missing} is not \
         (--tls-cert/FLAGD_TLS_CERT/tls.cert and --tls-key/FLAGD_TLS_KEY/tls.key)"
    )]
    Incomplete {
        /// The setting given.
        given: &'static str,
        /// The setting missing.
        missing: &'static str,
    },
    /// A file is unreadable or does not hold what it should.
    #[error("{}: {problem}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// rustls refused the server configuration (not expected with its own provider).
    #[error("cannot set up TLS: {0}")]
    Setup(rustls::Error),
    /// The key is not the certificate's.
    #[error(
        "the key in {} does not match the certificate in {}",
        key.display(),
        cert.display()
    )]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
}

impl TlsConfig {
    /// The certificate and key files, when TLS is on; an error when only one is given.
    pub fn paths(&self) -> Result<Option<(PathBuf, PathBuf)>, TlsError> {
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Ok(Some((cert.clone(), key.clone()))),
            (None, None) => Ok(None),
            (Some(_), None) => Err(TlsError::Incomplete {
                given: "the certificate",
                missing: "the key",
            }),
            (None, Some(_)) => Err(TlsError::Incomplete {
                given: "the key",
                missing: "the certificate",
            }),
        }
    }
}

/// TLS for flagd's listeners: one certificate, followed on disk, behind one server
/// configuration per port.
pub(crate) struct Tls {
    files: Arc<CertFiles>,
    http: TlsAcceptor,
    grpc: TlsAcceptor,
}

impl Tls {
    /// Loads the pair `config` names, when it names one. A pair that cannot be used is an
    /// error here (at start), unlike later, when the last good pair keeps serving.
    pub(crate) fn from_config(config: &TlsConfig) -> Result<Option<Tls>, TlsError> {
        let Some((cert, key)) = config.paths()? else {
            return Ok(None);
        };
        let provider = Arc::new(ring_provider());
        let files = CertFiles::load(cert, key, Arc::clone(&provider))?;
        let acceptor = |alpn: &[&[u8]]| -> Result<TlsAcceptor, TlsError> {
            let mut config = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
                .with_safe_default_protocol_versions()
                .map_err(TlsError::Setup)?
                .with_no_client_auth()
                .with_cert_resolver(Arc::clone(&files.resolver) as Arc<dyn ResolvesServerCert>);
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(TlsAcceptor::from(Arc::new(config)))
        };
        let http = acceptor(&HTTP_ALPN)?;
        let grpc = acceptor(&GRPC_ALPN)?;
        Ok(Some(Tls {
            files: Arc::new(files),
            http,
            grpc,
        }))
    }

    /// The HTTP port's acceptor (ALPN `h2` and `http/1.1`).
    pub(crate) fn http(&self) -> TlsAcceptor {
        self.http.clone()
    }

    /// The gRPC port's acceptor (ALPN `h2`).
    pub(crate) fn grpc(&self) -> TlsAcceptor {
        self.grpc.clone()
    }

    /// Follows the certificate and key files until `shutdown`, as flag files are followed.
    pub(crate) fn watch(
        &self,
        reload: ReloadConfig,
        shutdown: Shutdown,
    ) -> impl Future<Output = ()> + Send + 'static {
        crate::watch::watch(Arc::clone(&self.files), reload, None, shutdown)
    }
}

/// rustls' provider on *ring*. rustls 0.23.48 deprecates it because it lacks the post-quantum
/// key exchange that only aws-lc-rs offers, which this workspace avoids (it needs CMake); the
/// classical suites are still the standard ones, and clients that offer both pick them.
#[allow(deprecated)]
pub(crate) fn ring_provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Completes the server side of a handshake on `stream` within `limit`; `None`, logged at
/// debug level, when the client fails it or is too slow (its business, not the server's).
pub(crate) async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    limit: Duration,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(limit, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(error)) => {
            tracing::debug!(%error, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(?limit, "TLS handshake timed out");
            None
        }
    }
}

/// Hands rustls the certificate held now, whatever the client asked for: flagd serves one
/// certificate (with the names it lists) on all its ports.
#[derive(Debug)]
pub(crate) struct CertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The certificate and key files, the resolver they feed, and what was last read from them.
struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
    paths: [PathBuf; 2],
    provider: Arc<CryptoProvider>,
    resolver: Arc<CertResolver>,
    /// The hash of the files' content last looked at, good or bad, so a bad pair is warned
    /// about once, not on every poll.
    seen: Mutex<[u8; 32]>,
}

impl CertFiles {
    fn load(cert: PathBuf, key: PathBuf, provider: Arc<CryptoProvider>) -> Result<Self, TlsError> {
        let paths = [cert.clone(), key.clone()];
        let files: Vec<_> = paths
            .iter()
            .map(|p| flags_wire::file::FileContents::read(p))
            .collect();
        let seen = crate::watch::content_hash(&files);
        let loaded = parse_pair(&cert, &key, &files[0].bytes, &files[1].bytes, &provider)?;
        log_loaded(&cert, &loaded, "TLS is on");
        Ok(CertFiles {
            cert,
            key,
            paths,
            provider,
            resolver: Arc::new(CertResolver {
                current: ArcSwap::from_pointee(loaded.certified),
            }),
            seen: Mutex::new(seen),
        })
    }
}

impl Reloadable for CertFiles {
    fn watched_paths(&self) -> &[PathBuf] {
        &self.paths
    }

    fn reload_settled(&self, settle: Duration) -> ReloadOutcome {
        let Some(files) = crate::watch::read_settled(&self.paths, settle) else {
            return ReloadOutcome::Settling;
        };
        let hash = crate::watch::content_hash(&files);
        {
            let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            if *seen == hash {
                return ReloadOutcome::Unchanged;
            }
            *seen = hash;
        }
        match parse_pair(
            &self.cert,
            &self.key,
            &files[0].bytes,
            &files[1].bytes,
            &self.provider,
        ) {
            Ok(loaded) => {
                log_loaded(&self.cert, &loaded, "new TLS certificate loaded");
                self.resolver.current.store(Arc::new(loaded.certified));
                ReloadOutcome::Loaded { changes: 1 }
            }
            Err(error) => {
                tracing::warn!(%error, "new TLS certificate refused; the previous one keeps serving");
                ReloadOutcome::Failed(error.to_string())
            }
        }
    }
}

/// A pair that loaded, and what the log says of its certificate.
struct Loaded {
    certified: CertifiedKey,
    subject: String,
    not_after: SystemTime,
    expires: String,
}

/// Reads a PEM certificate chain (end-entity certificate first) and a PEM private key (PKCS#8,
/// PKCS#1 or SEC1), and checks that the key is the certificate's.
fn parse_pair(
    cert_path: &Path,
    key_path: &Path,
    cert_bytes: &Result<Vec<u8>, String>,
    key_bytes: &Result<Vec<u8>, String>,
    provider: &CryptoProvider,
) -> Result<Loaded, TlsError> {
    let file_error = |path: &Path, problem: String| TlsError::File {
        path: path.to_path_buf(),
        problem,
    };
    let cert_bytes = cert_bytes
        .as_ref()
        .map_err(|e| file_error(cert_path, format!("cannot read the certificate: {e}")))?;
    let key_bytes = key_bytes
        .as_ref()
        .map_err(|e| file_error(key_path, format!("cannot read the key: {e}")))?;
    let chain = CertificateDer::pem_slice_iter(cert_bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(cert_path, format!("not a PEM certificate chain: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(file_error(
            cert_path,
            "no certificate in it (expected a PEM `BEGIN CERTIFICATE` block)".to_owned(),
        ));
    };
    let (subject, not_after) = describe(leaf)
        .map_err(|e| file_error(cert_path, format!("not an X.509 certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(key_bytes).map_err(|e| {
        file_error(
            key_path,
            format!("no private key in it (expected a PEM PKCS#8, RSA or EC private key): {e}"),
        )
    })?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| file_error(key_path, format!("unusable private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(TlsError::Mismatch {
                cert: cert_path.to_path_buf(),
                key: key_path.to_path_buf(),
            });
        }
        // rustls cannot compare this kind of key; the handshake is the judge then.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(e) => return Err(file_error(cert_path, e.to_string())),
    }
    let expires = not_after.to_date_time().to_string();
    Ok(Loaded {
        certified,
        subject,
        not_after: not_after.to_system_time(),
        expires,
    })
}

/// The certificate's subject (RFC 4514) and the end of its validity.
fn describe(
    cert: &CertificateDer<'_>,
) -> Result<(String, x509_cert::time::Time), x509_cert::der::Error> {
    use x509_cert::der::Decode;
    let parsed = x509_cert::Certificate::from_der(cert.as_ref())?;
    let tbs = parsed.tbs_certificate;
    Ok((tbs.subject.to_string(), tbs.validity.not_after))
}

fn log_loaded(cert: &Path, loaded: &Loaded, message: &str) {
    let chain = loaded.certified.cert.len();
    tracing::info!(
        cert = %cert.display(),
        subject = %loaded.subject,
        expires = %loaded.expires,
        chain,
        "{message}"
    );
    if loaded.not_after < SystemTime::now() {
        tracing::warn!(
            cert = %cert.display(),
            expires = %loaded.expires,
            "the TLS certificate has expired; clients will refuse it"
        );
    }
}

/// A TLS connection on the gRPC port, as tonic takes it: the stream, and the peer's address
/// for its request extensions.
pub(crate) struct GrpcTlsStream(pub(crate) tokio_rustls::server::TlsStream<TcpStream>);

impl tonic::transport::server::Connected for GrpcTlsStream {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.get_ref().0.connect_info()
    }
}

impl AsyncRead for GrpcTlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for GrpcTlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `localhost` whose subject's common name is `name`, as PEM
    /// (certificate, key).
    fn pair(name: &str) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn parse(cert: &str, key: &str) -> Result<Loaded, TlsError> {
        parse_pair(
            Path::new("tls.crt"),
            Path::new("tls.key"),
            &Ok(cert.as_bytes().to_vec()),
            &Ok(key.as_bytes().to_vec()),
            &ring_provider(),
        )
    }

    #[test]
    fn a_pair_loads_with_its_subject_and_expiry() {
        let (cert, key) = pair("flagd-one");
        let loaded = parse(&cert, &key).unwrap();
        assert_eq!(loaded.subject, "CN=flagd-one");
        assert!(loaded.not_after > SystemTime::now(), "{}", loaded.expires);
        assert!(loaded.expires.ends_with('Z'), "{}", loaded.expires);
        // A chain: the certificate, then what signed it (here, another one).
        let (other, _) = pair("issuer");
        let loaded = parse(&format!("{cert}{other}"), &key).unwrap();
        assert_eq!(loaded.certified.cert.len(), 2);
    }

    #[test]
    fn bad_pairs_are_refused_naming_the_file_and_the_problem() {
        let (cert, key) = pair("flagd-one");
        let (_, other_key) = pair("flagd-two");
        let check = |cert: &str, key: &str, expected: &str| {
            let message = parse(cert, key).err().map(|e| e.to_string());
            assert!(
                message.as_deref().is_some_and(|m| m.starts_with(expected)),
                "{message:?} does not start with {expected:?}"
            );
        };
        check(
            &cert,
            &other_key,
            "the key in tls.key does not match the certificate in tls.crt",
        );
        check("not pem", &key, "tls.crt: no certificate in it");
        check(&key, &key, "tls.crt: no certificate in it");
        check(
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            &key,
            "tls.crt: not an X.509 certificate",
        );
        check(
            "-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n",
            &key,
            "tls.crt: not a PEM certificate chain",
        );
        check(&cert, &cert, "tls.key: no private key in it");
        let unreadable = parse_pair(
            Path::new("tls.crt"),
            Path::new("tls.key"),
            &Ok(cert.into_bytes()),
            &Err("No such file or directory (os error 2)".to_owned()),
            &ring_provider(),
        );
        assert_eq!(
            unreadable.err().map(|e| e.to_string()).as_deref(),
            Some("tls.key: cannot read the key: No such file or directory (os error 2)")
        );
    }

    #[test]
    fn one_file_alone_is_an_error() {
        let cert_only = TlsConfig {
            cert: Some(PathBuf::from("c")),
            key: None,
        };
        let message = cert_only.paths().unwrap_err().to_string();
        assert!(
            message.starts_with(
                "TLS needs both a certificate and its key: the certificate is set but the key is not"
            ),
            "{message}"
        );
        let key_only = TlsConfig {
            cert: None,
            key: Some(PathBuf::from("k")),
        };
        assert!(key_only.paths().is_err());
        assert_eq!(TlsConfig::default().paths().unwrap(), None);
    }

    #[test]
    fn a_reload_swaps_in_a_good_pair_and_keeps_the_last_one_for_a_bad_pair() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let write = |cert: &str, key: &str| {
            std::fs::write(&cert_path, cert).unwrap();
            std::fs::write(&key_path, key).unwrap();
        };
        let (cert_one, key_one) = pair("one");
        write(&cert_one, &key_one);
        let files = CertFiles::load(
            cert_path.clone(),
            key_path.clone(),
            Arc::new(ring_provider()),
        )
        .unwrap();
        let served = || describe(&files.resolver.current.load().cert[0]).unwrap().0;
        assert_eq!(served(), "CN=one");
        assert_eq!(
            files.reload_settled(Duration::ZERO),
            ReloadOutcome::Unchanged
        );

        let (cert_two, key_two) = pair("two");
        write(&cert_two, &key_one);
        let outcome = files.reload_settled(Duration::ZERO);
        assert!(
            matches!(&outcome, ReloadOutcome::Failed(m) if m.contains("does not match")),
            "{outcome:?}"
        );
        assert_eq!(served(), "CN=one", "the last good pair keeps serving");
        assert_eq!(
            files.reload_settled(Duration::ZERO),
            ReloadOutcome::Unchanged,
            "a bad pair is looked at once"
        );

        write(&cert_two, &key_two);
        assert_eq!(
            files.reload_settled(Duration::ZERO),
            ReloadOutcome::Loaded { changes: 1 }
        );
        assert_eq!(served(), "CN=two");

        std::fs::remove_file(&key_path).unwrap();
        assert!(matches!(
            files.reload_settled(Duration::ZERO),
            ReloadOutcome::Failed(_)
        ));
        assert_eq!(served(), "CN=two", "a missing key keeps the last good pair");
    }
}
