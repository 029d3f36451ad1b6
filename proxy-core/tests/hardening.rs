//! What a client (or an origin) cannot do to the edge: hold connections idle or half-sent past
//! the client timeouts, send heads over the limits, open more than `max_connections`, or get
//! pipelined requests mishandled; and an origin's oversized response head. Raw sockets, short
//! configured limits.

mod common;

use common::*;
use fake_tailnet::FakeTailnet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A site with a local answer at `/` and the `app` peer behind `/up/`, with `server` lines
/// added to `[server]`.
fn config(tailnet: &FakeTailnet, server: &str) -> String {
    let base = base_config(tailnet).replacen("[server]\n", &format!("[server]\n{server}\n"), 1);
    format!(
        r#"{base}
[upstreams.app]
address = "app.{d}:{p}"

[sites.app]
hosts = ["app.example.com"]
max_body_size = "0"

[[sites.app.locations]]
match = "/"
return = {{ status = 200, body = "ok\n" }}

[[sites.app.locations]]
match = "/up/"
proxy = "app"
"#,
        d = tailnet.domain(),
        p = tailnet.http_port(),
    )
}

fn connect(edge: &Edge) -> TcpStream {
    raw_connection(edge.addr)
}

/// Whether the server closed `stream` (its reads end, or it was reset) before the stream's
/// read timeout.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    match stream.read_to_end(&mut rest) {
        Ok(_) => true,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
        ),
    }
}

