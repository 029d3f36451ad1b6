//! The port of a real multi-site nginx deployment (`testdata/configs/deployment.toml`), run
//! against a fake tailnet: one Caddy-like peer serving `*.ops` virtual hosts over TLS. The
//! committed file is the production config; the test only swaps in the fake tailnet's address,
//! nameserver and CA, loopback listeners, and loopback as the trusted proxy (so each check can
//! play its own client through `Fly-Client-IP`). Every check says what reached the peer.

mod common;

use common::{
    raw_request, tailnet_with, testdata, Proxy, Reply, Served, ADMIN_LISTEN, PUBLIC_LISTEN,
};
use fake_tailnet::{FakePeer, FakeTailnet, PeerSpec, ResponseSpec, TailnetConfig};
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// The backend vhosts the Caddy peer serves (its certificate covers each).
const VHOSTS: &[&str] = &[
    "docs.ops",
    "blog.ops",
    "git.ops",
    "events.ops",
    "photos.ops",
];
/// Files the config names, relative to it.
const FILES: &[&str] = &[
    "deployment/landing/index.html",
    "deployment/fail2ban/forge-deny.conf",
    "deployment/pages/mirrors-403.html",
];
const PEER_BODY: &str = "hello from caddy\n";
const UUID: &str = "0b8e2c1a-5f3d-4e7a-9c21-7d4f0a6b3e59";

struct Deployment {
    proxy: Proxy,
    // Dropped after the proxy.
    tailnet: FakeTailnet,
}

impl Deployment {
    /// The production config, with `blog`'s TTL and stale-while-revalidate window shortened
    /// to these when given (to see expiry within a test).
    async fn start_with_blog_windows(blog_windows: Option<(&str, &str)>) -> Deployment {
        let tailnet = tailnet_with(TailnetConfig {
            peers: vec![PeerSpec::new("caddy").with_tls_names(VHOSTS)],
            ..TailnetConfig::new(&[])
        });
        let mut config = rewrite(&production_config(), &tailnet);
        if let Some((ttl, swr)) = blog_windows {
            config = shorten_blog_windows(&config, ttl, swr);
        }
        let contents: Vec<(&str, Vec<u8>)> = FILES
            .iter()
            .map(|f| {
                (
                    *f,
                    std::fs::read(testdata(&format!("configs/{f}"))).unwrap(),
                )
            })
            .collect();
        let files: Vec<(&str, &[u8])> = contents.iter().map(|(n, c)| (*n, c.as_slice())).collect();
        let proxy = Proxy::start_with_files(&config, &files);
        Deployment { proxy, tailnet }
    }

    async fn start() -> Deployment {
        Self::start_with_blog_windows(None).await
    }

    fn caddy(&self) -> &FakePeer {
        self.tailnet.peer("caddy").unwrap()
    }

    /// Requests the Caddy peer has received so far.
    fn reached(&self) -> u64 {
        self.caddy().requests()
    }

    /// GET as the default client (192.0.2.1).
    async fn get(&self, host: &str, path: &str) -> Reply {
        self.send(Req::get(host, path)).await
    }

    async fn send(&self, req: Req<'_>) -> Reply {
        send(&common::client(), &self.proxy, req).await
    }

    /// Sends batches of `batch` simultaneous GETs as `client` until one is refused with 429
    /// (at most `max_batches`); returns the 200s before it and the 429.
    async fn until_limited(
        &self,
        host: &str,
        path: &str,
        client_ip: &str,
        batch: usize,
    ) -> (usize, Reply) {
        let http = common::client();
        let mut passed = 0;
        for _ in 0..40 {
            let replies = futures_util::future::join_all(
                (0..batch).map(|_| send(&http, &self.proxy, Req::get(host, path).from(client_ip))),
            )
            .await;
            let mut limited = None;
            for reply in replies {
                match reply.status {
                    200 => passed += 1,
                    429 => limited = Some(reply),
                    other => panic!("{host}{path}: unexpected {other}: {}", reply.body),
                }
            }
            if let Some(reply) = limited {
                return (passed, reply);
            }
        }
        panic!("{host}{path}: never limited after {passed} requests");
    }
}

