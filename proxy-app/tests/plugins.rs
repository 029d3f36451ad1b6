//! Plugins attached from config: the built-in `headers` plugin end to end, and plugin errors.

mod common;

use common::encoded::{fetch_raw, Raw};
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
request_set = {{ "x-edge" = "yes", "x-forwarded-proto" = "https" }}
request_remove = ["x-real-ip"]

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

[[sites.app.locations]]
match = "/no-host/"
proxy = "app"
plugins = [{{ use = "headers", request_remove = ["host"] }}]

[[sites.app.locations]]
match = "/userinfo-host/"
proxy = "app"
plugins = [{{ use = "headers", request_set = {{ "host" = "user@app.example.com" }} }}]
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
    // Request headers set by the plugin reach the upstream, and the plugin's changes apply
    // to the forwarding headers the proxy set before it (each sent once).
    get(&proxy, "app.example.com", "/").await;
    let seen = tailnet.peer("app").unwrap().last_request().unwrap();
    assert_eq!(seen.header("x-edge"), Some("yes"));
    let values = |name: &str| {
        seen.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(values("x-forwarded-proto"), ["https"]);
    assert_eq!(values("x-real-ip"), Vec::<&str>::new());
    assert_eq!(values("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(values("x-request-id").len(), 1, "{:?}", seen.headers);
}

/// The Host of the request a plugin changed is checked before it goes upstream: one the plugin
/// removed is sent empty (the client sent one), one with userinfo is refused.
#[tokio::test]
async fn hosts_plugins_change_are_checked_before_the_request_goes_upstream() {
    let tailnet = tailnet(&["app", "down"]).await;
    let proxy = Proxy::start(&config(&tailnet));
    let peer = tailnet.peer("app").unwrap();

    let reply = get(&proxy, "app.example.com", "/no-host/x").await;
    assert_eq!(reply.status, 200);
    let seen = peer.last_request().unwrap();
    assert_eq!(seen.uri, "/no-host/x");
    let hosts: Vec<&str> = seen
        .headers
        .iter()
        .filter(|(name, _)| name == "host")
        .map(|(_, value)| value.as_str())
        .collect();
    assert_eq!(hosts, [""], "{:?}", seen.headers);

    let reply = get(&proxy, "app.example.com", "/userinfo-host/x").await;
    assert_eq!(reply.status, 500);
    let seen = peer.last_request().unwrap();
    assert_eq!(seen.uri, "/no-host/x", "nothing more reached the upstream");
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

/// `data` as `gzip -9`, `brotli -q 11` and `zstd -19` would write it.
fn precompress(coding: &str, data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    match coding {
        "gzip" => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            encoder.write_all(data).unwrap();
            encoder.finish().unwrap()
        }
        "br" => {
            let mut out = Vec::new();
            let mut writer = brotli::CompressorWriter::new(&mut out, 4096, 11, 22);
            writer.write_all(data).unwrap();
            drop(writer);
            out
        }
        "zstd" => zstd::encode_all(data, 19).unwrap(),
        other => panic!("no coding {other}"),
    }
}

const STATIC_HOST: &str = "static.example.com";

/// `/` serves `site` with every coding precompressed (in the order br, zstd, gzip) and a
/// fallback to `/index.html`; `/strict/` offers gzip alone, without fallback; `/plain/` has
/// no `precompressed`.
fn precompressed_config(tailnet: &fake_tailnet::FakeTailnet) -> String {
    format!(
        r#"{base}
[sites.static]
hosts = ["{STATIC_HOST}"]

[[sites.static.locations]]
match = "/"
plugins = [{{ use = "static", root = "site", try_files = ["$uri", "$uri/", "/index.html"], precompressed = ["br", "zstd", "gzip"] }}]

[[sites.static.locations]]
match = "^~ /strict/"
plugins = [{{ use = "static", root = "site", precompressed = ["gzip"] }}]

[[sites.static.locations]]
match = "^~ /plain/"
plugins = [{{ use = "static", root = "site" }}]
"#,
        base = base_config(tailnet),
    )
}

/// What the precompressed tests serve: `app.js` with a sibling in each coding.
fn app_js() -> Vec<u8> {
    b"console.log('hello from a precompressed file');\n".repeat(64)
}

#[tokio::test]
async fn static_precompressed_siblings_follow_accept_encoding() {
    let tailnet = tailnet(&[]).await;
    let original = app_js();
    let siblings: Vec<(&str, &str, Vec<u8>)> = [("br", "br"), ("zstd", "zst"), ("gzip", "gz")]
        .into_iter()
        .map(|(coding, ext)| (coding, ext, precompress(coding, &original)))
        .collect();
    let names: Vec<String> = siblings
        .iter()
        .map(|(_, ext, _)| format!("site/app.js.{ext}"))
        .collect();
    let mut files: Vec<(&str, &[u8])> = vec![("site/app.js", &original)];
    for (name, (_, _, bytes)) in names.iter().zip(&siblings) {
        files.push((name, bytes));
    }
    let proxy = Proxy::start_with_files(&precompressed_config(&tailnet), &files);
    let sibling =
        |coding: &str| -> &[u8] { &siblings.iter().find(|(c, ..)| *c == coding).unwrap().2 };

    let cases: [(&str, Option<&str>); 11] = [
        ("br", Some("br")),
        ("gzip", Some("gzip")),
        ("zstd", Some("zstd")),
        // Equal q-values: the order of `precompressed` (br first), not the proxy's default.
        ("gzip, deflate, br, zstd", Some("br")),
        ("gzip;q=0.5, zstd;q=0.9, br;q=0.1", Some("zstd")),
        ("br;q=0, zstd;q=0, gzip", Some("gzip")),
        ("*;q=0.5, br;q=0", Some("zstd")),
        ("br;q=0, zstd;q=0, gzip;q=0", None),
        ("identity", None),
        ("gzip;q=0.5, identity", None),
        ("deflate", None),
    ];
    let mut etags = std::collections::HashMap::new();
    for (accept, expected) in cases {
        let reply = fetch_raw(
            &proxy,
            STATIC_HOST,
            "/app.js",
            &[("accept-encoding", accept)],
        )
        .await;
        assert_eq!(reply.status, 200, "{accept}");
        assert_eq!(reply.header("content-encoding"), expected, "{accept}");
        assert_eq!(
            reply.header("content-type"),
            Some("text/javascript; charset=utf-8"),
            "{accept}: the original file's type"
        );
        assert_eq!(reply.header("vary"), Some("Accept-Encoding"), "{accept}");
        let sent = expected.map_or(&original[..], sibling);
        assert_eq!(reply.body, sent, "{accept}: the sibling's bytes as stored");
        assert_eq!(reply.decoded(), original, "{accept}");
        let length = sent.len().to_string();
        assert_eq!(reply.header("content-length"), Some(&*length), "{accept}");
        etags.insert(expected, reply.header("etag").unwrap().to_string());
    }
    let none = fetch_raw(&proxy, STATIC_HOST, "/app.js", &[]).await;
    assert_eq!(none.header("content-encoding"), None);
    assert_eq!(none.body, original);
    assert!(none.varies_on_accept_encoding());
    // Each variant has its own tag.
    assert_eq!(etags.len(), 4);
    let distinct: std::collections::HashSet<&String> = etags.values().collect();
    assert_eq!(distinct.len(), 4, "{etags:?}");

    // Validators and ranges are the chosen variant's.
    let br_etag = etags[&Some("br")].clone();
    let with = |headers: Vec<(&'static str, String)>| {
        let proxy = &proxy;
        async move {
            let mut request = client()
                .get(proxy.url("/app.js"))
                .header("host", STATIC_HOST);
            for (name, value) in headers {
                request = request.header(name, value);
            }
            Raw::read(request.send().await.unwrap()).await
        }
    };
    let revalidated = with(vec![
        ("accept-encoding", "br".into()),
        ("if-none-match", br_etag.clone()),
    ])
    .await;
    assert_eq!(revalidated.status, 304);
    assert_eq!(revalidated.header("etag"), Some(&*br_etag));
    assert_eq!(revalidated.header("vary"), Some("Accept-Encoding"));
    assert!(revalidated.body.is_empty());
    // The br variant's tag does not match the gzip variant.
    let other = with(vec![
        ("accept-encoding", "gzip".into()),
        ("if-none-match", br_etag.clone()),
    ])
    .await;
    assert_eq!(
        (other.status, other.header("content-encoding")),
        (200, Some("gzip"))
    );
    assert_eq!(other.body, sibling("gzip"));
    let identity_etag = etags[&None].clone();
    let other = with(vec![
        ("accept-encoding", "zstd".into()),
        ("if-none-match", identity_etag),
    ])
    .await;
    assert_eq!(
        (other.status, other.header("content-encoding")),
        (200, Some("zstd"))
    );
    let br_modified = fetch_raw(&proxy, STATIC_HOST, "/app.js", &[("accept-encoding", "br")])
        .await
        .header("last-modified")
        .unwrap()
        .to_string();
    let since = with(vec![
        ("accept-encoding", "br".into()),
        ("if-modified-since", br_modified),
    ])
    .await;
    assert_eq!(since.status, 304);
    assert_eq!(since.header("etag"), Some(&*br_etag));

    // A range counts the encoded bytes of the chosen variant.
    let part = with(vec![
        ("accept-encoding", "gzip".into()),
        ("range", "bytes=0-9".into()),
    ])
    .await;
    let gzip = sibling("gzip");
    assert_eq!(part.status, 206);
    assert_eq!(part.header("content-encoding"), Some("gzip"));
    assert_eq!(part.body, &gzip[..10]);
    let range = format!("bytes 0-9/{}", gzip.len());
    assert_eq!(part.header("content-range"), Some(&*range));
    let past = with(vec![
        ("accept-encoding", "gzip".into()),
        ("range", format!("bytes={}-", gzip.len())),
    ])
    .await;
    assert_eq!(past.status, 416, "past the end of the gzip variant");
    assert_eq!(
        past.header("content-range"),
        Some(&*format!("bytes */{}", gzip.len()))
    );

    // A sibling as long and as old as its file still has a tag of its own.
    let twin = sibling("gzip");
    for name in ["site/twin.bin", "site/twin.bin.gz"] {
        let path = proxy.dir().join(name);
        std::fs::write(&path, twin).unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000))
            .unwrap();
    }
    let plain = fetch_raw(&proxy, STATIC_HOST, "/twin.bin", &[]).await;
    let plain_etag = plain.header("etag").unwrap().to_string();
    let conditional = [("accept-encoding", "gzip"), ("if-none-match", &*plain_etag)];
    let twin_gzip = fetch_raw(&proxy, STATIC_HOST, "/twin.bin", &conditional).await;
    assert_eq!(
        twin_gzip.status, 200,
        "the identity tag does not match gzip"
    );
    assert_eq!(twin_gzip.header("content-encoding"), Some("gzip"));
    assert_ne!(twin_gzip.header("etag"), Some(&*plain_etag));

    // HEAD describes the variant GET would send.
    let head = client()
        .head(proxy.url("/app.js"))
        .header("host", STATIC_HOST)
        .header("accept-encoding", "zstd")
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers().get("content-encoding").unwrap(), "zstd");
    let length = sibling("zstd").len().to_string();
    assert_eq!(head.headers().get("content-length").unwrap(), &*length);
}

