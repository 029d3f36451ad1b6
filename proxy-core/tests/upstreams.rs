//! Upstream behaviour end to end: TLS and SNI, forwarded headers, failures and error pages,
//! timeouts, WebSockets, streamed bodies and body limits.

mod common;

use common::*;
use fake_tailnet::{ca_cert_pem_path, wrong_ca_pem_path, FakeTailnet};

fn site(name: &str, upstream: &str, extra: &str) -> String {
    format!(
        "\n[sites.{name}]\nhosts = [\"{name}.example.com\"]\n{extra}\n[[sites.{name}.locations]]\nmatch = \"/\"\nproxy = \"{upstream}\"\n"
    )
}

fn http_upstream(name: &str, peer: &str, tailnet: &FakeTailnet, extra: &str) -> String {
    format!(
        "\n[upstreams.{name}]\naddress = \"{peer}.{}:{}\"\n{extra}\n",
        tailnet.domain(),
        tailnet.http_port()
    )
}

#[tokio::test]
async fn tls_upstream_uses_sni_and_verifies_against_the_ca() {
    let tailnet = tailnet(&["docs"]).await;
    let tls = |name: &str, ca: &std::path::Path| {
        format!(
            "\n[upstreams.{name}]\naddress = \"docs.{}:{}\"\ntls = true\nca_file = \"{}\"\n",
            tailnet.domain(),
            tailnet.https_port(),
            ca.display()
        )
    };
    let config = format!(
        "{}{}{}{}{}",
        base_config(&tailnet),
        tls("good", &ca_cert_pem_path()),
        tls("wrongca", &wrong_ca_pem_path()),
        site("good", "good", ""),
        site("wrongca", "wrongca", "")
    );
    let proxy = Edge::start(&config);

    let reply = get(&proxy, "good.example.com", "/").await;
    assert_eq!(
        (reply.status, reply.header("x-fake-peer")),
        (200, Some("docs"))
    );
    let seen = tailnet.peer("docs").unwrap().last_request().unwrap();
    assert!(seen.tls);
    assert_eq!(seen.sni.as_deref(), Some(tailnet.fqdn("docs").as_str()));
    let upstream_host = format!("{}:{}", tailnet.fqdn("docs"), tailnet.https_port());
    assert_eq!(
        seen.header("host"),
        Some(upstream_host.as_str()),
        "default Host is the upstream's (nginx's $proxy_host)"
    );

    let before = tailnet.peer("docs").unwrap().requests();
    let refused = get(&proxy, "wrongca.example.com", "/").await;
    assert_eq!(
        refused.status, 502,
        "a certificate from another CA is refused"
    );
    assert_eq!(
        tailnet.peer("docs").unwrap().requests(),
        before,
        "no request sent over an unverified connection"
    );
}

/// Requests on one client connection reuse one upstream connection, plain and TLS: the
/// pooled connection is found to lead to its peer again on every reuse.
#[tokio::test]
async fn one_upstream_connection_serves_a_keep_alive_clients_requests() {
    let tailnet = tailnet(&["docs"]).await;
    let config = format!(
        "{}{}\n[upstreams.secure]\naddress = \"docs.{}:{}\"\ntls = true\nca_file = \"{}\"\n{}{}",
        base_config(&tailnet),
        http_upstream("plain", "docs", &tailnet, ""),
        tailnet.domain(),
        tailnet.https_port(),
        ca_cert_pem_path().display(),
        site("plain", "plain", ""),
        site("secure", "secure", "")
    );
    let proxy = Edge::start(&config);
    let docs = tailnet.peer("docs").unwrap();
    for host in ["plain.example.com", "secure.example.com"] {
        let client = client();
        let before = docs.connections();
        for _ in 0..5 {
            let reply = get_on(&client, &proxy, host, "/").await;
            assert_eq!(reply.status, 200, "{reply:?}");
        }
        assert_eq!(
            docs.connections() - before,
            1,
            "{host}: one upstream connection"
        );
    }
    assert_eq!(docs.requests(), 10);
}

#[tokio::test]
async fn tls_with_wrong_sni_is_refused_unless_verification_is_off() {
    let tailnet = tailnet(&["docs"]).await;
    let upstream = |name: &str, extra: &str| {
        format!(
            "\n[upstreams.{name}]\naddress = \"docs.{}:{}\"\ntls = true\nsni = \"other.example.com\"\n{extra}\n",
            tailnet.domain(),
            tailnet.https_port()
        )
    };
    let config = format!(
        "{}{}{}{}{}",
        base_config(&tailnet),
        upstream(
            "strict",
            &format!("ca_file = \"{}\"", ca_cert_pem_path().display())
        ),
        upstream("insecure", "verify = false"),
        site("strict", "strict", ""),
        site("insecure", "insecure", "")
    );
    let proxy = Edge::start(&config);
    assert_eq!(get(&proxy, "strict.example.com", "/").await.status, 502);
    let reply = get(&proxy, "insecure.example.com", "/").await;
    assert_eq!(reply.status, 200, "explicit opt-out skips verification");
    let seen = tailnet.peer("docs").unwrap().last_request().unwrap();
    assert_eq!(seen.sni.as_deref(), Some("other.example.com"));
}

#[tokio::test]
async fn forwarded_headers_and_host_overrides() {
    let tailnet = tailnet(&["app"]).await;
    let config = format!(
        "{}{}{}{}{}[[sites.plain.locations]]\nmatch = \"/override/\"\nproxy = \"plain\"\nhost_header = \"internal.app\"\n",
        base_config(&tailnet),
        http_upstream("plain", "app", &tailnet, ""),
        http_upstream("passhost", "app", &tailnet, "host_header = \"$host\""),
        site("passhost", "passhost", ""),
        site("plain", "plain", ""),
    );
    let proxy = Edge::start(&config);
    let peer = tailnet.peer("app").unwrap();

    let reply = client()
        .get(proxy.url("/x"))
        .header("host", "plain.example.com")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-real-ip", "198.51.100.9")
        .header("x-forwarded-proto", "https")
        .header("connection", "keep-alive, x-secret-hop")
        .header("x-secret-hop", "must not pass")
        .header("keep-alive", "timeout=5")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let seen = peer.last_request().unwrap();
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("203.0.113.7, 127.0.0.1"),
        "client appended"
    );
    // The client's own values are replaced, not sent alongside.
    for (name, value) in [("x-real-ip", "127.0.0.1"), ("x-forwarded-proto", "http")] {
        let values: Vec<_> = seen.headers.iter().filter(|(n, _)| n == name).collect();
        assert_eq!(values.len(), 1, "{name}: {values:?}");
        assert_eq!(seen.header(name), Some(value));
    }
    assert_eq!(
        seen.header("host"),
        Some(format!("app.{}:{}", tailnet.domain(), tailnet.http_port()).as_str())
    );
    assert_eq!(
        seen.header("x-secret-hop"),
        None,
        "headers named in Connection are hop-by-hop"
    );
    assert_eq!(seen.header("keep-alive"), None);

    get(&proxy, "passhost.example.com", "/").await;
    assert_eq!(
        peer.last_request().unwrap().header("host"),
        Some("passhost.example.com")
    );
    get(&proxy, "plain.example.com", "/override/x").await;
    assert_eq!(
        peer.last_request().unwrap().header("host"),
        Some("internal.app"),
        "location override wins"
    );
}

