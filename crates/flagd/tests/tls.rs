//! TLS, end to end, against the `flagd` binary: HTTPS on the HTTP port (health, an evaluation,
//! HTTP/2 by ALPN) and nothing for a plain-HTTP client; a renewed certificate presented to new
//! connections within moments, on both ports, and a bad one refused while the old one serves;
//! gRPC over TLS from tonic's client; one of certificate and key alone, or a pair that does not
//! match, refused at start. And flagd as a TLS client: `rediss://` and `sslmode=verify-full`
//! URLs through a TLS front to the tests' Redis and PostgreSQL, and TLS failures named as such
//! (a server certificate nobody vouches for, a database server without TLS). `flagd health`
//! probes HTTPS (checked against the system's CA store, or not with `--insecure`) and HTTP.
//!
//! Certificates are made here with rcgen: self-signed, for `localhost` and `127.0.0.1`, each
//! with a subject of its own so the tests can tell which one a server presented.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use flags_proto::v1::flag_evaluator_service_client::FlagEvaluatorServiceClient;
use flags_proto::v1::{EvaluateRequest, EvaluationContext, evaluation_context, flag_value};
use flags_test_support::process::{FlagdProcess, flagd_command};
use flags_test_support::wait::Poll;
use flags_test_support::{postgres, redis};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const FLAGS: &str = r#"{"flags": {"bool-flag": {
  "on": true, "variations": [false, true], "offVariation": 0,
  "targets": [{"values": ["targeted"], "variation": 1}], "fallthrough": {"variation": 0}
}}}"#;

