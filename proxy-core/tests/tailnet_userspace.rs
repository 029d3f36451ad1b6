//! The userspace tailnet transport (`transport = "tailscale-rs"`, cargo feature
//! `tailscale-rs`) end to end, without a coordination server: the proxy dials through two of
//! tailscale-rs's own in-memory network stacks joined by a pipe (its `ts_netstack_smoltcp`
//! piped pair, the one its `tcp_pingpong_pipe_async` example uses). The far stack's listeners
//! bridge to the fake tailnet's HTTP and HTTPS peers over loopback, so requests go client ->
//! proxy -> virtual TCP stream -> fake peer, with TLS and SNI over the virtual stream.

mod common;

use async_trait::async_trait;
use common::*;
use fake_tailnet::ca_cert_pem_path;
use proxy_core::tailnet::{TailnetDialer, TailnetError, TailnetState, TailnetStream};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use ts_netstack_smoltcp::netcore::{Channel, HasChannel, NetstackControl};
use ts_netstack_smoltcp::CreateSocket;

/// The proxy's node on the in-memory tailnet.
const NEAR_IP: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
/// The peer node every dial reaches (see [`PipedTailnet::connect`]).
const FAR_IP: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);
/// A tailnet address nobody holds: a dial to it is never answered.
const SILENT_IP: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 99);

/// What the far node does with a connection to one of its ports.
#[derive(Clone)]
enum FarPort {
    /// Relays it to this address on loopback (a fake tailnet peer), closing both sides as soon
    /// as either side ends.
    Bridge(SocketAddr),
    /// Reads one request head, answers `200 ok` with keep-alive, then closes.
    AnswerOnceThenClose,
    /// Reads one request head and closes without an answer.
    CloseUnanswered,
}

/// An in-memory tailnet of two tailscale-rs network stacks, and the [`TailnetDialer`] the
/// proxy uses on it. Every dial reaches the far node on the port asked for (except to
/// [`SILENT_IP`]), whatever address the upstream names: so an upstream can name the very
/// address a kernel upstream uses and still be told apart by where its answer comes from.
struct PipedTailnet {
    near: Channel,
    names: Mutex<HashMap<String, Vec<IpAddr>>>,
    state: Mutex<TailnetState>,
    dials: AtomicUsize,
    next_port: AtomicU16,
    /// Runs the stacks; shut down on drop.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for PipedTailnet {
    fn drop(&mut self) {
        // Dropped from async tests too, where a runtime may not block.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl PipedTailnet {
    /// Starts both stacks and the far node's listeners on a runtime of their own.
    fn start(ports: &[(u16, FarPort)]) -> Arc<PipedTailnet> {
        let ports = ports.to_vec();
        // Built on a thread of its own: the tests' runtime cannot block on another.
        std::thread::spawn(move || Self::start_blocking(ports))
            .join()
            .expect("start the in-memory tailnet")
    }

    fn start_blocking(ports: Vec<(u16, FarPort)>) -> Arc<PipedTailnet> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("piped-tailnet")
            .enable_all()
            .build()
            .expect("build the in-memory tailnet's runtime");
        let near = runtime.block_on(async move {
            let (mut near, mut far) = ts_netstack_smoltcp::piped_pair(Default::default());
            let (near_channel, far_channel) = (near.command_channel(), far.command_channel());
            tokio::spawn(async move { near.run_tokio().await });
            tokio::spawn(async move { far.run_tokio().await });
            near_channel
                .set_ips([NEAR_IP.into()])
                .await
                .expect("near ip");
            far_channel.set_ips([FAR_IP.into()]).await.expect("far ip");
            for (port, behaviour) in ports {
                let listener = far_channel
                    .tcp_listen((FAR_IP, port).into())
                    .await
                    .expect("far listener");
                tokio::spawn(async move {
                    while let Ok(stream) = listener.accept().await {
                        tokio::spawn(serve_far(stream, behaviour.clone()));
                    }
                });
            }
            near_channel
        });
        Arc::new(PipedTailnet {
            near,
            names: Mutex::new(HashMap::new()),
            state: Mutex::new(TailnetState::Ready),
            dials: AtomicUsize::new(0),
            next_port: AtomicU16::new(40_000),
            runtime: Some(runtime),
        })
    }

    /// Makes `name` a peer of the tailnet, at the far node's address.
    fn add_peer(&self, name: &str) {
        let mut names = self.names.lock().expect("names");
        names.insert(name.to_string(), vec![FAR_IP.into()]);
    }