#[tokio::test]
async fn peer_down_gives_502_with_the_site_error_page() {
    let tailnet = tailnet(&["app", "other"]).await;
    let page = "<html><body>our own 502 page</body></html>";
    let config = format!(
        "{}{}{}{}{}",
        base_config(&tailnet),
        http_upstream("app", "app", &tailnet, "connect_timeout = \"2s\""),
        http_upstream("other", "other", &tailnet, ""),
        site("app", "app", "error_pages = { 502 = \"502.html\" }"),
        site("other", "other", "")
    );
    let proxy = Edge::start_with_files(&config, &[("502.html", page.as_bytes())]);
    tailnet.peer("app").unwrap().stop();
    tailnet.peer("other").unwrap().stop();
    let reply = get(&proxy, "app.example.com", "/").await;
    assert_eq!((reply.status, reply.body.as_str()), (502, page));
    assert_eq!(
        reply.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let plain = get(&proxy, "other.example.com", "/").await;
    assert_eq!(plain.status, 502);
    assert!(
        plain.body.contains("502 Bad Gateway"),
        "built-in page: {}",
        plain.body
    );
}

/// An upstream failure before any of its answer reached the client leaves the client's
/// keep-alive connection open for its next request, as nginx keeps it; a request whose body
/// was not read whole still closes it.
#[tokio::test]
async fn an_upstream_failure_keeps_the_client_connection_open() {
    use std::io::{Read, Write};
    let tailnet = tailnet(&["app"]).await;
    let config = format!(
        "{}{}{}",
        base_config(&tailnet),
        http_upstream("app", "app", &tailnet, ""),
        site("app", "app", "")
    );
    let proxy = Edge::start(&config);
    tailnet.peer("app").unwrap().stop();
    let mut stream = std::net::TcpStream::connect(proxy.addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    // One answer: its head (lowercase) and then its body, by its Content-Length.
    let answer = |stream: &mut std::net::TcpStream| {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(
                stream.read(&mut byte).unwrap(),
                1,
                "closed before an answer"
            );
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .expect("a Content-Length")
            .trim()
            .parse()
            .unwrap();
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body).unwrap();
        head
    };
    for i in 0..3 {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
            .unwrap();
        let head = answer(&mut stream);
        assert!(head.starts_with("http/1.1 502"), "request {i}: {head}");
        assert!(!head.contains("connection: close"), "request {i}: {head}");
    }
    // A body still to come: answered, then closed.
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 100\r\n\r\nhello")
        .unwrap();
    let head = answer(&mut stream);
    assert!(head.starts_with("http/1.1 502"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "nothing after the close");
}

#[tokio::test]
async fn slow_peer_gives_504_after_the_read_timeout() {
    let tailnet = tailnet(&["slow"]).await;
    let config = format!(
        "{}{}{}",
        base_config(&tailnet),
        http_upstream("slow", "slow", &tailnet, "read_timeout = \"500ms\""),
        site("slow", "slow", "error_pages = { 504 = \"504.html\" }")
    );
    let proxy = Edge::start_with_files(&config, &[("504.html", b"too slow, sorry")]);
    let reply = get(&proxy, "slow.example.com", "/?delay_ms=3000").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (504, "too slow, sorry")
    );
    let fast = get(&proxy, "slow.example.com", "/?delay_ms=50").await;
    assert_eq!(fast.status, 200, "within the timeout");
}

#[tokio::test]
async fn websocket_echo_through_the_proxy() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    let tailnet = tailnet(&["ws"]).await;
    let config = format!(
        "{}{}{}",
        base_config(&tailnet),
        http_upstream("ws", "ws", &tailnet, ""),
        site("ws", "ws", "")
    );
    let proxy = Edge::start(&config);
    let mut request = format!("ws://{}/__ws", proxy.addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("host", "ws.example.com".parse().unwrap());
    let (mut socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket handshake through the proxy");
    assert_eq!(response.status(), 101);
    for i in 0..5 {
        let text = format!("hello {i}");
        socket.send(Message::text(text.clone())).await.unwrap();
        let echoed = socket.next().await.unwrap().unwrap();
        assert_eq!(echoed, Message::text(text));
    }
    socket
        .send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        Message::binary(vec![0u8, 1, 2, 255])
    );
    socket.close(None).await.unwrap();
}

/// A fast upstream can answer the upgrade before the proxy has passed on the end of the
/// upgrade request's empty body; the tunnel must stay open either way (Pingora tore it down
/// right after the 101 in that order).
#[tokio::test]
async fn every_websocket_outlives_its_handshake_over_plain_and_tls_upstreams() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    let tailnet = tailnet(&["ws"]).await;
    let tls = format!(
        "\n[upstreams.wss]\naddress = \"ws.{}:{}\"\ntls = true\nca_file = \"{}\"\n",
        tailnet.domain(),
        tailnet.https_port(),
        ca_cert_pem_path().display()
    );
    let config = format!(
        "{}{}{}{}{}",
        base_config(&tailnet),
        http_upstream("ws", "ws", &tailnet, ""),
        tls,
        site("ws", "ws", ""),
        site("wss", "wss", "")
    );
    let proxy = Edge::start(&config);
    // Over TLS the upstream's 101 came first about once in thirty to a hundred handshakes here.
    for (host, handshakes) in [("ws.example.com", 40), ("wss.example.com", 300)] {
        for i in 0..handshakes {
            let mut request = format!("ws://{}/__ws", proxy.addr)
                .into_client_request()
                .unwrap();
            request.headers_mut().insert("host", host.parse().unwrap());
            let (mut socket, response) = tokio_tungstenite::connect_async(request)
                .await
                .expect("websocket handshake through the proxy");
            assert_eq!(response.status(), 101);
            let text = format!("hello {i}");
            socket.send(Message::text(text.clone())).await.unwrap();
            match socket.next().await {
                Some(Ok(echoed)) => assert_eq!(echoed, Message::text(text)),
                other => panic!("{host}, websocket {i}: {other:?} instead of the echo"),
            }
            socket.close(None).await.unwrap();
        }
    }
}

