//! Deny-list files in fail2ban's geo format, checked through what the `proxy-app` process
//! logs about them. The rest of access control is tested in-process in proxy-core's
//! `tests/access.rs`.

mod common;

use common::*;
use fake_tailnet::FakeTailnet;

fn config(port: u16, tailnet: &FakeTailnet, site: &str, locations: &str) -> String {
    let d = tailnet.domain();
    let p = tailnet.http_port();
    format!(
        r#"{base}
[client]
trusted_proxies = ["127.0.0.0/8"]

[rate_limits.one]
rate = "1r/m"

[upstreams.docs]
address = "docs.{d}:{p}"

[sites.docs]
hosts = ["docs.example.com"]
{site}

[[sites.docs.locations]]
match = "/"
proxy = "docs"

{locations}
"#,
        base = base_config(port, tailnet)
    )
}

async fn send(proxy: &Proxy, path: &str, ip: &str, user_agent: &str) -> Reply {
    let response = client()
        .get(proxy.url(path))
        .header("host", "docs.example.com")
        .header("fly-client-ip", ip)
        .header("user-agent", user_agent)
        .send()
        .await
        .expect("request through the proxy");
    Reply::read(response).await
}

async fn status_of(proxy: &Proxy, ip: &str) -> u16 {
    send(proxy, "/", ip, "curl/8").await.status
}

#[tokio::test]
async fn fail2ban_geo_format_is_parsed_and_bad_lines_are_named() {
    let tailnet = tailnet(&["docs"]).await;
    let port = free_port();
    let text = config(
        port,
        &tailnet,
        "[sites.docs.access]\ndeny_files = [\"ban.conf\", \"absent.conf\"]\n",
        "",
    );
    let ban =
        b"# fail2ban\n198.51.100.7 1;\nthis is not an address\n198.51.100.8 1;\n2001:db8::/32 1;\n";
    let proxy = Proxy::start_with_files(port, &text, &[("ban.conf", ban)]);
    for ip in ["198.51.100.7", "198.51.100.8", "2001:db8::1"] {
        let reply = send(&proxy, "/", ip, "curl/8").await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (403, "forbidden\n"),
            "{ip}"
        );
    }
    assert_eq!(status_of(&proxy, "198.51.100.9").await, 200);
    let logs = proxy.logs();
    assert!(logs.contains("ban.conf:3: line skipped"), "{logs}");
    // A missing file is an empty list and a warning, not a failure.
    assert!(
        logs.contains("absent.conf") && logs.contains("treating it as empty"),
        "{logs}"
    );
}
