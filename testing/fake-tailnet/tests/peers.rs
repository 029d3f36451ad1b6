//! Fake peers over real sockets: HTTP, HTTPS, overrides, uploads, echo, WebSocket, stop.

mod common;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{get, tls_connect, Client};
use fake_tailnet::{
    FakeTailnet, PeerSpec, ResponseSpec, TailnetConfig, TAILNET_CA_PEM, WRONG_CA_PEM,
};
use futures_util::{SinkExt, StreamExt};
use http::Request;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

async fn tailnet(names: &[&str]) -> FakeTailnet {
    FakeTailnet::start(TailnetConfig::new(names)).await.unwrap()
}

#[tokio::test]
async fn http_default_response_and_counters() {
    let tailnet = tailnet(&["docs", "git"]).await;
    let docs = tailnet.peer("docs").unwrap();
    let git = tailnet.peer("git").unwrap();
    assert_ne!(docs.ip(), git.ip());
    assert_eq!(docs.http_addr().port(), tailnet.http_port());
    assert_eq!(git.https_addr().port(), tailnet.https_port());
    assert_eq!(docs.ip().octets()[..2], [127, 100]);

    let mut client = Client::plain(docs.http_addr()).await;
    let reply = client.get(docs.fqdn(), "/a/b?x=1").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "hello from docs\n");
    assert_eq!(reply.header("x-fake-peer"), "docs");
    assert_eq!(reply.header("content-type"), "text/plain");
    assert_eq!(reply.header("x-received-bytes"), "0");
    // Keep-alive: a second request on the same connection.
    let reply = client.get(docs.fqdn(), "/again").await;
    assert_eq!(reply.status, 200);
    assert_eq!(docs.requests(), 2);
    assert_eq!(git.requests(), 0);

    let seen = docs.last_request().unwrap();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.uri, "/again");
    assert_eq!(seen.header("Host"), Some("docs.tail0fake.ts.net"));
    assert!(!seen.tls);
    assert_eq!(seen.sni, None);
}

#[tokio::test]
async fn https_verifies_against_tailnet_ca_and_records_sni() {
    let tailnet = tailnet(&["docs", "git"]).await;
    let docs = tailnet.peer("docs").unwrap();
    let tls = tls_connect(docs.https_addr(), docs.fqdn(), TAILNET_CA_PEM)
        .await
        .unwrap();
    let mut client = Client::new(tls).await;
    let reply = client.get(docs.fqdn(), "/").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "hello from docs\n");
    let seen = docs.last_request().unwrap();
    assert!(seen.tls);
    assert_eq!(seen.sni.as_deref(), Some("docs.tail0fake.ts.net"));
    assert_eq!(docs.requests(), 1);

    let wrong_ca = tls_connect(docs.https_addr(), docs.fqdn(), WRONG_CA_PEM).await;
    assert!(wrong_ca.is_err());
    let wrong_name = tls_connect(docs.https_addr(), "git.tail0fake.ts.net", TAILNET_CA_PEM).await;
    assert!(wrong_name.is_err());
    let on_disk = std::fs::read_to_string(fake_tailnet::ca_cert_pem_path()).unwrap();
    assert_eq!(on_disk, TAILNET_CA_PEM);
}

#[tokio::test]
async fn extra_tls_names_serve_virtual_hosts_like_caddy() {
    let config = TailnetConfig {
        peers: vec![PeerSpec::new("caddy").with_tls_names(&["docs.ops", "git.ops"])],
        ..TailnetConfig::new(&[])
    };
    let tailnet = FakeTailnet::start(config).await.unwrap();
    let caddy = tailnet.peer("caddy").unwrap();
    for name in ["docs.ops", "git.ops", caddy.fqdn()] {
        let tls = tls_connect(caddy.https_addr(), name, TAILNET_CA_PEM)
            .await
            .unwrap();
        let reply = Client::new(tls).await.get(name, "/").await;
        assert_eq!(reply.status, 200);
        let seen = caddy.last_request().unwrap();
        assert_eq!(
            (seen.sni.as_deref(), seen.header("host")),
            (Some(name), Some(name))
        );
    }
    let other = tls_connect(caddy.https_addr(), "photos.ops", TAILNET_CA_PEM).await;
    assert!(other.is_err(), "names not listed are not covered");
}

