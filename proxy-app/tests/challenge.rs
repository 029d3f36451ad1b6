//! The `challenge` plugin end to end over real sockets: clients without a clearance cookie
//! get the proof-of-work page and never reach the peer; a solved challenge gives a cookie
//! that lets the same client through (on this process and on another with the same key);
//! wrong answers and foreign, forged cookies are refused and counted.

mod common;

use common::*;
use plugins::challenge::token::solve;
use std::time::Duration;

const HOST: &str = "forge.example.com";
const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0";
const DIFFICULTY: u8 = 8;

/// Sets a fresh signing key in an environment variable of this test process (the proxy
/// inherits it) and returns the variable's name.
fn key_variable(test: &str) -> String {
    let name = format!("CHALLENGE_TEST_KEY_{test}_{}", std::process::id());
    std::env::set_var(&name, "test-key-0123456789-0123456789-0123456789");
    name
}

fn config(tailnet: &fake_tailnet::FakeTailnet, key_env: &str) -> String {
    format!(
        r#"{base}
[client]
trusted_proxies = ["127.0.0.1/32"]

[upstreams.forge]
address = "forge.{d}:{p}"

[sites.forge]
hosts = ["{HOST}"]
plugins = [{{ use = "challenge", keys_env = ["{key_env}"], difficulty = {DIFFICULTY}, user_agents = ["^git/"], allow_files = ["crawlers.txt"] }}]

[[sites.forge.locations]]
match = "/"
proxy = "forge"
"#,
        base = base_config(tailnet),
        d = tailnet.domain(),
        p = tailnet.http_port()
    )
}

/// A GET of `path` from `client_ip` (told by the trusted proxy) with these headers.
async fn get_as(
    proxy: &Proxy,
    path: &str,
    client_ip: &str,
    user_agent: &str,
    cookie: Option<&str>,
) -> Reply {
    let mut request = client()
        .get(proxy.url(path))
        .header("host", HOST)
        .header("fly-client-ip", client_ip)
        .header("user-agent", user_agent);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    Reply::read(request.send().await.expect("request")).await
}

/// The challenge embedded in a challenge page.
fn challenge_of(page: &Reply) -> String {
    assert_eq!(page.status, 403, "{}", page.body);
    let start = page
        .body
        .find("const CHALLENGE = \"")
        .expect("a challenge page")
        + "const CHALLENGE = \"".len();
    let end = page.body[start..].find('"').expect("end of the challenge") + start;
    page.body[start..end].to_string()
}

/// Posts an answer; returns the reply.
async fn answer(proxy: &Proxy, path: &str, client_ip: &str, challenge: &str, nonce: &str) -> Reply {
    let request = client()
        .post(proxy.url(path))
        .header("host", HOST)
        .header("fly-client-ip", client_ip)
        .header("user-agent", BROWSER)
        .header("x-edge-challenge", challenge)
        .header("x-edge-nonce", nonce);
    Reply::read(request.send().await.expect("answer")).await
}