    /// Connections opened through the dialer so far.
    fn dials(&self) -> usize {
        self.dials.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl TailnetDialer for PipedTailnet {
    async fn connect(&self, addr: SocketAddr) -> std::io::Result<TailnetStream> {
        self.dials.fetch_add(1, Ordering::SeqCst);
        let remote = match addr.ip() {
            IpAddr::V4(ip) if ip == SILENT_IP => addr,
            _ => SocketAddr::from((FAR_IP, addr.port())),
        };
        let local = SocketAddr::from((NEAR_IP, self.next_port.fetch_add(1, Ordering::SeqCst)));
        let stream = self
            .near
            .tcp_connect(local, remote)
            .await
            .map_err(std::io::Error::from)?;
        Ok(Box::new(stream))
    }

    async fn peer_addresses(&self, name: &str) -> Result<Vec<IpAddr>, TailnetError> {
        let names = self.names.lock().expect("names");
        Ok(names.get(name).cloned().unwrap_or_default())
    }

    async fn state(&self) -> TailnetState {
        self.state.lock().expect("state").clone()
    }
}

async fn serve_far(mut stream: ts_netstack_smoltcp::netsock::TcpStream, behaviour: FarPort) {
    match behaviour {
        FarPort::Bridge(target) => {
            let Ok(mut tcp) = tokio::net::TcpStream::connect(target).await else {
                return;
            };
            let (mut from_near, mut to_near) = tokio::io::split(stream);
            let (mut from_peer, mut to_peer) = tcp.split();
            // tailscale-rs streams do not half-close (their shutdown does nothing): the
            // connection ends when either side does, and dropping the far stream sends its FIN.
            tokio::select! {
                _ = tokio::io::copy(&mut from_near, &mut to_peer) => {}
                _ = tokio::io::copy(&mut from_peer, &mut to_near) => {}
            }
        }
        FarPort::AnswerOnceThenClose => {
            if read_head(&mut stream).await {
                let answer =
                    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok";
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.flush().await;
            }
        }
        FarPort::CloseUnanswered => {
            read_head(&mut stream).await;
        }
    }
}

/// Reads until the end of a request head; false if the stream ended first.
async fn read_head(stream: &mut ts_netstack_smoltcp::netsock::TcpStream) -> bool {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    true
}

/// A site `NAME.example.com` proxying everything to upstream `NAME`.
fn site(name: &str) -> String {
    format!(
        "\n[sites.{name}]\nhosts = [\"{name}.example.com\"]\n[[sites.{name}.locations]]\nmatch = \"/\"\nproxy = \"{name}\"\n"
    )
}

/// `[tailnet]`: never joined in these tests (the in-memory dialer is handed over instead).
const TAILNET: &str = "\n[tailnet]\nstate_dir = \"tailnet-state\"\n";

/// Starts the proxy with `tailnet` as its userspace tailnet, waiting until the node is ready
/// and every peer name of the config has resolved, as `run --wait-for-tailnet` does.
fn start_edge(config: &str, tailnet: &Arc<PipedTailnet>) -> Edge {
    let dialer: Arc<dyn TailnetDialer> = tailnet.clone();
    Edge::start_with_setup(config, &[], move |services| {
        let userspace = services.userspace_tailnet();
        assert!(userspace.use_dialer(dialer), "a dialer was in use already");
        if let Err(reasons) = userspace.wait_until_ready(Duration::from_secs(10)) {
            panic!("the userspace tailnet did not become ready: {reasons:?}");
        }
    })
}

fn header<'r>(reply: &'r Reply, name: &str) -> &'r str {
    reply
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test]
async fn requests_reach_a_peer_by_name_over_the_userspace_tailnet_and_reuse_the_connection() {
    let fake = tailnet(&["web"]).await;
    let web = fake.peer("web").expect("web");
    let piped = PipedTailnet::start(&[(fake.http_port(), FarPort::Bridge(web.http_addr()))]);
    let name = fake.fqdn("web");
    piped.add_peer(&name);
    let config = format!(
        "{}\n[upstreams.web]\naddress = \"{name}:{}\"\ntransport = \"tailscale-rs\"\n{}{TAILNET}",
        base_config(&fake),
        fake.http_port(),
        site("web"),
    );
    let edge = start_edge(&config, &piped);

    let client = client();
    let first = get_on(&client, &edge, "web.example.com", "/").await;
    assert_eq!(first.status, 200, "{first:?}\n{}", edge.logs());
    assert_eq!(header(&first, "x-fake-peer"), "web");
    assert_eq!(first.body, "hello from web\n");
    let second = get_on(&client, &edge, "web.example.com", "/").await;
    assert_eq!(second.status, 200, "{second:?}");
    // The second request went over the pooled virtual connection.
    assert_eq!(piped.dials(), 1, "{}", edge.logs());
    assert_eq!(web.requests(), 2);
    // The name was never asked of MagicDNS: the node's peer table answered it.
    assert_eq!(fake.dns_queries(), 0);
    let (status, body) = admin_get(edge.admin_addr, "/readyz", None).await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
}