#[tokio::test]
async fn query_overrides_win_over_spec() {
    let tailnet = tailnet(&["docs"]).await;
    let docs = tailnet.peer("docs").unwrap();
    docs.set_response(ResponseSpec {
        status: 404,
        body_size: 5,
        headers: vec![("content-type".into(), "application/x-test".into())],
        latency: Duration::ZERO,
    });
    let mut client = Client::plain(docs.http_addr()).await;
    let reply = client.get(docs.fqdn(), "/").await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.body, "xxxxx");
    assert_eq!(reply.header("content-type"), "application/x-test");
    assert_eq!(reply.header("x-fake-peer"), "docs");

    let started = Instant::now();
    let target = "/p?status=503&size=10&delay_ms=200&header=X-Test:a%20b&header=X-Other:c";
    let reply = client.get(docs.fqdn(), target).await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(reply.status, 503);
    assert_eq!(reply.body.len(), 10);
    assert_eq!(reply.header("x-test"), "a b");
    assert_eq!(reply.header("x-other"), "c");

    let reply = client.get(docs.fqdn(), "/?size=0").await;
    assert_eq!(reply.body.len(), 0);
    assert_eq!(docs.last_request().unwrap().uri, "/?size=0");
}

#[tokio::test]
async fn spec_latency_delays_the_head() {
    let spec = ResponseSpec {
        latency: Duration::from_millis(150),
        ..ResponseSpec::default()
    };
    let config = TailnetConfig {
        peers: vec![PeerSpec::new("slow").with_response(spec)],
        ..TailnetConfig::default()
    };
    let tailnet = FakeTailnet::start(config).await.unwrap();
    let slow = tailnet.peer("slow").unwrap();
    let started = Instant::now();
    let reply = Client::plain(slow.http_addr())
        .await
        .get(slow.fqdn(), "/")
        .await;
    assert_eq!(reply.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn a_peer_can_have_a_fixed_address() {
    // Outside 127.100.0.0/16, where random peers go; port 0 keeps parallel tests apart.
    let fixed = std::net::Ipv4Addr::new(127, 101, 0, 1);
    let config = TailnetConfig {
        peers: vec![
            PeerSpec::new("random"),
            PeerSpec::new("fixed").with_ip(fixed),
        ],
        ..TailnetConfig::default()
    };
    let tailnet = FakeTailnet::start(config).await.unwrap();
    let peer = tailnet.peer("fixed").unwrap();
    assert_eq!(peer.ip(), fixed);
    assert_eq!(peer.http_addr().port(), tailnet.http_port());
    assert_eq!(tailnet.answer(peer.fqdn()), Some(vec![fixed]));
    let reply = Client::plain(peer.http_addr())
        .await
        .get(peer.fqdn(), "/")
        .await;
    assert_eq!(reply.body, "hello from fixed\n");
    let added = PeerSpec::new("added").with_ip(std::net::Ipv4Addr::new(127, 101, 0, 2));
    let added = tailnet.add_peer(added).await.unwrap();
    assert_eq!(added.http_addr().port(), tailnet.http_port());

    // An address this host does not have is an error, not a retry loop.
    let elsewhere = TailnetConfig {
        peers: vec![PeerSpec::new("gone").with_ip(std::net::Ipv4Addr::new(192, 0, 2, 1))],
        ..TailnetConfig::default()
    };
    let err = FakeTailnet::start(elsewhere).await.unwrap_err();
    assert!(err.to_string().contains("192.0.2.1"), "{err}");
}

#[tokio::test]
async fn emulated_rtt_delays_new_and_reused_connections() {
    let rtt = Duration::from_millis(100);
    let config = TailnetConfig {
        peers: vec![PeerSpec::new("far").with_emulated_rtt(rtt)],
        ..TailnetConfig::default()
    };
    let tailnet = FakeTailnet::start(config).await.unwrap();
    let far = tailnet.peer("far").unwrap();

    // New connection: handshake + request = 2 round trips; then 1 per request.
    let started = Instant::now();
    let mut client = Client::plain(far.http_addr()).await;
    assert_eq!(client.get(far.fqdn(), "/").await.status, 200);
    assert!(started.elapsed() >= 2 * rtt, "{:?}", started.elapsed());
    let again = Instant::now();
    let reply = client.get(far.fqdn(), "/?size=100000").await;
    assert_eq!(reply.body.len(), 100_000);
    let took = again.elapsed();
    assert!(took >= rtt, "{took:?}");
    // The second request rode the first connection: no second handshake to wait for.
    assert_eq!(far.connections(), 1);

    // TLS 1.3 costs one more round trip.
    let started = Instant::now();
    let tls = tls_connect(far.https_addr(), far.fqdn(), TAILNET_CA_PEM)
        .await
        .unwrap();
    let reply = Client::new(tls).await.get(far.fqdn(), "/").await;
    assert_eq!(reply.status, 200);
    assert!(started.elapsed() >= 3 * rtt, "{:?}", started.elapsed());

    // Stopping the peer closes connections behind the delay line too.
    let mut raw = TcpStream::connect(far.http_addr()).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nhost: far\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    assert!(raw.read(&mut buf).await.unwrap() > 0);
    far.stop();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(n) = raw.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    });
    assert!(closed.await.is_ok(), "connection still open after stop");
}

