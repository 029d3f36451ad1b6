//! Telemetry leaving the machine, against real protocol peers: Debian's Prometheus receives
//! the remote-write pushes and is queried back for exact values (and for every query of the
//! Fly dashboards); a Loki receiver decodes the real push format (protobuf + snappy) and
//! checks labels, lines, times and order; receivers that are down, hung or unresolvable never
//! hold a request up, lose nothing within the buffer and count what they drop beyond it.

mod common;

use common::telemetry::{Mode, Prometheus, PushReceiver};
use common::*;
use fake_tailnet::FakeTailnet;
use std::collections::BTreeSet;
use std::future::Future;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

/// `[server]`, `[admin]`, `[resolver]`, the `docs` upstream and site, then `extra`.
fn config(tailnet: &FakeTailnet, extra: &str) -> String {
    format!(
        "{base}\n[upstreams.docs]\naddress = \"docs.{domain}:{http}\"\n\
         [sites.docs]\nhosts = [\"docs.example.com\"]\n\
         [[sites.docs.locations]]\nmatch = \"/\"\nproxy = \"docs\"\n{extra}\n",
        base = base_config(tailnet),
        domain = tailnet.domain(),
        http = tailnet.http_port(),
    )
}

/// A tailnet name for a receiver on this machine, answered by the fake MagicDNS.
fn homelab_name(tailnet: &FakeTailnet, short: &str) -> String {
    let name = tailnet.fqdn(short);
    tailnet.set_answer(&name, vec![Ipv4Addr::LOCALHOST]);
    name
}

/// Polls `check` every 100 ms until it holds; fails the test after 30 s.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..300 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never happened: {what}");
}

/// The value of the sample `series` (name and labels exactly as `/metrics` renders them).
async fn metric(edge: &Edge, series: &str) -> f64 {
    let text = scrape(edge.admin_addr).await;
    text.lines()
        .find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(f64::NAN)
}

async fn docs(edge: &Edge, path: &str) -> u16 {
    get(edge, "docs.example.com", path).await.status
}