#[tokio::test]
async fn tls_with_sni_runs_over_the_virtual_stream() {
    let fake = tailnet(&["docs"]).await;
    let docs = fake.peer("docs").expect("docs");
    let piped = PipedTailnet::start(&[(fake.https_port(), FarPort::Bridge(docs.https_addr()))]);
    let name = fake.fqdn("docs");
    piped.add_peer(&name);
    let config = format!(
        "{}\n[upstreams.docs]\naddress = \"{name}:{}\"\ntls = true\nca_file = \"{}\"\ntransport = \"tailscale-rs\"\n{}{TAILNET}",
        base_config(&fake),
        fake.https_port(),
        ca_cert_pem_path().display(),
        site("docs"),
    );
    let edge = start_edge(&config, &piped);

    let client = client();
    let reply = get_on(&client, &edge, "docs.example.com", "/").await;
    assert_eq!(reply.status, 200, "{reply:?}\n{}", edge.logs());
    assert_eq!(header(&reply, "x-fake-peer"), "docs");
    let seen = docs.last_request().expect("the peer saw the request");
    assert_eq!(seen.sni.as_deref(), Some(name.as_str()));
    // The TLS connection is pooled like a kernel one.
    let again = get_on(&client, &edge, "docs.example.com", "/").await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(piped.dials(), 1);
}

#[tokio::test]
async fn a_peer_that_closes_gets_a_new_connection_and_one_that_never_answers_is_a_502() {
    let fake = tailnet(&[]).await;
    let (closing, unanswered) = (8001, 8002);
    let piped = PipedTailnet::start(&[
        (closing, FarPort::AnswerOnceThenClose),
        (unanswered, FarPort::CloseUnanswered),
    ]);
    piped.add_peer("closing");
    piped.add_peer("mute");
    let config = format!(
        "{}\n[upstreams.closing]\naddress = \"closing:{closing}\"\ntransport = \"tailscale-rs\"\n[upstreams.mute]\naddress = \"mute:{unanswered}\"\ntransport = \"tailscale-rs\"\n{}{}{TAILNET}",
        base_config(&fake),
        site("closing"),
        site("mute"),
    );
    let edge = start_edge(&config, &piped);

    let client = client();
    for _ in 0..2 {
        let reply = get_on(&client, &edge, "closing.example.com", "/").await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (200, "ok"),
            "{}",
            edge.logs()
        );
    }
    // The closed connection was not used again (or, if the request raced the close, retried
    // on a new one): either way a second dial.
    assert_eq!(piped.dials(), 2);

    let reply = get_on(&client, &edge, "mute.example.com", "/").await;
    assert_eq!(reply.status, 502, "{reply:?}");
}

#[tokio::test]
async fn a_dial_nobody_answers_ends_at_the_connect_timeout_with_a_504() {
    let fake = tailnet(&[]).await;
    let piped = PipedTailnet::start(&[]);
    let config = format!(
        "{}\n[upstreams.silent]\naddress = \"{SILENT_IP}:80\"\nconnect_timeout = \"300ms\"\ntransport = \"tailscale-rs\"\n{}{TAILNET}",
        base_config(&fake),
        site("silent"),
    );
    let edge = start_edge(&config, &piped);
    let reply = get(&edge, "silent.example.com", "/").await;
    assert_eq!(reply.status, 504, "{reply:?}\n{}", edge.logs());
    assert_eq!(piped.dials(), 1);
}