#[tokio::test]
async fn large_upload_streams_with_bounded_memory() {
    let tailnet = tailnet(&["upload"]).await;
    let config = format!(
        "{}{}{}",
        base_config(&tailnet),
        http_upstream("upload", "upload", &tailnet, ""),
        site("upload", "upload", "max_body_size = \"100m\"")
    );
    let proxy = Edge::start(&config);
    // Warm up so the baseline includes the connection pools and runtime.
    assert_eq!(get(&proxy, "upload.example.com", "/").await.status, 200);
    let before = proxy.peak_rss_kib();

    const TOTAL: usize = 50 << 20;
    const CHUNK: usize = 64 << 10;
    let chunks = futures_util::stream::iter(
        (0..TOTAL / CHUNK).map(|_| Ok::<_, std::io::Error>(vec![b'x'; CHUNK])),
    );
    let reply = client()
        .post(proxy.url("/upload"))
        .header("host", "upload.example.com")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(
        reply.headers().get("x-received-bytes").unwrap(),
        &TOTAL.to_string()
    );
    assert_eq!(
        tailnet
            .peer("upload")
            .unwrap()
            .last_request()
            .unwrap()
            .body_len,
        TOTAL as u64
    );
    let growth_mib = proxy.peak_rss_kib().saturating_sub(before) / 1024;
    assert!(
        growth_mib < 20,
        "proxy peak memory grew {growth_mib} MiB for a 50 MiB upload: not streamed"
    );
}

#[tokio::test]
async fn body_limits_answer_413() {
    let tailnet = tailnet(&["app"]).await;
    let config = format!(
        "{}{}{}[[sites.app.locations]]\nmatch = \"/big/\"\nproxy = \"app\"\nmax_body_size = \"0\"\n",
        base_config(&tailnet),
        http_upstream("app", "app", &tailnet, ""),
        site("app", "app", "max_body_size = \"1k\"")
    );
    let proxy = Edge::start(&config);
    let post = |path: &'static str, body: reqwest::Body| {
        client()
            .post(proxy.url(path))
            .header("host", "app.example.com")
            .body(body)
            .send()
    };
    assert_eq!(
        post("/small", vec![b'a'; 1024].into())
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        post("/small", vec![b'a'; 1025].into())
            .await
            .unwrap()
            .status(),
        413,
        "declared length over the limit"
    );
    // Chunked bodies (no declared length) are cut off once they pass the limit.
    let chunks =
        futures_util::stream::iter((0..8).map(|_| Ok::<_, std::io::Error>(vec![b'a'; 512])));
    let reply = post("/small", reqwest::Body::wrap_stream(chunks)).await;
    assert_eq!(
        reply.expect("the client reads the answer").status(),
        413,
        "chunked body over the limit is refused"
    );
    assert_eq!(
        post("/big/x", vec![b'a'; 2 << 20].into())
            .await
            .unwrap()
            .status(),
        200,
        "\"0\" means unlimited"
    );
}

#[tokio::test]
async fn proxy_headers_set_replace_append_and_omit_per_upstream_site_and_location() {
    let tailnet = tailnet(&["app"]).await;
    let config = format!(
        "{}[client]\ntrusted_proxies = [\"127.0.0.0/8\"]\n{}{}[[sites.app.locations]]\nmatch = \"/own/\"\nproxy = \"app\"\nproxy_headers = {{ \"Fly-Client-IP\" = \"\", Via = {{ append = \"1.1 edge\" }}, \"X-Who\" = \"$client_ip via $realip_remote_addr for $http_user_agent\", \"X-Forwarded-For\" = \"$client_ip\" }}\n",
        base_config(&tailnet),
        http_upstream(
            "app",
            "app",
            &tailnet,
            "proxy_headers = { \"X-Forwarded-Proto\" = \"https\", \"X-Upstream\" = \"upstream\" }"
        ),
        site(
            "app",
            "app",
            "proxy_headers = { \"X-Real-IP\" = \"\", \"X-Upstream\" = \"site wins\", \"X-Site\" = \"$scheme://$host $request_id\" }"
        ),
    );
    let proxy = Edge::start(&config);
    let peer = tailnet.peer("app").unwrap();
    let send = |path: &'static str| {
        client()
            .get(proxy.url(path))
            .header("host", "app.example.com")
            .header("fly-client-ip", "203.0.113.9")
            .header("x-forwarded-for", "198.51.100.1")
            .header("x-real-ip", "forged")
            .header("via", "1.1 fly")
            .header("user-agent", "probe/1")
            .header("x-request-id", "req-1")
            .send()
    };

    assert_eq!(send("/x").await.unwrap().status(), 200);
    let seen = peer.last_request().unwrap();
    assert_eq!(
        seen.header("x-forwarded-proto"),
        Some("https"),
        "upstream's rule"
    );
    assert_eq!(seen.header("x-upstream"), Some("site wins"));
    assert_eq!(seen.header("x-real-ip"), None, "\"\" leaves the header out");
    assert_eq!(seen.header("x-site"), Some("http://app.example.com req-1"));
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("198.51.100.1, 203.0.113.9"),
        "built-in forwarding where no rule names the header"
    );
    assert_eq!(seen.header("fly-client-ip"), Some("203.0.113.9"));
    assert_eq!(seen.header("via"), Some("1.1 fly"));

    assert_eq!(send("/own/x").await.unwrap().status(), 200);
    let seen = peer.last_request().unwrap();
    assert_eq!(seen.header("fly-client-ip"), None);
    assert_eq!(seen.header("via"), Some("1.1 fly, 1.1 edge"));
    assert_eq!(
        seen.header("x-who"),
        Some("203.0.113.9 via 127.0.0.1 for probe/1")
    );
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("203.0.113.9"),
        "replaced"
    );
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"), "inherited");
    assert_eq!(seen.header("x-real-ip"), None, "inherited from the site");
}

