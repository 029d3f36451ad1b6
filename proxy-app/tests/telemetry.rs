//! `proxy-app run` and its telemetry at shutdown: SIGTERM pushes what is buffered (the
//! access-log lines and a last metrics snapshot) to the homelab's Loki and Prometheus within
//! the grace period, and a homelab that hangs cannot keep the process from exiting.

mod common;

use common::telemetry::{Mode, Prometheus, PushReceiver};
use common::*;
use fake_tailnet::FakeTailnet;
use std::net::Ipv4Addr;
use std::time::Duration;

fn config(tailnet: &FakeTailnet, telemetry: &str) -> String {
    format!(
        "{base}\n[upstreams.docs]\naddress = \"docs.{domain}:{http}\"\n\
         [sites.docs]\nhosts = [\"docs.example.com\"]\n\
         [[sites.docs.locations]]\nmatch = \"/\"\nproxy = \"docs\"\n{telemetry}\n",
        base = base_config(tailnet),
        domain = tailnet.domain(),
        http = tailnet.http_port(),
    )
}

fn homelab_name(tailnet: &FakeTailnet, short: &str) -> String {
    let name = tailnet.fqdn(short);
    tailnet.set_answer(&name, vec![Ipv4Addr::LOCALHOST]);
    name
}

fn docs_lines(loki: &PushReceiver) -> usize {
    loki.loki_entries()
        .iter()
        .filter(|e| e.line.contains("\"host\":\"docs.example.com\""))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_pushes_what_is_buffered_within_the_grace_period() {
    let tailnet = tailnet(&["docs"]).await;
    let prometheus = Prometheus::start().await;
    let loki = PushReceiver::loki();
    let (prometheus_name, loki_name) = (
        homelab_name(&tailnet, "prometheus"),
        homelab_name(&tailnet, "loki"),
    );
    // Nothing would be pushed for an hour but for the shutdown.
    let mut proxy = Proxy::start(&config(
        &tailnet,
        &format!(
            "[access_log]\npath = \"access.log\"\n\
             [telemetry]\nlabels = {{ instance = \"flyio-proxy\" }}\n\
             [telemetry.prometheus]\nremote_write = \"http://{prometheus_name}:{p}/api/v1/write\"\n\
             interval = \"1h\"\n\
             [telemetry.loki]\nurl = \"http://{loki_name}:{l}/loki/api/v1/push\"\nmax_wait = \"1h\"\n",
            p = prometheus.port(),
            l = loki.port(),
        ),
    ));
    for n in 0..5 {
        let reply = get(&proxy, "docs.example.com", &format!("/?n={n}")).await;
        assert_eq!(reply.status, 200);
    }
    assert_eq!(docs_lines(&loki), 0, "{}", proxy.logs());

    proxy.signal("TERM");
    // The shippers push at once when the drain starts, and once more after it, bounded by
    // the grace period: nothing is left behind.
    let status = proxy.wait_exit(Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");

    let ok = r#"edge_requests_total{host="docs",method="GET",status="200",instance="flyio-proxy"}"#;
    assert_eq!(prometheus.value(ok).await, Some(5.0), "{}", proxy.logs());
    // Every line, in the order logged (the file log's order).
    let file = std::fs::read_to_string(proxy.dir().join("access.log")).unwrap_or_default();
    let logged: Vec<&str> = file.lines().collect();
    let shipped: Vec<String> = loki.loki_entries().into_iter().map(|e| e.line).collect();
    assert_eq!(shipped, logged);
    let docs = logged
        .iter()
        .filter(|l| l.contains("docs.example.com"))
        .count();
    assert_eq!(docs, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_homelab_cannot_keep_the_process_from_exiting() {
    let tailnet = tailnet(&["docs"]).await;
    let (prometheus, loki) = (PushReceiver::loki(), PushReceiver::loki());
    prometheus.set_mode(Mode::Hang);
    loki.set_mode(Mode::Hang);
    let (prometheus_name, loki_name) = (
        homelab_name(&tailnet, "prometheus"),
        homelab_name(&tailnet, "loki"),
    );
    let mut proxy = Proxy::start(&config(
        &tailnet,
        &format!(
            "[telemetry.prometheus]\nremote_write = \"http://{prometheus_name}:{p}/api/v1/write\"\n\
             interval = \"100ms\"\ntimeout = \"2s\"\n\
             [telemetry.loki]\nurl = \"http://{loki_name}:{l}/loki/api/v1/push\"\n\
             max_wait = \"50ms\"\ntimeout = \"2s\"\n",
            p = prometheus.port(),
            l = loki.port(),
        ),
    ));
    assert_eq!(get(&proxy, "docs.example.com", "/").await.status, 200);
    assert!(
        eventually(Duration::from_secs(30), || loki.hung() >= 1
            && prometheus.hung() >= 1)
        .await,
        "{}",
        proxy.logs()
    );
    proxy.signal("TERM");
    let status = proxy.wait_exit(Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        proxy.logs()
    );
}