/// An upstream moved between transports by a reload keeps its name, address and TLS
/// settings, which is all Pingora's pool key sees: the transport must enter it too, or the
/// idle connection of one transport would carry the next request of the other.
#[tokio::test]
async fn a_reload_that_changes_the_transport_never_reuses_the_other_transports_connection() {
    let fake = tailnet(&["web", "api"]).await;
    let (web, api) = (
        fake.peer("web").expect("web"),
        fake.peer("api").expect("api"),
    );
    // Over the userspace tailnet, the address of `web` leads to `api`.
    let piped = PipedTailnet::start(&[(web.http_addr().port(), FarPort::Bridge(api.http_addr()))]);
    let upstream = |transport: &str| {
        format!(
            "{}\n[upstreams.web]\naddress = \"{}\"\ntransport = \"{transport}\"\n{}{TAILNET}",
            base_config(&fake),
            web.http_addr(),
            site("web"),
        )
    };
    let edge = start_edge(&upstream("kernel"), &piped);
    let reload = |transport: &str| {
        let config = proxy_core::config::load_str(&upstream(transport), None, edge.dir())
            .unwrap_or_else(|e| panic!("{e}"));
        edge.reloader().reload(config);
    };
    let client = client();
    let peer_of = |reply: Reply| header(&reply, "x-fake-peer").to_string();

    assert_eq!(
        peer_of(get_on(&client, &edge, "web.example.com", "/").await),
        "web"
    );
    reload("tailscale-rs");
    assert_eq!(
        peer_of(get_on(&client, &edge, "web.example.com", "/").await),
        "api"
    );
    assert_eq!(piped.dials(), 1);
    reload("kernel");
    assert_eq!(
        peer_of(get_on(&client, &edge, "web.example.com", "/").await),
        "web"
    );
    assert_eq!((web.requests(), api.requests()), (2, 1));
    assert_eq!(piped.dials(), 1);
}

#[tokio::test]
async fn readiness_waits_for_the_node_and_names_a_peer_the_tailnet_does_not_know() {
    let fake = tailnet(&[]).await;
    let piped = PipedTailnet::start(&[]);
    *piped.state.lock().expect("state") =
        TailnetState::NotReady("not authorized: test".to_string());
    let config = format!(
        "{}\n[upstreams.ghost]\naddress = \"ghost.{}:80\"\ntransport = \"tailscale-rs\"\n{}{TAILNET}",
        base_config(&fake),
        fake.domain(),
        site("ghost"),
    );
    let dialer: Arc<dyn TailnetDialer> = piped.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let edge = Edge::start_with_setup(&config, &[], move |services| {
        let userspace = services.userspace_tailnet();
        assert!(userspace.use_dialer(dialer));
        userspace.start();
        let _ = tx.send(userspace.clone());
    });
    let userspace = rx.recv().expect("the userspace tailnet");
    // Until the node has been asked how it is, the reason is that it is starting.
    let asked = eventually(Duration::from_secs(10), || {
        userspace
            .not_ready_reasons()
            .iter()
            .any(|r| r.contains("not authorized: test"))
    })
    .await;
    assert!(asked, "{:?}", userspace.not_ready_reasons());
    let (status, body) = admin_get(edge.admin_addr, "/readyz", None).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("userspace tailnet: not authorized: test"),
        "{body}"
    );
    assert!(
        body.contains(&format!(
            "upstream name `ghost.{}` is not a known peer of the userspace tailnet",
            fake.domain()
        )),
        "{body}"
    );
    let reply = get(&edge, "ghost.example.com", "/").await;
    assert_eq!(reply.status, 502, "{reply:?}");
    assert_eq!(piped.dials(), 0);
}

#[tokio::test]
async fn a_reload_that_adds_a_tailscale_rs_upstream_resolves_its_peer_through_the_node() {
    let fake = tailnet(&["web"]).await;
    let web = fake.peer("web").expect("web");
    let piped = PipedTailnet::start(&[(fake.http_port(), FarPort::Bridge(web.http_addr()))]);
    piped.add_peer("web");
    let before = format!("{}{TAILNET}", base_config(&fake));
    let edge = start_edge(&before, &piped);
    let after = format!(
        "{before}\n[upstreams.web]\naddress = \"web:{}\"\ntransport = \"tailscale-rs\"\n{}",
        fake.http_port(),
        site("web"),
    );
    let config =
        proxy_core::config::load_str(&after, None, edge.dir()).unwrap_or_else(|e| panic!("{e}"));
    let report = edge.reloader().reload(config);
    assert!(report.needs_restart.is_empty(), "{report:?}");
    // The reload wakes the node's lookups; the peer's address arrives in the background.
    let running = edge.reloader().current();
    let upstream = running.upstreams().next().expect("web").clone();
    let resolved = eventually(Duration::from_secs(10), || upstream.resolved().0.is_some()).await;
    assert!(resolved, "{}", edge.logs());
    assert_eq!(upstream.transport(), "tailscale-rs");
    let reply = get(&edge, "web.example.com", "/").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "hello from web\n")
    );
    assert_eq!(piped.dials(), 1);
}
