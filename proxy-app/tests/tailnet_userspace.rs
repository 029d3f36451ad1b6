//! `proxy-app` with the userspace tailnet (cargo feature `tailscale-rs`): the real
//! tailscale-rs node starts inside the process. Offline there is no coordination server, so
//! these tests point it at a loopback listener that never answers and check what an
//! operator sees: `/readyz` says why it is not ready, `--wait-for-tailnet` gives up with the
//! reason. Requests over the tailnet itself are tested in proxy-core
//! (`tests/tailnet_userspace.rs`, with an in-memory tailnet); the last test here joins a real
//! tailnet when `TS_AUTHKEY` is set (ignored by default).

#![cfg(feature = "tailscale-rs")]

mod common;

use common::*;
use std::time::Duration;

/// A config with one `tailscale-rs` upstream (`docs`) and a `[tailnet]` whose coordination
/// server is `control_url`.
fn config(base: &str, upstream: &str, control_url: &str) -> String {
    format!(
        r#"{base}
[upstreams.docs]
address = "{upstream}"
transport = "tailscale-rs"

[sites.docs]
hosts = ["docs.example.com"]

[[sites.docs.locations]]
match = "/"
proxy = "docs"

[tailnet]
state_dir = "tailnet-state"
hostname = "proxy-app-test"
control_url = "{control_url}"
auth_key_env = "PROXY_APP_TEST_TS_AUTHKEY"
"#
    )
}

#[tokio::test]
async fn without_a_coordination_server_readyz_says_why_and_requests_get_a_502() {
    let fake = tailnet(&[]).await;
    // Held for the whole test and never accepted from: the node's control client connects
    // and waits.
    let control = std::net::TcpListener::bind("127.0.0.1:0").expect("bind control listener");
    let control_url = format!("http://{}", control.local_addr().expect("control address"));
    let proxy = Proxy::start(&config(&base_config(&fake), "docs:80", &control_url));

    let (status, body) = admin_get(proxy.admin, "/readyz", None).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("userspace tailnet: "), "{body}");
    assert!(
        body.contains("upstream name `docs` is not a known peer of the userspace tailnet"),
        "{body}"
    );
    let reply = get(&proxy, "docs.example.com", "/").await;
    assert_eq!(reply.status, 502, "{reply:?}");
    // The node's keys were written where `state_dir` says, to keep its identity.
    let keys = proxy.dir().join("tailnet-state/tailscale-rs-keys.json");
    let written = eventually(Duration::from_secs(10), || keys.is_file()).await;
    assert!(written, "{}\n{}", keys.display(), proxy.logs());
}

#[tokio::test]
async fn wait_for_tailnet_gives_up_naming_the_userspace_tailnet() {
    let fake = tailnet(&[]).await;
    let control = std::net::TcpListener::bind("127.0.0.1:0").expect("bind control listener");
    let control_url = format!("http://{}", control.local_addr().expect("control address"));
    let mut proxy = Proxy::spawn_under(
        &[],
        &["--wait-for-tailnet", "1s"],
        &config(&base_config(&fake), "docs:80", &control_url),
        &[],
    );
    let status = proxy
        .wait_exit(Duration::from_secs(30))
        .expect("proxy-app gave up waiting");
    assert!(!status.success());
    let logs = proxy.logs();
    assert!(
        logs.contains("error: tailnet not up after 1.0s: userspace tailnet: "),
        "{logs}"
    );
    assert!(
        logs.contains("upstream name `docs` is not a known peer of the userspace tailnet"),
        "{logs}"
    );
}

/// Joins a real tailnet: needs `TS_AUTHKEY` (an auth key, preferably ephemeral) and
/// `TS_LIVE_UPSTREAM` (`peer:port` of an HTTP service on that tailnet, the peer by its
/// hostname or full name). Run with `cargo test -p proxy-app --features tailscale-rs --test
/// tailnet_userspace -- --ignored`.
#[tokio::test]
#[ignore = "joins a real tailnet: needs TS_AUTHKEY and TS_LIVE_UPSTREAM"]
async fn joins_a_real_tailnet_and_proxies_to_a_peer() {
    let (Ok(_), Ok(upstream)) = (
        std::env::var("TS_AUTHKEY"),
        std::env::var("TS_LIVE_UPSTREAM"),
    ) else {
        panic!("set TS_AUTHKEY and TS_LIVE_UPSTREAM to run this test");
    };
    let fake = tailnet(&[]).await;
    let config = config(
        &base_config(&fake),
        &upstream,
        "https://controlplane.tailscale.com",
    )
    .replace("PROXY_APP_TEST_TS_AUTHKEY", "TS_AUTHKEY");
    let mut proxy = Proxy::spawn_under(&[], &["--wait-for-tailnet", "120s"], &config, &[]);
    proxy.wait_ready();
    let (status, body) = admin_get(proxy.admin, "/readyz", None).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "ready\n"),
        "{}",
        proxy.logs()
    );
    let reply = get(&proxy, "docs.example.com", "/").await;
    assert!(reply.status < 500, "{reply:?}\n{}", proxy.logs());
}