#[tokio::test]
async fn scheme_follows_forwarded_proto_from_a_trusted_proxy_only() {
    let tailnet = tailnet(&["app"]).await;
    let config = |trusted: &str| {
        format!(
            "{}[client]\ntrusted_proxies = [\"{trusted}\"]\n{}{}[[sites.app.locations]]\nmatch = \"= /go\"\nredirect = {{ to = \"$scheme://$host/there\" }}\n",
            base_config(&tailnet),
            http_upstream("app", "app", &tailnet, ""),
            site("app", "app", ""),
        )
    };
    let trusting = Edge::start(&config("127.0.0.0/8"));
    let untrusting = Edge::start(&config("10.0.0.0/8"));
    let peer = tailnet.peer("app").unwrap();
    let send = |proxy: &Edge, path: &str| {
        client()
            .get(proxy.url(path))
            .header("host", "app.example.com")
            .header("x-forwarded-proto", "https")
            .send()
    };

    assert_eq!(send(&trusting, "/").await.unwrap().status(), 200);
    assert_eq!(
        peer.last_request().unwrap().header("x-forwarded-proto"),
        Some("https"),
        "the trusted proxy terminated TLS"
    );
    let redirect = send(&trusting, "/go").await.unwrap();
    assert_eq!(
        redirect.headers().get("location").unwrap(),
        "https://app.example.com/there"
    );

    assert_eq!(send(&untrusting, "/").await.unwrap().status(), 200);
    assert_eq!(
        peer.last_request().unwrap().header("x-forwarded-proto"),
        Some("http"),
        "an untrusted peer's claim is ignored"
    );
    let redirect = send(&untrusting, "/go").await.unwrap();
    assert_eq!(
        redirect.headers().get("location").unwrap(),
        "http://app.example.com/there"
    );
}

/// Writes a request head and a body of `body_len` bytes (declared, or chunked when `None` is
/// declared) over a blocking socket, then reads the answer: what a client that writes its
/// whole body before reading sees.
fn post_whole_body_then_read(
    addr: std::net::SocketAddr,
    head: String,
    body_len: usize,
    chunked: bool,
) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b'a'; 64 << 10];
    let mut sent = 0;
    while sent < body_len {
        let n = chunk.len().min(body_len - sent);
        let written = if chunked {
            stream
                .write_all(format!("{n:x}\r\n").as_bytes())
                .and_then(|()| stream.write_all(&chunk[..n]))
                .and_then(|()| stream.write_all(b"\r\n"))
        } else {
            stream.write_all(&chunk[..n])
        };
        if let Err(e) = written {
            return format!("write failed after {sent} bytes: {e}");
        }
        sent += n;
    }
    if chunked {
        if let Err(e) = stream.write_all(b"0\r\n\r\n") {
            return format!("write failed at the last chunk: {e}");
        }
    }
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => String::from_utf8_lossy(&answer).into_owned(),
        Err(e) => format!(
            "read failed: {e} after {:?}",
            String::from_utf8_lossy(&answer)
        ),
    }
}

#[tokio::test]
async fn early_answers_reach_a_client_still_writing_its_body() {
    let tailnet = tailnet(&["app"]).await;
    let config = format!(
        "{}{}{}[[sites.app.locations]]\nmatch = \"/private/\"\nproxy = \"app\"\nmax_body_size = \"100m\"\nallow = [\"10.0.0.0/8\"]\n",
        base_config(&tailnet),
        http_upstream("app", "app", &tailnet, ""),
        site("app", "app", "max_body_size = \"5m\"")
    );
    let proxy = Edge::start(&config);
    const BODY: usize = 6 << 20;
    let addr = proxy.addr;
    let head = |path: &str, framing: &str| {
        format!("POST {path} HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n{framing}\r\n\r\n")
    };
    let declared = format!("Content-Length: {BODY}");
    let cases = [
        (
            "declared length over the limit",
            head("/upload", &declared),
            false,
            "HTTP/1.1 413",
        ),
        (
            "refused by an allow list",
            head("/private/x", &declared),
            false,
            "HTTP/1.1 403",
        ),
        (
            "chunked past the limit",
            head("/upload", "Transfer-Encoding: chunked"),
            true,
            "HTTP/1.1 413",
        ),
    ];
    for (what, head, chunked, expected) in cases {
        let answer = tokio::task::spawn_blocking(move || {
            post_whole_body_then_read(addr, head, BODY, chunked)
        })
        .await
        .unwrap();
        assert!(answer.starts_with(expected), "{what}: {answer}");
    }
    let peer = tailnet.peer("app").unwrap();
    assert!(
        peer.last_request().is_none_or(|r| r.body_len < BODY as u64),
        "no whole body reached the upstream"
    );

    // A client that reads as it writes (reqwest) reads the answer too.
    let reply = client()
        .post(proxy.url("/upload"))
        .header("host", "app.example.com")
        .body(vec![b'a'; BODY])
        .send()
        .await
        .expect("the client reads the answer");
    assert_eq!(reply.status(), 413);
}