/// A certificate and its key, self-signed for `localhost` and `127.0.0.1`.
struct Pair {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Pair {
    fn new(common_name: &str) -> Pair {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Pair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    /// Writes the pair as `tls.crt` and `tls.key` in `dir`, each replaced whole (written
    /// aside, then renamed over), as a deployment tool does.
    fn install(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let cert = dir.join("tls.crt");
        let key = dir.join("tls.key");
        for (path, text) in [(&cert, &self.cert_pem), (&key, &self.key_pem)] {
            let aside = path.with_extension("new");
            std::fs::write(&aside, text).unwrap();
            std::fs::rename(&aside, path).unwrap();
        }
        (cert, key)
    }
}

/// rustls on ring, which rustls 0.23.48 deprecates only for lacking post-quantum key exchange.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration trusting `roots` only, offering `alpn`.
fn client_config(roots: &[&CertificateDer<'static>], alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add((*root).clone()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// An HTTPS connection (HTTP/1.1) to `addr` from a client trusting `root` only.
struct Https {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
}

impl Https {
    async fn open(addr: &str, root: &Pair) -> Https {
        let config = client_config(&[&root.der], &[b"http/1.1"]);
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(addr).await.unwrap();
        let tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(connection);
        Https { sender }
    }

    /// Sends a request on this connection: the status and the body.
    async fn send(&mut self, method: &str, path: &str, body: &str) -> (u16, Value) {
        use http_body_util::BodyExt;
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_owned(),
            )))
            .unwrap();
        let response = self.sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// The answer to `POST /v1/evaluate/bool-flag` for the targeted user.
    async fn evaluate(&mut self) -> Value {
        let context = json!({"context": {"kind": "user", "key": "targeted"}}).to_string();
        let (status, answer) = self.send("POST", "/v1/evaluate/bool-flag", &context).await;
        assert_eq!(status, 200, "{answer}");
        answer
    }
}

/// `GET /healthz` over a new HTTPS connection trusting `root`: the status.
async fn healthz(addr: &str, root: &Pair) -> u16 {
    Https::open(addr, root)
        .await
        .send("GET", "/healthz", "")
        .await
        .0
}

/// The certificate a new connection to `addr` is shown, and the protocol ALPN chose, with a
/// client that trusts every one of `roots` and offers `alpn`.
async fn presented(
    addr: &str,
    roots: &[&CertificateDer<'static>],
    alpn: &[&[u8]],
) -> (CertificateDer<'static>, Option<Vec<u8>>) {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(roots, alpn)));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let stream = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let session = stream.get_ref().1;
    let leaf = session.peer_certificates().unwrap()[0].clone().into_owned();
    (leaf, session.alpn_protocol().map(<[u8]>::to_vec))
}

/// A flag file and a certificate in a temporary directory.
struct Setup {
    dir: tempfile::TempDir,
    flags: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Setup {
    fn new(pair: &Pair) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let flags = dir.path().join("flags.json");
        std::fs::write(&flags, FLAGS).unwrap();
        let (cert, key) = pair.install(dir.path());
        Setup {
            dir,
            flags,
            cert,
            key,
        }
    }

    /// `flagd serve` on free ports with TLS, polling its files every 100 ms.
    fn command(&self) -> Command {
        let mut command = flagd_command(env!("CARGO_BIN_EXE_flagd"));
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .arg("--file")
            .arg(&self.flags)
            .arg("--tls-cert")
            .arg(&self.cert)
            .arg("--tls-key")
            .arg(&self.key)
            .args(["--poll-interval-ms", "100", "--debounce-ms", "20"])
            .env("FLAGD_RELOAD_SETTLE_MS", "100");
        command
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_answers_and_plain_http_does_not() {
    let pair = Pair::new("flagd-test-one");
    let setup = Setup::new(&pair);
    let flagd = FlagdProcess::spawn(setup.command());

    // A client that connects and says nothing holds a slot, not the accept loop.
    let _silent = TcpStream::connect(flagd.addr()).await.unwrap();

    assert_eq!(healthz(flagd.addr(), &pair).await, 200);
    let answer = Https::open(flagd.addr(), &pair).await.evaluate().await;
    assert_eq!(answer["value"], true, "{answer}");
    assert_eq!(answer["reason"]["kind"], "TARGET_MATCH", "{answer}");
    let log = flagd.log();
    assert!(
        log.contains("TLS is on") && log.contains("CN=flagd-test-one"),
        "{log}"
    );

    // HTTP/2 by ALPN, as gRPC and HTTP/2 clients ask for it.
    let (_, alpn) = presented(flagd.addr(), &[&pair.der], &[b"h2", b"http/1.1"]).await;
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    let (_, alpn) = presented(flagd.addr(), &[&pair.der], &[b"http/1.1"]).await;
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));

    let plain = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .get(format!("http://{}/healthz", flagd.addr()))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    // The port still serves TLS after the plain client's failure.
    assert_eq!(healthz(flagd.addr(), &pair).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_serves_new_connections_and_a_bad_one_is_refused() {
    let one = Pair::new("flagd-test-one");
    let two = Pair::new("flagd-test-two");
    let setup = Setup::new(&one);
    let mut command = setup.command();
    command.args(["--grpc-listen", "127.0.0.1:0"]);
    let flagd = FlagdProcess::spawn(command);
    let grpc_addr = flagd.grpc_addr().unwrap().to_owned();
    let roots = [&one.der, &two.der];
    for addr in [flagd.addr(), grpc_addr.as_str()] {
        assert_eq!(presented(addr, &roots, &[b"h2"]).await.0, one.der);
    }

    // An open connection keeps the certificate it was shown; new ones get the new one.
    let mut kept_open = Https::open(flagd.addr(), &one).await;
    assert_eq!(kept_open.evaluate().await["value"], true);
    two.install(setup.dir.path());
    for addr in [flagd.addr(), grpc_addr.as_str()] {
        Poll::new()
            .until("the new certificate on new connections", || async {
                presented(addr, &roots, &[b"h2"]).await.0 == two.der
            })
            .await;
    }
    assert_eq!(
        kept_open.evaluate().await["value"],
        true,
        "the kept-alive connection goes on"
    );
    assert!(flagd.log().contains("CN=flagd-test-two"), "{}", flagd.log());

    // A key that is not the certificate's: refused, with the files named, and the last good
    // certificate keeps serving.
    std::fs::write(&setup.key, &one.key_pem).unwrap();
    Poll::new()
        .until("a warning about the bad pair", || async {
            flagd.log().contains("new TLS certificate refused")
        })
        .await;
    let log = flagd.log();
    let expected = format!(
        "the key in {} does not match the certificate in {}",
        setup.key.display(),
        setup.cert.display()
    );
    assert!(log.contains(&expected), "{log}");
    assert_eq!(presented(flagd.addr(), &roots, &[b"h2"]).await.0, two.der);
    // Garbage, too.
    std::fs::write(&setup.cert, "not a certificate").unwrap();
    Poll::new()
        .until("a warning about the unparsable certificate", || async {
            flagd.log().contains("no certificate in it")
        })
        .await;
    assert_eq!(presented(flagd.addr(), &roots, &[b"h2"]).await.0, two.der);
    assert_eq!(healthz(flagd.addr(), &two).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_evaluates_over_tls() {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
    let pair = Pair::new("flagd-test-grpc");
    let setup = Setup::new(&pair);
    let mut command = setup.command();
    command.args(["--grpc-listen", "127.0.0.1:0"]);
    let flagd = FlagdProcess::spawn(command);
    let port = flagd.grpc_addr().unwrap().rsplit(':').next().unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pair.cert_pem))
        .domain_name("localhost");
    let channel = Endpoint::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let answer = FlagEvaluatorServiceClient::new(channel)
        .evaluate(EvaluateRequest {
            flag_id: "bool-flag".to_owned(),
            context: Some(EvaluationContext {
                context: Some(evaluation_context::Context::Json(
                    json!({"kind": "user", "key": "targeted"}).to_string(),
                )),
            }),
            default_value: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        answer.value.unwrap().value,
        Some(flag_value::Value::BoolValue(true))
    );

    // And a plain-text gRPC client gets nowhere.
    let plain = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await;
    if let Ok(channel) = plain {
        let refused = FlagEvaluatorServiceClient::new(channel)
            .evaluate(EvaluateRequest::default())
            .await;
        assert!(refused.is_err(), "{refused:?}");
    }
}

/// Runs `flagd serve` as `command` says, which must fail at start, and returns its error.
fn start_error(mut command: Command) -> String {
    let output = command.output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    String::from_utf8(output.stderr).unwrap()
}

#[test]
fn one_file_alone_or_a_mismatched_pair_stops_the_start() {
    let one = Pair::new("flagd-test-one");
    let setup = Setup::new(&one);
    let serve = || {
        let mut command = flagd_command(env!("CARGO_BIN_EXE_flagd"));
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--file"])
            .arg(&setup.flags);
        command
    };

    let mut cert_only = serve();
    cert_only.arg("--tls-cert").arg(&setup.cert);
    let error = start_error(cert_only);
    assert!(
        error.contains(
            "cannot serve TLS: TLS needs both a certificate and its key: the certificate is set \
             but the key is not"
        ),
        "{error}"
    );
    let mut key_only = serve();
    key_only.env("FLAGD_TLS_KEY", &setup.key);
    let error = start_error(key_only);
    assert!(
        error.contains("the key is set but the certificate is not"),
        "{error}"
    );

    let other = Pair::new("flagd-test-other");
    std::fs::write(&setup.key, &other.key_pem).unwrap();
    let mut mismatched = serve();
    mismatched
        .arg("--tls-cert")
        .arg(&setup.cert)
        .arg("--tls-key")
        .arg(&setup.key);
    let error = start_error(mismatched);
    assert!(error.contains("does not match the certificate"), "{error}");

    let mut missing = serve();
    missing
        .arg("--tls-cert")
        .arg(setup.dir.path().join("absent.crt"))
        .arg("--tls-key")
        .arg(&setup.key);
    let error = start_error(missing);
    assert!(
        error.contains("absent.crt: cannot read the certificate"),
        "{error}"
    );
}

/// A TLS front to a plain server at `backend`, as a TLS-terminating proxy would be: it
/// presents `pair` and passes bytes through. With `postgres`, it first answers PostgreSQL's
/// `SSLRequest` with `S`, as a server that speaks TLS does. Counts the handshakes it completed.
async fn tls_front(backend: SocketAddr, pair: &Pair, postgres: bool) -> (u16, Arc<AtomicUsize>) {
    let key = PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![pair.der.clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&handshakes);
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, counted) = (acceptor.clone(), Arc::clone(&counted));
            tokio::spawn(async move {
                if postgres {
                    // SSLRequest: length 8, then the code 80877103.
                    let mut request = [0_u8; 8];
                    client.read_exact(&mut request).await?;
                    assert_eq!(request, [0, 0, 0, 8, 4, 210, 22, 47], "not an SSLRequest");
                    client.write_all(b"S").await?;
                }
                let mut tls = acceptor.accept(client).await?;
                counted.fetch_add(1, Ordering::SeqCst);
                let mut server = TcpStream::connect(backend).await?;
                tokio::io::copy_bidirectional(&mut tls, &mut server).await?;
                Ok::<_, std::io::Error>(())
            });
        }
    });
    (port, handshakes)
}

/// The address of a `redis://` or `postgres://` URL's server.
fn server_addr(url: &str) -> SocketAddr {
    let authority = url.split("://").nth(1).unwrap().split('/').next().unwrap();
    let host_port = authority.rsplit('@').next().unwrap();
    let host_port = host_port.replace("localhost", "127.0.0.1");
    std::net::ToSocketAddrs::to_socket_addrs(&host_port)
        .unwrap()
        .next()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_urls_reach_redis_over_tls() {
    let pair = Pair::new("redis-front");
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pair.cert_pem).unwrap();
    let flags = dir.path().join("flags.json");
    std::fs::write(&flags, FLAGS).unwrap();
    let (port, handshakes) = tls_front(server_addr(redis().url()), &pair, false).await;
    let prefix = redis().unique_prefix("flagd-tls-test");

    let mut command = flagd_command(env!("CARGO_BIN_EXE_flagd"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--file"])
        .arg(&flags)
        .args(["--redis-url", &format!("rediss://localhost:{port}")])
        .args(["--redis-prefix", &prefix])
        // The system's CA store, as rustls-native-certs reads it, holds the test's certificate.
        .env("SSL_CERT_FILE", &ca);
    let flagd = FlagdProcess::spawn(command);
    let connection = redis::Client::open(redis().url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let features = format!("{prefix}:features");
    Poll::new()
        .until("flagd to write its flags through the TLS front", || {
            let (mut connection, features) = (connection.clone(), features.clone());
            async move {
                let written: Option<String> = redis::cmd("HGET")
                    .arg(features)
                    .arg("bool-flag")
                    .query_async(&mut connection)
                    .await
                    .unwrap();
                written.is_some()
            }
        })
        .await;
    assert!(handshakes.load(Ordering::SeqCst) > 0);
    drop(flagd);

    // A front whose certificate the system's CA store does not vouch for: refused, and the
    // error says why.
    let stranger = Pair::new("stranger");
    let (port, handshakes) = tls_front(server_addr(redis().url()), &stranger, false).await;
    let mut command = flagd_command(env!("CARGO_BIN_EXE_flagd"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--file"])
        .arg(&flags)
        .args(["--redis-url", &format!("rediss://localhost:{port}")])
        .args(["--redis-prefix", &prefix])
        .env("SSL_CERT_FILE", &ca);
    let flagd = FlagdProcess::spawn(command);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let error = Poll::new()
        .until_some("the Redis error on /readyz", || async {
            let ready = client
                .get(format!("{}/readyz", flagd.url()))
                .send()
                .await
                .ok()?
                .bytes()
                .await
                .ok()?;
            let ready: Value = serde_json::from_slice(&ready).ok()?;
            ready["redis"]["environments"]["default"]["lastError"]
                .as_str()
                .filter(|e| !e.is_empty())
                .map(str::to_owned)
        })
        .await;
    assert!(
        error.contains("invalid peer certificate: UnknownIssuer"),
        "{error}"
    );
    assert_eq!(handshakes.load(Ordering::SeqCst), 0);
}

#[test]
fn postgres_urls_with_sslmode_reach_postgres_over_tls() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let pair = Pair::new("postgres-front");
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pair.cert_pem).unwrap();
    let database = postgres().create_database();
    let backend = server_addr(database.url());
    let (port, handshakes) = runtime.block_on(tls_front(backend, &pair, true));
    // `postgres://USER@HOST:PORT/NAME`, as flags-test-support makes them.
    let after = database.url().split_once("://").unwrap().1;
    let path = after.split_once('/').unwrap().1;
    let user = after.split_once('@').map_or("postgres", |(user, _)| user);
    let url = format!(
        "postgres://{user}@localhost:{port}/{path}?sslmode=verify-full&sslrootcert={}",
        ca.display()
    );
    let migrate = |url: &str| {
        let mut command = flagd_command(env!("CARGO_BIN_EXE_flagd"));
        command.args(["migrate", "--database", url]);
        command.output().unwrap()
    };
    let output = migrate(&url);
    assert!(output.status.success(), "{output:?}");
    assert!(handshakes.load(Ordering::SeqCst) > 0);

    // `sslmode=require` against a front that does not speak TLS: the error names TLS.
    let plain = TcpListener::bind("127.0.0.1:0");
    let plain = runtime.block_on(plain).unwrap();
    let plain_port = plain.local_addr().unwrap().port();
    runtime.spawn(async move {
        // Refuses SSLRequest with `N`, as a server without TLS does.
        while let Ok((mut client, _)) = plain.accept().await {
            let mut request = [0_u8; 8];
            if client.read_exact(&mut request).await.is_ok() {
                let _ = client.write_all(b"N").await;
            }
        }
    });
    let output = migrate(&format!(
        "postgres://{user}@127.0.0.1:{plain_port}/{path}?sslmode=require"
    ));
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let error = String::from_utf8(output.stderr).unwrap();
    assert!(error.contains("TLS"), "{error}");
}

/// Runs `flagd health` with `args` (and `env`): its exit code and what it printed.
fn health(args: &[&str], env: &[(&str, &Path)]) -> (Option<i32>, String) {
    let mut command = flagd_command(env!("CARGO_BIN_EXE_flagd"));
    command.arg("health").args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), said)
}

#[test]
fn the_health_command_probes_http_and_https() {
    let pair = Pair::new("flagd-test-health");
    let setup = Setup::new(&pair);
    let flagd = FlagdProcess::spawn(setup.command());
    let port = flagd.addr().rsplit(':').next().unwrap().to_owned();
    let https = format!("https://localhost:{port}/healthz");

    // The certificate is checked against the system's CA store, here the test's own.
    let (code, said) = health(&["--url", &https], &[("SSL_CERT_FILE", &setup.cert)]);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains(&format!("{https}: 200")), "{said}");
    let (code, said) = health(&["--url", &https], &[]);
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains("TLS handshake failed") && said.contains("UnknownIssuer"),
        "{said}"
    );
    // Unless told not to.
    let (code, said) = health(&["--url", &https, "--insecure"], &[]);
    assert_eq!(code, Some(0), "{said}");
    // A URL that is not 2xx, and an http URL to a TLS port.
    let missing = format!("https://localhost:{port}/no-such-page");
    let (code, said) = health(&["--url", &missing, "--insecure"], &[]);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains(": 404"), "{said}");
    let (code, _) = health(&["--url", &format!("http://127.0.0.1:{port}/healthz")], &[]);
    assert_eq!(code, Some(1));
    drop(flagd);

    // Plain HTTP, at the port FLAGD_LISTEN names when no URL is given.
    let mut plain = flagd_command(env!("CARGO_BIN_EXE_flagd"));
    plain
        .args(["serve", "--listen", "127.0.0.1:0", "--file"])
        .arg(&setup.flags);
    let flagd = FlagdProcess::spawn(plain);
    let listen = PathBuf::from(format!(
        "0.0.0.0:{}",
        flagd.addr().rsplit(':').next().unwrap()
    ));
    let (code, said) = health(&[], &[("FLAGD_LISTEN", &listen)]);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("/healthz: 200"), "{said}");
    drop(flagd);
    let (code, said) = health(&[], &[("FLAGD_LISTEN", &listen)]);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("cannot connect"), "{said}");
}
