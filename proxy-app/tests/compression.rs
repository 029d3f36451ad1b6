//! Response compression (`compress = { }`) through the real binary: each coding decoded by
//! the coding's own library and compared with what the origin sent, the choice by q-values,
//! what is never compressed, and cached responses compressed once per coding.

mod common;

use common::encoded::{fetch_raw, Raw};
use common::*;
use fake_tailnet::FakeTailnet;

const HOST: &str = "docs.example.com";
/// A body the fake peer sends: `size` bytes of `x`, as `text/plain`.
const SIZE: usize = 4000;

/// One site proxying to the `docs` peer, compressing above 1 KiB: `/cached/` caches,
/// `/gzip-only/` offers gzip alone, `/raw/` turns compression off.
fn config(tailnet: &FakeTailnet) -> String {
    format!(
        r#"{base}
[upstreams.docs]
address = "docs.{d}:{p}"

[sites.docs]
hosts = ["{HOST}"]
compress = {{ min_length = "1k" }}

[[sites.docs.locations]]
match = "/"
proxy = "docs"

[[sites.docs.locations]]
match = "/cached/"
proxy = "docs"
cache = {{ }}

[[sites.docs.locations]]
match = "/gzip-only/"
proxy = "docs"
compress = {{ encodings = ["gzip"] }}

[[sites.docs.locations]]
match = "/raw/"
proxy = "docs"
compress = {{ enabled = false }}
"#,
        base = base_config(tailnet),
        d = tailnet.domain(),
        p = tailnet.http_port(),
    )
}

async fn fetch(proxy: &Proxy, path: &str, headers: &[(&str, &str)]) -> Raw {
    fetch_raw(proxy, HOST, path, headers).await
}

fn origin_body(size: usize) -> Vec<u8> {
    vec![b'x'; size]
}

/// `edge_compressed_responses_total{encoding="..."}` in a scrape (0 when absent).
fn compressions(metrics: &str, encoding: &str) -> u64 {
    counter(metrics, "edge_compressed_responses_total", encoding)
}

