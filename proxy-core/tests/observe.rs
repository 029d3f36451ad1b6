//! Observability end to end: the admin listener (`/metrics`, `/healthz`, `/readyz`, admin
//! actions), exact metric values, request ids, and metrics switched off.

mod common;

use common::*;
use fake_tailnet::{FakeLocalApi, FakeTailnet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A config: `[server]`, `[admin]` (plus `admin_extra` lines), `[resolver]`, one `docs`
/// upstream and site, then `extra`. The listen addresses are placeholders ([`Edge`] binds).
fn config(tailnet: &FakeTailnet, admin_extra: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
threads = 1
grace_period = "1s"
shutdown_timeout = "1s"
unknown_host = 421

[admin]
listen = "127.0.0.1:0"
{admin_extra}

[resolver]
nameservers = ["{dns}"]
min_ttl = "1s"
max_ttl = "2s"
timeout = "500ms"
retry_interval = "300ms"

[upstreams.docs]
address = "docs.{domain}:{http}"

[sites.docs]
hosts = ["docs.example.com"]
[[sites.docs.locations]]
match = "/"
proxy = "docs"
[[sites.docs.locations]]
match = "= /robots.txt"
return = {{ status = 200, body = "robots\n" }}
{extra}
"#,
        dns = tailnet.dns_addr(),
        domain = tailnet.domain(),
        http = tailnet.http_port(),
    )
}

/// Scrapes until `done` holds (at most 10 s); returns the last scrape either way.
async fn scrape_until(admin: SocketAddr, done: impl Fn(&str) -> bool) -> String {
    let mut text = String::new();
    for _ in 0..100 {
        text = scrape(admin).await;
        if done(&text) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    text
}

/// The value of the sample line `series` (name plus labels exactly as rendered).
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

async fn request(proxy: &Edge, method: &str, host: &str, path: &str) -> Reply {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let response = client()
        .request(method, proxy.url(path))
        .header("host", host)
        .send()
        .await
        .expect("request through the proxy");
    Reply::read(response).await
}

/// Runs `promtool check metrics` on `text`; `None` when promtool is not installed.
fn promtool_check(text: &str) -> Option<(bool, String)> {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(text.as_bytes()).ok()?;
    let out = child.wait_with_output().ok()?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), report))
}

