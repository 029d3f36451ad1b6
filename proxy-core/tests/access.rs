//! Access control end to end: deny lists from files (reloaded while running, fail2ban's geo
//! format), per-location allow lists, user-agent rules ahead of rate limits.

mod common;

use common::*;
use fake_tailnet::FakeTailnet;
use std::time::Duration;

fn config(tailnet: &FakeTailnet, site: &str, locations: &str) -> String {
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
        base = base_config(tailnet)
    )
}

async fn send(proxy: &Edge, path: &str, ip: &str, user_agent: &str) -> Reply {
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

async fn status_of(proxy: &Edge, ip: &str) -> u16 {
    send(proxy, "/", ip, "curl/8").await.status
}

/// Polls until `ip` gets `status` (bounded: 10 s).
async fn wait_for_status(proxy: &Edge, ip: &str, status: u16) -> bool {
    for _ in 0..100 {
        if status_of(proxy, ip).await == status {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn deny_list_file_edits_take_effect_without_restart() {
    let tailnet = tailnet(&["docs"]).await;
    let text = config(
        &tailnet,
        "[sites.docs.access]\ndeny_files = [\"deny.txt\"]\ndeny_body = \"go away\\n\"\n",
        "",
    );
    let proxy = Edge::start_with_files(&text, &[("deny.txt", b"192.0.2.1\n")]);
    let denied = send(&proxy, "/", "192.0.2.1", "curl/8").await;
    assert_eq!((denied.status, denied.body.as_str()), (403, "go away\n"));
    assert_eq!(status_of(&proxy, "198.51.100.9").await, 200);

    std::fs::write(proxy.dir().join("deny.txt"), "192.0.2.1\n198.51.100.0/24\n").unwrap();
    assert!(
        wait_for_status(&proxy, "198.51.100.9", 403).await,
        "{}",
        proxy.logs()
    );
    std::fs::write(proxy.dir().join("deny.txt"), "198.51.100.0/24\n").unwrap();
    assert!(
        wait_for_status(&proxy, "192.0.2.1", 200).await,
        "{}",
        proxy.logs()
    );
    // Edited in place: the same proxy, never restarted, still serves.
    assert!(proxy.is_running());
}

#[tokio::test]
async fn allow_lists_guard_one_location() {
    let tailnet = tailnet(&["docs"]).await;
    let text = config(
        &tailnet,
        "",
        "[[sites.docs.locations]]\nmatch = \"/admin\"\nproxy = \"docs\"\nallow = [\"198.51.100.0/24\", \"2001:db8::1\"]\n",
    );
    let proxy = Edge::start(&text);
    assert_eq!(
        send(&proxy, "/admin", "198.51.100.5", "x").await.status,
        200
    );
    assert_eq!(send(&proxy, "/admin", "2001:db8::1", "x").await.status, 200);
    assert_eq!(
        send(&proxy, "/admin/x", "203.0.113.5", "x").await.status,
        403
    );
    assert_eq!(send(&proxy, "/", "203.0.113.5", "x").await.status, 200);
}

#[tokio::test]
async fn user_agent_rules_refuse_before_rate_limits_count() {
    let tailnet = tailnet(&["docs"]).await;
    let text = config(
        &tailnet,
        "rate_limits = [\"one\"]\n[sites.docs.access]\nuser_agent_deny = [\"gptbot\", \"^CCBot/\"]\nuser_agent_body = \"no crawlers\\n\"\n",
        "",
    );
    let proxy = Edge::start(&text);
    let ip = "198.51.100.80";
    for agent in [
        "Mozilla/5.0 (compatible; GPTBot/1.2)",
        "ccbot/2.0",
        "GPTBOT",
    ] {
        let reply = send(&proxy, "/", ip, agent).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (403, "no crawlers\n"),
            "{agent}"
        );
    }
    // The refused requests spent nothing: the one request per minute is still there.
    assert_eq!(send(&proxy, "/", ip, "Firefox").await.status, 200);
    assert_eq!(send(&proxy, "/", ip, "Firefox").await.status, 429);
    assert_eq!(tailnet.peer("docs").unwrap().requests(), 1);
}

#[tokio::test]
async fn fail2ban_geo_format_is_parsed_and_bad_lines_are_named() {
    let tailnet = tailnet(&["docs"]).await;
    let text = config(
        &tailnet,
        "[sites.docs.access]\ndeny_files = [\"ban.conf\", \"absent.conf\"]\n",
        "",
    );
    let ban =
        b"# fail2ban\n198.51.100.7 1;\nthis is not an address\n198.51.100.8 1;\n2001:db8::/32 1;\n";
    let proxy = Edge::start_with_files(&text, &[("ban.conf", ban)]);
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