/// A counter's value for one encoding in a scrape (0 when absent).
fn counter(metrics: &str, name: &str, encoding: &str) -> u64 {
    let prefix = format!("{name}{{encoding=\"{encoding}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |value| value.trim().parse().expect("a counter value"))
}

fn upstream_accept_encoding(tailnet: &FakeTailnet) -> Option<String> {
    let seen = tailnet.peer("docs")?.last_request()?;
    seen.header("accept-encoding").map(str::to_string)
}

#[tokio::test]
async fn each_coding_decodes_to_the_origin_body() {
    let tailnet = tailnet(&["docs"]).await;
    let proxy = Proxy::start(&config(&tailnet));
    let path = format!("/page?size={SIZE}&header=etag:%22v1%22&header=vary:Accept-Language");
    for coding in ["gzip", "br", "zstd"] {
        let reply = fetch(&proxy, &path, &[("accept-encoding", coding)]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-encoding"), Some(coding));
        assert_eq!(reply.header("content-length"), None, "{coding}");
        assert_eq!(reply.header("etag"), Some("W/\"v1\""), "{coding}");
        assert_eq!(
            reply.header("vary"),
            Some("Accept-Language, Accept-Encoding"),
            "{coding}"
        );
        assert!(
            reply.body.len() < SIZE / 10,
            "{coding}: {} bytes",
            reply.body.len()
        );
        assert_eq!(reply.decoded(), origin_body(SIZE), "{coding}");
        assert_eq!(upstream_accept_encoding(&tailnet).as_deref(), Some(coding));
    }
    let metrics = scrape(proxy.admin).await;
    for coding in ["gzip", "br", "zstd"] {
        assert_eq!(compressions(&metrics, coding), 1, "{metrics}");
    }
    let saved = counter(&metrics, "edge_compression_saved_bytes_total", "gzip");
    assert!(saved > 3000 && saved < SIZE as u64, "{metrics}");
}

#[tokio::test]
async fn q_values_and_the_location_choose_the_coding() {
    let tailnet = tailnet(&["docs"]).await;
    let proxy = Proxy::start(&config(&tailnet));
    let path = format!("/page?size={SIZE}");
    let cases = [
        ("gzip;q=0.5, br;q=0.9", Some("br")),
        ("gzip, deflate, br, zstd", Some("zstd")),
        ("br;q=0, gzip", Some("gzip")),
        ("br;q=0", None),
        ("identity", None),
        ("gzip;q=0.5, identity", None),
        ("*;q=0.1, gzip;q=0.2", Some("gzip")),
    ];
    for (accept, expected) in cases {
        let reply = fetch(&proxy, &path, &[("accept-encoding", accept)]).await;
        assert_eq!(reply.header("content-encoding"), expected, "{accept}");
        assert!(reply.varies_on_accept_encoding(), "{accept}");
        assert_eq!(reply.decoded(), origin_body(SIZE), "{accept}");
        let asked = expected.unwrap_or("identity");
        assert_eq!(upstream_accept_encoding(&tailnet).as_deref(), Some(asked));
    }
    let none = fetch(&proxy, &path, &[]).await;
    assert_eq!(none.header("content-encoding"), None);
    assert_eq!(none.header("content-length"), Some("4000"));
    let gzip_only = format!("/gzip-only/page?size={SIZE}");
    let reply = fetch(
        &proxy,
        &gzip_only,
        &[("accept-encoding", "br, zstd, gzip;q=0.1")],
    )
    .await;
    assert_eq!(reply.header("content-encoding"), Some("gzip"));
    assert_eq!(reply.decoded(), origin_body(SIZE));
    let raw = fetch(
        &proxy,
        &format!("/raw/page?size={SIZE}"),
        &[("accept-encoding", "gzip")],
    )
    .await;
    assert_eq!(raw.header("content-encoding"), None);
    assert!(!raw.varies_on_accept_encoding());
    // `/raw/` leaves the client's header for the upstream as it was.
    assert_eq!(upstream_accept_encoding(&tailnet).as_deref(), Some("gzip"));
}

/// A query of the fake peer, extra request headers, and whether the answer varies.
type Case = (&'static str, &'static [(&'static str, &'static str)], bool);

#[tokio::test]
async fn ranges_encoded_small_and_other_bodies_pass_as_they_are() {
    let tailnet = tailnet(&["docs"]).await;
    let proxy = Proxy::start(&config(&tailnet));
    let gzip = [("accept-encoding", "gzip, br")];
    let cases: [Case; 5] = [
        // (query, extra request headers, answer varies on Accept-Encoding)
        ("size=4000", &[("range", "bytes=0-99")], true),
        ("size=4000&header=content-encoding:gzip", &[], true),
        ("size=1000", &[], false),
        ("size=4000&header=content-type:image/png", &[], false),
        ("size=4000&header=cache-control:no-transform", &[], false),
    ];
    for (query, extra, varies) in cases {
        let mut headers = gzip.to_vec();
        headers.extend_from_slice(extra);
        let reply = fetch(&proxy, &format!("/page?{query}"), &headers).await;
        let size = if query.starts_with("size=1000") {
            1000
        } else {
            SIZE
        };
        assert_eq!(reply.status, 200, "{query}");
        let coding = reply.header("content-encoding");
        let passed = match query.contains("content-encoding") {
            true => coding == Some("gzip"),
            false => coding.is_none(),
        };
        assert!(passed, "{query}: {coding:?}");
        assert_eq!(
            reply.body,
            origin_body(size),
            "{query}: body as the origin sent it"
        );
        assert_eq!(reply.varies_on_accept_encoding(), varies, "{query}");
    }
    let head = client()
        .head(proxy.url(&format!("/page?size={SIZE}")))
        .header("host", HOST)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("HEAD through the proxy");
    assert_eq!(head.status(), 200);
    assert!(head.headers().get("content-encoding").is_none());
    let metrics = scrape(proxy.admin).await;
    assert_eq!(
        compressions(&metrics, "gzip") + compressions(&metrics, "br"),
        0
    );
}

#[tokio::test]
async fn a_cached_response_is_compressed_once_per_coding() {
    let tailnet = tailnet(&["docs"]).await;
    let proxy = Proxy::start(&config(&tailnet));
    let path = format!("/cached/page?size={SIZE}&header=etag:%22v1%22");
    let requests = || tailnet.peer("docs").map_or(0, |p| p.requests());
    let expect = |accept: &'static str, status: &'static str, coding: Option<&'static str>| {
        let (proxy, path) = (&proxy, &path);
        async move {
            let reply = fetch(proxy, path, &[("accept-encoding", accept)]).await;
            assert_eq!(reply.status, 200, "{accept}");
            assert_eq!(reply.header("x-cache-status"), Some(status), "{accept}");
            assert_eq!(reply.header("content-encoding"), coding, "{accept}");
            assert!(reply.varies_on_accept_encoding(), "{accept}");
            assert_eq!(reply.decoded(), origin_body(SIZE), "{accept}");
            if coding.is_some() {
                assert_eq!(reply.header("etag"), Some("W/\"v1\""), "{accept}");
            }
            // Hits of a variant take the hot-object path, which sends a stored chunked
            // body with its length.
            if status == "HIT" {
                let length = reply.body.len().to_string();
                assert_eq!(reply.header("content-length"), Some(&*length), "{accept}");
            }
        }
    };
    expect("gzip", "MISS", Some("gzip")).await;
    expect("gzip", "HIT", Some("gzip")).await;
    // Another way of writing the same choice shares the variant.
    expect("deflate, gzip;q=0.8", "HIT", Some("gzip")).await;
    assert_eq!(requests(), 1);
    assert_eq!(compressions(&scrape(proxy.admin).await, "gzip"), 1);

    // Another coding is a variant of its own, compressed once too.
    expect("br", "MISS", Some("br")).await;
    expect("br, gzip", "HIT", Some("br")).await;
    expect("identity", "MISS", None).await;
    expect("identity", "HIT", None).await;
    expect("gzip", "HIT", Some("gzip")).await;
    assert_eq!(requests(), 3);
    // A range of a client accepting gzip is cut from the identity variant.
    let range = [("accept-encoding", "gzip"), ("range", "bytes=0-99")];
    let part = fetch(&proxy, &path, &range).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.header("x-cache-status"), Some("HIT"));
    assert_eq!(part.header("content-encoding"), None);
    assert_eq!(part.body, origin_body(100));
    assert_eq!(requests(), 3);
    let metrics = scrape(proxy.admin).await;
    assert_eq!(
        (compressions(&metrics, "gzip"), compressions(&metrics, "br")),
        (1, 1),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_expired_compressed_variant_is_revalidated_and_sent_as_stored() {
    let tailnet = tailnet(&["docs"]).await;
    let peer = tailnet.peer("docs").unwrap();
    let validators = [
        ("etag", "\"v1\""),
        ("last-modified", "Tue, 01 Dec 2026 10:00:00 GMT"),
    ];
    let answer = |status: u16, cache_control: &str| fake_tailnet::ResponseSpec {
        status,
        body_size: SIZE,
        headers: validators
            .iter()
            .chain(&[("cache-control", cache_control)])
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect(),
        ..Default::default()
    };
    peer.set_response(answer(200, "max-age=1"));
    let proxy = Proxy::start(&config(&tailnet));
    // The path carries no query: the peer's answer changes, the cache key must not.
    let path = "/cached/revalidated";
    let gzip = [("accept-encoding", "gzip")];
    let stored = fetch(&proxy, path, &gzip).await;
    assert_eq!(stored.header("x-cache-status"), Some("MISS"));
    assert_eq!(stored.header("content-encoding"), Some("gzip"));
    assert_eq!(stored.decoded(), origin_body(SIZE));
    assert_eq!(peer.requests(), 1);

    // Past max-age=1 the entry is expired; the origin now confirms it unchanged.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    peer.set_response(answer(304, "max-age=60"));
    let revalidated = fetch(&proxy, path, &gzip).await;
    assert_eq!(peer.requests(), 2);
    let asked = peer.last_request().unwrap();
    assert_eq!(asked.header("accept-encoding"), Some("gzip"));
    assert!(
        asked
            .header("if-none-match")
            .is_some_and(|tag| tag.contains("\"v1\"")),
        "a conditional request: {:?}",
        asked.headers
    );
    assert_eq!(
        asked.header("if-modified-since"),
        Some("Tue, 01 Dec 2026 10:00:00 GMT")
    );
    assert_eq!(revalidated.status, 200);
    assert_eq!(revalidated.header("x-cache-status"), Some("REVALIDATED"));
    assert_eq!(revalidated.header("content-encoding"), Some("gzip"));
    assert_eq!(revalidated.header("etag"), Some("W/\"v1\""));
    assert!(revalidated.varies_on_accept_encoding());
    assert_eq!(revalidated.body, stored.body, "the stored compressed bytes");
    assert_eq!(revalidated.decoded(), origin_body(SIZE));

    // The 304's max-age=60 refreshed the entry: a hit, still the one compression.
    let hit = fetch(&proxy, path, &gzip).await;
    assert_eq!(hit.header("x-cache-status"), Some("HIT"));
    assert_eq!(hit.header("content-encoding"), Some("gzip"));
    assert_eq!(hit.decoded(), origin_body(SIZE));
    assert_eq!(peer.requests(), 2);
    let metrics = scrape(proxy.admin).await;
    assert_eq!(compressions(&metrics, "gzip"), 1, "{metrics}");
}
