//! Automatic bans end to end: a client that trips a rule (too many 404s, a trap path) is
//! answered before routing and never reaches the peer, others are not; bans are listed,
//! counted, logged, kept across a restart through the state file, and lifted by the admin
//! action.

mod common;

use common::*;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

const HOST: &str = "forge.example.com";
const TOKEN: &str = "bans-admin-token";

fn config(tailnet: &fake_tailnet::FakeTailnet, token_env: &str, state: &Path) -> String {
    let base = base_config(tailnet).replace(
        "[admin]\n",
        &format!("[admin]\ntoken_env = \"{token_env}\"\n"),
    );
    format!(
        r#"{base}
[client]
trusted_proxies = ["127.0.0.1/32"]

[access_log]
path = "access.log"

[bans]
state_file = "{state}"
exempt = ["198.51.100.0/24"]

[[bans.rules]]
name = "errors"
statuses = [404]
count = 3
window = "1m"
duration = "1h"

[[bans.rules]]
name = "trap"
paths = ["/wp-login.php", "/.env"]
duration = "1d"

[upstreams.forge]
address = "forge.{d}:{p}"

[sites.forge]
hosts = ["{HOST}"]

[[sites.forge.locations]]
match = "/"
proxy = "forge"

[[sites.forge.locations]]
match = "/missing/"
return = {{ status = 404, body = "not here\n" }}
"#,
        state = state.display(),
        d = tailnet.domain(),
        p = tailnet.http_port()
    )
}

async fn get_from(proxy: &Proxy, path: &str, client_ip: &str) -> Reply {
    let request = client()
        .get(proxy.url(path))
        .header("host", HOST)
        .header("fly-client-ip", client_ip);
    Reply::read(request.send().await.expect("request")).await
}