/// Metric names with at least one sample line in a `/metrics` text.
fn served_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_receives_the_served_series_with_exact_counts_and_the_dashboards_work() {
    let tailnet = tailnet(&["docs"]).await;
    let prometheus = Prometheus::start().await;
    let name = homelab_name(&tailnet, "prometheus");
    let edge = Edge::start(&config(
        &tailnet,
        &format!(
            "[telemetry]\nlabels = {{ instance = \"flyio-proxy\" }}\n\
             [telemetry.prometheus]\nremote_write = \"http://{name}:{port}/api/v1/write\"\n\
             interval = \"200ms\"\n",
            port = prometheus.port()
        ),
    ));
    for _ in 0..3 {
        assert_eq!(docs(&edge, "/").await, 200);
    }
    for _ in 0..2 {
        assert_eq!(docs(&edge, "/?status=503").await, 503);
    }

    let ok = r#"edge_requests_total{host="docs",method="GET",status="200",instance="flyio-proxy"}"#;
    let failed =
        r#"edge_requests_total{host="docs",method="GET",status="503",instance="flyio-proxy"}"#;
    until("Prometheus has the requests", || async {
        prometheus.value(ok).await == Some(3.0) && prometheus.value(failed).await == Some(2.0)
    })
    .await;
    let count = r#"edge_request_duration_seconds_count{host="docs",instance="flyio-proxy"}"#;
    let inf =
        r#"edge_request_duration_seconds_bucket{host="docs",le="+Inf",instance="flyio-proxy"}"#;
    assert_eq!(prometheus.value(count).await, Some(5.0));
    assert_eq!(prometheus.value(inf).await, Some(5.0));
    let buckets = r#"count(edge_request_duration_seconds_bucket{host="docs"})"#;
    assert_eq!(
        prometheus.value(buckets).await,
        Some(15.0),
        "14 bounds and +Inf"
    );
    let errors = r#"edge_upstream_errors_total{upstream="docs",kind="5xx"}"#;
    assert_eq!(prometheus.value(errors).await, Some(2.0));

    // Every series name /metrics serves is pushed, and every pushed series carries the label.
    let served = served_names(&scrape(edge.admin_addr).await);
    let pushed_names = || async {
        let pushed = prometheus
            .vector(r#"count by (__name__) ({__name__=~"edge_.+"})"#)
            .await;
        pushed
            .iter()
            .filter_map(|(m, _)| m["__name__"].as_str().map(str::to_owned))
            .collect::<BTreeSet<String>>()
    };
    until("every served name is pushed", || async {
        served.is_subset(&pushed_names().await)
    })
    .await;
    let unlabelled = r#"count({__name__=~"edge_.+",instance!="flyio-proxy"})"#;
    assert!(prometheus.vector(unlabelled).await.is_empty());

    // The dashboards' queries, unchanged, find the pushed series.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fly/dashboards");
    let mut queried = 0;
    for entry in std::fs::read_dir(&dir).expect("fly/dashboards") {
        let path = entry.expect("dashboard").path();
        let text = std::fs::read_to_string(&path).expect("read dashboard");
        let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
        for panel in dashboard["panels"].as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let Some(expr) = target["expr"].as_str() else {
                    continue;
                };
                let expr = expr
                    .replace("$site", ".+")
                    .replace("$__rate_interval", "1m");
                if let Err(e) = prometheus.try_query(&expr).await {
                    panic!("{}: {e}", path.display());
                }
                // A query over metrics this proxy has served finds data (once a rate has
                // two samples to work with).
                let all_served = expr
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .filter(|word| word.starts_with("edge_"))
                    .all(|word| served.contains(word));
                if all_served {
                    until(&format!("{}: data for {expr}", path.display()), || async {
                        let data = prometheus.try_query(&expr).await.unwrap_or_default();
                        data["result"].as_array().is_some_and(|r| !r.is_empty())
                    })
                    .await;
                }
                queried += 1;
            }
        }
    }
    assert!(queried > 10, "only {queried} dashboard queries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loki_receives_every_redacted_line_in_order_with_its_labels_and_request_time() {
    let tailnet = tailnet(&["docs"]).await;
    let name = homelab_name(&tailnet, "loki");
    let loki = PushReceiver::loki_tls(&name);
    // The token comes from the environment, never the config.
    std::env::set_var("EDGE_TEST_LOKI_TOKEN", "t0ken");
    let ca = fake_tailnet::ca_pem_file().expect("tailnet CA");
    let edge = Edge::start(&config(
        &tailnet,
        &format!(
            "[access_log]\npath = \"access.log\"\n\
             [telemetry]\nlabels = {{ instance = \"flyio-proxy\" }}\n\
             [telemetry.loki]\nurl = \"https://{name}:{port}/loki/api/v1/push\"\n\
             labels = {{ job = \"flyio-nginx\" }}\nmax_wait = \"100ms\"\n\
             ca_file = \"{ca}\"\nbearer_token_env = \"EDGE_TEST_LOKI_TOKEN\"\n",
            port = loki.port(),
            ca = ca.display(),
        ),
    ));
    for n in 0..5 {
        assert_eq!(docs(&edge, &format!("/?n={n}")).await, 200);
    }
    assert_eq!(docs(&edge, "/?token=SECRET&n=5").await, 200);

    let file = edge.dir().join("access.log");
    let file_lines = || {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        text.lines().map(str::to_owned).collect::<Vec<_>>()
    };
    until("Loki has every line of the file", || async {
        let lines = file_lines();
        lines.len() == 7 && loki.loki_entries().len() == lines.len()
    })
    .await;
    let entries = loki.loki_entries();
    let lines: Vec<String> = entries.iter().map(|e| e.line.clone()).collect();
    assert_eq!(lines, file_lines(), "the very lines of the file, in order");
    let uris: Vec<String> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["host"] == "docs.example.com")
        .map(|v| v["uri"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        uris,
        [
            "/?n=0",
            "/?n=1",
            "/?n=2",
            "/?n=3",
            "/?n=4",
            "/?token=REDACTED&n=5"
        ]
    );
    for entry in &entries {
        assert_eq!(
            entry.labels,
            r#"{instance="flyio-proxy", job="flyio-nginx"}"#
        );
        assert!(!entry.line.contains("SECRET"), "{}", entry.line);
        let value: serde_json::Value = serde_json::from_str(&entry.line).expect("a JSON line");
        let time = value["time"].as_str().expect("a time field");
        let at = time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339)
            .expect("RFC 3339");
        assert_eq!(
            (entry.seconds, entry.nanos as u32),
            (at.unix_timestamp(), at.nanosecond()),
            "the entry has its request's time"
        );
    }
    for push in loki.accepted() {
        assert_eq!(push.header("authorization"), Some("Bearer t0ken"));
    }
    // Counted once the push's answer is back, which can be just after the receiver has the
    // lines.
    until("the shipped lines are counted", || async {
        metric(&edge, r#"edge_telemetry_shipped_total{sink="loki"}"#).await == 7.0
    })
    .await;
    assert!(
        metric(
            &edge,
            r#"edge_telemetry_last_success_timestamp_seconds{sink="loki"}"#
        )
        .await
            > 0.0
    );
}