fn production_config() -> String {
    std::fs::read_to_string(testdata("configs/deployment.toml")).unwrap()
}

/// Replaces `from` by `to`, insisting it is there (so the test notices the file changing).
fn swap(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "deployment.toml no longer contains `{from}`"
    );
    text.replace(from, to)
}

fn rewrite(config: &str, tailnet: &FakeTailnet) -> String {
    let ca = fake_tailnet::ca_pem_file().unwrap();
    let caddy = format!("{}:{}", tailnet.fqdn("caddy"), tailnet.https_port());
    let config = swap(
        config,
        r#"listen = ["0.0.0.0:8080", "[::]:8080"]"#,
        &format!(r#"listen = ["{PUBLIC_LISTEN}"]"#),
    );
    let config = swap(&config, "threads = 2", "threads = 1");
    let config = swap(
        &config,
        r#"listen = "127.0.0.1:9091""#,
        &format!(r#"listen = "{ADMIN_LISTEN}""#),
    );
    let config = swap(
        &config,
        r#"nameservers = ["100.100.100.100:53"]"#,
        &format!(r#"nameservers = ["{}"]"#, tailnet.dns_addr()),
    );
    let config = swap(&config, "caddy.tail1234.ts.net:443", &caddy);
    let config = swap(
        &config,
        r#"ca_file = "../tls/tailnet-ca.pem""#,
        &format!("ca_file = {:?}", ca.display().to_string()),
    );
    let config = swap(&config, r#"["172.16.0.0/12"]"#, r#"["127.0.0.0/8"]"#);
    swap(&config, r#"path = "-""#, "enabled = false")
}

fn shorten_blog_windows(config: &str, ttl: &str, swr: &str) -> String {
    let (before, blog) = config.split_once("[sites.blog]").unwrap();
    let (blog, after) = blog.split_once("[[sites.blog.locations]]").unwrap();
    let blog = swap(blog, r#""200" = "1d""#, &format!(r#""200" = "{ttl}""#));
    let blog = swap(
        &blog,
        r#"stale_while_revalidate = "1d""#,
        &format!(r#"stale_while_revalidate = "{swr}""#),
    );
    format!("{before}[sites.blog]{blog}[[sites.blog.locations]]{after}")
}

/// One request: Host, path, client address (sent as `Fly-Client-IP`), user agent, body.
struct Req<'a> {
    host: &'a str,
    path: &'a str,
    client_ip: &'a str,
    user_agent: &'a str,
    body: Option<Vec<u8>>,
}

impl<'a> Req<'a> {
    fn get(host: &'a str, path: &'a str) -> Self {
        Req {
            host,
            path,
            client_ip: "192.0.2.1",
            user_agent: "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
            body: None,
        }
    }

    fn from(mut self, client_ip: &'a str) -> Self {
        self.client_ip = client_ip;
        self
    }

    fn agent(mut self, user_agent: &'a str) -> Self {
        self.user_agent = user_agent;
        self
    }

    fn post(mut self, body: Vec<u8>) -> Self {
        self.body = Some(body);
        self
    }
}

async fn send(http: &reqwest::Client, proxy: &Proxy, req: Req<'_>) -> Reply {
    let builder = match req.body {
        Some(body) => http.post(proxy.url(req.path)).body(body),
        None => http.get(proxy.url(req.path)),
    };
    let response = builder
        .header("host", req.host)
        .header("fly-client-ip", req.client_ip)
        // Fly's edge terminates TLS and says so.
        .header("x-forwarded-proto", "https")
        .header("user-agent", req.user_agent)
        .send()
        .await
        .expect("request through the proxy");
    Reply::read(response).await
}

fn cache_status(reply: &Reply) -> &str {
    reply.header("x-cache-status").unwrap_or("-")
}

fn assert_security_headers(reply: &Reply, what: &str) {
    for name in [
        "strict-transport-security",
        "x-frame-options",
        "x-content-type-options",
        "referrer-policy",
    ] {
        assert!(reply.header(name).is_some(), "{what}: no {name}");
    }
}

/// Asserts the peer's last request went to `vhost` (Host and SNI) for `uri`.
fn assert_reached(deployment: &Deployment, vhost: &str, uri: &str) {
    let seen = deployment
        .caddy()
        .last_request()
        .expect("the peer saw a request");
    assert_eq!(seen.uri, uri);
    assert_eq!(seen.header("host"), Some(vhost), "Host for {uri}");
    assert!(seen.tls, "{uri} over TLS");
    assert_eq!(seen.sni.as_deref(), Some(vhost), "SNI for {uri}");
    assert_eq!(
        seen.header("x-forwarded-proto"),
        Some("https"),
        "{uri}: the client came over https to Fly's edge"
    );
}

// ---------------------------------------------------------------------------------------------
// Static sites

#[tokio::test]
async fn static_sites_are_cached_by_host_and_path_for_their_vhost() {
    let d = Deployment::start().await;
    for (host, vhost) in [
        ("docs.example.org", "docs.ops"),
        ("blog.example.org", "blog.ops"),
    ] {
        // Origin Cache-Control and Set-Cookie are ignored: still stored, cookie stripped.
        let target = "/guide?v=1&header=Cache-Control:no-store&header=Set-Cookie:s%3D1";
        let first = d.get(host, target).await;
        assert_eq!(
            (first.status, cache_status(&first)),
            (200, "MISS"),
            "{host}"
        );
        assert_reached(&d, vhost, target);
        let before = d.reached();
        // The query is not part of the key.
        let second = d.get(host, "/guide?other=2").await;
        assert_eq!(
            (second.status, cache_status(&second)),
            (200, "HIT"),
            "{host}"
        );
        assert_eq!(second.body, PEER_BODY);
        assert!(
            second.header("set-cookie").is_none(),
            "{host}: cookie cached"
        );
        // 404s are cached too.
        let missing = d.get(host, "/missing?status=404").await;
        assert_eq!((missing.status, cache_status(&missing)), (404, "MISS"));
        let again = d.get(host, "/missing").await;
        assert_eq!((again.status, cache_status(&again)), (404, "HIT"));
        assert_eq!(
            d.reached(),
            before + 1,
            "{host}: only the 404 miss reached the peer"
        );
    }
    // The host is part of the key: the blog's /guide was its own miss above; a third host
    // path pair proves docs and blog never answer for each other.
    let blog_only = d.get("blog.example.org", "/only-blog").await;
    assert_eq!(cache_status(&blog_only), "MISS");
    let docs_same_path = d.get("docs.example.org", "/only-blog").await;
    assert_eq!(cache_status(&docs_same_path), "MISS");
    assert_reached(&d, "docs.ops", "/only-blog");
}

#[tokio::test]
async fn concurrent_misses_on_a_static_site_make_one_fetch() {
    let d = Deployment::start().await;
    let http = common::client();
    let replies = futures_util::future::join_all((0..10).map(|i| {
        let path = if i == 0 {
            "/locked?delay_ms=200".to_string()
        } else {
            format!("/locked?n={i}")
        };
        let http = http.clone();
        let proxy = &d.proxy;
        async move { send(&http, proxy, Req::get("docs.example.org", &path)).await }
    }))
    .await;
    assert!(replies
        .iter()
        .all(|r| r.status == 200 && r.body == PEER_BODY));
    assert_eq!(d.reached(), 1, "the cache lock lets one request through");
}

#[tokio::test]
async fn static_sites_serve_stale_while_updating_and_on_error() {
    // Only the windows are shortened: fresh for 2 s, then 5 s of stale-while-revalidate, then
    // the week of stale-if-error.
    let d = Deployment::start_with_blog_windows(Some(("2s", "5s"))).await;
    let host = "blog.example.org";
    assert_eq!(cache_status(&d.get(host, "/post").await), "MISS");
    let fetched = d.reached();
    let expired = wait_for_expiry(&d, host, "/post").await;
    assert_eq!(expired.status, 200);
    assert_eq!(expired.body, PEER_BODY, "the stale copy is served at once");
    assert_eq!(cache_status(&expired), "UPDATING");
    let refreshed = common::eventually(Duration::from_secs(20), || d.reached() > fetched).await;
    assert!(refreshed, "the entry is refreshed in the background");

    // The backend now fails with 503, then goes away: clients keep getting the last good
    // copy, and once past the revalidate window it is served as STALE (on error).
    d.caddy().set_response(ResponseSpec {
        status: 503,
        ..ResponseSpec::default()
    });
    assert_eq!(serve_until_stale(&d, host, "/post").await, "STALE");
    d.caddy().stop();
    let down = d.get(host, "/post").await;
    assert_eq!((down.status, down.body.as_str()), (200, PEER_BODY));
    assert_eq!(cache_status(&down), "STALE");
}

/// Polls `path` until it is served as STALE, checking every answer is the cached copy;
/// returns the last cache status seen.
async fn serve_until_stale(d: &Deployment, host: &str, path: &str) -> String {
    let mut last = String::new();
    for _ in 0..200 {
        let reply = d.get(host, path).await;
        assert_eq!((reply.status, reply.body.as_str()), (200, PEER_BODY));
        last = cache_status(&reply).to_string();
        if last == "STALE" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    last
}

/// Polls until `path` is no longer a fresh hit; returns that first non-HIT reply.
async fn wait_for_expiry(d: &Deployment, host: &str, path: &str) -> Reply {
    for _ in 0..200 {
        let reply = d.get(host, path).await;
        if cache_status(&reply) != "HIT" {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{host}{path} never expired");
}

// ---------------------------------------------------------------------------------------------
// The git forge

#[tokio::test]
async fn forge_refuses_fail2ban_clients_and_ai_crawlers_before_the_backend() {
    let d = Deployment::start().await;
    let host = "git.example.org";
    for client in ["203.0.113.66", "198.51.100.7"] {
        let reply = d.send(Req::get(host, "/explore").from(client)).await;
        assert_eq!(reply.status, 403, "{client} is in the fail2ban file");
        assert_security_headers(&reply, "deny list");
    }
    for agent in [
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)",
        "Mozilla/5.0 (compatible; ClaudeBot/1.0; +claudebot@anthropic.com)",
        "CCBot/2.0 (https://commoncrawl.org/faq/)",
        "Mozilla/5.0 (Linux; Android 5.0) AppleWebKit/537.36 (KHTML, like Gecko) Mobile Safari/537.36 (compatible; Bytespider; spider-feedback@bytedance.com)",
    ] {
        let reply = d.send(Req::get(host, "/explore").agent(agent)).await;
        assert_eq!(reply.status, 403, "{agent}");
        assert_eq!(reply.body, "Crawling this forge for AI training is not permitted.\n");
    }
    assert_eq!(d.reached(), 0, "no refused request reached the forge");

    let allowed = d.send(Req::get(host, "/explore").from("192.0.2.55")).await;
    assert_eq!(allowed.status, 200);
    assert_reached(&d, "git.ops", "/explore");
    // fail2ban bans a new address: the file is reloaded without a restart.
    let file = d.proxy.dir().join("deployment/fail2ban/forge-deny.conf");
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str("192.0.2.55 1;\n");
    std::fs::write(&file, text).unwrap();
    let mut banned = false;
    for _ in 0..100 {
        let reply = d.send(Req::get(host, "/explore").from("192.0.2.55")).await;
        if reply.status == 403 {
            banned = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(banned, "the new fail2ban entry is enforced");
}

#[tokio::test]
async fn forge_limits_the_site_and_more_tightly_the_account_paths() {
    let d = Deployment::start().await;
    let host = "git.example.org";
    // Site-wide: 10r/s burst 50, counted per client (robots.txt is answered at the edge).
    let (passed, refused) = d.until_limited(host, "/robots.txt", "192.0.2.20", 40).await;
    assert!(passed > 50, "burst 50 passes first ({passed})");
    assert!(refused.header("retry-after").is_some());
    assert_security_headers(&refused, "429");
    let other = d
        .send(Req::get(host, "/robots.txt").from("192.0.2.21"))
        .await;
    assert_eq!(other.status, 200, "another client has its own bucket");
    // The landing page counts in the forge's zone with a burst of 20: a client that has
    // just spent the forge's 50 is over it there too.
    let apex = d
        .send(Req::get("example.org", "/").from("192.0.2.20"))
        .await;
    assert_eq!(apex.status, 429, "the apex shares the forge's zone");
    let fresh = d
        .send(Req::get("example.org", "/").from("192.0.2.22"))
        .await;
    assert_eq!(fresh.status, 200);

    // Sign-in, sign-up and password reset: 3r/s burst 5, per client.
    for (i, path) in ["/user/login", "/user/sign_up", "/user/forgot_password"]
        .into_iter()
        .enumerate()
    {
        let client = format!("192.0.2.{}", 30 + i);
        let before = d.reached();
        let (passed, _) = d.until_limited(host, path, &client, 10).await;
        assert!(passed > 5, "{path}: burst 5 passes first ({passed})");
        assert_eq!(
            d.reached() - before,
            passed as u64,
            "{path}: refusals never reach the forge"
        );
        let elsewhere = d.send(Req::get(host, "/explore").from(&client)).await;
        assert_eq!(
            elsewhere.status, 200,
            "{path}: the rest of the site stays open"
        );
    }
}

#[tokio::test]
async fn forge_answers_policy_paths_at_the_edge() {
    let d = Deployment::start().await;
    let host = "git.example.org";
    for (path, fragment) in [
        (
            "/api/packages/owner/npm/left-pad",
            "package registry is only available on the tailnet",
        ),
        (
            "/api/swagger",
            "API documentation is only available on the tailnet",
        ),
        (
            "/swagger.v1.json",
            "API documentation is only available on the tailnet",
        ),
    ] {
        let reply = d.get(host, path).await;
        assert_eq!(reply.status, 403, "{path}");
        assert!(reply.body.contains(fragment), "{path}: {}", reply.body);
        assert_security_headers(&reply, path);
    }
    let page =
        std::fs::read_to_string(testdata("configs/deployment/pages/mirrors-403.html")).unwrap();
    // The mirrors area wins over the static-asset regex.
    for path in [
        "/mirrors/",
        "/mirrors/linux",
        "/mirrors/theme.css",
        "/mirrors/logo.png",
    ] {
        let reply = d.get(host, path).await;
        assert_eq!(reply.status, 403, "{path}");
        assert_eq!(reply.body, page, "{path}: the roll of dishonour");
        assert_eq!(
            reply.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        assert_eq!(reply.header("x-robots-tag"), Some("noindex, nofollow"));
        assert_security_headers(&reply, path);
    }
    let archive = d.get(host, "/owner/repo/archive/main.tar.gz?x=1").await;
    assert_eq!(archive.status, 302);
    assert_eq!(
        archive.header("location"),
        Some("https://git.ops/owner/repo/archive/main.tar.gz?x=1")
    );
    let robots = d.get(host, "/robots.txt").await;
    assert_eq!(robots.status, 200);
    assert!(robots.body.starts_with("User-agent: *\n"));
    assert_eq!(d.reached(), 0, "none of these reached the forge");
}

#[tokio::test]
async fn forge_caches_releases_and_assets_and_proxies_the_rest() {
    let d = Deployment::start().await;
    let host = "git.example.org";
    let release = "/owner/repo/releases/download/v1.0/app.tar.gz?header=Cache-Control:private";
    let assets = [
        release,
        "/assets/css/index.css",
        "/assets/js/index.js",
        "/assets/img/logo.png",
        "/assets/img/logo.svg",
        "/assets/fonts/inter.woff",
        "/assets/fonts/inter.woff2",
    ];
    for path in assets {
        let first = d.get(host, path).await;
        assert_eq!(
            (first.status, cache_status(&first)),
            (200, "MISS"),
            "{path}"
        );
        assert_reached(&d, "git.ops", path);
        let second = d.get(host, path).await;
        assert_eq!(cache_status(&second), "HIT", "{path}");
        assert_security_headers(&second, path);
    }
    let before = d.reached();
    for _ in 0..2 {
        let page = d.get(host, "/owner/repo").await;
        assert_eq!(page.status, 200);
        assert!(
            page.header("x-cache-status").is_none(),
            "pages are not cached"
        );
        assert_security_headers(&page, "page");
    }
    assert_eq!(
        d.reached(),
        before + 2,
        "every page request reaches the forge"
    );
    assert_reached(&d, "git.ops", "/owner/repo");
    let seen = d.caddy().last_request().unwrap();
    assert_eq!(seen.header("x-real-ip"), Some("192.0.2.1"));
}

#[tokio::test]
async fn forge_passes_websockets_and_uploads_up_to_512_mib() {
    let d = Deployment::start().await;
    let mut request = format!("ws://{}/__ws", d.proxy.addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("host", "git.example.org".parse().unwrap());
    let (mut socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket handshake through the proxy");
    assert_eq!(response.status(), 101);
    socket.send(Message::text("ping")).await.unwrap();
    assert_eq!(socket.next().await.unwrap().unwrap(), Message::text("ping"));
    drop(socket);
    assert_eq!(
        d.caddy().last_request().unwrap().header("host"),
        Some("git.ops")
    );

    // 8 MiB: more than the event site takes, well within the forge's limit.
    let upload = vec![b'x'; 8 << 20];
    let reply = d
        .send(Req::get("git.example.org", "/owner/repo/upload").post(upload))
        .await;
    assert_eq!(reply.status, 200);
    let seen = d.caddy().last_request().unwrap();
    assert_eq!((seen.method.as_str(), seen.body_len), ("POST", 8 << 20));
    // Over 512 MiB is refused from the declared length alone.
    let too_big = raw_request(
        d.proxy.addr,
        "POST /owner/repo/upload HTTP/1.1\r\nHost: git.example.org\r\nContent-Length: 537919489\r\nConnection: close\r\n\r\n",
    );
    assert!(too_big.starts_with("HTTP/1.1 413"), "{too_big}");
}

// ---------------------------------------------------------------------------------------------
// The event site

#[tokio::test]
async fn event_site_is_for_guests_only() {
    let d = Deployment::start().await;
    let host = "events.example.org";
    for (path, pointer) in [
        ("/admin", "https://events.ops/admin"),
        ("/admin/events/1", "https://events.ops/admin"),
        ("/host/", "https://events.ops/host"),
        ("/host/console", "https://events.ops/host"),
    ] {
        let reply = d.get(host, path).await;
        assert_eq!(reply.status, 403, "{path}");
        assert!(reply.body.contains(pointer), "{path}: {}", reply.body);
    }
    let robots = d.get(host, "/robots.txt").await;
    assert_eq!(
        (robots.status, robots.body.as_str()),
        (200, "User-agent: *\nDisallow: /\n")
    );
    assert_eq!(d.reached(), 0);

    for path in ["/static/app.css", "/media/cover.jpg"] {
        assert_eq!(cache_status(&d.get(host, path).await), "MISS", "{path}");
        assert_reached(&d, "events.ops", path);
        assert_eq!(cache_status(&d.get(host, path).await), "HIT", "{path}");
    }
    let before = d.reached();
    for _ in 0..2 {
        let page = d.get(host, "/e/summer-party").await;
        assert_eq!(page.status, 200);
        assert!(page.header("x-cache-status").is_none());
    }
    assert_eq!(d.reached(), before + 2, "the rest is proxied uncached");
    assert_reached(&d, "events.ops", "/e/summer-party");

    let fits = d
        .send(Req::get(host, "/e/summer-party/photos").post(vec![b'x'; 4 << 20]))
        .await;
    assert_eq!(fits.status, 200);
    assert_eq!(d.caddy().last_request().unwrap().body_len, 4 << 20);
    let before = d.reached();
    let too_big = raw_request(
        d.proxy.addr,
        "POST /e/summer-party/photos HTTP/1.1\r\nHost: events.example.org\r\nContent-Length: 6291456\r\nConnection: close\r\n\r\n",
    );
    assert!(too_big.starts_with("HTTP/1.1 413"), "{too_big}");
    assert_eq!(
        d.reached(),
        before,
        "an oversized upload never reaches the backend"
    );
}

#[tokio::test]
async fn event_site_allows_bursts_of_200() {
    let d = Deployment::start().await;
    let (passed, refused) = d
        .until_limited("events.example.org", "/robots.txt", "192.0.2.40", 120)
        .await;
    assert!(passed > 200, "burst 200 passes first ({passed})");
    assert!(refused.header("retry-after").is_some());
}

// ---------------------------------------------------------------------------------------------
// Photo sharing

#[tokio::test]
async fn photo_site_lets_only_shared_albums_through() {
    let d = Deployment::start().await;
    let host = "photos.example.org";
    let allowed = [
        "/share/Xk2Pq9".to_string(),
        "/share/Xk2Pq9/photos/1".to_string(),
        format!("/api/albums/{UUID}"),
        format!("/api/albums/{UUID}?key=Xk2Pq9"),
        format!("/api/assets/{UUID}/thumbnail?key=Xk2Pq9"),
        format!("/api/assets/{UUID}/original"),
        "/api/server/ping".to_string(),
        "/api/server/version".to_string(),
        "/api/server/features".to_string(),
        "/api/shared-links/me?key=Xk2Pq9".to_string(),
        "/api/shared-links/login?key=Xk2Pq9".to_string(),
    ];
    for path in &allowed {
        let reply = d.get(host, path).await;
        assert_eq!(reply.status, 200, "{path}");
        assert_reached(&d, "photos.ops", path);
    }
    let before = d.reached();
    let refused = [
        "/".to_string(),
        "/photos".to_string(),
        "/auth/login".to_string(),
        "/api/albums".to_string(),
        "/api/albums/not-a-uuid".to_string(),
        format!("/api/albums/{UUID}/users"),
        format!("/api/assets/{UUID}/video/playback"),
        format!("/api/assets/{UUID}"),
        "/api/server/config".to_string(),
        "/api/users/me".to_string(),
        "/api/auth/login".to_string(),
        format!("/api/albums/{UUID}/../../users/me"),
        "/_app/version.json".to_string(),
    ];
    for path in &refused {
        let reply = d.get(host, path).await;
        assert_eq!(reply.status, 403, "{path}");
        assert!(
            reply.body.contains("Only shared albums are public"),
            "{path}"
        );
    }
    assert_eq!(d.reached(), before, "refused paths never reach the library");

    let bundle = "/_app/immutable/chunks/app.3f9a1c.js";
    assert_eq!(cache_status(&d.get(host, bundle).await), "MISS");
    assert_reached(&d, "photos.ops", bundle);
    assert_eq!(cache_status(&d.get(host, bundle).await), "HIT");
}

#[tokio::test]
async fn photo_site_limits_shared_link_logins() {
    let d = Deployment::start().await;
    let before = d.reached();
    let (passed, refused) = d
        .until_limited(
            "photos.example.org",
            "/api/shared-links/login",
            "192.0.2.50",
            10,
        )
        .await;
    assert!(passed > 5, "burst 5 passes first ({passed})");
    assert!(refused.header("retry-after").is_some());
    assert_eq!(d.reached() - before, passed as u64);
}

// ---------------------------------------------------------------------------------------------
// Apex landing page and default server

#[tokio::test]
async fn landing_page_is_served_at_the_edge_even_with_the_tailnet_down() {
    let d = Deployment::start().await;
    let index = std::fs::read_to_string(testdata("configs/deployment/landing/index.html")).unwrap();
    for round in ["up", "down"] {
        for host in ["example.org", "www.example.org"] {
            let reply = d.get(host, "/").await;
            assert_eq!(reply.status, 200, "{host} with the tailnet {round}");
            assert_eq!(reply.body, index);
            assert_eq!(
                reply.header("content-type"),
                Some("text/html; charset=utf-8")
            );
            assert_security_headers(&reply, host);
        }
        assert_eq!(d.get("example.org", "/nothing-here").await.status, 404);
        d.caddy().stop();
    }
    assert_eq!(d.reached(), 0);
}

#[tokio::test]
async fn default_server_answers_healthz_and_drops_everything_else() {
    let d = Deployment::start().await;
    let health = raw_request(
        d.proxy.addr,
        "GET /healthz HTTP/1.1\r\nHost: scanner.invalid\r\nConnection: close\r\n\r\n",
    );
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    for request in [
        "GET / HTTP/1.1\r\nHost: scanner.invalid\r\nConnection: close\r\n\r\n",
        "GET /wp-login.php HTTP/1.1\r\nHost: 203.0.113.1\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.0\r\n\r\n",
    ] {
        assert_eq!(
            raw_request(d.proxy.addr, request),
            "",
            "dropped: {request:?}"
        );
    }
    assert_eq!(d.reached(), 0);
}
