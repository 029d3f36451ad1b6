//! Purge through proxy-core's API ([`proxy_core::cache::EdgeCache::purge`]), the way the
//! admin listener calls it, with the cache handle the in-process harness keeps.

mod common;

use common::*;
use proxy_core::cache::PurgeScope;

/// A config whose site `docs` (`hosts`, then `site_keys`) proxies everything to the peer
/// `docs`.
fn docs_site(tailnet: &fake_tailnet::FakeTailnet, hosts: &str, site_keys: &str) -> String {
    format!(
        "{}\n[upstreams.docs]\naddress = \"docs.{}:{}\"\n[sites.docs]\nhosts = {hosts}\n{site_keys}\n\
         [[sites.docs.locations]]\nmatch = \"/\"\nproxy = \"docs\"\n",
        base_config(tailnet),
        tailnet.domain(),
        tailnet.http_port(),
    )
}

async fn status_of(proxy: &Edge, host: &str, path: &str) -> String {
    status_in(proxy, host, path, "en").await
}

/// The cache status of a GET in language `lang` (a separate entry per language).
async fn status_in(proxy: &Edge, host: &str, path: &str, lang: &str) -> String {
    let response = client()
        .get(proxy.url(path))
        .header("host", host)
        .header("accept-language", lang)
        .send()
        .await
        .expect("request through the proxy");
    let reply = Reply::read(response).await;
    reply.header("x-cache-status").unwrap_or("-").to_string()
}

#[tokio::test]
async fn purge_by_url_and_by_host() {
    let tailnet = tailnet(&["docs"]).await;
    let config = docs_site(
        &tailnet,
        r#"["docs.example.com", "wiki.example.com"]"#,
        r#"cache = { key_headers = ["Accept-Language"] }"#,
    );
    let proxy = Edge::start(&config);
    let cache = proxy.cache();
    let docs = "docs.example.com";
    for path in ["/a", "/a?v=2", "/b"] {
        assert_eq!(status_of(&proxy, docs, path).await, "MISS");
        assert_eq!(status_of(&proxy, docs, path).await, "HIT");
    }
    assert_eq!(status_in(&proxy, docs, "/a", "fr").await, "MISS");
    assert_eq!(status_in(&proxy, docs, "/a", "fr").await, "HIT");
    assert_eq!(status_of(&proxy, "wiki.example.com", "/a").await, "MISS");

    // By URL: every query string and variant of the path, on that host only.
    let url = PurgeScope::Url {
        host: "Docs.Example.com:8080".into(),
        path: "/a?ignored=1".into(),
    };
    assert_eq!(cache.purge(&url), 3);
    assert_eq!(status_of(&proxy, docs, "/a").await, "MISS");
    assert_eq!(status_in(&proxy, docs, "/a", "fr").await, "MISS");
    assert_eq!(status_of(&proxy, docs, "/a?v=2").await, "MISS");
    assert_eq!(status_of(&proxy, docs, "/b").await, "HIT");
    assert_eq!(status_of(&proxy, "wiki.example.com", "/a").await, "HIT");

    // By host: everything of that host, nothing of the other.
    assert_eq!(cache.purge(&PurgeScope::Host(docs.into())), 4);
    assert_eq!(status_of(&proxy, docs, "/b").await, "MISS");
    assert_eq!(status_of(&proxy, "wiki.example.com", "/a").await, "HIT");
    assert_eq!(cache.purge_host("nothing.example.com"), 0);
}

/// The cache status and coding of a GET accepting `accept_encoding`.
async fn coded(proxy: &Edge, path: &str, accept_encoding: &str) -> (String, String) {
    let response = client()
        .get(proxy.url(path))
        .header("host", "docs.example.com")
        .header("accept-encoding", accept_encoding)
        .send()
        .await
        .expect("request through the proxy");
    let reply = Reply::read(response).await;
    let status = reply.header("x-cache-status").unwrap_or("-").to_string();
    let coding = reply.header("content-encoding").unwrap_or("-").to_string();
    (status, coding)
}

#[tokio::test]
async fn a_url_purge_reaches_every_compressed_variant() {
    let tailnet = tailnet(&["docs"]).await;
    let config = docs_site(
        &tailnet,
        r#"["docs.example.com"]"#,
        "cache = { }\ncompress = { }",
    );
    let proxy = Edge::start(&config);
    let path = "/page?size=4000";
    let expect = |status: &str, coding: &str| (status.to_string(), coding.to_string());
    for accept in ["gzip", "br", "zstd", "identity"] {
        let coding = if accept == "identity" { "-" } else { accept };
        assert_eq!(coded(&proxy, path, accept).await, expect("MISS", coding));
        assert_eq!(coded(&proxy, path, accept).await, expect("HIT", coding));
    }
    let url = PurgeScope::Url {
        host: "docs.example.com".into(),
        path: "/page".into(),
    };
    assert_eq!(proxy.cache().purge(&url), 4);
    for accept in ["gzip", "br", "zstd", "identity"] {
        let coding = if accept == "identity" { "-" } else { accept };
        assert_eq!(coded(&proxy, path, accept).await, expect("MISS", coding));
    }
}
