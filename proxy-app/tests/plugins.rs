//! Plugins attached from config: the built-in `headers` plugin end to end, and plugin errors.

mod common;

use common::*;

fn config(tailnet: &fake_tailnet::FakeTailnet) -> String {
    format!(
        r#"{base}
[upstreams.app]
address = "app.{d}:{p}"
[upstreams.down]
address = "down.{d}:{p}"

[sites.app]
hosts = ["app.example.com"]

[[sites.app.plugins]]
use = "headers"
preset = "security"
remove = ["x-fake-peer"]
request_set = {{ "x-edge" = "yes" }}

[[sites.app.locations]]
match = "/"
proxy = "app"

[[sites.app.locations]]
match = "/assets/"
proxy = "app"
plugins = [{{ use = "headers", set = {{ "cache-control" = "public, max-age=604800" }} }}]

[[sites.app.locations]]
match = "/bare/"
proxy = "app"
site_plugins = false
plugins = [{{ use = "headers", add = {{ "x-bare" = "1" }} }}]

[[sites.app.locations]]
match = "= /robots.txt"
return = {{ status = 200, body = "User-agent: *\n" }}

[[sites.app.locations]]
match = "/down/"
proxy = "down"
"#,
        base = base_config(tailnet),
        d = tailnet.domain(),
        p = tailnet.http_port()
    )
}

const SECURITY: [&str; 4] = [
    "strict-transport-security",
    "x-frame-options",
    "x-content-type-options",
    "referrer-policy",
];

#[tokio::test]
async fn headers_plugin_applies_to_every_response_and_merges_site_and_location() {
    let tailnet = tailnet(&["app", "down"]).await;
    tailnet.peer("down").unwrap().stop();
    let proxy = Proxy::start(&config(&tailnet));

    // Proxied, local return, 404-free error (502 from a down peer): all get the site headers.
    for (path, status) in [
        ("/", 200),
        ("/robots.txt", 200),
        ("/down/x", 502),
        ("/assets/a.css", 200),
    ] {
        let reply = get(&proxy, "app.example.com", path).await;
        assert_eq!(reply.status, status, "{path}");
        for name in SECURITY {
            assert!(reply.header(name).is_some(), "{path}: missing {name}");
        }
        assert_eq!(reply.header("x-fake-peer"), None, "{path}: removed");
    }
    // The location's headers come on top of the site's (nginx would drop the site's).
    let assets = get(&proxy, "app.example.com", "/assets/a.css").await;
    assert_eq!(
        assets.header("cache-control"),
        Some("public, max-age=604800")
    );
    assert_eq!(assets.header("x-frame-options"), Some("SAMEORIGIN"));
    // Unless the location opts out of the site's plugins.
    let bare = get(&proxy, "app.example.com", "/bare/x").await;
    assert_eq!(bare.header("x-bare"), Some("1"));
    assert_eq!(bare.header("x-frame-options"), None);
    assert_eq!(bare.header("x-fake-peer"), Some("app"));
    // Request headers set by the plugin reach the upstream.
    get(&proxy, "app.example.com", "/").await;
    let seen = tailnet.peer("app").unwrap().last_request().unwrap();
    assert_eq!(seen.header("x-edge"), Some("yes"));
}