#[tokio::test]
async fn large_streamed_upload_is_counted() {
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 800; // 50 MiB
    let tailnet = tailnet(&["docs"]).await;
    let docs = tailnet.peer("docs").unwrap();
    let chunk = Bytes::from(vec![7u8; CHUNK]);
    let frames = futures_util::stream::iter(
        (0..CHUNKS).map(move |_| Ok::<_, Infallible>(Frame::data(chunk.clone()))),
    );
    let req = Request::post("/upload")
        .header("host", docs.fqdn())
        .body(BodyExt::boxed(StreamBody::new(frames)))
        .unwrap();
    let reply = Client::plain(docs.http_addr()).await.send(req).await;
    let expected = (CHUNK * CHUNKS) as u64;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-received-bytes"), expected.to_string());
    let seen = docs.last_request().unwrap();
    assert_eq!(seen.body_len, expected);
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.header("transfer-encoding"), Some("chunked"));
}

#[tokio::test]
async fn echo_reports_the_request_as_received() {
    let tailnet = tailnet(&["docs"]).await;
    let docs = tailnet.peer("docs").unwrap();
    let req = Request::get("/__echo?q=a%20b&x=%2F")
        .header("host", "docs.tail0fake.ts.net")
        .header("x-custom", "v1")
        .header("x-custom", "v2")
        .body(http_body_util::Full::new(Bytes::new()).boxed())
        .unwrap();
    let reply = Client::plain(docs.http_addr()).await.send(req).await;
    assert_eq!(reply.header("content-type"), "application/json");
    let json: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(json["method"], "GET");
    assert_eq!(json["uri"], "/__echo?q=a%20b&x=%2F");
    assert_eq!(json["tls"], false);
    assert_eq!(json["sni"], serde_json::Value::Null);
    let headers = json["headers"].as_array().unwrap();
    assert!(headers.contains(&serde_json::json!(["x-custom", "v1"])));
    assert!(headers.contains(&serde_json::json!(["x-custom", "v2"])));
}