async fn admin(
    admin: SocketAddr,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
) -> Reply {
    let mut request = client().request(method, format!("http://{admin}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    Reply::read(request.send().await.expect("admin request")).await
}

#[tokio::test]
async fn tripped_rules_ban_before_routing_across_a_restart_until_lifted() {
    let tailnet = tailnet(&["forge"]).await;
    let peer = tailnet.peer("forge").unwrap();
    let token_env = format!("BANS_TEST_TOKEN_{}", std::process::id());
    std::env::set_var(&token_env, TOKEN);
    let state_dir = tempfile::tempdir().unwrap();
    let state = state_dir.path().join("bans.json");
    let text = config(&tailnet, &token_env, &state);
    let proxy = Proxy::start(&text);

    // Three 404s in the window: the third bans the client.
    let scanner = "192.0.2.10";
    for i in 0..3 {
        assert_eq!(
            get_from(&proxy, &format!("/missing/{i}"), scanner)
                .await
                .status,
            404
        );
    }
    let refused = get_from(&proxy, "/", scanner).await;
    assert_eq!((refused.status, refused.body.as_str()), (403, "banned\n"));
    // Before routing: even a Host no site serves (421 for anyone else) gets the ban's 403.
    let unrouted = client()
        .get(proxy.url("/"))
        .header("host", "unknown.example.com")
        .header("fly-client-ip", scanner)
        .send()
        .await
        .expect("request");
    assert_eq!(unrouted.status().as_u16(), 403);
    // Another client is served, and 404s from an exempt network never ban.
    assert_eq!(get_from(&proxy, "/", "192.0.2.11").await.status, 200);
    for i in 0..5 {
        assert_eq!(
            get_from(&proxy, &format!("/missing/{i}"), "198.51.100.7")
                .await
                .status,
            404
        );
    }
    assert_eq!(get_from(&proxy, "/", "198.51.100.7").await.status, 200);
    assert_eq!(peer.requests(), 2);

    // A trap path bans at once; an IPv6 client takes its whole /64 with it.
    assert_eq!(
        get_from(&proxy, "/wp-login.php", "192.0.2.20").await.status,
        403
    );
    assert_eq!(get_from(&proxy, "/", "192.0.2.20").await.status, 403);
    assert_eq!(
        get_from(&proxy, "/.env", "2001:db8:1:2::5").await.status,
        403
    );
    assert_eq!(get_from(&proxy, "/", "2001:db8:1:2::6").await.status, 403);
    assert_eq!(get_from(&proxy, "/", "2001:db8:1:3::6").await.status, 200);
    assert_eq!(peer.requests(), 3, "no banned request reached the peer");

    // Listed behind the token, counted, logged.
    assert_eq!(
        admin(proxy.admin, reqwest::Method::GET, "/admin/bans", None)
            .await
            .status,
        401
    );
    let listed = admin(
        proxy.admin,
        reqwest::Method::GET,
        "/admin/bans",
        Some(TOKEN),
    )
    .await;
    assert_eq!(listed.status, 200);
    let json: serde_json::Value = serde_json::from_str(&listed.body).unwrap();
    let mut banned: Vec<(String, String)> = json["bans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["ip"].as_str().unwrap().into(),
                b["rule"].as_str().unwrap().into(),
            )
        })
        .collect();
    banned.sort();
    assert_eq!(
        banned,
        [
            ("192.0.2.10".to_string(), "errors".to_string()),
            ("192.0.2.20".into(), "trap".into()),
            ("2001:db8:1:2::".into(), "trap".into()),
        ]
    );
    let metrics = scrape(proxy.admin).await;
    for line in [
        "edge_bans_active 3",
        r#"edge_bans_total{rule="errors"} 1"#,
        r#"edge_bans_total{rule="trap"} 2"#,
        "edge_ban_refusals_total 6",
    ] {
        assert!(metrics.contains(line), "{line}\n{metrics}");
    }
    let log = proxy.dir().join("access.log");
    let logged = eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(&log).is_ok_and(|text| {
            text.lines().any(|l| {
                l.contains(r#""client_ip":"192.0.2.10""#) && l.contains(r#""ban":"errors""#)
            })
        })
    })
    .await;
    assert!(logged, "a refused request's line names the ban");

    // The state file is written within a second of a change; a new process reads it.
    let saved = eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(&state).is_ok_and(|text| text.contains("2001:db8:1:2::"))
    })
    .await;
    assert!(saved, "bans written to the state file");
    drop(proxy);
    let proxy = Proxy::start(&text);
    assert_eq!(
        get_from(&proxy, "/", scanner).await.status,
        403,
        "still banned"
    );
    assert!(scrape(proxy.admin).await.contains("edge_bans_active 3"));

    // Lifted by the admin action; added by it too.
    let lifted = admin(
        proxy.admin,
        reqwest::Method::DELETE,
        "/admin/bans?ip=192.0.2.10",
        Some(TOKEN),
    )
    .await;
    assert_eq!(
        (lifted.status, lifted.body.as_str()),
        (200, "{\"lifted\":true}\n")
    );
    assert_eq!(get_from(&proxy, "/", scanner).await.status, 200);
    let added = admin(
        proxy.admin,
        reqwest::Method::POST,
        "/admin/bans?ip=192.0.2.99&duration=10m",
        Some(TOKEN),
    )
    .await;
    assert_eq!(added.status, 200, "{}", added.body);
    assert_eq!(get_from(&proxy, "/", "192.0.2.99").await.status, 403);
    let bad = admin(
        proxy.admin,
        reqwest::Method::POST,
        "/admin/bans?ip=nope",
        Some(TOKEN),
    )
    .await;
    assert_eq!(bad.status, 400);
    assert!(scrape(proxy.admin)
        .await
        .contains(r#"edge_bans_total{rule="admin"} 1"#));
}

#[test]
fn bad_ban_rules_are_config_errors_naming_the_line() {
    let text = "[bans]\nstatus = 200\n[[bans.rules]]\nname = \"both\"\nstatuses = [404]\npaths = [\"/x\"]\n[[bans.rules]]\nname = \"nocount\"\nstatuses = [404]\n[[bans.rules]]\nname = \"rel\"\npaths = [\"x\"]\n";
    let (ok, stderr) = check(text);
    assert!(!ok);
    for expected in [
        "edge.toml:2: bans.status: `status` must be an error status from 400 to 599, got 200",
        "bans.rules[0]: a ban rule needs exactly one of `statuses` (with `count`) and `paths`",
        "bans.rules[1].count: a rule over `statuses` needs `count`",
        "bans.rules[2].paths[0]: trap path `x` must start with '/'",
    ] {
        assert!(stderr.contains(expected), "{expected}\n{stderr}");
    }
}