/// `edge_client_closes_total{reason}` once it reaches `want` (a close is counted as the
/// connection ends, which the client may see first), or its value after 10 s.
async fn closes(edge: &Edge, reason: &str, want: u64) -> u64 {
    let needle = format!("edge_client_closes_total{{reason=\"{reason}\"}} ");
    let mut value = 0;
    for _ in 0..100 {
        let text = scrape(edge.admin_addr).await;
        value = text
            .lines()
            .find_map(|l| l.strip_prefix(needle.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if value >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    value
}

/// Whether `edge_client_connections` reaches `open` within 10 s.
async fn eventually_connections(edge: &Edge, open: u64) -> bool {
    let want = format!("edge_client_connections {open}\n");
    for _ in 0..100 {
        if scrape(edge.admin_addr).await.contains(&want) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

const GET: &str = "GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n";

#[tokio::test]
async fn an_idle_keepalive_connection_is_closed_after_keepalive_timeout() {
    let tailnet = tailnet(&["app"]).await;
    let edge = Edge::start(&config(&tailnet, "keepalive_timeout = \"1s\""));
    let mut stream = connect(&edge);
    stream.write_all(GET.as_bytes()).unwrap();
    let reply = read_response(&mut stream);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(closed_by_server(&mut stream), "idle connection still open");
    assert_eq!(closes(&edge, "keepalive_timeout", 1).await, 1);
}

#[tokio::test]
async fn a_busy_keepalive_connection_stays_open_past_its_first_keepalive_deadline() {
    let tailnet = tailnet(&["app"]).await;
    let edge = Edge::start(&config(&tailnet, "keepalive_timeout = \"2s\""));
    let mut stream = connect(&edge);
    // Four requests 1.2 s apart: each comes within the 2 s keep-alive timeout of the one
    // before, so the connection serves them all, though 2 s after the first have long passed
    // before the last (the connection's timer, set for the first wait, goes off during a
    // later one and must only move on).
    for n in 0..4 {
        if n > 0 {
            tokio::time::sleep(Duration::from_millis(1200)).await;
        }
        stream.write_all(GET.as_bytes()).unwrap();
        let reply = read_response(&mut stream);
        assert!(reply.starts_with("HTTP/1.1 200"), "request {n}: {reply}");
    }
    assert!(closed_by_server(&mut stream), "idle connection still open");
    assert_eq!(closes(&edge, "keepalive_timeout", 1).await, 1);
}

#[tokio::test]
async fn a_connection_carries_keepalive_requests_and_then_closes() {
    let tailnet = tailnet(&["app"]).await;
    let edge = Edge::start(&config(&tailnet, "keepalive_requests = 3"));
    let mut stream = connect(&edge);
    for n in 1..=3 {
        stream.write_all(GET.as_bytes()).unwrap();
        let reply = read_response(&mut stream);
        assert!(reply.starts_with("HTTP/1.1 200"), "request {n}: {reply}");
        let closing = reply.to_ascii_lowercase().contains("connection: close");
        assert_eq!(closing, n == 3, "request {n}: {reply}");
    }
    assert!(closed_by_server(&mut stream));
    assert_eq!(closes(&edge, "keepalive_requests", 1).await, 1);
}

#[tokio::test]
async fn a_head_trickling_in_is_cut_off_at_client_header_timeout() {
    let tailnet = tailnet(&["app"]).await;
    let edge = Edge::start(&config(&tailnet, "client_header_timeout = \"1s\""));
    // A slowloris: one header byte every 200 ms, each read well within any per-read
    // timeout; the head as a whole is bounded.
    let mut stream = connect(&edge);
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: app.example.com\r\nX-Slow: ")
        .unwrap();
    let mut cut = false;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(200));
        if stream.write_all(b"a").is_err() {
            cut = true;
            break;
        }
    }
    assert!(
        cut || closed_by_server(&mut stream),
        "the slow head was never cut"
    );
    // A connection that sends nothing at all is closed too.
    let mut silent = connect(&edge);
    assert!(closed_by_server(&mut silent));
    assert_eq!(closes(&edge, "header_timeout", 2).await, 2);
    assert_eq!(tailnet.peer("app").unwrap().requests(), 0);
}

#[tokio::test]
async fn the_first_head_timeout_counts_from_the_connection_s_start() {
    let tailnet = tailnet(&["app"]).await;
    let edge = Edge::start(&config(&tailnet, "client_header_timeout = \"1s\""));
    // Silent for 0.8 s, then half a head, the rest 0.5 s later: 1.3 s after the connection
    // began, past the limit, however promptly each part came once the head had started.
    let mut stream = connect(&edge);
    std::thread::sleep(Duration::from_millis(800));
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: app.exa")
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let _ = stream.write_all(b"mple.com\r\n\r\n");
    let reply = read_response(&mut stream);
    assert!(!reply.starts_with("HTTP/1.1 200"), "answered: {reply}");
    assert!(closed_by_server(&mut stream));
    assert_eq!(closes(&edge, "header_timeout", 1).await, 1);
}

#[tokio::test]
async fn a_head_and_its_body_in_one_write_pass_a_small_max_header_size() {
    let tailnet = tailnet(&["app"]).await;
    let edge = Edge::start(&config(
        &tailnet,
        "max_header_line = \"1k\"\nmax_header_size = \"1k\"",
    ));
    // The first read takes the head and 3 KiB of body at once: only the head counts.
    let body = "b".repeat(3000);
    let request = format!(
        "POST /up/echo HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = connect(&edge);
    stream.write_all(request.as_bytes()).unwrap();
    let reply = read_response(&mut stream);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    // And on a kept-alive connection, whose next head arrives the same way.
    stream.write_all(request.as_bytes()).unwrap();
    let reply = read_response(&mut stream);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert_eq!(tailnet.peer("app").unwrap().requests(), 2);
}

#[tokio::test]
async fn a_stalled_body_gets_408_after_client_body_timeout() {
    let tailnet = tailnet(&["app"]).await;
    let edge = Edge::start(&config(&tailnet, "client_body_timeout = \"1s\""));
    let mut stream = connect(&edge);
    stream
        .write_all(b"POST /up/x HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 10\r\n\r\nab")
        .unwrap();
    let reply = read_response(&mut stream);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert_eq!(closes(&edge, "body_timeout", 1).await, 1);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_after_send_timeout() {
    let tailnet = tailnet(&["app"]).await;
    let edge = Edge::start(&config(&tailnet, "send_timeout = \"1s\""));
    let mut stream = connect(&edge);
    // 64 MiB: far more than the socket buffers hold, so the proxy's writes stall.
    stream
        .write_all(b"GET /up/big?size=67108864 HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 12];
    stream.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    assert_eq!(
        closes(&edge, "send_timeout", 1).await,
        1,
        "the stalled send was never given up"
    );
}

#[tokio::test]
async fn heads_over_the_limits_are_answered_at_the_edge_and_never_forwarded() {
    let tailnet = tailnet(&["app"]).await;
    let edge = Edge::start(&config(&tailnet, ""));
    let long = "a".repeat(9000);
    let cases = [
        (
            format!("GET /up/{long} HTTP/1.1\r\nHost: app.example.com\r\n\r\n"),
            "414",
        ),
        (
            format!("GET /up/ HTTP/1.1\r\nHost: app.example.com\r\nX-Long: {long}\r\n\r\n"),
            "400",
        ),
        (
            format!(
                "GET /up/ HTTP/1.1\r\nHost: app.example.com\r\n{}\r\n",
                (0..5)
                    .map(|i| format!("X-{i}: {}\r\n", "b".repeat(7000)))
                    .collect::<String>()
            ),
            "400",
        ),
        (
            format!(
                "GET /up/ HTTP/1.1\r\nHost: app.example.com\r\n{}\r\n",
                (0..101)
                    .map(|i| format!("X-{i}: v\r\n"))
                    .collect::<String>()
            ),
            "400",
        ),
    ];
    for (request, status) in &cases {
        let reply = raw_request(edge.addr, request);
        assert!(
            reply.starts_with(&format!("HTTP/1.1 {status}")),
            "want {status}: {}",
            reply.lines().next().unwrap_or("no answer")
        );
    }
    // An unterminated 1 MiB head: refused after the limit, without reading the rest.
    let mut stream = connect(&edge);
    let writer = {
        let mut stream = stream.try_clone().unwrap();
        std::thread::spawn(move || {
            let _ = stream.write_all(b"GET /up/ HTTP/1.1\r\nHost: app.example.com\r\nX-Big: ");
            let _ = stream.write_all(&vec![b'c'; 1 << 20]);
        })
    };
    let reply = read_response(&mut stream);
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    writer.join().unwrap();
    assert_eq!(
        tailnet.peer("app").unwrap().requests(),
        0,
        "a refused head reached the peer"
    );
    assert_eq!(closes(&edge, "header_too_large", 5).await, 5);
    // Heads within the limits pass.
    let ok = raw_request(
        edge.addr,
        &format!(
            "GET /up/{} HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n",
            "d".repeat(7000)
        ),
    );
    assert!(
        ok.starts_with("HTTP/1.1 200"),
        "{}",
        ok.lines().next().unwrap_or("")
    );
}

/// Sends a 1 MiB head and then 4 MiB more (more than the sockets' buffers take if no one
/// reads them) while reading the answer to its end: the answer, how the read ended and
/// whether all was sent.
fn send_a_huge_head(edge: &Edge) -> (String, std::io::Result<usize>, std::io::Result<()>) {
    let mut stream = connect(edge);
    let writer = {
        let mut stream = stream.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut head = b"GET /up/ HTTP/1.1\r\nHost: app.example.com\r\n".to_vec();
            for i in 0..1024 {
                head.extend_from_slice(format!("X-{i:04}: {}\r\n", "c".repeat(1000)).as_bytes());
            }
            stream.write_all(&head)?;
            (0..64).try_for_each(|_| stream.write_all(&[b'c'; 64 * 1024]))
        })
    };
    let mut reply = Vec::new();
    let end = stream.read_to_end(&mut reply);
    let sent = writer.join().unwrap();
    (String::from_utf8_lossy(&reply).into_owned(), end, sent)
}

#[tokio::test]
async fn a_refused_head_is_answered_and_closed_without_a_reset() {
    let tailnet = tailnet(&["app"]).await;
    // Refused at the 32 KiB limit while the client still sends. Closed straight away with
    // that input unread, the edge's socket would reset the connection, which can cost a
    // client on a real network the answer. As nginx, the edge shuts its side after the
    // answer and reads and throws away what still comes, within the lingering bounds.
    let edge = Edge::start(&config(&tailnet, ""));
    let (reply, end, sent) = send_a_huge_head(&edge);
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(end.is_ok(), "reset after the answer: {end:?}");
    assert!(sent.is_ok(), "the rest was refused: {sent:?}");
    // Past `lingering_size`, the edge closes: the client's sending fails.
    let edge = Edge::start(&config(&tailnet, "lingering_size = \"64k\""));
    let (reply, _, sent) = send_a_huge_head(&edge);
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(sent.is_err(), "5 MiB thrown away past a 64 KiB bound");
    assert_eq!(tailnet.peer("app").unwrap().requests(), 0);
}

#[tokio::test]
async fn connections_beyond_max_connections_are_closed_at_once() {
    let tailnet = tailnet(&["app"]).await;
    let edge = Edge::start(&config(&tailnet, "max_connections = 3"));
    // The start-up health check's connection is gone (it may end just after its answer).
    assert!(eventually_connections(&edge, 0).await);
    // Three clients, each served once and then idling on its keep-alive connection.
    let held: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut stream = connect(&edge);
            stream.write_all(GET.as_bytes()).unwrap();
            assert!(read_response(&mut stream).starts_with("HTTP/1.1 200"));
            stream
        })
        .collect();
    assert!(eventually_connections(&edge, 3).await);
    let mut extra = connect(&edge);
    assert!(closed_by_server(&mut extra), "a fourth connection was kept");
    assert_eq!(closes(&edge, "max_connections", 1).await, 1);
    drop(held);
    // Once they are gone, a new client is served again.
    let served = eventually(Duration::from_secs(10), || {
        raw_request(
            edge.addr,
            "GET / HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n",
        )
        .starts_with("HTTP/1.1 200")
    })
    .await;
    assert!(served);
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let tailnet = tailnet(&["app"]).await;
    let edge = Edge::start(&config(&tailnet, ""));
    let mut stream = connect(&edge);
    let three: String = ["/up/a", "/", "/up/c"]
        .iter()
        .map(|path| format!("GET {path} HTTP/1.1\r\nHost: app.example.com\r\n\r\n"))
        .collect();
    stream.write_all(three.as_bytes()).unwrap();
    for expected in ["hello from app", "ok", "hello from app"] {
        let reply = read_response(&mut stream);
        assert!(
            reply.starts_with("HTTP/1.1 200") && reply.contains(expected),
            "{reply}"
        );
    }
    // A second request sent while the first is still upstream waits its turn.
    stream
        .write_all(b"GET /up/slow?delay_ms=300 HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    stream.write_all(GET.as_bytes()).unwrap();
    let slow = read_response(&mut stream);
    let fast = read_response(&mut stream);
    assert!(
        slow.starts_with("HTTP/1.1 200") && slow.contains("hello from app"),
        "{slow}"
    );
    assert!(
        fast.starts_with("HTTP/1.1 200") && fast.ends_with("ok\n"),
        "{fast}"
    );
}

#[tokio::test]
async fn an_origin_response_head_over_max_response_header_is_a_502() {
    let tailnet = tailnet(&["app"]).await;
    let edge = Edge::start(&config(&tailnet, ""));
    let small = get(&edge, "app.example.com", "/up/a?header_size=1000").await;
    assert_eq!(small.status, 200);
    let big = get(&edge, "app.example.com", "/up/b?header_size=10000").await;
    assert_eq!(big.status, 502, "{big:?}");
}

/// Calls of [`count_trim`] in this test process.
static TRIMS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn count_trim() {
    TRIMS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// The trims counted once they are more than `past`, or after 10 s.
async fn trims_beyond(past: usize) -> usize {
    for _ in 0..100 {
        let trims = TRIMS.load(std::sync::atomic::Ordering::Relaxed);
        if trims > past {
            return trims;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    TRIMS.load(std::sync::atomic::Ordering::Relaxed)
}

#[tokio::test]
async fn memory_is_trimmed_after_connections_close_once_for_a_burst() {
    let tailnet = tailnet(&["app"]).await;
    let edge = Edge::start_with_setup(&config(&tailnet, ""), &[], |services| {
        services.trim_memory_with(count_trim)
    });
    // The start-up health check's connection closed: its trim comes a second later.
    assert_eq!(trims_beyond(0).await, 1);
    // A burst of connections, each closed after its answer: one trim after them, not one
    // per connection.
    for n in 0..50 {
        let mut stream = connect(&edge);
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n")
            .unwrap();
        let reply = read_response(&mut stream);
        assert!(reply.starts_with("HTTP/1.1 200"), "connection {n}: {reply}");
        assert!(closed_by_server(&mut stream), "connection {n} left open");
    }
    let trims = trims_beyond(1).await;
    assert!((2..10).contains(&trims), "{trims} trims for 51 connections");
}

#[tokio::test]
async fn a_response_written_during_a_graceful_shutdown_says_connection_close() {
    let tailnet = tailnet(&["app"]).await;
    let edge = Edge::start(&config(&tailnet, ""));
    let mut stream = connect(&edge);
    stream.write_all(GET.as_bytes()).unwrap();
    let before = read_response(&mut stream);
    assert!(
        before
            .to_ascii_lowercase()
            .contains("connection: keep-alive"),
        "{before}"
    );
    stream
        .write_all(b"GET /up/slow?delay_ms=500 HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
        .unwrap();
    let peer = tailnet.peer("app").unwrap().clone();
    assert!(eventually(Duration::from_secs(5), || peer.requests() == 1).await);
    edge.begin_shutdown(Duration::from_secs(10));
    // Answered, and told that the connection closes after it: a client told to keep it alive
    // would send its next request into that close.
    let during = read_response(&mut stream);
    assert!(
        during.starts_with("HTTP/1.1 200") && during.contains("hello from app"),
        "{during}"
    );
    assert!(
        during.to_ascii_lowercase().contains("connection: close"),
        "{during}"
    );
    assert!(closed_by_server(&mut stream));
}

#[tokio::test]
async fn a_client_that_closes_while_the_upstream_works_ends_the_request_there() {
    let tailnet = tailnet(&["app"]).await;
    let logged = "[access_log]\npath = \"access.log\"\n";
    let edge = Edge::start(&format!("{}\n{logged}", config(&tailnet, "")));
    let peer = tailnet.peer("app").unwrap().clone();
    assert_eq!(get(&edge, "app.example.com", "/up/a").await.status, 200);
    let connections = peer.connections();

    let mut stream = connect(&edge);
    stream
        .write_all(b"GET /up/slow?delay_ms=3000 HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
        .unwrap();
    assert!(eventually(Duration::from_secs(5), || peer.requests() == 2).await);
    // The client gives up (its side closed, as a crawler's timeout does) while the upstream
    // still works on the answer: the request ends there, as nginx ends it, and the client
    // gets no answer where it would otherwise have got the upstream's, 3 s later.
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    // The upstream connection still owed that answer: it is closed, not pooled, and the next
    // request goes over a new one.
    assert_eq!(get(&edge, "app.example.com", "/up/b").await.status, 200);
    assert_eq!(peer.connections(), connections + 1);
    // Logged as nginx logs it: 499, the client closed the request.
    let log = edge.dir().join("access.log");
    let mut line = None;
    eventually(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        line = text
            .lines()
            .find(|l| l.contains("/up/slow"))
            .map(str::to_owned);
        line.is_some()
    })
    .await;
    let line = line.expect("the request's access-log line");
    assert!(line.contains(r#""status":499"#), "{line}");
}