#[test]
fn plugin_errors_name_the_line() {
    let text = "[upstreams.a]\naddress = \"10.0.0.1:80\"\n[sites.a]\nhosts = [\"a.example.com\"]\n[[sites.a.plugins]]\nuse = \"headerz\"\n[[sites.a.locations]]\nmatch = \"/\"\nproxy = \"a\"\nplugins = [{ use = \"headers\", colour = \"red\" }]\n";
    let (ok, stderr) = check(text);
    assert!(!ok);
    assert!(
        stderr.contains(
            "edge.toml:5: sites.a.plugins[0]: unknown plugin `headerz` (available: challenge, headers, page, static)"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("edge.toml:10: sites.a.locations[0].plugins[0]: unknown option `colour`"),
        "{stderr}"
    );
}

#[tokio::test]
async fn static_files_serve_a_landing_page_safely() {
    let tailnet = tailnet(&[]).await;
    let config = format!(
        "{}\n[sites.apex]\nhosts = [\"example.com\"]\n[[sites.apex.locations]]\nmatch = \"/\"\nplugins = [{{ use = \"static\", root = \"site\", try_files = [\"$uri\", \"$uri/\", \"/index.html\"], cache_control = \"public, max-age=60\" }}]\n[[sites.apex.locations]]\nmatch = \"^~ /strict/\"\nplugins = [{{ use = \"static\", root = \"site\" }}]\n",
        base_config(&tailnet)
    );
    let files: &[(&str, &[u8])] = &[
        ("site/index.html", b"<h1>home</h1>"),
        ("site/about/index.html", b"<h1>about</h1>"),
        ("site/style.css", b"body{}0123456789"),
        ("site/.secret", b"hidden"),
        ("site/strict/.keep", b""),
    ];
    let proxy = Proxy::start_with_files(&config, files);
    // A symlink out of the root, added while running (files are looked up per request).
    std::os::unix::fs::symlink("/etc/hostname", proxy.dir().join("site/escape")).unwrap();

    let home = get(&proxy, "example.com", "/").await;
    assert_eq!((home.status, home.body.as_str()), (200, "<h1>home</h1>"));
    assert_eq!(
        home.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(home.header("cache-control"), Some("public, max-age=60"));
    assert_eq!(
        get(&proxy, "example.com", "/about/").await.body,
        "<h1>about</h1>"
    );
    let css = get(&proxy, "example.com", "/style.css").await;
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    assert_eq!(
        get(&proxy, "example.com", "/no/such/page").await.body,
        "<h1>home</h1>",
        "try_files fallback"
    );
    assert_eq!(
        get(&proxy, "example.com", "/strict/nope").await.status,
        404,
        "no fallback configured"
    );

    for path in ["/.secret", "/escape", "/%2esecret", "/about/../.secret"] {
        // Refused files fall through to the try_files fallback (the home page), never served.
        let reply = get(&proxy, "example.com", path).await;
        assert_eq!(reply.body, "<h1>home</h1>", "{path}");
    }
    assert_eq!(
        get(&proxy, "example.com", "/strict/.keep").await.status,
        404
    );
    for path in ["/../etc/passwd", "/%2e%2e/etc/passwd"] {
        let raw = raw_request(
            proxy.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n"),
        );
        assert!(raw.starts_with("HTTP/1.1 400"), "{path}: {raw}");
    }

    // Validators, conditional requests, ranges, methods.
    let etag = css.header("etag").unwrap().to_string();
    let last_modified = css.header("last-modified").unwrap().to_string();
    let conditional = |name: &'static str, value: String| {
        client()
            .get(proxy.url("/style.css"))
            .header("host", "example.com")
            .header(name, value)
            .send()
    };
    assert_eq!(
        conditional("if-none-match", etag.clone())
            .await
            .unwrap()
            .status(),
        304
    );
    assert_eq!(
        conditional("if-none-match", "\"other\"".into())
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        conditional("if-modified-since", last_modified)
            .await
            .unwrap()
            .status(),
        304
    );
    let range = Reply::read(conditional("range", "bytes=6-9".into()).await.unwrap()).await;
    assert_eq!((range.status, range.body.as_str()), (206, "0123"));
    assert_eq!(range.header("content-range"), Some("bytes 6-9/16"));
    let suffix = Reply::read(conditional("range", "bytes=-3".into()).await.unwrap()).await;
    assert_eq!((suffix.status, suffix.body.as_str()), (206, "789"));
    assert_eq!(
        conditional("range", "bytes=100-".into())
            .await
            .unwrap()
            .status(),
        416
    );
    let post = client()
        .post(proxy.url("/"))
        .header("host", "example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
    assert_eq!(post.headers().get("allow").unwrap(), "GET, HEAD");
    let head = client()
        .head(proxy.url("/style.css"))
        .header("host", "example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(head.headers().get("content-length").unwrap(), "16");
}

#[tokio::test]
async fn site_error_pages_replace_local_refusals_and_keep_their_status() {
    let tailnet = tailnet(&["app"]).await;
    let config = format!(
        "{}\n[upstreams.app]\naddress = \"app.{}:{}\"\n[sites.app]\nhosts = [\"app.example.com\"]\nerror_pages = {{ 403 = \"403.html\", 404 = \"404.html\" }}\n[sites.app.access]\nuser_agent_deny = [\"badbot\"]\n[[sites.app.plugins]]\nuse = \"headers\"\nset = {{ \"x-edge\" = \"1\" }}\n[[sites.app.locations]]\nmatch = \"/app/\"\nproxy = \"app\"\n",
        base_config(&tailnet),
        tailnet.domain(),
        tailnet.http_port()
    );
    let files: &[(&str, &[u8])] = &[
        ("403.html", b"<h1>go away, bot</h1>"),
        ("404.html", b"<h1>nothing here</h1>"),
    ];
    let proxy = Proxy::start_with_files(&config, files);
    let denied = Reply::read(
        client()
            .get(proxy.url("/app/"))
            .header("host", "app.example.com")
            .header("user-agent", "BadBot/1.0")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (denied.status, denied.body.as_str()),
        (403, "<h1>go away, bot</h1>")
    );
    assert_eq!(
        denied.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(
        denied.header("x-edge"),
        Some("1"),
        "plugins' headers on error pages"
    );
    let missing = get(&proxy, "app.example.com", "/elsewhere").await;
    assert_eq!(
        (missing.status, missing.body.as_str()),
        (404, "<h1>nothing here</h1>")
    );
    assert_eq!(tailnet.peer("app").unwrap().requests(), 0);
}