#[tokio::test]
async fn upstream_errors_get_the_sites_pages_where_errors_are_intercepted() {
    let tailnet = tailnet(&["app"]).await;
    let config = format!(
        "{}{}{}[[sites.app.locations]]\nmatch = \"/raw/\"\nproxy = \"app\"\nintercept_errors = false\n[[sites.app.locations]]\nmatch = \"/cached/\"\nproxy = \"app\"\ncache = {{ valid = {{ \"404\" = \"1m\" }} }}\n{}",
        base_config(&tailnet),
        http_upstream("app", "app", &tailnet, ""),
        site(
            "app",
            "app",
            "error_pages = { 502 = \"502.html\", 404 = \"404.html\" }\nintercept_errors = true"
        ),
        site("plain", "app", "error_pages = { 502 = \"502.html\" }"),
    );
    let bad_gateway = "<html>our own 502 page</html>";
    let not_found = "<html>our own 404 page</html>";
    let proxy = Edge::start_with_files(
        &config,
        &[
            ("502.html", bad_gateway.as_bytes()),
            ("404.html", not_found.as_bytes()),
        ],
    );

    let reply = get(&proxy, "app.example.com", "/x?status=502&size=200000").await;
    assert_eq!((reply.status, reply.body.as_str()), (502, bad_gateway));
    assert_eq!(
        reply.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let reply = get(&proxy, "app.example.com", "/x?status=404").await;
    assert_eq!((reply.status, reply.body.as_str()), (404, not_found));
    let reply = get(&proxy, "app.example.com", "/x?status=503&size=5").await;
    assert_eq!(
        (reply.status, reply.body.len()),
        (503, 5),
        "no page for 503: the upstream's answer"
    );
    let reply = get(&proxy, "app.example.com", "/x?status=200&size=5").await;
    assert_eq!((reply.status, reply.body.len()), (200, 5));

    let head = client()
        .head(proxy.url("/x?status=502"))
        .header("host", "app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 502);
    assert_eq!(
        head.headers().get("content-length").unwrap(),
        &bad_gateway.len().to_string()
    );
    assert!(head.bytes().await.unwrap().is_empty(), "HEAD: headers only");

    let raw = get(&proxy, "app.example.com", "/raw/x?status=502&size=5").await;
    assert_eq!((raw.status, raw.body.len()), (502, 5), "turned off here");
    let plain = get(&proxy, "plain.example.com", "/x?status=502&size=5").await;
    assert_eq!((plain.status, plain.body.len()), (502, 5), "off by default");

    // A cached error gets the page too, on a miss and on a hit.
    for expected in ["MISS", "HIT"] {
        let reply = get(&proxy, "app.example.com", "/cached/x?status=404&size=9").await;
        assert_eq!((reply.status, reply.body.as_str()), (404, not_found));
        assert_eq!(reply.header("x-cache-status"), Some(expected));
    }

    // The connection stays usable after a replaced body.
    let http = client();
    for _ in 0..3 {
        let reply = http
            .get(proxy.url("/x?status=502&size=70000"))
            .header("host", "app.example.com")
            .send()
            .await
            .unwrap();
        assert_eq!(reply.text().await.unwrap(), bad_gateway);
    }
}

/// nginx's `proxy_request_buffering on`: nothing of a request goes upstream until its body
/// has arrived whole, so a slow upload holds no upstream connection and a cut-off one never
/// reaches the origin.
#[tokio::test]
async fn buffered_locations_forward_a_request_only_once_its_body_is_whole() {
    use std::io::{Read, Write};
    let tailnet = tailnet(&["app"]).await;
    let config = format!(
        "{}{}{}[[sites.app.locations]]\nmatch = \"/buffered/\"\nproxy = \"app\"\nrequest_buffering = true\n",
        base_config(&tailnet).replace("[server]\n", "[server]\nrequest_buffer_size = \"16k\"\n"),
        http_upstream("app", "app", &tailnet, ""),
        site("app", "app", "max_body_size = \"10m\"")
    );
    let proxy = Edge::start(&config);
    let peer = tailnet.peer("app").unwrap();
    const BODY: usize = 1 << 20;
    let head = format!(
        "POST /buffered/up HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\nContent-Length: {BODY}\r\n\r\n"
    );

    // Half the body, then a pause: the origin has heard nothing.
    let mut stream = std::net::TcpStream::connect(proxy.addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&vec![b'a'; BODY / 2]).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        peer.requests(),
        0,
        "nothing goes upstream before the body is whole"
    );
    // The rest: the origin gets the request with the whole body (past the memory share, from
    // the temporary file).
    stream.write_all(&vec![b'b'; BODY / 2]).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains(&format!("x-received-bytes: {BODY}")),
        "{answer}"
    );
    assert_eq!(peer.requests(), 1);
    assert_eq!(peer.last_request().unwrap().body_len, BODY as u64);

    // A client that gives up halfway: the origin never hears of it.
    let mut stream = std::net::TcpStream::connect(proxy.addr).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&vec![b'a'; BODY / 2]).unwrap();
    drop(stream);
    // A request after it on a new connection shows the proxy has moved on.
    let small = client()
        .post(proxy.url("/buffered/small"))
        .header("host", "app.example.com")
        .body(vec![b'c'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), 200);
    assert_eq!(small.headers().get("x-received-bytes").unwrap(), "1000");
    // Chunked, past the memory share.
    let chunks =
        futures_util::stream::iter((0..8).map(|_| Ok::<_, std::io::Error>(vec![b'd'; 10_000])));
    let chunked = client()
        .post(proxy.url("/buffered/chunked"))
        .header("host", "app.example.com")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(chunked.status(), 200);
    assert_eq!(chunked.headers().get("x-received-bytes").unwrap(), "80000");
    // Over the limit: refused at the edge, never forwarded.
    let big = client()
        .post(proxy.url("/buffered/big"))
        .header("host", "app.example.com")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            (0..200).map(|_| Ok::<_, std::io::Error>(vec![b'e'; 64 << 10])),
        )))
        .send()
        .await
        .expect("the client reads the answer");
    assert_eq!(big.status(), 413);
    assert_eq!(
        peer.requests(),
        3,
        "only the whole bodies reached the origin"
    );

    // A client that waits for `100 Continue` gets it from the proxy, which takes the body.
    let mut stream = std::net::TcpStream::connect(proxy.addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let expecting = "POST /buffered/expect HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n";
    stream.write_all(expecting.as_bytes()).unwrap();
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"hello").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = peer.last_request().unwrap();
    assert_eq!((seen.body_len, seen.header("expect")), (5, None));
}

#[tokio::test]
async fn a_stalled_buffered_body_gets_408_and_never_reaches_the_origin() {
    use std::io::{Read, Write};
    let tailnet = tailnet(&["app"]).await;
    let config = format!(
        "{}{}{}",
        base_config(&tailnet).replace("[server]\n", "[server]\nclient_body_timeout = \"1s\"\n"),
        http_upstream("app", "app", &tailnet, ""),
        site("app", "app", "request_buffering = true")
    );
    let proxy = Edge::start(&config);
    let mut stream = std::net::TcpStream::connect(proxy.addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(15)))
        .unwrap();
    stream
        .write_all(b"POST /x HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 10\r\n\r\nab")
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(tailnet.peer("app").unwrap().requests(), 0);
}