#[tokio::test]
async fn static_precompressed_indexes_fallbacks_and_safety() {
    let tailnet = tailnet(&[]).await;
    let home = b"<h1>home</h1>".repeat(40);
    let about = b"<h1>about</h1>".repeat(40);
    let script = app_js();
    let (home_gz, about_br) = (precompress("gzip", &home), precompress("br", &about));
    let (script_gz, script_br) = (precompress("gzip", &script), precompress("br", &script));
    let files: &[(&str, &[u8])] = &[
        ("site/index.html", &home),
        ("site/index.html.gz", &home_gz),
        ("site/about/index.html", &about),
        ("site/about/index.html.br", &about_br),
        // Only a gzip sibling.
        ("site/gz-only.js", &script),
        ("site/gz-only.js.gz", &script_gz),
        // A sibling without its file.
        ("site/strict/orphan.js.gz", &script_gz),
        ("site/strict/plain.css", b"body{}"),
        // Siblings that leave the root or hide.
        ("site/escape.js", &script),
        ("outside.js.br", &script_br),
        ("site/hidden/.x.js", &script),
        ("site/plain/app.js", &script),
        ("site/plain/app.js.gz", &script_gz),
    ];
    let proxy = Proxy::start_with_files(&precompressed_config(&tailnet), files);
    std::os::unix::fs::symlink(
        proxy.dir().join("outside.js.br"),
        proxy.dir().join("site/escape.js.br"),
    )
    .unwrap();
    let fetch = |path: &'static str, accept: &'static str| {
        let proxy = &proxy;
        async move { fetch_raw(proxy, STATIC_HOST, path, &[("accept-encoding", accept)]).await }
    };

    // Index files and the try_files fallback get their siblings too, with their own type.
    for path in ["/", "/index.html", "/no/such/page"] {
        let reply = fetch(path, "gzip, br").await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.header("content-encoding"), Some("gzip"), "{path}");
        assert_eq!(
            reply.header("content-type"),
            Some("text/html; charset=utf-8"),
            "{path}"
        );
        assert_eq!(reply.body, home_gz, "{path}");
        assert_eq!(reply.decoded(), home, "{path}");
    }
    let reply = fetch("/about/", "gzip, br").await;
    assert_eq!(reply.header("content-encoding"), Some("br"));
    assert_eq!(reply.decoded(), about);

    // A coding whose sibling is missing is not chosen: the best one present is, or identity.
    let reply = fetch("/gz-only.js", "br, gzip;q=0.5").await;
    assert_eq!(reply.header("content-encoding"), Some("gzip"));
    assert_eq!(reply.body, script_gz);
    let reply = fetch("/gz-only.js", "br, zstd").await;
    assert_eq!(reply.header("content-encoding"), None);
    assert_eq!(reply.body, script);
    assert!(reply.varies_on_accept_encoding());

    // A sibling without its file is never served; the file without siblings is, and varies.
    assert_eq!(fetch("/strict/orphan.js", "gzip").await.status, 404);
    assert_eq!(fetch("/strict/orphan.js.gz", "gzip").await.status, 200);
    let plain = fetch("/strict/plain.css", "gzip").await;
    assert_eq!((plain.status, &plain.body[..]), (200, &b"body{}"[..]));
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.header("vary"), Some("Accept-Encoding"));

    // A sibling symlinked out of the root is refused like any file there: identity is sent.
    let escape = fetch("/escape.js", "br").await;
    assert_eq!(escape.status, 200);
    assert_eq!(escape.header("content-encoding"), None);
    assert_eq!(escape.body, script);

    // Without `precompressed`, siblings are plain files: never chosen, no Vary.
    let off = fetch("/plain/app.js", "gzip").await;
    assert_eq!(off.header("content-encoding"), None);
    assert_eq!(off.body, script);
    assert!(!off.varies_on_accept_encoding());
}

