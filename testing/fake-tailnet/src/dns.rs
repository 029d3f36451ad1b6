//! The fake MagicDNS server: A answers for the tailnet's fqdns over UDP and TCP.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;

use crate::FakeTailnetError;

/// How long an idle DNS-over-TCP connection is kept open.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often to retry finding a port that is free for both UDP and TCP.
const PORT_ATTEMPTS: u32 = 32;

/// The mutable state behind the DNS server, shared with the [`crate::FakeTailnet`] handle.
#[derive(Debug, Default)]
pub(crate) struct DnsState {
    answers: RwLock<HashMap<String, Vec<Ipv4Addr>>>,
    ttl: AtomicU32,
    silent: AtomicBool,
    queries: AtomicU64,
}

/// Lowercases a name and strips its trailing dot, the form used as a map key.
fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl DnsState {
    /// New state answering nothing, with the given TTL.
    pub(crate) fn new(ttl: u32) -> Self {
        let state = Self::default();
        state.ttl.store(ttl, Ordering::Relaxed);
        state
    }

    /// Sets the A answer for `fqdn` (an empty list means "name exists, no addresses").
    pub(crate) fn set_answer(&self, fqdn: &str, ips: Vec<Ipv4Addr>) {
        let mut answers = self.answers.write().unwrap_or_else(|e| e.into_inner());
        answers.insert(normalize(fqdn), ips);
    }

    /// Removes `fqdn`, so that it gets NXDOMAIN.
    pub(crate) fn remove_answer(&self, fqdn: &str) {
        let mut answers = self.answers.write().unwrap_or_else(|e| e.into_inner());
        answers.remove(&normalize(fqdn));
    }

    /// The current answer for `fqdn`, if the name exists.
    pub(crate) fn lookup(&self, fqdn: &str) -> Option<Vec<Ipv4Addr>> {
        let answers = self.answers.read().unwrap_or_else(|e| e.into_inner());
        answers.get(&normalize(fqdn)).cloned()
    }

    /// Turns silent mode (no responses at all) on or off.
    pub(crate) fn set_silent(&self, silent: bool) {
        self.silent.store(silent, Ordering::Relaxed);
    }

    /// Changes the TTL of future answers.
    pub(crate) fn set_ttl(&self, ttl: u32) {
        self.ttl.store(ttl, Ordering::Relaxed);
    }

    /// Number of queries received so far, including dropped ones.
    pub(crate) fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }
}

/// The hickory request handler answering from a [`DnsState`].
pub(crate) struct Handler {
    state: Arc<DnsState>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        self.state.queries.fetch_add(1, Ordering::Relaxed);
        if self.state.silent.load(Ordering::Relaxed) {
            return unsent(request, ResponseCode::NoError);
        }
        match self.respond(request, response_handle).await {
            Ok(info) => info,
            Err(_) => unsent(request, ResponseCode::ServFail),
        }
    }
}

impl Handler {
    /// Builds and sends the answer to one request.
    async fn respond<R: ResponseHandler>(
        &self,
        request: &Request,
        mut handle: R,
    ) -> Result<ResponseInfo, hickory_server::net::NetError> {
        let builder = MessageResponseBuilder::from_message_request(request);
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        let query = match request.request_info() {
            Ok(info) if request.metadata.op_code == OpCode::Query => info.query,
            _ => {
                let msg = builder.error_msg(&request.metadata, ResponseCode::FormErr);
                return handle.send_response(msg).await;
            }
        };
        let Some(ips) = self.state.lookup(&query.name().to_string()) else {
            metadata.response_code = ResponseCode::NXDomain;
            return handle
                .send_response(builder.build_no_records(metadata))
                .await;
        };
        let records: Vec<Record> = match query.query_type() {
            RecordType::A => {
                let ttl = self.state.ttl.load(Ordering::Relaxed);
                let name = query.original().name().clone();
                ips.iter()
                    .map(|ip| Record::from_rdata(name.clone(), ttl, RData::A(A(*ip))))
                    .collect()
            }
            _ => Vec::new(),
        };
        let msg = builder.build(metadata, records.iter(), [], [], []);
        handle.send_response(msg).await
    }
}

/// A [`ResponseInfo`] for a request that got no response on the wire.
fn unsent(request: &Request, code: ResponseCode) -> ResponseInfo {
    let mut metadata = Metadata::new(
        request.metadata.id,
        MessageType::Response,
        request.metadata.op_code,
    );
    metadata.response_code = code;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

/// Binds UDP and TCP on the same address; with port 0, finds a port free for both.
pub(crate) fn bind(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), FakeTailnetError> {
    if addr.port() != 0 {
        let udp = UdpSocket::bind(addr).map_err(|e| bind_err("UDP", addr, e))?;
        let tcp = TcpListener::bind(addr).map_err(|e| bind_err("TCP", addr, e))?;
        return Ok((udp, tcp));
    }
    for _ in 0..PORT_ATTEMPTS {
        let udp = UdpSocket::bind(addr).map_err(|e| bind_err("UDP", addr, e))?;
        let same = udp.local_addr().map_err(|e| bind_err("UDP", addr, e))?;
        match TcpListener::bind(same) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(bind_err("TCP", same, e)),
        }
    }
    Err(FakeTailnetError::AddressesExhausted {
        what: format!("DNS UDP+TCP on {}", addr.ip()),
        attempts: PORT_ATTEMPTS,
    })
}

/// An I/O error while binding a DNS socket.
fn bind_err(proto: &str, addr: SocketAddr, e: io::Error) -> FakeTailnetError {
    FakeTailnetError::io(format!("bind DNS {proto} socket {addr}"), e)
}

/// Starts serving `state` on the bound sockets; must run inside a tokio runtime.
pub(crate) fn serve(
    state: Arc<DnsState>,
    udp: UdpSocket,
    tcp: TcpListener,
) -> Result<Server<Handler>, FakeTailnetError> {
    let nonblocking = |e| FakeTailnetError::io("prepare DNS sockets", e);
    udp.set_nonblocking(true).map_err(nonblocking)?;
    tcp.set_nonblocking(true).map_err(nonblocking)?;
    let udp = tokio::net::UdpSocket::from_std(udp).map_err(nonblocking)?;
    let tcp = tokio::net::TcpListener::from_std(tcp).map_err(nonblocking)?;
    let mut server = Server::new(Handler { state });
    server.register_socket(udp);
    server.register_listener(tcp, TCP_IDLE_TIMEOUT, 32);
    Ok(server)
}
