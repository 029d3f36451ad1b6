//! A real browser through the proxy: headless Chromium opens a forge page behind the
//! `challenge` plugin, its script solves the proof of work, the page from the peer shows,
//! and a second page loads without a challenge.

mod common;

use common::browser::Chromium;
use common::*;
use std::time::Duration;

#[tokio::test]
async fn chromium_solves_the_challenge_then_browses_without_one() {
    let tailnet = tailnet(&["forge"]).await;
    let peer = tailnet.peer("forge").unwrap();
    let key = format!("CHALLENGE_BROWSER_KEY_{}", std::process::id());
    std::env::set_var(&key, "browser-test-key-0123456789-0123456789");
    // `localhost`: a secure context over plain HTTP, so the `Secure` cookie is kept.
    let config = format!(
        r#"{base}
[upstreams.forge]
address = "forge.{d}:{p}"

[sites.forge]
hosts = ["localhost"]

[[sites.forge.locations]]
match = "/"
proxy = "forge"
plugins = [{{ use = "challenge", keys_env = ["{key}"], difficulty = 12 }}]

# Whether the browser asks for a favicon or not, it never reaches the peer.
[[sites.forge.locations]]
match = "= /favicon.ico"
return = {{ status = 404 }}
"#,
        base = base_config(&tailnet),
        d = tailnet.domain(),
        p = tailnet.http_port()
    );
    let proxy = Proxy::start(&config);
    let port = proxy.addr.port();
    let mut browser = Chromium::start(&["--host-resolver-rules=MAP localhost 127.0.0.1"]).await;

    let first = format!("http://localhost:{port}/repo/commits/main");
    browser.open(&first).await;
    let (page, shown) = browser
        .wait_for(Duration::from_secs(60), |page| {
            page.url == first && page.text.contains("hello from forge")
        })
        .await;
    assert!(
        shown,
        "the peer's page never showed: {page:?}\n{}",
        proxy.logs()
    );
    assert_eq!(peer.requests(), 1);
    let cookies = browser.cookies().await;
    let clearance = cookies
        .iter()
        .find(|c| c.name == "edge_clearance")
        .expect("the clearance cookie is kept");
    assert!(clearance.secure && clearance.http_only);
    assert_eq!(clearance.same_site.as_deref(), Some("Lax"));

    let second = format!("http://localhost:{port}/repo/blame/main/README");
    browser.open(&second).await;
    let (page, shown) = browser
        .wait_for(Duration::from_secs(30), |page| {
            page.url == second && page.text.contains("hello from forge")
        })
        .await;
    assert!(shown, "the second page never showed: {page:?}");
    assert_eq!(peer.requests(), 2);

    let metrics = scrape(proxy.admin).await;
    for line in [
        r#"edge_plugin_events_total{plugin="challenge",event="issued"} 1"#,
        r#"edge_plugin_events_total{plugin="challenge",event="solved"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line}\n{metrics}");
    }
}