#[tokio::test]
async fn compression_leaves_static_answers_as_they_are() {
    // A location that proxies and compresses, whose `static` plugin answers first.
    let tailnet = tailnet(&["app"]).await;
    let config = format!(
        "{}\n[upstreams.app]\naddress = \"app.{}:{}\"\n[sites.static]\nhosts = [\"{STATIC_HOST}\"]\ncompress = {{ min_length = \"1\" }}\n[[sites.static.locations]]\nmatch = \"/\"\nproxy = \"app\"\nplugins = [{{ use = \"static\", root = \"site\", precompressed = [\"gzip\"] }}]\n",
        base_config(&tailnet),
        tailnet.domain(),
        tailnet.http_port()
    );
    let script = app_js();
    let script_gz = precompress("gzip", &script);
    let text = b"plain text, never compressed by the proxy\n".repeat(50);
    let files: &[(&str, &[u8])] = &[
        ("site/app.js", &script),
        ("site/app.js.gz", &script_gz),
        ("site/notes.txt", &text),
    ];
    let proxy = Proxy::start_with_files(&config, files);
    for accept in ["gzip", "gzip, br, zstd"] {
        let reply = fetch_raw(
            &proxy,
            STATIC_HOST,
            "/app.js",
            &[("accept-encoding", accept)],
        )
        .await;
        assert_eq!(reply.header("content-encoding"), Some("gzip"), "{accept}");
        assert_eq!(
            reply.body, script_gz,
            "{accept}: sent once-encoded, as stored"
        );
        assert_eq!(reply.decoded(), script, "{accept}");
        let notes = fetch_raw(
            &proxy,
            STATIC_HOST,
            "/notes.txt",
            &[("accept-encoding", accept)],
        )
        .await;
        assert_eq!(notes.header("content-encoding"), None, "{accept}");
        assert_eq!(notes.body, text, "{accept}");
    }
    assert_eq!(tailnet.peer("app").unwrap().requests(), 0);
    let metrics = scrape(proxy.admin).await;
    assert!(
        !metrics.contains("edge_compressed_responses_total{"),
        "nothing compressed: {metrics}"
    );
}

#[test]
fn static_precompressed_refuses_unknown_codings() {
    for (codings, expected) in [
        (
            "[\"br\", \"deflate\"]",
            "`precompressed`: unknown coding `deflate` (known: \"br\", \"zstd\", \"gzip\")",
        ),
        (
            "[\"gzip\", \"gzip\"]",
            "`precompressed`: `gzip` is listed twice",
        ),
        ("\"br\"", "`precompressed` must be a list of strings"),
    ] {
        let text = format!("[sites.a]\nhosts = [\"a.example.com\"]\n[[sites.a.locations]]\nmatch = \"/\"\nplugins = [{{ use = \"static\", root = \".\", precompressed = {codings} }}]\n");
        let (ok, stderr) = check(&text);
        assert!(!ok, "{codings}");
        assert!(
            stderr.contains(&format!(
                "edge.toml:5: sites.a.locations[0].plugins[0]: {expected}"
            )),
            "{codings}: {stderr}"
        );
    }
}
