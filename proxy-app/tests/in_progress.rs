//! `[server] in_progress` and `in_progress_hold`: the bound on the HTTP/1 requests a worker
//! thread works on at once. The real binary with one worker thread, raw sockets, and the
//! fake tailnet's slow answers; and the gate itself (pingora-core's `apps::admission`),
//! driven by hand, for what a busy thread does, which sockets cannot show reliably.

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
async fn a_thread_with_nothing_else_to_do_starts_a_request_beyond_in_progress() {
    let tailnet = tailnet(&["app"]).await;
    let peer = tailnet.peer("app").unwrap().clone();
    let server = "in_progress = 1\nin_progress_hold = \"1h\"";
    let proxy = Proxy::start(&config(&tailnet, server));

    // The first request waits on its upstream for 30 s and holds its place for an hour: the
    // thread has nothing else to do, so the next one starts anyway and is answered.
    let slow = send_get(&proxy, "/slow?delay_ms=30000");
    assert!(eventually(Duration::from_secs(5), || peer.requests() == 1).await);
    let mut next = send_get(&proxy, "/next");
    assert_eq!(status_line(&mut next), "HTTP/1.1 200 OK");
    // And again on the same connection, and on a third one.
    send_again(&mut next, "/again");
    assert_eq!(status_line(&mut next), "HTTP/1.1 200 OK");
    let mut third = send_get(&proxy, "/third");
    assert_eq!(status_line(&mut third), "HTTP/1.1 200 OK");
    assert_eq!(peer.requests(), 4);
    drop(slow);
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

/// The gate, polled by hand on a runtime without the park hook (so only the calls here tell
/// it the thread idles); each test its own setting, so its own gate.
mod gate {
    use pingora::apps::admission::{admit, on_thread_park, Admission, Admit, Permit};
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};
    use std::time::Duration;

    fn bound(in_progress: usize, hold: Duration) -> Admission {
        Admission { in_progress, hold }
    }

    /// Polls once: the permit, if the request may start now (a waiting request keeps its
    /// place in line between polls).
    fn try_start(admit: &mut Pin<Box<Admit>>) -> Option<Permit> {
        match admit.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(permit) => Some(permit),
            Poll::Pending => None,
        }
    }

    fn started(admission: Admission) -> Permit {
        try_start(&mut Box::pin(admit(admission))).expect("a place free")
    }

    fn waiting(admission: Admission) -> Pin<Box<Admit>> {
        let mut request = Box::pin(admit(admission));
        assert!(
            try_start(&mut request).is_none(),
            "started beyond the bound"
        );
        request
    }

    #[tokio::test]
    async fn beyond_the_bound_requests_wait_in_arrival_order_for_one_to_end() {
        let a = bound(2, Duration::from_secs(3600));
        let first = started(a);
        let _second = started(a);
        let mut third = waiting(a);
        let mut fourth = waiting(a);
        drop(first);
        // One place is free: the third's, the one that came first, not the fourth's.
        assert!(try_start(&mut fourth).is_none());
        let third = try_start(&mut third).expect("the third starts when the first ends");
        assert!(try_start(&mut fourth).is_none());
        drop(third);
        assert!(try_start(&mut fourth).is_some());
    }

    #[tokio::test]
    async fn a_request_past_its_hold_lets_one_more_start() {
        let a = bound(1, Duration::from_millis(500));
        let _slow = started(a);
        let mut second = waiting(a);
        let mut third = waiting(a);
        tokio::time::sleep(Duration::from_millis(600)).await;
        // The first counts no more: the second starts in its stead, and only the second.
        let _second = try_start(&mut second).expect("started once the first's hold passed");
        assert!(try_start(&mut third).is_none());
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(try_start(&mut third).is_some());
    }

    #[tokio::test]
    async fn a_thread_about_to_idle_starts_up_to_the_bound_more() {
        let a = bound(2, Duration::from_secs(3600));
        let _in_progress = (started(a), started(a));
        let mut waiting: Vec<_> = (0..5).map(|_| waiting(a)).collect();
        // The thread has nothing to run: the two in progress wait on I/O, so two more start
        // (in arrival order), not all five.
        on_thread_park();
        let first = poll_all(&mut waiting);
        assert_eq!(started_ones(&first), [true, true, false, false, false]);
        waiting.drain(..2);
        // Those two wait on I/O in turn, the thread idles again: two more.
        on_thread_park();
        let second = poll_all(&mut waiting);
        assert_eq!(started_ones(&second), [true, true, false]);
        drop((first, second));
    }

    /// Polls each once, in order; the permits are kept (dropping one ends its request).
    fn poll_all(waiting: &mut [Pin<Box<Admit>>]) -> Vec<Option<Permit>> {
        waiting.iter_mut().map(try_start).collect()
    }

    fn started_ones(permits: &[Option<Permit>]) -> Vec<bool> {
        permits.iter().map(Option::is_some).collect()
    }

    #[tokio::test]
    async fn with_nobody_waiting_a_thread_about_to_idle_keeps_its_count() {
        let a = bound(2, Duration::from_secs(3600));
        let _in_progress = (started(a), started(a));
        on_thread_park();
        let _waiting = waiting(a);
    }
}