#[tokio::test]
async fn known_requests_give_exact_counts_and_a_scrape_promtool_accepts() {
    let tailnet = tailnet(&["docs"]).await;
    let proxy = Edge::start(&config(&tailnet, "", ""));
    let admin = proxy.admin_addr;

    let mut docs_bytes = 0;
    for _ in 0..3 {
        let reply = request(&proxy, "GET", "docs.example.com", "/").await;
        assert_eq!(reply.status, 200);
        docs_bytes += reply.body.len();
    }
    let reply = request(&proxy, "GET", "docs.example.com", "/?status=503").await;
    assert_eq!(reply.status, 503);
    docs_bytes += reply.body.len();
    let reply = request(&proxy, "HEAD", "docs.example.com", "/").await;
    assert_eq!(reply.status, 200);
    let reply = request(&proxy, "BREW", "docs.example.com", "/robots.txt").await;
    assert_eq!(reply.status, 200);
    docs_bytes += reply.body.len();
    for host in ["evil.example", "other.evil.example"] {
        assert_eq!(request(&proxy, "GET", host, "/").await.status, 421);
    }

    // The logging phase runs just after the response is sent: wait for the last requests.
    let text = scrape_until(admin, |text| {
        sample(
            text,
            r#"edge_requests_total{host="unknown",method="GET",status="421"}"#,
        ) == Some(2.0)
            && sample(text, r#"edge_request_duration_seconds_count{host="docs"}"#) == Some(6.0)
    })
    .await;
    let expect = [
        (
            r#"edge_requests_total{host="docs",method="GET",status="200"}"#,
            3.0,
        ),
        (
            r#"edge_requests_total{host="docs",method="GET",status="503"}"#,
            1.0,
        ),
        (
            r#"edge_requests_total{host="docs",method="HEAD",status="200"}"#,
            1.0,
        ),
        (
            r#"edge_requests_total{host="docs",method="other",status="200"}"#,
            1.0,
        ),
        (
            r#"edge_requests_total{host="unknown",method="GET",status="421"}"#,
            2.0,
        ),
        (r#"edge_request_duration_seconds_count{host="docs"}"#, 6.0),
        // The harness's readiness probe (`/healthz`, any Host) counts as one unknown-site 200.
        (
            r#"edge_requests_total{host="unknown",method="GET",status="200"}"#,
            1.0,
        ),
        (
            r#"edge_request_duration_seconds_count{host="unknown"}"#,
            3.0,
        ),
        (
            r#"edge_upstream_response_duration_seconds_count{upstream="docs"}"#,
            5.0,
        ),
        (
            r#"edge_upstream_errors_total{upstream="docs",kind="5xx"}"#,
            1.0,
        ),
        (
            r#"edge_response_bytes_total{host="docs"}"#,
            docs_bytes as f64,
        ),
        ("edge_requests_in_flight", 0.0),
        ("edge_access_log_dropped_total", 0.0),
    ];
    for (series, value) in expect {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    }
    assert!(
        sample(&text, r#"edge_dns_lookups_total{result="success"}"#).unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert!(text.contains("edge_build_info{version="), "{text}");
    assert!(
        !text.contains("evil"),
        "a client's Host became a label value:\n{text}"
    );
    assert!(!text.contains("BREW"), "{text}");

    match promtool_check(&text) {
        Some((ok, report)) => assert!(ok, "promtool rejected the scrape:\n{report}\n{text}"),
        None if std::env::var_os("CI").is_some() => panic!("promtool is not installed"),
        None => eprintln!("promtool not installed (scripts/test.sh installs it); skipped"),
    }
}

async fn wait_for_line(path: &Path, needle: &str) -> String {
    let mut found = None;
    eventually(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        found = text.lines().find(|l| l.contains(needle)).map(str::to_owned);
        found.is_some()
    })
    .await;
    found.unwrap_or_else(|| panic!("no access-log line with {needle} in {}", path.display()))
}

#[tokio::test]
async fn request_id_is_kept_or_generated_passed_upstream_and_returned() {
    let tailnet = tailnet(&["docs"]).await;
    let proxy = Edge::start(&config(&tailnet, "", ""));
    let docs = tailnet.peer("docs").expect("docs");
    let upstream_id = || {
        docs.last_request()
            .and_then(|r| r.headers.into_iter().find(|(n, _)| n == "x-request-id"))
            .map(|(_, v)| v)
    };

    let kept = client()
        .get(proxy.url("/"))
        .header("host", "docs.example.com")
        .header("x-request-id", "abc-123.trace:1")
        .send()
        .await
        .expect("request");
    assert_eq!(kept.headers()["x-request-id"], "abc-123.trace:1");
    assert_eq!(upstream_id().as_deref(), Some("abc-123.trace:1"));

    let replaced = client()
        .get(proxy.url("/"))
        .header("host", "docs.example.com")
        .header("x-request-id", "not ok; <script>")
        .send()
        .await
        .expect("request");
    let generated = replaced.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(generated.len(), 36, "{generated}");
    assert_eq!(upstream_id().as_deref(), Some(generated.as_str()));

    // Local answers and error pages carry it too.
    let local = get(&proxy, "docs.example.com", "/robots.txt").await;
    assert_eq!(local.header("x-request-id").map(str::len), Some(36));
    let unknown = get(&proxy, "nobody.example", "/").await;
    assert_eq!(unknown.status, 421);
    assert!(unknown.header("x-request-id").is_some());
}

#[tokio::test]
async fn readyz_follows_dns_resolution_and_the_localapi_state() {
    let tailnet = tailnet(&["docs"]).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let localapi =
        FakeLocalApi::start(dir.path().join("tailscaled.sock"), "Starting").expect("fake LocalAPI");
    let ghost = tailnet.fqdn("ghost");
    let admin_extra = format!("tailscaled_socket = \"{}\"", localapi.path().display());
    let extra = format!(
        "[upstreams.ghost]\naddress = \"{ghost}:{}\"\n",
        tailnet.http_port()
    );
    let proxy = Edge::start(&config(&tailnet, &admin_extra, &extra));
    let admin = proxy.admin_addr;

    assert_eq!(admin_get(admin, "/healthz", None).await.0, 200);
    let head = raw_request(
        admin,
        "GET /healthz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
    );
    assert!(
        head.to_ascii_lowercase().contains("content-length: 3\r\n"),
        "{head}"
    );
    let (status, body) = admin_get(admin, "/readyz", None).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(&ghost), "{body}");
    assert!(body.contains("tailscaled is Starting"), "{body}");

    localapi.set_state("Running");
    let (status, body) = admin_get(admin, "/readyz", None).await;
    assert_eq!(status, 503, "{body}");
    assert!(!body.contains("tailscaled"), "{body}");

    tailnet.set_answer(&ghost, vec![std::net::Ipv4Addr::new(127, 100, 250, 1)]);
    let mut last = String::new();
    let mut ready = false;
    for _ in 0..100 {
        let (status, body) = admin_get(admin, "/readyz", None).await;
        if status == 200 {
            ready = true;
            break;
        }
        last = body;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "never ready: {last}\n{}", proxy.logs());

    localapi.set_state("Stopped");
    let (status, body) = admin_get(admin, "/readyz", None).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("tailscaled is Stopped"), "{body}");
}

#[tokio::test]
async fn admin_actions_need_a_configured_token_and_the_right_one() {
    let tailnet = tailnet(&["docs"]).await;
    let open = Edge::start(&config(&tailnet, "", ""));
    let admin = open.admin_addr;
    assert_eq!(admin_get(admin, "/admin/config", None).await.0, 403);
    assert_eq!(
        admin_get(admin, "/admin/config", Some("anything")).await.0,
        403
    );
    drop(open);

    let variable = format!("OBSERVE_TEST_TOKEN_{}", std::process::id());
    // Read when the config compiles; the name is unique to this test binary's run.
    std::env::set_var(&variable, "correct-horse");
    let admin_extra = format!("token_env = \"{variable}\"");
    let proxy = Edge::start(&config(&tailnet, &admin_extra, ""));
    let admin = proxy.admin_addr;
    assert_eq!(admin_get(admin, "/admin/config", None).await.0, 401);
    assert_eq!(
        admin_get(admin, "/admin/config", Some("wrong")).await.0,
        401
    );
    assert_eq!(
        admin_get(admin, "/admin/config", Some("correct-hors"))
            .await
            .0,
        401
    );
    let (status, body) = admin_get(admin, "/admin/config", Some("correct-horse")).await;
    assert_eq!(status, 200, "{body}");
    let summary: serde_json::Value = serde_json::from_str(&body).expect("JSON summary");
    assert_eq!(summary["sites"][0]["name"], "docs");
    assert_eq!(summary["upstreams"][0]["name"], "docs");
    assert_eq!(
        admin_get(admin, "/admin/nope", Some("correct-horse"))
            .await
            .0,
        404
    );

    // The public port serves none of it.
    for path in ["/metrics", "/admin/config", "/readyz"] {
        let reply = get(&proxy, "docs.example.com", path).await;
        assert_ne!(reply.header("content-type"), Some("application/json"));
        assert!(!reply.body.contains("edge_requests_total"), "{path}");
    }
}

#[tokio::test]
async fn upstream_failures_are_counted_by_kind() {
    let tailnet = tailnet(&["docs"]).await;
    // A port nothing listens on: bound, then released.
    let refused = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind an ephemeral port")
        .port();
    let extra = format!(
        r#"
[upstreams.down]
address = "127.0.0.1:{refused}"
[upstreams.ghost]
address = "{ghost}:80"
[upstreams.slow]
address = "docs.{domain}:{http}"
read_timeout = "200ms"

[sites.down]
hosts = ["down.example.com"]
[[sites.down.locations]]
match = "/"
proxy = "down"
[sites.ghost]
hosts = ["ghost.example.com"]
[[sites.ghost.locations]]
match = "/"
proxy = "ghost"
[sites.slow]
hosts = ["slow.example.com"]
[[sites.slow.locations]]
match = "/"
proxy = "slow"
"#,
        ghost = tailnet.fqdn("ghost"),
        domain = tailnet.domain(),
        http = tailnet.http_port(),
    );
    let proxy = Edge::start(&config(&tailnet, "", &extra));
    let admin = proxy.admin_addr;
    assert_eq!(get(&proxy, "down.example.com", "/").await.status, 502);
    assert_eq!(get(&proxy, "ghost.example.com", "/").await.status, 502);
    assert_eq!(
        get(&proxy, "slow.example.com", "/?delay_ms=2000")
            .await
            .status,
        504
    );
    let kinds = [("down", "connect"), ("ghost", "dns"), ("slow", "timeout")];
    // Wait for the error counters too: a request's duration is recorded a moment before its
    // error, so a scrape can fall between the two.
    let text = scrape_until(admin, |t| {
        let durations = ["down", "ghost", "slow"].iter().all(|site| {
            let series = format!(r#"edge_request_duration_seconds_count{{host="{site}"}}"#);
            sample(t, &series) == Some(1.0)
        });
        let errors = kinds.iter().all(|(upstream, kind)| {
            let series =
                format!(r#"edge_upstream_errors_total{{upstream="{upstream}",kind="{kind}"}}"#);
            sample(t, &series).is_some()
        });
        durations && errors
    })
    .await;
    for (upstream, kind) in kinds {
        let series =
            format!(r#"edge_upstream_errors_total{{upstream="{upstream}",kind="{kind}"}}"#);
        assert_eq!(sample(&text, &series), Some(1.0), "{series} in\n{text}");
    }
    assert!(
        sample(&text, r#"edge_dns_lookups_total{result="failure"}"#).unwrap_or(0.0) >= 1.0,
        "{text}"
    );
}

#[tokio::test]
async fn metrics_can_be_switched_off_while_the_access_log_stays() {
    let tailnet = tailnet(&["docs"]).await;
    let extra = "[access_log]\npath = \"access.log\"\n";
    let proxy = Edge::start(&config(&tailnet, "metrics = false", extra));
    let admin = proxy.admin_addr;
    let reply = request(&proxy, "GET", "docs.example.com", "/off?x=1").await;
    assert_eq!(reply.status, 200);
    let (status, body) = admin_get(admin, "/metrics", None).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("metrics are off"), "{body}");
    let (status, _) = admin_get(admin, "/healthz", None).await;
    assert_eq!(status, 200);
    let line = wait_for_line(&proxy.dir().join("access.log"), "/off?x=1").await;
    let entry: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(entry["status"], 200);
    assert!(
        entry["upstream_addr"]
            .as_str()
            .is_some_and(|a| a.contains(':')),
        "{line}"
    );
}

#[tokio::test]
async fn cache_lookups_are_counted_by_site_and_status() {
    let tailnet = tailnet(&["docs"]).await;
    let extra = r#"
[sites.pics]
hosts = ["pics.example.com"]
cache = { }
[[sites.pics.locations]]
match = "/"
proxy = "docs"
"#;
    let proxy = Edge::start(&config(&tailnet, "", extra));
    let admin = proxy.admin_addr;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let reply = request(&proxy, "GET", "pics.example.com", "/album").await;
        assert_eq!(reply.status, 200);
        seen.push(reply.header("x-cache-status").unwrap_or("-").to_string());
    }
    assert_eq!(seen, ["MISS", "HIT", "HIT"]);
    // The uncached site looks nothing up.
    assert_eq!(
        request(&proxy, "GET", "docs.example.com", "/").await.status,
        200
    );

    let hits = r#"edge_cache_lookups_total{host="pics",cache_status="HIT"}"#;
    let text = scrape_until(admin, |text| {
        sample(text, hits) == Some(2.0)
            && sample(text, r#"edge_request_duration_seconds_count{host="docs"}"#) == Some(1.0)
    })
    .await;
    assert_eq!(sample(&text, hits), Some(2.0), "{text}");
    let misses = r#"edge_cache_lookups_total{host="pics",cache_status="MISS"}"#;
    assert_eq!(sample(&text, misses), Some(1.0), "{text}");
    assert!(
        !text.contains(r#"edge_cache_lookups_total{host="docs""#),
        "{text}"
    );
}