/// A Loki config with a `buffer` of lines and fast retries; the file log (`access.log`) says
/// in which order the lines were logged (under load, not always the order requests were
/// sent: a request's line is written after its answer).
fn loki_outage_config(tailnet: &FakeTailnet, name: &str, port: u16, buffer: usize) -> String {
    config(
        tailnet,
        &format!(
            "[access_log]\npath = \"access.log\"\n\
             [telemetry]\nmin_backoff = \"50ms\"\nmax_backoff = \"200ms\"\n\
             [telemetry.loki]\nurl = \"http://{name}:{port}/loki/api/v1/push\"\n\
             max_wait = \"50ms\"\nbatch_size = 8\nbuffer = {buffer}\n"
        ),
    )
}

/// The lines of the file log, in the order logged.
fn file_lines(edge: &Edge) -> Vec<String> {
    let text = std::fs::read_to_string(edge.dir().join("access.log")).unwrap_or_default();
    text.lines().map(str::to_owned).collect()
}

/// The lines Loki stored, in order.
fn loki_lines(loki: &PushReceiver) -> Vec<String> {
    loki.loki_entries().into_iter().map(|e| e.line).collect()
}

/// The `uri`s of the docs requests among Loki's entries, in order.
fn docs_uris(loki: &PushReceiver) -> Vec<String> {
    loki.loki_entries()
        .iter()
        .filter_map(|e| serde_json::from_str::<serde_json::Value>(&e.line).ok())
        .filter(|v| v["host"] == "docs.example.com")
        .map(|v| v["uri"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loki_down_then_back_loses_nothing_within_the_buffer() {
    let tailnet = tailnet(&["docs"]).await;
    let name = homelab_name(&tailnet, "loki");
    let loki = PushReceiver::loki();
    loki.set_mode(Mode::Down);
    let edge = Edge::start(&loki_outage_config(&tailnet, &name, loki.port(), 100));
    for n in 0..30 {
        assert_eq!(docs(&edge, &format!("/?n={n}")).await, 200);
    }
    // The outage lasts while the shipper keeps retrying, not for a set time.
    let buffered = r#"edge_telemetry_buffered{sink="loki"}"#;
    until("every line waits and pushes keep failing", || async {
        loki.pushes().len() >= 10 && metric(&edge, buffered).await == 31.0
    })
    .await;
    assert!(loki.accepted().is_empty());
    loki.set_mode(Mode::Up);
    until("every line arrives", || async {
        docs_uris(&loki).len() == 30
    })
    .await;
    let logged = file_lines(&edge);
    assert_eq!(logged.len(), 31);
    assert_eq!(
        loki_lines(&loki),
        logged,
        "all of them, in the order logged"
    );
    let dropped = r#"edge_telemetry_dropped_total{sink="loki",reason="buffer_full"}"#;
    assert_eq!(metric(&edge, dropped).await, 0.0);
    assert!(metric(&edge, r#"edge_telemetry_failed_total{sink="loki"}"#).await > 0.0);
    until("shipped counts them", || async {
        metric(&edge, r#"edge_telemetry_shipped_total{sink="loki"}"#).await == 31.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loki_down_beyond_the_buffer_drops_the_oldest_and_counts_them() {
    let tailnet = tailnet(&["docs"]).await;
    let name = homelab_name(&tailnet, "loki");
    let loki = PushReceiver::loki();
    loki.set_mode(Mode::Down);
    let edge = Edge::start(&loki_outage_config(&tailnet, &name, loki.port(), 10));
    // With the health check Edge::start made: 31 lines, 10 kept.
    for n in 0..30 {
        assert_eq!(docs(&edge, &format!("/?n={n}")).await, 200);
    }
    let dropped = r#"edge_telemetry_dropped_total{sink="loki",reason="buffer_full"}"#;
    until("21 lines are dropped", || async {
        metric(&edge, dropped).await == 21.0 && loki.pushes().len() >= 5
    })
    .await;
    loki.set_mode(Mode::Up);
    until("the newest ten arrive", || async {
        loki_lines(&loki).len() == 10
    })
    .await;
    let logged = file_lines(&edge);
    assert_eq!(logged.len(), 31);
    assert_eq!(
        loki_lines(&loki),
        logged[21..],
        "the newest ten, in the order logged"
    );
    assert_eq!(metric(&edge, dropped).await, 21.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_down_then_back_gets_the_samples_taken_while_it_was_down() {
    let tailnet = tailnet(&["docs"]).await;
    let prometheus = Prometheus::start().await;
    let gate = PushReceiver::gate(&format!(
        "http://127.0.0.1:{}/api/v1/write",
        prometheus.port()
    ));
    gate.set_mode(Mode::Down);
    let name = homelab_name(&tailnet, "prometheus");
    // The password comes from the environment, never the config.
    std::env::set_var("EDGE_TEST_PROMETHEUS_PASSWORD", "s3cret");
    let edge = Edge::start(&config(
        &tailnet,
        &format!(
            "[telemetry]\nlabels = {{ instance = \"edge\" }}\nmin_backoff = \"50ms\"\nmax_backoff = \"100ms\"\n\
             [telemetry.prometheus]\nremote_write = \"http://{name}:{port}/api/v1/write\"\n\
             interval = \"100ms\"\nbasic_auth_user = \"edge\"\n\
             basic_auth_password_env = \"EDGE_TEST_PROMETHEUS_PASSWORD\"\n",
            port = gate.port()
        ),
    ));
    let ok = r#"edge_requests_total{host="docs",method="GET",status="200"}"#;
    let buffered = r#"edge_telemetry_buffered{sink="prometheus"}"#;
    // Two requests, counted in snapshots that only exist while Prometheus is down...
    for _ in 0..2 {
        assert_eq!(docs(&edge, "/").await, 200);
    }
    until("the two requests are counted", || async {
        metric(&edge, ok).await == 2.0
    })
    .await;
    let queued = metric(&edge, buffered).await;
    until("snapshots with the two requests wait", || async {
        metric(&edge, buffered).await > queued && gate.pushes().len() >= 5
    })
    .await;
    // ...then three more before it comes back.
    for _ in 0..3 {
        assert_eq!(docs(&edge, "/").await, 200);
    }
    until("five requests are counted", || async {
        metric(&edge, ok).await == 5.0
    })
    .await;
    let queued = metric(&edge, buffered).await;
    until("snapshots with five requests wait", || async {
        metric(&edge, buffered).await > queued
    })
    .await;
    assert!(gate.accepted().is_empty());
    gate.set_mode(Mode::Up);
    until("the backlog is pushed", || async {
        metric(&edge, buffered).await == 0.0
    })
    .await;
    let history = prometheus
        .samples(&format!("{}[10m]", ok.replace('}', r#",instance="edge"}"#)))
        .await;
    assert!(
        history.contains(&2.0),
        "samples taken while down arrived: {history:?}"
    );
    assert!(history.contains(&5.0), "{history:?}");
    assert!(
        history.windows(2).all(|w| w[0] <= w[1]),
        "in order: {history:?}"
    );
    let dropped = r#"edge_telemetry_dropped_total{sink="prometheus",reason="buffer_full"}"#;
    assert_eq!(metric(&edge, dropped).await, 0.0);
    for push in gate.pushes() {
        assert_eq!(push.header("authorization"), Some("Basic ZWRnZTpzM2NyZXQ="));
        assert_eq!(push.header("content-encoding"), Some("snappy"));
        assert_eq!(
            push.header("x-prometheus-remote-write-version"),
            Some("0.1.0")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_receivers_never_hold_a_request_up() {
    let tailnet = tailnet(&["docs"]).await;
    let (loki_name, prometheus_name) = (
        homelab_name(&tailnet, "loki"),
        homelab_name(&tailnet, "prometheus"),
    );
    // Hung, a receiver's protocol never matters.
    let loki = PushReceiver::loki();
    let prometheus = PushReceiver::loki();
    loki.set_mode(Mode::Hang);
    prometheus.set_mode(Mode::Hang);
    let edge = Edge::start(&config(
        &tailnet,
        &format!(
            "[access_log]\npath = \"access.log\"\n\
             [telemetry.prometheus]\nremote_write = \"http://{prometheus_name}:{p}/api/v1/write\"\n\
             interval = \"100ms\"\ntimeout = \"1h\"\n\
             [telemetry.loki]\nurl = \"http://{loki_name}:{l}/loki/api/v1/push\"\n\
             max_wait = \"50ms\"\ntimeout = \"1h\"\n",
            p = prometheus.port(),
            l = loki.port(),
        ),
    ));
    assert_eq!(docs(&edge, "/").await, 200);
    until("both pushes are stuck", || async {
        loki.hung() == 1 && prometheus.hung() == 1
    })
    .await;
    // While they stay stuck, requests are answered and logged as always.
    for n in 0..50 {
        assert_eq!(docs(&edge, &format!("/?n={n}")).await, 200);
    }
    let file = edge.dir().join("access.log");
    until("the file log has every line", || async {
        std::fs::read_to_string(&file)
            .unwrap_or_default()
            .lines()
            .count()
            == 52
    })
    .await;
    assert_eq!((loki.hung(), prometheus.hung()), (1, 1), "still stuck");
    assert!(loki.pushes().is_empty() && prometheus.pushes().is_empty());
    let scraped = scrape(edge.admin_addr).await;
    assert!(
        scraped.contains(r#"edge_telemetry_shipped_total{sink="loki"} 0"#),
        "{scraped}"
    );
    until("the new lines wait for Loki", || async {
        metric(&edge, r#"edge_telemetry_buffered{sink="loki"}"#).await >= 50.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_names_resolve_in_the_background_and_stay_tracked_across_reloads() {
    let tailnet = tailnet(&["docs"]).await;
    let loki = PushReceiver::loki();
    // Not in MagicDNS yet.
    let name = tailnet.fqdn("loki");
    let text = config(
        &tailnet,
        &format!(
            "[access_log]\nenabled = false\n\
             [telemetry]\nmin_backoff = \"50ms\"\nmax_backoff = \"100ms\"\n\
             [telemetry.loki]\nurl = \"http://{name}:{port}/loki/api/v1/push\"\nmax_wait = \"50ms\"\n",
            port = loki.port()
        ),
    );
    let edge = Edge::start(&text);
    // Unresolved, the homelab costs requests nothing and readiness does not wait for it.
    for _ in 0..3 {
        assert_eq!(docs(&edge, "/").await, 200);
    }
    assert_eq!(admin_get(edge.admin_addr, "/readyz", None).await.0, 200);
    until("pushes fail on the unresolved name", || async {
        metric(&edge, r#"edge_telemetry_failed_total{sink="loki"}"#).await > 0.0
    })
    .await;
    assert!(loki.pushes().is_empty());

    // A reload (same telemetry) keeps the name tracked: once MagicDNS knows it, the
    // background resolver finds it and the waiting lines go out.
    let reloaded = proxy_core::config::load_str(&text, None, edge.dir()).expect("config");
    let report = edge.reloader().reload(reloaded);
    assert!(
        report.needs_restart.is_empty(),
        "{:?}",
        report.needs_restart
    );
    tailnet.set_answer(&name, vec![Ipv4Addr::LOCALHOST]);
    // With the file log off, the lines are shipped all the same.
    until("the lines arrive", || async { docs_uris(&loki).len() == 3 }).await;

    // A reload that changes [telemetry] keeps the running shippers and says so.
    let changed = text.replace("max_wait = \"50ms\"", "max_wait = \"2s\"");
    let reloaded = proxy_core::config::load_str(&changed, None, edge.dir()).expect("config");
    assert_eq!(
        edge.reloader().reload(reloaded).needs_restart,
        ["telemetry"]
    );
}