/// The next request head on `stream` (bytes read past it stay in `pending`), or `None` once
/// the connection ends.
fn next_head(stream: &mut impl std::io::Read, pending: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(pending.drain(..end + 4).collect());
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
    }
}

/// An origin that records each request head as it came over the wire and answers with
/// header names in mixed case; one connection at a time, on a listener the test holds.
fn raw_origin() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
) {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the origin");
    let addr = listener.local_addr().expect("origin address");
    let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = heads.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut pending = Vec::new();
            while let Some(head) = next_head(&mut stream, &mut pending) {
                seen.lock().unwrap().push(head);
                let reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Custom-REPLY: yes\r\n\
                             content-TYPE: text/plain\r\n\r\nok";
                if stream.write_all(reply.as_bytes()).is_err() {
                    break;
                }
            }
        }
    });
    (addr, heads)
}

#[tokio::test]
async fn a_head_without_a_length_reaches_the_client_before_its_body() {
    use std::io::{Read, Write};
    let tailnet = tailnet(&[]).await;
    // An origin that answers with a head but no `Content-Length` (a stream, its end the
    // connection's), and sends the body only once the test has seen that head through the
    // proxy: a proxy that held such a head back until the body came would never answer.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the origin");
    let origin = listener.local_addr().expect("origin address");
    let (go, wait) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut pending = Vec::new();
            if next_head(&mut stream, &mut pending).is_none() {
                continue;
            }
            let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n";
            let _ = stream.write_all(head.as_bytes());
            if wait
                .recv_timeout(std::time::Duration::from_secs(20))
                .is_err()
            {
                return;
            }
            let _ = stream.write_all(b"data: late\n\n");
        }
    });
    let config = format!(
        "{}\n[upstreams.raw]\naddress = \"{origin}\"\n{}",
        base_config(&tailnet),
        site("stream", "raw", "")
    );
    let proxy = Edge::start(&config);
    // HTTP/1.1 gets the stream chunked, HTTP/1.0 as it came, ended by the close.
    for version in ["HTTP/1.1", "HTTP/1.0"] {
        let mut client = std::net::TcpStream::connect(proxy.addr).expect("connect");
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .expect("read timeout");
        let request = format!("GET /events {version}\r\nHost: stream.example.com\r\n\r\n");
        client.write_all(request.as_bytes()).expect("request");
        let mut seen = Vec::new();
        let mut byte = [0u8; 1];
        while !seen.ends_with(b"\r\n\r\n") {
            match client.read(&mut byte) {
                Ok(1) => seen.push(byte[0]),
                other => panic!(
                    "{version}: no head before the body ({other:?}): {}",
                    String::from_utf8_lossy(&seen)
                ),
            }
        }
        let head = String::from_utf8_lossy(&seen).into_owned();
        assert!(head.starts_with("HTTP/1.1 200"), "{version}: {head}");
        go.send(()).expect("the origin waits");
        let mut rest = Vec::new();
        let mut chunk = [0u8; 256];
        while !String::from_utf8_lossy(&rest).contains("data: late") {
            match client.read(&mut chunk) {
                Ok(n) if n > 0 => rest.extend_from_slice(&chunk[..n]),
                other => panic!(
                    "{version}: the body ended early ({other:?}): {}",
                    String::from_utf8_lossy(&rest)
                ),
            }
        }
    }
}

#[tokio::test]
async fn header_names_are_normalized_unless_their_case_is_preserved() {
    let tailnet = tailnet(&[]).await;
    let (origin, heads) = raw_origin();
    let upstream = format!("\n[upstreams.raw]\naddress = \"{origin}\"\n");
    let request =
        "GET / HTTP/1.1\r\nHost: {host}\r\nX-Mixed-CASE: 1\r\ncache-control: no-cache\r\n\
                   Connection: close\r\n\r\n";
    for (mode, sent, received) in [
        (
            "",
            ["x-mixed-case: 1", "Cache-Control: no-cache"],
            ["x-custom-reply: yes", "Content-Type: text/plain"],
        ),
        (
            "header_case = \"normalize\"\n",
            ["x-mixed-case: 1", "Cache-Control: no-cache"],
            ["x-custom-reply: yes", "Content-Type: text/plain"],
        ),
        (
            "header_case = \"preserve\"\n",
            ["X-Mixed-CASE: 1", "cache-control: no-cache"],
            ["X-Custom-REPLY: yes", "content-TYPE: text/plain"],
        ),
    ] {
        let config = format!(
            "{}{upstream}{}",
            base_config(&tailnet).replace("threads = 1\n", &format!("threads = 1\n{mode}")),
            site("case", "raw", "")
        );
        let proxy = Edge::start(&config);
        let reply = raw_request(proxy.addr, &request.replace("{host}", "case.example.com"));
        let head = heads
            .lock()
            .unwrap()
            .pop()
            .expect("the origin got the request");
        let head = String::from_utf8_lossy(&head);
        for line in sent {
            assert!(
                head.contains(&format!("\r\n{line}\r\n")),
                "{mode:?}: {line:?} upstream in {head:?}"
            );
        }
        for line in received {
            assert!(
                reply.contains(&format!("\r\n{line}\r\n")),
                "{mode:?}: {line:?} in {reply:?}"
            );
        }
        assert!(reply.ends_with("\r\n\r\nok"), "{reply:?}");
    }
}

/// Sends `GET {target}` to `proxy` on a connection of its own and gives the whole answer.
fn get_raw_target(proxy: std::net::SocketAddr, target: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut request = b"GET ".to_vec();
    request.extend_from_slice(target);
    request.extend_from_slice(b" HTTP/1.1\r\nHost: t.example.com\r\nConnection: close\r\n\r\n");
    let mut stream = std::net::TcpStream::connect(proxy).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    stream.write_all(&request).unwrap();
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    reply
}

