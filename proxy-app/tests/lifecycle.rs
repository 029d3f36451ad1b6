//! The binary's life: `check` on broken configs, `--version`, graceful SIGTERM.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

const GOOD: &str = r#"
[upstreams.docs]
address = "docs.tail1234.ts.net:443"
tls = true

[sites.docs]
hosts = ["docs.example.com"]

[[sites.docs.locations]]
match = "/"
proxy = "docs"
"#;

#[test]
fn check_accepts_a_valid_config() {
    let (ok, text) = check(GOOD);
    assert!(ok, "{text}");
    assert!(text.contains("ok (1 sites, 1 upstreams)"), "{text}");
}

#[test]
fn check_accepts_the_example_configs() {
    for entry in std::fs::read_dir(testdata("configs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let out = Command::new(binary())
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn check_rejects_broken_configs_naming_file_line_and_key() {
    // (replace this, with that, expected "line: key: message" fragment)
    let cases: &[(&str, &str, &str)] = &[
        ("proxy = \"docs\"", "proxy = \"indri\"", "edge.toml:11: sites.docs.locations[0].proxy: unknown upstream `indri`"),
        ("tls = true", "tls = true\nread_timeout = \"soon\"", "edge.toml:5: upstreams.docs.read_timeout: invalid duration `soon`"),
        ("tls = true", "tls = true\nconnect_timeout = \"30\"", "edge.toml:5: upstreams.docs.connect_timeout: duration `30` has no unit"),
        ("hosts = [\"docs.example.com\"]", "hosts = [\"docs.example.com\"]\nmax_body_size = \"12 parsecs\"", "edge.toml:8: sites.docs.max_body_size: invalid size"),
        ("match = \"/\"", "match = \"~ ^/(unclosed\"", "edge.toml:10: sites.docs.locations[0].match: invalid regex"),
        ("address = \"docs.tail1234.ts.net:443\"", "address = \"docs.tail1234.ts.net\"", "edge.toml:3: upstreams.docs.address: address `docs.tail1234.ts.net` has no port"),
        ("tls = true", "tls = true\nca_file = \"missing-ca.pem\"", "edge.toml:5: upstreams.docs.ca_file: cannot read"),
        ("hosts = [\"docs.example.com\"]", "hosts = [\"docs.example.com\"]\nerror_pages = { 502 = \"nope.html\" }", "edge.toml:8: sites.docs.error_pages.502: cannot read"),
        ("tls = true", "tls = true\ntimeout = \"1s\"", "edge.toml:5: upstreams.docs.timeout: unknown field `timeout`"),
        ("match = \"/\"", "match = \"docs/\"", "edge.toml:10: sites.docs.locations[0].match: location `docs/` must be a path starting with '/'"),
        ("proxy = \"docs\"", "proxy = \"docs\"\nreturn = { status = 200 }", "edge.toml:9: sites.docs.locations[0]: a location needs exactly one action"),
        ("tls = true", "tls = \"yes\"", "edge.toml:4: upstreams.docs.tls: invalid type"),
        ("[[sites.docs.locations]]", "[sites.dup]\nhosts = [\"DOCS.example.com\"]\n[[sites.dup.locations]]\nmatch = \"/\"\nproxy = \"docs\"\n\n[[sites.docs.locations]]", "edge.toml:10: sites.dup.hosts[0]: duplicate host `docs.example.com`: already served by site `docs`"),
        ("[upstreams.docs]", "[server]\nupgrade_sock = \"/nonexistent-dir/upgrade.sock\"\n\n[upstreams.docs]", "edge.toml:3: server.upgrade_sock: `/nonexistent-dir/upgrade.sock` is not a socket path in an existing directory"),
    ];
    for (from, to, expected) in cases {
        assert!(GOOD.contains(from), "bad case: {from}");
        let broken = GOOD.replacen(from, to, 1);
        let (ok, text) = check(&broken);
        assert!(!ok, "accepted a broken config:\n{broken}");
        assert!(
            text.contains(expected),
            "expected `{expected}` in:\n{text}\nfor config:\n{broken}"
        );
        assert!(!text.contains("panicked"), "{text}");
    }
}

/// An upstream on the userspace tailnet is built only with the cargo feature `tailscale-rs`:
/// a build without it refuses the config and says which feature to build.
#[test]
fn check_names_the_feature_a_tailscale_rs_upstream_needs() {
    let config = GOOD.replace("tls = true\n", "tls = true\ntransport = \"tailscale-rs\"\n")
        + "\n[tailnet]\nstate_dir = \"tailnet-state\"\n";
    let (ok, text) = check(&config);
    if cfg!(feature = "tailscale-rs") {
        assert!(ok, "{text}");
    } else {
        assert!(!ok, "{text}");
        assert!(
            text.contains("edge.toml:5: upstreams.docs.transport: transport `tailscale-rs` needs the cargo feature `tailscale-rs`, which this build lacks (build with `--features tailscale-rs`)"),
            "{text}"
        );
        assert!(
            text.contains(
                "edge.toml:14: tailnet: `[tailnet]` needs the cargo feature `tailscale-rs`"
            ),
            "{text}"
        );
    }
}

#[test]
fn version_is_printed() {
    let out = Command::new(binary()).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_and_refuses_new_ones() {
    let tailnet = tailnet(&["slow"]).await;
    let config = format!(
        "{}\n[access_log]\npath = \"access.log\"\n[upstreams.slow]\naddress = \"slow.{}:{}\"\n[sites.slow]\nhosts = [\"slow.example.com\"]\n[[sites.slow.locations]]\nmatch = \"/\"\nproxy = \"slow\"\n",
        base_config(&tailnet),
        tailnet.domain(),
        tailnet.http_port()
    );
    let mut proxy = Proxy::start(&config);
    let url = proxy.url("/?delay_ms=1500");
    let in_flight = tokio::spawn(async move {
        client()
            .get(url)
            .header("host", "slow.example.com")
            .send()
            .await
            .map(|r| {
                let connection = r.headers().get("connection").cloned();
                (r.status().as_u16(), connection)
            })
    });
    // Let the request reach the peer, then ask the proxy to stop.
    let peer = tailnet.peer("slow").unwrap().clone();
    assert!(eventually(Duration::from_secs(5), || peer.requests() == 1).await);
    proxy.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = std::net::TcpStream::connect_timeout(&proxy.addr, Duration::from_millis(500));
    assert!(
        refused.is_err(),
        "new connections are refused while draining"
    );

    let (status, connection) = in_flight
        .await
        .unwrap()
        .expect("in-flight request completed");
    assert_eq!(status, 200);
    // Its answer says the connection closes after it, so the client sends its next request
    // on a new connection (to the process that took over, after an upgrade).
    assert_eq!(
        connection.as_ref().and_then(|v| v.to_str().ok()),
        Some("close")
    );
    let status = proxy
        .wait_exit(Duration::from_secs(15))
        .expect("exits after the grace period");
    assert!(status.success(), "exit status {status}");
    // The drained request's log line was written before the process exited.
    let log = std::fs::read_to_string(proxy.dir().join("access.log")).unwrap_or_default();
    assert!(log.contains(r#""uri":"/?delay_ms=1500""#), "{log}");
}

#[tokio::test]
async fn sigterm_with_nothing_in_flight_exits_without_waiting_out_the_grace_period() {
    let tailnet = tailnet(&["docs"]).await;
    let config = sites_config(&tailnet, &["docs"])
        .replace("grace_period = \"3s\"", "grace_period = \"60s\"");
    let mut proxy = Proxy::start(&config);
    assert_eq!(get(&proxy, "docs.example.com", "/").await.status, 200);
    proxy.signal("TERM");
    // Far less than the 60 s grace period: nothing was in flight.
    let status = proxy
        .wait_exit(Duration::from_secs(20))
        .expect("exits once drained, before the grace period ends");
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn sigterm_closes_idle_keepalive_connections_after_any_number_of_requests() {
    use std::io::{Read, Write};
    let tailnet = tailnet(&["docs"]).await;
    // A grace period longer than the reads below wait: the connections are closed because
    // they are idle, not because the grace period ran out.
    let config = sites_config(&tailnet, &["docs"])
        .replace("grace_period = \"3s\"", "grace_period = \"60s\"");
    let mut proxy = Proxy::start(&config);
    // One connection per number of requests served on it before it goes idle: the wait for
    // the next request watches for a shutdown from the second request on, and that watch is
    // kept from one wait to the next.
    let mut idle = Vec::new();
    for requests in 1..=3 {
        let mut conn = std::net::TcpStream::connect(proxy.addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        for _ in 0..requests {
            conn.write_all(b"GET / HTTP/1.1\r\nHost: docs.example.com\r\n\r\n")
                .unwrap();
            let mut reply = Vec::new();
            let mut chunk = [0u8; 4096];
            while !String::from_utf8_lossy(&reply).ends_with("hello from docs\n") {
                let n = conn.read(&mut chunk).expect("a whole answer");
                assert!(
                    n > 0,
                    "closed mid-answer: {}",
                    String::from_utf8_lossy(&reply)
                );
                reply.extend_from_slice(&chunk[..n]);
            }
            let text = String::from_utf8_lossy(&reply);
            assert!(text.starts_with("HTTP/1.1 200"), "{text}");
            assert!(
                !text.to_ascii_lowercase().contains("connection: close"),
                "{text}"
            );
        }
        idle.push((requests, conn));
    }
    proxy.signal("TERM");
    for (requests, mut conn) in idle {
        let mut rest = Vec::new();
        // End of stream, not the read timeout: the proxy closes the idle connection.
        conn.read_to_end(&mut rest)
            .unwrap_or_else(|e| panic!("after {requests} requests: {e}"));
        assert!(rest.is_empty(), "after {requests} requests: {rest:?}");
    }
    let status = proxy
        .wait_exit(Duration::from_secs(20))
        .expect("exits once its connections are closed");
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn two_worker_threads_serve_and_stop_with_and_without_work_stealing() {
    let tailnet = tailnet(&["docs"]).await;
    for stealing in [false, true] {
        let config = sites_config(&tailnet, &["docs"]).replace(
            "threads = 1",
            &format!("threads = 2\nwork_stealing = {stealing}"),
        );
        let mut proxy = Proxy::start(&config);
        for _ in 0..20 {
            let reply = get(&proxy, "docs.example.com", "/").await;
            assert_eq!(reply.status, 200, "work_stealing = {stealing}");
            assert_eq!(
                reply.body, "hello from docs\n",
                "work_stealing = {stealing}"
            );
        }
        proxy.signal("TERM");
        let status = proxy
            .wait_exit(Duration::from_secs(20))
            .expect("exits once drained");
        assert!(
            status.success(),
            "work_stealing = {stealing}: exit status {status}"
        );
    }
}

#[cfg(feature = "demo")]
#[tokio::test]
async fn demo_serves_docs_over_tls_from_the_built_in_fake_tailnet() {
    let demo = Demo::start().await;
    let addr = demo.addr;
    let reply = raw_request(
        addr,
        "GET / HTTP/1.1\r\nHost: docs.demo.localhost\r\nConnection: close\r\n\r\n",
    );
    let robots = raw_request(
        addr,
        "GET /robots.txt HTTP/1.1\r\nHost: docs.demo.localhost\r\nConnection: close\r\n\r\n",
    );
    let landing = raw_request(
        addr,
        "GET / HTTP/1.1\r\nHost: www.demo.localhost\r\nConnection: close\r\n\r\n",
    );
    let photos = raw_request(
        addr,
        "GET / HTTP/1.1\r\nHost: photos.demo.localhost\r\nConnection: close\r\n\r\n",
    );
    let printed = demo.printed();
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.contains("hello from docs"),
        "{reply}"
    );
    assert!(robots.contains("User-agent: *"), "{robots}");
    assert!(
        reply
            .to_ascii_lowercase()
            .contains("x-frame-options: sameorigin"),
        "headers plugin: {reply}"
    );
    assert!(
        landing.starts_with("HTTP/1.1 200") && landing.contains("static"),
        "static plugin: {landing}"
    );
    assert!(
        photos.starts_with("HTTP/1.1 502") && photos.contains("taking a nap"),
        "error page: {photos}"
    );
    assert!(
        printed.contains("curl -i http://docs.demo.localhost:"),
        "{printed}"
    );
}

/// A config for `sites` (short names, each `NAME.example.com` proxied to the peer `NAME`).
fn sites_config(tailnet: &fake_tailnet::FakeTailnet, sites: &[&str]) -> String {
    let mut config = base_config(tailnet);
    for name in sites {
        config += &format!(
            "\n[upstreams.{name}]\naddress = \"{name}.{d}:{p}\"\n[sites.{name}]\nhosts = [\"{name}.example.com\"]\n[[sites.{name}.locations]]\nmatch = \"/\"\nproxy = \"{name}\"\n",
            d = tailnet.domain(),
            p = tailnet.http_port(),
        );
    }
    config
}

async fn status_and_body(proxy: &Proxy, host: &str) -> (u16, String) {
    let reply = get(proxy, host, "/").await;
    (reply.status, reply.body)
}

#[tokio::test]
async fn sighup_reloads_the_config_and_keeps_it_when_the_new_one_is_broken() {
    let tailnet = tailnet(&["docs", "git"]).await;
    let proxy = Proxy::start(&sites_config(&tailnet, &["docs"]));
    let config_path = proxy.dir().join("proxy.toml");
    assert_eq!(status_and_body(&proxy, "docs.example.com").await.0, 200);
    assert_eq!(status_and_body(&proxy, "git.example.com").await.0, 421);

    // A new site on an upstream name the resolver has not seen yet.
    std::fs::write(&config_path, sites_config(&tailnet, &["docs", "git"])).unwrap();
    proxy.signal("HUP");
    let mut reloaded = false;
    for _ in 0..50 {
        if status_and_body(&proxy, "git.example.com").await == (200, "hello from git\n".into()) {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        reloaded,
        "the new site serves after SIGHUP:\n{}",
        proxy.logs()
    );
    assert_eq!(status_and_body(&proxy, "docs.example.com").await.0, 200);

    // A broken config is refused with its errors; the running one stays.
    std::fs::write(&config_path, "[sites.docs]\nhosts = [\"docs.example.com\"]\n[[sites.docs.locations]]\nmatch = \"/\"\nproxy = \"nowhere\"\n").unwrap();
    proxy.signal("HUP");
    assert!(
        eventually(Duration::from_secs(5), || proxy
            .logs()
            .contains("config reload rejected"))
        .await,
        "{}",
        proxy.logs()
    );
    assert!(
        proxy.logs().contains("unknown upstream `nowhere`"),
        "{}",
        proxy.logs()
    );
    assert_eq!(status_and_body(&proxy, "git.example.com").await.0, 200);
    let text = scrape(proxy.admin).await;
    assert!(
        text.contains("edge_config_reloads_total{result=\"applied\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("edge_config_reloads_total{result=\"rejected\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("edge_config_last_reload_successful 0"),
        "{text}"
    );

    // A new listen address needs a restart: it is named, and the old listener keeps serving
    // the rest of the new config (here: without the git site).
    let moved = sites_config(&tailnet, &["docs"]).replace(PUBLIC_LISTEN, "127.0.0.3:0");
    std::fs::write(&config_path, moved).unwrap();
    proxy.signal("HUP");
    assert!(
        eventually(Duration::from_secs(5), || proxy.logs().lines().any(|l| l
            .contains("only take effect on a restart")
            && l.contains("server")))
        .await,
        "{}",
        proxy.logs()
    );
    assert!(
        eventually(Duration::from_secs(5), || raw_request(
            proxy.addr,
            "GET / HTTP/1.1\r\nHost: git.example.com\r\nConnection: close\r\n\r\n"
        )
        .starts_with("HTTP/1.1 421"))
        .await
    );
    assert_eq!(status_and_body(&proxy, "docs.example.com").await.0, 200);
    assert!(scrape(proxy.admin)
        .await
        .contains("edge_config_last_reload_successful 1"));
    let listening = proxy.listening();
    assert!(
        listening.contains(&proxy.addr)
            && !listening.iter().any(|a| a.ip().to_string() == "127.0.0.3"),
        "{listening:?}"
    );
}

/// GETs `docs.example.com` on a new connection each time until `stop` is set; returns how
/// many answered 200 and the answers that did not.
fn request_until(
    addr: std::net::SocketAddr,
    stop: &std::sync::atomic::AtomicBool,
) -> (u32, Vec<String>) {
    let (mut ok, mut failed) = (0, Vec::new());
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let response = raw_request(
            addr,
            "GET / HTTP/1.1\r\nHost: docs.example.com\r\nConnection: close\r\n\r\n",
        );
        if response.starts_with("HTTP/1.1 200") {
            ok += 1;
        } else {
            failed.push(response.lines().next().unwrap_or("no answer").to_string());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    (ok, failed)
}

#[tokio::test]
async fn sigquit_hands_the_listeners_to_a_process_started_with_upgrade() {
    let tailnet = tailnet(&["docs"]).await;
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("upgrade.sock");
    let config = sites_config(&tailnet, &["docs"]).replacen(
        "[server]\n",
        &format!("[server]\nupgrade_sock = \"{}\"\n", sock.display()),
        1,
    );
    let mut old = Proxy::start(&config);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (addr, stop) = (old.addr, stop.clone());
        std::thread::spawn(move || request_until(addr, &stop))
    };

    // The new process binds the upgrade socket and waits there for the old one's sockets.
    let mut new = Proxy::spawn_under(&[], &["--upgrade"], &config, &[]);
    assert!(
        eventually(Duration::from_secs(10), || sock.exists()).await,
        "the new process listens on the upgrade socket:\n{}",
        new.logs()
    );
    old.signal("QUIT");
    let status = old
        .wait_exit(Duration::from_secs(30))
        .expect("the old process exits after handing over");
    assert!(status.success(), "exit status {status}:\n{}", old.logs());
    assert!(
        old.logs().contains("listener sockets sent"),
        "{}",
        old.logs()
    );
    // Served by the new process alone now, on the same sockets, admin listener included.
    new.wait_ready();
    assert_eq!((new.addr, new.admin), (old.addr, old.admin));
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = load.join().unwrap();
    assert!(
        failed.is_empty(),
        "requests failed during the handover: {failed:?}"
    );
    assert!(ok > 50, "only {ok} requests during the handover");
    assert!(new.try_exit_status_is_none(), "{}", new.logs());
    assert_eq!(get(&new, "docs.example.com", "/").await.status, 200);
    // The new process serves the admin listener too.
    scrape(new.admin).await;
}

#[tokio::test]
async fn sigquit_without_an_upgrade_socket_shuts_down_gracefully() {
    let tailnet = tailnet(&["docs"]).await;
    let config = sites_config(&tailnet, &["docs"]);
    let mut proxy = Proxy::start(&config);
    proxy.signal("QUIT");
    let status = proxy
        .wait_exit(Duration::from_secs(15))
        .expect("exits after the grace period");
    assert!(status.success(), "exit status {status}");
    assert!(
        proxy
            .logs()
            .contains("SIGQUIT without [server] upgrade_sock"),
        "{}",
        proxy.logs()
    );

    // --upgrade needs the socket in the config, and says so.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, &config).unwrap();
    let out = Command::new(binary())
        .args(["run", "--upgrade", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--upgrade needs `upgrade_sock`"),
        "{stderr}"
    );
}

/// The largest anonymous mapping of `pid` that is readable and writable, in bytes.
fn largest_writable_anonymous_mapping(pid: u32) -> u64 {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    maps.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // Address range, permissions, offset, device, inode; a sixth field names a file.
            if fields.len() != 5 || !fields[1].starts_with("rw") {
                return None;
            }
            let (start, end) = fields[0].split_once('-')?;
            let start = u64::from_str_radix(start, 16).ok()?;
            let end = u64::from_str_radix(end, 16).ok()?;
            Some(end - start)
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test]
async fn mimalloc_commits_its_arena_as_used_unless_the_environment_says_otherwise() {
    // mimalloc reserves a 1 GiB arena. Committed at once (its default on Linux), the whole
    // arena is one read-write mapping; committed as used, most of it stays inaccessible.
    const ARENA_COMMITTED: u64 = 512 << 20;
    let tailnet = tailnet(&["docs"]).await;
    let config = sites_config(&tailnet, &["docs"]);
    let lazy = Proxy::start_under(
        &["env", "-u", "MIMALLOC_ARENA_EAGER_COMMIT"],
        &[],
        &config,
        &[],
    );
    assert_eq!(get(&lazy, "docs.example.com", "/").await.status, 200);
    let largest = largest_writable_anonymous_mapping(lazy.pid());
    assert!(
        largest < ARENA_COMMITTED,
        "committed as used: the largest writable mapping is {} MiB",
        largest >> 20
    );
    let eager = Proxy::start_under(&["env", "MIMALLOC_ARENA_EAGER_COMMIT=1"], &[], &config, &[]);
    assert_eq!(get(&eager, "docs.example.com", "/").await.status, 200);
    let largest = largest_writable_anonymous_mapping(eager.pid());
    assert!(
        largest >= ARENA_COMMITTED,
        "committed at once, as the environment asks: the largest writable mapping is {} MiB",
        largest >> 20
    );
}