#[tokio::test]
async fn stop_refuses_connections() {
    let tailnet = tailnet(&["docs", "git"]).await;
    let docs = tailnet.peer("docs").unwrap();
    let git = tailnet.peer("git").unwrap();
    let mut idle = Client::plain(docs.http_addr()).await;
    assert_eq!(idle.get(docs.fqdn(), "/").await.status, 200);

    docs.stop();
    assert!(docs.is_stopped());
    assert!(TcpStream::connect(docs.http_addr()).await.is_err());
    assert!(TcpStream::connect(docs.https_addr()).await.is_err());
    let reply = Client::plain(git.http_addr())
        .await
        .get(git.fqdn(), "/")
        .await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn websocket_echoes_text_and_binary() {
    let tailnet = tailnet(&["docs"]).await;
    let docs = tailnet.peer("docs").unwrap();
    let stream = TcpStream::connect(docs.http_addr()).await.unwrap();
    let url = format!("ws://{}/__ws", docs.fqdn());
    let (mut ws, res) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    assert_eq!(res.status(), 101);
    assert_eq!(res.headers()["x-fake-peer"], "docs");
    ws.send(Message::text("hi there")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hi there"));
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![1u8, 2, 3])
    );
    ws.close(None).await.unwrap();
    assert_eq!(docs.requests(), 1);
}

#[tokio::test]
async fn added_peer_shares_ports_and_can_take_over_a_name() {
    let tailnet = tailnet(&["docs"]).await;
    let docs = tailnet.peer("docs").unwrap().clone();
    let next = tailnet.add_peer(PeerSpec::new("docs-next")).await.unwrap();
    assert_ne!(next.ip(), docs.ip());
    assert_eq!(next.http_addr().port(), tailnet.http_port());
    assert_eq!(
        tailnet.answer("docs-next.tail0fake.ts.net"),
        Some(vec![next.ip()])
    );
    assert_eq!(tailnet.peer("docs-next").unwrap().ip(), next.ip());
    assert!(tailnet.add_peer(PeerSpec::new("docs")).await.is_err());

    tailnet.set_answer(docs.fqdn(), vec![next.ip()]);
    docs.stop();
    let reply = Client::plain(next.http_addr())
        .await
        .get(docs.fqdn(), "/")
        .await;
    assert_eq!(reply.header("x-fake-peer"), "docs-next");
}

#[tokio::test]
async fn many_tailnets_run_side_by_side() {
    let names = ["a", "b", "c", "d", "e"];
    let (one, two, three) = tokio::join!(tailnet(&names), tailnet(&names), tailnet(&names));
    for tailnet in [&one, &two, &three] {
        for peer in tailnet.peers() {
            let reply = Client::plain(peer.http_addr())
                .await
                .get(peer.fqdn(), "/")
                .await;
            assert_eq!(reply.header("x-fake-peer"), peer.name());
        }
    }
    assert_ne!(one.dns_addr(), two.dns_addr());
}

#[test]
fn start_in_thread_serves_sync_callers_until_dropped() {
    use std::io::{Read, Write};
    let tailnet = FakeTailnet::start_in_thread(TailnetConfig::new(&["docs"])).unwrap();
    let addr = tailnet.peer("docs").unwrap().http_addr();
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: docs\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.ends_with("hello from docs\n"));
    drop(tailnet);
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[tokio::test]
async fn invalid_and_duplicate_names_are_rejected() {
    for names in [&["docs", "docs"][..], &["bad name"][..], &["-x"][..]] {
        assert!(FakeTailnet::start(TailnetConfig::new(names)).await.is_err());
    }
    let empty = FakeTailnet::start(TailnetConfig::new(&[])).await.unwrap();
    assert_eq!(empty.http_port(), 0);
    let first = empty.add_peer(PeerSpec::new("first")).await.unwrap();
    assert_eq!(empty.http_port(), first.http_addr().port());
    let reply = Client::plain(first.http_addr())
        .await
        .send(get("first", "/"))
        .await;
    assert_eq!(reply.body, "hello from first\n");
}

#[test]
fn handles_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<FakeTailnet>();
    assert_send_sync::<fake_tailnet::FakePeer>();
    assert_send_sync::<fake_tailnet::FakeTailnetError>();
}