#[tokio::test]
async fn request_targets_go_upstream_byte_for_byte_and_non_utf_8_ones_get_400() {
    let tailnet = tailnet(&[]).await;
    let (origin, heads) = raw_origin();
    let upstream = format!("\n[upstreams.raw]\naddress = \"{origin}\"\n");
    let config = format!(
        "{}{upstream}{}",
        base_config(&tailnet),
        site("t", "raw", "")
    );
    let proxy = Edge::start(&config);
    // What is sent, and the target that goes upstream: the same bytes, except that a target
    // that is only a fragment is the root once the fragment is stripped.
    for (target, forwarded) in [
        (&b"/plain/path?q=1&r=%20"[..], &b"/plain/path?q=1&r=%20"[..]),
        (
            "/caf\u{e9}/\u{1f600}?q=\u{fc}".as_bytes(),
            "/caf\u{e9}/\u{1f600}?q=\u{fc}".as_bytes(),
        ),
        (b"/a/\"{quoted}\"|^", b"/a/\"{quoted}\"|^"),
        (b"#top", b"/"),
    ] {
        let reply = get_raw_target(proxy.addr, target);
        let shown = target.escape_ascii().to_string();
        assert!(
            reply.starts_with(b"HTTP/1.1 200"),
            "{shown}: {}",
            reply.escape_ascii()
        );
        let head = heads
            .lock()
            .unwrap()
            .pop()
            .expect("the origin got the request");
        let mut line = b"GET ".to_vec();
        line.extend_from_slice(forwarded);
        line.extend_from_slice(b" HTTP/1.1\r\n");
        assert!(head.starts_with(&line), "{shown}: {}", head.escape_ascii());
    }
    // Bytes that are not UTF-8 are refused as the head is parsed, before anything is sent.
    for target in [&b"/latin-1/caf\xe9"[..], b"/cut/\xc3\xa9\xc3"] {
        let reply = get_raw_target(proxy.addr, target);
        assert!(
            reply.starts_with(b"HTTP/1.1 400"),
            "{}",
            reply.escape_ascii()
        );
    }
    assert!(
        heads.lock().unwrap().is_empty(),
        "nothing else reached the origin"
    );
}

/// What a [`pooling_origin`] saw: per connection, in accept order, whether the proxy has
/// closed it.
type Connections = std::sync::Arc<std::sync::Mutex<Vec<bool>>>;

/// The name in a TLS [`pooling_origin`]'s certificate.
const ORIGIN_NAME: &str = "origin.test";

/// One connection of a [`pooling_origin`]: plain, or TLS (rustls, a certificate for
/// [`ORIGIN_NAME`] from the tailnet CA).
enum OriginStream {
    Plain(std::net::TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, std::net::TcpStream>>),
}

impl std::io::Read for OriginStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            OriginStream::Plain(s) => s.read(buf),
            OriginStream::Tls(s) => s.read(buf),
        }
    }
}

impl std::io::Write for OriginStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            OriginStream::Plain(s) => s.write(buf),
            OriginStream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            OriginStream::Plain(s) => s.flush(),
            OriginStream::Tls(s) => s.flush(),
        }
    }
}

impl OriginStream {
    /// Ends the sending side (with a TLS `close_notify` first), still reading.
    fn half_close(&mut self) {
        use std::io::Write;
        let sock = match self {
            OriginStream::Plain(s) => s,
            OriginStream::Tls(s) => {
                s.conn.send_close_notify();
                let _ = s.flush();
                &mut s.sock
            }
        };
        let _ = sock.shutdown(std::net::Shutdown::Write);
    }
}

/// An origin answering `200 ok` with keep-alive framing, one thread per connection, on a
/// listener the test holds, over TLS when `tls`; each answer goes out in one write, head
/// and body together (over TLS, one record).
/// After answering `/half-close` it waits 300 ms (the connection is idle in the proxy's pool
/// by then) and shuts its sending side, still reading, so it sees when the proxy closes the
/// connection. `/extra` is answered with 5 bytes past its `Content-Length` (over TLS, in a
/// record of their own right behind the answer's), `/chunks` with a chunked body of three
/// chunks.
fn pooling_origin(tls: bool) -> (std::net::SocketAddr, Connections) {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the origin");
    let addr = listener.local_addr().expect("origin address");
    let tls = tls.then(|| fake_tailnet::server_config(ORIGIN_NAME, &[]).expect("certificate"));
    let connections = Connections::default();
    let seen = connections.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut stream = match &tls {
                None => OriginStream::Plain(stream),
                Some(config) => {
                    let conn = rustls::ServerConnection::new(config.clone()).expect("TLS");
                    OriginStream::Tls(Box::new(rustls::StreamOwned::new(conn, stream)))
                }
            };
            let index = {
                let mut seen = seen.lock().unwrap();
                seen.push(false);
                seen.len() - 1
            };
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut pending = Vec::new();
                while let Some(head) = next_head(&mut stream, &mut pending) {
                    let (reply, extra) = if head.starts_with(b"GET /extra ") {
                        ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "EXTRA")
                    } else if head.starts_with(b"GET /chunks ") {
                        (
                            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                             2\r\nab\r\n3\r\ncde\r\n1\r\nf\r\n0\r\n\r\n",
                            "",
                        )
                    } else {
                        ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "")
                    };
                    let sent = match &stream {
                        OriginStream::Plain(_) => {
                            stream.write_all(format!("{reply}{extra}").as_bytes())
                        }
                        OriginStream::Tls(_) => stream
                            .write_all(reply.as_bytes())
                            .and_then(|()| stream.flush())
                            .and_then(|()| stream.write_all(extra.as_bytes())),
                    };
                    if sent.and_then(|()| stream.flush()).is_err() {
                        break;
                    }
                    if head.starts_with(b"GET /half-close ") {
                        std::thread::sleep(std::time::Duration::from_millis(300));
                        stream.half_close();
                    }
                    if head.starts_with(b"GET /junk-later ") {
                        std::thread::sleep(std::time::Duration::from_millis(300));
                        let _ = stream.write_all(b"junk").and_then(|()| stream.flush());
                    }
                }
                seen.lock().unwrap()[index] = true;
            });
        }
    });
    (addr, connections)
}

/// The `[upstreams.NAME]` table for a [`pooling_origin`] at `origin` with `extra` keys.
fn pooling_upstream(name: &str, origin: std::net::SocketAddr, tls: bool, extra: &str) -> String {
    let tls = match tls {
        true => format!(
            "tls = true\nsni = \"{ORIGIN_NAME}\"\nca_file = \"{}\"\n",
            ca_cert_pem_path().display()
        ),
        false => String::new(),
    };
    format!("\n[upstreams.{name}]\naddress = \"{origin}\"\n{tls}{extra}\n")
}

