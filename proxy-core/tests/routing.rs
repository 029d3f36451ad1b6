//! Host routing, locations, local answers and strict request handling, end to end.

mod common;

use common::*;

fn three_sites(tailnet: &fake_tailnet::FakeTailnet) -> String {
    let d = tailnet.domain();
    let p = tailnet.http_port();
    format!(
        r#"{base}
[upstreams.docs]
address = "docs.{d}:{p}"
[upstreams.git]
address = "git.{d}:{p}"
[upstreams.photos]
address = "photos.{d}:{p}"

[sites.docs]
hosts = ["docs.example.com"]
[[sites.docs.locations]]
match = "/"
proxy = "docs"

[sites.git]
hosts = ["git.example.com", "*.pages.example.com"]
[[sites.git.locations]]
match = "/"
proxy = "git"

[sites.photos]
hosts = ["photos.example.com"]
[[sites.photos.locations]]
match = "/"
proxy = "photos"
"#,
        base = base_config(tailnet)
    )
}

#[tokio::test]
async fn three_sites_reach_three_peers() {
    let tailnet = tailnet(&["docs", "git", "photos"]).await;
    let proxy = Edge::start(&three_sites(&tailnet));
    for (host, peer) in [
        ("docs.example.com", "docs"),
        ("git.example.com", "git"),
        ("photos.example.com", "photos"),
    ] {
        let reply = get(&proxy, host, "/").await;
        assert_eq!(reply.status, 200, "{host}: {reply:?}");
        assert_eq!(reply.header("x-fake-peer"), Some(peer), "{host}");
    }
    for name in ["docs", "git", "photos"] {
        assert_eq!(tailnet.peer(name).unwrap().requests(), 1, "{name}");
    }
}

#[tokio::test]
async fn host_matching_ignores_case_port_and_trailing_dot_and_supports_wildcards() {
    let tailnet = tailnet(&["docs", "git", "photos"]).await;
    let proxy = Edge::start(&three_sites(&tailnet));
    for host in [
        "DOCS.Example.com",
        "docs.example.com:8443",
        "docs.example.com.",
    ] {
        assert_eq!(
            get(&proxy, host, "/").await.header("x-fake-peer"),
            Some("docs"),
            "{host}"
        );
    }
    for host in ["alice.pages.example.com", "a.b.pages.example.com"] {
        assert_eq!(
            get(&proxy, host, "/").await.header("x-fake-peer"),
            Some("git"),
            "{host}"
        );
    }
    // The wildcard covers names below the suffix, not the suffix itself.
    assert_eq!(get(&proxy, "pages.example.com", "/").await.status, 421);
}

#[tokio::test]
async fn unknown_and_missing_host_are_never_forwarded() {
    let tailnet = tailnet(&["docs", "git", "photos"]).await;
    let proxy = Edge::start(&three_sites(&tailnet));
    assert_eq!(get(&proxy, "evil.example.net", "/").await.status, 421);
    assert_eq!(get(&proxy, "example.com", "/").await.status, 421);
    let http10 = raw_request(proxy.addr, "GET / HTTP/1.0\r\n\r\n");
    assert!(http10.starts_with("HTTP/1.1 421"), "{http10}");
    let http11 = raw_request(proxy.addr, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert!(http11.starts_with("HTTP/1.1 400"), "{http11}");
    // The health path answers for any Host, locally.
    let health = get(&proxy, "whatever.invalid", "/healthz").await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let total: u64 = tailnet.peers().map(|p| p.requests()).sum();
    assert_eq!(total, 0, "no request may reach a peer");
}

#[tokio::test]
async fn unknown_host_close_drops_the_connection() {
    let tailnet = tailnet(&["docs"]).await;
    let config = format!(
        "{}\n[upstreams.docs]\naddress = \"docs.{}:{}\"\n[sites.docs]\nhosts = [\"docs.example.com\"]\n[[sites.docs.locations]]\nmatch = \"/\"\nproxy = \"docs\"\n",
        base_config(&tailnet).replace("unknown_host = 421", "unknown_host = \"close\""),
        tailnet.domain(),
        tailnet.http_port()
    );
    let proxy = Edge::start(&config);
    let reply = raw_request(
        proxy.addr,
        "GET / HTTP/1.1\r\nHost: other.example.com\r\n\r\n",
    );
    assert_eq!(reply, "", "connection closed without a response");
    let reply = raw_request(proxy.addr, "GET / HTTP/1.0\r\n\r\n");
    assert_eq!(reply, "");
    assert_eq!(tailnet.peer("docs").unwrap().requests(), 0);
}

fn precedence_config(tailnet: &fake_tailnet::FakeTailnet) -> String {
    let rule = |m: &str, body: &str| {
        format!("[[sites.s.locations]]\nmatch = '{m}'\nreturn = {{ status = 200, body = \"{body}\" }}\n")
    };
    format!(
        "{base}\n[sites.s]\nhosts = [\"s.example.com\"]\n{}{}{}{}{}{}{}",
        rule("/", "root-prefix"),
        rule("= /exact", "exact"),
        rule("^~ /static/", "priority-prefix"),
        rule("~ \\.php$", "regex"),
        rule("~* \\.(png|jpg)$", "iregex"),
        rule("/static/deep/", "longer-prefix"),
        rule("/admin/", "admin-prefix"),
        base = base_config(tailnet)
    )
}

#[tokio::test]
async fn location_precedence_follows_nginx() {
    let tailnet = tailnet(&[]).await;
    let proxy = Edge::start(&precedence_config(&tailnet));
    let cases = [
        ("/exact", "exact"),                     // = beats everything
        ("/exact/more", "root-prefix"),          // = is not a prefix
        ("/static/a.png", "priority-prefix"),    // ^~ longest prefix skips regexes
        ("/static/deep/a.png", "iregex"),        // longest prefix is not ^~: regex wins
        ("/static/deep/a.txt", "longer-prefix"), // no regex: longest prefix
        ("/x/a.php", "regex"),                   // first matching regex
        ("/x/a.PHP", "root-prefix"),             // ~ is case-sensitive
        ("/x/A.JPG", "iregex"),                  // ~* is not
        ("/admin/users", "admin-prefix"),        // longest plain prefix
        ("/%61dmin/users", "admin-prefix"),      // percent-decoded before matching
        ("/x/../admin/users", "admin-prefix"),   // dot segments resolved
        ("//admin//users", "admin-prefix"),      // slashes merged
        ("/x/%2e%2e/exact", "exact"),            // encoded dots resolved too
    ];
    for (path, expected) in cases {
        let reply = get(&proxy, "s.example.com", path).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (200, expected),
            "{path}"
        );
    }
    for path in ["/../etc/passwd", "/%2e%2e/x", "/a/%zz", "/a%00b"] {
        let reply = raw_request(
            proxy.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: s.example.com\r\n\r\n"),
        );
        assert!(reply.starts_with("HTTP/1.1 400"), "{path}: {reply}");
    }
}

