//! MagicDNS resolution of upstream names: refresh on TTL, stale-on-error, never-resolved names.

mod common;

use common::*;
use fake_tailnet::{PeerSpec, TailnetConfig};
use std::time::Duration;

fn one_site(tailnet: &fake_tailnet::FakeTailnet, peer: &str) -> String {
    format!(
        "{}\n[upstreams.app]\naddress = \"{peer}.{}:{}\"\nconnect_timeout = \"1s\"\n[sites.app]\nhosts = [\"app.example.com\"]\n[[sites.app.locations]]\nmatch = \"/\"\nproxy = \"app\"\n",
        base_config(tailnet),
        tailnet.domain(),
        tailnet.http_port()
    )
}

#[tokio::test]
async fn answer_change_is_picked_up_after_the_ttl() {
    let mut config = TailnetConfig::new(&["blue"]);
    config.ttl = 1;
    let tailnet = tailnet_with(config);
    let green = tailnet.add_peer(PeerSpec::new("green")).await.unwrap();
    let proxy = Edge::start(&one_site(&tailnet, "blue"));
    assert_eq!(
        get(&proxy, "app.example.com", "/")
            .await
            .header("x-fake-peer"),
        Some("blue")
    );

    // Move the name to the green peer (same port, other address), as a tailnet node swap would.
    tailnet.set_answer(&tailnet.fqdn("blue"), vec![green.ip()]);
    let mut moved = false;
    for _ in 0..50 {
        if get(&proxy, "app.example.com", "/")
            .await
            .header("x-fake-peer")
            == Some("green")
        {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(moved, "the new answer was never used:\n{}", proxy.logs());
}

#[tokio::test]
async fn silent_magicdns_keeps_the_last_good_answer() {
    let mut config = TailnetConfig::new(&["app"]);
    config.ttl = 1;
    let tailnet = tailnet_with(config);
    let proxy = Edge::start(&one_site(&tailnet, "app"));
    assert_eq!(get(&proxy, "app.example.com", "/").await.status, 200);

    tailnet.set_silent(true);
    // Wait until the proxy has tried, and failed, to refresh.
    let failed = eventually(Duration::from_secs(15), || {
        proxy.logs().contains("keeping last good answer")
    })
    .await;
    assert!(failed, "no failed refresh logged:\n{}", proxy.logs());
    for _ in 0..5 {
        assert_eq!(
            get(&proxy, "app.example.com", "/").await.status,
            200,
            "stale answer still in use"
        );
    }

    // And an NXDOMAIN (the name removed) is treated the same way.
    tailnet.set_silent(false);
    tailnet.remove_answer(&tailnet.fqdn("app"));
    let failures = proxy.logs().matches("keeping last good answer").count();
    let logged = eventually(Duration::from_secs(15), || {
        proxy.logs().matches("keeping last good answer").count() > failures
    })
    .await;
    assert!(logged, "NXDOMAIN refresh not logged:\n{}", proxy.logs());
    assert_eq!(get(&proxy, "app.example.com", "/").await.status, 200);
}

#[tokio::test]
async fn never_resolved_name_gives_502_and_recovers_when_it_appears() {
    let tailnet = tailnet(&["app"]).await;
    let proxy = Edge::start(&one_site(&tailnet, "later"));
    let reply = get(&proxy, "app.example.com", "/").await;
    assert_eq!(reply.status, 502, "{reply:?}");
    assert!(proxy.is_running(), "the proxy must not crash");

    // The name appears later: the background refresh picks it up without a restart.
    tailnet.set_answer(
        &tailnet.fqdn("later"),
        vec![tailnet.peer("app").unwrap().ip()],
    );
    let mut ok = false;
    for _ in 0..50 {
        if get(&proxy, "app.example.com", "/").await.status == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ok, "name never picked up:\n{}", proxy.logs());
}
