//! Listeners: accept loops for MQTT over TCP, TLS (rustls, optional client certificates) and
//! WebSocket (path and `mqtt` subprotocol checked), each handing streams to `connection::serve`.

use std::io::BufReader;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use async_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use super::connection::{Peer, serve};
use crate::auth::CertIdentity;
use crate::broker::{Broker, BrokerError};
use crate::config::TlsListenerConfig;

/// Addresses the listeners are bound to (useful with port 0).
#[derive(Debug, Default, Clone)]
pub struct Bound {
    pub tcp: Option<SocketAddr>,
    pub ws: Option<SocketAddr>,
    pub tls: Option<SocketAddr>,
    /// The management API (set by `Server::start`).
    pub admin: Option<SocketAddr>,
}

async fn bind(kind: &str, addr: SocketAddr) -> Result<TcpListener, BrokerError> {
    TcpListener::bind(addr).await.map_err(|e| BrokerError::Listener(format!("{kind} listener on {addr}: {e}")))
}

/// Binds every enabled listener and spawns its accept loop on `tracker`.
pub async fn start(broker: &Arc<Broker>, tracker: &TaskTracker) -> Result<Bound, BrokerError> {
    let cfg = &broker.config.listeners;
    let mut bound = Bound::default();
    if cfg.tcp.enabled {
        let l = bind("tcp", cfg.tcp.bind).await?;
        bound.tcp = l.local_addr().ok();
        tracing::info!(addr = ?bound.tcp, "MQTT over TCP listening");
        tracker.spawn(accept_loop(broker.clone(), tracker.clone(), l, Kind::Tcp));
    }
    if cfg.ws.enabled {
        let l = bind("ws", cfg.ws.bind).await?;
        bound.ws = l.local_addr().ok();
        tracing::info!(addr = ?bound.ws, path = %cfg.ws.path, "MQTT over WebSocket listening");
        tracker.spawn(accept_loop(broker.clone(), tracker.clone(), l, Kind::Ws(Arc::from(cfg.ws.path.as_str()))));
    }
    if cfg.tls.enabled {
        let acceptor = tls_acceptor(&cfg.tls)?;
        let l = bind("tls", cfg.tls.bind).await?;
        bound.tls = l.local_addr().ok();
        tracing::info!(addr = ?bound.tls, mutual = cfg.tls.ca_file.is_some(), "MQTT over TLS listening");
        tracker.spawn(accept_loop(broker.clone(), tracker.clone(), l, Kind::Tls(acceptor)));
    }
    Ok(bound)
}

#[derive(Clone)]
enum Kind {
    Tcp,
    Ws(Arc<str>),
    Tls(TlsAcceptor),
}

async fn accept_loop(broker: Arc<Broker>, tracker: TaskTracker, listener: TcpListener, kind: Kind) {
    loop {
        let accepted = tokio::select! {
            _ = broker.shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait a moment instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let broker = broker.clone();
        let kind = kind.clone();
        // One task per connection, sized for its own kind: a TCP connection does not carry the
        // (much larger) TLS and WebSocket handshake state.
        match kind.clone() {
            Kind::Tcp => tracker.spawn(serve(broker, stream, Peer { addr, listener: "tcp", cert: None })),
            Kind::Ws(path) => tracker.spawn(serve_ws(broker, stream, addr, path)),
            Kind::Tls(acceptor) => tracker.spawn(serve_tls(broker, stream, addr, acceptor)),
        };
    }
}

async fn serve_ws(broker: Arc<Broker>, stream: TcpStream, addr: SocketAddr, path: Arc<str>) {
    let timeout = Duration::from_secs(broker.limits().connect_timeout_secs);
    match tokio::time::timeout(timeout, ws_accept(stream, &path)).await {
        Ok(Ok(ws)) => Box::pin(serve(broker, ws, Peer { addr, listener: "ws", cert: None })).await,
        Ok(Err(e)) => tracing::debug!(peer = %addr, error = %e, "WebSocket handshake failed"),
        Err(_) => tracing::debug!(peer = %addr, "WebSocket handshake timed out"),
    }
}

async fn serve_tls(broker: Arc<Broker>, stream: TcpStream, addr: SocketAddr, acceptor: TlsAcceptor) {
    let timeout = Duration::from_secs(broker.limits().connect_timeout_secs);
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            let cert = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| cert_identity(c));
            Box::pin(serve(broker, tls, Peer { addr, listener: "tls", cert })).await
        }
        Ok(Err(e)) => tracing::info!(peer = %addr, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(peer = %addr, "TLS handshake timed out"),
    }
}