#[tokio::test]
async fn returns_redirects_and_original_uri_upstream() {
    let tailnet = tailnet(&["app"]).await;
    let config = format!(
        r#"{base}
[upstreams.app]
address = "app.{d}:{p}"
[sites.app]
hosts = ["app.example.com"]
[[sites.app.locations]]
match = "/"
proxy = "app"
[[sites.app.locations]]
match = "= /robots.txt"
return = {{ status = 200, body = "User-agent: *\nDisallow: /\n" }}
[[sites.app.locations]]
match = "= /gone"
return = {{ status = 410, body = "<p>gone</p>", content_type = "text/html" }}
[[sites.app.locations]]
match = '~ ^/[^/]+/archive/'
redirect = {{ status = 302, to = "https://app.{d}$request_uri" }}
[[sites.app.locations]]
match = "^~ /old/"
redirect = {{ status = 301, to = "$scheme://$host/new$uri?$args" }}
"#,
        base = base_config(&tailnet),
        d = tailnet.domain(),
        p = tailnet.http_port()
    );
    let proxy = Edge::start(&config);
    let robots = get(&proxy, "app.example.com", "/robots.txt").await;
    assert_eq!(
        (robots.status, robots.body.as_str()),
        (200, "User-agent: *\nDisallow: /\n")
    );
    let gone = get(&proxy, "app.example.com", "/gone").await;
    assert_eq!(
        (gone.status, gone.header("content-type")),
        (410, Some("text/html"))
    );
    let archive = get(&proxy, "app.example.com", "/repo/archive/main.zip?x=1").await;
    assert_eq!(archive.status, 302);
    assert_eq!(
        archive.header("location"),
        Some(format!("https://app.{}/repo/archive/main.zip?x=1", tailnet.domain()).as_str())
    );
    let old = get(&proxy, "app.example.com", "/old/a%20b?q=2").await;
    assert_eq!(
        (old.status, old.header("location")),
        (301, Some("http://app.example.com/new/old/a b?q=2"))
    );
    assert_eq!(
        tailnet.peer("app").unwrap().requests(),
        0,
        "local answers never reach the peer"
    );

    // A proxied request keeps its original target, spelled as the client spelled it.
    // (Raw, since URL libraries would resolve the dot segments before sending.)
    let reply = raw_request(
        proxy.addr,
        "GET /a/%2e%2e/b//c?q=%20 HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n",
    );
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let seen = tailnet.peer("app").unwrap().last_request().unwrap();
    assert_eq!(seen.uri, "/a/%2e%2e/b//c?q=%20");
}

#[tokio::test]
async fn ambiguous_framing_and_bad_hosts_are_refused() {
    let tailnet = tailnet(&["app"]).await;
    let config = format!(
        "{}\n[upstreams.app]\naddress = \"app.{}:{}\"\n[sites.app]\nhosts = [\"app.example.com\"]\n[[sites.app.locations]]\nmatch = \"/\"\nproxy = \"app\"\n",
        base_config(&tailnet),
        tailnet.domain(),
        tailnet.http_port()
    );
    let proxy = Edge::start(&config);
    let cases = [
        ("TE and CL", "POST / HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("two hosts", "GET / HTTP/1.1\r\nHost: app.example.com\r\nHost: other.example.com\r\n\r\n"),
        ("bad host", "GET / HTTP/1.1\r\nHost: app.example.com/x\r\n\r\n"),
        ("absolute-form other host", "GET http://other.example.com/ HTTP/1.1\r\nHost: app.example.com\r\n\r\n"),
        ("conflicting lengths", "POST / HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
        ("conflicting list", "POST / HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 4\r\nContent-Length: 4, 3\r\n\r\nabcd"),
        ("signed length", "POST / HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: +4\r\n\r\nabcd"),
        ("CONNECT", "CONNECT app.example.com:443 HTTP/1.1\r\nHost: app.example.com:443\r\n\r\n"),
    ];
    for (name, request) in cases {
        let reply = raw_request(proxy.addr, request);
        let status = reply.get(9..12).unwrap_or("");
        assert!(
            status.starts_with('4'),
            "{name}: expected a 4xx, got {reply:?}"
        );
    }
    assert_eq!(
        tailnet.peer("app").unwrap().requests(),
        0,
        "nothing ambiguous is forwarded"
    );
    // Absolute-form naming the same host is fine (RFC 9112 3.2.2).
    let reply = raw_request(proxy.addr, "GET http://app.example.com/x HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}
