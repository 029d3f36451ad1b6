//! Checked upstreams, over real sockets: requests spread over the healthy addresses (in
//! turn, by URL, or to the least loaded), health checks take a failing address out and
//! bring it back, a refused connection is retried once on another address (never a POST),
//! a reload keeps what the checks found, offline mode answers while every address is down
//! (one `address` with `health` too), and the metrics say which are up.

mod common;

use common::*;
use fake_tailnet::{FakeTailnet, ResponseSpec};
use std::collections::BTreeSet;
use std::time::Duration;

/// Upper bound on each wait for a health check to change its mind.
const WAIT: Duration = Duration::from_secs(15);

fn pool_upstream(name: &str, peers: &[&str], tailnet: &FakeTailnet, extra: &str) -> String {
    let addresses: Vec<String> = peers
        .iter()
        .map(|p| format!("\"{p}.{}:{}\"", tailnet.domain(), tailnet.http_port()))
        .collect();
    format!(
        "\n[upstreams.{name}]\naddresses = [{}]\n{extra}\n",
        addresses.join(", ")
    )
}

fn site(name: &str, upstream: &str) -> String {
    format!(
        "\n[sites.{name}]\nhosts = [\"{name}.example.com\"]\n[[sites.{name}.locations]]\nmatch = \"/\"\nproxy = \"{upstream}\"\n"
    )
}

/// Which peers answered `n` requests, and their statuses.
async fn answers(proxy: &Edge, host: &str, n: usize) -> (BTreeSet<String>, Vec<u16>) {
    let mut peers = BTreeSet::new();
    let mut statuses = Vec::new();
    for _ in 0..n {
        let reply = get(proxy, host, "/page").await;
        statuses.push(reply.status);
        if let Some(peer) = reply.header("x-fake-peer") {
            peers.insert(peer.to_string());
        }
    }
    (peers, statuses)
}

fn up_line(tailnet: &FakeTailnet, upstream: &str, peer: &str, up: u8) -> String {
    let addr = tailnet.peer(peer).expect("peer").http_addr();
    format!("edge_upstream_address_up{{upstream=\"{upstream}\",address=\"{addr}\"}} {up}")
}