type WsStream = ws_stream_tungstenite::WsStream<async_tungstenite::tokio::TokioAdapter<TcpStream>>;

/// The WebSocket upgrade: only on the configured path; the `mqtt` subprotocol is echoed back.
async fn ws_accept(stream: TcpStream, path: &str) -> Result<WsStream, async_tungstenite::tungstenite::Error> {
    let path = path.to_string();
    #[allow(clippy::result_large_err)] // the signature tungstenite asks for
    let callback = move |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        if req.uri().path() != path {
            let mut e = ErrorResponse::new(Some(format!("MQTT is served on {path}")));
            *e.status_mut() = StatusCode::NOT_FOUND;
            return Err(e);
        }
        let offered = req
            .headers()
            .get_all("Sec-WebSocket-Protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .find(|p| *p == "mqtt" || *p == "mqttv3.1")
            .map(str::to_string);
        if let Some(p) = offered
            && let Ok(v) = HeaderValue::from_str(&p)
        {
            resp.headers_mut().insert("Sec-WebSocket-Protocol", v);
        }
        Ok(resp)
    };
    let ws = async_tungstenite::tokio::accept_hdr_async(stream, callback).await?;
    Ok(ws_stream_tungstenite::WsStream::new(ws))
}

fn tls_acceptor(cfg: &TlsListenerConfig) -> Result<TlsAcceptor, BrokerError> {
    let err = |what: &str, e: String| BrokerError::Listener(format!("tls {what}: {e}"));
    let certs: Vec<CertificateDer<'static>> = {
        let f = std::fs::File::open(&cfg.cert_file)
            .map_err(|e| err(&cfg.cert_file.display().to_string(), e.to_string()))?;
        rustls_pemfile::certs(&mut BufReader::new(f))
            .collect::<Result<_, _>>()
            .map_err(|e| err("cert_file", e.to_string()))?
    };
    if certs.is_empty() {
        return Err(err("cert_file", "no certificate found".into()));
    }
    let key: PrivateKeyDer<'static> = {
        let f =
            std::fs::File::open(&cfg.key_file).map_err(|e| err(&cfg.key_file.display().to_string(), e.to_string()))?;
        rustls_pemfile::private_key(&mut BufReader::new(f))
            .map_err(|e| err("key_file", e.to_string()))?
            .ok_or_else(|| err("key_file", "no private key found".into()))?
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| err("config", e.to_string()))?;
    let builder = match &cfg.ca_file {
        Some(ca) => {
            let f = std::fs::File::open(ca).map_err(|e| err(&ca.display().to_string(), e.to_string()))?;
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pemfile::certs(&mut BufReader::new(f)) {
                roots.add(c.map_err(|e| err("ca_file", e.to_string()))?).map_err(|e| err("ca_file", e.to_string()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if cfg.require_client_cert { verifier } else { verifier.allow_unauthenticated() };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| err("ca_file", e.to_string()))?)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(certs, key).map_err(|e| err("cert/key", e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Common Name and Organization of a (verified) client certificate.
fn cert_identity(der: &CertificateDer<'_>) -> CertIdentity {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
        return CertIdentity::default();
    };
    let subject = cert.subject();
    let first = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue<'_>>| {
        it.next().and_then(|a| a.as_str().ok()).map(str::to_string)
    };
    CertIdentity {
        common_name: first(&mut subject.iter_common_name()),
        organization: first(&mut subject.iter_organization()),
    }
}