/// `name="value"` cookie pair from a `Set-Cookie` header.
fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn clients_without_a_cookie_get_the_challenge_and_never_reach_the_peer() {
    let tailnet = tailnet(&["forge"]).await;
    let key = key_variable("curl");
    let proxy = Proxy::start_with_files(&config(&tailnet, &key), &[("crawlers.txt", b"")]);
    let peer = tailnet.peer("forge").unwrap();

    for path in ["/", "/repo/commits/main", "/repo/archive/main.tar.gz"] {
        for agent in ["curl/8.5.0", "python-requests/2.31", BROWSER] {
            let reply = get_as(&proxy, path, "192.0.2.10", agent, None).await;
            assert_eq!(reply.status, 403, "{path} {agent}");
            assert_eq!(reply.header("cache-control"), Some("no-store"));
            assert!(
                reply.body.contains("<noscript>"),
                "explains itself without JavaScript"
            );
            assert!(!reply.body.contains("src="), "no external assets");
        }
    }
    // A forged cookie is no better than none.
    let forged = get_as(
        &proxy,
        "/",
        "192.0.2.10",
        BROWSER,
        Some("edge_clearance=AAAA"),
    )
    .await;
    challenge_of(&forged);
    assert_eq!(peer.requests(), 0, "no challenged request reached the peer");

    // Exemptions reach the peer: robots.txt, git's smart HTTP.
    assert_eq!(
        get_as(&proxy, "/robots.txt", "192.0.2.10", "curl/8", None)
            .await
            .status,
        200
    );
    let git = get_as(
        &proxy,
        "/repo.git/info/refs",
        "192.0.2.10",
        "git/2.39.5",
        None,
    )
    .await;
    assert_eq!(git.status, 200);
    assert_eq!(peer.requests(), 2);

    let metrics = scrape(proxy.admin).await;
    assert!(
        metrics.contains(r#"edge_plugin_events_total{plugin="challenge",event="issued"} 10"#),
        "{metrics}"
    );
    assert!(metrics
        .contains(r#"edge_plugin_events_total{plugin="challenge",event="cookie_invalid"} 1"#));

    // An allow-list file is re-read when it changes, like a deny list: a search engine's
    // published range added to it passes from then on.
    let crawler = "203.0.113.7";
    challenge_of(&get_as(&proxy, "/repo/commits/main", crawler, "Googlebot/2.1", None).await);
    std::fs::write(proxy.dir().join("crawlers.txt"), "203.0.113.0/24\n").unwrap();
    let request = format!(
        "GET /repo/commits/main HTTP/1.1\r\nHost: {HOST}\r\nFly-Client-IP: {crawler}\r\nUser-Agent: Googlebot/2.1\r\nConnection: close\r\n\r\n"
    );
    let passed = eventually(Duration::from_secs(10), || {
        raw_request(proxy.addr, &request).starts_with("HTTP/1.1 200")
    })
    .await;
    assert!(passed, "the allow-list file's new range was not picked up");
    assert_eq!(peer.requests(), 3);
}

#[tokio::test]
async fn a_solved_challenge_clears_the_client_and_nothing_else_does() {
    let tailnet = tailnet(&["forge"]).await;
    let key = key_variable("solve");
    let proxy = Proxy::start(&config(&tailnet, &key));
    let peer = tailnet.peer("forge").unwrap();
    let me = "192.0.2.10";

    let page = get_as(&proxy, "/repo/blame/main/README", me, BROWSER, None).await;
    let challenge = challenge_of(&page);
    let nonce = solve(&challenge, DIFFICULTY);

    // Wrong answers: a nonce that does not solve it, one answered from another network,
    // a tampered challenge, and a GET.
    let wrong = (0u64..)
        .map(|n| n.to_string())
        .find(|n| !plugins::challenge::token::solves(&challenge, n, DIFFICULTY))
        .unwrap();
    assert_eq!(
        answer(&proxy, "/", me, &challenge, &wrong).await.status,
        403
    );
    assert_eq!(
        answer(&proxy, "/", "203.0.113.5", &challenge, &nonce)
            .await
            .status,
        403
    );
    let tampered = format!("B{}", &challenge[1..]);
    assert_eq!(answer(&proxy, "/", me, &tampered, &nonce).await.status, 403);

    // The right one: a cookie, and the original URL then loads from the peer.
    let solved = answer(&proxy, "/repo/blame/main/README", me, &challenge, &nonce).await;
    assert_eq!(solved.status, 204, "{}", solved.body);
    let set_cookie = solved
        .header("set-cookie")
        .expect("a clearance cookie")
        .to_string();
    for attribute in [
        "edge_clearance=",
        "Path=/",
        "Max-Age=86400",
        "Secure",
        "HttpOnly",
        "SameSite=Lax",
    ] {
        assert!(set_cookie.contains(attribute), "{set_cookie}: {attribute}");
    }
    let cookie = cookie_pair(&set_cookie);
    assert_eq!(peer.requests(), 0);
    let page = get_as(
        &proxy,
        "/repo/blame/main/README",
        me,
        BROWSER,
        Some(&cookie),
    )
    .await;
    assert_eq!(page.status, 200);
    assert_eq!(page.body, "hello from forge\n");
    // Other pages too, and from a neighbour on the same /24.
    let other = get_as(
        &proxy,
        "/repo/commits/main",
        "192.0.2.77",
        BROWSER,
        Some(&cookie),
    )
    .await;
    assert_eq!(other.status, 200);
    assert_eq!(peer.requests(), 2);

    // The cookie is bound to the network and the browser, and signed.
    let foreign = get_as(&proxy, "/", "198.51.100.1", BROWSER, Some(&cookie)).await;
    challenge_of(&foreign);
    let other_agent = get_as(&proxy, "/", me, "curl/8.5.0", Some(&cookie)).await;
    challenge_of(&other_agent);
    let value = cookie.trim_start_matches("edge_clearance=");
    let flipped = if value.starts_with('A') { 'B' } else { 'A' };
    let tampered = format!("edge_clearance={flipped}{}", &value[1..]);
    challenge_of(&get_as(&proxy, "/", me, BROWSER, Some(&tampered)).await);
    assert_eq!(peer.requests(), 2, "no refused cookie reached the peer");

    // Stateless: another process with the same key takes the cookie.
    let second = Proxy::start(&config(&tailnet, &key));
    let elsewhere = get_as(&second, "/repo/commits/main", me, BROWSER, Some(&cookie)).await;
    assert_eq!(elsewhere.status, 200);
    assert_eq!(peer.requests(), 3);

    let metrics = scrape(proxy.admin).await;
    for (event, count) in [
        ("solved", 1),
        ("nonce_wrong", 1),
        ("challenge_invalid", 2),
        ("cookie_invalid", 3),
    ] {
        let line =
            format!(r#"edge_plugin_events_total{{plugin="challenge",event="{event}"}} {count}"#);
        assert!(metrics.contains(&line), "{line}\n{metrics}");
    }
}

#[test]
fn a_missing_key_is_a_config_error() {
    let text = "[upstreams.a]\naddress = \"10.0.0.1:80\"\n[sites.a]\nhosts = [\"a.example.com\"]\nplugins = [{ use = \"challenge\", keys_env = [\"CHALLENGE_KEY_NEVER_SET_IN_TESTS\"] }]\n[[sites.a.locations]]\nmatch = \"/\"\nproxy = \"a\"\n";
    let (ok, stderr) = check(text);
    assert!(!ok);
    assert!(
        stderr.contains("edge.toml:5: sites.a.plugins[0]: `keys_env`: the environment variable `CHALLENGE_KEY_NEVER_SET_IN_TESTS` (the signing key) is not set"),
        "{stderr}"
    );
}

#[cfg(feature = "demo")]
#[tokio::test]
async fn the_demo_forge_challenges_expensive_pages_and_bans_trap_paths() {
    let demo = Demo::start().await;
    let addr = demo.addr;
    let commits = raw_request(
        addr,
        "GET /u/repo/commits/main HTTP/1.1\r\nHost: git.demo.localhost\r\nUser-Agent: curl/8\r\nConnection: close\r\n\r\n",
    );
    assert!(commits.starts_with("HTTP/1.1 403"), "{commits}");
    assert!(commits.contains("const CHALLENGE"), "{commits}");
    let git = raw_request(
        addr,
        "GET /u/repo/commits/main HTTP/1.1\r\nHost: git.demo.localhost\r\nUser-Agent: git/2.39\r\nConnection: close\r\n\r\n",
    );
    assert!(git.starts_with("HTTP/1.1 200"), "{git}");
    let trap = raw_request(
        addr,
        "GET /wp-login.php HTTP/1.1\r\nHost: git.demo.localhost\r\nFly-Client-IP: 203.0.113.9\r\nConnection: close\r\n\r\n",
    );
    assert!(trap.starts_with("HTTP/1.1 403"), "{trap}");
    let after = raw_request(
        addr,
        "GET / HTTP/1.1\r\nHost: git.demo.localhost\r\nFly-Client-IP: 203.0.113.9\r\nConnection: close\r\n\r\n",
    );
    assert!(
        after.starts_with("HTTP/1.1 403") && after.ends_with("banned\n"),
        "{after}"
    );
    assert!(demo.printed().contains("/u/repo/commits/main"));
}
