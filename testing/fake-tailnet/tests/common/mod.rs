//! Small clients for the fake tailnet's tests: raw DNS over UDP/TCP, HTTP/1.1 over any stream.

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Request body type used by the helpers.
pub type ReqBody = BoxBody<Bytes, Infallible>;

/// A complete response.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// A header value as a string ("" if missing).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// A DNS query message for `name`/`rtype`.
fn query(name: &str, rtype: RecordType) -> Vec<u8> {
    let mut msg = Message::query();
    msg.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    msg.metadata.recursion_desired = true;
    msg.to_vec().unwrap()
}

/// Sends one query over UDP; `None` if no answer arrives within `wait`.
pub async fn dns_udp(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    wait: Duration,
) -> Option<Message> {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&query(name, rtype), server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(wait, sock.recv_from(&mut buf))
        .await
        .ok()?
        .unwrap();
    Some(Message::from_vec(&buf[..n]).unwrap())
}

/// Sends one query over TCP; `None` if no answer arrives within `wait`.
pub async fn dns_tcp(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    wait: Duration,
) -> Option<Message> {
    let mut stream = TcpStream::connect(server).await.unwrap();
    let q = query(name, rtype);
    stream
        .write_all(&(q.len() as u16).to_be_bytes())
        .await
        .unwrap();
    stream.write_all(&q).await.unwrap();
    let read = async {
        let len = stream.read_u16().await.ok()? as usize;
        let mut buf = vec![0u8; len];
        stream.read_exact(&mut buf).await.ok()?;
        Some(buf)
    };
    let buf = tokio::time::timeout(wait, read).await.ok()??;
    Some(Message::from_vec(&buf).unwrap())
}

/// The IPv4 addresses in a DNS answer section.
pub fn a_records(msg: &Message) -> Vec<std::net::Ipv4Addr> {
    msg.answers
        .iter()
        .filter_map(|r| match &r.data {
            hickory_proto::rr::RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

/// A TLS connector trusting only the CA certificates in `ca_pem` (ring provider).
pub fn tls_connector(ca_pem: &str) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// Connects with TLS to `addr`, sending `sni` and verifying against `ca_pem`.
pub async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    ca_pem: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_string()).unwrap();
    tls_connector(ca_pem).connect(name, tcp).await
}

/// An HTTP/1.1 client connection over any stream.
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<ReqBody>,
}

impl Client {
    /// Performs the HTTP/1.1 handshake over `io`.
    pub async fn new<S>(io: S) -> Self
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .unwrap();
        tokio::spawn(conn);
        Self { sender }
    }

    /// Plain TCP connection to `addr`.
    pub async fn plain(addr: SocketAddr) -> Self {
        Self::new(TcpStream::connect(addr).await.unwrap()).await
    }

    /// Sends a request and reads the whole response.
    pub async fn send(&mut self, req: Request<ReqBody>) -> Reply {
        self.sender.ready().await.unwrap();
        let res = self.sender.send_request(req).await.unwrap();
        let (parts, body) = res.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// `GET target` with `Host: host`.
    pub async fn get(&mut self, host: &str, target: &str) -> Reply {
        self.send(get(host, target)).await
    }
}

/// A `GET` request with an empty body.
pub fn get(host: &str, target: &str) -> Request<ReqBody> {
    Request::get(target)
        .header("host", host)
        .body(Full::new(Bytes::new()).boxed())
        .unwrap()
}