/// Waits (up to 15 s) for the proxy to close the origin's connection `index`.
fn closed_by_the_proxy(connections: &Connections, index: usize) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        if connections.lock().unwrap().get(index) == Some(&true) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    false
}

/// Idle pooled upstream connections are reused, closed once idle past `idle_timeout`, and
/// closed when the origin closes them or sends on them while they idle, with no request to
/// notice it.
#[tokio::test]
async fn idle_upstream_connections_are_reused_and_closed_on_timeout_or_by_the_origin() {
    idle_upstream_connections(false).await;
}

/// The same over TLS, where the proxy reads the origin's records through a read buffer.
#[tokio::test]
async fn idle_tls_upstream_connections_are_reused_and_closed_on_timeout_or_by_the_origin() {
    idle_upstream_connections(true).await;
}

async fn idle_upstream_connections(tls: bool) {
    let tailnet = tailnet(&[]).await;
    let (origin, connections) = pooling_origin(tls);
    let config = format!(
        "{}{}{}{}{}",
        base_config(&tailnet),
        pooling_upstream("short", origin, tls, "idle_timeout = \"1s\""),
        pooling_upstream("long", origin, tls, ""),
        site("short", "short", ""),
        site("long", "long", "")
    );
    let proxy = Edge::start(&config);
    let get = |host: &str, path: &str| {
        raw_request(
            proxy.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
    };
    let ok = |reply: String| assert!(reply.starts_with("HTTP/1.1 200 "), "{reply:?}");

    ok(get("short.example.com", "/a"));
    ok(get("short.example.com", "/b"));
    assert_eq!(
        connections.lock().unwrap().len(),
        1,
        "the second request reused the pooled connection"
    );
    assert!(
        closed_by_the_proxy(&connections, 0),
        "the proxy closes a connection idle past its idle_timeout"
    );

    ok(get("long.example.com", "/half-close"));
    assert!(
        closed_by_the_proxy(&connections, 1),
        "the proxy closes an idle connection the origin closed"
    );
    ok(get("long.example.com", "/c"));
    assert_eq!(connections.lock().unwrap().len(), 3, "a new connection");

    // Bytes the origin sends on a connection while it idles make it unusable.
    ok(get("long.example.com", "/junk-later"));
    assert_eq!(connections.lock().unwrap().len(), 3, "reused");
    assert!(
        closed_by_the_proxy(&connections, 2),
        "the proxy closes an idle connection the origin sent bytes on"
    );
    ok(get("long.example.com", "/d"));
    assert_eq!(connections.lock().unwrap().len(), 4, "a new connection");
}

/// A body that came whole with its head is relayed and leaves its connection reusable; one
/// that ran past its `Content-Length` is cut at it and its connection is not reused; the
/// chunks of a body that came with its head are all relayed.
#[tokio::test]
async fn bodies_that_came_with_their_head_are_relayed_whole_and_overruns_end_reuse() {
    bodies_and_overruns(false).await;
}

/// The same over TLS: an overrun in a record of its own, which the proxy may have read
/// together with the answer's, still ends the connection's reuse.
#[tokio::test]
async fn tls_bodies_are_relayed_whole_and_overruns_end_reuse() {
    bodies_and_overruns(true).await;
}

async fn bodies_and_overruns(tls: bool) {
    let tailnet = tailnet(&[]).await;
    let (origin, connections) = pooling_origin(tls);
    let config = format!(
        "{}{}{}",
        base_config(&tailnet),
        pooling_upstream("pool", origin, tls, ""),
        site("pool", "pool", "")
    );
    let proxy = Edge::start(&config);
    let client = client();
    let get = |path: &'static str| get_on(&client, &proxy, "pool.example.com", path);

    for path in ["/a", "/b"] {
        let reply = get(path).await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "ok"), "{path}");
    }
    assert_eq!(
        connections.lock().unwrap().len(),
        1,
        "the connection was reused"
    );

    let reply = get("/chunks").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "abcdef"));
    assert_eq!(
        connections.lock().unwrap().len(),
        1,
        "reused after a chunked body"
    );

    let reply = get("/extra").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "ok"));
    assert!(
        closed_by_the_proxy(&connections, 0),
        "the proxy closes a connection whose response ran past its Content-Length"
    );
    let reply = get("/c").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "ok"));
    assert_eq!(
        connections.lock().unwrap().len(),
        2,
        "a new connection after the overrun"
    );
}

/// Every shape of response write reaches the client whole and in order: a head with a whole
/// small body (written as one buffer), with a body just under, at and over the size where
/// the slices stay separate, bodies sent on in many writes, and chunked ones (a frame's size
/// line, data and end in one write). The bytes differ along each body, so a part lost,
/// repeated or out of place shows.
#[tokio::test]
async fn bodies_of_every_write_shape_arrive_whole_and_in_order() {
    let tailnet = tailnet(&["docs"]).await;
    let config = format!(
        "{}{}{}",
        base_config(&tailnet),
        http_upstream("docs", "docs", &tailnet, ""),
        site("app", "docs", "")
    );
    let proxy = Edge::start(&config);
    let http = client();
    let mut cases: Vec<(usize, usize, bool)> = [0, 1, 1024, 7600, 7900, 8000, 8100, 8192, 8193]
        .into_iter()
        .chain((7700..7960).step_by(37))
        .map(|size| (size, 0, false))
        .collect();
    cases.extend([
        (70_000, 0, false),
        (20_000, 1000, false),
        (20_000, 1, true),
        (20_000, 100, true),
        (20_000, 8000, true),
        (20_000, 8200, true),
    ]);
    for (size, frame, chunked) in cases {
        let path = format!(
            "/v?size={size}&varied=1&frame={frame}&chunked={}",
            chunked as u8
        );
        let reply = http
            .get(proxy.url(&path))
            .header("host", "app.example.com")
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200, "{path}");
        let framing = match chunked {
            true => reply.headers().get("transfer-encoding"),
            false => reply.headers().get("content-length"),
        };
        assert!(framing.is_some(), "{path}: {:?}", reply.headers());
        let body = reply.bytes().await.unwrap();
        assert!(
            body[..] == fake_tailnet::varied_body(size, frame)[..],
            "{path}: {} bytes arrived",
            body.len()
        );
    }
}
