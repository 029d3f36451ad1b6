//! `[server] in_progress` and `in_progress_hold`: the bound on the HTTP/1 requests a worker
//! thread works on at once. The real binary with one worker thread, raw sockets, and the
//! fake tailnet's slow answers.

mod common;

use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

/// The `app` peer behind `app.example.com`, with `server` lines added to `[server]`.
fn config(tailnet: &fake_tailnet::FakeTailnet, server: &str) -> String {
    let base = base_config(tailnet).replacen("[server]\n", &format!("[server]\n{server}\n"), 1);
    format!(
        r#"{base}
[upstreams.app]
address = "app.{d}:{p}"

[sites.app]
hosts = ["app.example.com"]

[[sites.app.locations]]
match = "/"
proxy = "app"
"#,
        d = tailnet.domain(),
        p = tailnet.http_port(),
    )
}

/// Sends a GET for `path` on a new connection.
fn send_get(proxy: &Proxy, path: &str) -> TcpStream {
    let mut stream = raw_connection(proxy.addr);
    send_again(&mut stream, path);
    stream
}

fn send_again(stream: &mut TcpStream, path: &str) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: app.example.com\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("send");
}

/// Reads one response; its status line.
fn status_line(stream: &mut TcpStream) -> String {
    let response = read_response(stream);
    response.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_request_beyond_in_progress_waits_until_one_in_progress_ends() {
    let tailnet = tailnet(&["app"]).await;
    let peer = tailnet.peer("app").unwrap().clone();
    let server = "in_progress = 1\nin_progress_hold = \"1h\"";
    let proxy = Proxy::start(&config(&tailnet, server));

    let slow = send_get(&proxy, "/slow?delay_ms=30000");
    assert!(eventually(Duration::from_secs(5), || peer.requests() == 1).await);
    // The thread works on one request at a time: the next one waits, and does not reach
    // the upstream while the first is in progress.
    let mut next = send_get(&proxy, "/next");
    let reached = eventually(Duration::from_millis(300), || peer.requests() > 1).await;
    assert!(!reached, "the second request reached the upstream");
    // The first one ends (its client gives up): the second goes on and is answered.
    slow.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(status_line(&mut next), "HTTP/1.1 200 OK");
    assert_eq!(peer.requests(), 2);
}

#[tokio::test]
async fn a_request_in_progress_longer_than_in_progress_hold_no_longer_holds_up_the_next() {
    let tailnet = tailnet(&["app"]).await;
    let peer = tailnet.peer("app").unwrap().clone();
    let server = "in_progress = 1\nin_progress_hold = \"200ms\"";
    let proxy = Proxy::start(&config(&tailnet, server));

    // Three requests for slow upstream answers (30 s each), sent together, then a fast one
    // on a fourth connection: each slow one is in progress past its hold in turn, and the
    // next in line takes its place, until the fast one is answered; then more on its
    // connection.
    let slow: Vec<TcpStream> = (0..3)
        .map(|i| send_get(&proxy, &format!("/slow?delay_ms=30000&n={i}")))
        .collect();
    let mut next = send_get(&proxy, "/next");
    assert_eq!(status_line(&mut next), "HTTP/1.1 200 OK");
    for _ in 0..3 {
        send_again(&mut next, "/again");
        assert_eq!(status_line(&mut next), "HTTP/1.1 200 OK");
    }
    // All three slow ones reached the upstream too, none answered yet.
    assert!(eventually(Duration::from_secs(5), || peer.requests() == 7).await);
    drop(slow);
}

#[tokio::test]
async fn each_request_past_its_hold_lets_the_next_start_in_its_stead() {
    let tailnet = tailnet(&["app"]).await;
    let peer = tailnet.peer("app").unwrap().clone();
    let server = "in_progress = 1\nin_progress_hold = \"1s\"";
    let proxy = Proxy::start(&config(&tailnet, server));

    let first = send_get(&proxy, "/slow?delay_ms=30000&n=0");
    assert!(eventually(Duration::from_secs(5), || peer.requests() == 1).await);
    let waiting: Vec<TcpStream> = (1..4)
        .map(|i| send_get(&proxy, &format!("/slow?delay_ms=30000&n={i}")))
        .collect();
    // When the first one's hold passes, it stops counting and the next starts in its
    // stead, one, not more: the others wait for the holds after it.
    assert!(eventually(Duration::from_secs(5), || peer.requests() >= 2).await);
    let more = eventually(Duration::from_millis(300), || peer.requests() > 2).await;
    assert!(!more, "more than one started on one request's hold passing");
    assert!(eventually(Duration::from_secs(8), || peer.requests() == 4).await);
    drop((first, waiting));
}

#[tokio::test]
async fn without_in_progress_a_slow_request_holds_up_nothing() {
    let tailnet = tailnet(&["app"]).await;
    let peer = tailnet.peer("app").unwrap().clone();
    let proxy = Proxy::start(&config(&tailnet, "in_progress = 0"));

    let _slow = send_get(&proxy, "/slow?delay_ms=30000");
    assert!(eventually(Duration::from_secs(5), || peer.requests() == 1).await);
    let mut next = send_get(&proxy, "/next");
    assert_eq!(status_line(&mut next), "HTTP/1.1 200 OK");
    assert_eq!(peer.requests(), 2);
}