/// Scrapes the metrics every 100 ms until `holds` says yes (true) or [`WAIT`] passes.
async fn scrape_until(proxy: &Edge, holds: impl Fn(&str) -> bool) -> bool {
    for _ in 0..(WAIT.as_millis() / 100) {
        if holds(&scrape(proxy.admin_addr).await) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn metrics_show(proxy: &Edge, line: &str) -> bool {
    scrape_until(proxy, |text| text.contains(line)).await
}

#[tokio::test]
async fn health_checks_take_a_failing_address_out_and_bring_it_back() {
    let tailnet = tailnet(&["one", "two"]).await;
    let health = "health = { path = \"/healthz\", interval = \"100ms\", timeout = \"1s\", healthy = 1, unhealthy = 1 }";
    let config = format!(
        "{}{}{}",
        base_config(&tailnet),
        pool_upstream("app", &["one", "two"], &tailnet, health),
        site("app", "app")
    );
    let proxy = Edge::start(&config);

    let (peers, statuses) = answers(&proxy, "app.example.com", 4).await;
    assert_eq!(peers, BTreeSet::from(["one".into(), "two".into()]));
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");

    // `two` fails its checks (and would answer 503): once out, every request goes to `one`.
    let two = tailnet.peer("two").unwrap();
    two.set_response(ResponseSpec {
        status: 503,
        ..ResponseSpec::default()
    });
    assert!(
        metrics_show(&proxy, &up_line(&tailnet, "app", "two", 0)).await,
        "{}",
        scrape(proxy.admin_addr).await
    );
    let (peers, statuses) = answers(&proxy, "app.example.com", 6).await;
    assert_eq!(peers, BTreeSet::from(["one".into()]));
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let text = scrape(proxy.admin_addr).await;
    assert!(text.contains(&up_line(&tailnet, "app", "one", 1)), "{text}");
    assert!(
        text.contains("edge_upstream_health_checks_total{upstream=\"app\""),
        "{text}"
    );

    // Back: a passing check returns it to the rotation.
    two.set_response(ResponseSpec::default());
    assert!(metrics_show(&proxy, &up_line(&tailnet, "app", "two", 1)).await);
    let (peers, _) = answers(&proxy, "app.example.com", 4).await;
    assert_eq!(peers, BTreeSet::from(["one".into(), "two".into()]));
}

#[tokio::test]
async fn consistent_balance_keeps_one_url_on_one_address() {
    let tailnet = tailnet(&["one", "two", "three"]).await;
    let config = format!(
        "{}{}{}",
        base_config(&tailnet),
        pool_upstream(
            "app",
            &["one", "two", "three"],
            &tailnet,
            "balance = \"consistent\""
        ),
        site("app", "app")
    );
    let proxy = Edge::start(&config);
    for path in ["/a", "/b", "/c", "/d", "/e", "/f"] {
        let mut peers = BTreeSet::new();
        for _ in 0..3 {
            let reply = get(&proxy, "app.example.com", path).await;
            assert_eq!(reply.status, 200);
            peers.insert(reply.header("x-fake-peer").unwrap_or_default().to_string());
        }
        assert_eq!(peers.len(), 1, "{path} went to {peers:?}");
    }
}

#[tokio::test]
async fn a_refused_connection_is_retried_once_on_another_address_but_a_post_is_not() {
    let tailnet = tailnet(&["up", "down"]).await;
    // Checks far apart: only a refused connection can take `down` out during the test.
    let health = "health = { interval = \"1h\" }";
    let config = format!(
        "{}{}{}{}{}",
        base_config(&tailnet),
        pool_upstream("reads", &["up", "down"], &tailnet, health),
        pool_upstream("writes", &["up", "down"], &tailnet, health),
        site("reads", "reads"),
        site("writes", "writes")
    );
    let proxy = Edge::start(&config);
    tailnet.peer("down").unwrap().stop();

    // Round robin sends one of two requests to `down`: the GET goes on to `up`.
    let (peers, statuses) = answers(&proxy, "reads.example.com", 2).await;
    assert_eq!(peers, BTreeSet::from(["up".into()]));
    assert_eq!(statuses, [200, 200]);
    let text = scrape(proxy.admin_addr).await;
    assert!(
        text.contains("edge_upstream_retries_total{upstream=\"reads\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(&up_line(&tailnet, "reads", "down", 0)),
        "{text}"
    );

    // A POST is never sent twice: the one that met `down` fails.
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let response = client()
            .post(format!("http://{}/form", proxy.addr))
            .header("host", "writes.example.com")
            .body("a=1")
            .send()
            .await
            .expect("POST through the proxy");
        statuses.push(response.status().as_u16());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 502]);
    let text = scrape(proxy.admin_addr).await;
    assert!(
        !text.contains("edge_upstream_retries_total{upstream=\"writes\"}"),
        "{text}"
    );
    // Held out after the refusal, `down` gets no further request.
    let (peers, statuses) = answers(&proxy, "writes.example.com", 4).await;
    assert_eq!(peers, BTreeSet::from(["up".into()]));
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
}

#[tokio::test]
async fn a_reload_puts_the_new_addresses_under_checks() {
    let tailnet = tailnet(&["one", "two", "three"]).await;
    let config = |peers: &[&str], path: &str| {
        let health = format!("health = {{ path = \"{path}\", interval = \"100ms\", timeout = \"1s\", healthy = 1, unhealthy = 1 }}");
        format!(
            "{}{}{}",
            base_config(&tailnet),
            pool_upstream("app", peers, &tailnet, &health),
            site("app", "app")
        )
    };
    let proxy = Edge::start(&config(&["one", "two"], "/healthz"));
    let (peers, _) = answers(&proxy, "app.example.com", 2).await;
    assert_eq!(peers, BTreeSet::from(["one".into(), "two".into()]));

    let next =
        proxy_core::config::load_str(&config(&["two", "three"], "/ready"), None, proxy.dir())
            .unwrap_or_else(|e| panic!("{e}"));
    proxy.reloader().reload(next);
    // `three` is a new name: it joins once resolved.
    assert!(metrics_show(&proxy, &up_line(&tailnet, "app", "three", 1)).await);
    // `one` left: its series went with it.
    let one = tailnet.peer("one").expect("peer").http_addr();
    let text = scrape(proxy.admin_addr).await;
    assert!(
        !text.contains(&format!(
            "edge_upstream_address_up{{upstream=\"app\",address=\"{one}\""
        )),
        "{text}"
    );
    let (peers, statuses) = answers(&proxy, "app.example.com", 4).await;
    assert_eq!(peers, BTreeSet::from(["three".into(), "two".into()]));
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");

    // The new pool's checks run: `three` failing them goes out.
    tailnet.peer("three").unwrap().set_response(ResponseSpec {
        status: 503,
        ..ResponseSpec::default()
    });
    assert!(metrics_show(&proxy, &up_line(&tailnet, "app", "three", 0)).await);
    let (peers, _) = answers(&proxy, "app.example.com", 4).await;
    assert_eq!(peers, BTreeSet::from(["two".into()]));
}

/// Offline: once the cached `/cached` expires it is served stale (`first_body`), marked
/// offline, and anything uncached gets the maintenance `page` (503, `Retry-After: 30`); the
/// peers would answer their own 503 body.
async fn assert_offline(proxy: &Edge, first_body: &str, page: &str) {
    let mut stale = None;
    for _ in 0..(WAIT.as_millis() / 100) {
        let reply = get(proxy, "app.example.com", "/cached").await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        if reply.header("x-edge-offline").is_some() {
            stale = Some(reply);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stale = stale.expect("the expired answer served offline");
    assert_eq!(stale.header("x-cache-status"), Some("STALE"));
    assert_eq!(stale.body, first_body);
    let down = get(proxy, "app.example.com", "/other").await;
    assert_eq!((down.status, down.body.as_str()), (503, page));
    assert_eq!(down.header("retry-after"), Some("30"));
    assert_eq!(down.header("x-edge-offline"), Some("1"));
}

#[tokio::test]
async fn offline_sites_serve_stale_answers_and_a_maintenance_page_until_a_check_passes() {
    let tailnet = tailnet(&["one", "two"]).await;
    let health = "health = { path = \"/healthz\", interval = \"100ms\", timeout = \"1s\", healthy = 1, unhealthy = 1 }";
    let page = "<html><body>back soon</body></html>";
    let config = format!(
        r#"{}{}
[sites.app]
hosts = ["app.example.com"]
cache = {{ valid = {{ "200" = "1s" }} }}
offline = {{ stale = "1h", page = "maintenance.html", retry_after = "30s" }}
[[sites.app.locations]]
match = "/"
proxy = "app"
"#,
        base_config(&tailnet),
        pool_upstream("app", &["one", "two"], &tailnet, health),
    );
    let proxy = Edge::start_with_files(&config, &[("maintenance.html", page.as_bytes())]);
    let first = get(&proxy, "app.example.com", "/cached").await;
    assert_eq!(
        (first.status, first.header("x-cache-status")),
        (200, Some("MISS"))
    );

    for peer in ["one", "two"] {
        tailnet.peer(peer).unwrap().set_response(ResponseSpec {
            status: 503,
            ..ResponseSpec::default()
        });
    }
    for peer in ["one", "two"] {
        assert!(metrics_show(&proxy, &up_line(&tailnet, "app", peer, 0)).await);
    }

    assert_offline(&proxy, &first.body, page).await;

    // A passing check ends it.
    tailnet
        .peer("one")
        .unwrap()
        .set_response(ResponseSpec::default());
    assert!(metrics_show(&proxy, &up_line(&tailnet, "app", "one", 1)).await);
    let back = get(&proxy, "app.example.com", "/other").await;
    assert_eq!(back.status, 200, "{}", back.body);
    assert_eq!(back.header("x-edge-offline"), None);
}

#[test]
fn bad_pool_settings_are_refused_with_their_keys() {
    let text = r#"
[upstreams.both]
address = "a.tail1.ts.net:80"
addresses = ["b.tail1.ts.net:80"]
[upstreams.none]
tls = false
[upstreams.single]
address = "a.tail1.ts.net:80"
balance = "round_robin"
[upstreams.bad]
addresses = ["a.tail1.ts.net:80", "a.tail1.ts.net:80", "nope"]
[upstreams.checks]
addresses = ["a.tail1.ts.net:80"]
balance = "least_random"
health = { path = "healthz", interval = "0s", unhealthy = 0, status = [500, 200] }
[sites.s]
hosts = ["s.example.com"]
offline = { stale = "forever", page = "missing.html" }
[[sites.s.locations]]
match = "/"
proxy = "checks"
"#;
    let e = proxy_core::config::load_str(text, None, std::path::Path::new("."))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    for want in [
        "upstreams.both.addresses: give `address` or `addresses`, not both",
        "upstreams.none: `address` or `addresses` is required",
        "upstreams.single.balance: `balance` needs `addresses`",
        "upstreams.bad.addresses[1]: address `a.tail1.ts.net:80` is listed twice",
        "upstreams.bad.addresses[2]: address `nope` has no port",
        "upstreams.checks.balance: unknown balance `least_random`: expected one of \"round_robin\", \"consistent\", \"least_conn\"",
        "upstreams.checks.health.path: invalid health check path `healthz`",
        "upstreams.checks.health.interval: must be longer than 0s",
        "upstreams.checks.health.unhealthy: must be at least 1",
        "upstreams.checks.health.status: invalid status range [500, 200]",
        "sites.s.offline.stale:",
        "sites.s.offline.page: cannot read",
    ] {
        assert!(e.contains(want), "missing `{want}` in:\n{e}");
    }
}

/// The value of the first metrics line starting with `prefix` (0 when there is none).
fn metric_value(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(prefix))
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or(0.0)
}

fn checks_line(tailnet: &FakeTailnet, upstream: &str, peer: &str, result: &str) -> String {
    let addr = tailnet.peer(peer).expect("peer").http_addr();
    format!("edge_upstream_health_checks_total{{upstream=\"{upstream}\",address=\"{addr}\",result=\"{result}\"}} ")
}

/// Waits until the checks counter of `line` (see [`checks_line`]) exceeds `above`.
async fn checks_pass(proxy: &Edge, line: &str, above: f64) -> bool {
    scrape_until(proxy, |text| metric_value(text, line) > above).await
}

#[tokio::test]
async fn least_conn_sends_new_requests_away_from_an_address_holding_a_slow_one() {
    let tailnet = tailnet(&["one", "two"]).await;
    let config = format!(
        "{}{}{}",
        base_config(&tailnet),
        pool_upstream("app", &["one", "two"], &tailnet, "balance = \"least_conn\""),
        site("app", "app")
    );
    let proxy = Edge::start(&config);
    let requests = || {
        let one = tailnet.peer("one").expect("peer").requests();
        (one, tailnet.peer("two").expect("peer").requests())
    };
    assert_eq!(requests(), (0, 0), "TCP checks send no requests");

    // One request the peer holds open: its body never ends (the peer reads a body whole
    // before answering), on a connection the test closes itself.
    let mut held = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect to the proxy");
    let request = "POST /slow HTTP/1.1\r\nHost: app.example.com\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n";
    tokio::io::AsyncWriteExt::write_all(&mut held, request.as_bytes())
        .await
        .expect("send the slow request");
    let mut holder = None;
    for _ in 0..(WAIT.as_millis() / 50) {
        match requests() {
            (1, 0) => holder = Some("one"),
            (0, 1) => holder = Some("two"),
            _ => {}
        }
        if holder.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let holder = holder.expect("the slow request reached a peer");
    let other = if holder == "one" { "two" } else { "one" };

    // Every further request goes to the other address (round robin would send half to the
    // holder, which would answer them at once). One keep-alive connection: the proxy reads
    // a request only once the one before has ended and given its count back.
    let client = client();
    for _ in 0..6 {
        let reply = get_on(&client, &proxy, "app.example.com", "/page").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("x-fake-peer"), Some(other), "{}", reply.body);
    }

    // The client gives up mid-body: the proxy ends the request, and gives its count back.
    drop(held);
    let mut holder_answered = false;
    for _ in 0..(WAIT.as_millis() / 100) {
        let reply = get(&proxy, "app.example.com", "/page").await;
        assert_eq!(reply.status, 200);
        if reply.header("x-fake-peer") == Some(holder) {
            holder_answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        holder_answered,
        "`{holder}` never got a request again: the aborted request's count was kept\n{}\n{}",
        scrape(proxy.admin_addr).await,
        proxy.logs()
    );
}

#[tokio::test]
async fn a_reload_keeps_a_down_address_down_and_stops_the_removed_upstreams_checks() {
    let tailnet = tailnet(&["one", "two", "gone"]).await;
    // One failure takes an address out; coming back takes ten thousand passes, far longer
    // than the test: an address up again after the reload was reset by it.
    let health = "health = { path = \"/healthz\", interval = \"100ms\", timeout = \"1s\", healthy = 10000, unhealthy = 1 }";
    let kept = format!(
        "{}{}{}",
        base_config(&tailnet),
        pool_upstream("app", &["one", "two"], &tailnet, health),
        site("app", "app")
    );
    let before = format!(
        "{kept}{}{}",
        pool_upstream("old", &["gone"], &tailnet, health),
        site("old", "old")
    );
    let proxy = Edge::start(&before);
    let two = tailnet.peer("two").expect("peer");
    two.set_response(ResponseSpec {
        status: 503,
        ..ResponseSpec::default()
    });
    assert!(
        metrics_show(&proxy, &up_line(&tailnet, "app", "two", 0)).await,
        "{}",
        scrape(proxy.admin_addr).await
    );
    // `two` answers well again, but stays out until ten thousand checks pass.
    two.set_response(ResponseSpec::default());
    // A request to `old` still running keeps the old config (and its pools) alive across
    // the reload: its body never ends.
    let mut held = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect to the proxy");
    let request = "POST /slow HTTP/1.1\r\nHost: old.example.com\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n";
    tokio::io::AsyncWriteExt::write_all(&mut held, request.as_bytes())
        .await
        .expect("send the held request");
    assert!(metrics_show(&proxy, "edge_requests_in_flight 1").await);

    let next =
        proxy_core::config::load_str(&kept, None, proxy.dir()).unwrap_or_else(|e| panic!("{e}"));
    proxy.reloader().reload(next);
    let gone = tailnet.peer("gone").expect("peer");
    let gone_checks = gone.requests();
    let text = scrape(proxy.admin_addr).await;
    assert!(text.contains(&up_line(&tailnet, "app", "two", 0)), "{text}");
    assert!(
        !text.contains("edge_upstream_address_up{upstream=\"old\""),
        "{text}"
    );

    // The new pool checks `two` (and it passes), yet it still gets no request.
    let passes = checks_line(&tailnet, "app", "two", "pass");
    let after_reload = metric_value(&text, &passes);
    assert!(
        checks_pass(&proxy, &passes, after_reload + 8.0).await,
        "the kept upstream's checks stopped:\n{}",
        scrape(proxy.admin_addr).await
    );
    let (peers, statuses) = answers(&proxy, "app.example.com", 6).await;
    assert_eq!(peers, BTreeSet::from(["one".into()]));
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let text = scrape(proxy.admin_addr).await;
    assert!(text.contains(&up_line(&tailnet, "app", "two", 0)), "{text}");
    assert!(
        !text.contains("edge_upstream_address_up{upstream=\"old\""),
        "{text}"
    );

    // While `app` was checked eight times more, the removed upstream's peer saw at most the
    // check under way at the reload and the held request (which may reach it late).
    assert!(
        gone.requests() <= gone_checks + 2,
        "the removed upstream is still checked: {} requests after the reload",
        gone.requests() - gone_checks
    );
    drop(held);
}

#[tokio::test]
async fn one_address_with_health_checks_goes_offline_and_comes_back() {
    let tailnet = tailnet(&["one", "plain", "quiet"]).await;
    let health = "health = { path = \"/healthz\", interval = \"100ms\", timeout = \"1s\", healthy = 1, unhealthy = 1 }";
    let page = "<html><body>back soon</body></html>";
    let address = |peer: &str| format!("\"{peer}.{}:{}\"", tailnet.domain(), tailnet.http_port());
    let config = format!(
        r#"{}
[upstreams.app]
address = {}
{health}
[upstreams.plain]
address = {}
[upstreams.quiet]
address = {}
[sites.app]
hosts = ["app.example.com"]
cache = {{ valid = {{ "200" = "1s" }} }}
offline = {{ stale = "1h", page = "maintenance.html", retry_after = "30s" }}
[[sites.app.locations]]
match = "/"
proxy = "app"
[sites.quiet]
hosts = ["quiet.example.com"]
offline = {{ retry_after = "30s" }}
[[sites.quiet.locations]]
match = "/"
proxy = "quiet"
{}"#,
        base_config(&tailnet),
        address("one"),
        address("plain"),
        address("quiet"),
        site("plain", "plain"),
    );
    let proxy = Edge::start_with_files(&config, &[("maintenance.html", page.as_bytes())]);
    let first = get(&proxy, "app.example.com", "/cached").await;
    assert_eq!(
        (first.status, first.header("x-cache-status")),
        (200, Some("MISS"))
    );
    assert_eq!(get(&proxy, "plain.example.com", "/").await.status, 200);
    // Checked: the upstream with `health`, and the one an offline site proxies to; the
    // plain one keeps the unchecked path.
    assert!(metrics_show(&proxy, &up_line(&tailnet, "app", "one", 1)).await);
    assert!(metrics_show(&proxy, &up_line(&tailnet, "quiet", "quiet", 1)).await);
    let text = scrape(proxy.admin_addr).await;
    assert!(
        !text.contains("edge_upstream_address_up{upstream=\"plain\""),
        "{text}"
    );

    let one = tailnet.peer("one").expect("peer");
    one.set_response(ResponseSpec {
        status: 503,
        ..ResponseSpec::default()
    });
    assert!(metrics_show(&proxy, &up_line(&tailnet, "app", "one", 0)).await);

    assert_offline(&proxy, &first.body, page).await;

    // A passing check ends it.
    one.set_response(ResponseSpec::default());
    assert!(metrics_show(&proxy, &up_line(&tailnet, "app", "one", 1)).await);
    let back = get(&proxy, "app.example.com", "/other").await;
    assert_eq!(back.status, 200, "{}", back.body);
    assert_eq!(back.header("x-edge-offline"), None);
}
